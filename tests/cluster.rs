//! Multi-process cluster failover: 3 `skiff controller` + 3 `skiff broker` processes on
//! loopback with MinIO (`support::cluster`), idempotent producers and consumers that follow
//! partition leadership, faults by signal, and the invariant checker (`support::invariants`)
//! reading everything back at the end: no acknowledged record lost, no duplicates, offsets
//! gapless, one writer per leader epoch, and every record a consumer read still in the log.
//!
//! - `broker_crash_failover`: SIGKILL the broker leading some partitions, measure kill → first
//!   acknowledged produce on each moved partition, restart it; repeated. Prints
//!   `failover kill->first-produce: n=.. p50=..ms p99=..ms max=..ms` and asserts p99 ≤ 5 s.
//! - `rolling_restart_under_load`: SIGTERM (controlled shutdown) and restart every broker in
//!   turn; clients see only retriable errors.
//! - `controller_leader_sigkill_under_load`: SIGKILL the Raft leader; a new one is elected,
//!   produce resumes, the old one restarts and catches up.
//! - `wiped_controller_rejoins_from_a_snapshot`: a voter whose data directory was deleted
//!   rejoins from the leader's snapshot and then carries commits.
//! - `frozen_broker_is_fenced_and_never_writes_in_a_stale_epoch`: SIGSTOP a broker for longer
//!   than the session timeout; its partitions move; after SIGCONT it must not append in its
//!   old epoch (the checker proves it) and it serves again.
//! - `resumed_broker_with_a_stale_image_answers_retriably`: a frozen broker resumed while no
//!   controller answers still "leads" in its old image; fetch past its old end and the
//!   producer's next sequence get NOT_LEADER_OR_FOLLOWER, never a code the client cannot retry.
//! - `seeded_chaos`: a random schedule of kill / stop / cont / terminate / restart of brokers
//!   and controllers (never more than a minority of controllers down, at least one broker up).
//! - `invariant_checker_catches_violations`: the checker on hand-made logs (no processes).
//!
//! Profiles (`SKIFF_CLUSTER_PROFILE`):
//! - `short` (default, part of `cargo test --workspace` / `scripts/test.sh`): 20 failover
//!   kills, 2 rolling restarts, 3 controller kills, 2 freezes, 30 chaos steps; 2-3 minutes.
//! - `long`: 100 failover kills, 5 rolling restarts, 10 controller kills, 5 freezes, 150
//!   chaos steps (10 minutes at most for the chaos):
//!   `SKIFF_CLUSTER_PROFILE=long cargo test --test cluster -- --nocapture`
//!
//! Randomized choices (which broker to kill, the chaos schedule) come from one seed per test,
//! printed at the start and again on failure; `SKIFF_TEST_SEED=<seed>` replays the same
//! schedule. The tests of this file run one at a time (each starts six processes). Every loop
//! is bounded in count and time; waits poll for a condition with a deadline.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use support::client::{
    Client, FetchedBatch, FetchedRecord, Idempotence, PartitionLeader, TestRecord, TopicMetadata, encode_batch,
};
use support::cluster::{Cluster, ClusterSpec, NodeRef, NodeState, Rng, Workload, percentile};
use support::invariants::{self, Expectations, PartitionLog};
use support::load::{Acked, Consumed, LeaderObservations};

const PARTITIONS: i32 = 6;
/// A batch not acknowledged within this fails its producer (and the test).
const GIVE_UP: Duration = Duration::from_secs(60);
/// The CI bound on the failover p99 (the target is 2 s).
const FAILOVER_P99_LIMIT: Duration = Duration::from_secs(5);

/// How much each test does.
#[derive(Debug, Clone, Copy)]
struct Profile {
    name: &'static str,
    failover_kills: usize,
    failover_budget: Duration,
    rolling_rounds: usize,
    controller_kills: usize,
    freezes: usize,
    /// The wiped voter's snapshot must reach this size first (openraft sends snapshots in
    /// 3 MiB chunks: above that, more than one).
    wipe_snapshot_bytes: u64,
    chaos_steps: usize,
    chaos_budget: Duration,
}

impl Profile {
    fn from_env() -> Profile {
        match std::env::var("SKIFF_CLUSTER_PROFILE").as_deref() {
            Ok("long") => Profile {
                name: "long",
                failover_kills: 100,
                failover_budget: Duration::from_secs(1200),
                rolling_rounds: 5,
                controller_kills: 10,
                freezes: 5,
                wipe_snapshot_bytes: 4 << 20,
                chaos_steps: 150,
                chaos_budget: Duration::from_secs(600),
            },
            Ok("short") | Err(_) => Profile {
                name: "short",
                failover_kills: 20,
                failover_budget: Duration::from_secs(150),
                rolling_rounds: 2,
                controller_kills: 3,
                freezes: 2,
                wipe_snapshot_bytes: 0,
                chaos_steps: 30,
                chaos_budget: Duration::from_secs(60),
            },
            Ok(other) => panic!("SKIFF_CLUSTER_PROFILE must be short or long, not {other:?}"),
        }
    }
}

/// One cluster at a time in this binary (six processes and MinIO on two cores).
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test's seed: printed at the start, and again (with the replay command) on failure.
struct Seed {
    test: &'static str,
    value: u64,
    profile: &'static str,
}

impl Seed {
    fn new(test: &'static str, profile: &Profile) -> Seed {
        let value = support::seed();
        eprintln!("{test}: seed {value}, profile {} (replay with SKIFF_TEST_SEED={value})", profile.name);
        Seed { test, value, profile: profile.name }
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} FAILED with seed {}; replay: SKIFF_TEST_SEED={} SKIFF_CLUSTER_PROFILE={} cargo test --test cluster {} -- --nocapture",
                self.test, self.value, self.value, self.profile, self.test
            );
        }
    }
}

fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A 3 + 3 cluster with a `PARTITIONS`-partition topic and the workload running on it, every
/// partition acknowledged at least once.
fn cluster_with_load(name: &str, spec: impl FnOnce(&mut ClusterSpec)) -> (Cluster, Workload) {
    let mut s = ClusterSpec::new(name, 3, 3);
    spec(&mut s);
    let mut cluster = Cluster::start(s);
    ok(cluster.create_topic(name, PARTITIONS));
    let load = Workload::start(&cluster, name, PARTITIONS, 1, GIVE_UP);
    ok(load.wait_all_acked(0, Duration::from_secs(30)));
    cluster.event("load running on every partition".into());
    (cluster, load)
}

/// Running brokers that lead at least one partition in `md`.
fn leading_brokers(cluster: &Cluster, md: &TopicMetadata) -> Vec<i32> {
    cluster.brokers_in(NodeState::Running).into_iter().map(NodeRef::id).filter(|b| !md.led_by(*b).is_empty()).collect()
}

/// Waits (bounded) until `broker` leads a partition again; false if it does not.
fn wait_leads_again(cluster: &Cluster, topic: &str, broker: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cluster.metadata(topic).is_ok_and(|md| !md.led_by(broker).is_empty()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The distribution line the issue quotes.
fn distribution(label: &str, samples: &[Duration]) -> (String, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p99 = percentile(&sorted, 0.99);
    let line = format!(
        "{label}: n={} p50={}ms p99={}ms max={}ms",
        sorted.len(),
        ms(percentile(&sorted, 0.50)),
        ms(p99),
        ms(sorted.last().copied().unwrap_or_default())
    );
    (line, p99)
}

/// (a) SIGKILL the broker leading some partitions under continuous produce and consume;
/// measure kill → first acknowledged produce (from another broker) on each moved partition.
#[test]
fn broker_crash_failover() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let seed = Seed::new("broker_crash_failover", &profile);
    let mut rng = Rng::new(seed.value);
    let topic = "failover";
    let (mut cluster, load) = cluster_with_load(topic, |_| {});
    let budget_end = Instant::now() + profile.failover_budget;
    let mut samples = Vec::new();
    let mut per_kill = Vec::new();
    let mut rebalances_on_join = true;
    for trial in 0..profile.failover_kills {
        assert!(
            Instant::now() < budget_end,
            "only {trial} of {} failover trials fit in {:?}",
            profile.failover_kills,
            profile.failover_budget
        );
        let md = ok(cluster.wait_leaders(topic, PARTITIONS, &[], Duration::from_secs(30)));
        let candidates = leading_brokers(&cluster, &md);
        let victim = *rng.pick(&candidates);
        let moved = md.led_by(victim);
        let from = load.routing.ack_count();
        let killed = Instant::now();
        cluster.kill(NodeRef::Broker(victim));
        let firsts = load
            .first_acks(from, &moved, &[victim], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("trial {trial}: after SIGKILL of broker {victim} (leading {moved:?}): {e:#}"));
        let times: Vec<Duration> = firsts.values().map(|t| t.saturating_duration_since(killed)).collect();
        cluster.event(format!(
            "trial {trial}: SIGKILL broker {victim} leading {moved:?}: first produce after {:?} ms",
            times.iter().map(|d| ms(*d)).collect::<Vec<_>>()
        ));
        per_kill.push(times.iter().max().copied().unwrap_or_default());
        samples.extend(times);
        cluster.start_node(NodeRef::Broker(victim));
        // A broker that joins receives partitions (placement); let that settle before the
        // next kill so that trials do not overlap.
        if rebalances_on_join && !wait_leads_again(&cluster, topic, victim, Duration::from_secs(5)) {
            rebalances_on_join = false;
            cluster.event(format!("NOTE: restarted broker {victim} got no partition within 5 s; not waiting again"));
        }
        ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
    }
    let (line, p99) = distribution("failover kill->first-produce", &samples);
    let (kill_line, _) = distribution("failover kill->every-moved-partition-produced", &per_kill);
    eprintln!("{line}\n{kill_line} (profile {}, {} kills)", profile.name, per_kill.len());
    let outcome = ok(load.finish(&cluster));
    eprintln!("broker_crash_failover: {}", outcome.describe(&cluster));
    assert!(p99 <= FAILOVER_P99_LIMIT, "{line}: p99 above {FAILOVER_P99_LIMIT:?} (target 2 s)");
    assert!(
        rebalances_on_join,
        "a restarted broker was given no partitions (placement: a joining broker receives partitions)"
    );
}

/// (b) Rolling restart with SIGTERM of every broker under load: controlled shutdown hands the
/// partitions off; clients see only retriable errors and nothing is lost.
#[test]
fn rolling_restart_under_load() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let _seed = Seed::new("rolling_restart_under_load", &profile);
    let topic = "rolling";
    let (mut cluster, load) = cluster_with_load(topic, |_| {});
    let from = load.routing.ack_count();
    for round in 0..profile.rolling_rounds {
        for broker in cluster.broker_refs() {
            let status = cluster.terminate(broker);
            assert!(
                status.success(),
                "round {round}: {broker} exited with {status} after SIGTERM\n{}",
                cluster.log_tail(broker, 60)
            );
            cluster.start_node(broker);
            // A broker that joins receives partitions.
            assert!(
                wait_leads_again(&cluster, topic, broker.id(), Duration::from_secs(10)),
                "round {round}: restarted {broker} leads no partition after 10 s"
            );
            ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
            // Some load on the new placement before the next broker goes.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The longest time any partition went without an acknowledgement during the restarts.
    let acks = load.routing.acks_since(from);
    let mut gaps = Vec::new();
    for p in 0..PARTITIONS {
        let times: Vec<Instant> = acks.iter().filter(|a| a.partition == p).map(|a| a.at).collect();
        gaps.push(times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default());
    }
    let (line, _) = distribution("rolling restart: longest produce gap per partition", &gaps);
    let outcome = ok(load.finish(&cluster));
    eprintln!("{line}\nrolling_restart_under_load: {}", outcome.describe(&cluster));
}

/// (c) SIGKILL of the controller leader under load: a new leader is elected, brokers commit
/// again, the old leader restarts and catches up; nothing is lost.
#[test]
fn controller_leader_sigkill_under_load() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let _seed = Seed::new("controller_leader_sigkill_under_load", &profile);
    let topic = "raftkill";
    let (mut cluster, load) = cluster_with_load(topic, |_| {});
    let mut elections = Vec::new();
    let mut resumes = Vec::new();
    for k in 0..profile.controller_kills {
        let leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
        let killed = Instant::now();
        cluster.kill(NodeRef::Controller(leader));
        let new_leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), Some(leader)));
        let elected = killed.elapsed();
        // Acknowledgements after the election were committed through the new leader.
        ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
        let resumed = killed.elapsed();
        cluster.event(format!(
            "kill {k}: controller {leader} -> {new_leader} elected after {} ms, every partition produced after {} ms",
            ms(elected),
            ms(resumed)
        ));
        elections.push(elected);
        resumes.push(resumed);
        cluster.start_node(NodeRef::Controller(leader));
        // The restarted voter catches up with the leader's commit index.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let target = cluster
                .wait_controller_leader(Duration::from_secs(15), None)
                .ok()
                .and_then(|l| cluster.raft_status(NodeRef::Controller(l)).map(|s| s.commit_index));
            let applied = cluster.raft_status(NodeRef::Controller(leader)).map(|s| s.applied_index);
            if let (Some(t), Some(a)) = (target, applied)
                && a >= t
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restarted controller {leader} did not catch up within 30 s (applied {applied:?}, leader commit {target:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (election, _) = distribution("controller failover kill->new-leader", &elections);
    let (resume, _) = distribution("controller failover kill->every-partition-produced", &resumes);
    let outcome = ok(load.finish(&cluster));
    eprintln!("{election}\n{resume}\ncontroller_leader_sigkill_under_load: {}", outcome.describe(&cluster));
}

/// Idle topics of 1000 partitions each that give the metadata state (and so each snapshot) a
/// realistic size.
const BULK_TOPICS: usize = 3;

/// A voter that lost its disk rejoins: SIGKILL controller 1 (the lowest id, which initializes
/// a fresh quorum), delete its data directory, start it again: it must catch up from the
/// leader's snapshot (snapshots every 50 entries here, 1,000 log entries kept after one, and
/// over 1,100 entries applied first, so the log it would need is purged) without
/// re-initializing. Then the leader
/// is killed, so the rejoined voter is needed for every commit; nothing is lost.
#[test]
fn wiped_controller_rejoins_from_a_snapshot() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let _seed = Seed::new("wiped_controller_rejoins_from_a_snapshot", &profile);
    let topic = "wiped";
    let (mut cluster, load) = cluster_with_load(topic, |s| {
        s.controller_args =
            ["--snapshot-every-entries", "50", "--log-kept-after-snapshot", "1000"].map(String::from).to_vec()
    });
    // Metadata of a realistic size (a snapshot of a few MB), and enough commits for several
    // snapshots (and purged logs) on every voter.
    for i in 0..BULK_TOPICS {
        ok(cluster.create_topic(&format!("wiped-bulk-{i}"), 1000));
    }
    ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .controller_leader()
        .and_then(|l| cluster.raft_status(NodeRef::Controller(l)))
        .is_none_or(|s| s.applied_index < 1_100)
    {
        assert!(Instant::now() < deadline, "fewer than 1,100 Raft entries applied within 60 s under load");
        std::thread::sleep(Duration::from_millis(100));
    }
    let wiped = NodeRef::Controller(1);
    let snapshot = cluster.data_dir(wiped).join("controller/snapshots/current.json");
    let snapshot_bytes = || std::fs::metadata(&snapshot).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while snapshot_bytes() < profile.wipe_snapshot_bytes {
        assert!(Instant::now() < deadline, "snapshot still {} bytes after 300 s of load", snapshot_bytes());
        ok(load.ensure_running());
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.event(format!("controller 1's latest snapshot: {} bytes", snapshot_bytes()));
    cluster.kill(wiped);
    cluster.wipe(wiped);
    let leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), Some(1)));
    cluster.start_node(wiped);
    let caught_up = Instant::now();
    let deadline = caught_up + Duration::from_secs(30);
    loop {
        let target = cluster.raft_status(NodeRef::Controller(leader)).map(|s| s.commit_index);
        let status = cluster.raft_status(wiped);
        if let (Some(t), Some(s)) = (target, status)
            && s.applied_index >= t
        {
            cluster.event(format!("wiped controller 1 caught up after {} ms: {s:?}", ms(caught_up.elapsed())));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wiped controller 1 did not catch up within 30 s ({status:?}, leader commit {target:?})\n{}",
            cluster.log_tail(wiped, 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Now commits need the rejoined voter.
    cluster.kill(NodeRef::Controller(leader));
    ok(cluster.wait_controller_leader(Duration::from_secs(15), Some(leader)));
    ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
    cluster.start_node(NodeRef::Controller(leader));
    ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
    let outcome = ok(load.finish(&cluster));
    eprintln!("wiped_controller_rejoins_from_a_snapshot: {}", outcome.describe(&cluster));
}

/// (c) SIGSTOP a broker that leads partitions for longer than the session timeout: it is
/// fenced and its partitions move (epoch bumped); after SIGCONT it must not append anything
/// in its old epoch, and it serves again.
#[test]
fn frozen_broker_is_fenced_and_never_writes_in_a_stale_epoch() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let seed = Seed::new("frozen_broker_is_fenced_and_never_writes_in_a_stale_epoch", &profile);
    let mut rng = Rng::new(seed.value);
    let topic = "frozen";
    let session = Duration::from_millis(1000);
    let (mut cluster, load) = cluster_with_load(topic, |s| s.session_timeout = Some(session));
    for round in 0..profile.freezes {
        let md = ok(cluster.wait_leaders(topic, PARTITIONS, &[], Duration::from_secs(30)));
        let victim = *rng.pick(&leading_brokers(&cluster, &md));
        let moved = md.led_by(victim);
        let from = load.routing.ack_count();
        let frozen = Instant::now();
        cluster.stop(NodeRef::Broker(victim));
        // Fenced: the partitions get other leaders in a newer epoch.
        let after = ok(cluster.wait_leaders(topic, PARTITIONS, &[victim], session * 10));
        let fenced = frozen.elapsed();
        for p in &moved {
            let (before, now) = (md.partition(*p).map(|x| x.leader_epoch), after.partition(*p).map(|x| x.leader_epoch));
            assert!(
                now > before,
                "{topic}/{p} moved off frozen broker {victim} without a new leader epoch ({before:?} -> {now:?})"
            );
        }
        ok(load.first_acks(from, &moved, &[victim], Duration::from_secs(30)));
        cluster.event(format!("round {round}: broker {victim} (leading {moved:?}) fenced after {} ms", ms(fenced)));
        // Keep it frozen for three session timeouts in all, so its buffered produces are stale.
        std::thread::sleep((session * 3).saturating_sub(frozen.elapsed()));
        cluster.cont(NodeRef::Broker(victim));
        // It must come back into service (a broker that joins receives partitions).
        assert!(
            wait_leads_again(&cluster, topic, victim, Duration::from_secs(20)),
            "broker {victim} leads no partition 20 s after SIGCONT\n{}",
            cluster.log_tail(NodeRef::Broker(victim), 60)
        );
        ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(30)));
    }
    let outcome = ok(load.finish(&cluster));
    eprintln!("frozen_broker_is_fenced_and_never_writes_in_a_stale_epoch: {}", outcome.describe(&cluster));
}

/// A broker resumed after a freeze serves from the metadata image it had, in which it still
/// leads partitions that moved on in a newer epoch, until it catches up. Answers a client
/// cannot retry that rest on that image must not come from it: here every controller is
/// frozen too, so it cannot catch up, and a fetch past its old high watermark and the
/// producer's next sequence (which the new leader took) get NOT_LEADER_OR_FOLLOWER, not
/// OFFSET_OUT_OF_RANGE (the consumer would reset its position) or OUT_OF_ORDER_SEQUENCE_NUMBER
/// (the producer would fail the batch). The seeded chaos test lost consumers this way. Once the
/// quorum is back, a fetch past the real end still gets OFFSET_OUT_OF_RANGE.
#[test]
fn resumed_broker_with_a_stale_image_answers_retriably() {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const OFFSET_OUT_OF_RANGE: i16 = 1;
    let _serial = one_at_a_time();
    let topic = "stale";
    let session = Duration::from_millis(1000);
    let mut spec = ClusterSpec::new(topic, 3, 2);
    spec.session_timeout = Some(session);
    let mut cluster = Cluster::start(spec);
    ok(cluster.create_topic(topic, 1));
    let md = ok(cluster.wait_leaders(topic, 1, &[], Duration::from_secs(30)));
    let (victim, victim_addr) = md.leader(0).map(|(b, a)| (b, a.to_string())).expect("a leader");
    let batch = |(producer_id, producer_epoch): (i64, i16), base_sequence: i32, value: &'static str| {
        let record = TestRecord::new("k", Bytes::from_static(value.as_bytes()), 1_700_000_000_000);
        encode_batch(&[record], Compression::None, Some(Idempotence { producer_id, producer_epoch, base_sequence }))
    };
    let producer = ok(cluster.block_on(async {
        let mut c = Client::connect(&victim_addr).await?;
        let producer = c.init_producer_id().await?;
        let offset = c.produce_ok(topic, 0, batch(producer, 0, "a")).await?;
        anyhow::ensure!(offset == 0, "first record at offset {offset}");
        anyhow::Ok(producer)
    }));
    cluster.stop(NodeRef::Broker(victim));
    let after = ok(cluster.wait_leaders(topic, 1, &[victim], session * 10));
    let successor = after.leader(0).map(|(b, a)| (b, a.to_string())).expect("a new leader");
    // The new leader takes sequence 1 at offset 1 (retried while it is still taking over).
    ok(cluster.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = Client::connect(&successor.1).await?;
            let r = c.produce(topic, 0, batch(producer, 1, "b")).await?;
            if r.error_code == 0 {
                anyhow::ensure!(r.base_offset == 1, "second record at offset {}", r.base_offset);
                return anyhow::Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "broker {} refused: {}", successor.0, r.error_code);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    cluster.event(format!("{topic}/0 moved from broker {victim} to {} and has 2 records", successor.0));
    for c in cluster.controller_refs() {
        cluster.stop(c);
    }
    cluster.cont(NodeRef::Broker(victim));
    let (fetch, produce) = ok(cluster.block_on(async {
        let mut c = Client::connect(&victim_addr).await?;
        // Its image ends at offset 1 and has the producer at sequence 0.
        let fetch = c.fetch(topic, 0, 2, 0, 0).await?.error_code;
        let produce = c.produce(topic, 0, batch(producer, 2, "c")).await?.error_code;
        anyhow::Ok((fetch, produce))
    }));
    assert_eq!(
        (fetch, produce),
        (NOT_LEADER_OR_FOLLOWER, NOT_LEADER_OR_FOLLOWER),
        "resumed broker {victim} (stale image, no controller reachable): fetch at 2 and produce of sequence 2 must be retriable\n{}",
        cluster.log_tail(NodeRef::Broker(victim), 40)
    );
    cluster.heal();
    ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    let md = ok(cluster.wait_leaders(topic, 1, &[], Duration::from_secs(30)));
    let (leader, addr) = md.leader(0).map(|(b, a)| (b, a.to_string())).expect("a leader");
    let (records, past_end) = ok(cluster.block_on(async {
        let mut c = Client::connect(&addr).await?;
        let (records, _) = c.fetch_all(topic, 0, 0).await?;
        let past_end = c.fetch(topic, 0, 3, 0, 0).await?.error_code;
        anyhow::Ok((records, past_end))
    }));
    let values: Vec<_> = records.iter().map(|r| (r.offset, r.record.value.clone())).collect();
    assert_eq!(
        values,
        vec![(0, Some(Bytes::from_static(b"a"))), (1, Some(Bytes::from_static(b"b")))],
        "{topic}/0 on broker {leader}"
    );
    assert_eq!(past_end, OFFSET_OUT_OF_RANGE, "fetch at 3 of a 2-record log from leader {leader}");
}

/// Which controller a chaos step acts on (the leader is resolved when the step runs).
#[derive(Debug, Clone, Copy)]
enum Which {
    Leader,
    /// The n-th (mod count) controller that is not the leader, by id.
    Follower(usize),
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillBroker(i32),
    StopBroker(i32),
    ContBroker(i32),
    TerminateBroker(i32),
    StartBroker(i32),
    RestartBroker(i32),
    KillController(Which),
    StopController(Which),
    RestartController(Which),
    /// Continue or start the controller that is down.
    RecoverController,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    /// Pause before the step.
    after: Duration,
    fault: Fault,
}

/// The chaos schedule: a function of the seed only. The model keeps at most one of the three
/// controllers down or stopped and at least one broker running.
fn chaos_schedule(seed: u64, steps: usize, brokers: &[i32]) -> Vec<Step> {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Up,
        Down,
        Stopped,
    }
    let mut rng = Rng::new(seed ^ 0xC4A0_5C4E_D01E);
    let mut state: Vec<S> = vec![S::Up; brokers.len()];
    let mut controller_down = false;
    let mut out = Vec::new();
    for _ in 0..steps {
        let up = state.iter().filter(|s| **s == S::Up).count();
        let mut options = Vec::new();
        for (i, b) in brokers.iter().enumerate() {
            match state[i] {
                S::Up if up > 1 => options.extend([
                    Fault::KillBroker(*b),
                    Fault::StopBroker(*b),
                    Fault::TerminateBroker(*b),
                    Fault::RestartBroker(*b),
                ]),
                S::Up => {}
                S::Down => options.push(Fault::StartBroker(*b)),
                S::Stopped => options.extend([Fault::ContBroker(*b), Fault::KillBroker(*b)]),
            }
        }
        if controller_down {
            options.push(Fault::RecoverController);
        } else {
            let which = if rng.below(2) == 0 { Which::Leader } else { Which::Follower(rng.below(2)) };
            options.extend([
                Fault::KillController(which),
                Fault::StopController(which),
                Fault::RestartController(which),
            ]);
        }
        let fault = *rng.pick(&options);
        let index = |b: i32| brokers.iter().position(|x| *x == b).expect("known broker");
        match fault {
            Fault::KillBroker(b) | Fault::TerminateBroker(b) => state[index(b)] = S::Down,
            Fault::StopBroker(b) => state[index(b)] = S::Stopped,
            Fault::ContBroker(b) | Fault::StartBroker(b) | Fault::RestartBroker(b) => state[index(b)] = S::Up,
            Fault::KillController(_) | Fault::StopController(_) => controller_down = true,
            Fault::RecoverController => controller_down = false,
            Fault::RestartController(_) => {}
        }
        out.push(Step { after: rng.millis(200, 2000), fault });
    }
    out
}

fn resolve(cluster: &Cluster, which: Which) -> NodeRef {
    let leader = ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    match which {
        Which::Leader => NodeRef::Controller(leader),
        Which::Follower(n) => {
            let followers: Vec<NodeRef> = cluster.controller_refs().into_iter().filter(|c| c.id() != leader).collect();
            followers[n % followers.len()]
        }
    }
}

/// (d) A seeded random schedule of faults on brokers and controllers under load, then heal and
/// check: every partition is produced to again and the invariants hold.
#[test]
fn seeded_chaos() {
    let profile = Profile::from_env();
    let _serial = one_at_a_time();
    let seed = Seed::new("seeded_chaos", &profile);
    let topic = "chaos";
    let (mut cluster, load) = cluster_with_load(topic, |_| {});
    let brokers: Vec<i32> = cluster.broker_refs().into_iter().map(NodeRef::id).collect();
    let schedule = chaos_schedule(seed.value, profile.chaos_steps, &brokers);
    eprintln!("chaos schedule (seed {}): {schedule:?}", seed.value);
    let budget_end = Instant::now() + profile.chaos_budget;
    let mut stopped_early = None;
    for (i, step) in schedule.iter().enumerate() {
        if Instant::now() + step.after > budget_end {
            cluster.event(format!("chaos: time budget {:?} reached after {i} steps", profile.chaos_budget));
            break;
        }
        std::thread::sleep(step.after);
        if let Err(e) = load.ensure_running() {
            cluster.event(format!("chaos: {e:#}"));
            stopped_early = Some(e);
            break;
        }
        cluster.event(format!("chaos step {i}: {:?}", step.fault));
        match step.fault {
            Fault::KillBroker(b) => cluster.kill(NodeRef::Broker(b)),
            Fault::StopBroker(b) => cluster.stop(NodeRef::Broker(b)),
            Fault::ContBroker(b) => cluster.cont(NodeRef::Broker(b)),
            Fault::TerminateBroker(b) => {
                cluster.terminate(NodeRef::Broker(b));
            }
            Fault::StartBroker(b) => cluster.start_node(NodeRef::Broker(b)),
            Fault::RestartBroker(b) => cluster.restart(NodeRef::Broker(b)),
            Fault::KillController(w) => {
                let c = resolve(&cluster, w);
                cluster.kill(c);
            }
            Fault::StopController(w) => {
                let c = resolve(&cluster, w);
                cluster.stop(c);
            }
            Fault::RestartController(w) => {
                let c = resolve(&cluster, w);
                cluster.restart(c);
            }
            Fault::RecoverController => {
                for c in cluster.controller_refs() {
                    match cluster.state(c) {
                        NodeState::Stopped => cluster.cont(c),
                        NodeState::Down => cluster.start_node(c),
                        NodeState::Running => {}
                    }
                }
            }
        }
    }
    cluster.event("chaos: healing".into());
    cluster.heal();
    ok(cluster.wait_controller_leader(Duration::from_secs(15), None));
    ok(cluster.wait_leaders(topic, PARTITIONS, &[], Duration::from_secs(30)));
    if let Some(e) = stopped_early {
        // The dead clients' errors are the failure; the read-back check says whether the log
        // is sound as well.
        let checked = match load.finish(&cluster) {
            Ok(outcome) => outcome.describe(&cluster),
            Err(f) => format!("{f:#}"),
        };
        panic!("{e:#}\nafter healing: {checked}");
    }
    ok(load.wait_all_acked(load.routing.ack_count(), Duration::from_secs(60)));
    let outcome = ok(load.finish(&cluster));
    eprintln!("seeded_chaos: {}", outcome.describe(&cluster));
}

/// The checker is not vacuous: each invariant catches its violation on hand-made logs.
#[test]
fn invariant_checker_catches_violations() {
    fn batch(base: i64, epoch: i32, producer: i64, sequence: i32, values: &[&str]) -> FetchedBatch {
        FetchedBatch {
            base_offset: base,
            last_offset: base + values.len() as i64 - 1,
            partition_leader_epoch: epoch,
            producer_id: producer,
            producer_epoch: 0,
            base_sequence: sequence,
            records: values
                .iter()
                .enumerate()
                .map(|(i, v)| FetchedRecord {
                    offset: base + i as i64,
                    record: TestRecord::new("k", Bytes::from(v.to_string()), 0),
                })
                .collect(),
        }
    }
    fn log(batches: Vec<FetchedBatch>) -> PartitionLog {
        let high_watermark = batches.last().map(|b| b.last_offset + 1).unwrap_or(0);
        PartitionLog { partition: 0, batches, high_watermark }
    }
    fn acked(offset: i64, v: &str) -> Acked {
        Acked { partition: 0, offset, value: Bytes::from(v.to_string()) }
    }
    let md = TopicMetadata {
        partitions: vec![PartitionLeader { partition: 0, error_code: 0, leader_id: 4, leader_epoch: 2 }],
        ..TopicMetadata::default()
    };
    let no_leaders = LeaderObservations::new();
    let check = |logs: &[PartitionLog], acked: &[Acked], consumed: &[Consumed], leaders: &LeaderObservations| {
        invariants::check(logs, &Expectations { topic: "t", acked, consumed, leaders, final_metadata: Some(&md) })
            .err()
            .map(|v| v.names())
            .unwrap_or_default()
    };
    let good = log(vec![batch(0, 1, 7, 0, &["a", "b"]), batch(2, 2, 7, 2, &["c"])]);
    assert_eq!(
        check(std::slice::from_ref(&good), &[acked(0, "a"), acked(2, "c")], &[], &no_leaders),
        Vec::<&str>::new()
    );

    let gap = log(vec![batch(0, 1, 7, 0, &["a", "b"]), batch(3, 1, 7, 2, &["c"])]);
    assert!(check(&[gap], &[], &[], &no_leaders).contains(&"offsets_gapless"));

    let lost = check(std::slice::from_ref(&good), &[acked(3, "d")], &[], &no_leaders);
    assert!(lost.contains(&"no_acknowledged_record_lost"), "{lost:?}");
    let moved = check(std::slice::from_ref(&good), &[acked(1, "a")], &[], &no_leaders);
    assert!(moved.contains(&"no_acknowledged_record_lost"), "{moved:?}");

    let dup = log(vec![batch(0, 1, 7, 0, &["a", "b"]), batch(2, 1, 7, 0, &["a", "b"])]);
    let found = check(&[dup], &[], &[], &no_leaders);
    assert!(found.contains(&"no_duplicates") && found.contains(&"producer_sequences_contiguous"), "{found:?}");

    let skipped = log(vec![batch(0, 1, 7, 0, &["a", "b"]), batch(2, 1, 7, 5, &["c"])]);
    assert!(check(&[skipped], &[], &[], &no_leaders).contains(&"producer_sequences_contiguous"));

    let stale = log(vec![batch(0, 2, 7, 0, &["a", "b"]), batch(2, 1, 8, 0, &["c"])]);
    assert!(check(&[stale], &[], &[], &no_leaders).contains(&"one_writer_per_leader_epoch"));
    let future = log(vec![batch(0, 3, 7, 0, &["a"])]);
    assert!(check(&[future], &[], &[], &no_leaders).contains(&"one_writer_per_leader_epoch"));
    let mut two_leaders = LeaderObservations::new();
    two_leaders.insert(("t".into(), 0, 2), [4, 5].into_iter().collect());
    assert!(check(std::slice::from_ref(&good), &[], &[], &two_leaders).contains(&"one_writer_per_leader_epoch"));

    let phantom = Consumed { partition: 0, offset: 5, value: Bytes::from_static(b"z") };
    assert!(check(&[good], &[], &[phantom], &no_leaders).contains(&"consumers_saw_the_log"));
}
