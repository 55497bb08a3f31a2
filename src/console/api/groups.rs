//! Consumer groups: list, describe (members, assignments, committed offsets and lag) and
//! reset offsets.
//!
//! Group state is the coordinator's answer to ListGroups, DescribeGroups (classic) and
//! ConsumerGroupDescribe (KIP-848); committed offsets are the ones OffsetFetch reads; lag is
//! the high watermark minus the committed offset, as `kafka-consumer-groups.sh --describe`
//! shows it. A reset follows `kafka-consumer-groups.sh --reset-offsets` (Kafka's
//! `ConsumerGroupCommand.resetOffsets`): only an `Empty` or `Dead` group, targets from
//! ListOffsets, an explicit offset clamped to the log, then OffsetCommit as the admin client
//! sends it (no member, generation -1), so the coordinator applies its own rules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, ResponseKind, TopicName};
use serde::{Deserialize, Serialize};

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::{AclOperation as Op, ResourceType as Rt};

use super::access::{Access, Who};
use super::messages::{EARLIEST, LATEST, list_offset};
use super::{Api, ApiError, ApiPath, ApiResult, MAX_LISTED, body_json, check, ok, s};
use crate::broker::Broker;
use crate::group::GroupError;
use crate::handler::groups::is_coordinator;
use crate::handler::{Handled, errors, offsets};

/// The OffsetCommit version Kafka 4.x's admin client sends.
const OFFSET_COMMIT_VERSION: i16 = 9;

#[derive(Serialize)]
struct GroupList {
    groups: Vec<GroupSummary>,
    truncated: bool,
}

#[derive(Serialize)]
struct GroupSummary {
    group_id: String,
    #[serde(rename = "type")]
    group_type: &'static str,
    state: String,
    protocol_type: String,
    protocol: Option<String>,
    members: usize,
    coordinator: i32,
    topics: BTreeSet<String>,
    total_lag: Option<i64>,
}

#[derive(Serialize)]
struct GroupDetail {
    group_id: String,
    #[serde(rename = "type")]
    group_type: &'static str,
    state: String,
    protocol_type: String,
    protocol: Option<String>,
    coordinator: i32,
    /// KIP-848 group epoch.
    epoch: Option<i32>,
    /// KIP-848 server-side assignor.
    assignor: Option<String>,
    members: Vec<Member>,
    offsets: Vec<PartitionOffset>,
    total_lag: Option<i64>,
}

#[derive(Serialize)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignments: Vec<TopicPartitions>,
    member_epoch: Option<i32>,
}

#[derive(Serialize, Clone)]
struct TopicPartitions {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize)]
struct PartitionOffset {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    metadata: Option<String>,
    log_start_offset: Option<i64>,
    end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
}

/// A group as the coordinator describes it.
struct Described {
    group_type: &'static str,
    state: String,
    protocol_type: String,
    protocol: Option<String>,
    epoch: Option<i32>,
    assignor: Option<String>,
    members: Vec<Member>,
}

fn coordinator_error(e: GroupError, message: impl Into<String>) -> ApiError {
    ApiError::kafka(errors::group(e), message)
}

/// Describes `group_id` (KIP-848 first, then classic); `None` if no such group exists.
async fn describe_group(broker: &Broker, group_id: &str) -> ApiResult<Option<Described>> {
    if !is_coordinator(broker, group_id) {
        return Err(coordinator_error(
            GroupError::NotCoordinator,
            format!("Broker {} does not coordinate group '{group_id}'.", broker.settings.node_id),
        ));
    }
    match broker.groups.consumer_describe(group_id.to_string()).await {
        Ok(d) => {
            let members = d
                .members
                .iter()
                .map(|m| Member {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.client_host.clone(),
                    assignments: broker.metadata.read(|img| {
                        m.assignment
                            .iter()
                            .map(|(id, ps)| TopicPartitions {
                                topic: img.topic_by_id(id).map(|t| t.name().to_string()).unwrap_or_default(),
                                partitions: ps.iter().copied().collect(),
                            })
                            .collect()
                    }),
                    member_epoch: Some(m.member_epoch),
                })
                .collect();
            return Ok(Some(Described {
                group_type: "consumer",
                state: d.state.name().to_string(),
                protocol_type: "consumer".into(),
                protocol: None,
                epoch: Some(d.group_epoch),
                assignor: Some(d.assignor),
                members,
            }));
        }
        Err((GroupError::GroupIdNotFound, _)) => {}
        Err((e, m)) => return Err(coordinator_error(e, m)),
    }
    if !broker.groups.exists(group_id.to_string()).await && !broker.metadata.read(|m| m.group_exists(group_id)) {
        return Ok(None);
    }
    let summary = broker.groups.describe(group_id.to_string()).await.map_err(|e| coordinator_error(e, ""))?;
    let consumer = summary.protocol_type == "consumer";
    let members = summary
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.clone(),
            instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.client_host.clone(),
            // Only the consumer protocol's assignment has a known layout.
            assignments: if consumer { consumer_assignment(&m.assignment).unwrap_or_default() } else { vec![] },
            member_epoch: None,
        })
        .collect();
    Ok(Some(Described {
        group_type: "classic",
        state: summary.state.name().to_string(),
        protocol_type: summary.protocol_type,
        protocol: (!summary.protocol.is_empty()).then_some(summary.protocol),
        epoch: None,
        assignor: None,
        members,
    }))
}

/// Kafka's `ConsumerProtocolAssignment` (any version: v0 fields first, the rest ignored):
/// int16 version, [string topic, [int32 partition]], bytes user data. `None` if malformed.
fn consumer_assignment(b: &[u8]) -> Option<Vec<TopicPartitions>> {
    if b.is_empty() {
        return Some(vec![]);
    }
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos.checked_add(n)?)?;
        pos += n;
        Some(s)
    };
    let _version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let topic = String::from_utf8(take(usize::try_from(len).ok()?)?.to_vec()).ok()?;
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
        out.push(TopicPartitions { topic, partitions });
    }
    Some(out)
}

/// Committed offsets and lag of every partition with a committed offset or assigned to a
/// member (Kafka's `collectGroupOffsets` rows).
fn offsets_of(broker: &Broker, group_id: &str, members: &[Member]) -> (Vec<PartitionOffset>, Option<i64>) {
    broker.metadata.read(|m| {
        let mut rows: BTreeMap<(String, i32), PartitionOffset> = BTreeMap::new();
        for (topic, partition, c) in m.committed_offsets(group_id) {
            rows.insert(
                (topic.to_string(), partition),
                PartitionOffset {
                    topic: topic.to_string(),
                    partition,
                    committed_offset: (c.offset >= 0).then_some(c.offset),
                    metadata: c.metadata.clone(),
                    log_start_offset: None,
                    end_offset: None,
                    lag: None,
                    member_id: None,
                },
            );
        }
        for member in members {
            for a in &member.assignments {
                for p in &a.partitions {
                    let row = rows.entry((a.topic.clone(), *p)).or_insert_with(|| PartitionOffset {
                        topic: a.topic.clone(),
                        partition: *p,
                        committed_offset: None,
                        metadata: None,
                        log_start_offset: None,
                        end_offset: None,
                        lag: None,
                        member_id: None,
                    });
                    row.member_id = Some(member.member_id.clone());
                }
            }
        }
        let mut total: Option<i64> = None;
        for row in rows.values_mut() {
            if let Some(p) = m.partition_by_name(&row.topic, row.partition) {
                row.log_start_offset = Some(p.log_start_offset());
                row.end_offset = Some(p.high_watermark());
                row.lag = row.committed_offset.map(|c| (p.high_watermark() - c).max(0));
                if let Some(l) = row.lag {
                    total = Some(total.unwrap_or(0) + l);
                }
            }
        }
        (rows.into_values().collect(), total)
    })
}

/// [`offsets_of`] without the topics `access` may not describe (as OffsetFetch leaves them
/// out), the total lag over what is left.
fn visible_offsets(
    broker: &Broker,
    group_id: &str,
    members: &[Member],
    access: &Access<'_>,
) -> (Vec<PartitionOffset>, Option<i64>) {
    let (mut offsets, total) = offsets_of(broker, group_id, members);
    let before = offsets.len();
    offsets.retain(|o| access.sees(Op::Describe, Rt::Topic, &o.topic));
    if offsets.len() == before {
        return (offsets, total);
    }
    let total = offsets.iter().filter_map(|o| o.lag).fold(None, |sum: Option<i64>, l| Some(sum.unwrap_or(0) + l));
    (offsets, total)
}

fn coordinator_id(broker: &Broker, group_id: &str) -> i32 {
    broker.metadata.read(|m| m.coordinator(group_id).map_or(broker.settings.node_id, |c| c.broker_id))
}

pub(super) async fn list(State(api): State<Api>, who: Who) -> ApiResult<Response> {
    let broker = api.broker()?;
    // ListGroups: DESCRIBE on the cluster lists every group, else the groups the caller may
    // describe; the others are left out silently.
    let access = who.on(broker, ApiKey::ListGroups);
    let all = access.sees_cluster(Op::Describe);
    let listed = broker.groups.list().await.map_err(|e| coordinator_error(e, ""))?;
    let mut ids: Vec<String> = listed
        .into_iter()
        .filter(|g| is_coordinator(broker, &g.group_id))
        .filter(|g| all || access.sees(Op::Describe, Rt::Group, &g.group_id))
        .map(|g| g.group_id)
        .collect();
    ids.sort();
    let truncated = ids.len() > MAX_LISTED;
    ids.truncate(MAX_LISTED);
    let mut groups = Vec::with_capacity(ids.len());
    for id in ids {
        // A group deleted since the list is simply left out.
        let Some(d) = describe_group(broker, &id).await? else { continue };
        let (offsets, total_lag) = visible_offsets(broker, &id, &d.members, &access);
        groups.push(GroupSummary {
            coordinator: coordinator_id(broker, &id),
            topics: offsets.iter().map(|o| o.topic.clone()).collect(),
            group_id: id,
            group_type: d.group_type,
            state: d.state,
            protocol_type: d.protocol_type,
            protocol: d.protocol,
            members: d.members.len(),
            total_lag,
        });
    }
    Ok(ok(&GroupList { groups, truncated }))
}

fn not_found(group_id: &str) -> ApiError {
    ApiError::of(ResponseError::GroupIdNotFound, format!("Consumer group '{group_id}' does not exist."))
}

pub(super) async fn describe(
    State(api): State<Api>,
    who: Who,
    ApiPath(group_id): ApiPath<String>,
) -> ApiResult<Response> {
    let broker = api.broker()?;
    let access = who.on(broker, ApiKey::DescribeGroups);
    access.require(Op::Describe, Rt::Group, &group_id)?;
    let d = describe_group(broker, &group_id).await?.ok_or_else(|| not_found(&group_id))?;
    let (offsets, total_lag) = visible_offsets(broker, &group_id, &d.members, &access);
    Ok(ok(&GroupDetail {
        coordinator: coordinator_id(broker, &group_id),
        group_id,
        group_type: d.group_type,
        state: d.state,
        protocol_type: d.protocol_type,
        protocol: d.protocol,
        epoch: d.epoch,
        assignor: d.assignor,
        members: d.members,
        offsets,
        total_lag,
    }))
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ResetTo {
    Earliest,
    Latest,
    Timestamp,
    Offset,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    topic: String,
    partitions: Option<Vec<i32>>,
    to: ResetTo,
    value: Option<i64>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize)]
struct ResetResult {
    group_id: String,
    dry_run: bool,
    partitions: Vec<ResetPartition>,
}

#[derive(Serialize)]
struct ResetPartition {
    topic: String,
    partition: i32,
    previous_offset: Option<i64>,
    new_offset: i64,
}

/// `POST /groups/{g}/reset-offsets`: `kafka-consumer-groups.sh --reset-offsets` for one topic.
pub(super) async fn reset_offsets(
    State(api): State<Api>,
    who: Who,
    ApiPath(group_id): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let broker = api.broker()?;
    let b: ResetBody = body_json(body).await?;
    // The tool's OffsetCommit: READ on the group, then READ on the topic.
    let access = who.on(broker, ApiKey::OffsetCommit);
    access.require(Op::Read, Rt::Group, &group_id)?;
    access.require(Op::Read, Rt::Topic, &b.topic)?;
    if matches!(b.to, ResetTo::Timestamp | ResetTo::Offset) && b.value.is_none() {
        return Err(ApiError::BadRequest(format!("Resetting to {:?} needs a value.", b.to).to_lowercase()));
    }
    // ListOffsets reads -1 and -2 as "latest" and "earliest": a negative timestamp would
    // silently reset to an end instead of a point in time (browse rejects it the same way).
    if b.to == ResetTo::Timestamp && b.value.is_some_and(|t| t < 0) {
        return Err(ApiError::BadRequest("timestamp is epoch milliseconds.".into()));
    }
    // The tool resets only an inactive group; an unknown group is Dead (DescribeGroups).
    let state = describe_group(broker, &group_id).await?.map_or_else(|| "Dead".to_string(), |d| d.state);
    if state != "Empty" && state != "Dead" {
        return Err(ApiError::of(
            ResponseError::NonEmptyGroup,
            format!(
                "Assignments can only be reset if the group '{group_id}' is inactive, but the current state is {state}."
            ),
        ));
    }
    let count = broker.metadata.read(|m| m.topic(&b.topic).map(|t| t.partition_count())).ok_or_else(|| {
        ApiError::of(ResponseError::UnknownTopicOrPartition, format!("Topic '{}' does not exist.", b.topic))
    })?;
    let partitions: Vec<i32> = match &b.partitions {
        Some(ps) => {
            if let Some(p) = ps.iter().find(|p| **p < 0 || **p as usize >= count) {
                return Err(ApiError::of(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic '{}' has no partition {p}.", b.topic),
                ));
            }
            ps.iter().copied().collect::<BTreeSet<_>>().into_iter().collect()
        }
        None => (0..count as i32).collect(),
    };
    let mut targets = Vec::with_capacity(partitions.len());
    for p in partitions {
        let new_offset = target(broker, &b, p).await?;
        let previous = broker.metadata.read(|m| m.committed_offset(&group_id, &b.topic, p).map(|c| c.offset));
        targets.push(ResetPartition { topic: b.topic.clone(), partition: p, previous_offset: previous, new_offset });
    }
    if !b.dry_run {
        commit(broker, &group_id, &b.topic, &targets).await?;
    }
    Ok(ok(&ResetResult { group_id, dry_run: b.dry_run, partitions: targets }))
}

/// The offset partition `p` resets to (Kafka's `prepareOffsetsToReset`).
async fn target(broker: &Arc<Broker>, b: &ResetBody, p: i32) -> ApiResult<i64> {
    let earliest = || async { required(list_offset(broker, &b.topic, p, EARLIEST).await?, &b.topic, p) };
    let latest = || async { required(list_offset(broker, &b.topic, p, LATEST).await?, &b.topic, p) };
    match (b.to, b.value) {
        (ResetTo::Earliest, _) => earliest().await,
        (ResetTo::Latest, _) => latest().await,
        (ResetTo::Timestamp, Some(ts)) => match list_offset(broker, &b.topic, p, ts).await? {
            Some(o) => Ok(o),
            // "Partition .. is empty. Falling back to latest known offset."
            None => latest().await,
        },
        // `checkOffsetsRange`: below the log start → the log start, past the end → the end.
        (ResetTo::Offset, Some(o)) => {
            let (start, end) = (earliest().await?, latest().await?);
            Ok(o.clamp(start, end.max(start)))
        }
        (_, None) => Err(ApiError::BadRequest("A value is needed.".into())),
    }
}

fn required(offset: Option<i64>, topic: &str, p: i32) -> ApiResult<i64> {
    offset.ok_or_else(|| ApiError::kafka(-1, format!("No offset for partition {p} of topic '{topic}'.")))
}

/// OffsetCommit of `targets` as Kafka's admin client sends it (`alterConsumerGroupOffsets`).
async fn commit(broker: &Arc<Broker>, group_id: &str, topic: &str, targets: &[ResetPartition]) -> ApiResult<()> {
    let partitions = targets
        .iter()
        .map(|t| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(t.partition)
                .with_committed_offset(t.new_offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(s("")))
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group_id)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(partitions),
        ]);
    let resp = match offsets::offset_commit(broker, req, OFFSET_COMMIT_VERSION).await {
        Handled::Ready(ResponseKind::OffsetCommit(r)) => r,
        Handled::Deferred(f) => match f.await {
            ResponseKind::OffsetCommit(r) => r,
            _ => return Err(ApiError::kafka(-1, "OffsetCommit answered something else.")),
        },
        _ => return Err(ApiError::kafka(-1, "OffsetCommit gave no answer.")),
    };
    for t in &resp.topics {
        for p in &t.partitions {
            check(p.error_code, None).map_err(|e| match e {
                ApiError::Kafka { code, message } => ApiError::Kafka {
                    code,
                    message: format!("Partition {} of '{topic}': {message}", p.partition_index),
                },
                other => other,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_protocol_assignments() {
        // v0: one topic "t" with partitions 0 and 2, empty user data.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2];
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let a = consumer_assignment(&b).expect("parses");
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].topic.as_str(), a[0].partitions.clone()), ("t", vec![0, 2]));
        assert!(consumer_assignment(&b[..9]).is_none());
        assert_eq!(consumer_assignment(&[]).map(|a| a.len()), Some(0));
        // A hostile count does not allocate: it runs out of bytes.
        assert!(consumer_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_none());
    }
}
