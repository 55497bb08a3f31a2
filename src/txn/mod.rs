//! Transaction coordinator (RFC 0004 §1-§2; phases 1 and 2: TV1 and TV2, by request version).
//!
//! The state of every transactional id is controller state (`skiff_controller::transactions`):
//! its transitions run in the controller's `apply`, deterministically, and owed markers and
//! completion happen there too. What a broker adds is [`coordinator`]: for the transaction
//! shards the controller placed on it, it serialises the ops of each transactional id, gives
//! them strictly increasing times from the injected clock, submits them with the shard's epoch
//! (resubmitting one whose answer was lost), and runs the timers that abort transactions past
//! their `transaction.timeout.ms` and expire idle ids.
//!
//! Placement: a transactional id lives on shard `abs(java_string_hash(id)) % 50`
//! (`skiff_controller::transactions::shard_for`), as Kafka places it on a `__transaction_state`
//! partition; the controller assigns shards to brokers with epochs exactly as it does group
//! shards (`controller/src/placement.rs`).

pub mod coordinator;

pub use coordinator::{TxnCoordinator, TxnCoordinatorError, TxnSettings};
