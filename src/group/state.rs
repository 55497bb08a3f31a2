//! One consumer group's classic-protocol state machine (JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup), as Kafka's `GroupCoordinator` + `GroupMetadata` define it.
//!
//! Pure: no I/O, no clock, no randomness. Time comes in as `now` (monotonic milliseconds) on
//! every call, fresh member ids come in from the caller, and everything that must happen
//! elsewhere comes out as [`Effect`]s: answers to held JoinGroup / SyncGroup requests and
//! membership snapshots to persist. The driver (`coordinator.rs`) owns the I/O.
//!
//! States: `Empty` → (a member joins) `PreparingRebalance` → (every known member rejoined, or
//! the rebalance timeout) `CompletingRebalance` → (the leader's SyncGroup is persisted)
//! `Stable`; a join with new metadata, a leave or an expired session goes back to
//! `PreparingRebalance`; `Dead` once deleted.
//!
//! Invariants:
//! * a JoinGroup that waits is answered exactly once: when the join phase completes, when its
//!   member is removed or fenced, or by the driver on shutdown;
//! * the generation increases by one each time a join phase completes;
//! * the join phase completes as soon as every member is waiting in JoinGroup and no member id
//!   handed out with MEMBER_ID_REQUIRED is outstanding, whatever started the rebalance (a new
//!   member, a leave, an expiry or a member's own rejoin); only an empty group's first
//!   rebalance waits out `group.initial.rebalance.delay.ms`;
//! * a `SyncGroup` is answered with the assignment only once the leader's assignment is
//!   persisted (`persisted`), so an acknowledged assignment survives a coordinator failover;
//! * a member's session expires only while it is neither waiting in JoinGroup nor SyncGroup;
//! * client-side assignors are opaque: subscription and assignment bytes pass through.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use skiff_controller::intent::{GroupMembership, StoredMember};

/// Coordinator-wide settings (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms` (Kafka default 6 000).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (Kafka default 1 800 000).
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (Kafka default 3 000): how long the first rebalance
    /// of an empty group waits for more members, so a starting fleet needs one rebalance, not
    /// one per member. Extended by each new member up to the rebalance timeout.
    pub initial_rebalance_delay_ms: u64,
    /// Consumer-protocol (KIP-848) groups: `group.consumer.*` (`consumer.rs`).
    pub consumer: super::consumer::ConsumerSettings,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            consumer: Default::default(),
        }
    }
}

/// The classic group states (Kafka's names, as DescribeGroups / ListGroups report them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Errors the group protocol answers with (mapped to Kafka codes in `handler/errors.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    UnknownMemberId,
    IllegalGeneration,
    InconsistentGroupProtocol,
    RebalanceInProgress,
    MemberIdRequired,
    FencedInstanceId,
    InvalidSessionTimeout,
    InvalidGroupId,
    CoordinatorNotAvailable,
    NotCoordinator,
    NonEmptyGroup,
    GroupIdNotFound,
    // Consumer-protocol groups (KIP-848, `consumer.rs`).
    FencedMemberEpoch,
    StaleMemberEpoch,
    UnreleasedInstanceId,
    UnsupportedAssignor,
    InvalidRequest,
    InvalidRegularExpression,
    UnsupportedVersion,
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty for a member that has no id yet.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (assignor name, subscription metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
    /// A static leader that rejoined without a rebalance must not reassign (JoinGroup v9).
    pub skip_assignment: bool,
}

impl JoinResponse {
    pub fn error(error: GroupError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// A SyncGroup request, decoded.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation: i32,
    /// v5+: must match the group's when set.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment (member id → bytes); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> Self {
        Self { error: Some(error), protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

/// What a JoinGroup / SyncGroup gets now, or that it waits for an [`Effect`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Now(T),
    /// Answered later by an [`Effect`] for this member id.
    Held {
        member_id: String,
    },
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer the held JoinGroup of `member_id`.
    Join { member_id: String, response: JoinResponse },
    /// Answer the held SyncGroup of `member_id`.
    Sync { member_id: String, response: SyncResponse },
    /// Store this membership through the controller, then call [`Group::persisted`] with its
    /// generation. `assignment` is true when held SyncGroups wait for it.
    Persist { membership: GroupMembership, assignment: bool },
}

/// A member in DescribeGroups.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: bool,
    awaiting_sync: bool,
    /// When the session expires unless refreshed (heartbeat, join, sync, commit).
    session_deadline: u64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn keep_alive(&self) -> bool {
        self.awaiting_join || self.awaiting_sync
    }
}

/// One group.
#[derive(Debug)]
pub struct Group {
    id: String,
    settings: GroupSettings,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    static_members: BTreeMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the deadline to come back.
    pending_members: BTreeMap<String, u64>,
    /// PreparingRebalance: when the join phase completes regardless of missing members.
    rebalance_deadline: Option<u64>,
    /// The first rebalance of an empty group: it never runs past this, and a new member
    /// extends its delay.
    initial_delay_until: Option<u64>,
    new_member_added: bool,
    /// Members of the current generation that have not sent SyncGroup yet, and when they
    /// will be removed for it.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<u64>,
    /// The generation whose leader assignment is being persisted.
    awaiting_persist: Option<i32>,
    effects: Vec<Effect>,
}

impl Group {
    pub fn new(id: &str, settings: GroupSettings) -> Self {
        Self {
            id: id.to_string(),
            settings,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            new_member_added: false,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            awaiting_persist: None,
            effects: Vec::new(),
        }
    }

    /// Rebuilds a group from its persisted membership (coordinator start or failover): Stable
    /// with its members if it had any, else Empty. Sessions restart at `now`.
    pub fn load(id: &str, settings: GroupSettings, m: &GroupMembership, now: u64) -> Self {
        let mut g = Self::new(id, settings);
        g.generation = m.generation;
        g.protocol_type = m.protocol_type.clone();
        if m.members.is_empty() {
            return g;
        }
        g.protocol = m.protocol_name.clone();
        g.leader = m.leader.clone();
        let protocol = m.protocol_name.clone().unwrap_or_default();
        for sm in &m.members {
            if let Some(i) = &sm.group_instance_id {
                g.static_members.insert(i.clone(), sm.member_id.clone());
            }
            g.members.insert(
                sm.member_id.clone(),
                Member {
                    id: sm.member_id.clone(),
                    instance_id: sm.group_instance_id.clone(),
                    client_id: sm.client_id.clone(),
                    client_host: sm.client_host.clone(),
                    session_timeout_ms: sm.session_timeout_ms,
                    rebalance_timeout_ms: sm.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), Bytes::from(sm.subscription.clone()))],
                    assignment: Bytes::from(sm.assignment.clone()),
                    awaiting_join: false,
                    awaiting_sync: false,
                    session_deadline: now + timeout(sm.session_timeout_ms),
                },
            );
        }
        g.state = GroupState::Stable;
        g
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn state(&self) -> GroupState {
        self.state
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Drains the work produced by the last calls.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The earliest time [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let sessions = self.members.values().filter(|m| !m.keep_alive()).map(|m| m.session_deadline);
        let pending = self.pending_members.values().copied();
        let sync = if self.pending_sync.is_empty() { None } else { self.sync_deadline };
        sessions.chain(pending).chain(self.rebalance_deadline).chain(sync).min()
    }

    // ---- requests ----

    /// JoinGroup. `fresh_suffix` is a unique string (the driver's UUID) for a new member id.
    pub fn join(&mut self, now: u64, req: JoinRequest, fresh_suffix: &str) -> Outcome<JoinResponse> {
        let now_err = |e| Outcome::Now(JoinResponse::error(e, &req.member_id));
        if self.state == GroupState::Dead {
            return now_err(GroupError::CoordinatorNotAvailable);
        }
        if req.session_timeout_ms < self.settings.min_session_timeout_ms
            || req.session_timeout_ms > self.settings.max_session_timeout_ms
        {
            return now_err(GroupError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return now_err(GroupError::InconsistentGroupProtocol);
        }
        if req.member_id.is_empty() {
            return self.join_unknown(now, req, fresh_suffix);
        }
        if self.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(now, id, req);
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return now_err(e);
        }
        let member_id = req.member_id.clone();
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(now, &member_id, &req);
                self.maybe_complete_join(now);
                Outcome::Held { member_id }
            }
            GroupState::CompletingRebalance => {
                if self.members[&member_id].protocols == req.protocols {
                    // A retried join of this generation: answer it again.
                    let m = self.members.get_mut(&member_id).expect("validated");
                    m.session_deadline = now + timeout(m.session_timeout_ms);
                    Outcome::Now(self.join_response(&member_id, false))
                } else {
                    self.update_member(now, &member_id, &req);
                    self.prepare_rebalance(now);
                    Outcome::Held { member_id }
                }
            }
            GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_leader || self.members[&member_id].protocols != req.protocols {
                    // The leader rejoining is how it asks for a new assignment.
                    self.update_member(now, &member_id, &req);
                    self.prepare_rebalance(now);
                    Outcome::Held { member_id }
                } else {
                    let m = self.members.get_mut(&member_id).expect("validated");
                    m.session_deadline = now + timeout(m.session_timeout_ms);
                    Outcome::Now(self.join_response(&member_id, false))
                }
            }
            GroupState::Empty | GroupState::Dead => now_err(GroupError::UnknownMemberId),
        }
    }

    fn join_unknown(&mut self, now: u64, req: JoinRequest, fresh_suffix: &str) -> Outcome<JoinResponse> {
        if let Some(instance) = req.group_instance_id.clone() {
            let new_id = format!("{instance}-{fresh_suffix}");
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(now, old_id, new_id, req);
            }
            return self.add_member_and_rebalance(now, new_id, req);
        }
        let new_id = format!("{}-{fresh_suffix}", req.client_id);
        if req.require_known_member_id {
            self.pending_members.insert(new_id.clone(), now + timeout(req.session_timeout_ms));
            return Outcome::Now(JoinResponse::error(GroupError::MemberIdRequired, &new_id));
        }
        self.add_member_and_rebalance(now, new_id, req)
    }

    /// A static member restarted: it takes over its old member id's place (and assignment);
    /// requests still carrying the old id are fenced.
    fn replace_static_member(
        &mut self,
        now: u64,
        old_id: String,
        new_id: String,
        req: JoinRequest,
    ) -> Outcome<JoinResponse> {
        let Some(mut m) = self.members.remove(&old_id) else {
            // Mapping without member cannot happen; treat as a new member.
            return self.add_member_and_rebalance(now, new_id, req);
        };
        if m.awaiting_join {
            self.effects.push(Effect::Join {
                member_id: old_id.clone(),
                response: JoinResponse::error(GroupError::FencedInstanceId, &old_id),
            });
        }
        if m.awaiting_sync {
            self.effects.push(Effect::Sync {
                member_id: old_id.clone(),
                response: SyncResponse::error(GroupError::FencedInstanceId),
            });
        }
        let protocols_changed = m.protocols != req.protocols;
        m.id = new_id.clone();
        m.awaiting_join = false;
        m.awaiting_sync = false;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.session_deadline = now + timeout(req.session_timeout_ms);
        let instance = req.group_instance_id.clone().unwrap_or_default();
        self.members.insert(new_id.clone(), m);
        self.static_members.insert(instance, new_id.clone());
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            GroupState::Stable if !protocols_changed => {
                // Same subscription: no rebalance; the member keeps its assignment (KIP-345).
                // A static leader must not reassign (skip_assignment, JoinGroup v9).
                self.effects.push(Effect::Persist { membership: self.membership(), assignment: false });
                Outcome::Now(self.join_response_with(&new_id, was_leader, was_leader))
            }
            _ => {
                self.update_member(now, &new_id, &req);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now);
                }
                self.maybe_complete_join(now);
                Outcome::Held { member_id: new_id }
            }
        }
    }

    fn add_member_and_rebalance(&mut self, now: u64, member_id: String, req: JoinRequest) -> Outcome<JoinResponse> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                awaiting_join: true,
                awaiting_sync: false,
                session_deadline: now + timeout(req.session_timeout_ms),
            },
        );
        self.new_member_added = true;
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
        Outcome::Held { member_id }
    }

    fn update_member(&mut self, now: u64, member_id: &str, req: &JoinRequest) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = req.protocols.clone();
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.awaiting_join = true;
            m.session_deadline = now + timeout(req.session_timeout_ms);
        }
    }

    /// SyncGroup.
    pub fn sync(&mut self, now: u64, req: SyncRequest) -> Outcome<SyncResponse> {
        let now_err = |e| Outcome::Now(SyncResponse::error(e));
        if self.state == GroupState::Dead {
            return now_err(GroupError::CoordinatorNotAvailable);
        }
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return now_err(e);
        }
        if req.generation != self.generation {
            return now_err(GroupError::IllegalGeneration);
        }
        let type_mismatch = req.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req.protocol_name.as_ref().is_some_and(|n| Some(n) != self.protocol.as_ref());
        if type_mismatch || name_mismatch {
            return now_err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::PreparingRebalance => now_err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(&req.member_id);
                let m = self.members.get_mut(&req.member_id).expect("validated");
                m.awaiting_sync = true;
                m.session_deadline = now + timeout(m.session_timeout_ms);
                if self.leader.as_deref() == Some(req.member_id.as_str()) && self.awaiting_persist.is_none() {
                    let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.awaiting_persist = Some(self.generation);
                    self.effects.push(Effect::Persist { membership: self.membership(), assignment: true });
                }
                Outcome::Held { member_id: req.member_id }
            }
            GroupState::Stable => {
                self.pending_sync.remove(&req.member_id);
                let m = self.members.get_mut(&req.member_id).expect("validated");
                m.session_deadline = now + timeout(m.session_timeout_ms);
                let assignment = m.assignment.clone();
                Outcome::Now(SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment,
                })
            }
            GroupState::Empty | GroupState::Dead => now_err(GroupError::UnknownMemberId),
        }
    }

    /// The driver stored the membership of `generation` (`ok`) or failed to.
    pub fn persisted(&mut self, now: u64, generation: i32, ok: bool) {
        if self.awaiting_persist != Some(generation) || self.state != GroupState::CompletingRebalance {
            return;
        }
        self.awaiting_persist = None;
        if ok {
            self.state = GroupState::Stable;
            let (ptype, pname) = (self.protocol_type.clone(), self.protocol.clone());
            for m in self.members.values_mut().filter(|m| m.awaiting_sync) {
                m.awaiting_sync = false;
                m.session_deadline = now + timeout(m.session_timeout_ms);
                self.effects.push(Effect::Sync {
                    member_id: m.id.clone(),
                    response: SyncResponse {
                        error: None,
                        protocol_type: ptype.clone(),
                        protocol_name: pname.clone(),
                        assignment: m.assignment.clone(),
                    },
                });
            }
        } else {
            // The assignment is not durable: nobody gets it; everyone rejoins.
            self.reset_assignments(GroupError::CoordinatorNotAvailable);
            self.prepare_rebalance(now);
        }
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        self.validate_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let m = self.members.get_mut(member_id).expect("validated");
        m.session_deadline = now + timeout(m.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// LeaveGroup for each (member id, group instance id); one result per member. An empty
    /// member id with an instance id removes that static member (the admin API's way).
    pub fn leave(
        &mut self,
        now: u64,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let r = if member_id.is_empty() {
                match instance_id.as_ref().and_then(|i| self.static_members.get(i).cloned()) {
                    Some(id) => {
                        self.remove_member(now, &id);
                        Ok(())
                    }
                    None => Err(GroupError::UnknownMemberId),
                }
            } else if self.pending_members.remove(member_id).is_some() {
                self.maybe_complete_join(now);
                Ok(())
            } else {
                match self.validate_member(member_id, instance_id.as_deref()) {
                    Ok(()) => {
                        self.remove_member(now, member_id);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            results.push(r);
        }
        Ok(results)
    }

    /// Whether an OffsetCommit from this member may be applied now (Kafka's
    /// `validateOffsetCommit` plus the state check). `generation < 0` with no member id is a
    /// "simple" commit, allowed only while the group has no members.
    pub fn check_commit(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.check_commit_as(now, member_id, instance_id, generation, false)
    }

    /// TxnOffsetCommit's check (Kafka's `ClassicGroup.validateOffsetCommit` with
    /// `isTransactional`): as [`Self::check_commit`], except that a request naming no member
    /// (TxnOffsetCommit v0-2 cannot) is accepted in any state, and a commit while the group
    /// completes a rebalance is not refused.
    pub fn check_txn_commit(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.check_commit_as(now, member_id, instance_id, generation, true)
    }

    fn check_commit_as(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        transactional: bool,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if transactional && generation < 0 && self.state == GroupState::Empty {
            // Kafka accepts any member then (the admin client, or a producer outside group
            // management).
        } else if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if self.pending_members.contains_key(member_id) {
                return Err(GroupError::UnknownMemberId);
            }
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(GroupError::IllegalGeneration);
            }
        } else if !transactional && self.state != GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline = now + timeout(m.session_timeout_ms);
        }
        Ok(())
    }

    /// Marks the group deleted (DeleteGroups); only a group without members can be.
    pub fn mark_dead(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                self.state = GroupState::Dead;
                Ok(())
            }
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// Undoes [`Group::mark_dead`] when the deletion could not be stored.
    pub fn revive(&mut self) {
        if self.state == GroupState::Dead {
            self.state = GroupState::Empty;
        }
    }

    /// Topics the members subscribe to, if the group uses the consumer protocol and is not
    /// empty (OffsetDelete refuses those). `None`: not a consumer group.
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(parse_subscription_topics(&m.metadata(protocol)));
        }
        Some(topics)
    }

    /// DescribeGroups: members with metadata and assignment only while Stable (as Kafka).
    pub fn describe(&self) -> Vec<MemberDescription> {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect()
    }

    // ---- time ----

    /// Expires sessions, pending member ids, the join phase and the sync phase due by `now`.
    pub fn tick(&mut self, now: u64) {
        let expired_pending: Vec<String> =
            self.pending_members.iter().filter(|(_, d)| **d <= now).map(|(id, _)| id.clone()).collect();
        for id in expired_pending {
            self.pending_members.remove(&id);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.keep_alive() && m.session_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member(now, &id);
        }
        if self.state == GroupState::PreparingRebalance && self.rebalance_deadline.is_some_and(|d| d <= now) {
            match self.initial_delay_until {
                Some(until) if self.new_member_added && now < until => {
                    // New members keep arriving: wait one more delay, within the timeout.
                    self.new_member_added = false;
                    self.rebalance_deadline = Some((now + self.settings.initial_rebalance_delay_ms).min(until));
                }
                _ => {
                    self.initial_delay_until = None;
                    self.complete_join(now);
                }
            }
        }
        if !self.pending_sync.is_empty()
            && self.sync_deadline.is_some_and(|d| d <= now)
            && matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
        {
            let missing: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
            tracing::info!(group = %self.id, members = ?missing, "members did not sync in time");
            for id in missing {
                self.remove_member(now, &id);
            }
        }
        self.maybe_complete_join(now);
    }

    // ---- internals ----

    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        // The instance is registered under another member id: that one replaced this one.
        if instance_id.and_then(|i| self.static_members.get(i)).is_some_and(|id| id != member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    /// Protocols every current member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let mut names: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            names.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        names
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins,
    /// ties go to the earlier candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m.protocols.iter().find_map(|(n, _)| candidates.iter().position(|c| c == n)) {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        votes.iter().position(|v| *v == best).map(|i| candidates[i].clone())
    }

    fn rebalance_timeout(&self) -> u64 {
        self.members.values().map(|m| timeout(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: u64) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_assignments(GroupError::RebalanceInProgress);
        }
        self.awaiting_persist = None;
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout_ms = self.rebalance_timeout();
        let delay = self.settings.initial_rebalance_delay_ms;
        if self.state == GroupState::Empty && delay > 0 {
            self.initial_delay_until = Some(now + timeout_ms);
            self.new_member_added = false;
            self.rebalance_deadline = Some(now + delay.min(timeout_ms));
        } else {
            self.initial_delay_until = None;
            self.rebalance_deadline = Some(now + timeout_ms);
        }
        self.state = GroupState::PreparingRebalance;
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), "preparing to rebalance");
        // Kafka's `prepareRebalance` ends with `maybeCompleteJoinElseSchedule`: a rebalance
        // started by a member's own JoinGroup (new subscription, a topic that grew or was
        // re-created, the leader asking for a new assignment, cooperative-sticky's follow-up
        // join) may find every member already rejoined, as when that member is the only one.
        // Waiting for the deadline instead stalls the group for the whole rebalance timeout.
        // The first rebalance of an empty group keeps its initial delay (checked inside).
        self.maybe_complete_join(now);
    }

    /// Answers held SyncGroups with `error` and forgets the assignments (Kafka's
    /// `resetAndPropagateAssignmentError`).
    fn reset_assignments(&mut self, error: GroupError) {
        for m in self.members.values_mut() {
            if m.awaiting_sync {
                m.awaiting_sync = false;
                self.effects.push(Effect::Sync { member_id: m.id.clone(), response: SyncResponse::error(error) });
            }
            m.assignment = Bytes::new();
        }
    }

    /// Kafka's `hasAllMembersJoined` check: completes the join phase once nobody is missing.
    fn maybe_complete_join(&mut self, now: u64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_until.is_none()
            && self.pending_members.is_empty()
            && self.members.values().all(|m| m.awaiting_join)
        {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: u64) {
        // Members that did not rejoin in time are out.
        let missing: Vec<String> = self.members.values().filter(|m| !m.awaiting_join).map(|m| m.id.clone()).collect();
        for id in missing {
            tracing::info!(group = %self.id, member = %id, "member did not rejoin in time");
            self.drop_member(&id);
        }
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            tracing::info!(group = %self.id, generation = self.generation, "group is empty");
            self.effects.push(Effect::Persist { membership: self.membership(), assignment: false });
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now + self.rebalance_timeout());
        tracing::info!(group = %self.id, generation = self.generation, members = self.members.len(), protocol = ?self.protocol, "join phase complete");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let response = self.join_response(&id, is_leader);
            let m = self.members.get_mut(&id).expect("listed");
            m.awaiting_join = false;
            m.session_deadline = now + timeout(m.session_timeout_ms);
            self.effects.push(Effect::Join { member_id: id, response });
        }
    }

    fn join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        self.join_response_with(member_id, with_members, false)
    }

    fn join_response_with(&self, member_id: &str, with_members: bool, skip_assignment: bool) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    /// Removes a member and reacts: its held requests are answered, and the group rebalances.
    fn remove_member(&mut self, now: u64, member_id: &str) {
        if !self.drop_member(member_id) {
            return;
        }
        if matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
    }

    /// Forgets a member, answering its held requests with UNKNOWN_MEMBER_ID.
    fn drop_member(&mut self, member_id: &str) -> bool {
        let Some(m) = self.members.remove(member_id) else { return false };
        if m.awaiting_join {
            self.effects.push(Effect::Join {
                member_id: m.id.clone(),
                response: JoinResponse::error(GroupError::UnknownMemberId, &m.id),
            });
        }
        if m.awaiting_sync {
            self.effects.push(Effect::Sync {
                member_id: m.id.clone(),
                response: SyncResponse::error(GroupError::UnknownMemberId),
            });
        }
        if let Some(i) = &m.instance_id
            && self.static_members.get(i).is_some_and(|id| id == member_id)
        {
            self.static_members.remove(i);
        }
        self.pending_sync.remove(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        true
    }

    /// The membership to persist (wall-clock timestamp filled by the driver).
    pub fn membership(&self) -> GroupMembership {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupMembership {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            timestamp_ms: 0,
        }
    }
}

fn timeout(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The topics of a `ConsumerProtocolSubscription` (any version: the topic array comes first,
/// after the version). Malformed bytes give what could be read.
pub fn parse_subscription_topics(b: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let read_i16 = |at: usize| b.get(at..at + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let Some(count) = b.get(2..6).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]])) else { return topics };
    let mut at = 6;
    for _ in 0..count.max(0) {
        let Some(len) = read_i16(at) else { break };
        let Ok(len) = usize::try_from(len) else { break };
        let Some(name) = b.get(at + 2..at + 2 + len) else { break };
        topics.push(String::from_utf8_lossy(name).into_owned());
        at += 2 + len;
    }
    topics
}

#[cfg(test)]
mod tests;
