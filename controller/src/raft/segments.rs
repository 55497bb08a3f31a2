//! The on-disk Raft log: append-only segment files of checksummed records.
//!
//! Owns the files `<dir>/<seq>.seg` (seq: zero-padded, increasing; the highest one is the active
//! segment that appends go to). Knows nothing about openraft: a record is a log index plus opaque
//! payload bytes.
//!
//! Record layout (little endian):
//!
//! ```text
//! u32 payload_len | u32 crc32c(index ++ payload) | u64 index | payload
//! ```
//!
//! Invariants:
//! * indexes are consecutive across all segments, in seq order;
//! * everything [`SegmentLog::append`] returned `Ok` for is fsynced;
//! * a crash can only tear the tail of the active segment, so on open the first bad record (short
//!   header, length past the end of the file, CRC mismatch) of the *last* segment marks the torn
//!   tail and the file is truncated there; a bad record in any older segment is corruption,
//!   reported as [`ControllerError::Corrupt`] rather than silently dropping synced data.
//!
//! Purge never rewrites data: it rolls to a fresh segment and deletes segments whose records are
//! all purged. A segment holding both purged and live records stays until a later purge; readers
//! above skip the purged records on open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ControllerError;
use crate::raft::fs::{corrupt, io_err, sync_dir};

const HEADER_BYTES: usize = 16;
const SEGMENT_EXT: &str = "seg";

/// A log index and the payload stored with it.
pub(crate) type Record = (u64, Vec<u8>);

/// Appends one record to `out`; `payload` must be shorter than 4 GiB.
fn encode_record(index: u64, len: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

fn record_crc(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// One record decoded from `buf` at `pos`, or `None` if the bytes there are not a whole valid
/// record (torn or corrupt).
fn decode_record(buf: &[u8], pos: usize) -> Option<(u64, &[u8], usize)> {
    let header = buf.get(pos..pos + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let start = pos + HEADER_BYTES;
    let payload = buf.get(start..start + len)?;
    (record_crc(index, payload) == crc).then_some((index, payload, start + len))
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    first_index: Option<u64>,
    last_index: Option<u64>,
}

/// The segment files of one log directory. Used from a single writer thread.
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    /// Ordered by seq; never empty; the last one is active.
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    /// Log index → (segment seq, byte offset of its record), for truncation.
    locations: BTreeMap<u64, (u64, u64)>,
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, repairs a torn tail and returns every record
    /// still on disk, in index order.
    pub(crate) fn open(dir: &Path) -> Result<(SegmentLog, Vec<Record>), ControllerError> {
        let mut seqs = Vec::new();
        for dirent in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let path = dirent.map_err(|e| io_err(dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let seq = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt(&path, "segment file name is not a sequence number"))?;
            seqs.push(seq);
        }
        seqs.sort_unstable();

        let mut records = Vec::new();
        let mut segments = Vec::new();
        let mut locations = BTreeMap::new();
        let mut active_len = 0;
        for (i, seq) in seqs.iter().copied().enumerate() {
            let path = segment_path(dir, seq);
            let buf = fs::read(&path).map_err(|e| io_err(&path, e))?;
            let mut pos = 0;
            let mut seg = Segment { seq, path: path.clone(), first_index: None, last_index: None };
            while pos < buf.len() {
                let Some((index, payload, next)) = decode_record(&buf, pos) else {
                    break;
                };
                if let Some(&(prev, _)) = records.last()
                    && prev + 1 != index
                {
                    return Err(corrupt(&path, format!("log index {index} at byte {pos} does not follow {prev}")));
                }
                seg.first_index.get_or_insert(index);
                seg.last_index = Some(index);
                locations.insert(index, (seq, pos as u64));
                records.push((index, payload.to_vec()));
                pos = next;
            }
            if pos < buf.len() {
                if i + 1 != seqs.len() {
                    return Err(corrupt(&path, format!("bad record at byte {pos} of a sealed segment")));
                }
                // The tail of the active segment was being written when the process died: it was
                // never fsynced, so it was never acknowledged. Drop it.
                tracing::warn!(
                    path = %path.display(),
                    valid_bytes = pos,
                    dropped_bytes = buf.len() - pos,
                    "truncating torn tail of the raft log"
                );
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_err(&path, e))?;
                f.set_len(pos as u64).map_err(|e| io_err(&path, e))?;
                f.sync_all().map_err(|e| io_err(&path, e))?;
            }
            active_len = pos as u64;
            segments.push(seg);
        }

        if segments.is_empty() {
            let path = segment_path(dir, 1);
            create_segment_file(&path)?;
            sync_dir(dir)?;
            segments.push(Segment { seq: 1, path, first_index: None, last_index: None });
        }
        let active_path = &segments.last().expect("at least one segment exists").path;
        let active = OpenOptions::new().append(true).open(active_path).map_err(|e| io_err(active_path, e))?;
        Ok((SegmentLog { dir: dir.to_path_buf(), segments, active, active_len, locations }, records))
    }

    /// Writes `records` (consecutive indexes following the current last one) with a single write
    /// and a single fsync.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), ControllerError> {
        let Some(first) = records.first().map(|(i, _)| *i) else {
            return Ok(());
        };
        let active_path = self.active_path().to_path_buf();
        if let Some(last) = self.last_index()
            && first != last + 1
        {
            return Err(corrupt(&active_path, format!("append of index {first} does not follow {last}")));
        }
        let mut buf = Vec::with_capacity(records.iter().map(|(_, p)| p.len() + HEADER_BYTES).sum());
        let seq = self.active_seq();
        for (index, payload) in records {
            let len = u32::try_from(payload.len())
                .map_err(|_| corrupt(&active_path, format!("log entry {index} is too large to store")))?;
            self.locations.insert(*index, (seq, self.active_len + buf.len() as u64));
            encode_record(*index, len, payload, &mut buf);
        }
        self.active.write_all(&buf).map_err(|e| io_err(&active_path, e))?;
        // sync_data covers the file length too, which is all the metadata a reader needs.
        self.active.sync_data().map_err(|e| io_err(&active_path, e))?;
        self.active_len += buf.len() as u64;
        let seg = self.segments.last_mut().expect("at least one segment exists");
        seg.first_index.get_or_insert(first);
        seg.last_index = records.last().map(|(i, _)| *i);
        Ok(())
    }

    /// Deletes every record with index >= `from`, durably.
    pub(crate) fn truncate(&mut self, from: u64) -> Result<(), ControllerError> {
        let Some(&(seq, offset)) = self.locations.get(&from) else {
            return Ok(());
        };
        // Newest first, so a crash midway leaves a prefix of the log, never a hole.
        while self.active_seq() > seq {
            let seg = self.segments.pop().expect("segment with a higher seq exists");
            fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, e))?;
        }
        sync_dir(&self.dir)?;
        let path = self.active_path().to_path_buf();
        // Reopen: the previous active handle may belong to a deleted file.
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| io_err(&path, e))?;
        file.set_len(offset).map_err(|e| io_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        self.active = file;
        self.active_len = offset;
        self.locations.split_off(&from);
        let seg = self.segments.last_mut().expect("at least one segment exists");
        seg.last_index = from.checked_sub(1).filter(|l| seg.first_index.is_some_and(|f| f <= *l));
        if seg.last_index.is_none() {
            seg.first_index = None;
        }
        Ok(())
    }

    /// Forgets every record with index <= `upto`: rolls to a new segment if the active one holds
    /// any of them, then deletes the segments holding nothing else.
    pub(crate) fn purge(&mut self, upto: u64) -> Result<(), ControllerError> {
        let active_has_purged = self.segments.last().and_then(|s| s.first_index).is_some_and(|first| first <= upto);
        if active_has_purged {
            let seq = self.active_seq() + 1;
            let path = segment_path(&self.dir, seq);
            create_segment_file(&path)?;
            sync_dir(&self.dir)?;
            self.active = OpenOptions::new().append(true).open(&path).map_err(|e| io_err(&path, e))?;
            self.active_len = 0;
            self.segments.push(Segment { seq, path, first_index: None, last_index: None });
        }
        let active_seq = self.active_seq();
        let mut kept = Vec::with_capacity(self.segments.len());
        let mut removed = false;
        for seg in self.segments.drain(..) {
            let all_purged = seg.last_index.is_none_or(|last| last <= upto);
            if seg.seq != active_seq && all_purged {
                fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, e))?;
                removed = true;
            } else {
                kept.push(seg);
            }
        }
        self.segments = kept;
        if removed {
            sync_dir(&self.dir)?;
        }
        self.locations = self.locations.split_off(&(upto + 1));
        Ok(())
    }

    fn last_index(&self) -> Option<u64> {
        self.locations.last_key_value().map(|(i, _)| *i)
    }

    fn active_seq(&self) -> u64 {
        self.segments.last().expect("at least one segment exists").seq
    }

    fn active_path(&self) -> &Path {
        &self.segments.last().expect("at least one segment exists").path
    }

    /// Number of segment files, for tests and metrics.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

fn create_segment_file(path: &Path) -> Result<(), ControllerError> {
    let f = OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("entry-{i}").into_bytes())).collect()
    }

    fn indexes(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
        records.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn append_reopen_truncate_purge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, got) = SegmentLog::open(dir.path()).expect("open");
        assert!(got.is_empty());
        log.append(&recs(0..=4)).expect("append");
        log.append(&recs(5..=9)).expect("append");
        assert!(log.append(&recs(11..=12)).is_err(), "holes are refused");
        log.truncate(7).expect("truncate");
        log.append(&recs(7..=8)).expect("append after truncate");
        drop(log);

        let (mut log, got) = SegmentLog::open(dir.path()).expect("reopen");
        assert_eq!(got, recs(0..=8));
        log.purge(3).expect("purge");
        assert_eq!(log.segment_count(), 2, "rolled; the old segment still holds 4..=8");
        log.append(&recs(9..=12)).expect("append");
        log.truncate(6).expect("truncate into the older segment");
        assert_eq!(log.segment_count(), 1, "the newer segment held only truncated records");
        log.append(&recs(6..=7)).expect("append");
        log.purge(7).expect("purge");
        assert_eq!(log.segment_count(), 1, "rolled, then the fully purged segment was deleted");
        log.append(&recs(8..=9)).expect("append");
        drop(log);

        let (_, got) = SegmentLog::open(dir.path()).expect("reopen");
        assert_eq!(got, recs(8..=9));
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = SegmentLog::open(dir.path()).expect("open");
        log.append(&recs(0..=2)).expect("append");
        drop(log);
        let path = segment_path(dir.path(), 1);
        let full = fs::read(&path).expect("read");

        // Half-written last record.
        fs::write(&path, &full[..full.len() - 3]).expect("write");
        let (mut log, got) = SegmentLog::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&got), vec![0, 1]);
        log.append(&recs(2..=3)).expect("append after repair");
        drop(log);
        let (_, got) = SegmentLog::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&got), vec![0, 1, 2, 3]);

        // Garbage after the last record, including a huge length.
        let mut bytes = fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0xff; 40]);
        fs::write(&path, &bytes).expect("write");
        let (_, got) = SegmentLog::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&got), vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_record_in_sealed_segment_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = SegmentLog::open(dir.path()).expect("open");
        log.append(&recs(0..=2)).expect("append");
        log.purge(0).expect("roll");
        log.append(&recs(3..=4)).expect("append");
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("write");
        let err = SegmentLog::open(dir.path()).expect_err("corrupt");
        assert!(matches!(err, ControllerError::Corrupt { .. }), "{err}");
    }
}
