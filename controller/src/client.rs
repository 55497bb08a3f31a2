//! A broker's view of a remote controller quorum: submits commands to the Raft leader,
//! replays the metadata log into a local image, and heartbeats.
//!
//! ```text
//! broker ──Submit/Heartbeat──▶ controller leader (found by asking any controller)
//!        ◀──Watch (long poll)── entries after the image's index, or the whole state
//! ```
//!
//! Invariants:
//! * the image is always the state after some prefix of the log: entries apply in index order,
//!   each batch under one write lock, and a whole-state answer replaces it at once;
//! * `submit` returns only after the command is committed and the local image has applied it
//!   (read-your-writes for the broker's handlers);
//! * a request that may have reached the leader is never silently re-sent, except for commands
//!   that are idempotent by construction (registration, fencing); others report the failure
//!   and the caller decides (the write path rewinds, handlers answer a retriable error);
//! * every exchange has a deadline, so a stopped (SIGSTOP) controller costs at most one
//!   timeout before the next controller is tried;
//! * the image may lag the leader (by a round trip, or by seconds after this process was
//!   frozen or cut off): `catch_up` confirms it current before an answer that rests on it and
//!   that a client cannot retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::metadata::{BrokerId, Command, CommandResult};
use crate::raft::MetadataHandle;
use crate::raft::network::{Request, Response, read_frame, write_frame};
use crate::raft::service::{BrokerRequest, BrokerResponse, RpcError, WatchReply};

/// Dialling a controller.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// One submit exchange (commit latency is milliseconds; this covers a slow fsync).
const SUBMIT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// A submit keeps looking for a leader this long (an election takes about a second).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the leader may hold a watch open, and the slack on top for the answer.
const WATCH_WAIT: Duration = Duration::from_millis(1000);
const WATCH_SLACK: Duration = Duration::from_millis(1000);
/// One heartbeat exchange.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after every controller was tried without finding a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// After a submit, how long to wait for the image to apply it.
const READ_YOUR_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// [`RemoteController::catch_up`]: one exchange, and the whole attempt (a frozen leader costs
/// one exchange, then the next controller is asked).
const CATCH_UP_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per controller.
const POOL_PER_ADDR: usize = 16;

/// How one exchange failed.
#[derive(Debug)]
enum CallError {
    /// Nothing was sent (dial failed): safe to try elsewhere.
    Unreachable(String),
    /// Sent, but no answer: the request may or may not have taken effect.
    Ambiguous(String),
}

/// A clonable handle to a remote controller quorum.
#[derive(Clone)]
pub struct RemoteController {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    /// The leader as last learned.
    leader: Mutex<Option<String>>,
    /// Rotates through `addrs` when no leader is known.
    next: std::sync::atomic::AtomicUsize,
    pool: Mutex<HashMap<String, Vec<TcpStream>>>,
    /// The heartbeat's own connection (never pooled): the leader treats its closing as a sign
    /// that this broker died, so it is closed only when an exchange on it fails.
    heartbeat_conn: tokio::sync::Mutex<Option<(String, TcpStream)>>,
    image: Arc<RwLock<MetadataImage>>,
    applied: watch::Sender<u64>,
    metadata: MetadataHandle,
    /// Submit deadlines and retry pauses.
    clock: Arc<dyn skiff_time::Clock>,
}

impl RemoteController {
    /// Connects to the quorum at `addrs` (any of its controllers) and starts replaying the
    /// metadata log into a local image; returns once the image holds an initialized cluster
    /// (or fails after `timeout`). The replay stops with `stop`.
    pub async fn connect(
        addrs: Vec<String>,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Result<RemoteController, ControllerError> {
        Self::connect_with_clock(addrs, timeout, stop, skiff_time::system_clock()).await
    }

    /// [`Self::connect`] taking deadlines and retry pauses from `clock`.
    pub async fn connect_with_clock(
        addrs: Vec<String>,
        timeout: Duration,
        stop: CancellationToken,
        clock: Arc<dyn skiff_time::Clock>,
    ) -> Result<RemoteController, ControllerError> {
        if addrs.is_empty() {
            return Err(ControllerError::Unavailable { reason: "no controller addresses given".into() });
        }
        let image = Arc::new(RwLock::new(MetadataImage::default()));
        let (applied, applied_rx) = watch::channel(0);
        let metadata = MetadataHandle::new(image.clone(), applied_rx);
        let client = RemoteController {
            inner: Arc::new(Inner {
                addrs,
                leader: Mutex::new(None),
                next: Default::default(),
                pool: Mutex::new(HashMap::new()),
                heartbeat_conn: tokio::sync::Mutex::new(None),
                image,
                applied,
                metadata,
                clock,
            }),
        };
        // Detached: the replay only reads from the controllers into this image and ends at
        // `stop`, which its owner (the broker's wiring in src/node.rs) cancels at shutdown.
        tokio::spawn(client.clone().replay(stop.clone()));
        let mut applied = client.inner.metadata.subscribe();
        let ready = async {
            loop {
                if client.inner.metadata.read(|m| !m.cluster_id().is_empty()) {
                    return Ok(());
                }
                if applied.changed().await.is_err() {
                    return Err(ControllerError::Closed);
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, ready) => match r {
                Ok(r) => r?,
                Err(_) => return Err(ControllerError::Unavailable { reason: format!(
                    "no metadata from the controllers {:?} within {timeout:?}", client.inner.addrs
                ) }),
            },
            () = stop.cancelled() => return Err(ControllerError::Closed),
        }
        Ok(client)
    }

    /// The local metadata image.
    pub fn metadata(&self) -> MetadataHandle {
        self.inner.metadata.clone()
    }

    /// Submits `cmd` to the leader; returns its result once the local image has applied it.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        let idempotent = matches!(cmd, Command::RegisterBroker(_) | Command::FenceBroker { .. });
        let deadline = self.inner.clock.now() + SUBMIT_TIMEOUT;
        // The broker's trace continues on the controller (`trace_context`): the context of the
        // caller's span (`controller.submit`) travels with the request when one is recorded.
        let req = match crate::trace_context::traceparent(&tracing::Span::current()) {
            Some(traceparent) => Request::TracedBroker { traceparent, request: BrokerRequest::Submit(cmd) },
            None => Request::Broker(BrokerRequest::Submit(cmd)),
        };
        let mut last_error;
        let (result, index) = loop {
            let outcome = self.call_leader(&req, SUBMIT_ATTEMPT_TIMEOUT).await;
            match outcome {
                Ok(BrokerResponse::Submit(Ok(done))) => break done,
                Ok(BrokerResponse::Submit(Err(RpcError::Failed(e)))) => return Err(ControllerError::Raft(e)),
                Ok(BrokerResponse::Submit(Err(e @ (RpcError::NotLeader { .. } | RpcError::Closed)))) => {
                    last_error = e.to_string();
                }
                Ok(_) => return Err(ControllerError::Unexpected("controller answered another request".into())),
                Err(CallError::Unreachable(e)) => last_error = e,
                Err(CallError::Ambiguous(e)) if !idempotent => {
                    return Err(ControllerError::Unavailable {
                        reason: format!("outcome unknown, controller connection failed: {e}"),
                    });
                }
                Err(CallError::Ambiguous(e)) => last_error = e,
            }
            if self.inner.clock.now() >= deadline {
                tracing::warn!(error = %last_error, "no controller leader accepted a command in time");
                return Err(ControllerError::NotLeader { leader: None });
            }
        };
        let mut applied = self.inner.metadata.subscribe();
        let caught_up = tokio::time::timeout(READ_YOUR_WRITE_TIMEOUT, applied.wait_for(|a| *a >= index)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            tracing::warn!(index, "metadata image did not apply a submitted command in time");
        }
        Ok(result)
    }

    /// The quorum's replication status from its leader (read-only, so it is retried on another
    /// controller until [`SUBMIT_TIMEOUT`]).
    pub async fn describe_quorum(&self) -> Result<crate::quorum::QuorumStatus, ControllerError> {
        let deadline = self.inner.clock.now() + SUBMIT_TIMEOUT;
        let req = Request::Broker(BrokerRequest::DescribeQuorum);
        loop {
            let last_error = match self.call_leader(&req, SUBMIT_ATTEMPT_TIMEOUT).await {
                Ok(BrokerResponse::DescribeQuorum(Ok(status))) => return Ok(status),
                Ok(BrokerResponse::DescribeQuorum(Err(RpcError::Failed(e)))) => return Err(ControllerError::Raft(e)),
                Ok(BrokerResponse::DescribeQuorum(Err(e))) => e.to_string(),
                Ok(_) => return Err(ControllerError::Unexpected("controller answered another request".into())),
                Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => e,
            };
            if self.inner.clock.now() >= deadline {
                tracing::warn!(error = %last_error, "no controller leader described the quorum in time");
                return Err(ControllerError::NotLeader { leader: None });
            }
        }
    }

    /// One heartbeat to the leader, on the heartbeat's own connection. `Ok(true)`: this
    /// incarnation is fenced (or unknown) and must register again.
    pub async fn heartbeat(&self, broker_id: BrokerId, incarnation: Uuid) -> Result<bool, ControllerError> {
        let req = Request::Broker(BrokerRequest::Heartbeat { broker_id, incarnation });
        let target = self.target();
        let mut conn = self.inner.heartbeat_conn.lock().await;
        if conn.as_ref().is_some_and(|(addr, _)| *addr != target) {
            *conn = None;
        }
        let answer = match conn.as_mut() {
            Some((_, stream)) => round_trip(stream, &target, &req, HEARTBEAT_TIMEOUT).await,
            None => match dial(&target).await {
                Ok(mut stream) => {
                    let answer = round_trip(&mut stream, &target, &req, HEARTBEAT_TIMEOUT).await;
                    *conn = Some((target.clone(), stream));
                    answer
                }
                Err(e) => Err(e),
            },
        };
        let answer = match answer {
            Ok(BrokerResponse::Heartbeat(answer)) => answer,
            other => {
                // The stream may hold a late answer: drop it; the next beat dials again.
                *conn = None;
                drop(conn);
                self.forget(&target);
                let why = match other {
                    Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => e,
                    Ok(_) => format!("{target}: answered another request"),
                };
                return Err(ControllerError::Unavailable { reason: why });
            }
        };
        drop(conn);
        match answer {
            Ok(r) => {
                *self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
                Ok(r.fenced)
            }
            Err(RpcError::NotLeader { leader }) => {
                let known = leader.filter(|l| *l != target);
                if known.is_none() {
                    self.rotate();
                }
                *self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()) = known;
                Err(ControllerError::NotLeader { leader: None })
            }
            Err(e) => Err(ControllerError::Raft(e.to_string())),
        }
    }

    /// One exchange with the leader as known (or the next controller in turn). Learns the
    /// leader from `NotLeader` answers; forgets it when it does not answer.
    async fn call_leader(&self, req: &Request, timeout: Duration) -> Result<BrokerResponse, CallError> {
        let target = self.target();
        let result = self.exchange(&target, req, timeout).await;
        match &result {
            Ok(BrokerResponse::Submit(Err(RpcError::NotLeader { leader })))
            | Ok(BrokerResponse::Watch(Err(RpcError::NotLeader { leader })))
            | Ok(BrokerResponse::Heartbeat(Err(RpcError::NotLeader { leader })))
            | Ok(BrokerResponse::DescribeQuorum(Err(RpcError::NotLeader { leader }))) => {
                let known = leader.clone().filter(|l| *l != target);
                if known.is_none() {
                    self.rotate();
                    self.inner.clock.sleep(RETRY_PAUSE).await;
                }
                *self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()) = known;
            }
            Ok(_) => *self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(target),
            Err(_) => {
                self.forget(&target);
                self.inner.clock.sleep(RETRY_PAUSE).await;
            }
        }
        result
    }

    fn target(&self) -> String {
        if let Some(l) = self.inner.leader.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return l;
        }
        let i = self.inner.next.load(std::sync::atomic::Ordering::Relaxed);
        self.inner.addrs[i % self.inner.addrs.len()].clone()
    }

    fn rotate(&self) {
        self.inner.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn forget(&self, target: &str) {
        let mut leader = self.inner.leader.lock().unwrap_or_else(|e| e.into_inner());
        if leader.as_deref() == Some(target) {
            *leader = None;
        }
        drop(leader);
        // Move past the failed controller when rotating.
        let i = self.inner.next.load(std::sync::atomic::Ordering::Relaxed);
        if self.inner.addrs[i % self.inner.addrs.len()] == target {
            self.rotate();
        }
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
    }

    async fn exchange(&self, addr: &str, req: &Request, timeout: Duration) -> Result<BrokerResponse, CallError> {
        let pooled = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).get_mut(addr).and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => dial(addr).await?,
        };
        let resp = round_trip(&mut stream, addr, req, timeout).await?;
        let mut pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(addr.to_string()).or_default();
        if idle.len() < POOL_PER_ADDR {
            idle.push(stream);
        }
        Ok(resp)
    }

    /// Replays the leader's log into the image until `stop`.
    async fn replay(self, stop: CancellationToken) {
        loop {
            let from = *self.inner.applied.borrow();
            let req = Request::Broker(BrokerRequest::Watch { from, wait_ms: WATCH_WAIT.as_millis() as u64 });
            let outcome = tokio::select! {
                r = self.call_leader(&req, WATCH_WAIT + WATCH_SLACK) => r,
                () = stop.cancelled() => return,
            };
            match outcome {
                Ok(BrokerResponse::Watch(Ok(reply))) => {
                    self.apply(from, reply);
                }
                Ok(_) | Err(_) => {
                    // call_leader already paused and moved on; nothing else to do.
                }
            }
        }
    }

    /// Brings the image up to what the controller leader has applied now, or fails within
    /// [`CATCH_UP_TIMEOUT`]. For answers a client cannot retry that rest on the image (a
    /// fetch past the high watermark, a produce out of sequence): a broker that was frozen
    /// or cut off from the quorum serves from an image that may be seconds old, in which it
    /// still leads partitions that moved on without it.
    pub async fn catch_up(&self) -> Result<(), ControllerError> {
        let deadline = self.inner.clock.now() + CATCH_UP_TIMEOUT;
        loop {
            let from = *self.inner.applied.borrow();
            // No wait: an empty answer means nothing after `from` is applied on the leader.
            let req = Request::Broker(BrokerRequest::Watch { from, wait_ms: 0 });
            let last_error = match self.call_leader(&req, CATCH_UP_ATTEMPT_TIMEOUT).await {
                Ok(BrokerResponse::Watch(Ok(WatchReply::Entries(entries)))) if entries.is_empty() => return Ok(()),
                Ok(BrokerResponse::Watch(Ok(reply))) => {
                    // More may follow (answers are bounded): ask again from the new index.
                    self.apply(from, reply);
                    continue;
                }
                Ok(BrokerResponse::Watch(Err(e))) => e.to_string(),
                Ok(_) => return Err(ControllerError::Unexpected("controller answered another request".into())),
                Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => e,
            };
            if self.inner.clock.now() >= deadline {
                return Err(ControllerError::Unavailable {
                    reason: format!("metadata image not confirmed current within {CATCH_UP_TIMEOUT:?}: {last_error}"),
                });
            }
        }
    }

    /// Applies a `Watch` answer for entries after `from`. The replay and [`Self::catch_up`]
    /// both apply; an answer is applied only if the image is still at `from` (checked under
    /// the image's write lock), so every entry applies exactly once and in order.
    fn apply(&self, from: u64, reply: WatchReply) {
        let mut image = self.inner.image.write().unwrap_or_else(|e| e.into_inner());
        if *self.inner.applied.borrow() != from {
            // The other applier got there first; the caller asks again from the new index.
            return;
        }
        match reply {
            WatchReply::Entries(entries) => {
                let Some(last) = entries.last().map(|(i, _)| *i) else { return };
                if entries.first().is_some_and(|(i, _)| *i != from + 1) {
                    tracing::warn!(from, "metadata entries do not follow the image; asking again");
                    return;
                }
                for (_, commands) in &entries {
                    for cmd in commands.iter() {
                        image.state.apply(cmd);
                    }
                }
                self.inner.applied.send_replace(last);
            }
            WatchReply::Snapshot { index, state } => {
                tracing::info!(index, from, "metadata image replaced by the controller's whole state");
                *image = MetadataImage::new(*state);
                self.inner.applied.send_replace(index);
            }
        }
    }
}

/// Dials a controller (nothing sent yet, so a failure is safe to retry elsewhere).
async fn dial(addr: &str) -> Result<TcpStream, CallError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(CallError::Unreachable(format!("{addr}: {e}"))),
        Err(_) => Err(CallError::Unreachable(format!("{addr}: connect timed out"))),
    }
}

/// Sends `req` on `stream` and reads the broker-service answer within `timeout`. Any failure
/// after sending is ambiguous; the caller must not reuse the stream then.
async fn round_trip(
    stream: &mut TcpStream,
    addr: &str,
    req: &Request,
    timeout: Duration,
) -> Result<BrokerResponse, CallError> {
    let body = serde_json::to_vec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
    let exchange = async {
        write_frame(stream, &body).await?;
        read_frame(stream).await
    };
    let bytes = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(CallError::Ambiguous(format!("{addr}: {e}"))),
        Err(_) => return Err(CallError::Ambiguous(format!("{addr}: no answer within {timeout:?}"))),
    };
    match serde_json::from_slice(&bytes) {
        Ok(Response::Broker(resp)) => Ok(resp),
        Ok(_) => Err(CallError::Ambiguous(format!("{addr}: answered a peer request"))),
        Err(e) => Err(CallError::Ambiguous(format!("{addr}: bad answer: {e}"))),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a real controller on loopback: real time
mod tests {
    use std::collections::BTreeMap;

    use tokio::net::TcpListener;

    use super::*;
    use crate::metadata::BrokerRegistration;
    use crate::{Controller, ControllerConfig};

    /// An image that lags the leader (its replay stopped, as in a frozen broker) is brought
    /// up to the leader's by `catch_up`; with no controller answering, `catch_up` fails within
    /// its bound instead of confirming the old image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_brings_a_lagging_image_current_or_fails_in_bounded_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let config = ControllerConfig::new(1, dir.path().to_path_buf(), "catch-up".into());
        let controller =
            Controller::start(config, BTreeMap::from([(1, addr.clone())]), listener, CancellationToken::new())
                .await
                .expect("controller starts");
        let replay = CancellationToken::new();
        let remote = RemoteController::connect(vec![addr], Duration::from_secs(10), replay.clone())
            .await
            .expect("remote image ready");
        replay.cancel();
        // Let the replay task see the cancellation (its watch in flight is dropped unapplied).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let registration = BrokerRegistration {
            broker_id: 7,
            incarnation: Uuid::from_u128(7),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
        };
        controller.submit(Command::RegisterBroker(registration)).await.expect("register");
        assert!(!remote.metadata().read(|m| m.is_live(7)), "the replay is stopped: the image lags");

        remote.catch_up().await.expect("the leader answers");
        assert!(remote.metadata().read(|m| m.is_live(7)));
        assert_eq!(remote.metadata().applied_index(), controller.metadata().applied_index());
        // Nothing new: confirmed at once, nothing applied twice.
        remote.catch_up().await.expect("the leader answers");
        assert_eq!(remote.metadata().applied_index(), controller.metadata().applied_index());

        controller.shutdown().await.expect("controller stops");
        let started = std::time::Instant::now();
        let e = remote.catch_up().await.expect_err("no controller answers");
        assert!(matches!(e, ControllerError::Unavailable { .. }), "{e}");
        assert!(started.elapsed() < CATCH_UP_TIMEOUT + Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
