//! Small durable-file helpers shared by the log store and the snapshot store.
//!
//! Invariant: a file written with [`write_atomic`] is either absent, the old version, or the
//! complete new version after a crash, never a torn mix: the bytes go to a temporary file that
//! is fsynced, renamed over the target, and the directory is fsynced so the rename itself is
//! durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::ControllerError;

/// Wraps an io error with the path it concerns.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> ControllerError {
    ControllerError::Storage { path: path.display().to_string(), source }
}

pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> ControllerError {
    ControllerError::Corrupt { path: path.display().to_string(), reason: reason.into() }
}

/// Creates `dir` (and parents) if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ControllerError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
}

/// Makes directory entry changes (create, rename, delete) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ControllerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

/// Replaces `path` with `bytes` atomically and durably (temp file + fsync + rename + dir fsync).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ControllerError> {
    let dir = path.parent().ok_or_else(|| corrupt(path, "path has no parent directory"))?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    sync_dir(dir)
}

/// Reads `path`, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ControllerError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Reads and decodes a JSON file written by [`write_atomic`], or `None` if absent.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ControllerError> {
    match read_optional(path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(path, e.to_string())),
    }
}
