//! Internal topics: which topics the broker itself owns, and who leads their partitions.
//!
//! Kafka clients and tools expect `__consumer_offsets` to exist: Metadata lists it with
//! `is_internal`, regex subscriptions see it and skip it, admin tools list and describe it.
//! In Skiff the consumer-group state lives in the controller's metadata
//! (`controller/src/groups.rs`), not in a topic, so the internal topics are *synthesized*:
//!
//! ```text
//!   __consumer_offsets partition p  ==  coordinator shard p
//!     leader        = the broker the controller assigned shard p to
//!     leader epoch  = shard p's epoch
//!     topic id      = a fixed UUID (the same on every broker, across restarts)
//! ```
//!
//! `shard_for(group)` is Kafka's `partitionFor(group)`, so a client that maps a group to its
//! `__consumer_offsets` partition and looks up that partition's leader finds the broker that
//! FindCoordinator names.
//!
//! Invariants:
//! * an internal topic is never in the controller's `topics` map: it is never created, deleted,
//!   placed, compacted or retained as a regular topic, and no regular topic can take its name;
//! * the answer for a partition depends only on the metadata image and this broker's id, so
//!   every broker with the same image names the same leaders.
//!
//! The records of `__consumer_offsets` are not stored here either: Fetch, ListOffsets and
//! OffsetForLeaderEpoch check [`is_internal`], take the log's extent from
//! [`InternalTopic::log_extent`], and Fetch encodes the records from the shard's group state
//! (`group::offsets_topic`).

use skiff_controller::image::{BrokerId, MetadataImage, NO_LEADER, OffsetsTopicView, SHARD_COUNT};
use uuid::Uuid;

/// Kafka's consumer-offsets topic: one partition per group coordinator shard.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Where an internal topic's partition leaders come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// Partition p is led by the owner of consumer-group coordinator shard p.
    GroupCoordinatorShards,
}

/// One internal topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: &'static str,
    /// Fixed, so every broker reports the same id (Kafka's topic ids are per-cluster random;
    /// clients only need them stable and non-zero).
    pub topic_id: Uuid,
    pub partition_count: i32,
    pub leadership: Leadership,
    /// The topic-level configs Kafka sets when it creates the topic (`groupMetadataTopicConfigs`).
    pub configs: &'static [(&'static str, &'static str)],
}

/// Every internal topic. `__transaction_state` joins once transactions exist.
pub const ALL: &[InternalTopic] = &[InternalTopic {
    name: CONSUMER_OFFSETS,
    topic_id: Uuid::from_u128(0x5c1f_f000_c0f5_4e7a_9c00_0000_0000_0001),
    partition_count: SHARD_COUNT as i32,
    leadership: Leadership::GroupCoordinatorShards,
    configs: &[("cleanup.policy", "compact"), ("compression.type", "producer"), ("segment.bytes", "104857600")],
}];

/// Whether `name` is an internal topic.
pub fn is_internal(name: &str) -> bool {
    find(name).is_some()
}

/// The internal topic called `name`.
pub fn find(name: &str) -> Option<&'static InternalTopic> {
    ALL.iter().find(|t| t.name == name)
}

/// The internal topic with this id.
pub fn by_id(topic_id: &Uuid) -> Option<&'static InternalTopic> {
    ALL.iter().find(|t| t.topic_id == *topic_id)
}

/// Who leads one partition of an internal topic. `leader` is [`NO_LEADER`] when no live broker
/// does (clients see LEADER_NOT_AVAILABLE and retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLeader {
    pub leader: BrokerId,
    pub leader_epoch: i32,
}

impl InternalTopic {
    /// The leader of `partition`, or `None` if the topic has no such partition. `local` is the
    /// asking broker's id: before the controller assigns shards (no broker registered yet, as
    /// in a single node starting up) every shard is coordinated locally, exactly as
    /// FindCoordinator answers.
    pub fn partition_leader(&self, m: &MetadataImage, local: BrokerId, partition: i32) -> Option<PartitionLeader> {
        if !(0..self.partition_count).contains(&partition) {
            return None;
        }
        match self.leadership {
            Leadership::GroupCoordinatorShards => {
                let shard = partition as u32;
                Some(match m.shard_coordinator(shard) {
                    None => PartitionLeader { leader: local, leader_epoch: 0 },
                    Some(a) if m.is_live(a.broker_id) => PartitionLeader { leader: a.broker_id, leader_epoch: a.epoch },
                    Some(a) => PartitionLeader { leader: NO_LEADER, leader_epoch: a.epoch },
                })
            }
        }
    }

    /// The offsets of one partition's log as readers see it: (log start, end). For
    /// `__consumer_offsets`, the shard's compacted view of its group writes
    /// (`skiff_controller::image::OffsetsTopicView`), which starts at 0 (its gaps are superseded
    /// records); the records themselves come from `group::offsets_topic`.
    pub fn log_extent(&self, m: &MetadataImage, partition: i32) -> (i64, i64) {
        match self.leadership {
            Leadership::GroupCoordinatorShards => {
                let end = u32::try_from(partition).map_or(0, |shard| m.offsets_topic_end(shard));
                (0, end)
            }
        }
    }

    /// The configs as a map, as regular topics store theirs.
    pub fn config_map(&self) -> std::collections::BTreeMap<String, String> {
        self.configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Every partition's leader, by partition index.
    pub fn partition_leaders(&self, m: &MetadataImage, local: BrokerId) -> Vec<PartitionLeader> {
        (0..self.partition_count).filter_map(|p| self.partition_leader(m, local, p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use skiff_controller::image::ImageFixture;
    use skiff_controller::intent::BrokerRegistration;
    use skiff_controller::intent::shard_for;

    use super::*;

    fn consumer_offsets() -> &'static InternalTopic {
        find(CONSUMER_OFFSETS).expect("defined")
    }

    #[test]
    fn names_and_ids() {
        assert!(is_internal("__consumer_offsets"));
        assert!(!is_internal("__consumer_offsets2"));
        assert!(!is_internal("orders"));
        // `__transaction_state` is not internal until transactions exist.
        assert!(!is_internal("__transaction_state"));
        let t = consumer_offsets();
        assert_eq!(t.partition_count, 50);
        assert_eq!(by_id(&t.topic_id), Some(t));
        assert!(!t.topic_id.is_nil());
        for t in ALL {
            assert!(crate::broker::validate_topic_name(t.name).is_ok(), "{}", t.name);
        }
    }

    #[test]
    fn unassigned_shards_are_led_locally() {
        let m = ImageFixture::new("c").build();
        let leaders = consumer_offsets().partition_leaders(&m, 7);
        assert_eq!(leaders.len(), 50);
        assert!(leaders.iter().all(|l| *l == PartitionLeader { leader: 7, leader_epoch: 0 }));
        assert_eq!(consumer_offsets().partition_leader(&m, 7, 50), None);
        assert_eq!(consumer_offsets().partition_leader(&m, 7, -1), None);
    }

    #[test]
    fn partition_follows_the_group_shard() {
        let mut m = ImageFixture::new("c");
        for id in [1, 2] {
            m = m.broker(BrokerRegistration {
                broker_id: id,
                host: "127.0.0.1".into(),
                port: 9000 + id,
                rack: None,
                incarnation: Uuid::from_u128(id as u128),
                fenced: id == 2,
                listeners: Vec::new(),
            });
        }
        let group = "my-group";
        let shard = shard_for(group);
        let m = m.shard(shard, 1, 4).shard((shard + 1) % 50, 2, 9).build();
        let t = consumer_offsets();
        assert_eq!(t.partition_leader(&m, 5, shard as i32), Some(PartitionLeader { leader: 1, leader_epoch: 4 }));
        // A fenced owner is no leader (FindCoordinator answers COORDINATOR_NOT_AVAILABLE).
        assert_eq!(
            t.partition_leader(&m, 5, ((shard + 1) % 50) as i32),
            Some(PartitionLeader { leader: NO_LEADER, leader_epoch: 9 })
        );
    }
}
