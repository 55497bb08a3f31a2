//! Fetch size limits (KIP-74), as Kafka's `ReplicaManager.readFromLog` applies them: a response
//! holds at most `max_bytes` and each partition at most `partition_max_bytes`, in whole batches;
//! only the first partition that returns data may exceed them, by its first batch alone.
//!
//! Regression (issue #10, bug 2): Skiff granted every partition "at least one batch", so a
//! response with two 900 KiB batches of different partitions came to 1.8 MB against a
//! `fetch.max.bytes` of 1,000,000, and librdkafka (whose `receive.message.max.bytes` bounds the
//! frame) rejected every answer and reconnected forever. Checked with the raw client against the
//! tail cache and, after a restart, against object storage; and with librdkafka itself.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, FETCH_VERSION, TestRecord, decode_batches, encode_batch, topic_name};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 3;
const BIG: usize = 900 * 1024;

/// The batches produced to every partition: big ones (one 900 KiB record, larger than several
/// of the limits below) between runs of small ones (10 records of 100 bytes).
const LAYOUT: &[Kind] =
    &[Kind::Big, Kind::Small, Kind::Small, Kind::Big, Kind::Small, Kind::Big, Kind::Big, Kind::Small, Kind::Small];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Big,
    Small,
}

fn batch(kind: Kind, partition: i32, index: usize) -> Bytes {
    let ts = 1_700_000_000_000 + index as i64;
    let records: Vec<TestRecord> = match kind {
        Kind::Big => vec![TestRecord::new(format!("p{partition}-b{index}"), vec![index as u8; BIG], ts)],
        Kind::Small => {
            (0..10).map(|r| TestRecord::new(format!("p{partition}-b{index}-r{r}"), vec![r as u8; 100], ts)).collect()
        }
    };
    encode_batch(&records, Compression::None, None)
}

/// (response `max_bytes`, `partition_max_bytes`): each limit above and below the batch sizes.
const LIMITS: &[(i32, i32)] = &[
    (1_000_000, 20_000_000), // the librdkafka report: two big batches must not share a response
    (20_000_000, 1_000_000), // partition limit binding, response limit not
    (2_000_000, 1_000_000),  // both between one and two big batches
    (100_000, 100_000),      // below a big batch, above the small ones
    (3_000, 50_000),         // below one small batch
    (1, 1),                  // below everything: one batch per response
    (50_000_000, 50_000_000),
];

/// Consumes every partition with fetches of all partitions at once (rotating their order like
/// a client does), checking each response against the limits; returns each partition's batches
/// as (base offset, record count, byte size).
async fn consume_checked(
    c: &mut Client,
    topic: &str,
    max_bytes: i32,
    partition_max: i32,
) -> anyhow::Result<BTreeMap<i32, Vec<(i64, usize, usize)>>> {
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut seen: BTreeMap<i32, Vec<(i64, usize, usize)>> = BTreeMap::new();
    let expected_end = LAYOUT.iter().map(|k| if matches!(k, Kind::Big) { 1 } else { 10 }).sum::<i64>();
    for round in 0..500usize {
        if next.values().all(|&n| n >= expected_end) {
            return Ok(seen);
        }
        let mut order: Vec<i32> = (0..PARTITIONS).collect();
        order.rotate_left(round % PARTITIONS as usize);
        let req =
            FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(max_bytes).with_topics(vec![
                FetchTopic::default().with_topic(topic_name(topic)).with_partitions(
                    order
                        .iter()
                        .map(|&p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(next[&p])
                                .with_partition_max_bytes(partition_max)
                        })
                        .collect(),
                ),
            ]);
        let resp = c.send(&req, FETCH_VERSION).await?;
        ensure!(resp.error_code == 0, "fetch: top-level error {}", resp.error_code);
        let mut total = 0usize;
        let mut first_with_data = true;
        for p in resp.responses.into_iter().flat_map(|t| t.partitions) {
            ensure!(p.error_code == 0, "partition {}: error {}", p.partition_index, p.error_code);
            let bytes = p.records.unwrap_or_default();
            if bytes.is_empty() {
                continue;
            }
            let size = bytes.len();
            let batches = decode_batches(bytes)?;
            ensure!(!batches.is_empty(), "partition {}: {size} bytes but no whole batch", p.partition_index);
            if first_with_data {
                // KIP-74: over a limit only by the first batch alone.
                ensure!(
                    (size <= partition_max as usize && size <= max_bytes as usize) || batches.len() == 1,
                    "first partition {} returned {} batches ({size} bytes) over max_bytes {max_bytes} / \
                     partition_max_bytes {partition_max}",
                    p.partition_index,
                    batches.len()
                );
            } else {
                ensure!(
                    size <= partition_max as usize,
                    "partition {} returned {size} bytes > partition_max_bytes {partition_max} and it was not the \
                     first partition with data",
                    p.partition_index
                );
                ensure!(
                    total + size <= max_bytes as usize,
                    "response grew to {} bytes > max_bytes {max_bytes} past its first partition with data",
                    total + size
                );
            }
            first_with_data = false;
            total += size;
            let n = next.get_mut(&p.partition_index).context("a partition that was not asked for")?;
            for b in batches {
                ensure!(
                    b.base_offset == *n,
                    "partition {}: batch at {} after offset {n}",
                    p.partition_index,
                    b.base_offset
                );
                let encoded = value_bytes(&b);
                seen.entry(p.partition_index).or_default().push((b.base_offset, b.records.len(), encoded));
                *n = b.last_offset + 1;
            }
        }
        ensure!(total > 0 || next.values().all(|&n| n >= expected_end), "round {round}: no progress at {next:?}");
    }
    anyhow::bail!("not all partitions consumed after 500 fetches: {next:?}")
}

fn value_bytes(b: &support::client::FetchedBatch) -> usize {
    b.records.iter().map(|r| r.record.value.as_ref().map_or(0, |v| v.len())).sum()
}

async fn check_all_limits(c: &mut Client, topic: &str, source: &str) -> anyhow::Result<()> {
    let mut reference = None;
    for &(max_bytes, partition_max) in LIMITS {
        let seen = consume_checked(c, topic, max_bytes, partition_max)
            .await
            .with_context(|| format!("{source}: max_bytes {max_bytes}, partition_max_bytes {partition_max}"))?;
        // Every limit reads back the same batches, in order.
        for p in 0..PARTITIONS {
            let kinds: Vec<usize> = seen[&p].iter().map(|&(_, n, _)| n).collect();
            let want: Vec<usize> = LAYOUT.iter().map(|k| if matches!(k, Kind::Big) { 1 } else { 10 }).collect();
            ensure!(kinds == want, "{source}: partition {p} batches {kinds:?}, expected {want:?}");
        }
        match &reference {
            None => reference = Some(seen),
            Some(r) => ensure!(*r == seen, "{source}: limits {max_bytes}/{partition_max} read different batches"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn fetch_respects_response_and_partition_limits_hot_and_cold() {
    let mut broker = SkiffProcess::start();
    let topic = "limits";
    let body = async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok(topic, PARTITIONS).await?;
        for (i, kind) in LAYOUT.iter().enumerate() {
            for p in 0..PARTITIONS {
                c.produce_ok(topic, p, batch(*kind, p, i)).await?;
            }
        }
        check_all_limits(&mut c, topic, "tail cache").await
    };
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("hot: did not finish within {TEST_TIMEOUT:?}"),
        Ok(r) => r.unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(30))),
    }
    // A restarted broker has an empty tail cache: every read comes from object storage.
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status}");
    broker.restart();
    let body = async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        check_all_limits(&mut c, topic, "object storage").await
    };
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("cold: did not finish within {TEST_TIMEOUT:?}"),
        Ok(r) => r.unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(30))),
    }
}

/// The report's reproduction with librdkafka itself: 3 partitions with four 900 KiB records
/// each, `fetch.max.bytes` 1,000,000, `receive.message.max.bytes` 1,000,512; every record must
/// arrive (before the fix it read 6, then "Invalid response size" forever).
#[test]
fn librdkafka_reads_large_records_within_fetch_max_bytes() {
    let venv = PathBuf::from(
        std::env::var("SKIFF_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/skiff", std::env::var("HOME").unwrap_or_default())),
    )
    .join("compat/python-confluent/venv/bin/python");
    assert!(venv.exists(), "{} is missing: run tests/compat/setup.sh python-confluent", venv.display());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat/python-confluent/fetch_limits.py");
    let broker = SkiffProcess::start();
    let out = Command::new("timeout")
        .args(["-k", "5", "150"])
        .arg(&venv)
        .arg("-u")
        .arg(&script)
        .env("BOOTSTRAP", broker.bootstrap())
        .env("TOPIC", "big-records")
        .stdin(Stdio::null())
        .output()
        .expect("run fetch_limits.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("fetch-limits ok"),
        "librdkafka fetch-limits scenario failed ({}):\n{stdout}\n{}\nbroker:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.stderr_tail(30)
    );
}
