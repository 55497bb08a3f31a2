//! openraft's [`RaftStateMachine`]: applies committed commands to [`MetadataState`] and keeps
//! snapshots of it.
//!
//! Owns `<data_dir>/snapshots/current.json`: the latest snapshot, replaced atomically (temp file,
//! fsync, rename, dir fsync). The state itself lives in memory behind an
//! `Arc<RwLock<MetadataState>>` shared with every [`super::MetadataHandle`]; it is not persisted
//! on apply, so on restart it is rebuilt from the snapshot plus the log openraft replays.
//!
//! Invariants:
//! * entries apply strictly in log order, each exactly once per process lifetime;
//! * readers never see half of an entry: each entry (a batch of commands) applies under one
//!   write lock;
//! * the `applied` watch is sent after every batch and never goes backwards, except when a
//!   snapshot from the leader replaces the whole state (then it jumps forward);
//! * a snapshot file's state is exactly the state after applying `meta.last_log_id`.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::metadata::{Command, CommandResult, MetadataState};
use crate::raft::TypeConfig;
use crate::raft::fs::{corrupt, create_dir, read_optional, write_atomic};

type NodeId = u64;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// The bytes of a snapshot, on disk and on the wire.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    state: MetadataState,
}

/// The snapshot directory and the metadata of the snapshot currently in it.
struct SnapshotStore {
    path: PathBuf,
    /// The latest locally built snapshot (name, file bytes), for copies to object storage.
    built: watch::Sender<Option<(String, Arc<Vec<u8>>)>>,
    /// Guards replacing the file and reading it together with its meta.
    current: Mutex<Option<Meta>>,
}

impl SnapshotStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Meta>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` as the current snapshot unless a newer one is already there (a snapshot
    /// installed from the leader may race with a local build).
    fn save(&self, meta: &Meta, bytes: &[u8]) -> Result<bool, ControllerError> {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(false);
        }
        write_atomic(&self.path, bytes)?;
        *current = Some(meta.clone());
        Ok(true)
    }

    fn read(&self) -> Result<Option<(Meta, Vec<u8>)>, ControllerError> {
        let current = self.lock();
        let Some(meta) = current.as_ref() else { return Ok(None) };
        let bytes = read_optional(&self.path)?.ok_or_else(|| corrupt(&self.path, "snapshot file vanished"))?;
        Ok(Some((meta.clone(), bytes)))
    }
}

/// How many recently applied entries are kept for brokers replaying the log; a broker further
/// behind gets the whole state instead.
pub(crate) const JOURNAL_ENTRIES: usize = 20_000;

/// Recently applied entries (their commands), contiguous by log index, ending at `last`.
/// Changed only while the state's write lock is held, so a reader holding the state's read
/// lock sees a journal that matches the state exactly.
#[derive(Default)]
pub(crate) struct Journal {
    pub(crate) entries: VecDeque<(u64, Arc<Vec<Command>>)>,
    /// The log index the state reflects.
    pub(crate) last: u64,
}

impl Journal {
    fn push(&mut self, index: u64, commands: Vec<Command>) {
        if self.entries.back().is_some_and(|(i, _)| *i + 1 != index) {
            // Not contiguous (cannot happen in log order): start over from here.
            self.entries.clear();
        }
        self.entries.push_back((index, Arc::new(commands)));
        while self.entries.len() > JOURNAL_ENTRIES {
            self.entries.pop_front();
        }
        self.last = index;
    }

    /// The entries after `from`, at most `max`, if the journal still holds all of them.
    pub(crate) fn since(&self, from: u64, max: usize) -> Option<Vec<(u64, Arc<Vec<Command>>)>> {
        if from >= self.last {
            return Some(Vec::new());
        }
        let first = self.entries.front()?.0;
        if from + 1 < first {
            return None;
        }
        let skip = (from + 1 - first) as usize;
        Some(self.entries.iter().skip(skip).take(max).cloned().collect())
    }
}

pub(crate) fn lock_journal(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state machine handed to openraft.
pub(crate) struct StateMachine {
    state: Arc<RwLock<MetadataImage>>,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    applied_tx: watch::Sender<u64>,
    snapshots: Arc<SnapshotStore>,
    journal: Arc<Mutex<Journal>>,
}

/// What the rest of the controller needs to read the state machine.
pub(crate) struct StateMachineParts {
    pub(crate) state: Arc<RwLock<MetadataImage>>,
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) journal: Arc<Mutex<Journal>>,
    pub(crate) built: watch::Receiver<Option<(String, Arc<Vec<u8>>)>>,
}

fn write_lock(state: &RwLock<MetadataImage>) -> std::sync::RwLockWriteGuard<'_, MetadataImage> {
    // `MetadataState::apply` never panics, so a poisoned lock cannot hold a torn state.
    state.write().unwrap_or_else(|e| e.into_inner())
}

fn read_lock(state: &RwLock<MetadataImage>) -> std::sync::RwLockReadGuard<'_, MetadataImage> {
    state.read().unwrap_or_else(|e| e.into_inner())
}

impl StateMachine {
    /// Opens the snapshot directory `dir` and restores the latest snapshot, if any.
    pub(crate) fn open(dir: &Path) -> Result<(StateMachine, StateMachineParts), ControllerError> {
        create_dir(dir)?;
        let path = dir.join("current.json");
        let (state, meta) = match read_optional(&path)? {
            None => (MetadataState::default(), None),
            Some(bytes) => {
                let file: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, format!("snapshot: {e}")))?;
                tracing::info!(meta = %file.meta, "restored metadata snapshot");
                (file.state, Some(file.meta))
            }
        };
        let last_applied = meta.as_ref().and_then(|m| m.last_log_id);
        let last_membership = meta.as_ref().map(|m| m.last_membership.clone()).unwrap_or_default();
        let (applied_tx, applied_rx) = watch::channel(last_applied.map_or(0, |l| l.index));
        let state = Arc::new(RwLock::new(MetadataImage::new(state)));
        let (built_tx, built) = watch::channel(None);
        let journal =
            Arc::new(Mutex::new(Journal { entries: VecDeque::new(), last: last_applied.map_or(0, |l| l.index) }));
        let sm = StateMachine {
            state: state.clone(),
            last_applied,
            last_membership,
            applied_tx,
            snapshots: Arc::new(SnapshotStore { path, current: Mutex::new(meta), built: built_tx }),
            journal: journal.clone(),
        };
        Ok((sm, StateMachineParts { state, applied: applied_rx, journal, built }))
    }

    /// True when no snapshot exists and nothing was applied.
    pub(crate) fn is_pristine(&self) -> bool {
        self.last_applied.is_none()
    }
}

/// Builds one snapshot from a copy of the state taken when openraft asked for the builder, so
/// applying continues while the copy is serialized and written.
pub(crate) struct SnapshotBuilder {
    state: MetadataState,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    snapshots: Arc<SnapshotStore>,
}

fn snapshot_err(e: &ControllerError) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_snapshot(None, AnyError::new(e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}", l.leader_id.term, l.index),
            None => "empty".to_string(),
        };
        let meta = Meta { last_log_id: self.last_applied, last_membership: self.last_membership.clone(), snapshot_id };
        let file = SnapshotFile { meta: meta.clone(), state: std::mem::take(&mut self.state) };
        let snapshots = self.snapshots.clone();
        // Serializing and fsyncing a large state is blocking work: keep it off the runtime.
        let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ControllerError> {
            let bytes = serde_json::to_vec(&file).map_err(|e| corrupt(&snapshots.path, e.to_string()))?;
            snapshots.save(&file.meta, &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| StorageIOError::<NodeId>::write_snapshot(None, AnyError::new(&e)))?
        .map_err(|e| snapshot_err(&e))?;
        tracing::info!(%meta, bytes = bytes.len(), "built metadata snapshot");
        let name = match meta.last_log_id {
            // Zero-padded so names sort by index.
            Some(l) => format!("{:020}-{}", l.index, l.leader_id.term),
            None => "00000000000000000000-0".to_string(),
        };
        self.snapshots.built.send_replace(Some((name, Arc::new(bytes.clone()))));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<CommandResult>>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            // One lock per entry: readers see a batch entirely or not at all, and the journal
            // always matches the state.
            let mut state = write_lock(&self.state);
            let (result, commands) = match entry.payload {
                EntryPayload::Blank => (Vec::new(), Vec::new()),
                EntryPayload::Normal(batch) => (batch.0.iter().map(|cmd| state.state.apply(cmd)).collect(), batch.0),
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    (Vec::new(), Vec::new())
                }
            };
            lock_journal(&self.journal).push(entry.log_id.index, commands);
            drop(state);
            results.push(result);
        }
        if let Some(last) = self.last_applied {
            self.applied_tx.send_replace(last.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: read_lock(&self.state).state.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::<NodeId>::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        // The leader's meta is authoritative; persist it with the state it came with.
        let file = SnapshotFile { meta: meta.clone(), state: file.state };
        let snapshots = self.snapshots.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<SnapshotFile, ControllerError> {
            let bytes = serde_json::to_vec(&file).map_err(|e| corrupt(&snapshots.path, e.to_string()))?;
            snapshots.save(&file.meta, &bytes)?;
            Ok(file)
        })
        .await
        .map_err(|e| StorageIOError::<NodeId>::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?
        .map_err(|e| snapshot_err(&e))?;
        tracing::info!(%meta, "installed metadata snapshot");

        {
            let mut state = write_lock(&self.state);
            state.state = file.state;
            let mut journal = lock_journal(&self.journal);
            journal.entries.clear();
            journal.last = meta.last_log_id.map_or(0, |l| l.index);
        }
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.applied_tx.send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let snapshots = self.snapshots.clone();
        let current = tokio::task::spawn_blocking(move || snapshots.read())
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_snapshot(None, AnyError::new(&e)))?
            .map_err(|e| StorageError::from(StorageIOError::<NodeId>::read_snapshot(None, AnyError::new(&e))))?;
        Ok(current.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Writes `bytes` as the snapshot of a pristine controller (rebuilding a cluster from the copy
/// in object storage). Checked: the bytes must decode as a snapshot, and neither a snapshot
/// nor a Raft log may exist yet.
pub(crate) fn restore(dir: &Path, log_dir: &Path, bytes: &[u8]) -> Result<(), ControllerError> {
    let path = dir.join("current.json");
    let file: SnapshotFile =
        serde_json::from_slice(bytes).map_err(|e| corrupt(&path, format!("snapshot to restore: {e}")))?;
    if read_optional(&path)?.is_some() {
        return Err(corrupt(&path, "refusing to restore over an existing snapshot"));
    }
    let has_log = std::fs::read_dir(log_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if has_log {
        return Err(corrupt(log_dir, "refusing to restore into a controller that has a Raft log"));
    }
    create_dir(dir)?;
    write_atomic(&path, bytes)?;
    tracing::info!(meta = %file.meta, "restored a metadata snapshot from a copy");
    Ok(())
}
