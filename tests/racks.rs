//! Racks (issue #17, RFC 0005): 3 `skiff controller` + 3 `skiff broker` processes on loopback
//! with MinIO (`support::cluster`), one broker per rack (`ClusterSpec::with_racks`).
//!
//! - `every_broker_reports_every_rack`: Metadata and DescribeCluster from each broker name
//!   every broker's rack (`--rack`, carried in its registration).
//! - `leader_points_a_consumer_at_its_racks_broker`: raw Fetch (KIP-392). With racks every live
//!   broker is an in-sync replica in Metadata; the leader answers a consumer of another rack
//!   with no records and `preferred_read_replica` = that rack's broker, which serves the same
//!   bytes and offsets; a consumer of the leader's rack, without a rack, before v11, and a
//!   replica fetch are not redirected (and the latter two are refused by a follower).
//! - `every_broker_reports_the_same_offsets`: an aborted and an open transaction; every broker
//!   serves read_committed and read_uncommitted with the same high watermark, LSO, log start,
//!   aborted transactions and bytes, before and after the commit; a follower fetch right after
//!   the leader's acknowledgement waits for its image instead of failing (prints the
//!   acknowledgement → follower read latency).
//! - `consumers_in_each_rack_read_only_from_their_rack`: librdkafka (python-confluent) and Java
//!   (Kafka's console consumer) consumers with `client.rack` in each rack read every record in
//!   order, and every broker's `skiff_client_bytes_total` shows fetch bytes only to its own
//!   rack's consumers.
//!
//! The tests of this file run one at a time (each starts six processes). Every loop is bounded
//! in count and time; waits poll for a condition with a deadline.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, DescribeClusterRequest, EndTxnRequest, FetchRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ProduceRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use support::client::{Client, TestRecord, decode_batches, encode_batch, topic_name};
use support::cluster::{Cluster, ClusterSpec, NodeRef, http_get, percentile};

/// One cluster at a time: each test starts six processes on a shared two-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const RACKS: [&str; 3] = ["az-a", "az-b", "az-c"];
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn three_racks(name: &str) -> Cluster {
    Cluster::start(ClusterSpec::new(name, 3, 3).with_racks(&RACKS))
}

/// broker id → rack, as the harness started them.
fn expected_racks(cluster: &Cluster) -> BTreeMap<i32, Option<String>> {
    cluster.broker_refs().into_iter().map(|b| (b.id(), cluster.rack_of(b).map(str::to_string))).collect()
}

fn addr(cluster: &Cluster, id: i32) -> String {
    cluster.kafka_addr(NodeRef::Broker(id)).expect("running broker")
}

fn rack(cluster: &Cluster, id: i32) -> &str {
    cluster.rack_of(NodeRef::Broker(id)).expect("a rack")
}

/// How a test fetch is sent.
#[derive(Debug, Clone, Copy)]
struct Ask<'a> {
    version: i16,
    rack: &'a str,
    isolation: i8,
    /// -1: a consumer.
    replica_id: i32,
    max_wait_ms: i32,
    min_bytes: i32,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Ask { version: 12, rack: "", isolation: READ_UNCOMMITTED, replica_id: -1, max_wait_ms: 0, min_bytes: 0 }
    }
}

/// One Fetch of one partition.
async fn fetch(
    c: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    ask: Ask<'_>,
) -> anyhow::Result<PartitionData> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(ask.replica_id))
        .with_max_wait_ms(ask.max_wait_ms)
        .with_min_bytes(ask.min_bytes)
        .with_max_bytes(8 << 20)
        .with_isolation_level(ask.isolation)
        .with_rack_id(StrBytes::from_string(ask.rack.to_string()))
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(4 << 20),
            ])]);
    let resp = c.send(&req, ask.version).await?;
    ensure!(resp.error_code == 0, "fetch: top-level error {}", resp.error_code);
    resp.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next()).context("no partition in the fetch")
}

fn records_of(p: &PartitionData) -> Bytes {
    p.records.clone().unwrap_or_default()
}

/// A partition's (leader, replicas, isr) in Metadata.
type Layout = (i32, Vec<i32>, Vec<i32>);

/// Each partition's [`Layout`], from `addr`'s Metadata.
fn leaders(cluster: &Cluster, addr: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, Layout>> {
    let (addr, topic) = (addr.to_string(), topic.to_string());
    cluster.block_on(async move {
        let mut c = Client::connect(&addr).await?;
        let m = c.metadata(Some(&[topic.as_str()])).await?;
        let t = m.topics.into_iter().next().context("no topic")?;
        Ok(t.partitions
            .iter()
            .map(|p| {
                let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
                (p.partition_index, (p.leader_id.0, ids(&p.replica_nodes), ids(&p.isr_nodes)))
            })
            .collect())
    })
}

#[test]
fn every_broker_reports_every_rack() {
    let _one = serial();
    let cluster = three_racks("racks-report");
    let want = expected_racks(&cluster);
    assert_eq!(want.values().flatten().count(), 3, "the harness gives each broker a rack");
    for b in cluster.broker_refs() {
        let addr = cluster.kafka_addr(b).expect("running broker");
        let deadline = Instant::now() + Duration::from_secs(20);
        // A broker learns the others' registrations from its image: poll until it has all.
        let (metadata, described) = loop {
            let got: anyhow::Result<_> = cluster.block_on(async {
                let mut c = Client::connect(&addr).await?;
                let m = c.metadata(None).await?;
                let d = c.send(&DescribeClusterRequest::default(), 0).await?;
                let m: BTreeMap<i32, Option<String>> =
                    m.brokers.iter().map(|b| (b.node_id.0, b.rack.as_ref().map(|r| r.to_string()))).collect();
                let d: BTreeMap<i32, Option<String>> =
                    d.brokers.iter().map(|b| (b.broker_id.0, b.rack.as_ref().map(|r| r.to_string()))).collect();
                Ok((m, d))
            });
            match got {
                Ok((m, d)) if m == want && d == want => break (m, d),
                other if Instant::now() > deadline => {
                    panic!("{b} at {addr}: wanted racks {want:?}, got {:?}", other.context("last answer"))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert_eq!(metadata, described);
    }
}

#[test]
fn leader_points_a_consumer_at_its_racks_broker() {
    let _one = serial();
    let mut cluster = three_racks("racks-preferred");
    let topic = "preferred";
    cluster.create_topic(topic, 3).expect("create topic");
    let brokers: Vec<i32> = cluster.broker_refs().into_iter().map(|b| b.id()).collect();
    let layout = leaders(&cluster, &addr(&cluster, brokers[0]), topic).expect("metadata");
    for (p, (leader, replicas, isr)) in &layout {
        assert_eq!(replicas.first(), Some(leader), "partition {p}: the leader is the first replica");
        let mut all = replicas.clone();
        all.sort_unstable();
        assert_eq!(all, brokers, "partition {p}: with racks every live broker is a replica");
        assert_eq!(isr, replicas, "partition {p}: and in sync");
    }
    for (&p, (leader, _, _)) in &layout {
        let leader = *leader;
        let batch = encode_batch(
            &(0..10)
                .map(|i| TestRecord::new(format!("k{i}"), format!("p{p}-v{i}"), 1_700_000_000_000 + i))
                .collect::<Vec<_>>(),
            Compression::None,
            None,
        );
        let leader_addr = addr(&cluster, leader);
        let checked: anyhow::Result<()> = cluster.block_on(async {
            let mut l = Client::connect(&leader_addr).await?;
            l.produce_ok(topic, p, batch).await?;
            // The leader's own rack, no rack, an unknown rack: served by the leader.
            let own = rack(&cluster, leader);
            for r in [own, "", "az-nowhere"] {
                let got = fetch(&mut l, topic, p, 0, Ask { rack: r, ..Ask::default() }).await?;
                ensure!(got.error_code == 0, "leader {leader}, rack {r:?}: error {}", got.error_code);
                ensure!(got.preferred_read_replica.0 == -1, "leader {leader}, rack {r:?}: redirected");
                ensure!(decode_batches(records_of(&got))?.len() == 1, "leader {leader}, rack {r:?}: no records");
            }
            let from_leader = fetch(&mut l, topic, p, 0, Ask { rack: own, ..Ask::default() }).await?;
            for &b in brokers.iter().filter(|b| **b != leader) {
                let r = rack(&cluster, b);
                // Kafka's RackAwareReplicaSelector: no records, the offsets, the rack's broker.
                let got = fetch(&mut l, topic, p, 0, Ask { rack: r, ..Ask::default() }).await?;
                ensure!(got.error_code == 0, "leader {leader} for rack {r}: error {}", got.error_code);
                ensure!(
                    got.preferred_read_replica.0 == b,
                    "leader {leader} for a consumer in {r}: preferred_read_replica {}, expected {b}",
                    got.preferred_read_replica.0
                );
                ensure!(records_of(&got).is_empty(), "a redirect carries no records");
                ensure!(
                    (got.high_watermark, got.last_stable_offset, got.log_start_offset) == (10, 10, 0),
                    "redirect offsets {:?}",
                    (got.high_watermark, got.last_stable_offset, got.log_start_offset)
                );
                // The rack's broker serves what the leader serves (its image may lag: wait).
                let mut f = Client::connect(&addr(&cluster, b)).await?;
                let ask = Ask { rack: r, max_wait_ms: 5_000, min_bytes: 1, ..Ask::default() };
                let served = fetch(&mut f, topic, p, 0, ask).await?;
                ensure!(served.error_code == 0, "follower {b}: error {}", served.error_code);
                ensure!(served.preferred_read_replica.0 == -1, "a follower never redirects");
                ensure!(records_of(&served) == records_of(&from_leader), "follower {b} served other bytes");
                ensure!(
                    (served.high_watermark, served.last_stable_offset, served.log_start_offset) == (10, 10, 0),
                    "follower {b} offsets"
                );
                // Before v11 (no rack, Kafka's fetchOnlyLeader) and from a replica: the leader only.
                for ask in [Ask { version: 10, ..Ask::default() }, Ask { replica_id: b, rack: r, ..Ask::default() }] {
                    let got = fetch(&mut f, topic, p, 0, ask).await?;
                    ensure!(
                        got.error_code == NOT_LEADER_OR_FOLLOWER,
                        "follower {b}, {ask:?}: error {}",
                        got.error_code
                    );
                }
            }
            Ok(())
        });
        checked.unwrap_or_else(|e| panic!("partition {p} (leader {leader}): {e:#}"));
    }
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// A transactional batch of `n` records from sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
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
            key: Some(Bytes::from(format!("t{seq}-{i}"))),
            value: Some(Bytes::from(format!("txn-{seq}-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.freeze()
}

/// Sends `req` until `code` of its answer is not a retriable coordinator code (bounded).
async fn send_retrying<R: Request>(
    c: &mut Client,
    req: &R,
    version: i16,
    code: impl Fn(&R::Response) -> i16,
) -> anyhow::Result<R::Response> {
    // NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS
    for _ in 0..200 {
        let r = c.send(req, version).await?;
        match code(&r) {
            0 => return Ok(r),
            14 | 15 | 16 | 51 => tokio::time::sleep(Duration::from_millis(25)).await,
            other => bail!("API {} answered {other}", R::KEY),
        }
    }
    bail!("API {} still retriable after 200 tries", R::KEY)
}

/// A transactional producer's coordinator connection, pid and epoch.
async fn init_transactions(any: &str, id: &str) -> anyhow::Result<(Client, i64, i16)> {
    let mut c = Client::connect(any).await?;
    let find = FindCoordinatorRequest::default().with_key(StrBytes::from_string(id.to_string())).with_key_type(1);
    let found = send_retrying(&mut c, &find, 3, |r| r.error_code).await?;
    let mut c = Client::connect(&format!("{}:{}", found.host.as_str(), found.port)).await?;
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r = send_retrying(&mut c, &init, 4, |r| r.error_code).await?;
    Ok((c, r.producer_id.0, r.producer_epoch))
}

/// AddPartitionsToTxn, then one transactional batch of `n` records to the leader.
async fn txn_write(
    coordinator: &mut Client,
    leader: &mut Client,
    id: &str,
    (pid, epoch): (i64, i16),
    topic: &str,
    seq: i32,
    n: usize,
) -> anyhow::Result<()> {
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(id))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default().with_name(topic_name(topic)).with_partitions(vec![0]),
        ]);
    send_retrying(coordinator, &add, 3, |r| {
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code))
            .find(|&c| c != 0)
            .unwrap_or(0)
    })
    .await?;
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(txn_batch(pid, epoch, seq, n))),
        ])]);
    let r = leader.send(&produce, 9).await?;
    let code = r.responses.first().and_then(|t| t.partition_responses.first()).map_or(-1, |p| p.error_code);
    ensure!(code == 0, "transactional produce answered {code}");
    Ok(())
}

async fn end_txn(coordinator: &mut Client, id: &str, (pid, epoch): (i64, i16), commit: bool) -> anyhow::Result<()> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id(id))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    send_retrying(coordinator, &req, 3, |r| r.error_code).await.map(|_| ())
}

/// What a broker reports for partition 0 at offset 0: (hwm, lso, log start, aborted, bytes).
type Report = (i64, i64, i64, Vec<(i64, i64)>, Bytes);

/// Each broker's answer to the same fetch (in its own rack, so the leader serves it too), once
/// all agree and the answer is `done` (a follower's image may lag a little, and transaction
/// markers are written after EndTxn returns); fails if not so after 10 s.
fn same_everywhere(cluster: &Cluster, topic: &str, isolation: i8, done: impl Fn(&Report) -> bool) -> Report {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reports: anyhow::Result<Vec<(i32, Report)>> = cluster.block_on(async {
            let mut out = Vec::new();
            for b in cluster.broker_refs() {
                let mut c = Client::connect(&cluster.kafka_addr(b).expect("running")).await?;
                let r = cluster.rack_of(b).expect("rack");
                let p = fetch(&mut c, topic, 0, 0, Ask { rack: r, isolation, ..Ask::default() }).await?;
                ensure!(p.error_code == 0 && p.preferred_read_replica.0 == -1, "{b}: {p:?}");
                let aborted = p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect::<Vec<_>>();
                let report = (p.high_watermark, p.last_stable_offset, p.log_start_offset, aborted, records_of(&p));
                out.push((b.id(), report));
            }
            Ok(out)
        });
        let reports = reports.expect("fetch from every broker");
        if reports.windows(2).all(|w| w[0].1 == w[1].1) && done(&reports[0].1) {
            return reports.into_iter().next().expect("three brokers").1;
        }
        assert!(Instant::now() < deadline, "brokers disagree or are not done after 10 s: {reports:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_broker_reports_the_same_offsets() {
    let _one = serial();
    let mut cluster = three_racks("racks-offsets");
    let topic = "offsets";
    cluster.create_topic(topic, 1).expect("create topic");
    let brokers: Vec<i32> = cluster.broker_refs().into_iter().map(|b| b.id()).collect();
    let (leader, _, _) = leaders(&cluster, &addr(&cluster, brokers[0]), topic).expect("metadata")[&0].clone();
    let follower = *brokers.iter().find(|b| **b != leader).expect("a follower");
    let plain = |n: usize, tag: &str| {
        encode_batch(
            &(0..n)
                .map(|i| TestRecord::new(format!("{tag}{i}"), format!("{tag}-v{i}"), 1_700_000_000_000))
                .collect::<Vec<_>>(),
            Compression::None,
            None,
        )
    };
    // 5 plain, 3 aborted, 2 plain, 2 in a transaction left open.
    let (leader_addr, any) = (addr(&cluster, leader), addr(&cluster, brokers[0]));
    let mut coordinator = cluster
        .block_on(async {
            let mut l = Client::connect(&leader_addr).await?;
            l.produce_ok(topic, 0, plain(5, "a")).await?;
            let (mut c, pid, epoch) = init_transactions(&any, "racks-aborted").await?;
            txn_write(&mut c, &mut l, "racks-aborted", (pid, epoch), topic, 0, 3).await?;
            end_txn(&mut c, "racks-aborted", (pid, epoch), false).await?;
            l.produce_ok(topic, 0, plain(2, "b")).await?;
            let (mut c, pid, epoch) = init_transactions(&any, "racks-open").await?;
            txn_write(&mut c, &mut l, "racks-open", (pid, epoch), topic, 0, 2).await?;
            anyhow::Ok((c, pid, epoch))
        })
        .expect("write the log");
    let committed = same_everywhere(&cluster, topic, READ_COMMITTED, |r| r.0 == 13);
    let uncommitted = same_everywhere(&cluster, topic, READ_UNCOMMITTED, |r| r.0 == 13);
    // 5 + 3 + abort marker + 2 + 2 open = 13; the LSO is the open transaction's first offset.
    assert_eq!((committed.0, committed.1, committed.2), (13, 11, 0), "read_committed offsets");
    assert_eq!(committed.3.len(), 1, "the aborted transaction: {:?}", committed.3);
    assert_eq!(committed.3[0].1, 5, "it began at offset 5");
    assert_eq!((uncommitted.0, uncommitted.1), (13, 11));
    let id = "racks-open";
    cluster
        .block_on(async { end_txn(&mut coordinator.0, id, (coordinator.1, coordinator.2), true).await })
        .expect("commit");
    let after = same_everywhere(&cluster, topic, READ_COMMITTED, |r| r.0 == 14);
    assert_eq!((after.0, after.1), (14, 14), "after the commit marker the LSO is the high watermark");

    // Freshness: a follower asked right after the leader's acknowledgement for what it just
    // wrote waits for its image, then serves it (never an error the consumer must act on).
    let (follower_addr, r) = (addr(&cluster, follower), rack(&cluster, follower).to_string());
    let lags: Vec<Duration> = cluster
        .block_on(async {
            let mut l = Client::connect(&leader_addr).await?;
            let mut f = Client::connect(&follower_addr).await?;
            let mut lags = Vec::new();
            for i in 0..30 {
                let base = l.produce_ok(topic, 0, plain(3, &format!("f{i}-"))).await?;
                let acked = Instant::now();
                let ask = Ask { rack: &r, max_wait_ms: 5_000, min_bytes: 1, ..Ask::default() };
                let got = fetch(&mut f, topic, 0, base, ask).await?;
                lags.push(acked.elapsed());
                ensure!(got.error_code == 0, "follower fetch at {base} right after the ack: error {}", got.error_code);
                let first = decode_batches(records_of(&got))?.into_iter().next().context("no records")?;
                ensure!(first.base_offset == base, "follower served {} for {base}", first.base_offset);
                ensure!(got.high_watermark >= base + 3, "follower high watermark {}", got.high_watermark);
            }
            anyhow::Ok(lags)
        })
        .expect("follower reads");
    let mut sorted = lags.clone();
    sorted.sort();
    eprintln!(
        "racks: leader ack -> follower fetch returned: n={} p50={:?} p99={:?} max={:?}",
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().expect("30")
    );
}

/// `tests/compat/python-confluent/run.sh` in `mode` against the cluster, as a client in `rack`.
fn run_confluent(bootstrap: &str, topic: &str, mode: &str, records: u32, rack: Option<&str>) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(support::compat::run_sh("python-confluent"))
        .env("BOOTSTRAP", bootstrap)
        .env("TOPIC", topic)
        .env("MODE", mode)
        .env("RECORDS", records.to_string())
        .stdin(Stdio::null());
    if let Some(r) = rack {
        cmd.env("COMPAT_CLIENT_RACK", r);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run python-confluent (tests/compat/setup.sh python-confluent)");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains("compat python-confluent ok"),
        "python-confluent {mode} (rack {rack:?}) failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("python-confluent {mode} rack {rack:?}: {:.1?}", started.elapsed());
    stdout
}

/// `skiff_client_bytes_total{direction="out"}` of a broker: (client rack, same_rack) → bytes.
fn fetched_by_rack(body: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("skiff_client_bytes_total{direction=\"out\"")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).map(|i| i + name.len() + 2)?;
            line[start..].split('"').next().map(str::to_string)
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if let (Some(rack), Some(same)) = (label("client_rack"), label("same_rack")) {
            *out.entry((rack, same)).or_default() += value;
        }
    }
    out
}

#[test]
fn consumers_in_each_rack_read_only_from_their_rack() {
    let _one = serial();
    let cluster = three_racks("racks-clients");
    let topic = "rack-consumers";
    let records = 3_000;
    let bootstrap = cluster.bootstrap();
    // Creates the topic (3 partitions, one leader per rack) and produces; its own check reads
    // without a rack.
    run_confluent(&bootstrap, topic, "produce", records, None);
    for r in RACKS {
        // Reads every record of every partition in order (offsets, keys, values, headers).
        run_confluent(&bootstrap, topic, "verify", records, Some(r));
    }
    let by_librdkafka = served_per_rack(&cluster);
    for r in RACKS {
        let got = by_librdkafka.get(r).copied().unwrap_or(0.0);
        assert!(got > 0.0, "no bytes served to the librdkafka consumer in {r}: {by_librdkafka:?}");
    }
    // Java kafka-clients 4.4 (Kafka's console consumer, in a group), which follows a preferred
    // read replica only to one of the partition's replicas in Metadata.
    for r in RACKS {
        let out = support::kafka_cli::run_with_timeout(
            support::kafka_cli::CONSOLE_CONSUMER,
            &[
                "--bootstrap-server",
                &bootstrap,
                "--topic",
                topic,
                "--from-beginning",
                "--max-messages",
                &records.to_string(),
                "--timeout-ms",
                "60000",
                "--consumer-property",
                &format!("client.rack={r}"),
                "--property",
                "print.partition=true",
                "--property",
                "print.offset=true",
                "--property",
                "print.value=false",
            ],
            Duration::from_secs(120),
        )
        .and_then(|o| o.ok("ConsoleConsumer"))
        .unwrap_or_else(|e| panic!("Java consumer in {r}: {e:#}"));
        let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for line in out.lines() {
            let field = |name: &str| line.split('\t').find_map(|f| f.trim().strip_prefix(name)?.parse::<i64>().ok());
            if let (Some(p), Some(o)) = (field("Partition:"), field("Offset:")) {
                offsets.entry(p as i32).or_default().push(o);
            }
        }
        let total: usize = offsets.values().map(Vec::len).sum();
        assert_eq!(total, records as usize, "Java consumer in {r} read {total} records");
        for (p, o) in &offsets {
            assert!(o.iter().copied().eq(0..o.len() as i64), "Java consumer in {r}: partition {p} out of order");
        }
    }
    let after_java = served_per_rack(&cluster);
    for r in RACKS {
        let (before, after) = (by_librdkafka[r], after_java.get(r).copied().unwrap_or(0.0));
        assert!(after > before, "no bytes served to the Java consumer in {r}: {before} -> {after}");
    }
}

/// Fetched bytes each rack's consumers got from their own rack's broker, asserting that no
/// broker sent any to a consumer of another rack.
fn served_per_rack(cluster: &Cluster) -> BTreeMap<String, f64> {
    let mut served = BTreeMap::new();
    for b in cluster.broker_refs() {
        let body = http_get(&cluster.http_base(b).expect("http"), "/metrics").expect("metrics");
        let by_rack = fetched_by_rack(&body);
        eprintln!(
            "{b} ({}): fetched bytes by (client rack, same rack): {by_rack:?}",
            cluster.rack_of(b).unwrap_or("-")
        );
        for ((client_rack, same), bytes) in &by_rack {
            assert!(
                same != "false",
                "{b} in {:?} sent {bytes} record bytes to a consumer in {client_rack}",
                cluster.rack_of(b)
            );
            if same == "true" {
                *served.entry(client_rack.clone()).or_default() += *bytes;
            }
        }
    }
    served
}
