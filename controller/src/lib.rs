//! Skiff's controller: the metadata quorum.
//!
//! * [`groups`]: consumer-group offsets and membership (part of the metadata).
//! * [`configs`]: dynamic broker configs and consumer-group configs (part of the metadata).
//! * [`topic_config`]: topic configs typed, parsed once when applied or loaded (derived from
//!   the stored strings).
//! * [`transactions`]: the transaction coordinator's pure state machine (RFC 0004 §2) and the
//!   per-partition transaction pieces (owed markers, aborted index, LSO); `Command::Txn`.
//! * [`metadata`]: the commands and the deterministic state they build (pure, no I/O).
//! * `raft`: openraft wiring: the durable log store, the state machine with snapshots and the
//!   network between voters.
//! * [`tls`]: mutual TLS on the controller port (voters and brokers), when configured.
//! * [`Controller`]: a running controller node, and [`MetadataHandle`]: the applied
//!   [`image::MetadataImage`] plus a watch of the applied log index.
//!
//! The boundary brokers see (`docs/rfcs/0001-broker-controller-boundary.md`): the read side is
//! [`image`] (typed questions about the applied metadata; the state's fields are private to this
//! crate), the write side is [`intent`] (one [`ControllerHandle`] method per intent, typed
//! results, one [`ControllerError`] with a [`ErrorKind`]). Brokers only treat a write as done
//! once it is applied.

pub mod acls;
pub mod client;
pub mod configs;
pub mod error;
pub mod groups;
pub mod image;
pub mod intent;
pub mod metadata;
pub mod placement;
pub mod quorum;
pub mod quotas;
mod raft;
pub mod scram;
pub mod tls;
pub mod topic_config;
pub mod trace_context;
pub mod transactions;

pub use client::RemoteController;
pub use error::{ControllerError, ErrorKind};
/// For the `controller_request` fuzz target only.
#[doc(hidden)]
pub use raft::network::decode_request as fuzz_decode_controller_request;
pub use raft::{Controller, ControllerConfig, MetadataHandle};
pub use tls::{Conn as PeerConn, PeerTls, PeerTlsFiles};

use metadata::{Command, CommandResult};
use tracing::Instrument;

/// What a broker talks to: the controller in its own process (`skiff dev`) or a remote quorum.
#[derive(Clone)]
pub enum ControllerHandle {
    Local(Controller),
    Remote(RemoteController),
}

impl ControllerHandle {
    /// Submits a command; returns once it is committed and visible in [`Self::metadata`].
    /// Brokers use the typed intents in [`intent`] instead.
    /// Traced as `controller.submit` (a client span for a remote quorum, whose `traceparent`
    /// travels with the request; `trace_context`).
    pub(crate) async fn submit(&self, cmd: Command) -> Result<CommandResult, ControllerError> {
        let command = tracing::field::Empty;
        let span = match self {
            ControllerHandle::Local(_) => tracing::debug_span!("controller.submit", command),
            ControllerHandle::Remote(_) => tracing::debug_span!("controller.submit", otel.kind = "client", command),
        };
        if !span.is_disabled() {
            span.record("command", command_name(&cmd));
        }
        match self {
            ControllerHandle::Local(c) => c.submit(cmd).instrument(span).await,
            ControllerHandle::Remote(r) => r.submit(cmd).instrument(span).await,
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

/// The variant name of `cmd` (`CommitObject`, `RegisterBroker`, ...) for traces: the start of
/// its `Debug` text, formatted no further than the name (a commit's partitions are not).
fn command_name(cmd: &Command) -> String {
    use std::fmt::Write;
    struct Name(String);
    impl Write for Name {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = s.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(s.len());
            self.0.push_str(&s[..end]);
            // An error stops the formatter once the name has ended.
            if end < s.len() || self.0.len() > 64 { Err(std::fmt::Error) } else { Ok(()) }
        }
    }
    let mut name = Name(String::new());
    let _ = write!(name, "{cmd:?}");
    name.0
}

#[cfg(test)]
mod command_name_tests {
    use super::*;

    #[test]
    fn names_the_variant_only() {
        assert_eq!(command_name(&Command::InitCluster { cluster_id: "abc".into() }), "InitCluster");
        let commit = Command::CommitObject(metadata::ObjectCommit {
            key: "wal/1".into(),
            broker_id: 1,
            size_bytes: 10,
            partitions: Vec::new(),
        });
        assert_eq!(command_name(&commit), "CommitObject");
    }
}
