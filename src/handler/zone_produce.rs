//! Zero cross-zone produce (RFC 0005, "Produce"): a producer in zone A writes only to brokers in
//! zone A; its records reach the partition's leader in zone B through object storage.
//!
//! ```text
//!  producer (client.id …skiff_rack=A) ──Produce──▶ broker a1 (rack A, named leader by Metadata)
//!     a1: validate, PUT the batches (offsets unassigned) as a staging object wal/<a1>/<stage>-<seq>
//!     a1 ──Forward{object, position, len, crc, producer's txn id}──▶ b1 (rack B, real leader)
//!           (zone listener SKIFF_ZONE, ~200 bytes; never record bytes)
//!     b1: GET the section (object storage: same region, no zone transfer), then the same append
//!         as a client's produce (offsets, sequences, transactions, epochs) ──▶ admitted
//!     a1 ◀── admitted (base offset) ── b1 ── its own WAL PUT + commit ──▶ done ──▶ a1 ──▶ producer
//! ```
//!
//! Only when the client declares its rack (`broker::client_rack`) and this broker has one; any
//! other produce takes the path it always took. The real leader stays the one writer of its
//! epoch: every guarantee of the write path holds because the forwarded bytes go through it.
//! A staging object is never indexed: garbage collection deletes it as an orphan after
//! `gc_grace`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::messages::MetadataResponse;
use kafka_protocol::messages::produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use skiff_controller::PeerConn;
use skiff_storage::WalObjectBuilder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::errors;
use super::produce;
use crate::broker::Broker;

/// The listener name a broker with a rack registers its zone endpoint under. No Kafka listener
/// has this name, so Metadata never hands it to a client.
pub const ZONE_LISTENER: &str = "SKIFF_ZONE";

/// Staging objects' incarnation token starts with this: `wal/<broker>/stage-<uuid>-<seq>`.
pub const STAGE_PREFIX: &str = "stage-";

/// Forward frames are small (a reference, an answer): anything larger is not one.
const MAX_FRAME: usize = 64 << 10;

/// A zone connection idle this long is closed by the leader.
const IDLE: Duration = Duration::from_secs(60);

/// The proxy side's per-process state: staging object keys.
pub struct ZoneLink {
    /// `stage-<fresh uuid>` per process: staging keys never collide with WAL keys (docs/format.md:
    /// unique keys per writer), and anything that lists `wal/` tells them apart by the prefix.
    incarnation: String,
    seq: AtomicU64,
    /// Mutual TLS on zone connections, both ways (`controller_tls_*`); `None`: plain TCP.
    tls: Option<Arc<skiff_controller::PeerTls>>,
}

impl ZoneLink {
    pub fn new(incarnation: Uuid, tls: Option<Arc<skiff_controller::PeerTls>>) -> Self {
        Self { incarnation: format!("{STAGE_PREFIX}{}", incarnation.simple()), seq: AtomicU64::new(0), tls }
    }
}

/// Asks the real leader to append a staged section.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ForwardRequest {
    topic_id: Uuid,
    partition: i32,
    object: String,
    position: u64,
    len: u64,
    crc: u32,
    transactional_id: Option<String>,
    /// The client's Produce version (codec checks, TV2, error codes by version).
    version: i16,
}

/// The leader's answer: `done: false` once offsets are assigned (the append is in order), then
/// `done: true` with the final answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ForwardReply {
    done: bool,
    error_code: i16,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    record_errors: Vec<(i32, Option<String>)>,
}

impl ForwardReply {
    fn from_response(r: &PartitionProduceResponse, done: bool) -> Self {
        Self {
            done,
            error_code: r.error_code,
            error_message: r.error_message.as_ref().map(|m| m.to_string()),
            base_offset: r.base_offset,
            log_append_time_ms: r.log_append_time_ms,
            log_start_offset: r.log_start_offset,
            record_errors: r
                .record_errors
                .iter()
                .map(|e| (e.batch_index, e.batch_index_error_message.as_ref().map(|m| m.to_string())))
                .collect(),
        }
    }

    fn into_response(self, index: i32) -> PartitionProduceResponse {
        PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(self.error_code)
            .with_error_message(self.error_message.map(StrBytes::from_string))
            .with_base_offset(self.base_offset)
            .with_log_append_time_ms(self.log_append_time_ms)
            .with_log_start_offset(self.log_start_offset)
            .with_record_errors(
                self.record_errors
                    .into_iter()
                    .map(|(i, m)| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(i)
                            .with_batch_index_error_message(m.map(StrBytes::from_string))
                    })
                    .collect(),
            )
    }
}

/// Why a forward failed on the way (the leader's own refusals come back as its answer).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing reached the leader (no zone endpoint, connection refused): it is not serving.
    #[error("the partition's leader could not be reached: {0}")]
    NotSent(String),
    /// The request may have reached the leader; its outcome is unknown.
    #[error("forwarded append's outcome is unknown: {0}")]
    Unknown(String),
    /// The staging PUT failed.
    #[error("staging the records failed: {0}")]
    Staging(String),
}

/// The zone endpoint of the live leader of `(topic_id, partition)` when a produce from a client
/// in `client_rack` to this broker is forwarded to it: the client declared a rack, this broker
/// has one, and the partition is led by another live broker that has a zone endpoint.
pub fn forward_target(broker: &Broker, client_rack: Option<&str>, topic_id: Uuid, partition: i32) -> Option<String> {
    client_rack?;
    broker.settings.rack.as_ref()?;
    let me = broker.settings.node_id;
    broker.metadata.read(|m| {
        let leader = m.partition(&topic_id, partition)?.leader();
        if leader < 0 || leader == me {
            return None;
        }
        m.live_broker_listener(leader, ZONE_LISTENER).map(|(host, port)| format!("{host}:{port}"))
    })
}

/// Metadata for a client in `client_rack`: every partition led by a broker of another rack is
/// answered with a live broker of the client's rack instead (the same one from every broker:
/// chosen by hashing the partition over the rack's brokers in id order), so the client sends
/// its produce there. Unchanged when the client's rack has no live broker with a zone
/// endpoint, or the leader has none (then the produce crosses zones, as without racks).
pub fn route_metadata(broker: &Broker, client_rack: &str, response: &mut MetadataResponse) {
    broker.metadata.read(|m| {
        let mut local: Vec<i32> = m
            .live_broker_endpoints()
            .into_iter()
            .filter(|b| b.rack.as_deref() == Some(client_rack))
            .map(|b| b.broker_id)
            .filter(|id| m.live_broker_listener(*id, ZONE_LISTENER).is_some())
            .collect();
        local.sort_unstable();
        if local.is_empty() {
            return;
        }
        for topic in &mut response.topics {
            let Some(name) = &topic.name else { continue };
            let Some(t) = m.topic(name.0.as_str()) else { continue };
            let topic_id = t.id();
            for p in &mut topic.partitions {
                let leader = p.leader_id.0;
                if leader < 0 || local.contains(&leader) || m.live_broker_listener(leader, ZONE_LISTENER).is_none() {
                    continue;
                }
                let at = route_hash(topic_id, p.partition_index) % local.len() as u64;
                p.leader_id = kafka_protocol::messages::BrokerId(local[at as usize]);
            }
        }
    });
}

/// A stable spread of partitions over a rack's brokers (every broker computes the same).
fn route_hash(topic_id: Uuid, partition: i32) -> u64 {
    let v = topic_id.as_u128();
    let mut h = (v as u64) ^ ((v >> 64) as u64) ^ (partition as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// One partition of a produce request to forward.
pub struct Staged {
    pub topic_id: Uuid,
    pub partition: i32,
    pub records: Bytes,
    /// Offset slots of its batches (from their last offset deltas).
    pub slots: i64,
    pub target: String,
}

/// The answer to a forwarded partition once its append is admitted at the leader (offsets
/// assigned, so later requests on the client's connection append after it) or refused: the
/// final answer, or a future of it.
pub type Forwarded = BoxFuture<'static, PartitionProduceResponse>;

/// Stages every partition in `items` in one object (a repeated partition in another) with one
/// create-only PUT per object, then forwards each to its leader and waits until each is
/// admitted there. The returned futures resolve to the final answers, in `items` order.
// Each forward's future yields another future on purpose: the first completes at admission
// (the connection may read its next request), the second at the leader's final answer.
#[allow(clippy::async_yields_async)]
pub async fn forward_all(
    broker: &Arc<Broker>,
    items: Vec<Staged>,
    transactional_id: Option<&str>,
    version: i16,
    timeout: Duration,
) -> Vec<Forwarded> {
    let mut builders: Vec<(WalObjectBuilder, Vec<(Uuid, i32)>)> = Vec::new();
    let mut placed = Vec::with_capacity(items.len());
    for it in &items {
        let at = match builders.iter().position(|(_, keys)| !keys.contains(&(it.topic_id, it.partition))) {
            Some(at) => at,
            None => {
                builders.push((WalObjectBuilder::new(), Vec::new()));
                builders.len() - 1
            }
        };
        let (builder, keys) = &mut builders[at];
        // Offsets are unknown here (the leader assigns them): the section spans the batches'
        // record slots from 0, which is all the format asks of a section.
        let added = builder.add_section(
            *it.topic_id.as_bytes(),
            it.partition,
            0,
            it.slots.max(1) - 1,
            -1,
            std::slice::from_ref(&it.records),
        );
        keys.push((it.topic_id, it.partition));
        placed.push((at, keys.len() - 1, added.is_ok()));
    }
    let storage = &broker.reader.storage;
    let mut objects = Vec::with_capacity(builders.len());
    for (builder, _) in builders {
        let (object, sections) = builder.finish();
        let seq = broker.zone.seq.fetch_add(1, Relaxed);
        let key = storage.wal_key(broker.settings.node_id, &broker.zone.incarnation, seq);
        let put = storage.put_new(&key, object).await.map_err(|e| e.to_string());
        objects.push((key, sections, put));
    }
    let calls = items.into_iter().zip(placed).map(|(it, (object, section, added))| {
        let (key, sections, put) = &objects[object];
        let request = match (put, sections.get(section), added) {
            (Ok(()), Some(s), true) => Ok(ForwardRequest {
                topic_id: it.topic_id,
                partition: it.partition,
                object: key.clone(),
                position: s.position,
                len: s.len,
                crc: s.crc,
                transactional_id: transactional_id.map(str::to_string),
                version,
            }),
            (Err(e), _, _) => Err(ForwardError::Staging(e.clone())),
            _ => Err(ForwardError::Staging("no section was built".into())),
        };
        let index = it.partition;
        let target = it.target;
        let tls = broker.zone.tls.clone();
        async move {
            let failed = move |e: ForwardError| -> Forwarded {
                warn!(partition = index, error = %e, "forwarded produce failed");
                let code = errors::zone_forward(&e);
                let r = PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                async move { r }.boxed()
            };
            let request = match request {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            match tokio::time::timeout(timeout, admit(&target, &request, tls.as_deref())).await {
                Err(_) => failed(ForwardError::Unknown(format!("no answer from {target} within {timeout:?}"))),
                Ok(Err(e)) => failed(e),
                Ok(Ok((first, _))) if first.done => {
                    let r = first.into_response(index);
                    async move { r }.boxed()
                }
                Ok(Ok((_, mut conn))) => async move {
                    match tokio::time::timeout(timeout, read_frame::<ForwardReply>(&mut conn)).await {
                        Ok(Ok(last)) if last.done => last.into_response(index),
                        Ok(Ok(_)) => failed(ForwardError::Unknown("a second admission from the leader".into())).await,
                        Ok(Err(e)) => failed(ForwardError::Unknown(e.to_string())).await,
                        Err(_) => failed(ForwardError::Unknown(format!("no final answer within {timeout:?}"))).await,
                    }
                }
                .boxed(),
            }
        }
    });
    futures::future::join_all(calls).await
}

/// Sends `request` to the zone endpoint `target` and reads the first answer.
async fn admit(
    target: &str,
    request: &ForwardRequest,
    tls: Option<&skiff_controller::PeerTls>,
) -> Result<(ForwardReply, PeerConn), ForwardError> {
    let stream = TcpStream::connect(target).await.map_err(|e| ForwardError::NotSent(format!("{target}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let mut conn: PeerConn = match tls {
        None => Box::new(stream),
        // Nothing was sent before the handshake completed: a refusal is NotSent.
        Some(tls) => tls.connect(target, stream).await.map_err(|e| ForwardError::NotSent(format!("{target}: {e}")))?,
    };
    let body = serde_json::to_vec(request).map_err(|e| ForwardError::NotSent(e.to_string()))?;
    // A write that fails may still have delivered the frame: the outcome is unknown from here.
    write_frame(&mut conn, &body).await.map_err(|e| ForwardError::Unknown(e.to_string()))?;
    let first = read_frame::<ForwardReply>(&mut conn).await.map_err(|e| ForwardError::Unknown(e.to_string()))?;
    Ok((first, conn))
}

async fn write_frame(conn: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    conn.write_all(&frame).await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(conn: &mut (impl AsyncRead + Unpin)) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("zone frame of {len} bytes (limit {MAX_FRAME})")));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::other(format!("undecodable zone frame: {e}")))
}

/// The leader side: accepts forwards on `listener` until `stop`.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "zone listener accept failed");
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let broker = broker.clone();
        // Detached: a connection ends when the forwarding broker closes it or goes idle, and
        // each forward it carries ends with the WAL's answer (the WAL drains at shutdown).
        tokio::spawn(async move {
            // With TLS, a peer without a certificate of the cluster CA is refused here (counted
            // and logged, rate-limited, by `PeerTls`) before any frame is read.
            let conn: PeerConn = match &broker.zone.tls {
                None => Box::new(conn),
                Some(tls) => match tls.accept(conn, peer).await {
                    Some(c) => c,
                    None => return,
                },
            };
            if let Err(e) = serve_connection(&broker, conn).await {
                debug!(%peer, error = %e, "zone connection closed");
            }
        });
    }
}

async fn serve_connection(broker: &Arc<Broker>, mut conn: PeerConn) -> std::io::Result<()> {
    loop {
        let request = match tokio::time::timeout(IDLE, read_frame::<ForwardRequest>(&mut conn)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        let index = request.partition;
        let version = request.version;
        let (response, ack) = append(broker, request).await;
        let body = serde_json::to_vec(&ForwardReply::from_response(&response, ack.is_none()))?;
        write_frame(&mut conn, &body).await?;
        if let Some(ack) = ack {
            let last = produce::settle(response.with_index(index), Some(ack), version).await;
            write_frame(&mut conn, &serde_json::to_vec(&ForwardReply::from_response(&last, true))?).await?;
        }
    }
}

/// Reads the staged section and appends it as a client's produce of those bytes would be.
async fn append(broker: &Arc<Broker>, req: ForwardRequest) -> (PartitionProduceResponse, Option<produce::Ack>) {
    let refuse = |code: i16, message: String| {
        let r = PartitionProduceResponse::default()
            .with_index(req.partition)
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_base_offset(-1)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(-1);
        (r, None)
    };
    // Only staged sections: a forward never makes the leader re-append a WAL object's bytes
    // (which another partition's records may be).
    let staged = req.object.rsplit('/').next().is_some_and(|name| name.starts_with(STAGE_PREFIX));
    if !staged {
        warn!(object = %req.object, "forwarded produce refused: not a staging object");
        return refuse(errors::zone_not_staged(), format!("{} is not a staging object", req.object));
    }
    let range = req.position..req.position.saturating_add(req.len);
    let records = match broker.reader.storage.get_range(&req.object, range).await {
        Ok(b) => b,
        Err(e) => {
            warn!(object = %req.object, error = %e, "forwarded produce: reading the staged records failed");
            return refuse(errors::zone_staged_read(&e), e.to_string());
        }
    };
    if crc32c::crc32c(&records) != req.crc {
        info!(object = %req.object, "forwarded produce: staged section fails its CRC");
        return refuse(errors::zone_staged_corrupt(), "staged records fail their CRC-32C".into());
    }
    produce::append_forwarded(
        broker,
        req.topic_id,
        req.partition,
        records,
        req.version,
        req.transactional_id.as_deref(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_into_kafka_answers() {
        let r = PartitionProduceResponse::default()
            .with_index(3)
            .with_error_code(87)
            .with_error_message(Some(StrBytes::from_static_str("bad")))
            .with_base_offset(-1)
            .with_log_append_time_ms(5)
            .with_log_start_offset(9)
            .with_record_errors(vec![BatchIndexAndErrorMessage::default().with_batch_index(2)]);
        let wire = serde_json::to_vec(&ForwardReply::from_response(&r, true)).expect("encodes");
        let back: ForwardReply = serde_json::from_slice(&wire).expect("decodes");
        assert!(back.done);
        assert_eq!(back.into_response(3), r);
    }

    #[test]
    fn the_route_hash_spreads_partitions() {
        let t = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        let mut seen = [0u32; 2];
        for p in 0..64 {
            seen[(route_hash(t, p) % 2) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 16), "{seen:?}");
        assert_eq!(route_hash(t, 5), route_hash(t, 5));
    }
}
