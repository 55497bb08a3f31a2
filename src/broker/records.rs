//! The records inside one v2 batch: decoding them (any codec, bounded) and re-encoding a batch
//! with a subset of its records. Used by the log cleaner (`log/background/cleaner/`), the one
//! place Skiff rewrites record bytes, and by produce's key check on compacted topics.
//!
//! ```text
//! batch   header (61 bytes, batch.rs) | records section, compressed as attributes & 0x7 says
//! record  varint bodyLen | i8 attributes | varlong timestampDelta | varint offsetDelta
//!         | varint keyLen, key (len < 0: null) | varint valueLen, value (len < 0: null: tombstone)
//!         | varint headerCount | (varint keyLen, key, varint valueLen, value)*
//! ```
//!
//! Invariants:
//! * Never panics on any bytes: every length is checked, arithmetic on wire values wraps or
//!   saturates, decompression stops at [`MAX_DECOMPRESSED_BYTES`], and a batch must hold exactly
//!   `recordsCount` records with nothing left over (Kafka's `DefaultRecordBatch` iterator).
//! * Re-encoding keeps a record byte for byte (attributes, offset delta, key, value, headers)
//!   except its timestamp delta, which is rebased when a delete horizon moves `baseTimestamp`
//!   so that `baseTimestamp + delta` (the record's absolute timestamp) stays the same.
//! * A re-encoded batch keeps `baseOffset`, `lastOffsetDelta`, `partitionLeaderEpoch`,
//!   producer id and epoch, `baseSequence`, the timestamp type, transactional and control bits
//!   and the codec; an emptied batch is Kafka's `writeEmptyHeader` (no codec, no records).
//!
//! Decompression reads through the codec crates kafka-protocol itself uses (same versions,
//! same framings: gzip members, xerial-framed or raw snappy, LZ4 frames, zstd frames) because
//! kafka-protocol's `Decompressor`s inflate without a limit; compression goes through
//! kafka-protocol's `Compressor`s.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor};

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN};

/// Largest records section a batch may decompress to; above it the batch is refused (a
/// compressed batch of a few KiB can otherwise claim gigabytes).
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;
/// KIP-534: attributes bit 6, `baseTimestamp` is the delete horizon of the batch's tombstones
/// and markers.
pub const DELETE_HORIZON_FLAG: i16 = 1 << 6;
const CODEC_MASK: i16 = 0x7;
const NO_TIMESTAMP: i64 = -1;

/// One batch with its records located (and decompressed if need be).
#[derive(Debug)]
pub struct DecodedBatch<'a> {
    pub header: BatchHeader,
    /// The records section, uncompressed.
    section: Cow<'a, [u8]>,
    spans: Vec<Span>,
}

/// Where one record lies in the records section.
#[derive(Debug, Clone)]
struct Span {
    /// The whole record, its length prefix included.
    whole: Range<usize>,
    /// From the offset delta to the end of the record: what rebasing copies unchanged.
    after_timestamp: Range<usize>,
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// The header count and the headers, as stored.
    headers: Range<usize>,
}

/// A view of one decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'b> {
    /// Position in its batch (0-based), as produce's `record_errors` count.
    pub index: usize,
    pub offset: i64,
    pub offset_delta: i32,
    /// `baseTimestamp + timestampDelta` (for LogAppendTime batches readers see
    /// `maxTimestamp` instead, but this is what the bytes hold).
    pub timestamp: i64,
    pub key: Option<&'b [u8]>,
    /// `None`: a tombstone.
    pub value: Option<&'b [u8]>,
    /// The header count and the headers, as stored.
    pub headers: &'b [u8],
}

impl DecodedBatch<'_> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn record(&self, index: usize) -> Option<RecordRef<'_>> {
        let s = self.spans.get(index)?;
        let at = |r: &Range<usize>| &self.section[r.clone()];
        Some(RecordRef {
            index,
            offset: self.header.base_offset.wrapping_add(i64::from(s.offset_delta)),
            offset_delta: s.offset_delta,
            timestamp: self.header.base_timestamp.wrapping_add(s.timestamp_delta),
            key: s.key.as_ref().map(at),
            value: s.value.as_ref().map(at),
            headers: at(&s.headers),
        })
    }

    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        (0..self.spans.len()).filter_map(|i| self.record(i))
    }

    /// The batch's delete horizon (KIP-534), if bit 6 is set.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        delete_horizon_ms(&self.header)
    }
}

pub fn delete_horizon_ms(h: &BatchHeader) -> Option<i64> {
    (h.attributes & DELETE_HORIZON_FLAG != 0).then_some(h.base_timestamp)
}

fn corrupt(what: impl Into<String>) -> BatchError {
    BatchError::Corrupt(what.into())
}

/// Decodes the batch at the start of `buf` (trailing bytes after it are ignored): framing,
/// CRC-32C, codec, and every record. Refuses a batch that decompresses to more than
/// [`MAX_DECOMPRESSED_BYTES`] or whose records disagree with `recordsCount`.
pub fn decode(buf: &[u8]) -> Result<DecodedBatch<'_>, BatchError> {
    let header = batch::parse_header(buf)?;
    let bytes = &buf[..header.size];
    let computed = crc32c::crc32c(&bytes[21..]);
    if computed != header.crc {
        return Err(corrupt(format!("CRC-32C mismatch: batch says {:#010x}, bytes give {computed:#010x}", header.crc)));
    }
    if header.records_count < 0 {
        return Err(corrupt(format!("negative record count {}", header.records_count)));
    }
    let raw = &bytes[HEADER_LEN..];
    let section: Cow<'_, [u8]> = match header.compression() {
        0 => Cow::Borrowed(raw),
        c @ 1..=4 => Cow::Owned(decompress(c, raw, MAX_DECOMPRESSED_BYTES)?),
        c => return Err(corrupt(format!("unknown compression codec {c}"))),
    };
    let count = header.records_count as usize;
    // Each record takes at least 7 bytes: never reserve more than the section can hold.
    let mut spans = Vec::with_capacity(count.min(section.len() / 7 + 1));
    let mut pos = 0;
    for i in 0..count {
        let span = read_record(&section, &mut pos).map_err(|e| corrupt(format!("record {i} of {count}: {e}")))?;
        spans.push(span);
    }
    if pos != section.len() {
        return Err(corrupt(format!(
            "{} bytes left after the {count} records the batch declares",
            section.len() - pos
        )));
    }
    Ok(DecodedBatch { header, section, spans })
}

/// One record header: its key and value (`None`: null).
pub type Header<'b> = (&'b [u8], Option<&'b [u8]>);

/// A record's headers (`RecordRef::headers`: the count, then each key and value). The bytes
/// were checked when the batch was decoded.
pub fn headers(raw: &[u8]) -> Result<Vec<Header<'_>>, BatchError> {
    let mut pos = 0;
    let count = read_varint(raw, &mut pos).map_err(corrupt)?;
    let mut out = Vec::with_capacity((count.max(0) as usize).min(raw.len() / 2));
    for _ in 0..count.max(0) {
        let key_len = read_varint(raw, &mut pos).map_err(corrupt)?;
        let key = take(raw, &mut pos, key_len.max(0) as usize, "header key").map_err(corrupt)?;
        let value = read_bytes(raw, &mut pos, "header value").map_err(corrupt)?;
        out.push((&raw[key], value.map(|v| &raw[v])));
    }
    Ok(out)
}

/// Indexes of every record without a key in the batch at the start of `batch` (Kafka's
/// `LogValidator` reports each of them in `record_errors`).
pub fn keyless_records(batch: &[u8]) -> Result<Vec<usize>, BatchError> {
    Ok(decode(batch)?.records().filter(|r| r.key.is_none()).map(|r| r.index).collect())
}

/// Re-encodes `decoded` keeping only the records at `keep` (ascending indexes), with
/// `delete_horizon_ms` as its delete horizon (None: no horizon bit; Some(h): bit 6 set and
/// `baseTimestamp` = h, timestamp deltas rebased). `maxTimestamp` is recomputed from the kept
/// records (CreateTime) or kept (LogAppendTime), as Kafka's `MemoryRecordsBuilder` does; the
/// CRC-32C is recomputed. `keep` empty gives [`empty_batch`].
///
/// Byte for byte Kafka's `MemoryRecords.filterTo` output (golden test below), with two
/// deliberate differences that readers cannot see: without a new horizon `baseTimestamp` stays
/// the batch's (Kafka takes the first kept record's), so kept records are copied unchanged; and
/// LogAppendTime records keep their stored timestamp deltas (Kafka rewrites them to the stamp,
/// which is what every reader reports for them anyway).
pub fn rewrite(
    decoded: &DecodedBatch<'_>,
    keep: &[usize],
    delete_horizon_ms: Option<i64>,
) -> Result<Bytes, BatchError> {
    let h = &decoded.header;
    if keep.is_empty() {
        return Ok(empty_batch(h));
    }
    let base_timestamp = delete_horizon_ms.unwrap_or(h.base_timestamp);
    let mut section = BytesMut::with_capacity(decoded.section.len());
    // Kafka's builder starts maxTimestamp at NO_TIMESTAMP and raises it per record.
    let mut max_timestamp = NO_TIMESTAMP;
    let mut last = None;
    for &i in keep {
        if last.is_some_and(|l| i <= l) {
            return Err(BatchError::Invalid(format!("record indexes to keep are not ascending at {i}")));
        }
        last = Some(i);
        let s = decoded.spans.get(i).ok_or_else(|| BatchError::Invalid(format!("no record {i} to keep")))?;
        let timestamp = h.base_timestamp.wrapping_add(s.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if base_timestamp == h.base_timestamp {
            section.put_slice(&decoded.section[s.whole.clone()]);
        } else {
            let mut delta = Vec::with_capacity(10);
            put_varlong(&mut delta, timestamp.wrapping_sub(base_timestamp));
            let body_len = 1 + delta.len() + s.after_timestamp.len();
            put_varint(&mut section, body_len as i32);
            section.put_u8(s.attributes);
            section.put_slice(&delta);
            section.put_slice(&decoded.section[s.after_timestamp.clone()]);
        }
    }
    if h.is_log_append_time() {
        // The broker's stamp is the batch's time for every record (DefaultRecordBatch reads
        // record timestamps as maxTimestamp); Kafka's cleaner keeps it (`logAppendTime =
        // originalBatch.maxTimestamp()`).
        max_timestamp = h.max_timestamp;
    }
    let records = compress(h.compression(), &section)?;
    let attributes =
        (h.attributes & !DELETE_HORIZON_FLAG) | if delete_horizon_ms.is_some() { DELETE_HORIZON_FLAG } else { 0 };
    let fields = HeaderFields {
        attributes,
        base_timestamp,
        max_timestamp,
        records_count: keep.len() as i32,
        ..HeaderFields::from(h)
    };
    Ok(write_batch(&fields, &records))
}

/// Kafka's `DefaultRecordBatch.writeEmptyHeader` for a batch kept only for its producer state
/// (RETAIN_EMPTY): same offsets, producer fields, leader epoch, timestamp type, transactional
/// and control bits and `maxTimestamp`; no codec, no delete horizon, `baseTimestamp` -1, no
/// records.
pub fn empty_batch(h: &BatchHeader) -> Bytes {
    let fields = HeaderFields {
        attributes: h.attributes & !(CODEC_MASK | DELETE_HORIZON_FLAG),
        base_timestamp: NO_TIMESTAMP,
        max_timestamp: h.max_timestamp,
        records_count: 0,
        ..HeaderFields::from(h)
    };
    write_batch(&fields, &[])
}

/// What a transaction marker says (Kafka's `ControlRecordType` ABORT / COMMIT and its
/// `EndTxnMarker` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Kafka's `ControlRecordType` key version and the `EndTxnMarker` value version it writes.
const CONTROL_KEY_VERSION: i16 = 0;
const END_TXN_MARKER_VERSION: i16 = 0;
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;
/// `attributes`: transactional (bit 4) | control (bit 5), CreateTime, no codec.
const MARKER_ATTRIBUTES: i16 = (1 << 4) | (1 << 5);

/// A transaction marker as Kafka's `MemoryRecords.withEndTransactionMarker` writes it (RFC 0004
/// §4): one control batch at offset 0 (the writer assigns the real one), magic 2, attributes
/// control|transactional, no sequence (-1), the producer id and epoch of the transaction, one
/// record with key (version 0, type 0 abort / 1 commit) and value `EndTxnMarker` (version 0,
/// coordinator epoch), timestamps `timestamp_ms`. 78 bytes.
pub fn end_txn_marker(producer_id: i64, producer_epoch: i16, marker: EndTxnMarker, timestamp_ms: i64) -> Bytes {
    let mut record = BytesMut::with_capacity(20);
    let kind = if marker.commit { CONTROL_TYPE_COMMIT } else { CONTROL_TYPE_ABORT };
    // attributes, timestampDelta 0, offsetDelta 0.
    let mut body = BytesMut::with_capacity(16);
    body.put_u8(0);
    put_varlong(&mut body, 0);
    put_varint(&mut body, 0);
    put_varint(&mut body, 4);
    body.put_i16(CONTROL_KEY_VERSION);
    body.put_i16(kind);
    put_varint(&mut body, 6);
    body.put_i16(END_TXN_MARKER_VERSION);
    body.put_i32(marker.coordinator_epoch);
    put_varint(&mut body, 0);
    put_varint(&mut record, body.len() as i32);
    record.put_slice(&body);
    let fields = HeaderFields {
        base_offset: 0,
        partition_leader_epoch: -1,
        attributes: MARKER_ATTRIBUTES,
        last_offset_delta: 0,
        base_timestamp: timestamp_ms,
        max_timestamp: timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence: -1,
        records_count: 1,
    };
    write_batch(&fields, &record)
}

/// The marker a control batch holds, `None` for a batch that is not a transaction marker
/// (not a control batch, an emptied one, or another control type). Corrupt bytes are an error,
/// never a panic.
pub fn decode_end_txn_marker(batch: &[u8]) -> Result<Option<EndTxnMarker>, BatchError> {
    let h = batch::parse_header(batch)?;
    if !h.is_control() {
        return Ok(None);
    }
    let d = decode(batch)?;
    let Some(r) = d.record(0) else { return Ok(None) };
    let key = r.key.unwrap_or_default();
    if key.len() < 4 {
        return Err(corrupt(format!("control record key of {} bytes (at least 4 expected)", key.len())));
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return Ok(None),
    };
    let value = r.value.unwrap_or_default();
    if value.len() < 6 {
        return Err(corrupt(format!("transaction marker value of {} bytes (at least 6 expected)", value.len())));
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(Some(EndTxnMarker { commit, coordinator_epoch }))
}

/// The header fields a written batch needs.
struct HeaderFields {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records_count: i32,
}

impl From<&BatchHeader> for HeaderFields {
    fn from(h: &BatchHeader) -> Self {
        HeaderFields {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            records_count: h.records_count,
        }
    }
}

fn write_batch(f: &HeaderFields, records: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + records.len());
    b.put_i64(f.base_offset);
    // batchLength counts everything after itself; sections are at most a few tens of MiB.
    b.put_i32((HEADER_LEN - 12 + records.len()) as i32);
    b.put_i32(f.partition_leader_epoch);
    b.put_i8(2);
    b.put_u32(0); // CRC, below
    b.put_i16(f.attributes);
    b.put_i32(f.last_offset_delta);
    b.put_i64(f.base_timestamp);
    b.put_i64(f.max_timestamp);
    b.put_i64(f.producer_id);
    b.put_i16(f.producer_epoch);
    b.put_i32(f.base_sequence);
    b.put_i32(f.records_count);
    b.put_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn compress(codec_id: i16, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    let fill = |buf: &mut BytesMut| -> anyhow::Result<()> {
        buf.put_slice(section);
        Ok(())
    };
    let mut out = BytesMut::new();
    let done = match codec_id {
        0 => return Ok(section.to_vec()),
        1 => codec::Gzip::compress(&mut out, fill),
        2 => codec::Snappy::compress(&mut out, fill),
        3 => codec::Lz4::compress(&mut out, fill),
        4 => codec::Zstd::compress(&mut out, fill),
        c => return Err(corrupt(format!("unknown compression codec {c}"))),
    };
    done.map_err(|e| BatchError::Invalid(format!("compressing with codec {codec_id}: {e:#}")))?;
    Ok(out.to_vec())
}

/// Inflates a records section, refusing more than `limit` bytes of output.
fn decompress(codec_id: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let failed = |e: std::io::Error| corrupt(format!("decompressing with codec {codec_id}: {e}"));
    match codec_id {
        // Java's GZIPInputStream reads concatenated members.
        1 => read_bounded(flate2::read::MultiGzDecoder::new(data), limit).map_err(failed)?,
        2 => snappy(data, limit),
        3 => read_bounded(lz4::Decoder::new(data).map_err(failed)?, limit).map_err(failed)?,
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(failed)?;
            // The window never needs to exceed what we accept as output.
            d.window_log_max(27).map_err(failed)?;
            read_bounded(d, limit).map_err(failed)?
        }
        c => Err(corrupt(format!("unknown compression codec {c}"))),
    }
}

fn too_large(limit: usize) -> BatchError {
    BatchError::DecompressedTooLarge { max: limit }
}

fn read_bounded(r: impl Read, limit: usize) -> std::io::Result<Result<Vec<u8>, BatchError>> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok(if out.len() > limit { Err(too_large(limit)) } else { Ok(out) })
}

/// Snappy as Kafka's clients write it: xerial framing (a 16-byte magic header, then blocks of
/// a big-endian u32 length and raw snappy), or raw snappy without the header (snappy-java
/// falls back to it too). Each block's declared length is checked against the limit before
/// anything is allocated.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    const MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
    const HEADER: usize = 16;
    let block = |out: &mut Vec<u8>, raw: &[u8]| -> Result<(), BatchError> {
        let len = snap::raw::decompress_len(raw).map_err(|e| corrupt(format!("snappy: {e}")))?;
        if len > limit - out.len() {
            return Err(too_large(limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(|e| corrupt(format!("snappy: {e}")))?;
        out.truncate(start + n);
        Ok(())
    };
    let mut out = Vec::new();
    if data.len() < HEADER || &data[..MAGIC.len()] != MAGIC {
        block(&mut out, data)?;
        return Ok(out);
    }
    let mut pos = HEADER;
    while pos < data.len() {
        let len_bytes: [u8; 4] = data
            .get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("snappy: truncated block length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        pos += 4;
        let raw = data.get(pos..pos.saturating_add(len)).ok_or_else(|| corrupt("snappy: truncated block"))?;
        block(&mut out, raw)?;
        pos += len;
    }
    Ok(out)
}

/// Reads one record at `*pos` (Kafka's `DefaultRecord.readFrom`), leaving `*pos` after it.
fn read_record(b: &[u8], pos: &mut usize) -> Result<Span, String> {
    let start = *pos;
    let body_len = read_varint(b, pos)?;
    if body_len < 0 {
        return Err(format!("negative record size {body_len}"));
    }
    let body_start = *pos;
    let end = body_start
        .checked_add(body_len as usize)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| format!("record of {body_len} bytes but {} left", b.len() - body_start))?;
    // Parse within the record only: a field may not run into the next record.
    let r = &b[..end];
    let attributes = *r.get(*pos).ok_or("missing attributes")?;
    *pos += 1;
    let timestamp_delta = read_varlong(r, pos)?;
    let after_timestamp_start = *pos;
    let offset_delta = read_varint(r, pos)?;
    let key = read_bytes(r, pos, "key")?;
    let value = read_bytes(r, pos, "value")?;
    let headers_start = *pos;
    let count = read_varint(r, pos)?;
    if count < 0 {
        return Err(format!("invalid number of record headers {count}"));
    }
    for _ in 0..count {
        let key_len = read_varint(r, pos)?;
        if key_len < 0 {
            return Err(format!("invalid negative header key size {key_len}"));
        }
        take(r, pos, key_len as usize, "header key")?;
        read_bytes(r, pos, "header value")?;
    }
    if *pos != end {
        return Err(format!("record declares {body_len} bytes but its fields take {}", *pos - body_start));
    }
    Ok(Span {
        whole: start..end,
        after_timestamp: after_timestamp_start..end,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: headers_start..end,
    })
}

/// A varint length and that many bytes; a negative length is null (as Kafka reads it).
fn read_bytes(b: &[u8], pos: &mut usize, what: &str) -> Result<Option<Range<usize>>, String> {
    let len = read_varint(b, pos)?;
    if len < 0 {
        return Ok(None);
    }
    take(b, pos, len as usize, what).map(Some)
}

fn take(b: &[u8], pos: &mut usize, len: usize, what: &str) -> Result<Range<usize>, String> {
    let start = *pos;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| format!("{what} of {len} bytes overruns the record"))?;
    *pos = end;
    Ok(start..end)
}

/// Unsigned LEB128 of at most `max_bytes` bytes (Kafka's `ByteUtils.readUnsignedVarint` /
/// `readVarlong`: bits past the type's width are dropped, a longer encoding is an error).
fn read_unsigned(b: &[u8], pos: &mut usize, max_bytes: u32) -> Result<u64, String> {
    let mut v = 0u64;
    for i in 0..max_bytes {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f).wrapping_shl(7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than its type".into())
}

fn read_varint(b: &[u8], pos: &mut usize) -> Result<i32, String> {
    let v = read_unsigned(b, pos, 5)? as u32;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

fn read_varlong(b: &[u8], pos: &mut usize) -> Result<i64, String> {
    let v = read_unsigned(b, pos, 10)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

fn put_unsigned(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_unsigned(buf, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

#[cfg(test)]
pub(crate) mod tests {
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    pub const CODECS: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// One record to encode: (key, value, timestamp, headers).
    pub type Spec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64, &'a [(&'a str, Option<&'a [u8]>)]);

    /// Encodes records at consecutive offsets from `base_offset` as one v2 batch, as a client
    /// would (kafka-protocol's encoder).
    pub fn encode(base_offset: i64, codec: Compression, pid: i64, specs: &[Spec<'_>]) -> Bytes {
        encode_with(base_offset, codec, pid, false, false, specs)
    }

    pub fn encode_with(
        base_offset: i64,
        codec: Compression,
        pid: i64,
        transactional: bool,
        control: bool,
        specs: &[Spec<'_>],
    ) -> Bytes {
        let records: Vec<Record> = specs
            .iter()
            .enumerate()
            .map(|(i, (k, v, ts, hs))| Record {
                transactional,
                control,
                delete_horizon: false,
                partition_leader_epoch: 7,
                producer_id: pid,
                producer_epoch: if pid >= 0 { 3 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: base_offset + i as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: if pid >= 0 { 100 } else { -1 } + i as i32,
                timestamp: *ts,
                key: k.map(Bytes::copy_from_slice),
                value: v.map(Bytes::copy_from_slice),
                headers: hs
                    .iter()
                    .map(|(k, v)| {
                        (kafka_protocol::protocol::StrBytes::from_string(k.to_string()), v.map(Bytes::copy_from_slice))
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: codec })
            .expect("encode");
        buf.freeze()
    }

    pub fn kp_decode(b: &Bytes) -> Vec<Record> {
        let mut buf = b.clone();
        RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes it").records
    }

    fn specs() -> Vec<Spec<'static>> {
        vec![
            (Some(b"a"), Some(b"1"), 1000, &[("h", Some(b"x")), ("h2", None)]),
            (None, Some(b"2"), 990, &[]),
            (Some(b"b"), None, 1010, &[]),
            (Some(b""), Some(b""), 1005, &[("", Some(b""))]),
        ]
    }

    #[test]
    fn decodes_every_codec_like_kafka_protocol() {
        for c in CODECS {
            let b = encode(40, c, 9, &specs());
            let d = decode(&b).expect("decodes");
            let theirs = kp_decode(&b);
            assert_eq!(d.len(), theirs.len());
            for (mine, kp) in d.records().zip(&theirs) {
                assert_eq!(mine.offset, kp.offset);
                assert_eq!(mine.timestamp, kp.timestamp);
                assert_eq!(mine.key, kp.key.as_deref());
                assert_eq!(mine.value, kp.value.as_deref());
            }
            assert_eq!(keyless_records(&b).expect("ok"), vec![1]);
        }
    }

    #[test]
    fn rewrite_keeps_records_and_header_fields() {
        for c in CODECS {
            let b = encode(40, c, 9, &specs());
            let d = decode(&b).expect("decodes");
            let out = rewrite(&d, &[0, 2], None).expect("rewrite");
            let o = decode(&out).expect("output decodes");
            let (h, oh) = (d.header, o.header);
            assert_eq!(
                (oh.base_offset, oh.last_offset_delta, oh.base_sequence, oh.producer_id, oh.producer_epoch),
                (h.base_offset, h.last_offset_delta, h.base_sequence, h.producer_id, h.producer_epoch)
            );
            assert_eq!((oh.partition_leader_epoch, oh.attributes, oh.records_count), (7, h.attributes, 2));
            assert_eq!(oh.max_timestamp, 1010, "max over the kept records");
            assert_eq!(o.record(0), d.record(0).map(|r| RecordRef { index: 0, ..r }));
            assert_eq!(o.record(1), d.record(2).map(|r| RecordRef { index: 1, ..r }));
            let kp = kp_decode(&out);
            assert_eq!(kp.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![40, 42]);
            assert_eq!(kp[0].headers.len(), 2);
            // Unchanged base timestamp: the kept records are copied byte for byte.
            if c == Compression::None {
                let s = &d.spans[0];
                assert_eq!(&o.section[o.spans[0].whole.clone()], &d.section[s.whole.clone()]);
            }
        }
    }

    #[test]
    fn delete_horizon_rebases_timestamps() {
        for c in CODECS {
            let b = encode(0, c, -1, &specs());
            let d = decode(&b).expect("decodes");
            let out = rewrite(&d, &[1, 2, 3], Some(5_000_000)).expect("rewrite");
            let o = decode(&out).expect("decodes");
            assert_eq!(o.delete_horizon_ms(), Some(5_000_000));
            assert_eq!(o.header.base_timestamp, 5_000_000);
            assert_eq!(o.header.max_timestamp, 1010);
            assert_eq!(o.header.attributes & CODEC_MASK, c as i16);
            for (i, r) in o.records().enumerate() {
                let orig = d.record(i + 1).expect("record");
                assert_eq!(
                    (r.offset, r.timestamp, r.key, r.value, r.headers),
                    (orig.offset, orig.timestamp, orig.key, orig.value, orig.headers)
                );
            }
            let kp = kp_decode(&out);
            assert!(kp.iter().all(|r| r.delete_horizon));
            assert_eq!(kp.iter().map(|r| r.timestamp).collect::<Vec<_>>(), vec![990, 1010, 1005]);
        }
    }

    #[test]
    fn empty_batch_is_kafkas_empty_header() {
        let b = encode(10, Compression::Zstd, 4, &specs());
        let d = decode(&b).expect("decodes");
        let out = rewrite(&d, &[], None).expect("rewrite");
        assert_eq!(out.len(), HEADER_LEN);
        let o = decode(&out).expect("decodes");
        assert!(o.is_empty());
        let h = o.header;
        assert_eq!((h.base_offset, h.last_offset(), h.records_count, h.compression()), (10, 13, 0, 0));
        assert_eq!((h.base_timestamp, h.max_timestamp, h.base_sequence, h.producer_epoch), (-1, 1010, 100, 3));
        assert!(kp_decode(&out).is_empty());
    }

    /// Golden bytes from Apache Kafka 4.4's cleaner re-encoding, `MemoryRecords.filterTo`
    /// (generated by tests/golden/KafkaCleanerGolden.java): Kafka's input batch, re-encoded
    /// with a delete horizon, with a subset of records, and emptied for its producer.
    #[test]
    fn rewrite_matches_kafkas_filter_to_byte_for_byte() {
        const INPUT: &str = "00000000000000280000005b00000007029f91f2e600000000000300000000000003e800000000000003f200000000000000090003000000640000000420000000026102310402680278046832010e001302010232000e0014040262010010000a060000020000";
        const HORIZON: &str = "0000000000000028000000530000000702e28132a800400000000300000000004c4b4000000000000003f20000000000000009000300000064000000031400c39de204020102320014009b9de20404026201001600a59de204060000020000";
        const SUBSET: &str = "000000000000002800000053000000070207dc6d7a00000000000300000000000003e800000000000003ed00000000000000090003000000640000000320000000026102310402680278046832010e0013020102320010000a060000020000";
        const EMPTY: &str = "00000000000000280000003100000007025dfd8d88000000000003ffffffffffffffff00000000000003f2000000000000000900030000006400000000";
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
        };
        let input = hex(INPUT);
        let d = decode(&input).expect("Kafka's batch decodes");
        // Kafka's filter at now 4_000_000 with delete.retention.ms 1_000_000 keeps offsets 41-43.
        assert_eq!(rewrite(&d, &[1, 2, 3], Some(5_000_000)).expect("rewrite")[..], hex(HORIZON)[..]);
        assert_eq!(rewrite(&d, &[0, 1, 3], None).expect("rewrite")[..], hex(SUBSET)[..]);
        assert_eq!(rewrite(&d, &[], None).expect("rewrite")[..], hex(EMPTY)[..]);
    }

    #[test]
    fn log_append_time_keeps_its_stamp() {
        let b = encode(0, Compression::None, -1, &specs());
        let mut m = batch::to_mut(&b);
        let size = m.len();
        batch::set_log_append_time(&mut m, size, 77_000);
        let d = decode(&m).expect("decodes");
        let out = rewrite(&d, &[0], Some(9_000)).expect("rewrite");
        let o = decode(&out).expect("decodes");
        assert!(o.header.is_log_append_time());
        assert_eq!(o.header.max_timestamp, 77_000);
        assert_eq!(o.record(0).map(|r| r.timestamp), Some(1000));
    }

    #[test]
    fn refuses_bad_counts_crc_and_bombs() {
        let b = encode(0, Compression::None, -1, &specs());
        // Declared count one less than the records present: bytes left over.
        let mut m = batch::to_mut(&b);
        m[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(decode(&m), Err(BatchError::Corrupt(_))));
        m[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(decode(&m), Err(BatchError::Corrupt(_))));
        let mut m = batch::to_mut(&b);
        m[30] ^= 1;
        assert!(matches!(decode(&m), Err(BatchError::Corrupt(_))));
        // 80 MiB of one value, gzip/zstd-compressed to a few KiB: refused, not inflated.
        let big = vec![0u8; 80 << 20];
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4, Compression::Snappy] {
            let bomb = encode(0, c, -1, &[(Some(b"k"), Some(&big), 0, &[])]);
            assert!(matches!(decode(&bomb), Err(BatchError::DecompressedTooLarge { .. })), "{c:?}");
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_varlong(&mut b, v);
            assert_eq!(read_varlong(&b, &mut 0), Ok(v));
            if let Ok(v32) = i32::try_from(v) {
                let mut b = Vec::new();
                put_varint(&mut b, v32);
                assert_eq!(read_varint(&b, &mut 0), Ok(v32));
            }
        }
        assert!(read_varint(&[0xff; 6], &mut 0).is_err());
    }

    #[test]
    fn never_panics_on_truncations_and_flips() {
        for c in CODECS {
            let b = encode(0, c, 2, &specs());
            for cut in 0..b.len() {
                let _ = decode(&b[..cut]);
            }
            for i in 0..b.len() {
                let mut m = batch::to_mut(&b);
                m[i] ^= 0x5a;
                // Fix the CRC so the flip reaches the record parser.
                if m.len() > 21 {
                    let crc = crc32c::crc32c(&m[21..]);
                    m[17..21].copy_from_slice(&crc.to_be_bytes());
                }
                if let Ok(d) = decode(&m) {
                    let keep: Vec<usize> = (0..d.len()).step_by(2).collect();
                    let out = rewrite(&d, &keep, Some(1)).expect("re-encodes what it decoded");
                    decode(&out).expect("re-encoded output decodes");
                }
            }
        }
    }

    /// A marker is Kafka's 78-byte control batch: kafka-protocol's decoder (a client's) reads it
    /// as a control, transactional record with the key and value Kafka writes, and it decodes
    /// back to what was encoded.
    #[test]
    fn end_txn_marker_is_kafkas_control_batch() {
        for (commit, kind) in [(false, 0u8), (true, 1)] {
            let m = EndTxnMarker { commit, coordinator_epoch: 7 };
            let b = end_txn_marker(1234, 5, m, 1_700_000_000_000);
            assert_eq!(b.len(), 78);
            let h = batch::parse_header(&b).expect("header");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records_count), (1234, 5, -1, 1));
            assert_eq!(
                (h.base_timestamp, h.max_timestamp, h.last_offset_delta),
                (1_700_000_000_000, 1_700_000_000_000, 0)
            );
            batch::verify_crc(&b, &h).expect("valid CRC");
            let theirs = kp_decode(&b);
            assert_eq!(theirs.len(), 1);
            assert!(theirs[0].control && theirs[0].transactional);
            assert_eq!(theirs[0].key.as_deref(), Some(&[0, 0, 0, kind][..]));
            assert_eq!(theirs[0].value.as_deref(), Some(&[0, 0, 0, 0, 0, 7][..]));
            assert_eq!(theirs[0].timestamp, 1_700_000_000_000);
            assert_eq!(decode_end_txn_marker(&b), Ok(Some(m)));
        }
        // A data batch is no marker; a truncated or flipped marker is an error or no marker, never a panic.
        assert_eq!(decode_end_txn_marker(&encode(0, Compression::None, 1, &specs())), Ok(None));
        let b = end_txn_marker(1, 0, EndTxnMarker { commit: true, coordinator_epoch: 0 }, 0);
        for cut in 0..b.len() {
            let _ = decode_end_txn_marker(&b[..cut]);
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] ^= 0xff;
            let _ = decode_end_txn_marker(&m);
        }
    }
}
