//! Durability across crashes and graceful stops, checked from outside the process.
//!
//! Invariants (named in docs/style): no acknowledged record lost; offsets gapless and increasing
//! per partition. Unacknowledged records may or may not survive, but never leave a gap and are
//! never garbage. Randomized: the seed is printed; replay with `SKIFF_TEST_SEED=<seed>`.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::SkiffProcess;
use support::client::{Client, EARLIEST, LATEST, TestRecord, encode_batch};

const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 6;
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// What one producer task saw.
#[derive(Default)]
struct Outcome {
    /// Every record put on the wire, acknowledged or not.
    sent: Vec<TestRecord>,
    /// Acknowledged records: (partition, offset, record).
    acked: Vec<(i32, i64, TestRecord)>,
    /// Produce responses with an error: (partition, code, sent after the stop signal).
    errors: Vec<(i32, i16, bool)>,
    /// Requests sent that got no response (connection closed or failed).
    unanswered: usize,
    /// Responses that arrived after the stop signal was sent.
    answered_after_stop: usize,
}

/// Produces batches until the connection fails, an error response arrives, or `stop` is set.
/// Record keys are unique: `c<cycle>-t<task>-b<batch>-r<record>`.
async fn produce_until_failure(
    addr: String,
    topic: String,
    cycle: usize,
    task: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = StdRng::seed_from_u64(seed ^ ((cycle as u64) << 40) ^ ((task as u64) << 32));
    let Ok(mut client) = Client::connect(&addr).await else {
        return out;
    };
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let partition = rng.random_range(0..PARTITIONS);
        let count = rng.random_range(1..=20);
        let records: Vec<TestRecord> = (0..count)
            .map(|j| {
                let len = [0, 1, 100, 1000, 4000][rng.random_range(0..5)];
                let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                let mut r = TestRecord::new(format!("c{cycle}-t{task}-b{n}-r{j}"), value, 1_700_000_000_000 + n);
                r.headers.push(("task".into(), Some(Bytes::from(task.to_string()))));
                r
            })
            .collect();
        let compression =
            [Compression::None, Compression::None, Compression::Gzip, Compression::Lz4][rng.random_range(0..4)];
        let batch = encode_batch(&records, compression, None);
        out.sent.extend(records.iter().cloned());
        let stopping_before = stop.load(Ordering::SeqCst);
        match client.produce(&topic, partition, batch).await {
            Ok(r) => {
                if stopping_before || stop.load(Ordering::SeqCst) {
                    out.answered_after_stop += 1;
                }
                if r.error_code != 0 {
                    out.errors.push((partition, r.error_code, stop.load(Ordering::SeqCst)));
                    break;
                }
                for (i, rec) in records.into_iter().enumerate() {
                    out.acked.push((partition, r.base_offset + i as i64, rec));
                }
            }
            Err(_) => {
                out.unanswered += 1;
                break;
            }
        }
    }
    out
}

/// Everything the test has sent and had acknowledged so far.
#[derive(Default)]
struct Ledger {
    sent: HashMap<Bytes, TestRecord>,
    acked: Vec<(i32, i64, TestRecord)>,
}

impl Ledger {
    fn absorb(&mut self, o: &Outcome) {
        for r in &o.sent {
            let key = r.key.clone().expect("test records have keys");
            self.sent.insert(key, r.clone());
        }
        self.acked.extend(o.acked.iter().cloned());
    }
}

/// Reads every partition and checks the invariants against the ledger.
async fn verify(addr: &str, topic: &str, ledger: &Ledger, ctx: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut client = Client::connect(addr).await?;
    let mut logs: BTreeMap<i32, Vec<TestRecord>> = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (records, hwm) =
            client.fetch_all(topic, p, 0).await.with_context(|| format!("{ctx}: reading partition {p}"))?;
        let (code, earliest, _) = client.list_offset(topic, p, EARLIEST).await?;
        ensure!(
            code == 0 && earliest == 0,
            "{ctx}: partition {p} earliest offset {earliest} (error {code}), expected 0"
        );
        let (code, latest, _) = client.list_offset(topic, p, LATEST).await?;
        ensure!(
            code == 0 && latest == hwm,
            "{ctx}: partition {p} latest offset {latest} (error {code}) != fetch hwm {hwm}"
        );
        // Gapless and increasing from 0 to the high watermark.
        ensure!(
            records.len() as i64 == hwm,
            "{ctx}: partition {p} has {} records below hwm {hwm}: offsets have gaps",
            records.len()
        );
        for (i, r) in records.iter().enumerate() {
            ensure!(r.offset == i as i64, "{ctx}: partition {p}: record #{i} has offset {} (gap or reorder)", r.offset);
            // Present records must be ones we sent, intact.
            let key =
                r.record.key.clone().with_context(|| format!("{ctx}: partition {p} offset {i}: record without key"))?;
            let sent = ledger
                .sent
                .get(&key)
                .with_context(|| format!("{ctx}: partition {p} offset {i}: unknown record key {key:?}"))?;
            ensure!(&r.record == sent, "{ctx}: partition {p} offset {i}: record {key:?} differs from what was sent");
        }
        let mut seen = std::collections::HashSet::new();
        for r in &records {
            ensure!(seen.insert(r.record.key.clone()), "{ctx}: partition {p}: record {:?} appears twice", r.record.key);
        }
        ends.insert(p, hwm);
        logs.insert(p, records.into_iter().map(|r| r.record).collect());
    }
    for (p, offset, rec) in &ledger.acked {
        let log = &logs[p];
        let found = usize::try_from(*offset).ok().and_then(|o| log.get(o));
        ensure!(
            found == Some(rec),
            "{ctx}: ACKNOWLEDGED record {:?} at partition {p} offset {offset} is {} after restart (hwm {})",
            rec.key,
            match found {
                None => "missing".to_string(),
                Some(other) => format!("replaced by {:?}", other.key),
            },
            log.len()
        );
    }
    Ok(ends)
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Three cycles of: produce from several connections, SIGKILL mid-flight, restart, verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill() {
    let seed = support::seed();
    eprintln!("acknowledged_records_survive_sigkill: seed {seed} (replay with SKIFF_TEST_SEED={seed})");
    let mut broker = SkiffProcess::start();
    let result = tokio::time::timeout(TEST_TIMEOUT, kill_cycles(&mut broker, seed)).await;
    match result {
        Err(_) => panic!("seed {seed}: test did not finish within {TEST_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("seed {seed}: {e:#}"),
        Ok(Ok(())) => {}
    }
}

async fn kill_cycles(broker: &mut SkiffProcess, seed: u64) -> anyhow::Result<()> {
    let topic = "durability-kill";
    let mut rng = StdRng::seed_from_u64(seed);
    Client::connect(broker.bootstrap()).await?.create_topic_ok(topic, PARTITIONS).await?;
    let mut ledger = Ledger::default();
    for cycle in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..PRODUCERS)
            .map(|task| {
                tokio::spawn(produce_until_failure(
                    broker.bootstrap().to_string(),
                    topic.into(),
                    cycle,
                    task,
                    seed,
                    stop.clone(),
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(rng.random_range(1500..2500));
        tokio::time::sleep(kill_after).await;
        // Kill first so every producer is mid-request or about to send; `stop` then ends them.
        block(|| broker.kill());
        stop.store(true, Ordering::SeqCst);
        let mut in_flight = 0;
        for t in tasks {
            let o = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .context("producer did not notice the kill")??;
            ensure!(
                o.errors.is_empty(),
                "seed {seed} cycle {cycle}: produce answered with errors (partition, code, after kill): {:?}",
                o.errors
            );
            in_flight += o.unanswered;
            ledger.absorb(&o);
        }
        block(|| broker.restart());
        let ctx = format!("seed {seed} cycle {cycle} (killed after {kill_after:?})");
        let ends = verify(broker.bootstrap(), topic, &ledger, &ctx).await?;
        eprintln!(
            "{ctx}: {} acked / {} sent records so far, {in_flight} requests in flight at the kill, partition ends {ends:?}",
            ledger.acked.len(),
            ledger.sent.len()
        );
        ensure!(!ledger.acked.is_empty(), "{ctx}: nothing was acknowledged; the test proves nothing");
    }
    Ok(())
}

/// SIGTERM while producers are busy: the broker exits cleanly, every acknowledged produce is
/// durable, and the only error answers are retriable ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_inflight() {
    let seed = support::seed();
    eprintln!("graceful_shutdown_answers_inflight: seed {seed} (replay with SKIFF_TEST_SEED={seed})");
    let mut broker = SkiffProcess::start();
    let result = tokio::time::timeout(TEST_TIMEOUT, graceful(&mut broker, seed)).await;
    match result {
        Err(_) => panic!("seed {seed}: test did not finish within {TEST_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("seed {seed}: {e:#}"),
        Ok(Ok(())) => {}
    }
}

/// Error codes a producer retries (Kafka's RetriableException family) that a stopping broker
/// may answer with.
const RETRIABLE: &[i16] = &[
    6,  // NOT_LEADER_OR_FOLLOWER
    7,  // REQUEST_TIMED_OUT
    13, // NETWORK_EXCEPTION
    19, // NOT_ENOUGH_REPLICAS
    20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
    56, // KAFKA_STORAGE_ERROR
];

async fn graceful(broker: &mut SkiffProcess, seed: u64) -> anyhow::Result<()> {
    let topic = "durability-term";
    Client::connect(broker.bootstrap()).await?.create_topic_ok(topic, PARTITIONS).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|task| {
            tokio::spawn(produce_until_failure(
                broker.bootstrap().to_string(),
                topic.into(),
                0,
                task,
                seed,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Producers keep sending while the broker stops; `stop` only labels what came after.
    stop.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let status = block(|| broker.terminate());
    ensure!(status.success(), "seed {seed}: skiff exited with {status} after SIGTERM\n{}", broker.stderr_tail(40));
    let stop_time = started.elapsed();
    let mut ledger = Ledger::default();
    let (mut unanswered, mut answered_after, mut retriable) = (0, 0, 0);
    for t in tasks {
        let o =
            tokio::time::timeout(Duration::from_secs(30), t).await.context("producer did not notice the stop")??;
        for (p, code, _) in &o.errors {
            ensure!(
                RETRIABLE.contains(code),
                "seed {seed}: partition {p}: non-retriable error {code} during graceful shutdown"
            );
            retriable += 1;
        }
        unanswered += o.unanswered;
        answered_after += o.answered_after_stop;
        ledger.absorb(&o);
    }
    block(|| broker.restart());
    let ctx = format!("seed {seed} (graceful stop)");
    let ends = verify(broker.bootstrap(), topic, &ledger, &ctx).await?;
    eprintln!(
        "{ctx}: stopped in {stop_time:?}; {} acked / {} sent records; {answered_after} answers after SIGTERM, \
         {retriable} retriable errors, {unanswered} requests unanswered (connection closed); ends {ends:?}",
        ledger.acked.len(),
        ledger.sent.len()
    );
    ensure!(!ledger.acked.is_empty(), "{ctx}: nothing was acknowledged; the test proves nothing");
    Ok(())
}
