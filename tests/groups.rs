//! Consumer groups against the `skiff` binary with the minimal client: every advertised version
//! of every group API answers with a response that decodes at that version, a join / sync /
//! heartbeat / commit round works, and committed offsets and membership survive a restart.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time; ids are test data

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::SkiffProcess;
use support::client::{Client, topic_name};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const MEMBER_ID_REQUIRED: i16 = 79;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

async fn bounded<F: std::future::Future<Output = anyhow::Result<()>>>(name: &str, broker: &SkiffProcess, body: F) {
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?} (broker {})", broker.bootstrap()),
        Ok(Err(e)) => panic!("{name}: {e:#} (broker {})", broker.bootstrap()),
        Ok(Ok(())) => {}
    }
}

fn join_request(group_id: &str, member_id: &str, v: i16) -> JoinGroupRequest {
    use join_group_request::JoinGroupRequestProtocol;
    let p =
        JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"subscription"));
    JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(if v >= 1 { 10_000 } else { -1 })
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![p])
}

/// Joins `group_id` alone (v4+ goes through MEMBER_ID_REQUIRED) and syncs an assignment;
/// returns (member id, generation). Waits out the initial rebalance delay.
async fn join_and_sync(c: &mut Client, group_id: &str, jv: i16, sv: i16) -> anyhow::Result<(String, i32)> {
    let mut r = c.send(&join_request(group_id, "", jv), jv).await?;
    if jv >= 4 {
        ensure!(r.error_code == MEMBER_ID_REQUIRED, "JoinGroup v{jv} without member id: {r:?}");
        r = c.send(&join_request(group_id, &r.member_id.to_string(), jv), jv).await?;
    }
    ensure!(r.error_code == NONE, "JoinGroup v{jv}: {r:?}");
    ensure!(r.leader == r.member_id && r.members.len() == 1, "JoinGroup v{jv}: a lone member leads: {r:?}");
    ensure!(r.members[0].metadata.as_ref() == b"subscription", "JoinGroup v{jv}: subscription passed through");
    if jv < 7 {
        ensure!(r.protocol_name.as_deref() == Some("range"), "JoinGroup v{jv} protocol: {r:?}");
    }
    let member = r.member_id.to_string();
    let assignment = sync_group_request::SyncGroupRequestAssignment::default()
        .with_member_id(s(&member))
        .with_assignment(Bytes::from_static(b"assignment"));
    let mut sync = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(r.generation_id)
        .with_member_id(s(&member))
        .with_assignments(vec![assignment]);
    if sv >= 5 {
        sync = sync.with_protocol_type(Some(s("consumer"))).with_protocol_name(Some(s("range")));
    }
    let sr = c.send(&sync, sv).await?;
    ensure!(sr.error_code == NONE && sr.assignment.as_ref() == b"assignment", "SyncGroup v{sv}: {sr:?}");
    Ok((member, r.generation_id))
}

fn commit_request(
    group_id: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> OffsetCommitRequest {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let partitions = offsets
        .iter()
        .map(|(p, o)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(7)
                .with_committed_metadata(Some(s(&format!("meta-{p}"))))
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic_name(topic)).with_partitions(partitions)])
}

fn commit_errors(r: &OffsetCommitResponse) -> Vec<i16> {
    r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

/// (partition, offset, leader epoch, metadata) for `group_id`'s committed offsets of `topic`,
/// fetched with OffsetFetch `v`.
async fn fetch_offsets(
    c: &mut Client,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
    v: i16,
) -> anyhow::Result<Vec<(i32, i64, i32, String)>> {
    if v >= 8 {
        use offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
        let t = OffsetFetchRequestTopics::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec());
        let g = OffsetFetchRequestGroup::default().with_group_id(group(group_id)).with_topics(Some(vec![t]));
        let r = c.send(&OffsetFetchRequest::default().with_groups(vec![g]), v).await?;
        ensure!(r.groups.len() == 1 && r.groups[0].error_code == NONE, "OffsetFetch v{v}: {r:?}");
        return Ok(r.groups[0]
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.metadata.as_deref().unwrap_or("").to_string(),
                )
            })
            .collect());
    }
    use offset_fetch_request::OffsetFetchRequestTopic;
    let t = OffsetFetchRequestTopic::default().with_name(topic_name(topic)).with_partition_indexes(partitions.to_vec());
    let r = c.send(&OffsetFetchRequest::default().with_group_id(group(group_id)).with_topics(Some(vec![t])), v).await?;
    ensure!(r.error_code == NONE, "OffsetFetch v{v}: {r:?}");
    Ok(r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.as_deref().unwrap_or("").to_string(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_api_version_answers() {
    let broker = SkiffProcess::start();
    bounded("every_group_api_version_answers", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("gv", 3).await?;
        for v in 0..=4 {
            let mut req = FindCoordinatorRequest::default();
            req = if v >= 4 { req.with_coordinator_keys(vec![s("g1"), s("g2")]) } else { req.with_key(s("g1")) };
            let r = c.send(&req, v).await?;
            if v >= 4 {
                ensure!(
                    r.coordinators.len() == 2 && r.coordinators.iter().all(|k| k.error_code == NONE && k.port > 0),
                    "FindCoordinator v{v}: {r:?}"
                );
            } else {
                ensure!(r.error_code == NONE && r.port > 0 && !r.host.is_empty(), "FindCoordinator v{v}: {r:?}");
            }
            if v >= 1 {
                let txn = if v >= 4 {
                    req.clone().with_key_type(1)
                } else {
                    FindCoordinatorRequest::default().with_key(s("t")).with_key_type(1)
                };
                let r = c.send(&txn, v).await?;
                let (code, node) = if v >= 4 {
                    (r.coordinators[0].error_code, r.coordinators[0].node_id)
                } else {
                    (r.error_code, r.node_id)
                };
                // Transaction coordinators (tests/transactions.rs): this broker, the only one.
                ensure!(code == NONE && node.0 >= 0, "FindCoordinator v{v} for a transaction: {r:?}");
            }
        }
        // Every JoinGroup / SyncGroup / Heartbeat / OffsetCommit / OffsetFetch / LeaveGroup
        // version on its own group, so each goes through a full round.
        for jv in 0..=9i16 {
            let g = format!("gv-join-{jv}");
            let sv = jv.min(5);
            let (member, generation) =
                join_and_sync(&mut c, &g, jv, sv).await.with_context(|| format!("join v{jv}"))?;
            let hv = jv.min(4);
            let hb = HeartbeatRequest::default()
                .with_group_id(group(&g))
                .with_generation_id(generation)
                .with_member_id(s(&member));
            let r = c.send(&hb, hv).await?;
            ensure!(r.error_code == NONE, "Heartbeat v{hv}: {r:?}");
            let r = c.send(&hb.clone().with_generation_id(generation + 1), hv).await?;
            ensure!(r.error_code == ILLEGAL_GENERATION, "Heartbeat v{hv} with a wrong generation: {r:?}");
            let cv = jv.clamp(2, 9);
            let r = c.send(&commit_request(&g, &member, generation, "gv", &[(0, 5), (1, 6)]), cv).await?;
            ensure!(commit_errors(&r) == vec![NONE, NONE], "OffsetCommit v{cv}: {r:?}");
            let r = c.send(&commit_request(&g, "stranger", generation, "gv", &[(0, 9)]), cv).await?;
            ensure!(commit_errors(&r) == vec![UNKNOWN_MEMBER_ID], "OffsetCommit v{cv} from a non-member: {r:?}");
            let fv = jv.clamp(1, 9);
            let got = fetch_offsets(&mut c, &g, "gv", &[0, 1, 2], fv).await?;
            let epoch = if fv >= 5 && cv >= 6 { 7 } else { -1 };
            let want = vec![
                (0, 5, epoch, "meta-0".to_string()),
                (1, 6, epoch, "meta-1".to_string()),
                (2, -1, -1, String::new()),
            ];
            ensure!(got == want, "OffsetFetch v{fv}: {got:?}, want {want:?}");
            let lv = jv.min(5);
            let leave = if lv >= 3 {
                let m = leave_group_request::MemberIdentity::default().with_member_id(s(&member));
                LeaveGroupRequest::default()
                    .with_group_id(group(&g))
                    .with_members(vec![m, leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))])
            } else {
                LeaveGroupRequest::default().with_group_id(group(&g)).with_member_id(s(&member))
            };
            let r = c.send(&leave, lv).await?;
            if lv >= 3 {
                let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
                ensure!(r.error_code == NONE && codes == vec![NONE, UNKNOWN_MEMBER_ID], "LeaveGroup v{lv}: {r:?}");
            } else {
                ensure!(r.error_code == NONE, "LeaveGroup v{lv}: {r:?}");
            }
        }
        // Describe / list / delete at every version.
        for v in 0..=5 {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![group("gv-join-9"), group("no-such-group")])
                .with_include_authorized_operations(v >= 3);
            let r = c.send(&req, v).await?;
            ensure!(
                r.groups.len() == 2
                    && r.groups[0].group_state.as_str() == "Empty"
                    && r.groups[1].group_state.as_str() == "Dead",
                "DescribeGroups v{v}: {r:?}"
            );
        }
        for v in 0..=5 {
            let mut req = ListGroupsRequest::default();
            if v >= 4 {
                req = req.with_states_filter(vec![s("Empty")]);
            }
            let r = c.send(&req, v).await?;
            ensure!(r.error_code == NONE && r.groups.len() == 10, "ListGroups v{v}: {} groups: {r:?}", r.groups.len());
        }
        let r = c
            .send(
                &OffsetDeleteRequest::default().with_group_id(group("gv-join-0")).with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic_name("gv"))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0),
                        ]),
                ]),
                0,
            )
            .await?;
        ensure!(r.error_code == NONE && r.topics[0].partitions[0].error_code == NONE, "OffsetDelete: {r:?}");
        let got = fetch_offsets(&mut c, "gv-join-0", "gv", &[0, 1], 8).await?;
        ensure!(got[0].1 == -1 && got[1].1 == 6, "after OffsetDelete: {got:?}");
        for v in 0..=2 {
            let req = DeleteGroupsRequest::default()
                .with_groups_names(vec![group(&format!("gv-join-{v}")), group("no-such-group")]);
            let r = c.send(&req, v).await?;
            let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
            ensure!(codes == vec![NONE, GROUP_ID_NOT_FOUND], "DeleteGroups v{v}: {r:?}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_membership_survive_restart() {
    let mut broker = SkiffProcess::start();
    let (member, generation) = {
        let mut c = Client::connect(broker.bootstrap()).await.expect("connect");
        c.create_topic_ok("restart", 4).await.expect("create");
        // A "simple" commit (no group management) and a member's commit.
        let r = c.send(&commit_request("simple", "", -1, "restart", &[(0, 10), (3, 13)]), 8).await.expect("commit");
        assert_eq!(commit_errors(&r), vec![NONE, NONE], "{r:?}");
        let (member, generation) = join_and_sync(&mut c, "managed", 9, 5).await.expect("join");
        let r = c
            .send(&commit_request("managed", &member, generation, "restart", &[(1, 21), (2, 22)]), 8)
            .await
            .expect("commit");
        assert_eq!(commit_errors(&r), vec![NONE, NONE], "{r:?}");
        // A live group cannot be deleted.
        let r =
            c.send(&DeleteGroupsRequest::default().with_groups_names(vec![group("managed")]), 2).await.expect("delete");
        assert_eq!(r.results[0].error_code, NON_EMPTY_GROUP);
        (member, generation)
    };
    let status = broker.terminate();
    assert!(status.success(), "skiff exited with {status} after SIGTERM\n{}", broker.stderr_tail(40));
    broker.restart();
    bounded("offsets_and_membership_survive_restart", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        for v in [1, 5, 7, 8] {
            let got = fetch_offsets(&mut c, "simple", "restart", &[0, 1, 3], v).await?;
            let e = if v >= 5 { 7 } else { -1 };
            ensure!(
                got == vec![(0, 10, e, "meta-0".into()), (1, -1, -1, String::new()), (3, 13, e, "meta-3".into())],
                "simple v{v}: {got:?}"
            );
            let got = fetch_offsets(&mut c, "managed", "restart", &[1, 2], v).await?;
            ensure!(got == vec![(1, 21, e, "meta-1".into()), (2, 22, e, "meta-2".into())], "managed v{v}: {got:?}");
        }
        // The member carries on at its generation: the membership was stored.
        let hb = HeartbeatRequest::default()
            .with_group_id(group("managed"))
            .with_generation_id(generation)
            .with_member_id(s(&member));
        let r = c.send(&hb, 4).await?;
        ensure!(r.error_code == NONE, "heartbeat after restart: {r:?}");
        let r = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("managed")]), 5).await?;
        let g = &r.groups[0];
        ensure!(g.group_state.as_str() == "Stable" && g.members.len() == 1, "described after restart: {g:?}");
        ensure!(g.members[0].member_assignment.as_ref() == b"assignment", "assignment after restart: {g:?}");
        // OffsetFetch with all topics (null) after restart.
        let r = c.send(&OffsetFetchRequest::default().with_group_id(group("simple")).with_topics(None), 7).await?;
        let n: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
        ensure!(n == 2, "all offsets of 'simple': {r:?}");
        Ok(())
    })
    .await;
}

/// Deleting a topic deletes every group's committed offsets for it, as Kafka's coordinator does
/// (`onPartitionsDeleted`): a topic created again under the same name is read from the reset
/// policy, not from the deleted topic's positions (which would skip its first records).
#[tokio::test]
async fn deleting_a_topic_deletes_its_committed_offsets() {
    use kafka_protocol::messages::DeleteTopicsRequest;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let broker = SkiffProcess::start();
    bounded("deleting_a_topic_deletes_its_committed_offsets", &broker, async {
        let mut c = Client::connect(broker.bootstrap()).await?;
        c.create_topic_ok("gone", 2).await?;
        c.create_topic_ok("kept", 1).await?;
        let r = c.send(&commit_request("g1", "", -1, "gone", &[(0, 10), (1, 11)]), 8).await?;
        ensure!(commit_errors(&r) == vec![NONE, NONE], "{r:?}");
        let r = c.send(&commit_request("g1", "", -1, "kept", &[(0, 5)]), 8).await?;
        ensure!(commit_errors(&r) == vec![NONE], "{r:?}");
        let r = c.send(&commit_request("g2", "", -1, "gone", &[(1, 3)]), 8).await?;
        ensure!(commit_errors(&r) == vec![NONE], "{r:?}");
        let req = DeleteTopicsRequest::default()
            .with_topics(vec![DeleteTopicState::default().with_name(Some(topic_name("gone")))])
            .with_timeout_ms(10_000);
        let r = c.send(&req, 6).await?;
        ensure!(r.responses.iter().all(|t| t.error_code == NONE), "delete: {r:?}");
        c.create_topic_ok("gone", 2).await?;
        for g in ["g1", "g2"] {
            let got = fetch_offsets(&mut c, g, "gone", &[0, 1], 8).await?;
            ensure!(
                got.iter().all(|(_, offset, _, _)| *offset == -1),
                "{g}: offsets of the deleted topic survived: {got:?}"
            );
        }
        let got = fetch_offsets(&mut c, "g1", "kept", &[0], 8).await?;
        ensure!(got.first().map(|o| o.1) == Some(5), "another topic's offsets must stay: {got:?}");
        Ok(())
    })
    .await;
}
