//! WAL object format, version 1. The byte layout is specified in `docs/format.md`; keep the
//! two in step (a change to the layout needs a new version byte and a design record).
//!
//! ```text
//! header   magic "SKFW" | version u8
//! data     section 0 bytes | section 1 bytes | ...        (opaque Kafka record batches)
//! footer   section_count u32 | entry 0 | entry 1 | ...   (64 bytes per entry)
//! trailer  footer_len u32 | footer_crc u32 | version u8 | magic "SKFW"
//! ```
//!
//! All integers are big-endian. Decoding never trusts a length: every offset is bounds-checked
//! with checked arithmetic and any inconsistency is [`ErrorKind::Corrupt`](crate::ErrorKind),
//! never a panic. The functions here are pure (no I/O) so they can be fuzzed.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Operation, StorageError};

/// First and last four bytes of every WAL object.
pub const MAGIC: [u8; 4] = *b"SKFW";
/// The only version this code writes and reads.
pub const VERSION: u8 = 1;
/// magic + version.
pub const HEADER_LEN: usize = 5;
/// footer_len + footer_crc + version + magic.
pub const TRAILER_LEN: usize = 13;
/// Bytes per footer entry.
pub const ENTRY_LEN: usize = 64;
/// section_count.
const FOOTER_FIXED_LEN: usize = 4;
/// Smallest valid object: header, empty footer, trailer.
pub const MIN_OBJECT_LEN: usize = HEADER_LEN + FOOTER_FIXED_LEN + TRAILER_LEN;

/// Where one partition's bytes sit in a WAL object, and what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionMeta {
    pub topic_id: [u8; 16],
    pub partition: i32,
    /// Offset of the first record in the section.
    pub base_offset: i64,
    /// Offset of the last record in the section (inclusive).
    pub last_offset: i64,
    /// Largest record timestamp in the section (ms since the epoch; -1 if none).
    pub max_timestamp: i64,
    /// Byte position of the section in the object.
    pub position: u64,
    /// Section length in bytes.
    pub len: u64,
    /// CRC-32C (Castagnoli) of the section bytes.
    pub crc: u32,
}

impl SectionMeta {
    /// Byte range of the section in its object, for a ranged GET.
    pub fn byte_range(&self) -> std::ops::Range<u64> {
        self.position..self.position.saturating_add(self.len)
    }
}

/// Size of a WAL object of `sections` sections holding `data_bytes` in all.
pub fn object_len_bytes(data_bytes: usize, sections: usize) -> usize {
    HEADER_LEN + data_bytes + FOOTER_FIXED_LEN + ENTRY_LEN * sections + TRAILER_LEN
}

/// Builds one WAL object in a single buffer: section bytes are copied exactly once, from the
/// caller's pieces into the final buffer.
#[derive(Debug)]
pub struct WalObjectBuilder {
    buf: BytesMut,
    sections: Vec<SectionMeta>,
    seen: HashSet<([u8; 16], i32)>,
}

impl Default for WalObjectBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl WalObjectBuilder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A builder whose buffer is exactly the object's size when `sections` sections holding
    /// `data_bytes` in all are added: the object (and every tail-cache slice of it, which keeps
    /// the whole allocation alive) then holds no spare capacity. Growing from empty doubles the
    /// buffer, so up to half of it was unused capacity that no cache weigher saw.
    pub fn for_sections(data_bytes: usize, sections: usize) -> Self {
        Self::with_capacity(object_len_bytes(data_bytes, sections))
    }

    /// Pre-sizes the buffer for an object of about `capacity_bytes`.
    pub fn with_capacity(capacity_bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity_bytes.max(MIN_OBJECT_LEN));
        buf.put_slice(&MAGIC);
        buf.put_u8(VERSION);
        WalObjectBuilder { buf, sections: Vec::new(), seen: HashSet::new() }
    }

    /// Appends one partition's section: the concatenation of `parts` (Kafka record batches,
    /// opaque here). Each (topic_id, partition) may appear once per object, and
    /// `base_offset <= last_offset` must hold; violations are [`ErrorKind::Invalid`](crate::ErrorKind)
    /// and leave the builder unchanged.
    pub fn add_section(
        &mut self,
        topic_id: [u8; 16],
        partition: i32,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        parts: &[Bytes],
    ) -> Result<&SectionMeta, StorageError> {
        let invalid = |reason: String| StorageError::invalid(Operation::Put, "<wal object>", reason);
        if base_offset < 0 || base_offset > last_offset {
            return Err(invalid(format!(
                "section {partition}: offsets {base_offset}..={last_offset} are not a valid range"
            )));
        }
        if !self.seen.insert((topic_id, partition)) {
            return Err(invalid(format!("section for partition {partition} added twice")));
        }
        let position = self.buf.len() as u64;
        let mut crc = 0u32;
        let mut len = 0u64;
        for part in parts {
            crc = crc32c::crc32c_append(crc, part);
            len += part.len() as u64;
            self.buf.put_slice(part);
        }
        self.sections.push(SectionMeta {
            topic_id,
            partition,
            base_offset,
            last_offset,
            max_timestamp,
            position,
            len,
            crc,
        });
        Ok(self.sections.last().expect("just pushed"))
    }

    pub fn section_count(&self) -> usize {
        self.sections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// Size the object would have if finished now (header, data, footer and trailer).
    pub fn len_bytes(&self) -> usize {
        self.buf.len() + FOOTER_FIXED_LEN + ENTRY_LEN * self.sections.len() + TRAILER_LEN
    }

    /// Appends footer and trailer; returns the object and its sections in object order.
    pub fn finish(mut self) -> (Bytes, Vec<SectionMeta>) {
        let footer_start = self.buf.len();
        self.buf.reserve(self.len_bytes() - footer_start);
        // Section counts are bounded by object size; an object with 2^32 sections is not a
        // thing a broker builds.
        let count = u32::try_from(self.sections.len()).expect("fewer than 2^32 sections");
        self.buf.put_u32(count);
        for s in &self.sections {
            self.buf.put_slice(&s.topic_id);
            self.buf.put_i32(s.partition);
            self.buf.put_i64(s.base_offset);
            self.buf.put_i64(s.last_offset);
            self.buf.put_i64(s.max_timestamp);
            self.buf.put_u64(s.position);
            self.buf.put_u64(s.len);
            self.buf.put_u32(s.crc);
        }
        let footer = &self.buf[footer_start..];
        let footer_len = u32::try_from(footer.len()).expect("footer shorter than 4 GiB");
        let footer_crc = crc32c::crc32c(footer);
        self.buf.put_u32(footer_len);
        self.buf.put_u32(footer_crc);
        self.buf.put_u8(VERSION);
        self.buf.put_slice(&MAGIC);
        (self.buf.freeze(), self.sections)
    }
}

fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::corrupt("<wal object>", reason)
}

/// Decodes and validates the footer of a whole WAL object: header and trailer magic and
/// version, footer length and CRC, and that the sections tile the data area exactly (in
/// order, no gaps, no overlap) with distinct partitions and sane offsets. Does not check the
/// section CRCs (see [`verify_section`]).
pub fn decode_footer(object: &[u8]) -> Result<Vec<SectionMeta>, StorageError> {
    if object.len() < MIN_OBJECT_LEN {
        return Err(corrupt(format!("{} bytes is shorter than the smallest WAL object", object.len())));
    }
    if object[..4] != MAGIC {
        return Err(corrupt("bad header magic"));
    }
    if object[4] != VERSION {
        return Err(corrupt(format!("unsupported WAL format version {} (this build reads {VERSION})", object[4])));
    }
    match read_footer_from_tail(object, object.len() as u64)? {
        FooterRead::Complete(sections) => Ok(sections),
        FooterRead::NeedTail(n) => Err(corrupt(format!("footer claims {n} bytes, object has {}", object.len()))),
    }
}

/// Result of [`read_footer_from_tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterRead {
    /// The footer, validated.
    Complete(Vec<SectionMeta>),
    /// The tail was too short: read this many bytes from the end of the object and call again.
    NeedTail(u64),
}

/// Decodes the footer from the last `tail.len()` bytes of an object of `object_len` bytes,
/// for readers that fetch only the tail with a ranged GET. Validates everything
/// [`decode_footer`] does except the header (which may not be in `tail`).
pub fn read_footer_from_tail(tail: &[u8], object_len: u64) -> Result<FooterRead, StorageError> {
    let tail_len = tail.len() as u64;
    if tail_len > object_len {
        return Err(corrupt(format!("tail of {tail_len} bytes is longer than the object ({object_len})")));
    }
    if object_len < MIN_OBJECT_LEN as u64 {
        return Err(corrupt(format!("{object_len} bytes is shorter than the smallest WAL object")));
    }
    if tail.len() < TRAILER_LEN {
        return Ok(FooterRead::NeedTail(TRAILER_LEN as u64));
    }
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    let footer_len = u64::from(be_u32(&trailer[0..4]));
    let footer_crc = be_u32(&trailer[4..8]);
    let version = trailer[8];
    if trailer[9..13] != MAGIC {
        return Err(corrupt("bad trailer magic"));
    }
    if version != VERSION {
        return Err(corrupt(format!("unsupported WAL format version {version} (this build reads {VERSION})")));
    }
    let max_footer = object_len - (HEADER_LEN + TRAILER_LEN) as u64;
    if footer_len < FOOTER_FIXED_LEN as u64 || footer_len > max_footer {
        return Err(corrupt(format!("footer length {footer_len} out of bounds")));
    }
    let needed = footer_len + TRAILER_LEN as u64;
    if needed > tail_len {
        return Ok(FooterRead::NeedTail(needed));
    }
    // needed <= tail_len, so these fit in usize.
    let footer_start_in_tail = tail.len() - needed as usize;
    let footer = &tail[footer_start_in_tail..tail.len() - TRAILER_LEN];
    let actual_crc = crc32c::crc32c(footer);
    if actual_crc != footer_crc {
        return Err(corrupt(format!("footer CRC mismatch: stored {footer_crc:#010x}, computed {actual_crc:#010x}")));
    }
    let footer_pos = object_len - needed;
    decode_entries(footer, footer_pos).map(FooterRead::Complete)
}

/// Parses the footer body and checks that the sections tile `HEADER_LEN..footer_pos`.
fn decode_entries(footer: &[u8], footer_pos: u64) -> Result<Vec<SectionMeta>, StorageError> {
    let count = be_u32(&footer[0..4]) as usize;
    let entries = &footer[FOOTER_FIXED_LEN..];
    if count.checked_mul(ENTRY_LEN) != Some(entries.len()) {
        return Err(corrupt(format!("footer has {} entry bytes for {count} sections", entries.len())));
    }
    let mut sections = Vec::with_capacity(count);
    let mut seen = HashSet::with_capacity(count);
    let mut expected_pos = HEADER_LEN as u64;
    for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        let mut topic_id = [0u8; 16];
        topic_id.copy_from_slice(&e[0..16]);
        let s = SectionMeta {
            topic_id,
            partition: be_u32(&e[16..20]) as i32,
            base_offset: be_u64(&e[20..28]) as i64,
            last_offset: be_u64(&e[28..36]) as i64,
            max_timestamp: be_u64(&e[36..44]) as i64,
            position: be_u64(&e[44..52]),
            len: be_u64(&e[52..60]),
            crc: be_u32(&e[60..64]),
        };
        if s.position != expected_pos {
            return Err(corrupt(format!("section {i} at {} but previous section ends at {expected_pos}", s.position)));
        }
        let end = s.position.checked_add(s.len).filter(|end| *end <= footer_pos).ok_or_else(|| {
            corrupt(format!("section {i} ({} bytes at {}) overruns the data area", s.len, s.position))
        })?;
        if s.base_offset < 0 || s.base_offset > s.last_offset {
            return Err(corrupt(format!("section {i} has offsets {}..={}", s.base_offset, s.last_offset)));
        }
        if !seen.insert((s.topic_id, s.partition)) {
            return Err(corrupt(format!("section {i} repeats partition {}", s.partition)));
        }
        expected_pos = end;
        sections.push(s);
    }
    if expected_pos != footer_pos {
        return Err(corrupt(format!("sections end at {expected_pos} but the footer starts at {footer_pos}")));
    }
    Ok(sections)
}

/// Checks a section's bytes (as read from its object) against its footer entry.
pub fn verify_section(bytes: &[u8], meta: &SectionMeta) -> Result<(), StorageError> {
    if bytes.len() as u64 != meta.len {
        return Err(corrupt(format!(
            "section for partition {} is {} bytes, footer says {}",
            meta.partition,
            bytes.len(),
            meta.len
        )));
    }
    let crc = crc32c::crc32c(bytes);
    if crc != meta.crc {
        return Err(corrupt(format!(
            "section for partition {} CRC mismatch: stored {:#010x}, computed {crc:#010x}",
            meta.partition, meta.crc
        )));
    }
    Ok(())
}

/// Decodes the footer and verifies every section: the full validation of an object, as a
/// pure function of its bytes. The fuzz target calls this.
pub fn validate_object(object: &[u8]) -> Result<Vec<SectionMeta>, StorageError> {
    let sections = decode_footer(object)?;
    for s in &sections {
        // decode_footer proved position + len <= object.len().
        let bytes = object
            .get(s.position as usize..(s.position + s.len) as usize)
            .ok_or_else(|| corrupt("section outside object"))?;
        verify_section(bytes, s)?;
    }
    Ok(sections)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn topic(n: u8) -> [u8; 16] {
        [n; 16]
    }

    fn sample() -> (Bytes, Vec<SectionMeta>) {
        let mut b = WalObjectBuilder::new();
        b.add_section(topic(1), 0, 0, 2, 1000, &[Bytes::from_static(b"abc"), Bytes::from_static(b"defg")])
            .expect("valid");
        b.add_section(topic(1), 1, 10, 10, 1001, &[Bytes::from_static(b"xyz")]).expect("valid");
        b.add_section(topic(2), 0, 5, 9, -1, &[]).expect("valid");
        let expected_len = b.len_bytes();
        let (obj, metas) = b.finish();
        assert_eq!(obj.len(), expected_len);
        (obj, metas)
    }

    #[test]
    fn round_trip() {
        let (obj, metas) = sample();
        let decoded = decode_footer(&obj).expect("decodes");
        assert_eq!(decoded, metas);
        assert_eq!(decoded.len(), 3);
        assert_eq!(&obj[decoded[0].byte_range().start as usize..decoded[0].byte_range().end as usize], b"abcdefg");
        assert_eq!(decoded[1].position, 12);
        assert_eq!(decoded[2].len, 0);
        for s in &decoded {
            let bytes = &obj[s.position as usize..(s.position + s.len) as usize];
            verify_section(bytes, s).expect("crc ok");
        }
        assert_eq!(validate_object(&obj).expect("valid"), metas);
    }

    /// A flush knows its data size and section count up front: its object is built in one
    /// allocation of exactly its size, never regrown (a regrown buffer carries up to 2x spare
    /// capacity that tail-cache slices of the object keep alive).
    #[test]
    fn a_presized_object_is_one_exact_allocation() {
        let parts: [&[u8]; 3] = [&[1; 1000], &[2; 3000], &[3; 5]];
        let mut b = WalObjectBuilder::for_sections(4005, 3);
        let capacity = b.buf.capacity();
        for (i, p) in parts.iter().enumerate() {
            b.add_section([i as u8; 16], 0, 0, 0, 0, &[Bytes::copy_from_slice(p)]).expect("add");
        }
        assert_eq!(b.buf.capacity(), capacity, "never regrown");
        assert_eq!(b.len_bytes(), capacity);
        let (obj, _) = b.finish();
        assert_eq!(obj.len(), capacity);
        assert_eq!(object_len_bytes(4005, 3), obj.len());
    }

    #[test]
    fn empty_object_round_trips() {
        let b = WalObjectBuilder::new();
        assert_eq!(b.len_bytes(), MIN_OBJECT_LEN);
        let (obj, metas) = b.finish();
        assert!(metas.is_empty());
        assert_eq!(decode_footer(&obj).expect("decodes"), vec![]);
    }

    #[test]
    fn golden_bytes() {
        let mut b = WalObjectBuilder::new();
        b.add_section(topic(0xAB), 7, 1, 2, 3, &[Bytes::from_static(b"hi")]).expect("valid");
        let (obj, _) = b.finish();
        let mut want = Vec::new();
        want.extend_from_slice(b"SKFW\x01hi");
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&[0xAB; 16]);
        want.extend_from_slice(&7i32.to_be_bytes());
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&2i64.to_be_bytes());
        want.extend_from_slice(&3i64.to_be_bytes());
        want.extend_from_slice(&5u64.to_be_bytes());
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&crc32c::crc32c(b"hi").to_be_bytes());
        let footer_crc = crc32c::crc32c(&want[7..]);
        want.extend_from_slice(&68u32.to_be_bytes());
        want.extend_from_slice(&footer_crc.to_be_bytes());
        want.extend_from_slice(b"\x01SKFW");
        assert_eq!(&obj[..], &want[..]);
    }

    #[test]
    fn builder_rejects_bad_sections() {
        let mut b = WalObjectBuilder::new();
        b.add_section(topic(1), 0, 0, 0, 0, &[]).expect("valid");
        let dup = b.add_section(topic(1), 0, 1, 1, 0, &[]).expect_err("duplicate");
        assert_eq!(dup.kind(), ErrorKind::Invalid);
        assert!(b.add_section(topic(1), 1, 5, 4, 0, &[]).is_err());
        assert!(b.add_section(topic(1), 2, -1, 4, 0, &[]).is_err());
        assert_eq!(b.section_count(), 1);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (obj, metas) = sample();
        for i in 0..obj.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = obj.to_vec();
                bad[i] ^= flip;
                match decode_footer(&bad) {
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "byte {i}: {e}"),
                    Ok(decoded) => {
                        // Only data bytes may pass the footer check, and then a section CRC
                        // must catch the flip.
                        assert_eq!(decoded, metas, "byte {i} changed the footer undetected");
                        let err = validate_object(&bad).expect_err("section CRC must fail");
                        assert_eq!(err.kind(), ErrorKind::Corrupt);
                    }
                }
            }
        }
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let (obj, _) = sample();
        for n in 0..obj.len() {
            assert!(decode_footer(&obj[..n]).is_err());
            assert!(decode_footer(&obj[n..]).is_err() || n == 0);
        }
        for n in 0..200usize {
            let junk: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let _ = validate_object(&junk);
            let _ = read_footer_from_tail(&junk, n as u64);
            let _ = read_footer_from_tail(&junk, u64::MAX);
        }
    }

    #[test]
    fn footer_from_tail() {
        let (obj, metas) = sample();
        let len = obj.len() as u64;
        // Too short: asks for the trailer, then for the whole footer.
        assert_eq!(read_footer_from_tail(&obj[obj.len() - 3..], len).expect("ok"), FooterRead::NeedTail(13));
        let need = match read_footer_from_tail(&obj[obj.len() - 13..], len).expect("ok") {
            FooterRead::NeedTail(n) => n,
            other => panic!("expected NeedTail, got {other:?}"),
        };
        assert_eq!(need, (4 + 3 * ENTRY_LEN + TRAILER_LEN) as u64);
        let tail = &obj[obj.len() - need as usize..];
        assert_eq!(read_footer_from_tail(tail, len).expect("ok"), FooterRead::Complete(metas.clone()));
        assert_eq!(read_footer_from_tail(&obj, len).expect("ok"), FooterRead::Complete(metas));
        // Wrong object length is detected by the tiling check.
        assert!(read_footer_from_tail(tail, len + 1).is_err());
    }

    /// The fuzz target's properties, over seeded random mutations of a valid object.
    #[test]
    fn mutations_keep_fuzz_properties() {
        use rand::{Rng, SeedableRng};
        let (obj, _) = sample();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        for case in 0..5000 {
            let mut bad = obj.to_vec();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 if !bad.is_empty() => {
                        let i = rng.random_range(0..bad.len());
                        bad[i] = rng.random();
                    }
                    1 => bad.truncate(rng.random_range(0..=bad.len())),
                    _ => bad.insert(rng.random_range(0..=bad.len()), rng.random()),
                }
            }
            let len = bad.len() as u64;
            if let Ok(sections) = decode_footer(&bad) {
                let tail = read_footer_from_tail(&bad, len).expect("tail decode agrees");
                assert_eq!(tail, FooterRead::Complete(sections), "case {case}");
            }
            if let Ok(sections) = validate_object(&bad) {
                let mut b = WalObjectBuilder::new();
                for s in &sections {
                    let bytes = Bytes::copy_from_slice(&bad[s.position as usize..(s.position + s.len) as usize]);
                    b.add_section(s.topic_id, s.partition, s.base_offset, s.last_offset, s.max_timestamp, &[bytes])
                        .expect("valid");
                }
                assert_eq!(&b.finish().0[..], &bad[..], "case {case}: one encoding per object");
            }
        }
    }

    #[test]
    fn unknown_version_rejected() {
        let (obj, _) = sample();
        let mut v2 = obj.to_vec();
        v2[4] = 2;
        let e = decode_footer(&v2).expect_err("v2");
        assert!(e.to_string().contains("version 2"), "{e}");
    }
}
