//! Messages: browse a partition (from an offset or a timestamp, oldest or newest first) and
//! produce a test message.
//!
//! Browsing reads committed chunks through the partition log's read path (`log::read`: the
//! image's chunks, the tail and block caches), as Fetch does, and decodes batches with
//! `broker::records` (any codec, bounded). Since every broker can read every committed chunk,
//! any broker answers. A timestamp is turned into an offset by ListOffsets. Producing builds
//! the record batch a Kafka producer would and hands it to the Produce handler (acks=all).
//!
//! Bounds: at most [`MAX_LIMIT`] records, at most `max_bytes` (≤ [`MAX_BYTES`]) of keys, values
//! and headers per page, at most [`READ_BUDGET_BYTES`] of batches read and [`MAX_READS`] reads.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ProduceRequest, ResponseKind, TopicName};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use kafka_protocol::messages::ApiKey;
use skiff_controller::acls::{AclOperation as Op, ResourceType as Rt};

use super::access::Who;
use super::payload::{Encoding, Payload};
use super::{Api, ApiError, ApiPath, ApiResult, body_json, check, json, ok, param, query, s};

use crate::broker::{Broker, records};
use crate::handler::{Handled, errors, list_offsets, produce};

/// Records per page at most, and by default.
pub const MAX_LIMIT: usize = 500;
const DEFAULT_LIMIT: usize = 50;
/// Bytes of keys, values and headers per page at most, and by default.
pub const MAX_BYTES: usize = 4 << 20;
const DEFAULT_BYTES: usize = 1 << 20;
/// Batch bytes one page may read from the log.
const READ_BUDGET_BYTES: usize = 16 << 20;
/// Reads (chunk plans) one page may make: compaction gaps and windows cost one each.
const MAX_READS: usize = 32;
/// ListOffsets' special timestamps.
pub(super) const LATEST: i64 = -1;
pub(super) const EARLIEST: i64 = -2;
const LIST_OFFSETS_VERSION: i16 = 7;
const PRODUCE_VERSION: i16 = 11;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

#[derive(Serialize)]
struct Page {
    topic: String,
    partition: i32,
    log_start_offset: i64,
    high_watermark: i64,
    order: &'static str,
    next_offset: Option<i64>,
    records: Vec<Shown>,
}

/// One record as shown.
#[derive(Serialize)]
struct Shown {
    offset: i64,
    timestamp_ms: i64,
    timestamp_type: &'static str,
    key: Option<Payload>,
    value: Option<Payload>,
    headers: Vec<ShownHeader>,
    /// Key, value and headers.
    size_bytes: usize,
}

#[derive(Serialize)]
struct ShownHeader {
    key: String,
    value: Option<Payload>,
}

/// The partition's id and extent, or 404.
fn locate(broker: &Broker, topic: &str, partition: i32) -> ApiResult<(Uuid, i64, i64)> {
    broker
        .metadata
        .read(|m| {
            let t = m.topic(topic)?;
            let p = t.partition(partition)?;
            Some((t.id(), p.log_start_offset(), p.high_watermark()))
        })
        .ok_or_else(|| {
            ApiError::of(
                ResponseError::UnknownTopicOrPartition,
                format!("Topic '{topic}' has no partition {partition}."),
            )
        })
}

/// ListOffsets of one partition (`EARLIEST`, `LATEST` or a timestamp): the offset, or `None`
/// when no record has a timestamp at or after the target.
pub(super) async fn list_offset(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    spec: i64,
) -> ApiResult<Option<i64>> {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(TopicName(s(topic))).with_partitions(vec![
            ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(spec),
        ]),
    ]);
    let resp = list_offsets::handle(broker, req, LIST_OFFSETS_VERSION).await;
    let p = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| ApiError::kafka(-1, "ListOffsets answered no partition."))?;
    check(p.error_code, None)?;
    Ok((p.offset >= 0).then_some(p.offset))
}

pub(super) async fn browse(
    State(api): State<Api>,
    who: Who,
    ApiPath((topic, partition)): ApiPath<(String, i32)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let broker = api.broker()?;
    // Fetch: READ on the topic (which implies the DESCRIBE its ListOffsets needs).
    who.on(broker, ApiKey::Fetch).require(Op::Read, Rt::Topic, &topic)?;
    let q = query(raw.as_deref())?;
    let limit = param::<usize>(&q, "limit")?.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let max_bytes = param::<usize>(&q, "max_bytes")?.unwrap_or(DEFAULT_BYTES).clamp(1, MAX_BYTES);
    let newest = match q.get("order").map(String::as_str) {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(o) => return Err(ApiError::BadRequest(format!("order is newest or oldest, not '{o}'."))),
    };
    let offset = param::<i64>(&q, "offset")?;
    let timestamp = param::<i64>(&q, "timestamp")?;
    let (topic_id, log_start, hwm) = locate(broker, &topic, partition)?;
    let start = match (offset, timestamp) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("Give offset or timestamp, not both.".into())),
        (Some(o), None) if o < 0 || o > hwm => {
            return Err(ApiError::of(
                ResponseError::OffsetOutOfRange,
                format!("Offset {o} is outside [0, {hwm}] (the high watermark)."),
            ));
        }
        (Some(o), None) => o,
        (None, Some(t)) if t < 0 => return Err(ApiError::BadRequest("timestamp is epoch milliseconds.".into())),
        (None, Some(t)) => list_offset(broker, &topic, partition, t).await?.unwrap_or(hwm),
        (None, None) if newest => hwm - 1,
        (None, None) => log_start,
    };
    let at = At { topic: &topic, partition, topic_id };
    let (records, next_offset) = if newest {
        read_newest(broker, at, log_start, start.min(hwm - 1), limit, max_bytes).await?
    } else {
        let from = start.max(log_start);
        let mut budget = Budget::new(max_bytes);
        let records = read_forward(broker, at, from, hwm, limit, &mut budget).await?;
        let next = records.last().map_or(from, |r| r.offset + 1);
        (records, Some(next))
    };
    Ok(ok(&Page {
        topic,
        partition,
        log_start_offset: log_start,
        high_watermark: hwm,
        order: if newest { "newest" } else { "oldest" },
        next_offset,
        records,
    }))
}

/// The partition a read is for.
#[derive(Clone, Copy)]
struct At<'a> {
    topic: &'a str,
    partition: i32,
    topic_id: Uuid,
}

/// What a page may still take.
struct Budget {
    /// Bytes of keys, values and headers.
    shown: usize,
    /// Batch bytes read.
    read: usize,
    reads: usize,
}

impl Budget {
    fn new(shown: usize) -> Self {
        Budget { shown, read: READ_BUDGET_BYTES, reads: MAX_READS }
    }
}

/// Records with offsets in `[from, until)`, ascending, at most `limit` and the budget (the
/// first record even if it alone exceeds the shown bytes, so a page always moves on).
async fn read_forward(
    broker: &Broker,
    at: At<'_>,
    from: i64,
    until: i64,
    limit: usize,
    budget: &mut Budget,
) -> ApiResult<Vec<Shown>> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < until && out.len() < limit && budget.reads > 0 && budget.read > 0 && budget.shown > 0 {
        budget.reads -= 1;
        let max = budget.read.min(DEFAULT_BYTES.max(budget.shown));
        let chunks = broker
            .metadata
            .read(|m| m.partition_by_name(at.topic, at.partition).map(|p| p.chunks_from(offset, max)))
            .ok_or_else(|| {
                // Deleted while the page was read.
                ApiError::of(ResponseError::UnknownTopicOrPartition, format!("Topic '{}' no longer exists.", at.topic))
            })?;
        if chunks.is_empty() {
            break;
        }
        let data = broker
            .reader
            .records_or_gap(at.topic_id, &chunks, offset, max, true)
            .await
            .map_err(|e| ApiError::kafka(errors::storage(&e), format!("Reading the log failed: {e}")))?;
        let Some(data) = data else {
            // A gap a cleaner pass left: go on after these chunks (as Fetch does).
            offset = chunks.last().map_or(until, |c| c.last_offset + 1);
            continue;
        };
        if data.is_empty() {
            break;
        }
        budget.read = budget.read.saturating_sub(data.len());
        let aborted = broker.metadata.read(|m| {
            m.partition_by_name(at.topic, at.partition)
                .map(|p| p.aborted_transactions(offset..until))
                .unwrap_or_default()
        });
        let want = limit - out.len();
        let shown_budget = budget.shown;
        let first = out.is_empty();
        let (shown, next) =
            tokio::task::spawn_blocking(move || render(data, offset, until, want, shown_budget, first, &aborted))
                .await
                .map_err(|e| ApiError::kafka(-1, format!("Decoding records failed: {e}")))?
                .map_err(|e| ApiError::of(ResponseError::CorruptMessage, e))?;
        budget.shown = budget.shown.saturating_sub(shown.iter().map(|r| r.size_bytes).sum());
        out.extend(shown);
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(out)
}

/// Records with offsets `<= end`, newest first: windows of the log read forward, each ending
/// below the previous one, until `limit` records or the log start.
async fn read_newest(
    broker: &Broker,
    at: At<'_>,
    log_start: i64,
    end: i64,
    limit: usize,
    max_bytes: usize,
) -> ApiResult<(Vec<Shown>, Option<i64>)> {
    // Reading forward, the shown-bytes limit would keep the oldest records of a window: read
    // within the read budget only, then keep the newest that fit.
    let mut budget = Budget::new(usize::MAX);
    let mut out: Vec<Shown> = Vec::new();
    let mut end = end;
    while end >= log_start && out.len() < limit && budget.reads > 0 && budget.read > 0 {
        let want = limit - out.len();
        let start = (end + 1 - want as i64).max(log_start);
        let window = read_forward(broker, at, start, end + 1, want, &mut budget).await?;
        out.extend(window.into_iter().rev());
        end = start - 1;
    }
    let mut shown = 0usize;
    let mut keep = 0;
    for r in &out {
        if keep > 0 && shown + r.size_bytes > max_bytes {
            break;
        }
        shown += r.size_bytes;
        keep += 1;
    }
    let next = if keep < out.len() {
        // Cut by the bytes: the next page starts below the last record kept.
        out.get(keep.saturating_sub(1)).map(|r| r.offset - 1).filter(|o| *o >= log_start)
    } else {
        (end >= log_start).then_some(end)
    };
    out.truncate(keep);
    Ok((out, next))
}

/// Decodes the batches in `data`: records in `[from, until)`, at most `want` and `max_shown`
/// bytes (at least one if `first`), skipping control batches and aborted transactions. Returns
/// them and the offset to go on from.
fn render(
    data: Bytes,
    from: i64,
    until: i64,
    want: usize,
    max_shown: usize,
    first: bool,
    aborted: &[skiff_controller::image::AbortedTransaction],
) -> Result<(Vec<Shown>, i64), String> {
    let mut out = Vec::new();
    let mut shown = 0usize;
    let mut next = from;
    let mut pos = 0;
    while pos < data.len() {
        let decoded = records::decode(&data[pos..]).map_err(|e| format!("A stored batch is corrupt: {e}"))?;
        let h = decoded.header;
        pos += h.size;
        let dropped = h.is_control()
            || (h.is_transactional()
                && aborted.iter().any(|a| {
                    a.producer_id == h.producer_id && a.first_offset <= h.base_offset && h.base_offset <= a.last_offset
                }));
        for r in decoded.records() {
            if r.offset >= until {
                return Ok((out, until));
            }
            if r.offset < next {
                continue;
            }
            if dropped {
                next = r.offset + 1;
                continue;
            }
            let headers = records::headers(r.headers).map_err(|e| format!("A stored record is corrupt: {e}"))?;
            let size = r.key.map_or(0, <[u8]>::len)
                + r.value.map_or(0, <[u8]>::len)
                + headers.iter().map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len)).sum::<usize>();
            if (!out.is_empty() || !first) && shown + size > max_shown {
                return Ok((out, next));
            }
            shown += size;
            out.push(Shown {
                offset: r.offset,
                timestamp_ms: if h.is_log_append_time() { h.max_timestamp } else { r.timestamp },
                timestamp_type: if h.is_log_append_time() { "LOG_APPEND_TIME" } else { "CREATE_TIME" },
                key: r.key.map(Payload::of),
                value: r.value.map(Payload::of),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| ShownHeader {
                        key: String::from_utf8_lossy(k).into_owned(),
                        value: v.map(Payload::of),
                    })
                    .collect(),
                size_bytes: size,
            });
            next = r.offset + 1;
            if out.len() >= want {
                return Ok((out, next));
            }
        }
        // Records a cleaner removed leave no record: go on after the batch.
        next = next.max(h.last_offset() + 1).min(until);
    }
    Ok((out, next))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceBody {
    partition: Option<i32>,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderBody>,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderBody {
    key: String,
    value: Option<String>,
}

#[derive(Serialize)]
struct Produced {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
}

/// `POST /topics/{t}/messages`: one record through the Produce handler, acks=all.
pub(super) async fn produce(
    State(api): State<Api>,
    who: Who,
    ApiPath(topic): ApiPath<String>,
    body: Body,
) -> ApiResult<Response> {
    let broker = api.broker()?;
    who.on(broker, ApiKey::Produce).require(Op::Write, Rt::Topic, &topic)?;
    let b: ProduceBody = body_json(body).await?;
    let bad = |what: &str, e: String| ApiError::BadRequest(format!("The {what} is not valid {:?}: {e}.", b.encoding));
    let key = b.key.as_deref().map(|k| b.encoding.decode(k).map_err(|e| bad("key", e))).transpose()?;
    let value = b.value.as_deref().map(|v| b.encoding.decode(v).map_err(|e| bad("value", e))).transpose()?;
    let count = broker.metadata.read(|m| m.topic(&topic).map(|t| t.partition_count())).ok_or_else(|| {
        ApiError::of(ResponseError::UnknownTopicOrPartition, format!("Topic '{topic}' does not exist."))
    })?;
    let partition = match (b.partition, &key) {
        (Some(p), _) => p,
        // Kafka's default partitioner: murmur2 of the key.
        (None, Some(k)) => (to_positive(murmur2(k)) % count.max(1) as u32) as i32,
        (None, None) => (api.next_partition.fetch_add(1, Relaxed) % count.max(1) as u32) as i32,
    };
    let timestamp = broker.clock.now_ms();
    let mut record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        headers: Default::default(),
    };
    let mut seen = std::collections::HashSet::with_capacity(b.headers.len());
    for h in &b.headers {
        // The record's headers are a map here (kafka-protocol's `IndexMap`): a second header
        // with the same key would silently replace the first, so refuse rather than drop it.
        if !seen.insert(h.key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Header key '{}' is repeated: Kafka allows duplicate header keys, but the console cannot \
                 produce them (its record encoder keeps one value per key).",
                h.key
            )));
        }
        let v = h.value.as_deref().map(|v| b.encoding.decode(v).map_err(|e| bad("header value", e))).transpose()?;
        record.headers.insert(s(h.key.clone()), v.map(Bytes::from));
    }
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &[record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .map_err(|e| ApiError::kafka(-1, format!("Encoding the record failed: {e}")))?;
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(PRODUCE_TIMEOUT_MS).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(s(topic.clone()))).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(batch.freeze())),
        ]),
    ]);
    let resp = match produce::handle(broker, req, PRODUCE_VERSION, "").await {
        Handled::Ready(ResponseKind::Produce(r)) => r,
        Handled::Deferred(f) => match f.await {
            ResponseKind::Produce(r) => r,
            _ => return Err(ApiError::kafka(-1, "Produce answered something else.")),
        },
        _ => return Err(ApiError::kafka(-1, "Produce gave no answer.")),
    };
    let p = resp
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .ok_or_else(|| ApiError::kafka(-1, "Produce answered no partition."))?;
    check(p.error_code, p.error_message.as_ref())?;
    let body = Produced {
        topic,
        partition,
        offset: p.base_offset,
        timestamp_ms: if p.log_append_time_ms >= 0 { p.log_append_time_ms } else { timestamp },
    };
    Ok(json(StatusCode::CREATED, &body))
}

/// Kafka's `Utils.murmur2` (the default partitioner's hash of a key).
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`.
fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    fn batch_of(base: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1,
                timestamp: 1000 + i as i64,
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: [(s("h"), Some(Bytes::from_static(b"\x00\x01")))].into_iter().collect(),
            })
            .collect();
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut b,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .expect("encodes");
        b.freeze()
    }

    #[test]
    fn render_cuts_by_range_count_and_bytes() {
        let mut data = BytesMut::new();
        data.extend_from_slice(&batch_of(0, &["a", "bb", "ccc"]));
        data.extend_from_slice(&batch_of(3, &["{\"x\":1}"]));
        let data = data.freeze();
        let (shown, next) = render(data.clone(), 1, 10, 10, 1 << 20, true, &[]).expect("decodes");
        assert_eq!(shown.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(next, 4);
        assert_eq!(shown[2].value.as_ref().map(|p| p.encoding), Some("json"));
        assert_eq!(shown[0].headers[0].value.as_ref().and_then(|p| p.hex.clone()).as_deref(), Some("0001"));
        assert_eq!(shown[0].timestamp_ms, 1001);
        let (shown, next) = render(data.clone(), 0, 2, 10, 1 << 20, true, &[]).expect("decodes");
        assert_eq!((shown.len(), next), (2, 2));
        // Control batches are skipped, and so are transactions listed as aborted.
        let aborted = [skiff_controller::image::AbortedTransaction { producer_id: 9, first_offset: 0, last_offset: 5 }];
        let (shown, _) = render(data.clone(), 0, 10, 10, 1 << 20, true, &aborted).expect("decodes");
        assert_eq!(shown.len(), 4, "the test batches are not transactional");
        let (shown, next) = render(data.clone(), 0, 10, 1, 1 << 20, true, &[]).expect("decodes");
        assert_eq!((shown.len(), next), (1, 1));
        // Bytes: "a"+"h"+2 = 4, "bb"+3 = 5: a budget of 6 holds one; the first always fits.
        let (shown, next) = render(data.clone(), 0, 10, 10, 6, true, &[]).expect("decodes");
        assert_eq!((shown.len(), next), (1, 1));
        let (shown, _) = render(data, 0, 10, 10, 1, false, &[]).expect("decodes");
        assert!(shown.is_empty());
    }
}
