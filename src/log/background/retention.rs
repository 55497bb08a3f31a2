//! Retention: the log start of each partition this broker leads moves past whole chunks that
//! `retention.ms` or `retention.bytes` expire (Kafka's semantics, chunks standing for segments).

use skiff_controller::ControllerError;
use skiff_controller::image::{Chunk, TopicConfig};
use tracing::{debug, warn};
use uuid::Uuid;

use super::{Lifecycle, Work, lock};
use crate::broker::dynamic_config::{BrokerDefaults, KAFKA_MESSAGE_MAX_BYTES};

impl Lifecycle {
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
            let defaults = BrokerDefaults::new(m.dynamic_configs(), self.settings.broker_id, KAFKA_MESSAGE_MAX_BYTES);
            for t in m.topics() {
                // `cleanup.policy=compact` alone: the cleaner, not retention, removes data.
                if !defaults.effective(t.config()).cleanup_policy.deletes() {
                    continue;
                }
                let (retention_ms, retention_bytes) = retention_limits(&defaults, t.config());
                for p in t.partitions() {
                    if p.leader() != self.settings.broker_id {
                        continue;
                    }
                    let start =
                        retention_start(p.chunks(), p.log_start_offset(), retention_ms, retention_bytes, now, |c| {
                            seen.get(&c.object).copied()
                        });
                    if start > p.log_start_offset() {
                        out.push((t.id(), p.index(), start));
                    }
                }
            }
            out
        });
        let mut advanced = 0;
        for (topic_id, partition, offset) in advances {
            // A partition being cleaned is retained at the next pass.
            let Some(_claim) = self.claim(topic_id, partition, Work::Retention) else { continue };
            match self.controller.advance_log_start(topic_id, partition, offset).await {
                Err(ControllerError::Rejected(r)) => {
                    debug!(%topic_id, partition, reason = %r, "retention advance rejected")
                }
                Ok(()) => {
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
}

/// `retention.ms` and `retention.bytes` in effect for a topic with typed configs `config`
/// (parsed when they were applied: a pass parses no strings).
pub fn retention_limits(defaults: &BrokerDefaults<'_>, config: &TopicConfig) -> (i64, i64) {
    let effective = defaults.effective(config);
    (effective.retention_ms, effective.retention_bytes)
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
