//! Committed consumer offsets: OffsetCommit, OffsetFetch, OffsetDelete.
//!
//! Offsets live in the controller's metadata (read through `skiff_controller::image`, written through `store_group`). A commit is checked
//! against the group's membership by the coordinator when it is admitted (so a LeaveGroup sent
//! after it on the same connection cannot overtake it), then stored through the controller and
//! answered once applied. OffsetFetch reads the applied metadata when its turn on the
//! connection comes, so it sees every commit answered before it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::image::{CommittedOffset, MetadataImage};
use skiff_controller::intent::{GroupOp, OffsetCommit};

use super::Handled;
use super::errors::{self, code};
use super::groups::is_coordinator;
use crate::broker::Broker;
use crate::group::{GroupCoordinator, GroupError};

/// One topic of an OffsetCommit: per partition, the error decided when admitted, or `None` if
/// the partition's offset goes to the controller.
type TopicPlan = (TopicName, Vec<(i32, Option<i16>)>);

/// Kafka's `offset.metadata.max.bytes` default.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// One partition's offset to store (OffsetCommit and TxnOffsetCommit), or
/// OFFSET_METADATA_TOO_LARGE when its metadata exceeds Kafka's `offset.metadata.max.bytes`.
pub(super) fn offset_to_store(
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
    now_ms: i64,
) -> Result<OffsetCommit, i16> {
    let metadata = metadata.map(|s| s.to_string()).unwrap_or_default();
    if metadata.len() > OFFSET_METADATA_MAX_BYTES {
        return Err(code(ResponseError::OffsetMetadataTooLarge));
    }
    Ok(OffsetCommit {
        topic: topic.to_string(),
        partition,
        offset,
        leader_epoch,
        metadata: Some(metadata),
        commit_timestamp_ms: now_ms,
    })
}

fn partition_exists(m: &MetadataImage, topic: &str, partition: i32) -> bool {
    m.partition_by_name(topic, partition).is_some()
}

/// Stores a change to the group; the Kafka error code if it did not apply.
async fn submit(broker: &Broker, group_id: &str, op: GroupOp) -> Result<(), i16> {
    let epoch = GroupCoordinator::coordinator_epoch(&broker.metadata, group_id);
    broker.controller.store_group(group_id.to_string(), epoch, op).await.map_err(|e| errors::group_controller(&e))
}

pub async fn offset_commit(broker: &Arc<Broker>, req: OffsetCommitRequest, version: i16) -> Handled {
    let group_id = req.group_id.0.to_string();
    let mut plan: Vec<TopicPlan> = Vec::with_capacity(req.topics.len());
    let mut offsets = Vec::new();
    let now_ms = broker.clock.now_ms();
    // Checked against the group (classic: member and generation; consumer: member and member
    // epoch, per partition) when admitted.
    let verdicts: Result<Vec<Option<GroupError>>, GroupError> = if group_id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else if !is_coordinator(broker, &group_id) {
        Err(GroupError::NotCoordinator)
    } else {
        let instance = if version >= 7 { req.group_instance_id.as_ref().map(|i| i.to_string()) } else { None };
        let partitions = req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), p.partition_index)))
            .collect();
        broker
            .groups
            .check_offset_commit(
                group_id.clone(),
                req.member_id.to_string(),
                instance,
                req.generation_id_or_member_epoch,
                version,
                partitions,
            )
            .await
    };
    let mut verdict = 0usize;
    broker.metadata.read(|m| {
        for t in &req.topics {
            let topic = t.name.0.to_string();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let group_error = match &verdicts {
                    Err(e) => Some(*e),
                    Ok(v) => v.get(verdict).copied().flatten(),
                };
                verdict += 1;
                let error = if let Some(e) = group_error {
                    Some(errors::group(e))
                } else if !partition_exists(m, &topic, p.partition_index) {
                    Some(code(ResponseError::UnknownTopicOrPartition))
                } else {
                    let leader_epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
                    let metadata = p.committed_metadata.as_ref();
                    match offset_to_store(&topic, p.partition_index, p.committed_offset, leader_epoch, metadata, now_ms)
                    {
                        Ok(o) => {
                            offsets.push(o);
                            None
                        }
                        Err(c) => Some(c),
                    }
                };
                parts.push((p.partition_index, error));
            }
            plan.push((t.name.clone(), parts));
        }
    });
    let broker = broker.clone();
    Handled::Deferred(
        async move {
            let stored = if offsets.is_empty() {
                Ok(())
            } else {
                submit(&broker, &group_id, GroupOp::CommitOffsets { offsets }).await
            };
            let topics = plan
                .into_iter()
                .map(|(name, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, e)| {
                            let e = e.unwrap_or_else(|| stored.err().unwrap_or(errors::NONE));
                            OffsetCommitResponsePartition::default().with_partition_index(p).with_error_code(e)
                        })
                        .collect();
                    OffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
                })
                .collect();
            ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
        }
        .boxed(),
    )
}

/// One fetched offset: (partition, offset, leader epoch, metadata, error code).
type Fetched = (i32, i64, i32, String, i16);

/// Offsets of `group_id` for `topics` (None = every committed one), -1 where none is committed.
/// With `require_stable` (OffsetFetch v7+, KIP-447), a partition with transactional offsets of
/// an undecided transaction answers UNSTABLE_OFFSET_COMMIT (offset -1) so the consumer retries
/// once the transaction is decided, as Kafka's coordinator does.
fn fetch_offsets(
    m: &MetadataImage,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<Fetched>)> {
    let fetched = |topic: &str, p: i32, o: Option<&CommittedOffset>| {
        if require_stable && m.has_pending_offset(group_id, topic, p) {
            return (p, -1, -1, String::new(), code(ResponseError::UnstableOffsetCommit));
        }
        match o {
            Some(o) => (p, o.offset, o.leader_epoch, o.metadata.clone().unwrap_or_default(), errors::NONE),
            None => (p, -1, -1, String::new(), errors::NONE),
        }
    };
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let parts = partitions
                    .into_iter()
                    .map(|p| fetched(&topic, p, m.committed_offset(group_id, &topic, p)))
                    .collect();
                (topic, parts)
            })
            .collect(),
        None => {
            // Every committed offset, grouped by topic (they come sorted by topic).
            let mut out: Vec<(String, Vec<Fetched>)> = Vec::new();
            for (topic, p, o) in m.committed_offsets(group_id) {
                match out.last_mut() {
                    Some((t, parts)) if t == topic => parts.push(fetched(topic, p, Some(o))),
                    _ => out.push((topic.to_string(), vec![fetched(topic, p, Some(o))])),
                }
            }
            out
        }
    }
}

pub fn offset_fetch(broker: &Arc<Broker>, req: OffsetFetchRequest, version: i16) -> Handled {
    let broker = broker.clone();
    // Read when this request's turn comes, after earlier commits on the connection applied.
    Handled::Deferred(async move { ResponseKind::OffsetFetch(offset_fetch_now(&broker, req, version).await) }.boxed())
}

async fn offset_fetch_now(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let group_id = g.group_id.0.to_string();
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            if !is_coordinator(broker, &group_id) {
                groups.push(out.with_error_code(errors::group(GroupError::NotCoordinator)));
                continue;
            }
            // v9: a member of a consumer-protocol group must name its current epoch.
            if version >= 9 {
                let member = g.member_id.as_ref().map(|m| m.to_string());
                if let Err(e) = broker.groups.check_offset_fetch(group_id.clone(), member, g.member_epoch).await {
                    groups.push(out.with_error_code(errors::group(e)));
                    continue;
                }
            }
            let wanted =
                g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            let topics = broker
                .metadata
                .read(|m| fetch_offsets(m, &group_id, wanted, req.require_stable))
                .into_iter()
                .map(|(topic, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|(p, offset, epoch, meta, error)| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(StrBytes::from_string(meta)))
                                .with_error_code(error)
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect();
            groups.push(out.with_topics(topics));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = req.group_id.0.to_string();
    if !is_coordinator(broker, &group_id) {
        let e = errors::group(GroupError::NotCoordinator);
        // v0-1 carry errors per partition only.
        return if version >= 2 {
            OffsetFetchResponse::default().with_error_code(e)
        } else {
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(-1)
                                .with_error_code(e)
                        })
                        .collect();
                    OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        };
    }
    let wanted = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    // `require_stable` exists from v7 (decoded as false below).
    let require_stable = version >= 7 && req.require_stable;
    let topics = broker
        .metadata
        .read(|m| fetch_offsets(m, &group_id, wanted, require_stable))
        .into_iter()
        .map(|(topic, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, offset, epoch, meta, error)| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(StrBytes::from_string(meta)))
                        .with_error_code(error)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub async fn offset_delete(broker: &Arc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    let group_error = if group_id.is_empty() {
        Some(GroupError::InvalidGroupId)
    } else if !is_coordinator(broker, &group_id) {
        Some(GroupError::NotCoordinator)
    } else {
        None
    };
    if let Some(e) = group_error {
        return OffsetDeleteResponse::default().with_error_code(errors::group(e));
    }
    let subscribed = match broker.groups.offset_delete_check(group_id.clone()).await {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return OffsetDeleteResponse::default().with_error_code(errors::group(e)),
    };
    let mut results: BTreeMap<usize, Vec<(i32, Option<i16>)>> = BTreeMap::new();
    let mut delete = Vec::new();
    broker.metadata.read(|m| {
        for (i, t) in req.topics.iter().enumerate() {
            let topic = t.name.0.to_string();
            for p in &t.partitions {
                let e = if !partition_exists(m, &topic, p.partition_index) {
                    Some(code(ResponseError::UnknownTopicOrPartition))
                } else if subscribed.contains(&topic) {
                    Some(code(ResponseError::GroupSubscribedToTopic))
                } else {
                    delete.push((topic.clone(), p.partition_index));
                    None
                };
                results.entry(i).or_default().push((p.partition_index, e));
            }
        }
    });
    let stored = if delete.is_empty() {
        Ok(())
    } else {
        submit(broker, &group_id, GroupOp::DeleteOffsets { partitions: delete }).await
    };
    if let Err(e) = stored {
        return OffsetDeleteResponse::default().with_error_code(e);
    }
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let partitions = results
                .remove(&i)
                .unwrap_or_default()
                .into_iter()
                .map(|(p, e)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(e.unwrap_or(errors::NONE))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod offset_to_store_tests {
    use super::*;

    #[test]
    fn metadata_beyond_kafkas_limit_is_refused() {
        let fits = StrBytes::from_string("m".repeat(OFFSET_METADATA_MAX_BYTES));
        let stored = offset_to_store("t", 1, 42, 3, Some(&fits), 7).expect("fits");
        assert_eq!((stored.partition, stored.offset, stored.leader_epoch, stored.commit_timestamp_ms), (1, 42, 3, 7));
        assert_eq!(stored.metadata.as_deref(), Some(fits.as_str()));
        assert_eq!(offset_to_store("t", 1, 42, 3, None, 7).expect("none").metadata.as_deref(), Some(""));
        let too_long = StrBytes::from_string("m".repeat(OFFSET_METADATA_MAX_BYTES + 1));
        assert_eq!(
            offset_to_store("t", 1, 42, 3, Some(&too_long), 7).err(),
            Some(code(ResponseError::OffsetMetadataTooLarge))
        );
    }
}
