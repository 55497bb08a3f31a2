//! Broker membership and placement: who is live, who leads which partition and which
//! coordinator shard, at which epoch. Part of [`MetadataState::apply`], so pure and
//! deterministic (no clock, no randomness, ordered iteration only).
//!
//! Rules:
//! * a broker is live from its `RegisterBroker` until a `FenceBroker` for the same incarnation
//!   (session timeout or controlled shutdown); a fence for an older incarnation is ignored;
//! * every leadership change bumps the partition's leader epoch (and a shard's epoch), so
//!   exactly one broker can commit in any epoch: the controller refuses commits from others;
//! * a registration with a new incarnation bumps the epochs of what the broker still leads: the
//!   previous process's in-flight commits are then refused;
//! * placement picks, for each partition, the live broker with the fewest partitions of that
//!   topic on its rack (racks given), then the fewest partitions overall, then the lowest id;
//! * a broker that registers gets partitions moved to it until leader counts differ by at most
//!   one; moving a partition copies no data (all of it is in object storage);
//! * with no live broker a partition has leader `-1` (clients see LEADER_NOT_AVAILABLE).

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::groups::{SHARD_COUNT, ShardAssignment};
use crate::metadata::{BrokerId, BrokerRegistration, CommandResult, MetadataState, PartitionState, Rejection};

/// No leader (Kafka's `-1`).
pub const NO_LEADER: BrokerId = -1;

impl MetadataState {
    /// Live (registered, unfenced) broker ids in order.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.broker_id).collect()
    }

    /// Whether `broker_id` is registered and not fenced.
    pub fn is_live(&self, broker_id: BrokerId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }

    pub(crate) fn register_broker(&mut self, reg: &BrokerRegistration) -> Result<CommandResult, Rejection> {
        let new_incarnation = self.brokers.get(&reg.broker_id).is_none_or(|b| b.incarnation != reg.incarnation);
        let mut stored = reg.clone();
        stored.fenced = false;
        self.brokers.insert(reg.broker_id, stored);
        if new_incarnation {
            // The previous process of this id may still have commits in flight: fence them.
            for t in self.topics.values_mut() {
                for p in t.partitions.iter_mut().filter(|p| p.leader == reg.broker_id) {
                    change_leader(p, reg.broker_id);
                }
            }
            for s in self.groups.shards.values_mut().filter(|s| s.broker_id == reg.broker_id) {
                s.epoch += 1;
            }
        }
        self.rebalance();
        Ok(CommandResult::Ok)
    }

    pub(crate) fn fence_broker(&mut self, broker_id: BrokerId, incarnation: Uuid) -> Result<CommandResult, Rejection> {
        match self.brokers.get_mut(&broker_id) {
            Some(b) if b.incarnation == incarnation && !b.fenced => b.fenced = true,
            // Already fenced, re-registered since, or unknown: nothing to do.
            _ => return Ok(CommandResult::Ok),
        }
        for name in self.topics.keys().cloned().collect::<Vec<_>>() {
            let count = self.topics[&name].partitions.len();
            for i in 0..count {
                if self.topics[&name].partitions[i].leader == broker_id {
                    let to = self.pick_leader(Some(&name)).unwrap_or(NO_LEADER);
                    if let Some(p) = self.topics.get_mut(&name).and_then(|t| t.partitions.get_mut(i)) {
                        change_leader(p, to);
                    }
                }
            }
        }
        for shard in 0..SHARD_COUNT {
            if self.groups.shards.get(&shard).is_some_and(|s| s.broker_id == broker_id) {
                let to = self.pick_coordinator().unwrap_or(NO_LEADER);
                move_shard(&mut self.groups.shards, shard, to);
            }
        }
        Ok(CommandResult::Ok)
    }

    /// Leader for a new partition of `topic` (or a moved one), `None` without live brokers.
    pub(crate) fn pick_leader(&self, topic: Option<&str>) -> Option<BrokerId> {
        let live = self.live_brokers();
        let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
        let mut topic_on_rack: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        let rack_of = |b: BrokerId| self.brokers.get(&b).and_then(|r| r.rack.as_deref());
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(n) = load.get_mut(&p.leader) {
                    *n += 1;
                    if Some(t.name.as_str()) == topic {
                        *topic_on_rack.entry(rack_of(p.leader)).or_default() += 1;
                    }
                }
            }
        }
        let racks_given = live.iter().any(|b| rack_of(*b).is_some());
        live.into_iter().min_by_key(|b| {
            let rack_load = if racks_given { topic_on_rack.get(&rack_of(*b)).copied().unwrap_or(0) } else { 0 };
            (rack_load, load[b], *b)
        })
    }

    fn pick_coordinator(&self) -> Option<BrokerId> {
        let live = self.live_brokers();
        let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
        for s in self.groups.shards.values() {
            if let Some(n) = load.get_mut(&s.broker_id) {
                *n += 1;
            }
        }
        live.into_iter().min_by_key(|b| (load[b], *b))
    }

    /// Gives leaderless partitions and shards a leader, then evens out leader counts (at most one
    /// apart). Bounded: every move lowers the spread.
    pub(crate) fn rebalance(&mut self) {
        let live = self.live_brokers();
        if live.is_empty() {
            return;
        }
        // Leaderless (or led by a fenced broker, which cannot happen but is cheap to repair).
        for name in self.topics.keys().cloned().collect::<Vec<_>>() {
            for i in 0..self.topics[&name].partitions.len() {
                let leader = self.topics[&name].partitions[i].leader;
                if !self.is_live(leader) {
                    let to = self.pick_leader(Some(&name)).unwrap_or(NO_LEADER);
                    if let Some(p) = self.topics.get_mut(&name).and_then(|t| t.partitions.get_mut(i)) {
                        change_leader(p, to);
                    }
                }
            }
        }
        let total: usize = self.topics.values().map(|t| t.partitions.len()).sum();
        for _ in 0..total {
            let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
            for t in self.topics.values() {
                for p in &t.partitions {
                    if let Some(n) = load.get_mut(&p.leader) {
                        *n += 1;
                    }
                }
            }
            let Some((&max_b, &max)) = load.iter().max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b))) else { break };
            let Some((&min_b, &min)) = load.iter().min_by_key(|(b, n)| (**n, **b)) else { break };
            if max <= min + 1 {
                break;
            }
            // Move the last partition (in name, index order) the busiest broker leads.
            let victim =
                self.topics.iter().rev().find_map(|(name, t)| {
                    t.partitions.iter().rposition(|p| p.leader == max_b).map(|i| (name.clone(), i))
                });
            let Some((name, i)) = victim else { break };
            if let Some(p) = self.topics.get_mut(&name).and_then(|t| t.partitions.get_mut(i)) {
                change_leader(p, min_b);
            }
        }
        // Coordinator shards: all assigned, then evened out the same way.
        for shard in 0..SHARD_COUNT {
            let owner = self.groups.shards.get(&shard).map(|s| s.broker_id);
            if owner.is_none_or(|b| !self.is_live(b)) {
                let to = self.pick_coordinator().unwrap_or(NO_LEADER);
                move_shard(&mut self.groups.shards, shard, to);
            }
        }
        for _ in 0..SHARD_COUNT {
            let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
            for s in self.groups.shards.values() {
                if let Some(n) = load.get_mut(&s.broker_id) {
                    *n += 1;
                }
            }
            let Some((&max_b, &max)) = load.iter().max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b))) else { break };
            let Some((&min_b, &min)) = load.iter().min_by_key(|(b, n)| (**n, **b)) else { break };
            if max <= min + 1 {
                break;
            }
            let Some(shard) = self.groups.shards.iter().rev().find(|(_, s)| s.broker_id == max_b).map(|(k, _)| *k)
            else {
                break;
            };
            move_shard(&mut self.groups.shards, shard, min_b);
        }
    }
}

/// Hands `p` to `to` in a new leader epoch. Epochs without records are not kept in the epoch
/// history: the entry of an empty epoch is replaced (OffsetForLeaderEpoch answers the same).
pub(crate) fn change_leader(p: &mut PartitionState, to: BrokerId) {
    p.leader = to;
    p.leader_epoch += 1;
    match p.epoch_starts.last_mut() {
        Some((epoch, start)) if *start == p.end_offset => *epoch = p.leader_epoch,
        _ => p.epoch_starts.push((p.leader_epoch, p.end_offset)),
    }
}

fn move_shard(shards: &mut BTreeMap<u32, ShardAssignment>, shard: u32, to: BrokerId) {
    let epoch = shards.get(&shard).map_or(0, |s| s.epoch) + 1;
    shards.insert(shard, ShardAssignment { broker_id: to, epoch });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metadata::{Command, CreateTopic};

    fn reg(id: BrokerId, incarnation: u128, rack: Option<&str>) -> Command {
        Command::RegisterBroker(BrokerRegistration {
            broker_id: id,
            incarnation: Uuid::from_u128(incarnation),
            host: "h".into(),
            port: 9000 + id,
            rack: rack.map(str::to_string),
            fenced: false,
        })
    }

    fn topic(s: &mut MetadataState, name: &str, partitions: i32) {
        let r = s.apply(&Command::CreateTopic(CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(name.len() as u128 * 1000 + partitions as u128),
            partitions,
            configs: BTreeMap::new(),
        }));
        assert!(matches!(r, CommandResult::TopicCreated { .. }), "{r:?}");
    }

    fn leaders(s: &MetadataState) -> BTreeMap<BrokerId, usize> {
        let mut m = BTreeMap::new();
        for t in s.topics.values() {
            for p in &t.partitions {
                *m.entry(p.leader).or_default() += 1;
            }
        }
        m
    }

    fn fence(id: BrokerId, incarnation: u128) -> Command {
        Command::FenceBroker { broker_id: id, incarnation: Uuid::from_u128(incarnation), controlled: false }
    }

    #[test]
    fn fencing_moves_partitions_with_new_epochs_and_joiners_receive_some() {
        let mut s = MetadataState::new("c".into());
        for id in 1..=3 {
            s.apply(&reg(id, 1, None));
        }
        topic(&mut s, "t", 12);
        assert_eq!(leaders(&s), BTreeMap::from([(1, 4), (2, 4), (3, 4)]));
        let before_fence: Vec<(i32, i32)> =
            s.topics["t"].partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect();

        // A stale fence (old incarnation) changes nothing.
        let before = s.clone();
        s.apply(&fence(2, 99));
        assert_eq!(s, before);

        s.apply(&fence(2, 1));
        assert!(!s.is_live(2));
        assert_eq!(leaders(&s), BTreeMap::from([(1, 6), (3, 6)]));
        for (p, (leader, epoch)) in s.topics["t"].partitions.iter().zip(&before_fence) {
            if *leader == 2 {
                assert!(p.leader_epoch > *epoch, "moved partitions get a new epoch");
            } else {
                assert_eq!(p.leader_epoch, *epoch, "others keep theirs");
            }
        }
        // Shards all on live brokers.
        assert!(s.groups.shards.values().all(|a| a.broker_id == 1 || a.broker_id == 3));
        assert_eq!(s.groups.shards.len(), SHARD_COUNT as usize);

        // Broker 2 comes back (new process): evened out again.
        s.apply(&reg(2, 2, None));
        let l = leaders(&s);
        assert!(l.values().max().copied().unwrap_or(0) - l.values().min().copied().unwrap_or(0) <= 1, "{l:?}");
        assert_eq!(l.len(), 3);

        // Everyone fenced: no leader, and a commit in the old epoch is refused.
        for (id, inc) in [(1, 1), (2, 2), (3, 1)] {
            s.apply(&fence(id, inc));
        }
        assert!(s.topics["t"].partitions.iter().all(|p| p.leader == NO_LEADER));
        assert!(s.groups.shards.values().all(|a| a.broker_id == NO_LEADER));
        s.apply(&reg(3, 5, None));
        assert!(s.topics["t"].partitions.iter().all(|p| p.leader == 3));
    }

    #[test]
    fn re_registration_with_a_new_incarnation_bumps_epochs() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, None));
        topic(&mut s, "t", 2);
        let e0 = s.topics["t"].partitions[0].leader_epoch;
        s.apply(&reg(1, 1, None));
        assert_eq!(s.topics["t"].partitions[0].leader_epoch, e0, "same incarnation: heartbeat-like, no bump");
        s.apply(&reg(1, 2, None));
        assert_eq!(s.topics["t"].partitions[0].leader_epoch, e0 + 1);
        // Empty epochs do not pile up in the history.
        assert_eq!(s.topics["t"].partitions[0].epoch_starts.len(), 1);
    }

    #[test]
    fn racks_spread_a_topic() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, Some("a")));
        s.apply(&reg(2, 1, Some("a")));
        s.apply(&reg(3, 1, Some("b")));
        topic(&mut s, "t", 4);
        let on_b = s.topics["t"].partitions.iter().filter(|p| p.leader == 3).count();
        assert_eq!(on_b, 2, "half the partitions on rack b, which has one broker");
    }
}
