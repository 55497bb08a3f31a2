//! openraft's [`RaftLogStorage`]: the durable Raft log and vote of one controller node.
//!
//! Owns `<data_dir>/log/`: the segment files ([`super::segments`]), `vote.json` and
//! `purged.json` (the id of the last purged entry, which the segments alone cannot tell).
//!
//! Shape: every entry of the (unpurged) log is kept in memory, serialized once, and handed to
//! one dedicated writer thread that owns the files. The log stays small because it is purged
//! after every snapshot, so memory is bounded by `snapshot_every_entries` entries.
//!
//! Invariants:
//! * all writes (appends, truncations, purges, votes) go through one FIFO channel to the
//!   writer thread, so they hit the disk in the order openraft issued them, as openraft
//!   requires;
//! * an append is reported flushed (`LogFlushed`) only after its fsync; appends queued together
//!   share one write and one fsync (group commit: the fsync is the commit latency);
//! * `purged.json` is durable before any segment holding purged entries is deleted, so on open
//!   the log is always `purged + 1 ..= last` without a hole;
//! * after any failed write the writer refuses everything that follows: the on-disk state is
//!   unknown, and openraft stops the node on a storage error anyway.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ControllerError;
use crate::raft::TypeConfig;
use crate::raft::fs::{corrupt, create_dir, read_json, write_atomic};
use crate::raft::segments::SegmentLog;

type NodeId = u64;
type Entries = BTreeMap<u64, Entry<TypeConfig>>;

/// Bound on queued writes; openraft keeps only a few appends in flight per node anyway.
const WRITE_QUEUE: usize = 1024;

/// Reads entries from the in-memory copy of the log (used by replication tasks).
#[derive(Clone)]
pub(crate) struct LogReader {
    entries: Arc<Mutex<Entries>>,
}

fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    // The guarded map is only mutated by short, non-panicking code; a poisoned lock still
    // holds a consistent map.
    entries.lock().unwrap_or_else(|e| e.into_inner())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(lock(&self.entries).range(range).map(|(_, e)| e.clone()).collect())
    }
}

enum WriteOp {
    Append { records: Vec<(u64, Vec<u8>)>, flushed: LogFlushed<TypeConfig> },
    Truncate { from: u64, done: oneshot::Sender<Result<(), ControllerError>> },
    Purge { upto: LogId<NodeId>, done: oneshot::Sender<Result<(), ControllerError>> },
    SaveVote { vote: Vote<NodeId>, done: oneshot::Sender<Result<(), ControllerError>> },
}

/// The log store handed to openraft.
pub(crate) struct LogStore {
    reader: LogReader,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    ops: mpsc::Sender<WriteOp>,
}

/// Resolves once the writer thread has finished every queued write and closed its files.
pub(crate) struct WriterDone(watch::Receiver<bool>);

impl WriterDone {
    pub(crate) async fn wait(mut self) {
        // Err means the thread is gone without saying so (it panicked): also done.
        let _ = self.0.wait_for(|done| *done).await;
    }
}

impl LogStore {
    /// Opens the log in `dir` (created if missing), repairing a torn tail, and starts its
    /// writer thread.
    pub(crate) fn open(dir: &Path) -> Result<(LogStore, WriterDone), ControllerError> {
        create_dir(dir)?;
        let vote_path = dir.join("vote.json");
        let purged_path = dir.join("purged.json");
        let vote: Option<Vote<NodeId>> = read_json(&vote_path)?;
        let last_purged: Option<LogId<NodeId>> = read_json(&purged_path)?;
        let (segments, records) = SegmentLog::open(dir)?;

        let mut entries = Entries::new();
        let purged_index = last_purged.map(|l| l.index);
        for (index, payload) in records {
            if purged_index.is_some_and(|p| index <= p) {
                continue;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&payload)
                .map_err(|e| corrupt(dir, format!("log entry {index} does not decode: {e}")))?;
            if entry.log_id.index != index {
                return Err(corrupt(dir, format!("record {index} holds entry {}", entry.log_id)));
            }
            entries.insert(index, entry);
        }
        if let Some(first) = entries.keys().next() {
            let expected = purged_index.map_or(0, |p| p + 1);
            if *first > expected {
                return Err(corrupt(dir, format!("log starts at {first}, expected {expected}: entries are missing")));
            }
        }
        tracing::info!(
            dir = %dir.display(),
            entries = entries.len(),
            last_purged = ?last_purged,
            vote = ?vote,
            "opened raft log"
        );

        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (done_tx, done_rx) = watch::channel(false);
        let writer = Writer { dir: dir.to_path_buf(), segments, failed: None };
        std::thread::Builder::new()
            .name("skiff-raft-log".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(true);
            })
            .map_err(|e| crate::raft::fs::io_err(dir, e))?;

        let store =
            LogStore { reader: LogReader { entries: Arc::new(Mutex::new(entries)) }, last_purged, vote, ops: tx };
        Ok((store, WriterDone(done_rx)))
    }

    /// True when nothing was ever written: no vote, no entries, nothing purged.
    pub(crate) fn is_pristine(&self) -> bool {
        self.vote.is_none() && self.last_purged.is_none() && lock(&self.reader.entries).is_empty()
    }

    async fn call(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), ControllerError>>) -> WriteOp,
    ) -> Result<(), ControllerError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).await.map_err(|_| ControllerError::Closed)?;
        rx.await.map_err(|_| ControllerError::Closed)?
    }
}

fn write_err(e: &ControllerError) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last = lock(&self.reader.entries).last_key_value().map(|(_, e)| e.log_id);
        Ok(LogState { last_purged_log_id: self.last_purged, last_log_id: last.or(self.last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.call(|done| WriteOp::SaveVote { vote, done })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(AnyError::new(&e)))?;
        self.vote = Some(vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        {
            // Visible to readers at once (openraft requires that when append returns), durable
            // when the callback fires.
            let mut cache = lock(&self.reader.entries);
            for entry in entries {
                let bytes = serde_json::to_vec(&entry)
                    .map_err(|e| StorageIOError::<NodeId>::write_log_entry(entry.log_id, AnyError::new(&e)))?;
                records.push((entry.log_id.index, bytes));
                cache.insert(entry.log_id.index, entry);
            }
        }
        self.ops
            .send(WriteOp::Append { records, flushed: callback })
            .await
            .map_err(|_| write_err(&ControllerError::Closed))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncating raft log");
        lock(&self.reader.entries).split_off(&log_id.index);
        self.call(|done| WriteOp::Truncate { from: log_id.index, done }).await.map_err(|e| write_err(&e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purging raft log");
        self.call(|done| WriteOp::Purge { upto: log_id, done }).await.map_err(|e| write_err(&e))?;
        let mut cache = lock(&self.reader.entries);
        *cache = cache.split_off(&(log_id.index + 1));
        self.last_purged = Some(log_id);
        Ok(())
    }
}

/// The single owner of the log files, running on its own thread.
struct Writer {
    dir: PathBuf,
    segments: SegmentLog,
    /// Set after the first failed write; everything after it is refused.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut next = None;
        loop {
            let Some(op) = next.take().or_else(|| rx.blocking_recv()) else {
                break;
            };
            match op {
                WriteOp::Append { records, flushed } => {
                    // Group commit: take every append already queued behind this one.
                    let mut records = records;
                    let mut callbacks = vec![flushed];
                    while let Ok(op) = rx.try_recv() {
                        match op {
                            WriteOp::Append { records: more, flushed } => {
                                records.extend(more);
                                callbacks.push(flushed);
                            }
                            other => {
                                next = Some(other);
                                break;
                            }
                        }
                    }
                    tracing::trace!(entries = records.len(), appends = callbacks.len(), "raft log group commit");
                    let result = self.guarded(|w| w.segments.append(&records));
                    for cb in callbacks {
                        cb.log_io_completed(
                            result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
                        );
                    }
                }
                WriteOp::Truncate { from, done } => {
                    let _ = done.send(self.guarded(|w| w.segments.truncate(from)));
                }
                WriteOp::Purge { upto, done } => {
                    let result = self.guarded(|w| {
                        write_atomic(&w.dir.join("purged.json"), &to_json(&upto))?;
                        w.segments.purge(upto.index)
                    });
                    let _ = done.send(result);
                }
                WriteOp::SaveVote { vote, done } => {
                    let _ = done.send(self.guarded(|w| write_atomic(&w.dir.join("vote.json"), &to_json(&vote))));
                }
            }
        }
        tracing::debug!(dir = %self.dir.display(), "raft log writer stopped");
    }

    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> Result<(), ControllerError>) -> Result<(), ControllerError> {
        if let Some(reason) = &self.failed {
            return Err(ControllerError::Raft(format!("raft log unusable after an earlier write failure: {reason}")));
        }
        let result = f(self);
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
            self.failed = Some(e.to_string());
        }
        result
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("log ids and votes always serialize")
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::raft::state_machine::StateMachine;

    /// Fresh stores in a temporary directory (kept alive by the guard).
    struct TempStores;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStores {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let io = |e: &dyn std::error::Error| StorageIOError::<NodeId>::write_logs(AnyError::error(e.to_string()));
            let dir = tempfile::tempdir().map_err(|e| io(&e))?;
            let (log, _writer) = LogStore::open(&dir.path().join("log")).map_err(|e| io(&e))?;
            let (sm, _) = StateMachine::open(&dir.path().join("snapshots")).map_err(|e| io(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage conformance suite: append, log state, truncate, purge, vote,
    /// initial state and snapshot semantics as openraft expects them.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(TempStores).expect("the log store and state machine meet openraft's contract");
    }
}
