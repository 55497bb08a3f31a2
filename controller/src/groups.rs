//! Durable consumer-group state: committed offsets and the membership of each group after its
//! last completed rebalance, replicated through the metadata log.
//!
//! Owns: per group, the committed offsets (by topic name and partition, as the classic protocol
//! names them) and the last stored membership (generation, protocol, leader, members with their
//! subscription and assignment bytes); the coordinator shards and their epochs.
//!
//! The live group protocol (joins, heartbeats, timeouts) runs in the broker that coordinates the
//! group (`src/group/` of the `skiff` crate); it writes here only what must survive that broker:
//! offsets, and the membership after each rebalance. A new coordinator rebuilds its groups from
//! this state.
//!
//! Placement: a group belongs to shard `java_string_hash(group_id) mod SHARD_COUNT`, exactly as
//! Kafka places groups on `__consumer_offsets` partitions. Each shard will be assigned to a
//! broker with an epoch, like a partition leader (the cluster milestone); every group command
//! carries the epoch its coordinator holds and is refused when stale, so a deposed coordinator
//! can never write. Until shards are assigned (single node), every shard has epoch 0.
//!
//! Invariants: apply is deterministic (timestamps come inside commands); a rejected command
//! changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metadata::{BrokerId, CommandResult, Rejection};

pub mod consumer;
pub mod offsets_topic;

pub use consumer::{ConsumerGroupUpdate, StoredConsumerGroup};
use offsets_topic::{RecordKey, ShardLog};

/// Number of coordinator shards: Kafka's default `offsets.topic.num.partitions`. Fixed for the
/// life of a cluster: changing it would move every group.
pub const SHARD_COUNT: u32 = 50;

/// Java's `String.hashCode` over UTF-16 code units: `s[0]*31^(n-1) + ... + s[n-1]`, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The shard of a group: `Utils.abs(groupId.hashCode) % 50` as in Kafka's
/// `GroupCoordinator.partitionFor` (`Utils.abs` maps `i32::MIN` to 0 by masking the sign bit).
pub fn shard_for(group_id: &str) -> u32 {
    ((java_string_hash(group_id) & 0x7fff_ffff) as u32) % SHARD_COUNT
}

/// One group command: which group, the coordinator epoch its writer holds, and the change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupCommand {
    pub group_id: String,
    /// The epoch of the group's shard as the writing coordinator knows it.
    pub coordinator_epoch: i32,
    pub op: GroupOp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum GroupOp {
    /// OffsetCommit: upserts each offset. Creates the group if it does not exist.
    CommitOffsets { offsets: Vec<OffsetCommit> },
    /// The membership after a completed rebalance (or an emptied group: no members).
    StoreMembership(GroupMembership),
    /// DeleteGroups: forgets the group, its membership and offsets.
    DeleteGroup,
    /// OffsetDelete: forgets these offsets; the group stays.
    DeleteOffsets { partitions: Vec<(String, i32)> },
    /// A change to a consumer-protocol (KIP-848) group (`groups/consumer.rs`). Makes the group a
    /// consumer group: a stored classic membership is dropped.
    UpdateConsumerGroup(ConsumerGroupUpdate),
    /// TxnOffsetCommit (KIP-98/447): offsets pending under the producer's transaction until its
    /// PrepareCommit commits them (PrepareAbort drops them). `apply` refuses them unless the
    /// transaction is Ongoing at this producer id and epoch with the group added (RFC 0004 §8).
    TxnOffsetCommit { transactional_id: String, producer_id: i64, producer_epoch: i16, offsets: Vec<OffsetCommit> },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// -1 when the client did not send one.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// Wall-clock time of the commit, from the coordinator.
    pub commit_timestamp_ms: i64,
}

/// A committed offset as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
    /// Where this value sits in the shard's `__consumer_offsets` view (`offsets_topic.rs`).
    /// Absent in snapshots written before the view existed: -1, assigned on load.
    #[serde(default = "unassigned_record_offset")]
    pub record_offset: i64,
}

fn unassigned_record_offset() -> i64 {
    -1
}

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupMembership {
    pub generation: i32,
    pub protocol_type: Option<String>,
    /// The selected protocol (assignor), `None` while the group is empty.
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    /// Wall-clock time of the store.
    pub timestamp_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol (opaque to Skiff).
    pub subscription: Vec<u8>,
    /// What the leader assigned to it (opaque to Skiff).
    pub assignment: Vec<u8>,
}

/// Everything stored about one group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredGroup {
    /// Committed offsets by (topic, partition).
    pub(crate) offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
    pub(crate) membership: Option<GroupMembership>,
    /// The consumer-protocol (KIP-848) state, if this is a consumer group. `default` keeps
    /// older snapshots readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) consumer: Option<StoredConsumerGroup>,
    /// Where `membership` sits in the shard's `__consumer_offsets` view: `Some` exactly when
    /// `membership` is (absent in older snapshots: assigned on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metadata_record_offset: Option<i64>,
    /// Transactional offsets not yet decided, per producer id, then topic and partition
    /// (Kafka's `pendingTransactionalOffsetCommits`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) pending: BTreeMap<i64, BTreeMap<String, BTreeMap<i32, OffsetCommit>>>,
}

/// Which broker coordinates a shard, at which epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardAssignment {
    pub(crate) broker_id: BrokerId,
    pub(crate) epoch: i32,
}

/// All group state: part of [`crate::metadata::MetadataState`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(from = "StoredGroupsState")]
pub struct GroupsState {
    pub(crate) groups: BTreeMap<String, StoredGroup>,
    /// Shard assignments; empty until the cluster milestone assigns shards (then every shard
    /// is on the one broker, at epoch 0).
    pub(crate) shards: BTreeMap<u32, ShardAssignment>,
    /// Each shard's `__consumer_offsets` view (`offsets_topic.rs`); a shard nothing was ever
    /// written to has none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) offsets_topic: BTreeMap<u32, ShardLog>,
}

/// [`GroupsState`] as stored: the derived index of the `__consumer_offsets` view is rebuilt
/// from it on load.
#[derive(Deserialize)]
struct StoredGroupsState {
    groups: BTreeMap<String, StoredGroup>,
    shards: BTreeMap<u32, ShardAssignment>,
    #[serde(default)]
    offsets_topic: BTreeMap<u32, ShardLog>,
}

impl From<StoredGroupsState> for GroupsState {
    /// Rebuilds each shard's index of live records from the values' record offsets. Values
    /// from a snapshot written before the view existed have none: they get the next offsets of
    /// their shard, in group, topic, partition order (the same on every replica loading the
    /// same snapshot).
    fn from(stored: StoredGroupsState) -> Self {
        let StoredGroupsState { mut groups, shards, mut offsets_topic } = stored;
        for (group_id, group) in &mut groups {
            let log = offsets_topic.entry(shard_for(group_id)).or_default();
            for (topic, partitions) in &mut group.offsets {
                for (partition, o) in partitions {
                    let key =
                        RecordKey::Offset { group: group_id.clone(), topic: topic.clone(), partition: *partition };
                    if o.record_offset < 0 {
                        o.record_offset = log.write(key, None, o.commit_timestamp_ms);
                    } else {
                        log.live.insert(o.record_offset, key);
                    }
                }
            }
            let key = RecordKey::Group { group: group_id.clone() };
            group.metadata_record_offset = match (&group.membership, group.metadata_record_offset) {
                (None, _) => None,
                (Some(_), Some(o)) => {
                    log.live.insert(o, key);
                    Some(o)
                }
                (Some(m), None) => Some(log.write(key, None, m.timestamp_ms)),
            };
        }
        GroupsState { groups, shards, offsets_topic }
    }
}

impl GroupsState {
    /// The current epoch of `shard` (0 while unassigned).
    pub fn shard_epoch(&self, shard: u32) -> i32 {
        self.shards.get(&shard).map_or(0, |s| s.epoch)
    }

    /// The broker coordinating `group_id`, if its shard is assigned.
    pub fn coordinator(&self, group_id: &str) -> Option<&ShardAssignment> {
        self.shards.get(&shard_for(group_id))
    }

    /// The committed offset of one partition.
    pub fn offset(&self, group_id: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.groups.get(group_id)?.offsets.get(topic)?.get(&partition)
    }

    /// Kafka's `onPartitionsDeleted`: a deleted topic's committed offsets leave every group, each
    /// with a tombstone in its shard's `__consumer_offsets` view, so a topic created again under
    /// the same name is read from the group's reset policy, not from the old topic's positions.
    pub fn forget_topic(&mut self, topic: &str) {
        for group in self.groups.values_mut() {
            // Transactional offsets of the topic would otherwise commit into a later topic of
            // the same name.
            for pending in group.pending.values_mut() {
                pending.remove(topic);
            }
            group.pending.retain(|_, p| !p.is_empty());
        }
        for (group_id, group) in self.groups.iter_mut() {
            let Some(partitions) = group.offsets.remove(topic) else { continue };
            let log = self.offsets_topic.entry(shard_for(group_id)).or_default();
            for (partition, o) in partitions {
                let key = RecordKey::Offset { group: group_id.clone(), topic: topic.to_string(), partition };
                log.delete(key, o.record_offset);
            }
        }
    }

    /// Refuses a command whose coordinator epoch is not its shard's current one.
    pub(crate) fn check_epoch(&self, cmd: &GroupCommand) -> Result<(), Rejection> {
        let current = self.shard_epoch(shard_for(&cmd.group_id));
        if cmd.coordinator_epoch != current {
            return Err(Rejection::StaleCoordinator {
                group: cmd.group_id.clone(),
                got: cmd.coordinator_epoch,
                current,
            });
        }
        Ok(())
    }

    /// Whether `group_id` has transactional offsets of an undecided transaction for this
    /// partition (OffsetFetch `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|g| g.pending.values().any(|t| t.get(topic).is_some_and(|p| p.contains_key(&partition))))
    }

    /// Decides the pending offsets of `producer_id` in `group_id` (the transaction's Prepare*):
    /// a commit makes them committed offsets (with their `__consumer_offsets` view records), an
    /// abort drops them.
    pub(crate) fn resolve_txn_offsets(&mut self, group_id: &str, producer_id: i64, commit: bool) {
        let Some(group) = self.groups.get_mut(group_id) else { return };
        let Some(pending) = group.pending.remove(&producer_id) else { return };
        if commit {
            let log = self.offsets_topic.entry(shard_for(group_id)).or_default();
            for o in pending.into_values().flat_map(BTreeMap::into_values) {
                commit_offset(log, group_id, group, &o);
            }
        }
    }

    /// Applies one group command. Deterministic; never panics.
    pub fn apply(&mut self, cmd: &GroupCommand) -> Result<CommandResult, Rejection> {
        self.check_epoch(cmd)?;
        let shard = shard_for(&cmd.group_id);
        let log = self.offsets_topic.entry(shard).or_default();
        match &cmd.op {
            GroupOp::CommitOffsets { offsets } => {
                let group = self.groups.entry(cmd.group_id.clone()).or_default();
                for o in offsets {
                    commit_offset(log, &cmd.group_id, group, o);
                }
            }
            GroupOp::TxnOffsetCommit { producer_id, offsets, .. } => {
                // The transaction's checks ran in `MetadataState::apply` (they need its state).
                let group = self.groups.entry(cmd.group_id.clone()).or_default();
                let pending = group.pending.entry(*producer_id).or_default();
                for o in offsets {
                    pending.entry(o.topic.clone()).or_default().insert(o.partition, o.clone());
                }
            }
            GroupOp::StoreMembership(m) => {
                let group = self.groups.entry(cmd.group_id.clone()).or_default();
                let key = RecordKey::Group { group: cmd.group_id.clone() };
                group.metadata_record_offset = Some(log.write(key, group.metadata_record_offset, m.timestamp_ms));
                group.membership = Some(m.clone());
                group.consumer = None;
            }
            GroupOp::UpdateConsumerGroup(u) => {
                let group = self.groups.entry(cmd.group_id.clone()).or_default();
                // Kafka deletes the classic GroupMetadata record when it converts a group.
                if let Some(previous) = group.metadata_record_offset.take() {
                    log.delete(RecordKey::Group { group: cmd.group_id.clone() }, previous);
                }
                group.membership = None;
                group.consumer.get_or_insert_default().apply(u);
            }
            GroupOp::DeleteGroup => {
                // Tombstones for every offset, then the group metadata, as Kafka writes them.
                if let Some(group) = self.groups.remove(&cmd.group_id) {
                    for (topic, partitions) in group.offsets {
                        for (partition, o) in partitions {
                            let key =
                                RecordKey::Offset { group: cmd.group_id.clone(), topic: topic.clone(), partition };
                            log.delete(key, o.record_offset);
                        }
                    }
                    if let Some(previous) = group.metadata_record_offset {
                        log.delete(RecordKey::Group { group: cmd.group_id.clone() }, previous);
                    }
                }
            }
            GroupOp::DeleteOffsets { partitions } => {
                if let Some(group) = self.groups.get_mut(&cmd.group_id) {
                    for (topic, p) in partitions {
                        if let Some(t) = group.offsets.get_mut(topic) {
                            if let Some(o) = t.remove(p) {
                                let key = RecordKey::Offset {
                                    group: cmd.group_id.clone(),
                                    topic: topic.clone(),
                                    partition: *p,
                                };
                                log.delete(key, o.record_offset);
                            }
                            if t.is_empty() {
                                group.offsets.remove(topic);
                            }
                        }
                    }
                }
            }
        }
        Ok(CommandResult::Ok)
    }
}

/// Upserts one committed offset and its `__consumer_offsets` view record.
fn commit_offset(log: &mut ShardLog, group_id: &str, group: &mut StoredGroup, o: &OffsetCommit) {
    let partitions = group.offsets.entry(o.topic.clone()).or_default();
    let previous = partitions.get(&o.partition).map(|c| c.record_offset);
    let key = RecordKey::Offset { group: group_id.to_string(), topic: o.topic.clone(), partition: o.partition };
    let record_offset = log.write(key, previous, o.commit_timestamp_ms);
    partitions.insert(
        o.partition,
        CommittedOffset {
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata.clone(),
            commit_timestamp_ms: o.commit_timestamp_ms,
            record_offset,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(group: &str, op: GroupOp) -> GroupCommand {
        GroupCommand { group_id: group.into(), coordinator_epoch: 0, op }
    }

    fn commit(topic: &str, partition: i32, offset: i64, ts: i64) -> OffsetCommit {
        OffsetCommit {
            topic: topic.into(),
            partition,
            offset,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp_ms: ts,
        }
    }

    #[test]
    fn java_hash_matches_kafka() {
        // Values from java.lang.String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // Wraps like Java ints: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(shard_for("polygenelubricants"), 0, "Utils.abs(MIN_VALUE) is 0");
        // Non-BMP characters hash as two UTF-16 code units.
        assert_eq!(java_string_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        assert_eq!(shard_for("hello"), (99_162_322 % 50) as u32);
        for g in ["", "g", "my-group", "\u{e9}t\u{e9}"] {
            assert!(shard_for(g) < SHARD_COUNT);
        }
    }

    #[test]
    fn offsets_upsert_and_delete() {
        let mut s = GroupsState::default();
        let r =
            s.apply(&cmd("g", GroupOp::CommitOffsets { offsets: vec![commit("t", 0, 5, 1), commit("t", 1, 7, 1)] }));
        assert_eq!(r, Ok(CommandResult::Ok));
        s.apply(&cmd("g", GroupOp::CommitOffsets { offsets: vec![commit("t", 0, 9, 2)] })).expect("commit");
        let o = s.offset("g", "t", 0).expect("offset");
        assert_eq!((o.offset, o.leader_epoch, o.metadata.as_deref(), o.commit_timestamp_ms), (9, 3, Some("m"), 2));
        assert_eq!(s.offset("g", "t", 1).map(|o| o.offset), Some(7));
        assert_eq!(s.offset("g", "t", 2), None);
        s.apply(&cmd("g", GroupOp::DeleteOffsets { partitions: vec![("t".into(), 0), ("x".into(), 0)] }))
            .expect("delete");
        assert_eq!(s.offset("g", "t", 0), None);
        assert_eq!(s.offset("g", "t", 1).map(|o| o.offset), Some(7));
        s.apply(&cmd("g", GroupOp::DeleteOffsets { partitions: vec![("t".into(), 1)] })).expect("delete");
        assert!(s.groups["g"].offsets.is_empty(), "empty topics are dropped");
        // A deleted topic's offsets leave every group, with tombstones in the view.
        s.apply(&cmd("g", GroupOp::CommitOffsets { offsets: vec![commit("t", 0, 5, 3), commit("u", 0, 1, 3)] }))
            .expect("commit");
        s.apply(&cmd("h", GroupOp::CommitOffsets { offsets: vec![commit("t", 2, 4, 3)] })).expect("commit");
        let tombstones = |s: &GroupsState| s.offsets_topic.values().map(|l| l.tombstones.len()).sum::<usize>();
        let before = tombstones(&s);
        s.forget_topic("t");
        assert_eq!((s.offset("g", "t", 0), s.offset("h", "t", 2)), (None, None));
        assert_eq!(s.offset("g", "u", 0).map(|o| o.offset), Some(1), "other topics stay");
        assert_eq!(tombstones(&s), before + 2);
        s.apply(&cmd("g", GroupOp::DeleteOffsets { partitions: vec![("u".into(), 0)] })).expect("delete");
        // Deleting offsets of an unknown group is a no-op.
        s.apply(&cmd("nope", GroupOp::DeleteOffsets { partitions: vec![("t".into(), 1)] })).expect("delete");
        assert!(!s.groups.contains_key("nope"));
    }

    #[test]
    fn membership_and_delete_group() {
        let mut s = GroupsState::default();
        let m = GroupMembership {
            generation: 4,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: Some("a".into()),
            members: vec![StoredMember {
                member_id: "a".into(),
                group_instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: vec![1, 2],
                assignment: vec![3],
            }],
            timestamp_ms: 10,
        };
        s.apply(&cmd("g", GroupOp::StoreMembership(m.clone()))).expect("store");
        s.apply(&cmd("g", GroupOp::CommitOffsets { offsets: vec![commit("t", 0, 1, 1)] })).expect("commit");
        assert_eq!(s.groups["g"].membership.as_ref(), Some(&m));
        // Deterministic: a replica applying the same commands is identical, also after serde.
        let json = serde_json::to_string(&s).expect("serialize");
        let back: GroupsState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        s.apply(&cmd("g", GroupOp::DeleteGroup)).expect("delete");
        assert!(s.groups.is_empty());
    }

    #[test]
    fn a_group_is_classic_or_consumer_never_both() {
        let mut s = GroupsState::default();
        s.apply(&cmd("g", GroupOp::StoreMembership(GroupMembership { generation: 3, ..Default::default() })))
            .expect("store");
        let update = ConsumerGroupUpdate { group_epoch: 1, assignment_epoch: 1, ..Default::default() };
        s.apply(&cmd("g", GroupOp::UpdateConsumerGroup(update))).expect("update");
        assert_eq!(s.groups["g"].membership, None);
        assert_eq!(s.groups["g"].consumer.as_ref().map(|c| c.group_epoch), Some(1));
        s.apply(&cmd("g", GroupOp::StoreMembership(GroupMembership::default()))).expect("store");
        assert!(s.groups["g"].consumer.is_none() && s.groups["g"].membership.is_some());
    }

    #[test]
    fn snapshots_without_consumer_groups_still_load() {
        // A StoredGroup as written before consumer groups existed.
        let old = r#"{"groups":{"g":{"offsets":{},"membership":null}},"shards":{}}"#;
        let s: GroupsState = serde_json::from_str(old).expect("old snapshot");
        assert_eq!(s.groups["g"].consumer, None);
        // And a classic group does not write the new field.
        assert!(!serde_json::to_string(&s).expect("serialize").contains("consumer"));
    }

    #[test]
    fn stale_coordinator_epoch_is_rejected() {
        let mut s = GroupsState::default();
        let shard = shard_for("g");
        s.shards.insert(shard, ShardAssignment { broker_id: 1, epoch: 2 });
        let before = s.clone();
        let stale = GroupCommand { group_id: "g".into(), coordinator_epoch: 1, op: GroupOp::DeleteGroup };
        assert!(matches!(s.apply(&stale), Err(Rejection::StaleCoordinator { got: 1, current: 2, .. })));
        assert_eq!(s, before);
        let ok = GroupCommand {
            group_id: "g".into(),
            coordinator_epoch: 2,
            op: GroupOp::CommitOffsets { offsets: vec![commit("t", 0, 1, 1)] },
        };
        assert_eq!(s.apply(&ok), Ok(CommandResult::Ok));
        assert_eq!(s.coordinator("g").map(|a| a.broker_id), Some(1));
    }
}
