//! Garbage collection: objects no chunk references (after the grace period) and objects the
//! index never knew (orphans older than the grace period) are deleted; one collector per
//! cluster (see the invariants in `mod.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use skiff_storage::ObjectStorage;
use tracing::{info, warn};

use super::{Lifecycle, lock};

/// Keys per `ForgetObjects` command.
const FORGET_BATCH: usize = 1000;
/// Concurrent DELETEs of one GC pass.
const GC_DELETE_CONCURRENCY: usize = 8;

/// What one GC pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub unreferenced_deleted: u64,
    pub orphans_deleted: u64,
}

impl Lifecycle {
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
        let unreferenced: Vec<Arc<str>> =
            self.metadata.read(|m| m.objects().filter(|o| o.live_chunks == 0).map(|o| o.key).collect());
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
            .read(|m| due.into_iter().filter(|k| m.object(k).is_some_and(|o| o.live_chunks == 0)).collect());
        let deleted = self.delete_all(due.iter().map(|k| k.to_string()).collect()).await;
        report.unreferenced_deleted = deleted.len() as u64;
        self.metrics.objects_deleted("unreferenced", deleted.len() as u64);
        for keys in deleted.chunks(FORGET_BATCH) {
            if let Err(e) = self.controller.forget_objects(keys.to_vec()).await {
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
                .filter(|o| m.object(o.key.as_str()).is_none())
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
