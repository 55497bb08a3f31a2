use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skiff_controller::intent::{MemberState, StoredConsumerGroup, SubscribedTopic};
use uuid::Uuid;

use super::*;

const T1: u128 = 1;
const T2: u128 = 2;

fn tid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn image(topics: &[(&str, u128, i32)]) -> BTreeMap<String, SubscribedTopic> {
    topics
        .iter()
        .map(|(name, id, n)| (name.to_string(), SubscribedTopic { topic_id: tid(*id), partitions: *n }))
        .collect()
}

fn settings() -> ConsumerSettings {
    ConsumerSettings { session_timeout_ms: 45_000, heartbeat_interval_ms: 5_000, default_assignor: Assignor::Uniform }
}

fn join(id: &str, topics: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
        owned: Some(vec![]),
        client_id: format!("client-{id}"),
        client_host: "/127.0.0.1".into(),
        ..Default::default()
    }
}

fn heartbeat(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(owned.iter().map(|(t, ps)| (*t, ps.iter().copied().collect())).collect()),
        client_id: format!("client-{id}"),
        client_host: "/127.0.0.1".into(),
        ..Default::default()
    }
}

impl HeartbeatRequest {
    fn with_owned(mut self, owned: &Assignment) -> Self {
        self.owned = Some(owned.iter().map(|(t, ps)| (*t, ps.iter().copied().collect())).collect());
        self
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn parts(t: u128, ps: &[i32]) -> Assignment {
    BTreeMap::from([(tid(t), ps.iter().copied().collect())])
}

/// A client as the Java consumer behaves: it owns what the last assignment said (revoking
/// before it takes anything new), heartbeats with its epoch and owned partitions, and rejoins
/// with epoch 0 and nothing owned after FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    topics: Vec<String>,
    epoch: i32,
    owned: Assignment,
    /// The last response was lost: the next heartbeat carries every field.
    full_next: bool,
}

impl Client {
    fn new(id: &str, topics: &[&str]) -> Self {
        Self {
            id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            epoch: 0,
            owned: Assignment::new(),
            full_next: false,
        }
    }

    fn request(&self) -> HeartbeatRequest {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if self.epoch == 0 {
            join(&self.id, &topics)
        } else if self.full_next {
            HeartbeatRequest { member_epoch: self.epoch, ..join(&self.id, &topics) }.with_owned(&self.owned)
        } else {
            heartbeat(&self.id, self.epoch, &self.owned)
        }
    }

    fn apply(&mut self, r: &HeartbeatResponse) {
        self.full_next = false;
        match &r.error {
            Some((GroupError::FencedMemberEpoch | GroupError::UnknownMemberId, _)) => {
                self.owned.clear();
                self.epoch = 0;
            }
            Some(e) => panic!("{}: unexpected error {e:?}", self.id),
            None => {
                self.epoch = r.member_epoch;
                if let Some(a) = &r.assignment {
                    self.owned = a.clone();
                }
            }
        }
    }

    fn beat(&mut self, g: &mut ConsumerGroup, now: u64, topics: &BTreeMap<String, SubscribedTopic>) {
        let r = g.heartbeat(now, &self.request(), topics, "unused");
        self.apply(&r);
    }
}

/// No partition is owned by two clients at once.
fn assert_disjoint(clients: &[Client]) {
    let mut seen = BTreeMap::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                if let Some(other) = seen.insert((*t, *p), c.id.clone()) {
                    panic!("partition {t}:{p} owned by both {other} and {}", c.id);
                }
            }
        }
    }
}

/// Heartbeats every client until nothing changes; returns the rounds it took.
fn settle(
    g: &mut ConsumerGroup,
    clients: &mut [Client],
    now: u64,
    topics: &BTreeMap<String, SubscribedTopic>,
) -> usize {
    for round in 1..=20 {
        let before: Vec<(i32, Assignment)> = clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        for c in clients.iter_mut() {
            c.beat(g, now, topics);
        }
        assert_disjoint(clients);
        let after: Vec<(i32, Assignment)> = clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        if before == after && g.state() == ConsumerGroupState::Stable {
            return round;
        }
    }
    panic!("group did not settle: {:?}", g.describe());
}

#[test]
fn a_lone_member_gets_every_partition() {
    let topics = image(&[("t", T1, 4)]);
    let mut g = ConsumerGroup::new("g", settings());
    let r = g.heartbeat(0, &join("a", &["t"]), &topics, "x");
    assert_eq!(r.error, None);
    assert_eq!(r.member_id.as_deref(), Some("a"));
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 5_000);
    assert_eq!(r.assignment, Some(parts(T1, &[0, 1, 2, 3])));
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    assert_eq!((g.group_epoch(), g.assignment_epoch()), (1, 1));
    // A plain heartbeat changes nothing and carries no assignment.
    let r = g.heartbeat(10, &heartbeat("a", 1, &parts(T1, &[0, 1, 2, 3])), &topics, "x");
    assert_eq!((r.member_epoch, r.assignment.clone()), (1, None));
    assert!(g.take_update().is_some(), "the join is persisted");
    let r = g.heartbeat(20, &heartbeat("a", 1, &parts(T1, &[0, 1, 2, 3])), &topics, "x");
    assert_eq!(r.error, None);
    assert_eq!(g.take_update(), None, "a heartbeat that changes nothing writes nothing");
}

#[test]
fn v0_members_get_an_id_from_the_coordinator() {
    let topics = image(&[("t", T1, 1)]);
    let mut g = ConsumerGroup::new("g", settings());
    let r = g.heartbeat(0, &join("", &["t"]), &topics, "fresh-id");
    assert_eq!(r.member_id.as_deref(), Some("fresh-id"));
    assert_eq!(r.member_epoch, 1);
}

#[test]
fn revocation_comes_before_assignment() {
    let topics = image(&[("t", T1, 4)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut a = Client::new("a", &["t"]);
    a.beat(&mut g, 0, &topics);
    assert_eq!((a.epoch, count(&a.owned)), (1, 4));

    // b joins: epoch 2, but every partition is still a's, so b gets nothing yet.
    let mut b = Client::new("b", &["t"]);
    b.beat(&mut g, 1, &topics);
    assert_eq!((b.epoch, count(&b.owned)), (2, 0));
    assert_eq!(g.state(), ConsumerGroupState::Reconciling);
    let d = g.describe();
    assert_eq!(count(&d.members[1].target), 2, "b's target is two partitions");

    // a learns it must give up two partitions; it stays at epoch 1 until it has.
    let r = g.heartbeat(2, &a.request(), &topics, "x");
    assert_eq!(r.member_epoch, 1);
    let kept = r.assignment.clone().expect("revocation");
    assert_eq!(count(&kept), 2);
    // b asks again before a acknowledged: still nothing.
    b.beat(&mut g, 3, &topics);
    assert_eq!(count(&b.owned), 0);
    // a acknowledges (no longer lists the revoked partitions) and moves to epoch 2.
    a.apply(&r);
    a.beat(&mut g, 4, &topics);
    assert_eq!(a.epoch, 2);
    // Now b gets the released partitions.
    b.beat(&mut g, 5, &topics);
    assert_eq!((b.epoch, count(&b.owned)), (2, 2));
    assert_disjoint(&[a.clone(), b.clone()]);
    assert_eq!(g.state(), ConsumerGroupState::Stable);
}

#[test]
fn a_member_that_keeps_reporting_revoked_partitions_waits_then_is_fenced() {
    let topics = image(&[("t", T1, 2)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut a = Client::new("a", &["t"]);
    a.beat(&mut g, 0, &topics);
    let mut b = Client::new("b", &["t"]);
    b.beat(&mut g, 0, &topics);
    // a keeps claiming both partitions: it is never moved on, and b never gets one.
    for t in 1..5 {
        let r = g.heartbeat(t, &heartbeat("a", 1, &parts(T1, &[0, 1])), &topics, "x");
        assert_eq!((r.error.clone(), r.member_epoch), (None, 1));
        b.beat(&mut g, t, &topics);
        assert!(b.owned.is_empty());
    }
    // After the rebalance timeout (30 s) a is fenced, and b can take everything.
    assert!(g.next_deadline().is_some_and(|d| d <= 30_001));
    g.tick(30_001);
    assert_eq!(g.member_count(), 1);
    b.beat(&mut g, 30_002, &topics);
    b.beat(&mut g, 30_003, &topics);
    assert_eq!(count(&b.owned), 2);
    let r = g.heartbeat(30_004, &heartbeat("a", 1, &parts(T1, &[0, 1])), &topics, "x");
    assert_eq!(r.error.map(|e| e.0), Some(GroupError::UnknownMemberId));
}

#[test]
fn epochs_are_fenced_as_kafka_does() {
    let topics = image(&[("t", T1, 2)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut a = Client::new("a", &["t"]);
    a.beat(&mut g, 0, &topics);
    let err = |r: HeartbeatResponse| r.error.map(|e| e.0);
    // Newer than the coordinator's: fenced.
    assert_eq!(err(g.heartbeat(1, &heartbeat("a", 5, &a.owned), &topics, "x")), Some(GroupError::FencedMemberEpoch));
    // b joins, a moves from epoch 1 to 3 (a revokes one partition first).
    let mut b = Client::new("b", &["t"]);
    b.beat(&mut g, 1, &topics);
    let mut clients = vec![a, b];
    settle(&mut g, &mut clients, 2, &topics);
    let a = clients[0].clone();
    assert_eq!(a.epoch, 2);
    // The previous epoch with a subset of its partitions (a lost response) is accepted.
    let r = g.heartbeat(3, &heartbeat("a", 1, &a.owned), &topics, "x");
    assert_eq!((r.error, r.member_epoch), (None, 2));
    // The previous epoch with partitions it does not have is fenced, and so is an older one.
    assert_eq!(
        err(g.heartbeat(4, &heartbeat("a", 1, &parts(T1, &[0, 1])), &topics, "x")),
        Some(GroupError::FencedMemberEpoch)
    );
    // Rejoining with epoch 0 is always accepted and returns the full assignment.
    let r = g.heartbeat(5, &join("a", &["t"]), &topics, "x");
    assert_eq!((r.error, r.member_epoch, r.assignment.map(|a| count(&a))), (None, 2, Some(1)));
    // Unknown members.
    assert_eq!(
        err(g.heartbeat(6, &heartbeat("zz", 2, &Assignment::new()), &topics, "x")),
        Some(GroupError::UnknownMemberId)
    );
}

#[test]
fn leaving_frees_partitions_and_bumps_the_epoch() {
    let topics = image(&[("t", T1, 6)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut clients = vec![Client::new("a", &["t"]), Client::new("b", &["t"]), Client::new("c", &["t"])];
    settle(&mut g, &mut clients, 0, &topics);
    assert!(clients.iter().all(|c| count(&c.owned) == 2));
    let epoch = g.group_epoch();
    let leave = HeartbeatRequest { member_epoch: LEAVE_GROUP_MEMBER_EPOCH, ..heartbeat("a", 0, &Assignment::new()) };
    let r = g.heartbeat(1, &leave, &topics, "x");
    assert_eq!((r.error, r.member_epoch), (None, -1));
    assert_eq!(g.group_epoch(), epoch + 1);
    let mut rest = clients.split_off(1);
    settle(&mut g, &mut rest, 2, &topics);
    assert!(rest.iter().all(|c| count(&c.owned) == 3));
    // Leaving twice: unknown.
    assert_eq!(g.heartbeat(3, &leave, &topics, "x").error.map(|e| e.0), Some(GroupError::UnknownMemberId));
}

#[test]
fn sessions_expire() {
    let topics = image(&[("t", T1, 2)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut clients = vec![Client::new("a", &["t"]), Client::new("b", &["t"])];
    settle(&mut g, &mut clients, 0, &topics);
    // b keeps heartbeating, a goes silent.
    for t in (5_000..=40_000).step_by(5_000) {
        clients[1].beat(&mut g, t, &topics);
        g.tick(t);
    }
    assert_eq!(g.member_count(), 2, "a's session lasts 45 s from its last heartbeat");
    g.tick(44_999);
    assert_eq!(g.member_count(), 2);
    g.tick(45_000);
    assert_eq!(g.member_count(), 1);
    let mut b = vec![clients[1].clone()];
    settle(&mut g, &mut b, 45_001, &topics);
    assert_eq!(count(&b[0].owned), 2);
}

#[test]
fn static_members_can_leave_and_come_back_without_a_rebalance() {
    let topics = image(&[("t", T1, 4)]);
    let mut g = ConsumerGroup::new("g", settings());
    let stat = |id: &str, epoch: i32| HeartbeatRequest {
        instance_id: Some("inst".into()),
        ..if epoch == 0 { join(id, &["t"]) } else { heartbeat(id, epoch, &Assignment::new()) }
    };
    let r = g.heartbeat(0, &stat("a1", 0), &topics, "x");
    assert_eq!(r.member_epoch, 1);
    let mut b = Client::new("b", &["t"]);
    b.beat(&mut g, 0, &topics);
    // Let a1 revoke and settle.
    let mut a_owned = r.assignment.expect("assignment");
    for t in 1..5 {
        let r = g.heartbeat(
            t,
            &HeartbeatRequest {
                instance_id: Some("inst".into()),
                ..heartbeat("a1", g.describe().members[0].member_epoch, &a_owned)
            },
            &topics,
            "x",
        );
        if let Some(a) = r.assignment {
            a_owned = a;
        }
        b.beat(&mut g, t, &topics);
    }
    assert_eq!(count(&a_owned), 2);
    assert_eq!(g.state(), ConsumerGroupState::Stable);
    let epoch = g.group_epoch();

    // Another member id with the same instance while a1 is in: UNRELEASED_INSTANCE_ID.
    assert_eq!(
        g.heartbeat(10, &stat("a2", 0), &topics, "x").error.map(|e| e.0),
        Some(GroupError::UnreleasedInstanceId)
    );
    // a1 leaves temporarily: keeps its partitions, no epoch bump.
    let leave = HeartbeatRequest { member_epoch: LEAVE_GROUP_STATIC_MEMBER_EPOCH, ..stat("a1", 2) };
    let r = g.heartbeat(11, &leave, &topics, "x");
    assert_eq!((r.error, r.member_epoch), (None, -2));
    assert_eq!(g.group_epoch(), epoch);
    // The instance comes back as a2: same partitions, no rebalance.
    let r = g.heartbeat(12, &stat("a2", 0), &topics, "x");
    assert_eq!(r.error, None);
    assert_eq!(r.assignment, Some(a_owned.clone()));
    assert_eq!(g.group_epoch(), epoch);
    // The old id is fenced.
    assert_eq!(g.heartbeat(13, &stat("a1", 2), &topics, "x").error.map(|e| e.0), Some(GroupError::FencedInstanceId));
    assert_eq!(g.member_count(), 2);
}

#[test]
fn subscription_and_topic_changes_rebalance() {
    let mut topics = image(&[("t", T1, 2), ("u", T2, 2)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut clients = vec![Client::new("a", &["t"])];
    settle(&mut g, &mut clients, 0, &topics);
    assert_eq!(clients[0].owned, parts(T1, &[0, 1]));
    // Subscribing to one more topic.
    let mut r = heartbeat("a", clients[0].epoch, &clients[0].owned);
    r.subscribed_topic_names = Some(vec!["t".into(), "u".into()]);
    clients[0].apply(&g.heartbeat(1, &r, &topics, "x"));
    settle(&mut g, &mut clients, 2, &topics);
    assert_eq!(count(&clients[0].owned), 4);
    // A topic grows: the next heartbeat sees it.
    topics.insert("u".into(), SubscribedTopic { topic_id: tid(T2), partitions: 3 });
    settle(&mut g, &mut clients, 3, &topics);
    assert_eq!(count(&clients[0].owned), 5);
    // A topic is deleted: its partitions are revoked.
    topics.remove("t");
    settle(&mut g, &mut clients, 4, &topics);
    assert_eq!(clients[0].owned, parts(T2, &[0, 1, 2]));
}

#[test]
fn regex_subscriptions_match_whole_names() {
    let topics = image(&[("orders", T1, 1), ("orders-eu", T2, 1), ("x-orders", 3, 1)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut req = join("a", &[]);
    req.subscribed_topic_names = None;
    req.subscribed_topic_regex = Some("orders.*".into());
    let r = g.heartbeat(0, &req, &topics, "x");
    let a = r.assignment.expect("assignment");
    assert_eq!(a.keys().copied().collect::<Vec<_>>(), vec![tid(T1), tid(T2)]);
    let mut bad = join("b", &[]);
    bad.subscribed_topic_regex = Some("(".into());
    let before = g.to_stored();
    let r = g.heartbeat(1, &bad, &topics, "x");
    assert_eq!(r.error.map(|e| e.0), Some(GroupError::InvalidRegularExpression));
    assert_eq!(g.to_stored(), before, "a failed request changes nothing");
}

#[test]
fn the_range_assignor_is_used_on_request() {
    let topics = image(&[("t", T1, 5)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut clients = vec![Client::new("a", &["t"]), Client::new("b", &["t"])];
    let mut req = join("a", &["t"]);
    req.server_assignor = Some("range".into());
    clients[0].apply(&g.heartbeat(0, &req, &topics, "x"));
    settle(&mut g, &mut clients, 1, &topics);
    assert_eq!(g.describe().assignor, "range");
    assert_eq!(clients[0].owned, parts(T1, &[0, 1, 2]));
    assert_eq!(clients[1].owned, parts(T1, &[3, 4]));
}

#[test]
fn requests_are_validated_as_kafka_does() {
    let ok = join("a", &["t"]);
    assert_eq!(validate("g", &ok, 1), Ok(()));
    let code = |r: Result<(), Failure>| r.err().map(|e| e.0);
    assert_eq!(code(validate("", &ok, 1)), Some(GroupError::InvalidRequest));
    assert_eq!(code(validate("g", &join("", &["t"]), 1)), Some(GroupError::InvalidRequest), "v1 needs a member id");
    assert_eq!(code(validate("g", &join("", &["t"]), 0)), None, "v0 gets one");
    assert_eq!(
        code(validate("g", &HeartbeatRequest { rebalance_timeout_ms: -1, ..ok.clone() }, 1)),
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { owned: None, ..ok.clone() }, 1)),
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { subscribed_topic_names: None, ..ok.clone() }, 1)),
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { member_epoch: -2, ..ok.clone() }, 1)),
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { member_epoch: -3, ..ok.clone() }, 1)),
        Some(GroupError::InvalidRequest)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { server_assignor: Some("sticky".into()), ..ok.clone() }, 1)),
        Some(GroupError::UnsupportedAssignor)
    );
    assert_eq!(
        code(validate("g", &HeartbeatRequest { instance_id: Some(String::new()), ..ok }, 1)),
        Some(GroupError::InvalidRequest)
    );
}

#[test]
fn offset_commits_and_fetches_check_member_epochs() {
    let topics = image(&[("t", T1, 4)]);
    let mut g = ConsumerGroup::new("g", settings());
    assert_eq!(g.validate_commit("", -1, 9, &[Some((tid(T1), 0))]), Ok(vec![None]), "empty group: anyone");
    let mut clients = vec![Client::new("a", &["t"])];
    settle(&mut g, &mut clients, 0, &topics);
    assert_eq!(g.validate_commit("", -1, 9, &[Some((tid(T1), 0))]), Err(GroupError::UnknownMemberId));
    assert_eq!(g.validate_commit("a", 1, 8, &[]), Err(GroupError::UnsupportedVersion));
    assert_eq!(g.validate_commit("a", 2, 9, &[]), Err(GroupError::StaleMemberEpoch));
    assert_eq!(g.validate_commit("a", 1, 9, &[Some((tid(T1), 0))]), Ok(vec![None]));
    // b joins: a moves to epoch 2 with two partitions it has held since epoch 1.
    clients.push(Client::new("b", &["t"]));
    settle(&mut g, &mut clients, 1, &topics);
    assert_eq!(clients[0].epoch, 2);
    let held: Vec<Option<(Uuid, i32)>> = clients[0].owned[&tid(T1)].iter().map(|p| Some((tid(T1), *p))).collect();
    let b_part = *clients[1].owned[&tid(T1)].iter().next().expect("b has one");
    // Epoch 1 is still fine for partitions a held since epoch 1, not for b's.
    assert_eq!(g.validate_commit("a", 1, 9, &held), Ok(vec![None; held.len()]));
    assert_eq!(
        g.validate_commit("a", 1, 9, &[Some((tid(T1), b_part)), None]),
        Ok(vec![Some(GroupError::StaleMemberEpoch); 2])
    );
    // b got its partitions at epoch 2: an epoch-1 commit is stale.
    assert_eq!(g.validate_commit("b", 2, 9, &[Some((tid(T1), b_part))]), Ok(vec![None]));
    // Fetches.
    assert_eq!(g.validate_fetch(None, -1), Ok(()));
    assert_eq!(g.validate_fetch(Some("a"), 2), Ok(()));
    assert_eq!(g.validate_fetch(Some("a"), 1), Err(GroupError::StaleMemberEpoch));
    assert_eq!(g.validate_fetch(Some("zz"), 1), Err(GroupError::UnknownMemberId));
}

/// Applies every update the group hands out to a stored copy and checks it matches the group.
fn persist(g: &mut ConsumerGroup, stored: &mut StoredConsumerGroup) {
    if let Some(u) = g.take_update() {
        stored.apply(&u);
    }
    assert_eq!(*stored, g.to_stored(), "the updates describe the whole group");
}

#[test]
fn a_reloaded_group_carries_on_where_it_was() {
    let topics = image(&[("t", T1, 6)]);
    let mut g = ConsumerGroup::new("g", settings());
    let mut stored = StoredConsumerGroup::default();
    let mut clients = vec![Client::new("a", &["t"]), Client::new("b", &["t"])];
    for c in clients.iter_mut() {
        c.beat(&mut g, 0, &topics);
        persist(&mut g, &mut stored);
    }
    // Mid-rebalance: a was told to revoke, b waits. The coordinator moves.
    clients[0].beat(&mut g, 1, &topics);
    persist(&mut g, &mut stored);
    let mut moved = ConsumerGroup::load("g", settings(), &stored, 100);
    assert_eq!(moved.to_stored(), g.to_stored());
    assert_eq!(moved.state(), ConsumerGroupState::Reconciling);
    // The members carry on with their epochs: nobody is fenced.
    let rounds = settle(&mut moved, &mut clients, 101, &topics);
    assert!(rounds <= 3, "{rounds}");
    assert!(clients.iter().all(|c| count(&c.owned) == 3));
    // Sessions restarted at load time.
    assert_eq!(moved.next_deadline(), Some(101 + 45_000));
}

/// Randomized: members join, leave, crash, lose responses and change subscriptions while
/// heartbeating in random order; no partition is ever owned by two live clients, every update
/// describes the group, and once things calm down every partition is owned exactly once.
#[test]
fn randomized_reconciliation_never_double_assigns() {
    let seed = seed();
    eprintln!("seed {seed} (SKIFF_TEST_SEED={seed} to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    for _round in 0..40 {
        let topics = image(&[("t", T1, rng.random_range(1..16)), ("u", T2, rng.random_range(1..8))]);
        let mut s = settings();
        if rng.random_bool(0.5) {
            s.default_assignor = Assignor::Range;
        }
        let mut g = ConsumerGroup::new("g", s);
        let mut stored = StoredConsumerGroup::default();
        let mut clients: Vec<Client> = Vec::new();
        let mut last_beat: BTreeMap<String, u64> = BTreeMap::new();
        let mut next_id = 0;
        let mut now = 0u64;
        for _step in 0..300 {
            now += rng.random_range(0..2_000);
            match rng.random_range(0..100) {
                0..8 if clients.len() < 6 => {
                    let subs: &[&str] = match rng.random_range(0..3) {
                        0 => &["t"],
                        1 => &["u"],
                        _ => &["t", "u"],
                    };
                    clients.push(Client::new(&format!("m{next_id}"), subs));
                    next_id += 1;
                }
                8..11 if !clients.is_empty() => {
                    let c = clients.remove(rng.random_range(0..clients.len()));
                    let leave =
                        HeartbeatRequest { member_epoch: LEAVE_GROUP_MEMBER_EPOCH, ..heartbeat(&c.id, 0, &c.owned) };
                    let _ = g.heartbeat(now, &leave, &topics, "x");
                }
                11..13 if !clients.is_empty() => {
                    // A crash: the process is gone; its session expires.
                    clients.remove(rng.random_range(0..clients.len()));
                }
                13..18 if !clients.is_empty() => {
                    // A lost response: the coordinator moved on, the client did not, and (as
                    // the Java client does after a failed heartbeat) sends a full request next.
                    let i = rng.random_range(0..clients.len());
                    let _ = g.heartbeat(now, &clients[i].request(), &topics, "x");
                    clients[i].full_next = true;
                    last_beat.insert(clients[i].id.clone(), now);
                }
                _ if !clients.is_empty() => {
                    let i = rng.random_range(0..clients.len());
                    clients[i].beat(&mut g, now, &topics);
                    last_beat.insert(clients[i].id.clone(), now);
                }
                _ => {}
            }
            // Live clients heartbeat well within their session (the Java client every 5 s).
            for c in clients.iter_mut() {
                if now - last_beat.get(&c.id).copied().unwrap_or(now) > 10_000 {
                    c.beat(&mut g, now, &topics);
                    last_beat.insert(c.id.clone(), now);
                }
            }
            g.tick(now);
            // A client fenced for missing its session or rebalance timeout (several lost
            // responses in a row) is a zombie until its next heartbeat tells it so: the
            // protocol cannot stop it, only commits are fenced. Every member is checked.
            let members: Vec<Client> = clients.iter().filter(|c| g.has_member(&c.id)).cloned().collect();
            assert_disjoint(&members);
            persist(&mut g, &mut stored);
        }
        // Calm: everyone heartbeats every 5 s until the crashed members' sessions are over.
        for _ in 0..10 {
            now += 5_000;
            for c in clients.iter_mut() {
                c.beat(&mut g, now, &topics);
            }
            g.tick(now);
            assert_disjoint(&clients);
        }
        if !clients.is_empty() {
            settle(&mut g, &mut clients, now, &topics);
            persist(&mut g, &mut stored);
            let subscribed: BTreeSet<u128> =
                clients.iter().flat_map(|c| c.topics.iter().map(|t| if t == "t" { T1 } else { T2 })).collect();
            let owned: usize = clients.iter().map(|c| count(&c.owned)).sum();
            let expected: i32 = subscribed
                .iter()
                .map(|t| topics.values().find(|x| x.topic_id == tid(*t)).map_or(0, |x| x.partitions))
                .sum();
            assert_eq!(owned as i32, expected, "every subscribed partition is owned once: {:?}", g.describe());
        }
    }
}

pub(crate) fn seed() -> u64 {
    match std::env::var("SKIFF_TEST_SEED") {
        Ok(s) => s.parse().expect("SKIFF_TEST_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

#[test]
fn stored_member_state_defaults_to_stable() {
    assert_eq!(MemberState::default(), MemberState::Stable);
}

/// Each member's regex resolves only to topics its principal may DESCRIBE (Kafka's
/// `filterTopicDescribeAuthorizedTopics`), even when another member's regex brings the topic
/// into the group; a member loaded from storage and not heard from since keeps only what it had.
#[test]
fn regex_subscriptions_resolve_to_visible_topics_per_member() {
    let mut topics = image(&[("t-a", T1, 2), ("t-b", T2, 2)]);
    let mut g = ConsumerGroup::new("g", settings());
    let regex_join = |id: &str, visible: TopicVisibility| HeartbeatRequest {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some("t-.*".into()),
        visible,
        ..join(id, &[])
    };
    let only_a = TopicVisibility::Only(Arc::new(|t: &str| t == "t-a"));
    let r = g.heartbeat(0, &regex_join("a", only_a.clone()), &topics, "x");
    assert_eq!(r.assignment.expect("assignment"), parts(T1, &[0, 1]));
    let r = g.heartbeat(1, &regex_join("b", TopicVisibility::All), &topics, "x");
    assert!(r.error.is_none(), "{r:?}");
    let (b_epoch, b_owned) = (r.member_epoch, r.assignment.expect("assignment"));
    let targets = |g: &ConsumerGroup| -> BTreeMap<String, Assignment> {
        g.describe().members.into_iter().map(|m| (m.member_id, m.target)).collect()
    };
    let t = targets(&g);
    assert!(!t["a"].contains_key(&tid(T2)), "a may not describe t-b: {t:?}");
    assert_eq!(t["b"].get(&tid(T2)), Some(&BTreeSet::from([0, 1])), "{t:?}");

    // Loaded elsewhere: a's principal is unknown until it heartbeats, so a new matching topic
    // goes to b only, and a keeps t-a.
    let mut moved = ConsumerGroup::load("g", settings(), &g.to_stored(), 100);
    topics.insert("t-c".into(), SubscribedTopic { topic_id: tid(3), partitions: 2 });
    let r = moved.heartbeat(101, &heartbeat("b", b_epoch, &b_owned), &topics, "x");
    assert!(r.error.is_none(), "{r:?}");
    let t = targets(&moved);
    assert!(t["a"].contains_key(&tid(T1)) && t["a"].keys().all(|k| *k == tid(T1)), "{t:?}");
    assert_eq!(t["b"].get(&tid(3)), Some(&BTreeSet::from([0, 1])), "{t:?}");
}
