//! `Command::Txn` and the transaction pieces of other commands, applied to a whole
//! [`MetadataState`]: producer id allocation, shard epochs, owed markers, marker rows,
//! KIP-447 offsets, topic deletion, timeouts and snapshots.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::groups::{GroupCommand, GroupOp, OffsetCommit, ShardAssignment};
use crate::metadata::*;
use crate::transactions::*;

const T: Uuid = Uuid::from_u128(7);

fn state() -> MetadataState {
    let mut s = MetadataState::new("c".into());
    s.apply(&Command::RegisterBroker(BrokerRegistration {
        broker_id: 1,
        incarnation: Uuid::nil(),
        host: "h".into(),
        port: 1,
        rack: None,
        fenced: false,
        listeners: Vec::new(),
    }));
    let r = s.apply(&Command::CreateTopic(CreateTopic {
        name: "t".into(),
        topic_id: T,
        partitions: 2,
        configs: BTreeMap::new(),
        assignments: Vec::new(),
    }));
    assert_eq!(r, CommandResult::TopicCreated { topic_id: T });
    s.next_producer_id = 100;
    s
}

fn epoch_of(s: &MetadataState, id: &str) -> i32 {
    s.transactions.shard_epoch(shard_for(id))
}

fn txn(s: &MetadataState, id: &str, op: TxnOp) -> Command {
    Command::Txn(TxnCommand {
        transactional_id: id.into(),
        shard: shard_for(id),
        coordinator_epoch: epoch_of(s, id),
        op,
        limits: TxnLimits::default(),
    })
}

fn init(now_ms: i64) -> TxnOp {
    TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms }
}

fn add(pid: i64, epoch: i16, parts: &[i32], now_ms: i64) -> TxnOp {
    TxnOp::AddPartitions {
        producer_id: pid,
        producer_epoch: epoch,
        partitions: parts.iter().map(|p| (T, *p)).collect(),
        version: TxnVersion::Tv1,
        now_ms,
    }
}

fn end(pid: i64, epoch: i16, commit: bool, now_ms: i64) -> TxnOp {
    TxnOp::EndTxn { producer_id: pid, producer_epoch: epoch, commit, version: TxnVersion::Tv1, now_ms }
}

fn producer(pid: i64, epoch: i16) -> CommandResult {
    CommandResult::Txn(Answer::Producer(ProducerIdAndEpoch { producer_id: pid, producer_epoch: epoch }))
}

/// A transactional batch of `pid` at `[base, last]`.
fn batch(pid: i64, epoch: i16, seq: i32, base: i64, last: i64) -> ProducerBatch {
    ProducerBatch {
        producer_id: pid,
        producer_epoch: epoch,
        first_sequence: seq,
        last_sequence: seq + (last - base) as i32,
        base_offset: base,
        last_offset: last,
        transactional: true,
        max_timestamp: 1_000 + base,
    }
}

fn marker(pid: i64, epoch: i16, commit: bool, offset: i64) -> MarkerRow {
    MarkerRow {
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        offset,
        coordinator_epoch: 0,
        timestamp: 2_000 + offset,
    }
}

/// A one-run commit on `partition` continuing its log.
fn row(s: &MetadataState, partition: i32, last: i64, batches: Vec<ProducerBatch>, markers: Vec<MarkerRow>) -> Command {
    let p = s.partition(&T, partition).expect("partition");
    let base = p.end_offset;
    Command::CommitObject(ObjectCommit {
        key: format!("o-{partition}-{base}"),
        broker_id: 1,
        size_bytes: 100,
        partitions: vec![PartitionAppend {
            topic_id: T,
            partition,
            leader_epoch: p.leader_epoch,
            base_offset: base,
            last_offset: last,
            position: 0,
            len: 100,
            max_timestamp: 0,
            producer_batches: batches,
            markers,
        }],
    })
}

fn status(s: &MetadataState, id: &str) -> TxnStatus {
    s.transactions.get(id).expect("id").state
}

/// InitProducerId takes the metadata counter for a new id (and only then), the index maps the
/// producer id back, and a resubmission changes nothing and gets the same answer.
#[test]
fn init_producer_id_allocates_from_the_counter_and_indexes_the_pid() {
    let mut s = state();
    let first = txn(&s, "tx", init(10));
    assert_eq!(s.apply(&first), producer(100, 0));
    assert_eq!(s.next_producer_id, 101);
    assert_eq!(s.transactions.of_producer(100).map(|(id, _)| id), Some("tx"));
    // Resubmitted after a lost answer: same answer, nothing changes (counter included).
    let before = s.clone();
    assert_eq!(s.apply(&first), producer(100, 0));
    assert_eq!(s, before);
    // A new instance: epoch bump on the same producer id.
    assert_eq!(s.apply(&txn(&s, "tx", init(11))), producer(100, 1));
    assert_eq!(s.next_producer_id, 101);
    // Another id gets the next producer id; an idempotent allocation shares the counter.
    assert_eq!(s.apply(&txn(&s, "other", init(12))), producer(101, 0));
    assert_eq!(s.apply(&Command::AllocateProducerId), CommandResult::ProducerId(102));
    // A refusal changes nothing.
    let before = s.clone();
    let too_long = TxnOp::InitProducerId { timeout_ms: 900_001, expected: None, now_ms: 13 };
    assert!(matches!(
        s.apply(&txn(&s, "third", too_long)),
        CommandResult::Rejected(Rejection::Txn { error: TxnError::InvalidTransactionTimeout, .. })
    ));
    assert_eq!(s, before);
}

/// Stale shard epochs are rejected like group commands; so is a command naming the wrong shard.
#[test]
fn stale_or_wrong_shard_is_rejected() {
    let mut s = state();
    let shard = shard_for("tx");
    s.transactions.shards.insert(shard, ShardAssignment { broker_id: 1, epoch: 3 });
    let before = s.clone();
    let mut cmd = TxnCommand {
        transactional_id: "tx".into(),
        shard,
        coordinator_epoch: 2,
        op: init(10),
        limits: TxnLimits::default(),
    };
    assert!(matches!(
        s.apply(&Command::Txn(cmd.clone())),
        CommandResult::Rejected(Rejection::StaleTxnCoordinator { got: 2, current: 3, .. })
    ));
    cmd.coordinator_epoch = 3;
    cmd.shard = (shard + 1) % TXN_SHARD_COUNT;
    assert!(matches!(s.apply(&Command::Txn(cmd.clone())), CommandResult::Rejected(Rejection::WrongTxnShard { .. })));
    assert_eq!(s, before);
    cmd.shard = shard;
    assert_eq!(s.apply(&Command::Txn(cmd)), producer(100, 0));
}

/// The whole commit path: data opens a transaction (LSO held back), EndTxn pushes an owed
/// marker on every partition, each marker row discharges one, the last completes it.
#[test]
fn commit_pushes_owed_markers_and_the_last_marker_row_completes() {
    let mut s = state();
    s.apply(&row(&s, 0, 4, vec![], vec![])); // non-transactional data at 0..=4
    assert_eq!(s.apply(&txn(&s, "tx", init(10))), producer(100, 0));
    assert_eq!(s.apply(&txn(&s, "tx", add(100, 0, &[0, 1], 11))), CommandResult::Txn(Answer::Ok));
    assert_eq!(s.apply(&row(&s, 0, 7, vec![batch(100, 0, 0, 5, 7)], vec![])), CommandResult::Ok);
    let p0 = s.partition(&T, 0).expect("p0");
    assert_eq!(p0.open_txns.get(&100), Some(&OpenTxn { producer_epoch: 0, first_offset: 5 }));
    assert_eq!((p0.last_stable_offset(), p0.end_offset), (5, 8));
    // A second batch of the same transaction keeps the first offset.
    s.apply(&row(&s, 0, 9, vec![batch(100, 0, 3, 8, 9)], vec![]));
    assert_eq!(s.partition(&T, 0).expect("p0").last_stable_offset(), 5);

    assert_eq!(s.apply(&txn(&s, "tx", end(100, 0, true, 12))), CommandResult::Txn(Answer::Ok));
    assert_eq!(status(&s, "tx"), TxnStatus::PrepareCommit);
    assert_eq!(epoch_of(&s, "tx"), 1, "the shard was placed on broker 1");
    for p in 0..2 {
        let owed = &s.partition(&T, p).expect("p").owed_markers;
        assert_eq!(
            owed,
            &vec![OwedMarker {
                producer_id: 100,
                producer_epoch: 0,
                commit: true,
                coordinator_epoch: epoch_of(&s, "tx"),
                timestamp_ms: 12
            }]
        );
    }
    // The EndTxn resubmitted: its answer, no second marker.
    let before = s.clone();
    assert_eq!(s.apply(&txn(&s, "tx", end(100, 0, true, 12))), CommandResult::Txn(Answer::Ok));
    assert_eq!(s, before);

    // Partition 1 (no data) writes its marker first: still PrepareCommit.
    assert_eq!(s.apply(&row(&s, 1, 0, vec![], vec![marker(100, 0, true, 0)])), CommandResult::Ok);
    assert_eq!(status(&s, "tx"), TxnStatus::PrepareCommit);
    assert!(s.partition(&T, 1).expect("p1").owed_markers.is_empty());
    // Partition 0's marker completes the transaction.
    assert_eq!(s.apply(&row(&s, 0, 10, vec![], vec![marker(100, 0, true, 10)])), CommandResult::Ok);
    assert_eq!(status(&s, "tx"), TxnStatus::CompleteCommit);
    let p0 = s.partition(&T, 0).expect("p0");
    assert!(p0.open_txns.is_empty() && p0.owed_markers.is_empty() && p0.aborted.is_empty());
    assert_eq!(p0.last_stable_offset(), 11);
    assert!(s.transactions.get("tx").expect("tx").partitions.is_empty());
}

/// An abort records the aborted transaction with Kafka's LSO at the marker; a marker and the
/// producer's next transaction in one run apply in offset order.
#[test]
fn abort_enters_the_aborted_index() {
    let mut s = state();
    s.apply(&txn(&s, "a", init(10)));
    s.apply(&txn(&s, "b", init(10)));
    s.apply(&txn(&s, "a", add(100, 0, &[0], 11)));
    s.apply(&txn(&s, "b", add(101, 0, &[0], 11)));
    // a: 0..=1, b: 2..=3 (b still open when a aborts).
    s.apply(&row(&s, 0, 3, vec![batch(100, 0, 0, 0, 1), batch(101, 0, 0, 2, 3)], vec![]));
    s.apply(&txn(&s, "a", end(100, 0, false, 12)));
    // The marker at 4, then a's next transaction (added again) in the same run at 5.
    s.apply(&txn(&s, "a", add(100, 0, &[0], 13)));
    let r = s.apply(&txn(&s, "a", add(100, 0, &[0], 13)));
    assert!(matches!(r, CommandResult::Rejected(Rejection::Txn { error: TxnError::ConcurrentTransactions, .. })));
    let cmd = row(&s, 0, 5, vec![batch(100, 0, 2, 5, 5)], vec![marker(100, 0, false, 4)]);
    assert_eq!(s.apply(&cmd), CommandResult::Ok);
    assert_eq!(status(&s, "a"), TxnStatus::CompleteAbort);
    let p0 = s.partition(&T, 0).expect("p0");
    let aborted: Vec<AbortedTxn> = p0.aborted.iter().copied().collect();
    // b (first offset 2) is still open: Kafka's lso_at_marker is 2.
    assert_eq!(aborted, vec![AbortedTxn { producer_id: 100, first_offset: 0, last_offset: 4, lso_at_marker: 2 }]);
    assert_eq!(p0.open_txns.get(&100), Some(&OpenTxn { producer_epoch: 0, first_offset: 5 }));
    assert_eq!(p0.last_stable_offset(), 2);
    let image = crate::image::MetadataImage::from(s.clone());
    let view = image.partition(&T, 0).expect("view");
    assert_eq!(view.aborted_transactions(0..6).iter().map(|a| a.producer_id).collect::<Vec<_>>(), vec![100]);
    assert!(view.aborted_transactions(5..6).is_empty());
    // Retention past the marker drops the entry with its data.
    s.apply(&Command::AdvanceLogStart { topic_id: T, partition: 0, offset: 4 });
    assert_eq!(s.partition(&T, 0).expect("p0").aborted.len(), 1, "the marker is still in the log");
    s.apply(&Command::AdvanceLogStart { topic_id: T, partition: 0, offset: 5 });
    assert!(s.partition(&T, 0).expect("p0").aborted.is_empty());
}

/// A marker row nobody owes (wrong producer, epoch, result, offset outside the run, twice)
/// rejects the whole commit.
#[test]
fn a_marker_not_owed_rejects_the_commit() {
    let mut s = state();
    s.apply(&txn(&s, "tx", init(10)));
    s.apply(&txn(&s, "tx", add(100, 0, &[0], 11)));
    s.apply(&txn(&s, "tx", end(100, 0, true, 12)));
    let before = s.clone();
    for (what, markers, last) in [
        ("other producer", vec![marker(7, 0, true, 0)], 0),
        ("other epoch", vec![marker(100, 1, true, 0)], 0),
        ("other result", vec![marker(100, 0, false, 0)], 0),
        ("outside the run", vec![marker(100, 0, true, 3)], 2),
        ("twice", vec![marker(100, 0, true, 0), marker(100, 0, true, 1)], 1),
    ] {
        let r = s.apply(&row(&s, 0, last, vec![], markers));
        assert!(matches!(r, CommandResult::Rejected(Rejection::MarkerNotOwed { .. })), "{what}: {r:?}");
        assert_eq!(s, before, "{what}");
    }
    // Nothing owed on partition 1.
    let r = s.apply(&row(&s, 1, 0, vec![], vec![marker(100, 0, true, 0)]));
    assert!(matches!(r, CommandResult::Rejected(Rejection::MarkerNotOwed { .. })));
}

/// Deleting a topic discharges its owed markers: a transaction owing nothing else completes.
#[test]
fn deleting_a_topic_discharges_its_markers() {
    let mut s = state();
    s.apply(&txn(&s, "tx", init(10)));
    s.apply(&txn(&s, "tx", add(100, 0, &[0, 1], 11)));
    s.apply(&txn(&s, "tx", end(100, 0, false, 12)));
    s.apply(&row(&s, 1, 0, vec![], vec![marker(100, 0, false, 0)]));
    assert_eq!(status(&s, "tx"), TxnStatus::PrepareAbort);
    assert_eq!(s.apply(&Command::DeleteTopic { name: "t".into() }), CommandResult::Ok);
    assert_eq!(status(&s, "tx"), TxnStatus::CompleteAbort);
}

/// KIP-447: TxnOffsetCommit needs the group in the Ongoing transaction; the offsets stay pending
/// (require_stable sees them) until the commit makes them committed offsets; an abort drops them.
#[test]
fn transactional_offsets_resolve_with_the_transaction() {
    let mut s = state();
    s.apply(&txn(&s, "tx", init(10)));
    let group_epoch = s.groups.shard_epoch(crate::groups::shard_for("g"));
    let commit_offsets = |offset: i64| {
        Command::Group(GroupCommand {
            group_id: "g".into(),
            coordinator_epoch: group_epoch,
            op: GroupOp::TxnOffsetCommit {
                transactional_id: "tx".into(),
                producer_id: 100,
                producer_epoch: 0,
                offsets: vec![OffsetCommit {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: 5,
                }],
            },
        })
    };
    // Without AddOffsetsToTxn: refused.
    let r = s.apply(&commit_offsets(42));
    assert!(
        matches!(r, CommandResult::Rejected(Rejection::Txn { error: TxnError::TransactionAbortable, .. })),
        "{r:?}"
    );
    let add_offsets = |s: &MetadataState, now_ms| {
        txn(
            s,
            "tx",
            TxnOp::AddOffsets {
                producer_id: 100,
                producer_epoch: 0,
                group: "g".into(),
                version: TxnVersion::Tv1,
                now_ms,
            },
        )
    };
    assert_eq!(s.apply(&add_offsets(&s, 11)), CommandResult::Txn(Answer::Ok));
    assert_eq!(s.apply(&commit_offsets(42)), CommandResult::Ok);
    assert!(s.groups.has_pending_offset("g", "t", 0));
    assert!(s.groups.offset("g", "t", 0).is_none(), "not committed before the transaction");
    // A stale group coordinator is refused before anything else.
    let moved = ShardAssignment { broker_id: 1, epoch: group_epoch + 1 };
    let saved = s.groups.shards.insert(crate::groups::shard_for("g"), moved).expect("assigned shard");
    assert!(matches!(s.apply(&commit_offsets(43)), CommandResult::Rejected(Rejection::StaleCoordinator { .. })));
    s.groups.shards.insert(crate::groups::shard_for("g"), saved);
    // Commit: only groups, no partition: completes in the Prepare.
    assert_eq!(s.apply(&txn(&s, "tx", end(100, 0, true, 12))), CommandResult::Txn(Answer::Ok));
    assert_eq!(status(&s, "tx"), TxnStatus::CompleteCommit);
    assert!(!s.groups.has_pending_offset("g", "t", 0));
    assert_eq!(s.groups.offset("g", "t", 0).map(|o| o.offset), Some(42));
    // Next transaction aborted: its offsets vanish, the committed one stays.
    s.apply(&add_offsets(&s, 13));
    s.apply(&commit_offsets(50));
    s.apply(&txn(&s, "tx", end(100, 0, false, 14)));
    assert!(!s.groups.has_pending_offset("g", "t", 0));
    assert_eq!(s.groups.offset("g", "t", 0).map(|o| o.offset), Some(42));
    // A deleted topic's pending offsets go with it.
    s.apply(&add_offsets(&s, 15));
    s.apply(&commit_offsets(60));
    assert!(s.groups.has_pending_offset("g", "t", 0));
    s.apply(&Command::DeleteTopic { name: "t".into() });
    assert!(!s.groups.has_pending_offset("g", "t", 0));
    s.apply(&txn(&s, "tx", end(100, 0, false, 16)));
    // A fenced producer epoch is refused.
    s.apply(&txn(&s, "tx", init(17)));
    s.apply(&add_offsets(&s, 18));
    let r = s.apply(&commit_offsets(60));
    assert!(matches!(r, CommandResult::Rejected(Rejection::Txn { error: TxnError::ProducerFenced, .. })), "{r:?}");
}

/// The Timeout op fences and aborts an expired Ongoing transaction: markers at epoch+1.
#[test]
fn timeout_aborts_with_a_bumped_epoch() {
    let mut s = state();
    s.apply(&txn(&s, "tx", init(10)));
    s.apply(&txn(&s, "tx", add(100, 0, &[0], 1_000)));
    // Not yet expired: no-op.
    let before = s.clone();
    assert_eq!(s.apply(&txn(&s, "tx", TxnOp::Timeout { now_ms: 61_000 })), CommandResult::Txn(Answer::NoClient));
    assert_eq!(s, before);
    assert_eq!(s.apply(&txn(&s, "tx", TxnOp::Timeout { now_ms: 61_001 })), CommandResult::Txn(Answer::NoClient));
    assert_eq!(status(&s, "tx"), TxnStatus::PrepareAbort);
    let owed = &s.partition(&T, 0).expect("p0").owed_markers;
    assert_eq!((owed[0].producer_epoch, owed[0].commit), (1, false));
    // The old epoch is fenced.
    let r = s.apply(&txn(&s, "tx", end(100, 0, true, 61_002)));
    assert!(matches!(r, CommandResult::Rejected(Rejection::Txn { error: TxnError::ProducerFenced, .. })));
    // The marker carries epoch 1 and bumps the partition's producer epoch.
    s.apply(&row(&s, 0, 0, vec![], vec![marker(100, 1, false, 0)]));
    assert_eq!(status(&s, "tx"), TxnStatus::CompleteAbort);
    assert_eq!(s.partition(&T, 0).expect("p0").producers.producers[&100].epoch, 1);
    // Expire removes an idle id and its index entry.
    let later = 61_001 + DEFAULT_ID_EXPIRATION_MS + 1;
    assert_eq!(s.apply(&txn(&s, "tx", TxnOp::Expire { now_ms: later })), CommandResult::Txn(Answer::NoClient));
    assert!(s.transactions.get("tx").is_none());
    assert!(s.transactions.of_producer(100).is_none());
}

/// Snapshots keep transactions, shards, partition transaction state and pending offsets, and
/// rebuild the producer index; snapshots and commands from before transactions still load.
#[test]
fn snapshot_round_trip_rebuilds_the_producer_index() {
    let mut s = state();
    s.transactions.shards.insert(shard_for("tx"), ShardAssignment { broker_id: 1, epoch: 0 });
    s.apply(&txn(&s, "tx", init(10)));
    s.apply(&txn(&s, "tx", add(100, 0, &[0], 11)));
    s.apply(&row(&s, 0, 1, vec![batch(100, 0, 0, 0, 1)], vec![]));
    s.apply(&txn(&s, "tx", end(100, 0, false, 12)));
    s.apply(&txn(&s, "done", init(13)));
    let json = serde_json::to_value(&s).expect("serialize");
    assert!(json["transactions"].get("by_producer").is_none(), "the index is derived, not stored");
    let back: MetadataState = serde_json::from_value(json.clone()).expect("deserialize");
    assert_eq!(back, s);
    assert_eq!(back.transactions.of_producer(100).map(|(id, _)| id), Some("tx"));
    assert_eq!(back.transactions.of_producer(101).map(|(id, _)| id), Some("done"));
    // The abort's marker still applies after the load.
    let mut back = back;
    assert_eq!(back.apply(&row(&back, 0, 2, vec![], vec![marker(100, 0, false, 2)])), CommandResult::Ok);
    assert_eq!(status(&back, "tx"), TxnStatus::CompleteAbort);
    // A snapshot from before transactions: no key anywhere.
    let mut old = json;
    old.as_object_mut().expect("state").remove("transactions");
    for p in old["topics"]["t"]["partitions"].as_array_mut().expect("partitions") {
        let p = p.as_object_mut().expect("partition");
        for k in ["open_txns", "owed_markers", "aborted"] {
            p.remove(k);
        }
    }
    let loaded: MetadataState = serde_json::from_value(old).expect("old snapshot loads");
    assert!(loaded.transactions.ids.is_empty());
    // Untouched partitions write no transaction keys.
    let json = serde_json::to_value(&s).expect("serialize");
    assert!(json["topics"]["t"]["partitions"][1].get("owed_markers").is_none());
    // Commands round-trip; a ProducerBatch written before transactions is not transactional.
    for cmd in [txn(&s, "tx", init(20)), row(&s, 0, 5, vec![batch(100, 0, 0, 3, 5)], vec![marker(100, 0, true, 4)])] {
        let back: Command = serde_json::from_str(&serde_json::to_string(&cmd).expect("ser")).expect("de");
        assert_eq!(back, cmd);
    }
    let old_batch =
        r#"{"producer_id":1,"producer_epoch":0,"first_sequence":0,"last_sequence":0,"base_offset":0,"last_offset":0}"#;
    let b: ProducerBatch = serde_json::from_str(old_batch).expect("old batch");
    assert!(!b.transactional);
    assert_eq!(b.max_timestamp, -1);
}

/// DescribeProducers' `last_timestamp` and `coordinator_epoch` (Kafka's `ProducerStateEntry`):
/// a data batch sets the timestamp, a marker sets both (its EndTxn time and the coordinator
/// epoch written in it); state and rows from before they were kept read -1.
#[test]
fn producer_state_keeps_last_timestamp_and_coordinator_epoch() {
    let mut s = state();
    s.transactions.shards.insert(shard_for("tx"), ShardAssignment { broker_id: 1, epoch: 4 });
    s.apply(&txn(&s, "tx", init(10)));
    s.apply(&txn(&s, "tx", add(100, 0, &[0], 11)));
    let entry = |s: &MetadataState| s.partition(&T, 0).expect("p0").producers.producers.get(&100).cloned();
    assert_eq!(entry(&s), None);
    s.apply(&row(&s, 0, 1, vec![batch(100, 0, 0, 0, 1)], vec![]));
    let e = entry(&s).expect("entry");
    assert_eq!((e.last_timestamp, e.coordinator_epoch), (1_000, -1), "a batch: its max timestamp, no marker yet");
    s.apply(&txn(&s, "tx", end(100, 0, true, 12)));
    let owed = s.partition(&T, 0).expect("p0").owed_markers[0];
    assert_eq!(owed.coordinator_epoch, 4);
    let m = MarkerRow { coordinator_epoch: owed.coordinator_epoch, timestamp: 12, ..marker(100, 0, true, 2) };
    assert_eq!(s.apply(&row(&s, 0, 2, vec![], vec![m])), CommandResult::Ok);
    let e = entry(&s).expect("entry");
    assert_eq!((e.last_timestamp, e.coordinator_epoch), (12, 4), "the marker's time and coordinator epoch");
    // The next transaction's batch moves the timestamp and keeps the coordinator epoch.
    s.apply(&txn(&s, "tx", add(100, 0, &[0], 13)));
    s.apply(&row(&s, 0, 3, vec![batch(100, 0, 2, 3, 3)], vec![]));
    let e = entry(&s).expect("entry");
    assert_eq!((e.last_timestamp, e.coordinator_epoch), (1_003, 4));
    // Snapshots keep them; an entry and a marker row written before they existed read -1.
    let json = serde_json::to_value(&s).expect("serialize");
    let back: MetadataState = serde_json::from_value(json.clone()).expect("deserialize");
    assert_eq!(back, s);
    let mut old = json;
    let p0 = &mut old["topics"]["t"]["partitions"][0]["producers"]["producers"]["100"];
    let p0 = p0.as_object_mut().expect("entry");
    p0.remove("last_timestamp");
    p0.remove("coordinator_epoch");
    let loaded: MetadataState = serde_json::from_value(old).expect("old snapshot loads");
    let e = entry(&loaded).expect("entry");
    assert_eq!((e.epoch, e.last_timestamp, e.coordinator_epoch), (0, -1, -1));
    let old_marker = r#"{"producer_id":1,"producer_epoch":0,"commit":true,"offset":3,"coordinator_epoch":2}"#;
    let m: MarkerRow = serde_json::from_str(old_marker).expect("old marker row");
    assert_eq!(m.timestamp, -1);
}
