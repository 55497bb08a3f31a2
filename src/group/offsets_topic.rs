//! The records of `__consumer_offsets` in Kafka's own format, built from the controller's view
//! of a coordinator shard (`skiff_controller::image::OffsetsTopicView`).
//!
//! Kafka's group coordinator writes `[record type][key fields]` keys and `[version][value
//! fields]` values (`CoordinatorRecordSerde`), with the schemas of
//! `group-coordinator/src/main/resources/common/message/*.json`:
//!
//! | record | key (type) | value (version) |
//! |---|---|---|
//! | committed offset | `OffsetCommitKey` (1): group, topic, partition | `OffsetCommitValue` (3): offset, leaderEpoch, metadata, commitTimestamp |
//! | classic group | `GroupMetadataKey` (2): group | `GroupMetadataValue` (3): protocolType, generation, protocol, leader, currentStateTimestamp, members |
//!
//! A deleted key has a null value (tombstone). These are the versions Kafka 4 writes, and the
//! ones its `OffsetsMessageFormatter` / `GroupMetadataMessageFormatter`, Burrow-style lag
//! monitors and older Kafka tools all read. KIP-848 consumer groups are shown by their
//! committed offsets only: Kafka's `ConsumerGroup*` records (types 3-8) describe members and
//! assignments that no reader of this topic relies on.
//!
//! Batches: magic 2, CRC-32C, uncompressed, no producer. The view is compacted (the offsets of
//! superseded records are gaps), so a batch's records may skip offsets and the batch's last
//! offset extends over the gap after its last record, up to the next record or the high
//! watermark: a consumer's next fetch position is the batch's last offset + 1, so it never
//! stops short of the high watermark on a gap (Kafka's compacted batches keep their last
//! offset for the same reason). A fetch that lands in a trailing gap gets one empty batch
//! covering it.
//!
//! Pure: no I/O, tested with plain values; never panics on any stored state.

use bytes::{BufMut, Bytes, BytesMut};
use skiff_controller::image::{CommittedOffset, GroupMembership, OffsetsTopicView, RecordKey, RecordValue, ViewRecord};

use crate::broker::batch::HEADER_LEN;

/// `CoordinatorRecordType.OFFSET_COMMIT`: the key's leading int16.
pub const OFFSET_COMMIT_KEY: i16 = 1;
/// `CoordinatorRecordType.GROUP_METADATA`.
pub const GROUP_METADATA_KEY: i16 = 2;
/// The `OffsetCommitValue` version written (3: leader epoch, no expire timestamp).
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// The `GroupMetadataValue` version written (3: static member ids, not flexible).
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A string longer than Kafka's non-flexible `string` (int16 length) can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

fn put_string(buf: &mut Vec<u8>, s: &str) -> Result<(), TooLong> {
    let len = i16::try_from(s.len()).map_err(|_| TooLong)?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable_string(buf: &mut Vec<u8>, s: Option<&str>) -> Result<(), TooLong> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) -> Result<(), TooLong> {
    buf.put_i32(i32::try_from(b.len()).map_err(|_| TooLong)?);
    buf.put_slice(b);
    Ok(())
}

/// The record key bytes.
pub fn key_bytes(key: &RecordKey) -> Result<Vec<u8>, TooLong> {
    let mut buf = Vec::with_capacity(64);
    match key {
        RecordKey::Offset { group, topic, partition } => {
            buf.put_i16(OFFSET_COMMIT_KEY);
            put_string(&mut buf, group)?;
            put_string(&mut buf, topic)?;
            buf.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            buf.put_i16(GROUP_METADATA_KEY);
            put_string(&mut buf, group)?;
        }
    }
    Ok(buf)
}

/// `OffsetCommitValue` v3.
pub fn offset_commit_value(o: &CommittedOffset) -> Result<Vec<u8>, TooLong> {
    let metadata = o.metadata.as_deref().unwrap_or("");
    let mut buf = Vec::with_capacity(24 + metadata.len());
    buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
    buf.put_i64(o.offset);
    buf.put_i32(o.leader_epoch);
    put_string(&mut buf, metadata)?;
    buf.put_i64(o.commit_timestamp_ms);
    Ok(buf)
}

/// `GroupMetadataValue` v3.
pub fn group_metadata_value(m: &GroupMembership) -> Result<Vec<u8>, TooLong> {
    let mut buf = Vec::with_capacity(64);
    buf.put_i16(GROUP_METADATA_VALUE_VERSION);
    // Kafka writes "" for a group without a protocol type (`protocolType.orElse("")`).
    put_string(&mut buf, m.protocol_type.as_deref().unwrap_or(""))?;
    buf.put_i32(m.generation);
    put_nullable_string(&mut buf, m.protocol_name.as_deref())?;
    put_nullable_string(&mut buf, m.leader.as_deref())?;
    buf.put_i64(m.timestamp_ms);
    buf.put_i32(i32::try_from(m.members.len()).map_err(|_| TooLong)?);
    for member in &m.members {
        put_string(&mut buf, &member.member_id)?;
        put_nullable_string(&mut buf, member.group_instance_id.as_deref())?;
        put_string(&mut buf, &member.client_id)?;
        put_string(&mut buf, &member.client_host)?;
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.subscription)?;
        put_bytes(&mut buf, &member.assignment)?;
    }
    Ok(buf)
}

/// The value bytes; `None` for a tombstone.
pub fn value_bytes(value: &RecordValue<'_>) -> Result<Option<Vec<u8>>, TooLong> {
    Ok(match value {
        RecordValue::Offset(o) => Some(offset_commit_value(o)?),
        RecordValue::Group(m) => Some(group_metadata_value(m)?),
        RecordValue::Tombstone => None,
    })
}

/// One record, encoded.
struct Encoded {
    offset: i64,
    timestamp_ms: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl Encoded {
    fn new(r: &ViewRecord<'_>) -> Option<Self> {
        // A record Kafka's format cannot hold (a name over 32767 bytes) is left out, as a gap.
        let key = key_bytes(r.key).ok()?;
        let value = value_bytes(&r.value).ok()?;
        Some(Encoded { offset: r.offset, timestamp_ms: r.timestamp_ms, key, value })
    }

    /// Upper bound of its size in a batch (length varint + body).
    fn size_bound(&self) -> usize {
        5 + 1 + 10 + 5 + 5 + self.key.len() + 5 + self.value.as_ref().map_or(0, Vec::len) + 1
    }
}

/// What one read of a shard returns: the batch bytes and the number of records in them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read {
    pub records: Bytes,
    pub record_count: usize,
}

/// The records of `shard`'s view from `from` (inclusive) as one batch of at most about
/// `max_bytes` (always at least one record when there is one, KIP-74), with `leader_epoch` as
/// its partition leader epoch. `from` must be within `[0, end]`; at the end the result is empty.
pub fn read(groups: &impl OffsetsTopicView, shard: u32, from: i64, max_bytes: usize, leader_epoch: i32) -> Read {
    let end = groups.offsets_topic_end(shard);
    if from >= end || from < 0 {
        return Read::default();
    }
    let mut records = Vec::new();
    let mut size = HEADER_LEN;
    let mut next_after: Option<i64> = None;
    for r in groups.offsets_topic_records(shard, from) {
        let base = records.first().map_or(r.offset, |e: &Encoded| e.offset);
        let Some(e) = Encoded::new(&r) else { continue };
        // Offset deltas are int32: a batch spans at most i32::MAX offsets.
        let too_far = r.offset - base > i64::from(i32::MAX);
        if !records.is_empty() && (size + e.size_bound() > max_bytes || too_far) {
            next_after = Some(r.offset);
            break;
        }
        size += e.size_bound();
        records.push(e);
    }
    // The batch covers up to the next record left out, or the high watermark.
    let base = records.first().map_or(from, |e| e.offset);
    let last = next_after.unwrap_or(end) - 1;
    let last = last.min(base + i64::from(i32::MAX));
    Read { records: encode_batch(base, last, leader_epoch, &records), record_count: records.len() }
}

fn put_varint(buf: &mut BytesMut, v: i32) {
    put_varlong(buf, i64::from(v));
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// A magic-2 batch of `records` (offsets in `[base, last]`, increasing), covering up to `last`.
fn encode_batch(base: i64, last: i64, leader_epoch: i32, records: &[Encoded]) -> Bytes {
    let base_timestamp = records.first().map_or(-1, |r| r.timestamp_ms);
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(-1);
    let mut body = BytesMut::new();
    for r in records {
        let mut rec = BytesMut::with_capacity(r.size_bound());
        rec.put_i8(0); // attributes
        put_varlong(&mut rec, r.timestamp_ms - base_timestamp);
        // Both fit: `read` keeps every offset within i32::MAX of `base`.
        put_varint(&mut rec, i32::try_from(r.offset - base).unwrap_or(i32::MAX));
        put_varint(&mut rec, r.key.len() as i32);
        rec.put_slice(&r.key);
        match &r.value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i32);
                rec.put_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i32);
        body.put_slice(&rec);
    }
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(base);
    b.put_i32((HEADER_LEN - 12 + body.len()) as i32); // batchLength: after this field
    b.put_i32(leader_epoch);
    b.put_i8(2); // magic
    b.put_u32(0); // crc, below
    b.put_i16(0); // attributes: no compression, CreateTime, not transactional or control
    b.put_i32(i32::try_from(last - base).unwrap_or(i32::MAX));
    b.put_i64(base_timestamp);
    b.put_i64(max_timestamp);
    b.put_i64(-1); // producerId
    b.put_i16(-1); // producerEpoch
    b.put_i32(-1); // baseSequence
    b.put_i32(records.len() as i32);
    b.put_slice(&body);
    // The CRC (at byte 17) covers attributes (byte 21) to the end.
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests;
