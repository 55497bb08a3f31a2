//! The HTTP listener: `/metrics` (Prometheus text), `/health`, the console's JSON API
//! (`/api/v1/`, `crate::console::api`) and its pages (`/`, `crate::console::web`).
//!
//! Optionally over TLS ([`tls`], `http_tls`); every request passes [`auth::authenticate`]
//! first, which names its caller (or answers 401), and the console API authorizes that caller
//! with the broker's ACLs.

pub mod auth;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::metrics::Snapshot;

/// What this process runs: a broker, a controller, or both.
#[derive(Clone)]
pub struct Roles {
    pub broker: Option<Arc<Broker>>,
    pub controller: Option<skiff_controller::Controller>,
}

/// How the HTTP listener is secured: its authentication rules and, with `http_tls`, the TLS
/// identity it serves.
#[derive(Clone, Default)]
pub struct HttpSecurity {
    pub auth: auth::HttpAuth,
    pub tls: Option<Arc<crate::security::tls::Tls>>,
}

async fn metrics(State(roles): State<Roles>) -> impl IntoResponse {
    let mut body = String::new();
    if let Some(broker) = &roles.broker {
        body.push_str(&broker_metrics(broker));
    }
    if let Some(controller) = &roles.controller {
        body.push_str(&controller.metrics_text());
        let copies = crate::node::SNAPSHOT_COPIES.load(std::sync::atomic::Ordering::Relaxed);
        body.push_str(&format!(
            "# HELP skiff_controller_snapshot_copies_total Controller snapshots copied to object storage.\n\
             # TYPE skiff_controller_snapshot_copies_total counter\nskiff_controller_snapshot_copies_total {copies}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn broker_metrics(broker: &Broker) -> String {
    let me = broker.settings.node_id;
    let (topics, partitions) =
        broker.metadata.read(|m| (m.topics().count(), m.topics().map(|t| t.partition_count()).sum::<usize>()));
    let (objects, object_bytes) = broker.metadata.read(|m| {
        let live = m.objects().filter(|o| o.live_chunks > 0);
        let (n, b) = live.fold((0u64, 0u64), |(n, b), o| (n + 1, b + o.size_bytes));
        (n, b)
    });
    let (led, fenced, applied) = broker.metadata.read(|m| {
        let led = m.topics().flat_map(|t| t.partitions()).filter(|p| p.leader() == me).count();
        (led, !m.is_live(me), broker.metadata.applied_index())
    });
    let shards = broker.metadata.read(|m| m.shards_of(me));
    // The index this broker holds (issue #18): one pass over the object table, whose
    // reference counts give the chunk counts without walking every partition.
    let storage = &broker.reader.storage;
    let index = broker.metadata.read(|m| {
        m.objects().fold(crate::metrics::IndexSize::default(), |mut i, o| {
            i.objects += 1;
            i.object_key_bytes += o.key.len() as u64;
            i.chunks += o.live_chunks;
            if !storage.is_segment_key(&o.key) {
                i.uncompacted_chunks += o.live_chunks;
            }
            i
        })
    });
    let mut extra = vec![
        ("skiff_partitions_led", "Partitions this broker leads.", led as f64),
        ("skiff_coordinator_shards", "Consumer-group coordinator shards this broker owns.", shards as f64),
        (
            "skiff_broker_fenced",
            "1 while this broker is fenced (not live) in its metadata image.",
            f64::from(u8::from(fenced)),
        ),
        ("skiff_metadata_applied_index", "Metadata log index this broker's image has applied.", applied as f64),
        ("skiff_buffer_bytes", "Produce bytes accepted and not yet acknowledged.", broker.wal.buffered_bytes() as f64),
        ("skiff_topics", "Topics.", topics as f64),
        ("skiff_partitions", "Partitions.", partitions as f64),
        ("skiff_objects", "Objects still referenced by the index.", objects as f64),
        // Memory (docs/observability.md, "Memory"): the budget is these capacities plus fixed
        // headroom; the resident size is what the process really holds.
        (
            "skiff_process_resident_bytes",
            "Resident set size of this process (VmRSS).",
            crate::metrics::process_resident_bytes().unwrap_or(0) as f64,
        ),
        ("skiff_tail_cache_bytes", "Bytes in the tail cache.", broker.reader.tail.weighted_size_bytes() as f64),
        ("skiff_tail_cache_capacity_bytes", "tail_cache_bytes.", broker.reader.tail.capacity_bytes() as f64),
        ("skiff_block_cache_bytes", "Bytes in the block cache.", broker.reader.blocks.cached_bytes() as f64),
        ("skiff_block_cache_capacity_bytes", "block_cache_bytes.", broker.reader.blocks.capacity_bytes() as f64),
        ("skiff_buffer_max_bytes", "buffer_max_bytes.", broker.wal.buffer_max_bytes() as f64),
        ("skiff_object_bytes", "Bytes of objects still referenced by the index.", object_bytes as f64),
    ];
    extra.extend(index.gauges());
    let topic_names = broker.metadata.read(|m| m.topic_names().map(|(id, n)| (id, n.to_string())).collect());
    let mut text = broker.metrics.render(&Snapshot {
        gauges: &extra,
        storage: broker.reader.storage.stats(),
        blocks: broker.reader.blocks.stats(),
        topic_names: &topic_names,
        prices: broker.settings.prices,
    });
    text.push_str(&broker.security.authorizer.render_metrics());
    text.push_str(&broker.quotas.render_metrics(broker.clock.now_ms()));
    text.push_str(&broker.fetch_sessions.render_metrics());
    text
}

async fn health() -> &'static str {
    "ok\n"
}

pub async fn run(
    listener: TcpListener,
    roles: Roles,
    security: HttpSecurity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let api = crate::console::api::router(&roles);
    let authenticator = auth::Authenticator::new(security.auth, roles.broker.clone());
    let clock = roles.broker.as_ref().map(|b| b.clock.clone());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .nest("/api/v1", api)
        .merge(crate::console::web::router())
        .layer(axum::middleware::from_fn_with_state(authenticator, auth::authenticate))
        .with_state(roles)
        .into_make_service_with_connect_info::<auth::Peer>();
    let stop = async move { shutdown.cancelled().await };
    match (security.tls, clock) {
        (Some(tls), Some(clock)) => {
            axum::serve(tls::TlsListener::new(listener, tls, clock), app).with_graceful_shutdown(stop).await
        }
        _ => axum::serve(listener, app).with_graceful_shutdown(stop).await,
    }
}
