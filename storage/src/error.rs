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
    /// wrapped (see [`classify`]). Shown with its whole cause chain, credentials redacted
    /// ([`redact_credentials`]); deliberately not a `source()`, so no caller can print the raw
    /// chain (a store's refusal may echo the signed request, session token included).
    #[error("{operation} {key}: {}", backend_message(backend))]
    Backend { operation: Operation, key: String, kind: ErrorKind, backend: Arc<object_store::Error> },

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
            kind => StorageError::Backend { operation, key, kind, backend: Arc::new(source) },
        }
    }

    pub(crate) fn invalid(operation: Operation, key: &str, reason: impl Into<String>) -> Self {
        StorageError::Invalid { operation, key: key.to_string(), reason: reason.into() }
    }

    pub(crate) fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        StorageError::Corrupt { key: key.to_string(), reason: reason.into() }
    }
}

/// A backend error and its causes, one line, credentials redacted.
fn backend_message(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        let c = cause.to_string();
        // object_store's messages usually quote their cause already.
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    redact_credentials(&text)
}

/// Elements of an S3 error body that echo what was signed: AWS's `SignatureDoesNotMatch`
/// answer quotes the canonical request, whose headers include `x-amz-security-token`.
const ECHOED_ELEMENTS: [&str; 4] = ["CanonicalRequest", "CanonicalRequestBytes", "StringToSign", "StringToSignBytes"];

/// `text` with the contents of [`ECHOED_ELEMENTS`] and the values of `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN` replaced by `***`. The environment is read here (not injected) because it
/// is where object_store itself reads the credentials from; values shorter than 8 characters are
/// not searched for (they would mangle ordinary text and are no real secret).
pub fn redact_credentials(text: &str) -> String {
    let mut out = text.to_string();
    for name in ECHOED_ELEMENTS {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let mut from = 0;
        while let Some(start) = out[from..].find(&open).map(|i| from + i + open.len()) {
            let Some(len) = out[start..].find(&close) else { break };
            out.replace_range(start..start + len, "***");
            from = start + 3 + close.len();
        }
    }
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(value) = std::env::var(var)
            && value.len() >= 8
        {
            out = out.replace(&value, "***");
        }
    }
    out
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

    /// AWS answers a bad signature with the canonical request it computed, whose signed headers
    /// include the session token: the error's text (and its absent source chain) never shows it.
    #[test]
    fn a_store_echoing_the_signed_request_is_redacted() {
        let body = "Client error with status 403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code>\
            <CanonicalRequest>PUT\n/b/k\nx-amz-security-token:FQoGZXIvYXdzEXAMPLETOKEN\n</CanonicalRequest>\
            <StringToSign>AWS4-HMAC-SHA256</StringToSign><RequestId>1</RequestId></Error>";
        let e = StorageError::from_backend(Operation::Put, "b/k", generic(body));
        let text = e.to_string();
        assert!(!text.contains("EXAMPLETOKEN"), "{text}");
        assert!(
            text.contains("SignatureDoesNotMatch") && text.contains("<CanonicalRequest>***</CanonicalRequest>"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_none(), "the raw backend error is reachable as a source");
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
