//! Kafka record batches (magic v2) as bytes: header parsing, validation and the only two
//! in-place rewrites the broker performs.
//!
//! Records are never decoded or re-encoded on the write path. `baseOffset` and
//! `partitionLeaderEpoch` lie outside the CRC, so assigning offsets keeps the client's CRC valid.
//! The one exception is LogAppendTime topics, where the broker sets `maxTimestamp` and the
//! timestamp-type attribute and recomputes the CRC (still without touching the records).

use bytes::{Bytes, BytesMut};

/// Bytes of the v2 batch header before the records.
pub const HEADER_LEN: usize = 61;
/// Offset of `batchLength`: everything after this field belongs to the batch.
const LENGTH_END: usize = 12;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const TIMESTAMP_TYPE_LOG_APPEND: i16 = 1 << 3;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;

/// Why a produced batch was refused. Mapped to Kafka error codes by the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    #[error("record batch magic {0} is not supported (only v2)")]
    UnsupportedMagic(i8),
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("invalid record batch: {0}")]
    Invalid(String),
    #[error("zstd-compressed batches need Produce v7 or later (this request is v{version})")]
    ZstdBeforeV7 { version: i16 },
    /// Its records decompress to more than the broker accepts (`records::MAX_DECOMPRESSED_BYTES`).
    #[error("record batch decompresses to more than {max} bytes")]
    DecompressedTooLarge { max: usize },
    /// Records without a key for a compacted topic (Kafka's `LogValidator.validateKey`): their
    /// indexes in the first batch that has any.
    #[error("compacted topic cannot accept records without a key (records {records:?} of a batch)")]
    KeylessRecords { records: Vec<usize> },
}

/// The parsed header of one batch (values as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Saturating: the fields are raw wire values, and a corrupt header must not overflow (a
    /// parsable header with `base_offset` near `i64::MAX` panicked debug and fuzz builds).
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }
    /// Idempotent batches carry a producer id and a sequence.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0
    }
    pub fn last_sequence(&self) -> i32 {
        // Sequences wrap at i32::MAX (Kafka's DefaultRecordBatch.incrementSequence).
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) { (last - i64::from(i32::MAX) - 1) as i32 } else { last as i32 }
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the size of the batch starting at `buf[0]`, if the header prefix is there.
/// Used to walk stored data; does not validate.
pub fn peek_batch(buf: &[u8]) -> Option<(i64, usize)> {
    if buf.len() < LENGTH_END {
        return None;
    }
    let len = i32_at(buf, 8);
    let size = usize::try_from(len).ok()?.checked_add(LENGTH_END)?;
    Some((i64_at(buf, 0), size))
}

/// Parses the header of the batch at the start of `buf`. Checks the framing, not the CRC.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    parse_header_prefix(&buf[..buf.len().min(HEADER_LEN)], buf.len())
}

/// [`parse_header`] from the first `min(HEADER_LEN, available)` bytes of a batch that has
/// `available` bytes from its start to the end of the data: the read path walks batches whose
/// bytes lie in several cached blocks without joining them (`log::read`).
pub fn parse_header_prefix(buf: &[u8], available: usize) -> Result<BatchHeader, BatchError> {
    if buf.len() < MAGIC + 1 {
        return Err(BatchError::Corrupt(format!("{} bytes is too short for a batch header", buf.len())));
    }
    let magic = buf[MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let (_, size) = peek_batch(buf).ok_or_else(|| BatchError::Corrupt("negative batch length".into()))?;
    if size < HEADER_LEN {
        return Err(BatchError::Corrupt(format!("batch length {size} is shorter than its header")));
    }
    if size > available {
        return Err(BatchError::Corrupt(format!("batch of {size} bytes but only {available} present")));
    }
    // size >= HEADER_LEN and size <= available, so `buf` holds the whole header.
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Corrupt(format!("{} header bytes given for a batch of {size}", buf.len())));
    }
    Ok(BatchHeader {
        base_offset: i64_at(buf, 0),
        size,
        partition_leader_epoch: i32_at(buf, PARTITION_LEADER_EPOCH),
        magic,
        crc: u32::from_be_bytes([buf[CRC], buf[CRC + 1], buf[CRC + 2], buf[CRC + 3]]),
        attributes: i16_at(buf, ATTRIBUTES),
        last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA),
        base_timestamp: i64_at(buf, BASE_TIMESTAMP),
        max_timestamp: i64_at(buf, MAX_TIMESTAMP),
        producer_id: i64_at(buf, PRODUCER_ID),
        producer_epoch: i16_at(buf, PRODUCER_EPOCH),
        base_sequence: i32_at(buf, BASE_SEQUENCE),
        records_count: i32_at(buf, RECORDS_COUNT),
    })
}

/// Checks the CRC-32C of the batch at the start of `batch` (header `h`), as stored data is
/// checked before it is rewritten.
pub fn verify_crc(batch: &[u8], h: &BatchHeader) -> Result<(), BatchError> {
    let computed = crc32c::crc32c(&batch[ATTRIBUTES..h.size]);
    if computed != h.crc {
        return Err(BatchError::Corrupt(format!(
            "CRC-32C mismatch: batch says {:#010x}, bytes give {computed:#010x}",
            h.crc
        )));
    }
    Ok(())
}

/// Kafka's `ProduceRequest` rule (KIP-110): a zstd batch in a Produce request older than v7 is
/// refused with UNSUPPORTED_COMPRESSION_TYPE, because such a client could not read it back.
pub fn check_codec_for_version(headers: &[BatchHeader], version: i16) -> Result<(), BatchError> {
    const ZSTD: i16 = 4;
    if version < 7 && headers.iter().any(|h| h.compression() == ZSTD) {
        return Err(BatchError::ZstdBeforeV7 { version });
    }
    Ok(())
}

/// Validates a produce request's `records` field: one or more v2 batches, each with a correct
/// CRC-32C, consistent counts and at most `max_batch_bytes`. Returns the headers in order.
pub fn validate_produce(records: &[u8], max_batch_bytes: usize) -> Result<Vec<BatchHeader>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid("produce request without records".into()));
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let h = parse_header(&records[pos..])?;
        if h.size > max_batch_bytes {
            return Err(BatchError::TooLarge { size: h.size, max: max_batch_bytes });
        }
        let computed = crc32c::crc32c(&records[pos + ATTRIBUTES..pos + h.size]);
        if computed != h.crc {
            return Err(BatchError::Corrupt(format!(
                "CRC-32C mismatch: batch says {:#010x}, bytes give {computed:#010x}",
                h.crc
            )));
        }
        if h.last_offset_delta < 0 || h.records_count != h.last_offset_delta.saturating_add(1) {
            return Err(BatchError::Corrupt(format!(
                "record count {} does not match last offset delta {}",
                h.records_count, h.last_offset_delta
            )));
        }
        if h.is_control() {
            return Err(BatchError::Invalid("clients may not produce control batches".into()));
        }
        if h.is_transactional() && !h.is_idempotent() {
            // A transaction is the producer id's: a transactional batch without one (or without a
            // sequence) cannot be checked or closed by a marker.
            return Err(BatchError::Invalid(format!(
                "transactional batch without a producer id and sequence (producer id {}, base sequence {})",
                h.producer_id, h.base_sequence
            )));
        }
        headers.push(h);
        pos += h.size;
    }
    Ok(headers)
}

/// Assigns `base_offset` and `leader_epoch` to the batch at the start of `batch`, in place.
pub fn assign(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `now_ms` and recomputes its CRC.
pub fn set_log_append_time(batch: &mut [u8], size: usize, now_ms: i64) {
    let attrs = i16_at(batch, ATTRIBUTES) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..size]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Returns the suffix of `data` (whole stored batches) starting at the batch that contains
/// `offset`, or `None` if `offset` is past the data.
pub fn slice_from_offset(data: &Bytes, offset: i64) -> Option<Bytes> {
    let mut pos = 0;
    while pos < data.len() {
        let h = parse_header(&data[pos..]).ok()?;
        if h.last_offset() >= offset {
            return Some(data.slice(pos..));
        }
        pos += h.size;
    }
    None
}

/// The longest prefix of whole batches of `data` within `max_bytes`. With `min_one` the first
/// batch is kept even when it alone exceeds `max_bytes` (KIP-74: Kafka's `minOneMessage`, granted
/// only to the first partition of a fetch response that returns data, so a consumer always makes
/// progress while the response as a whole stays within the request's limits).
pub fn whole_batches_within(data: &Bytes, max_bytes: usize, min_one: bool) -> Bytes {
    let mut end = 0;
    while end < data.len() {
        let Some((_, size)) = peek_batch(&data[end..]) else { break };
        let next = end.saturating_add(size);
        if next > data.len() || ((end > 0 || !min_one) && next > max_bytes) {
            break;
        }
        end = next;
    }
    data.slice(..end)
}

/// The longest prefix of whole batches of `data` that start below `upper` (a read_committed
/// fetch stops at the last stable offset, which is always a batch boundary: the first offset of
/// an open transaction's batch, or the high watermark).
pub fn below_offset(data: &Bytes, upper: i64) -> Bytes {
    let mut end = 0;
    while end < data.len() {
        let Some((base, size)) = peek_batch(&data[end..]) else { break };
        let next = end.saturating_add(size);
        if base >= upper || next > data.len() {
            break;
        }
        end = next;
    }
    data.slice(..end)
}

/// One past the last offset of the whole batches of `data` (`None` when it holds none).
pub fn end_offset(data: &[u8]) -> Option<i64> {
    let mut pos = 0;
    let mut end = None;
    while pos < data.len() {
        let Ok(h) = parse_header(&data[pos..]) else { break };
        end = Some(h.last_offset().saturating_add(1));
        pos += h.size;
    }
    end
}

/// Copies produce bytes into a buffer the broker may rewrite.
pub fn to_mut(records: &Bytes) -> BytesMut {
    BytesMut::from(&records[..])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// Encodes `n` records as one v2 batch, as a client would.
    pub fn encode_batch(n: usize, compression: Compression, pid: i64, seq: i32, ts: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: if pid >= 0 { seq } else { -1 } + i as i32,
                timestamp: ts + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; 10 + i])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
            .expect("encode");
        buf.freeze()
    }

    #[test]
    fn zstd_needs_produce_v7() {
        let z = validate_produce(&encode_batch(3, Compression::Zstd, -1, -1, 1000), 1 << 20).expect("valid");
        assert_eq!(check_codec_for_version(&z, 6), Err(BatchError::ZstdBeforeV7 { version: 6 }));
        assert_eq!(check_codec_for_version(&z, 7), Ok(()));
        let g = validate_produce(&encode_batch(3, Compression::Gzip, -1, -1, 1000), 1 << 20).expect("valid");
        assert_eq!(check_codec_for_version(&g, 3), Ok(()));
    }

    #[test]
    fn validates_and_assigns_without_breaking_crc() {
        let b = encode_batch(5, Compression::None, 7, 0, 1000);
        let hs = validate_produce(&b, 1 << 20).expect("valid");
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].records_count, 5);
        assert_eq!(hs[0].last_sequence(), 4);
        let mut m = to_mut(&b);
        assign(&mut m, 100, 3);
        let hs = validate_produce(&m, 1 << 20).expect("still valid after assign");
        assert_eq!(hs[0].base_offset, 100);
        assert_eq!(hs[0].partition_leader_epoch, 3);
        assert_eq!(hs[0].last_offset(), 104);
    }

    #[test]
    fn detects_corruption_and_size() {
        let b = encode_batch(3, Compression::Gzip, -1, -1, 0);
        let mut m = to_mut(&b);
        let last = m.len() - 1;
        m[last] ^= 0xff;
        assert!(matches!(validate_produce(&m, 1 << 20), Err(BatchError::Corrupt(_))));
        assert!(matches!(validate_produce(&b, 10), Err(BatchError::TooLarge { .. })));
        assert!(matches!(validate_produce(&b[..30], 1 << 20), Err(BatchError::Corrupt(_))));
        // Every truncation and every single-byte flip is refused or harmless, never a panic.
        for cut in 0..b.len() {
            let _ = validate_produce(&b[..cut], 1 << 20);
        }
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let b = encode_batch(2, Compression::None, -1, -1, 5);
        let mut m = to_mut(&b);
        let size = m.len();
        set_log_append_time(&mut m, size, 999);
        let h = validate_produce(&m, 1 << 20).expect("valid")[0];
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 999);
    }

    #[test]
    fn header_arithmetic_does_not_overflow_on_raw_values() {
        // A parsable header with baseOffset = i64::MAX and lastOffsetDelta = 1.
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        b[8..12].copy_from_slice(&((HEADER_LEN - LENGTH_END) as i32).to_be_bytes());
        b[MAGIC] = 2;
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&1i32.to_be_bytes());
        let h = parse_header(&b).expect("parsable");
        assert_eq!(h.last_offset(), i64::MAX);
        let data = Bytes::from(b);
        assert_eq!(slice_from_offset(&data, i64::MAX).map(|s| s.len()), Some(HEADER_LEN));
        b = data.to_vec();
        b[0..8].copy_from_slice(&i64::MIN.to_be_bytes());
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_header(&b).expect("parsable").last_offset(), i64::MIN);
    }

    #[test]
    fn slicing_by_offset_and_size() {
        let mut all = BytesMut::new();
        for (i, base) in [0i64, 5, 10].iter().enumerate() {
            let mut m = to_mut(&encode_batch(5, Compression::None, -1, -1, i as i64));
            assign(&mut m, *base, 0);
            all.extend_from_slice(&m);
        }
        let all = all.freeze();
        let from7 = slice_from_offset(&all, 7).expect("slice");
        assert_eq!(parse_header(&from7).expect("h").base_offset, 5);
        assert!(slice_from_offset(&all, 15).is_none());
        let first = parse_header(&all).expect("h").size;
        assert_eq!(whole_batches_within(&all, 1, true).len(), first, "min_one keeps an oversized first batch");
        assert!(whole_batches_within(&all, 1, false).is_empty(), "without min_one nothing exceeds the limit");
        assert_eq!(whole_batches_within(&all, first * 2, false).len(), first * 2);
        assert_eq!(whole_batches_within(&all, first * 2 + 1, true).len(), first * 2, "whole batches only");
        assert_eq!(whole_batches_within(&all, usize::MAX, false).len(), all.len());
        assert_eq!(below_offset(&all, 10).len(), first * 2, "batches starting below 10");
        assert_eq!(below_offset(&all, 6).len(), first * 2, "a batch starting below the bound is whole");
        assert!(below_offset(&all, 0).is_empty());
        assert_eq!(end_offset(&all), Some(15));
        assert_eq!(end_offset(&below_offset(&all, 6)), Some(10));
        assert_eq!(end_offset(&[]), None);
        assert_eq!(below_offset(&all, i64::MAX).len(), all.len());
        assert!(below_offset(&all.slice(..first + 3), i64::MAX).len() == first, "a torn batch is left out");
    }
}
