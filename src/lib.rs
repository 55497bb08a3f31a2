//! Skiff: a Kafka-compatible streaming service whose brokers are stateless.
//!
//! Layers, outside in (see docs/architecture.md):
//!
//! * [`server`] accepts connections, [`connection`] turns bytes into frames and keeps responses
//!   in request order; no Kafka semantics there.
//! * [`protocol`] decodes frames into requests and encodes responses (pure, no I/O), and lists
//!   the advertised API versions.
//! * [`handler`] has one module per Kafka API: request → broker/controller → response, and
//!   the one mapping of errors to Kafka error codes.
//! * [`broker`] owns the write path ([`broker::wal`]: offsets, write-ahead buffer, flushes,
//!   commits) and the read path ([`broker::read`]: tail cache, block cache, ranged GETs).
//! * `skiff-storage` (crate) owns object storage: backends by URL, the WAL object format,
//!   caches. `skiff-controller` (crate) owns the Raft metadata quorum and the metadata state.
//! * [`group`] coordinates consumer groups: a pure state machine per group and the task that
//!   drives it; offsets and membership are stored through the controller.
//! * [`node`] wires a process together and shuts it down in order; [`config`] is its input.
//!   [`supervisor`] owns its tasks: a critical task that fails stops the process (non-zero).
//!   Time and ids come from `skiff-time` (crate), injected, never ambient.

pub mod broker;
pub mod config;
pub mod connection;
pub mod group;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod server;
pub mod supervisor;
