//! The controller quorum's replication status, as Kafka's DescribeQuorum reports it for the
//! `__cluster_metadata` log (`kafka-metadata-quorum describe --status / --replication`).
//!
//! Only the Raft leader knows its followers' progress, so the status is built there, from
//! openraft's metrics (term, leader, log end, commit index, each voter's matched index) and from
//! [`Acks`], the wall time of each voter's last successful answer to the leader's replication
//! (AppendEntries, heartbeats included): openraft 0.9's metrics carry no per-follower times.
//!
//! Kafka's offsets are exclusive ends: a log end offset is one past the last entry, and the high
//! watermark one past the last committed entry; Raft indexes here are of the last entry, so both
//! are index + 1.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One voter as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterState {
    pub id: i32,
    /// `host:port` of its controller listener.
    pub addr: String,
    /// One past the last entry it holds (as far as the leader knows), or -1 if unknown.
    pub log_end_offset: i64,
    /// Wall time (ms) of its last answer to the leader, -1 if none yet. The leader: now.
    pub last_fetch_timestamp_ms: i64,
    /// Wall time (ms) at which it last held the leader's whole log, -1 if unknown (a voter that
    /// is behind now: the time it was last caught up is not tracked).
    pub last_caught_up_timestamp_ms: i64,
}

/// The quorum's replication status, from the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    pub leader_id: i32,
    /// Kafka's leader epoch: the Raft term.
    pub leader_epoch: i32,
    pub high_watermark: i64,
    /// In id order, the leader included.
    pub voters: Vec<VoterState>,
}

/// The wall time (ms) of each peer's last successful replication answer, recorded by the
/// leader's network client.
#[derive(Debug, Default)]
pub struct Acks {
    last_ms: Mutex<HashMap<u64, i64>>,
}

impl Acks {
    pub fn record(&self, peer: u64, now_ms: i64) {
        self.last_ms.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, now_ms);
    }

    pub fn last(&self, peer: u64) -> Option<i64> {
        self.last_ms.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).copied()
    }
}

/// What the leader knows, as plain values (so the status is tested without a running Raft).
pub struct LeaderView {
    pub node_id: u64,
    pub term: u64,
    /// Index of the leader's last log entry.
    pub last_log_index: Option<u64>,
    /// Matched index per voter (the leader's own included), `None` for nothing matched yet.
    pub matched: BTreeMap<u64, Option<u64>>,
    /// `host:port` per voter.
    pub addrs: BTreeMap<u64, String>,
}

fn end_offset(index: Option<u64>) -> i64 {
    index.map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1))
}

/// The status from the leader's view at wall time `now_ms`.
pub fn status(v: &LeaderView, acks: &Acks, now_ms: i64) -> QuorumStatus {
    let leader_end = end_offset(v.last_log_index);
    // The commit index is the highest index a majority of voters holds.
    let mut ends: Vec<i64> = v.addrs.keys().map(|id| v.matched.get(id).copied().flatten()).map(end_offset).collect();
    ends.sort_unstable_by(|a, b| b.cmp(a));
    let high_watermark = ends.get(ends.len() / 2).copied().unwrap_or(0);
    let voters = v
        .addrs
        .iter()
        .map(|(&id, addr)| {
            let (end, fetched) = if id == v.node_id {
                (leader_end, now_ms)
            } else {
                let end = v.matched.get(&id).copied().flatten().map_or(-1, |i| end_offset(Some(i)));
                (end, acks.last(id).unwrap_or(-1))
            };
            // Holding the leader's whole log now means it did at its last answer (the log has
            // not grown since it matched).
            let caught_up = if end == leader_end { fetched } else { -1 };
            VoterState {
                id: i32::try_from(id).unwrap_or(i32::MAX),
                addr: addr.clone(),
                log_end_offset: end,
                last_fetch_timestamp_ms: fetched,
                last_caught_up_timestamp_ms: caught_up,
            }
        })
        .collect();
    QuorumStatus {
        leader_id: i32::try_from(v.node_id).unwrap_or(i32::MAX),
        leader_epoch: i32::try_from(v.term).unwrap_or(i32::MAX),
        high_watermark,
        voters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_and_followers_as_kafka_reports_them() {
        let acks = Acks::default();
        acks.record(2, 900);
        acks.record(3, 800);
        let v = LeaderView {
            node_id: 1,
            term: 4,
            last_log_index: Some(9),
            matched: BTreeMap::from([(1, Some(9)), (2, Some(9)), (3, Some(5))]),
            addrs: BTreeMap::from([(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())]),
        };
        let s = status(&v, &acks, 1000);
        assert_eq!((s.leader_id, s.leader_epoch, s.high_watermark), (1, 4, 10));
        let rows: Vec<_> = s
            .voters
            .iter()
            .map(|r| (r.id, r.log_end_offset, r.last_fetch_timestamp_ms, r.last_caught_up_timestamp_ms))
            .collect();
        assert_eq!(rows, vec![(1, 10, 1000, 1000), (2, 10, 900, 900), (3, 6, 800, -1)]);
    }

    #[test]
    fn high_watermark_needs_a_majority() {
        let v = LeaderView {
            node_id: 1,
            term: 1,
            last_log_index: Some(9),
            matched: BTreeMap::from([(1, Some(9)), (2, Some(3)), (3, None)]),
            addrs: BTreeMap::from([(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())]),
        };
        let s = status(&v, &Acks::default(), 5);
        assert_eq!(s.high_watermark, 4);
        assert_eq!(s.voters[2].log_end_offset, -1);
        assert_eq!(s.voters[2].last_fetch_timestamp_ms, -1);
    }
}
