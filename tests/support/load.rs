//! Load for fault tests: idempotent producers that retry each batch until it is acknowledged
//! (as a Kafka producer with `enable.idempotence=true` and infinite retries does), and a check
//! that every acknowledged record is present exactly once at its acknowledged offset with
//! gapless offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kafka_protocol::records::Compression;

use super::client::{Client, Idempotence, TestRecord, encode_batch};

/// Kafka error codes a producer retries (the broker must only use retriable ones for storage
/// trouble). Anything else fails the test.
pub const RETRIABLE: &[i16] = &[
    6,  // NOT_LEADER_OR_FOLLOWER
    7,  // REQUEST_TIMED_OUT
    13, // NETWORK_EXCEPTION
    15, // COORDINATOR_NOT_AVAILABLE
    19, // NOT_ENOUGH_REPLICAS
    20, // NOT_ENOUGH_REPLICAS_AFTER_APPEND
    56, // KAFKA_STORAGE_ERROR
];

/// One acknowledged record.
#[derive(Debug, Clone)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: Bytes,
}

/// What one producer saw.
#[derive(Debug, Default, Clone)]
pub struct ProducerReport {
    pub acked: Vec<Acked>,
    pub batches: u64,
    /// Error code → count of produce responses with it.
    pub errors: BTreeMap<i16, u64>,
    /// Requests that got no answer (timeout, closed connection, refused connect).
    pub transport_errors: u64,
    pub slowest_ack: Duration,
    /// When the producer last got an acknowledgement.
    pub last_ack: Option<Instant>,
}

/// Settings for [`run_producer`].
#[derive(Debug, Clone)]
pub struct ProducerSpec {
    pub bootstrap: String,
    pub topic: String,
    pub partition: i32,
    /// Distinguishes producers in record values.
    pub id: usize,
    pub records_per_batch: usize,
    pub value_bytes: usize,
    /// Between acknowledged batches (0: as fast as possible).
    pub pause: Duration,
    /// A batch that is still not acknowledged after this long fails the producer.
    pub give_up_after: Duration,
    /// When `stop` is set, drop the batch in flight instead of retrying it to the end (for a
    /// broker that was killed and will not answer).
    pub abandon_on_stop: bool,
}

/// Produces idempotent batches until `stop` is set, retrying each batch until acknowledged;
/// the batch in flight when `stop` is set is still finished (unless `abandon_on_stop`).
/// On failure the error comes with what was acknowledged before it.
pub async fn run_producer(spec: ProducerSpec, stop: Arc<AtomicBool>) -> (ProducerReport, Option<anyhow::Error>) {
    let mut report = ProducerReport::default();
    let result = produce_loop(&spec, &stop, &mut report).await;
    (report, result.err())
}

async fn produce_loop(spec: &ProducerSpec, stop: &AtomicBool, report: &mut ProducerReport) -> anyhow::Result<()> {
    let mut conn: Option<Client>;
    let (producer_id, producer_epoch) = {
        let started = Instant::now();
        loop {
            let attempt = async {
                let mut c = Client::connect(&spec.bootstrap).await?;
                let id = c.init_producer_id().await?;
                anyhow::Ok((c, id))
            };
            match attempt.await {
                Ok((c, id)) => {
                    conn = Some(c);
                    break id;
                }
                Err(e) if started.elapsed() < spec.give_up_after => {
                    report.transport_errors += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context(format!("producer {}: InitProducerId never succeeded", spec.id)),
            }
        }
    };
    let mut sequence: i32 = 0;
    let mut batch_no: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let values: Vec<Bytes> = (0..spec.records_per_batch)
            .map(|i| {
                let head = format!("p{}-b{batch_no}-r{i}-", spec.id);
                let mut v = head.into_bytes();
                v.resize(spec.value_bytes.max(v.len()), b'x');
                Bytes::from(v)
            })
            .collect();
        let records: Vec<TestRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| TestRecord::new(format!("k{}-{i}", spec.id), v.clone(), 1_700_000_000_000 + batch_no as i64))
            .collect();
        let batch = encode_batch(
            &records,
            Compression::None,
            Some(Idempotence { producer_id, producer_epoch, base_sequence: sequence }),
        );
        let started = Instant::now();
        let base_offset = loop {
            if spec.abandon_on_stop && stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            ensure!(
                started.elapsed() < spec.give_up_after,
                "producer {}: batch {batch_no} (sequence {sequence}) not acknowledged within {:?}; errors so far {:?}, transport errors {}",
                spec.id,
                spec.give_up_after,
                report.errors,
                report.transport_errors
            );
            if conn.is_none() {
                match Client::connect(&spec.bootstrap).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        report.transport_errors += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            match c.produce(&spec.topic, spec.partition, batch.clone()).await {
                Ok(r) if r.error_code == 0 => break r.base_offset,
                Ok(r) if RETRIABLE.contains(&r.error_code) => {
                    *report.errors.entry(r.error_code).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(r) => bail!(
                    "producer {}: batch {batch_no} (sequence {sequence}) got non-retriable error {} ({:?})",
                    spec.id,
                    r.error_code,
                    r.error_message
                ),
                Err(_) => {
                    // The answer is lost; the batch may or may not be stored. Resending it with
                    // the same sequence must not duplicate it.
                    report.transport_errors += 1;
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        report.slowest_ack = report.slowest_ack.max(started.elapsed());
        report.last_ack = Some(Instant::now());
        for (i, v) in values.into_iter().enumerate() {
            report.acked.push(Acked { partition: spec.partition, offset: base_offset + i as i64, value: v });
        }
        report.batches += 1;
        batch_no += 1;
        sequence = sequence.wrapping_add(spec.records_per_batch as i32);
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
    }
    Ok(())
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verified {
    pub records: usize,
    pub acked: usize,
    /// Records present that were never acknowledged (a batch whose answer was lost and that the
    /// producer did not retry); allowed, but each at most once.
    pub unacked_present: usize,
}

/// Reads every partition from offset 0 and checks: offsets are gapless from the log start,
/// no value appears twice, and every acknowledged record is at its acknowledged offset.
pub async fn verify(client: &mut Client, topic: &str, partitions: i32, acked: &[Acked]) -> anyhow::Result<Verified> {
    let mut out = Verified { acked: acked.len(), ..Verified::default() };
    let mut by_partition: HashMap<i32, HashMap<i64, &Bytes>> = HashMap::new();
    for a in acked {
        let prev = by_partition.entry(a.partition).or_default().insert(a.offset, &a.value);
        ensure!(prev.is_none(), "two acknowledgements for {topic}/{} offset {}", a.partition, a.offset);
    }
    for p in 0..partitions {
        let (records, hwm) = client.fetch_all(topic, p, 0).await.with_context(|| format!("reading {topic}/{p}"))?;
        out.records += records.len();
        let mut seen: HashMap<&Bytes, i64> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            ensure!(r.offset == i as i64, "{topic}/{p}: offset gap: record #{i} has offset {}", r.offset);
            let v = r.record.value.as_ref().context("record without value")?;
            if let Some(first) = seen.insert(v, r.offset) {
                bail!(
                    "{topic}/{p}: value {:?} appears twice, at offsets {first} and {} (duplicate from a retried idempotent batch)",
                    String::from_utf8_lossy(&v[..v.len().min(40)]),
                    r.offset
                );
            }
        }
        ensure!(records.len() as i64 == hwm, "{topic}/{p}: {} records below high watermark {hwm}", records.len());
        let expected = by_partition.remove(&p).unwrap_or_default();
        let mut acked_here = 0;
        for (offset, value) in &expected {
            let r = records.get(usize::try_from(*offset)?).with_context(|| {
                format!("{topic}/{p}: acknowledged offset {offset} is missing (high watermark {hwm}): ACKNOWLEDGED RECORD LOST")
            })?;
            ensure!(
                r.record.value.as_ref() == Some(*value),
                "{topic}/{p}: offset {offset} holds {:?}, but {:?} was acknowledged there",
                r.record.value.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(40)]).to_string()),
                String::from_utf8_lossy(&value[..value.len().min(40)])
            );
            acked_here += 1;
        }
        out.unacked_present += records.len() - acked_here;
    }
    ensure!(by_partition.is_empty(), "acknowledgements for partitions outside 0..{partitions}");
    Ok(out)
}

/// Runs `producers` producers (spread over `partitions`) for `run_for` while `during` runs
/// (e.g. injecting faults), then stops them and returns their reports.
pub async fn produce_while<F, Fut>(
    specs: Vec<ProducerSpec>,
    run_for: Duration,
    during: F,
) -> anyhow::Result<Vec<ProducerReport>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = specs.into_iter().map(|s| tokio::spawn(run_producer(s, stop.clone()))).collect();
    let until = tokio::time::Instant::now() + run_for;
    during().await;
    tokio::time::sleep_until(until).await;
    stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (report, error) = h.await.context("producer task panicked")?;
        if let Some(e) = error {
            return Err(e.context(format!("producer {i} failed")));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// `n` producer specs spread round-robin over `partitions`.
pub fn specs(bootstrap: &str, topic: &str, partitions: i32, n: usize, give_up_after: Duration) -> Vec<ProducerSpec> {
    (0..n)
        .map(|id| ProducerSpec {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            partition: (id as i32) % partitions,
            id,
            records_per_batch: 5,
            value_bytes: 200,
            pause: Duration::from_millis(5),
            give_up_after,
            abandon_on_stop: false,
        })
        .collect()
}

/// Sums error counts over reports.
pub fn error_totals(reports: &[ProducerReport]) -> (BTreeMap<i16, u64>, u64) {
    let mut errors = BTreeMap::new();
    let mut transport = 0;
    for r in reports {
        for (code, n) in &r.errors {
            *errors.entry(*code).or_default() += n;
        }
        transport += r.transport_errors;
    }
    (errors, transport)
}
