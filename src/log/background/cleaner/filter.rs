//! The cleaner's retention rules for one batch, as Kafka's `Cleaner` applies them: pure
//! functions of the batch bytes, the offset map and the pass's inputs (no I/O, no clock).
//!
//! ```text
//! phase 1  map_batch     every keyed record of a non-control, non-aborted batch: map[key] = offset
//! phase 2  filter_batch  per batch (offset order):  Verbatim | Rewritten(bytes) | Dropped
//!          per record:   offset > map_end          -> keep   (outside the cleaned range)
//!                        aborted transaction       -> drop   (the whole batch)
//!                        control batch (a marker)  -> keep   until its transaction has no data
//!                                                             left and its horizon has passed
//!                        no key                    -> drop
//!                        offset < map[key]         -> drop   (superseded)
//!                        tombstone, horizon passed -> drop
//!                        else                      -> keep
//! ```
//!
//! Invariants:
//! * A batch whose records all stay and that needs no new delete horizon is kept verbatim.
//! * A kept tombstone (or a marker whose transaction has no data left) in a batch without a
//!   horizon gets one: `now + delete.retention.ms` (KIP-534), so it survives at least
//!   `delete.retention.ms` after the pass that first kept it and goes in the first pass at or
//!   after its horizon.
//! * The last batch of a producer (`producer_last_batch`) is never dropped, only emptied
//!   (Kafka's RETAIN_EMPTY), so the log alone still holds each producer's last sequence.
//! * Never panics on any bytes: a batch that does not decode is a [`CleanError`].

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::map::OffsetMap;
use crate::broker::batch::{BatchError, BatchHeader};
use crate::broker::records::{self, DecodedBatch};

/// An aborted transaction on this partition (empty until transactions exist, issue #13):
/// Kafka's `AbortedTxn` (`last_offset` is the offset of its ABORT marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// How far [`map_batch`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapProgress {
    /// Every record of the batch is in the map (or needs not be); `last_offset` is the batch's.
    Mapped { last_offset: i64 },
    /// The map filled up: records from `next_offset` on are not mapped.
    Stopped { next_offset: i64 },
}

/// Inputs of phase 2 that are fixed for one pass.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub map: &'a OffsetMap,
    /// Records with offset > map_end are outside the cleaned range and kept (the pass only
    /// calls filter for batches whose last offset <= map_end, but a batch straddling map_end
    /// keeps its records above it).
    pub map_end: i64,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub aborted: &'a [AbortedTxn],
    /// producer id -> base offset of the last batch `ProducerStates` remembers for it on this
    /// partition: that batch is kept, empty if need be (Kafka's RETAIN_EMPTY).
    pub producer_last_batch: &'a HashMap<i64, i64>,
}

/// What phase 2 decided for one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub outcome: Outcome,
    pub records_in: u32,
    pub records_kept: u32,
    /// The delete horizon the kept batch carries (newly set by this pass or already there),
    /// if it holds a tombstone or is a marker: the pass records the minimum so a later pass
    /// removes expired tombstones.
    pub delete_horizon_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep the input bytes unchanged.
    Verbatim,
    /// Keep these bytes instead: same baseOffset, lastOffsetDelta, baseSequence, producer id
    /// and epoch, partition leader epoch, codec; a subset of the records at their original
    /// offsets; delete-horizon bit (attributes bit 6) and baseTimestamp = horizon when set;
    /// CRC-32C valid. An emptied batch kept for its producer has no records and no codec.
    Rewritten(Bytes),
    /// Nothing of this batch stays.
    Dropped,
}

/// A batch the cleaner cannot read. Kafka marks such a partition uncleanable; the pass stops
/// and leaves the log as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanError {
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    #[error("batch too large to clean: {0}")]
    TooLarge(String),
}

impl From<BatchError> for CleanError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. } => {
                CleanError::TooLarge(e.to_string())
            }
            other => CleanError::Corrupt(other.to_string()),
        }
    }
}

/// Decodes exactly one batch: `batch` must be the whole batch and nothing more.
fn decode_one(batch: &[u8]) -> Result<DecodedBatch<'_>, CleanError> {
    let d = records::decode(batch)?;
    if d.header.size != batch.len() {
        return Err(CleanError::Corrupt(format!(
            "{} bytes after the batch at offset {}",
            batch.len() - d.header.size,
            d.header.base_offset
        )));
    }
    Ok(d)
}

/// Whether a data batch belongs to an aborted transaction: transactional, of the
/// transaction's producer, within its offsets. Linear in `aborted`, which holds the pass's
/// range only (empty until #13).
fn is_aborted(h: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|t| {
            t.producer_id == h.producer_id && t.first_offset <= h.base_offset && h.last_offset() <= t.last_offset
        })
}

/// Phase 1: adds every keyed, non-control, non-aborted record of `batch` (one whole v2 batch,
/// offsets already assigned) to `map`. Stops at the first record whose key does not fit and
/// returns `Stopped { next_offset }` (records from that offset on are not mapped); else
/// `Mapped { last_offset }` (the batch's last offset).
pub fn map_batch(batch: &[u8], aborted: &[AbortedTxn], map: &mut OffsetMap) -> Result<MapProgress, CleanError> {
    map_batch_from(batch, i64::MIN, aborted, map)
}

/// [`map_batch`] for records at `from_offset` or later only (Kafka's `record.offset >=
/// startOffset`): the first dirty batch may straddle the clean offset, and its clean records
/// must neither take room in the map nor stop it.
pub fn map_batch_from(
    batch: &[u8],
    from_offset: i64,
    aborted: &[AbortedTxn],
    map: &mut OffsetMap,
) -> Result<MapProgress, CleanError> {
    let d = decode_one(batch)?;
    let h = d.header;
    if !h.is_control() && !is_aborted(&h, aborted) {
        for r in d.records().filter(|r| r.offset >= from_offset) {
            if let Some(key) = r.key
                && map.put(key, r.offset).is_err()
            {
                return Ok(MapProgress::Stopped { next_offset: r.offset });
            }
        }
    }
    Ok(MapProgress::Mapped { last_offset: h.last_offset() })
}

/// Kafka's `ControlRecordType`: the key of a control record is (version i16, type i16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlType {
    Abort,
    Commit,
    /// Other control records (leader change, snapshots; unknown types): kept for good.
    Other,
}

fn control_type(d: &DecodedBatch<'_>) -> Result<Option<ControlType>, CleanError> {
    let Some(first) = d.record(0) else { return Ok(None) };
    let key = first.key.unwrap_or_default();
    if key.len() < 4 {
        return Err(CleanError::Corrupt(format!(
            "control record key of {} bytes at offset {} (at least 4 expected)",
            key.len(),
            first.offset
        )));
    }
    let version = i16::from_be_bytes([key[0], key[1]]);
    if version < 0 {
        return Err(CleanError::Corrupt(format!("control record version {version} at offset {}", first.offset)));
    }
    Ok(Some(match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => ControlType::Other,
    }))
}

/// Tracks, across the batches of one pass in offset order, which transactions still have data
/// (Kafka's `CleanedTransactionMetadata`), so a marker is kept while its transaction has data.
#[derive(Debug, Default)]
pub struct TxnTracker {
    /// Aborted transactions not reached yet, by descending first offset (next one last).
    pending: Option<Vec<AbortedTxn>>,
    /// Producers whose aborted transaction has begun: whether a batch of it was seen.
    ongoing_aborted: HashMap<i64, bool>,
    /// Producers with a transactional batch seen since their last marker.
    ongoing_committed: HashSet<i64>,
}

impl TxnTracker {
    fn begin_aborted_up_to(&mut self, aborted: &[AbortedTxn], offset: i64) {
        let pending = self.pending.get_or_insert_with(|| {
            let mut v = aborted.to_vec();
            v.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
            v
        });
        while pending.last().is_some_and(|t| t.first_offset <= offset) {
            if let Some(t) = pending.pop() {
                self.ongoing_aborted.entry(t.producer_id).or_insert(false);
            }
        }
    }

    /// Kafka's `onBatchRead`: true if the data batch belongs to an aborted transaction.
    fn on_data_batch(&mut self, h: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
        self.begin_aborted_up_to(aborted, h.last_offset());
        if !h.is_transactional() {
            return false;
        }
        if let Some(seen) = self.ongoing_aborted.get_mut(&h.producer_id) {
            *seen = true;
            return true;
        }
        self.ongoing_committed.insert(h.producer_id);
        false
    }

    /// Kafka's `onControlBatchRead`: true if the marker's transaction has no data left in the
    /// log (the marker may then expire like a tombstone).
    fn on_control_batch(&mut self, h: &BatchHeader, kind: Option<ControlType>, aborted: &[AbortedTxn]) -> bool {
        self.begin_aborted_up_to(aborted, h.last_offset());
        match kind {
            None => true,
            // The aborted data this pass saw is dropped by it; the marker stays until a pass
            // finds no data of its transaction.
            Some(ControlType::Abort) => !self.ongoing_aborted.remove(&h.producer_id).unwrap_or(false),
            Some(ControlType::Commit) => !self.ongoing_committed.remove(&h.producer_id),
            Some(ControlType::Other) => false,
        }
    }
}

/// Phase 2: Kafka's retention rules for one batch (offset order, clean section first, then
/// dirty). Never panics on any bytes.
pub fn filter_batch(batch: &[u8], rules: &Rules<'_>, txns: &mut TxnTracker) -> Result<Filtered, CleanError> {
    let d = decode_one(batch)?;
    let h = d.header;
    let horizon = d.delete_horizon_ms();
    // Kafka's checkBatchRetention: a marker piggy-backs on tombstone expiry once its
    // transaction has no data; aborted data goes as a whole.
    let (can_discard, discard_all) = if h.is_control() {
        let can = txns.on_control_batch(&h, control_type(&d)?, rules.aborted);
        (can, can && horizon.is_some_and(|t| t <= rules.now_ms))
    } else {
        let aborted = txns.on_data_batch(&h, rules.aborted);
        (aborted, aborted)
    };
    let last_of_producer = h.producer_id >= 0 && rules.producer_last_batch.get(&h.producer_id) == Some(&h.base_offset);

    let mut keep = Vec::with_capacity(d.len());
    let mut tombstones = false;
    for r in d.records() {
        let retained = if discard_all {
            false
        } else if h.is_control() {
            true
        } else {
            should_retain(r, horizon, rules)
        };
        if retained {
            keep.push(r.index);
            tombstones |= r.value.is_none();
        }
    }
    let records_in = d.len() as u32;
    let records_kept = keep.len() as u32;
    let marker = h.is_control() && can_discard;
    let filtered = |outcome, delete_horizon_ms| Filtered { outcome, records_in, records_kept, delete_horizon_ms };

    if keep.is_empty() {
        if !last_of_producer {
            return Ok(filtered(Outcome::Dropped, None));
        }
        let empty = records::empty_batch(&h);
        let outcome = if empty[..] == *batch { Outcome::Verbatim } else { Outcome::Rewritten(empty) };
        return Ok(filtered(outcome, None));
    }
    let needs_horizon = (tombstones || marker) && horizon.is_none();
    let carried = if needs_horizon { Some(rules.now_ms.saturating_add(rules.delete_retention_ms)) } else { horizon };
    let reported = if tombstones || h.is_control() { carried } else { None };
    if keep.len() == d.len() && !needs_horizon {
        return Ok(filtered(Outcome::Verbatim, reported));
    }
    let bytes = records::rewrite(&d, &keep, carried)?;
    Ok(filtered(Outcome::Rewritten(bytes), reported))
}

/// Kafka's `Cleaner.shouldRetainRecord` for a record of a data batch that is not aborted.
fn should_retain(r: records::RecordRef<'_>, horizon: Option<i64>, rules: &Rules<'_>) -> bool {
    if r.offset > rules.map_end {
        return true;
    }
    let Some(key) = r.key else { return false };
    let latest = rules.map.get(key).is_none_or(|o| r.offset >= o);
    let retain_delete = horizon.is_none_or(|t| rules.now_ms < t);
    latest && (r.value.is_some() || retain_delete)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::broker::records::tests::{encode, encode_with, kp_decode};

    const NOW: i64 = 1_000_000;
    const RETENTION: i64 = 86_400_000;

    fn rules<'a>(map: &'a OffsetMap, last: &'a HashMap<i64, i64>, aborted: &'a [AbortedTxn]) -> Rules<'a> {
        Rules { map, map_end: 99, now_ms: NOW, delete_retention_ms: RETENTION, aborted, producer_last_batch: last }
    }

    fn kept_offsets(f: &Filtered, input: &Bytes) -> Vec<i64> {
        match &f.outcome {
            Outcome::Verbatim => kp_decode(input).iter().map(|r| r.offset).collect(),
            Outcome::Rewritten(b) => kp_decode(b).iter().map(|r| r.offset).collect(),
            Outcome::Dropped => vec![],
        }
    }

    fn map_all(batches: &[&Bytes], cap: usize) -> OffsetMap {
        let mut m = OffsetMap::with_capacity(cap);
        for b in batches {
            assert!(matches!(map_batch(b, &[], &mut m), Ok(MapProgress::Mapped { .. })));
        }
        m
    }

    /// A control batch (marker) at `offset`: key = (version 0, type), value = (version 0,
    /// coordinator epoch 0).
    fn marker(offset: i64, pid: i64, commit: bool) -> Bytes {
        let key = [0u8, 0, 0, commit as u8];
        encode_with(offset, Compression::None, pid, true, true, &[(Some(&key), Some(&[0, 0, 0, 0, 0, 0]), 5, &[])])
    }

    #[test]
    fn superseded_keyless_and_later_records() {
        let a = encode(
            0,
            Compression::Gzip,
            -1,
            &[(Some(b"k"), Some(b"1"), 1, &[]), (None, Some(b"x"), 2, &[]), (Some(b"j"), Some(b"2"), 3, &[])],
        );
        let b = encode(3, Compression::None, -1, &[(Some(b"k"), Some(b"3"), 4, &[])]);
        let m = map_all(&[&a, &b], 10);
        assert_eq!(m.get(b"k"), Some(3));
        let last = HashMap::new();
        let r = rules(&m, &last, &[]);
        let mut t = TxnTracker::default();
        let f = filter_batch(&a, &r, &mut t).expect("filters");
        assert_eq!((f.records_in, f.records_kept, f.delete_horizon_ms), (3, 1, None));
        assert_eq!(kept_offsets(&f, &a), vec![2]);
        let Outcome::Rewritten(out) = &f.outcome else { panic!("rewritten: {f:?}") };
        let oh = crate::broker::batch::parse_header(out).expect("header");
        assert_eq!((oh.base_offset, oh.last_offset_delta, oh.compression()), (0, 2, 1));
        let f = filter_batch(&b, &r, &mut t).expect("filters");
        assert_eq!(f.outcome, Outcome::Verbatim);
        // Above map_end: kept whatever it is.
        let r = Rules { map_end: 1, ..r };
        let f = filter_batch(&a, &r, &mut TxnTracker::default()).expect("filters");
        assert_eq!(kept_offsets(&f, &a), vec![2]);
        let r = Rules { map_end: 0, ..r };
        let f = filter_batch(&a, &r, &mut TxnTracker::default()).expect("filters");
        assert_eq!(kept_offsets(&f, &a), vec![1, 2], "keyless record above map_end stays");
    }

    #[test]
    fn tombstones_get_a_horizon_then_expire() {
        let a = encode(0, Compression::Lz4, -1, &[(Some(b"k"), None, 10, &[]), (Some(b"j"), Some(b"v"), 20, &[])]);
        let m = map_all(&[&a], 10);
        let last = HashMap::new();
        let r = rules(&m, &last, &[]);
        let f = filter_batch(&a, &r, &mut TxnTracker::default()).expect("filters");
        assert_eq!(f.delete_horizon_ms, Some(NOW + RETENTION));
        let Outcome::Rewritten(first) = f.outcome else { panic!("needs a horizon") };
        let d = records::decode(&first).expect("decodes");
        assert_eq!(d.delete_horizon_ms(), Some(NOW + RETENTION));
        assert_eq!(d.records().map(|r| r.timestamp).collect::<Vec<_>>(), vec![10, 20]);
        // Before the horizon: verbatim, horizon reported.
        let r2 = Rules { now_ms: NOW + RETENTION - 1, ..r };
        let f = filter_batch(&first, &r2, &mut TxnTracker::default()).expect("filters");
        assert_eq!((f.outcome, f.delete_horizon_ms), (Outcome::Verbatim, Some(NOW + RETENTION)));
        // At the horizon: the tombstone goes, the batch keeps its horizon bit.
        let r3 = Rules { now_ms: NOW + RETENTION, ..r };
        let f = filter_batch(&first, &r3, &mut TxnTracker::default()).expect("filters");
        assert_eq!(kept_offsets(&f, &first), vec![1]);
        assert_eq!(f.delete_horizon_ms, None, "no tombstone left to schedule");
        // A batch holding only the expired tombstone is dropped...
        let t = encode(5, Compression::None, 8, &[(Some(b"z"), None, 1, &[])]);
        let mz = map_all(&[&t], 10);
        let f = filter_batch(&t, &rules(&mz, &last, &[]), &mut TxnTracker::default()).expect("filters");
        let Outcome::Rewritten(t2) = f.outcome else { panic!("horizon") };
        let later = Rules { now_ms: NOW + RETENTION, ..rules(&mz, &last, &[]) };
        let f = filter_batch(&t2, &later, &mut TxnTracker::default()).expect("filters");
        assert_eq!(f.outcome, Outcome::Dropped);
        // ...unless it is its producer's last batch: then it stays, empty.
        let last8 = HashMap::from([(8, 5)]);
        let later = Rules { now_ms: NOW + RETENTION, ..rules(&mz, &last8, &[]) };
        let f = filter_batch(&t2, &later, &mut TxnTracker::default()).expect("filters");
        let Outcome::Rewritten(empty) = &f.outcome else { panic!("retained empty: {f:?}") };
        let eh = crate::broker::batch::parse_header(empty).expect("header");
        assert_eq!((eh.records_count, eh.base_offset, eh.producer_id, eh.base_sequence), (0, 5, 8, 100));
        assert_eq!(f.records_kept, 0);
        // The empty batch is kept as it is by later passes.
        let f = filter_batch(empty, &later, &mut TxnTracker::default()).expect("filters");
        assert_eq!(f.outcome, Outcome::Verbatim);
    }

    #[test]
    fn aborted_data_goes_and_markers_wait_for_their_data() {
        // pid 5: aborted txn at 0..=1 (marker at 2); pid 6: committed txn at 3 (marker at 4).
        let ab = encode_with(
            0,
            Compression::Zstd,
            5,
            true,
            false,
            &[(Some(b"k"), Some(b"bad"), 1, &[]), (Some(b"j"), Some(b"bad"), 1, &[])],
        );
        let abort = marker(2, 5, false);
        let co = encode_with(3, Compression::None, 6, true, false, &[(Some(b"k"), Some(b"good"), 1, &[])]);
        let commit = marker(4, 6, true);
        let aborted = [AbortedTxn { producer_id: 5, first_offset: 0, last_offset: 2 }];
        let mut m = OffsetMap::with_capacity(10);
        for b in [&ab, &abort, &co, &commit] {
            map_batch(b, &aborted, &mut m).expect("maps");
        }
        assert_eq!((m.get(b"k"), m.get(b"j"), m.len()), (Some(3), None, 1), "aborted data and markers are not mapped");
        let last = HashMap::new();
        let r = rules(&m, &last, &aborted);
        let mut t = TxnTracker::default();
        let outs: Vec<Filtered> =
            [&ab, &abort, &co, &commit].iter().map(|b| filter_batch(b, &r, &mut t).expect("filters")).collect();
        assert_eq!(outs[0].outcome, Outcome::Dropped);
        assert_eq!(outs[1].outcome, Outcome::Verbatim, "abort marker kept: this pass saw its data");
        assert_eq!(outs[2].outcome, Outcome::Verbatim);
        assert_eq!(outs[3].outcome, Outcome::Verbatim, "commit marker kept: its data is there");
        assert_eq!(outs[1].delete_horizon_ms, None);
        // Next pass: the aborted data is gone; the abort marker now gets a horizon.
        let mut t = TxnTracker::default();
        let f = filter_batch(&abort, &r, &mut t).expect("filters");
        assert_eq!(f.delete_horizon_ms, Some(NOW + RETENTION));
        let Outcome::Rewritten(abort2) = f.outcome else { panic!("horizon for the marker") };
        assert_eq!(kp_decode(&abort2).len(), 1);
        // And once that horizon has passed, it goes.
        let later = Rules { now_ms: NOW + RETENTION, ..r };
        assert_eq!(
            filter_batch(&abort2, &later, &mut TxnTracker::default()).expect("filters").outcome,
            Outcome::Dropped
        );
        // A commit marker whose data was compacted away earlier: horizon too.
        let f = filter_batch(&commit, &r, &mut TxnTracker::default()).expect("filters");
        assert!(matches!(f.outcome, Outcome::Rewritten(_)));
        assert_eq!(f.delete_horizon_ms, Some(NOW + RETENTION));
        // An aborted batch that is its producer's last is kept empty.
        let last5 = HashMap::from([(5, 0)]);
        let r5 = rules(&m, &last5, &aborted);
        let f = filter_batch(&ab, &r5, &mut TxnTracker::default()).expect("filters");
        let Outcome::Rewritten(e) = f.outcome else { panic!("retain empty") };
        let eh = crate::broker::batch::parse_header(&e).expect("header");
        assert!(eh.is_transactional() && eh.records_count == 0 && eh.last_offset() == 1);
    }

    #[test]
    fn other_control_records_stay_and_bad_ones_are_errors() {
        let m = OffsetMap::with_capacity(1);
        let last = HashMap::new();
        let r = Rules { now_ms: i64::MAX, ..rules(&m, &last, &[]) };
        // A leader-change record (type 2): kept whatever the clock, never given a horizon.
        let leader_change =
            encode_with(0, Compression::None, -1, false, true, &[(Some(&[0, 0, 0, 2]), Some(b"x"), 1, &[])]);
        let f = filter_batch(&leader_change, &r, &mut TxnTracker::default()).expect("filters");
        assert_eq!((f.outcome, f.delete_horizon_ms), (Outcome::Verbatim, None));
        // Kafka's ControlRecordType.parse refuses short keys and negative versions.
        for key in [&[0u8, 0, 0][..], &[0xff, 0xff, 0, 0]] {
            let bad = encode_with(0, Compression::None, 5, true, true, &[(Some(key), Some(b"x"), 1, &[])]);
            assert!(matches!(filter_batch(&bad, &r, &mut TxnTracker::default()), Err(CleanError::Corrupt(_))));
        }
        // A commit marker with no data seen and a passed horizon is dropped.
        let commit = marker(0, 6, true);
        let d = records::decode(&commit).expect("decodes");
        let expired = records::rewrite(&d, &[0], Some(10)).expect("rewrite");
        let f = filter_batch(&expired, &r, &mut TxnTracker::default()).expect("filters");
        assert_eq!(f.outcome, Outcome::Dropped);
        // ...unless its transaction wrote data earlier in the same pass.
        let data = encode_with(0, Compression::None, 6, true, false, &[(Some(b"k"), Some(b"v"), 1, &[])]);
        let mut t = TxnTracker::default();
        filter_batch(&data, &r, &mut t).expect("filters");
        let f = filter_batch(&expired, &r, &mut t).expect("filters");
        assert_eq!((f.outcome, f.delete_horizon_ms), (Outcome::Verbatim, Some(10)));
    }

    #[test]
    fn map_stops_at_the_first_key_that_does_not_fit() {
        let a = encode(
            10,
            Compression::Snappy,
            -1,
            &[(Some(b"a"), Some(b"1"), 1, &[]), (Some(b"a"), Some(b"2"), 1, &[]), (Some(b"b"), Some(b"3"), 1, &[])],
        );
        let mut m = OffsetMap::with_capacity(1);
        assert_eq!(map_batch(&a, &[], &mut m), Ok(MapProgress::Stopped { next_offset: 12 }));
        assert_eq!(m.get(b"a"), Some(11));
        let mut m = OffsetMap::with_capacity(2);
        assert_eq!(map_batch(&a, &[], &mut m), Ok(MapProgress::Mapped { last_offset: 12 }));
        // From the clean offset on only: the first record's key takes no room.
        let mut m = OffsetMap::with_capacity(1);
        assert_eq!(map_batch_from(&a, 12, &[], &mut m), Ok(MapProgress::Mapped { last_offset: 12 }));
        assert_eq!((m.get(b"a"), m.get(b"b")), (None, Some(12)));
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let a = encode(0, Compression::None, -1, &[(Some(b"a"), Some(b"1"), 1, &[])]);
        let mut m = OffsetMap::with_capacity(1);
        let last = HashMap::new();
        for cut in 0..a.len() {
            assert!(map_batch(&a[..cut], &[], &mut m).is_err());
            assert!(filter_batch(&a[..cut], &rules(&m, &last, &[]), &mut TxnTracker::default()).is_err());
        }
        let mut two = a.to_vec();
        two.extend_from_slice(&a);
        assert!(matches!(map_batch(&two, &[], &mut m), Err(CleanError::Corrupt(_))));
    }
}
