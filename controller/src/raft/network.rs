//! openraft's network between voters.
//!
//! Single-voter mode (`skiff dev`, [`super::Controller::start_single`]) never sends an RPC: a
//! lone voter elects itself and commits on its own fsync. The factory below therefore answers
//! every RPC with `Unreachable`, which openraft treats as a retriable, transient failure (it backs
//! off and retries), so a stray call can never corrupt state.
//!
//! TODO(#4): multi-voter quorums: length-prefixed serde_json RPCs (AppendEntries, Vote,
//! InstallSnapshot) over tokio TCP between `controller_listen` addresses.

use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use crate::raft::TypeConfig;

type NodeId = u64;

#[derive(Debug, thiserror::Error)]
#[error("controller networking to node {0} is not available in single-voter mode")]
struct NoNetwork(NodeId);

/// Creates [`Disconnected`] clients.
#[derive(Debug, Clone, Default)]
pub(crate) struct SingleVoterNetwork;

/// A client to a peer that cannot be reached.
#[derive(Debug)]
pub(crate) struct Disconnected {
    target: NodeId,
}

impl Disconnected {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        tracing::debug!(target = self.target, "raft RPC to a peer in single-voter mode");
        RPCError::Unreachable(Unreachable::new(&NoNetwork(self.target)))
    }
}

impl RaftNetworkFactory<TypeConfig> for SingleVoterNetwork {
    type Network = Disconnected;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        Disconnected { target }
    }
}

impl RaftNetwork<TypeConfig> for Disconnected {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
