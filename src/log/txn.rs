//! Transactions on the write path (RFC 0004 §4, §6, §7): what a partition's writer checks before
//! it appends a batch of a transactional producer, and which owed markers it still has to
//! append. Pure: the writer (`wal.rs`) calls these under its lock with values from the metadata
//! image and its own pending appends. One exception, [`add_partition`]: TV2's implicit
//! AddPartitionsToTxn by the partition leader (Produce v12), one controller command.
//!
//! ```text
//!  transactional batch (pid, epoch) ─▶ open on this partition at that epoch? ── yes ─▶ append
//!                                       │ no (first batch of the transaction here)
//!                                       ▼
//!            TV1 verification from the image (Kafka's handleVerifyPartitionsInTransaction)
//!            ok ─▶ append, the transaction opens at the batch's base offset
//!            refused ─▶ the handler confirms the image with the controller once, then decides
//!  idempotent batch of a pid with a transaction open here ─▶ INVALID_TXN_STATE
//!  owed marker (image) not yet appended in this generation ─▶ control batch after every
//!            data batch already appended; the transaction closes at the marker
//! ```
//!
//! Invariants:
//! * The writer's view of a partition's open transactions is the image's plus its own pending
//!   appends ([`PartitionTxns`]); a rewind or leader change drops the overlay with the pending
//!   appends, and the image is again the whole truth.
//! * One marker per owed marker per partition: a marker is appended only while the image owes
//!   it and this writer has not appended it in the current generation. Owed markers are told
//!   apart by all their fields, not by (pid, epoch) alone: under TV1 consecutive transactions of
//!   a producer share its epoch, and their markers differ in their timestamps (the coordinator
//!   gives each EndTxn of an id a later time). A marker of a failed
//!   flush is still owed after the rewind, so it is appended again; a committed one is no longer
//!   owed (the commit returns only once it is applied to the image).
//! * A batch appended while the image still shows the transaction Ongoing lands below the
//!   transaction's marker: the marker is appended only once the image shows the Prepare, and
//!   both read the image under the writer's lock.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use skiff_controller::intent::{Answer, Rejection, TxnCommand, TxnOp, TxnVersion};
use skiff_controller::transactions::{self, OpenTxn, OwedMarker, TxnError, TxnPartition, TxnState};
use skiff_controller::{ControllerHandle, ErrorKind};
use skiff_time::Clock;

/// Why a transactional check refused a batch. Mapped to Kafka codes in `handler/errors.rs`
/// (with the Produce version: [`TxnRefusal::NotInTransaction`] is TRANSACTION_ABORTABLE for
/// v11+, INVALID_TXN_STATE before, as Kafka's `AddPartitionsToTxnManager` maps it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnRefusal {
    /// The partition is not in the producer's ongoing transaction (verification failed).
    #[error("Partition was not added to the transaction")]
    NotInTransaction,
    /// The transactional id is unknown or maps to another producer id.
    #[error("The producer attempted to use a producer id which is not currently assigned to its transactional id.")]
    InvalidProducerIdMapping,
    /// The transaction's epoch is newer than the batch's (verification's PRODUCER_FENCED, which
    /// Kafka answers to Produce as INVALID_PRODUCER_EPOCH).
    #[error("Producer attempted to produce with an old epoch.")]
    ProducerFenced,
    /// The transaction is completing (Prepare*): Kafka's NOT_ENOUGH_REPLICAS, retriable.
    #[error("Unable to verify the partition has been added to the transaction. Underlying error: {0}")]
    Unverifiable(&'static str),
    /// TV2's implicit add was refused by the transaction state machine with this error.
    #[error("{0}")]
    Coordinator(TxnError),
    /// An idempotent (non-transactional) batch of a producer with a transaction open here.
    #[error("Expected transactional write from producer {producer_id} at offset {offset} in partition {partition}")]
    ExpectedTransactional { producer_id: i64, offset: i64, partition: String },
}

impl TxnRefusal {
    /// Whether the refusal may come from an image that lags the controller (the coordinator's
    /// AddPartitionsToTxn applied but not yet replayed here): the handler then confirms the image
    /// and checks once more (RFC §6).
    pub fn may_be_stale(&self) -> bool {
        matches!(self, TxnRefusal::NotInTransaction | TxnRefusal::InvalidProducerIdMapping | TxnRefusal::ProducerFenced)
    }
}

/// Kafka's verification of one partition for a transactional produce (TV1, RFC §6):
/// `TransactionCoordinator.handleVerifyPartitionsInTransaction` on the transactional id's state
/// from the image, with `AddPartitionsToTxnManager`'s mapping for appends.
pub fn verify(
    state: Option<&TxnState>,
    producer_id: i64,
    producer_epoch: i16,
    partition: TxnPartition,
) -> Result<(), TxnRefusal> {
    let partitions = BTreeSet::from([partition]);
    match transactions::verify_partitions(state, producer_id, producer_epoch, &partitions) {
        Ok(results) => match results.first() {
            Some((_, None)) => Ok(()),
            _ => Err(TxnRefusal::NotInTransaction),
        },
        Err(TxnError::InvalidProducerIdMapping) => Err(TxnRefusal::InvalidProducerIdMapping),
        Err(TxnError::ProducerFenced | TxnError::InvalidProducerEpoch) => Err(TxnRefusal::ProducerFenced),
        Err(TxnError::ConcurrentTransactions) => Err(TxnRefusal::Unverifiable(CONCURRENT_TRANSACTIONS)),
        // verify_partitions gives no other error; anything else means the partition is not
        // verifiably in the transaction.
        Err(_) => Err(TxnRefusal::NotInTransaction),
    }
}

/// TV2 (KIP-890 part 2, Produce v12): the leader adds `partition` to the producer's transaction
/// itself instead of refusing the batch, as Kafka's `addPartition` verification path does
/// (RFC 0004 §6). One `AddPartitions` op on the transactional id, with the shard epoch and an op
/// time from this broker's image (`op_time_ms`: past the state's last change). The caller
/// appends again afterwards, and that append verifies from the image: an op taken for a
/// resubmission of an earlier one (same time) cannot let a batch in without its partition.
/// Errors as Kafka maps the coordinator's answers for a produce.
pub async fn add_partition(
    controller: &ControllerHandle,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partition: TxnPartition,
    clock_ms: i64,
) -> Result<(), TxnRefusal> {
    implicit_add(controller, transactional_id, clock_ms, |now_ms| TxnOp::AddPartitions {
        producer_id,
        producer_epoch,
        partitions: BTreeSet::from([partition]),
        version: TxnVersion::Tv2,
        now_ms,
    })
    .await
}

/// TV2's implicit AddOffsetsToTxn by the group coordinator (TxnOffsetCommit v5+): `group`
/// joins the producer's transaction (starting it if none is ongoing), as Kafka's
/// `maybeStartTransactionVerification` with the `addPartition` operation does for the group's
/// offsets partition. Same answers as [`add_partition`].
pub async fn add_group(
    controller: &ControllerHandle,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    group: &str,
    clock_ms: i64,
) -> Result<(), TxnRefusal> {
    let group = group.to_string();
    implicit_add(controller, transactional_id, clock_ms, |now_ms| TxnOp::AddOffsets {
        producer_id,
        producer_epoch,
        group,
        version: TxnVersion::Tv2,
        now_ms,
    })
    .await
}

/// First wait before an implicit add refused with CONCURRENT_TRANSACTIONS is tried again
/// (Kafka's `add.partitions.to.txn.retry.backoff.ms`, 20 ms); doubles up to
/// [`IMPLICIT_ADD_MAX_BACKOFF`].
const IMPLICIT_ADD_BACKOFF: Duration = Duration::from_millis(20);
const IMPLICIT_ADD_MAX_BACKOFF: Duration = Duration::from_millis(100);
/// How long an implicit add waits for the previous transaction's markers. Kafka retries for
/// `add.partitions.to.txn.retry.backoff.max.ms` (100 ms); Skiff's markers are written with
/// the leaders' next WAL flush and applied by the controller, so a TV2 producer that starts its
/// next transaction right after EndTxn v5 would otherwise mostly get NOT_ENOUGH_REPLICAS and
/// back off for much longer in the client.
const IMPLICIT_ADD_WAIT: Duration = Duration::from_secs(2);

/// Runs `add` (an implicit add, given the clock's time) and again while the transaction is
/// completing (CONCURRENT_TRANSACTIONS: markers of the previous transaction still owed), up to
/// [`IMPLICIT_ADD_WAIT`], as Kafka's `ReplicaManager` retries the `addPartition` verification.
pub async fn retry_while_completing<F, Fut>(clock: &Arc<dyn Clock>, mut add: F) -> Result<(), TxnRefusal>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<(), TxnRefusal>>,
{
    let started = clock.now();
    let mut backoff = IMPLICIT_ADD_BACKOFF;
    loop {
        match add(clock.now_ms()).await {
            Err(TxnRefusal::Unverifiable(CONCURRENT_TRANSACTIONS)) if clock.now() - started < IMPLICIT_ADD_WAIT => {
                clock.sleep(backoff).await;
                backoff = (backoff * 2).min(IMPLICIT_ADD_MAX_BACKOFF);
            }
            r => return r,
        }
    }
}

/// The reason [`TxnRefusal::Unverifiable`] gives for a transaction that is completing.
pub const CONCURRENT_TRANSACTIONS: &str = "CONCURRENT_TRANSACTIONS";

/// Submits an implicit add (`op` built from the op time) straight to the controller, with the
/// image's shard epoch: the caller is a partition leader or group coordinator, not the
/// transaction's coordinator.
async fn implicit_add(
    controller: &ControllerHandle,
    transactional_id: &str,
    clock_ms: i64,
    op: impl FnOnce(i64) -> TxnOp,
) -> Result<(), TxnRefusal> {
    let shard = transactions::shard_for(transactional_id);
    let (coordinator_epoch, now_ms) = controller
        .metadata()
        .read(|m| (m.txn_shard_epoch(shard), transactions::op_time_ms(m.transaction(transactional_id), clock_ms)));
    let command = TxnCommand {
        transactional_id: transactional_id.to_string(),
        shard,
        coordinator_epoch,
        op: op(now_ms),
        limits: Default::default(),
    };
    match controller.txn(command).await {
        Ok(Answer::Ok | Answer::Producer(_) | Answer::NoClient) => Ok(()),
        Ok(Answer::Error(e)) | Err(skiff_controller::ControllerError::Rejected(Rejection::Txn { error: e, .. })) => {
            Err(match e {
                TxnError::ProducerFenced | TxnError::InvalidProducerEpoch => TxnRefusal::ProducerFenced,
                TxnError::InvalidProducerIdMapping | TxnError::TransactionalIdNotFound => {
                    TxnRefusal::InvalidProducerIdMapping
                }
                TxnError::ConcurrentTransactions => TxnRefusal::Unverifiable(CONCURRENT_TRANSACTIONS),
                e => TxnRefusal::Coordinator(e),
            })
        }
        Err(skiff_controller::ControllerError::Rejected(Rejection::StaleTxnCoordinator { .. })) => {
            Err(TxnRefusal::Unverifiable("NOT_COORDINATOR"))
        }
        Err(e) if matches!(e.kind(), ErrorKind::Retriable | ErrorKind::Closed) => {
            Err(TxnRefusal::Unverifiable("COORDINATOR_NOT_AVAILABLE"))
        }
        Err(_) => Err(TxnRefusal::Unverifiable("COORDINATOR_NOT_AVAILABLE")),
    }
}

/// What this writer appended, in the current generation, that the image may not show yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A transactional batch opened the producer's transaction here.
    Opened(OpenTxn),
    /// A marker closed it.
    Closed,
}

/// A partition writer's transactional state on top of the image: transactions opened and
/// closed by its pending appends, and the markers it appended. Reset (default) on every load
/// or rewind of the writer.
#[derive(Debug, Default, Clone)]
pub struct PartitionTxns {
    pending: HashMap<i64, Pending>,
    /// Markers appended and not yet seen committed (a handful: the transactions completing).
    markers: Vec<OwedMarker>,
}

impl PartitionTxns {
    /// The producer's open transaction on this partition: the pending appends' view, else the
    /// image's (`committed`).
    pub fn open(&self, producer_id: i64, committed: Option<OpenTxn>) -> Option<OpenTxn> {
        match self.pending.get(&producer_id) {
            Some(Pending::Opened(t)) => Some(*t),
            Some(Pending::Closed) => None,
            None => committed,
        }
    }

    /// A transactional batch at `base_offset` was appended while no transaction of the producer
    /// was open here: it opens one.
    pub fn opened(&mut self, producer_id: i64, producer_epoch: i16, base_offset: i64) {
        self.pending.insert(producer_id, Pending::Opened(OpenTxn { producer_epoch, first_offset: base_offset }));
    }

    /// The owed markers of the image not yet appended by this writer, in the image's order.
    pub fn unwritten(&mut self, owed: &[OwedMarker]) -> Vec<OwedMarker> {
        // A marker no longer owed was committed (and can never be owed again at that epoch):
        // forget it, so the set stays as small as the markers in flight.
        self.markers.retain(|m| owed.contains(m));
        owed.iter().filter(|m| !self.markers.contains(m)).copied().collect()
    }

    /// `marker` was appended: its transaction is closed here.
    pub fn marked(&mut self, marker: &OwedMarker) {
        self.markers.push(*marker);
        self.pending.insert(marker.producer_id, Pending::Closed);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests race the marker task against real time
pub(crate) mod wal_tests;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use skiff_controller::transactions::{TxnStatus, TxnVersion};
    use uuid::Uuid;

    use super::*;

    fn state(status: TxnStatus, partitions: &[TxnPartition]) -> TxnState {
        TxnState {
            producer_id: 7,
            producer_epoch: 2,
            prev_producer_id: -1,
            next_producer_id: -1,
            last_epoch: -1,
            timeout_ms: 60_000,
            state: status,
            partitions: partitions.iter().copied().collect::<BTreeSet<_>>(),
            groups: BTreeSet::new(),
            start_ms: 1,
            updated_ms: 1,
            client_version: TxnVersion::Tv1,
        }
    }

    /// Kafka's verification answers, as a produce gets them (RFC §7 rows).
    #[test]
    fn verification_maps_kafkas_coordinator_answers() {
        let p = (Uuid::from_u128(1), 0);
        let q = (Uuid::from_u128(1), 1);
        let ongoing = state(TxnStatus::Ongoing, &[p]);
        assert_eq!(verify(Some(&ongoing), 7, 2, p), Ok(()));
        assert_eq!(verify(Some(&ongoing), 7, 2, q), Err(TxnRefusal::NotInTransaction));
        assert_eq!(verify(Some(&ongoing), 8, 2, p), Err(TxnRefusal::InvalidProducerIdMapping));
        assert_eq!(verify(None, 7, 2, p), Err(TxnRefusal::InvalidProducerIdMapping));
        assert_eq!(verify(Some(&ongoing), 7, 1, p), Err(TxnRefusal::ProducerFenced));
        assert_eq!(verify(Some(&ongoing), 7, 3, p), Err(TxnRefusal::ProducerFenced));
        let preparing = state(TxnStatus::PrepareCommit, &[p]);
        assert_eq!(verify(Some(&preparing), 7, 2, p), Err(TxnRefusal::Unverifiable("CONCURRENT_TRANSACTIONS")));
        // Completed: the partitions were cleared, so a batch after the marker is refused.
        let done = state(TxnStatus::CompleteCommit, &[]);
        assert_eq!(verify(Some(&done), 7, 2, p), Err(TxnRefusal::NotInTransaction));
        assert!(TxnRefusal::NotInTransaction.may_be_stale());
        assert!(!TxnRefusal::Unverifiable("CONCURRENT_TRANSACTIONS").may_be_stale());
    }

    /// Pending appends override the image until the writer reloads; markers are appended once.
    #[test]
    fn pending_opens_closes_and_markers_once() {
        let committed = Some(OpenTxn { producer_epoch: 1, first_offset: 5 });
        let mut t = PartitionTxns::default();
        assert_eq!(t.open(7, committed), committed);
        assert_eq!(t.open(8, None), None);
        t.opened(8, 0, 40);
        assert_eq!(t.open(8, None), Some(OpenTxn { producer_epoch: 0, first_offset: 40 }));

        let m7 = OwedMarker { producer_id: 7, producer_epoch: 1, commit: true, coordinator_epoch: 3, timestamp_ms: 9 };
        let m8 = OwedMarker { producer_id: 8, producer_epoch: 0, commit: false, coordinator_epoch: 3, timestamp_ms: 9 };
        assert_eq!(t.unwritten(&[m7]), vec![m7]);
        t.marked(&m7);
        assert_eq!(t.open(7, committed), None, "closed by the pending marker");
        assert_eq!(t.unwritten(&[m7, m8]), vec![m8], "m7 is in flight");
        t.marked(&m8);
        assert!(t.unwritten(&[m7, m8]).is_empty());
        // m7 committed (no longer owed): forgotten; m8 still in flight.
        assert!(t.unwritten(&[m8]).is_empty());
        assert_eq!(t.markers.len(), 1);
        // TV1: the producer's next transaction at the same epoch owes a marker of its own.
        let next = OwedMarker { timestamp_ms: 10, ..m8 };
        assert_eq!(t.unwritten(&[next]), vec![next]);
        // A rewind resets the writer: every marker still owed is appended again.
        let t = PartitionTxns::default();
        let mut t2 = t.clone();
        assert_eq!(t2.unwritten(&[m8]), vec![m8]);
    }
}
