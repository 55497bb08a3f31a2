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
//!   topic on its rack (racks given), then the fewest partitions overall, then the least load
//!   (records retained in the partitions it leads: a proxy for traffic that every replica
//!   computes identically), then the lowest id;
//! * a broker that registers gets partitions moved to it until leader counts differ by at most
//!   one; moving a partition copies no data (all of it is in object storage);
//! * with no live broker a partition has leader `-1` (clients see LEADER_NOT_AVAILABLE);
//! * a partition with a manual assignment (CreateTopics / CreatePartitions `assignments`, kept
//!   in `PartitionState::replicas`) is led by its preferred replica (the first listed) whenever
//!   that broker is live, else by another live listed broker, else (unlike Kafka, which would
//!   leave it offline: no data lives on brokers here) by any live broker. Leadership moves back
//!   to the preferred replica as soon as it registers again, as Kafka's
//!   `auto.leader.rebalance.enable` does (without its delay and imbalance threshold: a move
//!   copies no data). Evening out leader counts never moves such a partition.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::groups::{SHARD_COUNT, ShardAssignment};
use crate::metadata::{
    BrokerId, BrokerRegistration, CommandResult, MetadataState, PartitionState, Rejection, TopicState,
};

// Both shard kinds have 50 shards (`offsets.topic.num.partitions`,
// `transaction.state.log.num.partitions`): the loops below cover either.
const _: () = assert!(SHARD_COUNT == crate::transactions::TXN_SHARD_COUNT);

/// No leader (Kafka's `-1`).
pub const NO_LEADER: BrokerId = -1;

impl MetadataState {
    /// Live (registered, unfenced) broker ids in order.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.broker_id).collect()
    }

    /// Whether some live broker has a rack (`broker.rack`).
    pub fn racks_given(&self) -> bool {
        self.brokers.values().any(|b| !b.fenced && b.rack.is_some())
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
            let shards = self.groups.shards.values_mut().chain(self.transactions.shards.values_mut());
            for s in shards.filter(|s| s.broker_id == reg.broker_id) {
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
        self.reassign_partitions(|leader| leader == broker_id);
        let live = self.live_brokers();
        for shards in [&mut self.groups.shards, &mut self.transactions.shards] {
            for shard in 0..SHARD_COUNT {
                if shards.get(&shard).is_some_and(|s| s.broker_id == broker_id) {
                    let to = pick_coordinator(shards, &live).unwrap_or(NO_LEADER);
                    move_shard(shards, shard, to);
                }
            }
        }
        Ok(CommandResult::Ok)
    }

    /// Moves every partition whose leader matches `moving` to a broker picked by [`Loads`].
    /// One pass over the partitions plus O(live brokers) per move.
    fn reassign_partitions(&mut self, moving: impl Fn(BrokerId) -> bool) {
        let mut loads = Loads::new(self);
        for t in self.topics.values_mut() {
            if !t.partitions.iter().any(|p| moving(p.leader)) {
                continue;
            }
            let mut on_rack = loads.topic_on_rack(t);
            for p in t.partitions.iter_mut().filter(|p| moving(p.leader)) {
                let to = preferred_leader(&p.replicas, NO_LEADER, |b| loads.is_live(b))
                    .or_else(|| loads.pick(&on_rack))
                    .unwrap_or(NO_LEADER);
                change_leader(p, to);
                loads.placed(to, &mut on_rack, retained(p));
            }
        }
    }

    /// Appends `count` partitions to topic `name`: the i-th led as its manual replica list
    /// `assignments[i]` says (if given), the others placed by [`Loads::pick`] (which sees the
    /// ones placed before it).
    pub(crate) fn add_partitions(&mut self, name: &str, count: usize, assignments: &[Vec<BrokerId>]) {
        let mut loads = Loads::new(self);
        let Some(t) = self.topics.get_mut(name) else { return };
        let mut on_rack = loads.topic_on_rack(t);
        for i in 0..count {
            let replicas = assignments.get(i).cloned().unwrap_or_default();
            let leader = preferred_leader(&replicas, NO_LEADER, |b| loads.is_live(b))
                .or_else(|| loads.pick(&on_rack))
                .unwrap_or(NO_LEADER);
            let mut p = PartitionState::new(leader);
            p.replicas = replicas;
            t.partitions.push(p);
            loads.placed(leader, &mut on_rack, 0);
        }
    }

    /// UnregisterBroker: Kafka's `ReplicationControlManager.unregisterBroker` for a fenced
    /// broker: its registration is forgotten (it no longer shows as fenced; manual replica lists
    /// keep its id, as Kafka's do). A live broker is refused: unlike Kafka, which unregisters it
    /// and lets it register again, Skiff asks for it to be stopped first, so the only broker of
    /// a single-process node cannot be unregistered from under itself.
    pub(crate) fn unregister_broker(&mut self, broker_id: BrokerId) -> Result<CommandResult, Rejection> {
        self.validate_unregister(broker_id)?;
        self.brokers.remove(&broker_id);
        Ok(CommandResult::Ok)
    }

    /// The checks of [`Self::unregister_broker`], for a broker to answer before submitting.
    pub fn validate_unregister(&self, broker_id: BrokerId) -> Result<(), Rejection> {
        match self.brokers.get(&broker_id) {
            None => Err(Rejection::BrokerNotRegistered(broker_id)),
            Some(b) if !b.fenced => Err(Rejection::BrokerStillLive(broker_id)),
            Some(_) => Ok(()),
        }
    }

    /// AlterPartitionReassignments of one partition: Kafka's checks (unknown topic or partition,
    /// then `validateManualPartitionAssignment` without a replication factor), then the new list
    /// replaces the old one and leadership follows the manual-assignment rule: the preferred
    /// replica if live, else the current leader if listed, else the first live listed broker,
    /// else (none live) the current leader stays.
    pub(crate) fn reassign_partition(
        &mut self,
        topic: &str,
        partition: i32,
        replicas: &[BrokerId],
    ) -> Result<CommandResult, Rejection> {
        self.validate_reassignment(topic, partition, replicas)?;
        let live: std::collections::BTreeSet<BrokerId> = self.live_brokers().into_iter().collect();
        let p = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
            .ok_or_else(|| Rejection::UnknownPartition { topic: topic.to_string(), partition })?;
        p.replicas = replicas.to_vec();
        if let Some(to) = preferred_leader(&p.replicas, p.leader, |b| live.contains(&b))
            && to != p.leader
        {
            change_leader(p, to);
        }
        Ok(CommandResult::Ok)
    }

    /// The checks of [`Self::reassign_partition`], for a broker to answer before submitting.
    pub fn validate_reassignment(&self, topic: &str, partition: i32, replicas: &[BrokerId]) -> Result<(), Rejection> {
        let t = self.topics.get(topic).ok_or_else(|| Rejection::UnknownTopic(topic.to_string()))?;
        if usize::try_from(partition).ok().and_then(|i| t.partitions.get(i)).is_none() {
            return Err(Rejection::UnknownPartition { topic: topic.to_string(), partition });
        }
        self.validate_replica_list(replicas, None)
    }

    /// Kafka's checks of the `assignments` of a CreateTopics topic (one replica list per
    /// partition, in partition order), with its messages (`ReplicationControlManager`).
    pub fn validate_topic_assignments(&self, assignments: &[Vec<BrokerId>]) -> Result<(), Rejection> {
        let mut replication_factor = None;
        for (partition, replicas) in assignments.iter().enumerate() {
            self.validate_replica_list(replicas, replication_factor)?;
            replication_factor = Some(replicas.len());
            self.require_a_live_replica(replicas, partition)?;
        }
        Ok(())
    }

    /// Kafka's checks of the `assignments` of a CreatePartitions topic growing to
    /// `total_count`: one list per new partition, each as long as the topic's existing ones.
    pub fn validate_new_partition_assignments(
        &self,
        name: &str,
        total_count: i32,
        assignments: &[Vec<BrokerId>],
    ) -> Result<(), Rejection> {
        let t = self.topics.get(name).ok_or_else(|| Rejection::UnknownTopic(name.to_string()))?;
        let current = t.partitions.len();
        let additional = usize::try_from(total_count).unwrap_or(0).saturating_sub(current);
        if assignments.len() != additional {
            return Err(Rejection::InvalidReplicaAssignment(format!(
                "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                assignments.len()
            )));
        }
        let replication_factor = t.partitions.first().map(replication_factor);
        for (i, replicas) in assignments.iter().enumerate() {
            self.validate_replica_list(replicas, replication_factor)?;
            self.require_a_live_replica(replicas, current + i)?;
        }
        Ok(())
    }

    /// `validateManualPartitionAssignment`: non-empty, registered brokers, no repeats, the
    /// same length as the other lists.
    fn validate_replica_list(&self, replicas: &[BrokerId], replication_factor: Option<usize>) -> Result<(), Rejection> {
        let invalid = |m: String| Err(Rejection::InvalidReplicaAssignment(m));
        if replicas.is_empty() {
            return invalid("The manual partition assignment includes an empty replica list.".into());
        }
        let mut sorted = replicas.to_vec();
        sorted.sort_unstable();
        for (i, b) in sorted.iter().enumerate() {
            if !self.brokers.contains_key(b) {
                return invalid(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                ));
            }
            if i > 0 && sorted[i - 1] == *b {
                return invalid(format!("The manual partition assignment includes the broker {b} more than once."));
            }
        }
        match replication_factor {
            Some(rf) if rf != sorted.len() => invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent \
                 with previous partitions, which have {rf} replica(s).",
                sorted.len()
            )),
            _ => Ok(()),
        }
    }

    fn require_a_live_replica(&self, replicas: &[BrokerId], partition: usize) -> Result<(), Rejection> {
        if replicas.iter().any(|b| self.is_live(*b)) {
            return Ok(());
        }
        Err(Rejection::InvalidReplicaAssignment(format!(
            "All brokers specified in the manual partition assignment for partition {partition} are fenced or in \
             controlled shutdown."
        )))
    }

    /// The replicas and in-sync replicas Metadata reports for `p`: its manual replica list, or
    /// just its leader (a factor of 1: the data is in object storage, not on brokers). The
    /// in-sync ones are the live listed brokers: any of them can lead without losing data.
    ///
    /// With racks (any live broker has one), a partition without a manual list reports the
    /// leader first and then every other live broker, all in sync (RFC 0005): every broker
    /// reads the same committed log from object storage, and clients accept a KIP-392 preferred
    /// read replica only among a partition's replicas (Java's `Cluster.nodeIfOnline`).
    pub fn reported_replicas(&self, p: &PartitionState) -> (Vec<BrokerId>, Vec<BrokerId>) {
        if p.replicas.is_empty() && p.leader >= 0 && self.racks_given() {
            let mut all = vec![p.leader];
            all.extend(self.live_brokers().into_iter().filter(|b| *b != p.leader));
            return (all.clone(), all);
        }
        if p.replicas.is_empty() {
            return (vec![p.leader], vec![p.leader]);
        }
        let mut isr: Vec<BrokerId> = p.replicas.iter().copied().filter(|b| self.is_live(*b)).collect();
        if p.leader >= 0 && !isr.contains(&p.leader) {
            isr.insert(0, p.leader);
        }
        (p.replicas.clone(), isr)
    }

    /// Gives leaderless partitions and shards a leader, then evens out leader counts (at most one
    /// apart). Bounded: every move lowers the spread; one pass over the partitions plus
    /// O(live brokers) per move.
    pub(crate) fn rebalance(&mut self) {
        let live = self.live_brokers();
        if live.is_empty() {
            return;
        }
        // Leaderless (or led by a fenced broker, which cannot happen but is cheap to repair).
        let live_set: std::collections::BTreeSet<BrokerId> = live.iter().copied().collect();
        self.reassign_partitions(|leader| !live_set.contains(&leader));
        // Manually assigned partitions go back to their preferred replica.
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut().filter(|p| !p.replicas.is_empty()) {
                if let Some(to) = preferred_leader(&p.replicas, p.leader, |b| live_set.contains(&b))
                    && to != p.leader
                {
                    change_leader(p, to);
                }
            }
        }
        // Partitions each live broker leads, in (topic name, index) order: the movable ones
        // (placed by Skiff) listed, the manually assigned ones only counted.
        let mut led: BTreeMap<BrokerId, Vec<(String, usize)>> = live.iter().map(|b| (*b, Vec::new())).collect();
        let mut pinned: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.is_empty() {
                    if let Some(n) = pinned.get_mut(&p.leader) {
                        *n += 1;
                    }
                } else if let Some(v) = led.get_mut(&p.leader) {
                    v.push((name.clone(), i));
                }
            }
        }
        // A busiest broker that leads only pinned partitions ends the evening out.
        let busiest = |led: &BTreeMap<BrokerId, Vec<(String, usize)>>| {
            let count = |b: &BrokerId, v: &Vec<(String, usize)>| v.len() + pinned.get(b).copied().unwrap_or(0);
            let max = led.iter().max_by_key(|(b, v)| (count(b, v), std::cmp::Reverse(**b)))?;
            let min = led.iter().min_by_key(|(b, v)| (count(b, v), **b))?;
            (count(max.0, max.1) > count(min.0, min.1) + 1).then_some((*max.0, *min.0))
        };
        while let Some((max_b, min_b)) = busiest(&led) {
            // Move the last partition (in name, index order) the busiest broker leads.
            let Some((name, i)) = led.get_mut(&max_b).and_then(Vec::pop) else { break };
            if let Some(p) = self.topics.get_mut(&name).and_then(|t| t.partitions.get_mut(i)) {
                change_leader(p, min_b);
            }
            if let Some(v) = led.get_mut(&min_b) {
                v.push((name, i));
            }
        }
        // Coordinator shards of both kinds (group, transaction; RFC 0004 §1): each kind all
        // assigned, then evened out the same way, independently of the other.
        for shards in [&mut self.groups.shards, &mut self.transactions.shards] {
            place_shards(shards, &live);
        }
    }
}

/// The live broker holding the fewest shards of this kind (then the lowest id).
fn pick_coordinator(shards: &BTreeMap<u32, ShardAssignment>, live: &[BrokerId]) -> Option<BrokerId> {
    let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
    for s in shards.values() {
        if let Some(n) = load.get_mut(&s.broker_id) {
            *n += 1;
        }
    }
    live.iter().copied().min_by_key(|b| (load[b], *b))
}

/// Gives every shard of one kind a live owner, then evens out the counts (at most one apart);
/// every move bumps the shard's epoch. `live` is not empty.
fn place_shards(shards: &mut BTreeMap<u32, ShardAssignment>, live: &[BrokerId]) {
    for shard in 0..SHARD_COUNT {
        let owner = shards.get(&shard).map(|s| s.broker_id);
        if owner.is_none_or(|b| !live.contains(&b)) {
            let to = pick_coordinator(shards, live).unwrap_or(NO_LEADER);
            move_shard(shards, shard, to);
        }
    }
    for _ in 0..SHARD_COUNT {
        let mut load: BTreeMap<BrokerId, usize> = live.iter().map(|b| (*b, 0)).collect();
        for s in shards.values() {
            if let Some(n) = load.get_mut(&s.broker_id) {
                *n += 1;
            }
        }
        let Some((&max_b, &max)) = load.iter().max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b))) else { break };
        let Some((&min_b, &min)) = load.iter().min_by_key(|(b, n)| (**n, **b)) else { break };
        if max <= min + 1 {
            break;
        }
        let Some(shard) = shards.iter().rev().find(|(_, s)| s.broker_id == max_b).map(|(k, _)| *k) else {
            break;
        };
        move_shard(shards, shard, min_b);
    }
}

/// Leader counts of the live brokers and their racks, computed once per placement operation
/// and updated as partitions are placed.
struct Loads {
    /// Partitions led, per live broker.
    led: BTreeMap<BrokerId, usize>,
    /// Records retained in the partitions each live broker leads.
    records: BTreeMap<BrokerId, i64>,
    rack: BTreeMap<BrokerId, Option<String>>,
    racks_given: bool,
}

impl Loads {
    fn new(state: &MetadataState) -> Self {
        let mut led: BTreeMap<BrokerId, usize> = BTreeMap::new();
        let mut rack = BTreeMap::new();
        for b in state.brokers.values().filter(|b| !b.fenced) {
            led.insert(b.broker_id, 0);
            rack.insert(b.broker_id, b.rack.clone());
        }
        let mut records: BTreeMap<BrokerId, i64> = led.keys().map(|b| (*b, 0)).collect();
        for t in state.topics.values() {
            for p in &t.partitions {
                if let Some(n) = led.get_mut(&p.leader) {
                    *n += 1;
                }
                if let Some(r) = records.get_mut(&p.leader) {
                    *r = r.saturating_add(retained(p));
                }
            }
        }
        let racks_given = rack.values().any(Option::is_some);
        Self { led, records, rack, racks_given }
    }

    /// Partitions of topic `t` per rack of their (live) leader.
    fn topic_on_rack(&self, t: &TopicState) -> BTreeMap<Option<String>, usize> {
        let mut out = BTreeMap::new();
        if self.racks_given {
            for p in &t.partitions {
                if let Some(r) = self.rack.get(&p.leader) {
                    *out.entry(r.clone()).or_default() += 1;
                }
            }
        }
        out
    }

    /// The live broker with the fewest of this topic's partitions on its rack (racks given),
    /// then the fewest partitions, then the fewest retained records, then the lowest id.
    fn pick(&self, on_rack: &BTreeMap<Option<String>, usize>) -> Option<BrokerId> {
        self.led
            .iter()
            .min_by_key(|(b, n)| {
                let rack_load = if self.racks_given {
                    self.rack.get(b).and_then(|r| on_rack.get(r)).copied().unwrap_or(0)
                } else {
                    0
                };
                (rack_load, **n, self.records.get(b).copied().unwrap_or(0), **b)
            })
            .map(|(b, _)| *b)
    }

    fn is_live(&self, b: BrokerId) -> bool {
        self.led.contains_key(&b)
    }

    fn placed(&mut self, b: BrokerId, on_rack: &mut BTreeMap<Option<String>, usize>, records: i64) {
        if let Some(n) = self.led.get_mut(&b) {
            *n += 1;
            if let Some(r) = self.records.get_mut(&b) {
                *r = r.saturating_add(records);
            }
            if self.racks_given
                && let Some(r) = self.rack.get(&b)
            {
                *on_rack.entry(r.clone()).or_default() += 1;
            }
        }
    }
}

/// Who should lead a partition with manual replica list `replicas` (preferred first) now led
/// by `current`: the preferred replica if live, else `current` if it is a live listed broker
/// (Kafka only moves a valid leader to the preferred replica), else the first live listed one.
/// `None`: no list, or no listed broker is live (placement picks).
fn preferred_leader(replicas: &[BrokerId], current: BrokerId, is_live: impl Fn(BrokerId) -> bool) -> Option<BrokerId> {
    let first = *replicas.first()?;
    if is_live(first) {
        return Some(first);
    }
    if is_live(current) && replicas.contains(&current) {
        return Some(current);
    }
    replicas.iter().copied().find(|b| is_live(*b))
}

/// The replication factor Kafka tools see: the manual list's length, else 1.
fn replication_factor(p: &PartitionState) -> usize {
    p.replicas.len().max(1)
}

/// Records a partition retains: its load proxy.
fn retained(p: &PartitionState) -> i64 {
    (p.end_offset - p.log_start_offset).max(0)
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
#[allow(clippy::disallowed_methods)] // a performance bound measured in real time
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
            listeners: Vec::new(),
        })
    }

    fn topic(s: &mut MetadataState, name: &str, partitions: i32) {
        let r = s.apply(&Command::CreateTopic(CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(name.bytes().fold(partitions as u128, |h, b| h * 131 + u128::from(b))),
            partitions,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
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

    /// Transaction coordinator shards (RFC 0004 §1) are placed, evened out, moved on fencing and
    /// re-epoched on re-registration exactly like group shards, independently of them.
    #[test]
    fn transaction_shards_are_placed_and_moved_like_group_shards() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, None));
        let txn = |s: &MetadataState| s.transactions.shards.clone();
        assert_eq!(txn(&s).len(), SHARD_COUNT as usize);
        assert!(txn(&s).values().all(|a| a.broker_id == 1 && a.epoch == 1));
        for id in 2..=3 {
            s.apply(&reg(id, 1, None));
        }
        let count = |s: &MetadataState, b: BrokerId| txn(s).values().filter(|a| a.broker_id == b).count();
        let counts: Vec<usize> = (1..=3).map(|b| count(&s, b)).collect();
        assert!(counts.iter().max() <= Some(&(counts.iter().min().copied().unwrap_or(0) + 1)), "{counts:?}");
        let before = txn(&s);
        s.apply(&fence(2, 1));
        for (shard, a) in txn(&s) {
            let was = &before[&shard];
            if was.broker_id == 2 {
                assert!(a.broker_id != 2 && a.epoch == was.epoch + 1, "moved with a new epoch");
            } else {
                assert_eq!(&a, was, "others stay");
            }
        }
        // A new process of broker 1: every shard it holds gets a new epoch (its old writes fenced).
        let before = txn(&s);
        s.apply(&reg(1, 2, None));
        for (shard, a) in txn(&s).iter().filter(|(_, a)| a.broker_id == 1) {
            assert!(a.epoch > before[shard].epoch);
        }
        // Group shards are placed on their own.
        assert_eq!(s.groups.shards.len(), SHARD_COUNT as usize);
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
    fn placement_scales_linearly() {
        // 3 brokers, 20 topics × 1,000 partitions, then fence and re-register one broker:
        // quadratic placement took seconds here (found by tests/cluster.rs).
        let mut s = MetadataState::new("c".into());
        for id in 1..=3 {
            s.apply(&reg(id, 1, None));
        }
        let started = std::time::Instant::now();
        for i in 0..20 {
            topic(&mut s, &format!("big{i:02}"), 1000);
        }
        s.apply(&fence(2, 1));
        s.apply(&reg(2, 2, None));
        let l = leaders(&s);
        assert!(l.values().max().copied().unwrap_or(0) - l.values().min().copied().unwrap_or(0) <= 1, "{l:?}");
        // Generous bound (debug build, shared machine); the quadratic version needed minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    }

    #[test]
    fn ties_go_to_the_least_loaded_broker() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, None));
        s.apply(&reg(2, 1, None));
        topic(&mut s, "busy", 2);
        // Broker 1 leads busy-0; give it many records.
        let p0 = &mut s.topics.get_mut("busy").expect("topic").partitions[0];
        assert_eq!(p0.leader, 1);
        p0.end_offset = 1_000_000;
        // Counts tie (1 each): the next partition goes to the broker with fewer records.
        topic(&mut s, "next", 1);
        assert_eq!(s.topics["next"].partitions[0].leader, 2);
    }

    fn leaders_of(s: &MetadataState, topic: &str) -> Vec<BrokerId> {
        s.topics[topic].partitions.iter().map(|p| p.leader).collect()
    }

    fn refused(r: CommandResult, message: &str) {
        match r {
            CommandResult::Rejected(Rejection::InvalidReplicaAssignment(m)) => assert!(m.contains(message), "{m}"),
            other => panic!("expected INVALID_REPLICA_ASSIGNMENT ({message}), got {other:?}"),
        }
    }

    #[test]
    fn only_a_fenced_broker_is_unregistered() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, None));
        s.apply(&reg(2, 1, None));
        let unregister = |broker_id| Command::UnregisterBroker { broker_id };
        assert_eq!(s.apply(&unregister(9)), CommandResult::Rejected(Rejection::BrokerNotRegistered(9)));
        assert_eq!(s.apply(&unregister(2)), CommandResult::Rejected(Rejection::BrokerStillLive(2)));
        s.apply(&fence(2, 1));
        assert_eq!(s.apply(&unregister(2)), CommandResult::Ok);
        assert!(!s.brokers.contains_key(&2));
        assert_eq!(s.apply(&unregister(2)), CommandResult::Rejected(Rejection::BrokerNotRegistered(2)));
        // It may come back later under the same id.
        s.apply(&reg(2, 2, None));
        assert!(s.is_live(2));
    }

    #[test]
    fn a_reassignment_replaces_the_list_and_moves_leadership_at_once() {
        let mut s = MetadataState::new("c".into());
        for id in 1..=2 {
            s.apply(&reg(id, 1, None));
        }
        topic(&mut s, "r", 1);
        let before = s.topics["r"].partitions[0].clone();
        let other = if before.leader == 1 { 2 } else { 1 };
        let reassign =
            |replicas: Vec<BrokerId>| Command::ReassignPartition { topic: "r".into(), partition: 0, replicas };
        refused(s.apply(&reassign(vec![7])), "includes broker 7, but no such broker is registered.");
        assert!(matches!(
            s.apply(&Command::ReassignPartition { topic: "r".into(), partition: 3, replicas: vec![1] }),
            CommandResult::Rejected(Rejection::UnknownPartition { .. })
        ));
        assert_eq!(s.topics["r"].partitions[0], before, "refusals change nothing");
        assert_eq!(s.apply(&reassign(vec![other, before.leader])), CommandResult::Ok);
        let p = &s.topics["r"].partitions[0];
        assert_eq!(
            (p.leader, p.leader_epoch, p.replicas.clone()),
            (other, before.leader_epoch + 1, vec![other, before.leader])
        );
        // Evening out never moves it back: it is pinned to its preferred replica.
        s.apply(&reg(3, 1, None));
        assert_eq!(s.topics["r"].partitions[0].leader, other);
    }

    #[test]
    fn manual_assignments_are_led_by_the_preferred_replica() {
        let mut s = MetadataState::new("c".into());
        for id in 1..=3 {
            s.apply(&reg(id, 1, None));
        }
        let create = |assignments: Vec<Vec<BrokerId>>| {
            Command::CreateTopic(CreateTopic {
                name: "m".into(),
                topic_id: Uuid::from_u128(5),
                partitions: assignments.len() as i32,
                configs: BTreeMap::new(),
                assignments,
            })
        };
        refused(s.apply(&create(vec![vec![3, 7], vec![1, 2]])), "includes broker 7, but no such broker is registered.");
        refused(s.apply(&create(vec![vec![3, 3], vec![1, 2]])), "includes the broker 3 more than once.");
        refused(
            s.apply(&create(vec![vec![3, 1], vec![1]])),
            "a partition with 1 replica(s), but this is not consistent with previous partitions, which have 2 replica(s).",
        );
        refused(s.apply(&create(vec![vec![], vec![1]])), "includes an empty replica list.");
        assert!(s.topics.is_empty(), "refused creations change nothing");
        // Placement alone would give 1 and 2: the first listed broker leads.
        assert!(matches!(s.apply(&create(vec![vec![3, 1], vec![3, 2]])), CommandResult::TopicCreated { .. }));
        assert_eq!(leaders_of(&s, "m"), vec![3, 3]);
        assert_eq!(s.reported_replicas(&s.topics["m"].partitions[0]), (vec![3, 1], vec![3, 1]));
        // Evening out leader counts does not move them.
        s.apply(&reg(4, 1, None));
        assert_eq!(leaders_of(&s, "m"), vec![3, 3]);
        // The preferred replica goes: the next listed one leads; it comes back: it leads again.
        s.apply(&fence(3, 1));
        assert_eq!(leaders_of(&s, "m"), vec![1, 2]);
        assert_eq!(s.reported_replicas(&s.topics["m"].partitions[0]), (vec![3, 1], vec![1]));
        s.apply(&reg(3, 2, None));
        assert_eq!(leaders_of(&s, "m"), vec![3, 3]);
        // CreatePartitions: one list per new partition, as long as the existing ones.
        let grow = |total_count: i32, assignments: Vec<Vec<BrokerId>>| Command::CreatePartitions {
            name: "m".into(),
            total_count,
            assignments,
        };
        refused(
            s.apply(&grow(3, vec![vec![2, 1], vec![1, 2]])),
            "Attempted to add 1 additional partition(s), but only 2 assignment(s) were specified.",
        );
        refused(s.apply(&grow(3, vec![vec![2]])), "not consistent with previous partitions, which have 2 replica(s).");
        assert_eq!(s.apply(&grow(3, vec![vec![2, 1]])), CommandResult::Ok);
        assert_eq!(leaders_of(&s, "m"), vec![3, 3, 2]);
        s.apply(&fence(1, 1));
        s.apply(&fence(2, 1));
        refused(s.apply(&grow(4, vec![vec![1, 2]])), "for partition 3 are fenced or in controlled shutdown.");
        // No listed broker live: any live broker leads (the data is in object storage).
        assert!(s.is_live(leaders_of(&s, "m")[2]));
        s.apply(&fence(3, 2));
        assert_eq!(leaders_of(&s, "m"), vec![4, 4, 4]);
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

    #[test]
    fn with_racks_every_live_broker_is_a_reported_replica() {
        let mut s = MetadataState::new("c".into());
        s.apply(&reg(1, 1, None));
        s.apply(&reg(2, 1, None));
        topic(&mut s, "t", 1);
        let leader = s.topics["t"].partitions[0].leader;
        assert_eq!(s.reported_replicas(&s.topics["t"].partitions[0]), (vec![leader], vec![leader]), "no racks");
        s.apply(&reg(3, 1, Some("b")));
        let (replicas, isr) = s.reported_replicas(&s.topics["t"].partitions[0]);
        assert_eq!(replicas[0], leader, "the leader first");
        assert_eq!(replicas.iter().copied().collect::<std::collections::BTreeSet<_>>(), [1, 2, 3].into());
        assert_eq!(isr, replicas);
    }
}
