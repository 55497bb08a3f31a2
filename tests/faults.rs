//! Object storage faults, in-process: a broker (`run_dev_with_storage`) on an in-memory store
//! wrapped in `FaultInjectingStore`, idempotent producers from the test client writing
//! continuously. Seeded (`SKIFF_TEST_SEED` replays a failure; the seed is printed) and bounded
//! in time.
//!
//! Checked after every scenario: every acknowledged record is present exactly once at its
//! acknowledged offset, offsets are gapless, and the producers never saw a non-retriable error.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff::config::Config;
use skiff_storage::{FaultInjectingStore, ObjectStorage, RetryPolicy, StorageConfig};
use support::client::Client;
use support::load::{self, error_totals, verify};
use tokio_util::sync::CancellationToken;

struct Broker {
    bootstrap: String,
    fault: FaultInjectingStore,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start(seed: u64, retry: RetryPolicy, tune: impl FnOnce(&mut Config)) -> Broker {
        let dir = tempfile::Builder::new().prefix("skiff-faults-").tempdir().expect("temp dir");
        let memory = skiff_storage::open(&StorageConfig::from_url("memory://")).expect("memory store");
        let fault = FaultInjectingStore::new(memory.object_store().clone(), seed);
        let storage = ObjectStorage::new(Arc::new(fault.clone()), "faults").with_retry(retry).with_jitter_seed(seed);
        let mut config = Config {
            data_dir: dir.path().join("data"),
            kafka_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            storage: Some("memory:///faults".into()),
            ..Config::default()
        };
        config.broker.flush_interval = Some(Duration::from_millis(5));
        config.lifecycle.compaction_enabled = false;
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(skiff::node::run_dev_with_storage(config, storage, shutdown.clone(), move |bound| {
            let _ = tx.send(bound.kafka.to_string());
        }));
        let bootstrap = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("broker ready within 30 s")
            .expect("broker started");
        Broker { bootstrap, fault, shutdown, task, _dir: dir }
    }

    async fn stop(self) {
        self.fault.heal();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("broker stops within 30 s")
            .expect("broker task")
            .expect("broker ran without error");
    }
}

fn seeded(name: &str) -> u64 {
    let seed = support::seed();
    eprintln!("{name}: seed {seed} (replay with SKIFF_TEST_SEED={seed})");
    seed
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap).await?;
    c.create_topic_ok(topic, partitions).await
}

/// (a) random 5xx, latency and lost PUT responses while idempotent producers write: nothing
/// acknowledged is lost and nothing is duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_errors_latency_and_lost_responses() {
    let seed = seeded("random_errors_latency_and_lost_responses");
    let outcome = async {
        let broker = Broker::start(seed, RetryPolicy::default(), |_| {}).await;
        let topic = "chaos";
        create_topic(&broker.bootstrap, topic, 3).await?;
        let fault = broker.fault.clone();
        let specs = load::specs(&broker.bootstrap, topic, 3, 6, Duration::from_secs(60));
        let reports = load::produce_while(specs, Duration::from_secs(8), || async {
            fault.set_latency(Duration::from_millis(3));
            fault.set_error_probability(0.25);
            fault.set_lose_put_response_probability(0.25);
        })
        .await?;
        broker.fault.heal();
        let counts = broker.fault.counts();
        let acked: Vec<_> = reports.iter().flat_map(|r| r.acked.iter().cloned()).collect();
        let mut c = Client::connect(&broker.bootstrap).await?;
        let v = verify(&mut c, topic, 3, &acked).await?;
        let (errors, transport) = error_totals(&reports);
        eprintln!("chaos: {v:?}, faults {counts:?}, client errors {errors:?}, transport {transport}");
        anyhow::ensure!(v.acked > 100, "too little progress under faults: {} records acknowledged", v.acked);
        anyhow::ensure!(counts.injected_errors > 0 && counts.lost_responses > 0, "no faults were injected: {counts:?}");
        anyhow::ensure!(
            v.unacked_present == 0,
            "{} records present that no producer saw acknowledged",
            v.unacked_present
        );
        broker.stop().await;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), outcome)
        .await
        .unwrap_or_else(|_| panic!("timed out (seed {seed})"))
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
}

/// (b) the store is down for a few seconds: producers get retriable errors (KAFKA_STORAGE_ERROR
/// once the storage retries give up), nothing acknowledged is lost, and produces succeed again
/// soon after the store returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_then_recovery() {
    let seed = seeded("store_outage_then_recovery");
    let outcome = async {
        let retry = RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_elapsed: Duration::from_millis(800),
            attempt_timeout: Duration::from_secs(2),
        };
        let broker = Broker::start(seed, retry, |_| {}).await;
        let topic = "outage";
        create_topic(&broker.bootstrap, topic, 2).await?;
        let fault = broker.fault.clone();
        let specs = load::specs(&broker.bootstrap, topic, 2, 4, Duration::from_secs(40));
        let healed_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let healed = healed_at.clone();
        let reports = load::produce_while(specs, Duration::from_secs(9), || async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            fault.set_down(true);
            tokio::time::sleep(Duration::from_secs(4)).await;
            fault.set_down(false);
            *healed.lock().expect("lock") = Some(Instant::now());
        })
        .await?;
        let healed_at = healed_at.lock().expect("lock").context("healed")?;
        let (errors, transport) = error_totals(&reports);
        eprintln!("outage: client errors {errors:?}, transport {transport}, faults {:?}", broker.fault.counts());
        anyhow::ensure!(
            errors.get(&56).copied().unwrap_or(0) > 0,
            "no KAFKA_STORAGE_ERROR (56) during a 4 s outage with a 0.8 s storage retry budget: {errors:?}"
        );
        for (i, r) in reports.iter().enumerate() {
            let last = r.last_ack.context("a producer never got an acknowledgement")?;
            anyhow::ensure!(last > healed_at, "producer {i} got no acknowledgement after the store came back");
        }
        // New produces after recovery answer promptly.
        let mut c = Client::connect(&broker.bootstrap).await?;
        let t = Instant::now();
        let batch = support::client::encode_batch(
            &[support::client::TestRecord::new("after", "after-outage", 1_700_000_000_000)],
            kafka_protocol::records::Compression::None,
            None,
        );
        let offset = c.produce_ok(topic, 0, batch).await?;
        anyhow::ensure!(t.elapsed() < Duration::from_secs(5), "produce after recovery took {:?}", t.elapsed());
        let mut acked: Vec<_> = reports.iter().flat_map(|r| r.acked.iter().cloned()).collect();
        acked.push(load::Acked { partition: 0, offset, value: bytes::Bytes::from_static(b"after-outage") });
        let v = verify(&mut c, topic, 2, &acked).await?;
        eprintln!("outage: {v:?}");
        anyhow::ensure!(
            v.unacked_present == 0,
            "{} records present that no producer saw acknowledged",
            v.unacked_present
        );
        broker.stop().await;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), outcome)
        .await
        .unwrap_or_else(|_| panic!("timed out (seed {seed})"))
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
}

/// (c) slow and flaky GETs: reads that miss the tail cache still return exactly what was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_gets_fetch_correctly() {
    let seed = seeded("slow_gets_fetch_correctly");
    let outcome = async {
        let broker = Broker::start(seed, RetryPolicy::default(), |c| {
            // Nothing served from memory: every read is a GET (through a small block cache).
            c.broker.tail_cache_bytes = 1;
            c.broker.block_cache_bytes = 2 * 1024 * 1024;
        })
        .await;
        let topic = "slow-gets";
        create_topic(&broker.bootstrap, topic, 2).await?;
        let specs = load::specs(&broker.bootstrap, topic, 2, 4, Duration::from_secs(30));
        let reports = load::produce_while(specs, Duration::from_secs(3), || async {}).await?;
        let acked: Vec<_> = reports.iter().flat_map(|r| r.acked.iter().cloned()).collect();
        let gets_before = broker.fault.counts().gets;
        broker.fault.set_get_latency(Duration::from_millis(100));
        broker.fault.set_error_probability(0.2);
        let mut c = Client::connect(&broker.bootstrap).await?;
        let t = Instant::now();
        let v = verify(&mut c, topic, 2, &acked).await?;
        let counts = broker.fault.counts();
        eprintln!("slow gets: {v:?} in {:?}, faults {counts:?}", t.elapsed());
        anyhow::ensure!(counts.gets > gets_before, "the fetches made no GET (tail cache still serving?)");
        anyhow::ensure!(v.acked > 50, "too few records produced: {}", v.acked);
        broker.stop().await;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), outcome)
        .await
        .unwrap_or_else(|_| panic!("timed out (seed {seed})"))
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
}
