//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! No Kafka semantics live here beyond what a frame is. Requests are admitted one at a time (so
//! a connection's produces append in order); their responses may complete later and are written
//! strictly in request order, with at most `max_inflight` outstanding (back-pressure: we stop
//! reading). A frame over `socket.request.max.bytes`, a truncated or undecodable frame closes
//! the connection with a log line; an unsupported version is answered first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::handler::not_served::Asker;
use crate::handler::{self, Handled, api_versions};
use crate::protocol::{self, DecodeError};

/// A response slot: resolves to the encoded frame, or `None` to close the connection.
type Slot = BoxFuture<'static, Option<Bytes>>;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_inflight: usize,
}

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Slot>(limits.max_inflight);
    // Owned by this connection: joined below once the reader stops.
    let write_task = tokio::spawn(async move {
        let mut writer = BufWriter::with_capacity(64 * 1024, writer);
        loop {
            // Responses are written as soon as they are ready and flushed before any wait:
            // batching happens only among answers that are already complete.
            let mut slot = match rx.try_recv() {
                Ok(slot) => slot,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if writer.flush().await.is_err() {
                        break;
                    }
                    match rx.recv().await {
                        Some(slot) => slot,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let frame = match (&mut slot).now_or_never() {
                Some(frame) => frame,
                None => {
                    if writer.flush().await.is_err() {
                        break;
                    }
                    slot.await
                }
            };
            let Some(frame) = frame else { break };
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    });
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut reader, limits.max_frame_bytes) => f,
            _ = shutdown.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(reason) => {
                warn!(%peer, "closing connection: {reason}");
                break;
            }
        };
        broker.metrics.requests.fetch_add(1, Relaxed);
        let raw = frame.clone();
        let slot = match protocol::decode_request(frame) {
            Ok(request) => {
                let (api_key, version, correlation_id) =
                    (request.api_key, request.version, request.header.correlation_id);
                tracing::trace!(%peer, ?api_key, version, correlation_id, "request");
                match handler::handle(&broker, request, peer).await {
                    Handled::Ready(body) => ready(encode(api_key, version, correlation_id, &body, peer)),
                    Handled::Deferred(fut) => {
                        fut.map(move |body| encode(api_key, version, correlation_id, &body, peer)).boxed()
                    }
                    Handled::NoResponse => continue,
                }
            }
            Err(e) => {
                broker.metrics.request_errors.fetch_add(1, Relaxed);
                let (answer, close) = refuse(&broker, &e, peer, &raw);
                if let Some(a) = answer
                    && tx.send(ready(Some(a))).await.is_err()
                {
                    break;
                }
                if close {
                    let _ = tx.send(ready(None)).await;
                    break;
                }
                continue;
            }
        };
        if tx.send(slot).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

fn ready(frame: Option<Bytes>) -> Slot {
    futures::future::ready(frame).boxed()
}

fn encode(api_key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind, peer: SocketAddr) -> Option<Bytes> {
    match protocol::encode_response(api_key, version, correlation_id, body) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(%peer, ?api_key, version, "cannot encode response, closing connection: {e}");
            None
        }
    }
}

/// The answer to an undecodable request and whether to close afterwards. An API or version we do
/// not serve is logged once per client (handler/not_served.rs); a malformed frame every time.
fn refuse(broker: &Broker, e: &DecodeError, peer: SocketAddr, frame: &[u8]) -> (Option<Bytes>, bool) {
    let unsupported = ResponseError::UnsupportedVersion.code();
    let not_served = |feature: String, why: String| {
        let asker = Asker { client_id: protocol::peek_client_id(frame).unwrap_or_default(), ip: peer.ip() };
        broker.not_served.report(broker.clock.now_ms(), &asker, &feature, &why);
    };
    match e {
        // KIP-511: a too-new ApiVersions gets a v0 answer with the error and our key list, so
        // the client can retry with a version we know.
        DecodeError::UnsupportedVersion { api_key: ApiKey::ApiVersions, version, correlation_id } => {
            info!(%peer, version, "ApiVersions version unsupported; answering with v0");
            let body = ResponseKind::ApiVersions(api_versions::response(unsupported));
            (protocol::encode_response(ApiKey::ApiVersions, 0, *correlation_id, &body).ok(), false)
        }
        DecodeError::UnsupportedVersion { api_key, version, correlation_id } => {
            let served = match protocol::supported_range(*api_key) {
                Some(_) if protocol::is_refused_version(*api_key, *version) => {
                    "this version is advertised but refused, as Kafka 4 refuses it (KIP-896)".to_string()
                }
                Some(r) => format!("Skiff serves versions {}-{}", r.min, r.max),
                None => "Skiff does not serve this API".to_string(),
            };
            not_served(
                format!("{api_key:?} v{version}"),
                format!("{api_key:?} v{version}: {served}; answered UNSUPPORTED_VERSION and closed the connection"),
            );
            (Some(protocol::encode_bare_error(*correlation_id, unsupported)), true)
        }
        DecodeError::UnknownApiKey { api_key, version, correlation_id } => {
            not_served(
                format!("API key {api_key}"),
                format!(
                    "unknown API key {api_key} (v{version}); answered UNSUPPORTED_VERSION and closed the connection"
                ),
            );
            (Some(protocol::encode_bare_error(*correlation_id, unsupported)), true)
        }
        DecodeError::Malformed { .. } | DecodeError::TooShort(_) => {
            warn!(%peer, "malformed request, closing connection: {e}");
            (None, true)
        }
    }
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean close between frames.
async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R, max: usize) -> Result<Option<Bytes>, String> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read failed: {e}")),
    }
    let size = i32::from_be_bytes(len);
    let size = usize::try_from(size).map_err(|_| format!("negative frame size {size}"))?;
    if size > max {
        return Err(format!("frame of {size} bytes exceeds socket.request.max.bytes ({max})"));
    }
    // Grow as bytes arrive rather than trusting the prefix with a large allocation up front.
    const STEP: usize = 1 << 20;
    let mut buf = BytesMut::with_capacity(size.min(STEP));
    while buf.len() < size {
        let want = size - buf.len();
        buf.reserve(want.min(STEP));
        let n = (&mut *reader).take(want as u64).read_buf(&mut buf).await.map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err(format!("truncated frame: {} of {size} bytes", buf.len()));
        }
    }
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_bounded() {
        let mut ok: &[u8] = &[0, 0, 0, 2, 7, 8];
        assert_eq!(read_frame(&mut ok, 10).await, Ok(Some(Bytes::from_static(&[7, 8]))));
        let mut big: &[u8] = &[0, 0, 1, 0];
        assert!(read_frame(&mut big, 10).await.is_err());
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut negative, 10).await.is_err());
        let mut empty: &[u8] = &[];
        assert_eq!(read_frame(&mut empty, 10).await, Ok(None));
        let mut short: &[u8] = &[0, 0, 0, 5, 1];
        assert!(read_frame(&mut short, 10).await.is_err());
    }
}
