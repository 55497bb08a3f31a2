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

use anyhow::{Context, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use support::SkiffProcess;
use support::client::{Client, topic_name};

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

#[allow(dead_code)]
const _CODES_USED_LATER: [i16; 3] = [INVALID_PRODUCER_EPOCH, INVALID_TXN_STATE, TRANSACTION_ABORTABLE];
