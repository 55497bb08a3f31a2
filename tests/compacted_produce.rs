//! Produce on a compacted topic (issue #12, RFC 0003 scope 2): every record needs a key, as
//! Kafka's `LogValidator.validateKey` requires. A batch with a keyless record fails its
//! partition with INVALID_RECORD (87), one `record_errors` entry per keyless record (v8+) and
//! Kafka's messages; nothing of it is stored. Checked on the wire and with Apache Kafka's own
//! Java producer (`VerifiableProducer`, which writes keyless records).
//!
//! Needs Kafka's tools (tests/support/kafka_cli.rs).
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use anyhow::ensure;
use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, TestRecord, encode_batch, topic_name};
use support::kafka_cli;

const VERIFIABLE_PRODUCER: &str = "org.apache.kafka.tools.VerifiableProducer";
const LATEST: i64 = -1;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn keyless(value: impl Into<Bytes>) -> TestRecord {
    TestRecord { key: None, value: Some(value.into()), headers: Vec::new(), timestamp: 1 }
}

/// Produce v`version` of one batch to partition 0 of `topic`.
async fn produce(c: &mut Client, topic: &str, batch: Bytes, version: i16) -> anyhow::Result<PartitionProduceResponse> {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
    ]);
    let mut resp = c.send(&req, version).await?;
    ensure!(resp.responses.len() == 1 && resp.responses[0].partition_responses.len() == 1, "one partition answer");
    Ok(resp.responses.remove(0).partition_responses.remove(0))
}

/// Kafka's answer for keyless records at `indexes` of a batch sent to `<topic>-0`.
fn check_refused(r: &PartitionProduceResponse, topic: &str, indexes: &[i32], version: i16) -> anyhow::Result<()> {
    ensure!(r.error_code == 87 && r.base_offset == -1, "INVALID_RECORD expected: {r:?}");
    if version < 8 {
        // Neither field exists before v8.
        ensure!(r.record_errors.is_empty() && r.error_message.is_none(), "{r:?}");
        return Ok(());
    }
    let message = format!("Compacted topic cannot accept message without key in topic partition {topic}-0.");
    let got: Vec<(i32, Option<&str>)> =
        r.record_errors.iter().map(|e| (e.batch_index, e.batch_index_error_message.as_deref())).collect();
    let want: Vec<(i32, Option<&str>)> = indexes.iter().map(|&i| (i, Some(message.as_str()))).collect();
    ensure!(got == want, "record_errors {got:?}, expected {want:?}");
    let shown: Vec<String> =
        indexes.iter().take(3).map(|i| format!("RecordError(batchIndex={i}, message='{message}')")).collect();
    let summary = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        indexes.len(),
        shown.join(", ")
    );
    ensure!(r.error_message.as_deref() == Some(summary.as_str()), "error_message {:?}", r.error_message);
    Ok(())
}

#[test]
fn a_compacted_topic_refuses_records_without_a_key() -> anyhow::Result<()> {
    let skiff = SkiffProcess::start();
    let addr = skiff.bootstrap().to_string();
    runtime().block_on(async {
        let mut c = Client::connect(&addr).await?;
        for (topic, policy) in [("compacted", "compact"), ("both", "compact,delete")] {
            let code = c.create_topic(topic, 1, &[("cleanup.policy", policy)]).await?;
            ensure!(code == 0, "CreateTopics {topic} with cleanup.policy={policy}: error {code}");
        }
        c.create_topic_ok("plain", 1).await?;

        let mixed = [TestRecord::new("k", "v", 1), keyless("a"), TestRecord::new("k2", "v", 1), keyless("b")];
        for topic in ["compacted", "both"] {
            for compression in [Compression::None, Compression::Zstd] {
                // Kafka takes zstd from Produce v7 on.
                for version in [3, 7, 8, 9, 11].into_iter().filter(|&v| compression != Compression::Zstd || v >= 7) {
                    let r = produce(&mut c, topic, encode_batch(&mixed, compression, None), version).await?;
                    check_refused(&r, topic, &[1, 3], version)?;
                }
            }
            // Four keyless records: every one is listed, the summary shows three.
            let all = [keyless("1"), keyless("2"), keyless("3"), keyless("4")];
            let r = produce(&mut c, topic, encode_batch(&all, Compression::Gzip, None), 9).await?;
            check_refused(&r, topic, &[0, 1, 2, 3], 9)?;
            // A compressed batch above 64 KiB is checked off the async workers, same answer.
            let mut x = 0x9e37_79b9_u32;
            let noise: Vec<u8> = (0..150 << 10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let large = encode_batch(&[TestRecord::new("k", noise, 1), keyless("x")], Compression::Lz4, None);
            ensure!(large.len() > 64 << 10);
            check_refused(&produce(&mut c, topic, large, 9).await?, topic, &[1], 9)?;
            // Nothing of the refused batches was stored; keyed records are accepted.
            ensure!(c.list_offset(topic, 0, LATEST).await? == (0, 0, -1), "a refused batch left data");
            let keyed = [TestRecord::new("k", "v", 1), TestRecord::new("k", "", 2)];
            ensure!(c.produce_ok(topic, 0, encode_batch(&keyed, Compression::Snappy, None)).await? == 0);
        }
        // A topic with cleanup.policy=delete takes keyless records.
        ensure!(c.produce_ok("plain", 0, encode_batch(&mixed, Compression::None, None)).await? == 0);
        Ok(())
    })?;

    // Apache Kafka's Java producer sends keyless records and reports Kafka's exception.
    let out = kafka_cli::run(
        VERIFIABLE_PRODUCER,
        &["--bootstrap-server", &addr, "--topic", "compacted", "--max-messages", "1", "--acks", "-1"],
    )?;
    let both = format!("{}\n{}", out.stdout, out.stderr);
    ensure!(both.contains("\"name\":\"producer_send_error\""), "no send error reported:\n{both}");
    ensure!(both.contains("InvalidRecordException"), "not Kafka's exception:\n{both}");
    ensure!(
        both.contains("Compacted topic cannot accept message without key in topic partition compacted-0."),
        "not Kafka's message:\n{both}"
    );
    ensure!(!both.contains("\"name\":\"producer_send_success\""), "a keyless record was acknowledged:\n{both}");
    Ok(())
}
