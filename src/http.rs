//! The HTTP listener: `/metrics` (Prometheus text) and `/health`.

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

async fn metrics(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    let (topics, partitions) =
        broker.metadata.read(|m| (m.topics.len(), m.topics.values().map(|t| t.partitions.len()).sum::<usize>()));
    let (objects, object_bytes) = broker.metadata.read(|m| {
        let live = m.objects.values().filter(|o| o.live_chunks > 0);
        let (n, b) = live.fold((0u64, 0u64), |(n, b), o| (n + 1, b + o.size_bytes));
        (n, b)
    });
    let extra = [
        ("skiff_buffer_bytes", "Produce bytes accepted and not yet acknowledged.", broker.wal.buffered_bytes() as f64),
        ("skiff_topics", "Topics.", topics as f64),
        ("skiff_partitions", "Partitions.", partitions as f64),
        ("skiff_objects", "Objects still referenced by the index.", objects as f64),
        ("skiff_object_bytes", "Bytes of objects still referenced by the index.", object_bytes as f64),
    ];
    let topic_names = broker.metadata.read(|m| m.topic_names.iter().map(|(id, n)| (*id, n.clone())).collect());
    let body = broker.metrics.render(&Snapshot {
        gauges: &extra,
        storage: broker.reader.storage.stats(),
        blocks: broker.reader.blocks.stats(),
        topic_names: &topic_names,
        prices: broker.settings.prices,
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn health() -> &'static str {
    "ok\n"
}

pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(broker);
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
