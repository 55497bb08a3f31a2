//! A reference model of Kafka's cleaner rules, and property tests that run the real
//! `map_batch` + `filter_batch` over random logs, pass after pass, against it.
//!
//! The model keeps the log as plain values (offset, key, value or tombstone, timestamp,
//! producer, batch) and applies the rules naively: no hashing, no bytes, no limits other than
//! the map's entry count, which decides where a pass stops exactly as the real map does.
//!
//! Replaying a failure: proptest shrinks it, prints the minimal steps, and records its seed in
//! `proptest-regressions/log/background/cleaner/model.txt` (at the crate root; commit it),
//! which every later run replays first. More cases: `PROPTEST_CASES=2000 cargo test --locked
//! -p skiff --lib cleaner::model`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::filter::{self, MapProgress, Outcome, Rules, TxnTracker};
use super::map::OffsetMap;
use crate::broker::batch::{self, BatchHeader};
use crate::broker::records::tests::{CODECS, Spec, encode_with};
use crate::broker::records::{self};

const RETENTION_MS: i64 = 1_000;

/// A record header as the test encoder takes it.
type Header<'a> = (&'a str, Option<&'a [u8]>);

#[derive(Debug, Clone)]
struct RecordSpec {
    key: Option<u8>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone)]
struct BatchSpec {
    codec: usize,
    producer: i64,
    /// Stamped by the broker (a LogAppendTime topic): `maxTimestamp` is the stamp.
    log_append_time: bool,
    records: Vec<RecordSpec>,
}

#[derive(Debug, Clone)]
enum Step {
    Produce(BatchSpec),
    /// Move the clock, then run one pass with a map of `map_entries` keys.
    Clean {
        clock_step_ms: i64,
        map_entries: usize,
    },
}

fn record() -> impl Strategy<Value = RecordSpec> {
    (
        // A small key space so keys repeat; a few keyless records (written before the topic
        // became compacted).
        prop::option::weighted(0.95, 0u8..4),
        prop::option::weighted(0.7, prop::collection::vec(any::<u8>(), 0..4)),
        0i64..5_000,
        prop::collection::vec(
            (prop::sample::select(vec!["a", "b"]), prop::option::of(prop::collection::vec(any::<u8>(), 0..3))),
            0..3,
        ),
    )
        .prop_map(|(key, value, timestamp, headers)| RecordSpec { key, value, timestamp, headers })
}

fn step() -> impl Strategy<Value = Step> {
    let batch = (
        0..CODECS.len(),
        prop::sample::select(vec![-1i64, 1, 2]),
        prop::bool::weighted(0.2),
        prop::collection::vec(record(), 1..5),
    )
        .prop_map(|(codec, producer, log_append_time, records)| {
            Step::Produce(BatchSpec { codec, producer, log_append_time, records })
        });
    let clean = (
        prop::sample::select(vec![0, 1, RETENTION_MS / 2, RETENTION_MS - 1, RETENTION_MS, 3 * RETENTION_MS]),
        1usize..6,
    )
        .prop_map(|(clock_step_ms, map_entries)| Step::Clean { clock_step_ms, map_entries });
    prop_oneof![3 => batch, 1 => clean]
}

/// A record as produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Produced {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<u8>,
    timestamp: i64,
}

/// One batch of the model.
#[derive(Debug, Clone)]
struct ModelBatch {
    last_offset: i64,
    producer: i64,
    horizon: Option<i64>,
    /// Offsets of its records still in the log.
    offsets: Vec<i64>,
}

#[derive(Default)]
struct Harness {
    now: i64,
    next_offset: i64,
    /// First offset not cleaned yet.
    clean_offset: i64,
    /// The real log: whole batches in offset order.
    log: Vec<Bytes>,
    /// The model log, by base offset.
    model: BTreeMap<i64, ModelBatch>,
    produced: BTreeMap<i64, Produced>,
    originals: HashMap<i64, BatchHeader>,
    producer_last_batch: HashMap<i64, i64>,
    /// Tombstone offset -> time of the pass that first kept it.
    first_kept: HashMap<i64, i64>,
}

impl Harness {
    fn produce(&mut self, spec: &BatchSpec) {
        let keys: Vec<Option<Vec<u8>>> =
            spec.records.iter().map(|r| r.key.map(|k| format!("k{k}").into_bytes())).collect();
        let headers: Vec<Vec<Header<'_>>> =
            spec.records.iter().map(|r| r.headers.iter().map(|(k, v)| (*k, v.as_deref())).collect()).collect();
        let specs: Vec<Spec<'_>> = spec
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| (keys[i].as_deref(), r.value.as_deref(), r.timestamp, &headers[i][..]))
            .collect();
        let base = self.next_offset;
        let mut bytes = encode_with(base, CODECS[spec.codec], spec.producer, false, false, &specs);
        if spec.log_append_time {
            let mut m = batch::to_mut(&bytes);
            let size = m.len();
            batch::set_log_append_time(&mut m, size, 7_000 + base);
            bytes = m.freeze();
        }
        let d = records::decode(&bytes).expect("a produced batch decodes");
        assert_eq!(d.header.size, bytes.len(), "one batch");
        for r in d.records() {
            self.produced.insert(
                r.offset,
                Produced {
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r.headers.to_vec(),
                    timestamp: r.timestamp,
                },
            );
        }
        let last_offset = d.header.last_offset();
        self.originals.insert(base, d.header);
        if spec.producer >= 0 {
            self.producer_last_batch.insert(spec.producer, base);
        }
        self.model.insert(
            base,
            ModelBatch { last_offset, producer: spec.producer, horizon: None, offsets: (base..=last_offset).collect() },
        );
        self.log.push(bytes);
        self.next_offset = last_offset + 1;
    }

    fn key(&self, offset: i64) -> Option<&[u8]> {
        self.produced[&offset].key.as_deref()
    }

    /// The model's phase 1: keys of the dirty records in offset order, until a new key finds
    /// the map full. Returns the last mapped offset and key -> latest offset.
    fn model_map(&self, entries: usize) -> (i64, HashMap<Vec<u8>, i64>) {
        let mut map = HashMap::new();
        let mut end = self.clean_offset - 1;
        for b in self.model.values().filter(|b| b.last_offset >= self.clean_offset) {
            for &o in b.offsets.iter().filter(|&&o| o >= self.clean_offset) {
                if let Some(k) = self.key(o) {
                    if !map.contains_key(k) && map.len() == entries {
                        return (o - 1, map);
                    }
                    map.insert(k.to_vec(), o);
                }
            }
            end = b.last_offset;
        }
        (end, map)
    }

    /// The model's phase 2 (Kafka's rules, naively).
    fn model_filter(&mut self, map_end: i64, map: &HashMap<Vec<u8>, i64>) {
        let now = self.now;
        let mut next = BTreeMap::new();
        for (&base, b) in &self.model {
            if base > map_end {
                next.insert(base, b.clone());
                continue;
            }
            let kept: Vec<i64> = b
                .offsets
                .iter()
                .copied()
                .filter(|&o| {
                    let p = &self.produced[&o];
                    if o > map_end {
                        return true;
                    }
                    let Some(k) = &p.key else { return false };
                    let latest = map.get(k).is_none_or(|&m| o >= m);
                    let expired = p.value.is_none() && b.horizon.is_some_and(|h| now >= h);
                    latest && !expired
                })
                .collect();
            let last_of_producer = b.producer >= 0 && self.producer_last_batch.get(&b.producer) == Some(&base);
            if kept.is_empty() {
                if last_of_producer {
                    next.insert(base, ModelBatch { horizon: None, offsets: kept, ..b.clone() });
                }
                continue;
            }
            let tombstones = kept.iter().any(|o| self.produced[o].value.is_none());
            let horizon = if tombstones && b.horizon.is_none() { Some(now + RETENTION_MS) } else { b.horizon };
            next.insert(base, ModelBatch { horizon, offsets: kept, ..b.clone() });
        }
        self.model = next;
    }

    /// One pass of the real code over the real log. Returns map_end.
    fn real_pass(&mut self, entries: usize) -> Result<i64, TestCaseError> {
        let mut map = OffsetMap::with_capacity(entries);
        let mut map_end = self.clean_offset - 1;
        for b in &self.log {
            let h = batch::parse_header(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if h.last_offset() < self.clean_offset {
                continue;
            }
            match filter::map_batch_from(b, self.clean_offset, &[], &mut map) {
                Ok(MapProgress::Mapped { last_offset }) => map_end = last_offset,
                Ok(MapProgress::Stopped { next_offset }) => {
                    map_end = next_offset - 1;
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("map_batch: {e}"))),
            }
        }
        let rules = Rules {
            map: &map,
            map_end,
            now_ms: self.now,
            delete_retention_ms: RETENTION_MS,
            aborted: &[],
            producer_last_batch: &self.producer_last_batch,
        };
        let mut txns = TxnTracker::default();
        let mut out = Vec::with_capacity(self.log.len());
        for b in &self.log {
            let h = batch::parse_header(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if h.base_offset > map_end {
                out.push(b.clone());
                continue;
            }
            let f =
                filter::filter_batch(b, &rules, &mut txns).map_err(|e| TestCaseError::fail(format!("filter: {e}")))?;
            prop_assert_eq!(f.records_in as i32, h.records_count);
            let kept = match &f.outcome {
                Outcome::Verbatim => {
                    out.push(b.clone());
                    h.records_count
                }
                Outcome::Rewritten(n) => {
                    out.push(n.clone());
                    batch::parse_header(n).map_err(|e| TestCaseError::fail(e.to_string()))?.records_count
                }
                Outcome::Dropped => 0,
            };
            prop_assert_eq!(f.records_kept as i32, kept);
            if let Outcome::Rewritten(n) = &f.outcome {
                prop_assert!(n != b, "Rewritten must differ from the input (else Verbatim)");
            }
        }
        self.log = out;
        self.clean_offset = self.clean_offset.max(map_end + 1);
        Ok(map_end)
    }

    fn clean(&mut self, clock_step_ms: i64, entries: usize) -> Result<(), TestCaseError> {
        self.now += clock_step_ms;
        let before = self.tombstones_in_log()?;
        let (model_end, model_map) = self.model_map(entries);
        let map_end = self.real_pass(entries)?;
        prop_assert_eq!(map_end, model_end, "the real map and the model stop at the same offset");
        self.model_filter(map_end, &model_map);
        self.check(map_end, &before)
    }

    /// Tombstone offsets in the real log, with their batch's horizon and base offset.
    fn tombstones_in_log(&self) -> Result<BTreeMap<i64, (Option<i64>, i64)>, TestCaseError> {
        let mut out = BTreeMap::new();
        for b in &self.log {
            let d = records::decode(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A keyless record is no tombstone: it has no key to delete.
            for r in d.records().filter(|r| r.key.is_some() && r.value.is_none()) {
                out.insert(r.offset, (d.delete_horizon_ms(), d.header.base_offset));
            }
        }
        Ok(out)
    }

    fn check(&mut self, map_end: i64, before: &BTreeMap<i64, (Option<i64>, i64)>) -> Result<(), TestCaseError> {
        // Same batches, offsets and horizons as the model.
        let mut real = Vec::new();
        for b in &self.log {
            let d = records::decode(b).map_err(|e| TestCaseError::fail(format!("output batch: {e}")))?;
            prop_assert_eq!(d.header.size, b.len());
            let h = d.header;
            let o = &self.originals[&h.base_offset];
            prop_assert_eq!(
                (h.base_offset, h.last_offset_delta, h.base_sequence, h.producer_id, h.producer_epoch),
                (o.base_offset, o.last_offset_delta, o.base_sequence, o.producer_id, o.producer_epoch)
            );
            prop_assert_eq!(h.partition_leader_epoch, o.partition_leader_epoch);
            prop_assert_eq!(h.is_log_append_time(), o.is_log_append_time());
            // maxTimestamp: the stamp (LogAppendTime) or the kept records' maximum (CreateTime,
            // from NO_TIMESTAMP as Kafka's builder). An emptied batch keeps the maxTimestamp of
            // the batch it was emptied from (Kafka's writeEmptyHeader; records.rs tests it).
            if h.is_log_append_time() {
                prop_assert_eq!(h.max_timestamp, o.max_timestamp, "stamp of batch {}", h.base_offset);
            } else if !d.is_empty() {
                let max = d.records().map(|r| r.timestamp).fold(-1, i64::max);
                prop_assert_eq!(h.max_timestamp, max, "maxTimestamp of batch {}", h.base_offset);
            }
            // kafka-protocol's decoder reads it too, with the same offsets.
            let theirs = RecordBatchDecoder::decode(&mut b.clone())
                .map_err(|e| TestCaseError::fail(format!("kafka-protocol cannot decode a cleaned batch: {e:#}")))?;
            prop_assert_eq!(
                theirs.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
                d.records().map(|r| r.offset).collect::<Vec<_>>()
            );
            for r in d.records() {
                let p = &self.produced[&r.offset];
                let got = Produced {
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r.headers.to_vec(),
                    timestamp: r.timestamp,
                };
                prop_assert_eq!(&got, p, "record {} changed", r.offset);
            }
            real.push((h.base_offset, d.records().map(|r| r.offset).collect::<Vec<_>>(), d.delete_horizon_ms()));
        }
        let model: Vec<_> = self.model.iter().map(|(&base, b)| (base, b.offsets.clone(), b.horizon)).collect();
        prop_assert_eq!(&real, &model, "retained offsets and horizons (base, offsets, horizon)");

        // Tombstones: kept at least delete.retention.ms after the pass that first kept them,
        // gone after the first pass at or past their horizon (unless superseded earlier).
        let after = self.tombstones_in_log()?;
        for (&o, &(_, base)) in before {
            if after.contains_key(&o) {
                continue;
            }
            let key = self.key(o).map(<[u8]>::to_vec);
            let superseded =
                o < map_end && self.produced.range(o + 1..=map_end).any(|(_, p)| p.key.is_some() && p.key == key);
            let expired = self.first_kept.get(&o).is_some_and(|&t| self.now >= t + RETENTION_MS);
            prop_assert!(superseded || expired, "tombstone {} (batch {}) dropped early at {}", o, base, self.now);
        }
        for (&o, &(horizon, base)) in &after {
            if base > map_end {
                continue;
            }
            let first = *self.first_kept.entry(o).or_insert(self.now);
            prop_assert_eq!(horizon, Some(first + RETENTION_MS), "tombstone {} carries its first pass's horizon", o);
            prop_assert!(o > map_end || self.now < first + RETENTION_MS, "tombstone {} outlived its horizon", o);
        }

        // A reader of the cleaned log ends with the same key -> value map as one of the
        // uncleaned log.
        let mut uncleaned = HashMap::new();
        for p in self.produced.values() {
            replay(&mut uncleaned, p.key.clone(), p.value.clone());
        }
        let mut cleaned = HashMap::new();
        for b in &self.log {
            let d = records::decode(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for r in d.records() {
                replay(&mut cleaned, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec));
            }
        }
        prop_assert_eq!(cleaned, uncleaned);
        Ok(())
    }
}

fn replay(state: &mut HashMap<Vec<u8>, Vec<u8>>, key: Option<Vec<u8>>, value: Option<Vec<u8>>) {
    let Some(k) = key else { return };
    match value {
        Some(v) => state.insert(k, v),
        None => state.remove(&k),
    };
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn cleaner_matches_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut h = Harness::default();
        for s in &steps {
            match s {
                Step::Produce(b) => h.produce(b),
                Step::Clean { clock_step_ms, map_entries } => h.clean(*clock_step_ms, *map_entries)?,
            }
        }
        // Then passes with a large map until everything is clean and every horizon passed.
        h.clean(0, 64)?;
        h.clean(RETENTION_MS, 64)?;
        h.clean(0, 64)?;
    }
}
