//! Planning, from the index alone (no I/O): when a head rolls, which range is cleanable, which
//! partitions are due and in what order, and how much one pass takes (RFC 0003, section 3).
//!
//! Kafka's rules with chunks standing for batches and recorded rolls for segments:
//! * the head (Kafka's active segment) rolls once it holds `segment.bytes`, or once its first
//!   chunk is older than min(`segment.ms`, `max.compaction.lag.ms`); never before;
//! * `uncleanable = min(head, LSO, start of the first rolled segment whose largest timestamp is
//!   within min.compaction.lag.ms)`: segment-granular, as Kafka's `LogCleanerManager`;
//! * dirty = `[clean_offset, uncleanable)`, clean = `[log start, clean_offset)`, in chunk bytes;
//! * due when (dirty > 0 and (ratio >= `min.cleanable.dirty.ratio` or the first dirty roll is
//!   older than `max.compaction.lag.ms`)) or a delete horizon written into the log has passed.

use skiff_controller::image::{Chunk, CleanerState};

use crate::broker::dynamic_config::EffectiveTopicConfig;

/// The cleaner's view of one partition at planning time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionLog<'a> {
    /// Every chunk in offset order.
    pub chunks: &'a [Chunk],
    pub log_start: i64,
    pub high_watermark: i64,
    /// Kafka's last stable offset (the high watermark until transactions exist).
    pub last_stable_offset: i64,
    pub state: &'a CleanerState,
}

/// Where the head rolls now, if it is due: the base of the head's newest chunk, which stays in
/// the new head. Kafka rolls its active segment only when an append arrives, so the newest
/// batch is always in the active segment and never cleaned; a log therefore never ends in a
/// gap, and a consumer reading up to the high watermark always finds a last record (a log
/// whose last record was a removed tombstone would leave read-to-end consumers, such as
/// Connect's `KafkaBasedLog`, waiting for an offset that no batch holds). Skiff keeps that
/// property by leaving the newest chunk in the head: a head of one chunk does not roll.
pub(crate) fn roll_offset(log: &PartitionLog<'_>, cfg: &EffectiveTopicConfig, now_ms: i64) -> Option<i64> {
    let head = log.state.head_offset.max(log.log_start);
    if log.high_watermark <= head {
        return None;
    }
    let head_chunks: Vec<&Chunk> = log.chunks.iter().filter(|c| c.base_offset >= head).collect();
    let first = head_chunks.first()?;
    let newest = head_chunks.last()?;
    if newest.base_offset <= head {
        return None;
    }
    let bytes: u64 = head_chunks.iter().map(|c| c.len).sum();
    let max_age = cfg.segment_ms.min(cfg.max_compaction_lag_ms);
    let old = first.max_timestamp >= 0 && now_ms.saturating_sub(first.max_timestamp) > max_age;
    (bytes >= cfg.segment_bytes.max(1) as u64 || old).then_some(newest.base_offset)
}

/// The cleanable range of one partition and why it is (or is not) due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cleanable {
    /// Effective clean offset (>= log start).
    pub clean_offset: i64,
    /// First offset never touched (Kafka's first uncleanable offset).
    pub uncleanable: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// dirty / (clean + dirty).
    pub ratio: f64,
    /// The first dirty roll is older than `max.compaction.lag.ms`.
    pub past_max_lag: bool,
    /// A delete horizon written by an earlier pass has passed.
    pub horizon_passed: bool,
    /// Whether a pass should run.
    pub due: bool,
}

/// Kafka's cleanable range and due rule for one partition.
pub(crate) fn cleanable(log: &PartitionLog<'_>, cfg: &EffectiveTopicConfig, now_ms: i64) -> Cleanable {
    let s = log.state;
    let head = s.head_offset.max(log.log_start);
    let clean_offset = s.clean_offset.max(log.log_start).min(head);
    let mut uncleanable = head.min(log.last_stable_offset);
    // Segment-granular min lag: the first rolled segment holding a record newer than the lag
    // and everything after it stay dirty-but-uncleanable.
    if cfg.min_compaction_lag_ms > 0 {
        let mut start = clean_offset;
        for r in &s.rolls {
            if r.end_offset <= clean_offset {
                continue;
            }
            if r.max_timestamp > now_ms.saturating_sub(cfg.min_compaction_lag_ms) {
                uncleanable = uncleanable.min(start);
                break;
            }
            start = r.end_offset;
        }
    }
    let uncleanable = uncleanable.max(clean_offset);
    let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
    for c in log.chunks {
        if c.last_offset < clean_offset {
            clean_bytes += c.len;
        } else if c.base_offset < uncleanable {
            dirty_bytes += c.len;
        }
    }
    let total = clean_bytes + dirty_bytes;
    let ratio = if total == 0 { 0.0 } else { dirty_bytes as f64 / total as f64 };
    let past_max_lag = dirty_bytes > 0
        && s.rolls.iter().find(|r| r.end_offset > clean_offset).is_some_and(|r| {
            r.first_timestamp >= 0 && now_ms.saturating_sub(r.first_timestamp) > cfg.max_compaction_lag_ms
        });
    let horizon_passed = total > 0 && s.next_horizon_ms.is_some_and(|h| h <= now_ms);
    let due = (dirty_bytes > 0 && (ratio >= cfg.min_cleanable_dirty_ratio || past_max_lag)) || horizon_passed;
    Cleanable { clean_offset, uncleanable, clean_bytes, dirty_bytes, ratio, past_max_lag, horizon_passed, due }
}

/// Filthiest first; partitions past `max.compaction.lag.ms` before all others.
pub(crate) fn order(a: &Cleanable, b: &Cleanable) -> std::cmp::Ordering {
    b.past_max_lag.cmp(&a.past_max_lag).then(b.ratio.total_cmp(&a.ratio))
}

/// Memory limits of one pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassLimits {
    /// Keys the offset map may hold (`cleaner_dedupe_buffer_bytes` × 0.9 / 24).
    pub max_map_entries: usize,
    /// Dirty bytes held between the two phases.
    pub dirty_buffer_bytes: u64,
}

/// What one pass reads, fixed before it reads anything.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PassPlan {
    /// Chunks wholly below the clean offset: streamed through the filter once.
    pub clean: Vec<Chunk>,
    /// Chunks of the dirty range: mapped, held, then filtered.
    pub dirty: Vec<Chunk>,
    /// Offset-map entries to allocate: bounded by the dirty chunks' offset span (a chunk holds
    /// at most one record per offset) and by the limit.
    pub map_entries: usize,
    pub clean_offset: i64,
    /// Bytes the pass will read: the chunks above.
    pub cleanable_bytes: u64,
}

/// The chunks of one pass: the whole clean section (Kafka rewrites it whole: a window of it
/// could leave a duplicate whose newer record has since become clean) and a prefix of the dirty
/// range whose offset span fits the map and whose bytes fit the dirty buffer (at least one
/// chunk, so a pass always progresses; a chunk larger than the map ends the mapped range inside
/// it, the rest of it is kept verbatim).
pub(crate) fn plan_pass(log: &PartitionLog<'_>, c: &Cleanable, limits: &PassLimits) -> PassPlan {
    let mut plan = PassPlan {
        clean: Vec::new(),
        dirty: Vec::new(),
        map_entries: 0,
        clean_offset: c.clean_offset,
        cleanable_bytes: 0,
    };
    let (mut span, mut bytes) = (0u64, 0u64);
    for ch in log.chunks {
        if ch.last_offset < log.log_start {
            continue;
        }
        if ch.last_offset < c.clean_offset {
            plan.cleanable_bytes += ch.len;
            plan.clean.push(ch.clone());
            continue;
        }
        if ch.base_offset >= c.uncleanable || ch.last_offset >= c.uncleanable {
            // Uncleanable is a chunk boundary (head, roll ends, the high watermark); a chunk
            // reaching past it is never touched.
            break;
        }
        let ch_span = (ch.last_offset - ch.base_offset.max(c.clean_offset) + 1).max(0) as u64;
        let fits = span + ch_span <= limits.max_map_entries as u64 && bytes + ch.len <= limits.dirty_buffer_bytes;
        if !plan.dirty.is_empty() && !fits {
            break;
        }
        span += ch_span;
        bytes += ch.len;
        plan.cleanable_bytes += ch.len;
        plan.dirty.push(ch.clone());
    }
    plan.map_entries = (span.min(limits.max_map_entries as u64) as usize).max(1);
    plan
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_controller::image::Roll;

    use super::*;
    use crate::broker::dynamic_config::{BrokerDefaults, KAFKA_MESSAGE_MAX_BYTES};

    fn chunk(base: i64, last: i64, len: u64, ts: i64) -> Chunk {
        Chunk {
            object: Arc::from(format!("o{base}").as_str()),
            position: 0,
            len,
            base_offset: base,
            last_offset: last,
            max_timestamp: ts,
        }
    }

    fn cfg() -> EffectiveTopicConfig {
        let none = Default::default();
        BrokerDefaults::new(&none, 1, KAFKA_MESSAGE_MAX_BYTES).effective(&Default::default())
    }

    fn log<'a>(chunks: &'a [Chunk], state: &'a CleanerState) -> PartitionLog<'a> {
        let hw = chunks.last().map_or(0, |c| c.last_offset + 1);
        PartitionLog { chunks, log_start: 0, high_watermark: hw, last_stable_offset: hw, state }
    }

    #[test]
    fn head_rolls_at_segment_bytes_or_age_never_before() {
        let chunks = [chunk(0, 9, 100, 1_000), chunk(10, 19, 100, 2_000)];
        let state = CleanerState::default();
        let c = EffectiveTopicConfig { segment_bytes: 250, segment_ms: 10_000, ..cfg() };
        assert_eq!(roll_offset(&log(&chunks, &state), &c, 5_000), None, "200 bytes, 4 s old");
        // The newest chunk stays in the head (Kafka's active segment keeps the newest batch).
        assert_eq!(
            roll_offset(&log(&chunks, &state), &EffectiveTopicConfig { segment_bytes: 200, ..c }, 5_000),
            Some(10)
        );
        assert_eq!(roll_offset(&log(&chunks, &state), &c, 11_001), Some(10), "first chunk older than segment.ms");
        let lag = EffectiveTopicConfig { max_compaction_lag_ms: 3_000, ..c };
        assert_eq!(roll_offset(&log(&chunks, &state), &lag, 4_001), Some(10), "max lag caps segment.ms");
        // A head of one chunk does not roll, however old or big: a quiet log keeps its newest
        // records uncleaned, so it never ends in a gap.
        let one = CleanerState { head_offset: 10, ..Default::default() };
        assert_eq!(roll_offset(&log(&chunks, &one), &EffectiveTopicConfig { segment_bytes: 1, ..c }, 99_999), None);
        // Nothing above the head: no roll.
        let rolled = CleanerState { head_offset: 20, ..Default::default() };
        assert_eq!(roll_offset(&log(&chunks, &rolled), &EffectiveTopicConfig { segment_bytes: 1, ..c }, 99_999), None);
    }

    #[test]
    fn cleanable_range_ratio_lags_and_horizon() {
        let chunks =
            [chunk(0, 9, 100, 1_000), chunk(10, 19, 100, 2_000), chunk(20, 29, 100, 3_000), chunk(30, 39, 100, 4_000)];
        let roll = |end, ts| Roll { end_offset: end, first_timestamp: ts, max_timestamp: ts };
        let state = CleanerState {
            clean_offset: 10,
            head_offset: 30,
            rolls: vec![roll(20, 2_000), roll(30, 3_000)],
            next_horizon_ms: None,
        };
        let c = cleanable(&log(&chunks, &state), &cfg(), 10_000);
        assert_eq!((c.clean_offset, c.uncleanable, c.clean_bytes, c.dirty_bytes), (10, 30, 100, 200));
        assert!((c.ratio - 2.0 / 3.0).abs() < 1e-9 && c.due && !c.past_max_lag && !c.horizon_passed);
        // min.compaction.lag.ms: the segment [20, 30) holds a record 7 s old, lag 7.5 s.
        let lag = EffectiveTopicConfig { min_compaction_lag_ms: 7_500, ..cfg() };
        let c = cleanable(&log(&chunks, &state), &lag, 10_000);
        assert_eq!((c.uncleanable, c.dirty_bytes), (20, 100));
        let lag = EffectiveTopicConfig { min_compaction_lag_ms: 9_500, ..cfg() };
        let c = cleanable(&log(&chunks, &state), &lag, 10_000);
        assert_eq!((c.uncleanable, c.dirty_bytes, c.due), (10, 0, false));
        // Ratio below the minimum: not due, unless the first dirty roll is past max lag.
        let high = EffectiveTopicConfig { min_cleanable_dirty_ratio: 0.9, ..cfg() };
        assert!(!cleanable(&log(&chunks, &state), &high, 10_000).due);
        let max_lag = EffectiveTopicConfig { max_compaction_lag_ms: 7_000, ..high };
        let c = cleanable(&log(&chunks, &state), &max_lag, 10_000);
        assert!(c.due && c.past_max_lag);
        // A passed horizon makes a partition due even without dirty bytes.
        let clean = CleanerState { clean_offset: 30, head_offset: 30, rolls: vec![], next_horizon_ms: Some(9_000) };
        let c = cleanable(&log(&chunks, &clean), &high, 10_000);
        assert!(c.due && c.horizon_passed && c.dirty_bytes == 0);
        assert!(!cleanable(&log(&chunks, &clean), &high, 8_000).due);
        // Filthiest first, past max lag before everything.
        let mut v = [
            Cleanable { ratio: 0.5, past_max_lag: false, ..c },
            Cleanable { ratio: 0.9, past_max_lag: false, ..c },
            Cleanable { ratio: 0.1, past_max_lag: true, ..c },
        ];
        v.sort_by(order);
        assert_eq!(v.map(|c| c.ratio), [0.1, 0.9, 0.5]);
    }

    #[test]
    fn pass_size_fits_map_and_dirty_buffer() {
        let chunks = [chunk(0, 9, 100, 0), chunk(10, 19, 100, 0), chunk(20, 29, 100, 0), chunk(30, 39, 100, 0)];
        let state = CleanerState { clean_offset: 10, head_offset: 40, rolls: vec![], next_horizon_ms: None };
        let l = log(&chunks, &state);
        let c = cleanable(&l, &cfg(), 0);
        let plan = plan_pass(&l, &c, &PassLimits { max_map_entries: 25, dirty_buffer_bytes: 1 << 20 });
        assert_eq!(plan.clean.len(), 1);
        assert_eq!(plan.dirty.iter().map(|c| c.base_offset).collect::<Vec<_>>(), [10, 20]);
        assert_eq!((plan.map_entries, plan.cleanable_bytes), (20, 300));
        let plan = plan_pass(&l, &c, &PassLimits { max_map_entries: 1000, dirty_buffer_bytes: 250 });
        assert_eq!(plan.dirty.len(), 2, "dirty bytes held <= the buffer");
        // One chunk larger than the map still makes a pass (the map ends inside it).
        let plan = plan_pass(&l, &c, &PassLimits { max_map_entries: 4, dirty_buffer_bytes: 1 });
        assert_eq!((plan.dirty.len(), plan.map_entries), (1, 4));
    }
}
