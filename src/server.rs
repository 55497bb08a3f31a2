//! The Kafka listener: accepts connections up to a limit and runs each on its own task.
//!
//! On shutdown it stops accepting, lets every connection finish answering what it already
//! read (produces are acknowledged once flushed), then returns.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::connection::{self, Limits};

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    limits: Limits,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    broker.clock.sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        broker.metrics.connections_total.fetch_add(1, Relaxed);
        broker.metrics.connections_open.fetch_add(1, Relaxed);
        let broker = broker.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            connection::serve(stream, peer, broker.clone(), limits, token).await;
            broker.metrics.connections_open.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    info!(open = tracker.len(), "listener closed; draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        warn!("connections still open after {DRAIN_TIMEOUT:?}; abandoning them");
    }
}
