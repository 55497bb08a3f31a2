//! Transactions seen on the wire, for the transaction checker (`tests/txn_checker.rs`) and the
//! Streams exactly-once test (`tests/ecosystem.rs`): raw log scans that keep what Kafka's record
//! batches say about transactions (producer id, the transactional bit, control markers), a
//! read_committed reader that filters exactly as Kafka's Java consumer does (the fetch's aborted
//! transactions list, markers), ListOffsets per isolation level, and OffsetFetch with
//! `require_stable`.
//!
//! Two independent views of what read_committed must show are computed, so the checker can
//! compare the broker's answer (the LSO and aborted list it sends) against its own log:
//! [`client_view`] (what a consumer shows from the read_committed fetches) and [`marker_view`]
//! (every transactional record decided by the next marker of its producer in the raw log).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{FetchRequest, FindCoordinatorRequest, GroupId, ListOffsetsRequest, OffsetFetchRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use super::client::{Client, FETCH_VERSION, LATEST, LIST_OFFSETS_VERSION, topic_name};
use super::load::Routing;

/// Kafka's `isolation_level` values (Fetch v4+, ListOffsets v2+).
pub const READ_UNCOMMITTED: i8 = 0;
pub const READ_COMMITTED: i8 = 1;

/// Error codes a scan retries (the partition or coordinator is moving).
const RETRIABLE: &[i16] = &[
    5,  // LEADER_NOT_AVAILABLE
    6,  // NOT_LEADER_OR_FOLLOWER
    7,  // REQUEST_TIMED_OUT
    14, // COORDINATOR_LOAD_IN_PROGRESS
    15, // COORDINATOR_NOT_AVAILABLE
    16, // NOT_COORDINATOR
    56, // KAFKA_STORAGE_ERROR
    74, // FENCED_LEADER_EPOCH
    75, // UNKNOWN_LEADER_EPOCH
    88, // UNSTABLE_OFFSET_COMMIT (require_stable while a transaction is pending)
];

/// A control record's meaning (key: version, type; type 0 = ABORT, 1 = COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// One record of a partition's log with its batch's transaction attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transactional: bool,
    /// `Some` for a control record (a transaction marker).
    pub marker: Option<Marker>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// What one scan of a partition saw.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub records: Vec<LogRecord>,
    /// The end the scan read to: the high watermark (read_uncommitted) or the LSO
    /// (read_committed) of its first fetch.
    pub end: i64,
    /// Every aborted transaction (producer id, first offset) the fetches listed.
    pub aborted: BTreeSet<(i64, i64)>,
    /// The largest LSO any fetch reported (read_committed).
    pub last_stable_offset: i64,
}

fn decode(mut data: Bytes) -> anyhow::Result<Vec<LogRecord>> {
    const LOG_OVERHEAD: usize = 12;
    let mut out = Vec::new();
    while data.len() >= LOG_OVERHEAD {
        let batch_length = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        ensure!(batch_length >= 0, "negative batch length {batch_length}");
        let size = LOG_OVERHEAD + batch_length as usize;
        if data.len() < size {
            break; // a truncated batch at the end, as a Kafka broker may send
        }
        let mut batch = data.split_to(size);
        let set = RecordBatchDecoder::decode(&mut batch).context("decoding a fetched record batch")?;
        for r in set.records {
            let marker = if r.control {
                let mut key = r.key.clone().context("control record without a key")?;
                ensure!(key.remaining() >= 4, "control record key of {} bytes", key.remaining());
                let _version = key.get_i16();
                Some(match key.get_i16() {
                    0 => Marker::Abort,
                    1 => Marker::Commit,
                    other => bail!("control record type {other} at offset {}", r.offset),
                })
            } else {
                None
            };
            out.push(LogRecord {
                offset: r.offset,
                producer_id: r.producer_id,
                producer_epoch: r.producer_epoch,
                transactional: r.transactional,
                marker,
                key: r.key,
                value: r.value,
            });
        }
    }
    Ok(out)
}

/// One Fetch of one partition at `offset` with `isolation`.
pub async fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    isolation: i8,
) -> anyhow::Result<PartitionData> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(8 << 20)
        .with_isolation_level(isolation)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(4 << 20),
            ])]);
    let resp = client.send(&req, FETCH_VERSION).await?;
    ensure!(resp.error_code == 0, "fetch failed: top-level error {}", resp.error_code);
    resp.responses
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("fetch response without the partition")
}

/// Reads a partition from offset 0 to its end (the high watermark or the LSO of the first
/// fetch, per `isolation`) from the partition's leader, following leader changes (bounded by
/// `timeout`). Keeps every record, control records included.
pub async fn scan(
    routing: &Routing,
    topic: &str,
    partition: i32,
    isolation: i8,
    timeout: Duration,
) -> anyhow::Result<Scan> {
    let deadline = Instant::now() + timeout;
    let mut out = Scan::default();
    let mut next = 0;
    let mut end = None;
    let mut conn: Option<Client> = None;
    loop {
        ensure!(
            Instant::now() < deadline,
            "scan of {topic}/{partition} (isolation {isolation}) not done within {timeout:?}"
        );
        let mut c = match conn.take() {
            Some(c) => c,
            None => match routing.connect_leader(topic, partition).await {
                Ok((c, _)) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let p = match fetch(&mut c, topic, partition, next, isolation).await {
            Ok(p) if p.error_code == 0 => p,
            Ok(p) if RETRIABLE.contains(&p.error_code) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(p) => bail!("fetch {topic}/{partition} at {next} (isolation {isolation}): error {}", p.error_code),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        conn = Some(c);
        let bound = if isolation == READ_COMMITTED { p.last_stable_offset } else { p.high_watermark };
        out.last_stable_offset = out.last_stable_offset.max(p.last_stable_offset);
        let end = *end.get_or_insert(bound);
        for a in p.aborted_transactions.unwrap_or_default() {
            out.aborted.insert((a.producer_id.0, a.first_offset));
        }
        if next >= end {
            out.end = end;
            return Ok(out);
        }
        let before = next;
        for r in decode(p.records.unwrap_or_default())? {
            if r.offset >= next && r.offset < end {
                next = r.offset + 1;
                out.records.push(r);
            } else if r.offset >= next {
                // Past the end of the scan: the batch straddles it; skip the rest.
                next = next.max(end);
            }
        }
        ensure!(
            next > before,
            "fetch {topic}/{partition} at {before} (isolation {isolation}) returned nothing below its end {end}"
        );
    }
}

/// What a read_committed consumer shows from a read_committed scan: Kafka's consumer algorithm
/// (`CompletedFetch`): an aborted transaction (pid, first offset) from the fetch's list makes
/// the pid's transactional records at or after that offset invisible until the pid's ABORT
/// marker; control records are never shown.
pub fn client_view(scan: &Scan) -> Vec<LogRecord> {
    let mut pending: Vec<(i64, i64)> = scan.aborted.iter().map(|&(pid, first)| (first, pid)).collect();
    pending.sort();
    let mut pending = pending.into_iter().peekable();
    let mut aborted_pids: BTreeSet<i64> = BTreeSet::new();
    let mut out = Vec::new();
    for r in &scan.records {
        while let Some(&(first, pid)) = pending.peek() {
            if first > r.offset {
                break;
            }
            aborted_pids.insert(pid);
            pending.next();
        }
        match r.marker {
            Some(Marker::Abort) => {
                aborted_pids.remove(&r.producer_id);
            }
            Some(Marker::Commit) => {}
            None if r.transactional && aborted_pids.contains(&r.producer_id) => {}
            None => out.push(r.clone()),
        }
    }
    out
}

/// How each transactional record of a raw (read_uncommitted) log was decided: by the next marker
/// of its producer id at a higher offset; `None` when no marker follows (still open).
pub fn decisions(records: &[LogRecord]) -> BTreeMap<i64, Option<Marker>> {
    let mut open: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in records {
        match r.marker {
            Some(m) => {
                for o in open.remove(&r.producer_id).unwrap_or_default() {
                    out.insert(o, Some(m));
                }
            }
            None if r.transactional => open.entry(r.producer_id).or_default().push(r.offset),
            None => {}
        }
    }
    for o in open.into_values().flatten() {
        out.insert(o, None);
    }
    out
}

/// What read_committed must show according to the raw log's own markers: non-transactional
/// records, and transactional records whose producer's next marker is a COMMIT.
pub fn marker_view(raw: &[LogRecord]) -> Vec<LogRecord> {
    let decided = decisions(raw);
    raw.iter()
        .filter(|r| r.marker.is_none())
        .filter(|r| !r.transactional || decided.get(&r.offset) == Some(&Some(Marker::Commit)))
        .cloned()
        .collect()
}

/// Transactions in a raw log: (producer id, first data offset, marker offset or `None`).
pub fn transaction_spans(raw: &[LogRecord]) -> Vec<(i64, i64, Option<i64>)> {
    let mut open: BTreeMap<i64, i64> = BTreeMap::new();
    let mut spans = Vec::new();
    for r in raw {
        match r.marker {
            Some(_) => {
                if let Some(first) = open.remove(&r.producer_id) {
                    spans.push((r.producer_id, first, Some(r.offset)));
                }
            }
            None if r.transactional => {
                open.entry(r.producer_id).or_insert(r.offset);
            }
            None => {}
        }
    }
    spans.extend(open.into_iter().map(|(pid, first)| (pid, first, None)));
    spans
}

/// ListOffsets LATEST with `isolation`: (error code, offset).
pub async fn list_latest(
    client: &mut Client,
    topic: &str,
    partition: i32,
    isolation: i8,
) -> anyhow::Result<(i16, i64)> {
    let req =
        ListOffsetsRequest::default().with_replica_id((-1).into()).with_isolation_level(isolation).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(LATEST),
            ]),
        ]);
    let resp = client.send(&req, LIST_OFFSETS_VERSION).await?;
    let p = resp
        .topics
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("ListOffsets response without the partition")?;
    Ok((p.error_code, p.offset))
}

/// The group's committed offsets on `topic` (OffsetFetch v7 with `require_stable`, so a
/// pending transactional commit is waited for, not read around), retried through coordinator
/// moves until `timeout`. -1 where nothing is committed.
pub async fn committed_offsets(
    routing: &Routing,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<Vec<i64>> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match try_committed_offsets(routing, group, topic, partitions).await {
            Ok(Ok(offsets)) => return Ok(offsets),
            Ok(Err(code)) if RETRIABLE.contains(&code) => last = format!("error {code}"),
            Ok(Err(code)) => bail!("OffsetFetch {group}: error {code}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("OffsetFetch {group} (require_stable) not answered within {timeout:?}: {last}")
}

async fn try_committed_offsets(
    routing: &Routing,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Result<Vec<i64>, i16>> {
    let mut c = routing.connect_any().await?;
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
    let r = c.send(&req, 3).await?;
    if r.error_code != 0 {
        return Ok(Err(r.error_code));
    }
    let mut c = Client::connect(&format!("{}:{}", r.host, r.port)).await?;
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_require_stable(true)
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partition_indexes((0..partitions).collect()),
        ]));
    let r = c.send(&req, 7).await?;
    if r.error_code != 0 {
        return Ok(Err(r.error_code));
    }
    let mut committed = vec![-1; partitions as usize];
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Ok(Err(p.error_code));
            }
            if let Some(slot) = committed.get_mut(p.partition_index as usize) {
                *slot = p.committed_offset;
            }
        }
    }
    Ok(Ok(committed))
}
