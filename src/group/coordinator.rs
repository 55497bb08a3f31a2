//! The group coordinator task: owns every group this broker coordinates, drives their state
//! machines ([`super::state`]) with the clock, answers held requests, and persists through the
//! controller.
//!
//! One task, one timer: handlers send closures over a bounded channel (`QUEUE`); the task runs
//! each against its groups, then routes the resulting effects (held JoinGroup / SyncGroup
//! answers, membership to persist) and re-arms a single sleep at the earliest group deadline.
//! Deadlines live in a min-heap with lazy deletion, rebuilt when it holds more stale entries
//! than live groups, so it stays bounded.
//!
//! Persistence: a membership store runs as a child task (at most one per group at a time; a
//! newer snapshot queued behind it replaces an older queued one, so stores apply in order),
//! and its result comes back to the group (`Group::persisted`). Offsets are committed by the
//! OffsetCommit handler itself after [`GroupCoordinator::check_commit`].
//!
//! Groups are loaded lazily from the controller's metadata the first time they are touched
//! (membership → Stable/Empty), which is also how a coordinator taking over a shard will
//! rebuild them.
//!
//! Shutdown: the task stops on its token; held requests are dropped, and their handlers answer
//! NOT_COORDINATOR so clients look for the coordinator again.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use skiff_controller::intent::{GroupMembership, GroupOp};
use skiff_controller::{ControllerError, ControllerHandle, MetadataHandle};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::state::{
    Effect, Group, GroupError, GroupSettings, GroupState, JoinRequest, JoinResponse, MemberDescription, Outcome,
    SyncRequest, SyncResponse,
};
use crate::broker::{Clock, Ids};
use crate::supervisor::Supervisor;

mod consumer;

/// Requests queued for the coordinator task before handlers wait (back-pressure).
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce(&mut Driver) + Send>;

/// The handle handlers use. Cheap to clone.
#[derive(Clone)]
pub struct GroupCoordinator {
    jobs: mpsc::Sender<Job>,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name (classic: `GroupState::name`; consumer: `ConsumerGroupState::name`).
    pub state: &'static str,
    /// `classic` or `consumer` (ListGroups v5).
    pub group_type: &'static str,
}

impl GroupCoordinator {
    /// Starts the coordinator task (critical: every group waits on it); it runs until
    /// `shutdown`.
    pub fn start(
        settings: GroupSettings,
        controller: ControllerHandle,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn Ids>,
        supervisor: &Supervisor,
        shutdown: CancellationToken,
    ) -> (GroupCoordinator, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let driver = Driver {
            settings,
            metadata: controller.metadata(),
            controller,
            start: clock.now(),
            clock,
            ids,
            groups: HashMap::new(),
            loaded_at: HashMap::new(),
            held_joins: HashMap::new(),
            held_syncs: HashMap::new(),
            timers: BinaryHeap::new(),
            persisting: HashMap::new(),
            stores: JoinSet::new(),
            consumer: consumer::ConsumerGroups::default(),
        };
        let task = supervisor.spawn_critical("group-coordinator", driver.run(rx, shutdown));
        (GroupCoordinator { jobs }, task)
    }

    /// Runs `f` on the coordinator task and returns its result; `None` if it has stopped.
    async fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Driver) -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |d| {
            let _ = tx.send(f(d));
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }

    /// JoinGroup: the answer, possibly after the join phase completes (the receiver fails if
    /// the coordinator stops first).
    pub async fn join(&self, group_id: String, req: JoinRequest) -> oneshot::Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Box::new(move |d: &mut Driver| d.join(group_id, req, tx))).await;
        rx
    }

    /// SyncGroup: the assignment, once the leader's is persisted.
    pub async fn sync(&self, group_id: String, req: SyncRequest) -> oneshot::Receiver<SyncResponse> {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Box::new(move |d: &mut Driver| d.sync(group_id, req, tx))).await;
        rx
    }

    pub async fn heartbeat(
        &self,
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.call(move |d| {
            let now = d.now();
            let Some(g) = d.existing(&group_id, now) else { return Err(GroupError::UnknownMemberId) };
            let r = g.heartbeat(now, &member_id, instance_id.as_deref(), generation);
            d.after(&group_id, now);
            r
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// LeaveGroup: a group-level error, or one result per member.
    pub async fn leave(
        &self,
        group_id: String,
        members: Vec<(String, Option<String>)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.call(move |d| {
            let now = d.now();
            let Some(g) = d.existing(&group_id, now) else {
                return Ok(vec![Err(GroupError::UnknownMemberId); members.len()]);
            };
            let r = g.leave(now, &members);
            d.after(&group_id, now);
            r
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// DescribeGroups of one group; an unknown group is `Dead` with no members (as Kafka).
    pub async fn describe(&self, group_id: String) -> Result<GroupSummary, GroupError> {
        self.call(move |d| {
            let now = d.now();
            Ok(match d.existing(&group_id, now) {
                Some(g) => GroupSummary {
                    state: g.state(),
                    protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                    protocol: if g.state() == GroupState::Stable {
                        g.protocol().unwrap_or_default().to_string()
                    } else {
                        String::new()
                    },
                    members: g.describe(),
                },
                None => GroupSummary {
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: vec![],
                },
            })
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// ListGroups: every group this broker coordinates, live or only stored.
    pub async fn list(&self) -> Result<Vec<ListedGroup>, GroupError> {
        self.call(move |d| {
            let now = d.now();
            let stored: Vec<String> = d.metadata.read(|m| m.group_ids().map(str::to_string).collect());
            let mut ids: BTreeSet<String> = d.groups.keys().cloned().collect();
            ids.extend(d.consumer.groups.keys().cloned());
            ids.extend(stored);
            ids.into_iter()
                .filter_map(|id| {
                    if let Some(g) = d.consumer_group(&id, now) {
                        return Some(ListedGroup {
                            group_id: id.clone(),
                            protocol_type: "consumer".into(),
                            state: g.state().name(),
                            group_type: "consumer",
                        });
                    }
                    let g = d.existing(&id, now)?;
                    (g.state() != GroupState::Dead).then(|| ListedGroup {
                        group_id: id.clone(),
                        protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                        state: g.state().name(),
                        group_type: "classic",
                    })
                })
                .collect()
        })
        .await
        .ok_or(GroupError::NotCoordinator)
    }

    /// DeleteGroups, step 1: the group must exist and have no members; it is marked Dead so
    /// nobody joins while the deletion is stored.
    pub async fn begin_delete(&self, group_id: String) -> Result<(), GroupError> {
        self.call(move |d| {
            let now = d.now();
            if let Some(g) = d.consumer_group(&group_id, now) {
                // An empty consumer group is deleted by forgetting it (end_delete).
                return if g.is_empty() { Ok(()) } else { Err(GroupError::NonEmptyGroup) };
            }
            match d.existing(&group_id, now) {
                Some(g) if g.state() == GroupState::Dead => Err(GroupError::GroupIdNotFound),
                Some(g) => g.mark_dead(),
                None => Err(GroupError::GroupIdNotFound),
            }
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// DeleteGroups, step 2: forget the group (`stored`) or bring it back.
    pub async fn end_delete(&self, group_id: String, stored: bool) {
        self.call(move |d| {
            if stored {
                d.groups.remove(&group_id);
                d.forget_consumer_group(&group_id, "The group was deleted.");
            } else if let Some(g) = d.groups.get_mut(&group_id) {
                g.revive();
            }
        })
        .await;
    }

    /// OffsetDelete: `Ok(None)` if every offset may go (the group is empty), `Ok(Some(t))` if
    /// the offsets of topics `t` (subscribed by live consumers) must stay.
    pub async fn offset_delete_check(&self, group_id: String) -> Result<Option<BTreeSet<String>>, GroupError> {
        self.call(move |d| {
            let now = d.now();
            if let Some(g) = d.consumer_group(&group_id, now) {
                return Ok((!g.is_empty()).then(|| g.subscribed_topic_names()));
            }
            let Some(g) = d.existing(&group_id, now) else { return Err(GroupError::GroupIdNotFound) };
            match g.state() {
                GroupState::Dead => Err(GroupError::GroupIdNotFound),
                GroupState::Empty => Ok(None),
                _ => g.subscribed_topics().map(Some).ok_or(GroupError::NonEmptyGroup),
            }
        })
        .await
        .unwrap_or(Err(GroupError::NotCoordinator))
    }

    /// Whether `group_id` exists here (in memory or stored).
    pub async fn exists(&self, group_id: String) -> bool {
        self.call(move |d| {
            let now = d.now();
            d.consumer_group(&group_id, now).is_some()
                || d.existing(&group_id, now).is_some_and(|g| g.state() != GroupState::Dead)
        })
        .await
        .unwrap_or(false)
    }

    /// The coordinator epoch to stamp on commands for `group_id` (its shard's epoch).
    pub fn coordinator_epoch(metadata: &MetadataHandle, group_id: &str) -> i32 {
        metadata.read(|m| m.coordinator_epoch(group_id))
    }
}

/// The state owned by the coordinator task.
struct Driver {
    settings: GroupSettings,
    controller: ControllerHandle,
    metadata: MetadataHandle,
    clock: Arc<dyn Clock>,
    /// Member ids.
    ids: Arc<dyn Ids>,
    start: Instant,
    groups: HashMap<String, Group>,
    /// The shard epoch each in-memory group was loaded at; a group whose shard moved away and
    /// back (new epoch) is reloaded from the stored state, which its other coordinator changed.
    loaded_at: HashMap<String, i32>,
    held_joins: HashMap<(String, String), oneshot::Sender<JoinResponse>>,
    held_syncs: HashMap<(String, String), oneshot::Sender<SyncResponse>>,
    /// (deadline, group) min-heap; entries may be stale (checked against the group).
    timers: BinaryHeap<Reverse<(u64, String)>>,
    /// Groups with a membership store in flight, and the snapshot queued behind it.
    persisting: HashMap<String, Option<GroupMembership>>,
    stores: JoinSet<(String, i32, bool)>,
    /// Consumer-protocol (KIP-848) groups (`coordinator/consumer.rs`).
    consumer: consumer::ConsumerGroups,
}

impl Driver {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| self.start + std::time::Duration::from_millis(*t));
            tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => job(&mut self),
                    None => break,
                },
                Some(done) = self.stores.join_next(), if !self.stores.is_empty() => match done {
                    Ok((group_id, generation, ok)) => self.stored(group_id, generation, ok),
                    Err(e) => warn!("group store task failed: {e}"),
                },
                Some(done) = self.consumer.stores.join_next(), if !self.consumer.stores.is_empty() => match done {
                    Ok((group_id, incarnation, version, ok)) => self.consumer_stored(group_id, incarnation, version, ok),
                    Err(e) => warn!("consumer group store task failed: {e}"),
                },
                () = sleep_until(next.map(|at| self.clock.sleep_until(at))) => self.fire_timers(),
                () = shutdown.cancelled() => break,
            }
        }
        info!(
            groups = self.groups.len(),
            held = self.held_joins.len() + self.held_syncs.len(),
            "group coordinator stopping"
        );
        // Dropping the senders answers held requests with NOT_COORDINATOR.
        self.held_joins.clear();
        self.held_syncs.clear();
        self.consumer.groups.clear();
        while self.stores.join_next().await.is_some() {}
        while self.consumer.stores.join_next().await.is_some() {}
    }

    fn now(&self) -> u64 {
        (self.clock.now() - self.start).as_millis() as u64
    }

    /// The group if it exists in memory or in the stored metadata (loaded on first use).
    fn existing(&mut self, group_id: &str, now: u64) -> Option<&mut Group> {
        let epoch = self.forget_if_moved(group_id);
        // A consumer-protocol group is no classic group (coordinator/consumer.rs).
        if self.consumer_group(group_id, now).is_some() {
            return None;
        }
        if !self.groups.contains_key(group_id) {
            let stored =
                self.metadata.read(|m| m.group_exists(group_id).then(|| m.group_membership(group_id).cloned()))?;
            let g = match stored {
                Some(m) => Group::load(group_id, self.settings, &m, now),
                None => Group::new(group_id, self.settings),
            };
            self.groups.insert(group_id.to_string(), g);
            self.loaded_at.insert(group_id.to_string(), epoch);
            self.arm(group_id);
        }
        self.groups.get_mut(group_id)
    }

    /// Forgets the in-memory classic group if its shard changed hands since it was loaded (its
    /// other coordinator changed the stored state); returns the shard's current epoch.
    fn forget_if_moved(&mut self, group_id: &str) -> i32 {
        let epoch = GroupCoordinator::coordinator_epoch(&self.metadata, group_id);
        if self.loaded_at.get(group_id).is_some_and(|e| *e != epoch) {
            info!(group = group_id, epoch, "coordinator shard changed hands since the group was loaded; reloading it");
            self.groups.remove(group_id);
            self.loaded_at.remove(group_id);
            self.persisting.remove(group_id);
            // Dropping held requests answers them NOT_COORDINATOR.
            self.held_joins.retain(|(g, _), _| g != group_id);
            self.held_syncs.retain(|(g, _), _| g != group_id);
        }
        epoch
    }

    fn get_or_create(&mut self, group_id: &str, now: u64) -> &mut Group {
        if self.existing(group_id, now).is_none() {
            let epoch = GroupCoordinator::coordinator_epoch(&self.metadata, group_id);
            self.groups.insert(group_id.to_string(), Group::new(group_id, self.settings));
            self.loaded_at.insert(group_id.to_string(), epoch);
        }
        self.groups.get_mut(group_id).expect("just inserted")
    }

    fn join(&mut self, group_id: String, req: JoinRequest, reply: oneshot::Sender<JoinResponse>) {
        let now = self.now();
        if !self.release_empty_consumer_group(&group_id, now) {
            let _ = reply.send(JoinResponse::error(GroupError::InconsistentGroupProtocol, &req.member_id));
            return;
        }
        let suffix = self.ids.uuid().to_string();
        let outcome = self.get_or_create(&group_id, now).join(now, req, &suffix);
        match outcome {
            Outcome::Now(r) => {
                let _ = reply.send(r);
            }
            Outcome::Held { member_id } => {
                // A retried join replaces the earlier one (whose client gave up on it).
                self.held_joins.insert((group_id.clone(), member_id), reply);
            }
        }
        self.after(&group_id, now);
    }

    fn sync(&mut self, group_id: String, req: SyncRequest, reply: oneshot::Sender<SyncResponse>) {
        let now = self.now();
        let Some(g) = self.existing(&group_id, now) else {
            let _ = reply.send(SyncResponse::error(GroupError::UnknownMemberId));
            return;
        };
        match g.sync(now, req) {
            Outcome::Now(r) => {
                let _ = reply.send(r);
            }
            Outcome::Held { member_id } => {
                self.held_syncs.insert((group_id.clone(), member_id), reply);
            }
        }
        self.after(&group_id, now);
    }

    /// Routes a group's effects and re-arms its timer.
    fn after(&mut self, group_id: &str, now: u64) {
        let effects = self.groups.get_mut(group_id).map(Group::take_effects).unwrap_or_default();
        for e in effects {
            match e {
                Effect::Join { member_id, response } => {
                    if let Some(tx) = self.held_joins.remove(&(group_id.to_string(), member_id)) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Sync { member_id, response } => {
                    if let Some(tx) = self.held_syncs.remove(&(group_id.to_string(), member_id)) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Persist { mut membership, .. } => {
                    membership.timestamp_ms = self.clock.now_ms();
                    self.persist(group_id, membership);
                }
            }
        }
        let _ = now;
        self.arm(group_id);
    }

    fn arm(&mut self, group_id: &str) {
        let classic = self.groups.get(group_id).and_then(Group::next_deadline);
        if let Some(d) = classic.into_iter().chain(self.consumer_deadline(group_id)).min() {
            self.timers.push(Reverse((d, group_id.to_string())));
        }
        // Bound the heap: stale entries beyond a few per group trigger a rebuild.
        if self.timers.len() > 4 * (self.groups.len() + self.consumer.groups.len()) + 64 {
            let classic = self.groups.iter().filter_map(|(id, g)| g.next_deadline().map(|d| (d, id)));
            let consumer = self.consumer.groups.iter().filter_map(|(id, g)| g.next_deadline().map(|d| (d, id)));
            self.timers = classic.chain(consumer).map(|(d, id)| Reverse((d, id.clone()))).collect();
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        let mut due = BTreeSet::new();
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.timers.pop() {
                due.insert(id);
            }
        }
        for id in due {
            // A group whose shard moved to another broker since it was loaded is not ours to
            // tick: its members heartbeat elsewhere, so its sessions would run out here and the
            // emptied group be stored over the live one. Drop it (reloaded if the shard returns).
            let epoch = self.forget_if_moved(&id);
            if self.consumer.loaded_at(&id).is_some_and(|e| e != epoch) {
                self.forget_consumer_group(&id, "The coordinator moved.");
            }
            if let Some(g) = self.groups.get_mut(&id)
                && g.next_deadline().is_some_and(|d| d <= now)
            {
                g.tick(now);
            }
            self.consumer_tick(&id, now);
            self.after(&id, now);
        }
    }

    fn persist(&mut self, group_id: &str, membership: GroupMembership) {
        if let Some(queued) = self.persisting.get_mut(group_id) {
            *queued = Some(membership);
            return;
        }
        self.persisting.insert(group_id.to_string(), None);
        self.spawn_store(group_id.to_string(), membership);
    }

    fn spawn_store(&mut self, group_id: String, membership: GroupMembership) {
        let controller = self.controller.clone();
        // The epoch the group was loaded at, not the shard's current one: a copy that is no
        // longer the coordinator's must be refused (StaleCoordinator), never stored.
        let epoch = self
            .loaded_at
            .get(&group_id)
            .copied()
            .unwrap_or_else(|| GroupCoordinator::coordinator_epoch(&self.metadata, &group_id));
        let generation = membership.generation;
        self.stores.spawn(async move {
            let ok = match controller.store_group(group_id.clone(), epoch, GroupOp::StoreMembership(membership)).await {
                Ok(()) => true,
                Err(ControllerError::Rejected(r)) => {
                    warn!(group = %group_id, "storing group membership rejected: {r}");
                    false
                }
                Err(e) => {
                    warn!(group = %group_id, "storing group membership failed: {e}");
                    false
                }
            };
            (group_id, generation, ok)
        });
    }

    fn stored(&mut self, group_id: String, generation: i32, ok: bool) {
        let now = self.now();
        match self.persisting.get_mut(&group_id).and_then(Option::take) {
            Some(next) => self.spawn_store(group_id.clone(), next),
            None => {
                self.persisting.remove(&group_id);
            }
        }
        if let Some(g) = self.groups.get_mut(&group_id) {
            g.persisted(now, generation, ok);
        }
        self.after(&group_id, now);
    }
}

async fn sleep_until(at: Option<skiff_time::Sleep>) {
    match at {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}
