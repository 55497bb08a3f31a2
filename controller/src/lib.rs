//! Skiff's controller: the metadata quorum.
//!
//! * [`groups`]: consumer-group offsets and membership (part of the metadata).
//! * [`metadata`]: the commands and the deterministic state they build (pure, no I/O).
//! * `raft`: openraft wiring: the durable log store, the state machine with snapshots and the
//!   network between voters.
//! * [`Controller`]: a running controller node, and [`MetadataHandle`], the read side brokers
//!   use: the applied [`metadata::MetadataState`] plus a watch of the applied log index.
//!
//! Brokers submit commands ([`Controller::submit`]) and only treat them as done once applied.

pub mod error;
pub mod groups;
pub mod metadata;
mod raft;

pub use error::{ControllerError, ErrorKind};
pub use raft::{Controller, ControllerConfig, MetadataHandle};
