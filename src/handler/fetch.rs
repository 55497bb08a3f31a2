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
//! Kafka returns them: clients skip them. Fetch sessions (KIP-227, `fetch_session.rs`): a full
//! fetch at v7+ gets a session id; the client's incremental fetches then name only changed
//! partitions, the broker reads every partition of the session and answers only those with
//! records, a changed high watermark, LSO or log start, a preferred read replica or an error
//! (an idle session long-polls to `max_wait_ms` and answers no partition). An offset past the
//! high watermark gets OFFSET_OUT_OF_RANGE (the consumer then resets its position) only once
//! the broker's image is confirmed current with the controller; unconfirmed (a frozen broker
//! resumed in an old epoch, no controller reachable) it gets the retriable
//! NOT_LEADER_OR_FOLLOWER.
//!
//! Follower fetching (KIP-392, RFC 0005): a consumer's fetch at v11+ may be served by any
//! broker Metadata lists among the partition's in-sync replicas (with racks: every live
//! broker), from object storage and its own caches, bounded by what its image says is
//! committed; so offsets, high watermark, LSO, log start and aborted transactions are the
//! image's on every broker. The leader answers a consumer in another rack that has such a
//! broker with no records and `preferred_read_replica` (Kafka's `RackAwareReplicaSelector`).
//! An offset past a follower's image is answered as past the end above: only after the image
//! is confirmed current, so a lagging follower parks the fetch instead.
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
use tracing::{Instrument, debug, debug_span, warn};

use super::Handled;
use super::errors::{self, code};
use super::fetch_session::{self, Context};
use crate::broker::internal_topics::{self, InternalTopic, Leadership};
use crate::broker::{Broker, batch};
use crate::group::offsets_topic;
use crate::metrics::Direction;

/// How far ahead of a catch-up consumer the block cache is warmed.
const READ_AHEAD_BYTES: usize = 4 << 20;

/// Upper bound on how long a fetch may park, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// Kafka's `IsolationLevel.READ_COMMITTED`.
const READ_COMMITTED: i8 = 1;

/// Who fetches (as KIP-392 needs it) and at which isolation level.
#[derive(Debug, Clone, Copy)]
struct Fetcher<'a> {
    /// A consumer at v11+ (Kafka's `FetchParams.fetchOnlyLeader` is false): any in-sync replica
    /// may serve it, and its leader may point it at one in its rack.
    any_replica: bool,
    /// Its `client.rack` ("" for none).
    rack: &'a str,
    isolation: i8,
}

impl<'a> Fetcher<'a> {
    fn of(req: &'a FetchRequest, version: i16) -> Self {
        // v15 moved the id of a replicating follower into `replica_state`; consumers send -1.
        let replica_id = if version >= 15 { req.replica_state.replica_id.0 } else { req.replica_id.0 };
        Fetcher {
            any_replica: version >= 11 && replica_id < 0,
            rack: req.rack_id.as_str(),
            isolation: req.isolation_level,
        }
    }
}

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
    // KIP-227: the session decides which partitions are read and which are answered.
    let replica_id = if version >= 15 { req.replica_state.replica_id.0 } else { req.replica_id.0 };
    let now_ms = broker.clock.now_ms();
    let context = broker.fetch_sessions.with(|c| c.open(&req, replica_id >= 0, now_ms));
    let (req, context) = match context {
        Context::Error(e) => {
            debug!(error = %e, "fetch session error");
            return Handled::Ready(ResponseKind::Fetch(fetch_session::error_response(errors::fetch_session(&e))));
        }
        Context::Incremental { id, epoch, request } => {
            (*request, Context::Incremental { id, epoch, request: Box::default() })
        }
        other => (req, other),
    };
    Handled::Deferred(
        async move {
            let mut response = fetch(&broker, &req, version).await;
            let now_ms = broker.clock.now_ms();
            match context {
                Context::Full { privileged } => {
                    broker.fetch_sessions.with(|c| c.complete_full(&req, &mut response, privileged, now_ms));
                }
                Context::Incremental { id, epoch, .. } => {
                    if let Err(e) = broker.fetch_sessions.with(|c| c.complete_incremental(id, epoch, &mut response)) {
                        // Kafka's IncrementalFetchContext answers a raced session with its id.
                        debug!(error = %e, "fetch session moved on while this fetch waited");
                        response = fetch_session::error_response(errors::fetch_session(&e)).with_session_id(id);
                    }
                }
                Context::Sessionless | Context::Error(_) => {}
            }
            // KIP-951: NOT_LEADER_OR_FOLLOWER partitions name the current leader (leader_hints.rs).
            ResponseKind::Fetch(super::leader_hints::fetch(&broker, response, version))
        }
        .instrument(span)
        .boxed(),
    )
}

async fn fetch(broker: &Arc<Broker>, req: &FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    // Nothing to read (every partition was refused by authorization, or none was asked for):
    // answered at once, as Kafka's ReplicaManager answers an empty `fetchInfos`.
    let wait = if req.topics.iter().all(|t| t.partitions.is_empty()) { Duration::ZERO } else { wait };
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
            let rack = broker.settings.rack.as_deref();
            broker.metrics.client_bytes(Direction::Out, req.rack_id.as_str(), rack, bytes as u64);
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
    fetcher: Fetcher<'a>,
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
        chunks = match plan(broker, at.topic, at.partition, offset, at.epoch, max, at.fetcher) {
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
    /// No records: the consumer is to fetch from `replica`, a broker in its rack (KIP-392).
    Redirect {
        hwm: i64,
        lso: i64,
        log_start: i64,
        replica: i32,
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
    fetcher: Fetcher<'_>,
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
        let local = broker.settings.node_id;
        let leads = p.leader() == local;
        let follower = fetcher.any_replica && p.leader() >= 0 && m.reported_replicas(p).1.contains(&local);
        if !(leads || follower) {
            // Another broker leads it (or none does) and this one may not serve it as a
            // follower: the client refreshes its metadata.
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
        // Within the log (Kafka's selector only considers replicas holding the offset): the
        // leader points a consumer from another rack at a broker of that rack.
        if leads && fetcher.any_replica {
            let rack = broker.settings.rack.as_deref();
            if let Some(replica) = preferred_read_replica(m, p, t.id(), local, rack, fetcher.rack) {
                let (hwm, log_start) = (p.high_watermark(), p.log_start_offset());
                return Plan::Redirect { hwm, lso, log_start, replica };
            }
        }
        let upper = if fetcher.isolation == READ_COMMITTED { lso } else { p.high_watermark() };
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

/// The broker a consumer in `client_rack` should fetch `p` from instead of this leader (in
/// `local_rack`), as Kafka's `RackAwareReplicaSelector`: none when the client gave no rack or
/// is in the leader's rack; else a live in-sync replica in its rack, the same one for a
/// partition on every call, spread over the rack's brokers by topic and partition.
fn preferred_read_replica(
    m: &MetadataImage,
    p: skiff_controller::image::PartitionView<'_>,
    topic_id: uuid::Uuid,
    local: i32,
    local_rack: Option<&str>,
    client_rack: &str,
) -> Option<i32> {
    if client_rack.is_empty() || local_rack == Some(client_rack) {
        return None;
    }
    let (_, isr) = m.reported_replicas(p);
    let mut in_rack: Vec<i32> = isr
        .into_iter()
        .filter(|b| *b != local && m.live_broker(*b).is_some_and(|e| e.rack.as_deref() == Some(client_rack)))
        .collect();
    in_rack.sort_unstable();
    in_rack.dedup();
    let spread = (topic_id.as_u128() as u64).wrapping_add(p.index() as u64);
    in_rack.get((spread % in_rack.len().max(1) as u64) as usize).copied()
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
    let fetcher = Fetcher::of(req, version);
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
            let data = match plan(broker, &name, p.partition, p.fetch_offset, p.current_leader_epoch, max, fetcher) {
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
                Plan::Redirect { hwm, lso, log_start, replica } => {
                    // Answered at once, as Kafka's `hasPreferredReadReplica`.
                    has_error = true;
                    base.with_high_watermark(hwm)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(log_start)
                        .with_preferred_read_replica(BrokerId(replica))
                        .with_records(Some(Bytes::new()))
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
                        let cold = chunks.iter().any(|c| !broker.reader.tail.contains(&c.object, c.position));
                        let at = Position {
                            topic: &name,
                            topic_id,
                            partition: p.partition,
                            epoch: p.current_leader_epoch,
                            fetcher,
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::{BrokerRegistration, CreateTopic};
    use uuid::Uuid;

    use super::preferred_read_replica;

    fn broker(id: i32, rack: Option<&str>) -> BrokerRegistration {
        BrokerRegistration {
            broker_id: id,
            incarnation: Uuid::from_u128(id as u128),
            host: "h".into(),
            port: 9000 + id,
            rack: rack.map(str::to_string),
            fenced: false,
            listeners: Vec::new(),
        }
    }

    /// Kafka's `RackAwareReplicaSelector`: the leader when the client has no rack, is in the
    /// leader's rack or in a rack without brokers; else a broker of its rack, the same one for a
    /// partition every time, spread over the rack's brokers.
    #[test]
    fn preferred_read_replica_follows_the_clients_rack() {
        let racks: BTreeMap<i32, &str> = [(1, "a"), (2, "b"), (3, "b"), (4, "c")].into();
        let mut fixture = ImageFixture::new("c");
        for (id, rack) in &racks {
            fixture = fixture.register_broker(broker(*id, Some(rack)));
        }
        let image = fixture
            .create_topic(CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(77),
                partitions: 16,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
            })
            .build();
        let t = image.topic("t").expect("created");
        let mut chosen_in_b = BTreeSet::new();
        for p in t.partitions() {
            let leader = p.leader();
            let own = Some(racks[&leader]);
            let pick = |client_rack: &str| preferred_read_replica(&image, p, t.id(), leader, own, client_rack);
            assert_eq!(pick(""), None, "no client rack");
            assert_eq!(pick(racks[&leader]), None, "the leader's own rack");
            assert_eq!(pick("nowhere"), None, "a rack without brokers");
            if racks[&leader] != "b" {
                let b = pick("b").expect("a broker in rack b");
                assert!([2, 3].contains(&b), "partition {}: {b} is not in rack b", p.index());
                assert_eq!(pick("b"), Some(b), "stable");
                chosen_in_b.insert(b);
            }
            if leader != 1 {
                assert_eq!(pick("a"), Some(1));
            }
        }
        assert_eq!(chosen_in_b, [2, 3].into(), "rack b's brokers share the partitions");
        // Without racks on the brokers, no broker is in the client's rack.
        let plain = ImageFixture::new("c").register_broker(broker(1, None)).register_broker(broker(2, None));
        let plain = plain
            .create_topic(CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(78),
                partitions: 2,
                configs: BTreeMap::new(),
                assignments: Vec::new(),
            })
            .build();
        let t = plain.topic("t").expect("created");
        for p in t.partitions() {
            assert_eq!(preferred_read_replica(&plain, p, t.id(), p.leader(), None, "a"), None);
        }
    }
}
