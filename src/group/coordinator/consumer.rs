//! Consumer-protocol (KIP-848) groups in the coordinator task: ConsumerGroupHeartbeat,
//! ConsumerGroupDescribe, and the member checks of OffsetCommit / OffsetFetch, next to the
//! classic groups of the same task (one timer heap, one job queue).
//!
//! A group id is either classic or consumer: a live one of each kind never coexists. A consumer
//! heartbeat takes over an empty classic group and a classic JoinGroup an empty consumer group
//! (Kafka's conversion of empty groups); otherwise the other protocol gets GROUP_ID_NOT_FOUND
//! (heartbeat) or INCONSISTENT_GROUP_PROTOCOL (JoinGroup).
//!
//! Persistence: every change of a group becomes a [`ConsumerGroupUpdate`] stored through the
//! controller. Updates of a group are stored one at a time, in order; those that arrive while
//! one is in flight are merged into one. A heartbeat is answered only once every update issued
//! up to its answer is applied, so a member never acts on state a new coordinator would not
//! have. If a store fails (the shard moved, the controller is unavailable) the group is dropped
//! from memory, its waiting heartbeats get NOT_COORDINATOR, and it is reloaded from the stored
//! state when next touched.

use std::collections::{HashMap, VecDeque};

use skiff_controller::ControllerError;
use skiff_controller::image::MetadataImage;
use skiff_controller::intent::{ConsumerGroupUpdate, GroupOp, SubscribedTopic};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Driver, GroupCoordinator};
use crate::broker::internal_topics;
use crate::group::consumer::{
    ConsumerGroup, ConsumerGroupDescription, Failure, HeartbeatRequest, HeartbeatResponse, TopicImage,
};
use crate::group::state::{Group, GroupError, GroupState};

/// The consumer-protocol half of the coordinator's state.
#[derive(Default)]
pub(super) struct ConsumerGroups {
    pub(super) groups: HashMap<String, ConsumerGroup>,
    /// The shard epoch each in-memory group was loaded (or created) at: a group whose shard
    /// changed hands since is reloaded from the stored state.
    loaded_at: HashMap<String, i32>,
    pipelines: HashMap<String, Pipeline>,
    /// Stores in flight: (group, pipeline incarnation, version, applied).
    pub(super) stores: JoinSet<(String, u64, u64, bool)>,
    incarnations: u64,
}

impl ConsumerGroups {
    /// The shard epoch the in-memory consumer group `group_id` was loaded at, if it is loaded.
    pub(super) fn loaded_at(&self, group_id: &str) -> Option<i32> {
        self.loaded_at.get(group_id).copied()
    }
}

/// The stores of one group's updates, and the answers waiting for them.
struct Pipeline {
    /// Distinguishes this pipeline from one of an earlier, dropped copy of the group.
    incarnation: u64,
    /// Version of the newest update handed out (they count 1, 2, ...).
    issued: u64,
    /// Version of the newest update applied.
    applied: u64,
    in_flight: bool,
    /// Updates issued while one was in flight, merged, with the newest version.
    queued: Option<(u64, ConsumerGroupUpdate)>,
    /// Answers held until their version is applied, in version order.
    waiting: VecDeque<(u64, HeartbeatResponse, oneshot::Sender<HeartbeatResponse>)>,
}

/// Topics as the controller's metadata has them.
struct MetadataTopics<'a>(&'a MetadataImage);

impl TopicImage for MetadataTopics<'_> {
    fn topic(&self, name: &str) -> Option<SubscribedTopic> {
        let t = self.0.topic(name)?;
        Some(SubscribedTopic { topic_id: t.id(), partitions: t.partition_count() as i32 })
    }
    fn for_each_topic(&self, f: &mut dyn FnMut(&str, SubscribedTopic)) {
        // Regex subscriptions never reach internal topics: they are not in `topics`, and a
        // regular topic stored under an internal name (metadata from before internal topics
        // existed) is hidden, as Metadata hides it.
        for t in self.0.topics().filter(|t| !internal_topics::is_internal(t.name())) {
            f(t.name(), SubscribedTopic { topic_id: t.id(), partitions: t.partition_count() as i32 });
        }
    }
}

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat (already validated): the answer, once what it reflects is stored.
    pub async fn consumer_heartbeat(
        &self,
        group_id: String,
        req: HeartbeatRequest,
    ) -> oneshot::Receiver<HeartbeatResponse> {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Box::new(move |d: &mut Driver| d.consumer_heartbeat(group_id, req, tx))).await;
        rx
    }

    /// ConsumerGroupDescribe of one group.
    pub async fn consumer_describe(&self, group_id: String) -> Result<ConsumerGroupDescription, Failure> {
        self.call(move |d| {
            let now = d.now();
            if let Some(g) = d.consumer_group(&group_id, now) {
                return Ok(g.describe());
            }
            match d.existing(&group_id, now) {
                Some(g) if g.state() != GroupState::Dead => {
                    Err((GroupError::GroupIdNotFound, format!("Group {group_id} is not a consumer group.")))
                }
                _ => Err((GroupError::GroupIdNotFound, format!("Group {group_id} not found."))),
            }
        })
        .await
        .unwrap_or_else(|| Err((GroupError::NotCoordinator, "The coordinator is not available.".into())))
    }

    /// OffsetCommit: may these offsets be written? A group-level error, or one verdict per
    /// partition (`partitions` as (topic, partition) in request order). Classic groups check
    /// member and generation; consumer groups member and member epoch (per partition for an
    /// older epoch, as Kafka 4.4 does).
    pub async fn check_offset_commit(
        &self,
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation_or_epoch: i32,
        version: i16,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        self.call(move |d| {
            let now = d.now();
            let metadata = d.metadata.clone();
            if let Some(g) = d.consumer_group(&group_id, now) {
                let ids: Vec<Option<(Uuid, i32)>> =
                    metadata.read(|m| partitions.iter().map(|(t, p)| m.topic(t).map(|t| (t.id(), *p))).collect());
                return g.validate_commit(&member_id, generation_or_epoch, version, &ids);
            }
            let all = |r: Result<(), GroupError>| r.map(|()| vec![None; partitions.len()]);
            match d.existing(&group_id, now) {
                Some(g) => {
                    let r = g.check_commit(now, &member_id, instance_id.as_deref(), generation_or_epoch);
                    d.after(&group_id, now);
                    all(r)
                }
                // Kafka: a commit to an unknown group is allowed only outside group management.
                None if generation_or_epoch < 0 && member_id.is_empty() && instance_id.is_none() => all(Ok(())),
                None => Err(GroupError::IllegalGeneration),
            }
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// TxnOffsetCommit's member check (KIP-447; Kafka's `validateTransactionalOffsetCommit`):
    /// as OffsetCommit's, but a request naming no member and no generation (v0-2, or a producer
    /// outside group management) is accepted, an unknown group is accepted only without a
    /// generation, and a consumer group's stale member epoch is ILLEGAL_GENERATION.
    pub async fn check_txn_offset_commit(
        &self,
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation_or_epoch: i32,
    ) -> Result<(), GroupError> {
        self.call(move |d| {
            let now = d.now();
            let anonymous = generation_or_epoch < 0 && member_id.is_empty() && instance_id.is_none();
            if let Some(g) = d.consumer_group(&group_id, now) {
                if anonymous {
                    return Ok(());
                }
                // One unnamed partition: an epoch behind the member's is then refused too (the
                // per-partition leniency of OffsetCommit does not apply to a transaction).
                return match g.validate_commit(&member_id, generation_or_epoch, 9, &[None]) {
                    Err(GroupError::StaleMemberEpoch) => Err(GroupError::IllegalGeneration),
                    Ok(v) if v.iter().any(Option::is_some) => Err(GroupError::IllegalGeneration),
                    other => other.map(|_| ()),
                };
            }
            match d.existing(&group_id, now) {
                Some(g) => {
                    let r = g.check_txn_commit(now, &member_id, instance_id.as_deref(), generation_or_epoch);
                    d.after(&group_id, now);
                    r
                }
                None if generation_or_epoch < 0 => Ok(()),
                None => Err(GroupError::IllegalGeneration),
            }
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// OffsetFetch v9+: a consumer group checks the member id and epoch; other groups do not.
    pub async fn check_offset_fetch(
        &self,
        group_id: String,
        member_id: Option<String>,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        self.call(move |d| {
            let now = d.now();
            match d.consumer_group(&group_id, now) {
                Some(g) => g.validate_fetch(member_id.as_deref(), member_epoch),
                None => Ok(()),
            }
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }
}

impl Driver {
    /// The consumer group `group_id`, if the group is one: in memory, or stored as one and not
    /// live as a classic group (loaded on first use).
    pub(super) fn consumer_group(&mut self, group_id: &str, now: u64) -> Option<&mut ConsumerGroup> {
        let epoch = self.forget_if_moved(group_id);
        if self.consumer.loaded_at.get(group_id).is_some_and(|e| *e != epoch) {
            info!(
                group = group_id,
                epoch, "coordinator shard changed hands since the consumer group was loaded; reloading it"
            );
            self.forget_consumer_group(group_id, "The coordinator moved.");
        }
        if !self.consumer.groups.contains_key(group_id) {
            if self.groups.contains_key(group_id) {
                return None;
            }
            let stored = self.metadata.read(|m| m.consumer_group(group_id).cloned())?;
            let g = ConsumerGroup::load(group_id, self.settings.consumer, &stored, now);
            info!(group = %group_id, members = g.member_count(), epoch = g.group_epoch(), "loaded consumer group");
            self.consumer.groups.insert(group_id.to_string(), g);
            self.consumer.loaded_at.insert(group_id.to_string(), epoch);
            self.arm(group_id);
        }
        self.consumer.groups.get_mut(group_id)
    }

    /// Drops a consumer group from memory (it reloads from the stored state when next touched);
    /// heartbeats waiting for its stores get NOT_COORDINATOR.
    pub(super) fn forget_consumer_group(&mut self, group_id: &str, why: &str) {
        self.consumer.groups.remove(group_id);
        self.consumer.loaded_at.remove(group_id);
        if let Some(p) = self.consumer.pipelines.remove(group_id) {
            for (_, _, tx) in p.waiting {
                let _ = tx.send(HeartbeatResponse::error(GroupError::NotCoordinator, why));
            }
        }
    }

    /// Whether a classic JoinGroup may use `group_id`: yes if it is no consumer group, or an
    /// empty one (which is dropped: the group becomes classic).
    pub(super) fn release_empty_consumer_group(&mut self, group_id: &str, now: u64) -> bool {
        match self.consumer_group(group_id, now) {
            None => true,
            Some(g) if g.is_empty() => {
                // Stores still in flight finish and answer as usual; the classic membership
                // stored after the first rebalance replaces the consumer state.
                info!(group = %group_id, "converting the empty consumer group to a classic group");
                self.consumer.groups.remove(group_id);
                self.consumer.loaded_at.remove(group_id);
                // Live as classic from now on, whatever is still stored.
                let epoch = GroupCoordinator::coordinator_epoch(&self.metadata, group_id);
                self.groups.insert(group_id.to_string(), Group::new(group_id, self.settings));
                self.loaded_at.insert(group_id.to_string(), epoch);
                true
            }
            Some(_) => false,
        }
    }

    pub(super) fn consumer_deadline(&self, group_id: &str) -> Option<u64> {
        self.consumer.groups.get(group_id).and_then(ConsumerGroup::next_deadline)
    }

    /// Expires sessions and rebalance timeouts due by `now`, and stores what changed.
    pub(super) fn consumer_tick(&mut self, group_id: &str, now: u64) {
        let Some(g) = self.consumer.groups.get_mut(group_id) else { return };
        if g.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        g.tick(now);
        if let Some(update) = g.take_update() {
            self.consumer_persist(group_id, update);
        }
    }

    fn consumer_heartbeat(
        &mut self,
        group_id: String,
        req: HeartbeatRequest,
        reply: oneshot::Sender<HeartbeatResponse>,
    ) {
        let now = self.now();
        let joining = req.member_epoch == 0;
        if self.consumer_group(&group_id, now).is_none() {
            // A classic group: an empty one becomes a consumer group when a member joins.
            let classic = self.existing(&group_id, now).map(|g| g.state());
            let error = match classic {
                Some(GroupState::Empty) if joining => None,
                Some(GroupState::Dead) | None if joining => None,
                Some(GroupState::Dead) | None => Some(format!("Consumer group {group_id} not found.")),
                Some(_) => Some(format!("Group {group_id} is not a consumer group.")),
            };
            if let Some(message) = error {
                let _ = reply.send(HeartbeatResponse::error(GroupError::GroupIdNotFound, message));
                return;
            }
            if self.consumer.groups.contains_key(&group_id) {
                // `existing` found it stored as a consumer group after all (its shard moved).
            } else {
                if classic.is_some() {
                    info!(group = %group_id, "converting the empty classic group to a consumer group");
                    self.groups.remove(&group_id);
                    self.loaded_at.remove(&group_id);
                }
                let epoch = GroupCoordinator::coordinator_epoch(&self.metadata, &group_id);
                self.consumer.groups.insert(group_id.clone(), ConsumerGroup::new(&group_id, self.settings.consumer));
                self.consumer.loaded_at.insert(group_id.clone(), epoch);
            }
        }
        let fresh_id = self.ids.uuid().to_string();
        let Some(g) = self.consumer.groups.get_mut(&group_id) else { return };
        let response = self.metadata.read(|m| {
            // The group's own configs (a change applies from this heartbeat on).
            g.set_settings(crate::group::group_config::effective(
                self.settings.consumer,
                m.dynamic_configs().group(&group_id),
            ));
            g.heartbeat(now, &req, &MetadataTopics(m), &fresh_id)
        });
        if let Some(update) = g.take_update() {
            self.consumer_persist(&group_id, update);
        }
        let pending = self.consumer.pipelines.get_mut(&group_id).filter(|p| p.issued > p.applied);
        match pending {
            Some(p) if response.error.is_none() => p.waiting.push_back((p.issued, response, reply)),
            _ => {
                let _ = reply.send(response);
            }
        }
        self.arm(&group_id);
    }

    fn consumer_persist(&mut self, group_id: &str, update: ConsumerGroupUpdate) {
        let incarnations = &mut self.consumer.incarnations;
        let p = self.consumer.pipelines.entry(group_id.to_string()).or_insert_with(|| {
            *incarnations += 1;
            Pipeline {
                incarnation: *incarnations,
                issued: 0,
                applied: 0,
                in_flight: false,
                queued: None,
                waiting: VecDeque::new(),
            }
        });
        p.issued += 1;
        let version = p.issued;
        if p.in_flight {
            match &mut p.queued {
                Some((v, queued)) => {
                    queued.merge(update);
                    *v = version;
                }
                None => p.queued = Some((version, update)),
            }
            return;
        }
        p.in_flight = true;
        let incarnation = p.incarnation;
        self.spawn_consumer_store(group_id.to_string(), incarnation, version, update);
    }

    fn spawn_consumer_store(&mut self, group_id: String, incarnation: u64, version: u64, update: ConsumerGroupUpdate) {
        let controller = self.controller.clone();
        // The epoch the group was loaded at (see `Driver::spawn_store`).
        let epoch = self
            .consumer
            .loaded_at
            .get(&group_id)
            .copied()
            .unwrap_or_else(|| GroupCoordinator::coordinator_epoch(&self.metadata, &group_id));
        self.consumer.stores.spawn(async move {
            let ok = match controller.store_group(group_id.clone(), epoch, GroupOp::UpdateConsumerGroup(update)).await {
                Ok(()) => true,
                Err(ControllerError::Rejected(r)) => {
                    warn!(group = %group_id, "storing consumer group rejected: {r}");
                    false
                }
                Err(e) => {
                    warn!(group = %group_id, "storing consumer group failed: {e}");
                    false
                }
            };
            (group_id, incarnation, version, ok)
        });
    }

    /// A store finished: answer what it made durable and start the next, or drop the group.
    pub(super) fn consumer_stored(&mut self, group_id: String, incarnation: u64, version: u64, ok: bool) {
        let Some(p) = self.consumer.pipelines.get_mut(&group_id).filter(|p| p.incarnation == incarnation) else {
            return;
        };
        if !ok {
            // Memory is ahead of the stored state: forget the group; it reloads from what was
            // stored. Waiting members learn nothing they could act on.
            warn!(group = %group_id, "dropping the consumer group from memory after a failed store");
            self.forget_consumer_group(&group_id, "The group state could not be stored.");
            return;
        }
        p.applied = version;
        while p.waiting.front().is_some_and(|(v, _, _)| *v <= p.applied) {
            if let Some((_, response, tx)) = p.waiting.pop_front() {
                // Computed when its heartbeat came; what it says is now durable.
                let _ = tx.send(response);
            }
        }
        match p.queued.take() {
            Some((v, update)) => {
                let incarnation = p.incarnation;
                self.spawn_consumer_store(group_id, incarnation, v, update);
            }
            None => {
                p.in_flight = false;
                if p.waiting.is_empty() {
                    self.consumer.pipelines.remove(&group_id);
                }
            }
        }
    }
}
