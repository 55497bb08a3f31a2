//! The transaction coordinator (issue #13, RFC 0004 phases 1 and 2, TV1 and TV2) against the real binary:
//! every coordinator API round trip with Kafka's exact codes (FindCoordinator key type 1,
//! InitProducerId with a transactional id incl. KIP-360 and fencing, AddPartitionsToTxn v3 and
//! v4-5 batched / verify-only, AddOffsetsToTxn, TxnOffsetCommit with KIP-447 pending offsets and
//! OffsetFetch `require_stable`, EndTxn, DescribeTransactions, ListTransactions and Kafka's
//! `kafka-transactions.sh list / describe`), the `transaction.timeout.ms` abort, and a
//! coordinator failover in a multi-broker cluster that resumes an ongoing commit (and an
//! Ongoing transaction) on the new coordinator.
//!
//! Markers are the partition leaders' (tests/transactions_data.rs): only the failover test
//! waits for them; elsewhere a transaction whose partitions owe markers is checked as
//! "PrepareCommit or CompleteCommit".
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, topic_name};
use support::cluster::{Cluster, ClusterSpec, NodeRef};
use support::kafka_cli::{self, TRANSACTIONS_COMMAND};

// Kafka's error codes (clients/src/main/java/org/apache/kafka/common/protocol/Errors.java).
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_COORDINATOR: i16 = 16;
const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
const TRANSACTION_ABORTABLE: i16 = 120;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn txn_id(v: &str) -> TransactionalId {
    TransactionalId(s(v))
}

async fn init(c: &mut Client, id: &str, timeout_ms: i32, version: i16) -> anyhow::Result<InitProducerIdResponse> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    c.send(&req, version).await
}

async fn init_ok(c: &mut Client, id: &str, timeout_ms: i32) -> anyhow::Result<(i64, i16)> {
    let r = init(c, id, timeout_ms, 4).await?;
    ensure!(r.error_code == NONE, "InitProducerId({id}): {r:?}");
    Ok((r.producer_id.0, r.producer_epoch))
}

/// AddPartitionsToTxn v0-3: per (topic, partition) codes.
async fn add_partitions(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    partitions: &[(&str, i32)],
    version: i16,
) -> anyhow::Result<Vec<(String, i32, i16)>> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in partitions {
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(AddPartitionsToTxnTopic::default().with_name(topic_name(t)).with_partitions(vec![*p])),
        }
    }
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let r = c.send(&req, version).await?;
    Ok(r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(|p| (t.name.0.to_string(), p.partition_index, p.partition_error_code))
        })
        .collect())
}

async fn add_partitions_code(
    c: &mut Client,
    id: &str,
    producer: (i64, i16),
    partitions: &[(&str, i32)],
    version: i16,
) -> anyhow::Result<i16> {
    let codes = add_partitions(c, id, producer, partitions, version).await?;
    let first = codes.first().map(|x| x.2).context("no partition result")?;
    ensure!(codes.iter().all(|x| x.2 == first), "mixed codes: {codes:?}");
    Ok(first)
}

async fn end_txn(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    commit: bool,
    version: i16,
) -> anyhow::Result<i16> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    Ok(c.send(&req, version).await?.error_code)
}

async fn add_offsets(c: &mut Client, id: &str, (pid, epoch): (i64, i16), group: &str) -> anyhow::Result<i16> {
    let req = AddOffsetsToTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s(group)));
    Ok(c.send(&req, 3).await?.error_code)
}

async fn txn_offset_commit(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    group: &str,
    topic: &str,
    offset: i64,
    version: i16,
) -> anyhow::Result<i16> {
    let p = TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id(id))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(vec![p]),
        ]);
    let r = c.send(&req, version).await?;
    r.topics.first().and_then(|t| t.partitions.first()).map(|p| p.error_code).context("no partition in the answer")
}

/// OffsetFetch v7 of partition 0: (error, offset).
async fn fetch_offset(c: &mut Client, group: &str, topic: &str, require_stable: bool) -> anyhow::Result<(i16, i64)> {
    let req =
        OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_require_stable(require_stable).with_topics(
            Some(vec![OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(vec![0])]),
        );
    let r = c.send(&req, 7).await?;
    ensure!(r.error_code == NONE, "OffsetFetch: {r:?}");
    let p = r.topics.first().and_then(|t| t.partitions.first()).context("no partition")?;
    Ok((p.error_code, p.committed_offset))
}

async fn describe(c: &mut Client, id: &str) -> anyhow::Result<describe_transactions_response::TransactionState> {
    let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id(id)]);
    c.send(&req, 0).await?.transaction_states.into_iter().next().context("no state in DescribeTransactions")
}

/// FindCoordinator v3 for transactional id `id`: (error, node id, host:port).
async fn txn_coordinator(c: &mut Client, id: &str) -> anyhow::Result<(i16, i32, String)> {
    let req = FindCoordinatorRequest::default().with_key(s(id)).with_key_type(1);
    let r = c.send(&req, 3).await?;
    Ok((r.error_code, r.node_id.0, format!("{}:{}", r.host, r.port)))
}

/// Every coordinator API with Kafka's codes, on one `skiff dev`, and Kafka's
/// `kafka-transactions.sh list / describe` reading them back.
#[test]
fn coordinator_apis_answer_with_kafkas_codes() {
    let broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body = async {
        let mut c = Client::connect(&addr).await?;
        c.create_topic_ok("tx-t", 2).await?;
        c.create_topic_ok("tx-u", 1).await?;

        // FindCoordinator key type 1 names this broker (v3 and batched v4).
        let (e, node, host) = txn_coordinator(&mut c, "tx-a").await?;
        ensure!(e == NONE && host == addr, "FindCoordinator(TRANSACTION) v3: {e} {node} {host}");
        let req = FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![s("tx-a"), s("tx-b")]);
        let r = c.send(&req, 4).await?;
        ensure!(
            r.coordinators.len() == 2 && r.coordinators.iter().all(|k| k.error_code == NONE && k.node_id.0 == node)
        );

        // InitProducerId: a new id gets epoch 0; a second instance bumps; bad timeouts refused.
        let a = init_ok(&mut c, "tx-a", 60_000).await?;
        ensure!(a.1 == 0, "first epoch: {a:?}");
        let r = init(&mut c, "tx-a", 900_001, 4).await?;
        ensure!(r.error_code == INVALID_TRANSACTION_TIMEOUT && r.producer_id.0 == -1, "{r:?}");
        let r = init(&mut c, "", 60_000, 4).await?;
        ensure!(r.error_code == INVALID_REQUEST, "empty id: {r:?}");
        let a2 = init_ok(&mut c, "tx-a", 60_000).await?;
        ensure!(a2 == (a.0, 1), "a new instance bumps the epoch: {a2:?}");
        // KIP-360: the current pid/epoch bumps; a pid that is not the id's is fenced.
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id("tx-a")))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(a.0))
            .with_producer_epoch(1);
        let r = c.send(&req, 4).await?;
        ensure!(r.error_code == NONE && r.producer_epoch == 2, "KIP-360 bump: {r:?}");
        let a = (a.0, 2);
        let r = c.send(&req.clone().with_producer_id(ProducerId(a.0 + 1000)), 4).await?;
        ensure!(r.error_code == PRODUCER_FENCED, "KIP-360 with a foreign pid: {r:?}");
        let r = c.send(&req.clone().with_producer_id(ProducerId(a.0 + 1000)), 3).await?;
        ensure!(r.error_code == INVALID_PRODUCER_EPOCH, "v3 clients get INVALID_PRODUCER_EPOCH: {r:?}");
        let r = c.send(&req.with_producer_epoch(-1), 4).await?;
        ensure!(r.error_code == INVALID_REQUEST, "pid without epoch: {r:?}");

        // AddPartitionsToTxn v3.
        ensure!(add_partitions_code(&mut c, "tx-a", a, &[("tx-t", 0), ("tx-t", 1)], 3).await? == NONE);
        ensure!(add_partitions_code(&mut c, "tx-a", a, &[("tx-t", 0)], 3).await? == NONE, "already added");
        let codes = add_partitions(&mut c, "tx-a", a, &[("tx-t", 0), ("nope", 0), ("tx-t", 7)], 3).await?;
        let by = |t: &str, p| codes.iter().find(|x| x.0 == t && x.1 == p).map(|x| x.2);
        ensure!(
            by("nope", 0) == Some(UNKNOWN_TOPIC_OR_PARTITION)
                && by("tx-t", 7) == Some(UNKNOWN_TOPIC_OR_PARTITION)
                && by("tx-t", 0) == Some(OPERATION_NOT_ATTEMPTED),
            "unknown partitions: {codes:?}"
        );
        ensure!(add_partitions_code(&mut c, "tx-a", (a.0, 1), &[("tx-u", 0)], 3).await? == PRODUCER_FENCED);
        ensure!(add_partitions_code(&mut c, "tx-a", (a.0, 1), &[("tx-u", 0)], 1).await? == INVALID_PRODUCER_EPOCH);
        ensure!(
            add_partitions_code(&mut c, "tx-a", (a.0 + 1000, 2), &[("tx-u", 0)], 3).await?
                == INVALID_PRODUCER_ID_MAPPING
        );
        ensure!(add_partitions_code(&mut c, "tx-never", a, &[("tx-u", 0)], 3).await? == INVALID_PRODUCER_ID_MAPPING);

        // v4/v5 batched, verify-only: answered from the coordinator's replicated state.
        let verify = |version: i16| {
            let t = |name: &str, ps: Vec<i32>| {
                AddPartitionsToTxnTopic::default().with_name(topic_name(name)).with_partitions(ps)
            };
            let x = AddPartitionsToTxnTransaction::default()
                .with_transactional_id(txn_id("tx-a"))
                .with_producer_id(ProducerId(a.0))
                .with_producer_epoch(a.1)
                .with_verify_only(true)
                .with_topics(vec![t("tx-t", vec![0, 1]), t("tx-u", vec![0])]);
            (AddPartitionsToTxnRequest::default().with_transactions(vec![x]), version)
        };
        for (version, missing) in [(5, TRANSACTION_ABORTABLE), (4, INVALID_TXN_STATE)] {
            let (req, v) = verify(version);
            let r = c.send(&req, v).await?;
            ensure!(r.error_code == NONE && r.results_by_transaction.len() == 1, "v{v}: {r:?}");
            for t in &r.results_by_transaction[0].topic_results {
                for p in &t.results_by_partition {
                    let want = if t.name.0.as_str() == "tx-u" { missing } else { NONE };
                    ensure!(p.partition_error_code == want, "v{v} verify {}-{}: {p:?}", t.name.0, p.partition_index);
                }
            }
        }

        // Describe / List while Ongoing.
        let d = describe(&mut c, "tx-a").await?;
        ensure!(d.error_code == NONE && d.transaction_state.as_str() == "Ongoing", "{d:?}");
        ensure!(d.producer_id.0 == a.0 && d.producer_epoch == 2 && d.transaction_timeout_ms == 60_000, "{d:?}");
        ensure!(d.topics.len() == 1 && d.topics[0].partitions == vec![0, 1], "{d:?}");
        ensure!(describe(&mut c, "tx-unknown").await?.error_code == TRANSACTIONAL_ID_NOT_FOUND);
        let req = ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Bogus")]);
        let r = c.send(&req, 1).await?;
        ensure!(r.unknown_state_filters == vec![s("Bogus")], "{r:?}");
        let listed: Vec<&str> = r.transaction_states.iter().map(|t| t.transactional_id.0.as_str()).collect();
        ensure!(listed == vec!["tx-a"], "Ongoing only: {listed:?}");
        let r = c.send(&ListTransactionsRequest::default().with_duration_filter(3_600_000), 1).await?;
        ensure!(r.transaction_states.is_empty(), "nothing runs for an hour: {r:?}");

        // Kafka's own tool reads the same.
        let (list, desc) = tokio::task::spawn_blocking({
            let addr = addr.clone();
            move || -> anyhow::Result<(String, String)> {
                let list = kafka_cli::run(TRANSACTIONS_COMMAND, &["--bootstrap-server", &addr, "list"])?.ok("list")?;
                let desc = kafka_cli::run(
                    TRANSACTIONS_COMMAND,
                    &["--bootstrap-server", &addr, "describe", "--transactional-id", "tx-a"],
                )?
                .ok("describe")?;
                Ok((list, desc))
            }
        })
        .await??;
        ensure!(list.lines().any(|l| l.contains("tx-a") && l.contains("Ongoing")), "kafka-transactions list:\n{list}");
        ensure!(desc.contains("Ongoing") && desc.contains("tx-t-0"), "kafka-transactions describe:\n{desc}");

        // EndTxn: the decision is answered NONE; the other result is INVALID_TXN_STATE; a
        // retried same result is NONE or CONCURRENT_TRANSACTIONS while the markers are owed.
        ensure!(end_txn(&mut c, "tx-a", (a.0, 1), true, 3).await? == PRODUCER_FENCED);
        ensure!(end_txn(&mut c, "tx-a", (a.0, 1), true, 1).await? == INVALID_PRODUCER_EPOCH);
        ensure!(end_txn(&mut c, "tx-a", a, true, 3).await? == NONE);
        let state = describe(&mut c, "tx-a").await?.transaction_state.to_string();
        ensure!(["PrepareCommit", "CompleteCommit"].contains(&state.as_str()), "after EndTxn: {state}");
        ensure!(end_txn(&mut c, "tx-a", a, false, 3).await? == INVALID_TXN_STATE);
        let retried = end_txn(&mut c, "tx-a", a, true, 3).await?;
        ensure!([NONE, CONCURRENT_TRANSACTIONS].contains(&retried), "retried commit: {retried}");

        // KIP-447 offsets: pending until the commit; require_stable sees them.
        let b = init_ok(&mut c, "tx-b", 60_000).await?;
        ensure!(txn_offset_commit(&mut c, "tx-b", b, "g1", "tx-u", 5, 3).await? == INVALID_TXN_STATE, "no AddOffsets");
        ensure!(txn_offset_commit(&mut c, "tx-b", b, "g1", "tx-u", 5, 4).await? == TRANSACTION_ABORTABLE);
        ensure!(add_offsets(&mut c, "tx-b", b, "g1").await? == NONE);
        ensure!(txn_offset_commit(&mut c, "tx-b", b, "g1", "nope", 5, 3).await? == UNKNOWN_TOPIC_OR_PARTITION);
        ensure!(txn_offset_commit(&mut c, "tx-b", (b.0, 7), "g1", "tx-u", 5, 3).await? == INVALID_PRODUCER_EPOCH);
        ensure!(txn_offset_commit(&mut c, "tx-b", b, "g1", "tx-u", 5, 3).await? == NONE);
        ensure!(fetch_offset(&mut c, "g1", "tx-u", true).await? == (UNSTABLE_OFFSET_COMMIT, -1));
        ensure!(fetch_offset(&mut c, "g1", "tx-u", false).await? == (NONE, -1), "not committed yet");
        // Only a group in the transaction: it completes in the commit itself.
        ensure!(end_txn(&mut c, "tx-b", b, true, 3).await? == NONE);
        ensure!(describe(&mut c, "tx-b").await?.transaction_state.as_str() == "CompleteCommit");
        ensure!(fetch_offset(&mut c, "g1", "tx-u", true).await? == (NONE, 5), "committed with the transaction");
        // An aborted transaction's offsets vanish.
        ensure!(add_offsets(&mut c, "tx-b", b, "g1").await? == NONE);
        ensure!(txn_offset_commit(&mut c, "tx-b", b, "g1", "tx-u", 9, 3).await? == NONE);
        ensure!(end_txn(&mut c, "tx-b", b, false, 3).await? == NONE);
        ensure!(fetch_offset(&mut c, "g1", "tx-u", true).await? == (NONE, 5), "aborted offsets dropped");

        // Fencing an ongoing transaction: the new instance is told to retry while the old
        // transaction aborts at epoch+2 (with `transaction.version` 2 finalized the coordinator's
        // own abort is TV2, as Kafka's: the fence bumps, then the abort); the zombie is fenced.
        let d0 = init_ok(&mut c, "tx-d", 60_000).await?;
        ensure!(add_partitions_code(&mut c, "tx-d", d0, &[("tx-u", 0)], 3).await? == NONE);
        let r = init(&mut c, "tx-d", 60_000, 4).await?;
        ensure!(r.error_code == CONCURRENT_TRANSACTIONS, "fencing an ongoing transaction: {r:?}");
        let d = describe(&mut c, "tx-d").await?;
        ensure!(
            ["PrepareAbort", "CompleteAbort"].contains(&d.transaction_state.as_str()) && d.producer_epoch == d0.1 + 2,
            "{d:?}"
        );
        ensure!(end_txn(&mut c, "tx-d", d0, true, 3).await? == PRODUCER_FENCED, "the zombie");
        ensure!(add_offsets(&mut c, "tx-d", d0, "g1").await? == PRODUCER_FENCED);
        Ok::<_, anyhow::Error>(())
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(180), body).await })
        .expect("bounded")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(60)));
    // Every refusal says why in the log.
    let log = broker.stderr_tail(100_000);
    ensure_logged(&log, "PRODUCER_FENCED").unwrap_or_else(|e| panic!("{e:#}"));
    ensure_logged(&log, "InvalidTransactionTimeout").unwrap_or_else(|e| panic!("{e:#}"));
}

fn ensure_logged(log: &str, what: &str) -> anyhow::Result<()> {
    let what = if what == "PRODUCER_FENCED" { "ProducerFenced" } else { what };
    ensure!(
        log.lines().any(|l| l.contains("refused a transaction request") && l.contains(what)),
        "no refusal logged for {what}"
    );
    Ok(())
}

/// A transaction left open past its `transaction.timeout.ms` is aborted by the coordinator
/// with an epoch bump (two: the fence, then the server's TV2 abort): the producer is fenced
/// (EndTxn gets PRODUCER_FENCED).
#[test]
fn abandoned_transaction_is_aborted_after_its_timeout() {
    let broker = SkiffProcess::start_with_config("[transactions]\nabort_check_interval = \"100ms\"\n");
    let addr = broker.bootstrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body = async {
        let mut c = Client::connect(&addr).await?;
        c.create_topic_ok("tx-slow", 1).await?;
        let p = init_ok(&mut c, "slow", 1_000).await?;
        ensure!(add_partitions_code(&mut c, "slow", p, &[("tx-slow", 0)], 3).await? == NONE);
        let started = Instant::now();
        let aborted = loop {
            let d = describe(&mut c, "slow").await?;
            if d.transaction_state.as_str() != "Ongoing" {
                break d;
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("still Ongoing after {:?}: {d:?}", started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = started.elapsed();
        ensure!(took >= Duration::from_millis(900), "aborted before its timeout ({took:?})");
        ensure!(
            ["PrepareAbort", "CompleteAbort"].contains(&aborted.transaction_state.as_str())
                && aborted.producer_epoch == p.1 + 2,
            "timed out: {aborted:?}"
        );
        ensure!(end_txn(&mut c, "slow", p, true, 3).await? == PRODUCER_FENCED, "the producer is fenced");
        Ok::<_, anyhow::Error>(())
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), body).await })
        .expect("bounded")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(60)));
    assert!(
        broker.stderr_tail(100_000).contains("aborted a transaction past its transaction.timeout.ms"),
        "the abort is logged"
    );
}

/// A transactional batch of `n` records of producer (pid, epoch) from sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
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
            key: Some(bytes::Bytes::from(format!("k{i}"))),
            value: Some(bytes::Bytes::from(format!("v{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// Produces a transactional batch of `n` records to `topic`-`partition` at its leader.
async fn produce_txn(
    via: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    topic: &str,
    partition: i32,
    n: usize,
) -> anyhow::Result<()> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let md = via.topic_metadata(topic).await?;
    let (_, leader) = md.leader(partition).context("no leader")?;
    let mut c = Client::connect(leader).await?;
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(txn_batch(pid, epoch, 0, n)));
    let req = ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![data]),
        ]);
    let r = c.send(&req, 9).await?;
    let code = r.responses.first().and_then(|t| t.partition_responses.first()).map(|p| p.error_code);
    ensure!(code == Some(NONE), "transactional produce to {topic}-{partition}: {r:?}");
    Ok(())
}

/// (read_committed latest, read_uncommitted latest) of `topic`-`partition` at its leader, once
/// it has a live one other than `dead`.
async fn stable_and_end(via: &mut Client, topic: &str, partition: i32, dead: i32) -> anyhow::Result<(i64, i64)> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let md = via.topic_metadata(topic).await?;
        match md.leader(partition) {
            Some((id, addr)) if id != dead => break addr.to_string(),
            other if Instant::now() > deadline => bail!("{topic}-{partition} has no new leader: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut c = Client::connect(&leader).await?;
    let mut out = [0i64; 2];
    for (i, isolation) in [1i8, 0].into_iter().enumerate() {
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_isolation_level(isolation)
            .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1),
            ])]);
        let r = c.send(&req, 7).await?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).context("no partition")?;
        ensure!(p.error_code == NONE, "ListOffsets {topic}-{partition} isolation {isolation}: {p:?}");
        out[i] = p.offset;
    }
    Ok((out[0], out[1]))
}

/// Two brokers (MinIO, one controller); the broker coordinating two transactional ids is
/// SIGKILLed right after answering EndTxn(commit) of one (its transaction has data on both
/// partitions and consumed offsets: markers still owed) while the other is Ongoing. The
/// surviving broker takes the shard over: it answers FindCoordinator, holds both transactions,
/// finishes the commit (a retried EndTxn answers CONCURRENT_TRANSACTIONS until every marker is
/// written, then NONE: CompleteCommit, the offsets committed, read_committed sees everything)
/// and commits the Ongoing one. A broker that is not the coordinator answers NOT_COORDINATOR.
#[test]
fn coordinator_failover_resumes_an_ongoing_commit() {
    let mut cluster = Cluster::start(ClusterSpec::new("txn-failover", 1, 2));
    cluster.create_topic("tx-fo", 2).expect("topic");
    cluster.wait_topic_ready("tx-fo", 2, Duration::from_secs(30)).expect("topic ready");
    let bootstrap = cluster.bootstrap();
    let first = bootstrap.split(',').next().expect("a broker").to_string();
    let (victim, ids, producers) = cluster
        .block_on(async {
            let mut c = Client::connect(&first).await?;
            let (e, victim, addr) = txn_coordinator(&mut c, "fo-0").await?;
            ensure!(e == NONE, "FindCoordinator: {e}");
            // A second id on the same coordinator.
            let mut second = None;
            for i in 1..500 {
                let id = format!("fo-{i}");
                if txn_coordinator(&mut c, &id).await?.1 == victim {
                    second = Some(id);
                    break;
                }
            }
            let ids = ["fo-0".to_string(), second.context("no second id on the same coordinator")?];
            let mut co = Client::connect(&addr).await?;
            let mut producers = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let p = init_ok(&mut co, id, 60_000).await?;
                ensure!(add_partitions_code(&mut co, id, p, &[("tx-fo", 0), ("tx-fo", 1)], 3).await? == NONE);
                for partition in 0..2 {
                    produce_txn(&mut c, id, p, "tx-fo", partition, 10).await?;
                }
                let group = format!("fo-group-{i}");
                ensure!(add_offsets(&mut co, id, p, &group).await? == NONE);
                // TxnOffsetCommit goes to the group's coordinator (maybe the other broker).
                let mut g = group_coordinator(&mut c, &group).await?;
                ensure!(txn_offset_commit(&mut g, id, p, &group, "tx-fo", 42, 3).await? == NONE);
                producers.push(p);
            }
            // The other broker is not their coordinator.
            for b in bootstrap.split(',').filter(|b| **b != *addr) {
                let mut other = Client::connect(b).await?;
                ensure!(end_txn(&mut other, &ids[0], producers[0], true, 3).await? == NOT_COORDINATOR, "{b}");
            }
            ensure!(end_txn(&mut co, &ids[0], producers[0], true, 3).await? == NONE, "EndTxn before the kill");
            Ok::<_, anyhow::Error>((victim, ids, producers))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tail(cluster.broker_refs()[0], 40)));
    let killed_at = Instant::now();
    cluster.kill(NodeRef::Broker(victim));
    let survivor_ref = cluster.broker_refs().into_iter().find(|b| b.id() != victim).expect("survivor");
    let survivor = cluster.kafka_addr(survivor_ref).expect("a surviving broker");
    let result = cluster.block_on(async {
        let mut c = Client::connect(&survivor).await?;
        // The shard moves once the controller fences the killed broker (session timeout).
        let new_addr = loop {
            let (e, node, addr) = txn_coordinator(&mut c, &ids[0]).await?;
            if e == NONE && node != victim {
                break addr;
            }
            if killed_at.elapsed() > Duration::from_secs(30) {
                bail!("no new coordinator after {:?} (last: {e} {node} {addr})", killed_at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut co = Client::connect(&new_addr).await?;
        // The commit decided before the kill completes: retried EndTxn until NONE.
        let completed = loop {
            match end_txn(&mut co, &ids[0], producers[0], true, 3).await? {
                NONE => break killed_at.elapsed(),
                CONCURRENT_TRANSACTIONS if killed_at.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => bail!("retried EndTxn on the new coordinator: {other}"),
            }
        };
        let d = describe(&mut co, &ids[0]).await?;
        ensure!(d.transaction_state.as_str() == "CompleteCommit", "the decided commit: {d:?}");
        // The Ongoing one is intact and commits on the new coordinator.
        let d = describe(&mut co, &ids[1]).await?;
        ensure!(d.transaction_state.as_str() == "Ongoing" && d.producer_id.0 == producers[1].0, "{d:?}");
        ensure!(d.topics.len() == 1 && d.topics[0].partitions == vec![0, 1], "partitions kept: {d:?}");
        let mut g = group_coordinator(&mut c, "fo-group-1").await?;
        ensure!(fetch_offset(&mut g, "fo-group-1", "tx-fo", true).await? == (UNSTABLE_OFFSET_COMMIT, -1));
        ensure!(end_txn(&mut co, &ids[1], producers[1], true, 3).await? == NONE);
        let deadline = Instant::now() + Duration::from_secs(30);
        while describe(&mut co, &ids[1]).await?.transaction_state.as_str() != "CompleteCommit" {
            ensure!(Instant::now() < deadline, "the second commit did not complete");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..2 {
            let group = format!("fo-group-{i}");
            let mut g = group_coordinator(&mut c, &group).await?;
            ensure!(fetch_offset(&mut g, &group, "tx-fo", true).await? == (NONE, 42), "{group}: offsets committed");
        }
        // Every record is committed: per partition 2 x (10 records + a marker), LSO = end.
        for partition in 0..2 {
            let (stable, end) = stable_and_end(&mut c, "tx-fo", partition, victim).await?;
            ensure!(stable == end && end == 22, "tx-fo-{partition}: LSO {stable}, end {end}");
        }
        eprintln!("coordinator failover: kill -> the decided commit completed on the new coordinator in {completed:?}");
        Ok::<_, anyhow::Error>(())
    });
    if let Err(e) = result {
        panic!("{e:#}\n{}", cluster.log_tail(survivor_ref, 60));
    }
}

/// A connection to `group`'s coordinator (retried while its shard has no live broker).
async fn group_coordinator(c: &mut Client, group: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = FindCoordinatorRequest::default().with_key(s(group)).with_key_type(0);
        let r = c.send(&req, 3).await?;
        if r.error_code == NONE {
            return Client::connect(&format!("{}:{}", r.host, r.port)).await;
        }
        if Instant::now() > deadline {
            bail!("group coordinator of {group}: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kafka's own ProducerPerformance (Java kafka-clients 4.4) with `--transactional-id`: before
/// #13 it failed at FindCoordinator; now every transaction commits (the coordinator answers,
/// the partition leader writes the markers), `kafka-transactions list` shows the id completed,
/// and a read_committed ConsoleConsumer reads every record.
#[test]
fn java_transactional_producer_commits_and_read_committed_reads_everything() {
    const RECORDS: usize = 3_000;
    let broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let run = || -> anyhow::Result<()> {
        rt.block_on(async { Client::connect(&addr).await?.create_topic_ok("tx-perf", 1).await })?;
        let records = RECORDS.to_string();
        let out = kafka_cli::run_with_timeout(
            "org.apache.kafka.tools.ProducerPerformance",
            &[
                "--topic",
                "tx-perf",
                "--num-records",
                &records,
                "--record-size",
                "100",
                "--throughput",
                "-1",
                "--transactional-id",
                "tx-perf",
                "--transaction-duration-ms",
                "100",
                "--producer-props",
                &format!("bootstrap.servers={addr}"),
            ],
            Duration::from_secs(120),
        )?;
        let all = format!("{}\n{}", out.stdout, out.stderr);
        ensure!(out.success, "ProducerPerformance failed:\n{all}");
        ensure!(all.contains(&format!("{RECORDS} records sent")), "not every record sent:\n{all}");
        let list = kafka_cli::run(TRANSACTIONS_COMMAND, &["--bootstrap-server", &addr, "list"])?.ok("list")?;
        ensure!(list.lines().any(|l| l.contains("tx-perf") && l.contains("CompleteCommit")), "list:\n{list}");
        let consumed = kafka_cli::run_with_timeout(
            kafka_cli::CONSOLE_CONSUMER,
            &[
                "--bootstrap-server",
                &addr,
                "--topic",
                "tx-perf",
                "--from-beginning",
                "--isolation-level",
                "read_committed",
                "--max-messages",
                &records,
                "--timeout-ms",
                "30000",
            ],
            Duration::from_secs(90),
        )?;
        let lines = consumed.stdout.lines().filter(|l| !l.is_empty()).count();
        ensure!(lines == RECORDS, "read_committed read {lines} of {RECORDS}:\n{}", consumed.stderr);
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}\n{}", broker.stderr_tail(60));
    }
}

/// The controller leader is SIGKILLed while transaction ops are in flight (3 controllers, 1
/// broker): the coordinator's ops wait for the new leader (or are resubmitted when their answer
/// was lost) and the transaction commits; a retried EndTxn gets the same answer and nothing is
/// applied twice (the epoch is unchanged).
#[test]
fn transaction_survives_a_controller_leader_kill() {
    let mut cluster = Cluster::start(ClusterSpec::new("txn-ctl-failover", 3, 1));
    cluster.create_topic("tx-cf", 1).expect("topic");
    cluster.wait_topic_ready("tx-cf", 1, Duration::from_secs(30)).expect("topic ready");
    let addr = cluster.bootstrap().split(',').next().expect("a broker").to_string();
    let p = cluster
        .block_on(async {
            let mut c = Client::connect(&addr).await?;
            let p = init_ok(&mut c, "cf", 60_000).await?;
            ensure!(add_partitions_code(&mut c, "cf", p, &[("tx-cf", 0)], 3).await? == NONE);
            produce_txn(&mut c, "cf", p, "tx-cf", 0, 5).await?;
            Ok::<_, anyhow::Error>(p)
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let leader = cluster.wait_controller_leader(Duration::from_secs(30), None).expect("a controller leader");
    // EndTxn races the kill: sent right after it, answered once a new leader commits it.
    let end = cluster.spawn({
        let addr = addr.clone();
        async move {
            let mut c = Client::connect(&addr).await?;
            let started = Instant::now();
            loop {
                let code = end_txn(&mut c, "cf", p, true, 3).await?;
                // COORDINATOR_NOT_AVAILABLE (15) while no controller leader answers: clients retry.
                if code != 15 {
                    return Ok::<_, anyhow::Error>((code, started.elapsed()));
                }
                ensure!(started.elapsed() < Duration::from_secs(60), "no controller for a minute");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    cluster.kill(NodeRef::Controller(leader));
    let (code, took) = cluster.block_on(end).expect("join").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(code, NONE, "EndTxn through the controller failover");
    eprintln!("EndTxn answered {took:?} after the controller leader kill");
    cluster
        .block_on(async {
            let mut c = Client::connect(&addr).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let d = describe(&mut c, "cf").await?;
                ensure!(d.producer_epoch == p.1, "applied twice? {d:?}");
                if d.transaction_state.as_str() == "CompleteCommit" {
                    break;
                }
                ensure!(Instant::now() < deadline, "not completed: {d:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ensure!(end_txn(&mut c, "cf", p, true, 3).await? == NONE, "a retried EndTxn after completion");
            let (stable, end) = stable_and_end(&mut c, "tx-cf", 0, -1).await?;
            ensure!(stable == end && end == 6, "LSO {stable}, end {end}");
            Ok::<_, anyhow::Error>(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tail(cluster.broker_refs()[0], 60)));
}

/// EndTxn v5 (TV2): (error, producer id, epoch) of the answer.
async fn end_txn_v5(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    commit: bool,
) -> anyhow::Result<(i16, i64, i16)> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r = c.send(&req, 5).await?;
    Ok((r.error_code, r.producer_id.0, r.producer_epoch))
}

/// One transactional batch of (pid, epoch) from sequence `seq` to `topic`-0 with Produce
/// `version` (a one-broker cluster: `c` is the leader): the partition's code.
async fn produce_code(
    c: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    seq: i32,
    topic: &str,
    version: i16,
) -> anyhow::Result<i16> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let data = PartitionProduceData::default().with_index(0).with_records(Some(txn_batch(pid, epoch, seq, 2)));
    let req = ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![data]),
        ]);
    let r = c.send(&req, version).await?;
    r.responses.first().and_then(|t| t.partition_responses.first()).map(|p| p.error_code).context("no partition")
}

/// Waits (bounded) until `id`'s transaction is in `state`.
async fn wait_state(
    c: &mut Client,
    id: &str,
    state: &str,
) -> anyhow::Result<describe_transactions_response::TransactionState> {
    let started = Instant::now();
    loop {
        let d = describe(c, id).await?;
        if d.transaction_state.as_str() == state {
            return Ok(d);
        }
        ensure!(started.elapsed() < Duration::from_secs(20), "{id} not {state} after 20 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Transaction version 2 (KIP-890 part 2, RFC 0004 phase 2): `transaction.version` 2 is
/// finalized; EndTxn v5 bumps the epoch per transaction and returns it, the next transaction
/// runs at it and the old epoch is fenced (EndTxn: PRODUCER_FENCED; Produce:
/// INVALID_PRODUCER_EPOCH); Produce v12 adds its partition to the transaction without
/// AddPartitionsToTxn and TxnOffsetCommit v5 its group without AddOffsetsToTxn. TV1 requests
/// keep TV1: Produce v11 / v10 of a partition not added are refused (TRANSACTION_ABORTABLE /
/// INVALID_TXN_STATE) and EndTxn v4 keeps the epoch. (Today's main: EndTxn v5, TxnOffsetCommit v5
/// and Produce v12 are not advertised, `transaction.version` is 1.)
#[test]
fn tv2_bumps_the_epoch_per_transaction_and_adds_implicitly() {
    let broker = SkiffProcess::start();
    let addr = broker.bootstrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body = async {
        let mut c = Client::connect(&addr).await?;
        c.create_topic_ok("tv2-t", 1).await?;
        c.create_topic_ok("tv2-o", 1).await?;

        // Negotiation: TV2 finalized, the TV2 versions advertised.
        let r = c.send(&ApiVersionsRequest::default(), 3).await?;
        let tv = r.finalized_features.iter().find(|f| f.name.as_str() == "transaction.version");
        ensure!(tv.is_some_and(|f| f.max_version_level == 2), "transaction.version: {:?}", r.finalized_features);
        let max = |k: ApiKey| r.api_keys.iter().find(|a| a.api_key == k as i16).map(|a| a.max_version);
        ensure!(
            (max(ApiKey::EndTxn), max(ApiKey::TxnOffsetCommit), max(ApiKey::Produce)) == (Some(5), Some(5), Some(12)),
            "advertised: {:?}",
            r.api_keys
        );

        // Transaction 1 at epoch 0: Produce v12 and TxnOffsetCommit v5 add implicitly.
        let p0 = init_ok(&mut c, "tv2", 60_000).await?;
        ensure!(p0.1 == 0, "{p0:?}");
        ensure!(produce_code(&mut c, "tv2", p0, 0, "tv2-t", 12).await? == NONE, "Produce v12 adds the partition");
        let d = describe(&mut c, "tv2").await?;
        ensure!(d.transaction_state.as_str() == "Ongoing" && d.topics.len() == 1, "after Produce v12: {d:?}");
        ensure!(d.topics[0].topic.as_str() == "tv2-t" && d.topics[0].partitions == vec![0], "{d:?}");
        ensure!(produce_code(&mut c, "tv2", p0, 2, "tv2-t", 12).await? == NONE, "already added");
        ensure!(txn_offset_commit(&mut c, "tv2", p0, "g-tv2", "tv2-o", 7, 5).await? == NONE, "TxnOffsetCommit v5");
        ensure!(fetch_offset(&mut c, "g-tv2", "tv2-o", true).await? == (UNSTABLE_OFFSET_COMMIT, -1), "pending");

        // EndTxn v5: the bumped epoch comes back; a retry with the old epoch gets the same
        // (or CONCURRENT_TRANSACTIONS while markers are owed).
        let (e, pid, epoch) = end_txn_v5(&mut c, "tv2", p0, true).await?;
        ensure!((e, pid, epoch) == (NONE, p0.0, 1), "EndTxn v5 commit: {:?}", (e, pid, epoch));
        wait_state(&mut c, "tv2", "CompleteCommit").await?;
        ensure!(end_txn_v5(&mut c, "tv2", p0, true).await? == (NONE, p0.0, 1), "retried commit");
        ensure!(fetch_offset(&mut c, "g-tv2", "tv2-o", true).await? == (NONE, 7), "offsets committed");
        let p1 = (pid, epoch);

        // Transaction 2 runs at the new epoch; the old one is fenced.
        ensure!(produce_code(&mut c, "tv2", p0, 4, "tv2-t", 12).await? == INVALID_PRODUCER_EPOCH, "old epoch produce");
        ensure!(produce_code(&mut c, "tv2", p1, 0, "tv2-t", 12).await? == NONE, "new epoch produce");
        ensure!(end_txn_v5(&mut c, "tv2", p0, false).await?.0 == PRODUCER_FENCED, "old epoch EndTxn");
        ensure!(
            txn_offset_commit(&mut c, "tv2", p0, "g-tv2", "tv2-o", 9, 5).await? == INVALID_PRODUCER_EPOCH,
            "old epoch TxnOffsetCommit"
        );
        let (e, _, epoch) = end_txn_v5(&mut c, "tv2", p1, false).await?;
        ensure!((e, epoch) == (NONE, 2), "EndTxn v5 abort: {e} {epoch}");
        // Transaction 3 starts at once, as TV2 producers do: its first batch waits for the
        // abort's markers (the partition owes one) instead of being refused.
        ensure!(produce_code(&mut c, "tv2", (pid, 2), 0, "tv2-t", 12).await? == NONE, "right after EndTxn");
        let d = describe(&mut c, "tv2").await?;
        ensure!(d.transaction_state.as_str() == "Ongoing" && d.producer_epoch == 2, "transaction 3: {d:?}");
        ensure!(end_txn_v5(&mut c, "tv2", (pid, 2), false).await? == (NONE, pid, 3), "EndTxn v5 abort");
        let d = wait_state(&mut c, "tv2", "CompleteAbort").await?;
        ensure!(d.producer_epoch == 3, "{d:?}");
        // A TV2 abort with nothing in the transaction bumps too (Kafka 4.x).
        ensure!(end_txn_v5(&mut c, "tv2", (pid, 3), false).await? == (NONE, pid, 4), "empty abort");

        // TV1 requests keep TV1.
        let q = init_ok(&mut c, "tv1", 60_000).await?;
        ensure!(
            produce_code(&mut c, "tv1", q, 0, "tv2-t", 11).await? == TRANSACTION_ABORTABLE,
            "Produce v11 not added"
        );
        ensure!(produce_code(&mut c, "tv1", q, 0, "tv2-t", 10).await? == INVALID_TXN_STATE, "Produce v10 not added");
        ensure!(txn_offset_commit(&mut c, "tv1", q, "g-tv1", "tv2-o", 1, 4).await? == TRANSACTION_ABORTABLE);
        ensure!(add_partitions_code(&mut c, "tv1", q, &[("tv2-t", 0)], 3).await? == NONE);
        ensure!(produce_code(&mut c, "tv1", q, 0, "tv2-t", 11).await? == NONE, "Produce v11 after the add");
        ensure!(end_txn(&mut c, "tv1", q, true, 4).await? == NONE);
        let d = wait_state(&mut c, "tv1", "CompleteCommit").await?;
        ensure!(d.producer_epoch == q.1, "TV1 keeps the epoch: {d:?}");
        Ok::<_, anyhow::Error>(())
    };
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), body).await })
        .expect("bounded")
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(60)));
}
