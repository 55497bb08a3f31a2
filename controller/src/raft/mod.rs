//! openraft wiring: a running controller node and the read handle brokers use.
//!
//! * [`log_store`] (+ [`segments`]): the durable Raft log and vote under `<data_dir>/log/`.
//! * [`state_machine`]: applies commands to [`MetadataState`], snapshots under
//!   `<data_dir>/snapshots/`.
//! * [`network`]: RPCs between voters over TCP.
//! * [`proposer`]: batches concurrent submits into one Raft entry (group commit).
//! * [`Controller`]: starts openraft over those, submits commands, stops it.
//! * [`MetadataHandle`]: the applied state plus a watch of the applied log index.
//!
//! Invariants:
//! * [`Controller::submit`] returns only after the command is committed (fsynced in the Raft log
//!   of a quorum) and applied, so a broker that acknowledged on it never loses the command;
//! * when [`Controller::start_single`] returns, the node is leader and has applied its whole log,
//!   so the handle reflects every committed command (the same holds for [`Controller::start`]
//!   when it returns on the leader);
//! * one task owns the stop sequence (Raft core, then the log writer thread); every
//!   [`Controller::shutdown`] call and the caller's cancellation token just trigger and await it.

mod fs;
mod log_store;
pub(crate) mod network;
mod proposer;
mod segments;
pub(crate) mod service;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{Fatal, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::metadata::{Command, CommandResult};
use log_store::{LogStore, WriterDone};
use network::TcpNetwork;
use proposer::CommandBatch;
use service::Service;
use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The openraft type configuration of the metadata log.
    pub(crate) TypeConfig:
        D = CommandBatch,
        R = Vec<CommandResult>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// How long starting waits for a leader to be known. An election takes about one election
/// timeout; the rest is slack for a slow disk replaying a long log.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Configuration of one controller node.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's Raft id; must never change for a given `data_dir`.
    pub node_id: u64,
    /// Raft log, vote and snapshots live under this directory.
    pub data_dir: PathBuf,
    /// Used only when initializing a brand-new cluster.
    pub cluster_id: String,
    /// Build a snapshot and purge the log after this many applied entries. Default 10 000:
    /// larger keeps more log in memory and replays longer on restart; smaller snapshots (a
    /// full serialization of the metadata) more often.
    pub snapshot_every_entries: u64,
    /// Fence a broker whose heartbeats stopped for this long (`None`: no fencing, for `skiff
    /// dev` whose one broker lives in the same process).
    pub session_timeout: Option<Duration>,
    /// Log entries kept after a snapshot. Default 10,000: a voter that falls behind (or spent
    /// seconds installing a multi-MB snapshot while the leader moved on) catches up from the
    /// log instead of needing another snapshot, which could otherwise repeat forever when
    /// snapshots are built faster than they install (found by tests/cluster.rs). Costs memory
    /// (entries are a few hundred bytes) and replay time on restart.
    pub log_kept_after_snapshot: u64,
    /// Heartbeat ages, watch deadlines and retry pauses. Default: the system clock.
    pub clock: Arc<dyn skiff_time::Clock>,
    /// Mutual TLS for the listener and the RPCs to other voters (`crate::tls`). Default none:
    /// plaintext.
    pub tls: Option<Arc<crate::tls::PeerTls>>,
}

impl ControllerConfig {
    pub fn new(node_id: u64, data_dir: PathBuf, cluster_id: String) -> Self {
        Self {
            node_id,
            data_dir,
            cluster_id,
            snapshot_every_entries: 10_000,
            session_timeout: None,
            log_kept_after_snapshot: 10_000,
            clock: skiff_time::system_clock(),
            tls: None,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, ControllerError> {
        if self.snapshot_every_entries == 0 {
            return Err(ControllerError::Raft("snapshot_every_entries must be at least 1".into()));
        }
        openraft::Config {
            cluster_name: "skiff".into(),
            // Followers notice a dead leader within 300-600 ms; heartbeats well below that.
            heartbeat_interval: 150,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_kept_after_snapshot,
            // Snapshots travel as JSON in chunks; openraft's defaults (3 MiB chunks, 200 ms per
            // chunk) can never deliver a multi-MB metadata snapshot, leaving a wiped or lagging
            // voter behind for good (found by tests/cluster.rs). Small chunks, generous timeout.
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(format!("invalid raft config: {e}")))
    }
}

/// The read side of the metadata: the applied state and the applied log index.
#[derive(Clone)]
pub struct MetadataHandle {
    state: Arc<RwLock<MetadataImage>>,
    applied: watch::Receiver<u64>,
}

impl MetadataHandle {
    pub(crate) fn new(state: Arc<RwLock<MetadataImage>>, applied: watch::Receiver<u64>) -> Self {
        Self { state, applied }
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Reads the applied metadata image under a (std, non-async) read lock; never hold it
    /// across `.await` (`f` cannot, being synchronous).
    pub fn read<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        // Apply never panics, so a poisoned lock still guards a whole state.
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// A watch of the last applied log index; it changes after every applied batch (brokers use
    /// it to wake long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }
}

/// A running controller node.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    /// Snapshots this node built: (name, bytes).
    built: watch::Receiver<Option<(String, Arc<Vec<u8>>)>>,
    raft: Raft<TypeConfig>,
    metadata: MetadataHandle,
    /// Submits, the broker-facing RPCs and heartbeat bookkeeping.
    service: Arc<Service>,
    /// Cancelled to stop; a child of the token given at start.
    stop: CancellationToken,
    /// `Some(result)` once the stop sequence has finished.
    stopped: watch::Receiver<Option<Result<(), String>>>,
    /// `Some(reason)` once one of this node's own tasks or the Raft core ended before a stop
    /// was requested.
    failure: watch::Receiver<Option<String>>,
}

impl Controller {
    /// Starts a single-voter controller (the `skiff dev` mode).
    ///
    /// On first start (empty `data_dir`) it initializes the membership with itself as the only
    /// voter and submits `Command::InitCluster` once elected; on restart it recovers log, vote
    /// and the last snapshot and replays. Returns once this node is leader and has applied
    /// everything in its log.
    pub async fn start_single(
        config: ControllerConfig,
        shutdown: CancellationToken,
    ) -> Result<Controller, ControllerError> {
        let voters = BTreeMap::from([(config.node_id, String::new())]);
        let (controller, pristine) = Self::launch(&config, None, shutdown).await?;
        controller.finish_start(&config, &voters, pristine).await?;
        Ok(controller)
    }

    /// Starts one voter of a multi-voter quorum. `voters` maps every voter's id (this node's
    /// included) to its `host:port` peer address; `listener` accepts the other voters' RPCs.
    ///
    /// On first start of a fresh cluster the voter with the lowest id initializes the
    /// membership; the others wait to hear from a leader. Returns once Raft runs and the
    /// listener serves: the election happens in the background as soon as a majority of voters
    /// is up, so voters can be (re)started in any order, one at a time. Whichever node leads
    /// first sets the cluster id. The [`MetadataHandle`] catches up asynchronously: watch
    /// [`MetadataHandle::subscribe`].
    pub async fn start(
        config: ControllerConfig,
        voters: BTreeMap<u64, String>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Controller, ControllerError> {
        if !voters.contains_key(&config.node_id) {
            return Err(ControllerError::Raft(format!(
                "node {} is not among the voters {:?}",
                config.node_id,
                voters.keys().collect::<Vec<_>>()
            )));
        }
        let (controller, pristine) = Self::launch(&config, Some(listener), shutdown).await?;
        if let Err(e) = controller.initialize_if_first(&config, &voters, pristine).await {
            let _ = controller.shutdown().await;
            return Err(e);
        }
        // Detached: it ends on its own once the cluster id is set, or at `stop`; it only submits
        // a command, so nothing waits on it at shutdown.
        tokio::spawn(controller.clone().set_cluster_id_when_leading(config.cluster_id.clone()));
        tracing::info!(node_id = config.node_id, "controller started; electing or following a leader");
        Ok(controller)
    }

    /// Background duty of a multi-voter controller: when this node leads and has applied its
    /// whole log, submit `InitCluster` if no cluster id is set (a crash between initialize and
    /// that commit must not leave a cluster without an id). Ends once an id is set or on stop.
    async fn set_cluster_id_when_leading(self, cluster_id: String) {
        let raft = self.inner.raft.clone();
        let mut metrics = raft.metrics();
        loop {
            if !self.metadata().read(|s| s.cluster_id().is_empty()) || self.inner.stop.is_cancelled() {
                return;
            }
            let leading = metrics.borrow_and_update().current_leader == Some(self.inner.node_id);
            if leading
                && raft.ensure_linearizable().await.is_ok()
                && self.metadata().read(|s| s.cluster_id().is_empty())
            {
                match self.submit(Command::InitCluster { cluster_id: cluster_id.clone() }).await {
                    Ok(_) => tracing::info!(cluster_id = %cluster_id, "cluster id set"),
                    Err(e) => tracing::warn!(error = %e, "setting the cluster id failed; will retry"),
                }
                continue;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                () = self.inner.service.clock.sleep(Duration::from_millis(200)) => {}
                () = self.inner.stop.cancelled() => return,
            }
        }
    }

    /// Opens storage, starts openraft, the proposer, the peer listener (if any) and the stop
    /// task. Returns whether the storage was pristine.
    async fn launch(
        config: &ControllerConfig,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(Controller, bool), ControllerError> {
        let raft_config = Arc::new(config.raft_config()?);
        let (log, writer_done) = LogStore::open(&config.data_dir.join("log"))?;
        let (sm, parts) = match StateMachine::open(&config.data_dir.join("snapshots")) {
            Ok(sm) => sm,
            Err(e) => {
                drop(log);
                writer_done.wait().await;
                return Err(e);
            }
        };
        let pristine = log.is_pristine() && sm.is_pristine();
        let metadata = MetadataHandle { state: parts.state.clone(), applied: parts.applied.clone() };

        let acks = Arc::new(crate::quorum::Acks::default());
        let network = TcpNetwork {
            node_id: config.node_id,
            acks: acks.clone(),
            clock: config.clock.clone(),
            tls: config.tls.clone(),
        };
        let raft = match Raft::new(config.node_id, raft_config, network, log, sm).await {
            Ok(raft) => raft,
            Err(e) => {
                // Raft::new consumed the log store; its writer exits once the store is dropped.
                writer_done.wait().await;
                return Err(ControllerError::Raft(format!("starting raft: {e}")));
            }
        };

        let stop = shutdown.child_token();
        let (stopped_tx, stopped) = watch::channel(None);
        let (failure_tx, failure) = watch::channel(None);
        let (proposals, proposals_rx) = mpsc::channel(proposer::QUEUE);
        let service = Arc::new(Service {
            node_id: config.node_id,
            raft: raft.clone(),
            proposals,
            state: parts.state,
            journal: parts.journal,
            applied: parts.applied,
            liveness: Default::default(),
            fence_stats: Default::default(),
            clock: config.clock.clone(),
            acks,
            tls: config.tls.clone(),
        });
        // Each task returns its name: ending before `stop` is a failure (see `Controller::failed`).
        let mut tasks = tokio::task::JoinSet::new();
        let (raft2, stop2) = (raft.clone(), stop.clone());
        tasks.spawn(async move {
            proposer::run(raft2, proposals_rx, stop2).await;
            "proposer"
        });
        if let Some(listener) = listener {
            let (service, stop) = (service.clone(), stop.clone());
            tasks.spawn(async move {
                network::serve(listener, service, stop).await;
                "peer listener"
            });
        }
        if let Some(timeout) = config.session_timeout {
            let (service, stop) = (service.clone(), stop.clone());
            tasks.spawn(async move {
                service::run_fencing(service, timeout, stop).await;
                "fencing"
            });
        }
        // Owned through `stopped`: it reports its end there and every shutdown call awaits it.
        tokio::spawn(stop_when_cancelled(raft.clone(), stop.clone(), tasks, writer_done, stopped_tx, failure_tx));
        let inner = Inner {
            node_id: config.node_id,
            built: parts.built.clone(),
            raft,
            metadata,
            service,
            stop,
            stopped,
            failure,
        };
        Ok((Controller { inner: Arc::new(inner) }, pristine))
    }

    /// Waits for readiness; on failure stops everything `launch` started.
    async fn finish_start(
        &self,
        config: &ControllerConfig,
        voters: &BTreeMap<u64, String>,
        pristine: bool,
    ) -> Result<(), ControllerError> {
        match self.become_ready(config, voters, pristine).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "controller failed to start");
                if let Err(stop_err) = self.shutdown().await {
                    tracing::error!(error = %stop_err, "stopping the controller after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Exactly one voter (the lowest id) initializes a fresh cluster, so two can never disagree
    /// on the first membership.
    async fn initialize_if_first(
        &self,
        config: &ControllerConfig,
        voters: &BTreeMap<u64, String>,
        pristine: bool,
    ) -> Result<(), ControllerError> {
        if pristine && voters.keys().next() == Some(&config.node_id) {
            tracing::info!(node_id = config.node_id, voters = ?voters, "initializing a new controller quorum");
            let members: BTreeMap<u64, BasicNode> =
                voters.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
            self.inner.raft.initialize(members).await.map_err(|e| ControllerError::Raft(format!("initialize: {e}")))?;
        }
        Ok(())
    }

    async fn become_ready(
        &self,
        config: &ControllerConfig,
        voters: &BTreeMap<u64, String>,
        pristine: bool,
    ) -> Result<(), ControllerError> {
        let raft = &self.inner.raft;
        self.initialize_if_first(config, voters, pristine).await?;
        // A restarted lone voter whose vote was committed resumes as leader at once; otherwise
        // an election takes one election timeout.
        let wait = raft.wait(Some(START_TIMEOUT));
        let leader = wait.metrics(|m| m.current_leader.is_some(), "controller start: leader known");
        let metrics = tokio::select! {
            r = leader => r.map_err(|e| match e {
                WaitError::ShuttingDown => ControllerError::Closed,
                WaitError::Timeout(..) => ControllerError::Raft(format!("no leader after {START_TIMEOUT:?}")),
            })?,
            () = self.inner.stop.cancelled() => return Err(ControllerError::Closed),
        };
        if metrics.current_leader == Some(config.node_id) {
            // Waits until everything up to this term's first entry is applied: the whole log.
            raft.ensure_linearizable().await.map_err(|e| match e {
                RaftError::Fatal(Fatal::Stopped) => ControllerError::Closed,
                e => ControllerError::Raft(format!("catching up: {e}")),
            })?;
            // Checked on every start, not only the first: a crash between initialize and the
            // commit of InitCluster must not leave a cluster without an id.
            if self.metadata().read(|s| s.cluster_id().is_empty()) {
                self.submit(Command::InitCluster { cluster_id: config.cluster_id.clone() }).await?;
            }
        }
        let applied = *self.inner.metadata.applied.borrow();
        tracing::info!(node_id = config.node_id, leader = ?metrics.current_leader, applied, "controller ready");
        Ok(())
    }

    /// Proposes a command, waits until it is committed and applied, returns apply's result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        if self.inner.stop.is_cancelled() {
            return Err(ControllerError::Closed);
        }
        // A dropped reply means the proposer stopped before the command was proposed.
        self.inner.service.submit_indexed(cmd).await.map(|(result, _)| result)
    }

    /// Prometheus text for this controller node: Raft term, leader, log indexes, broker
    /// sessions, partition leadership per broker, fencing counts and detection times.
    pub fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        let node = format!("node=\"{}\"", self.inner.node_id);
        {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            // The leader knows the commit index as what a quorum has matched; others report
            // what they applied (committed by definition).
            let commit = m
                .replication
                .as_ref()
                .and_then(|r| {
                    let mut matched: Vec<u64> = r.values().map(|l| l.map_or(0, |l| l.index)).collect();
                    matched.sort_unstable();
                    matched.get((matched.len().saturating_sub(1)) / 2).copied()
                })
                .unwrap_or(applied);
            let leader = m.current_leader.map_or(-1, |l| l as i64);
            let is_leader = u8::from(m.current_leader == Some(self.inner.node_id));
            metric(&mut out, "skiff_raft_term", "gauge", [(node.as_str(), m.current_term)]);
            metric(&mut out, "skiff_raft_leader_id", "gauge", [(node.as_str(), leader)]);
            metric(&mut out, "skiff_raft_is_leader", "gauge", [(node.as_str(), is_leader)]);
            metric(&mut out, "skiff_raft_last_log_index", "gauge", [(node.as_str(), m.last_log_index.unwrap_or(0))]);
            metric(&mut out, "skiff_raft_applied_index", "gauge", [(node.as_str(), applied)]);
            metric(&mut out, "skiff_raft_commit_index", "gauge", [(node.as_str(), commit)]);
        }
        self.inner.metadata.read(|image| {
            // Inside the crate: the metrics read the raw state the image wraps.
            let s = &image.state;
            let fenced = s.brokers.values().map(|b| (format!("broker=\"{}\"", b.broker_id), u8::from(b.fenced)));
            metric(&mut out, "skiff_cluster_broker_fenced", "gauge", fenced);
            let mut led: BTreeMap<i32, u64> = s.brokers.keys().map(|b| (*b, 0)).collect();
            for p in s.topics.values().flat_map(|t| &t.partitions) {
                *led.entry(p.leader).or_default() += 1;
            }
            let led = led.into_iter().map(|(b, n)| (format!("broker=\"{b}\""), n));
            metric(&mut out, "skiff_cluster_partitions_led", "gauge", led);
        });
        let f = &self.inner.service.fence_stats;
        let fences = [
            ("reason=\"session_timeout\"", f.fenced_timeout.load(Relaxed)),
            ("reason=\"controlled_shutdown\"", f.fenced_controlled.load(Relaxed)),
        ];
        metric(&mut out, "skiff_cluster_fences_total", "counter", fences);
        metric(&mut out, "skiff_cluster_fence_detect_ms_sum", "counter", [("", f.detect_ms_sum.load(Relaxed))]);
        metric(&mut out, "skiff_cluster_fence_detect_ms_max", "gauge", [("", f.detect_ms_max.load(Relaxed))]);
        if let Some(tls) = &self.inner.service.tls {
            // Connections to the controller port whose TLS handshake failed (crate::tls).
            metric(&mut out, "skiff_controller_tls_refused_total", "counter", [(node.as_str(), tls.refused())]);
        }
        out
    }

    /// The quorum's replication status; this node must be the Raft leader.
    pub fn describe_quorum(&self) -> Result<crate::quorum::QuorumStatus, ControllerError> {
        self.inner.service.quorum_status().map_err(|e| match e {
            service::RpcError::NotLeader { .. } => ControllerError::NotLeader { leader: self.inner.service.leader().0 },
            service::RpcError::Closed => ControllerError::Closed,
            service::RpcError::Failed(e) => ControllerError::Raft(e),
        })
    }

    pub fn metadata(&self) -> MetadataHandle {
        self.inner.metadata.clone()
    }

    /// Snapshots as this node builds them: `(name, bytes)`, the name sorting by log index.
    /// The bytes are exactly the `current.json` file a restored controller starts from.
    pub fn built_snapshots(&self) -> watch::Receiver<Option<(String, Arc<Vec<u8>>)>> {
        self.inner.built.clone()
    }

    /// Installs `bytes` (a snapshot from [`Self::built_snapshots`], e.g. copied back from
    /// object storage) as the snapshot of a pristine controller data dir, so the controller
    /// starts from it. Refuses a data dir that already has a log or snapshot.
    pub fn restore_snapshot(data_dir: &std::path::Path, bytes: &[u8]) -> Result<(), ControllerError> {
        state_machine::restore(&data_dir.join("snapshots"), &data_dir.join("log"), bytes)
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Resolves with the reason once one of this node's own tasks (proposer, peer listener,
    /// fencing) or the Raft core stopped before a stop was requested: the controller no longer
    /// works, and its process should stop (crash-only). Pending forever otherwise.
    pub async fn failed(&self) -> String {
        let mut failure = self.inner.failure.clone();
        let reason = failure.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            // The stop task ended without a failure: the controller stopped as asked.
            None => std::future::pending().await,
        }
    }

    /// Stops Raft gracefully and waits until the log files are flushed and closed. Idempotent;
    /// cancelling the token given at start does the same.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.inner.stop.cancel();
        let mut stopped = self.inner.stopped.clone();
        match stopped.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or(Ok(())).map_err(ControllerError::Raft),
            // The stop task is gone without reporting (it panicked); nothing left to wait for.
            Err(_) => Ok(()),
        }
    }
}

/// Appends one Prometheus metric: its TYPE line and one sample per `(labels, value)`; empty
/// labels print the bare name.
fn metric<L: AsRef<str>, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let labels = labels.as_ref();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The stop sequence: proposer and peer listener, Raft core (which drops the log store), then
/// the log writer thread.
async fn stop_when_cancelled(
    raft: Raft<TypeConfig>,
    stop: CancellationToken,
    mut tasks: tokio::task::JoinSet<&'static str>,
    writer_done: WriterDone,
    stopped: watch::Sender<Option<Result<(), String>>>,
    failure: watch::Sender<Option<String>>,
) {
    // Until stopped: a task or the Raft core that ends now is a failure, reported once.
    let mut metrics = raft.metrics();
    let mut core_failed = false;
    let fail = |reason: String| {
        tracing::error!(reason = %reason, "controller failed");
        failure.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(reason);
            }
            first
        });
    };
    loop {
        tokio::select! {
            // Stop first: the tasks end because of it, and are joined below.
            biased;
            () = stop.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                // It ended because of the stop (cancelled since this select began).
                Ok(_) if stop.is_cancelled() => break,
                Ok(name) => fail(format!("controller task `{name}` ended before stop")),
                Err(e) => fail(format!("controller task failed: {e}")),
            },
            changed = metrics.changed(), if !core_failed => {
                let state = match changed {
                    Ok(()) => metrics.borrow_and_update().running_state.clone(),
                    Err(_) => Err(openraft::error::Fatal::Stopped),
                };
                if let Err(fatal) = state {
                    core_failed = true;
                    fail(format!("raft core stopped: {fatal}"));
                }
            }
        }
    }
    tracing::info!("stopping controller");
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "controller task failed");
        }
    }
    let result = raft.shutdown().await.map_err(|e| format!("raft core: {e}"));
    if let Err(e) = &result {
        tracing::error!(error = %e, "raft core stopped abnormally");
    }
    // The writer finishes queued writes and exits once the core has dropped the log store.
    drop(raft);
    writer_done.wait().await;
    tracing::info!("controller stopped");
    stopped.send_replace(Some(result));
}
