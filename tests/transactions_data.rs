//! The partition data path of transactions (issue #13, RFC 0004 §4-§7), black-box with the raw
//! protocol client: produce validation of transactional batches with Kafka's exact codes,
//! markers appended by the partition leader, read_committed fetches bounded by the last stable
//! offset with the aborted-transactions list, control batches served, ListOffsets
//! read_committed.
//!
//! Before #13 every transactional batch was refused with INVALID_RECORD (87), whatever the
//! request, and read_committed fetches returned everything up to the high watermark.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FetchRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListOffsetsRequest, ProduceRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use support::SkiffProcess;
use support::client::{Client, FETCH_VERSION, LATEST, topic_name};
use support::cluster::{Cluster, ClusterSpec, NodeRef};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Kafka error codes these tests expect.
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const TRANSACTION_ABORTABLE: i16 = 120;

/// A transactional batch of `n` records from sequence `seq`, as a transactional producer
/// encodes it.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("{tag}-k{i}"))),
            value: Some(Bytes::from(format!("{tag}-v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// One Produce request (acks=-1) of `version` with `transactional_id`, one batch per partition.
async fn produce(
    c: &mut Client,
    version: i16,
    transactional_id: Option<&str>,
    topic: &str,
    batches: &[(i32, Bytes)],
) -> anyhow::Result<Vec<PartitionProduceResponse>> {
    let partition_data = batches
        .iter()
        .map(|(p, b)| PartitionProduceData::default().with_index(*p).with_records(Some(b.clone())))
        .collect();
    let req = ProduceRequest::default()
        .with_transactional_id(transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data),
        ]);
    let resp = c.send(&req, version).await?;
    let parts = resp.responses.into_iter().next().context("no topic in the produce response")?.partition_responses;
    ensure!(parts.len() == batches.len(), "{} partition responses for {} batches", parts.len(), batches.len());
    Ok(parts)
}

fn codes(parts: &[PartitionProduceResponse]) -> Vec<i16> {
    parts.iter().map(|p| p.error_code).collect()
}

/// Kafka's `KafkaApis.handleProduceRequest`: transactional records in a request without a
/// transactional id get TRANSACTIONAL_ID_AUTHORIZATION_FAILED on every partition (also one whose
/// batch is not transactional), and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_records_need_a_transactional_id() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("t", 2).await?;
        let (pid, epoch) = c.init_producer_id().await?;
        let plain =
            support::client::encode_batch(&[support::client::TestRecord::new("k", "v", 1)], Compression::None, None);
        for version in [3, 9, 11] {
            let parts =
                produce(&mut c, version, None, "t", &[(0, txn_batch(pid, epoch, 0, 2, "a")), (1, plain.clone())])
                    .await?;
            ensure!(
                codes(&parts) == [TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 2],
                "Produce v{version}: {parts:?} (expected 53 on both partitions)"
            );
        }
        for p in 0..2 {
            let (_, end) = c.fetch_all("t", p, 0).await?;
            ensure!(end == 0, "partition {p} has {end} records after refused produces");
        }
        anyhow::Ok(())
    })
    .await
    .context("test timed out")??;
    Ok(())
}

/// A transactional batch whose transactional id the coordinator does not know (or that maps to
/// another producer) is refused by the leader's verification with INVALID_PRODUCER_ID_MAPPING at
/// every Produce version, as Kafka's `handleVerifyPartitionsInTransaction` answers; the broker
/// logs why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_batch_of_an_unknown_transactional_id_is_refused() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("t", 1).await?;
        let (pid, epoch) = c.init_producer_id().await?;
        for version in [3, 10, 11] {
            let parts = produce(&mut c, version, Some("nobody"), "t", &[(0, txn_batch(pid, epoch, 0, 1, "x"))]).await?;
            ensure!(codes(&parts) == [INVALID_PRODUCER_ID_MAPPING], "Produce v{version}: {parts:?}");
        }
        let (_, end) = c.fetch_all("t", 0, 0).await?;
        ensure!(end == 0, "{end} records appended");
        anyhow::Ok(())
    })
    .await
    .context("test timed out")??;
    let log = std::fs::read_to_string(skiff.stderr_path()).unwrap_or_default();
    ensure!(log.contains("transactional produce refused"), "the refusal is not logged");
    Ok(())
}

// ---- end to end with the transaction coordinator (raw protocol, as a TV1 client speaks it) ----

const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// Sends `req` until its answer (`code` of it) is not a retriable coordinator code (bounded:
/// 200 tries, 25 ms apart), as a client retries; the last answer.
async fn send_retrying<R: Request>(
    c: &mut Client,
    req: &R,
    version: i16,
    code: impl Fn(&R::Response) -> i16,
) -> anyhow::Result<(i16, R::Response)> {
    for _ in 0..200 {
        let r = c.send(req, version).await?;
        let k = code(&r);
        if ![NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS]
            .contains(&k)
        {
            return Ok((k, r));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("API {} still retriable after 200 tries", R::KEY)
}

/// FindCoordinator (key type 1) then InitProducerId with the transactional id: (pid, epoch).
async fn init_transactions(c: &mut Client, id: &str) -> anyhow::Result<(i64, i16)> {
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_string(id.to_string())).with_key_type(1);
    let (code, _) = send_retrying(c, &find, 3, |r| r.error_code).await?;
    ensure!(code == 0, "FindCoordinator(transaction) answered {code}");
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let (code, r) = send_retrying(c, &init, 4, |r| r.error_code).await?;
    ensure!(code == 0, "InitProducerId({id}) answered {code}");
    Ok((r.producer_id.0, r.producer_epoch))
}

/// AddPartitionsToTxn v3 for `partitions` of `topic`.
async fn add_partitions(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default().with_name(topic_name(topic)).with_partitions(partitions.to_vec()),
        ]);
    let (code, _) = send_retrying(c, &req, 3, |r| {
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code))
            .find(|&c| c != 0)
            .unwrap_or(0)
    })
    .await?;
    ensure!(code == 0, "AddPartitionsToTxn answered {code}");
    Ok(())
}

async fn end_txn(c: &mut Client, id: &str, (pid, epoch): (i64, i16), commit: bool) -> anyhow::Result<()> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let (code, _) = send_retrying(c, &req, 3, |r| r.error_code).await?;
    ensure!(code == 0, "EndTxn(commit={commit}) answered {code}");
    Ok(())
}

/// One Fetch of one partition at `isolation`.
async fn fetch(c: &mut Client, topic: &str, offset: i64, isolation: i8) -> anyhow::Result<PartitionData> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(8 << 20)
        .with_isolation_level(isolation)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(4 << 20),
        ])]);
    let resp = c.send(&req, FETCH_VERSION).await?;
    let p = resp.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next()).context("no partition")?;
    ensure!(p.error_code == 0, "fetch error {}", p.error_code);
    Ok(p)
}

/// ListOffsets latest at `isolation` (v7).
async fn latest(c: &mut Client, topic: &str, isolation: i8) -> anyhow::Result<i64> {
    let req =
        ListOffsetsRequest::default().with_replica_id((-1).into()).with_isolation_level(isolation).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(LATEST)]),
        ]);
    let resp = c.send(&req, 7).await?;
    let p = resp.topics.into_iter().next().and_then(|t| t.partitions.into_iter().next()).context("no partition")?;
    ensure!(p.error_code == 0, "ListOffsets error {}", p.error_code);
    Ok(p.offset)
}

/// A fetched batch: (base offset, producer id, transactional, control, records).
type Batch = (i64, i64, bool, bool, Vec<Record>);

fn batches(data: Option<Bytes>) -> anyhow::Result<Vec<Batch>> {
    let mut data = data.unwrap_or_default();
    let mut out = Vec::new();
    while data.len() >= 12 {
        let len = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        let size = 12 + usize::try_from(len)?;
        if data.len() < size {
            break;
        }
        let mut one = data.split_to(size);
        let base = i64::from_be_bytes(one[0..8].try_into().expect("8 bytes"));
        let attributes = i16::from_be_bytes(one[21..23].try_into().expect("2 bytes"));
        let pid = i64::from_be_bytes(one[43..51].try_into().expect("8 bytes"));
        let records = RecordBatchDecoder::decode(&mut one).context("decode")?.records;
        out.push((base, pid, attributes & 0x10 != 0, attributes & 0x20 != 0, records));
    }
    Ok(out)
}

/// What a read_committed consumer keeps (Kafka's `CompletedFetch` with the aborted list): no
/// control batch, no batch of a producer inside one of its aborted transactions (from the
/// aborted transaction's first offset to its abort marker).
fn committed_view(p: &PartitionData) -> anyhow::Result<Vec<i64>> {
    let mut aborted: Vec<(i64, i64)> = p
        .aborted_transactions
        .as_ref()
        .context("read_committed answers carry the aborted list")?
        .iter()
        .map(|a| (a.first_offset, a.producer_id.0))
        .collect();
    aborted.sort();
    let mut active = std::collections::HashSet::new();
    let mut next = 0;
    let mut kept = Vec::new();
    for (base, pid, transactional, control, records) in batches(p.records.clone())? {
        while next < aborted.len() && aborted[next].0 <= base {
            active.insert(aborted[next].1);
            next += 1;
        }
        if control {
            let abort = records.first().and_then(|r| r.key.as_ref()).is_some_and(|k| k.len() >= 4 && k[3] == 0);
            if abort {
                active.remove(&pid);
            }
            continue;
        }
        if transactional && active.contains(&pid) {
            continue;
        }
        kept.extend(records.iter().map(|r| r.offset));
    }
    Ok(kept)
}

/// Polls read_committed until the LSO reaches the high watermark (the markers applied).
async fn until_stable(c: &mut Client, topic: &str) -> anyhow::Result<PartitionData> {
    for _ in 0..400 {
        let p = fetch(c, topic, 0, READ_COMMITTED).await?;
        if p.last_stable_offset == p.high_watermark {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the LSO never reached the high watermark")
}

fn plain(n: usize, tag: &str) -> Bytes {
    let records: Vec<support::client::TestRecord> =
        (0..n).map(|i| support::client::TestRecord::new(format!("{tag}{i}"), "p", 1)).collect();
    support::client::encode_batch(&records, Compression::None, None)
}

/// Begin, produce, commit; begin, produce, abort: read_committed stops at the LSO while a
/// transaction is open, then sees exactly the committed records with the aborted list it needs;
/// read_uncommitted sees everything; both get the markers; ListOffsets follows the isolation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_exactly_the_committed_records() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("t", 1).await?;
        ensure!(c.produce("t", 0, plain(2, "a")).await?.base_offset == 0);
        let id = "e2e";
        let pe = init_transactions(&mut c, id).await?;
        add_partitions(&mut c, id, pe, "t", &[0]).await?;
        let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 0, 3, "c"))]).await?;
        ensure!(codes(&r) == [0] && r[0].base_offset == 2, "transactional produce: {r:?}");
        ensure!(c.produce("t", 0, plain(1, "b")).await?.base_offset == 5);

        // Open transaction at 2: read_committed stops there.
        let p = fetch(&mut c, "t", 0, READ_COMMITTED).await?;
        ensure!((p.high_watermark, p.last_stable_offset) == (6, 2), "hwm/lso {p:?}");
        let offsets: Vec<i64> = batches(p.records.clone())?.iter().map(|b| b.0).collect();
        ensure!(offsets == [0], "read_committed below the LSO only: {offsets:?}");
        ensure!(p.aborted_transactions.as_deref() == Some(&[][..]), "{:?}", p.aborted_transactions);
        let p = fetch(&mut c, "t", 3, READ_COMMITTED).await?;
        ensure!(batches(p.records)?.is_empty(), "past the LSO: nothing yet");
        let p = fetch(&mut c, "t", 0, READ_UNCOMMITTED).await?;
        ensure!(p.last_stable_offset == 2 && p.aborted_transactions.is_none());
        let offsets: Vec<i64> = batches(p.records)?.iter().map(|b| b.0).collect();
        ensure!(offsets == [0, 2, 5], "read_uncommitted to the high watermark: {offsets:?}");
        ensure!(latest(&mut c, "t", READ_COMMITTED).await? == 2);
        ensure!(latest(&mut c, "t", READ_UNCOMMITTED).await? == 6);

        // Commit: the leader appends the marker at 6 and the LSO moves to the end.
        end_txn(&mut c, id, pe, true).await?;
        let p = until_stable(&mut c, "t").await?;
        ensure!(p.high_watermark == 7, "commit marker at 6: {p:?}");
        let all = batches(p.records.clone())?;
        let marker = all.last().context("batches")?;
        ensure!(marker.0 == 6 && marker.2 && marker.3 && marker.1 == pe.0, "the commit marker is served: {marker:?}");
        ensure!(committed_view(&p)? == [0, 1, 2, 3, 4, 5]);

        // Abort the producer's next transaction (TV1: same epoch).
        add_partitions(&mut c, id, pe, "t", &[0]).await?;
        let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 3, 2, "x"))]).await?;
        ensure!(codes(&r) == [0] && r[0].base_offset == 7, "{r:?}");
        end_txn(&mut c, id, pe, false).await?;
        let p = until_stable(&mut c, "t").await?;
        ensure!(p.high_watermark == 10, "abort marker at 9: {p:?}");
        let aborted: Vec<(i64, i64)> =
            p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
        ensure!(aborted == [(pe.0, 7)], "aborted list {aborted:?}");
        ensure!(committed_view(&p)? == [0, 1, 2, 3, 4, 5], "exactly the committed records");
        // A fetch inside the aborted transaction still gets it; one after it does not.
        let p = fetch(&mut c, "t", 8, READ_COMMITTED).await?;
        ensure!(p.aborted_transactions.as_ref().is_some_and(|a| a.len() == 1), "{p:?}");
        let p = fetch(&mut c, "t", 10, READ_COMMITTED).await?;
        ensure!(p.aborted_transactions.as_ref().is_some_and(|a| a.is_empty()), "{p:?}");
        ensure!(latest(&mut c, "t", READ_COMMITTED).await? == 10);
        let p = fetch(&mut c, "t", 0, READ_UNCOMMITTED).await?;
        let offsets: Vec<i64> = batches(p.records)?.iter().map(|b| b.0).collect();
        ensure!(offsets == [0, 2, 5, 6, 7, 9], "read_uncommitted sees data and markers: {offsets:?}");
        anyhow::Ok(())
    })
    .await
    .context("test timed out")??;
    Ok(())
}

/// The §7 refusals a transactional producer can meet, with Kafka's codes per Produce version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_refusals_answer_kafkas_codes() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("t", 2).await?;
        let id = "refusals";
        let pe = init_transactions(&mut c, id).await?;
        add_partitions(&mut c, id, pe, "t", &[0]).await?;
        // Partition 1 is not in the transaction.
        for (version, expected) in [(3, INVALID_TXN_STATE), (10, INVALID_TXN_STATE), (11, TRANSACTION_ABORTABLE)] {
            let r = produce(&mut c, version, Some(id), "t", &[(1, txn_batch(pe.0, pe.1, 0, 1, "n"))]).await?;
            ensure!(codes(&r) == [expected], "Produce v{version}: {r:?}");
        }
        // In the transaction: accepted; then an idempotent batch of the same producer is not.
        let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 0, 2, "y"))]).await?;
        ensure!(codes(&r) == [0], "{r:?}");
        let idem = support::client::encode_batch(
            &[support::client::TestRecord::new("k", "v", 1)],
            Compression::None,
            Some(support::client::Idempotence { producer_id: pe.0, producer_epoch: pe.1, base_sequence: 2 }),
        );
        let r = produce(&mut c, 9, Some(id), "t", &[(0, idem)]).await?;
        ensure!(codes(&r) == [INVALID_TXN_STATE], "idempotent batch in an open transaction: {r:?}");
        // A new instance fences this one (its transaction is aborted): the zombie's batches
        // are refused with INVALID_PRODUCER_EPOCH.
        let newer = init_transactions(&mut c, id).await?;
        ensure!(newer.0 == pe.0 && newer.1 > pe.1, "fenced: {newer:?} after {pe:?}");
        let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 2, 1, "z"))]).await?;
        ensure!(codes(&r) == [INVALID_PRODUCER_EPOCH], "zombie: {r:?}");
        let p = until_stable(&mut c, "t").await?;
        ensure!(committed_view(&p)?.is_empty(), "the fenced transaction was aborted");
        anyhow::Ok(())
    })
    .await
    .context("test timed out")??;
    Ok(())
}

/// After a crash (SIGKILL) and restart the tail cache is empty: read_committed is served from
/// object storage with the same LSO bound and aborted list, the transaction left open still
/// holds the LSO, and its commit after the restart is discharged by the restarted leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_from_object_storage_after_a_crash() -> anyhow::Result<()> {
    let mut skiff = SkiffProcess::start();
    let id = "restart";
    let pe = tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        c.create_topic_ok("t", 1).await?;
        let pe = init_transactions(&mut c, id).await?;
        // Committed at 0-1 (marker 2), aborted at 3 (marker 4), open from 6 (after a plain 5).
        for (commit, n) in [(true, 2), (false, 1)] {
            add_partitions(&mut c, id, pe, "t", &[0]).await?;
            let seq = if commit { 0 } else { 2 };
            let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, seq, n, "r"))]).await?;
            ensure!(codes(&r) == [0], "{r:?}");
            end_txn(&mut c, id, pe, commit).await?;
            until_stable(&mut c, "t").await?;
        }
        ensure!(c.produce("t", 0, plain(1, "p")).await?.base_offset == 5);
        add_partitions(&mut c, id, pe, "t", &[0]).await?;
        let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 3, 2, "o"))]).await?;
        ensure!(codes(&r) == [0] && r[0].base_offset == 6, "{r:?}");
        anyhow::Ok(pe)
    })
    .await
    .context("test timed out")??;
    skiff.kill();
    skiff.restart();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut c = Client::connect(skiff.bootstrap()).await?;
        let p = fetch(&mut c, "t", 0, READ_COMMITTED).await?;
        ensure!((p.high_watermark, p.last_stable_offset) == (8, 6), "after the restart: {p:?}");
        let offsets: Vec<i64> = batches(p.records.clone())?.iter().map(|b| b.0).collect();
        ensure!(offsets == [0, 2, 3, 4, 5], "object storage, cut at the LSO: {offsets:?}");
        let aborted: Vec<(i64, i64)> =
            p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
        ensure!(aborted == [(pe.0, 3)], "{aborted:?}");
        ensure!(committed_view(&p)? == [0, 1, 5]);
        ensure!(latest(&mut c, "t", READ_COMMITTED).await? == 6);
        end_txn(&mut c, id, pe, true).await?;
        let p = until_stable(&mut c, "t").await?;
        ensure!(p.high_watermark == 9, "commit marker at 8: {p:?}");
        ensure!(committed_view(&p)? == [0, 1, 5, 6, 7]);
        anyhow::Ok(())
    })
    .await
    .context("test timed out after the restart")??;
    Ok(())
}

/// `kafka-transactions describe-producers` (Kafka's own tool): a transactional producer with a
/// transaction open on the partition shows its first offset as CurrentTransactionStartOffset,
/// and "None" once the commit marker closed it; LastTimestamp is its last batch's max timestamp
/// (then the marker's), LatestCoordinatorEpoch the one written in its last marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_producers_shows_the_open_transaction() -> anyhow::Result<()> {
    use std::collections::HashMap;
    use support::kafka_cli::{self, TRANSACTIONS_COMMAND};

    let skiff = SkiffProcess::start();
    let b = skiff.bootstrap().to_string();
    // The producer's row by column name (ProducerId, ProducerEpoch, LatestCoordinatorEpoch,
    // LastSequence, LastTimestamp, CurrentTransactionStartOffset).
    let describe = |pid: i64| {
        let b = b.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<HashMap<String, String>> {
            let out = kafka_cli::run(
                TRANSACTIONS_COMMAND,
                &["--bootstrap-server", &b, "describe-producers", "--topic", "t", "--partition", "0"],
            )?
            .ok("describe-producers")?;
            let header: Vec<String> = out
                .lines()
                .find(|l| l.contains("CurrentTransactionStartOffset"))
                .with_context(|| format!("no table:\n{out}"))?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let row = out
                .lines()
                .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .find(|cols| cols.first().is_some_and(|c| *c == pid.to_string()))
                .with_context(|| format!("producer {pid} not listed:\n{out}"))?;
            ensure!(row.len() == header.len(), "row {row:?} under {header:?}");
            Ok(header.into_iter().zip(row).collect())
        })
    };
    let col = |row: &HashMap<String, String>, name: &str| row.get(name).cloned().unwrap_or_default();
    let now_ms =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut c = Client::connect(skiff.bootstrap()).await?;
    c.create_topic_ok("t", 1).await?;
    ensure!(c.produce("t", 0, plain(1, "p")).await?.base_offset == 0);
    let id = "described";
    let pe = init_transactions(&mut c, id).await?;
    add_partitions(&mut c, id, pe, "t", &[0]).await?;
    let r = produce(&mut c, 9, Some(id), "t", &[(0, txn_batch(pe.0, pe.1, 0, 2, "d"))]).await?;
    ensure!(codes(&r) == [0] && r[0].base_offset == 1, "{r:?}");
    let row = describe(pe.0).await??;
    ensure!(col(&row, "ProducerEpoch") == pe.1.to_string(), "epoch: {row:?}");
    ensure!(col(&row, "CurrentTransactionStartOffset") == "1", "open at 1: {row:?}");
    // The batch's max timestamp (its 2nd record's); no marker written for it yet.
    ensure!(col(&row, "LastTimestamp") == "1700000000001", "the batch's timestamp: {row:?}");
    ensure!(["-1", "None"].contains(&col(&row, "LatestCoordinatorEpoch").as_str()), "no marker yet: {row:?}");
    let before = now_ms();
    end_txn(&mut c, id, pe, true).await?;
    until_stable(&mut c, "t").await?;
    let after = now_ms();
    let row = describe(pe.0).await??;
    ensure!(col(&row, "CurrentTransactionStartOffset") == "None", "closed by the marker: {row:?}");
    // The marker's timestamp (the EndTxn time) and the coordinator epoch written in it.
    let last: i64 = col(&row, "LastTimestamp").parse().with_context(|| format!("{row:?}"))?;
    ensure!((before..=after).contains(&last), "marker time in [{before}, {after}]: {row:?}");
    let coordinator_epoch: i32 = col(&row, "LatestCoordinatorEpoch").parse().with_context(|| format!("{row:?}"))?;
    ensure!(coordinator_epoch >= 0, "the marker's coordinator epoch: {row:?}");
    Ok(())
}

/// The partition's leader freezes (SIGSTOP) between a transaction's data and its EndTxn: the
/// commit marker stays owed until the partition moves, then the next leader appends it, once;
/// the frozen leader resuming adds none. (The coordinator is the other broker.)
#[test]
fn a_frozen_leaders_marker_is_appended_by_the_next_leader() -> anyhow::Result<()> {
    let session = Duration::from_millis(1000);
    let mut spec = ClusterSpec::new("txn-marker-move", 1, 2);
    spec.session_timeout = Some(session);
    let mut cluster = Cluster::start(spec);
    cluster.create_topic("t", 1)?;
    let md = cluster.wait_leaders("t", 1, &[], Duration::from_secs(30))?;
    let (leader, leader_addr) = md.leader(0).map(|(b, a)| (b, a.to_string())).context("a leader")?;
    let other = cluster.broker_refs().into_iter().map(NodeRef::id).find(|&b| b != leader).context("two brokers")?;
    let other_addr = cluster.kafka_addr(NodeRef::Broker(other)).context("other broker's address")?;
    // A transactional id whose coordinator is the broker that stays up.
    let (id, pe) = cluster.block_on(async {
        let mut co = Client::connect(&other_addr).await?;
        let mut id = None;
        for i in 0..200 {
            let candidate = format!("move-{i}");
            let find =
                FindCoordinatorRequest::default().with_key(StrBytes::from_string(candidate.clone())).with_key_type(1);
            let (code, r) = send_retrying(&mut co, &find, 3, |r| r.error_code).await?;
            if code == 0 && r.node_id.0 == other {
                id = Some(candidate);
                break;
            }
        }
        let id = id.context("no transactional id coordinated by the other broker")?;
        let pe = init_transactions(&mut co, &id).await?;
        add_partitions(&mut co, &id, pe, "t", &[0]).await?;
        let mut lc = Client::connect(&leader_addr).await?;
        let r = produce(&mut lc, 9, Some(&id), "t", &[(0, txn_batch(pe.0, pe.1, 0, 3, "m"))]).await?;
        ensure!(codes(&r) == [0] && r[0].base_offset == 0, "{r:?}");
        anyhow::Ok((id, pe))
    })?;
    cluster.stop(NodeRef::Broker(leader));
    cluster.block_on(async {
        let mut co = Client::connect(&other_addr).await?;
        end_txn(&mut co, &id, pe, true).await
    })?;
    let after = cluster.wait_leaders("t", 1, &[leader], session * 20)?;
    let (successor, successor_addr) = after.leader(0).map(|(b, a)| (b, a.to_string())).context("a new leader")?;
    ensure!(successor == other);
    let markers =
        |p: &PartitionData| -> anyhow::Result<usize> { Ok(batches(p.records.clone())?.iter().filter(|b| b.3).count()) };
    cluster.block_on(async {
        let mut c = Client::connect(&successor_addr).await?;
        let p = until_stable(&mut c, "t").await?;
        ensure!(p.high_watermark == 4 && markers(&p)? == 1, "one commit marker at 3: {p:?}");
        ensure!(committed_view(&p)? == [0, 1, 2]);
        anyhow::Ok(())
    })?;
    cluster.cont(NodeRef::Broker(leader));
    std::thread::sleep(session * 2);
    cluster.block_on(async {
        let mut c = Client::connect(&successor_addr).await?;
        let p = fetch(&mut c, "t", 0, READ_COMMITTED).await?;
        ensure!((p.high_watermark, p.last_stable_offset) == (4, 4), "{p:?}");
        ensure!(markers(&p)? == 1, "the resumed leader added no marker: {p:?}");
        anyhow::Ok(())
    })?;
    Ok(())
}
