//! openraft's network between voters: length-prefixed serde_json RPCs over TCP.
//!
//! Frame: `u32 big-endian body length | JSON body`. A connection carries one request at a time,
//! each answered by one response frame; openraft keeps one client per target (replication
//! stream), so requests to a peer are already sequential. Snapshots travel as openraft's
//! chunked `InstallSnapshot` requests, so no frame needs to hold a whole snapshot.
//!
//! Invariants:
//! * bytes from the network are never trusted: frames above [`MAX_FRAME_BYTES`] and bodies that
//!   do not decode close the connection, nothing panics;
//! * a connection is reused only after a whole exchange: one that failed, timed out or was
//!   dropped mid-call (openraft cancels replication RPCs with its own timer) is closed and
//!   redialled on the next call, so a response can never be matched to the wrong request;
//! * failures map to openraft's retriable errors (`Unreachable` when the peer cannot be dialled,
//!   `Network` for a broken exchange, `Timeout` past the RPC's deadline); a peer's own refusal
//!   arrives as `RemoteError`.
//!
//! A single voter never sends RPCs; its membership carries no address and it runs no listener.
//!
//! With [`PeerTls`] (`--controller-tls-*`) every connection, accepted or dialled, is mutual TLS
//! (`crate::tls`): a peer whose handshake fails is refused before a byte reaches the decoder.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::raft::TypeConfig;
use crate::raft::service::{BrokerRequest, BrokerResponse, Service};
use crate::tls::{Conn, PeerTls};

type NodeId = u64;

/// Larger than any AppendEntries batch or snapshot chunk openraft sends (chunks default to
/// 3 MiB); anything above is a corrupt or hostile length.
const MAX_FRAME_BYTES: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// From a broker (`service.rs`).
    Broker(BrokerRequest),
    /// From a broker, continuing its trace: `traceparent` is the W3C trace context of the
    /// broker's span (`trace_context`). Sent only while a trace is recorded, so brokers with
    /// tracing off keep the `Broker` form older controllers understand.
    TracedBroker {
        traceparent: String,
        request: BrokerRequest,
    },
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Broker(BrokerResponse),
}

/// For the `controller_request` fuzz target (`fuzz/`): decodes a controller RPC request frame
/// body as [`serve`] does and, for a traced one, parses its `traceparent` as
/// [`crate::trace_context::continue_trace`] does. `true` when the body is a request. Bytes from
/// the network: must never panic.
pub fn decode_request(body: &[u8]) -> bool {
    match serde_json::from_slice::<Request>(body) {
        Ok(Request::TracedBroker { traceparent, request }) => {
            let _ = crate::trace_context::parse(&traceparent);
            let _ = request.name();
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

pub(crate) async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(stream: &mut S, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

pub(crate) async fn read_frame<S: AsyncRead + Unpin + ?Sized>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Creates [`Peer`] clients from the addresses in the membership.
#[derive(Debug, Clone)]
pub(crate) struct TcpNetwork {
    /// This node's id, for error reports.
    pub(crate) node_id: NodeId,
    /// Where the peers' replication answers are timed (DescribeQuorum).
    pub(crate) acks: Arc<crate::quorum::Acks>,
    pub(crate) clock: Arc<dyn skiff_time::Clock>,
    /// Mutual TLS to the peers, when configured.
    pub(crate) tls: Option<Arc<PeerTls>>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            id: self.node_id,
            target,
            addr: node.addr.clone(),
            conn: None,
            acks: self.acks.clone(),
            clock: self.clock.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// A client to one peer, with a lazily (re)dialled connection.
pub(crate) struct Peer {
    id: NodeId,
    target: NodeId,
    addr: String,
    conn: Option<Conn>,
    acks: Arc<crate::quorum::Acks>,
    clock: Arc<dyn skiff_time::Clock>,
    tls: Option<Arc<PeerTls>>,
}

/// Writes one request frame on `stream` and reads one response frame.
async fn exchange(stream: &mut Conn, body: &[u8]) -> Result<Response, CallError> {
    write_frame(stream, body).await.map_err(CallError::Network)?;
    let resp = read_frame(stream).await.map_err(CallError::Network)?;
    serde_json::from_slice(&resp).map_err(|e| CallError::Network(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// How one exchange failed, before it is typed for the RPC at hand.
enum CallError {
    Unreachable(io::Error),
    Network(io::Error),
    Timeout(Duration),
}

impl Peer {
    /// One request and its answer. The connection is taken out of `self.conn` for the exchange
    /// and put back only after a whole one: openraft wraps each replication RPC in its own
    /// timeout of the same length as `ttl` and drops this future when that timer fires first
    /// (routine when the CPU is saturated), so a connection left in place with a request in
    /// flight would hand that request's late answer to the next call (a late `Conflict` read as
    /// a heartbeat's answer, a late `Success` counted for entries the peer never got). Dropped
    /// here, the stream is closed with the future.
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Network(io::Error::other(e)))?;
        let conn = self.conn.take();
        let addr = self.addr.as_str();
        let tls = self.tls.as_deref();
        let attempt = async move {
            let mut stream = match conn {
                Some(s) => s,
                None => crate::tls::dial(addr, tls).await.map_err(CallError::Unreachable)?,
            };
            let resp = exchange(&mut stream, &body).await?;
            Ok((stream, resp))
        };
        match tokio::time::timeout(ttl, attempt).await {
            Ok(Ok((stream, resp))) => {
                self.conn = Some(stream);
                Ok(resp)
            }
            // The response may still arrive later on that connection; it was dropped with the
            // exchange, so it is never read.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Timeout(ttl)),
        }
    }

    fn rpc_error<E: std::error::Error>(&self, e: CallError, action: RPCTypes) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout(timeout) => {
                RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout })
            }
        }
    }

    /// A response of another kind than the request: the stream is not to be trusted any more.
    fn mismatch<E: std::error::Error>(&mut self) -> RPCError<NodeId, BasicNode, E> {
        self.conn = None;
        let e = io::Error::new(io::ErrorKind::InvalidData, "response does not match the request");
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::AppendEntries(rpc), option.hard_ttl()).await {
            Ok(Response::AppendEntries(r)) => {
                if r.is_ok() {
                    // The peer answered replication: Kafka's "last fetch" of a voter.
                    self.acks.record(self.target, self.clock.now_ms());
                }
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::AppendEntries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.call(&Request::InstallSnapshot(rpc), option.hard_ttl()).await {
            Ok(Response::InstallSnapshot(r)) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::InstallSnapshot)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(self.rpc_error(e, RPCTypes::Vote)),
        }
    }
}

/// Accepts peer connections on `listener` and hands their RPCs to `raft` until `stop`.
pub(crate) async fn serve(listener: TcpListener, service: Arc<Service>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "controller peer connected");
                    let service = service.clone();
                    let stop = stop.clone();
                    conns.spawn(async move {
                        if let Err(e) = stream.set_nodelay(true) {
                            tracing::debug!(%peer, error = %e, "controller peer connection closed");
                            return;
                        }
                        // The handshake runs in the connection's task, so a slow one holds up
                        // no other peer.
                        let conn: Conn = match &service.tls {
                            None => Box::new(stream),
                            Some(tls) => match tokio::select! {
                                conn = tls.accept(stream, peer) => conn,
                                () = stop.cancelled() => None,
                            } {
                                Some(conn) => conn,
                                None => return,
                            },
                        };
                        if let Err(e) = serve_connection(conn, service, stop).await {
                            tracing::debug!(%peer, error = %e, "controller peer connection closed");
                        }
                    });
                }
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a controller peer failed");
                    service.clock.sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stop.cancelled() => break,
        }
    }
    conns.shutdown().await;
    tracing::debug!("controller peer listener stopped");
}

async fn serve_connection(stream: Conn, service: Arc<Service>, stop: CancellationToken) -> io::Result<()> {
    // The broker whose heartbeats arrive on this connection, if any: when the connection
    // closes, its session is suspect (see `service::run_fencing`).
    let mut heartbeats_from = None;
    let result = serve_requests(stream, &service, &stop, &mut heartbeats_from).await;
    if let Some((broker_id, incarnation)) = heartbeats_from
        && !stop.is_cancelled()
    {
        let at = service.clock.now();
        service.liveness.connection_lost(broker_id, incarnation, at);
        // A SIGKILLed process's kernel closes its sockets at once, listeners included: a refused
        // connection to its Kafka listener proves it is gone, so it is fenced now rather than
        // after half the session timeout. A live broker (or a frozen one) still accepts.
        let addrs = {
            let state = service.state.read().unwrap_or_else(|e| e.into_inner());
            super::service::Liveness::listener_addrs(&state, broker_id, incarnation)
        };
        if super::service::probe_until_refused(&addrs, service.clock.as_ref()).await {
            tracing::info!(broker_id, %incarnation, unix_ms = service.clock.now_ms(), "heartbeat connection closed and the broker's listeners refuse connections: process gone");
            service.liveness.process_gone(broker_id, incarnation, at);
        }
    }
    result
}

async fn serve_requests(
    mut stream: Conn,
    service: &Service,
    stop: &CancellationToken,
    heartbeats_from: &mut Option<(i32, uuid::Uuid)>,
) -> io::Result<()> {
    let raft = &service.raft;
    loop {
        let body = tokio::select! {
            body = read_frame(&mut stream) => match body {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
            () = stop.cancelled() => return Ok(()),
        };
        let req: Request = serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let resp = match req {
            Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => Response::InstallSnapshot(raft.install_snapshot(r).await),
            Request::Broker(r) => match serve_broker(service, stop, heartbeats_from, r).await {
                Some(resp) => Response::Broker(resp),
                None => return Ok(()),
            },
            Request::TracedBroker { traceparent, request } => {
                let span = tracing::debug_span!("controller.handle", otel.kind = "server", request = request.name());
                crate::trace_context::continue_trace(&span, &traceparent);
                match serve_broker(service, stop, heartbeats_from, request).instrument(span).await {
                    Some(resp) => Response::Broker(resp),
                    None => return Ok(()),
                }
            }
        };
        let body = serde_json::to_vec(&resp).map_err(io::Error::other)?;
        write_frame(&mut stream, &body).await?;
    }
}

/// Serves one broker request; `None` when `stop` cut it short (the connection closes).
async fn serve_broker(
    service: &Service,
    stop: &CancellationToken,
    heartbeats_from: &mut Option<(i32, uuid::Uuid)>,
    r: BrokerRequest,
) -> Option<BrokerResponse> {
    let beat = match &r {
        BrokerRequest::Heartbeat { broker_id, incarnation } => Some((*broker_id, *incarnation)),
        _ => None,
    };
    // A long watch must not outlive a stop.
    let resp = tokio::select! {
        resp = service.handle(r) => resp,
        () = stop.cancelled() => return None,
    };
    // Only a heartbeat this node accepted as leader ties the connection to the
    // broker's session (a follower's refusal says nothing about the broker).
    if beat.is_some() && matches!(resp, BrokerResponse::Heartbeat(Ok(_))) {
        *heartbeats_from = beat;
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};
    use tokio::sync::oneshot;

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    fn append(prev: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: Some(log_id(prev)),
            entries: vec![],
        }
    }

    /// A follower that answers the AppendEntries with `prev_log_id` index 5 with `Conflict`, but
    /// only once `release` fires (it then reports on `late_sent`), and every other one with
    /// `Success` at once; one task per connection, like [`serve`].
    async fn slow_follower(
        release: oneshot::Receiver<()>,
        late_sent: oneshot::Sender<()>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let mut gate = Some((release, late_sent));
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let mut gate = gate.take();
                conns.spawn(async move {
                    while let Ok(body) = read_frame(&mut stream).await {
                        let Ok(Request::AppendEntries(req)) = serde_json::from_slice(&body) else { return };
                        let resp = if req.prev_log_id == Some(log_id(5)) {
                            let (release, late_sent) = gate.take().expect("one slow request");
                            let _ = release.await;
                            let late = Response::AppendEntries(Ok(AppendEntriesResponse::Conflict));
                            let _ = write_frame(&mut stream, &serde_json::to_vec(&late).expect("encode")).await;
                            let _ = late_sent.send(());
                            continue;
                        } else {
                            Response::AppendEntries(Ok(AppendEntriesResponse::Success))
                        };
                        if write_frame(&mut stream, &serde_json::to_vec(&resp).expect("encode")).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// openraft wraps every replication RPC in its own timeout of the same length as
    /// `RPCOption::hard_ttl` and drops the call when it fires first. The answer to the dropped
    /// request must never be taken for the answer to the next one: a late `Conflict` read as
    /// the answer to a heartbeat at the matched log id made the leader panic ("follower log
    /// reversion is not allowed"), and a late `Success` read as the answer to a later append
    /// counted entries as replicated that the follower never had (a commit without a quorum).
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // real sockets: real time, bounded
    async fn a_dropped_call_never_answers_the_next_one() {
        let (release_tx, release) = oneshot::channel();
        let (late_sent, late_sent_rx) = oneshot::channel();
        let (addr, server) = slow_follower(release, late_sent).await;
        let mut network = TcpNetwork {
            node_id: 1,
            acks: Arc::new(crate::quorum::Acks::default()),
            clock: skiff_time::system_clock(),
            tls: None,
        };
        let mut peer = network.new_client(2, &BasicNode::new(addr)).await;

        // A probe at index 5 that the follower answers late: openraft's deadline drops the call
        // (here shorter than the call's own, which is what happens when openraft's timer fires
        // first).
        let probe = peer.append_entries(append(5), RPCOption::new(Duration::from_secs(10)));
        assert!(tokio::time::timeout(Duration::from_millis(200), probe).await.is_err(), "the probe is answered late");
        let _ = release_tx.send(());
        late_sent_rx.await.expect("the late answer was written");

        // The next request (a heartbeat at the matched log id 9) gets its own answer.
        let heartbeat = peer.append_entries(append(9), RPCOption::new(Duration::from_secs(10)));
        let answer = tokio::time::timeout(Duration::from_secs(10), heartbeat)
            .await
            .expect("the heartbeat is answered")
            .expect("the heartbeat succeeds");
        assert_eq!(answer, AppendEntriesResponse::Success, "the late answer to the probe was read as the heartbeat's");
        server.abort();
    }
}
