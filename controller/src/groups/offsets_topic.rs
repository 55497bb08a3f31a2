//! The `__consumer_offsets` view: each coordinator shard's group state as a compacted log.
//!
//! Kafka stores group state as records in `__consumer_offsets` partition `shard_for(group)`
//! (committed offsets, group metadata), and tools and lag monitors read that topic. Skiff keeps
//! the state in the metadata instead (`groups.rs`), so this module gives every durable write a
//! place in a per-shard log, as Kafka's log would after compaction:
//!
//! ```text
//!   shard 7:  end_offset = 12
//!     live (derived)   3: Offset(g, t, 0)    8: Group(g)    11: Offset(g, t, 1)
//!     tombstones       9: Offset(h, t, 0)               (kept: the newest TOMBSTONES_PER_SHARD)
//!   a Fetch of partition 7 from offset 4 reads 8, 9, 11 in offset order; 4..7 and 10 are gaps
//! ```
//!
//! * Every write of a key (an offset commit per partition, a stored membership) takes the
//!   shard's next record offset; the key's previous record disappears, as compaction removes it.
//!   The offset of the current value is stored with the value (`CommittedOffset::record_offset`,
//!   `StoredGroup::metadata_record_offset`); `live` is derived from those and rebuilt on load.
//! * A deletion (DeleteGroups, OffsetDelete, a classic group becoming a consumer group) takes a
//!   record offset for a tombstone (null value). Kafka keeps a tombstone for
//!   `delete.retention.ms` (24 h) after cleaning; group deletions carry no timestamp, so here
//!   the bound is a count: the newest [`TOMBSTONES_PER_SHARD`] tombstones of each shard are
//!   kept. A reader that falls further behind than that may miss a deletion, the hazard
//!   Kafka's readers have after 24 h. A tombstone older than a later value of its key is
//!   harmless (the reader sees the deletion, then the value) and is left until evicted.
//! * Only the current value of each key is kept (no history), so memory is one index entry per
//!   committed offset and group, plus the bounded tombstones.
//!
//! Invariants: offsets in a shard are unique and increasing in apply order, deterministic
//! (counters only, no clock); `end_offset` is greater than every record offset of the shard;
//! every live value's record offset is in `live` under its key, and nothing else is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CommittedOffset, GroupMembership, GroupsState};

/// Tombstones kept per shard (see the module docs).
pub const TOMBSTONES_PER_SHARD: usize = 1000;

/// The key of one record, as Kafka keys `__consumer_offsets` records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKey {
    /// `OffsetCommitKey`: one committed offset.
    Offset { group: String, topic: String, partition: i32 },
    /// `GroupMetadataKey`: a classic group's membership.
    Group { group: String },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// A deleted key, shown with a null value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub key: RecordKey,
    pub timestamp_ms: i64,
}

/// One shard's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardLog {
    /// The next record offset: the partition's high watermark.
    pub end_offset: i64,
    /// The newest timestamp written to the shard; tombstones carry it (deletions have no time).
    pub max_timestamp_ms: i64,
    /// Deleted keys by record offset, oldest first, at most [`TOMBSTONES_PER_SHARD`].
    pub tombstones: BTreeMap<i64, Tombstone>,
    /// Live keys by the record offset of their current value. Derived from the group state
    /// (rebuilt on load), so not stored.
    #[serde(skip)]
    pub(crate) live: BTreeMap<i64, RecordKey>,
}

impl ShardLog {
    /// Records a new value of `key` (whose previous value, if any, was at `previous`) and
    /// returns its record offset.
    pub(crate) fn write(&mut self, key: RecordKey, previous: Option<i64>, timestamp_ms: i64) -> i64 {
        if let Some(p) = previous {
            self.live.remove(&p);
        }
        let offset = self.next(timestamp_ms);
        self.live.insert(offset, key);
        offset
    }

    /// Records the deletion of `key`, whose value was at `previous`.
    pub(crate) fn delete(&mut self, key: RecordKey, previous: i64) {
        self.live.remove(&previous);
        let timestamp_ms = self.max_timestamp_ms;
        let offset = self.next(timestamp_ms);
        self.tombstones.insert(offset, Tombstone { key, timestamp_ms });
        while self.tombstones.len() > TOMBSTONES_PER_SHARD {
            self.tombstones.pop_first();
        }
    }

    fn next(&mut self, timestamp_ms: i64) -> i64 {
        let offset = self.end_offset;
        self.end_offset += 1;
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        offset
    }

    /// The keys of records at offsets `>= from`, in offset order: `(offset, key, Some(ts))` for
    /// live keys (the value is in the group state), `(offset, key, None)` with the tombstone.
    pub fn entries_from(&self, from: i64) -> impl Iterator<Item = LogEntry<'_>> {
        let mut live = self.live.range(from..).peekable();
        let mut dead = self.tombstones.range(from..).peekable();
        std::iter::from_fn(move || {
            let take_live = match (live.peek(), dead.peek()) {
                (Some((l, _)), Some((d, _))) => l < d,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            Some(if take_live {
                let (offset, key) = live.next()?;
                LogEntry { offset: *offset, key, tombstone: None }
            } else {
                let (offset, t) = dead.next()?;
                LogEntry { offset: *offset, key: &t.key, tombstone: Some(t) }
            })
        })
    }

    /// Number of live keys (for tests and metrics).
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// One record of a shard's log, before its value is looked up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogEntry<'a> {
    pub offset: i64,
    pub key: &'a RecordKey,
    /// `Some` for a deleted key.
    pub tombstone: Option<&'a Tombstone>,
}

/// One record of the view with its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewRecord<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: &'a RecordKey,
    pub value: RecordValue<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordValue<'a> {
    Offset(&'a CommittedOffset),
    Group(&'a GroupMembership),
    /// A deleted key (null value).
    Tombstone,
}

impl GroupsState {
    /// The high watermark of `shard`'s view.
    pub fn offsets_topic_end(&self, shard: u32) -> i64 {
        self.offsets_topic.get(&shard).map_or(0, |l| l.end_offset)
    }

    /// The records of `shard`'s view at offsets `>= from`, in offset order, with their values.
    pub fn offsets_topic_records(&self, shard: u32, from: i64) -> impl Iterator<Item = ViewRecord<'_>> {
        self.offsets_topic.get(&shard).into_iter().flat_map(move |log| {
            log.entries_from(from).filter_map(move |e| {
                if let Some(t) = e.tombstone {
                    return Some(ViewRecord {
                        offset: e.offset,
                        timestamp_ms: t.timestamp_ms,
                        key: e.key,
                        value: RecordValue::Tombstone,
                    });
                }
                // A live entry always has its value (module invariant); checked, not assumed.
                let group = self.groups.get(e.key.group())?;
                let (timestamp_ms, value) = match e.key {
                    RecordKey::Offset { topic, partition, .. } => {
                        let o = group.offsets.get(topic)?.get(partition)?;
                        (o.record_offset == e.offset).then_some((o.commit_timestamp_ms, RecordValue::Offset(o)))?
                    }
                    RecordKey::Group { .. } => {
                        let m = group.membership.as_ref()?;
                        (group.metadata_record_offset == Some(e.offset))
                            .then_some((m.timestamp_ms, RecordValue::Group(m)))?
                    }
                };
                Some(ViewRecord { offset: e.offset, timestamp_ms, key: e.key, value })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> RecordKey {
        RecordKey::Offset { group: "g".into(), topic: "t".into(), partition: p }
    }

    #[test]
    fn rewrites_supersede_and_deletions_leave_tombstones() {
        let mut log = ShardLog::default();
        let a = log.write(key(0), None, 10);
        let b = log.write(key(1), None, 11);
        let a2 = log.write(key(0), Some(a), 12);
        log.delete(key(1), b);
        assert_eq!((a, b, a2, log.end_offset), (0, 1, 2, 4));
        let all: Vec<_> = log.entries_from(0).map(|e| (e.offset, e.key.clone(), e.tombstone.is_some())).collect();
        assert_eq!(all, vec![(2, key(0), false), (3, key(1), true)]);
        assert_eq!(log.tombstones[&3].timestamp_ms, 12, "tombstones carry the newest time");
        assert_eq!(log.entries_from(3).count(), 1);
        assert_eq!(log.entries_from(4).count(), 0);
    }

    #[test]
    fn tombstones_are_bounded() {
        let mut log = ShardLog::default();
        for p in 0..(TOMBSTONES_PER_SHARD as i32 + 10) {
            let o = log.write(key(p), None, 1);
            log.delete(key(p), o);
        }
        assert_eq!(log.tombstones.len(), TOMBSTONES_PER_SHARD);
        assert_eq!(log.live_count(), 0);
        // The oldest went first.
        let first = log.entries_from(0).next().expect("a tombstone");
        assert_eq!(first.key, &key(10));
    }

    use crate::groups::{ConsumerGroupUpdate, GroupCommand, GroupOp, OffsetCommit, StoredMember, shard_for};

    fn cmd(group: &str, op: GroupOp) -> GroupCommand {
        GroupCommand { group_id: group.into(), coordinator_epoch: 0, op }
    }

    fn commit(group: &str, topic: &str, partitions: &[(i32, i64)], ts: i64) -> GroupCommand {
        let offsets = partitions
            .iter()
            .map(|(p, o)| OffsetCommit {
                topic: topic.into(),
                partition: *p,
                offset: *o,
                leader_epoch: 0,
                metadata: None,
                commit_timestamp_ms: ts,
            })
            .collect();
        cmd(group, GroupOp::CommitOffsets { offsets })
    }

    fn membership(generation: i32, ts: i64) -> GroupMembership {
        GroupMembership {
            generation,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![StoredMember { member_id: "m1".into(), ..Default::default() }],
            timestamp_ms: ts,
        }
    }

    /// (offset, key, value kind) of a shard's view from `from`.
    fn view(s: &GroupsState, shard: u32, from: i64) -> Vec<(i64, RecordKey, &'static str)> {
        s.offsets_topic_records(shard, from)
            .map(|r| {
                let kind = match r.value {
                    RecordValue::Offset(_) => "offset",
                    RecordValue::Group(_) => "group",
                    RecordValue::Tombstone => "tombstone",
                };
                (r.offset, r.key.clone(), kind)
            })
            .collect()
    }

    fn okey(group: &str, p: i32) -> RecordKey {
        RecordKey::Offset { group: group.into(), topic: "t".into(), partition: p }
    }

    fn gkey(group: &str) -> RecordKey {
        RecordKey::Group { group: group.into() }
    }

    /// A history touching every kind of write, applied to a fresh state.
    fn history() -> GroupsState {
        let mut s = GroupsState::default();
        let steps = [
            commit("g", "t", &[(0, 5), (1, 6)], 100),               // 0, 1
            cmd("g", GroupOp::StoreMembership(membership(1, 110))), // 2
            commit("g", "t", &[(0, 9)], 120),                       // 3 (supersedes 0)
            cmd("g", GroupOp::StoreMembership(membership(2, 130))), // 4 (supersedes 2)
            cmd("g", GroupOp::DeleteOffsets { partitions: vec![("t".into(), 1), ("t".into(), 7)] }), // 5
        ];
        for c in &steps {
            s.apply(c).expect("applied");
        }
        s
    }

    #[test]
    fn writes_take_increasing_offsets_and_supersede_their_key() {
        let s = history();
        let shard = shard_for("g");
        assert_eq!(s.offsets_topic_end(shard), 6);
        assert_eq!(
            view(&s, shard, 0),
            vec![(3, okey("g", 0), "offset"), (4, gkey("g"), "group"), (5, okey("g", 1), "tombstone")]
        );
        assert_eq!(view(&s, shard, 4).len(), 2);
        assert_eq!(view(&s, shard, 6), vec![]);
        let values: Vec<_> = s.offsets_topic_records(shard, 0).map(|r| (r.timestamp_ms, r.value)).collect();
        assert!(matches!(values[0], (120, RecordValue::Offset(o)) if o.offset == 9));
        assert!(matches!(values[1], (130, RecordValue::Group(m)) if m.generation == 2));
        assert_eq!(values[2].0, 130, "a tombstone carries the shard's newest timestamp");
        // Other shards are untouched.
        assert_eq!(s.offsets_topic_end((shard + 1) % 50), 0);
        // Deterministic: the same commands give the same state.
        assert_eq!(history(), s);
    }

    #[test]
    fn deleting_or_converting_a_group_leaves_tombstones() {
        let mut s = history();
        let shard = shard_for("g");
        let update = ConsumerGroupUpdate { group_epoch: 1, assignment_epoch: 1, ..Default::default() };
        s.apply(&cmd("g", GroupOp::UpdateConsumerGroup(update))).expect("convert"); // 6
        assert_eq!(view(&s, shard, 4), vec![(5, okey("g", 1), "tombstone"), (6, gkey("g"), "tombstone")]);
        s.apply(&commit("g", "t", &[(2, 1)], 140)).expect("commit"); // 7
        s.apply(&cmd("g", GroupOp::DeleteGroup)).expect("delete"); // 8, 9: offsets 0 and 2
        assert_eq!(
            view(&s, shard, 0),
            vec![
                (5, okey("g", 1), "tombstone"),
                (6, gkey("g"), "tombstone"),
                (8, okey("g", 0), "tombstone"),
                (9, okey("g", 2), "tombstone"),
            ]
        );
        // Deleting what does not exist writes nothing.
        s.apply(&cmd("g", GroupOp::DeleteGroup)).expect("delete");
        s.apply(&cmd("g", GroupOp::DeleteOffsets { partitions: vec![("t".into(), 0)] })).expect("delete");
        assert_eq!(s.offsets_topic_end(shard), 10);
        assert_eq!(s.offsets_topic[&shard].live_count(), 0);
    }

    #[test]
    fn snapshot_round_trip_rebuilds_the_index() {
        let mut s = history();
        s.apply(&commit("other", "t", &[(0, 1)], 1)).expect("commit");
        let json = serde_json::to_string(&s).expect("serialize");
        let back: GroupsState = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s, "the derived index is rebuilt exactly");
        for shard in 0..50 {
            assert_eq!(view(&back, shard, 0), view(&s, shard, 0));
        }
        // And writes after loading carry on from the stored counters.
        let mut a = s.clone();
        let mut b = back;
        a.apply(&commit("g", "t", &[(0, 10)], 200)).expect("commit");
        b.apply(&commit("g", "t", &[(0, 10)], 200)).expect("commit");
        assert_eq!(a, b);
        assert_eq!(view(&b, shard_for("g"), 6), vec![(6, okey("g", 0), "offset")]);
    }

    #[test]
    fn snapshots_without_the_view_load_with_offsets_assigned() {
        // Groups as stored before the view existed: no record offsets, no shard logs.
        let old = r#"{"groups":{
            "g":{"offsets":{"t":{"0":{"offset":5,"leader_epoch":0,"metadata":null,"commit_timestamp_ms":7},
                                 "1":{"offset":6,"leader_epoch":0,"metadata":null,"commit_timestamp_ms":8}}},
                 "membership":{"generation":3,"protocol_type":"consumer","protocol_name":"range","leader":"m1",
                               "members":[],"timestamp_ms":9}},
            "h":{"offsets":{},"membership":null}},
            "shards":{}}"#;
        let s: GroupsState = serde_json::from_str(old).expect("old snapshot loads");
        let shard = shard_for("g");
        assert_eq!(
            view(&s, shard, 0),
            vec![(0, okey("g", 0), "offset"), (1, okey("g", 1), "offset"), (2, gkey("g"), "group")]
        );
        assert_eq!(s.offsets_topic_end(shard), 3);
        assert_eq!(s.offsets_topic[&shard].max_timestamp_ms, 9);
        // Loading the migrated state again changes nothing.
        let again: GroupsState = serde_json::from_str(&serde_json::to_string(&s).expect("serialize")).expect("load");
        assert_eq!(again, s);
    }
}
