//! The storage crate's one error type.
//!
//! Every variant carries the operation and the object key it concerns, so a log line or a
//! client-facing message says what failed where. Callers branch on [`StorageError::kind`],
//! never on variants or on the text.

use std::sync::Arc;
use std::time::Duration;

/// The storage operation that failed. Appears in error messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Get,
    Head,
    Delete,
    List,
    Check,
    Open,
    Decode,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Operation::Put => "PUT",
            Operation::Get => "GET",
            Operation::Head => "HEAD",
            Operation::Delete => "DELETE",
            Operation::List => "LIST",
            Operation::Check => "CHECK",
            Operation::Open => "OPEN",
            Operation::Decode => "DECODE",
        };
        f.write_str(s)
    }
}

/// What went wrong in object storage.
///
/// `Clone` so that one failed fetch can be handed to every waiter coalesced on it (see
/// [`crate::BlockCache`]); backend errors are shared behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The object (or bucket) does not exist.
    #[error("{operation} {key}: not found")]
    NotFound { operation: Operation, key: String },

    /// A create-only PUT found an object already at the key, and it is not ours.
    #[error("{operation} {key}: object already exists")]
    AlreadyExists { operation: Operation, key: String },

    /// The backend reported an error. `kind` was decided from the backend error when it was
    /// wrapped (see [`classify`]).
    #[error("{operation} {key}: {source}")]
    Backend {
        operation: Operation,
        key: String,
        kind: ErrorKind,
        #[source]
        source: Arc<object_store::Error>,
    },

    /// One attempt took longer than its bound. The operation may or may not have happened.
    #[error("{operation} {key}: timed out after {timeout:?}")]
    Timeout { operation: Operation, key: String, timeout: Duration },

    /// Bad configuration or bad arguments (URL, key, range); retrying will not help.
    #[error("{operation} {key}: invalid: {reason}")]
    Invalid { operation: Operation, key: String, reason: String },

    /// Bytes read from the object store failed validation (magic, version, bounds, CRC).
    #[error("corrupt object {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Coarse classes callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient (5xx, throttling, timeouts, connection trouble): retry later.
    Retriable,
    /// The object does not exist.
    NotFound,
    /// A create-only PUT hit an existing object.
    AlreadyExists,
    /// Configuration, credentials or arguments are wrong; retrying will not help.
    Invalid,
    /// Stored bytes failed validation.
    Corrupt,
    /// A bug or an unsupported backend feature.
    Internal,
}

impl StorageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::NotFound { .. } => ErrorKind::NotFound,
            StorageError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            StorageError::Backend { kind, .. } => *kind,
            StorageError::Timeout { .. } => ErrorKind::Retriable,
            StorageError::Invalid { .. } => ErrorKind::Invalid,
            StorageError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.kind() == ErrorKind::Retriable
    }

    /// Wraps an `object_store` error with its context.
    pub fn from_backend(operation: Operation, key: &str, source: object_store::Error) -> Self {
        let key = key.to_string();
        match classify(&source) {
            ErrorKind::NotFound => StorageError::NotFound { operation, key },
            ErrorKind::AlreadyExists => StorageError::AlreadyExists { operation, key },
            kind => StorageError::Backend { operation, key, kind, source: Arc::new(source) },
        }
    }

    pub(crate) fn invalid(operation: Operation, key: &str, reason: impl Into<String>) -> Self {
        StorageError::Invalid { operation, key: key.to_string(), reason: reason.into() }
    }

    pub(crate) fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        StorageError::Corrupt { key: key.to_string(), reason: reason.into() }
    }
}

/// Decides how an `object_store` error should be treated.
///
/// `Generic` is what object_store returns for HTTP failures it has no variant for (5xx,
/// throttling, transport errors) and for local I/O errors, so it is retriable by default. The
/// HTTP status is not reachable through a public type in object_store 0.12, so a 4xx status
/// (other than 408 and 429) is recognised from the message, best effort: retrying those would
/// only burn the retry deadline.
pub fn classify(err: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => ErrorKind::NotFound,
        // Create-only PUTs report an existing object as AlreadyExists (LocalFileSystem,
        // InMemory, S3 409) or as a failed precondition (S3-compatible stores answering
        // `If-None-Match: *` with 412).
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::Generic { .. } => {
            let client_error = http_status_in(&err.to_string())
                .is_some_and(|status| (400..500).contains(&status) && status != 408 && status != 429);
            if client_error { ErrorKind::Invalid } else { ErrorKind::Retriable }
        }
        E::JoinError { .. } => ErrorKind::Retriable,
        E::InvalidPath { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => ErrorKind::Invalid,
        E::NotSupported { .. } | E::NotImplemented | E::NotModified { .. } => ErrorKind::Internal,
        _ => ErrorKind::Internal,
    }
}

/// Finds the status in object_store's "non-2xx status code: 404 Not Found" message.
fn http_status_in(message: &str) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let at = message.find(MARKER)? + MARKER.len();
    let digits = message.get(at..at + 3)?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic { store: "test", source: msg.to_string().into() }
    }

    #[test]
    fn classify_backend_errors() {
        assert_eq!(classify(&generic("503 SlowDown")), ErrorKind::Retriable);
        assert_eq!(classify(&generic("Server returned non-2xx status code: 400 Bad Request: x")), ErrorKind::Invalid);
        assert_eq!(
            classify(&generic("Server returned non-2xx status code: 429 Too Many Requests")),
            ErrorKind::Retriable
        );
        assert_eq!(
            classify(&object_store::Error::NotFound { path: "k".into(), source: "x".into() }),
            ErrorKind::NotFound
        );
        assert_eq!(classify(&object_store::Error::NotImplemented), ErrorKind::Internal);
        let e = StorageError::from_backend(Operation::Get, "a/b", generic("boom"));
        assert!(e.is_retriable());
        assert!(e.to_string().contains("GET a/b"), "{e}");
    }
}
