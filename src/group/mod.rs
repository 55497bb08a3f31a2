//! Consumer-group coordinator (classic protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup;
//! offsets through the controller).
//!
//! * [`state`]: one group's state machine; pure (time and ids are passed in), unit-tested with
//!   plain values.
//! * [`coordinator`]: the task that owns the groups, runs their timers, answers held requests
//!   and persists membership through the controller.
//! * [`group_config`]: per-group configs (Kafka's `GROUP` config resource), read at each
//!   consumer-protocol heartbeat.
//! * [`offsets_topic`]: the group state of a shard as `__consumer_offsets` records in Kafka's
//!   own format (Fetch of that topic).
//!
//! Placement: a group lives on shard `java_string_hash(group) mod 50`
//! (`skiff_controller::intent::shard_for`), as Kafka places it on a `__consumer_offsets`
//! partition. With one broker every shard is here; shard assignment with epochs comes with the
//! cluster milestone (see docs/architecture.md, "Consumer groups").

pub mod assignor;
pub mod consumer;
pub mod coordinator;
pub mod group_config;
pub mod offsets_topic;
pub mod state;

pub use coordinator::GroupCoordinator;
pub use state::{GroupError, GroupSettings};
