//! The group state machine with plain values: times are milliseconds, ids are strings.

use super::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn settings(delay: u64) -> GroupSettings {
    GroupSettings { initial_rebalance_delay_ms: delay, ..GroupSettings::default() }
}

fn join_req(member_id: &str, client: &str, meta: &'static [u8]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(meta)), ("roundrobin".into(), Bytes::from_static(b"rr"))],
        require_known_member_id: true,
    }
}

fn static_req(member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest { group_instance_id: Some(instance.into()), ..join_req(member_id, "c", b"s") }
}

/// Joins a new dynamic member through MEMBER_ID_REQUIRED; returns its id (the join is held).
fn new_member(g: &mut Group, now: u64, client: &str) -> String {
    let Outcome::Now(r) = g.join(now, join_req("", client, b"m"), &format!("{client}-uuid")) else {
        panic!("expected MEMBER_ID_REQUIRED")
    };
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    let id = r.member_id.clone();
    assert_eq!(id, format!("{client}-{client}-uuid"));
    assert_eq!(g.join(now, join_req(&id, client, b"m"), "unused"), Outcome::Held { member_id: id.clone() });
    id
}

fn joins(effects: &[Effect]) -> BTreeMap<String, JoinResponse> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Join { member_id, response } => Some((member_id.clone(), response.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> BTreeMap<String, SyncResponse> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Sync { member_id, response } => Some((member_id.clone(), response.clone())),
            _ => None,
        })
        .collect()
}

fn persists(effects: &[Effect]) -> Vec<GroupMembership> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { membership, .. } => Some(membership.clone()),
            _ => None,
        })
        .collect()
}

fn sync_req(member_id: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest { member_id: member_id.into(), generation, assignments, ..SyncRequest::default() }
}

/// Leader syncs with an assignment naming each member; followers sync; persist succeeds.
fn sync_all(g: &mut Group, now: u64, members: &[String]) {
    let generation = g.generation();
    let leader = g.leader().expect("leader").to_string();
    let assignments = members.iter().map(|m| (m.clone(), Bytes::from(format!("assigned-{m}")))).collect();
    for m in members.iter().filter(|m| **m != leader) {
        assert_eq!(g.sync(now, sync_req(m, generation, vec![])), Outcome::Held { member_id: m.clone() });
    }
    assert_eq!(g.sync(now, sync_req(&leader, generation, assignments)), Outcome::Held { member_id: leader.clone() });
    let effects = g.take_effects();
    let stored = persists(&effects);
    assert_eq!(stored.len(), 1, "the leader's assignment is persisted before anyone gets it");
    assert!(syncs(&effects).is_empty());
    assert_eq!(stored[0].generation, generation);
    g.persisted(now, generation, true);
    let answered = syncs(&g.take_effects());
    assert_eq!(answered.len(), members.len());
    for m in members {
        assert_eq!(answered[m].error, None);
        assert_eq!(answered[m].assignment, Bytes::from(format!("assigned-{m}")));
    }
    assert_eq!(g.state(), GroupState::Stable);
}

/// When [`stable_group`] is stable.
const T0: u64 = 6_000;

/// A Stable group of `n` dynamic members at generation 1, stable at [`T0`].
fn stable_group(n: usize) -> (Group, Vec<String>) {
    let mut g = Group::new("g", settings(3_000));
    let ids: Vec<String> = (0..n).map(|i| new_member(&mut g, 0, &format!("c{i}"))).collect();
    // Members after the first extend the initial delay once (they all came at 0).
    g.tick(3_000);
    if n > 1 {
        assert!(joins(&g.take_effects()).is_empty());
    }
    g.tick(T0);
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), n);
    sync_all(&mut g, T0, &ids);
    (g, ids)
}

#[test]
fn first_rebalance_waits_for_the_initial_delay_and_gathers_all_joiners() {
    let mut g = Group::new("g", settings(3_000));
    assert_eq!(g.state(), GroupState::Empty);
    let a = new_member(&mut g, 0, "a");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    let b = new_member(&mut g, 1_000, "b");
    g.tick(2_999);
    assert!(joins(&g.take_effects()).is_empty(), "held during the delay");
    g.tick(3_000);
    // b arrived during the delay: one more delay.
    assert!(joins(&g.take_effects()).is_empty());
    assert_eq!(g.next_deadline(), Some(6_000));
    let c = new_member(&mut g, 4_000, "c");
    g.tick(6_000);
    assert!(joins(&g.take_effects()).is_empty(), "c arrived: extended again");
    g.tick(9_000);
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 3);
    assert_eq!(g.generation(), 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.protocol(), Some("range"));
    let leader = g.leader().expect("leader").to_string();
    for (id, r) in &answered {
        assert_eq!(r.error, None);
        assert_eq!(r.generation, 1);
        assert_eq!(r.leader, leader);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.member_id, *id);
        if *id == leader {
            assert_eq!(r.members.len(), 3, "the leader sees every member's subscription");
            assert!(r.members.iter().all(|m| m.metadata == Bytes::from_static(b"m")));
        } else {
            assert!(r.members.is_empty());
        }
    }
    sync_all(&mut g, 9_000, &[a, b, c]);
}

#[test]
fn without_delay_a_lone_member_completes_at_once() {
    let mut g = Group::new("g", settings(0));
    let a = new_member(&mut g, 0, "a");
    let answered = joins(&g.take_effects());
    assert_eq!(answered[&a].generation, 1);
    assert_eq!(answered[&a].members.len(), 1);
    sync_all(&mut g, 0, &[a]);
}

#[test]
fn old_join_versions_get_a_member_id_directly() {
    let mut g = Group::new("g", settings(0));
    let req = JoinRequest { require_known_member_id: false, ..join_req("", "old", b"m") };
    let Outcome::Held { member_id } = g.join(0, req, "x") else { panic!("held") };
    assert_eq!(member_id, "old-x");
    assert_eq!(joins(&g.take_effects())[&member_id].generation, 1);
}

#[test]
fn a_new_member_rebalances_a_stable_group() {
    let (mut g, ids) = stable_group(3);
    assert_eq!(g.heartbeat(T0 + 100, &ids[0], None, 1), Ok(()));
    let d = new_member(&mut g, T0 + 1_000, "d");
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // Old members learn about the rebalance from their heartbeats, then rejoin.
    assert_eq!(g.heartbeat(T0 + 1_100, &ids[0], None, 1), Err(GroupError::RebalanceInProgress));
    assert_eq!(
        g.sync(T0 + 1_100, sync_req(&ids[1], 1, vec![])),
        Outcome::Now(SyncResponse::error(GroupError::RebalanceInProgress))
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            g.join(T0 + 1_200, join_req(id, &format!("c{i}"), b"m"), "-"),
            Outcome::Held { member_id: id.clone() }
        );
    }
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 4, "completes as soon as every member rejoined, not at the timeout");
    assert_eq!(g.generation(), 2);
    let mut all = ids.clone();
    all.push(d);
    sync_all(&mut g, T0 + 1_300, &all);
    assert_eq!(g.heartbeat(T0 + 1_400, &ids[0], None, 1), Err(GroupError::IllegalGeneration));
    assert_eq!(g.heartbeat(T0 + 1_400, &ids[0], None, 2), Ok(()));
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let (mut g, ids) = stable_group(3);
    // ids[0] rejoins with new metadata (subscription change): rebalance.
    let mut req = join_req(&ids[0], "c0", b"new");
    req.protocols.truncate(1);
    assert_eq!(g.join(T0, req, "-"), Outcome::Held { member_id: ids[0].clone() });
    assert_eq!(g.join(T0, join_req(&ids[1], "c1", b"m"), "-"), Outcome::Held { member_id: ids[1].clone() });
    // ids[2] keeps heartbeating but never rejoins.
    for t in [T0 + 5_000, T0 + 10_000, T0 + 15_000, T0 + 20_000, T0 + 25_000] {
        assert_eq!(g.heartbeat(t, &ids[2], None, 1), Err(GroupError::RebalanceInProgress));
        g.tick(t);
    }
    g.tick(T0 + REBALANCE as u64 - 1);
    assert!(joins(&g.take_effects()).is_empty());
    g.tick(T0 + REBALANCE as u64);
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 2);
    assert!(!g.has_member(&ids[2]));
    assert_eq!(g.protocol(), Some("range"), "only the protocol every member supports");
    assert_eq!(g.heartbeat(40_000, &ids[2], None, 2), Err(GroupError::UnknownMemberId));
}

#[test]
fn expired_sessions_leave_and_rebalance() {
    let (mut g, ids) = stable_group(2);
    assert_eq!(g.heartbeat(10_000, &ids[0], None, 1), Ok(()));
    g.tick(T0 + SESSION as u64); // ids[1] last heard at T0
    assert!(!g.has_member(&ids[1]));
    assert!(g.has_member(&ids[0]));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.join(13_100, join_req(&ids[0], "c0", b"m"), "-"), Outcome::Held { member_id: ids[0].clone() });
    assert_eq!(joins(&g.take_effects())[&ids[0]].generation, 2);
    // A member waiting in SyncGroup (its assignment being stored) does not expire.
    let own = vec![(ids[0].clone(), Bytes::from_static(b"a"))];
    assert!(matches!(g.sync(13_200, sync_req(&ids[0], 2, own)), Outcome::Held { .. }));
    assert_eq!(persists(&g.take_effects()).len(), 1);
    g.tick(100_000);
    assert!(g.has_member(&ids[0]));
    g.persisted(100_000, 2, true);
    assert_eq!(syncs(&g.take_effects())[&ids[0]].assignment, Bytes::from_static(b"a"));
    // Once stable, the last member's session ends too: the group becomes Empty and that is stored.
    g.tick(100_000 + SESSION as u64);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.generation(), 3);
    let stored = persists(&g.take_effects());
    assert_eq!(stored.len(), 1);
    assert!(stored[0].members.is_empty());
    assert_eq!(stored[0].generation, 3);
}

#[test]
fn pending_member_ids_expire() {
    let mut g = Group::new("g", settings(0));
    let Outcome::Now(r) = g.join(0, join_req("", "a", b"m"), "u") else { panic!() };
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    g.tick(SESSION as u64);
    assert_eq!(
        g.join(SESSION as u64 + 1, join_req(&r.member_id, "a", b"m"), "-"),
        Outcome::Now(JoinResponse::error(GroupError::UnknownMemberId, &r.member_id))
    );
}

#[test]
fn leave_group_batches_and_reports_per_member() {
    let (mut g, ids) = stable_group(3);
    let results = g
        .leave(T0, &[(ids[0].clone(), None), ("nobody".into(), None), (String::new(), Some("no-such-instance".into()))])
        .expect("group-level ok");
    assert_eq!(results, vec![Ok(()), Err(GroupError::UnknownMemberId), Err(GroupError::UnknownMemberId)]);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.member_count(), 2);
    for (i, id) in ids.iter().enumerate().skip(1) {
        g.join(T0 + 100, join_req(id, &format!("c{i}"), b"m"), "-");
    }
    assert_eq!(joins(&g.take_effects()).len(), 2);
    sync_all(&mut g, T0 + 200, &ids[1..]);
    // Everyone leaves: Empty, stored with no members.
    let r = g.leave(T0 + 1_000, &[(ids[1].clone(), None), (ids[2].clone(), None)]).expect("ok");
    assert_eq!(r, vec![Ok(()), Ok(())]);
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(persists(&g.take_effects()).last().map(|m| m.members.len()), Some(0));
}

#[test]
fn leaving_while_held_answers_the_held_join() {
    let mut g = Group::new("g", settings(3_000));
    let a = new_member(&mut g, 0, "a");
    let b = new_member(&mut g, 0, "b");
    g.leave(100, &[(a.clone(), None)]).expect("ok");
    let answered = joins(&g.take_effects());
    assert_eq!(answered[&a].error, Some(GroupError::UnknownMemberId));
    g.tick(3_000); // b joined during the delay: extended once
    assert!(joins(&g.take_effects()).is_empty());
    g.tick(6_000);
    let answered = joins(&g.take_effects());
    assert_eq!(answered.keys().collect::<Vec<_>>(), vec![&b]);
}

#[test]
fn protocol_checks() {
    let (mut g, ids) = stable_group(2);
    let mut other_type = join_req("", "x", b"m");
    other_type.protocol_type = "connect".into();
    assert_eq!(
        g.join(1, other_type, "u"),
        Outcome::Now(JoinResponse::error(GroupError::InconsistentGroupProtocol, ""))
    );
    let mut other_assignor = join_req("", "x", b"m");
    other_assignor.protocols = vec![("sticky".into(), Bytes::new())];
    assert_eq!(
        g.join(1, other_assignor, "u"),
        Outcome::Now(JoinResponse::error(GroupError::InconsistentGroupProtocol, ""))
    );
    let mut no_protocols = join_req("", "x", b"m");
    no_protocols.protocols.clear();
    assert!(matches!(
        g.join(1, no_protocols, "u"),
        Outcome::Now(JoinResponse { error: Some(GroupError::InconsistentGroupProtocol), .. })
    ));
    let mut short_session = join_req("", "x", b"m");
    short_session.session_timeout_ms = 10;
    assert!(matches!(
        g.join(1, short_session, "u"),
        Outcome::Now(JoinResponse { error: Some(GroupError::InvalidSessionTimeout), .. })
    ));
    let sync = SyncRequest { protocol_name: Some("roundrobin".into()), ..sync_req(&ids[0], 1, vec![]) };
    assert_eq!(g.sync(1, sync), Outcome::Now(SyncResponse::error(GroupError::InconsistentGroupProtocol)));
    assert_eq!(
        g.sync(1, sync_req(&ids[0], 7, vec![])),
        Outcome::Now(SyncResponse::error(GroupError::IllegalGeneration))
    );
    assert_eq!(
        g.sync(1, sync_req("nobody", 1, vec![])),
        Outcome::Now(SyncResponse::error(GroupError::UnknownMemberId))
    );
}

#[test]
fn stable_follower_rejoining_with_same_metadata_does_not_rebalance() {
    let (mut g, ids) = stable_group(2);
    let follower = ids.iter().find(|i| Some(i.as_str()) != g.leader()).expect("follower").clone();
    let Outcome::Now(r) = g.join(T0, join_req(&follower, "c", b"m"), "-") else { panic!("answered at once") };
    assert_eq!((r.error, r.generation), (None, 1));
    assert_eq!(g.state(), GroupState::Stable);
    // The leader rejoining asks for a new assignment.
    let leader = g.leader().expect("leader").to_string();
    assert!(matches!(g.join(T0, join_req(&leader, "c", b"m"), "-"), Outcome::Held { .. }));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn static_member_restart_takes_over_without_rebalance() {
    let mut g = Group::new("g", settings(0));
    let Outcome::Held { member_id: old } = g.join(0, static_req("", "inst-1"), "u1") else { panic!() };
    assert_eq!(old, "inst-1-u1", "static members join without MEMBER_ID_REQUIRED");
    g.take_effects();
    sync_all(&mut g, 0, std::slice::from_ref(&old));
    let Outcome::Held { member_id: other } = g.join(10, static_req("", "inst-2"), "u2") else { panic!() };
    g.join(10, static_req(&old, "inst-1"), "-");
    g.take_effects();
    sync_all(&mut g, 10, &[old.clone(), other.clone()]);
    let generation = g.generation();
    let leader = g.leader().expect("leader").to_string();
    let follower_instance = if leader == old { "inst-2" } else { "inst-1" };
    let follower_old = if leader == old { other.clone() } else { old.clone() };
    // The follower restarts (new process, no member id): replaces its old id.
    let Outcome::Now(r) = g.join(20, static_req("", follower_instance), "u3") else { panic!("no rebalance") };
    assert_eq!(r.error, None);
    assert_eq!(r.generation, generation);
    assert_eq!(r.member_id, format!("{follower_instance}-u3"));
    assert!(!r.skip_assignment);
    assert_eq!(g.state(), GroupState::Stable);
    assert_eq!(persists(&g.take_effects()).len(), 1, "the new member id is stored");
    // It gets its old assignment back.
    let Outcome::Now(s) = g.sync(
        21,
        SyncRequest { group_instance_id: Some(follower_instance.into()), ..sync_req(&r.member_id, generation, vec![]) },
    ) else {
        panic!()
    };
    assert_eq!(s.assignment, Bytes::from(format!("assigned-{follower_old}")));
    // The old incarnation is fenced.
    assert_eq!(g.heartbeat(22, &follower_old, Some(follower_instance), generation), Err(GroupError::FencedInstanceId));
    assert_eq!(
        g.check_commit(22, &follower_old, Some(follower_instance), generation),
        Err(GroupError::FencedInstanceId)
    );
    // A static leader restart answers with the members and skip_assignment.
    let leader_instance = if leader == old { "inst-1" } else { "inst-2" };
    let Outcome::Now(r) = g.join(30, static_req("", leader_instance), "u4") else { panic!("no rebalance") };
    assert!(r.skip_assignment);
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.members.len(), 2);
    // Removing a static member by instance id alone (admin API).
    let res = g.leave(40, &[(String::new(), Some(leader_instance.into()))]).expect("ok");
    assert_eq!(res, vec![Ok(())]);
    assert_eq!(g.member_count(), 1);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn static_member_with_new_metadata_rebalances() {
    let mut g = Group::new("g", settings(0));
    let Outcome::Held { member_id: old } = g.join(0, static_req("", "inst-1"), "u1") else { panic!() };
    g.take_effects();
    sync_all(&mut g, 0, std::slice::from_ref(&old));
    let mut req = static_req("", "inst-1");
    req.protocols = vec![("range".into(), Bytes::from_static(b"changed"))];
    assert!(matches!(g.join(5, req, "u2"), Outcome::Held { .. }));
    let answered = joins(&g.take_effects());
    assert_eq!(answered["inst-1-u2"].generation, 2);
}

#[test]
fn followers_that_never_sync_are_removed() {
    let mut g = Group::new("g", settings(0));
    let a = new_member(&mut g, 0, "a");
    g.take_effects();
    let b = new_member(&mut g, 1, "b");
    g.join(1, join_req(&a, "a", b"m"), "-");
    assert_eq!(joins(&g.take_effects()).len(), 2);
    let leader = g.leader().expect("leader").to_string();
    let follower = if leader == a { b.clone() } else { a.clone() };
    let assignments = vec![(a.clone(), Bytes::from_static(b"x")), (b.clone(), Bytes::from_static(b"y"))];
    g.sync(2, sync_req(&leader, 2, assignments));
    g.take_effects();
    g.persisted(2, 2, true);
    assert_eq!(g.state(), GroupState::Stable);
    // The follower keeps heartbeating but never sends SyncGroup.
    g.heartbeat(20_000, &follower, None, 2).expect("heartbeat");
    g.heartbeat(25_000, &leader, None, 2).expect("heartbeat");
    g.tick(1 + REBALANCE as u64);
    assert!(!g.has_member(&follower));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_failed_persist_gives_nobody_the_assignment() {
    let mut g = Group::new("g", settings(0));
    let a = new_member(&mut g, 0, "a");
    g.take_effects();
    g.sync(1, sync_req(&a, 1, vec![(a.clone(), Bytes::from_static(b"x"))]));
    assert_eq!(persists(&g.take_effects()).len(), 1);
    g.persisted(2, 1, false);
    let answered = syncs(&g.take_effects());
    assert_eq!(answered[&a].error, Some(GroupError::CoordinatorNotAvailable));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    // A stale persist result for an older generation is ignored.
    g.persisted(3, 0, true);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
}

#[test]
fn offset_commit_checks() {
    let mut g = Group::new("g", settings(0));
    assert_eq!(g.check_commit(0, "", None, -1), Ok(()), "simple commit to an empty group");
    assert_eq!(g.check_commit(0, "m", None, 1), Err(GroupError::UnknownMemberId));
    let a = new_member(&mut g, 0, "a");
    g.take_effects();
    assert_eq!(
        g.check_commit(0, "", None, -1),
        Err(GroupError::UnknownMemberId),
        "only members commit to a live group"
    );
    assert_eq!(g.check_commit(0, &a, None, 1), Err(GroupError::RebalanceInProgress), "awaiting sync");
    sync_all(&mut g, 0, std::slice::from_ref(&a));
    assert_eq!(g.check_commit(0, &a, None, 1), Ok(()));
    assert_eq!(g.check_commit(0, &a, None, 0), Err(GroupError::IllegalGeneration));
    // During PreparingRebalance the current generation may still commit (before rejoining).
    new_member(&mut g, 1, "b");
    assert_eq!(g.check_commit(2, &a, None, 1), Ok(()));
}

/// TxnOffsetCommit (Kafka's `validateOffsetCommit` with `isTransactional`): no member and no
/// generation (v0-2) is accepted in any state, including while the group completes a rebalance;
/// a named member is checked as for OffsetCommit.
#[test]
fn transactional_offset_commit_checks() {
    let mut g = Group::new("g", settings(0));
    assert_eq!(g.check_txn_commit(0, "someone", None, -1), Ok(()), "an empty group takes any producer");
    let a = new_member(&mut g, 0, "a");
    g.take_effects();
    assert_eq!(g.check_txn_commit(0, "", None, -1), Ok(()), "v0-2 carry no member");
    assert_eq!(g.check_txn_commit(0, &a, None, 1), Ok(()), "not refused while completing the rebalance");
    assert_eq!(g.check_txn_commit(0, "stranger", None, 1), Err(GroupError::UnknownMemberId));
    sync_all(&mut g, 0, std::slice::from_ref(&a));
    assert_eq!(g.check_txn_commit(0, &a, None, 0), Err(GroupError::IllegalGeneration));
    assert_eq!(g.check_txn_commit(0, &a, None, 1), Ok(()));
    // OffsetCommit's rules are unchanged.
    assert_eq!(g.check_commit(0, "", None, -1), Err(GroupError::UnknownMemberId));
}

#[test]
fn dead_groups_refuse_everything() {
    let (mut g, ids) = stable_group(1);
    assert_eq!(g.mark_dead(), Err(GroupError::NonEmptyGroup));
    g.leave(1, &[(ids[0].clone(), None)]).expect("ok");
    assert_eq!(g.mark_dead(), Ok(()));
    assert!(matches!(
        g.join(2, join_req("", "a", b"m"), "u"),
        Outcome::Now(JoinResponse { error: Some(GroupError::CoordinatorNotAvailable), .. })
    ));
    assert_eq!(g.heartbeat(2, &ids[0], None, 1), Err(GroupError::CoordinatorNotAvailable));
    g.revive();
    assert_eq!(g.state(), GroupState::Empty);
}

#[test]
fn load_restores_a_stable_group() {
    let (g, ids) = stable_group(2);
    let m = g.membership();
    let mut restored = Group::load("g", settings(3_000), &m, 50_000);
    assert_eq!(restored.state(), GroupState::Stable);
    assert_eq!(restored.generation(), 1);
    assert_eq!(restored.leader(), g.leader());
    // Members carry on heartbeating at the same generation and get their assignment.
    assert_eq!(restored.heartbeat(50_001, &ids[0], None, 1), Ok(()));
    let Outcome::Now(s) = restored.sync(50_002, sync_req(&ids[1], 1, vec![])) else { panic!() };
    assert_eq!(s.assignment, Bytes::from(format!("assigned-{}", ids[1])));
    // Sessions restart at load time.
    restored.tick(50_002 + SESSION as u64);
    assert!(!restored.has_member(&ids[1]));
    let empty = GroupMembership { generation: 7, protocol_type: Some("consumer".into()), ..GroupMembership::default() };
    let e = Group::load("g", settings(0), &empty, 0);
    assert_eq!((e.state(), e.generation()), (GroupState::Empty, 7));
}

#[test]
fn describe_shows_metadata_only_when_stable() {
    let (mut g, _) = stable_group(2);
    assert!(g.describe().iter().all(|m| m.metadata == Bytes::from_static(b"m") && !m.assignment.is_empty()));
    new_member(&mut g, T0, "z");
    assert!(g.describe().iter().all(|m| m.metadata.is_empty() && m.assignment.is_empty()));
}

#[test]
fn consumer_subscriptions_parse() {
    // version 1, topics ["ab", "c"], then user data and more (ignored).
    let bytes = [0, 1, 0, 0, 0, 2, 0, 2, b'a', b'b', 0, 1, b'c', 0xff, 0xff, 0xff, 0xff];
    assert_eq!(parse_subscription_topics(&bytes), vec!["ab".to_string(), "c".to_string()]);
    assert_eq!(parse_subscription_topics(&[0, 1, 0, 0, 0, 9, 0, 5, b'x']), Vec::<String>::new());
    assert!(parse_subscription_topics(&[]).is_empty());
}

// ---- rejoins of known members (issue #10): the join phase ends once every member is back ----
//
// The bug bit when the JoinGroup that starts the rebalance is itself the last one missing (a
// lone member, from Stable or CompletingRebalance, fresh or reloaded): those tests failed before
// the fix. With several members the last rejoin arrives in PreparingRebalance, which always
// checked; those tests pin that behaviour (and the pending-id, leave and expiry paths) down.

/// A known member's JoinGroup with subscription `meta` (a changed subscription when not `m`).
fn rejoin(g: &mut Group, now: u64, id: &str, meta: &'static [u8]) -> Outcome<JoinResponse> {
    g.join(now, join_req(id, "c", meta), "-")
}

#[test]
fn a_lone_leader_changing_its_subscription_rebalances_at_once() {
    // One consumer subscribes to more topics: it is every member, so nothing is left to wait
    // for (the bug: the join waited for the 30 s rebalance timeout).
    let (mut g, ids) = stable_group(1);
    let a = &ids[0];
    assert_eq!(rejoin(&mut g, T0 + 1_000, a, b"a+b"), Outcome::Held { member_id: a.clone() });
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 1, "answered without waiting for the rebalance timeout");
    assert_eq!(answered[a].generation, 2);
    assert_eq!(answered[a].leader, *a);
    assert_eq!(answered[a].members[0].metadata, Bytes::from_static(b"a+b"), "the leader sees the new subscription");
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    sync_all(&mut g, T0 + 1_001, &ids);
}

#[test]
fn a_reloaded_lone_member_rejoining_rebalances_at_once() {
    // After a coordinator failover the group is rebuilt Stable; its member's rejoin (e.g. a
    // regex subscription that matched a new topic) must not wait either.
    let (g, ids) = stable_group(1);
    let mut g = Group::load("g", settings(3_000), &g.membership(), 50_000);
    assert_eq!(rejoin(&mut g, 50_001, &ids[0], b"m"), Outcome::Held { member_id: ids[0].clone() });
    assert_eq!(joins(&g.take_effects())[&ids[0]].generation, 2);
}

#[test]
fn every_member_rejoining_a_stable_group_completes_with_the_last_one() {
    let (mut g, ids) = stable_group(3);
    let leader = g.leader().expect("leader").to_string();
    let followers: Vec<String> = ids.iter().filter(|i| **i != leader).cloned().collect();
    assert_eq!(rejoin(&mut g, T0 + 1_000, &leader, b"a+b"), Outcome::Held { member_id: leader.clone() });
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(T0 + 1_100, &followers[0], None, 1), Err(GroupError::RebalanceInProgress));
    assert_eq!(rejoin(&mut g, T0 + 1_200, &followers[0], b"a+b"), Outcome::Held { member_id: followers[0].clone() });
    assert!(joins(&g.take_effects()).is_empty(), "one member has not rejoined yet");
    g.tick(T0 + 1_300);
    assert!(joins(&g.take_effects()).is_empty());
    assert_eq!(rejoin(&mut g, T0 + 1_400, &followers[1], b"a+b"), Outcome::Held { member_id: followers[1].clone() });
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 3, "the last rejoin completes the join phase");
    assert!(answered.values().all(|r| r.error.is_none() && r.generation == 2));
    assert_eq!(answered[&leader].members.len(), 3);
    sync_all(&mut g, T0 + 1_500, &ids);
}

#[test]
fn a_follower_changing_its_subscription_rebalances_once_the_leader_rejoins() {
    let (mut g, ids) = stable_group(2);
    let leader = g.leader().expect("leader").to_string();
    let follower = ids.iter().find(|i| **i != leader).expect("follower").clone();
    assert_eq!(rejoin(&mut g, T0 + 1_000, &follower, b"new"), Outcome::Held { member_id: follower.clone() });
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert!(joins(&g.take_effects()).is_empty(), "the leader has not rejoined");
    assert_eq!(g.heartbeat(T0 + 1_100, &leader, None, 1), Err(GroupError::RebalanceInProgress));
    assert_eq!(rejoin(&mut g, T0 + 1_200, &leader, b"m"), Outcome::Held { member_id: leader.clone() });
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 2);
    let seen: BTreeMap<String, Bytes> =
        answered[&leader].members.iter().map(|m| (m.member_id.clone(), m.metadata.clone())).collect();
    assert_eq!(seen[&follower], Bytes::from_static(b"new"));
}

#[test]
fn rejoining_with_a_new_subscription_while_completing_rebalances_at_once() {
    // A lone member in CompletingRebalance (joined, not yet synced) changes its subscription.
    let mut g = Group::new("g", settings(0));
    let a = new_member(&mut g, 0, "a");
    assert_eq!(joins(&g.take_effects())[&a].generation, 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(rejoin(&mut g, 10, &a, b"a+b"), Outcome::Held { member_id: a.clone() });
    let answered = joins(&g.take_effects());
    assert_eq!(answered[&a].generation, 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    sync_all(&mut g, 11, &[a]);
}

#[test]
fn rejoining_while_completing_answers_held_syncs_and_completes_when_all_rejoined() {
    let mut g = Group::new("g", settings(3_000));
    let ids = vec![new_member(&mut g, 0, "a"), new_member(&mut g, 0, "b")];
    g.tick(3_000);
    g.tick(6_000);
    assert_eq!(joins(&g.take_effects()).len(), 2);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    let leader = g.leader().expect("leader").to_string();
    let follower = ids.iter().find(|i| **i != leader).expect("follower").clone();
    assert_eq!(g.sync(6_100, sync_req(&follower, 1, vec![])), Outcome::Held { member_id: follower.clone() });
    // The leader's subscription changed before it assigned: everyone rejoins.
    assert_eq!(rejoin(&mut g, 6_200, &leader, b"a+b"), Outcome::Held { member_id: leader.clone() });
    let effects = g.take_effects();
    assert_eq!(syncs(&effects)[&follower].error, Some(GroupError::RebalanceInProgress));
    assert!(joins(&effects).is_empty());
    assert_eq!(rejoin(&mut g, 6_300, &follower, b"m"), Outcome::Held { member_id: follower.clone() });
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 2);
    assert_eq!(g.generation(), 2);
    sync_all(&mut g, 6_400, &ids);
}

#[test]
fn a_rejoin_waits_for_a_pending_member_id() {
    // Kafka's hasAllMembersJoined also waits for ids handed out with MEMBER_ID_REQUIRED.
    let (mut g, ids) = stable_group(1);
    let Outcome::Now(r) = g.join(T0, join_req("", "z", b"m"), "u") else { panic!("member id required") };
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    assert_eq!(g.state(), GroupState::Stable, "a pending member id does not rebalance");
    assert_eq!(rejoin(&mut g, T0 + 100, &ids[0], b"a+b"), Outcome::Held { member_id: ids[0].clone() });
    assert!(joins(&g.take_effects()).is_empty());
    assert_eq!(
        g.join(T0 + 200, join_req(&r.member_id, "z", b"m"), "-"),
        Outcome::Held { member_id: r.member_id.clone() }
    );
    let answered = joins(&g.take_effects());
    assert_eq!(answered.len(), 2);
    assert_eq!(answered[&ids[0]].generation, 2);
}

#[test]
fn a_rejoin_completes_when_the_pending_member_id_expires() {
    let (mut g, ids) = stable_group(1);
    let Outcome::Now(r) = g.join(T0, join_req("", "z", b"m"), "u") else { panic!("member id required") };
    assert_eq!(r.error, Some(GroupError::MemberIdRequired));
    assert_eq!(rejoin(&mut g, T0 + 100, &ids[0], b"a+b"), Outcome::Held { member_id: ids[0].clone() });
    g.tick(T0 + SESSION as u64);
    assert_eq!(joins(&g.take_effects())[&ids[0]].generation, 2);
}

#[test]
fn the_last_missing_member_leaving_or_expiring_completes_the_join() {
    // Leave: the member that had not rejoined leaves.
    let (mut g, ids) = stable_group(2);
    assert_eq!(rejoin(&mut g, T0 + 100, &ids[0], b"a+b"), Outcome::Held { member_id: ids[0].clone() });
    g.leave(T0 + 200, &[(ids[1].clone(), None)]).expect("ok");
    let answered = joins(&g.take_effects());
    assert_eq!(answered.keys().collect::<Vec<_>>(), vec![&ids[0]]);
    assert_eq!(answered[&ids[0]].generation, 2);
    // Session expiry: the member that had not rejoined stops heartbeating.
    let (mut g, ids) = stable_group(2);
    assert_eq!(rejoin(&mut g, T0 + 100, &ids[0], b"a+b"), Outcome::Held { member_id: ids[0].clone() });
    g.tick(T0 + SESSION as u64);
    assert!(!g.has_member(&ids[1]));
    assert_eq!(joins(&g.take_effects())[&ids[0]].generation, 2);
}
