//! The log cleaner: compacted topics (`cleanup.policy=compact`) keep the last record of each
//! key (Kafka's `LogCleaner`; design: `docs/rfcs/0003-compacted-topics.md`).
//!
//! ```text
//!  every cleaner_backoff, for the compacted partitions this broker leads:
//!    roll   head ≥ segment.bytes or older than min(segment.ms, max.compaction.lag.ms)
//!           ──RollHead (base of the newest chunk: it stays in the head)──▶ controller
//!    plan   cleanable range and dirty ratio from the index (plan.rs), filthiest first
//!    pass   map the dirty range, filter clean + dirty, write segments, one CleanChunks swap
//!           (pass.rs; the rules themselves: map.rs, filter.rs)
//! ```
//!
//! Invariants:
//! * Nothing at or after the first uncleanable offset (head, LSO, min lag) is ever touched.
//! * A pass holds its partition's background lock (`Lifecycle::claim`): WAL compaction and
//!   retention skip the partition meanwhile, and a swap that raced anything else (DeleteRecords,
//!   a leader change) is rejected whole by the controller; the old log stays readable.
//! * The cleaner keeps no state of its own: what it needs is in the controller
//!   (`CleanerState`: clean offset, head, rolls, next horizon) and in the batches (delete
//!   horizons), so a restart or a new leader carries on where the last swap left off.

pub(crate) mod filter;
pub(crate) mod map;
#[cfg(test)]
mod model;
mod pass;
pub(crate) mod plan;

#[cfg(test)]
pub(crate) use pass::Failpoint;
pub use pass::{PassReport, PassResult};

use futures::StreamExt;
use skiff_controller::ControllerError;
use std::collections::HashSet;
use tracing::{debug, warn};
use uuid::Uuid;

use self::filter::AbortedTxn;
use self::map::OffsetMap;
use self::pass::PassInput;
use self::plan::{Cleanable, PartitionLog, PassLimits};
use super::{Lifecycle, Work};
use crate::broker::dynamic_config::{BrokerDefaults, KAFKA_MESSAGE_MAX_BYTES};

/// What one round of the cleaner did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CleanerReport {
    /// Heads rolled.
    pub rolled: u64,
    pub passes: Vec<PassReport>,
}

impl CleanerReport {
    pub fn count(&self, result: PassResult) -> usize {
        self.passes.iter().filter(|p| p.result == result).count()
    }
}

/// Passes per round at most (a round ends earlier once nothing is due).
const MAX_PASSES_PER_ROUND: usize = 64;

impl Lifecycle {
    /// One round: rolls due heads, then cleans due partitions, filthiest first, each at most
    /// once, `cleaner_concurrency` at a time.
    pub async fn clean_once(&self) -> CleanerReport {
        let mut report = CleanerReport { rolled: self.roll_heads().await, passes: Vec::new() };
        let mut tried: HashSet<(Uuid, i32)> = HashSet::new();
        while report.passes.len() < MAX_PASSES_PER_ROUND {
            let inputs = self.plan_cleaning(&tried);
            if inputs.is_empty() {
                break;
            }
            for i in &inputs {
                tried.insert((i.topic_id, i.partition));
            }
            let mut passes = futures::stream::iter(inputs)
                .map(|input| async move {
                    // Serialised with WAL compaction and retention on the same partition.
                    let _claim = self.claim(input.topic_id, input.partition, Work::Cleaner)?;
                    Some(self.clean_partition(input).await)
                })
                .buffer_unordered(self.settings.cleaner_concurrency.max(1));
            while let Some(p) = passes.next().await {
                report.passes.extend(p);
            }
        }
        if report.rolled > 0 || !report.passes.is_empty() {
            debug!(rolled = report.rolled, passes = report.passes.len(), "cleaner round");
        }
        report
    }

    /// Submits `RollHead` for every compacted partition this broker leads whose head is due.
    async fn roll_heads(&self) -> u64 {
        let now = self.clock.now_ms();
        let rolls: Vec<(Uuid, i32, i32, i64)> = self.metadata.read(|m| {
            let defaults = BrokerDefaults::new(m.dynamic_configs(), self.settings.broker_id, KAFKA_MESSAGE_MAX_BYTES);
            let mut out = Vec::new();
            for t in m.topics() {
                let cfg = defaults.effective(t.config());
                if !cfg.cleanup_policy.compacts() {
                    continue;
                }
                for p in t.partitions().filter(|p| p.leader() == self.settings.broker_id) {
                    let chunks: Vec<_> = p.chunks().cloned().collect();
                    let log = PartitionLog {
                        chunks: &chunks,
                        log_start: p.log_start_offset(),
                        high_watermark: p.high_watermark(),
                        last_stable_offset: p.last_stable_offset(),
                        state: p.cleaner(),
                    };
                    if let Some(offset) = plan::roll_offset(&log, &cfg, now) {
                        out.push((t.id(), p.index(), p.leader_epoch(), offset));
                    }
                }
            }
            out
        });
        let mut rolled = 0;
        for (topic_id, partition, epoch, offset) in rolls {
            match self.controller.roll_head(topic_id, partition, epoch, offset).await {
                Ok(()) => rolled += 1,
                Err(ControllerError::Rejected(r)) => debug!(%topic_id, partition, reason = %r, "roll rejected"),
                Err(e) => {
                    warn!(error = %e, "cleaner: controller unavailable");
                    break;
                }
            }
        }
        rolled
    }

    /// The next passes to run (at most `cleaner_concurrency`), filthiest first, skipping
    /// partitions already tried this round. Also updates the max-dirty-ratio gauge.
    fn plan_cleaning(&self, tried: &HashSet<(Uuid, i32)>) -> Vec<PassInput> {
        let now = self.clock.now_ms();
        let s = &self.settings;
        // Kafka sizes the map at dedupe buffer × load factor 0.9 / 24 bytes per entry.
        let limits = PassLimits {
            max_map_entries: ((s.cleaner_dedupe_buffer_bytes as f64 * 0.9) as u64 / OffsetMap::ENTRY_BYTES as u64)
                .max(1) as usize,
            dirty_buffer_bytes: s.cleaner_dirty_buffer_bytes,
        };
        let (mut due, max_ratio) = self.metadata.read(|m| {
            let defaults = BrokerDefaults::new(m.dynamic_configs(), s.broker_id, KAFKA_MESSAGE_MAX_BYTES);
            let mut due: Vec<(Cleanable, PassInput)> = Vec::new();
            let mut max_ratio: f64 = 0.0;
            for t in m.topics() {
                let cfg = defaults.effective(t.config());
                if !cfg.cleanup_policy.compacts() {
                    continue;
                }
                for p in t.partitions().filter(|p| p.leader() == s.broker_id) {
                    let chunks: Vec<_> = p.chunks().cloned().collect();
                    let log = PartitionLog {
                        chunks: &chunks,
                        log_start: p.log_start_offset(),
                        high_watermark: p.high_watermark(),
                        last_stable_offset: p.last_stable_offset(),
                        state: p.cleaner(),
                    };
                    let c = plan::cleanable(&log, &cfg, now);
                    max_ratio = max_ratio.max(c.ratio);
                    if !c.due || tried.contains(&(t.id(), p.index())) {
                        continue;
                    }
                    let pass = plan::plan_pass(&log, &c, &limits);
                    let first = pass.clean.first().or(pass.dirty.first()).map_or(c.clean_offset, |c| c.base_offset);
                    let last = pass.dirty.last().or(pass.clean.last()).map_or(c.clean_offset, |c| c.last_offset + 1);
                    let aborted = p
                        .aborted_transactions(first..last)
                        .into_iter()
                        .map(|a| AbortedTxn {
                            producer_id: a.producer_id,
                            first_offset: a.first_offset,
                            last_offset: a.last_offset,
                        })
                        .collect();
                    let producer_last_batch = p
                        .producers()
                        .producers
                        .iter()
                        .filter_map(|(id, e)| e.batches.back().map(|b| (*id, b.base_offset)))
                        .collect();
                    due.push((
                        c,
                        PassInput {
                            topic_id: t.id(),
                            topic: t.name().to_string(),
                            partition: p.index(),
                            leader_epoch: p.leader_epoch(),
                            plan: pass,
                            delete_retention_ms: cfg.delete_retention_ms,
                            segment_bytes: cfg.segment_bytes.max(1) as u64,
                            producer_last_batch,
                            aborted,
                        },
                    ));
                }
            }
            (due, max_ratio)
        });
        self.metrics.cleaner_max_dirty_ratio(max_ratio);
        due.sort_by(|a, b| plan::order(&a.0, &b.0));
        due.into_iter().take(s.cleaner_concurrency.max(1)).map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests race real tasks against real time; ids are test data
mod tests;
