//! Skiff's controller: the metadata quorum.
//!
//! * [`groups`]: consumer-group offsets and membership (part of the metadata).
//! * [`configs`]: dynamic broker configs and consumer-group configs (part of the metadata).
//! * [`topic_config`]: topic configs typed, parsed once when applied or loaded (derived from
//!   the stored strings).
//! * [`transactions`]: the transaction coordinator's pure state machine (RFC 0004 §2) and the
//!   per-partition transaction pieces (owed markers, aborted index, LSO); not wired in yet.
//! * [`metadata`]: the commands and the deterministic state they build (pure, no I/O).
//! * `raft`: openraft wiring: the durable log store, the state machine with snapshots and the
//!   network between voters.
//! * [`Controller`]: a running controller node, and [`MetadataHandle`]: the applied
//!   [`image::MetadataImage`] plus a watch of the applied log index.
//!
//! The boundary brokers see (`docs/rfcs/0001-broker-controller-boundary.md`): the read side is
//! [`image`] (typed questions about the applied metadata; the state's fields are private to this
//! crate), the write side is [`intent`] (one [`ControllerHandle`] method per intent, typed
//! results, one [`ControllerError`] with a [`ErrorKind`]). Brokers only treat a write as done
//! once it is applied.

pub mod client;
pub mod configs;
pub mod error;
pub mod groups;
pub mod image;
pub mod intent;
pub mod metadata;
pub mod placement;
pub mod quorum;
mod raft;
pub mod topic_config;
pub mod transactions;

pub use client::RemoteController;
pub use error::{ControllerError, ErrorKind};
pub use raft::{Controller, ControllerConfig, MetadataHandle};

use metadata::{Command, CommandResult};

/// What a broker talks to: the controller in its own process (`skiff dev`) or a remote quorum.
#[derive(Clone)]
pub enum ControllerHandle {
    Local(Controller),
    Remote(RemoteController),
}

impl ControllerHandle {
    /// Submits a command; returns once it is committed and visible in [`Self::metadata`].
    /// Brokers use the typed intents in [`intent`] instead.
    pub(crate) async fn submit(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        match self {
            ControllerHandle::Local(c) => c.submit(cmd).await,
            ControllerHandle::Remote(r) => r.submit(cmd).await,
        }
    }

    /// The controller quorum's replication status, from its Raft leader (DescribeQuorum).
    pub async fn describe_quorum(&self) -> Result<quorum::QuorumStatus, ControllerError> {
        match self {
            ControllerHandle::Local(c) => c.describe_quorum(),
            ControllerHandle::Remote(r) => r.describe_quorum().await,
        }
    }

    /// Brings the applied metadata up to the controller leader's, or fails (bounded). A local
    /// controller's state is its own, so there is nothing to catch up. See
    /// [`RemoteController::catch_up`].
    pub async fn catch_up(&self) -> Result<(), ControllerError> {
        match self {
            ControllerHandle::Local(_) => Ok(()),
            ControllerHandle::Remote(r) => r.catch_up().await,
        }
    }

    /// The applied metadata (the controller's own state, or the broker's replayed image).
    pub fn metadata(&self) -> MetadataHandle {
        match self {
            ControllerHandle::Local(c) => c.metadata(),
            ControllerHandle::Remote(r) => r.metadata(),
        }
    }
}
