//! A multi-process Skiff cluster on loopback for failover tests: `skiff controller` processes
//! (a Raft quorum on fixed ports, since voters need each other's addresses up front),
//! `skiff broker` processes (Kafka and HTTP listeners on ephemeral ports, read from the lines
//! they print when ready) and MinIO ([`Minio::shared`], one key prefix per cluster).
//!
//! Node ids: controllers are 1..=C, brokers C+1..=C+B, so a log line's id names one process.
//! Every node has its own directory under the cluster's temporary root with one stderr log per
//! run (`c1/stderr-1.log`, `b4/stderr-2.log`, ...). Faults: SIGKILL, SIGSTOP / SIGCONT, SIGTERM
//! (controlled shutdown, waited for) and restarts on the same data directory. Each one is
//! written to a timeline (`timeline.log`, also on stderr); if the test panics the timeline and
//! every node's log tail are printed and the root directory is kept.
//!
//! Blocking by design: the test thread drives processes and waits, while clients run on the
//! cluster's tokio runtime ([`Cluster::spawn`], [`Cluster::block_on`]). [`Workload`] is the
//! standard load: idempotent producers and consumers following partition leadership, read
//! back and checked by [`super::invariants`] at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::client::TopicMetadata;
use super::invariants::{self, Expectations, Summary};
use super::load::{self, ConsumerReport, ConsumerSpec, ProducerReport, Routing};
use super::minio::{Minio, free_port};
use super::{START_TIMEOUT, STOP_TIMEOUT, signal, tail};

/// One process of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeRef {
    Controller(i32),
    Broker(i32),
}

impl NodeRef {
    pub fn id(self) -> i32 {
        match self {
            NodeRef::Controller(id) | NodeRef::Broker(id) => id,
        }
    }

    fn dir_name(self) -> String {
        match self {
            NodeRef::Controller(id) => format!("c{id}"),
            NodeRef::Broker(id) => format!("b{id}"),
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Controller(id) => write!(f, "controller {id}"),
            NodeRef::Broker(id) => write!(f, "broker {id}"),
        }
    }
}

/// Process state as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Not started, killed, or exited.
    Down,
    Running,
    /// SIGSTOP: the process exists and its sockets accept connections, nothing is answered.
    Stopped,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Names the MinIO prefix and the temporary directory.
    pub name: String,
    pub controllers: usize,
    pub brokers: usize,
    /// `--session-timeout-ms` of the controllers (`None`: their default, 1000 ms).
    pub session_timeout: Option<Duration>,
    /// Extra flags for every broker.
    pub broker_args: Vec<String>,
    /// Extra flags for every controller.
    pub controller_args: Vec<String>,
    /// Extra environment for every broker / controller (e.g. `OTEL_*` in tests/otel.rs).
    pub broker_env: Vec<(String, String)>,
    pub controller_env: Vec<(String, String)>,
    /// A MinIO of the cluster's own ([`Minio::start_local`]) instead of the shared one, so that
    /// [`Cluster::restart_minio`] can kill and restart it.
    pub private_minio: bool,
    /// Each broker listens on the same Kafka port in every run (real clients such as the Java
    /// client keep their bootstrap list: a restarted broker on a new port is lost to them).
    pub fixed_broker_ports: bool,
    /// `--rack` of each broker in start order (the first broker gets the first); brokers past
    /// the end of the list (all of them when it is empty) have no rack.
    pub broker_racks: Vec<String>,
}

impl ClusterSpec {
    pub fn new(name: &str, controllers: usize, brokers: usize) -> Self {
        Self {
            name: name.to_string(),
            controllers,
            brokers,
            session_timeout: None,
            broker_args: Vec::new(),
            controller_args: Vec::new(),
            broker_env: Vec::new(),
            controller_env: Vec::new(),
            private_minio: false,
            fixed_broker_ports: false,
            broker_racks: Vec::new(),
        }
    }

    /// Brokers in these racks, one broker per entry in order ([`ClusterSpec::broker_racks`]).
    pub fn with_racks(mut self, racks: &[&str]) -> Self {
        self.broker_racks = racks.iter().map(|r| r.to_string()).collect();
        self
    }
}

/// Raft state a controller reports on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    /// `None` when the gauge is absent or names no node (≤ 0).
    pub leader_id: Option<i32>,
    pub commit_index: u64,
    pub applied_index: u64,
}

struct Node {
    node: NodeRef,
    dir: PathBuf,
    child: Option<Child>,
    stopped: bool,
    /// Printed by the current run.
    kafka: Option<String>,
    /// Base URL (`http://HOST:PORT`) printed by the current run.
    http: Option<String>,
    /// Controllers: the fixed Raft listener.
    controller_addr: Option<String>,
    /// Brokers with [`ClusterSpec::fixed_broker_ports`]: the Kafka listener of every run.
    fixed_kafka: Option<String>,
    /// Runs so far (names the log files).
    starts: u32,
    /// Stdout lines of the current run, until it is ready.
    lines: Option<mpsc::Receiver<String>>,
}

impl Node {
    fn state(&self) -> NodeState {
        match (&self.child, self.stopped) {
            (None, _) => NodeState::Down,
            (Some(_), false) => NodeState::Running,
            (Some(_), true) => NodeState::Stopped,
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join(format!("stderr-{}.log", self.starts))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = super::wait_child(&mut self.child, timeout)?;
        self.stopped = false;
        Some(status)
    }

    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        self.stopped = false;
        let _ = child.kill();
        child.wait().ok()
    }
}

/// A running cluster. Dropping it kills every process.
pub struct Cluster {
    spec: ClusterSpec,
    /// `None` once kept after a failure.
    root_dir: Option<tempfile::TempDir>,
    root: PathBuf,
    shared_minio: Option<&'static Minio>,
    /// With [`ClusterSpec::private_minio`].
    own_minio: Option<Minio>,
    storage_url: String,
    voters: String,
    controllers: Vec<Node>,
    brokers: Vec<Node>,
    routing: Routing,
    rt: tokio::runtime::Runtime,
    started: Instant,
    timeline: Vec<String>,
}

impl Cluster {
    /// Starts the controllers (all at once: they need each other to elect a leader), waits
    /// until each is ready, then the brokers. Panics (with logs) if any does not get ready.
    pub fn start(spec: ClusterSpec) -> Cluster {
        assert!(spec.controllers >= 1 && spec.brokers >= 1, "a cluster needs a controller and a broker");
        let (shared_minio, own_minio) =
            if spec.private_minio { (None, Some(Minio::start_local())) } else { (Some(Minio::shared()), None) };
        let minio = shared_minio.or(own_minio.as_ref()).expect("a MinIO");
        let root_dir =
            tempfile::Builder::new().prefix(&format!("skiff-cluster-{}-", spec.name)).tempdir().expect("temp dir");
        let root = root_dir.path().to_path_buf();
        let prefix = minio.unique_prefix(&spec.name);
        let storage_url = format!("s3://{}/{prefix}", minio.bucket);
        let fixed_broker_ports = spec.fixed_broker_ports;
        let node = |node: NodeRef, controller_addr: Option<String>| {
            let fixed_kafka = (fixed_broker_ports && matches!(node, NodeRef::Broker(_)))
                .then(|| format!("127.0.0.1:{}", free_port()));
            let dir = root.join(node.dir_name());
            std::fs::create_dir_all(&dir).expect("create node directory");
            Node {
                node,
                dir,
                child: None,
                stopped: false,
                kafka: None,
                http: None,
                controller_addr,
                fixed_kafka,
                starts: 0,
                lines: None,
            }
        };
        let controllers: Vec<Node> = (1..=spec.controllers as i32)
            .map(|id| node(NodeRef::Controller(id), Some(format!("127.0.0.1:{}", free_port()))))
            .collect();
        let voters = controllers
            .iter()
            .map(|c| format!("{}={}", c.node.id(), c.controller_addr.as_deref().expect("controller address")))
            .collect::<Vec<_>>()
            .join(",");
        let first_broker = spec.controllers as i32 + 1;
        let brokers =
            (first_broker..first_broker + spec.brokers as i32).map(|id| node(NodeRef::Broker(id), None)).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster-clients")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut cluster = Cluster {
            spec,
            root_dir: Some(root_dir),
            root,
            shared_minio,
            own_minio,
            storage_url,
            voters,
            controllers,
            brokers,
            routing: Routing::default(),
            rt,
            started: Instant::now(),
            timeline: Vec::new(),
        };
        cluster.event(format!(
            "starting {} controllers ({}) and {} brokers on {} (root {})",
            cluster.spec.controllers,
            cluster.voters,
            cluster.spec.brokers,
            cluster.storage_url,
            cluster.root.display()
        ));
        let controllers = cluster.controller_refs();
        for &c in &controllers {
            cluster.spawn_node(c);
        }
        for &c in &controllers {
            cluster.await_ready(c);
        }
        for b in cluster.broker_refs() {
            cluster.spawn_node(b);
        }
        for b in cluster.broker_refs() {
            cluster.await_ready(b);
        }
        cluster.event("cluster ready".to_string());
        cluster
    }

    /// The MinIO the cluster stores its objects in.
    pub fn minio(&self) -> &Minio {
        self.shared_minio.or(self.own_minio.as_ref()).expect("a MinIO")
    }

    /// SIGKILLs the cluster's own MinIO ([`ClusterSpec::private_minio`]), waits `down`, and
    /// starts it again on the same port and data (waiting until it is ready).
    pub fn restart_minio(&mut self, down: Duration) {
        let minio = self.own_minio.as_mut().expect("restart_minio needs ClusterSpec::private_minio");
        minio.kill();
        self.event(format!("SIGKILL MinIO; down for {down:?}"));
        std::thread::sleep(down);
        let started = Instant::now();
        self.own_minio.as_mut().expect("own MinIO").restart();
        self.event(format!("MinIO restarted, ready after {:?}", started.elapsed()));
    }

    /// Every controller, by id.
    pub fn controller_refs(&self) -> Vec<NodeRef> {
        self.controllers.iter().map(|n| n.node).collect()
    }

    /// Every broker, by id.
    pub fn broker_refs(&self) -> Vec<NodeRef> {
        self.brokers.iter().map(|n| n.node).collect()
    }

    pub fn state(&self, node: NodeRef) -> NodeState {
        self.node(node).state()
    }

    /// Brokers in `state`.
    pub fn brokers_in(&self, state: NodeState) -> Vec<NodeRef> {
        self.brokers.iter().filter(|n| n.state() == state).map(|n| n.node).collect()
    }

    /// Controllers in `state`.
    pub fn controllers_in(&self, state: NodeState) -> Vec<NodeRef> {
        self.controllers.iter().filter(|n| n.state() == state).map(|n| n.node).collect()
    }

    /// The HTTP base URL (`http://host:port`) of a started node's current run.
    pub fn http_base(&self, node: NodeRef) -> Option<String> {
        let n = self.node(node);
        n.child.as_ref().and(n.http.clone())
    }

    /// Extra flags for every controller start from now on.
    pub fn set_controller_args(&mut self, args: Vec<String>) {
        self.event(format!("controller flags from now on: {args:?}"));
        self.spec.controller_args = args;
    }

    /// The controllers' fixed `HOST:PORT` listeners, in id order.
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controllers.iter().filter_map(|c| c.controller_addr.clone()).collect()
    }

    /// The Kafka address of a started broker's current run.
    pub fn kafka_addr(&self, broker: NodeRef) -> Option<String> {
        let n = self.node(broker);
        n.child.as_ref().and(n.kafka.clone())
    }

    /// `host:port,...` of the running (not stopped) brokers.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .filter(|n| n.state() == NodeState::Running)
            .filter_map(|n| n.kafka.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The routing shared by this cluster's clients; its bootstrap list follows the brokers.
    pub fn routing(&self) -> Routing {
        self.routing.clone()
    }

    /// The client runtime.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }

    /// The cluster's root directory (kept if the test fails).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A node's data directory (the same across restarts).
    pub fn data_dir(&self, node: NodeRef) -> PathBuf {
        self.node(node).data_dir()
    }

    /// The last `lines` lines of a node's current (or last) run's stderr.
    pub fn log_tail(&self, node: NodeRef, lines: usize) -> String {
        tail(&self.node(node).stderr_path(), lines)
    }

    /// Adds a line to the timeline (and stderr).
    pub fn event(&mut self, what: String) {
        let line = format!("[cluster {} +{:.3}s] {what}", self.spec.name, self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join("timeline.log")) {
            let _ = writeln!(f, "{line}");
        }
        self.timeline.push(line);
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self, node: NodeRef) {
        let pid = self.node(node).child.as_ref().map(Child::id);
        let status = self.node_mut(node).kill();
        self.event(format!("SIGKILL {node} (pid {pid:?}): {status:?}"));
        self.refresh_routing();
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn stop(&mut self, node: NodeRef) {
        let n = self.node_mut(node);
        let pid = n.child.as_ref().map(Child::id).unwrap_or_else(|| panic!("stop: {node} is not running"));
        signal(pid, "STOP");
        n.stopped = true;
        self.event(format!("SIGSTOP {node} (pid {pid})"));
    }

    /// SIGCONT for a stopped process.
    pub fn cont(&mut self, node: NodeRef) {
        let n = self.node_mut(node);
        let pid = n.child.as_ref().map(Child::id).unwrap_or_else(|| panic!("cont: {node} is not running"));
        signal(pid, "CONT");
        n.stopped = false;
        self.event(format!("SIGCONT {node} (pid {pid})"));
    }

    /// SIGTERM (a stopped process is continued first) and waits for the exit. Panics (after a
    /// SIGKILL) if it takes longer than [`STOP_TIMEOUT`].
    pub fn terminate(&mut self, node: NodeRef) -> ExitStatus {
        if self.state(node) == NodeState::Stopped {
            self.cont(node);
        }
        let pid = self.node(node).child.as_ref().map(Child::id).unwrap_or_else(|| panic!("terminate: {node} is down"));
        self.event(format!("SIGTERM {node} (pid {pid})"));
        let started = Instant::now();
        signal(pid, "TERM");
        let status = self.node_mut(node).wait_exit(STOP_TIMEOUT);
        self.refresh_routing();
        match status {
            Some(s) => {
                self.event(format!("{node} exited after {:?}: {s}", started.elapsed()));
                s
            }
            None => {
                self.node_mut(node).kill();
                panic!("{node} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}", self.log_tail(node, 80));
            }
        }
    }

    /// Starts a node that is down, on its data directory, and waits until it is ready.
    pub fn start_node(&mut self, node: NodeRef) {
        assert_eq!(self.state(node), NodeState::Down, "start: {node} is not down");
        self.spawn_node(node);
        self.await_ready(node);
    }

    /// Deletes a node's data directory (Raft log, snapshots): a disk lost with the node. The
    /// node must be down.
    pub fn wipe(&mut self, node: NodeRef) {
        assert_eq!(self.state(node), NodeState::Down, "wipe: {node} is not down");
        let data = self.node(node).data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data).expect("remove data directory");
        }
        self.event(format!("wiped the data directory of {node}"));
    }

    /// Terminates a running node gracefully (a stopped one is killed), then starts it again.
    pub fn restart(&mut self, node: NodeRef) {
        match self.state(node) {
            NodeState::Running => {
                self.terminate(node);
            }
            NodeState::Stopped => self.kill(node),
            NodeState::Down => {}
        }
        self.start_node(node);
    }

    /// Continues every stopped node and starts every node that is down (controllers first).
    pub fn heal(&mut self) {
        for node in self.controller_refs().into_iter().chain(self.broker_refs()) {
            match self.state(node) {
                NodeState::Stopped => self.cont(node),
                NodeState::Down => self.start_node(node),
                NodeState::Running => {}
            }
        }
    }

    /// Raft state from a running controller's `/metrics` (`None` if it is not running, does
    /// not answer within 2 s, or lacks `skiff_raft_term`).
    pub fn raft_status(&self, controller: NodeRef) -> Option<RaftStatus> {
        let n = self.node(controller);
        if n.state() != NodeState::Running {
            return None;
        }
        let body = http_get(n.http.as_deref()?, "/metrics")?;
        let gauge = |name: &str| prometheus_value(&body, name);
        Some(RaftStatus {
            term: gauge("skiff_raft_term")? as u64,
            leader_id: gauge("skiff_raft_leader_id").map(|v| v as i32).filter(|id| *id > 0),
            commit_index: gauge("skiff_raft_commit_index").unwrap_or(0.0) as u64,
            applied_index: gauge("skiff_raft_applied_index").unwrap_or(0.0) as u64,
        })
    }

    /// The controller leader, if a majority of all voters report the same leader and it is
    /// running and reports itself as leader.
    pub fn controller_leader(&self) -> Option<i32> {
        let statuses: BTreeMap<i32, RaftStatus> =
            self.controller_refs().into_iter().filter_map(|c| Some((c.id(), self.raft_status(c)?))).collect();
        let mut votes: BTreeMap<i32, usize> = BTreeMap::new();
        for s in statuses.values() {
            if let Some(l) = s.leader_id {
                *votes.entry(l).or_default() += 1;
            }
        }
        let quorum = self.controllers.len() / 2 + 1;
        votes
            .into_iter()
            .find(|(leader, n)| *n >= quorum && statuses.get(leader).is_some_and(|s| s.leader_id == Some(*leader)))
            .map(|(leader, _)| leader)
    }

    /// Waits until [`Self::controller_leader`] names a leader (other than `other_than`).
    pub fn wait_controller_leader(&self, timeout: Duration, other_than: Option<i32>) -> anyhow::Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.controller_leader().filter(|l| Some(*l) != other_than) {
                return Ok(l);
            }
            if Instant::now() > deadline {
                let statuses: Vec<_> =
                    self.controller_refs().into_iter().map(|c| (c.id(), self.raft_status(c))).collect();
                bail!("no controller leader (other than {other_than:?}) within {timeout:?}: {statuses:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates `topic` and waits until every running broker's Metadata names a leader for each
    /// partition.
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let routing = self.routing();
        let t = topic.to_string();
        let started = Instant::now();
        self.block_on(async move {
            let mut c = routing.connect_any().await?;
            c.set_request_timeout(Duration::from_secs(60));
            c.create_topic_ok(&t, partitions).await
        })
        .with_context(|| format!("creating {topic}"))?;
        self.event(format!("created topic {topic} with {partitions} partitions in {:?}", started.elapsed()));
        self.wait_topic_ready(topic, partitions, Duration::from_secs(30))
    }

    /// Waits until every running broker's Metadata names a leader for every partition.
    pub fn wait_topic_ready(&self, topic: &str, partitions: i32, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = Vec::new();
            for b in self.brokers_in(NodeState::Running) {
                let Some(addr) = self.kafka_addr(b) else { continue };
                let md = self.broker_metadata(&addr, topic);
                match md {
                    Ok(md) => {
                        let led = (0..partitions).filter(|p| md.leader(*p).is_some()).count() as i32;
                        if led < partitions {
                            missing.push(format!("{b}: {led}/{partitions} partitions with a leader"));
                        }
                    }
                    Err(e) => missing.push(format!("{b}: {e:#}")),
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "topic {topic} not ready within {timeout:?}: {missing:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Metadata for `topic` from the broker at `addr` (1 s bound).
    pub fn broker_metadata(&self, addr: &str, topic: &str) -> anyhow::Result<TopicMetadata> {
        let (addr, topic) = (addr.to_string(), topic.to_string());
        self.block_on(async move {
            let attempt = async {
                let mut c = super::client::Client::connect(&addr).await?;
                c.set_request_timeout(load::METADATA_TIMEOUT);
                c.topic_metadata(&topic).await
            };
            tokio::time::timeout(load::METADATA_TIMEOUT * 2, attempt).await.context("Metadata timed out")?
        })
    }

    /// Metadata for `topic` through the routing (any broker that answers).
    pub fn metadata(&self, topic: &str) -> anyhow::Result<TopicMetadata> {
        let routing = self.routing();
        let topic = topic.to_string();
        self.block_on(async move { routing.topic_metadata(&topic).await })
    }

    /// Waits until the running brokers' Metadata agree that each partition has a leader that
    /// is running and not in `not`; returns that metadata.
    pub fn wait_leaders(
        &self,
        topic: &str,
        partitions: i32,
        not: &[i32],
        timeout: Duration,
    ) -> anyhow::Result<TopicMetadata> {
        let deadline = Instant::now() + timeout;
        let running: BTreeSet<i32> = self.brokers_in(NodeState::Running).iter().map(|b| b.id()).collect();
        loop {
            let md = self.metadata(topic);
            if let Ok(md) = &md {
                let ok = (0..partitions)
                    .all(|p| md.leader(p).is_some_and(|(l, _)| running.contains(&l) && !not.contains(&l)));
                if ok {
                    return Ok(md.clone());
                }
            }
            ensure!(
                Instant::now() < deadline,
                "partitions of {topic} did not all get a running leader outside {not:?} within {timeout:?}: {md:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn node(&self, node: NodeRef) -> &Node {
        let nodes = match node {
            NodeRef::Controller(_) => &self.controllers,
            NodeRef::Broker(_) => &self.brokers,
        };
        nodes.iter().find(|n| n.node == node).unwrap_or_else(|| panic!("no {node} in this cluster"))
    }

    fn node_mut(&mut self, node: NodeRef) -> &mut Node {
        let nodes = match node {
            NodeRef::Controller(_) => &mut self.controllers,
            NodeRef::Broker(_) => &mut self.brokers,
        };
        nodes.iter_mut().find(|n| n.node == node).unwrap_or_else(|| panic!("no {node} in this cluster"))
    }

    /// The rack `broker` was started in ([`ClusterSpec::broker_racks`]), if any.
    pub fn rack_of(&self, broker: NodeRef) -> Option<&str> {
        let NodeRef::Broker(id) = broker else { return None };
        let index = usize::try_from(id - self.spec.controllers as i32 - 1).ok()?;
        self.spec.broker_racks.get(index).map(String::as_str)
    }

    /// Brokers that are started (running or stopped: a client cannot tell a frozen broker).
    fn refresh_routing(&self) {
        let addrs = self.brokers.iter().filter(|n| n.child.is_some()).filter_map(|n| n.kafka.clone()).collect();
        self.routing.set_bootstrap(addrs);
    }

    fn command(&self, node: NodeRef) -> Command {
        let n = self.node(node);
        let controllers: Vec<&str> = self.controllers.iter().filter_map(|c| c.controller_addr.as_deref()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        match node {
            NodeRef::Controller(id) => {
                cmd.arg("controller").args(["--node-id", &id.to_string()]);
                cmd.args(["--controller-listen", n.controller_addr.as_deref().expect("controller address")]);
                cmd.args(["--voters", &self.voters]);
                if let Some(t) = self.spec.session_timeout {
                    cmd.args(["--session-timeout-ms", &t.as_millis().to_string()]);
                }
                cmd.args(&self.spec.controller_args);
            }
            NodeRef::Broker(id) => {
                cmd.arg("broker").args(["--node-id", &id.to_string()]);
                // A test that gives its brokers listeners (SKIFF_KAFKA_LISTEN) keeps them.
                if !self.spec.broker_env.iter().any(|(k, _)| k == "SKIFF_KAFKA_LISTEN") {
                    let listen = n.fixed_kafka.as_deref().unwrap_or("127.0.0.1:0");
                    cmd.args(["--kafka-listen", listen]);
                }
                cmd.args(["--controllers", &controllers.join(",")]);
                // Flush often: on s3 the default is 250 ms, which only slows the tests down.
                cmd.args(["--flush-interval-ms", "20"]);
                if let Some(rack) = self.rack_of(node) {
                    cmd.args(["--rack", rack]);
                }
                cmd.args(&self.spec.broker_args);
            }
        }
        cmd.arg("--data-dir").arg(n.data_dir()).args(["--http-listen", "127.0.0.1:0"]);
        cmd.args(["--storage", &self.storage_url, "--s3-endpoint", &self.minio().endpoint, "--s3-region", "us-east-1"]);
        // Only this test decides the configuration; keep the log level if the caller set one.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("SKIFF_") && k != "SKIFF_LOG") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.minio().skiff_env());
        let extra = match node {
            NodeRef::Controller(_) => &self.spec.controller_env,
            NodeRef::Broker(_) => &self.spec.broker_env,
        };
        cmd.envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn spawn_node(&mut self, node: NodeRef) {
        let mut cmd = self.command(node);
        let n = self.node_mut(node);
        assert!(n.child.is_none(), "spawn: {node} is already running");
        n.starts += 1;
        n.kafka = None;
        n.http = None;
        let stderr = File::create(n.stderr_path()).expect("create stderr log");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn skiff binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let pid = child.id();
        n.child = Some(child);
        n.stopped = false;
        // A reader thread forwards stdout lines and keeps draining the pipe afterwards.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name(format!("{}-stdout", node.dir_name()))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            })
            .expect("spawn stdout reader");
        n.lines = Some(rx);
        let run = n.starts;
        self.event(format!("started {node} (pid {pid}, run {run})"));
    }

    /// Waits for the node's ready lines; panics with its log if it exits or times out.
    fn await_ready(&mut self, node: NodeRef) {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        let first = match node {
            NodeRef::Controller(_) => "Controller: ",
            NodeRef::Broker(_) => "Kafka bootstrap: ",
        };
        let rx = self.node_mut(node).lines.take().expect("await_ready after spawn");
        let (mut main, mut http) = (None, None);
        while main.is_none() || http.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(first) {
                        main = Some(addr.trim().to_string());
                    } else if let Some(url) = line.strip_prefix("HTTP: ") {
                        // Printed as http://HOST:PORT/metrics; keep the base URL.
                        let url = url.trim();
                        http = Some(url.strip_suffix("/metrics").unwrap_or(url).to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.node_mut(node).wait_exit(Duration::from_secs(5));
                    self.node_mut(node).kill();
                    panic!("{node} exited before it was ready (status {status:?})\n{}", self.log_tail(node, 80));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.node_mut(node).kill();
                    panic!("{node} printed no ready lines within {START_TIMEOUT:?}\n{}", self.log_tail(node, 80));
                }
            }
        }
        let main = main.expect("loop ends when set");
        let n = self.node_mut(node);
        if matches!(node, NodeRef::Broker(_)) {
            n.kafka = Some(main.clone());
        }
        n.http = http;
        self.event(format!("{node} ready after {:?}: {main}", started.elapsed()));
        self.refresh_routing();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.controllers.iter_mut().chain(self.brokers.iter_mut()) {
            n.kill();
        }
        // SKIFF_KEEP_CLUSTER=1 keeps the logs and data of a passing run too, for study.
        if !std::thread::panicking()
            && std::env::var_os("SKIFF_KEEP_CLUSTER").is_some()
            && let Some(dir) = self.root_dir.take()
        {
            eprintln!("---- kept cluster directory: {} ----", dir.keep().display());
        }
        if std::thread::panicking() {
            eprintln!("---- cluster {} timeline ----\n{}", self.spec.name, self.timeline.join("\n"));
            for n in self.controllers.iter().chain(self.brokers.iter()) {
                eprintln!(
                    "---- {} stderr tail ({}) ----\n{}",
                    n.node,
                    n.stderr_path().display(),
                    tail(&n.stderr_path(), 40)
                );
            }
            if let Some(dir) = self.root_dir.take() {
                eprintln!("---- kept cluster directory: {} ----", dir.keep().display());
            }
        }
    }
}

/// `GET path` (HTTP/1.0) from `base` (`http://HOST:PORT`); the body of a 200 answer.
pub fn http_get(base: &str, path: &str) -> Option<String> {
    let addr = base.strip_prefix("http://")?.trim_end_matches('/');
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.get(9..12).filter(|code| *code == "200")?;
    Some(body.to_string())
}

/// The value of the first sample of `name` (with or without labels) in Prometheus text.
pub fn prometheus_value(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}')?.1
        } else if rest.starts_with(' ') {
            rest
        } else {
            return None;
        };
        value.split_whitespace().next()?.parse().ok()
    })
}

/// A small seeded generator (SplitMix64): the fault schedule depends only on the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Idempotent producers and consumers on one topic, following partition leadership through
/// the cluster's [`Routing`].
pub struct Workload {
    pub topic: String,
    pub partitions: i32,
    pub routing: Routing,
    produce_stop: Arc<AtomicBool>,
    consume_stop: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<(ProducerReport, Option<anyhow::Error>)>>,
    /// Each consumer's published position and its task.
    consumers: Vec<(Arc<AtomicI64>, ConsumerTask)>,
    /// The error of every client that stopped on one, pushed by the client's task before it
    /// ends: the reason is known while the task handles are still owned (see
    /// [`Self::ensure_running`]).
    client_errors: Arc<Mutex<Vec<String>>>,
}

type ConsumerTask = tokio::task::JoinHandle<(ConsumerReport, Option<anyhow::Error>)>;

/// What a finished workload produced and what the checker found.
pub struct Outcome {
    pub producers: Vec<ProducerReport>,
    pub consumers: Vec<ConsumerReport>,
    pub summary: Summary,
}

impl Outcome {
    /// Produce error code → count, and transport errors, over all producers.
    pub fn producer_errors(&self) -> (BTreeMap<i16, u64>, u64) {
        load::error_totals(&self.producers)
    }

    /// One line for the test output; the slowest acknowledgement is placed on the cluster's
    /// timeline (seconds since it started).
    pub fn describe(&self, cluster: &Cluster) -> String {
        let (errors, transport) = self.producer_errors();
        let slowest = self
            .producers
            .iter()
            .enumerate()
            .max_by_key(|(_, r)| r.slowest_ack)
            .map(|(i, r)| {
                let at = r.slowest_ack_at.map(|t| t.saturating_duration_since(cluster.started).as_secs_f64());
                format!("{:?} (producer {i}, answered at +{:.3}s)", r.slowest_ack, at.unwrap_or(-1.0))
            })
            .unwrap_or_default();
        let refreshes: u64 = self.producers.iter().map(|r| r.metadata_refreshes).sum();
        let fetch_errors = self.consumers.iter().fold(BTreeMap::<i16, u64>::new(), |mut m, c| {
            c.errors.iter().for_each(|(k, v)| *m.entry(*k).or_default() += v);
            m
        });
        format!(
            "{}; producer errors {errors:?}, transport {transport}, leader look-ups {refreshes}, slowest ack {slowest}; consumer errors {fetch_errors:?}",
            self.summary
        )
    }
}

impl Workload {
    /// Starts `producers_per_partition` producers on every partition and one consumer per
    /// partition. Each batch must be acknowledged within `give_up_after`.
    pub fn start(
        cluster: &Cluster,
        topic: &str,
        partitions: i32,
        producers_per_partition: usize,
        give_up_after: Duration,
    ) -> Workload {
        let routing = cluster.routing();
        let produce_stop = Arc::new(AtomicBool::new(false));
        let consume_stop = Arc::new(AtomicBool::new(false));
        let n = partitions as usize * producers_per_partition;
        let client_errors = Arc::new(Mutex::new(Vec::new()));
        let producers = load::cluster_specs(&routing, topic, partitions, n, give_up_after)
            .into_iter()
            .map(|mut s| {
                s.pause = Duration::from_millis(10);
                let errors = client_errors.clone();
                let stop = produce_stop.clone();
                cluster.spawn(async move {
                    let (report, error) = load::run_producer(s, stop).await;
                    note_client_error(&errors, error.as_ref());
                    (report, error)
                })
            })
            .collect();
        let consumers = (0..partitions)
            .map(|partition| {
                let position = Arc::new(AtomicI64::new(0));
                let spec = ConsumerSpec {
                    routing: routing.clone(),
                    topic: topic.to_string(),
                    partition,
                    give_up_after,
                    position: position.clone(),
                };
                let errors = client_errors.clone();
                let stop = consume_stop.clone();
                let task = cluster.spawn(async move {
                    let (report, error) = load::run_consumer(spec, stop).await;
                    note_client_error(&errors, error.as_ref());
                    (report, error)
                });
                (position, task)
            })
            .collect();
        Workload {
            topic: topic.to_string(),
            partitions,
            routing,
            produce_stop,
            consume_stop,
            producers,
            consumers,
            client_errors,
        }
    }

    /// Fails early if a producer or consumer already gave up, with each dead client's error
    /// ([`Self::finish`] reports them too, with the log check).
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        let dead = self.producers.iter().filter(|h| h.is_finished()).count()
            + self.consumers.iter().filter(|(_, h)| h.is_finished()).count();
        if dead == 0 {
            return Ok(());
        }
        let errors = lock(&self.client_errors).clone();
        let unexplained = dead.saturating_sub(errors.len());
        let mut lines = errors;
        if unexplained > 0 {
            lines.push(format!("{unexplained} without an error (panicked?)"));
        }
        bail!("{dead} clients stopped early:\n  {}", lines.join("\n  "))
    }

    /// Waits until each of `partitions` has an acknowledgement recorded at or after
    /// `ack_index` (a [`Routing::ack_count`]) from a broker not in `not`; returns when each
    /// partition got its first one.
    pub fn first_acks(
        &self,
        ack_index: usize,
        partitions: &[i32],
        not: &[i32],
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<i32, Instant>> {
        let deadline = Instant::now() + timeout;
        let mut first: BTreeMap<i32, Instant> = BTreeMap::new();
        let mut scanned = ack_index;
        loop {
            let acks = self.routing.acks_since(scanned);
            scanned += acks.len();
            for a in acks {
                if partitions.contains(&a.partition) && !not.contains(&a.broker) {
                    first.entry(a.partition).or_insert(a.at);
                }
            }
            if first.len() == partitions.len() {
                return Ok(first);
            }
            self.ensure_running().with_context(|| {
                let missing: Vec<i32> = partitions.iter().copied().filter(|p| !first.contains_key(p)).collect();
                format!("waiting for an acknowledgement on partitions {missing:?} of {}", self.topic)
            })?;
            if Instant::now() > deadline {
                let missing: Vec<i32> = partitions.iter().copied().filter(|p| !first.contains_key(p)).collect();
                bail!("partitions {missing:?} of {} got no acknowledgement within {timeout:?}", self.topic);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until every partition has an acknowledgement recorded after `ack_index`.
    pub fn wait_all_acked(&self, ack_index: usize, timeout: Duration) -> anyhow::Result<()> {
        let all: Vec<i32> = (0..self.partitions).collect();
        self.first_acks(ack_index, &all, &[], timeout).map(|_| ())
    }

    /// Stops the producers (each finishes its batch in flight), waits until the consumers
    /// have read every partition to its high watermark, stops them, reads every partition back
    /// and checks the invariants. Errors carry the clients' failures or the violations.
    pub fn finish(self, cluster: &Cluster) -> anyhow::Result<Outcome> {
        self.produce_stop.store(true, Ordering::Relaxed);
        let mut producers = Vec::new();
        let mut failures = Vec::new();
        for (i, h) in self.producers.into_iter().enumerate() {
            let (report, error) = cluster.block_on(h).context("producer task panicked")?;
            if let Some(e) = error {
                failures.push(format!("producer {i}: {e:#}"));
            }
            producers.push(report);
        }
        let final_metadata = cluster.metadata(&self.topic).ok();
        let logs = cluster.block_on(invariants::read_topic(
            &self.routing,
            &self.topic,
            self.partitions,
            Duration::from_secs(60),
        ))?;
        // Consumers must reach the end of what was written.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .consumers
            .iter()
            .zip(&logs)
            .any(|((pos, h), log)| pos.load(Ordering::Relaxed) < log.high_watermark && !h.is_finished())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.consume_stop.store(true, Ordering::Relaxed);
        let mut consumers = Vec::new();
        for ((pos, h), log) in self.consumers.into_iter().zip(&logs) {
            let (report, error) = cluster.block_on(h).context("consumer task panicked")?;
            if let Some(e) = error {
                failures.push(format!("consumer {}: {e:#}", log.partition));
            } else if pos.load(Ordering::Relaxed) < log.high_watermark {
                failures.push(format!(
                    "consumer {} stopped at offset {}, below the high watermark {}",
                    log.partition,
                    pos.load(Ordering::Relaxed),
                    log.high_watermark
                ));
            }
            consumers.push(report);
        }
        let acked: Vec<_> = producers.iter().flat_map(|r| r.acked.iter().cloned()).collect();
        let consumed: Vec<_> = consumers.iter().flat_map(|r| r.consumed.iter().cloned()).collect();
        let leaders = self.routing.leader_observations();
        let checked = invariants::check(
            &logs,
            &Expectations {
                topic: &self.topic,
                acked: &acked,
                consumed: &consumed,
                leaders: &leaders,
                final_metadata: final_metadata.as_ref(),
            },
        );
        match (checked, failures.is_empty()) {
            (Ok(summary), true) => Ok(Outcome { producers, consumers, summary }),
            (Ok(summary), false) => bail!("clients failed:\n  {}\n(log checked: {summary})", failures.join("\n  ")),
            (Err(v), _) => bail!("{v}clients: {failures:?}"),
        }
    }
}

/// Records a client's error, if it stopped on one (the error names the client).
fn note_client_error(errors: &Mutex<Vec<String>>, error: Option<&anyhow::Error>) {
    if let Some(e) = error {
        lock(errors).push(format!("{e:#}"));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nearest-rank percentile of sorted durations (`q` in 0..=1).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
