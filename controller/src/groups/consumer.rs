//! Durable state of consumer-protocol groups (KIP-848, `group.protocol=consumer`).
//!
//! Owns, per group: the group epoch, the assignment epoch, the metadata of the subscribed topics
//! the target assignment was computed from, and every member with its subscription, its member
//! epoch and reconciliation state, the partitions it owns (each with the epoch it was assigned
//! at), the partitions it is revoking, and its target assignment. That is everything a new
//! coordinator needs to carry on: after a failover, members keep their epochs and partitions,
//! so nobody is fenced and no partition changes hands; only session and rebalance timers
//! restart (their deadlines are not stored).
//!
//! The coordinator writes a [`ConsumerGroupUpdate`] (a delta: the group's epochs and topics, the
//! members that changed, the members that left) after every change, and answers the heartbeat
//! that caused it only once it is applied, so what a member was told survives the coordinator.
//!
//! Invariants: applying an update is deterministic and total (it never fails); a group is either
//! classic (`StoredGroup::membership`) or consumer (`StoredGroup::consumer`), never both: storing
//! one clears the other, the way Kafka converts an empty group from one protocol to the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A consumer-protocol group as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredConsumerGroup {
    /// Bumped by every change of membership, subscriptions, assignor or subscribed topics.
    pub group_epoch: i32,
    /// The group epoch the members' target assignments were computed at.
    pub assignment_epoch: i32,
    /// The subscribed topics (name → id and partition count) as of the last group epoch bump.
    pub subscribed_topics: BTreeMap<String, SubscribedTopic>,
    /// Members by member id.
    pub members: BTreeMap<String, StoredConsumerMember>,
}

/// A subscribed topic's identity and size, as the target assignment saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscribedTopic {
    pub topic_id: Uuid,
    pub partitions: i32,
}

/// Where a member is in reconciling towards its target assignment (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum MemberState {
    /// At the assignment epoch with everything it may have (or waiting for a newer target).
    #[default]
    Stable,
    /// Must acknowledge revoking `pending_revocation` before it moves to the next epoch.
    UnrevokedPartitions,
    /// At the assignment epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

/// Partitions of one topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicPartitions {
    pub topic_id: Uuid,
    pub partitions: Vec<i32>,
}

/// Partitions of one topic, each with the member epoch it was assigned at (an OffsetCommit with
/// an older member epoch is accepted for a partition the member has held since then).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicPartitionEpochs {
    pub topic_id: Uuid,
    /// (partition, assignment epoch).
    pub partitions: Vec<(i32, i32)>,
}

/// One member of a consumer-protocol group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The member's epoch; -2 while a static member is away (left with epoch -2).
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    /// The partitions it owns or is being given.
    pub assigned: Vec<TopicPartitionEpochs>,
    /// The partitions it must give up before anyone else gets them.
    pub pending_revocation: Vec<TopicPartitionEpochs>,
    /// Its target assignment (computed by the server-side assignor at the assignment epoch).
    pub target: Vec<TopicPartitions>,
}

/// One change to a consumer-protocol group: new epochs and topics, changed and departed members.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsumerGroupUpdate {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub subscribed_topics: BTreeMap<String, SubscribedTopic>,
    /// Members written whole (added or changed).
    pub upserted: Vec<StoredConsumerMember>,
    /// Member ids that left or were fenced.
    pub removed: Vec<String>,
}

impl ConsumerGroupUpdate {
    /// `later` applied after `self`, as one update (the coordinator coalesces the updates that
    /// queue behind a store in flight).
    pub fn merge(&mut self, later: ConsumerGroupUpdate) {
        self.group_epoch = later.group_epoch;
        self.assignment_epoch = later.assignment_epoch;
        self.subscribed_topics = later.subscribed_topics;
        for id in later.removed {
            self.upserted.retain(|m| m.member_id != id);
            if !self.removed.contains(&id) {
                self.removed.push(id);
            }
        }
        for m in later.upserted {
            self.removed.retain(|id| *id != m.member_id);
            match self.upserted.iter_mut().find(|u| u.member_id == m.member_id) {
                Some(u) => *u = m,
                None => self.upserted.push(m),
            }
        }
    }
}

impl StoredConsumerGroup {
    /// Applies one update. Total and deterministic.
    pub fn apply(&mut self, u: &ConsumerGroupUpdate) {
        self.group_epoch = u.group_epoch;
        self.assignment_epoch = u.assignment_epoch;
        self.subscribed_topics = u.subscribed_topics.clone();
        for id in &u.removed {
            self.members.remove(id);
        }
        for m in &u.upserted {
            self.members.insert(m.member_id.clone(), m.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, epoch: i32) -> StoredConsumerMember {
        StoredConsumerMember { member_id: id.into(), member_epoch: epoch, ..Default::default() }
    }

    fn update(epoch: i32, upserted: Vec<StoredConsumerMember>, removed: &[&str]) -> ConsumerGroupUpdate {
        ConsumerGroupUpdate {
            group_epoch: epoch,
            assignment_epoch: epoch,
            subscribed_topics: BTreeMap::new(),
            upserted,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn merged_updates_apply_like_the_sequence() {
        let steps = [
            update(1, vec![member("a", 1), member("b", 1)], &[]),
            update(2, vec![member("a", 2)], &["b"]),
            update(3, vec![member("b", 3)], &["a"]),
            update(4, vec![member("c", 4), member("b", 4)], &["x"]),
        ];
        let base = {
            let mut g = StoredConsumerGroup::default();
            g.apply(&update(0, vec![member("a", 0), member("x", 0)], &[]));
            g
        };
        let mut sequential = base.clone();
        for s in &steps {
            sequential.apply(s);
        }
        for split in 0..steps.len() {
            let mut merged = steps[split].clone();
            for s in &steps[split + 1..] {
                merged.merge(s.clone());
            }
            let mut g = base.clone();
            for s in &steps[..split] {
                g.apply(s);
            }
            g.apply(&merged);
            assert_eq!(g, sequential, "merging from step {split}");
        }
        assert_eq!(sequential.members.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(sequential.group_epoch, 4);
    }
}
