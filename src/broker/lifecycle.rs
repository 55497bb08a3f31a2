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
use skiff_controller::{ControllerHandle, MetadataHandle};
use skiff_storage::{ObjectStorage, WalObjectBuilder, verify_section};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use skiff_time::Ids;

use super::Clock;
use super::read::TailCache;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

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

/// WAL footers read during one compaction pass, by object key, and whole WAL objects: a pass
/// usually rewrites several partitions' sections of the same object, so one GET of the object
/// replaces one ranged GET per section (S3 bills per request). Objects are kept up to
/// [`PASS_OBJECT_BYTES`] per pass; beyond that sections are read with ranged GETs.
#[derive(Default)]
struct Footers(Mutex<HashMap<Arc<str>, Arc<Vec<skiff_storage::SectionMeta>>>>, Mutex<PassObjects>);

#[derive(Default)]
struct PassObjects {
    bytes: usize,
    objects: HashMap<Arc<str>, Bytes>,
}

/// Memory for whole WAL objects held during one compaction pass.
const PASS_OBJECT_BYTES: usize = 64 << 20;

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
    controller: ControllerHandle,
    metadata: MetadataHandle,
    storage: ObjectStorage,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Suffixes of segment keys.
    ids: Arc<dyn Ids>,
    /// Sections this broker flushed recently: compaction reads them from memory when present.
    tail: Option<TailCache>,
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

impl Lifecycle {
    pub fn new(
        settings: LifecycleSettings,
        controller: ControllerHandle,
        storage: ObjectStorage,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn Ids>,
        tail: Option<TailCache>,
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
            ids,
            tail,
            settings,
            first_seen: Mutex::new(HashMap::new()),
            unreferenced_since: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the compactor (if enabled), retention and GC tasks. Each runs one pass per
    /// interval and stops, mid-pass if need be, when `shutdown` is cancelled. A pass cut short
    /// leaves at worst an orphaned segment, which a later GC pass deletes. They are critical
    /// tasks of `supervisor` (a pass that panics stops the process).
    pub fn start(self: &Arc<Self>, supervisor: &Supervisor, shutdown: CancellationToken) -> LifecycleTasks {
        let s = &self.settings;
        let clock = &self.clock;
        let compactor = s.compaction_enabled.then(|| {
            let me = self.clone();
            supervisor.spawn_critical(
                "compactor",
                periodic(clock.clone(), s.compaction_interval, shutdown.clone(), move || {
                    let me = me.clone();
                    async move {
                        me.compact_once().await;
                    }
                })
                .instrument(info_span!("compactor")),
            )
        });
        let me = self.clone();
        let retention = supervisor.spawn_critical(
            "retention",
            periodic(clock.clone(), s.retention_interval, shutdown.clone(), move || {
                let me = me.clone();
                async move {
                    me.enforce_retention_once().await;
                }
            })
            .instrument(info_span!("retention")),
        );
        let me = self.clone();
        let gc = supervisor.spawn_critical(
            "gc",
            periodic(clock.clone(), s.gc_interval, shutdown, move || {
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
                // Runs of consecutive eligible chunks, each capped at the segment size; every
                // run that is due becomes one segment (several per pass if a partition is busy).
                let mut runs: Vec<(Vec<Chunk>, u64)> = vec![(Vec::new(), 0)];
                for c in p.chunks.values() {
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
                    let lone = run.len() == 1 && m.objects.get(&run[0].object).is_some_and(|o| o.live_chunks <= 1);
                    if !due || lone {
                        continue;
                    }
                    let object_sizes = run
                        .iter()
                        .filter_map(|c| m.objects.get(&c.object).map(|o| (c.object.clone(), o.size_bytes)))
                        .collect();
                    out.push(Candidate { topic_id: t.topic_id, partition: idx as i32, chunks: run, object_sizes });
                }
            }
        }
        out
    }

    /// Rewrites one run into a segment and swaps it in. `Ok(Some((chunks, bytes)))` when
    /// committed, `Ok(None)` when the controller rejected the swap.
    async fn compact(&self, c: Candidate, footers: &Footers) -> Result<Option<(u64, u64)>, String> {
        let topic_bytes = *c.topic_id.as_bytes();
        // Read each chunk's section, located and checked through its object's footer.
        let mut parts: Vec<Bytes> = Vec::with_capacity(c.chunks.len());
        for chunk in &c.chunks {
            // Recently flushed data is still in memory: no read at all.
            if let Some(b) = self.tail.as_ref().and_then(|t| t.get(&chunk.object, chunk.position)) {
                parts.push(b);
                continue;
            }
            let size = *c.object_sizes.get(&chunk.object).ok_or_else(|| format!("{} is not indexed", chunk.object))?;
            // Whole object once per pass (its footer comes with it), while the budget lasts.
            let held = lock(&footers.1).objects.get(&chunk.object).cloned();
            let whole = match held {
                Some(o) => Some(o),
                None if lock(&footers.1).bytes + size as usize <= PASS_OBJECT_BYTES => {
                    let o = self.storage.get(&chunk.object).await.map_err(|e| e.to_string())?;
                    let footer = skiff_storage::decode_footer(&o).map_err(|e| e.to_string())?;
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
                    let f =
                        Arc::new(self.storage.read_wal_footer(&chunk.object, size).await.map_err(|e| e.to_string())?);
                    lock(&footers.0).insert(chunk.object.clone(), f.clone());
                    f
                }
            };
            let meta = footer
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
            let bytes = match &whole {
                Some(o) if meta.position + meta.len <= o.len() as u64 => {
                    o.slice(meta.position as usize..(meta.position + meta.len) as usize)
                }
                _ => self.storage.get_range(&chunk.object, meta.byte_range()).await.map_err(|e| e.to_string())?,
            };
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
        let key = self.storage.seg_key(topic_bytes, c.partition, first.base_offset, &self.ids.suffix());
        let size_bytes = object.len() as u64;
        let started = self.clock.now();
        self.storage.put_new(&key, object).await.map_err(|e| e.to_string())?;
        if self.clock.now() - started > Duration::from_millis((self.settings.gc_grace_ms / 2).max(0) as u64) {
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
            // Topic configs over the dynamic broker defaults (`log.retention.ms`, ...).
            let defaults = super::dynamic_config::BrokerDefaults::new(
                &m.configs,
                self.settings.broker_id,
                super::dynamic_config::KAFKA_MESSAGE_MAX_BYTES,
            );
            for t in m.topics.values() {
                let retention_ms = defaults.value_i64(&t.configs, "retention.ms", DEFAULT_RETENTION_MS);
                let retention_bytes = defaults.value_i64(&t.configs, "retention.bytes", -1);
                for (idx, p) in t.partitions.iter().enumerate() {
                    if p.leader != self.settings.broker_id {
                        continue;
                    }
                    let start = retention_start(
                        p.chunks.values(),
                        p.log_start_offset,
                        retention_ms,
                        retention_bytes,
                        now,
                        |c| seen.get(&c.object).copied(),
                    );
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
                Ok(CommandResult::Rejected(r)) => {
                    debug!(%topic_id, partition, reason = %r, "retention advance rejected")
                }
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

    /// True if this broker is the one that collects garbage: the lowest live broker id (one
    /// collector per cluster keeps DELETEs and LISTs from multiplying; when it dies, the next
    /// takes over once it is fenced).
    fn is_collector(&self) -> bool {
        self.metadata.read(|m| m.live_brokers().first().is_none_or(|id| *id == self.settings.broker_id))
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
        let unreferenced: Vec<Arc<str>> = self
            .metadata
            .read(|m| m.objects.iter().filter(|(_, o)| o.live_chunks == 0).map(|(k, _)| k.clone()).collect());
        let due: Vec<Arc<str>> = {
            let mut since = lock(&self.unreferenced_since);
            let current: HashSet<&Arc<str>> = unreferenced.iter().collect();
            since.retain(|k, _| current.contains(k));
            unreferenced.iter().filter(|k| now - *since.entry((*k).clone()).or_insert(now) >= grace).cloned().collect()
        };
        // Re-check under the lock right before deleting (an unreferenced object never becomes
        // referenced again; this only guards against a bug elsewhere).
        let due: Vec<Arc<str>> = self
            .metadata
            .read(|m| due.into_iter().filter(|k| m.objects.get(k).is_some_and(|o| o.live_chunks == 0)).collect());
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
async fn periodic<F, Fut>(clock: Arc<dyn Clock>, interval: Duration, shutdown: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.sleep(interval) => {}
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
        let ms = |v: Duration| i64::try_from(v.as_millis()).unwrap_or(i64::MAX);
        Self {
            broker_id,
            compaction_enabled: c.compaction_enabled,
            compaction_interval: c.compaction_interval,
            compaction_min_chunks: c.compaction_min_chunks,
            compaction_min_bytes: c.compaction_min_bytes,
            compaction_max_age_ms: ms(c.compaction_max_age),
            compaction_min_age_ms: ms(c.compaction_min_age),
            compaction_max_segment_bytes: c.compaction_max_segment_bytes,
            compaction_concurrency: c.compaction_concurrency,
            retention_interval: c.retention_check_interval,
            gc_interval: c.gc_interval,
            gc_grace_ms: ms(c.gc_grace),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests race real tasks against real time
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicI64, Ordering};

    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use skiff_controller::metadata::{BrokerRegistration, CreateTopic};
    use skiff_controller::{Controller, ControllerConfig};
    use skiff_storage::StorageConfig;

    use super::*;
    use crate::broker::batch;
    use crate::broker::read::TailCache;
    use crate::broker::wal::{PartitionKey, Wal, WalSettings, WalTasks};

    /// Wall-clock time plus an adjustable skew, or a fixed time.
    #[derive(Debug)]
    struct TestClock {
        fixed: Option<AtomicI64>,
        skew: AtomicI64,
    }

    impl TestClock {
        fn real() -> Arc<Self> {
            Arc::new(Self { fixed: None, skew: AtomicI64::new(0) })
        }
        fn fixed(ms: i64) -> Arc<Self> {
            Arc::new(Self { fixed: Some(AtomicI64::new(ms)), skew: AtomicI64::new(0) })
        }
        fn set(&self, ms: i64) {
            self.fixed.as_ref().expect("fixed clock").store(ms, Ordering::SeqCst);
        }
        fn advance(&self, ms: i64) {
            self.skew.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for TestClock {
        fn now_ms(&self) -> i64 {
            let base = match &self.fixed {
                Some(f) => f.load(Ordering::SeqCst),
                None => super::super::SystemClock.now_ms(),
            };
            base + self.skew.load(Ordering::SeqCst)
        }
    }

    fn settings() -> LifecycleSettings {
        LifecycleSettings {
            broker_id: 1,
            compaction_enabled: true,
            compaction_interval: Duration::from_millis(25),
            compaction_min_chunks: 2,
            compaction_min_bytes: u64::MAX,
            compaction_max_age_ms: i64::MAX,
            compaction_min_age_ms: 0,
            compaction_max_segment_bytes: 1 << 20,
            compaction_concurrency: 2,
            retention_interval: Duration::from_millis(30),
            gc_interval: Duration::from_millis(20),
            gc_grace_ms: 500,
        }
    }

    struct Harness {
        _dir: tempfile::TempDir,
        controller: ControllerHandle,
        local: Controller,
        storage: ObjectStorage,
        wal: Arc<Wal>,
        wal_tasks: Option<WalTasks>,
        wal_token: CancellationToken,
        lifecycle: Arc<Lifecycle>,
    }

    impl Harness {
        async fn start(s: LifecycleSettings, clock: Arc<TestClock>) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let controller = Controller::start_single(
                ControllerConfig::new(1, dir.path().join("controller"), "test".into()),
                CancellationToken::new(),
            )
            .await
            .expect("controller");
            let local = controller.clone();
            let controller = ControllerHandle::Local(controller);
            let reg = Command::RegisterBroker(BrokerRegistration {
                broker_id: 1,
                incarnation: Uuid::new_v4(),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                fenced: false,
            });
            assert_eq!(controller.submit(reg).await.expect("register"), CommandResult::Ok);
            let storage = skiff_storage::open(&StorageConfig::from_url("memory://")).expect("memory storage");
            let metrics = Arc::new(Metrics::default());
            let tail = TailCache::new(16 * 1024);
            let wal_token = CancellationToken::new();
            let (wal, wal_tasks) = Wal::start(
                WalSettings {
                    broker_id: 1,
                    flush_bytes: 64 * 1024,
                    flush_interval: Duration::from_millis(2),
                    buffer_max_bytes: 8 << 20,
                    max_inflight_flushes: 4,
                    flush_when_idle: false,
                },
                Uuid::new_v4(),
                controller.clone(),
                storage.clone(),
                // A small tail cache: compaction reads some sections from memory, most from storage
                // (the tests' own reads always go to storage).
                tail.clone(),
                metrics.clone(),
                clock.clone(),
                &Supervisor::new(wal_token.clone()),
                wal_token.clone(),
            );
            let lifecycle = Lifecycle::new(
                s,
                controller.clone(),
                storage.clone(),
                metrics,
                clock.clone(),
                skiff_time::random_ids(),
                Some(tail),
            );
            Self { _dir: dir, controller, local, storage, wal, wal_tasks: Some(wal_tasks), wal_token, lifecycle }
        }

        async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Uuid {
            let topic_id = Uuid::new_v4();
            let configs = configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let r = self
                .controller
                .submit(Command::CreateTopic(CreateTopic {
                    name: name.into(),
                    topic_id,
                    partitions,
                    configs,
                    assignments: Vec::new(),
                }))
                .await
                .expect("create topic");
            assert_eq!(r, CommandResult::TopicCreated { topic_id });
            topic_id
        }

        async fn stop(mut self) {
            self.wal_token.cancel();
            if let Some(t) = self.wal_tasks.take() {
                t.join().await;
            }
            let _ = self.local.shutdown().await;
        }
    }

    fn encode(values: &[Bytes], ts: i64) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: ts,
                key: None,
                value: Some(v.clone()),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encode");
        buf.freeze()
    }

    /// Produces one batch and waits for its acknowledgement; returns its base offset.
    async fn produce(wal: &Wal, key: PartitionKey, values: &[Bytes], ts: i64) -> Option<i64> {
        let records = encode(values, ts);
        let headers = batch::validate_produce(&records, 1 << 20).expect("valid batch");
        let (appended, rx) = wal.append(key, &records, &headers, None).await.ok()?;
        rx?.await.ok()?.ok()?;
        Some(appended.base_offset)
    }

    type Expected = BTreeMap<i64, Bytes>;

    /// Reads every chunk of the partition straight from object storage (no cache) and checks
    /// that [log_start, hwm) is covered exactly once, with the acknowledged values.
    async fn verify_partition(h: &Harness, topic_id: Uuid, partition: i32, expected: &Expected) -> Result<(), String> {
        let (log_start, end, chunks) = h
            .controller
            .metadata()
            .read(|m| {
                m.partition(&topic_id, partition)
                    .map(|p| (p.log_start_offset, p.end_offset, p.chunks.values().cloned().collect::<Vec<_>>()))
            })
            .ok_or("no partition")?;
        let mut next = log_start;
        for c in chunks.iter().filter(|c| c.last_offset >= log_start) {
            let data = h
                .storage
                .get_range(&c.object, c.position..c.position + c.len)
                .await
                .map_err(|e| format!("chunk {c:?} unreadable: {e}"))?;
            let mut pos = 0;
            while pos < data.len() {
                let hdr = batch::parse_header(&data[pos..]).map_err(|e| format!("bad batch in {}: {e:?}", c.object))?;
                let mut one = data.slice(pos..pos + hdr.size);
                batch::validate_produce(&one, usize::MAX).map_err(|e| format!("batch CRC in {}: {e:?}", c.object))?;
                let set = RecordBatchDecoder::decode(&mut one).map_err(|e| format!("decode: {e}"))?;
                for r in set.records.iter().filter(|r| r.offset >= log_start) {
                    if r.offset != next {
                        return Err(format!("offset {} where {next} was expected (gap or duplicate)", r.offset));
                    }
                    match expected.get(&r.offset) {
                        Some(v) if Some(v) == r.value.as_ref() => {}
                        Some(v) => return Err(format!("offset {}: value {:?}, expected {v:?}", r.offset, r.value)),
                        // Not yet recorded by the producer task (ack in flight): fine.
                        None => {}
                    }
                    next += 1;
                }
                pos += hdr.size;
            }
        }
        if next != end {
            return Err(format!("read up to {next}, high watermark is {end}"));
        }
        Ok(())
    }

    /// Every object a chunk references exists in storage.
    async fn verify_references(h: &Harness) -> Result<(), String> {
        let referenced: HashSet<String> = h.controller.metadata().read(|m| {
            m.topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .flat_map(|p| p.chunks.values())
                .map(|c| c.object.to_string())
                .collect()
        });
        let mut stored = HashSet::new();
        for dir in ObjectStorage::DATA_DIRS {
            for o in h.storage.list(dir).await.map_err(|e| e.to_string())? {
                stored.insert(o.key);
            }
        }
        let missing: Vec<&String> = referenced.difference(&stored).collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("referenced objects missing from storage: {missing:?}")) }
    }

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

    #[test]
    fn retention_rules() {
        let chunks =
            [chunk(0, 9, 100, 1000), chunk(10, 19, 100, 3000), chunk(20, 29, 100, 2000), chunk(30, 39, 100, 9000)];
        let start = |ms, bytes, now| retention_start(chunks.iter(), 0, ms, bytes, now, |_| None);
        // Nothing configured.
        assert_eq!(start(-1, -1, 10_000), 0);
        // Time: a prefix of expired chunks, stopping at the first live one (even if a later
        // chunk is older, as Kafka does).
        assert_eq!(start(1500, -1, 4000), 10);
        assert_eq!(start(500, -1, 4000), 30);
        // Everything expired: the log empties up to the high watermark.
        assert_eq!(start(0, -1, 10_000), 40);
        // Size: keep at least retention.bytes.
        assert_eq!(start(-1, 250, 0), 10);
        assert_eq!(start(-1, 200, 0), 20);
        assert_eq!(start(-1, 400, 0), 0);
        assert_eq!(start(-1, 0, 0), 40);
        // Both: size applies to what time retention left.
        assert_eq!(start(1500, 150, 4000), 20);
        // Never moves backwards.
        assert_eq!(retention_start(chunks.iter(), 25, 1500, -1, 4000, |_| None), 25);
        // No timestamps: ages from when the object was first seen; unknown is not expired.
        let untimed = [chunk(0, 9, 100, -1)];
        assert_eq!(retention_start(untimed.iter(), 0, 1000, -1, 5000, |_| None), 0);
        assert_eq!(retention_start(untimed.iter(), 0, 1000, -1, 5000, |_| Some(3000)), 10);
    }

    fn values(prefix: &str, n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("{prefix}-{i}"))).collect()
    }

    async fn produce_recorded(h: &Harness, key: PartitionKey, prefix: &str, n: usize, ts: i64, exp: &mut Expected) {
        let vals = values(prefix, n);
        let base = produce(&h.wal, key, &vals, ts).await.expect("acknowledged");
        for (i, v) in vals.into_iter().enumerate() {
            exp.insert(base + i as i64, v);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_swaps_multi_partition_wal_chunks_for_segments() {
        let clock = TestClock::real();
        let h = Harness::start(settings(), clock.clone()).await;
        let topic = h.create_topic("t", 2, &[]).await;
        let keys = [PartitionKey { topic_id: topic, partition: 0 }, PartitionKey { topic_id: topic, partition: 1 }];
        let mut exp = [Expected::new(), Expected::new()];
        for round in 0..5 {
            // Both partitions in one flush: multi-partition WAL objects.
            let (a, b) = exp.split_at_mut(1);
            let (pa, pb) = (format!("p0r{round}"), format!("p1r{round}"));
            tokio::join!(
                produce_recorded(&h, keys[0], &pa, 3, 1000, &mut a[0]),
                produce_recorded(&h, keys[1], &pb, 2, 1000, &mut b[0]),
            );
        }
        let before: Vec<Chunk> =
            h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks.values().cloned().collect());
        assert!(before.len() >= 2, "{before:?}");
        let wal_objects = h.storage.list("wal").await.expect("list").len();

        let report = h.lifecycle.compact_once().await;
        assert_eq!(report.segments, 2, "{report:?}");
        assert_eq!(report.rejected + report.failed, 0);
        for (p, e) in exp.iter().enumerate() {
            let chunks: Vec<Chunk> = h
                .controller
                .metadata()
                .read(|m| m.partition(&topic, p as i32).expect("p").chunks.values().cloned().collect());
            assert_eq!(chunks.len(), 1, "one segment per partition: {chunks:?}");
            assert!(h.storage.is_segment_key(&chunks[0].object), "{}", chunks[0].object);
            assert!(chunks[0].object.contains(&format!("/{p}/00000000000000000000-")));
            // The segment is a valid v1 object with exactly one section.
            let whole = h.storage.get(&chunks[0].object).await.expect("segment stored");
            let sections = skiff_storage::format::validate_object(&whole).expect("valid segment");
            assert_eq!(sections.len(), 1);
            assert_eq!((sections[0].position, sections[0].len), (chunks[0].position, chunks[0].len));
            verify_partition(&h, topic, p as i32, e).await.expect("readable after compaction");
        }
        // A reader that planned the old chunk before the swap can still read it: the WAL
        // objects stay until the grace period has passed.
        let old = &before[0];
        h.storage.get_range(&old.object, old.position..old.position + old.len).await.expect("old chunk still readable");
        assert_eq!(h.lifecycle.collect_garbage_once().await, GcReport::default());
        assert_eq!(h.storage.list("wal").await.expect("list").len(), wal_objects);

        // After the grace period the WAL objects go, and leave the index too.
        clock.advance(h.lifecycle.settings.gc_grace_ms + 1);
        let gc = h.lifecycle.collect_garbage_once().await;
        assert_eq!(gc.unreferenced_deleted as usize, wal_objects, "{gc:?}");
        assert_eq!(gc.orphans_deleted, 0);
        assert!(h.storage.list("wal").await.expect("list").is_empty());
        let indexed = h.controller.metadata().read(|m| m.objects.len());
        assert_eq!(indexed, 2, "only the two segments remain indexed");
        for (p, e) in exp.iter().enumerate() {
            verify_partition(&h, topic, p as i32, e).await.expect("readable after gc");
        }
        verify_references(&h).await.expect("references");

        // Appends continue after compaction and are compacted into a second segment.
        for r in 0..3 {
            produce_recorded(&h, keys[0], &format!("late{r}"), 2, 1000, &mut exp[0]).await;
        }
        let report = h.lifecycle.compact_once().await;
        assert_eq!(report.segments, 1, "{report:?}");
        verify_partition(&h, topic, 0, &exp[0]).await.expect("readable");
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_thresholds() {
        let clock = TestClock::real();
        let s = LifecycleSettings { compaction_min_chunks: 4, compaction_min_age_ms: 60_000, ..settings() };
        let h = Harness::start(s, clock.clone()).await;
        let topic = h.create_topic("t", 2, &[]).await;
        let key = |p| PartitionKey { topic_id: topic, partition: p };
        let mut exp = Expected::new();
        for r in 0..3 {
            let (pa, vb) = (format!("a{r}"), values("b", 1));
            let (_, _) =
                tokio::join!(produce_recorded(&h, key(0), &pa, 1, 0, &mut exp), produce(&h.wal, key(1), &vb, 0),);
        }
        // Too young.
        assert_eq!(h.lifecycle.compact_once().await.segments, 0);
        clock.advance(60_000);
        // Old enough but only three chunks (min four).
        assert_eq!(h.lifecycle.compact_once().await.segments, 0);
        produce(&h.wal, key(0), &values("c", 1), 0).await.expect("ack");
        // The fourth chunk is young: still three eligible.
        assert_eq!(h.lifecycle.compact_once().await.segments, 0);
        clock.advance(60_000);
        let report = h.lifecycle.compact_once().await;
        assert_eq!(report.segments, 1, "{report:?}");
        assert_eq!(report.chunks_replaced, 4);
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_partition_gets_several_segments_per_pass() {
        let s = LifecycleSettings { compaction_max_segment_bytes: 200, ..settings() };
        let h = Harness::start(s, TestClock::real()).await;
        let topic = h.create_topic("t", 1, &[]).await;
        let key = PartitionKey { topic_id: topic, partition: 0 };
        let mut exp = Expected::new();
        for r in 0..8 {
            produce_recorded(&h, key, &format!("r{r}"), 1, 0, &mut exp).await;
        }
        let chunk_len =
            h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks.values().next().expect("c").len);
        assert!(chunk_len <= 100, "test assumes small chunks, got {chunk_len}");
        let report = h.lifecycle.compact_once().await;
        assert!(report.segments >= 3, "{report:?}");
        assert_eq!(report.rejected + report.failed, 0, "{report:?}");
        let chunks: Vec<Chunk> =
            h.controller.metadata().read(|m| m.partition(&topic, 0).expect("p").chunks.values().cloned().collect());
        assert!(chunks.iter().all(|c| c.len <= 200 && h.storage.is_segment_key(&c.object)), "{chunks:?}");
        verify_partition(&h, topic, 0, &exp).await.expect("readable");
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stale_compaction_is_rejected_and_its_segment_removed() {
        let clock = TestClock::real();
        let h = Harness::start(settings(), clock.clone()).await;
        let topic = h.create_topic("t", 1, &[]).await;
        let key = PartitionKey { topic_id: topic, partition: 0 };
        let mut exp = Expected::new();
        for r in 0..3 {
            produce_recorded(&h, key, &format!("r{r}"), 2, 0, &mut exp).await;
        }
        let candidates = {
            let seen = HashMap::new();
            h.controller.metadata().read(|m| h.lifecycle.plan_compaction(m, &seen, 0))
        };
        assert_eq!(candidates.len(), 1);
        // Retention (DeleteRecords) removes the first chunk before the swap is committed.
        let second =
            h.controller.metadata().read(|m| *m.partition(&topic, 0).expect("p").chunks.keys().nth(1).expect("chunk"));
        h.controller
            .submit(Command::AdvanceLogStart { topic_id: topic, partition: 0, offset: second })
            .await
            .expect("advance");
        let r = h.lifecycle.compact(candidates.into_iter().next().expect("one"), &Footers::default()).await;
        assert_eq!(r, Ok(None), "rejected");
        assert!(h.storage.list("seg").await.expect("list").is_empty(), "rejected segment deleted");
        verify_partition(&h, topic, 0, &exp).await.expect("readable");
        // The next pass compacts what is left.
        assert_eq!(h.lifecycle.compact_once().await.segments, 1);
        verify_partition(&h, topic, 0, &exp).await.expect("readable");
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_by_time_and_size() {
        let clock = TestClock::fixed(10_000);
        let s = LifecycleSettings { compaction_enabled: false, ..settings() };
        let h = Harness::start(s, clock.clone()).await;
        let timed = h.create_topic("timed", 1, &[("retention.ms", "2000")]).await;
        let sized = h.create_topic("sized", 1, &[("retention.bytes", "1")]).await;
        let forever = h.create_topic("forever", 1, &[("retention.ms", "-1")]).await;
        let t = PartitionKey { topic_id: timed, partition: 0 };
        let z = PartitionKey { topic_id: sized, partition: 0 };
        let f = PartitionKey { topic_id: forever, partition: 0 };
        let a = produce(&h.wal, t, &values("a", 2), 1000).await.expect("ack");
        let b = produce(&h.wal, t, &values("b", 2), 5000).await.expect("ack");
        for i in 0..3 {
            produce(&h.wal, z, &values(&format!("z{i}"), 2), 10_000).await.expect("ack");
            produce(&h.wal, f, &values(&format!("f{i}"), 2), 0).await.expect("ack");
        }
        let log_start = |id: Uuid| {
            h.controller
                .metadata()
                .read(|m| m.partition(&id, 0).map(|p| (p.log_start_offset, p.end_offset)).expect("p"))
        };
        clock.set(4000);
        // timed: a (ts 1000) expired, b (ts 5000) not. sized: keeps only the last chunk.
        assert_eq!(h.lifecycle.enforce_retention_once().await, 2);
        assert_eq!(log_start(timed), (b, b + 2));
        assert_eq!(log_start(sized), (4, 6));
        assert_eq!(log_start(forever), (0, 6));
        assert_eq!(a, 0);
        // Idempotent.
        assert_eq!(h.lifecycle.enforce_retention_once().await, 0);
        clock.set(8000);
        assert_eq!(h.lifecycle.enforce_retention_once().await, 1);
        assert_eq!(log_start(timed), (4, 4), "everything expired: the log starts at the high watermark");
        let chunks = h.controller.metadata().read(|m| m.partition(&timed, 0).expect("p").chunks.len());
        assert_eq!(chunks, 0);
        // Offsets continue after an emptied log.
        assert_eq!(produce(&h.wal, t, &values("c", 1), 8000).await, Some(4));
        h.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_deletes_orphans_and_deleted_topics_after_grace() {
        let clock = TestClock::real();
        let h = Harness::start(settings(), clock.clone()).await;
        let keep = h.create_topic("keep", 1, &[]).await;
        let gone = h.create_topic("gone", 1, &[]).await;
        let mut exp = Expected::new();
        produce_recorded(&h, PartitionKey { topic_id: keep, partition: 0 }, "k", 2, 0, &mut exp).await;
        produce(&h.wal, PartitionKey { topic_id: gone, partition: 0 }, &values("g", 2), 0).await.expect("ack");
        // Orphans: a WAL object and a segment whose commits never happened, and a key outside
        // the data directories that GC must never touch.
        let wal_orphan = h.storage.wal_key(7, "dead", 1);
        let seg_orphan = h.storage.seg_key(*keep.as_bytes(), 0, 0, "orphan");
        for k in [&wal_orphan, &seg_orphan, &"meta/other".to_string()] {
            h.storage.put_new(k, Bytes::from_static(b"x")).await.expect("put");
        }
        assert_eq!(
            h.controller.submit(Command::DeleteTopic { name: "gone".into() }).await.expect("delete"),
            CommandResult::Ok
        );
        assert_eq!(h.lifecycle.collect_garbage_once().await, GcReport::default(), "within the grace period");
        clock.advance(h.lifecycle.settings.gc_grace_ms + 1);
        let r = h.lifecycle.collect_garbage_once().await;
        assert_eq!(r, GcReport { unreferenced_deleted: 1, orphans_deleted: 2 });
        let left: Vec<String> = h.storage.list("").await.expect("list").into_iter().map(|o| o.key).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&"meta/other".to_string()));
        verify_partition(&h, keep, 0, &exp).await.expect("kept topic readable");
        verify_references(&h).await.expect("references");
        h.stop().await;
    }

    /// Concurrent produce, compaction, retention and GC with a short grace period, while
    /// readers keep reading what the index points at: every committed offset in
    /// [log_start, hwm) stays readable with its acknowledged value, and every object the index
    /// references exists. Seeded and bounded (~3 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn randomized_background_work_never_deletes_referenced_data() {
        let seed: u64 = std::env::var("SKIFF_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0003);
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = TestClock::real();
        let s = LifecycleSettings {
            compaction_min_chunks: rng.random_range(2..6),
            compaction_max_segment_bytes: rng.random_range(2_000..20_000),
            gc_grace_ms: 1000,
            ..settings()
        };
        let h = Arc::new(Harness::start(s, clock.clone()).await);
        let bounded = h.create_topic("bounded", 3, &[("retention.bytes", "3000")]).await;
        let plain = h.create_topic("plain", 2, &[]).await;
        let parts: Vec<PartitionKey> = (0..3)
            .map(|p| PartitionKey { topic_id: bounded, partition: p })
            .chain((0..2).map(|p| PartitionKey { topic_id: plain, partition: p }))
            .collect();
        let expected: Arc<Mutex<HashMap<PartitionKey, Expected>>> = Arc::new(Mutex::new(HashMap::new()));
        let stop = CancellationToken::new();
        let tasks = h.lifecycle.start(&Supervisor::new(stop.clone()), stop.clone());

        let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
        let mut producers = Vec::new();
        for (i, key) in parts.iter().copied().enumerate() {
            let (h, expected) = (h.clone(), expected.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 1));
            producers.push(tokio::spawn(async move {
                let mut n = 0;
                while tokio::time::Instant::now() < deadline {
                    let count = rng.random_range(1..5);
                    let vals: Vec<Bytes> = (0..count)
                        .map(|j| Bytes::from(format!("{i}-{n}-{j}-{}", "x".repeat(rng.random_range(0..100)))))
                        .collect();
                    n += 1;
                    // Real timestamps: the default retention.ms (7 days) must not expire them.
                    let ts = super::super::SystemClock.now_ms();
                    if let Some(base) = produce(&h.wal, key, &vals, ts).await {
                        let mut e = lock(&expected);
                        let e = e.entry(key).or_default();
                        for (j, v) in vals.into_iter().enumerate() {
                            e.insert(base + j as i64, v);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
                }
            }));
        }
        // Readers: read the whole partition as the index stands, again and again.
        let mut readers = Vec::new();
        for key in parts.iter().copied() {
            let (h, expected) = (h.clone(), expected.clone());
            readers.push(tokio::spawn(async move {
                let mut passes = 0u32;
                while tokio::time::Instant::now() < deadline {
                    let exp = lock(&expected).get(&key).cloned().unwrap_or_default();
                    verify_partition(&h, key.topic_id, key.partition, &exp).await?;
                    passes += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<u32, String>(passes)
            }));
        }
        for p in producers {
            p.await.expect("producer");
        }
        for r in readers {
            let passes = r.await.expect("reader").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(passes > 0);
        }
        stop.cancel();
        tasks.join().await;
        // A swap proposed just before the cancellation may still apply; let it land.
        tokio::time::sleep(Duration::from_millis(200)).await;

        let exp = lock(&expected).clone();
        for key in &parts {
            verify_partition(&h, key.topic_id, key.partition, &exp[key])
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        verify_references(&h).await.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let (segments, log_start) = h.controller.metadata().read(|m| {
            let chunks = m.topics.values().flat_map(|t| t.partitions.iter()).flat_map(|p| p.chunks.values());
            let segs = chunks.filter(|c| h.storage.is_segment_key(&c.object)).count();
            (segs, m.partition(&bounded, 0).expect("p").log_start_offset)
        });
        assert!(segments > 0, "seed {seed}: compaction ran");
        assert!(log_start > 0, "seed {seed}: retention ran");
        let deletes = h.storage.stats().snapshot().deletes;
        assert!(deletes > 0, "seed {seed}: gc deleted objects while producing");

        // Past the grace period a final pass leaves exactly the referenced objects (the first
        // pass starts the grace period of objects released since the last one).
        h.lifecycle.collect_garbage_once().await;
        clock.advance(60_000);
        h.lifecycle.collect_garbage_once().await;
        let referenced: HashSet<String> =
            h.controller.metadata().read(|m| m.objects.keys().map(|k| k.to_string()).collect());
        let stored: HashSet<String> = h.storage.list("").await.expect("list").into_iter().map(|o| o.key).collect();
        assert_eq!(stored, referenced, "seed {seed}: no garbage left, nothing referenced missing");
        assert!(h.controller.metadata().read(|m| m.objects.values().all(|o| o.live_chunks > 0)));
        for key in &parts {
            verify_partition(&h, key.topic_id, key.partition, &exp[key])
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        match Arc::try_unwrap(h) {
            Ok(h) => h.stop().await,
            Err(_) => panic!("harness still shared"),
        }
    }
}
