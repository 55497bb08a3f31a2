//! Failover as real clients see it (issue #17): 3 controllers + 3 brokers (+ MinIO), a real
//! client producing at its default settings (`tests/compat/<client>/run.sh`, `MODE=failover`,
//! README "Failover scenario"), and the broker leading partition 0 SIGKILLed under that load.
//! Each trial measures kill → the first acknowledgement of a record the client was handed
//! *after* the kill, on partition 0 (which has moved to a surviving broker), then restarts the
//! killed broker (on the same port: real clients keep their bootstrap list) and lets placement
//! settle before the next kill. Nothing acknowledged is lost: the program checks every record
//! it handed over was acknowledged, none failed.
//!
//! Prints `failover <client> kill->first-ack: n=.. p50=..ms p99=..ms max=..ms all=[..]` and
//! every trial's figure, then the target (p99 ≤ 0.5 s for Java and librdkafka, ≤ 1 s for
//! the others) as met or `TARGET MISSED` with the client-side timer that bounds it. It asserts
//! what Skiff reaches today ([`asserted`]); docs/cluster.md ("Failover as clients see it") has
//! the figures and why each client waits where it does.
//!
//! Also `produce_to_a_broker_that_does_not_lead_names_the_leader`: KIP-951's CurrentLeader and
//! NodeEndpoints in NOT_LEADER_OR_FOLLOWER answers (no client program needed).
//!
//! Profiles (`SKIFF_FAILOVER_PROFILE`): `short` (default, CI): 20 trials per client, one client
//! process each (franz-go: two of 10); `long`: 100 trials per client, in client runs of 20
//! (franz-go 10; each run is bounded by the programs' 240 s watchdog). `SKIFF_FAILOVER_CLIENTS=java,go-franz` picks clients.

#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time (wall clock too)

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterSpec, NodeRef, percentile};
use support::compat::run_sh;
use support::failover::{Profile, client_selected, report, unix_us};

const PARTITIONS: i32 = 3;
/// Records handed to the client per second (round-robin over the partitions).
const RATE: u32 = 300;
/// Trials per client process: the programs' watchdog ends a run at 240 s, and franz-go's
/// trials each take ~16 s ([`quiet_before_kill`]).
fn trials_per_run(client: &str) -> usize {
    if client == "go-franz" { 10 } else { 20 }
}
/// The longest any one trial may wait for its first acknowledgement.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// One `ack <partition> <index> <handed_us> <acked_us>` line.
#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: i32,
    handed_us: i64,
    acked_us: i64,
}

/// A running `MODE=failover` program and what it printed so far.
struct Producer {
    client: String,
    child: Child,
    stdin: Option<ChildStdin>,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// Every other stdout line (`fail ...`, logs, the final verdict).
    other: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_path: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

impl Producer {
    fn start(client: &str, bootstrap: &str, topic: &str) -> Producer {
        let script = run_sh(client);
        assert!(script.exists(), "{} is missing", script.display());
        let logs = tempfile::Builder::new().prefix("skiff-failover-").tempdir().expect("temp dir");
        // SKIFF_FAILOVER_CLIENT_LOG keeps the client's stderr (e.g. with COMPAT_DEBUG) for study.
        let stderr_path = std::env::var_os("SKIFF_FAILOVER_CLIENT_LOG")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| logs.path().join("stderr"));
        let mut child = Command::new("bash")
            .arg(&script)
            .env("BOOTSTRAP", bootstrap)
            .env("TOPIC", topic)
            .env("MODE", "failover")
            .env("PARTITIONS", PARTITIONS.to_string())
            .env("RATE", RATE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn run.sh");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let other = Arc::new(Mutex::new(Vec::new()));
        let (a, o) = (acks.clone(), other.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match parse_ack(&line) {
                    Some(ack) => a.lock().expect("acks").push(ack),
                    None => o.lock().expect("lines").push(line),
                }
            }
        });
        Producer {
            client: client.to_string(),
            child,
            stdin,
            acks,
            other,
            reader: Some(reader),
            stderr_path,
            _logs: logs,
        }
    }

    fn context(&self) -> String {
        let other = self.other.lock().expect("lines");
        let tail = other[other.len().saturating_sub(20)..].join("\n");
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        format!(
            "client {}: stdout (not acks, tail):\n{tail}\nstderr (tail):\n{}",
            self.client,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// The first acknowledgement on `partition` of a record handed over at or after
    /// `since_us`, waiting up to `timeout`.
    fn first_ack(&mut self, partition: i32, since_us: i64, timeout: Duration) -> anyhow::Result<Ack> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .acks
                .lock()
                .expect("acks")
                .iter()
                .filter(|a| a.partition == partition && a.handed_us >= since_us)
                .min_by_key(|a| a.acked_us)
                .copied();
            if let Some(a) = found {
                // Acks arrive in order per partition, but give a slightly later line a moment.
                std::thread::sleep(Duration::from_millis(20));
                return Ok(a);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the program exited ({status}) before acknowledging\n{}", self.context());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no acknowledgement on partition {partition} within {timeout:?}\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes stdin (the program flushes, checks every record was acknowledged and exits).
    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                anyhow::bail!("the program did not finish within 90 s of its stdin closing\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let other = self.other.lock().expect("lines").clone();
        let fails: Vec<&String> = other.iter().filter(|l| l.starts_with("fail ")).collect();
        anyhow::ensure!(fails.is_empty(), "deliveries failed: {fails:?}\n{}", self.context());
        let last = other.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_default();
        anyhow::ensure!(
            status.success() && last.starts_with(&format!("compat {} ok", self.client)),
            "the program failed ({status}); last line {last:?}\n{}",
            self.context()
        );
        eprintln!("{last}");
        Ok(())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut f = line.strip_prefix("ack ")?.split_whitespace();
    let partition = f.next()?.parse().ok()?;
    let _index: u64 = f.next()?.parse().ok()?;
    let handed_us = f.next()?.parse().ok()?;
    let acked_us = f.next()?.parse().ok()?;
    Some(Ack { partition, handed_us, acked_us })
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Where one trial's time went, in ms after the kill, from the `unix_ms` fields of the
/// processes' log lines (same machine, same clock).
#[derive(Debug, Default, Clone)]
struct Timeline {
    /// A surviving broker's peer watch found the victim's listener refusing connections.
    broker_saw_gone: Option<i64>,
    /// The controller leader's probe after the heartbeat connection closed was refused.
    controller_saw_gone: Option<i64>,
    /// The fence (which moves the partitions) committed.
    fence_committed: Option<i64>,
    /// A surviving broker's image applied the fence.
    image_fenced: Option<i64>,
    /// Metadata requests held for the fence: (arrived, answered).
    held: Vec<(i64, i64)>,
    first_ack: i64,
}

/// `name=123` in a log line.
fn log_field(line: &str, name: &str) -> Option<i64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl Timeline {
    fn read(cluster: &Cluster, victim: i32, killed_us: i64, acked_us: i64) -> Timeline {
        let kill_ms = killed_us / 1000;
        let mut t = Timeline { first_ack: (acked_us - killed_us) / 1000, ..Timeline::default() };
        let after = |line: &str| log_field(line, "unix_ms").filter(|ms| *ms >= kill_ms).map(|ms| ms - kill_ms);
        let earliest = |slot: &mut Option<i64>, v: Option<i64>| {
            if let Some(v) = v {
                *slot = Some(slot.map_or(v, |s| s.min(v)));
            }
        };
        for node in cluster.controller_refs() {
            for line in cluster.log_tail(node, 3_000).lines() {
                if log_field(line, "broker_id") != Some(i64::from(victim)) {
                    continue;
                }
                if line.contains("process gone") {
                    earliest(&mut t.controller_saw_gone, after(line));
                } else if line.contains("broker fenced") {
                    earliest(&mut t.fence_committed, after(line));
                }
            }
        }
        for node in cluster.broker_refs().into_iter().filter(|b| b.id() != victim) {
            for line in cluster.log_tail(node, 3_000).lines() {
                if line.contains("Metadata answer held") {
                    if let (Some(done), Some(held)) = (after(line), log_field(line, "held_ms"))
                        && done <= t.first_ack + 1_000
                    {
                        t.held.push((done - held, done));
                    }
                    continue;
                }
                if log_field(line, "peer") != Some(i64::from(victim)) {
                    continue;
                }
                if line.contains("listener refuses connections") {
                    earliest(&mut t.broker_saw_gone, after(line));
                } else if line.contains("image shows the gone peer broker fenced") {
                    earliest(&mut t.image_fenced, after(line));
                }
            }
        }
        t.held.sort();
        t
    }

    fn line(&self) -> String {
        let at = |v: Option<i64>| v.map_or("?".to_string(), |v| format!("+{v}"));
        let held = match (self.held.first(), self.held.len()) {
            (Some((arrived, answered)), n) => {
                format!("{n} held Metadata (first arrived +{arrived}, answered +{answered})")
            }
            (None, _) => "no Metadata held".to_string(),
        };
        format!(
            "brokers saw it gone {}, controller saw it gone {}, fence committed {}, brokers' images fenced {}, {held}, first ack +{} (ms after the kill)",
            at(self.broker_saw_gone),
            at(self.controller_saw_gone),
            at(self.fence_committed),
            at(self.image_fenced),
            self.first_ack
        )
    }
}

/// The median of each stage over the trials that logged it.
fn timeline_summary(client: &str, timelines: &[Timeline]) -> String {
    let median = |f: &dyn Fn(&Timeline) -> Option<i64>| {
        let mut v: Vec<i64> = timelines.iter().filter_map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).map_or("?".to_string(), |m| format!("{m}ms (n={})", v.len()))
    };
    format!(
        "failover {client} timeline medians after the kill: brokers saw it gone {}, controller saw it gone {}, fence committed {}, brokers' images fenced {}, first held Metadata answered {}, first ack {}",
        median(&|t| t.broker_saw_gone),
        median(&|t| t.controller_saw_gone),
        median(&|t| t.fence_committed),
        median(&|t| t.image_fenced),
        median(&|t| t.held.first().map(|h| h.1)),
        median(&|t| Some(t.first_ack)),
    )
}

/// Runs `trials` kills against `client`; returns kill → first ack on partition 0 per trial,
/// and each trial's timeline.
fn measure(cluster: &mut Cluster, client: &str, topic: &str, trials: usize) -> (Vec<Duration>, Vec<Timeline>) {
    let mut timelines = Vec::new();
    let mut samples = Vec::new();
    while samples.len() < trials {
        let mut producer = Producer::start(client, &cluster.bootstrap(), topic);
        // Warm: every partition acknowledged once (connections, producer id, metadata).
        for p in 0..PARTITIONS {
            producer
                .first_ack(p, 0, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{client}: no first acknowledgement: {e:#}"));
        }
        let run_trials = trials_per_run(client).min(trials - samples.len());
        for _ in 0..run_trials {
            let trial = samples.len();
            let md = cluster
                .wait_leaders(topic, PARTITIONS, &[], Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{client} trial {trial}: {e:#}"));
            let (victim, _) = md.leader(0).expect("partition 0 has a leader");
            // Steady load first: a fresh acknowledgement on every partition.
            let settled = unix_us();
            for p in 0..PARTITIONS {
                producer
                    .first_ack(p, settled, Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("{client} trial {trial}: load not flowing before the kill: {e:#}"));
            }
            // A failure in steady state, not within the client's minimum refresh interval of
            // the previous trial's move back (see [`quiet_before_kill`]).
            std::thread::sleep(quiet_before_kill(client));
            let killed_us = unix_us();
            cluster.kill(NodeRef::Broker(victim));
            let ack = producer
                .first_ack(0, killed_us, TRIAL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{client} trial {trial}: after SIGKILL of broker {victim}: {e:#}"));
            let took = Duration::from_micros((ack.acked_us - killed_us).max(0) as u64);
            // Give the logs a moment to hold the last stages (a fence may commit after the ack
            // of a record another way, never in practice; and writes are buffered by line).
            std::thread::sleep(Duration::from_millis(100));
            let timeline = Timeline::read(cluster, victim, killed_us, ack.acked_us);
            eprintln!(
                "failover {client} trial {trial}: SIGKILL broker {victim} (leading partition 0) -> first ack of a later record after {} ms; {}",
                ms(took),
                timeline.line()
            );
            samples.push(took);
            timelines.push(timeline);
            cluster.start_node(NodeRef::Broker(victim));
            // The restarted broker receives partitions back (placement): let that settle.
            let back = Instant::now() + Duration::from_secs(5);
            while Instant::now() < back && !cluster.metadata(topic).is_ok_and(|md| !md.led_by(victim).is_empty()) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        producer.finish().unwrap_or_else(|e| panic!("{client}: {e:#}"));
    }
    (samples, timelines)
}

/// How long the cluster stays unchanged before a kill. franz-go refreshes metadata at most once
/// per `MetadataMinAge` (5 s by default), whatever the trigger; the previous trial's restart
/// moved partitions back moments ago, which made it refresh, and the refresh that move queued
/// runs up to 5 s later, so a kill within 10 s would measure that floor, not failover. A failure
/// in steady state (franz-go's last refresh ≥ 5 s old) is what this measures;
/// `SKIFF_FAILOVER_QUIET_MS=0` measures back-to-back failures instead (franz-go then waits out
/// its min age: p50 ≈ 5 s, docs/cluster.md). The other clients have no such floor.
fn quiet_before_kill(client: &str) -> Duration {
    if let Some(ms) = std::env::var("SKIFF_FAILOVER_QUIET_MS").ok().and_then(|v| v.parse().ok()) {
        return Duration::from_millis(ms);
    }
    match client {
        "go-franz" => Duration::from_millis(10_200),
        _ => Duration::ZERO,
    }
}

/// (p50, p99, max) and the printed line.
fn distribution(client: &str, samples: &[Duration]) -> (String, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p99 = percentile(&sorted, 0.99);
    let line = format!(
        "failover {client} kill->first-ack: n={} p50={}ms p99={}ms max={}ms all={:?}",
        sorted.len(),
        ms(percentile(&sorted, 0.50)),
        ms(p99),
        ms(sorted.last().copied().unwrap_or_default()),
        samples.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    (line, p99)
}

/// The target for p99 per client family (reported on every run, met or not).
fn target(client: &str) -> Duration {
    match client {
        "java" | "python-confluent" => Duration::from_millis(500),
        _ => Duration::from_secs(1),
    }
}

/// What this test asserts, per client: the figure Skiff reaches today with some margin (not the
/// issue's target, which is printed alongside, met or missed, with what bounds it;
/// docs/cluster.md "Failover as clients see it"). The first two fail without surviving brokers
/// holding Metadata that names a dead leader (`src/broker/peer_watch.rs`): librdkafka's p99 was
/// 1.2-1.9 s (its 1 s topic scan), franz-go's p50 5 s (`MetadataMinAge`); franz-go's p99 was
/// still 5.3 s while a dying leader's listener backlog, accepting connections, counted as alive
/// (a quarter of its trials; 0.4-0.9 s since only an answer to a ping counts).
fn asserted(client: &str) -> (&'static str, Duration) {
    match client {
        "python-confluent" => ("p99", Duration::from_millis(1_000)),
        "go-franz" => ("p99", Duration::from_millis(3_000)),
        _ => ("p99", Duration::from_secs(5)),
    }
}

/// What bounds a client's figure once Skiff has moved the partition (printed when the target is
/// missed).
fn bottleneck(client: &str) -> &'static str {
    match client {
        "python-confluent" => {
            "the produce round trips of the retried in-flight batches on the new leader (one PUT + one Raft commit each, \
             slow on a loaded machine), or a Metadata request answered before any broker saw the leader go"
        }
        "go-franz" => {
            "franz-go's Metadata retry backoff (250 ms, growing) when its Metadata request went to the dead broker or \
             over a connection to one killed earlier, then MetadataMinAge (5 s) if all four tries failed"
        }
        "java" => {
            "Java retries the batches that were in flight one at a time after a leader change; \
             each is a produce round trip (one PUT + one Raft commit, slow on a loaded machine)"
        }
        _ => "the client's retry backoff after the move",
    }
}

/// One cluster at a time: the trials measure latency, and the machine is small.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_client(client: &str) {
    let _serial = one_at_a_time();
    if !client_selected(client) {
        eprintln!("failover {client}: skipped (SKIFF_FAILOVER_CLIENTS)");
        return;
    }
    // Long profile: 100 trials per client (franz-go's in runs of 10, see [`trials_per_run`]).
    let profile = Profile::from_env(20, 100);
    let name = format!("failover-{client}");
    let mut spec = ClusterSpec::new(&name, 3, 3);
    spec.fixed_broker_ports = true;
    let mut cluster = Cluster::start(spec);
    let topic = name.as_str();
    cluster.create_topic(topic, PARTITIONS).unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    let (samples, timelines) = measure(&mut cluster, client, topic, profile.trials);
    let (line, p99) = distribution(client, &samples);
    report(&format!("{line} (profile {}, {:.1?})", profile.name, started.elapsed()));
    eprintln!("{}", timeline_summary(client, &timelines));
    let goal = target(client);
    if p99 <= goal {
        report(&format!("failover {client}: p99 {}ms meets the issue's target {}ms", ms(p99), ms(goal)));
    } else {
        report(&format!(
            "failover {client}: TARGET MISSED: p99 {}ms > the issue's target {}ms; bottleneck: {}",
            ms(p99),
            ms(goal),
            bottleneck(client)
        ));
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let (which, bound) = asserted(client);
    let figure = percentile(&sorted, if which == "p50" { 0.50 } else { 0.99 });
    assert!(figure <= bound, "{line}: {which} above the asserted {}ms", ms(bound));
}

#[test]
fn failover_python_confluent() {
    run_client("python-confluent");
}

#[test]
fn failover_java() {
    run_client("java");
}

#[test]
fn failover_go_franz() {
    run_client("go-franz");
}

#[test]
fn failover_go_sarama() {
    run_client("go-sarama");
}

/// KIP-951: a Produce (v10+) that reaches a broker which does not lead the partition gets
/// NOT_LEADER_OR_FOLLOWER with the current leader and epoch (`CurrentLeader`) and the leader's
/// endpoint (`NodeEndpoints`), so a client moves without a Metadata round; v9 has neither field.
#[test]
fn produce_to_a_broker_that_does_not_lead_names_the_leader() {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use support::client::{Client, TestRecord, encode_batch, topic_name};

    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(ClusterSpec::new("kip951", 1, 2));
    let topic = "kip951";
    cluster.create_topic(topic, 1).unwrap_or_else(|e| panic!("{e:#}"));
    let md = cluster.wait_leaders(topic, 1, &[], Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e:#}"));
    let (leader, leader_addr) = md.leader(0).map(|(l, a)| (l, a.to_string())).expect("a leader");
    let epoch = md.partition(0).expect("partition 0").leader_epoch;
    let other = cluster.broker_refs().into_iter().find(|b| b.id() != leader).expect("a second broker");
    let other_addr = cluster.kafka_addr(other).expect("running");
    let batch = encode_batch(&[TestRecord::new("k", "v", 1)], kafka_protocol::records::Compression::None, None);
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
    ]);
    let (v12, v9, fetched) = cluster
        .block_on(async move {
            let mut c = Client::connect(&other_addr).await?;
            let v12 = c.send(&req, 12).await?;
            let v9 = c.send(&req, 9).await?;
            // Fetch answers from a non-leader name the leader too (CurrentLeader, v12+).
            let fetched = c.fetch(topic, 0, 0, 0, 0).await?;
            anyhow::Ok((v12, v9, fetched))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let p = &v12.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 6, "NOT_LEADER_OR_FOLLOWER from broker {other}: {v12:?}");
    assert_eq!((p.current_leader.leader_id.0, p.current_leader.leader_epoch), (leader, epoch), "{v12:?}");
    let endpoints: Vec<(i32, String)> =
        v12.node_endpoints.iter().map(|n| (n.node_id.0, format!("{}:{}", n.host, n.port))).collect();
    assert_eq!(endpoints, vec![(leader, leader_addr)], "{v12:?}");
    let p9 = &v9.responses[0].partition_responses[0];
    assert_eq!((p9.error_code, p9.current_leader.leader_id.0), (6, -1), "v9 has no CurrentLeader: {v9:?}");
    assert_eq!(
        (fetched.error_code, fetched.current_leader.leader_id.0, fetched.current_leader.leader_epoch),
        (6, leader, epoch),
        "{fetched:?}"
    );
}
