//! The cleaner's offset map: key → the last offset of that key in the mapped range, in a fixed
//! amount of memory (Kafka's `SkimpyOffsetMap`).
//!
//! Keys are not stored, only their 128-bit MD5 digest (Kafka's choice too): two keys share an
//! entry only on a digest collision, with probability about n²/2¹²⁹ for n keys, in which case
//! the older key's records are dropped as if superseded. Open addressing with linear probing;
//! the map accepts at most `capacity` keys, 0.9 of its slots (Kafka's `dedupeBufferLoadFactor`),
//! so a probe always ends at an empty slot.

use md5::{Digest, Md5};

/// Kafka's default `log.cleaner.io.buffer.load.factor`.
const LOAD_FACTOR: f64 = 0.9;
/// The digest that marks an empty slot; a key that digests to it is stored as [`REMAPPED`].
const EMPTY: [u64; 2] = [0, 0];
const REMAPPED: [u64; 2] = [0, 1];

/// Inserting a new key into a map that holds `capacity` keys already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the offset map is full")]
pub struct MapFull;

#[derive(Debug, Clone, Copy)]
struct Slot {
    digest: [u64; 2],
    offset: i64,
}

/// Key digest → latest offset, bounded.
#[derive(Debug, Clone)]
pub struct OffsetMap {
    slots: Vec<Slot>,
    capacity: usize,
    len: usize,
}

impl OffsetMap {
    /// Bytes one slot costs (16-byte digest + 8-byte offset).
    pub const ENTRY_BYTES: usize = 24;

    /// A map holding at most `entries` keys, in `entries / 0.9` slots.
    pub fn with_capacity(entries: usize) -> Self {
        let slots = ((entries as f64 / LOAD_FACTOR).ceil() as usize).max(entries.saturating_add(1));
        OffsetMap { slots: vec![Slot { digest: EMPTY, offset: 0 }; slots], capacity: entries, len: 0 }
    }

    /// The keys it accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Inserts or overwrites (a later offset for the same key replaces the earlier one).
    /// `Err(MapFull)` when `key` is new and the map is full; nothing changes then.
    pub fn put(&mut self, key: &[u8], offset: i64) -> Result<(), MapFull> {
        let digest = digest(key);
        let at = self.find(digest);
        let slot = &mut self.slots[at];
        if slot.digest == EMPTY {
            if self.len >= self.capacity {
                return Err(MapFull);
            }
            slot.digest = digest;
            self.len += 1;
        }
        slot.offset = offset;
        Ok(())
    }

    /// The offset last put for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let slot = &self.slots[self.find(digest(key))];
        (slot.digest != EMPTY).then_some(slot.offset)
    }

    /// Empties the map, keeping its memory (one map serves every pass of a cleaner).
    pub fn clear(&mut self) {
        self.slots.fill(Slot { digest: EMPTY, offset: 0 });
        self.len = 0;
    }

    /// The slot holding `digest`, or the empty slot where it would go. Terminates: at least
    /// one slot is always empty (`capacity < slots`).
    fn find(&self, digest: [u64; 2]) -> usize {
        let n = self.slots.len();
        let mut at = (digest[0] % n as u64) as usize;
        loop {
            let d = self.slots[at].digest;
            if d == digest || d == EMPTY {
                return at;
            }
            at = if at + 1 == n { 0 } else { at + 1 };
        }
    }
}

fn digest(key: &[u8]) -> [u64; 2] {
    let d: [u8; 16] = Md5::digest(key).into();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&d[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let digest = [word(0), word(8)];
    if digest == EMPTY { REMAPPED } else { digest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_offsets_replace_earlier_ones() {
        let mut m = OffsetMap::with_capacity(3);
        m.put(b"a", 1).expect("room");
        m.put(b"b", 2).expect("room");
        m.put(b"a", 5).expect("overwrite");
        assert_eq!((m.get(b"a"), m.get(b"b"), m.get(b"c")), (Some(5), Some(2), None));
        assert_eq!(m.len(), 2);
        assert!(!m.is_full());
        m.put(b"", 7).expect("the empty key is a key");
        assert!(m.is_full());
        assert_eq!(m.put(b"d", 8), Err(MapFull));
        assert_eq!(m.get(b"d"), None, "a refused put changes nothing");
        m.put(b"b", 9).expect("an existing key still updates when full");
        assert_eq!((m.get(b"b"), m.get(b""), m.len()), (Some(9), Some(7), 3));
        m.clear();
        assert_eq!((m.len(), m.get(b"a")), (0, None));
    }

    #[test]
    fn capacity_and_load_factor() {
        for n in [0usize, 1, 2, 9, 10, 1000] {
            let mut m = OffsetMap::with_capacity(n);
            assert_eq!(m.capacity(), n);
            assert!(m.slots.len() as f64 * LOAD_FACTOR >= n as f64 - 1e-9 && m.slots.len() > n);
            for i in 0..n {
                m.put(format!("key-{i}").as_bytes(), i as i64).expect("room");
            }
            assert!(m.is_full());
            assert_eq!(m.put(b"one more", 0), Err(MapFull));
            for i in 0..n {
                assert_eq!(m.get(format!("key-{i}").as_bytes()), Some(i as i64));
            }
        }
        assert_eq!(std::mem::size_of::<Slot>(), OffsetMap::ENTRY_BYTES);
    }
}
