//! The transaction checker (issue #13): a seeded, multi-process, Jepsen-style test of
//! exactly-once read-process-write on a 3-controller, 3-broker cluster with MinIO
//! (`support::cluster`), under broker SIGKILL (half of them the transaction coordinator of a
//! worker), controller-leader SIGKILL, broker SIGSTOP and MinIO restarts.
//!
//! - Input: idempotent producers (`support::load`) write to `in` (4 partitions) for the whole run.
//! - Workers: one JVM of `dev.skiff.compat.TxnWorker` (the Java client, built by
//!   `tests/compat/java/setup.sh`), 3 threads in one consumer group, each a read_committed
//!   consumer and a transactional producer copying `in` to `out` (same partition) with the
//!   consumed offsets sent to the transaction; about one transaction in five is aborted (and its
//!   input processed again). Each transaction is logged as one JSON line: committed, aborted, or
//!   unknown (an error on the way), with its input ranges and acknowledged outputs.
//! - During the run, ListOffsets read_committed then read_uncommitted on every `out` leader
//!   every ~100 ms (the LSO samples).
//! - At the end (faults healed, workers closed): `out` scanned read_uncommitted (with the
//!   transaction attributes and markers) and read_committed (filtered as Kafka's consumer
//!   filters), the group's offsets fetched with `require_stable`; the invariants of
//!   `support::txn_invariants` judge (each violation names its invariant).
//!
//! Profiles (`SKIFF_CHECKER_PROFILE`): `short` (default; in `scripts/test.sh`): workers run 75 s,
//! faults during the first 55 s, at most 8 faults, about 2.5 minutes in all. `long`: 600 s,
//! faults during 570 s, at most 120 faults:
//! `SKIFF_CHECKER_PROFILE=long cargo test --test txn_checker -- --nocapture`.
//!
//! A run prints its seed; on failure the seed and the replay command
//! (`SKIFF_CHECKER_SEED=<seed> cargo test --test txn_checker transactions_under_faults`) are
//! printed again with the cluster's timeline and logs. The fault schedule depends only on the
//! seed (which fault, which node, how long); the clients' timing does not replay exactly.
//!
//! `SKIFF_CHECKER_BOOTSTRAP=host:port` runs the same workload and invariants against any broker
//! without faults (no cluster is started): how the checker itself was validated against
//! Apache Kafka 4.4 (bench/kafka/). With `SKIFF_CHECKER_RESTART=<shell command>` too, that
//! command restarts the broker at 20 s and 45 s into the run.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use support::client::Client;
use support::cluster::{Cluster, ClusterSpec, NodeState, Rng};
use support::load::{self, Routing};
use support::txn::{self, LogRecord, Marker, READ_COMMITTED, READ_UNCOMMITTED, Scan};
use support::txn_invariants::{self, Evidence, LsoSample, Outcome, WorkerTxn};
use support::{tail, wait_child};

const INPUT: &str = "txn-in";
const OUTPUT: &str = "txn-out";
const GROUP: &str = "txn-checker";
const PARTITIONS: i32 = 4;
const WORKERS: u32 = 3;
/// About one transaction in this many is aborted by the workers.
const ABORT_EVERY: u32 = 5;

#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    /// How long the workers run.
    run: Duration,
    /// Faults are injected during this first part of the run.
    fault_window: Duration,
    max_faults: usize,
}

impl Profile {
    fn from_env() -> Profile {
        match std::env::var("SKIFF_CHECKER_PROFILE").as_deref() {
            Ok("long") => Profile {
                name: "long",
                run: Duration::from_secs(600),
                fault_window: Duration::from_secs(570),
                max_faults: 120,
            },
            Ok("short") | Err(_) => Profile {
                name: "short",
                run: Duration::from_secs(75),
                fault_window: Duration::from_secs(55),
                max_faults: 8,
            },
            Ok(other) => panic!("SKIFF_CHECKER_PROFILE must be short or long, not {other:?}"),
        }
    }
}

/// `SKIFF_CHECKER_SEED` replays a run; otherwise a fresh seed (or `SKIFF_TEST_SEED`).
fn checker_seed() -> u64 {
    match std::env::var("SKIFF_CHECKER_SEED") {
        Ok(s) => s.parse().expect("SKIFF_CHECKER_SEED must be a u64"),
        Err(_) => support::seed(),
    }
}

/// Prints the replay command if the test fails.
struct SeedGuard {
    seed: u64,
    profile: &'static str,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "transactions_under_faults FAILED with seed {}; replay: SKIFF_CHECKER_SEED={} SKIFF_CHECKER_PROFILE={} cargo test --test txn_checker transactions_under_faults -- --nocapture",
                self.seed, self.seed, self.profile
            );
        }
    }
}

/// Where the workload runs: a fresh cluster (with faults), or any broker (without).
enum Target {
    Cluster(Box<Cluster>),
    External { routing: Routing, rt: tokio::runtime::Runtime },
}

impl Target {
    fn routing(&self) -> Routing {
        match self {
            Target::Cluster(c) => c.routing(),
            Target::External { routing, .. } => routing.clone(),
        }
    }

    fn bootstrap(&self) -> String {
        self.routing().bootstrap().join(",")
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match self {
            Target::Cluster(c) => c.handle(),
            Target::External { rt, .. } => rt.handle().clone(),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Target::Cluster(c) => c.block_on(f),
            Target::External { rt, .. } => rt.block_on(f),
        }
    }

    fn event(&mut self, what: String) {
        match self {
            Target::Cluster(c) => c.event(what),
            Target::External { .. } => eprintln!("[checker] {what}"),
        }
    }
}

#[test]
fn transactions_under_faults() {
    let profile = Profile::from_env();
    let seed = checker_seed();
    let _guard = SeedGuard { seed, profile: profile.name };
    let external = std::env::var("SKIFF_CHECKER_BOOTSTRAP").ok().filter(|b| !b.is_empty());
    eprintln!(
        "transactions_under_faults: seed {seed}, profile {} (replay with SKIFF_CHECKER_SEED={seed}){}",
        profile.name,
        external.as_deref().map(|b| format!(", against {b} without faults")).unwrap_or_default()
    );
    let mut rng = Rng::new(seed);
    let lib = java_lib();
    // Topic names are unique per run so that an external broker can be reused.
    let suffix = if external.is_some() { format!("-{seed:x}") } else { String::new() };
    let (input, output, group) = (format!("{INPUT}{suffix}"), format!("{OUTPUT}{suffix}"), format!("{GROUP}{suffix}"));

    let mut target = match &external {
        Some(b) => Target::External {
            routing: Routing::new(b.split(',').map(str::to_string).collect()),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        },
        None => {
            let mut spec = ClusterSpec::new("txn-checker", 3, 3);
            spec.private_minio = true;
            // The Java workers keep their bootstrap list for the whole run.
            spec.fixed_broker_ports = true;
            Target::Cluster(Box::new(Cluster::start(spec)))
        }
    };
    let routing = target.routing();
    for t in [&input, &output] {
        let r = routing.clone();
        let t2 = t.clone();
        target
            .block_on(async move {
                let mut c = r.connect_any().await?;
                c.set_request_timeout(Duration::from_secs(60));
                c.create_topic_ok(&t2, PARTITIONS).await
            })
            .unwrap_or_else(|e| panic!("creating {t}: {e:#}"));
        if let Target::Cluster(c) = &target {
            c.wait_topic_ready(t, PARTITIONS, Duration::from_secs(30)).expect("topic ready");
        }
    }
    target.event(format!("created {input} and {output} ({PARTITIONS} partitions each)"));

    // Input: one idempotent producer per partition, a batch of 5 every ~100 ms.
    let produce_stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> =
        load::cluster_specs(&routing, &input, PARTITIONS, PARTITIONS as usize, Duration::from_secs(120))
            .into_iter()
            .map(|mut s| {
                s.pause = Duration::from_millis(100);
                s.value_bytes = 20;
                let stop = produce_stop.clone();
                target.handle().spawn(async move { load::run_producer(s, stop).await })
            })
            .collect();

    // The workers.
    let dir = tempfile::Builder::new().prefix("skiff-txn-checker-").tempdir().expect("temp dir");
    let worker_log = dir.path().join("workers.jsonl");
    let mut jvm =
        start_workers(&lib, dir.path(), &target.bootstrap(), &input, &output, &group, &worker_log, profile.run);
    target.event(format!("workers started (JVM pid {}), log {}", jvm.id(), worker_log.display()));
    let started = Instant::now();

    // LSO samples.
    let sample_stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = target.handle().spawn(sample_lso(
        routing.clone(),
        output.clone(),
        sample_stop.clone(),
        samples.clone(),
        started,
    ));

    // Faults.
    let mut faults = 0;
    if let Target::Cluster(cluster) = &mut target {
        // Every fault class once first (in a seeded order), then seeded choices.
        let mut classes = Fault::ALL;
        for i in (1..classes.len()).rev() {
            classes.swap(i, rng.below(i + 1));
        }
        std::thread::sleep(Duration::from_secs(5));
        while faults < profile.max_faults && started.elapsed() + Duration::from_secs(8) < profile.fault_window {
            if let Ok(Some(status)) = jvm.try_wait() {
                panic!("the worker JVM exited during the faults ({status})\n{}", jvm_logs(dir.path()));
            }
            let fault = classes.get(faults).copied().unwrap_or_else(|| *rng.pick(&Fault::ALL));
            inject_fault(cluster, &mut rng, fault, &group);
            faults += 1;
            cluster.heal();
            std::thread::sleep(rng.millis(2000, 6000));
        }
        cluster.heal();
        cluster.event(format!("{faults} faults injected; healed"));
    } else if let Ok(restart) = std::env::var("SKIFF_CHECKER_RESTART") {
        // An external broker restarted by a shell command (e.g. SIGKILL and start Apache Kafka
        // again): validates that crashes do not make the invariants report false violations.
        for at in [20, 45] {
            std::thread::sleep(Duration::from_secs(at).saturating_sub(started.elapsed()));
            let status = Command::new("bash").arg("-c").arg(&restart).status().expect("run SKIFF_CHECKER_RESTART");
            assert!(status.success(), "SKIFF_CHECKER_RESTART failed: {status}");
            faults += 1;
            target.event(format!("external broker restarted at +{:.1?}", started.elapsed()));
        }
    }

    // The workers stop on their own after `profile.run` and close cleanly.
    let mut jvm_slot = Some(jvm);
    let status = wait_child(&mut jvm_slot, profile.run.saturating_sub(started.elapsed()) + Duration::from_secs(120));
    let Some(status) = status else {
        if let Some(mut j) = jvm_slot {
            let _ = j.kill();
            let _ = j.wait();
        }
        panic!("the worker JVM did not finish within its run + 120 s\n{}", jvm_logs(dir.path()));
    };
    assert!(status.success(), "the worker JVM failed ({status})\n{}", jvm_logs(dir.path()));
    target.event(format!("workers done after {:.1?}", started.elapsed()));
    produce_stop.store(true, Ordering::Relaxed);
    sample_stop.store(true, Ordering::Relaxed);
    for p in producers {
        let (report, error) = target.block_on(p).expect("producer task");
        assert!(error.is_none(), "input producer failed: {error:?}");
        assert!(!report.acked.is_empty(), "an input producer had nothing acknowledged");
    }
    target.block_on(sampler).expect("sampler task");

    // Evidence.
    let text = std::fs::read_to_string(&worker_log).expect("read worker log");
    let txns = txn_invariants::parse_worker_log(&text).expect("parse worker log");
    let evidence = target.block_on(collect(
        &routing,
        &input,
        &output,
        &group,
        txns.clone(),
        samples.lock().expect("samples").clone(),
    ));
    let evidence = evidence.unwrap_or_else(|e| panic!("collecting the evidence: {e:#}\n{}", jvm_logs(dir.path())));
    report_outcomes(&txns);
    if let Target::Cluster(cluster) = &target {
        report_unknown_server_errors(cluster.root());
    }
    match txn_invariants::check(&evidence) {
        Ok(summary) => {
            eprintln!("transactions_under_faults: {faults} faults; {summary:?}");
            assert!(
                summary.committed_txns > 0,
                "no transaction committed: nothing was checked\n{}",
                jvm_logs(dir.path())
            );
            assert!(summary.aborted_txns > 0, "no transaction aborted: the aborted path was not checked");
            assert!(summary.inputs_committed > 0, "the group committed no input offsets");
            if external.is_none() {
                assert!(summary.lso_samples > 100, "only {} LSO samples", summary.lso_samples);
            }
        }
        Err(v) => panic!(
            "transaction invariants violated: {:?}\n{v}\nworker log: {} (kept in {})\n{}",
            v.names(),
            worker_log.display(),
            dir.keep().display(),
            jvm_logs_tail(&text)
        ),
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillBroker,
    KillControllerLeader,
    StopBroker,
    RestartMinio,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::KillBroker, Fault::KillControllerLeader, Fault::StopBroker, Fault::RestartMinio];
}

/// One fault, healed before returning; the node and the durations come from the seed.
fn inject_fault(cluster: &mut Cluster, rng: &mut Rng, fault: Fault, group: &str) {
    match fault {
        Fault::KillBroker => {
            let running = cluster.brokers_in(NodeState::Running);
            let mut b = *rng.pick(&running);
            // Every other time, the broker coordinating a worker's transactional id: the
            // coordinator fails over mid-transaction (the log is controller state).
            if rng.below(2) == 0 {
                let id = format!("{group}-worker-{}", rng.below(WORKERS as usize));
                match cluster.block_on(txn_coordinator(cluster.routing(), id.clone())) {
                    Ok(node) => match running.iter().find(|r| r.id() == node) {
                        Some(&r) => {
                            b = r;
                            cluster.event(format!("{b} coordinates {id}"));
                        }
                        None => cluster.event(format!("the coordinator of {id} ({node}) is not running")),
                    },
                    Err(e) => cluster.event(format!("FindCoordinator({id}): {e:#}")),
                }
            }
            cluster.kill(b);
            std::thread::sleep(rng.millis(1000, 5000));
            cluster.start_node(b);
        }
        Fault::KillControllerLeader => match cluster.wait_controller_leader(Duration::from_secs(15), None) {
            Ok(leader) => {
                let node =
                    cluster.controller_refs().into_iter().find(|c| c.id() == leader).expect("leader is a controller");
                cluster.kill(node);
                std::thread::sleep(rng.millis(500, 3000));
                cluster.start_node(node);
            }
            Err(e) => cluster.event(format!("no controller leader to kill: {e:#}")),
        },
        Fault::StopBroker => {
            let running = cluster.brokers_in(NodeState::Running);
            let b = *rng.pick(&running);
            cluster.stop(b);
            // Longer than the controllers' session timeout (1 s): the broker is fenced.
            std::thread::sleep(rng.millis(1500, 6000));
            cluster.cont(b);
        }
        Fault::RestartMinio => {
            let down = rng.millis(500, 4000);
            cluster.restart_minio(down);
        }
    }
}

/// The broker FindCoordinator (key type 1, transactions) names for `transactional_id`.
async fn txn_coordinator(routing: Routing, transactional_id: String) -> anyhow::Result<i32> {
    let mut c = routing.connect_any().await?;
    let req = FindCoordinatorRequest::default().with_key_type(1).with_key(StrBytes::from_string(transactional_id));
    let r = c.send(&req, 3).await?;
    anyhow::ensure!(r.error_code == 0, "error {}", r.error_code);
    Ok(r.node_id.0)
}

/// ListOffsets read_committed, then read_uncommitted, on each partition's leader, every ~100 ms.
async fn sample_lso(
    routing: Routing,
    topic: String,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<LsoSample>>>,
    started: Instant,
) {
    let mut conns: BTreeMap<i32, Client> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for p in 0..PARTITIONS {
            let mut c = match conns.remove(&p) {
                Some(c) => c,
                None => match routing.connect_leader(&topic, p).await {
                    Ok((c, _)) => c,
                    Err(_) => continue,
                },
            };
            let Ok((0, lso)) = txn::list_latest(&mut c, &topic, p, READ_COMMITTED).await else { continue };
            let Ok((0, hw)) = txn::list_latest(&mut c, &topic, p, READ_UNCOMMITTED).await else { continue };
            let at_ms = started.elapsed().as_millis() as u64;
            out.lock().expect("samples").push(LsoSample { partition: p, lso, high_watermark_after: hw, at_ms });
            conns.insert(p, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no transaction is open on `output` (LSO = high watermark everywhere; a
/// transaction abandoned by a crashed producer ends by its timeout, 20 s), then reads it all.
async fn collect(
    routing: &Routing,
    input: &str,
    output: &str,
    group: &str,
    txns: Vec<WorkerTxn>,
    lso_samples: Vec<LsoSample>,
) -> anyhow::Result<Evidence> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut open = Vec::new();
        for p in 0..PARTITIONS {
            let listed = async {
                let (mut c, _) = routing.connect_leader(output, p).await?;
                let committed = txn::list_latest(&mut c, output, p, READ_COMMITTED).await?;
                let uncommitted = txn::list_latest(&mut c, output, p, READ_UNCOMMITTED).await?;
                anyhow::Ok((committed, uncommitted))
            };
            match listed.await {
                Ok(((0, lso), (0, hw))) if lso == hw => {}
                other => open.push(format!("{p}: {other:?}")),
            }
        }
        if open.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "transactions still open 90 s after the workers closed: partition: ((error, LSO), (error, HW)) {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut evidence = Evidence { output_partitions: PARTITIONS, txns, lso_samples, ..Evidence::default() };
    for p in 0..PARTITIONS {
        evidence.raw.insert(p, txn::scan(routing, output, p, READ_UNCOMMITTED, Duration::from_secs(60)).await?);
        evidence.committed.insert(p, txn::scan(routing, output, p, READ_COMMITTED, Duration::from_secs(60)).await?);
    }
    let offsets = txn::committed_offsets(routing, group, input, PARTITIONS, Duration::from_secs(60)).await?;
    evidence.group_offsets = offsets.into_iter().enumerate().map(|(p, o)| (p as i32, o)).collect();
    Ok(evidence)
}

/// Brokers' log lines that answered UNKNOWN_SERVER_ERROR (diagnostics: a client can only give
/// up on that code, so each one is worth a look; the invariants do not depend on it).
fn report_unknown_server_errors(root: &Path) {
    let mut lines = Vec::new();
    let mut total = 0;
    for node in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for log in std::fs::read_dir(node.path()).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            for l in text.lines().filter(|l| l.contains("UnknownServerError")) {
                total += 1;
                if lines.len() < 10 {
                    lines.push(format!("{}: {}", log.path().display(), l.chars().take(400).collect::<String>()));
                }
            }
        }
    }
    if total > 0 {
        eprintln!("{total} broker log lines name UnknownServerError; the first:\n{}", lines.join("\n"));
    }
}

fn report_outcomes(txns: &[WorkerTxn]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in txns {
        *counts
            .entry(match t.outcome {
                Outcome::Committed => "committed",
                Outcome::Aborted => "aborted",
                Outcome::Unknown => "unknown",
            })
            .or_default() += 1;
    }
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for e in txns.iter().filter_map(|t| t.error.as_deref()) {
        *errors.entry(e.chars().take(160).collect()).or_default() += 1;
    }
    eprintln!("worker transactions: {counts:?}; errors: {errors:#?}");
}

// ---- the worker JVM ------------------------------------------------------------------------

/// `${SKIFF_CACHE:-~/.cache/skiff}/compat/java/lib` with the compat jar (tests/compat/java/setup.sh).
fn java_lib() -> PathBuf {
    let cache = std::env::var("SKIFF_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/skiff"));
    let lib = cache.join("compat").join("java").join("lib");
    assert!(
        lib.join("compat-java.jar").exists(),
        "{} has no compat-java.jar: run `tests/compat/setup.sh java` before `cargo test`",
        lib.display()
    );
    lib
}

#[allow(clippy::too_many_arguments)]
fn start_workers(
    lib: &Path,
    dir: &Path,
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    log: &Path,
    run: Duration,
) -> Child {
    let java = std::env::var("JAVA_HOME").map(|h| format!("{h}/bin/java")).unwrap_or_else(|_| "java".into());
    Command::new(java)
        .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg(format!(
            "-Dorg.slf4j.simpleLogger.defaultLogLevel={}",
            std::env::var("COMPAT_LOG_LEVEL").unwrap_or_else(|_| "warn".into())
        ))
        .arg("-Dorg.slf4j.simpleLogger.logFile=System.err")
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg("dev.skiff.compat.TxnWorker")
        .env("BOOTSTRAP", bootstrap)
        .env("INPUT", input)
        .env("OUTPUT", output)
        .env("GROUP", group)
        .env("TXN_PREFIX", format!("{group}-worker"))
        .env("WORKERS", WORKERS.to_string())
        .env("ABORT_EVERY", ABORT_EVERY.to_string())
        .env("DURATION_MS", run.as_millis().to_string())
        .env("LOG", log)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("worker.stdout")).expect("stdout file"))
        .stderr(File::create(dir.join("worker.stderr")).expect("stderr file"))
        .spawn()
        .expect("start java dev.skiff.compat.TxnWorker")
}

fn jvm_logs(dir: &Path) -> String {
    format!(
        "---- worker stdout ----\n{}\n---- worker stderr ----\n{}\n---- worker log ----\n{}",
        tail(&dir.join("worker.stdout"), 20),
        tail(&dir.join("worker.stderr"), 40),
        tail(&dir.join("workers.jsonl"), 20)
    )
}

fn jvm_logs_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    format!("---- worker log (last 20 of {}) ----\n{}", lines.len(), lines[lines.len().saturating_sub(20)..].join("\n"))
}

// ---- the invariants on hand-made histories ---------------------------------------------------

fn rec(offset: i64, pid: i64, transactional: bool, value: &str) -> LogRecord {
    LogRecord {
        offset,
        producer_id: pid,
        producer_epoch: 0,
        transactional,
        marker: None,
        key: None,
        value: Some(Bytes::from(value.to_string())),
    }
}

fn marker(offset: i64, pid: i64, m: Marker) -> LogRecord {
    LogRecord {
        offset,
        producer_id: pid,
        producer_epoch: 0,
        transactional: true,
        marker: Some(m),
        key: None,
        value: None,
    }
}

fn logged(worker: u32, txn: u64, outcome: Outcome, first: i64, last: i64, outputs: &[i64]) -> WorkerTxn {
    WorkerTxn {
        worker,
        txn,
        outcome,
        inputs: vec![(0, first, last)],
        outputs: outputs.iter().map(|&o| (0, o)).collect(),
        error: None,
    }
}

/// One partition: worker 0 txn 0 commits inputs 0-1 (offsets 0, 1, marker 2); worker 1 txn 0
/// writes a copy of input 2 at 3 and aborts (marker 5) while worker 0 txn 1 commits inputs 2
/// (offset 4, marker 6). Group offset 3.
fn history() -> Evidence {
    let raw = vec![
        rec(0, 10, true, "in:0:0|w0|t0"),
        rec(1, 10, true, "in:0:1|w0|t0"),
        marker(2, 10, Marker::Commit),
        rec(3, 11, true, "in:0:2|w1|t0"),
        rec(4, 10, true, "in:0:2|w0|t1"),
        marker(5, 11, Marker::Abort),
        marker(6, 10, Marker::Commit),
    ];
    let scan = |aborted: &[(i64, i64)]| Scan {
        records: raw.clone(),
        end: 7,
        aborted: aborted.iter().copied().collect(),
        last_stable_offset: 7,
    };
    Evidence {
        output_partitions: 1,
        raw: [(0, scan(&[]))].into(),
        committed: [(0, scan(&[(11, 3)]))].into(),
        group_offsets: [(0, 3)].into(),
        txns: vec![
            logged(0, 0, Outcome::Committed, 0, 1, &[0, 1]),
            logged(1, 0, Outcome::Aborted, 2, 2, &[3]),
            logged(0, 1, Outcome::Committed, 2, 2, &[4]),
        ],
        lso_samples: vec![
            LsoSample { partition: 0, lso: 3, high_watermark_after: 5, at_ms: 1 },
            LsoSample { partition: 0, lso: 7, high_watermark_after: 7, at_ms: 2 },
        ],
    }
}

/// The checker passes a correct history and names the invariant each broken one violates: a
/// checker that cannot fail proves nothing.
#[test]
fn checker_catches_violations() {
    let ok = history();
    let summary = txn_invariants::check(&ok).unwrap_or_else(|v| panic!("a correct history fails:\n{v}"));
    assert_eq!((summary.committed_txns, summary.aborted_txns, summary.visible_records), (2, 1, 3));

    // The broker forgets the aborted transaction in its read_committed answer.
    let mut e = history();
    e.committed.get_mut(&0).expect("partition 0").aborted.clear();
    let v = txn_invariants::check(&e).expect_err("aborted record shown");
    assert!(v.names().contains(&"read_committed_matches_markers"), "{v}");
    assert!(v.names().contains(&"aborted_invisible"), "{v}");
    assert!(v.names().contains(&"offsets_commit_with_outputs"), "{v}");

    // An LSO above a transaction whose marker was not written yet.
    let mut e = history();
    e.lso_samples.push(LsoSample { partition: 0, lso: 5, high_watermark_after: 5, at_ms: 3 });
    let v = txn_invariants::check(&e).expect_err("LSO past an open transaction");
    assert_eq!(v.names(), vec!["lso_never_passes_open_transaction"], "{v}");

    // The group committed past what is visible (offsets without their outputs).
    let mut e = history();
    e.group_offsets.insert(0, 4);
    let v = txn_invariants::check(&e).expect_err("offset committed without output");
    assert_eq!(v.names(), vec!["offsets_commit_with_outputs"], "{v}");

    // A committed transaction that is not visible (the commit marker became an abort).
    let mut e = history();
    for s in [e.raw.get_mut(&0), e.committed.get_mut(&0)].into_iter().flatten() {
        s.records[6].marker = Some(Marker::Abort);
    }
    e.committed.get_mut(&0).expect("partition 0").aborted.insert((10, 4));
    let v = txn_invariants::check(&e).expect_err("committed transaction lost");
    assert!(v.names().contains(&"committed_visible_exactly_once"), "{v}");

    // A transaction left open at the end.
    let mut e = history();
    let raw = e.raw.get_mut(&0).expect("partition 0");
    raw.records.truncate(6);
    raw.end = 6;
    let committed = e.committed.get_mut(&0).expect("partition 0");
    committed.records.truncate(4);
    committed.end = 4;
    let v = txn_invariants::check(&e).expect_err("open transaction at the end");
    assert!(v.names().contains(&"every_transaction_ended"), "{v}");

    // Half of an unknown transaction visible.
    let mut e = history();
    e.txns[0].outcome = Outcome::Unknown;
    e.txns[0].inputs = vec![(0, 0, 2)];
    let v = txn_invariants::check(&e).expect_err("half an unknown transaction");
    assert_eq!(v.names(), vec!["unknown_all_or_nothing"], "{v}");
}
