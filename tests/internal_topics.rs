//! Internal topics (issue #10): `__consumer_offsets` as clients and tools see it. Black-box,
//! against the `skiff` binary: the raw client for exact codes, Kafka's own `kafka-topics` for
//! what operators see, and a 3-broker cluster for leaders that agree with FindCoordinator.
//!
//! Expectations come from Kafka: Metadata lists it with `is_internal` among all topics and
//! when named (KRaftMetadataCache); its partition `p` holds the groups with
//! `abs(groupId.hashCode) % 50 == p`, so its leader is the group's coordinator; appends and
//! record deletions are refused with INVALID_TOPIC_EXCEPTION (ReplicaManager); CreateTopics
//! answers TOPIC_ALREADY_EXISTS (it exists).

#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::SkiffProcess;
use support::client::{Client, EARLIEST, LATEST, TestRecord, encode_batch, topic_name};
use support::cluster::{Cluster, ClusterSpec};
use support::kafka_cli;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const OFFSETS_TOPIC: &str = "__consumer_offsets";
const OFFSETS_PARTITIONS: usize = 50;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;

async fn bounded<F: Future<Output = anyhow::Result<()>>>(name: &str, broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?}\n{}", broker.stderr_tail(40)),
        Ok(Err(e)) => panic!("{name}: {e:#}\n{}", broker.stderr_tail(40)),
        Ok(Ok(())) => {}
    }
}

/// Java's `String.hashCode` and Kafka's `partitionFor(group)`: `Utils.abs(hash) % 50`, written
/// here independently of the broker's code so the test is an oracle, not a copy.
fn offsets_partition_of(group: &str) -> usize {
    let hash = group.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) as usize % OFFSETS_PARTITIONS
}

/// One group id per `__consumer_offsets` partition (`group-<n>` for the smallest such n).
fn group_per_partition() -> Vec<String> {
    let mut groups: Vec<Option<String>> = vec![None; OFFSETS_PARTITIONS];
    for n in 0..100_000 {
        let g = format!("group-{n}");
        let p = offsets_partition_of(&g);
        if groups[p].is_none() {
            groups[p] = Some(g);
        }
        if groups.iter().all(Option::is_some) {
            break;
        }
    }
    groups.into_iter().map(|g| g.expect("every partition gets a group within 100,000 names")).collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name_of(t: &metadata_response::MetadataResponseTopic) -> String {
    t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default()
}

/// Metadata for all topics at `version` (v0 asks with an empty list, later versions with null).
async fn all_topics(c: &mut Client, version: i16) -> anyhow::Result<MetadataResponse> {
    let topics = if version == 0 { Some(vec![]) } else { None };
    c.send(&MetadataRequest::default().with_topics(topics), version).await
}

/// (leader, leader epoch) of every `__consumer_offsets` partition as Metadata names them.
fn offsets_leaders(md: &MetadataResponse) -> anyhow::Result<Vec<(i32, i32)>> {
    let t = md.topics.iter().find(|t| name_of(t) == OFFSETS_TOPIC).context("no __consumer_offsets in Metadata")?;
    ensure!(t.error_code == 0, "__consumer_offsets: error {}", t.error_code);
    let mut parts: Vec<_> = t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch)).collect();
    parts.sort();
    let indexes: Vec<i32> = parts.iter().map(|p| p.0).collect();
    ensure!(indexes == (0..OFFSETS_PARTITIONS as i32).collect::<Vec<_>>(), "partitions {indexes:?}");
    Ok(parts.into_iter().map(|(_, l, e)| (l, e)).collect())
}

#[tokio::test]
async fn metadata_lists_consumer_offsets_as_internal() {
    let broker = SkiffProcess::start();
    bounded("metadata_lists_consumer_offsets_as_internal", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("plain", 2).await?;
        for version in [0, 1, 4, 9, 10, 12] {
            let md = all_topics(&mut c, version).await?;
            let names: Vec<String> = md.topics.iter().map(name_of).collect();
            ensure!(
                names.iter().filter(|n| *n == OFFSETS_TOPIC).count() == 1 && names.contains(&"plain".to_string()),
                "v{version}: all topics {names:?}"
            );
            for t in &md.topics {
                let internal = name_of(t) == OFFSETS_TOPIC;
                // v0 has no is_internal field.
                ensure!(
                    t.is_internal == (internal && version >= 1),
                    "v{version}: {} is_internal {}",
                    name_of(t),
                    t.is_internal
                );
            }
            let leaders = offsets_leaders(&md)?;
            ensure!(leaders.iter().all(|(l, _)| *l >= 0), "v{version}: leaderless partitions {leaders:?}");
            let t = md.topics.iter().find(|t| name_of(t) == OFFSETS_TOPIC).expect("checked");
            if version >= 10 {
                ensure!(!t.topic_id.is_nil(), "v{version}: __consumer_offsets without a topic id");
            }
        }
        // Named, with auto-creation allowed: described, not created as a regular topic.
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name(OFFSETS_TOPIC)))]))
            .with_allow_auto_topic_creation(true);
        let named = c.send(&req, 12).await?;
        ensure!(named.topics.len() == 1 && named.topics[0].is_internal, "named: {:?}", named.topics);
        ensure!(offsets_leaders(&named)?.len() == OFFSETS_PARTITIONS);
        let all = all_topics(&mut c, 12).await?;
        ensure!(
            all.topics.len() == 2,
            "after a named request with auto-creation: {:?}",
            all.topics.iter().map(name_of).collect::<Vec<_>>()
        );
        // The id is the same in every answer (clients key caches by it).
        let ids: BTreeSet<uuid::Uuid> =
            [&named, &all].iter().flat_map(|m| m.topics.iter().filter(|t| t.is_internal).map(|t| t.topic_id)).collect();
        ensure!(ids.len() == 1, "topic ids {ids:?}");
        // It exists, so it cannot be created.
        let code = c.create_topic(OFFSETS_TOPIC, 50, &[]).await?;
        ensure!(code == TOPIC_ALREADY_EXISTS, "CreateTopics {OFFSETS_TOPIC}: error {code}");
        Ok(())
    })
    .await;
}

/// Metadata v12 by topic id (how a KIP-848 consumer resolves the topics a server-side regex
/// assigned it): regular and internal topics by id, UNKNOWN_TOPIC_ID for others; the names the
/// client leaves empty are ignored and nothing is auto-created.
#[tokio::test]
async fn metadata_by_topic_id() {
    let broker = SkiffProcess::start();
    bounded("metadata_by_topic_id", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("by-id", 3).await?;
        let all = all_topics(&mut c, 12).await?;
        let id_of = |name: &str| all.topics.iter().find(|t| name_of(t) == name).map(|t| t.topic_id);
        let (plain, internal) = (id_of("by-id").context("by-id")?, id_of(OFFSETS_TOPIC).context("internal")?);
        let unknown = uuid::Uuid::from_u128(0x1234);
        // The Java client sends an empty name (its default) next to the id.
        let asked = [plain, internal, unknown]
            .iter()
            .map(|id| MetadataRequestTopic::default().with_name(Some(topic_name(""))).with_topic_id(*id))
            .collect();
        let req = MetadataRequest::default().with_topics(Some(asked)).with_allow_auto_topic_creation(true);
        let r = c.send(&req, 12).await?;
        let got: Vec<(Option<String>, uuid::Uuid, i16, bool, usize)> = r
            .topics
            .iter()
            .map(|t| {
                (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id, t.error_code, t.is_internal, t.partitions.len())
            })
            .collect();
        const UNKNOWN_TOPIC_ID: i16 = 100;
        ensure!(
            got == vec![
                (Some("by-id".to_string()), plain, 0, false, 3),
                (Some(OFFSETS_TOPIC.to_string()), internal, 0, true, OFFSETS_PARTITIONS),
                (None, unknown, UNKNOWN_TOPIC_ID, false, 0),
            ],
            "by id: {got:?}"
        );
        let after = all_topics(&mut c, 12).await?;
        ensure!(after.topics.len() == 2, "topics after: {:?}", after.topics.iter().map(name_of).collect::<Vec<_>>());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn internal_partition_leaders_match_find_coordinator() {
    let broker = SkiffProcess::start();
    bounded("internal_partition_leaders_match_find_coordinator", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let md = all_topics(&mut c, 12).await?;
        let leaders = offsets_leaders(&md)?;
        let groups = group_per_partition();
        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(groups.iter().map(|g| s(g)).collect());
        let found = c.send(&req, 4).await?;
        ensure!(found.coordinators.len() == OFFSETS_PARTITIONS, "{} coordinators", found.coordinators.len());
        for co in &found.coordinators {
            let p = offsets_partition_of(co.key.as_str());
            ensure!(co.error_code == 0, "FindCoordinator {}: error {}", co.key.as_str(), co.error_code);
            ensure!(
                co.node_id.0 == leaders[p].0,
                "group {} (partition {p}): coordinator {} but partition leader {}",
                co.key.as_str(),
                co.node_id.0,
                leaders[p].0
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn writes_to_internal_topics_are_refused() {
    let broker = SkiffProcess::start();
    bounded("writes_to_internal_topics_are_refused", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let md = all_topics(&mut c, 12).await?;
        let id = md.topics.iter().find(|t| t.is_internal).context("no internal topic")?.topic_id;

        let batch = encode_batch(&[TestRecord::new("k", "v", 1_700_000_000_000)], Compression::None, None);
        let r = c.produce(OFFSETS_TOPIC, 3, batch).await?;
        ensure!(r.error_code == INVALID_TOPIC_EXCEPTION, "produce: {r:?}");

        // DeleteTopics by name (v4, v6) and by id (v6).
        let v4 = DeleteTopicsRequest::default().with_topic_names(vec![topic_name(OFFSETS_TOPIC)]).with_timeout_ms(5000);
        let r = c.send(&v4, 4).await?;
        ensure!(r.responses.len() == 1 && r.responses[0].error_code == INVALID_TOPIC_EXCEPTION, "delete v4: {r:?}");
        for state in [
            DeleteTopicState::default().with_name(Some(topic_name(OFFSETS_TOPIC))),
            DeleteTopicState::default().with_topic_id(id),
        ] {
            let v6 = DeleteTopicsRequest::default().with_topics(vec![state]).with_timeout_ms(5000);
            let r = c.send(&v6, 6).await?;
            let t = r.responses.first().context("delete v6: no result")?;
            ensure!(t.error_code == INVALID_TOPIC_EXCEPTION && t.topic_id == id, "delete v6: {r:?}");
            let msg = t.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            ensure!(msg.contains("internal topic"), "delete v6 message: {msg:?}");
        }

        let req = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default().with_name(topic_name(OFFSETS_TOPIC)).with_count(60)])
            .with_timeout_ms(5000);
        let r = c.send(&req, 3).await?;
        ensure!(r.results.len() == 1 && r.results[0].error_code == INVALID_TOPIC_EXCEPTION, "create partitions: {r:?}");

        let req = DeleteRecordsRequest::default()
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(topic_name(OFFSETS_TOPIC))
                    .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(-1)]),
            ])
            .with_timeout_ms(5000);
        let r = c.send(&req, 2).await?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).context("delete records: no result")?;
        ensure!(p.error_code == INVALID_TOPIC_EXCEPTION && p.low_watermark == -1, "delete records: {r:?}");

        // Still there, unchanged.
        let after = all_topics(&mut c, 12).await?;
        ensure!(offsets_leaders(&after)?.len() == OFFSETS_PARTITIONS, "after the refused writes");
        let log = broker.stderr_tail(200);
        for why in ["produce refused", "delete refused", "create partitions refused", "delete records refused"] {
            ensure!(log.contains(why), "no `{why}` log line");
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn reads_of_internal_topics_answer_an_empty_log() {
    let broker = SkiffProcess::start();
    bounded("reads_of_internal_topics_answer_an_empty_log", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        // One node leads every partition.
        for p in [0, 17, 49] {
            let f = c.fetch(OFFSETS_TOPIC, p, 0, 0, 0).await?;
            ensure!(f.error_code == 0, "fetch {p} at 0: error {}", f.error_code);
            ensure!(f.high_watermark == 0 && f.log_start_offset == 0, "fetch {p}: {f:?}");
            ensure!(f.records.as_ref().is_none_or(|r| r.is_empty()), "fetch {p}: records");
            let f = c.fetch(OFFSETS_TOPIC, p, 5, 0, 0).await?;
            ensure!(f.error_code == OFFSET_OUT_OF_RANGE, "fetch {p} at 5: error {}", f.error_code);
            for (what, ts) in [("earliest", EARLIEST), ("latest", LATEST)] {
                let (error, offset, _) = c.list_offset(OFFSETS_TOPIC, p, ts).await?;
                ensure!(error == 0 && offset == 0, "ListOffsets {what} {p}: error {error} offset {offset}");
            }
        }
        // OffsetForLeaderEpoch (clients validate positions after a leader change): the current
        // epoch ends at the log end.
        let epoch = offsets_leaders(&all_topics(&mut c, 12).await?)?[7].1;
        let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic_name(OFFSETS_TOPIC))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(7)
                        .with_current_leader_epoch(epoch)
                        .with_leader_epoch(epoch),
                ]),
        ]);
        let r = c.send(&req, 4).await?;
        let p = r.topics.first().and_then(|t| t.partitions.first()).context("OffsetForLeaderEpoch: no partition")?;
        ensure!(p.error_code == 0 && p.leader_epoch == epoch && p.end_offset == 0, "OffsetForLeaderEpoch: {p:?}");
        let f = c.fetch(OFFSETS_TOPIC, 50, 0, 0, 0).await?;
        ensure!(f.error_code == UNKNOWN_TOPIC_OR_PARTITION, "fetch partition 50: error {}", f.error_code);
        let (error, _, _) = c.list_offset(OFFSETS_TOPIC, 50, LATEST).await?;
        ensure!(error == UNKNOWN_TOPIC_OR_PARTITION, "ListOffsets partition 50: error {error}");
        Ok(())
    })
    .await;
}

/// Pages of DescribeTopicPartitions from `cursor` on, `limit` partitions each, until no cursor:
/// (topic, partition) → (leader, epoch), and which topics were internal.
async fn describe_all(
    c: &mut Client,
    topics: &[&str],
    limit: i32,
) -> anyhow::Result<(BTreeMap<(String, i32), (i32, i32)>, BTreeSet<String>, usize)> {
    let mut out = BTreeMap::new();
    let mut internal = BTreeSet::new();
    let mut cursor: Option<Cursor> = None;
    for page in 1..=100 {
        let req = DescribeTopicPartitionsRequest::default()
            .with_topics(topics.iter().map(|t| TopicRequest::default().with_name(topic_name(t))).collect())
            .with_response_partition_limit(limit)
            .with_cursor(cursor.take());
        let r = c.send(&req, 0).await?;
        let mut returned = 0;
        for t in &r.topics {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            ensure!(t.error_code == 0, "{name}: error {}", t.error_code);
            if t.is_internal {
                internal.insert(name.clone());
            }
            for p in &t.partitions {
                returned += 1;
                let fresh = out.insert((name.clone(), p.partition_index), (p.leader_id.0, p.leader_epoch)).is_none();
                ensure!(fresh, "{name}-{} returned twice", p.partition_index);
            }
        }
        ensure!(returned <= limit as usize, "page {page}: {returned} partitions over the limit {limit}");
        match r.next_cursor {
            None => return Ok((out, internal, page)),
            Some(next) => {
                cursor =
                    Some(Cursor::default().with_topic_name(next.topic_name).with_partition_index(next.partition_index))
            }
        }
    }
    bail!("more than 100 pages")
}

#[tokio::test]
async fn describe_topic_partitions_pages_through_regular_and_internal_topics() {
    let broker = SkiffProcess::start();
    bounded("describe_topic_partitions_pages_through_regular_and_internal_topics", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("dtp-a", 3).await?;
        c.create_topic_ok("dtp-b", 1).await?;
        let md = all_topics(&mut c, 12).await?;
        let mut expected = BTreeMap::new();
        for t in &md.topics {
            for p in &t.partitions {
                expected.insert((name_of(t), p.partition_index), (p.leader_id.0, p.leader_epoch));
            }
        }
        ensure!(expected.len() == OFFSETS_PARTITIONS + 4, "{} partitions in Metadata", expected.len());
        // All topics in pages of 20: 54 partitions take 3 pages; then all at once.
        let (paged, internal, pages) = describe_all(&mut c, &[], 20).await?;
        ensure!(paged == expected, "paged answer differs from Metadata:\n{paged:?}\n{expected:?}");
        ensure!(internal == BTreeSet::from([OFFSETS_TOPIC.to_string()]), "internal topics {internal:?}");
        ensure!(pages == 3, "{pages} pages of 20 for 54 partitions");
        let (whole, _, pages) = describe_all(&mut c, &[], 2000).await?;
        ensure!(whole == expected && pages == 1, "one page: {pages} pages");
        // Named topics, an unknown one among them.
        let req = DescribeTopicPartitionsRequest::default().with_topics(
            ["dtp-b", "nope", OFFSETS_TOPIC].iter().map(|t| TopicRequest::default().with_name(topic_name(t))).collect(),
        );
        let r = c.send(&req, 0).await?;
        let codes: Vec<(String, i16, usize)> = r
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(), t.error_code, t.partitions.len()))
            .collect();
        ensure!(
            codes
                == vec![
                    (OFFSETS_TOPIC.to_string(), 0, OFFSETS_PARTITIONS),
                    ("dtp-b".to_string(), 0, 1),
                    ("nope".to_string(), UNKNOWN_TOPIC_OR_PARTITION, 0),
                ],
            "named: {codes:?}"
        );
        Ok(())
    })
    .await;
}

/// `kafka-topics --bootstrap-server <addr> <args>`, which must succeed; its stdout.
fn kafka_topics(bootstrap: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--bootstrap-server", bootstrap];
    all.extend_from_slice(args);
    kafka_cli::run(kafka_cli::TOPIC_COMMAND, &all)?.ok(&format!("kafka-topics {args:?}"))
}

#[test]
fn kafka_topics_lists_and_describes_internal_topics() {
    let broker = SkiffProcess::start();
    let run = || -> anyhow::Result<()> {
        let addr = broker.bootstrap();
        kafka_topics(addr, &["--create", "--topic", "cli-plain", "--partitions", "2"])?;
        // Kafka's rule: internal topics are listed unless --exclude-internal.
        let listed: Vec<String> = kafka_topics(addr, &["--list"])?.lines().map(str::to_string).collect();
        ensure!(listed == ["__consumer_offsets", "cli-plain"], "--list: {listed:?}");
        let listed: Vec<String> =
            kafka_topics(addr, &["--list", "--exclude-internal"])?.lines().map(str::to_string).collect();
        ensure!(listed == ["cli-plain"], "--list --exclude-internal: {listed:?}");

        let described = kafka_topics(addr, &["--describe", "--topic", OFFSETS_TOPIC])?;
        ensure!(described.contains("PartitionCount: 50"), "--describe:\n{described}");
        ensure!(described.contains("cleanup.policy=compact"), "--describe configs:\n{described}");
        let partitions: BTreeSet<i32> = described
            .lines()
            .filter_map(|l| l.split("Partition: ").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        ensure!(partitions == (0..50).collect(), "--describe partitions {partitions:?}:\n{described}");
        ensure!(!described.contains("Leader: none"), "leaderless partitions:\n{described}");
        let all = kafka_topics(addr, &["--describe", "--exclude-internal"])?;
        ensure!(!all.contains(OFFSETS_TOPIC) && all.contains("cli-plain"), "--describe --exclude-internal:\n{all}");

        // Deleting it is refused, and the tool says why.
        let out = kafka_cli::run(
            kafka_cli::TOPIC_COMMAND,
            &["--bootstrap-server", addr, "--delete", "--topic", OFFSETS_TOPIC],
        )?;
        let said = format!("{}{}", out.stdout, out.stderr);
        ensure!(!out.success && said.contains("internal topic"), "--delete {OFFSETS_TOPIC}: {said}");
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}\n{}", broker.stderr_tail(40));
    }
}

/// In a cluster every broker names the same `__consumer_offsets` leaders, and each is the
/// coordinator FindCoordinator names for the groups of that partition.
#[test]
fn internal_partition_leaders_agree_across_a_cluster() {
    let cluster = Cluster::start(ClusterSpec::new("internal-topics", 1, 3));
    let groups = group_per_partition();
    let addrs: Vec<String> = cluster.broker_refs().into_iter().filter_map(|b| cluster.kafka_addr(b)).collect();
    assert_eq!(addrs.len(), 3, "broker addresses {addrs:?}");
    let result: anyhow::Result<()> = cluster.block_on(async {
        // Shards are spread once every broker has registered: wait until all three lead some.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut views = Vec::new();
            for addr in &addrs {
                let mut c = Client::connect(addr).await?;
                let md = all_topics(&mut c, 12).await?;
                let req = FindCoordinatorRequest::default()
                    .with_key_type(0)
                    .with_coordinator_keys(groups.iter().map(|g| s(g)).collect());
                let found = c.send(&req, 4).await?;
                let coordinators: Vec<(i32, i16)> =
                    found.coordinators.iter().map(|c| (c.node_id.0, c.error_code)).collect();
                views.push((offsets_leaders(&md)?, coordinators));
            }
            let (leaders, _) = &views[0];
            let owners: BTreeSet<i32> = leaders.iter().map(|(l, _)| *l).collect();
            let agree = views.iter().all(|(l, _)| l == leaders);
            let coordinated = views
                .iter()
                .all(|(_, cs)| cs.iter().enumerate().all(|(p, (node, error))| *error == 0 && *node == leaders[p].0));
            if agree && coordinated && owners.len() == 3 {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "brokers never agreed within 60 s: {views:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    if let Err(e) = result {
        let logs: Vec<String> = cluster.broker_refs().into_iter().map(|b| cluster.log_tail(b, 20)).collect();
        panic!("{e:#}\n{}", logs.join("\n"));
    }
}
