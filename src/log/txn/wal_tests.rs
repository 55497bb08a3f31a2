//! The WAL with transactions, against a real (single-voter) controller: transactional appends
//! checked against the image, markers appended by the `wal-markers` task once the image owes
//! them, and what the controller makes of both (LSO, aborted index, completion).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use skiff_controller::intent::{Answer, TxnCommand, TxnOp, TxnVersion};
use skiff_controller::transactions::{TxnStatus, shard_for};
use uuid::Uuid;

use super::TxnRefusal;
use crate::broker::{batch, records};
use crate::log::background::tests::{Harness, TestClock, settings};
use crate::log::wal::{AppendError, PartitionKey};

pub(crate) const TXN_ID: &str = "tx-wal";

/// `n` records of a transactional (or, `transactional` false, idempotent) batch.
pub(crate) fn encode(pid: i64, epoch: i16, seq: i32, n: usize, transactional: bool) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// Appends one batch with `txn_id` and waits for it to be committed; the base offset.
async fn append(h: &Harness, key: PartitionKey, records: Bytes, txn_id: Option<&str>) -> Result<i64, AppendError> {
    let headers = batch::validate_produce(&records, 1 << 20).expect("valid batch");
    let (appended, rx) = h.wal.append(key, &records, &headers, None, txn_id).await?;
    if let Some(rx) = rx {
        rx.await.map_err(|_| AppendError::ShuttingDown)??;
    }
    Ok(appended.base_offset)
}

/// A coordinator op on [`TXN_ID`], as the coordinator driver would write it.
pub(crate) async fn op(h: &Harness, op: TxnOp) -> Answer {
    let shard = shard_for(TXN_ID);
    let coordinator_epoch = h.controller.metadata().read(|m| m.txn_shard_epoch(shard));
    let cmd = TxnCommand { transactional_id: TXN_ID.into(), shard, coordinator_epoch, op, limits: Default::default() };
    h.controller.txn(cmd).await.expect("txn op applies")
}

/// Polls the image until `f` holds (bounded: the marker task reacts to the apply at once).
pub(crate) async fn until(h: &Harness, what: &str, f: impl Fn(&skiff_controller::image::MetadataImage) -> bool) {
    for _ in 0..500 {
        if h.controller.metadata().read(&f) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The stored batches of a partition, decoded from object storage.
async fn stored(h: &Harness, key: PartitionKey) -> Vec<Bytes> {
    let chunks = h.controller.metadata().read(|m| {
        m.partition(&key.topic_id, key.partition).map(|p| p.chunks().cloned().collect::<Vec<_>>()).unwrap_or_default()
    });
    let mut out = Vec::new();
    for c in chunks {
        let data = h.storage.get_range(&c.object, c.position..c.position + c.len).await.expect("chunk");
        let mut pos = 0;
        while pos < data.len() {
            let hdr = batch::parse_header(&data[pos..]).expect("batch");
            out.push(data.slice(pos..pos + hdr.size));
            pos += hdr.size;
        }
    }
    out
}

/// One TV1 transaction committed and one aborted on partition 0 (partition 1 never added): the
/// §7 refusals, the markers appended by the leader without anyone asking, the LSO while open
/// and after, the aborted index, and completion of the transaction by the marker's apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_abort_through_the_wal() {
    let h = Harness::start(settings(), TestClock::real()).await;
    let topic_id: Uuid = h.create_topic("t", 2, &[]).await;
    let p0 = PartitionKey { topic_id, partition: 0 };
    let p1 = PartitionKey { topic_id, partition: 1 };
    let Answer::Producer(pe) = op(&h, TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms: 1 }).await
    else {
        panic!("InitProducerId answers a producer id");
    };
    let (pid, epoch) = (pe.producer_id, pe.producer_epoch);

    // A non-transactional batch first, so the transaction does not start at offset 0.
    append(&h, p0, encode(-1, -1, -1, 2, false), None).await.expect("plain batch");

    // Before AddPartitionsToTxn: not in the transaction.
    let r = append(&h, p0, encode(pid, epoch, 0, 3, true), Some(TXN_ID)).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::NotInTransaction))), "{r:?}");
    let r = append(&h, p0, encode(pid, epoch, 0, 3, true), Some("someone-else")).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::InvalidProducerIdMapping))), "{r:?}");

    let partitions = BTreeSet::from([(topic_id, 0)]);
    let add = |now_ms| TxnOp::AddPartitions {
        producer_id: pid,
        producer_epoch: epoch,
        partitions: partitions.clone(),
        version: TxnVersion::Tv1,
        now_ms,
    };
    assert_eq!(op(&h, add(2)).await, Answer::Ok);
    let r = append(&h, p0, encode(pid, epoch - 1, 0, 1, true), Some(TXN_ID)).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::ProducerFenced))), "old epoch: {r:?}");
    let first = append(&h, p0, encode(pid, epoch, 0, 3, true), Some(TXN_ID)).await.expect("in the transaction");
    assert_eq!(first, 2);
    let second = append(&h, p0, encode(pid, epoch, 3, 2, true), Some(TXN_ID)).await.expect("still open");
    assert_eq!(second, 5);
    let r = append(&h, p1, encode(pid, epoch, 0, 1, true), Some(TXN_ID)).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::NotInTransaction))), "p1 was not added: {r:?}");
    let r = append(&h, p0, encode(pid, epoch, 5, 1, false), None).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::ExpectedTransactional { .. }))), "{r:?}");
    // Others' data lands after the open transaction; the LSO stays at its first offset.
    append(&h, p0, encode(-1, -1, -1, 1, false), None).await.expect("plain batch");
    h.controller.metadata().read(|m| {
        let p = m.partition(&topic_id, 0).expect("partition");
        assert_eq!((p.last_stable_offset(), p.high_watermark()), (2, 8));
        assert_eq!(p.open_transaction(pid).map(|t| t.first_offset), Some(2));
    });

    // Commit: the image owes a marker; the marker task appends it, its apply completes the
    // transaction and moves the LSO to the high watermark.
    let end = |commit, now_ms| TxnOp::EndTxn {
        producer_id: pid,
        producer_epoch: epoch,
        commit,
        version: TxnVersion::Tv1,
        now_ms,
    };
    assert_eq!(op(&h, end(true, 3)).await, Answer::Ok);
    until(&h, "the commit to complete", |m| {
        m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteCommit)
    })
    .await;
    h.controller.metadata().read(|m| {
        let p = m.partition(&topic_id, 0).expect("partition");
        assert_eq!((p.last_stable_offset(), p.high_watermark()), (9, 9), "marker at 8");
        assert!(p.owed_markers().is_empty() && p.open_transaction(pid).is_none());
    });
    let batches = stored(&h, p0).await;
    let marker = batches.last().expect("batches");
    let hdr = batch::parse_header(marker).expect("header");
    assert_eq!((hdr.base_offset, hdr.producer_id, hdr.producer_epoch), (8, pid, epoch));
    assert_eq!(
        records::decode_end_txn_marker(marker).expect("marker"),
        Some(records::EndTxnMarker { commit: true, coordinator_epoch: op_epoch(&h) })
    );
    // After its marker, the transaction's batches are refused (the partitions were cleared).
    let r = append(&h, p0, encode(pid, epoch, 5, 1, true), Some(TXN_ID)).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::NotInTransaction))), "{r:?}");

    // A second transaction of the same producer and epoch (TV1), aborted.
    assert_eq!(op(&h, add(4)).await, Answer::Ok);
    let aborted_first = append(&h, p0, encode(pid, epoch, 5, 2, true), Some(TXN_ID)).await.expect("second txn");
    assert_eq!(aborted_first, 9);
    assert_eq!(op(&h, end(false, 5)).await, Answer::Ok);
    until(&h, "the abort to complete", |m| m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteAbort))
        .await;
    h.controller.metadata().read(|m| {
        let p = m.partition(&topic_id, 0).expect("partition");
        assert_eq!((p.last_stable_offset(), p.high_watermark()), (12, 12), "abort marker at 11");
        let aborted = p.aborted_transactions(0..12);
        assert_eq!(aborted.len(), 1, "{aborted:?}");
        assert_eq!((aborted[0].producer_id, aborted[0].first_offset, aborted[0].last_offset), (pid, 9, 11));
    });
    let batches = stored(&h, p0).await;
    let markers: Vec<_> =
        batches.iter().filter_map(|b| records::decode_end_txn_marker(b).expect("decodes")).map(|m| m.commit).collect();
    assert_eq!(markers, vec![true, false], "exactly one marker per transaction");
    h.stop().await;
}

fn op_epoch(h: &Harness) -> i32 {
    h.controller.metadata().read(|m| m.txn_shard_epoch(shard_for(TXN_ID)))
}

/// A leader epoch change between the transaction's data and its EndTxn (the writer reloads from
/// the image): the marker still owed is appended by the new epoch's writer, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_epoch_appends_the_markers_still_owed() {
    let h = Harness::start(settings(), TestClock::real()).await;
    let topic_id: Uuid = h.create_topic("t", 1, &[]).await;
    let p0 = PartitionKey { topic_id, partition: 0 };
    let Answer::Producer(pe) = op(&h, TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms: 1 }).await
    else {
        panic!("InitProducerId answers a producer id");
    };
    let (pid, epoch) = (pe.producer_id, pe.producer_epoch);
    let partitions = BTreeSet::from([(topic_id, 0)]);
    let add = TxnOp::AddPartitions {
        producer_id: pid,
        producer_epoch: epoch,
        partitions,
        version: TxnVersion::Tv1,
        now_ms: 2,
    };
    assert_eq!(op(&h, add).await, Answer::Ok);
    append(&h, p0, encode(pid, epoch, 0, 1, true), Some(TXN_ID)).await.expect("in the transaction");
    // A new leader epoch: the writer reloads from the image before appending the marker.
    h.controller.register_broker(h.registration.clone()).await.expect("re-register");
    let end =
        TxnOp::EndTxn { producer_id: pid, producer_epoch: epoch, commit: false, version: TxnVersion::Tv1, now_ms: 3 };
    assert_eq!(op(&h, end).await, Answer::Ok);
    until(&h, "the abort to complete", |m| m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteAbort))
        .await;
    let markers = stored(&h, p0).await.iter().filter(|b| batch::parse_header(b).is_ok_and(|x| x.is_control())).count();
    assert_eq!(markers, 1);
    h.stop().await;
}

/// TV2 (Produce v12): the leader adds the partition itself; the commit bumps the epoch (the
/// marker carries the new one), after which the old epoch's batches are fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tv2_implicit_add_then_commit_with_an_epoch_bump() {
    let h = Harness::start(settings(), TestClock::real()).await;
    let topic_id: Uuid = h.create_topic("t", 1, &[]).await;
    let p0 = PartitionKey { topic_id, partition: 0 };
    let Answer::Producer(pe) = op(&h, TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms: 1 }).await
    else {
        panic!("InitProducerId answers a producer id");
    };
    let (pid, epoch) = (pe.producer_id, pe.producer_epoch);
    let r = append(&h, p0, encode(pid, epoch, 0, 2, true), Some(TXN_ID)).await;
    assert!(matches!(r, Err(AppendError::Txn(TxnRefusal::NotInTransaction))), "{r:?}");
    let now = 1_000_000;
    let fenced = super::add_partition(&h.controller, TXN_ID, pid, epoch + 1, (topic_id, 0), now).await;
    assert_eq!(fenced, Err(TxnRefusal::ProducerFenced));
    super::add_partition(&h.controller, TXN_ID, pid, epoch, (topic_id, 0), now).await.expect("implicit add");
    assert_eq!(append(&h, p0, encode(pid, epoch, 0, 2, true), Some(TXN_ID)).await.expect("added"), 0);
    let end = TxnOp::EndTxn {
        producer_id: pid,
        producer_epoch: epoch,
        commit: true,
        version: TxnVersion::Tv2,
        now_ms: now + 1,
    };
    assert!(matches!(op(&h, end).await, Answer::Producer(p) if p.producer_epoch == epoch + 1));
    until(&h, "the commit", |m| m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteCommit)).await;
    let marker = stored(&h, p0).await.pop().expect("marker");
    assert_eq!(batch::parse_header(&marker).expect("header").producer_epoch, epoch + 1, "the bumped epoch");
    let r = append(&h, p0, encode(pid, epoch, 2, 1, false), None).await;
    assert!(matches!(r, Err(AppendError::ProducerFenced)), "the old epoch after the marker: {r:?}");
    h.stop().await;
}

/// On a `message.timestamp.type=LogAppendTime` topic the leader stamps the marker with its
/// clock as it stamps data (Kafka's `LogValidator` runs on every batch appended, control batches
/// included), and the producer's committed state keeps what DescribeProducers reports: the
/// last batch's timestamp (the marker's) and the coordinator epoch written in the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_take_the_log_append_time_and_set_the_producer_state() {
    use crate::broker::{Clock, SystemClock};

    let h = Harness::start(settings(), TestClock::real()).await;
    let topic_id: Uuid = h.create_topic("lat", 1, &[("message.timestamp.type", "LogAppendTime")]).await;
    let p0 = PartitionKey { topic_id, partition: 0 };
    let Answer::Producer(pe) = op(&h, TxnOp::InitProducerId { timeout_ms: 60_000, expected: None, now_ms: 1 }).await
    else {
        panic!("InitProducerId answers a producer id");
    };
    let (pid, epoch) = (pe.producer_id, pe.producer_epoch);
    let partitions = BTreeSet::from([(topic_id, 0)]);
    let add = TxnOp::AddPartitions {
        producer_id: pid,
        producer_epoch: epoch,
        partitions,
        version: TxnVersion::Tv1,
        now_ms: 2,
    };
    assert_eq!(op(&h, add).await, Answer::Ok);
    let records = encode(pid, epoch, 0, 2, true);
    let headers = batch::validate_produce(&records, 1 << 20).expect("valid batch");
    let stamp = SystemClock.now_ms();
    let (appended, rx) = h.wal.append(p0, &records, &headers, Some(stamp), Some(TXN_ID)).await.expect("append");
    rx.expect("waits").await.expect("flushed").expect("committed");
    assert_eq!(appended.base_offset, 0);
    let producer = |m: &skiff_controller::image::MetadataImage| {
        let p = m.partition(&topic_id, 0).expect("partition");
        p.producers().producers.get(&pid).map(|e| (e.last_timestamp, e.coordinator_epoch))
    };
    assert_eq!(h.controller.metadata().read(producer), Some((stamp, -1)), "the data batch's (stamped) timestamp");

    // EndTxn at time 3: a CreateTime topic's marker would carry 3; this one carries the append time.
    let before = SystemClock.now_ms();
    let end =
        TxnOp::EndTxn { producer_id: pid, producer_epoch: epoch, commit: true, version: TxnVersion::Tv1, now_ms: 3 };
    assert_eq!(op(&h, end).await, Answer::Ok);
    until(&h, "the commit to complete", |m| {
        m.transaction(TXN_ID).is_some_and(|t| t.state == TxnStatus::CompleteCommit)
    })
    .await;
    let after = SystemClock.now_ms();
    let batches = stored(&h, p0).await;
    let marker = batches.last().expect("batches");
    let hdr = batch::parse_header(marker).expect("header");
    assert!(hdr.is_control() && hdr.is_log_append_time(), "{hdr:?}");
    assert!((before..=after).contains(&hdr.max_timestamp), "{before} <= {} <= {after}", hdr.max_timestamp);
    assert!(batch::verify_crc(marker, &hdr).is_ok(), "the stamp keeps the CRC valid");
    assert_eq!(
        records::decode_end_txn_marker(marker).expect("marker"),
        Some(records::EndTxnMarker { commit: true, coordinator_epoch: op_epoch(&h) })
    );
    assert_eq!(h.controller.metadata().read(producer), Some((hdr.max_timestamp, op_epoch(&h))));
    h.stop().await;
}
