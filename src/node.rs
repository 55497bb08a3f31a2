//! Wires a Skiff process together and stops it in order.
//!
//! Roles: `skiff dev` runs a single-voter controller and a broker in one process (the broker
//! uses the controller's state directly); `skiff controller` / `skiff broker` / `skiff node
//! --roles controller,broker` run cluster members, whose brokers reach the controller quorum
//! over TCP and replay its log into a local image (`skiff_controller::client`).
//!
//! Start: storage (checked) → controller (Raft log replayed) → Kafka listener bound → broker
//! registered → write-ahead buffer → compaction, retention and GC tasks → heartbeats → HTTP →
//! serve.
//! Stop (the `shutdown` token): a cluster broker first hands its partitions and coordinator
//! shards off (controlled shutdown: clients get NOT_LEADER_OR_FOLLOWER and move on) → stop
//! accepting → connections answer what they already read (produces are flushed and
//! acknowledged or refused) → stop compaction, retention and GC (an interrupted compaction
//! leaves at most an orphan for a later GC) → drain the write-ahead buffer → stop Raft.

use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use skiff_controller::intent::BrokerRegistration;
use skiff_controller::{Controller, ControllerConfig, ControllerHandle, RemoteController};
use skiff_storage::{BlockCache, StorageConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::broker::{Broker, BrokerSettings, Clock, Ids};
use crate::config::Config;
use crate::connection::Limits;
use crate::log::background::{Lifecycle, LifecycleSettings};
use crate::log::read::{Reader, TailCache};
use crate::log::wal::{Wal, WalSettings};
use crate::metrics::Metrics;
use crate::security::listener::{Advertised, SecurityProtocol};
use crate::security::{ListenerContext, sasl, tls};
use crate::supervisor::Supervisor;

/// Addresses a started node listens on.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The first Kafka listener.
    pub kafka: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// Every Kafka listener: its protocol, bound address and advertised address.
    pub listeners: Vec<(SecurityProtocol, std::net::SocketAddr, Advertised)>,
}

/// Which roles a cluster node runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub controller: bool,
    pub broker: bool,
}

/// Addresses a started cluster node listens on.
#[derive(Debug, Clone)]
pub struct NodeBound {
    pub kafka: Option<std::net::SocketAddr>,
    /// Every Kafka listener (empty without the broker role).
    pub listeners: Vec<(SecurityProtocol, std::net::SocketAddr, Advertised)>,
    pub http: std::net::SocketAddr,
    pub controller: Option<std::net::SocketAddr>,
}

/// How long a broker waits for the controller quorum at start (a fresh quorum elects its
/// first leader once a majority of voters is up).
const CONTROLLERS_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a controlled shutdown may wait for the controller before the broker stops anyway
/// (its session then times out instead).
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the end of shutdown waits for the last tasks (every one was told to stop by then).
const TASKS_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every part of a process shares: its tasks' supervisor, its clock and its id source.
struct Process {
    supervisor: Supervisor,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn Ids>,
}

impl Process {
    /// The production process: the system clock, random ids, `shutdown` as the root token.
    fn new(shutdown: &CancellationToken) -> Self {
        Process {
            supervisor: Supervisor::with_test_panic(shutdown.clone(), crate::supervisor::test_panic_task_from_env()),
            clock: skiff_time::system_clock(),
            ids: skiff_time::random_ids(),
        }
    }

    /// Watches `controller` as a critical task: its own tasks or Raft core stopping before
    /// shutdown stops the process.
    fn supervise_controller(&self, controller: &Controller) {
        let (controller, root) = (controller.clone(), self.supervisor.root().clone());
        self.supervisor.spawn_critical("controller", async move {
            tokio::select! {
                reason = controller.failed() => Err(reason),
                () = root.cancelled() => Ok(()),
            }
        });
    }

    /// Joins every task after the ordered shutdown; a critical task's failure becomes the
    /// process's error (unless it already failed for another reason).
    async fn finish(&self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let joined = self.supervisor.join(TASKS_JOIN_TIMEOUT).await;
        match (result, joined) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(failure)) => Err(failure.into()),
            (Ok(()), Ok(())) => Ok(()),
        }
    }
}

/// Opens the configured object storage and checks it is usable (fails start-up fast on wrong
/// credentials or a missing bucket).
async fn open_storage(config: &Config, clock: &Arc<dyn Clock>) -> anyhow::Result<skiff_storage::ObjectStorage> {
    let storage = skiff_storage::open(&StorageConfig {
        url: config.storage_url(),
        s3_endpoint: config.s3_endpoint.clone(),
        s3_region: config.s3_region.clone(),
        s3_path_style: config.s3_path_style,
        s3_allow_http: config.s3_allow_http,
    })
    // Messages name the URL without any user info it may carry (credentials).
    .with_context(|| format!("opening object storage {}", config.storage_url_redacted()))?
    .with_clock(clock.clone());
    check_storage(&storage, &config.storage_url_redacted(), clock.as_ref()).await?;
    Ok(storage)
}

/// How long start-up keeps retrying a transient object-store failure (a 5xx, throttling, a
/// timeout: MinIO or S3 busy or restarting) before giving up.
const STORAGE_CHECK_PATIENCE: Duration = Duration::from_secs(30);
const STORAGE_CHECK_PAUSE: Duration = Duration::from_millis(500);

/// [`skiff_storage::ObjectStorage::check`] with retries of transient failures: a node must not
/// exit because the store answered one 503 at the moment it started. Configuration mistakes
/// (missing bucket, rejected credentials) fail at once, with their one-line explanation.
async fn check_storage(storage: &skiff_storage::ObjectStorage, url: &str, clock: &dyn Clock) -> anyhow::Result<()> {
    let deadline = clock.now() + STORAGE_CHECK_PATIENCE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match storage.check().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && clock.now() < deadline => {
                warn!(error = %e, attempts, "object storage not usable yet; retrying");
                clock.sleep(STORAGE_CHECK_PAUSE).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("object storage {url} is not usable (after {attempts} attempts)"));
            }
        }
    }
}

/// Runs a cluster node with `roles` until `shutdown`. `on_ready` gets the bound addresses once
/// every role is serving.
pub async fn run_node(
    config: Config,
    roles: Roles,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&NodeBound),
) -> anyhow::Result<()> {
    anyhow::ensure!(roles.controller || roles.broker, "a node needs at least one role (controller, broker)");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let voters = config.controller.voter_map().map_err(|e| anyhow::anyhow!("controller.voters: {e}"))?;
    let process = Process::new(&shutdown);
    // One storage for both roles: the broker's objects, the controller's snapshot copies (only
    // when storage is configured explicitly for it).
    let controller_uses_storage = roles.controller
        && config.storage.is_some()
        && (config.controller.copy_snapshots || config.controller.restore_from_storage);
    let storage =
        if roles.broker || controller_uses_storage { Some(open_storage(&config, &process.clock).await?) } else { None };
    let controller_token = CancellationToken::new();
    let mut controller = None;
    let mut controller_addr = None;
    // One identity for both sides of the controller port (this node's listener and its dials).
    let controller_tls = match config.security.controller_tls_files() {
        None => None,
        Some(files) => Some(Arc::new(
            skiff_controller::PeerTls::load(files, process.clock.clone()).map_err(|e| anyhow::anyhow!(e))?,
        )),
    };
    if roles.controller {
        let listen = config.controller.listen.clone().context("the controller role needs --controller-listen")?;
        anyhow::ensure!(!voters.is_empty(), "the controller role needs --voters ID=HOST:PORT,...");
        let listener =
            TcpListener::bind(&listen).await.with_context(|| format!("binding the controller listener {listen}"))?;
        controller_addr = Some(listener.local_addr()?);
        let mut cc =
            ControllerConfig::new(config.controller.node_id, config.data_dir.join("controller"), process.ids.suffix());
        cc.clock = process.clock.clone();
        cc.session_timeout = Some(config.controller.session_timeout);
        cc.snapshot_every_entries = config.controller.snapshot_every_entries;
        cc.log_kept_after_snapshot = config.controller.log_kept_after_snapshot;
        cc.tls = controller_tls.clone();
        let snapshot_storage = storage.clone().filter(|_| controller_uses_storage);
        if config.controller.restore_from_storage {
            let st = snapshot_storage.as_ref().context("--restore-from-storage needs --storage")?;
            restore_from_storage(st, &cc.data_dir).await?;
        }
        info!(node_id = cc.node_id, listen = %listen, voters = ?voters, "starting controller");
        let c = Controller::start(cc, voters.clone(), listener, controller_token.clone())
            .await
            .context("starting the controller")?;
        process.supervise_controller(&c);
        if let Some(st) = snapshot_storage.filter(|_| config.controller.copy_snapshots) {
            process.supervisor.spawn_critical(
                "snapshot-copier",
                copy_snapshots(c.clone(), st, config.controller.node_id, controller_token.clone()),
            );
        }
        controller = Some(c);
    }
    let result = if roles.broker {
        let storage = storage.context("the broker role opened its storage above")?;
        let shutdown = shutdown.clone();
        run_cluster_broker(
            &config,
            &process,
            &voters,
            storage,
            controller.clone(),
            controller_addr,
            controller_tls,
            shutdown,
            on_ready,
        )
        .await
    } else {
        // A block, so a start-up error still stops the controller below.
        async {
            let http_listener = TcpListener::bind(&config.http_listen)
                .await
                .with_context(|| format!("binding the HTTP listener {}", config.http_listen))?;
            let http_addr = http_listener.local_addr()?;
            let http_token = CancellationToken::new();
            let roles = crate::http::Roles { broker: None, controller: controller.clone() };
            let http = process.supervisor.spawn_critical(
                "http",
                crate::http::run(http_listener, roles, crate::http::HttpSecurity::default(), http_token.clone()),
            );
            info!(controller = ?controller_addr, http = %http_addr, "controller is ready");
            on_ready(&NodeBound { kafka: None, listeners: Vec::new(), http: http_addr, controller: controller_addr });
            shutdown.cancelled().await;
            http_token.cancel();
            let _ = http.await;
            Ok(())
        }
        .await
    };
    // After a start-up error nothing else cancelled the root: tasks that watch it (snapshot
    // copier, controller supervision) must see a shutdown, not a failure.
    shutdown.cancel();
    if let Some(c) = controller
        && let Err(e) = c.shutdown().await
    {
        error!("controller shutdown: {e}");
    }
    controller_token.cancel();
    process.finish(result).await
}

#[allow(clippy::too_many_arguments)]
async fn run_cluster_broker(
    config: &Config,
    process: &Process,
    voters: &std::collections::BTreeMap<u64, String>,
    storage: skiff_storage::ObjectStorage,
    local: Option<Controller>,
    controller_addr: Option<std::net::SocketAddr>,
    controller_tls: Option<Arc<skiff_controller::PeerTls>>,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&NodeBound),
) -> anyhow::Result<()> {
    let addrs = if config.broker.controllers.is_empty() {
        voters.values().cloned().collect()
    } else {
        config.broker.controllers.clone()
    };
    anyhow::ensure!(!addrs.is_empty(), "the broker role needs --controllers HOST:PORT,...");
    let replay_token = CancellationToken::new();
    info!(controllers = ?addrs, "connecting to the controller quorum");
    let remote = RemoteController::connect_with(
        addrs,
        CONTROLLERS_START_TIMEOUT,
        replay_token.clone(),
        process.clock.clone(),
        controller_tls,
    )
    .await
    .context("reaching the controller quorum")?;
    let result = serve(config, process, ControllerHandle::Remote(remote), local, storage, shutdown, |b| {
        on_ready(&NodeBound {
            kafka: Some(b.kafka),
            listeners: b.listeners.clone(),
            http: b.http,
            controller: controller_addr,
        })
    })
    .await;
    replay_token.cancel();
    result
}

/// Runs `skiff dev`: one controller voter and one broker in this process, until `shutdown`.
/// `on_ready` is called with the bound addresses once clients can connect.
pub async fn run_dev(config: Config, shutdown: CancellationToken, on_ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let storage = open_storage(&config, &skiff_time::system_clock()).await?;
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
    let process = Process::new(&shutdown);
    let controller_token = CancellationToken::new();
    let mut cc = ControllerConfig::new(1, config.data_dir.join("controller"), process.ids.suffix());
    cc.clock = process.clock.clone();
    let controller = Controller::start_single(cc, controller_token.clone()).await.context("starting the controller")?;
    process.supervise_controller(&controller);

    let handle = ControllerHandle::Local(controller.clone());
    let result = serve(&config, &process, handle, Some(controller.clone()), storage, shutdown.clone(), on_ready).await;
    // After a start-up error nothing else cancelled the root (see `run_node`).
    shutdown.cancel();
    if let Err(e) = controller.shutdown().await {
        error!("controller shutdown: {e}");
    }
    controller_token.cancel();
    process.finish(result).await
}

async fn serve(
    config: &Config,
    process: &Process,
    controller: ControllerHandle,
    local: Option<Controller>,
    storage: skiff_storage::ObjectStorage,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Bound),
) -> anyhow::Result<()> {
    let b = &config.broker;
    let specs = config.listeners().map_err(|e| anyhow::anyhow!("kafka_listen: {e}"))?;
    let advertised = config.advertised().map_err(|e| anyhow::anyhow!("kafka_advertise: {e}"))?;
    let tls = match (&config.security.tls_cert, &config.security.tls_key) {
        (Some(cert), Some(key)) if specs.iter().any(|l| l.protocol.tls()) || config.security.http_tls => {
            let files = tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.security.tls_client_ca.clone(),
            };
            let mapper =
                crate::security::principal::PrincipalMapper::parse(&config.security.ssl_principal_mapping_rules)
                    .map_err(|e| anyhow::anyhow!("ssl_principal_mapping_rules: {e}"))?;
            Some(Arc::new(tls::Tls::load(files, mapper, process.clock.now_ms()).map_err(anyhow::Error::msg)?))
        }
        _ => None,
    };
    let oauth = match config.security.oauthbearer() {
        Some(settings) => Some(Arc::new(
            sasl::oauthbearer::Validator::load(settings, process.clock.now_ms())
                .await
                .map_err(|e| anyhow::anyhow!("sasl_oauthbearer_jwks_url: {e}"))?,
        )),
        None => None,
    };
    if let Some(v) = oauth.clone().filter(|v| v.url().is_some()) {
        process.supervisor.spawn("jwks-refresh", v.refresh_url(process.clock.clone(), shutdown.clone()));
    }
    let sasl = sasl::SaslSettings {
        mechanisms: config.security.mechanisms(),
        max_reauth: config.security.connections_max_reauth.filter(|d| !d.is_zero()),
    };
    let mut kafka_listeners = Vec::new();
    let mut bound_listeners = Vec::new();
    for (spec, adv) in specs.iter().zip(advertised) {
        let listener = TcpListener::bind(spec.bind)
            .await
            .with_context(|| format!("binding the Kafka listener {}://{}", spec.protocol, spec.bind))?;
        let addr = listener.local_addr()?;
        let adv = adv.unwrap_or_else(|| Advertised { host: addr.ip().to_string(), port: i32::from(addr.port()) });
        let context = ListenerContext {
            protocol: spec.protocol,
            advertised: adv.clone(),
            tls: tls.clone().filter(|_| spec.protocol.tls()),
            sasl: spec.protocol.sasl().then(|| sasl.clone()),
        };
        bound_listeners.push((spec.protocol, addr, adv));
        kafka_listeners.push((listener, Arc::new(context)));
    }
    let http_listener = TcpListener::bind(&config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", config.http_listen))?;
    let (_, first, first_advertised) = bound_listeners.first().cloned().context("no Kafka listener")?;
    let bound = Bound { kafka: first, http: http_listener.local_addr()?, listeners: bound_listeners };
    // The registration carries every listener; its host and port are the first one's (what a
    // broker that knows no listeners, or a client on a listener this broker lacks, is told).
    let (host, port) = (first_advertised.host, first_advertised.port);
    // A broker with a rack takes produces forwarded from brokers of other racks on its zone
    // endpoint (RFC 0005), bound next to its first Kafka listener on a free port and registered
    // as listener `SKIFF_ZONE`, which no client is ever told about.
    // Only when asked for (`zone_produce`): the endpoint takes references to staged records.
    let zone_listener = match &b.rack {
        Some(_) if b.zone_produce => {
            let l = TcpListener::bind((first.ip(), 0)).await.context("binding the zone listener")?;
            let port = i32::from(l.local_addr()?.port());
            Some((l, port))
        }
        _ => None,
    };
    // With `controller_tls_*`, the zone endpoint and its clients speak mutual TLS with the
    // cluster's certificates (a second load of the same files: it reloads them on change too).
    let zone_tls = match (&zone_listener, config.security.controller_tls_files()) {
        (Some(_), Some(files)) => Some(Arc::new(
            skiff_controller::PeerTls::load(files, process.clock.clone()).map_err(|e| anyhow::anyhow!(e))?,
        )),
        _ => None,
    };
    let incarnation = process.ids.uuid();
    let registration = BrokerRegistration {
        broker_id: b.node_id,
        incarnation,
        host: host.clone(),
        port,
        rack: b.rack.clone(),
        fenced: false,
        listeners: bound
            .listeners
            .iter()
            .map(|(protocol, _, adv)| skiff_controller::intent::ListenerEndpoint {
                name: protocol.name().to_string(),
                host: adv.host.clone(),
                port: adv.port,
            })
            .chain(zone_listener.as_ref().map(|(_, zone_port)| skiff_controller::intent::ListenerEndpoint {
                name: crate::handler::zone_produce::ZONE_LISTENER.to_string(),
                host: host.clone(),
                port: *zone_port,
            }))
            .collect(),
    };
    controller.register_broker(registration.clone()).await.context("registering the broker")?;
    info!(broker_id = b.node_id, %incarnation, "broker registered");
    if let Some((name, password)) = config.security.bootstrap_user() {
        crate::handler::scram_credentials::bootstrap_user(&controller, name, password)
            .await
            .context("creating the SCRAM bootstrap user")?;
    }
    // Heartbeats keep the session alive; a broker that learns it was fenced (e.g. it was
    // paused past the session timeout) registers again and gets partitions back.
    let heartbeat_token = CancellationToken::new();
    let heartbeat = match &controller {
        ControllerHandle::Remote(remote) => Some(process.supervisor.spawn_critical(
            "heartbeat",
            heartbeat_loop(
                remote.clone(),
                b.node_id,
                incarnation,
                registration.clone(),
                b.heartbeat_interval,
                heartbeat_token.clone(),
            ),
        )),
        ControllerHandle::Local(_) => None,
    };

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
        process.clock.clone(),
        &process.supervisor,
        wal_token.clone(),
    );
    // Consumer groups: stopped with `shutdown` so held joins are answered before connections
    // drain.
    let clock = process.clock.clone();
    let groups_token = shutdown.child_token();
    let (groups, groups_task) = crate::group::GroupCoordinator::start(
        config.groups.settings(),
        controller.clone(),
        clock.clone(),
        process.ids.clone(),
        &process.supervisor,
        groups_token.clone(),
    );
    // Transaction coordinator timers: stopped with `shutdown` (their ops are idempotent, and a
    // new owner of the shards re-arms them from the image).
    let txns_token = shutdown.child_token();
    let (txns, txns_task) = crate::txn::TxnCoordinator::start(
        b.node_id,
        config.transactions.settings(),
        controller.clone(),
        clock.clone(),
        &process.supervisor,
        txns_token.clone(),
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
            prices: crate::metrics::Prices {
                put_per_1000: b.put_price_per_1000,
                get_per_1000: b.get_price_per_1000,
                storage_per_gb_month: b.storage_price_per_gb_month,
            },
            group_bounds: config.groups.bounds(),
        },
        metadata: controller.metadata(),
        controller,
        wal,
        reader: Reader::new(tail, blocks, storage, metrics.clone()),
        metrics,
        clock,
        ids: process.ids.clone(),
        groups,
        txns,
        not_served: Default::default(),
        rejected_configs: Default::default(),
        security: crate::security::BrokerSecurity::new(
            crate::security::authorizer::Authorizer::new(config.security.authorizer_settings(&specs)),
            oauth,
        ),
        zone: crate::handler::zone_produce::ZoneLink::new(process.ids.uuid(), zone_tls),
        quotas: crate::quota::Quotas::new(
            crate::quota::rate::Window {
                samples: b.quota_window_num,
                window_ms: b.quota_window_size.as_millis().try_into().unwrap_or(i64::MAX),
            },
            b.max_connection_creation_rate,
        ),
        fetch_sessions: crate::handler::fetch_session::FetchSessions::new(
            b.max_incremental_fetch_session_cache_slots,
            process.ids.clone(),
        ),
        peers: Default::default(),
    });
    // Peer watch: every other broker's process, for Metadata answers during a failover.
    let peers_token = shutdown.child_token();
    let peers_task = process.supervisor.spawn(
        "peer-watch",
        crate::broker::peer_watch::run(
            broker.peers.clone(),
            b.node_id,
            broker.metadata.clone(),
            broker.clock.clone(),
            peers_token.clone(),
        ),
    );

    // Compaction, retention and GC: stopped with `shutdown`, joined before the WAL drains.
    let lifecycle_token = shutdown.child_token();
    let lifecycle = Lifecycle::new(
        LifecycleSettings::from_config(b.node_id, &config.lifecycle),
        broker.controller.clone(),
        broker.reader.storage.clone(),
        broker.metrics.clone(),
        broker.clock.clone(),
        broker.ids.clone(),
        Some(broker.reader.tail.clone()),
    );
    let lifecycle_tasks = lifecycle.start(&process.supervisor, lifecycle_token.clone());

    let http_token = CancellationToken::new();
    let roles = crate::http::Roles { broker: Some(broker.clone()), controller: local };
    let http_security = crate::http::HttpSecurity {
        auth: config.security.http_auth_settings(&specs),
        tls: tls.clone().filter(|_| config.security.http_tls),
    };
    let http = process
        .supervisor
        .spawn_critical("http", crate::http::run(http_listener, roles, http_security, http_token.clone()));
    for (protocol, addr, adv) in &bound.listeners {
        info!(listener = %protocol, bound = %addr, advertised = %adv, "Kafka listener");
    }
    info!(kafka = %bound.kafka, advertised = %format!("{host}:{port}"), http = %bound.http, storage = %config.storage_url_redacted(), "skiff is ready");
    on_ready(&bound);

    let limits = Limits {
        max_frame_bytes: b.socket_request_max_bytes,
        max_inflight: b.max_inflight_requests_per_connection,
        read_timeout: b.request_read_timeout,
        idle_timeout: b.connections_max_idle,
        failed_authentication_delay: config.security.connection_failed_authentication_delay,
    };
    let connection_limits =
        crate::server::ConnectionLimits { max_connections: b.max_connections, max_per_ip: b.max_connections_per_ip };
    // The server stops after the controlled shutdown, so clients are told where partitions
    // went (NOT_LEADER_OR_FOLLOWER, then Metadata) while this broker still answers.
    let server_token = CancellationToken::new();
    let handoff = {
        let controller = broker.controller.clone();
        let server_token = server_token.clone();
        let shutdown = shutdown.clone();
        let node_id = b.node_id;
        process.supervisor.spawn_critical("controlled-shutdown", async move {
            shutdown.cancelled().await;
            if let ControllerHandle::Remote(_) = &controller {
                info!("controlled shutdown: handing partitions and coordinator shards to other brokers");
                let handoff = controller.controlled_shutdown(node_id, incarnation);
                match tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, handoff).await {
                    Ok(Ok(_)) => info!("controlled shutdown: partitions handed off"),
                    Ok(Err(e)) => warn!(error = %e, "controlled shutdown failed; the session will time out instead"),
                    Err(_) => warn!("controlled shutdown timed out; the session will time out instead"),
                }
            }
            server_token.cancel();
        })
    };
    let zone = zone_listener.map(|(listener, _)| {
        let serve = crate::handler::zone_produce::serve(broker.clone(), listener, server_token.clone());
        process.supervisor.spawn_critical("zone-listener", serve)
    });
    let server = process.supervisor.spawn_critical(
        "kafka-listener",
        crate::server::run(kafka_listeners, broker.clone(), limits, connection_limits, server_token),
    );
    let _ = server.await;
    if let Some(zone) = zone {
        let _ = zone.await;
    }
    let _ = handoff.await;
    heartbeat_token.cancel();
    if let Some(h) = heartbeat {
        let _ = h.await;
    }
    peers_token.cancel();
    let _ = peers_task.await;
    groups_token.cancel();
    if let Err(e) = groups_task.await {
        error!("group coordinator task failed: {e}");
    }
    txns_token.cancel();
    if let Err(e) = txns_task.await {
        error!("transaction coordinator task failed: {e}");
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

/// Heartbeats every `interval` until `stop`; registers again when the controller says this
/// incarnation is fenced.
async fn heartbeat_loop(
    remote: RemoteController,
    broker_id: i32,
    incarnation: Uuid,
    registration: BrokerRegistration,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match remote.heartbeat(broker_id, incarnation).await {
            Ok(false) => {
                if failing {
                    info!("controller reachable again");
                    failing = false;
                }
            }
            Ok(true) => {
                warn!("this broker was fenced (session expired); registering again");
                if let Err(e) = ControllerHandle::Remote(remote.clone()).register_broker(registration.clone()).await {
                    warn!(error = %e, "registering again failed; will retry");
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "heartbeat failed; retrying");
                    failing = true;
                }
            }
        }
    }
}

/// Snapshot copies written to object storage by this process (for `/metrics`).
pub static SNAPSHOT_COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Object-storage directory of controller snapshot copies.
const SNAPSHOT_DIR: &str = "controller/snapshots";
/// Copies kept per controller.
const SNAPSHOT_COPIES_KEPT: usize = 3;

/// Copies every snapshot `controller` builds to `storage` as
/// `controller/snapshots/<index>-<term>-n<node>.json`, keeping this node's newest few.
async fn copy_snapshots(
    controller: Controller,
    storage: skiff_storage::ObjectStorage,
    node_id: u64,
    stop: CancellationToken,
) {
    let mut built = controller.built_snapshots();
    loop {
        tokio::select! {
            changed = built.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
        let Some((name, bytes)) = built.borrow_and_update().clone() else { continue };
        let key = storage.child_key(&format!("{SNAPSHOT_DIR}/{name}-n{node_id}.json"));
        match storage.put_new(&key, bytes::Bytes::from(bytes.to_vec())).await {
            Ok(()) => {
                SNAPSHOT_COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(key = %key, bytes = bytes.len(), "controller snapshot copied to object storage")
            }
            Err(e) => {
                warn!(key = %key, error = %e, "copying the controller snapshot failed; the next one will be tried");
                continue;
            }
        }
        // Keep this node's newest copies (names sort by log index).
        let suffix = format!("-n{node_id}.json");
        match storage.list(SNAPSHOT_DIR).await {
            Ok(mut mine) => {
                mine.retain(|o| o.key.ends_with(&suffix));
                mine.sort_by(|a, b| a.key.cmp(&b.key));
                let excess = mine.len().saturating_sub(SNAPSHOT_COPIES_KEPT);
                for old in &mine[..excess] {
                    if let Err(e) = storage.delete(&old.key).await {
                        warn!(key = %old.key, error = %e, "deleting an old snapshot copy failed");
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing snapshot copies failed"),
        }
    }
}

/// Seeds a pristine controller data dir with the newest snapshot copy in `storage`.
async fn restore_from_storage(
    storage: &skiff_storage::ObjectStorage,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let copies = storage.list(SNAPSHOT_DIR).await.context("listing controller snapshot copies")?;
    let newest = copies
        .iter()
        .filter(|o| o.key.ends_with(".json"))
        .max_by(|a, b| snapshot_name(&a.key).cmp(snapshot_name(&b.key)))
        .context("no controller snapshot copy in object storage to restore from")?;
    let bytes = storage.get(&newest.key).await.with_context(|| format!("reading {}", newest.key))?;
    Controller::restore_snapshot(data_dir, &bytes).context("restoring the controller snapshot")?;
    info!(key = %newest.key, bytes = bytes.len(), "controller restored from a snapshot copy in object storage");
    Ok(())
}

/// The `<index>-<term>` part of a copy's key (sorts by log index).
fn snapshot_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}
