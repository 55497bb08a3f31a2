//! Compacted topics end to end (issue #12, RFC 0003): `skiff dev` with a short cleaner backoff,
//! a topic created with `cleanup.policy=compact` through CreateTopics, keyed writes with
//! overwrites, then, once the cleaner ran, a full read returns one record per key (the latest,
//! at the offset it was produced at) below the head, the head verbatim, and offset gaps where
//! superseded records were.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, FetchedRecord, TestRecord, encode_batch};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const KEYS: usize = 5;
const ROUNDS: usize = 12;

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
    let body = async {
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
        for round in 0..ROUNDS {
            let keys = if round % 3 == 0 { 0..KEYS } else { (round % KEYS)..KEYS.min(round % KEYS + 2) };
            let base = c.produce_ok("changelog", 0, batch(round, keys.clone())).await?;
            for (i, k) in keys.enumerate() {
                latest.insert(format!("k{k}"), (base + i as i64, format!("r{round}-k{k}")));
            }
        }
        let (before, hwm) = c.fetch_all("changelog", 0, 0).await?;
        ensure!(before.len() as i64 == hwm, "{} records below {hwm} before cleaning", before.len());

        // Wait (bounded) for the cleaner: one record per key below the high watermark.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let cleaned = loop {
            let (records, _) = c.fetch_all("changelog", 0, 0).await?;
            let below: Vec<FetchedRecord> = records.into_iter().filter(|r| r.offset < hwm).collect();
            if below.len() == KEYS {
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
        // A fetch inside a gap gets the next record (as Kafka).
        if let Some(w) = offsets.windows(2).find(|w| w[1] > w[0] + 1) {
            let (from_gap, _) = c.fetch_all("changelog", 0, w[0] + 1).await?;
            ensure!(from_gap.first().map(|r| r.offset) == Some(w[1]), "fetch at {} in a gap", w[0] + 1);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("did not finish within {TEST_TIMEOUT:?}\n{}", broker.stderr_tail(40)),
        Ok(Err(e)) => panic!("{e:#}\n{}", broker.stderr_tail(40)),
        Ok(Ok(())) => {}
    }
}
