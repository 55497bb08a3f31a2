//! Background work on stored data: compaction, retention and garbage collection.
//!
//! ```text
//! compactor  WAL chunks of a partition ──GET footer + section──▶ one segment object (PUT)
//!            ──ReplaceChunks (one atomic index swap)──▶ controller
//! retention  retention.ms / retention.bytes ──AdvanceLogStart (chunk boundary)──▶ controller
//! gc         objects no chunk references, unreferenced for the grace period ──DELETE──▶
//!            ForgetObjects; objects under wal/ and seg/ the index never knew, older than the
//!            grace period ──DELETE
//! ```
//!
//! Invariants:
//! * Nothing a chunk references is ever deleted. GC deletes only (a) objects the index marks
//!   unreferenced (`live_chunks == 0`), which can never become referenced again (keys are never
//!   reused), after they have been seen unreferenced for `gc_grace`, and (b) listed objects that
//!   are absent from the index *after* the listing and older than `gc_grace`: an object can only
//!   enter the index through a commit of a PUT that finished less than `gc_grace` ago (the WAL's
//!   PUT retries end after ~50 s; the compactor abandons a segment whose commit would come later
//!   than `gc_grace / 2` after its PUT began).
//! * The grace period also covers readers: a fetch plans its chunks under the metadata lock and
//!   reads them afterwards, so an object swapped out by compaction or released by retention
//!   stays readable for `gc_grace` after the index stopped pointing at it.
//! * Compaction copies section bytes verbatim (CRC-checked against the WAL footer); the segment
//!   is a v1 object with one section. A swap whose chunks changed meanwhile (retention, another
//!   compactor, topic deletion) is rejected by the controller and its segment deleted.
//! * "Seen since" times live in memory only: a restart starts every grace period and age again,
//!   which is always the safe direction.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use skiff_controller::metadata::{
    Chunk, ChunkReplacement, Command, CommandResult, MetadataState, ReplacedChunk, SegmentChunk,
};
use skiff_controller::{Controller, MetadataHandle};
use skiff_storage::{ObjectStorage, WalObjectBuilder, verify_section};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use super::Clock;
use crate::metrics::Metrics;

/// Kafka's default `retention.ms` (7 days), used when a topic does not set it.
const DEFAULT_RETENTION_MS: i64 = 604_800_000;
/// Keys per `ForgetObjects` command.
const FORGET_BATCH: usize = 1000;
/// Concurrent DELETEs of one GC pass.
const GC_DELETE_CONCURRENCY: usize = 8;

/// Thresholds and periods of the background work (see docs/configuration.md, `[lifecycle]`).
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub broker_id: i32,
    pub compaction_enabled: bool,
    pub compaction_interval: Duration,
    /// Compact a partition once its run of eligible WAL chunks has this many chunks...
    pub compaction_min_chunks: usize,
    /// ...or this many bytes...
    pub compaction_min_bytes: u64,
    /// ...or its oldest eligible chunk was first seen this long ago.
    pub compaction_max_age_ms: i64,
    /// A WAL chunk is eligible once first seen this long ago (keeps the hot tail out).
    pub compaction_min_age_ms: i64,
    /// Upper bound of one segment's data (and of the memory one compaction holds).
    pub compaction_max_segment_bytes: u64,
    /// Partitions compacted concurrently.
    pub compaction_concurrency: usize,
    pub retention_interval: Duration,
    pub gc_interval: Duration,
    /// How long an unreferenced or orphaned object is kept before it is deleted.
    pub gc_grace_ms: i64,
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

/// What one GC pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub unreferenced_deleted: u64,
    pub orphans_deleted: u64,
}

/// One partition's run of chunks to rewrite, planned under the metadata lock.
struct Candidate {
    topic_id: Uuid,
    partition: i32,
    chunks: Vec<Chunk>,
    object_sizes: HashMap<Arc<str>, u64>,
}

/// The background worker shared by the compactor, retention and GC tasks.
pub struct Lifecycle {
    settings: LifecycleSettings,
    controller: Controller,
    metadata: MetadataHandle,
    storage: ObjectStorage,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// When this process first saw each indexed object (ms, injected clock).
    first_seen: Mutex<HashMap<Arc<str>, i64>>,
    /// When GC first saw each object unreferenced.
    unreferenced_since: Mutex<HashMap<Arc<str>, i64>>,
}

/// The three background tasks; cancelled through the token given to [`Lifecycle::start`].
pub struct LifecycleTasks {
    compactor: Option<JoinHandle<()>>,
    retention: JoinHandle<()>,
    gc: JoinHandle<()>,
}

impl LifecycleTasks {
    /// Waits for every task to stop (after its token was cancelled).
    pub async fn join(self) {
        if let Some(c) = self.compactor {
            let _ = c.await;
        }
        let _ = self.retention.await;
        let _ = self.gc.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn topic_config_i64(configs: &std::collections::BTreeMap<String, String>, key: &str, default: i64) -> i64 {
    configs.get(key).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(default)
}

impl Lifecycle {
    pub fn new(
        settings: LifecycleSettings,
        controller: Controller,
        storage: ObjectStorage,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        if settings.gc_grace_ms < 60_000 {
            warn!(
                gc_grace_ms = settings.gc_grace_ms,
                "gc grace period is below 60 s: an object whose PUT is retried for longer could be collected before its commit"
            );
        }
        Arc::new(Self {
            metadata: controller.metadata(),
            controller,
            storage,
            metrics,
            clock,
            settings,
            first_seen: Mutex::new(HashMap::new()),
            unreferenced_since: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the compactor (if enabled), retention and GC tasks. Each runs one pass per
    /// interval and stops, mid-pass if need be, when `shutdown` is cancelled. A pass cut short
    /// leaves at worst an orphaned segment, which a later GC pass deletes.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) -> LifecycleTasks {
        let s = &self.settings;
        let compactor = s.compaction_enabled.then(|| {
            let me = self.clone();
            tokio::spawn(
                periodic(s.compaction_interval, shutdown.clone(), move || {
                    let me = me.clone();
                    async move {
                        me.compact_once().await;
                    }
                })
                .instrument(info_span!("compactor")),
            )
        });
        let me = self.clone();
        let retention = tokio::spawn(
            periodic(s.retention_interval, shutdown.clone(), move || {
                let me = me.clone();
                async move {
                    me.enforce_retention_once().await;
                }
            })
            .instrument(info_span!("retention")),
        );
        let me = self.clone();
        let gc = tokio::spawn(
            periodic(s.gc_interval, shutdown, move || {
                let me = me.clone();
                async move {
                    me.collect_garbage_once().await;
                }
            })
            .instrument(info_span!("gc")),
        );
        LifecycleTasks { compactor, retention, gc }
    }

    /// Records when each indexed object was first seen; forgets objects no longer indexed.
    fn observe_objects(&self, now: i64) {
        let keys: Vec<Arc<str>> = self.metadata.read(|m| m.objects.keys().cloned().collect());
        let mut seen = lock(&self.first_seen);
        let present: HashSet<&Arc<str>> = keys.iter().collect();
        seen.retain(|k, _| present.contains(k));
        for k in &keys {
            seen.entry(k.clone()).or_insert(now);
        }
    }

    // ---------------------------------------------------------------- compaction

    /// One compaction pass over the partitions this broker leads.
    pub async fn compact_once(&self) -> CompactionReport {
        let now = self.clock.now_ms();
        self.observe_objects(now);
        let candidates = {
            let seen = lock(&self.first_seen).clone();
            self.metadata.read(|m| self.plan_compaction(m, &seen, now))
        };
        let mut report = CompactionReport::default();
        let mut results = futures::stream::iter(candidates)
            .map(|c| self.compact(c))
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
        if report.segments > 0 || report.rejected > 0 || report.failed > 0 {
            debug!(?report, "compaction pass");
        }
        report
    }

    fn plan_compaction(&self, m: &MetadataState, seen: &HashMap<Arc<str>, i64>, now: i64) -> Vec<Candidate> {
        let s = &self.settings;
        let mut out = Vec::new();
        for t in m.topics.values() {
            for (idx, p) in t.partitions.iter().enumerate() {
                if p.leader != s.broker_id {
                    continue;
                }
                let age = |c: &Chunk| seen.get(&c.object).map_or(0, |t| now - t);
                let eligible = |c: &Chunk| !self.storage.is_segment_key(&c.object) && age(c) >= s.compaction_min_age_ms;
                // The first run of consecutive eligible chunks, capped at the segment size.
                let mut run: Vec<Chunk> = Vec::new();
                let mut bytes = 0u64;
                for c in p.chunks.values() {
                    if !eligible(c) {
                        if run.is_empty() {
                            continue;
                        }
                        break;
                    }
                    if !run.is_empty() && bytes + c.len > s.compaction_max_segment_bytes {
                        break;
                    }
                    bytes += c.len;
                    run.push(c.clone());
                }
                let Some(oldest) = run.iter().map(age).max() else { continue };
                let due = run.len() >= s.compaction_min_chunks
                    || bytes >= s.compaction_min_bytes
                    || oldest >= s.compaction_max_age_ms;
                // A lone chunk that is the only live chunk of its object gains nothing.
                let lone = run.len() == 1 && m.objects.get(&run[0].object).is_some_and(|o| o.live_chunks <= 1);
                if !due || lone {
                    continue;
                }
                let object_sizes =
                    run.iter().filter_map(|c| m.objects.get(&c.object).map(|o| (c.object.clone(), o.size_bytes))).collect();
                out.push(Candidate { topic_id: t.topic_id, partition: idx as i32, chunks: run, object_sizes });
            }
        }
        out
    }

    /// Rewrites one run into a segment and swaps it in. `Ok(Some((chunks, bytes)))` when
    /// committed, `Ok(None)` when the controller rejected the swap.
    async fn compact(&self, c: Candidate) -> Result<Option<(u64, u64)>, String> {
        let topic_bytes = *c.topic_id.as_bytes();
        // Read each chunk's section, located and checked through its object's footer.
        let mut footers: HashMap<Arc<str>, Vec<skiff_storage::SectionMeta>> = HashMap::new();
        let mut parts: Vec<Bytes> = Vec::with_capacity(c.chunks.len());
        for chunk in &c.chunks {
            if !footers.contains_key(&chunk.object) {
                let size = *c.object_sizes.get(&chunk.object).ok_or_else(|| format!("{} is not indexed", chunk.object))?;
                let footer = self.storage.read_wal_footer(&chunk.object, size).await.map_err(|e| e.to_string())?;
                footers.insert(chunk.object.clone(), footer);
            }
            let meta = footers[&chunk.object]
                .iter()
                .find(|s| s.topic_id == topic_bytes && s.partition == c.partition)
                .copied()
                .ok_or_else(|| format!("{} has no section for partition {}", chunk.object, c.partition))?;
            if meta.position != chunk.position
                || meta.len != chunk.len
                || meta.base_offset != chunk.base_offset
                || meta.last_offset != chunk.last_offset
            {
                return Err(format!("{}: footer section {meta:?} does not match index chunk {chunk:?}", chunk.object));
            }
            let bytes = self.storage.get_range(&chunk.object, meta.byte_range()).await.map_err(|e| e.to_string())?;
            verify_section(&bytes, &meta).map_err(|e| e.to_string())?;
            parts.push(bytes);
        }
        let first = &c.chunks[0];
        let last = &c.chunks[c.chunks.len() - 1];
        let max_timestamp = c.chunks.iter().map(|c| c.max_timestamp).max().unwrap_or(-1);
        let data_len: u64 = c.chunks.iter().map(|c| c.len).sum();
        let mut builder = WalObjectBuilder::with_capacity(data_len as usize + 128);
        builder
            .add_section(topic_bytes, c.partition, first.base_offset, last.last_offset, max_timestamp, &parts)
            .map_err(|e| e.to_string())?;
        drop(parts);
        let (object, sections) = builder.finish();
        let section = sections[0];
        let key = self.storage.seg_key(topic_bytes, c.partition, first.base_offset, &Uuid::new_v4().simple().to_string());
        let size_bytes = object.len() as u64;
        let started = std::time::Instant::now();
        self.storage.put_new(&key, object).await.map_err(|e| e.to_string())?;
        if started.elapsed() > Duration::from_millis((self.settings.gc_grace_ms / 2).max(0) as u64) {
            // GC may already consider this key an orphan; never commit it.
            let _ = self.storage.delete(&key).await;
            return Err(format!("segment {key} took longer than half the GC grace period to store; abandoned"));
        }
        let cmd = Command::ReplaceChunks(ChunkReplacement {
            topic_id: c.topic_id,
            partition: c.partition,
            replaced: c
                .chunks
                .iter()
                .map(|ch| ReplacedChunk { base_offset: ch.base_offset, object: ch.object.to_string(), position: ch.position })
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
        });
        match self.controller.submit(cmd).await {
            Ok(CommandResult::Rejected(r)) => {
                debug!(%key, reason = %r, "compaction swap rejected; deleting its segment");
                self.metrics.compaction_rejected();
                // Never referenced: safe to delete now (GC would find it as an orphan anyway).
                let _ = self.storage.delete(&key).await;
                Ok(None)
            }
            Ok(_) => {
                self.metrics.compaction(c.chunks.len() as u64, data_len);
                debug!(%key, chunks = c.chunks.len(), bytes = data_len, "compacted");
                Ok(Some((c.chunks.len() as u64, data_len)))
            }
            // The outcome is unknown: the swap may have applied. Leave the segment to GC.
            Err(e) => Err(format!("committing segment {key}: {e}")),
        }
    }

    // ---------------------------------------------------------------- retention

    /// One retention pass: advances the log start of each partition this broker leads past
    /// whole chunks that `retention.ms` or `retention.bytes` expire. Returns how many
    /// partitions advanced.
    pub async fn enforce_retention_once(&self) -> usize {
        let now = self.clock.now_ms();
        self.observe_objects(now);
        let seen = lock(&self.first_seen).clone();
        let advances: Vec<(Uuid, i32, i64)> = self.metadata.read(|m| {
            let mut out = Vec::new();
            for t in m.topics.values() {
                let retention_ms = topic_config_i64(&t.configs, "retention.ms", DEFAULT_RETENTION_MS);
                let retention_bytes = topic_config_i64(&t.configs, "retention.bytes", -1);
                for (idx, p) in t.partitions.iter().enumerate() {
                    if p.leader != self.settings.broker_id {
                        continue;
                    }
                    let start = retention_start(p.chunks.values(), p.log_start_offset, retention_ms, retention_bytes, now, |c| {
                        seen.get(&c.object).copied()
                    });
                    if start > p.log_start_offset {
                        out.push((t.topic_id, idx as i32, start));
                    }
                }
            }
            out
        });
        let mut advanced = 0;
        for (topic_id, partition, offset) in advances {
            match self.controller.submit(Command::AdvanceLogStart { topic_id, partition, offset }).await {
                Ok(CommandResult::Rejected(r)) => debug!(%topic_id, partition, reason = %r, "retention advance rejected"),
                Ok(_) => {
                    advanced += 1;
                    self.metrics.retention_advanced();
                    debug!(%topic_id, partition, offset, "retention advanced the log start");
                }
                Err(e) => {
                    warn!(error = %e, "retention: controller unavailable");
                    break;
                }
            }
        }
        advanced
    }

    // ---------------------------------------------------------------- garbage collection

    /// True if this broker is the one that collects garbage: the lowest registered broker id
    /// (one collector per cluster keeps DELETEs and LISTs from multiplying).
    fn is_collector(&self) -> bool {
        self.metadata.read(|m| m.brokers.keys().next().is_none_or(|id| *id == self.settings.broker_id))
    }

    /// One GC pass: deletes objects unreferenced for the grace period (then forgets them in
    /// the index) and orphans older than the grace period.
    pub async fn collect_garbage_once(&self) -> GcReport {
        let mut report = GcReport::default();
        if !self.is_collector() {
            return report;
        }
        let grace = self.settings.gc_grace_ms;
        let now = self.clock.now_ms();
        // 1. Unreferenced objects the index still lists.
        let unreferenced: Vec<Arc<str>> =
            self.metadata.read(|m| m.objects.iter().filter(|(_, o)| o.live_chunks == 0).map(|(k, _)| k.clone()).collect());
        let due: Vec<Arc<str>> = {
            let mut since = lock(&self.unreferenced_since);
            let current: HashSet<&Arc<str>> = unreferenced.iter().collect();
            since.retain(|k, _| current.contains(k));
            unreferenced.iter().filter(|k| now - *since.entry((*k).clone()).or_insert(now) >= grace).cloned().collect()
        };
        // Re-check under the lock right before deleting (an unreferenced object never becomes
        // referenced again; this only guards against a bug elsewhere).
        let due: Vec<Arc<str>> = self.metadata.read(|m| {
            due.into_iter().filter(|k| m.objects.get(k).is_some_and(|o| o.live_chunks == 0)).collect()
        });
        let deleted = self.delete_all(due.iter().map(|k| k.to_string()).collect()).await;
        report.unreferenced_deleted = deleted.len() as u64;
        self.metrics.objects_deleted("unreferenced", deleted.len() as u64);
        for keys in deleted.chunks(FORGET_BATCH) {
            if let Err(e) = self.controller.submit(Command::ForgetObjects { keys: keys.to_vec() }).await {
                warn!(error = %e, "gc: forgetting deleted objects failed; will retry");
                return report;
            }
        }
        {
            let mut since = lock(&self.unreferenced_since);
            for k in &deleted {
                since.remove(k.as_str());
            }
        }
        // 2. Orphans: stored objects the index does not know. List first, then look them up,
        // so an object committed meanwhile is seen as known.
        let mut listed = Vec::new();
        for dir in ObjectStorage::DATA_DIRS {
            match self.storage.list(dir).await {
                Ok(items) => listed.extend(items),
                Err(e) => {
                    warn!(error = %e, dir, "gc: listing failed");
                    return report;
                }
            }
        }
        let orphans: Vec<String> = self.metadata.read(|m| {
            listed
                .into_iter()
                .filter(|o| !m.objects.contains_key(o.key.as_str()))
                .filter(|o| now - system_ms(o.last_modified) >= grace)
                .map(|o| o.key)
                .collect()
        });
        let deleted = self.delete_all(orphans).await;
        report.orphans_deleted = deleted.len() as u64;
        self.metrics.objects_deleted("orphan", deleted.len() as u64);
        if report.unreferenced_deleted > 0 || report.orphans_deleted > 0 {
            info!(unreferenced = report.unreferenced_deleted, orphans = report.orphans_deleted, "gc deleted objects");
        }
        report
    }

    /// Deletes `keys` (bounded concurrency); returns the keys deleted.
    async fn delete_all(&self, keys: Vec<String>) -> Vec<String> {
        futures::stream::iter(keys)
            .map(|k| async move {
                match self.storage.delete(&k).await {
                    Ok(()) => Some(k),
                    Err(e) => {
                        warn!(key = %k, error = %e, "gc: delete failed; will retry");
                        None
                    }
                }
            })
            .buffer_unordered(GC_DELETE_CONCURRENCY)
            .filter_map(|k| async move { k })
            .collect()
            .await
    }
}

fn system_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The log start offset retention asks for, at a chunk boundary (Kafka semantics, with chunks
/// as segments):
/// * `retention.ms` (>= 0): the oldest chunks whose largest timestamp is more than
///   `retention_ms` before `now` go, up to the first chunk that is not expired. That may be
///   every chunk: the log is then empty and starts at the high watermark, as Kafka rolls and
///   deletes an expired active segment. A chunk without timestamps (-1) ages from when this
///   broker first saw its object (`first_seen`; unknown means not expired).
/// * `retention.bytes` (>= 0): then the oldest chunks go while what remains is still at least
///   `retention_bytes`, so the log never drops below the limit (it may exceed it by up to one
///   chunk).
pub fn retention_start<'a>(
    chunks: impl Iterator<Item = &'a Chunk>,
    log_start: i64,
    retention_ms: i64,
    retention_bytes: i64,
    now: i64,
    first_seen: impl Fn(&Chunk) -> Option<i64>,
) -> i64 {
    let chunks: Vec<&Chunk> = chunks.collect();
    let mut start = log_start;
    let mut i = 0;
    if retention_ms >= 0 {
        while let Some(c) = chunks.get(i) {
            let ts = if c.max_timestamp >= 0 { Some(c.max_timestamp) } else { first_seen(c) };
            match ts {
                Some(ts) if now.saturating_sub(ts) > retention_ms => {
                    start = start.max(c.last_offset + 1);
                    i += 1;
                }
                _ => break,
            }
        }
    }
    if retention_bytes >= 0 {
        let mut excess: i64 = chunks[i..].iter().map(|c| c.len as i64).sum::<i64>() - retention_bytes;
        for c in &chunks[i..] {
            if excess - (c.len as i64) < 0 {
                break;
            }
            excess -= c.len as i64;
            start = start.max(c.last_offset + 1);
        }
    }
    start
}

/// Runs `pass` every `interval` until `shutdown`; a pass in progress is dropped on shutdown.
async fn periodic<F, Fut>(interval: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = pass() => {}
        }
    }
}

impl LifecycleSettings {
    /// The settings of broker `broker_id` from the `[lifecycle]` config section.
    pub fn from_config(broker_id: i32, c: &crate::config::LifecycleConfig) -> Self {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            broker_id,
            compaction_enabled: c.compaction_enabled,
            compaction_interval: Duration::from_millis(c.compaction_interval_ms),
            compaction_min_chunks: c.compaction_min_chunks,
            compaction_min_bytes: c.compaction_min_bytes,
            compaction_max_age_ms: ms(c.compaction_max_age_ms),
            compaction_min_age_ms: ms(c.compaction_min_age_ms),
            compaction_max_segment_bytes: c.compaction_max_segment_bytes,
            compaction_concurrency: c.compaction_concurrency,
            retention_interval: Duration::from_millis(c.retention_check_interval_ms),
            gc_interval: Duration::from_millis(c.gc_interval_ms),
            gc_grace_ms: ms(c.gc_grace_ms),
        }
    }
}
