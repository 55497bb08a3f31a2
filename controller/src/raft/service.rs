//! The controller's broker-facing service, on the same listener and framing as the Raft RPCs
//! (`network.rs`): brokers submit commands, replay the metadata log (`Watch`) and heartbeat.
//! Plus the leader's fencing loop, which turns missed heartbeats into `FenceBroker` commands.
//!
//! Invariants:
//! * `Submit` answers only after the command is committed and applied on the leader, with the
//!   log index that carried it: the broker waits until its own image has applied that index, so
//!   it reads its own writes;
//! * `Watch` returns a contiguous run of applied entries after the broker's index, or the whole
//!   state with the index it reflects (when the journal no longer reaches back that far): the
//!   broker's image is always exactly some prefix of the log;
//! * `ReadIndex` answers only after a quorum confirmed this node's leadership and this node
//!   applied everything committed before the request: the broker's proof its image is current;
//! * only the Raft leader answers `Watch` and `Heartbeat` (others say who leads), and only the
//!   leader fences; a new leader gives every broker a full session timeout before fencing it;
//! * a fence names the broker's incarnation, so a late fence can never hit a re-registered
//!   process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use skiff_time::Instant;

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::metadata::{BrokerId, Command, CommandResult, MetadataState};
use crate::raft::TypeConfig;
use crate::raft::proposer::Proposal;
use crate::raft::state_machine::{Journal, lock_journal};

/// At most this many entries per `Watch` answer.
const WATCH_MAX_ENTRIES: usize = 2_000;
/// Upper bound on how long a `Watch` is held open waiting for news.
const WATCH_MAX_WAIT: Duration = Duration::from_secs(5);
/// Upper bound on a `ReadIndex` (the broker gives up on one exchange sooner).
const READ_INDEX_MAX_WAIT: Duration = Duration::from_secs(2);
/// How often the leader checks sessions.
const FENCE_TICK: Duration = Duration::from_millis(50);

/// A broker's request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BrokerRequest {
    Submit(Command),
    /// Entries applied after `from`, waiting up to `wait_ms` for some.
    Watch {
        from: u64,
        wait_ms: u64,
    },
    Heartbeat {
        broker_id: BrokerId,
        incarnation: Uuid,
    },
    /// The quorum's replication status (answered by the leader).
    DescribeQuorum,
    /// A linearizable read index: the leader confirms with a quorum that it still leads and
    /// waits until it has applied everything committed when the request arrived, then answers
    /// that log index. An image that has applied it reflects every write acknowledged before
    /// the request was sent.
    ReadIndex,
}

impl BrokerRequest {
    /// The request's name in traces.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            BrokerRequest::Submit(_) => "Submit",
            BrokerRequest::Watch { .. } => "Watch",
            BrokerRequest::Heartbeat { .. } => "Heartbeat",
            BrokerRequest::DescribeQuorum => "DescribeQuorum",
            BrokerRequest::ReadIndex => "ReadIndex",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BrokerResponse {
    /// The command's result and the log index that carried it.
    Submit(Result<(CommandResult, u64), RpcError>),
    Watch(Result<WatchReply, RpcError>),
    Heartbeat(Result<HeartbeatReply, RpcError>),
    DescribeQuorum(Result<crate::quorum::QuorumStatus, RpcError>),
    ReadIndex(Result<u64, RpcError>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WatchReply {
    /// Contiguous entries (index, commands), possibly none (nothing new within the wait).
    Entries(Vec<(u64, Arc<Vec<Command>>)>),
    /// The whole state as of `index`.
    Snapshot { index: u64, state: Box<MetadataState> },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HeartbeatReply {
    /// The broker is not (or no longer) a live registered incarnation: it must register again.
    pub(crate) fenced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum RpcError {
    #[error("not the controller leader (leader at {leader:?})")]
    NotLeader { leader: Option<String> },
    #[error("controller closed")]
    Closed,
    #[error("{0}")]
    Failed(String),
}

/// Last heartbeat per broker incarnation, on the leader, and which brokers' heartbeat
/// connection closed since their last beat.
#[derive(Default)]
pub(crate) struct Liveness {
    seen: Mutex<HashMap<BrokerId, (Uuid, Instant)>>,
    /// Heartbeat connection closed (process gone, or connection reset) at this time, with no
    /// beat since; `true` once a probe of the broker's listeners was refused (process gone).
    lost: Mutex<HashMap<BrokerId, (Uuid, Instant, bool)>>,
    /// Wakes the fencing loop when a process is known gone, so it is fenced without waiting
    /// for the loop's next tick.
    gone: tokio::sync::Notify,
}

/// How long a probe of a broker's Kafka listener may take: a refused connection answers at
/// once (its kernel, on loopback or over a LAN, replies RST); anything slower is no proof.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// What a probe of a broker's listeners found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Every listener refused the connection: nothing listens there, the process is gone.
    Refused,
    /// Some listener accepted (the process lives, perhaps frozen), or no answer in time, or no
    /// address to try: no proof either way.
    Inconclusive,
}

/// Pauses between probes after a heartbeat connection closed. A dying process's kernel closes
/// its sockets one by one: the heartbeat connection may close a moment before the listener,
/// which meanwhile still accepts. Some 200 ms in all, well inside half a session timeout. The
/// first retries come fast: clients see the same closed connections and ask for Metadata at
/// once, and surviving brokers hold those answers until this fence reaches them.
const PROBE_PAUSES_MS: [u64; 8] = [0, 2, 5, 10, 20, 40, 60, 100];

/// Probes `addrs` a few times ([`PROBE_PAUSES_MS`]); true as soon as one probe is refused.
pub(crate) async fn probe_until_refused(addrs: &[String], clock: &dyn skiff_time::Clock) -> bool {
    for pause in PROBE_PAUSES_MS {
        clock.sleep(Duration::from_millis(pause)).await;
        if probe_listeners(addrs, clock).await == Probe::Refused {
            return true;
        }
    }
    false
}

/// Tries to connect to each of `addrs` (HOST:PORT); see [`Probe`]. The connection is closed at
/// once without a byte sent.
pub(crate) async fn probe_listeners(addrs: &[String], clock: &dyn skiff_time::Clock) -> Probe {
    if addrs.is_empty() {
        return Probe::Inconclusive;
    }
    for addr in addrs {
        let refused = tokio::select! {
            r = tokio::net::TcpStream::connect(addr.as_str()) => {
                matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            }
            () = clock.sleep(PROBE_TIMEOUT) => false,
        };
        if !refused {
            return Probe::Inconclusive;
        }
    }
    Probe::Refused
}

impl Liveness {
    fn beat(&self, broker_id: BrokerId, incarnation: Uuid, now: Instant) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(broker_id, (incarnation, now));
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).remove(&broker_id);
    }

    /// The connection `broker_id` heartbeats on closed. A crashed process's sockets are closed
    /// by its kernel at once, so this is usually the first sign of a crash.
    pub(crate) fn connection_lost(&self, broker_id: BrokerId, incarnation: Uuid, now: Instant) {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).insert(broker_id, (incarnation, now, false));
    }

    /// A probe after the loss at `at` was refused: the process is gone. Ignored when the broker
    /// beat (or lost another connection) since.
    pub(crate) fn process_gone(&self, broker_id: BrokerId, incarnation: Uuid, at: Instant) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = lost.get_mut(&broker_id).filter(|(i, t, _)| *i == incarnation && *t == at) {
            entry.2 = true;
            self.gone.notify_one();
        }
    }

    /// When the heartbeat connection of this incarnation closed (no beat since), and whether its
    /// process is known to be gone.
    fn lost_since(&self, broker_id: BrokerId, incarnation: Uuid) -> Option<(Instant, bool)> {
        let lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        lost.get(&broker_id).filter(|(i, ..)| *i == incarnation).map(|(_, t, gone)| (*t, *gone))
    }

    /// The Kafka listener addresses of a live broker incarnation, to probe.
    pub(crate) fn listener_addrs(state: &MetadataImage, broker_id: BrokerId, incarnation: Uuid) -> Vec<String> {
        let Some(b) = state.state.brokers.get(&broker_id).filter(|b| b.incarnation == incarnation && !b.fenced) else {
            return Vec::new();
        };
        let mut addrs: Vec<String> = b.listeners.iter().map(|l| format!("{}:{}", l.host, l.port)).collect();
        if addrs.is_empty() {
            addrs.push(format!("{}:{}", b.host, b.port));
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    fn last(&self, broker_id: BrokerId, incarnation: Uuid) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&broker_id).filter(|(i, _)| *i == incarnation).map(|(_, t)| *t)
    }
}

/// Counters for `/metrics` on a controller.
#[derive(Default)]
pub(crate) struct FenceStats {
    pub(crate) fenced_timeout: std::sync::atomic::AtomicU64,
    pub(crate) fenced_controlled: std::sync::atomic::AtomicU64,
    /// Sum and max of (fence committed − last heartbeat), in ms, for timeouts.
    pub(crate) detect_ms_sum: std::sync::atomic::AtomicU64,
    pub(crate) detect_ms_max: std::sync::atomic::AtomicU64,
}

/// What the service needs from a running controller.
pub(crate) struct Service {
    pub(crate) node_id: u64,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) proposals: mpsc::Sender<Proposal>,
    pub(crate) state: Arc<RwLock<MetadataImage>>,
    pub(crate) journal: Arc<Mutex<Journal>>,
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) liveness: Liveness,
    pub(crate) fence_stats: FenceStats,
    pub(crate) clock: Arc<dyn skiff_time::Clock>,
    /// Each peer's last replication answer (DescribeQuorum).
    pub(crate) acks: Arc<crate::quorum::Acks>,
    /// Mutual TLS on the listener (`crate::tls`), when configured.
    pub(crate) tls: Option<Arc<crate::tls::PeerTls>>,
}

impl Service {
    pub(crate) async fn handle(&self, req: BrokerRequest) -> BrokerResponse {
        match req {
            BrokerRequest::Submit(cmd) => BrokerResponse::Submit(self.submit(cmd).await),
            BrokerRequest::Watch { from, wait_ms } => BrokerResponse::Watch(self.watch(from, wait_ms).await),
            BrokerRequest::DescribeQuorum => BrokerResponse::DescribeQuorum(self.quorum_status()),
            BrokerRequest::ReadIndex => BrokerResponse::ReadIndex(self.read_index().await),
            BrokerRequest::Heartbeat { broker_id, incarnation } => {
                BrokerResponse::Heartbeat(self.heartbeat(broker_id, incarnation))
            }
        }
    }

    /// The current leader's id and address as this node knows them.
    pub(crate) fn leader(&self) -> (Option<u64>, Option<String>) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let addr = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
        (m.current_leader, addr)
    }

    /// The quorum's replication status, answered by the leader only (its followers do not know
    /// each other's progress).
    pub(crate) fn quorum_status(&self) -> Result<crate::quorum::QuorumStatus, RpcError> {
        self.check_leader()?;
        let view = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let addrs = membership.voter_ids().map(|id| {
                let addr = membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
                (id, addr)
            });
            crate::quorum::LeaderView {
                node_id: self.node_id,
                term: m.current_term,
                last_log_index: m.last_log_index,
                matched: m
                    .replication
                    .as_ref()
                    .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                    .unwrap_or_default(),
                addrs: addrs.collect(),
            }
        };
        Ok(crate::quorum::status(&view, &self.acks, self.clock.now_ms()))
    }

    fn check_leader(&self) -> Result<(), RpcError> {
        match self.leader() {
            (Some(id), _) if id == self.node_id => Ok(()),
            (_, addr) => Err(RpcError::NotLeader { leader: addr }),
        }
    }

    /// Proposes `cmd` and waits until it is committed by the quorum and applied here (traced
    /// as `raft.commit`).
    pub(crate) async fn submit_indexed(&self, cmd: Command) -> Result<(CommandResult, u64), ControllerError> {
        let span = tracing::debug_span!("raft.commit", node_id = self.node_id, index = tracing::field::Empty);
        async {
            let (reply, result) = oneshot::channel();
            self.proposals.send(Proposal { cmd, reply }).await.map_err(|_| ControllerError::Closed)?;
            let done = result.await.map_err(|_| ControllerError::Closed)?;
            if let Ok((_, index)) = &done {
                tracing::Span::current().record("index", index);
            }
            done
        }
        .instrument(span)
        .await
    }

    async fn submit(&self, cmd: Command) -> Result<(CommandResult, u64), RpcError> {
        // A registration starts the session: without this the fencing loop could see a
        // registered broker that never beat and fence it at once.
        if let Command::RegisterBroker(reg) = &cmd {
            self.liveness.beat(reg.broker_id, reg.incarnation, self.clock.now());
        }
        let controlled = matches!(cmd, Command::FenceBroker { controlled: true, .. });
        let result = self.submit_indexed(cmd).await.map_err(|e| match e {
            ControllerError::NotLeader { .. } => RpcError::NotLeader { leader: self.leader().1 },
            ControllerError::Closed => RpcError::Closed,
            e => RpcError::Failed(e.to_string()),
        });
        if controlled && result.is_ok() {
            self.fence_stats.fenced_controlled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn watch(&self, from: u64, wait_ms: u64) -> Result<WatchReply, RpcError> {
        self.check_leader()?;
        let deadline = self.clock.now() + Duration::from_millis(wait_ms).min(WATCH_MAX_WAIT);
        let mut applied = self.applied.clone();
        loop {
            applied.borrow_and_update();
            {
                // State lock first, then the journal: the same order apply uses.
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                let journal = lock_journal(&self.journal);
                match journal.since(from, WATCH_MAX_ENTRIES) {
                    Some(entries) if !entries.is_empty() => return Ok(WatchReply::Entries(entries)),
                    Some(_) => {}
                    None => {
                        return Ok(WatchReply::Snapshot { index: journal.last, state: Box::new(state.state.clone()) });
                    }
                }
            }
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return Err(RpcError::Closed) },
                () = self.clock.sleep_until(deadline) => return Ok(WatchReply::Entries(Vec::new())),
            }
        }
    }

    /// `ReadIndex`: openraft's `ensure_linearizable` (a heartbeat round acknowledged by a
    /// quorum in this node's term, then applying up to the commit index seen when it started),
    /// bounded by [`READ_INDEX_MAX_WAIT`]. A deposed leader (frozen, or on the minority side)
    /// cannot gather the quorum and a lagging new leader answers only once it has applied, so
    /// neither can confirm a stale image. `watch` alone checks only this node's local view.
    async fn read_index(&self) -> Result<u64, RpcError> {
        // Cheap early answer with a hint where this node knows it does not lead.
        self.check_leader()?;
        tokio::select! {
            r = self.raft.ensure_linearizable() => match r {
                Ok(read) => Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    Err(RpcError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    tracing::debug!(error = %e, "read index: leadership not confirmed by a quorum");
                    Err(RpcError::NotLeader { leader: None })
                }
                Err(RaftError::Fatal(Fatal::Stopped)) => Err(RpcError::Closed),
                Err(e) => Err(RpcError::Failed(e.to_string())),
            },
            () = self.clock.sleep(READ_INDEX_MAX_WAIT) => Err(RpcError::NotLeader { leader: None }),
        }
    }

    fn heartbeat(&self, broker_id: BrokerId, incarnation: Uuid) -> Result<HeartbeatReply, RpcError> {
        self.check_leader()?;
        self.liveness.beat(broker_id, incarnation, self.clock.now());
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let live = state.state.brokers.get(&broker_id).is_some_and(|b| b.incarnation == incarnation && !b.fenced);
        Ok(HeartbeatReply { fenced: !live })
    }
}

/// Whether a closed heartbeat connection (`lost`: when, and whether the process is known gone)
/// fences its broker now. Only a loss seen while this node led counts (it was leading when it
/// heard beats). A process known gone is fenced at once; otherwise the broker has half the
/// session timeout to beat again (a live broker whose connection merely broke reconnects and
/// beats within one heartbeat interval), so a broken connection never fences a live broker.
fn lost_fences(lost: Option<(Instant, bool)>, since: Instant, now: Instant, session_timeout: Duration) -> bool {
    lost.is_some_and(|(t, gone)| t > since && (gone || now - t > session_timeout / 2))
}

/// The leader's fencing loop: fences every live broker whose last heartbeat (or this node's
/// election, whichever is later) is older than `session_timeout`, or whose heartbeat
/// connection closed and whose process is gone (its listeners refuse connections) or who has
/// not heartbeated again within half the session timeout (see [`lost_fences`]). Runs until
/// `stop`.
pub(crate) async fn run_fencing(service: Arc<Service>, session_timeout: Duration, stop: CancellationToken) {
    let mut leader_since: Option<Instant> = None;
    // Fences proposed and when, so a slow commit is not proposed again every tick.
    let mut proposed: HashMap<(BrokerId, Uuid), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(FENCE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Fences being submitted: owned here, so none outlives the loop.
    let mut fences = tokio::task::JoinSet::new();
    let clock = service.clock.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = service.liveness.gone.notified() => {}
            Some(_) = fences.join_next(), if !fences.is_empty() => continue,
            () = stop.cancelled() => break,
        }
        let now = clock.now();
        if service.leader().0 != Some(service.node_id) {
            leader_since = None;
            proposed.clear();
            continue;
        }
        let since = *leader_since.get_or_insert(now);
        let live: Vec<(BrokerId, Uuid)> = {
            let state = service.state.read().unwrap_or_else(|e| e.into_inner());
            state.state.brokers.values().filter(|b| !b.fenced).map(|b| (b.broker_id, b.incarnation)).collect()
        };
        proposed.retain(|k, _| live.contains(k));
        for (broker_id, incarnation) in live {
            let last = service.liveness.last(broker_id, incarnation);
            let seen = last.map_or(since, |l| l.max(since));
            let lost = service.liveness.lost_since(broker_id, incarnation);
            let expired = now - seen > session_timeout;
            let disconnected = lost_fences(lost, since, now, session_timeout);
            if !expired && !disconnected {
                continue;
            }
            if proposed.get(&(broker_id, incarnation)).is_some_and(|t| now - *t < Duration::from_secs(2)) {
                continue;
            }
            proposed.insert((broker_id, incarnation), now);
            tracing::warn!(
                broker_id,
                %incarnation,
                silent_ms = (now - seen).as_millis() as u64,
                connection_lost = disconnected,
                "broker session expired: fencing it and moving its partitions"
            );
            let service = service.clone();
            let clock = clock.clone();
            fences.spawn(async move {
                let cmd = Command::FenceBroker { broker_id, incarnation, controlled: false };
                match service.submit_indexed(cmd).await {
                    Ok(_) => {
                        // From the last heartbeat to the committed fence.
                        let detect = (clock.now() - seen).as_millis() as u64;
                        let stats = &service.fence_stats;
                        use std::sync::atomic::Ordering::Relaxed;
                        stats.fenced_timeout.fetch_add(1, Relaxed);
                        stats.detect_ms_sum.fetch_add(detect, Relaxed);
                        stats.detect_ms_max.fetch_max(detect, Relaxed);
                        // unix_ms: when the fence committed, for failover timelines across processes.
                        tracing::info!(broker_id, detect_ms = detect, unix_ms = clock.now_ms(), "broker fenced");
                    }
                    Err(e) => tracing::warn!(broker_id, error = %e, "fencing failed; will retry"),
                }
            });
        }
    }
    // A fence still in flight at stop is abandoned: the next leader's loop fences again.
    fences.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_fences_at_once_only_when_the_process_is_gone() {
        let since = skiff_time::system_clock().now();
        let lost_at = since + Duration::from_millis(10);
        let ms = |n| lost_at + Duration::from_millis(n);
        let timeout = Duration::from_secs(1);
        // Process gone (its listeners refused): fenced at the loss, no wait.
        assert!(lost_fences(Some((lost_at, true)), since, lost_at, timeout));
        // Unproven (a live broker whose connection broke): half the session timeout to beat again.
        assert!(!lost_fences(Some((lost_at, false)), since, lost_at, timeout));
        assert!(!lost_fences(Some((lost_at, false)), since, ms(499), timeout));
        assert!(lost_fences(Some((lost_at, false)), since, ms(501), timeout));
        // A loss from before this node led never counts, gone or not.
        assert!(!lost_fences(Some((since, true)), lost_at, ms(1), timeout));
        assert!(!lost_fences(None, since, ms(1), timeout));
    }

    #[test]
    fn a_beat_after_the_loss_outruns_a_late_probe() {
        let liveness = Liveness::default();
        let (id, inc) = (4, Uuid::from_u128(7));
        let at = skiff_time::system_clock().now();
        liveness.connection_lost(id, inc, at);
        liveness.beat(id, inc, at + Duration::from_millis(5));
        liveness.process_gone(id, inc, at);
        assert_eq!(liveness.lost_since(id, inc), None, "the reconnected broker is not suspect");
        // A second loss: a probe of the first one must not mark it gone.
        let again = at + Duration::from_millis(6);
        liveness.connection_lost(id, inc, again);
        liveness.process_gone(id, inc, at);
        assert_eq!(liveness.lost_since(id, inc), Some((again, false)));
        liveness.process_gone(id, inc, again);
        assert_eq!(liveness.lost_since(id, inc), Some((again, true)));
        // Another incarnation's loss is not this one's.
        assert_eq!(liveness.lost_since(id, Uuid::from_u128(8)), None);
    }

    #[tokio::test]
    async fn probe_tells_a_closed_port_from_a_listening_one() {
        let clock = skiff_time::system_clock();
        let listening = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listening.local_addr().expect("addr").to_string();
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert_eq!(probe_listeners(std::slice::from_ref(&closed), clock.as_ref()).await, Probe::Refused);
        assert_eq!(probe_listeners(&[closed.clone(), open.clone()], clock.as_ref()).await, Probe::Inconclusive);
        assert_eq!(probe_listeners(&[open], clock.as_ref()).await, Probe::Inconclusive);
        assert_eq!(probe_listeners(&[], clock.as_ref()).await, Probe::Inconclusive);
    }
}
