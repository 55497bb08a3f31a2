//! One consumer-protocol group (KIP-848, `group.protocol=consumer`): members heartbeat with
//! their subscriptions, the coordinator computes the target assignment with a server-side
//! assignor ([`super::assignor`]) and reconciles each member towards it with member epochs, as
//! Kafka's `GroupMetadataManager` / `CurrentAssignmentBuilder` define it.
//!
//! Pure: no I/O, no clock, no randomness. Time comes in as `now` (monotonic milliseconds), fresh
//! member ids (ConsumerGroupHeartbeat v0 only) from the caller, topic metadata through
//! [`TopicImage`]; every change comes out as a [`ConsumerGroupUpdate`] ([`ConsumerGroup::take_update`])
//! for the driver to persist before it answers.
//!
//! The protocol, in short:
//! * the *group epoch* is bumped whenever a member joins or leaves or changes its subscription
//!   or preferred assignor, or a subscribed topic appears, disappears or grows;
//! * when the group epoch is ahead of the *assignment epoch*, the next heartbeat computes a new
//!   target assignment for every member and the assignment epoch catches up;
//! * each member moves towards its target on its own heartbeats: first it must revoke what it
//!   loses (it stays at its epoch, state `UnrevokedPartitions`, until a heartbeat no longer
//!   lists those partitions as owned), then it moves to the assignment epoch and gets the
//!   partitions that are free; a partition still owned or being revoked by another member is
//!   withheld (`UnreleasedPartitions`) until that member lets it go.
//!
//! Invariants:
//! * a partition has at most one owner: it is in at most one member's assigned or
//!   pending-revocation set (`owners` indexes them), so it is never given to a new member before
//!   its previous owner acknowledged the revocation (revoke-before-assign);
//! * a member's epoch only grows while it is in the group, and never beyond the assignment
//!   epoch; a heartbeat with a newer epoch, or an older one other than the previous epoch with
//!   a subset of the member's partitions (a lost response), gets FENCED_MEMBER_EPOCH;
//! * a member that does not heartbeat within the session timeout, or does not revoke within its
//!   rebalance timeout, is removed (fenced), and its partitions become free;
//! * a request that fails changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use skiff_controller::intent::{
    ConsumerGroupUpdate, MemberState, StoredConsumerGroup, StoredConsumerMember, SubscribedTopic, TopicPartitionEpochs,
    TopicPartitions,
};
use tracing::info;
use uuid::Uuid;

use super::assignor::{Assignment, Assignor, MemberSpec};
use super::state::GroupError;

/// Member epoch of a member leaving the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily (it keeps its partitions for the
/// session timeout).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Settings of consumer-protocol groups (Kafka's `group.consumer.*` broker configs).
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    /// `group.consumer.session.timeout.ms` (Kafka default 45 000).
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (Kafka default 5 000): how often members
    /// heartbeat; a member learns of a new target assignment at its next heartbeat, so this
    /// bounds how long a rebalance takes.
    pub heartbeat_interval_ms: i32,
    /// The assignor of a group whose members name none (Kafka: the first of
    /// `group.consumer.assignors`, `uniform`).
    pub default_assignor: Assignor,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self { session_timeout_ms: 45_000, heartbeat_interval_ms: 5_000, default_assignor: Assignor::Uniform }
    }
}

/// The topics a group can subscribe to.
pub trait TopicImage {
    /// Id and partition count of an existing topic.
    fn topic(&self, name: &str) -> Option<SubscribedTopic>;
    /// Calls `f` with every topic (regular-expression subscriptions match against them).
    fn for_each_topic(&self, f: &mut dyn FnMut(&str, SubscribedTopic));
}

impl TopicImage for BTreeMap<String, SubscribedTopic> {
    fn topic(&self, name: &str) -> Option<SubscribedTopic> {
        self.get(name).copied()
    }
    fn for_each_topic(&self, f: &mut dyn FnMut(&str, SubscribedTopic)) {
        for (name, t) in self {
            f(name, *t);
        }
    }
}

/// A ConsumerGroupHeartbeat, decoded. `None` fields did not change since the last heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns (topic id, partitions).
    pub owned: Option<Vec<(Uuid, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
    /// The topics the member's principal may DESCRIBE, which alone its regex may resolve to.
    pub visible: TopicVisibility,
}

/// Which topics a member's subscription regex may resolve to (Kafka's
/// `filterTopicDescribeAuthorizedTopics`): the handler builds it from the authorizer and the
/// member's principal, so the group's state machine stays free of security.
#[derive(Clone, Default)]
pub enum TopicVisibility {
    /// No authorization applies (no ACLs, or a super user).
    #[default]
    All,
    /// Only the topics this returns true for, asked at each resolution so ACL changes apply.
    Only(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl TopicVisibility {
    fn admits(&self, topic: &str) -> bool {
        match self {
            TopicVisibility::All => true,
            TopicVisibility::Only(f) => f(topic),
        }
    }
}

impl fmt::Debug for TopicVisibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicVisibility::All => "All",
            TopicVisibility::Only(_) => "Only(..)",
        })
    }
}

/// An error with Kafka's message for it.
pub type Failure = (GroupError, String);

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatResponse {
    pub error: Option<Failure>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent on a full request (joining, or after an error) and whenever the assignment changed.
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    pub fn error(e: GroupError, message: impl Into<String>) -> Self {
        Self {
            error: Some((e, message.into())),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// Checks a heartbeat's shape before it reaches a group (Kafka's request validation): the
/// errors are INVALID_REQUEST and UNSUPPORTED_ASSIGNOR. v1+ members choose their own id.
pub fn validate(group_id: &str, req: &HeartbeatRequest, version: i16) -> Result<(), Failure> {
    let invalid = |m: &str| Err((GroupError::InvalidRequest, m.to_string()));
    if (version >= 1 || req.member_epoch > 0 || req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH)
        && req.member_id.is_empty()
    {
        return invalid("MemberId can't be empty.");
    }
    if group_id.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if !req.owned.as_ref().is_some_and(Vec::is_empty) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid(
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                );
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH if req.instance_id.is_none() => return invalid("InstanceId can't be null."),
        e if e < LEAVE_GROUP_STATIC_MEMBER_EPOCH => return invalid("MemberEpoch is invalid."),
        _ => {}
    }
    if let Some(a) = &req.server_assignor
        && Assignor::from_name(a).is_none()
    {
        let names: Vec<&str> = Assignor::ALL.iter().map(|a| a.name()).collect();
        return Err((
            GroupError::UnsupportedAssignor,
            format!("ServerAssignor {a} is not supported. Supported assignors: {}.", names.join(", ")),
        ));
    }
    Ok(())
}

/// A consumer group's state as ConsumerGroupDescribe and ListGroups report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// A group as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerGroupDescription {
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target: Assignment,
}

/// Partitions by topic with the member epoch each was assigned at.
type Epochs = BTreeMap<Uuid, BTreeMap<i32, i32>>;

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    topic_names: BTreeSet<String>,
    /// The regular expression as sent, and compiled (anchored: Kafka matches whole names).
    regex: Option<(String, Regex)>,
    /// Who may see what, from the member's latest heartbeat; `None` for a member loaded from
    /// storage and not heard from since, whose regex keeps only the topics it already has
    /// (its principal is not stored, and what it holds was authorized when it was resolved).
    visible: Option<TopicVisibility>,
    server_assignor: Option<String>,
    epoch: i32,
    previous_epoch: i32,
    state: MemberState,
    assigned: Epochs,
    revoking: Epochs,
    target: Assignment,
    session_deadline: u64,
    /// While revoking: when the member is fenced for not having revoked.
    rebalance_deadline: Option<u64>,
}

impl Member {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            topic_names: BTreeSet::new(),
            regex: None,
            visible: None,
            server_assignor: None,
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            assigned: Epochs::new(),
            revoking: Epochs::new(),
            target: Assignment::new(),
            session_deadline: 0,
            rebalance_deadline: None,
        }
    }

    fn regex_str(&self) -> Option<&str> {
        self.regex.as_ref().map(|(s, _)| s.as_str())
    }

    fn subscribes(&self, topic: &str, topic_id: Uuid) -> bool {
        self.topic_names.contains(topic) || self.regex_resolves_to(topic, topic_id)
    }

    /// Whether the member's regex matches `topic` and its principal may DESCRIBE it.
    fn regex_resolves_to(&self, topic: &str, topic_id: Uuid) -> bool {
        self.regex.as_ref().is_some_and(|(_, r)| r.is_match(topic))
            && match &self.visible {
                Some(v) => v.admits(topic),
                None => self.target.contains_key(&topic_id) || self.assigned.contains_key(&topic_id),
            }
    }

    fn reconciled_to(&self, epoch: i32) -> bool {
        self.state == MemberState::Stable && self.epoch == epoch
    }

    fn assigned_partitions(&self) -> Assignment {
        self.assigned.iter().map(|(t, ps)| (*t, ps.keys().copied().collect())).collect()
    }

    fn to_stored(&self) -> StoredConsumerMember {
        let epochs = |e: &Epochs| {
            e.iter()
                .map(|(t, ps)| TopicPartitionEpochs {
                    topic_id: *t,
                    partitions: ps.iter().map(|(p, e)| (*p, *e)).collect(),
                })
                .collect()
        };
        StoredConsumerMember {
            member_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            rack_id: self.rack_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            subscribed_topic_names: self.topic_names.iter().cloned().collect(),
            subscribed_topic_regex: self.regex_str().map(str::to_string),
            server_assignor: self.server_assignor.clone(),
            member_epoch: self.epoch,
            previous_member_epoch: self.previous_epoch,
            state: self.state,
            assigned: epochs(&self.assigned),
            pending_revocation: epochs(&self.revoking),
            target: self
                .target
                .iter()
                .map(|(t, ps)| TopicPartitions { topic_id: *t, partitions: ps.iter().copied().collect() })
                .collect(),
        }
    }

    fn from_stored(s: &StoredConsumerMember, now: u64, session_timeout_ms: i32) -> Self {
        let epochs = |v: &[TopicPartitionEpochs]| -> Epochs {
            v.iter().map(|t| (t.topic_id, t.partitions.iter().copied().collect())).collect()
        };
        let state = s.state;
        Self {
            id: s.member_id.clone(),
            instance_id: s.instance_id.clone(),
            rack_id: s.rack_id.clone(),
            client_id: s.client_id.clone(),
            client_host: s.client_host.clone(),
            rebalance_timeout_ms: s.rebalance_timeout_ms,
            topic_names: s.subscribed_topic_names.iter().cloned().collect(),
            // Stored regexes were compiled when they came in.
            regex: s.subscribed_topic_regex.as_ref().and_then(|r| compile(r).ok().map(|c| (r.clone(), c))),
            visible: None,
            server_assignor: s.server_assignor.clone(),
            epoch: s.member_epoch,
            previous_epoch: s.previous_member_epoch,
            state,
            assigned: epochs(&s.assigned),
            revoking: epochs(&s.pending_revocation),
            target: s.target.iter().map(|t| (t.topic_id, t.partitions.iter().copied().collect())).collect(),
            session_deadline: now + timeout(session_timeout_ms),
            rebalance_deadline: (state == MemberState::UnrevokedPartitions)
                .then(|| now + timeout(s.rebalance_timeout_ms)),
        }
    }
}

fn timeout(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// Compiles a subscription regex as Kafka matches it: against the whole topic name.
fn compile(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

fn owns_any(owned: Option<&[(Uuid, Vec<i32>)]>, partitions: &Epochs) -> bool {
    let Some(owned) = owned else { return true };
    owned.iter().any(|(t, ps)| partitions.get(t).is_some_and(|held| ps.iter().any(|p| held.contains_key(p))))
}

fn is_subset(owned: Option<&[(Uuid, Vec<i32>)]>, assigned: &Epochs) -> bool {
    let Some(owned) = owned else { return false };
    owned.iter().all(|(t, ps)| ps.iter().all(|p| assigned.get(t).is_some_and(|held| held.contains_key(p))))
}

/// One consumer-protocol group.
#[derive(Debug)]
pub struct ConsumerGroup {
    id: String,
    settings: ConsumerSettings,
    group_epoch: i32,
    assignment_epoch: i32,
    subscribed_topics: BTreeMap<String, SubscribedTopic>,
    members: BTreeMap<String, Member>,
    /// instance id → member id.
    static_members: BTreeMap<String, String>,
    /// Partition → the member that owns it or is revoking it.
    owners: HashMap<(Uuid, i32), String>,
    /// Not yet handed out by `take_update`.
    changed_members: BTreeSet<String>,
    removed_members: BTreeSet<String>,
    group_changed: bool,
}

impl ConsumerGroup {
    pub fn new(id: &str, settings: ConsumerSettings) -> Self {
        Self {
            id: id.to_string(),
            settings,
            group_epoch: 0,
            assignment_epoch: 0,
            subscribed_topics: BTreeMap::new(),
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            owners: HashMap::new(),
            changed_members: BTreeSet::new(),
            removed_members: BTreeSet::new(),
            group_changed: false,
        }
    }

    /// Rebuilds a group from its stored state (coordinator start or failover). Members keep
    /// their epochs and partitions; their session (and revocation) timers restart at `now`.
    pub fn load(id: &str, settings: ConsumerSettings, stored: &StoredConsumerGroup, now: u64) -> Self {
        let mut g = Self::new(id, settings);
        g.group_epoch = stored.group_epoch;
        g.assignment_epoch = stored.assignment_epoch;
        g.subscribed_topics = stored.subscribed_topics.clone();
        for s in stored.members.values() {
            let m = Member::from_stored(s, now, settings.session_timeout_ms);
            g.register(&m);
            g.members.insert(m.id.clone(), m);
        }
        g
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    /// Replaces the settings (the group's configs changed); sessions already running keep
    /// their deadlines until the member's next heartbeat.
    pub fn set_settings(&mut self, settings: ConsumerSettings) {
        self.settings = settings;
    }
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().all(|m| m.reconciled_to(self.assignment_epoch)) {
            ConsumerGroupState::Stable
        } else {
            ConsumerGroupState::Reconciling
        }
    }

    /// The topics the members subscribe to (OffsetDelete refuses their offsets).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.subscribed_topics.keys().cloned().collect();
        for m in self.members.values() {
            names.extend(m.topic_names.iter().cloned());
        }
        names
    }

    /// The earliest time [`ConsumerGroup::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        self.members.values().flat_map(|m| [Some(m.session_deadline), m.rebalance_deadline]).flatten().min()
    }

    /// The change to persist since the last call, if any.
    pub fn take_update(&mut self) -> Option<ConsumerGroupUpdate> {
        if !self.group_changed && self.changed_members.is_empty() && self.removed_members.is_empty() {
            return None;
        }
        let changed = std::mem::take(&mut self.changed_members);
        let upserted = changed.iter().filter_map(|id| self.members.get(id)).map(Member::to_stored).collect();
        let removed = std::mem::take(&mut self.removed_members).into_iter().collect();
        self.group_changed = false;
        Some(ConsumerGroupUpdate {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            subscribed_topics: self.subscribed_topics.clone(),
            upserted,
            removed,
        })
    }

    /// The whole group as stored (tests compare it with what the updates built).
    pub fn to_stored(&self) -> StoredConsumerGroup {
        StoredConsumerGroup {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            subscribed_topics: self.subscribed_topics.clone(),
            members: self.members.values().map(|m| (m.id.clone(), m.to_stored())).collect(),
        }
    }

    // ---- requests ----

    /// ConsumerGroupHeartbeat (validated with [`validate`]). `fresh_member_id` names a v0
    /// member that came without an id.
    pub fn heartbeat(
        &mut self,
        now: u64,
        req: &HeartbeatRequest,
        topics: &dyn TopicImage,
        fresh_member_id: &str,
    ) -> HeartbeatResponse {
        let result = if req.member_epoch < 0 {
            self.leave(req)
        } else {
            self.join_or_heartbeat(now, req, topics, fresh_member_id)
        };
        result.unwrap_or_else(|(e, message)| HeartbeatResponse::error(e, message))
    }

    fn join_or_heartbeat(
        &mut self,
        now: u64,
        req: &HeartbeatRequest,
        topics: &dyn TopicImage,
        fresh_member_id: &str,
    ) -> Result<HeartbeatResponse, Failure> {
        let member_id = if req.member_id.is_empty() { fresh_member_id.to_string() } else { req.member_id.clone() };
        let joining = req.member_epoch == 0;
        let owned = req.owned.as_deref();
        // 1. The member as it is, a new one, or a static member taking over its instance's place.
        let (existing, created, replaced) = match &req.instance_id {
            None => match self.members.get(&member_id) {
                Some(m) => {
                    check_epoch(m, req.member_epoch, owned)?;
                    (m.clone(), false, None)
                }
                None if joining => (Member::new(&member_id), true, None),
                None => {
                    return Err((
                        GroupError::UnknownMemberId,
                        format!("Member {member_id} is not a member of group {}.", self.id),
                    ));
                }
            },
            Some(instance) => {
                let current = self.static_members.get(instance).and_then(|id| self.members.get(id));
                match current {
                    None if joining => match self.members.get(&member_id) {
                        Some(m) => (m.clone(), false, None),
                        None => (Member::new(&member_id), true, None),
                    },
                    None => return Err((GroupError::UnknownMemberId, format!("Instance id {instance} is unknown."))),
                    Some(old) if joining => {
                        if old.epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                            return Err((
                                GroupError::UnreleasedInstanceId,
                                format!(
                                    "Static member {member_id} with instance id {instance} cannot join the group because the instance id is owned by member {}.",
                                    old.id
                                ),
                            ));
                        }
                        // The instance comes back: the new member id takes the old one's
                        // place, subscription and partitions, without a rebalance.
                        let mut m = old.clone();
                        m.id = member_id.clone();
                        m.epoch = 0;
                        m.previous_epoch = 0;
                        (m, false, Some(old.id.clone()))
                    }
                    Some(old) => {
                        if old.id != member_id {
                            return Err((
                                GroupError::FencedInstanceId,
                                format!(
                                    "Static member {member_id} with instance id {instance} was fenced by member {}.",
                                    old.id
                                ),
                            ));
                        }
                        check_epoch(old, req.member_epoch, owned)?;
                        (old.clone(), false, None)
                    }
                }
            }
        };

        // 2. The member with what this heartbeat changed; nothing is modified before this
        // point, and nothing can fail after it.
        let mut updated = existing.clone();
        if let Some(i) = &req.instance_id {
            updated.instance_id = Some(i.clone());
        }
        if let Some(r) = &req.rack_id {
            updated.rack_id = Some(r.clone());
        }
        if req.rebalance_timeout_ms != -1 {
            updated.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(a) = &req.server_assignor {
            updated.server_assignor = Some(a.clone());
        }
        if let Some(names) = &req.subscribed_topic_names {
            updated.topic_names = names.iter().cloned().collect();
        }
        if let Some(re) = &req.subscribed_topic_regex {
            if re.is_empty() {
                updated.regex = None;
            } else if updated.regex_str() != Some(re.as_str()) {
                let compiled = compile(re).map_err(|e| {
                    (GroupError::InvalidRegularExpression, format!("SubscribedTopicRegex `{re}` is not valid: {e}"))
                })?;
                updated.regex = Some((re.clone(), compiled));
            }
        }
        updated.client_id = req.client_id.clone();
        updated.client_host = req.client_host.clone();
        updated.visible = Some(req.visible.clone());
        let subscription_changed =
            created || updated.topic_names != existing.topic_names || updated.regex_str() != existing.regex_str();

        let assignor_before = self.preferred_assignor();
        if let Some(old_id) = &replaced {
            self.unregister(old_id);
            self.members.remove(old_id);
            self.changed_members.remove(old_id);
            self.removed_members.insert(old_id.clone());
            info!(group = %self.id, member = %member_id, replaced = %old_id, "static member rejoined");
        }
        if created {
            info!(group = %self.id, member = %member_id, "member joins the consumer group");
        }
        self.put(updated);

        // 3. Bump the group epoch if the subscriptions, the assignor or the subscribed topics
        // changed; compute a new target assignment if the group epoch is ahead.
        let topics_now = self.resolve_subscribed_topics(topics);
        let mut bump = subscription_changed || self.preferred_assignor() != assignor_before;
        if topics_now != self.subscribed_topics {
            self.subscribed_topics = topics_now;
            bump = true;
        }
        if bump {
            self.group_epoch += 1;
            self.group_changed = true;
            info!(group = %self.id, epoch = self.group_epoch, members = self.members.len(), "bumped group epoch");
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target_assignment();
        }

        // 4. Reconcile this member towards its target.
        let before = self.members.get(&member_id).map(Member::assigned_partitions).unwrap_or_default();
        self.reconcile(now, &member_id, owned);
        let session_timeout = timeout(self.settings.session_timeout_ms);
        let m = self.members.get_mut(&member_id).expect("just put");
        m.session_deadline = now + session_timeout;
        let after = m.assigned_partitions();
        let full = joining
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && req.owned.is_some());
        Ok(HeartbeatResponse {
            error: None,
            member_id: Some(member_id),
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.settings.heartbeat_interval_ms,
            assignment: (full || before != after).then_some(after),
        })
    }

    fn leave(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, Failure> {
        let member_id = req.member_id.clone();
        let response = |epoch| HeartbeatResponse {
            error: None,
            member_id: Some(member_id.clone()),
            member_epoch: epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        };
        match &req.instance_id {
            None => {
                if !self.members.contains_key(&member_id) {
                    return Err((
                        GroupError::UnknownMemberId,
                        format!("Member {member_id} is not a member of group {}.", self.id),
                    ));
                }
                info!(group = %self.id, member = %member_id, "member left the consumer group");
                self.fence(&member_id);
                Ok(response(LEAVE_GROUP_MEMBER_EPOCH))
            }
            Some(instance) => {
                let Some(current) = self.static_members.get(instance).cloned() else {
                    return Err((GroupError::UnknownMemberId, format!("Instance id {instance} is unknown.")));
                };
                if current != member_id {
                    return Err((
                        GroupError::FencedInstanceId,
                        format!(
                            "Static member {member_id} with instance id {instance} was fenced by member {current}."
                        ),
                    ));
                }
                if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    // Away for a while: it keeps its partitions (no rebalance) until its session
                    // expires or the instance rejoins.
                    info!(group = %self.id, member = %member_id, instance = %instance, "static member left temporarily");
                    let mut m = self.members.get(&member_id).cloned().expect("indexed");
                    m.epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
                    m.revoking.clear();
                    m.rebalance_deadline = None;
                    self.put(m);
                    Ok(response(LEAVE_GROUP_STATIC_MEMBER_EPOCH))
                } else {
                    info!(group = %self.id, member = %member_id, instance = %instance, "static member left");
                    self.fence(&member_id);
                    Ok(response(LEAVE_GROUP_MEMBER_EPOCH))
                }
            }
        }
    }

    /// Per partition (topic id and partition; `None` for an unknown topic), whether an
    /// OffsetCommit with this member id and epoch may write it (Kafka 4.4's rules: an older
    /// epoch is fine for partitions the member has held since that epoch).
    pub fn validate_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
        partitions: &[Option<(Uuid, i32)>],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(vec![None; partitions.len()]);
        }
        let m = self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if version < 9 {
            return Err(GroupError::UnsupportedVersion);
        }
        if member_epoch == m.epoch {
            return Ok(vec![None; partitions.len()]);
        }
        if member_epoch > m.epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(partitions
            .iter()
            .map(|tp| {
                let held = tp.and_then(|(t, p)| {
                    m.assigned
                        .get(&t)
                        .and_then(|ps| ps.get(&p))
                        .or_else(|| m.revoking.get(&t).and_then(|ps| ps.get(&p)))
                });
                match held {
                    Some(since) if *since <= member_epoch => None,
                    _ => Some(GroupError::StaleMemberEpoch),
                }
            })
            .collect())
    }

    /// Whether an OffsetFetch (v9+) with this member id and epoch may read the offsets.
    pub fn validate_fetch(&self, member_id: Option<&str>, member_epoch: i32) -> Result<(), GroupError> {
        if member_id.is_none() && member_epoch < 0 {
            return Ok(());
        }
        let m = self.members.get(member_id.unwrap_or_default()).ok_or(GroupError::UnknownMemberId)?;
        if m.epoch != member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// ConsumerGroupDescribe.
    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.preferred_assignor().name().to_string(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: m.regex_str().map(str::to_string),
                    assignment: m.assigned_partitions(),
                    target: m.target.clone(),
                })
                .collect(),
        }
    }

    // ---- time ----

    /// Fences members whose session expired or who did not revoke within their rebalance
    /// timeout.
    pub fn tick(&mut self, now: u64) {
        let expired: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|m| {
                if m.session_deadline <= now {
                    Some((m.id.clone(), "its session expired"))
                } else if m.rebalance_deadline.is_some_and(|d| d <= now) {
                    Some((m.id.clone(), "it did not revoke its partitions within the rebalance timeout"))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in expired {
            info!(group = %self.id, member = %id, "member fenced from the consumer group because {why}");
            self.fence(&id);
        }
    }

    // ---- internals ----

    /// Removes a member: its partitions become free and the group epoch is bumped.
    fn fence(&mut self, member_id: &str) {
        self.unregister(member_id);
        if self.members.remove(member_id).is_none() {
            return;
        }
        self.changed_members.remove(member_id);
        self.removed_members.insert(member_id.to_string());
        self.group_epoch += 1;
        self.group_changed = true;
    }

    /// Stores a member (replacing its previous version) and indexes its partitions.
    fn put(&mut self, m: Member) {
        self.unregister(&m.id);
        self.register(&m);
        if let Some(prev) = self.members.get(&m.id)
            && prev.to_stored() == m.to_stored()
        {
            self.members.insert(m.id.clone(), m);
            return;
        }
        self.changed_members.insert(m.id.clone());
        self.members.insert(m.id.clone(), m);
    }

    fn register(&mut self, m: &Member) {
        if let Some(i) = &m.instance_id {
            self.static_members.insert(i.clone(), m.id.clone());
        }
        for (t, ps) in m.assigned.iter().chain(&m.revoking) {
            for p in ps.keys() {
                self.owners.insert((*t, *p), m.id.clone());
            }
        }
    }

    fn unregister(&mut self, member_id: &str) {
        let Some(m) = self.members.get(member_id) else { return };
        if let Some(i) = &m.instance_id
            && self.static_members.get(i).is_some_and(|id| id == member_id)
        {
            self.static_members.remove(i);
        }
        for (t, ps) in m.assigned.iter().chain(&m.revoking) {
            for p in ps.keys() {
                if self.owners.get(&(*t, *p)).is_some_and(|o| o == member_id) {
                    self.owners.remove(&(*t, *p));
                }
            }
        }
    }

    /// The assignor most members ask for (ties: the first by name), else the default.
    fn preferred_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref().and_then(Assignor::from_name) {
                *votes.entry(a).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes.into_iter().find(|(_, v)| *v == best).map_or(self.settings.default_assignor, |(a, _)| a)
    }

    /// The existing topics some member subscribes to (by name or regex).
    fn resolve_subscribed_topics(&self, topics: &dyn TopicImage) -> BTreeMap<String, SubscribedTopic> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for name in &m.topic_names {
                if let Some(t) = topics.topic(name) {
                    out.insert(name.clone(), t);
                }
            }
        }
        // Each regex resolves with its own member's authorization: a topic one member may not
        // DESCRIBE is never assigned to it, even when another member's regex brings it in.
        let regex_members: Vec<&Member> = self.members.values().filter(|m| m.regex.is_some()).collect();
        if !regex_members.is_empty() {
            topics.for_each_topic(&mut |name, t| {
                if regex_members.iter().any(|m| m.regex_resolves_to(name, t.topic_id)) {
                    out.insert(name.to_string(), t);
                }
            });
        }
        out
    }

    /// A new target assignment for every member at the current group epoch.
    fn compute_target_assignment(&mut self) {
        let assignor = self.preferred_assignor();
        let partitions: BTreeMap<Uuid, i32> =
            self.subscribed_topics.values().map(|t| (t.topic_id, t.partitions)).collect();
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: m.id.clone(),
                topics: self
                    .subscribed_topics
                    .iter()
                    .filter(|(name, t)| m.subscribes(name, t.topic_id))
                    .map(|(_, t)| t.topic_id)
                    .collect(),
                current: m.target.clone(),
            })
            .collect();
        let targets = assignor.assign(&specs, &partitions);
        for (id, target) in targets {
            if let Some(m) = self.members.get_mut(&id)
                && m.target != target
            {
                m.target = target;
                self.changed_members.insert(id);
            }
        }
        self.assignment_epoch = self.group_epoch;
        self.group_changed = true;
        info!(group = %self.id, epoch = self.assignment_epoch, assignor = assignor.name(), members = self.members.len(), "computed a new target assignment");
    }

    /// Moves a member one step towards its target (Kafka's `CurrentAssignmentBuilder`).
    fn reconcile(&mut self, now: u64, member_id: &str, owned: Option<&[(Uuid, Vec<i32>)]>) {
        let Some(m) = self.members.get(member_id) else { return };
        if m.reconciled_to(self.assignment_epoch) {
            return;
        }
        let next = match m.state {
            MemberState::Stable | MemberState::UnreleasedPartitions => self.next_assignment(m, m.epoch, owned),
            MemberState::UnrevokedPartitions => {
                if owns_any(owned, &m.revoking) {
                    return;
                }
                self.next_assignment(m, m.epoch + 1, owned)
            }
        };
        let mut next = next;
        if next.state == MemberState::UnrevokedPartitions {
            if m.state != MemberState::UnrevokedPartitions || m.epoch != next.epoch || m.revoking != next.revoking {
                next.rebalance_deadline = Some(now + timeout(next.rebalance_timeout_ms));
            }
        } else {
            next.rebalance_deadline = None;
        }
        if next.state != m.state || next.epoch != m.epoch {
            tracing::debug!(group = %self.id, member = %member_id, epoch = next.epoch, state = ?next.state, "member reconciled");
        }
        self.put(next);
    }

    fn next_assignment(&self, m: &Member, epoch: i32, owned: Option<&[(Uuid, Vec<i32>)]>) -> Member {
        let target_epoch = self.assignment_epoch;
        let mut assigned = Epochs::new();
        let mut revoking = Epochs::new();
        let mut pending = Epochs::new();
        let mut unreleased = false;
        let topics: BTreeSet<Uuid> = m.target.keys().chain(m.assigned.keys()).copied().collect();
        for t in topics {
            let target = m.target.get(&t).cloned().unwrap_or_default();
            let current = m.assigned.get(&t).cloned().unwrap_or_default();
            for (p, since) in current {
                if target.contains(&p) {
                    assigned.entry(t).or_default().insert(p, since);
                } else {
                    revoking.entry(t).or_default().insert(p, since);
                }
            }
            for p in target {
                if assigned.get(&t).is_some_and(|ps| ps.contains_key(&p)) {
                    continue;
                }
                if self.owners.get(&(t, p)).is_some_and(|o| *o != m.id) {
                    unreleased = true;
                } else {
                    pending.entry(t).or_default().insert(p, target_epoch);
                }
            }
        }
        let mut next = m.clone();
        next.previous_epoch = m.epoch;
        if !revoking.is_empty() && owns_any(owned, &revoking) {
            // Give up first: stay at this epoch until the member acknowledges the revocation.
            next.state = MemberState::UnrevokedPartitions;
            next.epoch = epoch;
            next.assigned = assigned;
            next.revoking = revoking;
        } else {
            for (t, ps) in pending {
                assigned.entry(t).or_default().extend(ps);
            }
            next.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
            next.epoch = target_epoch;
            next.assigned = assigned;
            next.revoking = Epochs::new();
        }
        next
    }
}

/// Kafka 4.4's member epoch check: a rejoin (epoch 0) is always accepted; a newer epoch than
/// the coordinator's is fenced; an older one only if it is the previous epoch and the member
/// owns a subset of its partitions (the response that bumped it was lost).
fn check_epoch(m: &Member, received: i32, owned: Option<&[(Uuid, Vec<i32>)]>) -> Result<(), Failure> {
    if received == 0 {
        return Ok(());
    }
    if received > m.epoch {
        return Err((
            GroupError::FencedMemberEpoch,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                m.epoch
            ),
        ));
    }
    if received < m.epoch && (received != m.previous_epoch || !is_subset(owned, &m.assigned)) {
        return Err((
            GroupError::FencedMemberEpoch,
            format!(
                "The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                m.epoch
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
