//! KIP-848 consumer groups (`group.protocol=consumer`) against the `skiff` binary with the
//! minimal client: ConsumerGroupHeartbeat reconciliation (revoke before assign), the member
//! epoch checks of OffsetCommit / OffsetFetch v9, ConsumerGroupDescribe, ListGroups v5, the
//! classic/consumer exclusion, leaving and deletion, and that a group survives a restart with
//! its members' epochs and partitions.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, topic_name};
use uuid::Uuid;

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const NONE: i16 = 0;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_REQUEST: i16 = 42;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;

/// A short heartbeat interval keeps the test quick; sessions stay long.
const CONFIG: &str = "[groups]\nconsumer_heartbeat_interval_ms = 1000\n";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

async fn bounded<F: std::future::Future<Output = anyhow::Result<()>>>(name: &str, broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?} (broker {})", broker.bootstrap()),
        Ok(Err(e)) => panic!("{name}: {e:#}\n{}", broker.stderr_tail(30)),
        Ok(Ok(())) => {}
    }
}

type Owned = BTreeMap<Uuid, BTreeSet<i32>>;

fn owned_list(owned: &Owned) -> Vec<consumer_group_heartbeat_request::TopicPartitions> {
    owned
        .iter()
        .map(|(t, ps)| {
            consumer_group_heartbeat_request::TopicPartitions::default()
                .with_topic_id(*t)
                .with_partitions(ps.iter().copied().collect())
        })
        .collect()
}

/// A consumer-protocol member as the Java client drives one.
struct Member {
    group: String,
    id: String,
    epoch: i32,
    owned: Owned,
}

impl Member {
    fn new(group: &str, id: &str) -> Self {
        Self { group: group.into(), id: id.into(), epoch: 0, owned: Owned::new() }
    }

    fn join_request(&self, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group(&self.group))
            .with_member_id(s(&self.id))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(topics.iter().map(|t| topic_name(t)).collect()))
            .with_topic_partitions(Some(vec![]))
    }

    fn heartbeat_request(&self) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group(&self.group))
            .with_member_id(s(&self.id))
            .with_member_epoch(self.epoch)
            .with_topic_partitions(Some(owned_list(&self.owned)))
    }

    fn apply(&mut self, r: &ConsumerGroupHeartbeatResponse) -> anyhow::Result<()> {
        ensure!(r.error_code == NONE, "{}: heartbeat failed: {r:?}", self.id);
        self.epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            self.owned =
                a.topic_partitions.iter().map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect())).collect();
        }
        Ok(())
    }

    async fn join(&mut self, c: &mut Client, topics: &[&str]) -> anyhow::Result<()> {
        let r = c.send(&self.join_request(topics), 1).await?;
        self.apply(&r)
    }

    async fn beat(&mut self, c: &mut Client) -> anyhow::Result<ConsumerGroupHeartbeatResponse> {
        let r = c.send(&self.heartbeat_request(), 1).await?;
        self.apply(&r)?;
        Ok(r)
    }

    fn count(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum()
    }
}

async fn topic_id(c: &mut Client, topic: &str) -> anyhow::Result<Uuid> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(topic)))]));
    let r = c.send(&req, 12).await?;
    let t = r.topics.first().context("no topic in Metadata")?;
    ensure!(t.error_code == NONE, "Metadata {topic}: {t:?}");
    Ok(t.topic_id)
}

fn commit(group_id: &str, member: &str, epoch: i32, topic: &str, partitions: &[i32]) -> OffsetCommitRequest {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let parts = partitions
        .iter()
        .map(|p| OffsetCommitRequestPartition::default().with_partition_index(*p).with_committed_offset(10 + *p as i64))
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(epoch)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(parts)])
}

fn commit_errors(r: &OffsetCommitResponse) -> Vec<i16> {
    r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

async fn fetch_v9(
    c: &mut Client,
    group_id: &str,
    member: Option<&str>,
    epoch: i32,
    topic: &str,
) -> anyhow::Result<OffsetFetchResponseGroup> {
    use offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
    let t = OffsetFetchRequestTopics::default().with_name(topic_name(topic)).with_partition_indexes(vec![0, 1, 2, 3]);
    let g = OffsetFetchRequestGroup::default()
        .with_group_id(group(group_id))
        .with_member_id(member.map(s))
        .with_member_epoch(epoch)
        .with_topics(Some(vec![t]));
    let r = c.send(&OffsetFetchRequest::default().with_groups(vec![g]).with_require_stable(true), 9).await?;
    r.groups.into_iter().next().context("OffsetFetch without groups")
}

use offset_fetch_response::OffsetFetchResponseGroup;

/// Two members on a 4-partition topic: b joins a group a has, a revokes two partitions
/// before b gets them; epochs and errors as Kafka answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_and_member_epoch_checks() {
    let broker = SkiffProcess::start_with_config(CONFIG);
    bounded("reconciliation_and_member_epoch_checks", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("cg", 4).await?;
        let tid = topic_id(&mut c, "cg").await?;

        let mut a = Member::new("g", "member-a");
        a.join(&mut c, &["cg"]).await?;
        ensure!(a.epoch == 1 && a.count() == 4, "a alone: epoch {} owns {:?}", a.epoch, a.owned);
        ensure!(a.owned.keys().eq([&tid]), "assignments name topics by id");

        let mut b = Member::new("g", "member-b");
        b.join(&mut c, &["cg"]).await?;
        ensure!(b.epoch == 2 && b.count() == 0, "b waits for a's partitions: {} {:?}", b.epoch, b.owned);
        let r = a.beat(&mut c).await?;
        ensure!(r.member_epoch == 1 && a.count() == 2, "a revokes two partitions first: {r:?}");
        ensure!(r.heartbeat_interval_ms == 1000, "configured heartbeat interval: {r:?}");
        b.beat(&mut c).await?;
        ensure!(b.count() == 0, "b gets nothing before a acknowledged");
        a.beat(&mut c).await?;
        ensure!(a.epoch == 2, "a moves to epoch 2 once it revoked");
        b.beat(&mut c).await?;
        ensure!(b.count() == 2, "b gets the released partitions: {:?}", b.owned);
        let all: BTreeSet<i32> = a.owned[&tid].union(&b.owned[&tid]).copied().collect();
        ensure!(all == BTreeSet::from([0, 1, 2, 3]), "every partition once: {:?} {:?}", a.owned, b.owned);

        // Epoch checks on heartbeats.
        let r = c.send(&a.heartbeat_request().with_member_epoch(7), 1).await?;
        ensure!(r.error_code == FENCED_MEMBER_EPOCH, "newer epoch: {r:?}");
        let r = c.send(&a.heartbeat_request().with_member_id(s("nobody")), 1).await?;
        ensure!(r.error_code == UNKNOWN_MEMBER_ID, "unknown member: {r:?}");
        let r = c.send(&a.join_request(&["cg"]).with_member_id(StrBytes::default()), 1).await?;
        ensure!(r.error_code == INVALID_REQUEST, "v1 without member id: {r:?}");
        let r = c.send(&a.join_request(&["cg"]).with_server_assignor(Some(s("sticky"))), 1).await?;
        ensure!(r.error_code == UNSUPPORTED_ASSIGNOR, "unknown assignor: {r:?}");
        // v0: the coordinator names a member that comes without an id.
        let r = c.send(&Member::new("g-v0", "").join_request(&["cg"]), 0).await?;
        ensure!(r.error_code == NONE && r.member_id.as_ref().is_some_and(|m| !m.is_empty()), "v0 join: {r:?}");

        // OffsetCommit v9: member and member epoch.
        let a_parts: Vec<i32> = a.owned[&tid].iter().copied().collect();
        let r = c.send(&commit("g", "member-a", a.epoch, "cg", &a_parts), 9).await?;
        ensure!(commit_errors(&r) == vec![NONE; 2], "commit at the current epoch: {r:?}");
        let r = c.send(&commit("g", "member-a", a.epoch + 1, "cg", &a_parts), 9).await?;
        ensure!(commit_errors(&r) == vec![STALE_MEMBER_EPOCH; 2], "commit with a newer epoch: {r:?}");
        // Epoch 1 is still good for the partitions a has held since epoch 1.
        let r = c.send(&commit("g", "member-a", 1, "cg", &a_parts), 9).await?;
        ensure!(commit_errors(&r) == vec![NONE; 2], "commit with an older epoch, partitions held since: {r:?}");
        let b_parts: Vec<i32> = b.owned[&tid].iter().copied().collect();
        let r = c.send(&commit("g", "member-b", 1, "cg", &b_parts), 9).await?;
        ensure!(commit_errors(&r) == vec![STALE_MEMBER_EPOCH; 2], "b had no partitions at epoch 1: {r:?}");
        let r = c.send(&commit("g", "member-a", a.epoch, "cg", &a_parts), 8).await?;
        ensure!(commit_errors(&r) == vec![UNSUPPORTED_VERSION; 2], "consumer members need v9: {r:?}");
        let r = c.send(&commit("g", "", -1, "cg", &a_parts), 9).await?;
        ensure!(commit_errors(&r) == vec![UNKNOWN_MEMBER_ID; 2], "no commits from outside a live group: {r:?}");

        // OffsetFetch v9: member and epoch when given.
        let g = fetch_v9(&mut c, "g", Some("member-a"), a.epoch, "cg").await?;
        ensure!(g.error_code == NONE, "fetch at the current epoch: {g:?}");
        let committed: Vec<i64> = g.topics[0].partitions.iter().map(|p| p.committed_offset).collect();
        let want: Vec<i64> = (0..4).map(|p| if a_parts.contains(&p) { 10 + p as i64 } else { -1 }).collect();
        ensure!(committed == want, "committed {committed:?}, want {want:?}");
        ensure!(fetch_v9(&mut c, "g", Some("member-a"), 1, "cg").await?.error_code == STALE_MEMBER_EPOCH);
        ensure!(fetch_v9(&mut c, "g", Some("nobody"), 2, "cg").await?.error_code == UNKNOWN_MEMBER_ID);
        ensure!(fetch_v9(&mut c, "g", None, -1, "cg").await?.error_code == NONE, "admin fetches are fine");

        // ConsumerGroupDescribe.
        for v in 0..=1 {
            let req = ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![group("g"), group("nope")])
                .with_include_authorized_operations(true);
            let r = c.send(&req, v).await?;
            let d = &r.groups[0];
            ensure!(d.error_code == NONE && d.group_state.as_str() == "Stable", "describe v{v}: {d:?}");
            ensure!(d.group_epoch == 2 && d.assignment_epoch == 2 && d.assignor_name.as_str() == "uniform");
            ensure!(d.members.len() == 2, "describe v{v}: {d:?}");
            let m = d.members.iter().find(|m| m.member_id.as_str() == "member-a").context("member a")?;
            ensure!(m.member_epoch == 2 && m.subscribed_topic_names.iter().map(|t| t.as_str()).eq(["cg"]));
            ensure!(m.assignment.topic_partitions[0].topic_name.as_str() == "cg");
            ensure!(m.assignment.topic_partitions[0].partitions.len() == 2);
            ensure!(m.member_type == if v >= 1 { 1 } else { -1 }, "member type v{v}: {m:?}");
            ensure!(r.groups[1].error_code == GROUP_ID_NOT_FOUND, "unknown group: {:?}", r.groups[1]);
        }

        // ListGroups shows the type; DescribeGroups treats it as no classic group, as Kafka.
        let r = c.send(&ListGroupsRequest::default().with_types_filter(vec![s("Consumer")]), 5).await?;
        let listed: Vec<(&str, &str, &str)> =
            r.groups.iter().map(|g| (g.group_id.as_str(), g.group_state.as_str(), g.group_type.as_str())).collect();
        ensure!(listed == vec![("g", "Stable", "consumer"), ("g-v0", "Stable", "consumer")], "{listed:?}");
        let r = c.send(&ListGroupsRequest::default().with_types_filter(vec![s("classic")]), 5).await?;
        ensure!(r.groups.is_empty(), "{r:?}");
        let r = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("g")]), 5).await?;
        ensure!(r.groups[0].group_state.as_str() == "Dead", "{r:?}");

        // The other protocol is refused while the group has members.
        let p = join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"x"));
        let join = JoinGroupRequest::default()
            .with_group_id(group("g"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s("classic-1"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![p]);
        let r = c.send(&join, 9).await?;
        ensure!(r.error_code == INCONSISTENT_GROUP_PROTOCOL, "classic join to a consumer group: {r:?}");
        let r = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![group("g")]), 2).await?;
        ensure!(r.results[0].error_code == NON_EMPTY_GROUP, "{r:?}");

        // Leaving: a goes, b gets everything after one more heartbeat.
        let leave = a.heartbeat_request().with_member_epoch(-1);
        let r = c.send(&leave, 1).await?;
        ensure!(r.error_code == NONE && r.member_epoch == -1, "leave: {r:?}");
        b.beat(&mut c).await?;
        b.beat(&mut c).await?;
        ensure!(b.count() == 4 && b.epoch == 3, "b takes over: epoch {} {:?}", b.epoch, b.owned);
        let leave = b.heartbeat_request().with_member_epoch(-1);
        ensure!(c.send(&leave, 1).await?.error_code == NONE);
        // An empty consumer group can be deleted, and its id used by the classic protocol.
        let r = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![group("g")]), 2).await?;
        ensure!(r.results[0].error_code == NONE, "delete the empty consumer group: {r:?}");
        let r = c.send(&join.clone().with_member_id(StrBytes::default()), 3).await?;
        ensure!(r.error_code == NONE && r.generation_id == 1, "classic join to the deleted group's id: {r:?}");
        Ok(())
    })
    .await;
}

/// A classic group with members refuses consumer heartbeats; an empty one is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_and_consumer_groups_do_not_mix() {
    let broker = SkiffProcess::start_with_config(
        "[groups]\nconsumer_heartbeat_interval_ms = 1000\ninitial_rebalance_delay_ms = 0\n",
    );
    bounded("classic_and_consumer_groups_do_not_mix", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("mix", 2).await?;
        let p = join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"x"));
        let join = JoinGroupRequest::default()
            .with_group_id(group("classic"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![p]);
        let r = c.send(&join, 3).await?;
        ensure!(r.error_code == NONE, "classic join: {r:?}");
        let m = Member::new("classic", "consumer-1");
        let r = c.send(&m.join_request(&["mix"]), 1).await?;
        ensure!(r.error_code == GROUP_ID_NOT_FOUND, "consumer heartbeat to a live classic group: {r:?}");
        // A group with only offsets (classic, empty) becomes a consumer group.
        let r = c.send(&commit("offsets-only", "", -1, "mix", &[0]), 8).await?;
        ensure!(commit_errors(&r) == vec![NONE], "{r:?}");
        let mut m2 = Member::new("offsets-only", "consumer-2");
        m2.join(&mut c, &["mix"]).await?;
        ensure!(m2.count() == 2, "the empty classic group became a consumer group: {:?}", m2.owned);
        let g = fetch_v9(&mut c, "offsets-only", Some("consumer-2"), m2.epoch, "mix").await?;
        ensure!(g.topics[0].partitions[0].committed_offset == 10, "offsets are kept: {g:?}");
        Ok(())
    })
    .await;
}

/// Members keep their epochs and partitions across a broker restart: nobody is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_survive_restart() {
    let mut broker = SkiffProcess::start_with_config(CONFIG);
    let (mut a, mut b) = (Member::new("durable", "a"), Member::new("durable", "b"));
    bounded("consumer_groups_survive_restart (before)", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("dur", 6).await?;
        a.join(&mut c, &["dur"]).await?;
        b.join(&mut c, &["dur"]).await?;
        for _ in 0..3 {
            a.beat(&mut c).await?;
            b.beat(&mut c).await?;
        }
        ensure!(a.count() == 3 && b.count() == 3 && a.epoch == 2 && b.epoch == 2, "{:?} {:?}", a.owned, b.owned);
        let parts: Vec<i32> = a.owned.values().flatten().copied().collect();
        let r = c.send(&commit("durable", "a", a.epoch, "dur", &parts), 9).await?;
        ensure!(commit_errors(&r) == vec![NONE; 3], "{r:?}");
        Ok(())
    })
    .await;
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status} after SIGTERM\n{}", broker.stderr_tail(40));
    broker.restart();
    bounded("consumer_groups_survive_restart (after)", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        let (a_before, b_before) = (a.owned.clone(), b.owned.clone());
        let r = a.beat(&mut c).await?;
        ensure!(r.member_epoch == 2 && r.assignment.is_none(), "a carries on at its epoch: {r:?}");
        b.beat(&mut c).await?;
        ensure!(a.owned == a_before && b.owned == b_before && b.epoch == 2, "nothing moved");
        let r = c.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![group("durable")]), 1).await?;
        let d = &r.groups[0];
        ensure!(d.group_state.as_str() == "Stable" && d.group_epoch == 2 && d.members.len() == 2, "{d:?}");
        let g = fetch_v9(&mut c, "durable", Some("a"), 2, "dur").await?;
        let committed = g.topics[0].partitions.iter().filter(|p| p.committed_offset >= 10).count();
        ensure!(g.error_code == NONE && committed == 3, "{g:?}");
        Ok(())
    })
    .await;
}
