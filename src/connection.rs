//! One client connection: size-prefixed frames in, responses out in request order.
//!
//! No Kafka semantics live here beyond what a frame is. Requests are admitted one at a time (so
//! a connection's produces append in order); their responses may complete later and are written
//! strictly in request order, with at most `max_inflight` outstanding (back-pressure: we stop
//! reading). A frame over `socket.request.max.bytes`, a truncated or undecodable frame closes
//! the connection with a log line; an unsupported version is answered first.
//!
//! Time limits: a started frame must arrive whole within `read_timeout` (a client trickling
//! bytes, slowloris, is disconnected); a connection with no request for `idle_timeout` and no
//! answer pending is closed (`connections.max.idle.ms`). On a SASL listener every request goes
//! through the connection's [`Authenticator`] first (`security/sasl`), and until the client is
//! authenticated a frame may be at most [`SASL_MAX_RECEIVE_BYTES`] and the connection may be
//! idle for at most `read_timeout`. A client over a quota (`quota/`) has its connection muted:
//! the next frame is not read until its throttle time has passed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::handler::not_served::Asker;
use crate::handler::{Handled, api_versions};
use crate::protocol::{self, DecodeError};
use crate::security::sasl::{Authenticator, Event, Gate, Principal};
use crate::security::{BrokerCredentials, ListenerContext};

/// A response slot: resolves to the encoded frame, or `None` to close the connection.
type Slot = BoxFuture<'static, Option<Bytes>>;

/// Kafka's `sasl.server.max.receive.size`: the largest frame before authentication.
pub const SASL_MAX_RECEIVE_BYTES: usize = 512 * 1024;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_inflight: usize,
    /// A started frame (and a TLS handshake) must arrive within this.
    pub read_timeout: Duration,
    /// `connections.max.idle.ms`.
    pub idle_timeout: Duration,
    /// `connection.failed.authentication.delay.ms`: how late a failed authentication is
    /// answered (and the connection closed).
    pub failed_authentication_delay: Duration,
}

pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: Limits,
    listener: Arc<ListenerContext>,
    transport_principal: Principal,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Slot>(limits.max_inflight);
    // Answers not yet written: a connection waiting for them is not idle.
    let pending = Arc::new(AtomicUsize::new(0));
    let written = pending.clone();
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
            written.fetch_sub(1, Relaxed);
            let Some(frame) = frame else { break };
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    });
    let send = |slot: Slot| {
        pending.fetch_add(1, Relaxed);
        tx.send(slot)
    };
    let mut authenticator = listener.sasl.clone().map(Authenticator::new);
    let credentials = BrokerCredentials(&broker);
    // Set by a quota throttle (KIP-219): the next request is not read before it ends.
    let mute = Arc::new(crate::quota::Mute::default());
    loop {
        tokio::select! {
            () = mute.wait(&broker) => {}
            _ = shutdown.cancelled() => break,
        }
        // Until a SASL client is authenticated its frames are small and it may not sit idle
        // longer than a frame may take: an unauthenticated connection costs little and briefly.
        let (max_frame, read_limits) = match &authenticator {
            Some(a) if !a.is_authenticated() => (
                limits.max_frame_bytes.min(SASL_MAX_RECEIVE_BYTES),
                Limits { idle_timeout: limits.idle_timeout.min(limits.read_timeout), ..limits },
            ),
            _ => (limits.max_frame_bytes, limits),
        };
        let frame = tokio::select! {
            f = read_frame(&mut reader, max_frame, read_limits, &pending) => f,
            _ = shutdown.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(ReadError::Idle) => {
                broker.metrics.connections_closed_idle.fetch_add(1, Relaxed);
                debug!(%peer, "closing idle connection (connections_max_idle)");
                break;
            }
            Err(ReadError::Slow { got, size }) => {
                broker.metrics.connections_closed_slow.fetch_add(1, Relaxed);
                if let Some(suppressed) = broker.security.audit.admit(broker.clock.now_ms()) {
                    warn!(%peer, got, size, suppressed, "closing connection: frame not received within request_read_timeout");
                }
                break;
            }
            Err(ReadError::Invalid(reason)) => {
                warn!(%peer, "closing connection: {reason}");
                break;
            }
        };
        broker.metrics.requests.fetch_add(1, Relaxed);
        // After SaslHandshake v0 the next frame is a raw SASL token, not a request.
        if let Some(auth) = authenticator.as_mut().filter(|a| a.expects_raw_token()) {
            let (answer, event) = auth.raw_token(&frame, &credentials);
            record(&broker, peer, &listener, event);
            let close = answer.is_none();
            if send(ready(answer)).await.is_err() || close {
                break;
            }
            continue;
        }
        let raw = frame.clone();
        let slot = match protocol::decode_request(frame) {
            Ok(request) => {
                let (api_key, version, correlation_id) =
                    (request.api_key, request.version, request.header.correlation_id);
                let gate = match authenticator.as_mut() {
                    Some(auth) => auth.admit(&request, &credentials),
                    None => non_sasl_listener(&request),
                };
                match gate {
                    Gate::Pass => {}
                    Gate::Answer { body, close, event } => {
                        let failed = matches!(event, Some(Event::Failed(_)));
                        record(&broker, peer, &listener, event);
                        let answer = encode(api_key, version, correlation_id, &body, peer);
                        // Kafka's connection.failed.authentication.delay.ms: the failure is
                        // answered late, which slows password guessing and retry storms.
                        let slot = match limits.failed_authentication_delay {
                            delay if failed && !delay.is_zero() => {
                                let sleep = broker.clock.sleep(delay);
                                async move {
                                    sleep.await;
                                    answer
                                }
                                .boxed()
                            }
                            _ => ready(answer),
                        };
                        if send(slot).await.is_err() {
                            break;
                        }
                        if close {
                            let _ = send(ready(None)).await;
                            break;
                        }
                        continue;
                    }
                    Gate::Close { reason } => {
                        // Rate-limited: an unauthenticated client can cause this at will.
                        broker.metrics.auth_failures.fetch_add(1, Relaxed);
                        if let Some(suppressed) = broker.security.audit.admit(broker.clock.now_ms()) {
                            warn!(%peer, listener = %listener.protocol, suppressed, "closing connection: {reason}");
                        }
                        break;
                    }
                }
                let principal =
                    authenticator.as_ref().and_then(Authenticator::principal).unwrap_or(&transport_principal);
                tracing::trace!(%peer, %principal, ?api_key, version, correlation_id, "request");
                match crate::quota::handle(&broker, request, raw.len(), peer, &listener, principal, &mute).await {
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
                    && send(ready(Some(a))).await.is_err()
                {
                    break;
                }
                if close {
                    let _ = send(ready(None)).await;
                    break;
                }
                continue;
            }
        };
        if send(slot).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

/// SASL requests on a listener without SASL: ILLEGAL_SASL_STATE, as Kafka's `KafkaApis`.
fn non_sasl_listener(request: &protocol::Request) -> Gate {
    let code = crate::handler::errors::illegal_sasl_state();
    match request.body {
        RequestKind::SaslHandshake(_) => Gate::Answer {
            body: ResponseKind::SaslHandshake(SaslHandshakeResponse::default().with_error_code(code)),
            close: false,
            event: None,
        },
        RequestKind::SaslAuthenticate(_) => Gate::Answer {
            body: ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default().with_error_code(code).with_error_message(Some(
                    kafka_protocol::protocol::StrBytes::from_static_str(
                        "SaslAuthenticate request received after successful authentication",
                    ),
                )),
            ),
            close: false,
            event: None,
        },
        _ => Gate::Pass,
    }
}

/// Counts and logs an authentication outcome.
fn record(broker: &Broker, peer: SocketAddr, listener: &ListenerContext, event: Option<Event>) {
    match event {
        None => {}
        Some(Event::Authenticated { principal, mechanism, reauthentication }) => {
            broker.metrics.auth_successes.fetch_add(1, Relaxed);
            debug!(%peer, %principal, mechanism = mechanism.name(), reauthentication, "authenticated");
        }
        Some(Event::Failed(failure)) => {
            broker.metrics.auth_failures.fetch_add(1, Relaxed);
            broker.security.log_failure(broker.clock.now_ms(), peer, listener.protocol, &failure);
        }
    }
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

/// Why reading a frame ended the connection.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// No request for `idle_timeout` and nothing pending.
    Idle,
    /// A started frame did not arrive whole within `read_timeout`.
    Slow {
        got: usize,
        size: usize,
    },
    Invalid(String),
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean close between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    limits: Limits,
    pending: &AtomicUsize,
) -> Result<Option<Bytes>, ReadError> {
    let mut len = [0u8; 4];
    // Between frames: idle until the first byte. `read` is cancel-safe, so timing out loses
    // nothing; a connection still owed answers (a long poll) is not idle.
    loop {
        match tokio::time::timeout(limits.idle_timeout, reader.read(&mut len[..1])).await {
            Err(_) if pending.load(Relaxed) > 0 => continue,
            Err(_) => return Err(ReadError::Idle),
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => break,
            Ok(Err(e)) => return Err(ReadError::Invalid(format!("read failed: {e}"))),
        }
    }
    let mut got = 1;
    let mut size = 0;
    let whole = async {
        reader.read_exact(&mut len[1..]).await.map_err(|e| ReadError::Invalid(format!("read failed: {e}")))?;
        got = 4;
        let prefix = i32::from_be_bytes(len);
        size = usize::try_from(prefix).map_err(|_| ReadError::Invalid(format!("negative frame size {prefix}")))?;
        if size > max {
            return Err(ReadError::Invalid(format!(
                "frame of {size} bytes exceeds the limit of {max} bytes (socket.request.max.bytes, or \
                 sasl.server.max.receive.size before authentication)"
            )));
        }
        // Grow as bytes arrive rather than trusting the prefix with a large allocation up front.
        const STEP: usize = 1 << 20;
        let mut buf = BytesMut::with_capacity(size.min(STEP));
        while buf.len() < size {
            let want = size - buf.len();
            buf.reserve(want.min(STEP));
            let n = (&mut *reader)
                .take(want as u64)
                .read_buf(&mut buf)
                .await
                .map_err(|e| ReadError::Invalid(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(ReadError::Invalid(format!("truncated frame: {} of {size} bytes", buf.len())));
            }
            got = 4 + buf.len();
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.read_timeout, whole).await {
        Ok(r) => r.map(Some),
        Err(_) => Err(ReadError::Slow { got, size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_frame_bytes: 10,
        max_inflight: 1,
        read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        failed_authentication_delay: Duration::ZERO,
    };

    async fn read(mut bytes: &[u8]) -> Result<Option<Bytes>, ReadError> {
        read_frame(&mut bytes, 10, LIMITS, &AtomicUsize::new(0)).await
    }

    #[tokio::test]
    async fn frames_are_bounded() {
        assert_eq!(read(&[0, 0, 0, 2, 7, 8]).await, Ok(Some(Bytes::from_static(&[7, 8]))));
        assert!(read(&[0, 0, 1, 0]).await.is_err());
        assert!(read(&[0xff, 0xff, 0xff, 0xff]).await.is_err());
        assert_eq!(read(&[]).await, Ok(None));
        assert!(read(&[0, 0, 0, 5, 1]).await.is_err());
    }

    /// Slowloris: two bytes of a frame and then nothing is cut at `read_timeout`; a silent
    /// connection at `idle_timeout`, unless it is owed an answer.
    #[tokio::test(start_paused = true)]
    #[allow(clippy::disallowed_methods)] // the test's client waits in paused tokio time
    async fn started_frames_have_a_deadline_and_idle_connections_close() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0]).await.expect("write");
        let r = read_frame(&mut server, 10, LIMITS, &AtomicUsize::new(0)).await;
        assert_eq!(r, Err(ReadError::Slow { got: 1, size: 0 }));
        let (_client, mut server) = tokio::io::duplex(64);
        assert_eq!(read_frame(&mut server, 10, LIMITS, &AtomicUsize::new(0)).await, Err(ReadError::Idle));
        let (mut client, mut server) = tokio::io::duplex(64);
        let pending = AtomicUsize::new(1);
        let reading = read_frame(&mut server, 10, LIMITS, &pending);
        let writing = async {
            tokio::time::sleep(Duration::from_secs(150)).await;
            client.write_all(&[0, 0, 0, 1, 9]).await.expect("write");
        };
        let (r, ()) = tokio::join!(reading, writing);
        assert_eq!(r, Ok(Some(Bytes::from_static(&[9]))), "pending answers keep the connection open");
    }
}
