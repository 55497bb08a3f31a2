//! The Kafka listeners: accept connections up to the limits and run each on its own task.
//!
//! One accept loop per listener (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); all share the
//! connection limits: `max_connections` in total (beyond it, new connections wait in the
//! listen backlog) and `max_connections_per_ip` per client address (beyond it, a new
//! connection is closed at once, counted and logged, rate-limited). Connection creation is
//! rate-limited as Kafka does it (`quota/`): beyond `max_connection_creation_rate` accepting is
//! delayed; a connection from an address over its `connection_creation_rate` quota is closed
//! after the throttle time, unread. A TLS handshake runs on
//! the connection's own task, bounded by `request_read_timeout`, so a client that stalls it
//! holds a connection slot for that long at most.
//!
//! On shutdown it stops accepting, lets every connection finish answering what it already
//! read (produces are acknowledged once flushed), then returns.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::connection::{self, Limits};
use crate::security::sasl::{Failure, Principal};
use crate::security::{ListenerContext, principal};

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Read-ahead under TLS: rustls asks its transport for at most 4 KiB at a time (its deframer's
/// read size), so without a buffer a 16 KiB record costs four `recv`s and a 1 MiB produce 256.
/// With it, one `recv` takes up to this much of what the socket holds (two full records) and
/// rustls's small reads are copies. PLAINTEXT connections need none: their frames are read into
/// a buffer of the frame's size. Allocated once per TLS connection, half the write buffer's size.
const TLS_READ_AHEAD_BYTES: usize = 32 * 1024;

/// Limits shared by every listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// 0: no per-address limit.
    pub max_per_ip: usize,
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    fn try_open(&self, ip: IpAddr, max: usize) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if max != 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn close(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// Serves every listener until `shutdown`, then drains their connections.
pub async fn run(
    listeners: Vec<(TcpListener, Arc<ListenerContext>)>,
    broker: Arc<Broker>,
    limits: Limits,
    connection_limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(connection_limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let tracker = TaskTracker::new();
    let accept_loops = TaskTracker::new();
    for (listener, context) in listeners {
        let shared = Shared {
            broker: broker.clone(),
            limits,
            max_per_ip: connection_limits.max_per_ip,
            slots: slots.clone(),
            per_ip: per_ip.clone(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        };
        accept_loops.spawn(accept_loop(listener, context, shared));
    }
    accept_loops.close();
    accept_loops.wait().await;
    tracker.close();
    info!(open = tracker.len(), "listeners closed; draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        warn!("connections still open after {DRAIN_TIMEOUT:?}; abandoning them");
    }
}

#[derive(Clone)]
struct Shared {
    broker: Arc<Broker>,
    limits: Limits,
    max_per_ip: usize,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

async fn accept_loop(listener: TcpListener, context: Arc<ListenerContext>, s: Shared) {
    let broker = &s.broker;
    loop {
        let permit = tokio::select! {
            p = s.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = s.shutdown.cancelled() => break,
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
            _ = s.shutdown.cancelled() => break,
        };
        if !s.per_ip.try_open(peer.ip(), s.max_per_ip) {
            broker.metrics.connections_refused_per_ip.fetch_add(1, Relaxed);
            if let Some(suppressed) = broker.security.audit.admit(broker.clock.now_ms()) {
                warn!(%peer, limit = s.max_per_ip, suppressed, "connection refused: max_connections_per_ip reached");
            }
            drop(stream);
            continue;
        }
        broker.metrics.connections_total.fetch_add(1, Relaxed);
        broker.metrics.connections_open.fetch_add(1, Relaxed);
        let now = broker.clock.now_ms();
        let (accept_delay, close_delay) =
            broker.metadata.read(|m| broker.quotas.connection_created(m.quotas(), peer.ip(), now));
        let (broker2, context, s2) = (broker.clone(), context.clone(), s.clone());
        s.tracker.spawn(async move {
            if close_delay > 0 {
                // Kafka's ConnectionThrottledException: the connection is closed once the
                // throttle time has passed, unread, so a flood of reconnects is slowed too.
                if let Some(suppressed) = broker2.security.audit.admit(now) {
                    warn!(%peer, close_delay, suppressed, "connection throttled: connection_creation_rate quota of its ip exceeded");
                }
                tokio::select! {
                    () = broker2.clock.sleep(Duration::from_millis(close_delay as u64)) => {}
                    _ = s2.shutdown.cancelled() => {}
                }
                drop(stream);
            } else {
                serve_one(stream, peer, &broker2, context, &s2).await;
            }
            s2.per_ip.close(peer.ip());
            broker2.metrics.connections_open.fetch_sub(1, Relaxed);
            drop(permit);
        });
        if accept_delay > 0 {
            // max_connection_creation_rate: the next connection waits (Kafka throttles accept).
            tokio::select! {
                () = broker.clock.sleep(Duration::from_millis(accept_delay as u64)) => {}
                _ = s.shutdown.cancelled() => break,
            }
        }
    }
}

/// TLS (when the listener has it), then the connection.
async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    context: Arc<ListenerContext>,
    s: &Shared,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = context.tls.clone() else {
        connection::serve(stream, peer, broker.clone(), s.limits, context, Principal::anonymous(), s.shutdown.clone())
            .await;
        return;
    };
    let acceptors = tls.acceptors(broker.clock.now_ms());
    let mutual = !context.protocol.sasl() && acceptors.mutual.is_some();
    let acceptor = if mutual { acceptors.mutual.unwrap_or(acceptors.server_only) } else { acceptors.server_only };
    let handshake = tokio::select! {
        r = tokio::time::timeout(
            s.limits.read_timeout,
            acceptor.accept(BufReader::with_capacity(TLS_READ_AHEAD_BYTES, stream)),
        ) => r,
        _ = s.shutdown.cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            broker.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
            let failure = Failure { mechanism: None, user: None, reason: format!("TLS handshake failed: {e}") };
            broker.security.log_failure(broker.clock.now_ms(), peer, context.protocol, &failure);
            return;
        }
        Err(_) => {
            broker.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
            debug!(%peer, "TLS handshake not finished within request_read_timeout; closing");
            return;
        }
    };
    let principal = if mutual {
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| principal::subject_of_certificate(c.as_ref()));
        match subject.as_deref().and_then(|dn| tls.mapper.map(dn)) {
            Some(name) => Principal::user(name),
            None => {
                broker.metrics.auth_failures.fetch_add(1, Relaxed);
                let reason = match subject {
                    Some(dn) => format!("no ssl.principal.mapping.rules rule matches the certificate subject {dn:?}"),
                    None => "the client certificate's subject cannot be read".to_string(),
                };
                broker.security.log_failure(
                    broker.clock.now_ms(),
                    peer,
                    context.protocol,
                    &Failure { mechanism: None, user: None, reason },
                );
                return;
            }
        }
    } else {
        Principal::anonymous()
    };
    connection::serve(stream, peer, broker.clone(), s.limits, context, principal, s.shutdown.clone()).await;
}
