//! The write path: offset assignment, the broker-wide write-ahead buffer, flushes to object
//! storage and in-order commits to the controller.
//!
//! ```text
//! produce ──append()──▶ open flush (all partitions) ──flusher──▶ PUT object (≤ N concurrent)
//!                                                              │
//!          ack ◀── waiters ◀── committer (in flush order) ◀────┘ CommitObject → controller
//! ```
//!
//! Invariants:
//! * Offsets are assigned under one lock together with the append to the open flush, so the
//!   order of batches in the buffer is the order of their offsets.
//! * Commits apply strictly in flush order. A flush that fails (PUT or commit) fails every later
//!   flush of the same generation too, and bumps the generation: partition writers then reload
//!   their next offset and producer state from the committed metadata ("rewind"), so offsets
//!   stay gapless and nothing unacknowledged is half-visible.
//! * Acknowledgement happens only after the object is stored AND its index entries are applied
//!   by the controller.
//! * Bytes accepted but not yet acknowledged are bounded by a semaphore (back-pressure).
//! * Transaction markers (RFC 0004 §4) go through the same lock and buffer as data: the
//!   `wal-markers` task appends every marker the image owes to a partition this broker leads,
//!   after every batch already appended, and the flush reports it in `PartitionAppend::markers`.
//!   Transactional checks (`log::txn`) run under the lock against the image plus pending appends.
//!
//! Tracing (docs/observability.md): a flush carries many requests, so its `wal.flush` span is a
//! child of the first traced request's span and links to the next [`MAX_FLUSH_LINKS`]; under it
//! `object.put` (the upload) and `wal.commit` (the controller commit, which continues on the
//! controller).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use skiff_controller::image::{MetadataImage, ProducerStates, Rejection, SequenceCheck};
use skiff_controller::intent::{ObjectCommit, PartitionAppend, ProducerBatch};
use skiff_controller::metadata::MarkerRow;
use skiff_controller::transactions::{OpenTxn, OwedMarker};
use skiff_controller::{ControllerError, ControllerHandle, ErrorKind, MetadataHandle};
use skiff_storage::{ObjectStorage, StorageError, WalObjectBuilder};
use skiff_time::{Clock, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, debug_span, info, warn};
use uuid::Uuid;

use super::read::TailCache;
use super::txn::{self, PartitionTxns, TxnRefusal};
use crate::broker::batch::{self, BatchHeader};
use crate::broker::dynamic_config::{BrokerDefaults, KAFKA_MESSAGE_MAX_BYTES};
use crate::broker::records::{self, EndTxnMarker};
use crate::metrics::Metrics;
use crate::supervisor::Supervisor;

/// A partition by topic id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// Why an append was refused or failed. The handler maps these to Kafka error codes
/// (`handler/errors.rs`); the storage and controller errors keep their kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("unknown topic or partition")]
    UnknownPartition,
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is fenced")]
    ProducerFenced,
    /// A duplicate of a batch whose original is still in flight: acknowledging it now could
    /// acknowledge data that is then lost, so the producer retries until it is settled.
    #[error("the original of this duplicate batch is not yet durable; retry")]
    DuplicateNotYetDurable,
    /// This append's flush came after one that failed: every partition rewinds first.
    #[error("an earlier flush failed; retry")]
    EarlierFlushFailed,
    #[error("write to object storage failed: {0}")]
    Storage(#[source] StorageError),
    /// The upload task itself failed (panicked or was cancelled).
    #[error("upload task failed: {0}")]
    UploadTask(String),
    /// The commit's outcome is unknown or it could not be submitted (the controller's kind says
    /// which); shared by every waiter of the flush.
    #[error("controller commit failed: {0}")]
    Controller(#[source] Arc<ControllerError>),
    #[error("commit was rejected: {0}")]
    Rejected(Rejection),
    #[error("broker is shutting down")]
    ShuttingDown,
    /// A transactional check refused the batch (RFC 0004 §7).
    #[error(transparent)]
    Txn(TxnRefusal),
}

/// The result of an accepted append, known before it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_append_time: i64,
    /// True if every batch was a duplicate of an already appended one (nothing new written).
    pub duplicate: bool,
}

/// Flush thresholds and limits.
#[derive(Debug, Clone)]
pub struct WalSettings {
    pub broker_id: i32,
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub buffer_max_bytes: usize,
    pub max_inflight_flushes: usize,
    /// Flush as soon as no flush is in flight (group commit) instead of waiting for the
    /// interval. Lowest latency; costs more PUTs when traffic is light.
    pub flush_when_idle: bool,
}

struct PartitionWriter {
    /// The generation in which `next_offset` and `producers` were last known good.
    generation: u64,
    leader_epoch: i32,
    next_offset: i64,
    producers: ProducerStates,
    /// Transactions opened and closed by this writer's pending appends, markers appended.
    txns: PartitionTxns,
}

#[derive(Default)]
struct Run {
    leader_epoch: i32,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    pieces: Vec<Bytes>,
    producer_batches: Vec<ProducerBatch>,
    markers: Vec<MarkerRow>,
}

/// At most this many traced requests are remembered per flush (its span's parent and links).
pub const MAX_FLUSH_LINKS: usize = 32;

struct OpenFlush {
    generation: u64,
    bytes: usize,
    opened_at: Option<Instant>,
    runs: BTreeMap<PartitionKey, Run>,
    waiters: Vec<oneshot::Sender<Result<(), AppendError>>>,
    permits: Vec<OwnedSemaphorePermit>,
    /// The spans of the traced appends in this flush (empty when tracing is off).
    traced: Vec<Span>,
}

impl OpenFlush {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            bytes: 0,
            opened_at: None,
            runs: BTreeMap::new(),
            waiters: Vec::new(),
            permits: Vec::new(),
            traced: Vec::new(),
        }
    }
    fn fail(self, err: AppendError) {
        for w in self.waiters {
            let _ = w.send(Err(err.clone()));
        }
    }
}

struct WriterState {
    generation: u64,
    writers: HashMap<PartitionKey, PartitionWriter>,
    open: OpenFlush,
    closed: bool,
}

/// A flush on its way to object storage and the controller.
struct PendingFlush {
    seq: u64,
    generation: u64,
    key: String,
    size_bytes: u64,
    commit: Vec<PartitionAppend>,
    upload: JoinHandle<Result<(), StorageError>>,
    waiters: Vec<oneshot::Sender<Result<(), AppendError>>>,
    _permits: Vec<OwnedSemaphorePermit>,
    inflight: OwnedSemaphorePermit,
    opened_at: Option<Instant>,
    /// `wal.flush`: ends once the waiters are answered.
    span: Span,
}

/// The broker's write-ahead buffer and flush pipeline.
pub struct Wal {
    settings: WalSettings,
    incarnation: String,
    state: Mutex<WriterState>,
    buffer_bytes: Arc<Semaphore>,
    flush_now: Notify,
    /// Wakes the marker task after a rewind: markers of a failed flush are owed again.
    markers_wake: Notify,
    metadata: MetadataHandle,
    tail: TailCache,
    metrics: Arc<Metrics>,
    /// Flush intervals and commit latencies.
    clock: Arc<dyn Clock>,
}

/// Handles of the WAL's tasks, joined on shutdown.
pub struct WalTasks {
    flusher: JoinHandle<()>,
    committer: JoinHandle<()>,
    markers: JoinHandle<()>,
}

impl WalTasks {
    pub async fn join(self) {
        let _ = self.flusher.await;
        let _ = self.committer.await;
        let _ = self.markers.await;
    }
}

impl Wal {
    /// Creates the WAL and starts its flusher and committer (critical tasks of `supervisor`:
    /// producers wait on them). They stop when `shutdown` fires, after flushing and committing
    /// everything accepted before.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: WalSettings,
        incarnation: Uuid,
        controller: ControllerHandle,
        storage: ObjectStorage,
        tail: TailCache,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> (Arc<Wal>, WalTasks) {
        let buffer_bytes = Arc::new(Semaphore::new(settings.buffer_max_bytes));
        let wal = Arc::new(Wal {
            incarnation: incarnation.simple().to_string(),
            metadata: controller.metadata(),
            state: Mutex::new(WriterState {
                generation: 0,
                writers: HashMap::new(),
                open: OpenFlush::new(0),
                closed: false,
            }),
            buffer_bytes,
            flush_now: Notify::new(),
            markers_wake: Notify::new(),
            tail,
            metrics,
            clock,
            settings,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let markers = supervisor.spawn_critical("wal-markers", wal.clone().run_markers(shutdown.clone()));
        let flusher = supervisor.spawn_critical("wal-flusher", wal.clone().run_flusher(storage, tx, shutdown));
        let committer = supervisor.spawn_critical("wal-committer", wal.clone().run_committer(controller, rx));
        (wal, WalTasks { flusher, committer, markers })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic while holding this lock is a bug; recover the data rather than cascade.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads (or rewinds) the writer of `key` from the committed metadata when it is missing, of
    /// an older generation, or of another leader epoch; refuses a partition this broker does not
    /// lead. Leadership as the metadata says now: a partition that moved away is refused at once,
    /// and one that came (back) in a new epoch starts from the committed end.
    fn load_writer(&self, st: &mut WriterState, key: PartitionKey) -> Result<(), AppendError> {
        let generation = st.generation;
        let current =
            self.metadata.read(|m| m.partition(&key.topic_id, key.partition).map(|p| (p.leader(), p.leader_epoch())));
        let Some((leader, epoch)) = current else {
            return Err(AppendError::UnknownPartition);
        };
        if leader != self.settings.broker_id {
            return Err(AppendError::NotLeader);
        }
        let epoch_changed = st.writers.get(&key).is_some_and(|w| w.leader_epoch != epoch);
        if epoch_changed && st.open.runs.contains_key(&key) {
            // Buffered batches of the old epoch can never commit; fail them (and everything
            // else unflushed: the flush is one object) so the new epoch starts clean.
            st.generation += 1;
            let generation = st.generation;
            let open = std::mem::replace(&mut st.open, OpenFlush::new(generation));
            open.fail(AppendError::NotLeader);
            self.markers_wake.notify_one();
            return Err(AppendError::NotLeader);
        }
        let needs_load = epoch_changed || st.writers.get(&key).is_none_or(|w| w.generation != generation);
        if needs_load {
            let loaded = self.metadata.read(|m| {
                m.partition(&key.topic_id, key.partition)
                    .map(|p| (p.leader(), p.leader_epoch(), p.high_watermark(), p.producers().clone()))
            });
            let Some((leader, leader_epoch, end_offset, producers)) = loaded else {
                return Err(AppendError::UnknownPartition);
            };
            if leader != self.settings.broker_id {
                return Err(AppendError::NotLeader);
            }
            st.writers.insert(
                key,
                PartitionWriter {
                    generation,
                    leader_epoch,
                    next_offset: end_offset,
                    producers,
                    txns: PartitionTxns::default(),
                },
            );
        }
        Ok(())
    }

    /// Appends the validated batches in `records` to partition `key`. Waits for buffer space
    /// (back-pressure), assigns offsets, and returns the offsets plus a receiver that resolves
    /// when the data is durable and committed. `transactional_id` is the produce request's: a
    /// transactional batch is appended only if the image shows its partition in that id's
    /// ongoing transaction (RFC 0004 §6-§7).
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        key: PartitionKey,
        records: &Bytes,
        headers: &[BatchHeader],
        log_append_time: Option<i64>,
        transactional_id: Option<&str>,
    ) -> Result<(Appended, Option<oneshot::Receiver<Result<(), AppendError>>>), AppendError> {
        let size = records.len();
        let permit = self
            .buffer_bytes
            .clone()
            .acquire_many_owned(size.min(self.settings.buffer_max_bytes).min(u32::MAX as usize) as u32)
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        let mut data = batch::to_mut(records);
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if st.closed {
            return Err(AppendError::ShuttingDown);
        }
        self.load_writer(&mut st, key)?;
        let state = &mut *st;
        let writer = state.writers.get_mut(&key).expect("writer loaded above");
        // The image's transactional facts about these batches' producers, read once.
        let image = self.metadata.read(|m| txn_facts(m, key, headers, transactional_id));
        // Transactional and idempotence checks for every batch before anything is appended.
        let mut duplicate_of = None;
        let mut simulated = writer.producers.clone();
        let mut txns = writer.txns.clone();
        let mut next = writer.next_offset;
        for (h, facts) in headers.iter().zip(&image) {
            if !h.is_idempotent() {
                next += i64::from(h.last_offset_delta) + 1;
                continue;
            }
            let open = txns.open(h.producer_id, facts.open);
            if h.is_transactional() {
                // Verified once per transaction and partition (Kafka skips the coordinator round
                // trip while the transaction is ongoing on the partition).
                if open.is_none_or(|t| t.producer_epoch != h.producer_epoch) {
                    facts.verified.clone().map_err(AppendError::Txn)?;
                }
            } else if open.is_some() {
                return Err(AppendError::Txn(TxnRefusal::ExpectedTransactional {
                    producer_id: h.producer_id,
                    offset: next,
                    partition: self.metadata.read(|m| {
                        let topic = m
                            .topic_by_id(&key.topic_id)
                            .map_or_else(|| key.topic_id.to_string(), |t| t.name().to_string());
                        format!("{topic}-{}", key.partition)
                    }),
                }));
            }
            match simulated.check(h.producer_id, h.producer_epoch, h.base_sequence, h.last_sequence()) {
                SequenceCheck::Accept => {
                    let last = next + i64::from(h.last_offset_delta);
                    simulated.record(ProducerBatch {
                        producer_id: h.producer_id,
                        producer_epoch: h.producer_epoch,
                        first_sequence: h.base_sequence,
                        last_sequence: h.last_sequence(),
                        base_offset: next,
                        last_offset: last,
                        transactional: h.is_transactional(),
                        max_timestamp: log_append_time.unwrap_or(h.max_timestamp),
                    });
                    if h.is_transactional() && open.is_none() {
                        txns.opened(h.producer_id, h.producer_epoch, next);
                    }
                    next = last + 1;
                }
                SequenceCheck::Duplicate { base_offset, .. } if headers.len() == 1 => {
                    duplicate_of = Some(base_offset);
                }
                SequenceCheck::Duplicate { .. } | SequenceCheck::OutOfOrder => {
                    return Err(AppendError::OutOfOrderSequence);
                }
                SequenceCheck::Fenced => return Err(AppendError::ProducerFenced),
            }
        }
        if let Some(base_offset) = duplicate_of {
            drop(permit);
            // Only a committed original may be acknowledged again; one still in flight could
            // yet fail, so the producer must retry until it is settled.
            let committed_end =
                self.metadata.read(|m| m.partition(&key.topic_id, key.partition).map(|p| p.high_watermark()));
            if committed_end.is_some_and(|end| base_offset < end) {
                return Ok((Appended { base_offset, log_append_time: -1, duplicate: true }, None));
            }
            return Err(AppendError::DuplicateNotYetDurable);
        }
        let base_offset = writer.next_offset;
        let mut pos = 0;
        let mut offset = base_offset;
        let mut max_timestamp = i64::MIN;
        for h in headers {
            let b = &mut data[pos..pos + h.size];
            batch::assign(b, offset, writer.leader_epoch);
            if let Some(now) = log_append_time {
                batch::set_log_append_time(b, h.size, now);
            }
            max_timestamp = max_timestamp.max(log_append_time.unwrap_or(h.max_timestamp));
            offset += i64::from(h.last_offset_delta) + 1;
            pos += h.size;
        }
        let last_offset = offset - 1;
        writer.next_offset = offset;
        writer.producers = simulated;
        writer.txns = txns;
        let producer_batches: Vec<ProducerBatch> = {
            let mut v = Vec::new();
            let mut o = base_offset;
            for h in headers {
                let last = o + i64::from(h.last_offset_delta);
                if h.is_idempotent() {
                    v.push(ProducerBatch {
                        producer_id: h.producer_id,
                        producer_epoch: h.producer_epoch,
                        first_sequence: h.base_sequence,
                        last_sequence: h.last_sequence(),
                        base_offset: o,
                        last_offset: last,
                        transactional: h.is_transactional(),
                        max_timestamp: log_append_time.unwrap_or(h.max_timestamp),
                    });
                }
                o = last + 1;
            }
            v
        };
        let leader_epoch = writer.leader_epoch;
        let open = &mut state.open;
        // The first byte of a flush starts its interval: wake the flusher to arm the timer.
        let first = open.opened_at.is_none();
        if first {
            open.opened_at = Some(self.clock.now());
        }
        let run = open.runs.entry(key).or_insert_with(|| Run { leader_epoch, base_offset, ..Run::default() });
        run.last_offset = last_offset;
        run.max_timestamp = run.max_timestamp.max(max_timestamp);
        run.pieces.push(data.freeze());
        run.producer_batches.extend(producer_batches);
        open.bytes += size;
        open.waiters.push(tx);
        open.permits.push(permit);
        // The caller's span (`produce.append`), when traced: the flush's span joins its trace.
        // (With tracing off no DEBUG span exists: one atomic load, no span lookup.)
        if open.traced.len() < MAX_FLUSH_LINKS && tracing::level_enabled!(tracing::Level::DEBUG) {
            let current = Span::current();
            if !current.is_disabled() {
                open.traced.push(current);
            }
        }
        let full = open.bytes >= self.settings.flush_bytes;
        drop(st);
        if full || first {
            self.flush_now.notify_one();
        }
        Ok((Appended { base_offset, log_append_time: log_append_time.unwrap_or(-1), duplicate: false }, Some(rx)))
    }

    /// The bound of [`Self::buffered_bytes`] (`buffer_max_bytes`).
    pub fn buffer_max_bytes(&self) -> usize {
        self.settings.buffer_max_bytes
    }

    /// Bytes currently buffered or in flight (for metrics).
    pub fn buffered_bytes(&self) -> usize {
        self.settings.buffer_max_bytes - self.buffer_bytes.available_permits()
    }

    /// Fails the open flush and bumps the generation so every partition rewinds to the
    /// committed end before its next append.
    fn rewind(&self, reason: &AppendError) -> u64 {
        let mut st = self.lock();
        st.generation += 1;
        let generation = st.generation;
        let open = std::mem::replace(&mut st.open, OpenFlush::new(generation));
        drop(st);
        open.fail(reason.clone());
        // Markers of the failed flushes are still owed: append them again.
        self.markers_wake.notify_one();
        generation
    }

    /// Appends the markers the image owes to partition `key` that this writer has not appended
    /// in this generation (RFC 0004 §4), after every batch already appended. Returns how many.
    /// No client waits for them: the flush that carries them commits them, and a failed flush
    /// leaves them owed (the rewind wakes the marker task).
    pub fn append_markers(&self, key: PartitionKey) -> Result<usize, AppendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(AppendError::ShuttingDown);
        }
        self.load_writer(&mut st, key)?;
        let broker_id = self.settings.broker_id;
        let (owed, log_append_time) = self.metadata.read(|m| {
            let owed = m.partition(&key.topic_id, key.partition).map(|p| p.owed_markers().to_vec());
            (owed.unwrap_or_default(), stamps_log_append_time(m, broker_id, &key.topic_id))
        });
        let state = &mut *st;
        let writer = state.writers.get_mut(&key).expect("writer loaded above");
        let todo = writer.txns.unwritten(&owed);
        if todo.is_empty() {
            return Ok(0);
        }
        let base_offset = writer.next_offset;
        let mut offset = base_offset;
        let mut pieces = Vec::with_capacity(todo.len());
        let mut rows = Vec::with_capacity(todo.len());
        let mut size = 0;
        let mut max_timestamp = i64::MIN;
        // A LogAppendTime topic stamps every batch appended to it, control batches included
        // (Kafka's `LogValidator` runs on the coordinator's marker appends too).
        let now = log_append_time.then(|| self.clock.now_ms());
        for m in &todo {
            let marker = EndTxnMarker { commit: m.commit, coordinator_epoch: m.coordinator_epoch };
            let mut b =
                batch::to_mut(&records::end_txn_marker(m.producer_id, m.producer_epoch, marker, m.timestamp_ms));
            batch::assign(&mut b, offset, writer.leader_epoch);
            if let Some(now) = now {
                let size = b.len();
                batch::set_log_append_time(&mut b, size, now);
            }
            let timestamp = now.unwrap_or(m.timestamp_ms);
            size += b.len();
            pieces.push(b.freeze());
            rows.push(MarkerRow {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit: m.commit,
                offset,
                coordinator_epoch: m.coordinator_epoch,
                timestamp,
            });
            record_marker_epoch(&mut writer.producers, m);
            writer.txns.marked(m);
            max_timestamp = max_timestamp.max(timestamp);
            info!(
                topic_id = %key.topic_id,
                partition = key.partition,
                producer_id = m.producer_id,
                producer_epoch = m.producer_epoch,
                commit = m.commit,
                offset,
                "appending transaction marker"
            );
            offset += 1;
        }
        writer.next_offset = offset;
        let leader_epoch = writer.leader_epoch;
        let open = &mut state.open;
        let first = open.opened_at.is_none();
        if first {
            open.opened_at = Some(self.clock.now());
        }
        let run = open.runs.entry(key).or_insert_with(|| Run { leader_epoch, base_offset, ..Run::default() });
        run.last_offset = offset - 1;
        run.max_timestamp = run.max_timestamp.max(max_timestamp);
        run.pieces.extend(pieces);
        run.markers.extend(rows);
        open.bytes += size;
        let full = open.bytes >= self.settings.flush_bytes;
        drop(st);
        if full || first {
            self.flush_now.notify_one();
        }
        Ok(todo.len())
    }

    /// The marker task: whenever the image changes (an EndTxn's Prepare owes markers, a
    /// partition moved here with markers still owed) or a flush failed, appends the markers owed
    /// to the partitions this broker leads. Owed markers are how EndTxn completes, so it reacts
    /// to every applied change rather than polling.
    async fn run_markers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut applied = self.metadata.subscribe();
        loop {
            applied.borrow_and_update();
            let broker_id = self.settings.broker_id;
            let owing = self.metadata.read(|m| partitions_owing_markers(m, broker_id));
            for key in owing {
                match self.append_markers(key) {
                    Ok(_) => {}
                    // Draining for shutdown: the next leader appends what is still owed.
                    Err(AppendError::ShuttingDown) => {
                        shutdown.cancelled().await;
                        return;
                    }
                    Err(e) => {
                        debug!(topic_id = %key.topic_id, partition = key.partition, error = %e, "owed markers not appended")
                    }
                }
            }
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        // The metadata is gone: the process is stopping.
                        shutdown.cancelled().await;
                        return;
                    }
                }
                _ = self.markers_wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn run_flusher(
        self: Arc<Self>,
        storage: ObjectStorage,
        tx: mpsc::UnboundedSender<PendingFlush>,
        shutdown: CancellationToken,
    ) {
        let inflight = Arc::new(Semaphore::new(self.settings.max_inflight_flushes));
        let mut seq: u64 = 0;
        loop {
            let deadline = self.lock().open.opened_at.map(|t| t + self.settings.flush_interval);
            let stopping = shutdown.is_cancelled();
            if !stopping {
                let sleep = async {
                    match deadline {
                        Some(d) => self.clock.sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = self.flush_now.notified() => {}
                    _ = sleep => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            // Group commit: with nothing in flight there is nothing to wait for, so flush now;
            // while a flush is in flight the next one fills up.
            let idle =
                self.settings.flush_when_idle && inflight.available_permits() == self.settings.max_inflight_flushes;
            let Ok(slot) = inflight.clone().acquire_owned().await else { return };
            let taken = {
                let mut st = self.lock();
                let due = st.open.opened_at.is_some_and(|t| t + self.settings.flush_interval <= self.clock.now());
                if st.open.runs.is_empty() || !(due || idle || stopping || st.open.bytes >= self.settings.flush_bytes) {
                    None
                } else {
                    let generation = st.generation;
                    Some(std::mem::replace(&mut st.open, OpenFlush::new(generation)))
                }
            };
            let Some(open) = taken else {
                if stopping {
                    // Nothing left: close for good so late appends fail instead of hanging.
                    let mut st = self.lock();
                    if st.open.runs.is_empty() {
                        st.closed = true;
                        info!("write-ahead buffer drained");
                        return;
                    }
                }
                continue;
            };
            seq += 1;
            let due = open.opened_at.is_some_and(|t| t + self.settings.flush_interval <= self.clock.now());
            let reason = if open.bytes >= self.settings.flush_bytes {
                "size"
            } else if stopping {
                "shutdown"
            } else if due {
                "interval"
            } else {
                "idle"
            };
            self.metrics.flush(reason, open.bytes);
            let pending = self.build_flush(&storage, seq, reason, open, slot);
            if tx.send(pending).is_err() {
                // The committer is gone (its failure is stopping the process): refuse new
                // appends and fail the buffered ones instead of leaving producers waiting. The
                // flush that could not be sent is dropped, which fails its waiters too.
                self.lock().closed = true;
                self.rewind(&AppendError::ShuttingDown);
                return;
            }
        }
    }

    fn build_flush(
        &self,
        storage: &ObjectStorage,
        seq: u64,
        reason: &'static str,
        open: OpenFlush,
        slot: OwnedSemaphorePermit,
    ) -> PendingFlush {
        let span = flush_span(&open.traced, seq, reason, open.bytes, open.runs.len(), open.waiters.len());
        self.metrics.flush_partitions(open.runs.len());
        let mut builder = WalObjectBuilder::for_sections(open.bytes, open.runs.len());
        for (key, run) in &open.runs {
            builder
                .add_section(
                    *key.topic_id.as_bytes(),
                    key.partition,
                    run.base_offset,
                    run.last_offset,
                    run.max_timestamp,
                    &run.pieces,
                )
                .expect("invariant: one run per partition, base_offset <= last_offset");
        }
        let (object, sections) = builder.finish();
        let key = storage.wal_key(self.settings.broker_id, &self.incarnation, seq);
        let object_key: Arc<str> = Arc::from(key.as_str());
        let mut commit = Vec::with_capacity(open.runs.len());
        for ((pkey, run), section) in open.runs.into_iter().zip(sections) {
            // Serve tailing readers from memory; harmless if the commit fails (never referenced).
            self.tail.insert(
                object_key.clone(),
                section.position,
                object.slice(section.position as usize..(section.position + section.len) as usize),
            );
            commit.push(PartitionAppend {
                topic_id: pkey.topic_id,
                partition: pkey.partition,
                leader_epoch: run.leader_epoch,
                base_offset: run.base_offset,
                last_offset: run.last_offset,
                position: section.position,
                len: section.len,
                max_timestamp: run.max_timestamp,
                producer_batches: run.producer_batches,
                markers: run.markers,
            });
        }
        let size_bytes = object.len() as u64;
        span.record("key", key.as_str());
        let upload = {
            let storage = storage.clone();
            let key = key.clone();
            let put = debug_span!(parent: &span, "object.put", key = key.as_str(), bytes = size_bytes);
            // Owned by the flush: the committer awaits it (uploads overlap, commits stay in order).
            tokio::spawn(async move { storage.put_new(&key, object).await }.instrument(put))
        };
        PendingFlush {
            seq,
            generation: open.generation,
            key,
            size_bytes,
            commit,
            upload,
            waiters: open.waiters,
            _permits: open.permits,
            inflight: slot,
            opened_at: open.opened_at,
            span,
        }
    }

    async fn run_committer(
        self: Arc<Self>,
        controller: ControllerHandle,
        mut rx: mpsc::UnboundedReceiver<PendingFlush>,
    ) {
        while let Some(flush) = rx.recv().await {
            let current = self.lock().generation;
            let uploaded = match flush.upload.await {
                Ok(r) => r.map_err(AppendError::Storage),
                Err(e) => Err(AppendError::UploadTask(e.to_string())),
            };
            let result = if flush.generation != current {
                Err(AppendError::EarlierFlushFailed)
            } else if let Err(e) = uploaded {
                warn!(key = %flush.key, error = %e, "flush upload failed; failing its requests and rewinding");
                Err(e)
            } else {
                let mut topic_bytes: Vec<(Uuid, u64)> = Vec::new();
                for run in &flush.commit {
                    match topic_bytes.iter_mut().find(|(t, _)| *t == run.topic_id) {
                        Some((_, b)) => *b += run.len,
                        None => topic_bytes.push((run.topic_id, run.len)),
                    }
                }
                self.metrics.attribute_put(&topic_bytes);
                let commit_span = debug_span!(parent: &flush.span, "wal.commit", key = flush.key.as_str(), partitions = flush.commit.len());
                let commit = ObjectCommit {
                    key: flush.key.clone(),
                    broker_id: self.settings.broker_id,
                    size_bytes: flush.size_bytes,
                    partitions: flush.commit,
                };
                match controller.commit_object(commit).instrument(commit_span).await {
                    Ok(()) => Ok(()),
                    // A newer leader epoch owns a partition of this object: this broker is deposed.
                    Err(e) if e.kind() == ErrorKind::Fenced => Err(AppendError::NotLeader),
                    Err(ControllerError::Rejected(r)) => Err(AppendError::Rejected(r)),
                    Err(e) => Err(AppendError::Controller(Arc::new(e))),
                }
            };
            // The pipeline has room again: let the flusher send what accumulated meanwhile.
            drop(flush.inflight);
            self.flush_now.notify_one();
            match result {
                Ok(()) => {
                    debug!(seq = flush.seq, key = %flush.key, bytes = flush.size_bytes, "flush committed");
                    if let Some(t) = flush.opened_at {
                        self.metrics.commit_latency(self.clock.now() - t);
                    }
                    for w in flush.waiters {
                        let _ = w.send(Ok(()));
                    }
                }
                Err(err) => {
                    self.metrics.flush_failed();
                    if flush.generation == current {
                        warn!(seq = flush.seq, key = %flush.key, error = %err, "flush failed; partitions rewind to the committed end");
                        self.rewind(&err);
                    }
                    for w in flush.waiters {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

/// What the image says about one batch's producer (read once per append, under the WAL lock).
struct TxnFacts {
    /// The producer's open transaction on the partition, as committed.
    open: Option<OpenTxn>,
    /// For a transactional batch: TV1 verification of the partition in the request's
    /// transactional id's transaction (RFC 0004 §6).
    verified: Result<(), TxnRefusal>,
}

fn txn_facts(
    m: &MetadataImage,
    key: PartitionKey,
    headers: &[BatchHeader],
    transactional_id: Option<&str>,
) -> Vec<TxnFacts> {
    let partition = m.partition(&key.topic_id, key.partition);
    headers
        .iter()
        .map(|h| {
            let open = if h.is_idempotent() {
                partition.and_then(|p| p.open_transaction(h.producer_id).copied())
            } else {
                None
            };
            let verified = if h.is_transactional() {
                let state = transactional_id.and_then(|id| m.transaction(id));
                txn::verify(state, h.producer_id, h.producer_epoch, (key.topic_id, key.partition))
            } else {
                Ok(())
            };
            TxnFacts { open, verified }
        })
        .collect()
}

/// The partitions led by `broker_id` whose image owes transaction markers.
fn partitions_owing_markers(m: &MetadataImage, broker_id: i32) -> Vec<PartitionKey> {
    let mut out = Vec::new();
    for t in m.topics() {
        for p in t.partitions() {
            if p.leader() == broker_id && !p.owed_markers().is_empty() {
                out.push(PartitionKey { topic_id: t.id(), partition: p.index() });
            }
        }
    }
    out
}

/// A marker records its epoch in the producer's state, as Kafka's
/// `ProducerAppendInfo.appendEndTxnMarker` (`maybeUpdateProducerEpoch`) and as the controller's
/// marker apply does: a newer epoch (a fenced transaction's abort) forgets the older batches, so
/// the old epoch is fenced and the next one starts at sequence 0.
/// True if topic `topic_id` stamps appended batches with the broker's clock
/// (`message.timestamp.type=LogAppendTime`, set on the topic or as the broker default), as the
/// produce path decides it.
fn stamps_log_append_time(m: &MetadataImage, broker_id: i32, topic_id: &Uuid) -> bool {
    m.topic_by_id(topic_id).is_some_and(|t| {
        // `message.max.bytes` is not read here: any static value gives the same answer.
        BrokerDefaults::new(m.dynamic_configs(), broker_id, KAFKA_MESSAGE_MAX_BYTES)
            .effective(t.config())
            .log_append_time()
    })
}

fn record_marker_epoch(producers: &mut ProducerStates, m: &OwedMarker) {
    match producers.producers.get_mut(&m.producer_id) {
        Some(entry) if m.producer_epoch > entry.epoch => {
            entry.epoch = m.producer_epoch;
            entry.batches.clear();
        }
        Some(_) => {}
        None => {
            let entry = producers.producers.entry(m.producer_id).or_default();
            entry.epoch = m.producer_epoch;
        }
    }
}

/// The `wal.flush` span of a flush carrying the appends traced in `traced`: a child of the
/// first (so a produce's trace shows its flush, PUT and commit) and linked to the others; a
/// root span when none was traced.
fn flush_span(
    traced: &[Span],
    seq: u64,
    reason: &'static str,
    bytes: usize,
    partitions: usize,
    requests: usize,
) -> Span {
    let span = match traced.first() {
        Some(first) => {
            debug_span!(parent: first, "wal.flush", seq, reason, bytes, partitions, requests, key = tracing::field::Empty)
        }
        None => {
            debug_span!(parent: None, "wal.flush", seq, reason, bytes, partitions, requests, key = tracing::field::Empty)
        }
    };
    for other in traced.iter().skip(1) {
        span.follows_from(other);
    }
    span
}
