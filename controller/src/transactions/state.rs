//! The replicated transaction coordinator state (RFC 0004 §1-§2): every transactional id's
//! [`TxnState`], the transaction coordinator shards and their epochs, and the derived
//! `producer id → transactional id` index. Part of [`crate::metadata::MetadataState`].
//!
//! ```text
//!  broker's txn coordinator ── Command::Txn(TxnCommand { id, shard, epoch, op }) ──Raft──▶ apply
//!        shard epoch stale?  → Rejected(StaleTxnCoordinator), nothing changes
//!        transactions::apply → Rejected(Txn { error })        , nothing changes
//!                            → new TxnState, answer, owed markers pushed on the partitions
//! ```
//!
//! Invariants: a rejected command changes nothing; `by_producer` is a pure function of `ids`
//! (it is not stored: a snapshot load rebuilds it); a transactional id's shard is
//! [`shard_for`], as Kafka places ids on `__transaction_state` partitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TxnLimits, TxnOp, TxnState, TxnStatus};
use crate::groups::{ShardAssignment, java_string_hash};

/// `transaction.state.log.num.partitions`: Kafka's default, fixed for the life of a cluster
/// (changing it would move every transactional id).
pub const TXN_SHARD_COUNT: u32 = 50;

/// The shard of a transactional id: `Utils.abs(transactionalId.hashCode) % 50` as in Kafka's
/// `TransactionStateManager.partitionFor`.
pub fn shard_for(transactional_id: &str) -> u32 {
    ((java_string_hash(transactional_id) & 0x7fff_ffff) as u32) % TXN_SHARD_COUNT
}

/// One transaction coordinator write: which id, the shard and the shard epoch its writer holds,
/// the op, and the writer's limits (broker configs, carried so `apply` stays deterministic).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxnCommand {
    pub transactional_id: String,
    /// `shard_for(transactional_id)`; a command naming another shard is refused.
    pub shard: u32,
    /// The shard's epoch as the writing coordinator knows it.
    pub coordinator_epoch: i32,
    pub op: TxnOp,
    #[serde(default)]
    pub limits: TxnLimits,
}

/// All transaction coordinator state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(from = "StoredTransactionsState")]
pub struct TransactionsState {
    /// Every live transactional id.
    pub(crate) ids: BTreeMap<String, TxnState>,
    /// Transaction coordinator shards (assigned like group shards by `placement.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) shards: BTreeMap<u32, ShardAssignment>,
    /// Derived: producer id → transactional id (`TxnState::producer_ids`).
    #[serde(skip)]
    pub(crate) by_producer: BTreeMap<i64, String>,
}

/// [`TransactionsState`] as stored: the producer index is rebuilt on load.
#[derive(Deserialize)]
struct StoredTransactionsState {
    #[serde(default)]
    ids: BTreeMap<String, TxnState>,
    #[serde(default)]
    shards: BTreeMap<u32, ShardAssignment>,
}

impl From<StoredTransactionsState> for TransactionsState {
    fn from(stored: StoredTransactionsState) -> Self {
        let mut s = TransactionsState { ids: stored.ids, shards: stored.shards, by_producer: BTreeMap::new() };
        for (id, t) in &s.ids {
            for pid in t.producer_ids() {
                s.by_producer.insert(pid, id.clone());
            }
        }
        s
    }
}

impl TransactionsState {
    /// The current epoch of transaction shard `shard` (0 while unassigned).
    pub fn shard_epoch(&self, shard: u32) -> i32 {
        self.shards.get(&shard).map_or(0, |s| s.epoch)
    }

    /// The state of one transactional id.
    pub fn get(&self, transactional_id: &str) -> Option<&TxnState> {
        self.ids.get(transactional_id)
    }

    /// The transactional id a producer id belongs to, with its state.
    pub fn of_producer(&self, producer_id: i64) -> Option<(&str, &TxnState)> {
        let id = self.by_producer.get(&producer_id)?;
        self.ids.get(id).map(|s| (id.as_str(), s))
    }

    /// Stores `next` for `transactional_id` (removes the id when it is `Dead`), keeping the
    /// producer index in step.
    pub(crate) fn store(&mut self, transactional_id: &str, next: TxnState) {
        if let Some(old) = self.ids.get(transactional_id) {
            for pid in old.producer_ids() {
                if self.by_producer.get(&pid).is_some_and(|i| i == transactional_id) {
                    self.by_producer.remove(&pid);
                }
            }
        }
        if next.state == TxnStatus::Dead {
            self.ids.remove(transactional_id);
            return;
        }
        for pid in next.producer_ids() {
            self.by_producer.insert(pid, transactional_id.to_string());
        }
        self.ids.insert(transactional_id.to_string(), next);
    }
}

#[cfg(test)]
mod tests;
