//! One cleaner pass over one partition (RFC 0003, section 4): read, map, filter, write, swap.
//!
//! ```text
//!  dirty chunks ──GET (exact ranges, ≤ 8 MiB each; tail cache first)──▶ held in memory
//!        └─ map_batch ─▶ OffsetMap (key → latest offset), up to map_end
//!  clean chunks (streamed) + held dirty chunks ─ filter_batch ─▶ kept batches
//!        └─ cut at ≤ segment.bytes ─▶ v1 segment objects, fresh seg/ keys, create-only PUTs
//!  CleanChunks (one swap: runs of replaced chunks → new chunks) ─▶ controller
//! ```
//!
//! Invariants:
//! * Every input byte is read once: dirty bytes are held between the phases (the plan bounds
//!   them), the clean section is read once, GETs ask for exact chunk ranges.
//! * Offsets never move: kept batches keep their base offset and last offset delta (the codec's
//!   contract), and the new chunks tile each run's offsets exactly; a chunk's range may begin
//!   or end in a gap, its data may even be empty.
//! * A chunk whose batches all stay verbatim is not rewritten: it stays in the index and splits
//!   the swap into runs.
//! * Nothing is referenced until the swap applies, and the swap applies whole or not at all. A
//!   rejected swap's segments are deleted at once; a pass whose swap would come later than
//!   `gc_grace / 2` after its first PUT began is abandoned (its segments deleted) because GC
//!   may already count them as orphans (no lease: the bound of WAL compaction's `SlowPut`).
//! * CPU work (decompression, re-encoding) runs in `spawn_blocking` slices of ≤ 1 MiB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_controller::ControllerError;
use skiff_controller::image::Chunk;
use skiff_controller::intent::{CleanChunks, CleanRun, ReplacedChunk, SegmentChunk};
use skiff_storage::{StorageError, WalObjectBuilder};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::filter::{
    AbortedTxn, CleanError, MapProgress, Outcome, Rules, TxnTracker, filter_batch, map_batch, map_batch_from,
};
use super::map::OffsetMap;
use super::plan::PassPlan;
use crate::broker::batch::{self, BatchError};
use crate::log::background::Lifecycle;
use crate::metrics::CleanerPassStats;

/// Largest ranged GET of one pass.
const GET_BYTES: u64 = 8 << 20;
/// Largest slice of CPU work handed to one `spawn_blocking` call.
const CPU_SLICE_BYTES: usize = 1 << 20;

/// Everything one pass needs, fixed at planning time under the metadata lock.
#[derive(Debug, Clone)]
pub(crate) struct PassInput {
    pub topic_id: Uuid,
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub plan: PassPlan,
    pub delete_retention_ms: i64,
    pub segment_bytes: u64,
    /// Producer id → base offset of its last batch (kept even when emptied).
    pub producer_last_batch: HashMap<i64, i64>,
    pub aborted: Vec<AbortedTxn>,
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassResult {
    /// The swap applied.
    Committed,
    /// The controller refused the swap (the chunks changed, a new leader epoch): segments deleted.
    Rejected,
    /// The swap would have come too late after the first PUT: segments deleted.
    Abandoned,
    /// An I/O, codec or controller error (segments deleted, or left to GC if the swap's
    /// outcome is unknown).
    Failed,
    /// Stopped by a test failpoint, leaving everything as a crash would.
    #[cfg(test)]
    Dropped,
}

impl PassResult {
    pub(crate) fn label(self) -> &'static str {
        match self {
            PassResult::Committed => "committed",
            PassResult::Rejected => "rejected",
            PassResult::Abandoned => "abandoned",
            PassResult::Failed => "failed",
            #[cfg(test)]
            PassResult::Dropped => "failed",
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    pub topic_id: Uuid,
    pub partition: i32,
    pub result: PassResult,
    pub stats: CleanerPassStats,
    /// The clean offset the swap asked for.
    pub clean_offset: i64,
    /// Segment keys the pass stored (deleted again unless committed or unknown).
    pub written: Vec<String>,
}

/// Where a test stops a pass, as a crash would.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failpoint {
    /// After the offset map is built, before anything is written.
    Mapped,
    /// After the n-th segment PUT (1-based) completed.
    Stored(u64),
    /// After the swap was sent (and applied), before its answer is handled.
    SwapSent,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PassError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt data in {object}: {source}")]
    Batch { object: String, source: BatchError },
    #[error("cleaning a batch at {offset}: {source}")]
    Clean { offset: i64, source: CleanError },
    #[error("a blocking cleaner task failed: {0}")]
    Join(String),
    /// A test failpoint stopped the pass.
    #[cfg(test)]
    #[error("stopped by a failpoint")]
    Dropped,
}

/// The segment being filled: its offset range starts at `start`; `parts` are whole batches.
struct OpenSegment {
    start: i64,
    parts: Vec<Bytes>,
    bytes: u64,
    max_timestamp: i64,
}

/// One run being built: the replaced chunks and the segments stored for it so far.
struct OpenRun {
    replaced: Vec<ReplacedChunk>,
    chunks: Vec<SegmentChunk>,
    /// Last offset of the last replaced chunk.
    last: i64,
    segment: OpenSegment,
}

/// Counts a pass's I/O and paces it to `cleaner_max_bytes_per_second`.
struct Io {
    stats: CleanerPassStats,
    started: tokio::time::Instant,
    first_put: Option<tokio::time::Instant>,
}

/// The bytes of one batch and its header, taken from a chunk's data.
fn batches(object: &str, data: &Bytes) -> Result<Vec<(batch::BatchHeader, Bytes)>, PassError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let h = batch::parse_header(&data[pos..])
            .map_err(|source| PassError::Batch { object: object.to_string(), source })?;
        batch::verify_crc(&data[pos..], &h)
            .map_err(|source| PassError::Batch { object: object.to_string(), source })?;
        out.push((h, data.slice(pos..pos + h.size)));
        pos += h.size;
    }
    Ok(out)
}

/// Unchanged chunks at least this big stay in place during a pass (see `run_pass`): one GET
/// window. Below `segment.bytes` when that is smaller, so a topic with small segments keeps
/// whole segments in place.
const KEEP_IN_PLACE_MAX_BYTES: u64 = 8 << 20;

fn keep_in_place_bytes(segment_bytes: u64) -> u64 {
    segment_bytes.clamp(1, KEEP_IN_PLACE_MAX_BYTES)
}

/// Groups consecutive batches into slices of at most [`CPU_SLICE_BYTES`] (at least one each).
fn slices(batches: Vec<(batch::BatchHeader, Bytes)>) -> Vec<Vec<(batch::BatchHeader, Bytes)>> {
    let mut out: Vec<Vec<(batch::BatchHeader, Bytes)>> = Vec::new();
    let mut size = 0;
    for b in batches {
        match out.last_mut() {
            Some(cur) if size + b.1.len() <= CPU_SLICE_BYTES => {
                size += b.1.len();
                cur.push(b);
            }
            _ => {
                size = b.1.len();
                out.push(vec![b]);
            }
        }
    }
    out
}

/// The filter's verdict on one input batch.
struct Kept {
    header: batch::BatchHeader,
    output: Option<Bytes>,
    verbatim: bool,
    removed: u64,
    horizon: Option<i64>,
}

impl Lifecycle {
    /// Runs one pass. Never panics on stored bytes; every outcome is in the report.
    pub(crate) async fn clean_partition(&self, input: PassInput) -> PassReport {
        let mut io = Io { stats: CleanerPassStats::default(), started: self.clock.now(), first_put: None };
        io.stats.cleanable_bytes = input.plan.cleanable_bytes;
        // With the PUT line below, marks the window tests/cleaner_crash.rs kills the broker in.
        debug!(
            topic = %input.topic,
            partition = input.partition,
            clean_offset = input.plan.clean_offset,
            cleanable_bytes = input.plan.cleanable_bytes,
            "cleaner pass started"
        );
        let mut written = Vec::new();
        let outcome = self.run_pass(&input, &mut io, &mut written).await;
        let (result, clean_offset) = match outcome {
            Ok(r) => r,
            #[cfg(test)]
            Err(PassError::Dropped) => (PassResult::Dropped, input.plan.clean_offset),
            Err(e) => {
                warn!(topic = %input.topic, partition = input.partition, error = %e, "cleaner pass failed");
                // Nothing references the segments: delete them now.
                self.delete_segments(&written, &mut io).await;
                (PassResult::Failed, input.plan.clean_offset)
            }
        };
        #[cfg(test)]
        if result == PassResult::Dropped {
            return PassReport {
                topic_id: input.topic_id,
                partition: input.partition,
                result,
                stats: io.stats,
                clean_offset,
                written,
            };
        }
        self.metrics.cleaner_pass(input.topic_id, result.label(), io.stats);
        PassReport {
            topic_id: input.topic_id,
            partition: input.partition,
            result,
            stats: io.stats,
            clean_offset,
            written,
        }
    }

    async fn delete_segments(&self, keys: &[String], io: &mut Io) {
        for k in keys {
            io.stats.deletes += 1;
            if let Err(e) = self.storage.delete(k).await {
                // Left for GC's orphan rule.
                debug!(key = %k, error = %e, "cleaner: deleting an unreferenced segment failed");
            }
        }
    }

    #[cfg(test)]
    fn failpoint(&self, at: Failpoint) -> bool {
        *super::super::lock(&self.cleaner_failpoint) == Some(at)
    }

    /// Waits as long as `cleaner_max_bytes_per_second` asks after `io` moved its bytes.
    async fn pace(&self, io: &Io) {
        let limit = self.settings.cleaner_max_bytes_per_second;
        if limit == 0 {
            return;
        }
        let bytes = io.stats.read_bytes + io.stats.written_bytes;
        let due = io.started + Duration::from_secs_f64(bytes as f64 / limit as f64);
        let now = self.clock.now();
        if due > now {
            self.clock.sleep(due - now).await;
        }
    }

    /// A chunk's bytes: from the tail cache, else exact ranged GETs of ≤ 8 MiB.
    async fn read_chunk(&self, chunk: &Chunk, io: &mut Io) -> Result<Bytes, PassError> {
        if let Some(b) = self.tail.as_ref().and_then(|t| t.get(&chunk.object, chunk.position)) {
            return Ok(b);
        }
        let mut parts = Vec::new();
        let end = chunk.position + chunk.len;
        let mut at = chunk.position;
        while at < end {
            let to = (at + GET_BYTES).min(end);
            let b = self.storage.get_range(&chunk.object, at..to).await?;
            io.stats.gets += 1;
            io.stats.read_bytes += b.len() as u64;
            parts.push(b);
            self.pace(io).await;
            at = to;
        }
        Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().unwrap_or_default(),
            _ => Bytes::from(parts.concat()),
        })
    }

    /// Maps the dirty chunks; returns the held chunks that were mapped (whole or in part) and
    /// the last mapped offset.
    async fn map_dirty(
        &self,
        input: &PassInput,
        map: &mut Option<OffsetMap>,
        io: &mut Io,
    ) -> Result<(Vec<(Chunk, Bytes)>, i64), PassError> {
        let aborted = Arc::new(input.aborted.clone());
        let clean_offset = input.plan.clean_offset;
        let mut held = Vec::new();
        let mut map_end = clean_offset - 1;
        for chunk in &input.plan.dirty {
            let data = self.read_chunk(chunk, io).await?;
            let parsed = batches(&chunk.object, &data)?;
            held.push((chunk.clone(), data));
            let mut stopped = None;
            for slice in slices(parsed) {
                let m = map.take().unwrap_or_else(|| OffsetMap::with_capacity(1));
                let aborted = aborted.clone();
                let (m, r) = tokio::task::spawn_blocking(move || {
                    let mut m = m;
                    let mut r = Ok(None);
                    for (h, b) in &slice {
                        // Already clean (the chunk straddles the clean offset).
                        if h.last_offset() < clean_offset {
                            continue;
                        }
                        // Records below the clean offset take no room in the map.
                        let progress = if h.base_offset >= clean_offset {
                            map_batch(b, &aborted, &mut m)
                        } else {
                            map_batch_from(b, clean_offset, &aborted, &mut m)
                        };
                        match progress {
                            Ok(MapProgress::Mapped { .. }) => {}
                            Ok(MapProgress::Stopped { next_offset }) => {
                                r = Ok(Some(next_offset));
                                break;
                            }
                            Err(source) => {
                                r = Err(PassError::Clean { offset: h.base_offset, source });
                                break;
                            }
                        }
                    }
                    (m, r)
                })
                .await
                .map_err(|e| PassError::Join(e.to_string()))?;
                *map = Some(m);
                if let Some(next) = r? {
                    stopped = Some(next);
                    break;
                }
            }
            match stopped {
                // The map is full: the mapped range ends before `next`; later chunks stay dirty.
                Some(next) => {
                    map_end = next - 1;
                    break;
                }
                None => map_end = chunk.last_offset,
            }
        }
        Ok((held, map_end))
    }

    async fn run_pass(
        &self,
        input: &PassInput,
        io: &mut Io,
        written: &mut Vec<String>,
    ) -> Result<(PassResult, i64), PassError> {
        let plan = &input.plan;
        // Phase 1: the map, sized from the plan before anything is read.
        let mut map = Some(OffsetMap::with_capacity(plan.map_entries));
        let (held, map_end) = self.map_dirty(input, &mut map, io).await?;
        let map = Arc::new(map.unwrap_or_else(|| OffsetMap::with_capacity(1)));
        let new_clean = map_end + 1;
        debug!(
            topic = %input.topic,
            partition = input.partition,
            keys = map.len(),
            capacity = map.capacity(),
            // Full: the pass ends early, the rest of the dirty range waits for the next one.
            full = map.is_full(),
            // An empty map: a pass for expired delete horizons only.
            horizons_only = map.is_empty(),
            map_end,
            "cleaner map built"
        );
        #[cfg(test)]
        if self.failpoint(Failpoint::Mapped) {
            return Ok((PassResult::Dropped, new_clean));
        }

        // Phase 2: filter the clean section (streamed), then the held dirty chunks.
        let now_ms = self.clock.now_ms();
        let aborted = Arc::new(input.aborted.clone());
        let producers = Arc::new(input.producer_last_batch.clone());
        let mut txns = Some(TxnTracker::default());
        let mut runs: Vec<CleanRun> = Vec::new();
        let mut open: Option<OpenRun> = None;
        let mut next_horizon: Option<i64> = None;
        let mut held = held.into_iter();
        let mut clean = plan.clean.iter();
        loop {
            let (chunk, data) = match clean.next() {
                Some(c) => (c.clone(), self.read_chunk(c, io).await?),
                None => match held.next() {
                    Some(h) => h,
                    None => break,
                },
            };
            let parsed = batches(&chunk.object, &data)?;
            let mut kept: Vec<Kept> = Vec::with_capacity(parsed.len());
            for slice in slices(parsed) {
                let (map, aborted, producers) = (map.clone(), aborted.clone(), producers.clone());
                let mut t = txns.take().unwrap_or_default();
                let delete_retention_ms = input.delete_retention_ms;
                let (t, r) = tokio::task::spawn_blocking(move || {
                    let rules = Rules {
                        map: &map,
                        map_end,
                        now_ms,
                        delete_retention_ms,
                        aborted: &aborted,
                        producer_last_batch: &producers,
                    };
                    let mut out = Vec::with_capacity(slice.len());
                    for (h, b) in slice {
                        if h.base_offset > map_end {
                            // Past the mapped range: kept as it is, never looked into.
                            out.push(Kept { header: h, output: Some(b), verbatim: true, removed: 0, horizon: None });
                            continue;
                        }
                        let f = match filter_batch(&b, &rules, &mut t) {
                            Ok(f) => f,
                            Err(source) => return (t, Err(PassError::Clean { offset: h.base_offset, source })),
                        };
                        let removed = u64::from(f.records_in.saturating_sub(f.records_kept));
                        let (output, verbatim) = match f.outcome {
                            Outcome::Verbatim => (Some(b), true),
                            Outcome::Rewritten(bytes) => (Some(bytes), false),
                            Outcome::Dropped => (None, false),
                        };
                        out.push(Kept { header: h, output, verbatim, removed, horizon: f.delete_horizon_ms });
                    }
                    (t, Ok(out))
                })
                .await
                .map_err(|e| PassError::Join(e.to_string()))?;
                txns = Some(t);
                kept.extend(r?);
            }
            for k in &kept {
                io.stats.records_removed += k.removed;
                // A horizon already passed that a kept batch still carries (a marker waiting
                // for its data, a producer's last batch) would make every round due: only
                // future horizons schedule a pass.
                if let (Some(_), Some(h)) = (&k.output, k.horizon)
                    && h > now_ms
                {
                    next_horizon = Some(next_horizon.map_or(h, |n: i64| n.min(h)));
                }
            }
            if kept.iter().all(|k| k.verbatim) && chunk.len >= keep_in_place_bytes(input.segment_bytes) {
                // Unchanged and big enough: the chunk stays in the index and ends the current
                // run. A smaller unchanged chunk is copied into the run's segment instead: one
                // more PUT per kept chunk (S3 bills per request, not per byte written) would
                // cost more than rewriting it, and small chunks left in place keep the next
                // pass reading them with a GET each.
                if let Some(run) = open.take() {
                    runs.push(self.close_run(input, run, io, written).await?);
                }
                continue;
            }
            let run = open.get_or_insert_with(|| OpenRun {
                replaced: Vec::new(),
                chunks: Vec::new(),
                last: chunk.last_offset,
                segment: OpenSegment { start: chunk.base_offset, parts: Vec::new(), bytes: 0, max_timestamp: -1 },
            });
            run.replaced.push(ReplacedChunk {
                base_offset: chunk.base_offset,
                object: chunk.object.to_string(),
                position: chunk.position,
            });
            run.last = chunk.last_offset;
            for k in kept {
                let Some(out) = k.output else { continue };
                let len = out.len() as u64;
                if run.segment.bytes > 0 && run.segment.bytes + len > input.segment_bytes {
                    // Cut: the full segment ends where this batch begins.
                    let next =
                        OpenSegment { start: k.header.base_offset, parts: Vec::new(), bytes: 0, max_timestamp: -1 };
                    let full = std::mem::replace(&mut run.segment, next);
                    let end = k.header.base_offset - 1;
                    let seg = self.store_segment(input, full, end, io, written).await?;
                    run.chunks.push(seg);
                }
                let max_ts = batch::parse_header(&out).map(|h| h.max_timestamp).unwrap_or(k.header.max_timestamp);
                run.segment.max_timestamp = run.segment.max_timestamp.max(max_ts);
                run.segment.bytes += len;
                run.segment.parts.push(out);
            }
        }
        if let Some(run) = open.take() {
            runs.push(self.close_run(input, run, io, written).await?);
        }

        // The bound that replaces a lease: GC may count a segment as an orphan once it is
        // gc_grace old, so the swap must come well before that.
        if let Some(first) = io.first_put {
            let took = self.clock.now() - first;
            let bound = Duration::from_millis((self.settings.gc_grace_ms / 2).max(0) as u64);
            if took > bound {
                warn!(
                    topic = %input.topic,
                    partition = input.partition,
                    took_ms = took.as_millis() as u64,
                    bound_ms = bound.as_millis() as u64,
                    "cleaner pass abandoned: its swap would come more than gc_grace/2 after its first PUT"
                );
                self.delete_segments(written, io).await;
                return Ok((PassResult::Abandoned, new_clean));
            }
        }
        let swap = CleanChunks {
            topic_id: input.topic_id,
            partition: input.partition,
            leader_epoch: input.leader_epoch,
            runs,
            clean_offset: new_clean,
            next_horizon_ms: next_horizon,
        };
        let result = self.controller.clean_chunks(swap).await;
        #[cfg(test)]
        if self.failpoint(Failpoint::SwapSent) {
            return Ok((PassResult::Dropped, new_clean));
        }
        match result {
            Ok(()) => {
                info!(
                    topic = %input.topic,
                    partition = input.partition,
                    clean_offset = new_clean,
                    read = io.stats.read_bytes,
                    written = io.stats.written_bytes,
                    removed = io.stats.records_removed,
                    "cleaned"
                );
                Ok((PassResult::Committed, new_clean))
            }
            Err(ControllerError::Rejected(r)) => {
                info!(topic = %input.topic, partition = input.partition, reason = %r, "cleaner swap rejected; deleting its segments");
                self.delete_segments(written, io).await;
                Ok((PassResult::Rejected, new_clean))
            }
            Err(e) => {
                // The swap may have applied: its segments are left to GC's orphan rule.
                warn!(topic = %input.topic, partition = input.partition, error = %e, "cleaner swap outcome unknown");
                Ok((PassResult::Failed, new_clean))
            }
        }
    }

    /// Stores the run's last segment (ending at the run's last offset) and returns the run.
    async fn close_run(
        &self,
        input: &PassInput,
        mut run: OpenRun,
        io: &mut Io,
        written: &mut Vec<String>,
    ) -> Result<CleanRun, PassError> {
        let last = std::mem::replace(
            &mut run.segment,
            OpenSegment { start: 0, parts: Vec::new(), bytes: 0, max_timestamp: -1 },
        );
        // Even with no batch left the run's offsets need a chunk: an empty one.
        let seg = self.store_segment(input, last, run.last, io, written).await?;
        run.chunks.push(seg);
        Ok(CleanRun { replaced: run.replaced, chunks: run.chunks })
    }

    /// Writes one segment object (v1, one section covering `[segment.start, end]`) under a
    /// fresh key with a create-only PUT.
    async fn store_segment(
        &self,
        input: &PassInput,
        segment: OpenSegment,
        end: i64,
        io: &mut Io,
        written: &mut Vec<String>,
    ) -> Result<SegmentChunk, PassError> {
        let topic_bytes = *input.topic_id.as_bytes();
        let mut builder = WalObjectBuilder::with_capacity(segment.bytes as usize + 128);
        let section = *builder.add_section(
            topic_bytes,
            input.partition,
            segment.start,
            end,
            segment.max_timestamp,
            &segment.parts,
        )?;
        drop(segment.parts);
        let (object, _) = builder.finish();
        let key = self.storage.seg_key(topic_bytes, input.partition, section.base_offset, &self.ids.suffix());
        let size_bytes = object.len() as u64;
        if io.first_put.is_none() {
            io.first_put = Some(self.clock.now());
        }
        // Recorded before the PUT: a failed PUT may still have stored the object.
        written.push(key.clone());
        self.storage.put_new(&key, object).await?;
        debug!(topic = %input.topic, partition = input.partition, key = %key, bytes = size_bytes, "cleaner segment stored");
        io.stats.puts += 1;
        io.stats.written_bytes += size_bytes;
        #[cfg(test)]
        if self.failpoint(Failpoint::Stored(io.stats.puts)) {
            return Err(PassError::Dropped);
        }
        self.pace(io).await;
        Ok(SegmentChunk {
            key,
            broker_id: self.settings.broker_id,
            size_bytes,
            position: section.position,
            len: section.len,
            base_offset: section.base_offset,
            last_offset: section.last_offset,
            max_timestamp: section.max_timestamp,
        })
    }
}
