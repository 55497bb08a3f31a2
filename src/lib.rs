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
//! * [`log`] owns the partition log: the write path ([`log::wal`]: offsets, write-ahead buffer,
//!   flushes, commits), the read path ([`log::read`]: tail cache, block cache, ranged GETs),
//!   offset lookups ([`log::lookup`]) and the background work ([`log::background`]:
//!   compaction, retention, garbage collection). [`broker`] holds what handlers share besides
//!   (settings, record-batch bytes, topic configs, internal topics).
//! * `skiff-storage` (crate) owns object storage: backends by URL, the WAL object format,
//!   caches. `skiff-controller` (crate) owns the Raft metadata quorum and the metadata state;
//!   brokers see it only through its typed image (`skiff_controller::image`, read) and typed
//!   intents (`skiff_controller::intent`, write): docs/rfcs/0001-broker-controller-boundary.md.
//! * [`group`] coordinates consumer groups: a pure state machine per group and the task that
//!   drives it; offsets and membership are stored through the controller.
//! * [`node`] wires a process together and shuts it down in order; [`config`] is its input.
//!   [`supervisor`] owns its tasks: a critical task that fails stops the process (non-zero).
//!   Time and ids come from `skiff-time` (crate), injected, never ambient.
//! * [`console`] is the built-in web console's JSON API (`/api/v1/`, on the HTTP listener): it
//!   calls the handlers' own functions, so it follows the Kafka protocol's rules.
//! * [`log_levels`] holds the process's log filter levels, changed at run time through Kafka's
//!   broker-logger configs (`main.rs` installs it). [`telemetry`] exports traces over OTLP when
//!   the `OTEL_*` variables ask for it (docs/observability.md).

pub mod broker;
pub mod config;
pub mod connection;
pub mod console;
pub mod group;
pub mod handler;
pub mod http;
pub mod log;
pub mod log_levels;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod quota;
pub mod security;
pub mod server;
pub mod supervisor;
pub mod telemetry;
pub mod txn;
