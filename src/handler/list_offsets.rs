//! ListOffsets (earliest, latest, max timestamp, by timestamp exact to the record) and
//! OffsetForLeaderEpoch.
//!
//! By-timestamp lookups use the index's per-chunk max timestamp to find the first candidate
//! chunk, then the batch headers, then decode only that one batch's records (decompressing if
//! needed) to find the exact first record with `timestamp >= T`.
//!
//! Isolation (v2+, Kafka's `Partition.fetchOffsetForTimestamp`): read_committed (1) answers
//! latest with the last stable offset, and a by-timestamp or max-timestamp answer at or past it
//! as "none" (-1), since a read_committed consumer cannot read there yet; read_uncommitted uses
//! the high watermark.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use skiff_controller::image::{Chunk, MetadataImage, OffsetsTopicView, check_leader_epoch};
use tracing::warn;

use super::errors::{self, code};
use crate::broker::Broker;
use crate::broker::internal_topics::{self, InternalTopic, Leadership};
use crate::log::lookup;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// Kafka's `IsolationLevel.READ_COMMITTED`.
const READ_COMMITTED: i8 = 1;

pub async fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let r = match lookup(
                broker,
                &name,
                p.partition_index,
                p.current_leader_epoch,
                p.timestamp,
                req.isolation_level,
            )
            .await
            {
                // leader_epoch exists from v4 on; older versions must leave it at its default.
                Ok((offset, timestamp, epoch)) => base
                    .with_error_code(errors::NONE)
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                Err(e) => base.with_error_code(e).with_offset(-1).with_timestamp(-1).with_leader_epoch(-1),
            };
            parts.push(r);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(parts));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, leader epoch) for one partition and target.
async fn lookup(
    broker: &Broker,
    topic: &str,
    partition: i32,
    current_epoch: i32,
    target: i64,
    isolation: i8,
) -> Result<(i64, i64, i32), i16> {
    if let Some(t) = internal_topics::find(topic) {
        return lookup_internal(broker, t, partition, current_epoch, target);
    }
    let snapshot = broker.metadata.read(|m| {
        let t = m.topic(topic)?;
        let p = t.partition(partition)?;
        let candidate: Option<Chunk> = match target {
            LATEST | EARLIEST => None,
            MAX_TIMESTAMP => p.chunk_with_max_timestamp().cloned(),
            t => p.chunk_for_timestamp(t).cloned(),
        };
        Some((
            t.id(),
            p.leader_epoch(),
            p.check_leader_epoch(current_epoch),
            p.log_start_offset(),
            // The last offset a consumer of this isolation level can read up to.
            if isolation == READ_COMMITTED { p.last_stable_offset() } else { p.high_watermark() },
            candidate,
        ))
    });
    let Some((topic_id, epoch, epoch_check, log_start, end, candidate)) = snapshot else {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    };
    epoch_check.map_err(errors::leader_epoch)?;
    match target {
        LATEST => return Ok((end, -1, epoch)),
        EARLIEST => return Ok((log_start, -1, epoch)),
        t if t < MAX_TIMESTAMP => return Err(code(ResponseError::InvalidRequest)),
        _ => {}
    }
    let Some(chunk) = candidate else {
        return Ok((-1, -1, epoch));
    };
    let want = if target == MAX_TIMESTAMP { chunk.max_timestamp } else { target };
    let found = lookup::offset_for_time(&broker.reader, topic_id, &chunk, want, log_start).await.map_err(|e| {
        warn!(topic, partition, error = %e, "ListOffsets read failed");
        errors::storage(&e)
    })?;
    match found {
        Some((offset, ts)) if offset < end => Ok((offset, ts, epoch)),
        // At or past the last fetchable offset (read_committed: the LSO): not readable yet.
        Some(_) => Ok((-1, -1, epoch)),
        // The chunk's batches all precede the log start: nothing at or after `target`.
        None => Ok((-1, -1, epoch)),
    }
}

/// ListOffsets on an internal topic's partition, against its coordinator shard's epoch and the
/// log extent `internal_topics` gives. By timestamp: the first record of the shard's
/// `__consumer_offsets` view (in offset order) whose timestamp reaches the target, as Kafka
/// searches a compacted log; max timestamp: the first record with the largest timestamp.
fn lookup_internal(
    broker: &Broker,
    t: &InternalTopic,
    partition: i32,
    current_epoch: i32,
    target: i64,
) -> Result<(i64, i64, i32), i16> {
    let local = broker.settings.node_id;
    let found = broker.metadata.read(|m| {
        let leader = t.partition_leader(m, local, partition)?;
        let by_time = match (t.leadership, target) {
            (_, LATEST | EARLIEST) => None,
            (Leadership::GroupCoordinatorShards, MAX_TIMESTAMP) => {
                let mut best: Option<(i64, i64)> = None;
                for r in m.offsets_topic_records(partition as u32, 0) {
                    if best.is_none_or(|(_, ts)| r.timestamp_ms > ts) {
                        best = Some((r.offset, r.timestamp_ms));
                    }
                }
                best
            }
            (Leadership::GroupCoordinatorShards, target) => m
                .offsets_topic_records(partition as u32, 0)
                .find(|r| r.timestamp_ms >= target)
                .map(|r| (r.offset, r.timestamp_ms)),
        };
        Some((leader, t.log_extent(m, partition), by_time))
    });
    let Some((leader, (log_start, end), by_time)) = found else {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    };
    let epoch = leader.leader_epoch;
    check_leader_epoch(current_epoch, epoch).map_err(errors::leader_epoch)?;
    match target {
        LATEST => Ok((end, -1, epoch)),
        EARLIEST => Ok((log_start, -1, epoch)),
        t if t < MAX_TIMESTAMP => Err(code(ResponseError::InvalidRequest)),
        _ => Ok(by_time.map_or((-1, -1, epoch), |(offset, ts)| (offset, ts, epoch))),
    }
}

pub fn offset_for_leader_epoch(broker: &Broker, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let local = broker.settings.node_id;
    let topics = broker.metadata.read(|m| {
        req.topics
            .iter()
            .map(|t| {
                if let Some(internal) = internal_topics::find(t.topic.0.as_str()) {
                    let partitions = t.partitions.iter().map(|p| internal_epoch_end(m, internal, local, p)).collect();
                    return OffsetForLeaderTopicResult::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(partitions);
                }
                let topic = m.topic(t.topic.0.as_str());
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let base = EpochEndOffset::default().with_partition(p.partition);
                        let Some(state) = topic.and_then(|t| t.partition(p.partition)) else {
                            return base
                                .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                                .with_leader_epoch(-1)
                                .with_end_offset(-1);
                        };
                        if let Err(e) = state.check_leader_epoch(p.current_leader_epoch) {
                            return base
                                .with_error_code(errors::leader_epoch(e))
                                .with_leader_epoch(-1)
                                .with_end_offset(-1);
                        }
                        match state.end_offset_for_epoch(p.leader_epoch) {
                            Some((epoch, end)) => {
                                base.with_error_code(errors::NONE).with_leader_epoch(epoch).with_end_offset(end)
                            }
                            None => base.with_error_code(errors::NONE).with_leader_epoch(-1).with_end_offset(-1),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()).with_partitions(partitions)
            })
            .collect()
    });
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// OffsetForLeaderEpoch on an internal topic's partition. Its log (the compacted view of a
/// shard's group writes) is never truncated when the shard moves, so any epoch up to the
/// current one ends at the high watermark: a consumer validating its position after a
/// coordinator move never detects truncation. A newer epoch than the shard's is unknown (-1),
/// as Kafka answers.
fn internal_epoch_end(
    m: &MetadataImage,
    t: &InternalTopic,
    local: i32,
    p: &kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition,
) -> EpochEndOffset {
    let base = EpochEndOffset::default().with_partition(p.partition);
    let Some(leader) = t.partition_leader(m, local, p.partition) else {
        return base
            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
            .with_leader_epoch(-1)
            .with_end_offset(-1);
    };
    if let Err(e) = check_leader_epoch(p.current_leader_epoch, leader.leader_epoch) {
        return base.with_error_code(errors::leader_epoch(e)).with_leader_epoch(-1).with_end_offset(-1);
    }
    let (_, end) = t.log_extent(m, p.partition);
    if p.leader_epoch > leader.leader_epoch {
        return base.with_error_code(errors::NONE).with_leader_epoch(-1).with_end_offset(-1);
    }
    base.with_error_code(errors::NONE).with_leader_epoch(p.leader_epoch).with_end_offset(end)
}
