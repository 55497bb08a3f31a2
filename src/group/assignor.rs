//! Server-side partition assignors of consumer-protocol groups (KIP-848): `uniform` and
//! `range`. Pure functions from the members' subscriptions (and previous targets) to a target
//! assignment; deterministic (members and topics in sorted order, ties broken by member id).
//!
//! * `uniform` (the default, as in Kafka): every subscribed partition goes to exactly one member
//!   subscribed to its topic; partitions stay with their previous target owner where possible
//!   (sticky), and partitions move only to even the counts out: no member can take a partition
//!   from one holding two or more more than itself. With identical subscriptions the counts
//!   differ by at most one.
//! * `range`: per topic, the members subscribed to it in member-id order each get one
//!   contiguous range of partitions, the first `partitions % members` one more (Kafka's range
//!   assignment; members with the same subscriptions get co-partitioned ranges).
//!
//! Cost: `uniform` is O(partitions × members) to place new partitions and O(moves × members ×
//! assigned) to balance, fine for the group sizes a coordinator holds in memory.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// A server-side assignor, selected by a member's `ServerAssignor` (most members' choice wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub const ALL: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The target assignment of every member (each member appears, possibly empty).
    pub fn assign(self, members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        }
    }
}

/// What an assignor knows of a member.
#[derive(Debug, Clone, Default)]
pub struct MemberSpec {
    pub member_id: String,
    /// Subscribed topics (ids of existing topics).
    pub topics: BTreeSet<Uuid>,
    /// Its previous target assignment (for stickiness).
    pub current: Assignment,
}

fn empty_result(members: &[MemberSpec]) -> BTreeMap<String, Assignment> {
    members.iter().map(|m| (m.member_id.clone(), Assignment::new())).collect()
}

fn uniform(members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut result = empty_result(members);
    if members.is_empty() {
        return result;
    }
    let mut counts = vec![0usize; members.len()];
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let eligible = |i: usize, t: &Uuid| members[i].topics.contains(t);

    // 1. Sticky: keep previous targets that are still valid.
    for (i, m) in members.iter().enumerate() {
        for (t, parts) in &m.current {
            let Some(&n) = topics.get(t) else { continue };
            if !eligible(i, t) {
                continue;
            }
            for &p in parts {
                if p < n && !owner.contains_key(&(*t, p)) {
                    owner.insert((*t, p), i);
                    counts[i] += 1;
                }
            }
        }
    }

    // 2. Place the rest, most constrained topics first, each on the least loaded eligible member.
    let mut order: Vec<(usize, Uuid)> = topics
        .keys()
        .map(|t| ((0..members.len()).filter(|&i| eligible(i, t)).count(), *t))
        .filter(|(n, _)| *n > 0)
        .collect();
    order.sort();
    for (_, t) in order {
        for p in 0..topics[&t] {
            if owner.contains_key(&(t, p)) {
                continue;
            }
            let best = (0..members.len()).filter(|&i| eligible(i, &t)).min_by_key(|&i| (counts[i], i));
            if let Some(i) = best {
                owner.insert((t, p), i);
                counts[i] += 1;
            }
        }
    }

    // 3. Balance: move a partition from a member to an eligible one holding at least two fewer.
    // Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut by_load: Vec<usize> = (0..members.len()).collect();
        by_load.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), i));
        let mut moved = false;
        'donors: for &from in &by_load {
            // The donor's partitions, most recently numbered first, so low partitions stay put.
            let held: Vec<(Uuid, i32)> = owner.iter().filter(|(_, o)| **o == from).map(|(k, _)| *k).rev().collect();
            for (t, p) in held {
                let to = (0..members.len())
                    .filter(|&i| i != from && eligible(i, &t) && counts[i] + 1 < counts[from])
                    .min_by_key(|&i| (counts[i], i));
                if let Some(to) = to {
                    owner.insert((t, p), to);
                    counts[from] -= 1;
                    counts[to] += 1;
                    moved = true;
                    break 'donors;
                }
            }
        }
        if !moved {
            break;
        }
    }

    for ((t, p), i) in owner {
        if let Some(a) = result.get_mut(&members[i].member_id) {
            a.entry(t).or_default().insert(p);
        }
    }
    result
}

fn range(members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut result = empty_result(members);
    let mut sorted: Vec<&MemberSpec> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    for (t, &n) in topics {
        let subscribed: Vec<&str> =
            sorted.iter().filter(|m| m.topics.contains(t)).map(|m| m.member_id.as_str()).collect();
        if subscribed.is_empty() || n <= 0 {
            continue;
        }
        let count = subscribed.len() as i32;
        let (quota, extra) = (n / count, n % count);
        let mut start = 0;
        for (i, id) in subscribed.into_iter().enumerate() {
            let len = quota + i32::from((i as i32) < extra);
            if len > 0 {
                let a = result.get_mut(id).expect("every member has an entry");
                a.entry(*t).or_default().extend(start..start + len);
            }
            start += len;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn spec(id: &str, topics: &[u128], current: &[(u128, &[i32])]) -> MemberSpec {
        MemberSpec {
            member_id: id.into(),
            topics: topics.iter().map(|t| topic(*t)).collect(),
            current: current.iter().map(|(t, ps)| (topic(*t), ps.iter().copied().collect())).collect(),
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// Every partition of every subscribed topic is assigned exactly once, to a subscriber.
    fn check_complete(members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>, r: &BTreeMap<String, Assignment>) {
        let mut seen = BTreeSet::new();
        for m in members {
            for (t, ps) in &r[&m.member_id] {
                assert!(m.topics.contains(t), "{} got a topic it does not subscribe to", m.member_id);
                for p in ps {
                    assert!(*p < topics[t]);
                    assert!(seen.insert((*t, *p)), "partition {t}:{p} assigned twice");
                }
            }
        }
        for (t, n) in topics {
            if members.iter().any(|m| m.topics.contains(t)) {
                for p in 0..*n {
                    assert!(seen.contains(&(*t, p)), "partition {t}:{p} unassigned");
                }
            }
        }
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let topics = BTreeMap::from([(topic(1), 12)]);
        let three: Vec<MemberSpec> = ["a", "b", "c"].iter().map(|id| spec(id, &[1], &[])).collect();
        let r = Assignor::Uniform.assign(&three, &topics);
        check_complete(&three, &topics, &r);
        assert!(r.values().all(|a| count(a) == 4), "{r:?}");

        // A fourth member: each of the three gives up exactly one partition.
        let mut four: Vec<MemberSpec> =
            three.iter().map(|m| MemberSpec { current: r[&m.member_id].clone(), ..m.clone() }).collect();
        four.push(spec("d", &[1], &[]));
        let r2 = Assignor::Uniform.assign(&four, &topics);
        check_complete(&four, &topics, &r2);
        assert!(r2.values().all(|a| count(a) == 3), "{r2:?}");
        for id in ["a", "b", "c"] {
            let kept = r2[id][&topic(1)].intersection(&r[id][&topic(1)]).count();
            assert_eq!(kept, 3, "{id} keeps three of its four partitions");
        }

        // A member leaves: only its partitions move.
        let remaining: Vec<MemberSpec> = four
            .iter()
            .filter(|m| m.member_id != "a")
            .map(|m| MemberSpec { current: r2[&m.member_id].clone(), ..m.clone() })
            .collect();
        let r3 = Assignor::Uniform.assign(&remaining, &topics);
        check_complete(&remaining, &topics, &r3);
        for m in &remaining {
            assert!(r2[&m.member_id][&topic(1)].is_subset(&r3[&m.member_id][&topic(1)]));
            assert_eq!(count(&r3[&m.member_id]), 4);
        }
    }

    #[test]
    fn uniform_with_heterogeneous_subscriptions() {
        let topics = BTreeMap::from([(topic(1), 6), (topic(2), 2), (topic(3), 3)]);
        let members =
            vec![spec("a", &[1, 2], &[]), spec("b", &[1], &[]), spec("c", &[2, 3], &[]), spec("d", &[9], &[])];
        let r = Assignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &r);
        assert!(r["d"].is_empty(), "a member subscribed to a missing topic gets nothing");
        let counts: Vec<usize> = ["a", "b", "c"].iter().map(|id| count(&r[*id])).collect();
        assert_eq!(counts.iter().sum::<usize>(), 11);
        assert!(counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1, "{counts:?}");
        // Deterministic.
        assert_eq!(Assignor::Uniform.assign(&members, &topics), r);
    }

    #[test]
    fn uniform_drops_stale_targets() {
        let topics = BTreeMap::from([(topic(1), 2)]);
        // Previous targets name a partition that no longer exists, one of an unsubscribed topic,
        // and one that two members both claim.
        let members = vec![spec("a", &[1], &[(1, &[0, 5]), (2, &[0])]), spec("b", &[1], &[(1, &[0])])];
        let r = Assignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &r);
        assert_eq!(r["a"][&topic(1)], BTreeSet::from([0]));
        assert_eq!(r["b"][&topic(1)], BTreeSet::from([1]));
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let topics = BTreeMap::from([(topic(1), 7), (topic(2), 3)]);
        let members = vec![spec("c", &[1, 2], &[]), spec("a", &[1, 2], &[]), spec("b", &[1], &[])];
        let r = Assignor::Range.assign(&members, &topics);
        check_complete(&members, &topics, &r);
        assert_eq!(r["a"][&topic(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(r["b"][&topic(1)], BTreeSet::from([3, 4]));
        assert_eq!(r["c"][&topic(1)], BTreeSet::from([5, 6]));
        assert_eq!(r["a"][&topic(2)], BTreeSet::from([0, 1]));
        assert_eq!(r["c"][&topic(2)], BTreeSet::from([2]));
        assert!(!r["b"].contains_key(&topic(2)));
        // More members than partitions: the last ones get nothing.
        let few = BTreeMap::from([(topic(1), 1)]);
        let r = Assignor::Range.assign(&members, &few);
        assert_eq!(r["a"][&topic(1)], BTreeSet::from([0]));
        assert!(r["b"].is_empty() && r["c"].is_empty());
    }

    #[test]
    fn names_round_trip() {
        for a in Assignor::ALL {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }
}
