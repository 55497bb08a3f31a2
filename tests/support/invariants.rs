//! The invariant checker for cluster tests: reads every partition back, batch by batch, and
//! checks what the clients saw against it.
//!
//! Named invariants (each a pure function over what was read, so it can be tested with plain
//! values):
//! - [`offsets_gapless`]: batches cover `0..high_watermark` with no gap or overlap, and the
//!   records of each batch have consecutive offsets;
//! - [`no_acknowledged_record_lost`]: every acknowledged record is at its acknowledged offset;
//! - [`no_duplicates`]: no value appears twice, and no idempotent batch (producer id, base
//!   sequence) was stored twice;
//! - [`producer_sequences_contiguous`]: per producer id, the stored batches' sequences follow
//!   each other without a gap (a gap is a lost batch);
//! - [`one_writer_per_leader_epoch`]: the `partitionLeaderEpoch` of the batches never
//!   decreases with the offset (so each epoch is one contiguous run, and a deposed leader that
//!   wakes up cannot append in its old epoch after the new leader), no batch carries an epoch
//!   newer than the partition's current one, and no Metadata answer named two different
//!   leaders for the same (partition, epoch);
//! - [`consumers_saw_the_log`]: every record a consumer read is in the log at the same offset
//!   (nothing read was later lost or replaced).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use super::client::{FetchedBatch, TopicMetadata};
use super::load::{Acked, Consumed, LeaderObservations, Routing};

/// One partition as read back.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    pub partition: i32,
    pub batches: Vec<FetchedBatch>,
    pub high_watermark: i64,
}

impl PartitionLog {
    pub fn records(&self) -> usize {
        self.batches.iter().map(|b| b.records.len()).sum()
    }
}

/// Reads every partition of `topic` from offset 0 up to its high watermark through its current
/// leader, retrying (from the start of the partition) on errors until `timeout`.
pub async fn read_topic(
    routing: &Routing,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLog>> {
    let deadline = Instant::now() + timeout;
    let mut logs = Vec::new();
    for partition in 0..partitions {
        let mut last_error = None;
        let log = loop {
            if Instant::now() > deadline {
                return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
                    .with_context(|| format!("reading {topic}/{partition} back within {timeout:?}"));
            }
            let attempt = async {
                let (mut c, _) = routing.connect_leader(topic, partition).await?;
                c.set_request_timeout(Duration::from_secs(30));
                c.fetch_batches(topic, partition, 0).await
            };
            match attempt.await {
                Ok((batches, high_watermark)) => break PartitionLog { partition, batches, high_watermark },
                Err(e) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        logs.push(log);
    }
    Ok(logs)
}

/// What the clients saw, to hold against the log.
pub struct Expectations<'a> {
    pub topic: &'a str,
    pub acked: &'a [Acked],
    pub consumed: &'a [Consumed],
    pub leaders: &'a LeaderObservations,
    /// The topic's metadata after the run (current leader epochs).
    pub final_metadata: Option<&'a TopicMetadata>,
}

/// A passed check.
#[derive(Debug)]
pub struct Summary {
    pub partitions: usize,
    pub records: usize,
    pub batches: usize,
    pub acked: usize,
    /// Present but never acknowledged (a batch in flight at the end, or whose answer was lost
    /// and that was not retried); allowed, each at most once.
    pub unacked_present: usize,
    pub consumed: usize,
    /// Per partition, the leader epochs in log order (each once).
    pub epochs: BTreeMap<i32, Vec<i32>>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} partitions, {} records in {} batches, {} acknowledged, {} present unacknowledged, {} consumed; epochs per partition {:?}",
            self.partitions, self.records, self.batches, self.acked, self.unacked_present, self.consumed, self.epochs
        )
    }
}

/// Violations by invariant name.
#[derive(Debug, Default)]
pub struct Violations(pub BTreeMap<&'static str, Vec<String>>);

impl Violations {
    fn add(&mut self, invariant: &'static str, found: Vec<String>) {
        if !found.is_empty() {
            self.0.entry(invariant).or_default().extend(found);
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, found) in &self.0 {
            writeln!(f, "INVARIANT VIOLATED: {name} ({} findings)", found.len())?;
            for v in found.iter().take(10) {
                writeln!(f, "  {v}")?;
            }
            if found.len() > 10 {
                writeln!(f, "  ... and {} more", found.len() - 10)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Runs every invariant; all violations are reported at once.
pub fn check(logs: &[PartitionLog], exp: &Expectations<'_>) -> Result<Summary, Violations> {
    let mut v = Violations::default();
    let topic = exp.topic;
    for log in logs {
        v.add("offsets_gapless", offsets_gapless(topic, log));
    }
    v.add("no_acknowledged_record_lost", no_acknowledged_record_lost(topic, logs, exp.acked));
    v.add("no_duplicates", no_duplicates(topic, logs));
    v.add("producer_sequences_contiguous", producer_sequences_contiguous(topic, logs));
    v.add("one_writer_per_leader_epoch", one_writer_per_leader_epoch(topic, logs, exp.leaders, exp.final_metadata));
    v.add("consumers_saw_the_log", consumers_saw_the_log(topic, logs, exp.consumed));
    if !v.0.is_empty() {
        return Err(v);
    }
    let records = logs.iter().map(PartitionLog::records).sum::<usize>();
    let acked = exp.acked.len();
    let epochs = logs
        .iter()
        .map(|l| {
            let mut e: Vec<i32> = l.batches.iter().map(|b| b.partition_leader_epoch).collect();
            e.dedup();
            (l.partition, e)
        })
        .collect();
    Ok(Summary {
        partitions: logs.len(),
        records,
        batches: logs.iter().map(|l| l.batches.len()).sum(),
        acked,
        unacked_present: records.saturating_sub(acked),
        consumed: exp.consumed.len(),
        epochs,
    })
}

/// Batches cover `0..high_watermark` exactly, and each batch's records are consecutive.
pub fn offsets_gapless(topic: &str, log: &PartitionLog) -> Vec<String> {
    let p = log.partition;
    let mut found = Vec::new();
    let mut next = 0i64;
    for b in &log.batches {
        if b.base_offset != next {
            found.push(format!(
                "{topic}/{p}: batch at offset {} where {next} was expected ({})",
                b.base_offset,
                if b.base_offset > next { "gap" } else { "overlap" }
            ));
        }
        for (i, r) in b.records.iter().enumerate() {
            if r.offset != b.base_offset + i as i64 {
                found.push(format!(
                    "{topic}/{p}: record #{i} of the batch at {} has offset {}",
                    b.base_offset, r.offset
                ));
                break;
            }
        }
        if b.base_offset + b.records.len() as i64 - 1 != b.last_offset {
            found.push(format!(
                "{topic}/{p}: batch at {} claims last offset {} but holds {} records",
                b.base_offset,
                b.last_offset,
                b.records.len()
            ));
        }
        next = b.last_offset + 1;
    }
    if next != log.high_watermark {
        found.push(format!("{topic}/{p}: the log ends at {next} but the high watermark is {}", log.high_watermark));
    }
    found
}

/// Every acknowledged record is present at its acknowledged offset with its value.
pub fn no_acknowledged_record_lost(topic: &str, logs: &[PartitionLog], acked: &[Acked]) -> Vec<String> {
    let mut found = Vec::new();
    let index: HashMap<i32, HashMap<i64, &Bytes>> = logs
        .iter()
        .map(|l| {
            let by_offset = l
                .batches
                .iter()
                .flat_map(|b| &b.records)
                .filter_map(|r| r.record.value.as_ref().map(|v| (r.offset, v)))
                .collect();
            (l.partition, by_offset)
        })
        .collect();
    let mut seen: HashMap<(i32, i64), &Bytes> = HashMap::new();
    for a in acked {
        if let Some(prev) = seen.insert((a.partition, a.offset), &a.value)
            && *prev != a.value
        {
            found.push(format!(
                "{topic}/{}: offset {} acknowledged for two different records ({} and {})",
                a.partition,
                a.offset,
                short(prev),
                short(&a.value)
            ));
        }
        match index.get(&a.partition).and_then(|p| p.get(&a.offset)) {
            None => found.push(format!(
                "{topic}/{}: acknowledged offset {} ({}) is missing: ACKNOWLEDGED RECORD LOST",
                a.partition,
                a.offset,
                short(&a.value)
            )),
            Some(v) if **v != a.value => found.push(format!(
                "{topic}/{}: offset {} holds {} but {} was acknowledged there",
                a.partition,
                a.offset,
                short(v),
                short(&a.value)
            )),
            Some(_) => {}
        }
    }
    found
}

/// No value is stored twice and no idempotent batch (producer id, base sequence) twice.
pub fn no_duplicates(topic: &str, logs: &[PartitionLog]) -> Vec<String> {
    let mut found = Vec::new();
    for l in logs {
        let p = l.partition;
        let mut values: HashMap<&Bytes, i64> = HashMap::new();
        let mut sequences: HashMap<(i64, i32), i64> = HashMap::new();
        for b in &l.batches {
            if b.producer_id >= 0
                && let Some(first) = sequences.insert((b.producer_id, b.base_sequence), b.base_offset)
            {
                found.push(format!(
                    "{topic}/{p}: idempotent batch (producer {}, sequence {}) stored twice, at offsets {first} and {}",
                    b.producer_id, b.base_sequence, b.base_offset
                ));
            }
            for r in &b.records {
                if let Some(v) = &r.record.value
                    && let Some(first) = values.insert(v, r.offset)
                {
                    found.push(format!(
                        "{topic}/{p}: value {} appears twice, at offsets {first} and {}",
                        short(v),
                        r.offset
                    ));
                }
            }
        }
    }
    found
}

/// Per producer id, each stored batch starts at the sequence after the previous one's last.
pub fn producer_sequences_contiguous(topic: &str, logs: &[PartitionLog]) -> Vec<String> {
    let mut found = Vec::new();
    for l in logs {
        let p = l.partition;
        // producer id → (next expected sequence, offset of the batch that set it)
        let mut next: HashMap<i64, (i32, i64)> = HashMap::new();
        for b in l.batches.iter().filter(|b| b.producer_id >= 0) {
            let count = b.records.len() as i32;
            if let Some((expected, after)) = next.get(&b.producer_id)
                && b.base_sequence != *expected
            {
                found.push(format!(
                    "{topic}/{p}: producer {} batch at offset {} has sequence {} but {expected} follows the batch at {after}",
                    b.producer_id, b.base_offset, b.base_sequence
                ));
            }
            next.insert(b.producer_id, (b.base_sequence.wrapping_add(count), b.base_offset));
        }
    }
    found
}

/// Leader epochs never decrease along a partition's log, none is newer than the partition's
/// current epoch, and each (partition, epoch) had one leader in every Metadata answer.
pub fn one_writer_per_leader_epoch(
    topic: &str,
    logs: &[PartitionLog],
    leaders: &LeaderObservations,
    final_metadata: Option<&TopicMetadata>,
) -> Vec<String> {
    let mut found = Vec::new();
    for l in logs {
        let p = l.partition;
        let mut prev: Option<(i32, i64)> = None;
        for b in &l.batches {
            let epoch = b.partition_leader_epoch;
            if epoch < 0 {
                found.push(format!("{topic}/{p}: batch at {} carries no leader epoch ({epoch})", b.base_offset));
            }
            if let Some((prev_epoch, prev_offset)) = prev
                && epoch < prev_epoch
            {
                found.push(format!(
                    "{topic}/{p}: batch at {} was written in leader epoch {epoch} after the batch at {prev_offset} in epoch {prev_epoch}: a deposed leader appended",
                    b.base_offset
                ));
            }
            prev = Some((epoch, b.base_offset));
        }
        if let (Some((last_epoch, offset)), Some(current)) =
            (prev, final_metadata.and_then(|m| m.partition(p)).filter(|m| m.error_code == 0))
            && last_epoch > current.leader_epoch
        {
            found.push(format!(
                "{topic}/{p}: batch at {offset} carries epoch {last_epoch}, newer than the partition's current epoch {}",
                current.leader_epoch
            ));
        }
    }
    for ((t, p, epoch), named) in leaders {
        if t == topic && named.len() > 1 {
            found.push(format!(
                "{topic}/{p}: Metadata answers named leaders {named:?} for the same leader epoch {epoch}"
            ));
        }
    }
    found
}

/// Every record a consumer read is in the log at that offset.
pub fn consumers_saw_the_log(topic: &str, logs: &[PartitionLog], consumed: &[Consumed]) -> Vec<String> {
    let mut found = Vec::new();
    let index: HashMap<(i32, i64), &Bytes> = logs
        .iter()
        .flat_map(|l| {
            l.batches
                .iter()
                .flat_map(|b| &b.records)
                .filter_map(move |r| r.record.value.as_ref().map(|v| ((l.partition, r.offset), v)))
        })
        .collect();
    for c in consumed {
        match index.get(&(c.partition, c.offset)) {
            None => found.push(format!(
                "{topic}/{}: a consumer read offset {} ({}), which is no longer in the log",
                c.partition,
                c.offset,
                short(&c.value)
            )),
            Some(v) if **v != c.value => found.push(format!(
                "{topic}/{}: a consumer read {} at offset {}, the log now holds {} there",
                c.partition,
                short(&c.value),
                c.offset,
                short(v)
            )),
            Some(_) => {}
        }
    }
    found
}

fn short(v: &Bytes) -> String {
    format!("{:?}", String::from_utf8_lossy(&v[..v.len().min(24)]))
}
