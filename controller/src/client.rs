//! A broker's view of a remote controller quorum: submits commands to the Raft leader,
//! replays the metadata log into a local image, and heartbeats.
//!
//! ```text
//! broker ──Submit/Heartbeat/ReadIndex──▶ controller leader (found by asking any controller)
//!        ◀──Watch (long poll)── entries after the image's index, or the whole state
//! ```
//!
//! Invariants:
//! * the image is always the state after some prefix of the log: entries apply in index order,
//!   each batch under one write lock, and a whole-state answer replaces it at once;
//! * `submit` returns only after the command is committed and the local image has applied it
//!   (read-your-writes for the broker's handlers);
//! * a request that may have reached the leader is never silently re-sent, except for commands
//!   that are idempotent by construction (registration, fencing, transaction ops); others report the failure
//!   and the caller decides (the write path rewinds, handlers answer a retriable error);
//! * every exchange has a deadline, so a stopped (SIGSTOP) controller costs at most one
//!   timeout before the next controller is tried;
//! * the image may lag the leader (by a round trip, or by seconds after this process was
//!   frozen or cut off): before an answer that rests on it and that a client cannot retry,
//!   `catch_up` either fails within 2 s or returns once the image has applied every command
//!   committed before it was called (a quorum-confirmed `ReadIndex` from the leader, then
//!   entries up to that index).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::metadata::{BrokerId, Command, CommandResult};
use crate::raft::MetadataHandle;
use crate::raft::network::{Request, Response, read_frame, write_frame};
use crate::raft::service::{BrokerRequest, BrokerResponse, RpcError, WatchReply};
use crate::tls::{Conn, PeerTls};

/// Dialling a controller.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// On top of [`CONNECT_TIMEOUT`] for the TLS handshake, when the controllers use TLS.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
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
/// How long the leader may hold a catch-up's `Watch` for entries up to the read index.
const CATCH_UP_WATCH_WAIT: Duration = Duration::from_millis(250);
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
    pool: Mutex<HashMap<String, Vec<Conn>>>,
    /// The heartbeat's own connection (never pooled): the leader treats its closing as a sign
    /// that this broker died, so it is closed only when an exchange on it fails.
    heartbeat_conn: Mutex<Option<(String, Conn)>>,
    /// Mutual TLS to the controllers, when configured.
    tls: Option<Arc<PeerTls>>,
    image: Arc<RwLock<MetadataImage>>,
    applied: watch::Sender<u64>,
    metadata: MetadataHandle,
    /// Submit deadlines and retry pauses.
    clock: Arc<dyn skiff_time::Clock>,
    /// [`RemoteController::catch_up`]'s single flight: the number of flights started, and
    /// (held by the one in flight) the number of the last that confirmed the image.
    catch_up_started: std::sync::atomic::AtomicU64,
    catch_up_confirmed: tokio::sync::Mutex<u64>,
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
        Self::connect_with(addrs, timeout, stop, clock, None).await
    }

    /// [`Self::connect_with_clock`], over mutual TLS when `tls` is set (`crate::tls`).
    pub async fn connect_with(
        addrs: Vec<String>,
        timeout: Duration,
        stop: CancellationToken,
        clock: Arc<dyn skiff_time::Clock>,
        tls: Option<Arc<PeerTls>>,
    ) -> Result<RemoteController, ControllerError> {
        if addrs.is_empty() {
            return Err(ControllerError::Unavailable { reason: "no controller addresses given".into() });
        }
        let client = Self::new(addrs, clock, tls);
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

    /// A client with an empty image and no replay (the replay is [`Self::connect`]'s).
    fn new(addrs: Vec<String>, clock: Arc<dyn skiff_time::Clock>, tls: Option<Arc<PeerTls>>) -> RemoteController {
        let image = Arc::new(RwLock::new(MetadataImage::default()));
        let (applied, applied_rx) = watch::channel(0);
        let metadata = MetadataHandle::new(image.clone(), applied_rx);
        RemoteController {
            inner: Arc::new(Inner {
                addrs,
                leader: Mutex::new(None),
                next: Default::default(),
                pool: Mutex::new(HashMap::new()),
                heartbeat_conn: Mutex::new(None),
                tls,
                image,
                applied,
                metadata,
                clock,
                catch_up_started: Default::default(),
                catch_up_confirmed: tokio::sync::Mutex::new(0),
            }),
        }
    }

    /// The local metadata image.
    pub fn metadata(&self) -> MetadataHandle {
        self.inner.metadata.clone()
    }

    /// Submits `cmd` to the leader; returns its result once the local image has applied it.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        // Transaction ops are idempotent by construction (RFC 0004 §2: a resubmission is the same op
        // with the same `now_ms` and gets its first answer).
        let idempotent = matches!(cmd, Command::RegisterBroker(_) | Command::FenceBroker { .. } | Command::Txn(_));
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
        // Taken out of the slot for the exchange and put back only after a complete one: a
        // beat dropped mid-exchange (its caller timed out) drops the stream with it, so the
        // next beat never reads this one's late answer.
        let kept = self.inner.heartbeat_conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        let kept = kept.filter(|(addr, _)| *addr == target).map(|(_, stream)| stream);
        let exchange = async {
            let mut stream = match kept {
                Some(stream) => stream,
                None => dial(&target, self.inner.tls.as_deref()).await?,
            };
            let answer = round_trip(&mut stream, &target, &req, HEARTBEAT_TIMEOUT).await?;
            Ok::<_, CallError>((stream, answer))
        };
        let answer = match exchange.await {
            Ok((stream, BrokerResponse::Heartbeat(answer))) => {
                *self.inner.heartbeat_conn.lock().unwrap_or_else(|e| e.into_inner()) = Some((target.clone(), stream));
                answer
            }
            other => {
                // The stream (dropped here) may hold a late answer; the next beat dials again.
                self.forget(&target);
                let why = match other {
                    Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => e,
                    Ok(_) => format!("{target}: answered another request"),
                };
                return Err(ControllerError::Unavailable { reason: why });
            }
        };
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
            | Ok(BrokerResponse::DescribeQuorum(Err(RpcError::NotLeader { leader })))
            | Ok(BrokerResponse::ReadIndex(Err(RpcError::NotLeader { leader }))) => {
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
            None => dial(addr, self.inner.tls.as_deref()).await?,
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

    /// Confirms the image current, or fails within [`CATCH_UP_TIMEOUT`]: on `Ok`, the image
    /// has applied every metadata command committed before this call began. The controller
    /// leader answers a `ReadIndex` only after a quorum confirmed its leadership and it applied
    /// everything committed when the request arrived (a deposed or lagging leader cannot
    /// answer it); the image then pulls entries until it has applied that index. For answers
    /// a client cannot retry that rest on the image (a fetch past the high watermark, a
    /// produce out of sequence): a broker that was frozen or cut off from the quorum serves
    /// from an image that may be seconds old, in which it still leads partitions that moved
    /// on without it.
    ///
    /// Single flight: concurrent callers wait for the one in flight and reuse its
    /// confirmation when it began after they arrived (so many fetches past the high
    /// watermark cost the leader one read index, not one each).
    pub async fn catch_up(&self) -> Result<(), ControllerError> {
        use std::sync::atomic::Ordering::SeqCst;
        let clock = &self.inner.clock;
        let deadline = clock.now() + CATCH_UP_TIMEOUT;
        let unavailable = |why: &str| ControllerError::Unavailable {
            reason: format!("metadata image not confirmed current within {CATCH_UP_TIMEOUT:?}: {why}"),
        };
        let arrived = self.inner.catch_up_started.load(SeqCst);
        let mut confirmed = tokio::select! {
            g = self.inner.catch_up_confirmed.lock() => g,
            () = clock.sleep_until(deadline) => return Err(unavailable("another catch-up still running")),
        };
        if *confirmed > arrived {
            return Ok(());
        }
        let started = self.inner.catch_up_started.fetch_add(1, SeqCst) + 1;

        let mut last_error = String::from("no attempt");
        let target = loop {
            if clock.now() >= deadline {
                return Err(unavailable(&last_error));
            }
            let req = Request::Broker(BrokerRequest::ReadIndex);
            last_error = match self.call_until(&req, CATCH_UP_ATTEMPT_TIMEOUT, deadline).await {
                Ok(BrokerResponse::ReadIndex(Ok(index))) => break index,
                Ok(BrokerResponse::ReadIndex(Err(e))) => e.to_string(),
                Ok(_) => return Err(ControllerError::Unexpected("controller answered another request".into())),
                Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => e,
            };
        };
        loop {
            let from = *self.inner.applied.borrow();
            if from >= target {
                *confirmed = started;
                return Ok(());
            }
            if clock.now() >= deadline {
                return Err(unavailable(&format!("image at {from}, leader's read index {target}: {last_error}")));
            }
            // Answers at once when entries after `from` are applied on the leader (they are,
            // unless leadership moved to a node still applying): no busy loop in that case.
            let req = Request::Broker(BrokerRequest::Watch { from, wait_ms: CATCH_UP_WATCH_WAIT.as_millis() as u64 });
            match self.call_until(&req, CATCH_UP_WATCH_WAIT + CATCH_UP_ATTEMPT_TIMEOUT, deadline).await {
                // Another applier (the replay) may have got there first: `apply` then skips it.
                Ok(BrokerResponse::Watch(Ok(reply))) => self.apply(from, reply),
                Ok(BrokerResponse::Watch(Err(e))) => last_error = e.to_string(),
                Ok(_) => return Err(ControllerError::Unexpected("controller answered another request".into())),
                Err(CallError::Unreachable(e) | CallError::Ambiguous(e)) => last_error = e,
            }
        }
    }

    /// [`Self::call_leader`] given up at `deadline` at the latest (dialling included). A call
    /// given up drops its stream, so no late answer is ever read.
    async fn call_until(
        &self,
        req: &Request,
        timeout: Duration,
        deadline: skiff_time::Instant,
    ) -> Result<BrokerResponse, CallError> {
        tokio::select! {
            r = self.call_leader(req, timeout) => r,
            () = self.inner.clock.sleep_until(deadline) => Err(CallError::Unreachable("deadline reached".into())),
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
async fn dial(addr: &str, tls: Option<&PeerTls>) -> Result<Conn, CallError> {
    let timeout = if tls.is_some() { CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT } else { CONNECT_TIMEOUT };
    match tokio::time::timeout(timeout, crate::tls::dial(addr, tls)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(CallError::Unreachable(format!("{addr}: {e}"))),
        Err(_) => Err(CallError::Unreachable(format!("{addr}: connect timed out"))),
    }
}

/// Sends `req` on `stream` and reads the broker-service answer within `timeout`. Any failure
/// after sending is ambiguous; the caller must not reuse the stream then.
async fn round_trip(
    stream: &mut Conn,
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

    async fn single_controller(dir: &std::path::Path) -> (Controller, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let config = ControllerConfig::new(1, dir.to_path_buf(), "catch-up".into());
        let controller =
            Controller::start(config, BTreeMap::from([(1, addr.clone())]), listener, CancellationToken::new())
                .await
                .expect("controller starts");
        (controller, addr)
    }

    fn registration(broker_id: BrokerId) -> Command {
        Command::RegisterBroker(BrokerRegistration {
            broker_id,
            incarnation: Uuid::from_u128(broker_id as u128),
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            listeners: Vec::new(),
        })
    }

    /// An image that lags the leader (no replay runs, as in a frozen broker) is brought up to
    /// the leader's by `catch_up`; with no controller answering, `catch_up` fails within its
    /// bound instead of confirming the old image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_brings_a_lagging_image_current_or_fails_in_bounded_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (controller, addr) = single_controller(dir.path()).await;
        // No replay task: only `catch_up` moves this image, so the test needs no timing.
        let remote = RemoteController::new(vec![addr], skiff_time::system_clock(), None);
        remote.catch_up().await.expect("the leader answers");
        assert!(remote.metadata().read(|m| !m.cluster_id().is_empty()));
        controller.submit(registration(7)).await.expect("register");
        assert!(!remote.metadata().read(|m| m.is_live(7)), "no replay: the image lags");

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
        assert!(started.elapsed() < CATCH_UP_TIMEOUT + Duration::from_millis(500), "{:?}", started.elapsed());
    }

    /// With commands committed continuously, `catch_up` still ends within its bound (it pulls
    /// up to the read index, not until the leader has nothing new), and concurrent callers all
    /// get an image at least as new as the leader's when they called.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_ends_in_bounded_time_while_entries_keep_arriving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (controller, addr) = single_controller(dir.path()).await;
        let remote = RemoteController::new(vec![addr], skiff_time::system_clock(), None);
        let stop = CancellationToken::new();
        let writer = tokio::spawn({
            let (controller, stop) = (controller.clone(), stop.clone());
            async move {
                let mut n = 0u64;
                while !stop.is_cancelled() && n < 20_000 {
                    controller.submit(Command::AllocateProducerId).await.expect("submit");
                    n += 1;
                }
                n
            }
        });
        for _ in 0..5 {
            let before = controller.metadata().applied_index();
            let started = std::time::Instant::now();
            let (a, b, c, d) = tokio::join!(remote.catch_up(), remote.catch_up(), remote.catch_up(), remote.catch_up());
            for r in [a, b, c, d] {
                r.expect("the leader answers");
            }
            assert!(started.elapsed() < CATCH_UP_TIMEOUT + Duration::from_millis(500), "{:?}", started.elapsed());
            assert!(remote.metadata().applied_index() >= before);
        }
        stop.cancel();
        assert!(writer.await.expect("writer") > 0, "entries kept arriving");
        controller.shutdown().await.expect("controller stops");
    }

    /// A follower answers `ReadIndex` with "not the leader"; a leader that lost its quorum (its
    /// only peer stopped: a deposed or minority-side leader still believes it leads) cannot
    /// confirm either, so `catch_up` fails within its bound where an empty `Watch` from the
    /// same node would have "confirmed" its image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_or_a_leader_without_quorum_does_not_confirm_the_image() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let l1 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let l2 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // Three voters, two started: both are needed for a quorum.
        let unused = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let voters = BTreeMap::from([
            (1, l1.local_addr().expect("addr").to_string()),
            (2, l2.local_addr().expect("addr").to_string()),
            (3, unused.local_addr().expect("addr").to_string()),
        ]);
        drop(unused);
        let config = |id: u64| ControllerConfig::new(id, dirs[id as usize - 1].path().to_path_buf(), "q".into());
        let token = CancellationToken::new();
        let (n1, n2) = tokio::join!(
            Controller::start(config(1), voters.clone(), l1, token.clone()),
            Controller::start(config(2), voters.clone(), l2, token.clone()),
        );
        let nodes = [n1.expect("node 1"), n2.expect("node 2")];
        let probe = RemoteController::new(voters.values().cloned().collect(), skiff_time::system_clock(), None);
        let read_index = Request::Broker(BrokerRequest::ReadIndex);
        let mut leader = None;
        for _ in 0..50 {
            for (i, addr) in voters.values().take(2).enumerate() {
                if let Ok(BrokerResponse::ReadIndex(Ok(_))) = probe.exchange(addr, &read_index, CATCH_UP_TIMEOUT).await
                {
                    leader = Some(i);
                }
            }
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = leader.expect("a leader answers ReadIndex");
        let follower = 1 - leader;
        let leader_addr = voters[&nodes[leader].node_id()].clone();
        let follower_addr = voters[&nodes[follower].node_id()].clone();

        let answer = probe.exchange(&follower_addr, &read_index, CATCH_UP_TIMEOUT).await;
        assert!(matches!(answer, Ok(BrokerResponse::ReadIndex(Err(RpcError::NotLeader { .. })))), "{answer:?}");

        nodes[follower].shutdown().await.expect("follower stops");
        // The old check: the leader still answers Watch (it believes it leads).
        let watch = Request::Broker(BrokerRequest::Watch { from: u64::MAX, wait_ms: 0 });
        let answer = probe.exchange(&leader_addr, &watch, CATCH_UP_TIMEOUT).await;
        assert!(matches!(answer, Ok(BrokerResponse::Watch(Ok(_)))), "{answer:?}");

        let remote = RemoteController::new(vec![leader_addr], skiff_time::system_clock(), None);
        let started = std::time::Instant::now();
        let e = remote.catch_up().await.expect_err("no quorum confirms the leader");
        assert!(matches!(e, ControllerError::Unavailable { .. }), "{e}");
        assert!(started.elapsed() < CATCH_UP_TIMEOUT + Duration::from_millis(500), "{:?}", started.elapsed());
        token.cancel();
        for n in &nodes {
            n.shutdown().await.expect("stops");
        }
    }
}
