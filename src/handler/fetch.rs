//! Fetch: committed data only, long-polled.
//!
//! A fetch is answered when it has `min_bytes` of data, when any partition has an error, or at
//! `max_wait_ms`; commits wake it through the metadata watch. Limits (KIP-74, as Kafka's
//! `ReplicaManager.readFromLog`): each partition gets at most `partition_max_bytes` and the whole
//! response at most `max_bytes`, in whole batches; only the first partition of the response that
//! returns data may exceed both, by its first batch alone, so a consumer always makes progress.
//! A later partition whose next batch does not fit returns no records this time.
//!
//! Isolation (RFC 0004 §5, Kafka's `FetchIsolation`): read_uncommitted (0) reads to the high
//! watermark; read_committed (1) reads whole batches that start below the last stable offset
//! (the first offset of the oldest open transaction, or the high watermark) and carries the
//! aborted transactions of the returned range from the partition's aborted index (no scan).
//! Both get `last_stable_offset`, and control batches (transaction markers) are returned as
//! Kafka returns them: clients skip them. Fetch sessions are not kept (session id 0), so clients
//! send full fetches. An offset past the high watermark gets OFFSET_OUT_OF_RANGE (the consumer then
//! resets its position) only once the broker's image is confirmed current with the controller;
//! unconfirmed (a frozen broker resumed in an old epoch, no controller reachable) it gets the
//! retriable NOT_LEADER_OR_FOLLOWER.
//!
//! Traced as `kafka.fetch` (waiting included), with a `log.read` child per chunk read from the
//! tail cache or object storage (`log::read`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, ResponseKind};
use skiff_controller::image::{Chunk, MetadataImage, check_leader_epoch};
use tracing::field::Empty;
use tracing::{Instrument, debug_span, warn};

use super::Handled;
use super::errors::{self, code};
use crate::broker::internal_topics::{self, InternalTopic, Leadership};
use crate::broker::{Broker, batch};
use crate::group::offsets_topic;

/// How far ahead of a catch-up consumer the block cache is warmed.
const READ_AHEAD_BYTES: usize = 4 << 20;

/// Upper bound on how long a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Kafka's `IsolationLevel.READ_COMMITTED`.
const READ_COMMITTED: i8 = 1;

pub fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> Handled {
    let broker = broker.clone();
    let span = debug_span!(
        "kafka.fetch",
        otel.kind = "server",
        version,
        max_wait_ms = req.max_wait_ms,
        min_bytes = req.min_bytes,
        partitions = Empty,
        bytes = Empty
    );
    if !span.is_disabled() {
        span.record("partitions", req.topics.iter().map(|t| t.partitions.len()).sum::<usize>());
    }
    Handled::Deferred(
        async move {
            // KIP-951: NOT_LEADER_OR_FOLLOWER partitions name the current leader (leader_hints.rs).
            let response = fetch(&broker, &req, version).await;
            ResponseKind::Fetch(super::leader_hints::fetch(&broker, response, version))
        }
        .instrument(span)
        .boxed(),
    )
}

async fn fetch(broker: &Arc<Broker>, req: &FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = broker.clock.now() + wait;
    let mut watch = broker.metadata.subscribe();
    let mut past_end = PastEnd::Unconfirmed;
    loop {
        watch.borrow_and_update();
        let (response, bytes, has_error, saw_past_end) = build(broker, req, version, past_end).await;
        if saw_past_end && past_end == PastEnd::Unconfirmed {
            // OFFSET_OUT_OF_RANGE makes a consumer reset its position, so it is only given from
            // an image confirmed current: a broker resumed after a freeze may still "lead" in
            // an old epoch whose high watermark the consumer has long read past.
            past_end = match broker.controller.catch_up().await {
                Ok(()) => PastEnd::Confirmed,
                Err(e) => {
                    warn!(error = %e, "fetch past the high watermark; metadata not confirmed, answering NOT_LEADER_OR_FOLLOWER");
                    PastEnd::Unknown
                }
            };
            continue;
        }
        if bytes >= req.min_bytes.max(0) as usize || has_error || broker.clock.now() >= deadline {
            broker.metrics.fetched_bytes.fetch_add(bytes as u64, Relaxed);
            tracing::Span::current().record("bytes", bytes);
            return response;
        }
        // Woken by the next apply (a commit), or the deadline; a closed watch means shutdown.
        if let Ok(Err(_)) = tokio::time::timeout_at(deadline, watch.changed()).await {
            return response;
        }
    }
}

/// Planned reads per fetched partition when the planned chunks hold no batch at or after the
/// fetch offset (it lies in a gap a cleaner pass left at the end of a chunk). Chunks without
/// data do not count against a plan's bytes, so one more plan always reaches a batch.
const MAX_GAP_PLANS: usize = 8;

/// The partition a read is for.
#[derive(Clone, Copy)]
struct Position<'a> {
    topic: &'a str,
    topic_id: uuid::Uuid,
    partition: i32,
    epoch: i32,
    isolation: i8,
}

/// The records of the planned chunks from `offset`, whole batches starting below `upper` (the
/// high watermark, or the last stable offset for read_committed); when they hold none (a fetch
/// in a trailing gap of a cleaned chunk), plans on from the end of the last chunk, as Kafka moves
/// on to the next segment, so the consumer gets the next record instead of an empty answer
/// forever.
async fn read_past_gaps(
    broker: &Broker,
    at: Position<'_>,
    mut offset: i64,
    mut chunks: Vec<Chunk>,
    upper: i64,
    max: usize,
    min_one: bool,
) -> Result<Bytes, skiff_storage::StorageError> {
    for _ in 0..MAX_GAP_PLANS {
        // Some: a batch is there (even if it does not fit `max`): never skip past it.
        if let Some(records) = broker.reader.records_or_gap(at.topic_id, &chunks, offset, max, min_one).await? {
            // Both the tail cache and object reads end here: nothing at or past `upper`.
            return Ok(batch::below_offset(&records, upper));
        }
        let next = chunks.last().map_or(upper, |c| c.last_offset + 1);
        if next >= upper {
            return Ok(Bytes::new());
        }
        offset = next;
        chunks = match plan(broker, at.topic, at.partition, offset, at.epoch, max, at.isolation) {
            Plan::Read { chunks, .. } if !chunks.is_empty() => chunks,
            _ => return Ok(Bytes::new()),
        };
    }
    Ok(Bytes::new())
}

/// How a fetch past the high watermark is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PastEnd {
    /// Not yet checked against the controller: OFFSET_OUT_OF_RANGE, and the caller confirms the
    /// image and builds the answer again.
    Unconfirmed,
    /// The image was confirmed current: the offset really is past the end.
    Confirmed,
    /// The image could not be confirmed (controller unreachable): the client retries after
    /// refreshing its metadata (NOT_LEADER_OR_FOLLOWER, as from a broker that is not sure it
    /// leads).
    Unknown,
}

/// What to read for one partition, decided under the metadata lock.
enum Plan {
    Error(i16),
    /// The fetch offset is past the high watermark in this broker's image.
    PastEnd,
    Read {
        topic_id: uuid::Uuid,
        hwm: i64,
        /// The last stable offset (RFC 0004 §5).
        lso: i64,
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

fn plan(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
    current_epoch: i32,
    max_bytes: usize,
    isolation: i8,
) -> Plan {
    broker.metadata.read(|m| {
        if let Some(t) = internal_topics::find(topic) {
            return plan_internal(m, t, broker.settings.node_id, partition, offset, current_epoch, max_bytes);
        }
        let Some(t) = m.topic(topic) else {
            return Plan::Error(code(ResponseError::UnknownTopicOrPartition));
        };
        let Some(p) = t.partition(partition) else {
            return Plan::Error(code(ResponseError::UnknownTopicOrPartition));
        };
        if p.leader() != broker.settings.node_id {
            // Another broker leads it (or none does): the client refreshes its metadata.
            return Plan::Error(code(if p.leader() < 0 {
                ResponseError::LeaderNotAvailable
            } else {
                ResponseError::NotLeaderOrFollower
            }));
        }
        if let Err(e) = p.check_leader_epoch(current_epoch) {
            return Plan::Error(errors::leader_epoch(e));
        }
        if offset > p.high_watermark() {
            return Plan::PastEnd;
        }
        // Below the log start: a lagging image has the log start at or below the real one, so
        // this holds in every newer image too.
        if offset < p.log_start_offset() {
            return Plan::Error(code(ResponseError::OffsetOutOfRange));
        }
        let lso = p.last_stable_offset();
        let upper = if isolation == READ_COMMITTED { lso } else { p.high_watermark() };
        // read_committed at or past the LSO (but not past the high watermark) is an empty
        // answer, as in Kafka; chunks that start at or past the bound are not read at all.
        let mut chunks = if offset < upper { p.chunks_from(offset, max_bytes) } else { Vec::new() };
        chunks.retain(|c| c.base_offset < upper);
        // The chunks after these, for read-ahead (only used when reading from objects).
        let next = chunks.last().map_or(offset, |c| c.last_offset + 1);
        let ahead = p.chunks_from(next, READ_AHEAD_BYTES);
        Plan::Read { topic_id: t.id(), hwm: p.high_watermark(), lso, log_start: p.log_start_offset(), chunks, ahead }
    })
}

/// The plan for an internal topic's partition: the same leader, epoch and offset checks as a
/// regular partition, against the coordinator shard and the log extent `internal_topics` gives;
/// the records of `__consumer_offsets` are encoded from the shard's group state here, under the
/// metadata lock, at most `max_bytes` (one record beyond it, KIP-74).
fn plan_internal(
    m: &MetadataImage,
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
    if let Err(e) = check_leader_epoch(current_epoch, leader.leader_epoch) {
        return Plan::Error(errors::leader_epoch(e));
    }
    let (log_start, end) = t.log_extent(m, partition);
    if offset < log_start || offset > end {
        return Plan::Error(code(ResponseError::OffsetOutOfRange));
    }
    let records = match t.leadership {
        Leadership::GroupCoordinatorShards => {
            // `partition_leader` accepted the partition, so it is a shard index.
            let shard = partition as u32;
            offsets_topic::read(m, shard, offset, max_bytes, leader.leader_epoch).records
        }
    };
    Plan::Records { hwm: end, log_start, records }
}

/// The aborted transactions a read_committed consumer needs to drop aborted records from
/// `records` (fetched from `fetch_offset`): those of the partition's aborted index that overlap
/// `[fetch_offset, end of records)` (Kafka's `collectAbortedTransactions`). Reading the index
/// after the records is safe: an abort applied meanwhile belongs to a transaction that was open
/// at the plan, which began at or after the LSO that bounded `records`.
fn aborted_in(
    broker: &Broker,
    topic_id: uuid::Uuid,
    partition: i32,
    fetch_offset: i64,
    records: &Bytes,
) -> Vec<AbortedTransaction> {
    let Some(end) = batch::end_offset(records) else { return Vec::new() };
    broker.metadata.read(|m| {
        m.partition(&topic_id, partition)
            .map(|p| p.aborted_transactions(fetch_offset..end))
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(a.producer_id))
                    .with_first_offset(a.first_offset)
            })
            .collect()
    })
}

/// The answer, its record bytes, whether a partition has an error, and whether a partition was
/// past the high watermark.
async fn build(
    broker: &Arc<Broker>,
    req: &FetchRequest,
    version: i16,
    past_end: PastEnd,
) -> (FetchResponse, usize, bool, bool) {
    let response_max = if version >= 3 && req.max_bytes > 0 { req.max_bytes as usize } else { usize::MAX };
    let mut total = 0usize;
    let mut has_error = false;
    let mut saw_past_end = false;
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
            let data = match plan(
                broker,
                &name,
                p.partition,
                p.fetch_offset,
                p.current_leader_epoch,
                max,
                req.isolation_level,
            ) {
                Plan::Error(e) => {
                    has_error = true;
                    base.with_error_code(e)
                }
                Plan::PastEnd => {
                    has_error = true;
                    saw_past_end = true;
                    base.with_error_code(code(match past_end {
                        PastEnd::Unconfirmed | PastEnd::Confirmed => ResponseError::OffsetOutOfRange,
                        PastEnd::Unknown => ResponseError::NotLeaderOrFollower,
                    }))
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
                Plan::Read { topic_id, hwm, lso, log_start, chunks, ahead } => {
                    let base =
                        base.with_high_watermark(hwm).with_last_stable_offset(lso).with_log_start_offset(log_start);
                    let upper = if req.isolation_level == READ_COMMITTED { lso } else { hwm };
                    // Kafka's `minOneMessage`: until some partition returned data.
                    let min_one = total == 0;
                    if total >= response_max || chunks.is_empty() {
                        base.with_records(Some(Bytes::new()))
                    } else {
                        let cold = chunks.iter().any(|c| broker.reader.tail.get(&c.object, c.position).is_none());
                        let at = Position {
                            topic: &name,
                            topic_id,
                            partition: p.partition,
                            epoch: p.current_leader_epoch,
                            isolation: req.isolation_level,
                        };
                        match read_past_gaps(broker, at, p.fetch_offset, chunks, upper, max, min_one).await {
                            Ok(records) => {
                                if cold {
                                    // A catch-up reader: fetch what it will want next.
                                    broker.reader.read_ahead(ahead);
                                }
                                total += records.len();
                                let base = if req.isolation_level == READ_COMMITTED {
                                    let aborted = aborted_in(broker, topic_id, p.partition, p.fetch_offset, &records);
                                    base.with_aborted_transactions(Some(aborted))
                                } else {
                                    base
                                };
                                base.with_records(Some(records))
                            }
                            Err(e) => {
                                warn!(topic = %name, partition = p.partition, error = %e, "fetch read failed");
                                has_error = true;
                                base.with_error_code(errors::storage(&e))
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
    (response, total, has_error, saw_past_end)
}
