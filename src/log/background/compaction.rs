//! Compaction: a partition's consecutive WAL chunks rewritten into one segment object, then
//! swapped into the index with one `ReplaceChunks` (see the invariants in `mod.rs`).

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

use super::{Lifecycle, Work, lock};

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
    /// One compaction pass over the partitions this broker leads.
    pub async fn compact_once(&self) -> CompactionReport {
        let now = self.clock.now_ms();
        self.observe_objects(now);
        let candidates = {
            let seen = lock(&self.first_seen).clone();
            self.metadata.read(|m| self.plan_compaction(m, &seen, now))
        };
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
        if report.segments > 0 || report.rejected > 0 || report.failed > 0 {
            debug!(?report, "compaction pass");
        }
        report
    }

    pub(super) fn plan_compaction(&self, m: &MetadataImage, seen: &HashMap<Arc<str>, i64>, now: i64) -> Vec<Candidate> {
        let s = &self.settings;
        let mut out = Vec::new();
        for t in m.topics() {
            for p in t.partitions() {
                if p.leader() != s.broker_id {
                    continue;
                }
                let age = |c: &Chunk| seen.get(&c.object).map_or(0, |t| now - t);
                let eligible = |c: &Chunk| !self.storage.is_segment_key(&c.object) && age(c) >= s.compaction_min_age_ms;
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
                    let due = run.len() >= s.compaction_min_chunks
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
        for chunk in &c.chunks {
            // Recently flushed data is still in memory: no read at all.
            if let Some(b) = self.tail.as_ref().and_then(|t| t.get(&chunk.object, chunk.position)) {
                parts.push(b);
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
        let started = self.clock.now();
        self.storage.put_new(&key, object).await?;
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
                self.metrics.compaction_rejected();
                // Never referenced: safe to delete now (GC would find it as an orphan anyway).
                let _ = self.storage.delete(&key).await;
                Ok(None)
            }
            Ok(()) => {
                self.metrics.compaction(c.chunks.len() as u64, data_len);
                debug!(%key, chunks = c.chunks.len(), bytes = data_len, "compacted");
                Ok(Some((c.chunks.len() as u64, data_len)))
            }
            // The outcome is unknown: the swap may have applied. Leave the segment to GC.
            Err(source) => Err(CompactionError::Commit { key, source }),
        }
    }
}
