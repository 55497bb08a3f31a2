//! Wires a Skiff process together and stops it in order.
//!
//! Start: storage (checked) → controller (Raft log replayed) → Kafka listener bound → broker
//! registered → write-ahead buffer → compaction, retention and GC tasks → HTTP → serve.
//! Stop (the `shutdown` token): stop accepting → connections answer what they already read
//! (produces are flushed and acknowledged) → stop compaction, retention and GC (an interrupted
//! compaction leaves at most an orphan for a later GC) → drain the write-ahead buffer → stop
//! Raft.

use std::sync::Arc;

use anyhow::Context;
use skiff_controller::metadata::{BrokerRegistration, Command, CommandResult};
use skiff_controller::{Controller, ControllerConfig};
use skiff_storage::{BlockCache, StorageConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use uuid::Uuid;

use crate::broker::lifecycle::{Lifecycle, LifecycleSettings};
use crate::broker::read::{Reader, TailCache};
use crate::broker::wal::{Wal, WalSettings};
use crate::broker::{Broker, BrokerSettings, SystemClock};
use crate::config::Config;
use crate::connection::Limits;
use crate::metrics::Metrics;

/// Addresses a started node listens on.
#[derive(Debug, Clone)]
pub struct Bound {
    pub kafka: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
}

/// Runs `skiff dev`: one controller voter and one broker in this process, until `shutdown`.
/// `on_ready` is called with the bound addresses once clients can connect.
pub async fn run_dev(config: Config, shutdown: CancellationToken, on_ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let url = config.storage_url();
    let storage = skiff_storage::open(&StorageConfig {
        url: url.clone(),
        s3_endpoint: config.s3_endpoint.clone(),
        s3_region: config.s3_region.clone(),
        s3_path_style: config.s3_path_style,
        s3_allow_http: config.s3_allow_http,
    })
    .with_context(|| format!("opening object storage {url}"))?;
    storage.check().await.with_context(|| format!("object storage {url} is not usable"))?;
    run_dev_with_storage(config, storage, shutdown, on_ready).await
}

/// [`run_dev`] with an already opened object storage (tests wrap it in fault injection).
pub async fn run_dev_with_storage(
    config: Config,
    storage: skiff_storage::ObjectStorage,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let controller_token = CancellationToken::new();
    let cluster_id = Uuid::new_v4().simple().to_string();
    let controller = Controller::start_single(
        ControllerConfig::new(1, config.data_dir.join("controller"), cluster_id),
        controller_token.clone(),
    )
    .await
    .context("starting the controller")?;

    let result = serve(&config, controller.clone(), storage, shutdown, on_ready).await;
    if let Err(e) = controller.shutdown().await {
        error!("controller shutdown: {e}");
    }
    controller_token.cancel();
    result
}

async fn serve(
    config: &Config,
    controller: Controller,
    storage: skiff_storage::ObjectStorage,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    let b = &config.broker;
    let kafka_listener = TcpListener::bind(&config.kafka_listen)
        .await
        .with_context(|| format!("binding the Kafka listener {}", config.kafka_listen))?;
    let http_listener = TcpListener::bind(&config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", config.http_listen))?;
    let bound = Bound { kafka: kafka_listener.local_addr()?, http: http_listener.local_addr()? };
    let (host, port) = match &config.kafka_advertise {
        Some(a) => {
            let (h, p) = a.rsplit_once(':').context("kafka_advertise is HOST:PORT")?;
            (h.to_string(), p.parse::<i32>().context("kafka_advertise port")?)
        }
        None => (bound.kafka.ip().to_string(), i32::from(bound.kafka.port())),
    };
    let incarnation = Uuid::new_v4();
    let registration = Command::RegisterBroker(BrokerRegistration {
        broker_id: b.node_id,
        incarnation,
        host: host.clone(),
        port,
        rack: b.rack.clone(),
    });
    if let CommandResult::Rejected(r) = controller.submit(registration).await.context("registering the broker")? {
        anyhow::bail!("broker registration rejected: {r}");
    }

    let metrics = Arc::new(Metrics::default());
    let tail = TailCache::new(b.tail_cache_bytes);
    let blocks = BlockCache::new(b.block_cache_bytes, 1024 * 1024);
    let wal_token = CancellationToken::new();
    let (wal, wal_tasks) = Wal::start(
        WalSettings {
            broker_id: b.node_id,
            flush_bytes: b.flush_bytes,
            flush_interval: config.flush_interval(),
            buffer_max_bytes: b.buffer_max_bytes,
            max_inflight_flushes: b.max_inflight_flushes,
            flush_when_idle: config.flush_when_idle(),
        },
        incarnation,
        controller.clone(),
        storage.clone(),
        tail.clone(),
        metrics.clone(),
        wal_token.clone(),
    );
    // Consumer groups: stopped with `shutdown` so held joins are answered before connections
    // drain.
    let clock: Arc<dyn crate::broker::Clock> = Arc::new(SystemClock);
    let groups_token = shutdown.child_token();
    let (groups, groups_task) = crate::group::GroupCoordinator::start(
        config.groups.settings(),
        controller.clone(),
        clock.clone(),
        groups_token.clone(),
    );
    let broker = Arc::new(Broker {
        settings: BrokerSettings {
            node_id: b.node_id,
            advertised_host: host.clone(),
            advertised_port: port,
            rack: b.rack.clone(),
            auto_create_topics: b.auto_create_topics,
            num_partitions: b.num_partitions,
            message_max_bytes: b.message_max_bytes,
            socket_request_max_bytes: b.socket_request_max_bytes,
            flush_bytes: b.flush_bytes,
            flush_interval_ms: config.flush_interval().as_millis() as u64,
            prices: crate::metrics::Prices { put_per_1000: b.put_price_per_1000, get_per_1000: b.get_price_per_1000 },
        },
        metadata: controller.metadata(),
        controller,
        wal,
        reader: Reader::new(tail, blocks, storage, metrics.clone()),
        metrics,
        clock,
        groups,
    });

    // Compaction, retention and GC: stopped with `shutdown`, joined before the WAL drains.
    let lifecycle_token = shutdown.child_token();
    let lifecycle = Lifecycle::new(
        LifecycleSettings::from_config(b.node_id, &config.lifecycle),
        broker.controller.clone(),
        broker.reader.storage.clone(),
        broker.metrics.clone(),
        broker.clock.clone(),
        Some(broker.reader.tail.clone()),
    );
    let lifecycle_tasks = lifecycle.start(lifecycle_token.clone());

    let http_token = CancellationToken::new();
    let http = tokio::spawn(crate::http::run(http_listener, broker.clone(), http_token.clone()));
    info!(kafka = %bound.kafka, advertised = %format!("{host}:{port}"), http = %bound.http, storage = %config.storage_url(), "skiff is ready");
    on_ready(&bound);

    let limits =
        Limits { max_frame_bytes: b.socket_request_max_bytes, max_inflight: b.max_inflight_requests_per_connection };
    crate::server::run(kafka_listener, broker.clone(), limits, b.max_connections, shutdown).await;
    groups_token.cancel();
    if let Err(e) = groups_task.await {
        error!("group coordinator task failed: {e}");
    }
    info!("stopping compaction, retention and garbage collection");
    lifecycle_token.cancel();
    lifecycle_tasks.join().await;
    info!("draining the write-ahead buffer");
    wal_token.cancel();
    wal_tasks.join().await;
    http_token.cancel();
    let _ = http.await;
    info!("broker stopped");
    Ok(())
}
