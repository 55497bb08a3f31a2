//! Compacted topics end to end (issue #12, RFC 0003): `skiff dev` with a short cleaner backoff,
//! a topic created with `cleanup.policy=compact` through CreateTopics, keyed writes with
//! overwrites, then, once the cleaner ran, a full read returns one record per key (the latest,
//! at the offset it was produced at) below the head, the head verbatim, and offset gaps where
//! superseded records were; Kafka's ConsoleConsumer reads the same records; a fetch inside any
//! gap, even of one byte, reaches the next record (the broker moves on past a gap at the end of
//! a chunk, as Kafka moves to the next segment). The same scenario runs on file:// and on a
//! real MinIO (`support::minio`); SIGKILL inside passes is tests/cleaner_crash.rs.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{DeleteRecordsRequest, FetchRequest};
use kafka_protocol::records::Compression;
use support::client::{Client, FETCH_VERSION, FetchedRecord, TestRecord, decode_batches, encode_batch, topic_name};
use support::minio::Minio;
use support::{SkiffProcess, kafka_cli};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const KEYS: usize = 5;
const ROUNDS: usize = 12;
const POLICY_VIOLATION: i16 = 44;

const CONFIG: &str = "[lifecycle]\ncleaner_backoff = \"200ms\"\n";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn batch(round: usize, keys: std::ops::Range<usize>) -> Bytes {
    let ts = now_ms();
    let records: Vec<TestRecord> =
        keys.map(|k| TestRecord::new(format!("k{k}"), format!("r{round}-k{k}"), ts)).collect();
    encode_batch(&records, Compression::None, None)
}

fn value(r: &FetchedRecord) -> String {
    String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn compacted_topic_keeps_one_record_per_key_plus_the_head() {
    let broker = SkiffProcess::start_with_config(CONFIG);
    run(&broker, scenario(&broker)).await;
}

/// The same on real S3 storage (MinIO, `support::minio`: FAILS without one): the cleaner's
/// ranged GETs, create-only PUTs and DELETEs go to S3.
#[tokio::test]
async fn compacted_topic_keeps_one_record_per_key_plus_the_head_on_minio() {
    let minio = tokio::task::spawn_blocking(Minio::shared).await.expect("start MinIO");
    let prefix = minio.unique_prefix("cleaner");
    // Flush often: on s3 the default (250 ms) only slows the test down.
    let config = minio.skiff_config(&prefix, &format!("[broker]\nflush_interval_ms = 20\n{CONFIG}"));
    let broker = SkiffProcess::start_with_config_and_env(&config, minio.skiff_env());
    run(&broker, scenario(&broker)).await;
}

/// One scenario at a time: each runs Kafka's ConsoleConsumer (a JVM) on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(broker: &SkiffProcess, body: impl std::future::Future<Output = anyhow::Result<()>>) {
    let _serial = SERIAL.lock().await;
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("did not finish within {TEST_TIMEOUT:?}\n{}", broker.stderr_tail(40)),
        Ok(Err(e)) => panic!("{e:#}\n{}", broker.stderr_tail(40)),
        Ok(Ok(())) => {}
    }
}

async fn scenario(broker: &SkiffProcess) -> anyhow::Result<()> {
    {
        let mut c = Client::connect(broker.bootstrap()).await?;
        // Rolls once the head's first chunk is 2 s old (segment.bytes: Kafka's minimum, 1 MiB).
        let code = c
            .create_topic(
                "changelog",
                1,
                &[
                    ("cleanup.policy", "compact"),
                    ("segment.ms", "2000"),
                    ("segment.bytes", "1048576"),
                    ("min.cleanable.dirty.ratio", "0.01"),
                ],
            )
            .await?;
        ensure!(code == 0, "CreateTopics cleanup.policy=compact: error {code}");
        // Overwrites in every batch, some batches wholly superseded later.
        let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
        // First a layout with a gap at the end of a chunk: the first batch loses its last
        // record, the second all of it (both are rewritten into one segment whose range ends in
        // a gap), the third stays as it is.
        for (i, records) in [&[("a", "1"), ("b", "1")][..], &[("c", "1")], &[("b", "2"), ("c", "2")]].iter().enumerate()
        {
            let ts = now_ms();
            let batch: Vec<TestRecord> = records.iter().map(|(k, v)| TestRecord::new(*k, *v, ts)).collect();
            let base = c.produce_ok("changelog", 0, encode_batch(&batch, Compression::None, None)).await?;
            ensure!(base == [0, 2, 3][i], "base offset {base}");
            for (j, (k, v)) in records.iter().enumerate() {
                latest.insert(k.to_string(), (base + j as i64, v.to_string()));
            }
        }
        for round in 0..ROUNDS {
            let keys = if round % 3 == 0 { 0..KEYS } else { (round % KEYS)..KEYS.min(round % KEYS + 2) };
            let base = c.produce_ok("changelog", 0, batch(round, keys.clone())).await?;
            for (i, k) in keys.enumerate() {
                latest.insert(format!("k{k}"), (base + i as i64, format!("r{round}-k{k}")));
            }
        }
        // The newest chunk stays in the head (Kafka's active segment keeps the newest batch and
        // rolls only on an append): one record under a key of its own, kept by any cleaning.
        let ts = now_ms();
        let base = c
            .produce_ok("changelog", 0, encode_batch(&[TestRecord::new("sentinel", "s", ts)], Compression::None, None))
            .await?;
        latest.insert("sentinel".to_string(), (base, "s".to_string()));
        let (before, hwm) = c.fetch_all("changelog", 0, 0).await?;
        ensure!(before.len() as i64 == hwm, "{} records below {hwm} before cleaning", before.len());

        // Wait (bounded) for the cleaner: one record per key below the high watermark.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let cleaned = loop {
            let (records, _) = c.fetch_all("changelog", 0, 0).await?;
            let below: Vec<FetchedRecord> = records.into_iter().filter(|r| r.offset < hwm).collect();
            if below.len() == latest.len() {
                break below;
            }
            ensure!(tokio::time::Instant::now() < deadline, "not cleaned within 60 s: {} records", below.len());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for r in &cleaned {
            let key = String::from_utf8_lossy(r.record.key.as_deref().context("keyed")?).into_owned();
            let (offset, v) = latest.get(&key).context("known key")?;
            ensure!(
                r.offset == *offset && value(r) == *v,
                "{key}: got {} at {}, want {v} at {offset}",
                value(r),
                r.offset
            );
        }
        let offsets: Vec<i64> = cleaned.iter().map(|r| r.offset).collect();
        ensure!(offsets.windows(2).any(|w| w[1] > w[0] + 1), "superseded records leave gaps: {offsets:?}");

        // Kafka's own consumer reads the cleaned log (re-encoded batches, gaps) the same way.
        let bootstrap = broker.bootstrap().to_string();
        let out = tokio::task::spawn_blocking(move || {
            kafka_cli::run_with_timeout(
                kafka_cli::CONSOLE_CONSUMER,
                &[
                    "--bootstrap-server",
                    &bootstrap,
                    "--topic",
                    "changelog",
                    "--from-beginning",
                    "--property",
                    "print.offset=true",
                    "--property",
                    "print.key=true",
                    "--timeout-ms",
                    "5000",
                ],
                Duration::from_secs(90),
            )
        })
        .await??;
        // It exits non-zero after its timeout with no more records (a TimeoutException).
        ensure!(out.success || out.stderr.contains("TimeoutException"), "ConsoleConsumer: {}", out.stderr);
        let consumed: Vec<String> =
            out.stdout.lines().filter(|l| l.starts_with("Offset:")).map(str::to_string).collect();
        let expected: Vec<String> = cleaned
            .iter()
            .map(|r| {
                let key = String::from_utf8_lossy(r.record.key.as_deref().unwrap_or_default()).into_owned();
                format!("Offset:{}\t{key}\t{}", r.offset, value(r))
            })
            .collect();
        ensure!(consumed == expected, "ConsoleConsumer printed {consumed:?}, expected {expected:?}");

        // New writes are the head: read back verbatim, duplicates of a key included, after the
        // cleaned records; the high watermark did not move backwards.
        let head = c.produce_ok("changelog", 0, batch(100, 0..2)).await?;
        let again = c.produce_ok("changelog", 0, batch(101, 0..2)).await?;
        ensure!(head == hwm && again == hwm + 2, "offsets continue at {hwm}: {head}, {again}");
        let (all, end) = c.fetch_all("changelog", 0, 0).await?;
        ensure!(end == hwm + 4, "high watermark {end}");
        let tail: Vec<(i64, String)> = all.iter().filter(|r| r.offset >= hwm).map(|r| (r.offset, value(r))).collect();
        let expected: Vec<(i64, String)> = vec![
            (hwm, "r100-k0".into()),
            (hwm + 1, "r100-k1".into()),
            (hwm + 2, "r101-k0".into()),
            (hwm + 3, "r101-k1".into()),
        ];
        ensure!(tail == expected, "head {tail:?}");
        // A fetch inside any gap gets the next record (as Kafka), even one byte at a time: the
        // broker then plans only the chunk holding the offset, and moves on past a gap at the
        // end of that chunk instead of answering nothing forever.
        let kept: Vec<i64> = all.iter().map(|r| r.offset).collect();
        for gap in (0..hwm).filter(|o| !kept.contains(o)) {
            let next = kept.iter().copied().find(|o| *o > gap);
            // As a consumer: a returned batch may end past its last record (its last offset
            // delta is kept), then the position moves to the batch's end and fetches again.
            let mut position = gap;
            let mut first = None;
            for _ in 0..4 {
                let req =
                    FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1).with_topics(vec![
                        FetchTopic::default().with_topic(topic_name("changelog")).with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(position)
                                .with_partition_max_bytes(1),
                        ]),
                    ]);
                let resp = c.send(&req, FETCH_VERSION).await?;
                let p = resp.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next());
                let p = p.context("partition")?;
                ensure!(p.error_code == 0, "fetch at {position}: error {}", p.error_code);
                let batches = decode_batches(p.records.unwrap_or_default())?;
                ensure!(!batches.is_empty(), "fetch at {position} (from gap {gap}) returned nothing below {hwm}");
                first = batches.iter().flat_map(|b| &b.records).map(|r| r.offset).find(|o| *o >= gap);
                if first.is_some() {
                    break;
                }
                position = batches.last().map_or(position, |b| b.last_offset + 1);
            }
            ensure!(first == next, "fetch from gap {gap} reached {first:?}, the next record is at {next:?}");
        }

        // DeleteRecords on a compact-only topic is refused as Kafka refuses it (POLICY_VIOLATION:
        // "Records of partition ... can not be deleted due to the configured policy"), and
        // nothing moves; with `compact,delete` it is served.
        let delete =
            |topic: &str| {
                DeleteRecordsRequest::default()
                    .with_topics(vec![DeleteRecordsTopic::default().with_name(topic_name(topic)).with_partitions(
                        vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(2)],
                    )])
                    .with_timeout_ms(5000)
            };
        let r = c.send(&delete("changelog"), 2).await?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).context("delete records: no result")?;
        ensure!(p.error_code == POLICY_VIOLATION && p.low_watermark == -1, "delete records on compact: {r:?}");
        let (still, _) = c.fetch_all("changelog", 0, 0).await?;
        ensure!(still.first().map(|r| r.offset) == all.first().map(|r| r.offset), "log start moved");
        ensure!(broker.stderr_tail(400).contains("delete records refused"), "no log line for the refusal");
        let code = c.create_topic("both", 1, &[("cleanup.policy", "compact,delete")]).await?;
        ensure!(code == 0, "CreateTopics compact,delete: error {code}");
        c.produce_ok("both", 0, batch(0, 0..KEYS)).await?;
        let r = c.send(&delete("both"), 2).await?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).context("delete records: no result")?;
        ensure!(p.error_code == 0 && p.low_watermark == 2, "delete records on compact,delete: {r:?}");
        anyhow::Ok(())
    }
}
