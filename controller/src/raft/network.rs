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
//! * a connection that failed mid-call is dropped and redialled on the next call, so a response
//!   can never be matched to the wrong request;
//! * failures map to openraft's retriable errors (`Unreachable` when the peer cannot be dialled,
//!   `Network` for a broken exchange, `Timeout` past the RPC's deadline); a peer's own refusal
//!   arrives as `RemoteError`.
//!
//! A single voter never sends RPCs; its membership carries no address and it runs no listener.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::raft::TypeConfig;
use crate::raft::service::{BrokerRequest, BrokerResponse, Service};

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

pub(crate) async fn write_frame(stream: &mut TcpStream, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

pub(crate) async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
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
        }
    }
}

/// A client to one peer, with a lazily (re)dialled connection.
pub(crate) struct Peer {
    id: NodeId,
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
    acks: Arc<crate::quorum::Acks>,
    clock: Arc<dyn skiff_time::Clock>,
}

/// How one exchange failed, before it is typed for the RPC at hand.
enum CallError {
    Unreachable(io::Error),
    Network(io::Error),
    Timeout(Duration),
}

impl Peer {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Network(io::Error::other(e)))?;
        match tokio::time::timeout(ttl, self.exchange(&body)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                // The response may still arrive later on this connection: never reuse it.
                self.conn = None;
                Err(CallError::Timeout(ttl))
            }
        }
    }

    async fn exchange(&mut self, body: &[u8]) -> Result<Response, CallError> {
        let stream = match &mut self.conn {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(&self.addr).await.map_err(CallError::Unreachable)?;
                s.set_nodelay(true).map_err(CallError::Unreachable)?;
                self.conn.insert(s)
            }
        };
        write_frame(stream, body).await.map_err(CallError::Network)?;
        let resp = read_frame(stream).await.map_err(CallError::Network)?;
        serde_json::from_slice(&resp).map_err(|e| CallError::Network(io::Error::new(io::ErrorKind::InvalidData, e)))
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

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
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
                        if let Err(e) = serve_connection(stream, service, stop).await {
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

async fn serve_connection(stream: TcpStream, service: Arc<Service>, stop: CancellationToken) -> io::Result<()> {
    // The broker whose heartbeats arrive on this connection, if any: when the connection
    // closes, its session is suspect (see `service::run_fencing`).
    let mut heartbeats_from = None;
    let result = serve_requests(stream, &service, &stop, &mut heartbeats_from).await;
    if let Some((broker_id, incarnation)) = heartbeats_from
        && !stop.is_cancelled()
    {
        service.liveness.connection_lost(broker_id, incarnation, service.clock.now());
    }
    result
}

async fn serve_requests(
    mut stream: TcpStream,
    service: &Service,
    stop: &CancellationToken,
    heartbeats_from: &mut Option<(i32, uuid::Uuid)>,
) -> io::Result<()> {
    let raft = &service.raft;
    stream.set_nodelay(true)?;
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
