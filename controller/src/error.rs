//! The controller's error type.

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
    /// Anything else from openraft.
    #[error("raft: {0}")]
    Raft(String),
}

/// Coarse classes callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Retriable,
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
            ControllerError::Storage { .. } | ControllerError::Raft(_) => ErrorKind::Internal,
        }
    }
}
