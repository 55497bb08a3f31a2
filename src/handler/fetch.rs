//! Fetch: committed data only, long-polled.
//!
//! A fetch is answered when it has `min_bytes` of data, when any partition has an error, or at
//! `max_wait_ms`; commits wake it through the metadata watch. Limits (KIP-74, as Kafka's
//! `ReplicaManager.readFromLog`): each partition gets at most `partition_max_bytes` and the whole
//! response at most `max_bytes`, in whole batches; only the first partition of the response that
//! returns data may exceed both, by its first batch alone, so a consumer always makes progress.
//! A later partition whose next batch does not fit returns no records this time. Both isolation levels read up to the high watermark, which is also the last stable
//! offset until transactions exist. Fetch sessions are not kept (session id 0), so clients send
//! full fetches.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt, TryStreamExt};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ResponseKind};
use skiff_controller::metadata::{Chunk, MetadataState};
use tracing::warn;

use super::Handled;
use super::errors::{self, code};
use crate::broker::internal_topics::{self, InternalTopic, Leadership};
use crate::broker::{Broker, batch};
use crate::group::offsets_topic;

/// How far ahead of a catch-up consumer the block cache is warmed.
const READ_AHEAD_BYTES: usize = 4 << 20;

/// Upper bound on how long a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Chunks of one partition read at once (each a different object when the data is still in
/// small WAL objects): read one after the other, a catch-up fetch over hundreds of chunks took
/// hundreds of GET latencies and could exceed the client's request timeout on every retry.
const CHUNK_READ_CONCURRENCY: usize = 16;

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> Handled {
    let broker = broker.clone();
    Handled::Deferred(async move { ResponseKind::Fetch(fetch(&broker, &req, version).await) }.boxed())
}

async fn fetch(broker: &Arc<Broker>, req: &FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = broker.clock.now() + wait;
    let mut watch = broker.metadata.subscribe();
    loop {
        watch.borrow_and_update();
        let (response, bytes, has_error) = build(broker, req, version).await;
        if bytes >= req.min_bytes.max(0) as usize || has_error || broker.clock.now() >= deadline {
            broker.metrics.fetched_bytes.fetch_add(bytes as u64, Relaxed);
            return response;
        }
        // Woken by the next apply (a commit), or the deadline; a closed watch means shutdown.
        if let Ok(Err(_)) = tokio::time::timeout_at(deadline, watch.changed()).await {
            return response;
        }
    }
}

/// What to read for one partition, decided under the metadata lock.
enum Plan {
    Error(i16),
    Read {
        topic_id: uuid::Uuid,
        hwm: i64,
        log_start: i64,
        chunks: Vec<Chunk>,
        ahead: Vec<Chunk>,
    },
    /// Records built from the metadata itself (`__consumer_offsets`), already within the limit.
    Records {
        hwm: i64,
        log_start: i64,
        records: Bytes,
    },
}

fn plan(broker: &Broker, topic: &str, partition: i32, offset: i64, current_epoch: i32, max_bytes: usize) -> Plan {
    broker.metadata.read(|m| {
        if let Some(t) = internal_topics::find(topic) {
            return plan_internal(m, t, broker.settings.node_id, partition, offset, current_epoch, max_bytes);
        }
        let Some(t) = m.topics.get(topic) else {
            return Plan::Error(code(ResponseError::UnknownTopicOrPartition));
        };
        let Some(p) = usize::try_from(partition).ok().and_then(|i| t.partitions.get(i)) else {
            return Plan::Error(code(ResponseError::UnknownTopicOrPartition));
        };
        if p.leader != broker.settings.node_id {
            // Another broker leads it (or none does): the client refreshes its metadata.
            return Plan::Error(code(if p.leader < 0 {
                ResponseError::LeaderNotAvailable
            } else {
                ResponseError::NotLeaderOrFollower
            }));
        }
        if current_epoch >= 0 && current_epoch != p.leader_epoch {
            return Plan::Error(code(if current_epoch < p.leader_epoch {
                ResponseError::FencedLeaderEpoch
            } else {
                ResponseError::UnknownLeaderEpoch
            }));
        }
        if offset < p.log_start_offset || offset > p.end_offset {
            return Plan::Error(code(ResponseError::OffsetOutOfRange));
        }
        let mut chunks = Vec::new();
        let mut planned = 0usize;
        let mut next = offset;
        while next < p.end_offset && (chunks.is_empty() || planned < max_bytes) {
            let Some(c) = p.chunk_for(next) else { break };
            planned += c.len as usize;
            next = c.last_offset + 1;
            chunks.push(c.clone());
        }
        // The chunks after these, for read-ahead (only used when reading from objects).
        let mut ahead = Vec::new();
        let mut ahead_bytes = 0usize;
        while next < p.end_offset && ahead_bytes < READ_AHEAD_BYTES {
            let Some(c) = p.chunk_for(next) else { break };
            ahead_bytes += c.len as usize;
            next = c.last_offset + 1;
            ahead.push(c.clone());
        }
        Plan::Read { topic_id: t.topic_id, hwm: p.end_offset, log_start: p.log_start_offset, chunks, ahead }
    })
}

/// The plan for an internal topic's partition: the same leader, epoch and offset checks as a
/// regular partition, against the coordinator shard and the log extent `internal_topics` gives;
/// the records of `__consumer_offsets` are encoded from the shard's group state here, under the
/// metadata lock, at most `max_bytes` (one record beyond it, KIP-74).
fn plan_internal(
    m: &MetadataState,
    t: &InternalTopic,
    local: i32,
    partition: i32,
    offset: i64,
    current_epoch: i32,
    max_bytes: usize,
) -> Plan {
    let Some(leader) = t.partition_leader(m, local, partition) else {
        return Plan::Error(code(ResponseError::UnknownTopicOrPartition));
    };
    if leader.leader != local {
        return Plan::Error(code(if leader.leader < 0 {
            ResponseError::LeaderNotAvailable
        } else {
            ResponseError::NotLeaderOrFollower
        }));
    }
    if current_epoch >= 0 && current_epoch != leader.leader_epoch {
        return Plan::Error(code(if current_epoch < leader.leader_epoch {
            ResponseError::FencedLeaderEpoch
        } else {
            ResponseError::UnknownLeaderEpoch
        }));
    }
    let (log_start, end) = t.log_extent(m, partition);
    if offset < log_start || offset > end {
        return Plan::Error(code(ResponseError::OffsetOutOfRange));
    }
    let records = match t.leadership {
        Leadership::GroupCoordinatorShards => {
            // `partition_leader` accepted the partition, so it is a shard index.
            let shard = partition as u32;
            offsets_topic::read(&m.groups, shard, offset, max_bytes, leader.leader_epoch).records
        }
    };
    Plan::Records { hwm: end, log_start, records }
}

async fn build(broker: &Arc<Broker>, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let response_max = if version >= 3 && req.max_bytes > 0 { req.max_bytes as usize } else { usize::MAX };
    let mut total = 0usize;
    let mut has_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.topic.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let base = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(if req.isolation_level == 1 { Some(Vec::new()) } else { None });
            let max = (p.partition_max_bytes.max(0) as usize).min(response_max.saturating_sub(total));
            let data = match plan(broker, &name, p.partition, p.fetch_offset, p.current_leader_epoch, max) {
                Plan::Error(e) => {
                    has_error = true;
                    base.with_error_code(e)
                }
                Plan::Records { hwm, log_start, records } => {
                    let base =
                        base.with_high_watermark(hwm).with_last_stable_offset(hwm).with_log_start_offset(log_start);
                    // Built with at least one record; like a batch, that one may exceed the
                    // limits only for the first partition that returns data (KIP-74).
                    if total >= response_max || (total > 0 && records.len() > max) {
                        base.with_records(Some(Bytes::new()))
                    } else {
                        total += records.len();
                        base.with_records(Some(records))
                    }
                }
                Plan::Read { topic_id, hwm, log_start, chunks, ahead } => {
                    let base =
                        base.with_high_watermark(hwm).with_last_stable_offset(hwm).with_log_start_offset(log_start);
                    // Kafka's `minOneMessage`: until some partition returned data.
                    let min_one = total == 0;
                    if total >= response_max || chunks.is_empty() {
                        base.with_records(Some(Bytes::new()))
                    } else {
                        let cold = chunks.iter().any(|c| broker.reader.tail.get(&c.object, c.position).is_none());
                        match read(broker, topic_id, &chunks, p.fetch_offset, max, min_one).await {
                            Ok(records) => {
                                if cold {
                                    // A catch-up reader: fetch what it will want next.
                                    broker.reader.read_ahead(ahead);
                                }
                                total += records.len();
                                base.with_records(Some(records))
                            }
                            Err(e) => {
                                warn!(topic = %name, partition = p.partition, error = %e, "fetch read failed");
                                has_error = true;
                                base.with_error_code(code(ResponseError::KafkaStorageError))
                            }
                        }
                    }
                }
            };
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    let response = FetchResponse::default().with_error_code(errors::NONE).with_session_id(0).with_responses(topics);
    (response, total, has_error)
}

/// Reads the planned chunks and cuts them to whole batches from `offset` within `max_bytes`
/// (the first batch regardless of the limit when `min_one`).
async fn read(
    broker: &Broker,
    topic_id: uuid::Uuid,
    chunks: &[Chunk],
    offset: i64,
    max_bytes: usize,
    min_one: bool,
) -> Result<Bytes, String> {
    // The futures are built up front (lazily run) so no closure borrows across the stream.
    let reads: Vec<_> = chunks.iter().map(|c| broker.reader.chunk(topic_id, c)).collect();
    let parts: Vec<Bytes> =
        futures::stream::iter(reads).buffered(CHUNK_READ_CONCURRENCY).try_collect().await.map_err(|e| e.to_string())?;
    let first = match parts.first() {
        Some(f) => batch::slice_from_offset(f, offset).unwrap_or_default(),
        None => return Ok(Bytes::new()),
    };
    let joined = if parts.len() == 1 {
        first
    } else {
        let mut buf = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        buf.extend_from_slice(&first);
        for p in &parts[1..] {
            if buf.len() >= max_bytes {
                break;
            }
            buf.extend_from_slice(p);
        }
        buf.freeze()
    };
    Ok(batch::whole_batches_within(&joined, max_bytes, min_one))
}
