//! Background work on stored data: compaction, retention and garbage collection.
//!
//! ```text
//! compactor  WAL chunks of a partition ──GET footer + section──▶ one segment object (PUT)
//!            ──ReplaceChunks (one atomic index swap)──▶ controller
//! retention  retention.ms / retention.bytes ──AdvanceLogStart (chunk boundary)──▶ controller
//! gc         objects no chunk references, unreferenced for the grace period ──DELETE──▶
//!            ForgetObjects; objects under wal/ and seg/ the index never knew, older than the
//!            grace period ──DELETE
//! cleaner    compacted topics: RollHead; map the dirty range, filter, write segments
//!            ──CleanChunks (one atomic swap per pass)──▶ controller (`cleaner/`)
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
//!
//! * Compaction, retention and the cleaner never work on the same partition at once
//!   ([`Lifecycle::claim`]); compaction never merges chunks across a compacted partition's head
//!   or roll boundaries (the cleaner's ranges end there).
//!
//! One concern per file: `compaction.rs` (WAL chunks into segments), `retention.rs`
//! (`retention.ms` / `retention.bytes` → a new log start), `gc.rs` (deleting unreferenced and
//! orphaned objects), `cleaner/` (compacted topics); this file holds what they share: settings,
//! the worker, its tasks and the per-partition claims.

pub mod cleaner;
mod compaction;
mod gc;
mod retention;
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests race real tasks against real time
pub(crate) mod tests;

pub use cleaner::{CleanerReport, PassReport, PassResult};
pub use compaction::CompactionReport;
pub use gc::GcReport;
pub use retention::retention_start;

/// The cleaner's pure rules, public only for the fuzz target `batch_reencode` (fuzz/): not an
/// API of the crate.
#[doc(hidden)]
pub mod cleaner_fuzzing {
    pub use super::cleaner::filter::{AbortedTxn, Outcome, Rules, TxnTracker, filter_batch, map_batch};
    pub use super::cleaner::map::OffsetMap;
}

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_controller::{ControllerHandle, MetadataHandle};
use skiff_storage::ObjectStorage;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};
use uuid::Uuid;

use skiff_time::Ids;

use crate::broker::Clock;
use crate::log::read::TailCache;
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

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
    /// Un-compacted chunks (of the partitions this broker leads) the adaptive pace aims to
    /// hold; 0 = the fixed pace above ([`compaction::pace`]).
    pub compaction_hot_chunks_budget: u64,
    /// The shortest period the adaptive pace may reach.
    pub compaction_min_interval: Duration,
    pub retention_interval: Duration,
    pub gc_interval: Duration,
    /// How long an unreferenced or orphaned object is kept before it is deleted.
    pub gc_grace_ms: i64,
    pub cleaner_enabled: bool,
    /// Period of the cleaner's rounds.
    pub cleaner_backoff: Duration,
    /// Partitions cleaned at once.
    pub cleaner_concurrency: usize,
    /// Offset-map memory of one pass.
    pub cleaner_dedupe_buffer_bytes: u64,
    /// Dirty bytes one pass holds.
    pub cleaner_dirty_buffer_bytes: u64,
    /// Cleaner bytes read plus written per second; 0 = unlimited.
    pub cleaner_max_bytes_per_second: u64,
}

/// Which background task holds a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    Compaction,
    Retention,
    Cleaner,
}

/// A task's hold on one partition; released when dropped.
pub(crate) struct Claim<'a> {
    lifecycle: &'a Lifecycle,
    key: (Uuid, i32),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut claims = lock(&self.lifecycle.claims);
        if let Some((_, n)) = claims.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                claims.remove(&self.key);
            }
        }
    }
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
    /// The compactor's last pass: when, the flush counter then, and the pace it chose.
    pace: Mutex<compaction::PaceState>,
    /// Partitions a task is working on, and how many of its jobs hold each (several compaction
    /// runs of one partition may run at once; different tasks never do).
    claims: Mutex<HashMap<(Uuid, i32), (Work, usize)>>,
    /// Where a test stops a cleaner pass.
    #[cfg(test)]
    cleaner_failpoint: Mutex<Option<cleaner::Failpoint>>,
}

/// The three background tasks; cancelled through the token given to [`Lifecycle::start`].
pub struct LifecycleTasks {
    compactor: Option<JoinHandle<()>>,
    cleaner: Option<JoinHandle<()>>,
    retention: JoinHandle<()>,
    gc: JoinHandle<()>,
}

impl LifecycleTasks {
    /// Waits for every task to stop (after its token was cancelled).
    pub async fn join(self) {
        if let Some(c) = self.compactor {
            let _ = c.await;
        }
        if let Some(c) = self.cleaner {
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
        let now_ms = clock.now_ms();
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
            pace: Mutex::new(compaction::PaceState::new(now_ms)),
            claims: Mutex::new(HashMap::new()),
            #[cfg(test)]
            cleaner_failpoint: Mutex::new(None),
        })
    }

    /// Claims a partition for `work`; `None` while another task holds it.
    pub(crate) fn claim(&self, topic_id: Uuid, partition: i32, work: Work) -> Option<Claim<'_>> {
        let key = (topic_id, partition);
        let mut claims = lock(&self.claims);
        match claims.get_mut(&key) {
            Some((held, n)) if *held == work => *n += 1,
            Some(_) => return None,
            None => {
                claims.insert(key, (work, 1));
            }
        }
        Some(Claim { lifecycle: self, key })
    }

    /// Stops the next cleaner passes at `at` (tests of crash safety), or never (`None`).
    #[cfg(test)]
    pub(crate) fn set_cleaner_failpoint(&self, at: Option<cleaner::Failpoint>) {
        *lock(&self.cleaner_failpoint) = at;
    }

    /// Starts the compactor and the cleaner (if enabled), retention and GC tasks. Each runs one pass per
    /// interval and stops, mid-pass if need be, when `shutdown` is cancelled. A pass cut short
    /// leaves at worst an orphaned segment, which a later GC pass deletes. They are critical
    /// tasks of `supervisor` (a pass that panics stops the process).
    pub fn start(self: &Arc<Self>, supervisor: &Supervisor, shutdown: CancellationToken) -> LifecycleTasks {
        let s = &self.settings;
        let clock = &self.clock;
        let compactor = s.compaction_enabled.then(|| {
            let me = self.clone();
            let shutdown = shutdown.clone();
            supervisor.spawn_critical(
                "compactor",
                async move { me.run_compactor(shutdown).await }.instrument(info_span!("compactor")),
            )
        });
        let cleaner = s.cleaner_enabled.then(|| {
            let me = self.clone();
            supervisor.spawn_critical(
                "cleaner",
                periodic(clock.clone(), s.cleaner_backoff, shutdown.clone(), move || {
                    let me = me.clone();
                    async move {
                        me.clean_once().await;
                    }
                })
                .instrument(info_span!("cleaner")),
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
        LifecycleTasks { compactor, cleaner, retention, gc }
    }

    /// Records when each indexed object was first seen; forgets objects no longer indexed.
    fn observe_objects(&self, now: i64) {
        let keys: Vec<Arc<str>> = self.metadata.read(|m| m.objects().map(|o| o.key).collect());
        let mut seen = lock(&self.first_seen);
        let present: HashSet<&Arc<str>> = keys.iter().collect();
        seen.retain(|k, _| present.contains(k));
        for k in &keys {
            seen.entry(k.clone()).or_insert(now);
        }
    }
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
            compaction_hot_chunks_budget: c.compaction_hot_chunks_budget as u64,
            compaction_min_interval: c.compaction_min_interval,
            retention_interval: c.retention_check_interval,
            gc_interval: c.gc_interval,
            gc_grace_ms: ms(c.gc_grace),
            cleaner_enabled: c.cleaner_enabled,
            cleaner_backoff: c.cleaner_backoff,
            cleaner_concurrency: c.cleaner_concurrency,
            cleaner_dedupe_buffer_bytes: c.cleaner_dedupe_buffer_bytes,
            cleaner_dirty_buffer_bytes: c.cleaner_dirty_buffer_bytes,
            cleaner_max_bytes_per_second: c.cleaner_max_bytes_per_second,
        }
    }
}
