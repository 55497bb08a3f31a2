//! Compaction: a partition's consecutive WAL chunks rewritten into one segment object, then
//! swapped into the index with one `ReplaceChunks` (see the invariants in `mod.rs`).
//!
//! Pace (RFC 0002, "Adaptive pace"). At the configured pace a chunk waits up to
//! `base = compaction_min_age + compaction_interval` (90 s by default) plus the time its run
//! needs to reach `compaction_min_chunks`, so the un-compacted index grows with the flush rate
//! E (index entries per second). With a budget of hot chunks, the compactor measures E (this
//! broker's flushes, `skiff_flush_partitions`) and, once `E × base` would exceed the budget,
//! holds chunks for `T_H = budget / E` instead: the period and the minimum age shrink by
//! `T_H / base` (the period never below `compaction_min_interval`) and every run of two or
//! more eligible chunks is due. A chunk then lives about `T_H`, so the hot index stays near
//! the budget whatever E is; a large index with a low rate (after a burst or a restart, when
//! every age starts again) counts as a rate of `hot / base`, so it drains too. The price is
//! PUTs: a busy partition gets a segment about every `T_H` instead of every 64 chunks.
//!
//! Tailing readers: a swap repoints the newest chunks to the segment, and the tail cache is
//! keyed by location, so a run whose newest chunk was still cached puts the segment's section
//! in the tail cache before committing, and the replaced entries are dropped after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_controller::ControllerError;
use skiff_controller::image::{Chunk, MetadataImage};
use skiff_controller::intent::{ChunkReplacement, ReplacedChunk, SegmentChunk};
use skiff_storage::{StorageError, WalObjectBuilder, verify_section};
use tracing::{debug, warn};
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use super::{Lifecycle, LifecycleSettings, Work, lock};
use crate::metrics::CompactionPace;

/// The compactor's thresholds for one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// Time between passes.
    pub period: Duration,
    /// Age (since first seen) a WAL chunk needs to be rewritten.
    pub min_age_ms: i64,
    /// A run of this many eligible chunks is due.
    pub min_chunks: usize,
}

/// The pace for `hot_chunks` un-compacted chunks arriving at `chunks_per_second` (pure; see
/// the module docs).
pub(crate) fn pace(s: &LifecycleSettings, hot_chunks: u64, chunks_per_second: f64) -> Pace {
    let fixed = Pace {
        period: s.compaction_interval,
        min_age_ms: s.compaction_min_age_ms,
        min_chunks: s.compaction_min_chunks,
    };
    if s.compaction_hot_chunks_budget == 0 {
        return fixed;
    }
    let interval_ms = s.compaction_interval.as_secs_f64() * 1000.0;
    let base_ms = (s.compaction_min_age_ms.max(0) as f64 + interval_ms).max(1.0);
    let rate = chunks_per_second.max(hot_chunks as f64 * 1000.0 / base_ms);
    let hold_ms = s.compaction_hot_chunks_budget as f64 * 1000.0 / rate;
    // Also covers rate == 0 (hold is infinite).
    if hold_ms >= base_ms {
        return fixed;
    }
    let scale = hold_ms / base_ms;
    let floor_ms = (s.compaction_min_interval.as_secs_f64() * 1000.0).min(interval_ms);
    Pace {
        period: Duration::from_secs_f64((interval_ms * scale).max(floor_ms) / 1000.0),
        min_age_ms: (s.compaction_min_age_ms as f64 * scale) as i64,
        min_chunks: s.compaction_min_chunks.min(2),
    }
}

/// What the pace of the next pass is computed from.
#[derive(Debug)]
pub(crate) struct PaceState {
    /// When the last pass started (or the worker was created), injected clock.
    last_pass_ms: i64,
    /// `Metrics::flushed_chunks` then.
    flushed: u64,
    /// Un-compacted chunks of led partitions the last pass counted.
    hot_chunks: u64,
}

impl PaceState {
    pub(crate) fn new(now_ms: i64) -> Self {
        Self { last_pass_ms: now_ms, flushed: 0, hot_chunks: 0 }
    }

    /// Chunks per second flushed since the last pass.
    fn rate(&self, now_ms: i64, flushed: u64) -> f64 {
        let elapsed_ms = now_ms - self.last_pass_ms;
        if elapsed_ms <= 0 {
            return 0.0;
        }
        flushed.saturating_sub(self.flushed) as f64 * 1000.0 / elapsed_ms as f64
    }
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments: u64,
    pub chunks_replaced: u64,
    pub bytes: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// Why one partition's compaction failed (a rejected swap is not a failure: `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub(super) enum CompactionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{object} is not indexed")]
    NotIndexed { object: String },
    #[error("{object} has no section for partition {partition}")]
    NoSection { object: String, partition: i32 },
    #[error("{object}: the footer does not match the index ({detail})")]
    FooterMismatch { object: String, detail: String },
    #[error("segment {key} took longer than half the GC grace period to store; abandoned")]
    SlowPut { key: String },
    /// The swap's outcome is unknown (it may have applied): the segment is left to GC.
    #[error("committing segment {key}: {source}")]
    Commit { key: String, source: ControllerError },
}

/// Outcomes compare by what they say: the storage and controller errors inside are not
/// comparable (tests compare a pass's results).
impl PartialEq for CompactionError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// WAL footers read during one compaction pass, by object key, and whole WAL objects: a pass
/// usually rewrites several partitions' sections of the same object, so one GET of the object
/// replaces one ranged GET per section (S3 bills per request). Objects are kept up to
/// [`PASS_OBJECT_BYTES`] per pass; beyond that sections are read with ranged GETs.
#[derive(Default)]
pub(super) struct Footers(Mutex<HashMap<Arc<str>, Arc<Vec<skiff_storage::SectionMeta>>>>, Mutex<PassObjects>);

#[derive(Default)]
struct PassObjects {
    bytes: usize,
    objects: HashMap<Arc<str>, Bytes>,
}

/// Memory for whole WAL objects held during one compaction pass.
const PASS_OBJECT_BYTES: usize = 64 << 20;

/// One partition's run of chunks to rewrite, planned under the metadata lock.
pub(super) struct Candidate {
    topic_id: Uuid,
    partition: i32,
    chunks: Vec<Chunk>,
    object_sizes: HashMap<Arc<str>, u64>,
}

impl Lifecycle {
    /// The compactor task: wakes every `compaction_min_interval` (at most every
    /// `compaction_interval`) and runs a pass once the current pace's period has passed since
    /// the last pass started, so a burst of flushes shortens the wait at once. A wake-up that
    /// runs no pass reads two counters.
    pub(super) async fn run_compactor(self: Arc<Self>, shutdown: CancellationToken) {
        let step = self.settings.compaction_min_interval.min(self.settings.compaction_interval);
        let mut last = self.clock.now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.clock.sleep(step) => {}
            }
            if self.clock.now() - last < self.current_pace().period {
                continue;
            }
            last = self.clock.now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.compact_once() => {}
            }
        }
    }

    /// The pace from the last pass's hot count and the flush rate since.
    pub(crate) fn current_pace(&self) -> Pace {
        let st = lock(&self.pace);
        pace(&self.settings, st.hot_chunks, st.rate(self.clock.now_ms(), self.metrics.flushed_chunks()))
    }

    /// Un-compacted (WAL) chunks of the partitions this broker leads.
    fn hot_chunks(&self, m: &MetadataImage) -> u64 {
        let me = self.settings.broker_id;
        let led = m.topics().flat_map(|t| t.partitions()).filter(|p| p.leader() == me);
        led.map(|p| p.chunks().filter(|c| !self.storage.is_segment_key(&c.object)).count() as u64).sum()
    }

    /// One compaction pass over the partitions this broker leads.
    pub async fn compact_once(&self) -> CompactionReport {
        let now = self.clock.now_ms();
        let flushed = self.metrics.flushed_chunks();
        let rate = lock(&self.pace).rate(now, flushed);
        self.observe_objects(now);
        let (candidates, hot, pace) = {
            let seen = lock(&self.first_seen).clone();
            self.metadata.read(|m| {
                let hot = self.hot_chunks(m);
                let pace = pace(&self.settings, hot, rate);
                (self.plan_compaction(m, &seen, now, &pace), hot, pace)
            })
        };
        *lock(&self.pace) = PaceState { last_pass_ms: now, flushed, hot_chunks: hot };
        self.metrics.set_compaction_pace(CompactionPace {
            hot_chunks: hot,
            chunks_per_second: rate,
            period: pace.period,
            min_age: Duration::from_millis(pace.min_age_ms.max(0) as u64),
        });
        let mut report = CompactionReport::default();
        // Partitions the cleaner is working on are left for the next pass.
        let mut claims = Vec::new();
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| match self.claim(c.topic_id, c.partition, Work::Compaction) {
                Some(claim) => {
                    claims.push(claim);
                    true
                }
                None => false,
            })
            .collect();
        // Footers are shared by the partitions of one pass: one footer GET per WAL object.
        let footers = Footers::default();
        let mut results = futures::stream::iter(candidates)
            .map(|c| self.compact(c, &footers))
            .buffer_unordered(self.settings.compaction_concurrency.max(1));
        while let Some(r) = results.next().await {
            match r {
                Ok(Some((chunks, bytes))) => {
                    report.segments += 1;
                    report.chunks_replaced += chunks;
                    report.bytes += bytes;
                }
                Ok(None) => report.rejected += 1,
                Err(e) => {
                    warn!(error = %e, "compaction failed");
                    report.failed += 1;
                }
            }
        }
        drop(results);
        drop(claims);
        // What the pass left hot, for the next wake-up's pace (each segment is one entry, in
        // a segment object, so no longer hot).
        {
            let mut st = lock(&self.pace);
            st.hot_chunks = st.hot_chunks.saturating_sub(report.chunks_replaced);
        }
        if report.segments > 0 || report.rejected > 0 || report.failed > 0 {
            debug!(?report, "compaction pass");
        }
        report
    }

    pub(super) fn plan_compaction(
        &self,
        m: &MetadataImage,
        seen: &HashMap<Arc<str>, i64>,
        now: i64,
        pace: &Pace,
    ) -> Vec<Candidate> {
        let s = &self.settings;
        let mut out = Vec::new();
        for t in m.topics() {
            for p in t.partitions() {
                if p.leader() != s.broker_id {
                    continue;
                }
                let age = |c: &Chunk| seen.get(&c.object).map_or(0, |t| now - t);
                let eligible = |c: &Chunk| !self.storage.is_segment_key(&c.object) && age(c) >= pace.min_age_ms;
                // A compacted partition's head and roll ends stay chunk boundaries: the
                // cleaner's ranges end there.
                let cleaner = p.cleaner();
                let boundary = |c: &Chunk| {
                    c.base_offset == cleaner.head_offset || cleaner.rolls.iter().any(|r| r.end_offset == c.base_offset)
                };
                // Runs of consecutive eligible chunks, each capped at the segment size; every
                // run that is due becomes one segment (several per pass if a partition is busy).
                let mut runs: Vec<(Vec<Chunk>, u64)> = vec![(Vec::new(), 0)];
                for c in p.chunks() {
                    if boundary(c) && !runs.last().expect("never empty").0.is_empty() {
                        runs.push((Vec::new(), 0));
                    }
                    let (run, bytes) = runs.last_mut().expect("never empty");
                    if !eligible(c) {
                        if !run.is_empty() {
                            runs.push((Vec::new(), 0));
                        }
                        continue;
                    }
                    if !run.is_empty() && *bytes + c.len > s.compaction_max_segment_bytes {
                        runs.push((vec![c.clone()], c.len));
                        continue;
                    }
                    *bytes += c.len;
                    run.push(c.clone());
                }
                for (run, bytes) in runs {
                    let Some(oldest) = run.iter().map(age).max() else { continue };
                    let due = run.len() >= pace.min_chunks
                        || bytes >= s.compaction_min_bytes
                        || oldest >= s.compaction_max_age_ms;
                    // A lone chunk that is the only live chunk of its object gains nothing.
                    let lone = run.len() == 1 && m.object(&run[0].object).is_some_and(|o| o.live_chunks <= 1);
                    if !due || lone {
                        continue;
                    }
                    let object_sizes = run
                        .iter()
                        .filter_map(|c| m.object(&c.object).map(|o| (c.object.clone(), o.size_bytes)))
                        .collect();
                    out.push(Candidate { topic_id: t.id(), partition: p.index(), chunks: run, object_sizes });
                }
            }
        }
        out
    }

    /// Rewrites one run into a segment and swaps it in. `Ok(Some((chunks, bytes)))` when
    /// committed, `Ok(None)` when the controller rejected the swap.
    pub(super) async fn compact(&self, c: Candidate, footers: &Footers) -> Result<Option<(u64, u64)>, CompactionError> {
        let topic_bytes = *c.topic_id.as_bytes();
        // Read each chunk's section, located and checked through its object's footer.
        let mut parts: Vec<Bytes> = Vec::with_capacity(c.chunks.len());
        // Whether the run's newest chunk was in the tail cache: then the run is part of the hot
        // tail and its segment goes into the cache too.
        let mut hot = false;
        for (i, chunk) in c.chunks.iter().enumerate() {
            // Recently flushed data is still in memory: no read at all.
            if let Some(b) = self.tail.as_ref().and_then(|t| t.get(&chunk.object, chunk.position)) {
                parts.push(b);
                hot = i + 1 == c.chunks.len();
                continue;
            }
            let size = *c
                .object_sizes
                .get(&chunk.object)
                .ok_or_else(|| CompactionError::NotIndexed { object: chunk.object.to_string() })?;
            // Whole object once per pass (its footer comes with it), while the budget lasts.
            let held = lock(&footers.1).objects.get(&chunk.object).cloned();
            let whole = match held {
                Some(o) => Some(o),
                None if lock(&footers.1).bytes + size as usize <= PASS_OBJECT_BYTES => {
                    let o = self.storage.get(&chunk.object).await?;
                    let footer = skiff_storage::decode_footer(&o)?;
                    lock(&footers.0).insert(chunk.object.clone(), Arc::new(footer));
                    let mut pass = lock(&footers.1);
                    pass.bytes += o.len();
                    pass.objects.insert(chunk.object.clone(), o.clone());
                    Some(o)
                }
                None => None,
            };
            let cached = lock(&footers.0).get(&chunk.object).cloned();
            let footer = match cached {
                Some(f) => f,
                None => {
                    let f = Arc::new(self.storage.read_wal_footer(&chunk.object, size).await?);
                    lock(&footers.0).insert(chunk.object.clone(), f.clone());
                    f
                }
            };
            let meta =
                footer.iter().find(|s| s.topic_id == topic_bytes && s.partition == c.partition).copied().ok_or_else(
                    || CompactionError::NoSection { object: chunk.object.to_string(), partition: c.partition },
                )?;
            if meta.position != chunk.position
                || meta.len != chunk.len
                || meta.base_offset != chunk.base_offset
                || meta.last_offset != chunk.last_offset
            {
                return Err(CompactionError::FooterMismatch {
                    object: chunk.object.to_string(),
                    detail: format!("footer section {meta:?}, index chunk {chunk:?}"),
                });
            }
            let bytes = match &whole {
                Some(o) if meta.position + meta.len <= o.len() as u64 => {
                    o.slice(meta.position as usize..(meta.position + meta.len) as usize)
                }
                _ => self.storage.get_range(&chunk.object, meta.byte_range()).await?,
            };
            verify_section(&bytes, &meta)?;
            parts.push(bytes);
        }
        let first = &c.chunks[0];
        let last = &c.chunks[c.chunks.len() - 1];
        let max_timestamp = c.chunks.iter().map(|c| c.max_timestamp).max().unwrap_or(-1);
        let data_len: u64 = c.chunks.iter().map(|c| c.len).sum();
        let mut builder = WalObjectBuilder::with_capacity(data_len as usize + 128);
        builder.add_section(topic_bytes, c.partition, first.base_offset, last.last_offset, max_timestamp, &parts)?;
        drop(parts);
        let (object, sections) = builder.finish();
        let section = sections[0];
        let key = self.storage.seg_key(topic_bytes, c.partition, first.base_offset, &self.ids.suffix());
        let size_bytes = object.len() as u64;
        // Before the swap can apply, so a reader that plans the segment finds it in memory.
        let key_arc: Arc<str> = Arc::from(key.as_str());
        let tail = self.tail.as_ref().filter(|_| hot);
        if let Some(t) = tail {
            t.insert(
                key_arc.clone(),
                section.position,
                object.slice(section.position as usize..(section.position + section.len) as usize),
            );
        }
        let started = self.clock.now();
        let put = self.storage.put_new(&key, object).await;
        if let Err(e) = put {
            if let Some(t) = tail {
                t.remove(&key_arc, section.position);
            }
            return Err(e.into());
        }
        if self.clock.now() - started > Duration::from_millis((self.settings.gc_grace_ms / 2).max(0) as u64) {
            // GC may already consider this key an orphan; never commit it.
            let _ = self.storage.delete(&key).await;
            return Err(CompactionError::SlowPut { key });
        }
        let replacement = ChunkReplacement {
            topic_id: c.topic_id,
            partition: c.partition,
            replaced: c
                .chunks
                .iter()
                .map(|ch| ReplacedChunk {
                    base_offset: ch.base_offset,
                    object: ch.object.to_string(),
                    position: ch.position,
                })
                .collect(),
            segment: SegmentChunk {
                key: key.clone(),
                broker_id: self.settings.broker_id,
                size_bytes,
                position: section.position,
                len: section.len,
                base_offset: first.base_offset,
                last_offset: last.last_offset,
                max_timestamp,
            },
        };
        match self.controller.replace_chunks(replacement).await {
            Err(ControllerError::Rejected(r)) => {
                debug!(%key, reason = %r, "compaction swap rejected; deleting its segment");
                if let Some(t) = tail {
                    t.remove(&key_arc, section.position);
                }
                self.metrics.compaction_rejected();
                // Never referenced: safe to delete now (GC would find it as an orphan anyway).
                let _ = self.storage.delete(&key).await;
                Ok(None)
            }
            Ok(()) => {
                // The replaced chunks are no longer planned by new reads (one that planned them
                // just before the swap falls back to storage: `gc_grace` keeps their objects).
                if let Some(t) = &self.tail {
                    for ch in &c.chunks {
                        t.remove(&ch.object, ch.position);
                    }
                }
                self.metrics.compaction(c.chunks.len() as u64, data_len);
                debug!(%key, chunks = c.chunks.len(), bytes = data_len, "compacted");
                Ok(Some((c.chunks.len() as u64, data_len)))
            }
            // The outcome is unknown: the swap may have applied. Leave the segment to GC.
            Err(source) => Err(CompactionError::Commit { key, source }),
        }
    }
}
