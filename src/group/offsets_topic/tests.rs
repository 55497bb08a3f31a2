use kafka_protocol::records::RecordBatchDecoder;
use skiff_controller::image::ImageFixture;
use skiff_controller::intent::{GroupOp, OffsetCommit, Rejection, StoredMember, shard_for};

use super::*;
use crate::broker::batch;

/// Reads fields the way Kafka's generated `read(accessor, version)` does for the schemas in
/// group-coordinator/src/main/resources/common/message/*.json (non-flexible versions).
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn nullable_string(&mut self) -> Option<String> {
        let len = self.i16();
        (len >= 0).then(|| String::from_utf8(self.take(len as usize).to_vec()).expect("utf-8"))
    }
    fn string(&mut self) -> String {
        self.nullable_string().expect("non-null string")
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = self.i32();
        self.take(len as usize).to_vec()
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A decoded record, as Kafka's `GroupCoordinatorRecordSerde` would see it.
#[derive(Debug, PartialEq)]
enum Decoded {
    /// OffsetCommitKey + OffsetCommitValue v3 (offset, leaderEpoch, metadata, commitTimestamp).
    Offset { group: String, topic: String, partition: i32, value: Option<(i64, i32, String, i64)> },
    /// GroupMetadataKey + GroupMetadataValue v3.
    Group { group: String, value: Option<GroupValue> },
}

#[derive(Debug, PartialEq)]
struct GroupValue {
    protocol_type: String,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    current_state_timestamp: i64,
    members: Vec<MemberValue>,
}

/// memberId, groupInstanceId, clientId, clientHost, rebalanceTimeout, sessionTimeout,
/// subscription, assignment.
type MemberValue = (String, Option<String>, String, String, i32, i32, Vec<u8>, Vec<u8>);

/// A decoded batch: its last offset and its (offset, timestamp, record)s.
type DecodedBatch = (i64, Vec<(i64, i64, Decoded)>);

fn decode(key: &[u8], value: Option<&[u8]>) -> Decoded {
    let mut k = Reader(key);
    let decoded = match k.i16() {
        1 => {
            let (group, topic, partition) = (k.string(), k.string(), k.i32());
            let value = value.map(|v| {
                let mut v = Reader(v);
                assert_eq!(v.i16(), 3, "OffsetCommitValue version");
                let out = (v.i64(), v.i32(), v.string(), v.i64());
                assert!(v.done(), "trailing bytes in the value");
                out
            });
            Decoded::Offset { group, topic, partition, value }
        }
        2 => {
            let group = k.string();
            let value = value.map(|v| {
                let mut v = Reader(v);
                assert_eq!(v.i16(), 3, "GroupMetadataValue version");
                let out = GroupValue {
                    protocol_type: v.string(),
                    generation: v.i32(),
                    protocol: v.nullable_string(),
                    leader: v.nullable_string(),
                    current_state_timestamp: v.i64(),
                    members: (0..v.i32())
                        .map(|_| {
                            (
                                v.string(),
                                v.nullable_string(),
                                v.string(),
                                v.string(),
                                v.i32(),
                                v.i32(),
                                v.bytes(),
                                v.bytes(),
                            )
                        })
                        .collect(),
                };
                assert!(v.done(), "trailing bytes in the value");
                out
            });
            Decoded::Group { group, value }
        }
        other => panic!("unexpected record type {other}"),
    };
    assert!(k.done(), "trailing bytes in the key");
    decoded
}

/// Decodes batches with the kafka-protocol crate (an independent decoder that checks the
/// CRC): (batch last offset, [(offset, timestamp, record)]) per batch.
fn decode_batches(bytes: &Bytes) -> Vec<DecodedBatch> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = batch::parse_header(&bytes[pos..]).expect("batch header");
        assert_eq!((h.magic, h.attributes, h.producer_id), (2, 0, -1));
        let mut one = bytes.slice(pos..pos + h.size);
        let set = RecordBatchDecoder::decode(&mut one).expect("decodes, CRC ok");
        let records = set
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp, decode(r.key.as_deref().expect("key"), r.value.as_deref())))
            .collect();
        out.push((h.last_offset(), records));
        pos += h.size;
    }
    out
}

/// A group write as its coordinator sends it (shards unassigned: coordinator epoch 0).
struct Write {
    group: String,
    op: GroupOp,
}

/// The group state of a test: written as a coordinator writes it, read as brokers read it.
#[derive(Default)]
struct Groups(ImageFixture);

impl Groups {
    fn apply(&mut self, w: &Write) -> Result<(), Rejection> {
        self.0.store_group(&w.group, 0, w.op.clone())
    }
}

impl OffsetsTopicView for Groups {
    fn offsets_topic_end(&self, shard: u32) -> i64 {
        self.0.offsets_topic_end(shard)
    }
    fn offsets_topic_records(&self, shard: u32, from: i64) -> impl Iterator<Item = ViewRecord<'_>> {
        self.0.offsets_topic_records(shard, from)
    }
}

fn cmd(group: &str, op: GroupOp) -> Write {
    Write { group: group.into(), op }
}

fn commit(group: &str, partition: i32, offset: i64, ts: i64) -> Write {
    cmd(
        group,
        GroupOp::CommitOffsets {
            offsets: vec![OffsetCommit {
                topic: "orders".into(),
                partition,
                offset,
                leader_epoch: 4,
                metadata: Some("meta".into()),
                commit_timestamp_ms: ts,
            }],
        },
    )
}

fn membership() -> GroupMembership {
    GroupMembership {
        generation: 7,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        leader: Some("m1".into()),
        members: vec![StoredMember {
            member_id: "m1".into(),
            group_instance_id: Some("i1".into()),
            client_id: "c1".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: vec![0, 1, 2],
            assignment: vec![],
        }],
        timestamp_ms: 1_700_000_000_500,
    }
}

#[test]
fn golden_offset_commit_bytes() {
    // Written out field by field from OffsetCommitKey.json and OffsetCommitValue.json.
    let key = RecordKey::Offset { group: "g".into(), topic: "t".into(), partition: 1 };
    assert_eq!(key_bytes(&key), Ok(vec![0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]));
    let value =
        CommittedOffset { offset: 5, leader_epoch: 2, metadata: None, commit_timestamp_ms: 0x0102, record_offset: 0 };
    assert_eq!(
        offset_commit_value(&value),
        Ok(vec![0, 3, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
    );
    assert_eq!(key_bytes(&RecordKey::Group { group: "ab".into() }), Ok(vec![0, 2, 0, 2, b'a', b'b']));
    let long = "x".repeat(40_000);
    assert_eq!(key_bytes(&RecordKey::Group { group: long }), Err(TooLong));
}

#[test]
fn a_shard_reads_back_as_kafka_records() {
    let mut s = Groups::default();
    let shard = shard_for("g");
    s.apply(&commit("g", 0, 100, 1_000)).expect("commit"); // 0
    s.apply(&commit("g", 1, 200, 1_001)).expect("commit"); // 1
    s.apply(&cmd("g", GroupOp::StoreMembership(membership()))).expect("store"); // 2
    s.apply(&commit("g", 0, 150, 1_002)).expect("commit"); // 3: supersedes 0
    s.apply(&cmd("g", GroupOp::DeleteOffsets { partitions: vec![("orders".into(), 1)] })).expect("del"); // 4
    assert_eq!(s.offsets_topic_end(shard), 5);

    let all = read(&s, shard, 0, 1 << 20, 9);
    assert_eq!(all.record_count, 3);
    assert_eq!(batch::parse_header(&all.records).expect("header").partition_leader_epoch, 9);
    let batches = decode_batches(&all.records);
    assert_eq!(batches.len(), 1);
    let (last, records) = &batches[0];
    assert_eq!(*last, 4, "the batch covers to the high watermark");
    assert_eq!(
        records[0],
        (
            2,
            1_700_000_000_500,
            Decoded::Group {
                group: "g".into(),
                value: Some(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 7,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    current_state_timestamp: 1_700_000_000_500,
                    members: vec![(
                        "m1".into(),
                        Some("i1".into()),
                        "c1".into(),
                        "/127.0.0.1".into(),
                        300_000,
                        45_000,
                        vec![0, 1, 2],
                        vec![]
                    )],
                }),
            }
        )
    );
    assert_eq!(
        records[1],
        (
            3,
            1_002,
            Decoded::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 0,
                value: Some((150, 4, "meta".into(), 1_002)),
            }
        )
    );
    assert_eq!(
        records[2],
        // A tombstone carries the shard's newest timestamp (the membership's).
        (
            4,
            1_700_000_000_500,
            Decoded::Offset { group: "g".into(), topic: "orders".into(), partition: 1, value: None }
        )
    );

    // From the middle; at the end nothing.
    let tail = decode_batches(&read(&s, shard, 3, 1 << 20, 0).records);
    assert_eq!(tail[0].1.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(read(&s, shard, 5, 1 << 20, 0), Read::default());
    assert_eq!(read(&s, shard + 1, 0, 1 << 20, 0), Read::default(), "an empty shard");
}

#[test]
fn max_bytes_cuts_batches_and_gaps_are_covered() {
    let mut s = Groups::default();
    let shard = shard_for("g");
    for p in 0..20 {
        s.apply(&commit("g", p, 1, 1)).expect("commit");
    }
    // Rewrite 10..20: offsets 10..19 become gaps, 20..29 hold partitions 10..19.
    for p in 10..20 {
        s.apply(&commit("g", p, 2, 2)).expect("commit");
    }
    // Partition 19 again: 29 becomes a gap.
    s.apply(&commit("g", 19, 3, 3)).expect("commit"); // 30
    s.apply(&commit("g", 0, 3, 3)).expect("commit"); // 31: 0 becomes a gap
    assert_eq!(s.offsets_topic_end(shard), 32);

    // A consumer following next = last offset + 1 reads every live record once, in order.
    let mut position = 0;
    let mut seen = Vec::new();
    let mut fetches = 0;
    while position < 32 {
        fetches += 1;
        assert!(fetches < 100, "stuck at {position}");
        let r = read(&s, shard, position, 200, 0);
        assert!(r.records.len() <= 200 || r.record_count == 1, "KIP-74: over the limit only with one record");
        for (last, records) in decode_batches(&r.records) {
            seen.extend(records.iter().map(|(o, _, _)| *o));
            assert!(last >= position);
            position = last + 1;
        }
    }
    let live: Vec<i64> = (1..10).chain(20..29).chain([30, 31]).collect();
    assert_eq!(seen, live);
    assert!(fetches > 3, "200 bytes hold a few records, not all");

    // One byte: still one whole record (KIP-74).
    assert_eq!(read(&s, shard, 0, 1, 0).record_count, 1);
    // From inside a gap: the next live record.
    let r = decode_batches(&read(&s, shard, 12, 1 << 20, 0).records);
    assert_eq!(r[0].1.first().map(|r| r.0), Some(20));
}

#[test]
fn a_trailing_gap_reads_as_an_empty_batch() {
    let mut s = Groups::default();
    let shard = shard_for("g");
    s.apply(&commit("g", 0, 1, 1)).expect("commit"); // 0
    // Metadata longer than Kafka's int16 string: the record cannot be written in Kafka's
    // format and is left out. (OffsetCommit refuses such metadata with
    // OFFSET_METADATA_TOO_LARGE, as Kafka does, so only a state built otherwise has it: the
    // one way to get a trailing gap, since the newest record of a shard is always live or a
    // tombstone.)
    let mut huge = commit("g", 1, 1, 2);
    if let GroupOp::CommitOffsets { offsets } = &mut huge.op {
        offsets[0].metadata = Some("x".repeat(40_000));
    }
    s.apply(&huge).expect("commit"); // 1
    s.apply(&huge).expect("commit"); // 2: 1 is a gap, 2 cannot be encoded
    let batches = decode_batches(&read(&s, shard, 0, 1 << 20, 0).records);
    assert_eq!(batches.iter().map(|(l, r)| (*l, r.len())).collect::<Vec<_>>(), vec![(2, 1)]);
    // A reader at 1 gets an empty batch ending at 2, and moves to the high watermark.
    let empty = read(&s, shard, 1, 1 << 20, 0);
    let h = batch::parse_header(&empty.records).expect("header");
    assert_eq!((h.base_offset, h.last_offset(), h.records_count, empty.record_count), (1, 2, 0, 0));
    assert_eq!(decode_batches(&empty.records), vec![(2, vec![])]);
}
