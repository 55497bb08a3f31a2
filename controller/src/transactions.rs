//! Transactions (RFC 0004 §2, §3, §5): the transaction coordinator's state machine per
//! transactional id, and the per-partition pieces (owed markers, the aborted-transaction index,
//! the last stable offset). Pure: no I/O, no clock, no id allocation of its own. Times come in
//! the ops, and a fresh producer id comes in as an argument that the caller advances only when
//! [`Applied::used_fresh_producer_id`] says so.
//!
//! ```text
//!          InitProducerId (epoch+1, or new pid at i16::MAX-1)
//!   none ──────────────▶ Empty ◀──────────────────────────── CompleteCommit / CompleteAbort
//!                          │ AddPartitions / AddOffsets            ▲            ▲
//!                          ▼                                       │ MarkersDone│
//!                       Ongoing ── EndTxn(commit) ─▶ PrepareCommit ┘            │
//!                          │ ─── EndTxn(abort) ───▶ PrepareAbort ───────────────┘
//!                          └─ InitProducerId / Timeout: (PrepareEpochFence) ─▶ PrepareAbort, epoch+1
//!   Empty / Complete*, idle transactional.id.expiration.ms: Expire ─▶ Dead (the caller removes it)
//! ```
//!
//! Every rule follows Kafka's coordinator, cited per function: `TransactionCoordinator.scala`
//! (`handleInitProducerId`, `prepareInitProducerIdTransit`, `handleAddPartitionsToTransaction`,
//! `handleVerifyPartitionsInTransaction`, `endTransactionWithTV1`, `endTransaction` (TV2),
//! `abortTimedOutTransactions`), `TransactionMetadata.java` (transaction-coordinator module,
//! Kafka 4.x: `prepareFenceProducerEpoch`, `prepareIncrementProducerEpoch`,
//! `prepareProducerIdRotation`, `prepareAddPartitions`, `prepareAbortOrCommit`,
//! `prepareComplete`, `isEpochExhausted`) and `TransactionStateManager.scala`
//! (`timedOutTransactions`, `shouldExpire`, `validateTransactionTimeoutMs`).
//!
//! Differences from Kafka (listed with reasons in RFC 0004's "As built" note):
//! * Kafka's pending state does not exist: an op is applied or refused atomically, so
//!   `PrepareEpochFence` is never stored (the fence and its abort are one apply) and the
//!   "pending transition" CONCURRENT_TRANSACTIONS answers cannot arise.
//! * A transaction with no partition (only groups, or a TV2 abort of nothing) completes in the
//!   same apply as its Prepare: there is no marker to wait for (groups' offsets are resolved
//!   in the Prepare itself, RFC §4).
//! * A resubmitted op (same `now_ms`, see [`TxnOp`]) gets its first answer where Kafka, which
//!   never re-applies a write, would answer a client retry (CONCURRENT_TRANSACTIONS, a second
//!   InitProducerId bump).
//! * A KIP-360 retry of a bump to `i16::MAX - 1` is answered (`increment_epoch`).
//! * Producer ids come in as `fresh_producer_id`, so the caller's counter stays the allocator.
//!
//! Invariants (checked by the property test below):
//! * a producer id's epoch never decreases; a retired epoch (below the current one) never changes
//!   the state (it gets a fencing error, or the answer of its own earlier success);
//! * an op resubmitted after its answer was lost (same op, same `now_ms`) changes nothing and
//!   gets the first answer ([`TxnOp`] states the `now_ms` contract that makes this sound);
//! * `apply` is deterministic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod state;
pub use state::{TXN_SHARD_COUNT, TransactionsState, TxnCommand, shard_for};

/// Kafka's `RecordBatch.NO_PRODUCER_ID`.
pub const NO_PRODUCER_ID: i64 = -1;
/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `transaction.max.timeout.ms` default (Kafka: 15 minutes).
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;
/// `transactional.id.expiration.ms` default (Kafka: 7 days).
pub const DEFAULT_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A partition in a transaction: (topic id, partition index).
pub type TxnPartition = (Uuid, i32);

/// Kafka's `TransactionMetadata.isEpochExhausted`: a client never gets `i16::MAX`, so the
/// coordinator can always fence it with one more bump.
pub fn is_epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// The transaction protocol a request speaks (Kafka's `TransactionVersion`). TV0 and TV1 behave
/// the same in the coordinator (no epoch bump per transaction), so both are [`TxnVersion::Tv1`];
/// TV2 (KIP-890 part 2: EndTxn v5+, Produce v12, TxnOffsetCommit v5) bumps the epoch at every
/// EndTxn.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TxnVersion {
    #[default]
    Tv1,
    Tv2,
}

/// Kafka's `TransactionState`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Kafka's transient state while fencing an ongoing transaction; never stored here.
    PrepareEpochFence,
    /// Expired; the caller removes the transactional id.
    Dead,
}

impl TxnStatus {
    /// Kafka's state name (DescribeTransactions, ListTransactions filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
            TxnStatus::Dead => "Dead",
        }
    }

    /// Kafka's `TransactionState.isExpirationAllowed`.
    pub fn is_expiration_allowed(self) -> bool {
        matches!(self, TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }

    fn is_complete(self) -> bool {
        matches!(self, TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
    }
}

fn no_producer_id() -> i64 {
    NO_PRODUCER_ID
}

fn no_producer_epoch() -> i16 {
    NO_PRODUCER_EPOCH
}

/// One transactional id's state (Kafka's `TransactionMetadata`, minus the pending state).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxnState {
    pub producer_id: i64,
    /// -1 only before the first InitProducerId completes (never stored that way).
    pub producer_epoch: i16,
    /// The producer id before the last transition (Kafka's `prevProducerId`): lets a KIP-360
    /// InitProducerId or a TV2 EndTxn retried across a producer id rotation be recognised.
    #[serde(default = "no_producer_id")]
    pub prev_producer_id: i64,
    /// TV2: the producer id that replaces this one when the current Prepare* completes (the
    /// epoch was exhausted); -1 otherwise.
    #[serde(default = "no_producer_id")]
    pub next_producer_id: i64,
    /// The epoch before the last bump made for this producer (Kafka's `lastProducerEpoch`): a
    /// KIP-360 retry and a TV2 retried EndTxn carry it; -1 after a fence.
    #[serde(default = "no_producer_epoch")]
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnStatus,
    pub partitions: BTreeSet<TxnPartition>,
    /// Consumer groups whose offsets are part of the transaction (AddOffsetsToTxn, KIP-447).
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// When the first partition or group was added; -1 when no transaction is open.
    pub start_ms: i64,
    /// The `now_ms` of the last op that changed this state (expiry; resubmission identity).
    pub updated_ms: i64,
    /// The version of the request that made the last transition (Kafka's
    /// `clientTransactionVersion`); decides whether completion rotates the producer id.
    #[serde(default)]
    pub client_version: TxnVersion,
}

impl TxnState {
    /// The producer ids that map to this transactional id (for the derived `pid → id` index).
    pub fn producer_ids(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.producer_id)
            .chain((self.next_producer_id != NO_PRODUCER_ID).then_some(self.next_producer_id))
    }

    /// Kafka's metadata as created by `handleInitProducerId` before its first transition.
    fn created(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnState {
        TxnState {
            producer_id,
            producer_epoch: NO_PRODUCER_EPOCH,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            last_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            updated_ms: now_ms,
            client_version: TxnVersion::Tv1,
        }
    }
}

/// The broker configs the state machine obeys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TxnLimits {
    /// `transaction.max.timeout.ms`: a larger InitProducerId timeout is INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: idle Empty/Complete* ids expire after this.
    pub id_expiration_ms: i64,
    /// The finalized `transaction.version`: the protocol the coordinator itself uses when it
    /// aborts without a client (timeouts, fencing), as Kafka passes `transactionVersionLevel()`.
    pub server_version: TxnVersion,
}

impl Default for TxnLimits {
    fn default() -> Self {
        TxnLimits {
            max_timeout_ms: DEFAULT_MAX_TIMEOUT_MS,
            id_expiration_ms: DEFAULT_ID_EXPIRATION_MS,
            server_version: TxnVersion::Tv1,
        }
    }
}

/// A producer id and epoch (Kafka's `ProducerIdAndEpoch`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// An operation on one transactional id.
///
/// `now_ms` contract: the coordinator driver serialises the ops of one transactional id and
/// gives distinct ops strictly increasing `now_ms` ([`op_time_ms`]); a resubmission (answer lost,
/// e.g. a controller failover) is the identical op. `apply` uses `updated_ms == now_ms` to
/// recognise its own earlier effect and give the same answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum TxnOp {
    /// InitProducerId with a transactional id; `expected` is KIP-360's producer id and epoch
    /// (InitProducerId v3+, -1/-1 on the wire means `None`).
    InitProducerId { timeout_ms: i32, expected: Option<ProducerIdAndEpoch>, now_ms: i64 },
    /// AddPartitionsToTxn (v0-3, or one transaction of v4+), or TV2's implicit add by the
    /// partition leader.
    AddPartitions {
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<TxnPartition>,
        version: TxnVersion,
        now_ms: i64,
    },
    /// AddOffsetsToTxn (or TxnOffsetCommit v5's implicit add).
    AddOffsets { producer_id: i64, producer_epoch: i16, group: String, version: TxnVersion, now_ms: i64 },
    /// EndTxn; `version` is Tv2 for EndTxn v5+.
    EndTxn { producer_id: i64, producer_epoch: i16, commit: bool, version: TxnVersion, now_ms: i64 },
    /// The driver's timer: abort the transaction if it outlived its timeout.
    Timeout { now_ms: i64 },
    /// The driver's timer: remove the id if it idled past `transactional.id.expiration.ms`.
    Expire { now_ms: i64 },
    /// Every marker owed for the Prepare* at (producer_id, producer_epoch) was written (applied
    /// by the partitions' marker rows, RFC §4).
    MarkersDone { producer_id: i64, producer_epoch: i16, now_ms: i64 },
}

impl TxnOp {
    pub fn now_ms(&self) -> i64 {
        match self {
            TxnOp::InitProducerId { now_ms, .. }
            | TxnOp::AddPartitions { now_ms, .. }
            | TxnOp::AddOffsets { now_ms, .. }
            | TxnOp::EndTxn { now_ms, .. }
            | TxnOp::Timeout { now_ms }
            | TxnOp::Expire { now_ms }
            | TxnOp::MarkersDone { now_ms, .. } => *now_ms,
        }
    }
}

/// The `now_ms` the driver gives its next op on an id: its clock, but always past the state's
/// last change, so distinct ops never share a time (see [`TxnOp`]).
pub fn op_time_ms(state: Option<&TxnState>, clock_ms: i64) -> i64 {
    match state {
        Some(s) => clock_ms.max(s.updated_ms.saturating_add(1)),
        None => clock_ms,
    }
}

/// Why an op was refused; nothing changed. Kafka's error kinds, with the default messages of
/// Kafka's `Errors.java`; the numeric codes are mapped in `src/handler/errors.rs`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TxnError {
    /// PRODUCER_FENCED (older clients get INVALID_PRODUCER_EPOCH; the handler decides by version).
    #[error("There is a newer producer with the same transactionalId which fences the current one.")]
    ProducerFenced,
    /// INVALID_PRODUCER_EPOCH (produce-side checks, RFC §7).
    #[error("Producer attempted to produce with an old epoch.")]
    InvalidProducerEpoch,
    /// INVALID_PRODUCER_ID_MAPPING.
    #[error("The producer attempted to use a producer id which is not currently assigned to its transactional id.")]
    InvalidProducerIdMapping,
    /// CONCURRENT_TRANSACTIONS (retriable).
    #[error(
        "The producer attempted to update a transaction while another concurrent operation on the same transaction was ongoing."
    )]
    ConcurrentTransactions,
    /// INVALID_TXN_STATE.
    #[error("The producer attempted a transactional operation in an invalid state.")]
    InvalidTxnState,
    /// INVALID_TRANSACTION_TIMEOUT.
    #[error(
        "The transaction timeout is larger than the maximum value allowed by the broker (as configured by transaction.max.timeout.ms)."
    )]
    InvalidTransactionTimeout,
    /// TRANSACTIONAL_ID_NOT_FOUND (DescribeTransactions; a timer op for an id that is gone).
    #[error("The transactionalId could not be found.")]
    TransactionalIdNotFound,
    /// TRANSACTION_ABORTABLE (verification of a partition not in the transaction, KIP-890).
    #[error(
        "The server encountered an error with the transaction. The client can abort the transaction to continue using this transactional ID."
    )]
    TransactionAbortable,
}

/// What a client is told when the op applied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Answer {
    /// NONE, with nothing to return (AddPartitions, AddOffsets, TV1 EndTxn).
    Ok,
    /// NONE with this producer id and epoch (InitProducerId; TV2 EndTxn, v5 returns them).
    Producer(ProducerIdAndEpoch),
    /// The state changed, but the client gets this error (InitProducerId fencing an ongoing
    /// transaction: CONCURRENT_TRANSACTIONS until its abort completes).
    Error(TxnError),
    /// A timer or marker op: nobody to answer.
    NoClient,
}

/// Markers that became owed: one per partition, all (producer_id, producer_epoch, commit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkerSet {
    pub producer_id: i64,
    /// The epoch the markers carry (TV2: the bumped one, which fences the old epoch at the
    /// partition).
    pub producer_epoch: i16,
    pub commit: bool,
    /// Partitions owed a marker; empty when the transaction completed in the same apply.
    pub partitions: BTreeSet<TxnPartition>,
    /// Groups whose pending transactional offsets become committed (commit) or are dropped.
    pub groups: BTreeSet<String>,
}

impl MarkerSet {
    /// The marker owed to each of [`MarkerSet::partitions`].
    pub fn owed(&self, coordinator_epoch: i32, timestamp_ms: i64) -> OwedMarker {
        OwedMarker {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            commit: self.commit,
            coordinator_epoch,
            timestamp_ms,
        }
    }
}

/// An op that applied: the new state (store it; remove the id when it is `Dead`), the answer,
/// and the effects the caller carries out in the same apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub state: TxnState,
    pub answer: Answer,
    /// Set when a Prepare* happened: push an owed marker on each partition and resolve the
    /// groups' pending offsets. `None` for a resubmission (already done).
    pub markers: Option<MarkerSet>,
    /// The `fresh_producer_id` passed to [`apply`] now belongs to this id: advance the counter.
    pub used_fresh_producer_id: bool,
}

impl Applied {
    fn unchanged(state: &TxnState, answer: Answer) -> Applied {
        Applied { state: state.clone(), answer, markers: None, used_fresh_producer_id: false }
    }
}

/// Applies `op` to the state of one transactional id (`None`: unknown id). `fresh_producer_id`
/// is the id the caller would allocate next; it is used (and [`Applied::used_fresh_producer_id`]
/// set) for a new transactional id and for a producer id rotation at the epoch limit.
pub fn apply(
    state: Option<&TxnState>,
    op: &TxnOp,
    limits: &TxnLimits,
    fresh_producer_id: i64,
) -> Result<Applied, TxnError> {
    match op {
        TxnOp::InitProducerId { timeout_ms, expected, now_ms } => {
            init_producer_id(state, *timeout_ms, *expected, *now_ms, limits, fresh_producer_id)
        }
        TxnOp::AddPartitions { producer_id, producer_epoch, partitions, version, now_ms } => {
            add(state, *producer_id, *producer_epoch, partitions, None, *version, *now_ms)
        }
        TxnOp::AddOffsets { producer_id, producer_epoch, group, version, now_ms } => {
            add(state, *producer_id, *producer_epoch, &BTreeSet::new(), Some(group), *version, *now_ms)
        }
        TxnOp::EndTxn { producer_id, producer_epoch, commit, version: TxnVersion::Tv1, now_ms } => {
            end_txn_v1(state, *producer_id, *producer_epoch, *commit, *now_ms)
        }
        TxnOp::EndTxn { producer_id, producer_epoch, commit, version: TxnVersion::Tv2, now_ms } => {
            end_txn_v2(state, *producer_id, *producer_epoch, *commit, *now_ms, fresh_producer_id)
        }
        TxnOp::Timeout { now_ms } => timeout(state, *now_ms, limits, fresh_producer_id),
        TxnOp::Expire { now_ms } => expire(state, *now_ms, limits),
        TxnOp::MarkersDone { producer_id, producer_epoch, now_ms } => {
            markers_done(state, *producer_id, *producer_epoch, *now_ms)
        }
    }
}

/// `TransactionCoordinator.handleInitProducerId` + `prepareInitProducerIdTransit`.
fn init_producer_id(
    state: Option<&TxnState>,
    timeout_ms: i32,
    expected: Option<ProducerIdAndEpoch>,
    now_ms: i64,
    limits: &TxnLimits,
    fresh: i64,
) -> Result<Applied, TxnError> {
    // TransactionStateManager.validateTransactionTimeoutMs: 0 < timeout <= max.
    if timeout_ms <= 0 || timeout_ms > limits.max_timeout_ms {
        return Err(TxnError::InvalidTransactionTimeout);
    }
    let (base, created) = match state {
        Some(s) => (s.clone(), false),
        None => (TxnState::created(fresh, timeout_ms, now_ms), true),
    };
    // Our own earlier success, resubmitted (see `TxnOp`): the same answer.
    if !created && base.state == TxnStatus::Empty && base.updated_ms == now_ms && base.timeout_ms == timeout_ms {
        return Ok(Applied::unchanged(&base, Answer::Producer(current(&base))));
    }
    // isValidProducerId (KIP-360): fence unless the metadata is new, the producer id is the
    // current one, or it is the previous one with an exhausted epoch (a retry after rotation).
    if let Some(x) = expected {
        let valid = base.producer_epoch == NO_PRODUCER_EPOCH
            || x.producer_id == base.producer_id
            || (x.producer_id == base.prev_producer_id && is_epoch_exhausted(x.producer_epoch));
        if !valid {
            return Err(TxnError::ProducerFenced);
        }
    }
    match base.state {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
            let rotate = is_epoch_exhausted(base.producer_epoch)
                && expected.is_none_or(|x| x.producer_epoch == base.producer_epoch);
            let next = if rotate {
                // TransactionMetadata.prepareProducerIdRotation.
                let last = if expected.is_some() { base.producer_epoch } else { NO_PRODUCER_EPOCH };
                reset_to_empty(&base, fresh, 0, last, timeout_ms, now_ms)
            } else {
                let (epoch, last) = increment_epoch(&base, expected)?;
                reset_to_empty(&base, base.producer_id, epoch, last, timeout_ms, now_ms)
            };
            let answer = Answer::Producer(current(&next));
            Ok(Applied { state: next, answer, markers: None, used_fresh_producer_id: created || rotate })
        }
        // Fence the ongoing transaction: abort it with epoch+1 and make the client retry (it gets
        // another bump then, or a new producer id if the fence exhausted the epochs).
        TxnStatus::Ongoing => {
            let (next, markers, used) = fence_and_abort(&base, now_ms, limits.server_version, fresh);
            Ok(Applied {
                state: next,
                answer: Answer::Error(TxnError::ConcurrentTransactions),
                markers: Some(markers),
                used_fresh_producer_id: used,
            })
        }
        // Kafka throws IllegalStateException: never stored.
        TxnStatus::PrepareEpochFence | TxnStatus::Dead => Err(TxnError::InvalidTxnState),
    }
}

/// `TransactionMetadata.prepareIncrementProducerEpoch`: the new (epoch, last epoch).
///
/// Deviation: Kafka first throws IllegalStateException when the epoch is exhausted and the
/// expected epoch is not the current one (the rotation branch did not apply), which turns a
/// KIP-360 retry of a bump *to* `i16::MAX - 1` into UNKNOWN_SERVER_ERROR; here the retry is
/// recognised by `last_epoch` like any other, and anything else is fenced.
fn increment_epoch(base: &TxnState, expected: Option<ProducerIdAndEpoch>) -> Result<(i16, i16), TxnError> {
    let e = base.producer_epoch;
    match expected {
        // No expected epoch: bump, forget the last one (-1 → 0 for a new producer).
        None if !is_epoch_exhausted(e) => Ok((e + 1, NO_PRODUCER_EPOCH)),
        Some(x) if (e == NO_PRODUCER_EPOCH || x.producer_epoch == e) && !is_epoch_exhausted(e) => Ok((e + 1, e)),
        // A retry of a successful call: the current epoch, no bump (never `i16::MAX`, which only
        // the coordinator's own fence reaches and no client may hold).
        Some(x) if x.producer_epoch == base.last_epoch && base.last_epoch != NO_PRODUCER_EPOCH && e < i16::MAX => {
            Ok((e, base.last_epoch))
        }
        _ => Err(TxnError::ProducerFenced),
    }
}

/// The Empty state an InitProducerId leaves (Kafka: partitions cleared, start -1).
fn reset_to_empty(base: &TxnState, producer_id: i64, epoch: i16, last: i16, timeout_ms: i32, now_ms: i64) -> TxnState {
    TxnState {
        producer_id,
        producer_epoch: epoch,
        prev_producer_id: base.producer_id,
        next_producer_id: NO_PRODUCER_ID,
        last_epoch: last,
        timeout_ms,
        state: TxnStatus::Empty,
        partitions: BTreeSet::new(),
        groups: BTreeSet::new(),
        start_ms: -1,
        updated_ms: now_ms,
        client_version: base.client_version,
    }
}

fn current(s: &TxnState) -> ProducerIdAndEpoch {
    ProducerIdAndEpoch { producer_id: s.producer_id, producer_epoch: s.producer_epoch }
}

/// `TransactionCoordinator.handleAddPartitionsToTransaction` (AddOffsetsToTxn goes through it
/// too, with the group's offsets partition) + `TransactionMetadata.prepareAddPartitions`.
fn add(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &BTreeSet<TxnPartition>,
    group: Option<&String>,
    version: TxnVersion,
    now_ms: i64,
) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::InvalidProducerIdMapping)?;
    if s.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if s.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    match s.state {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnStatus::Ongoing if partitions.is_subset(&s.partitions) && group.is_none_or(|g| s.groups.contains(g)) => {
            // Kafka's shortcut: already added, NONE without a write.
            Ok(Applied::unchanged(s, Answer::Ok))
        }
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort | TxnStatus::Ongoing => {
            let mut next = s.clone();
            if s.state != TxnStatus::Ongoing {
                next.start_ms = now_ms;
            }
            next.partitions.extend(partitions.iter().copied());
            next.groups.extend(group.cloned());
            next.state = TxnStatus::Ongoing;
            next.prev_producer_id = s.producer_id;
            next.updated_ms = now_ms;
            next.client_version = version;
            Ok(Applied { state: next, answer: Answer::Ok, markers: None, used_fresh_producer_id: false })
        }
        TxnStatus::PrepareEpochFence | TxnStatus::Dead => Err(TxnError::InvalidTxnState),
    }
}

/// Server-side verification of partitions (AddPartitionsToTxn v4+ `verify_only`, RFC §6):
/// `TransactionCoordinator.handleVerifyPartitionsInTransaction`. Per partition: `None` when it is
/// in the transaction, TRANSACTION_ABORTABLE otherwise.
pub fn verify_partitions(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &BTreeSet<TxnPartition>,
) -> Result<Vec<(TxnPartition, Option<TxnError>)>, TxnError> {
    let s = state.ok_or(TxnError::InvalidProducerIdMapping)?;
    if s.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if s.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    if s.state.is_prepare() {
        return Err(TxnError::ConcurrentTransactions);
    }
    Ok(partitions.iter().map(|p| (*p, (!s.partitions.contains(p)).then_some(TxnError::TransactionAbortable))).collect())
}

/// `TransactionMetadata.prepareAbortOrCommit`, then `prepareComplete` when no marker is owed.
/// `rotate`: allocate the next producer id (TV2, epoch exhausted). `no_partition_added`: a TV2
/// abort from Empty/Complete*, whose start time is the abort's.
fn prepare(
    s: &TxnState,
    commit: bool,
    version: TxnVersion,
    rotate: bool,
    no_partition_added: bool,
    now_ms: i64,
    fresh: i64,
) -> (TxnState, MarkerSet) {
    let mut next = s.clone();
    next.prev_producer_id = s.producer_id;
    if version == TxnVersion::Tv2 {
        // Kafka lets an abort at i16::MAX through without a bump ("already in a broken state").
        if s.producer_epoch != i16::MAX || commit {
            next.producer_epoch = s.producer_epoch.saturating_add(1);
        }
        next.last_epoch = s.producer_epoch;
    }
    next.next_producer_id = if rotate { fresh } else { NO_PRODUCER_ID };
    next.state = if commit { TxnStatus::PrepareCommit } else { TxnStatus::PrepareAbort };
    if no_partition_added {
        next.start_ms = now_ms;
    }
    next.updated_ms = now_ms;
    next.client_version = version;
    let markers = MarkerSet {
        producer_id: next.producer_id,
        producer_epoch: next.producer_epoch,
        commit,
        partitions: next.partitions.clone(),
        groups: next.groups.clone(),
    };
    if next.partitions.is_empty() {
        next = complete(&next, now_ms);
    }
    (next, markers)
}

/// `TransactionMetadata.prepareComplete`: Complete*, and the TV2 producer id rotation.
fn complete(s: &TxnState, now_ms: i64) -> TxnState {
    let mut next = s.clone();
    next.prev_producer_id = s.producer_id;
    if s.client_version == TxnVersion::Tv2 && s.next_producer_id != NO_PRODUCER_ID {
        next.producer_id = s.next_producer_id;
        next.producer_epoch = 0;
    }
    next.next_producer_id = NO_PRODUCER_ID;
    next.state = if s.state == TxnStatus::PrepareCommit { TxnStatus::CompleteCommit } else { TxnStatus::CompleteAbort };
    next.partitions.clear();
    next.groups.clear();
    next.updated_ms = now_ms;
    next
}

/// `prepareFenceProducerEpoch` + `endTransaction(ABORT, isFromClient = false)` with the
/// server's transaction version: epoch+1 (not past `i16::MAX`), last epoch forgotten, then the
/// abort (TV2 bumps once more, and rotates the producer id when the pre-fence epoch was
/// exhausted, as Kafka 4.x's `generateTxnTransitMetadataForTxnCompletion`).
fn fence_and_abort(s: &TxnState, now_ms: i64, server: TxnVersion, fresh: i64) -> (TxnState, MarkerSet, bool) {
    let mut fenced = s.clone();
    if s.producer_epoch < i16::MAX {
        fenced.producer_epoch = s.producer_epoch + 1;
    }
    fenced.last_epoch = NO_PRODUCER_EPOCH;
    let rotate = server == TxnVersion::Tv2 && is_epoch_exhausted(s.producer_epoch);
    let (next, markers) = prepare(&fenced, false, server, rotate, false, now_ms, fresh);
    (next, markers, rotate)
}

/// The producer id and epoch a TV2 EndTxn answers (Kafka 4.x answers with the state after
/// `prepareComplete`: the next producer id at epoch 0 after an overflow).
fn answer_v2(s: &TxnState) -> Answer {
    if s.next_producer_id != NO_PRODUCER_ID {
        Answer::Producer(ProducerIdAndEpoch { producer_id: s.next_producer_id, producer_epoch: 0 })
    } else {
        Answer::Producer(current(s))
    }
}

/// `TransactionCoordinator.endTransactionWithTV1` (from a client).
fn end_txn_v1(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::InvalidProducerIdMapping)?;
    if s.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    // Strict equality for client requests: TV1 clients never bump on their own.
    if s.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    let same = |c: TxnStatus, a: TxnStatus| if commit { s.state == c } else { s.state == a };
    match s.state {
        TxnStatus::Ongoing => {
            let (next, markers) = prepare(s, commit, TxnVersion::Tv1, false, false, now_ms, NO_PRODUCER_ID);
            Ok(Applied { state: next, answer: Answer::Ok, markers: Some(markers), used_fresh_producer_id: false })
        }
        // A retry after the decision: NONE.
        _ if same(TxnStatus::CompleteCommit, TxnStatus::CompleteAbort) => Ok(Applied::unchanged(s, Answer::Ok)),
        // Our own EndTxn resubmitted: its answer. A client's retry: CONCURRENT_TRANSACTIONS.
        _ if same(TxnStatus::PrepareCommit, TxnStatus::PrepareAbort) => {
            if s.updated_ms == now_ms {
                Ok(Applied::unchanged(s, Answer::Ok))
            } else {
                Err(TxnError::ConcurrentTransactions)
            }
        }
        // Empty, the other result, or a state never stored.
        _ => Err(TxnError::InvalidTxnState),
    }
}

/// `TransactionCoordinator.endTransaction` for TV2 (from a client). Kafka's table for Empty and
/// Complete* (Retry = the epoch before the bump, Current = the state's epoch):
///
/// | state          | abort, retry | abort, current | commit, retry | commit, current |
/// |----------------|--------------|----------------|---------------|-----------------|
/// | Empty          | PF           | bump, abort    | PF            | ITS             |
/// | CompleteAbort  | NONE         | bump, abort    | ITS           | ITS             |
/// | CompleteCommit | ITS          | bump, abort    | NONE          | ITS             |
fn end_txn_v2(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
    fresh: i64,
) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::InvalidProducerIdMapping)?;
    // Our own EndTxn resubmitted (see `TxnOp`): its answer. Checked before Kafka's retry rules,
    // which miss two cases only the coordinator's own fence can set up (an abort at `i16::MAX`
    // does not bump; a transaction without partitions completes in its Prepare).
    let (prepared, completed) = if commit {
        (TxnStatus::PrepareCommit, TxnStatus::CompleteCommit)
    } else {
        (TxnStatus::PrepareAbort, TxnStatus::CompleteAbort)
    };
    if s.updated_ms == now_ms
        && (s.state == prepared || s.state == completed)
        && (s.producer_id == producer_id || s.prev_producer_id == producer_id)
        && s.last_epoch == producer_epoch
    {
        let answer = if s.state == prepared { answer_v2(s) } else { Answer::Producer(current(s)) };
        return Ok(Applied::unchanged(s, answer));
    }
    // A retry after the epoch bump overflowed into a new producer id.
    let retry_on_overflow =
        s.prev_producer_id == producer_id && producer_epoch == i16::MAX - 1 && s.producer_epoch == 0;
    // A retry after the epoch bump of this EndTxn.
    let retry_on_bump = i32::from(s.producer_epoch) == i32::from(producer_epoch) + 1;
    let valid_epoch = match s.state {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => retry_on_bump,
        TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
            retry_on_bump || retry_on_overflow || producer_epoch == s.producer_epoch
        }
        _ => producer_epoch == s.producer_epoch,
    };
    if s.producer_id != producer_id && !retry_on_overflow {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if !valid_epoch {
        return Err(TxnError::ProducerFenced);
    }
    let is_retry = retry_on_bump || retry_on_overflow;
    let begin = |no_partition_added: bool, commit: bool| {
        let rotate = is_epoch_exhausted(s.producer_epoch);
        let (next, markers) = prepare(s, commit, TxnVersion::Tv2, rotate, no_partition_added, now_ms, fresh);
        // The answer is the state after completion (the new producer id after an overflow).
        let answer = if next.state.is_prepare() { answer_v2(&next) } else { Answer::Producer(current(&next)) };
        Ok(Applied { state: next, answer, markers: Some(markers), used_fresh_producer_id: rotate })
    };
    match (s.state, commit) {
        (TxnStatus::Ongoing, _) => begin(false, commit),
        (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) if is_retry => {
            Ok(Applied::unchanged(s, Answer::Producer(current(s))))
        }
        (TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort, false) if !is_retry => {
            begin(true, false)
        }
        // A client's retry while the markers are owed.
        (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => Err(TxnError::ConcurrentTransactions),
        _ => Err(TxnError::InvalidTxnState),
    }
}

/// `TransactionStateManager.timedOutTransactions` (Ongoing and `start + timeout < now`) +
/// `TransactionCoordinator.abortTimedOutTransactions` (fence, then abort as the server).
fn timeout(state: Option<&TxnState>, now_ms: i64, limits: &TxnLimits, fresh: i64) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::TransactionalIdNotFound)?;
    if s.state != TxnStatus::Ongoing || s.start_ms.saturating_add(i64::from(s.timeout_ms)) >= now_ms {
        // The timer raced with the transaction's end (or a resubmission): nothing to do.
        return Ok(Applied::unchanged(s, Answer::NoClient));
    }
    let (next, markers, used) = fence_and_abort(s, now_ms, limits.server_version, fresh);
    Ok(Applied { state: next, answer: Answer::NoClient, markers: Some(markers), used_fresh_producer_id: used })
}

/// `TransactionStateManager.shouldExpire`: Empty/Complete* and idle for
/// `transactional.id.expiration.ms` → Dead (Kafka writes a tombstone; the caller removes it).
fn expire(state: Option<&TxnState>, now_ms: i64, limits: &TxnLimits) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::TransactionalIdNotFound)?;
    if !s.state.is_expiration_allowed() || s.updated_ms > now_ms.saturating_sub(limits.id_expiration_ms) {
        return Ok(Applied::unchanged(s, Answer::NoClient));
    }
    let mut next = s.clone();
    next.state = TxnStatus::Dead;
    next.partitions.clear();
    next.groups.clear();
    Ok(Applied { state: next, answer: Answer::NoClient, markers: None, used_fresh_producer_id: false })
}

/// The last owed marker of the Prepare* at (producer_id, producer_epoch) was written
/// (`TransactionMarkerChannelManager` → `prepareComplete` in Kafka).
fn markers_done(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    now_ms: i64,
) -> Result<Applied, TxnError> {
    let s = state.ok_or(TxnError::TransactionalIdNotFound)?;
    if s.state.is_prepare() && s.producer_id == producer_id && s.producer_epoch == producer_epoch {
        return Ok(Applied {
            state: complete(s, now_ms),
            answer: Answer::NoClient,
            markers: None,
            used_fresh_producer_id: false,
        });
    }
    if s.state.is_complete() {
        // Already completed (a resubmission).
        return Ok(Applied::unchanged(s, Answer::NoClient));
    }
    Err(TxnError::InvalidTxnState)
}

// ---------------------------------------------------------------------------------------------
// Per-partition pieces (RFC §3, §5).

/// A transaction marker a partition's leader must append (RFC §4): pushed on every partition of
/// a transaction by the apply of its Prepare*, removed by the apply of the marker's row.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwedMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The transaction shard's epoch (the marker value's `coordinator_epoch`).
    pub coordinator_epoch: i32,
    /// The marker batch's timestamp.
    pub timestamp_ms: i64,
}

/// A transaction still open on a partition (RFC §3 `open_txns[pid]`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenTxn {
    pub producer_epoch: i16,
    pub first_offset: i64,
}

/// LSO = min(first offset of every open transaction, high watermark) (Kafka's
/// `UnifiedLog.lastStableOffset` over `ProducerStateManager.firstUnstableOffset`).
pub fn last_stable_offset(open_txns: &BTreeMap<i64, OpenTxn>, high_watermark: i64) -> i64 {
    open_txns.values().map(|t| t.first_offset).fold(high_watermark, i64::min)
}

/// The LSO recorded with an abort marker at `marker_offset`, once its transaction is closed
/// (`open_txns` without it): the first offset still undecided, or the offset after the marker
/// (Kafka's `ProducerStateManager.lastStableOffset(completedTxn)`).
pub fn lso_at_marker(open_txns: &BTreeMap<i64, OpenTxn>, marker_offset: i64) -> i64 {
    last_stable_offset(open_txns, marker_offset + 1)
}

/// One aborted transaction of a partition (Kafka's `.txnindex` entry, `AbortedTxn`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    /// The partition's LSO right after the marker ([`lso_at_marker`]).
    pub lso_at_marker: i64,
}

/// A partition's aborted transactions, ordered by `last_offset` (markers are appended in offset
/// order by one writer per leader epoch).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AbortedIndex {
    entries: VecDeque<AbortedTxn>,
}

impl AbortedIndex {
    /// Records an abort. Markers arrive in offset order; an out-of-order one (a bug) is still
    /// inserted in place so the order the queries rely on holds.
    pub fn push(&mut self, entry: AbortedTxn) {
        debug_assert!(self.entries.back().is_none_or(|b| b.last_offset < entry.last_offset));
        let at = self.entries.partition_point(|e| e.last_offset < entry.last_offset);
        self.entries.insert(at, entry);
    }

    /// The aborted transactions a read_committed fetch of `[fetch_start, upper_bound)` must
    /// report (RFC §5; Kafka's `TransactionIndex.collectAbortedTxns`): from the first entry with
    /// `last_offset >= fetch_start`, those with `first_offset < upper_bound`, stopping after the
    /// first entry whose `lso_at_marker >= upper_bound`: every later abort began at or after
    /// that LSO, so at or after `upper_bound`.
    pub fn collect(&self, fetch_start: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let from = self.entries.partition_point(|e| e.last_offset < fetch_start);
        let mut out = Vec::new();
        for e in self.entries.range(from..) {
            if e.first_offset < upper_bound {
                out.push(*e);
            }
            if e.lso_at_marker >= upper_bound {
                break;
            }
        }
        out
    }

    /// Retention: drops the entries whose marker is below the log start.
    pub fn truncate_below(&mut self, log_start: i64) {
        let keep_from = self.entries.partition_point(|e| e.last_offset < log_start);
        self.entries.drain(..keep_from);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests;
