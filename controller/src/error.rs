//! The controller's error type: one enum for everything a broker can get back from the
//! controller (transport, Raft, and the deterministic refusals of `apply`), with a `kind()`.

use crate::metadata::Rejection;

/// What went wrong talking to or running the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// This node is not the Raft leader (or there is none yet); retry, possibly elsewhere.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The controller is shutting down or stopped.
    #[error("controller closed")]
    Closed,
    /// Local storage of the Raft log or snapshots failed.
    #[error("controller storage at {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Stored Raft data failed its checksum or could not be decoded.
    #[error("corrupt controller data in {path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// The controller could not be reached, or answered with a failure; whether a submitted
    /// command applied is unknown.
    #[error("controller unavailable: {reason}")]
    Unavailable { reason: String },
    /// The controller applied the command's log entry and refused it: deterministic, every
    /// replica refuses it the same way, nothing changed.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// The answer did not fit the command (a bug on one side of the boundary).
    #[error("unexpected controller answer: {0}")]
    Unexpected(String),
    /// An error inside openraft (configuration, storage, state machine).
    #[error("raft: {0}")]
    Raft(String),
}

/// Coarse classes callers act on; `src/handler/errors.rs` maps them to Kafka error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Try again (possibly elsewhere): nothing was applied, or the state moved on meanwhile.
    Retriable,
    /// A newer epoch owns the partition or coordinator shard: the writer is deposed.
    Fenced,
    /// The topic, partition or group does not exist.
    NotFound,
    /// The request can never succeed as made.
    Invalid,
    /// No controller answered, or no broker can take the work.
    Unavailable,
    Closed,
    Corrupt,
    Internal,
}

impl ControllerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ControllerError::NotLeader { .. } => ErrorKind::Retriable,
            ControllerError::Closed => ErrorKind::Closed,
            ControllerError::Corrupt { .. } => ErrorKind::Corrupt,
            ControllerError::Unavailable { .. } => ErrorKind::Unavailable,
            ControllerError::Rejected(r) => r.kind(),
            ControllerError::Storage { .. } | ControllerError::Raft(_) | ControllerError::Unexpected(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// The controller's refusal, if that is what this is.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            ControllerError::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

impl Rejection {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Rejection::UnknownTopic(_) | Rejection::UnknownTopicId(_) | Rejection::UnknownPartition { .. } => {
                ErrorKind::NotFound
            }
            Rejection::TopicExists(_)
            | Rejection::InvalidPartitions(_)
            | Rejection::InvalidReplicaAssignment(_)
            | Rejection::OffsetOutOfRange { .. }
            | Rejection::BrokerNotRegistered(_)
            | Rejection::BrokerStillLive(_) => ErrorKind::Invalid,
            Rejection::NoBrokers => ErrorKind::Unavailable,
            Rejection::Fenced { .. } | Rejection::StaleCoordinator { .. } | Rejection::StaleTxnCoordinator { .. } => {
                ErrorKind::Fenced
            }
            // The client's answer is the transaction error itself (mapped in the handlers).
            Rejection::Txn { error: crate::transactions::TxnError::ConcurrentTransactions, .. } => ErrorKind::Retriable,
            Rejection::Txn { .. } => ErrorKind::Invalid,
            // A writer bug: the command can never apply.
            Rejection::WrongTxnShard { .. } | Rejection::MarkerNotOwed { .. } => ErrorKind::Internal,
            // The index moved on under the writer (a racing append, compaction or retention).
            Rejection::OffsetGap { .. } | Rejection::StaleReplacement { .. } | Rejection::StaleClean { .. } => {
                ErrorKind::Retriable
            }
        }
    }
}
