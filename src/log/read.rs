//! The read path: committed chunks from the tail cache or from object storage.
//!
//! Two separate byte budgets so catch-up readers never evict the tail:
//! * the tail cache holds each chunk this broker flushed, inserted before its commit, keyed by
//!   its location (object, position): tailing consumers read from memory without decoding.
//!   A compaction that rewrites cached chunks into a segment inserts the segment's section
//!   before its swap commits and drops the replaced entries after, so the hot tail never
//!   misses because of it (RFC 0002, "Adaptive pace"). Eviction is plain LRU: the newest data
//!   is what tailing readers want;
//! * the block cache (storage crate) holds ranged GETs of objects for everything else.
//!
//! Both evict the least recently used entries first (moka's default TinyLFU refuses a new entry
//! that was not looked up more often than its victims: a full tail cache then took no new chunk
//! and a full block cache no read-ahead block, so every read went to object storage).
//!
//! A fetch from object storage costs about what one from the tail cache does: the chunks are
//! walked as slices of the cached blocks ([`Rope`]) and only the bytes returned are copied,
//! once; read-ahead only fetches the blocks that are not cached, copying nothing.
//!
//! Only committed data is ever read: callers find chunks through the applied metadata, and the
//! tail cache is only reachable through such a chunk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use skiff_controller::image::Chunk;
use skiff_storage::{BlockCache, ObjectStorage, StorageError};
use tracing::Instrument;
use uuid::Uuid;

use crate::broker::batch;
use crate::metrics::Metrics;

/// What one tail-cache entry keeps alive besides its bytes: the section's footer entry in the
/// object the bytes are a slice of (64 bytes, `skiff_storage::format::ENTRY_LEN`) and the cache's
/// own bookkeeping (key, node, queue links: ~150 bytes in moka 0.12), rounded up. With 1 KiB
/// chunks (1,000 partitions at a few records per flush) this is a fifth of the memory, which
/// a weigher of the slice length alone did not count.
const ENTRY_OVERHEAD_BYTES: u32 = 256;

/// Recently flushed chunks by (object key, position).
///
/// Each entry is a slice of its WAL object (no copy), so the object's allocation lives while
/// any of its chunks is cached: objects are built at their exact size
/// (`WalObjectBuilder::for_sections`), so the chunks of an object weigh what it holds.
#[derive(Clone)]
pub struct TailCache {
    cache: Cache<(Arc<str>, u64), Bytes>,
}

impl TailCache {
    pub fn new(capacity_bytes: u64) -> Self {
        // LRU, not moka's default TinyLFU: TinyLFU admits a new entry into a full cache only
        // if it was read more often than the entries it would evict, and a section just
        // flushed has never been read, so once the cache filled up the newest sections (the
        // ones tailing consumers fetch next) were rejected in favour of older ones.
        let cache = Cache::builder()
            .eviction_policy(EvictionPolicy::lru())
            .max_capacity(capacity_bytes)
            .weigher(|_k: &(Arc<str>, u64), v: &Bytes| {
                u32::try_from(v.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD_BYTES)
            })
            .build();
        Self { cache }
    }

    /// Whether the chunk at (object, position) is cached, without counting as a use.
    pub fn contains(&self, object: &Arc<str>, position: u64) -> bool {
        self.cache.contains_key(&(object.clone(), position))
    }

    pub fn insert(&self, object: Arc<str>, position: u64, bytes: Bytes) {
        self.cache.insert((object, position), bytes);
    }

    pub fn get(&self, object: &Arc<str>, position: u64) -> Option<Bytes> {
        self.cache.get(&(object.clone(), position))
    }

    /// Drops one entry (a chunk that compaction replaced).
    pub fn remove(&self, object: &Arc<str>, position: u64) {
        self.cache.invalidate(&(object.clone(), position));
    }

    /// Bytes the cache holds by its own weighing (for `/metrics`; pending inserts may not be
    /// counted yet).
    pub fn weighted_size_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.cache.policy().max_capacity().unwrap_or(0)
    }
}

/// Chunks of one partition read at once (each a different object when the data is still in
/// small WAL objects): read one after the other, a catch-up fetch over hundreds of chunks took
/// hundreds of GET latencies and could exceed the client's request timeout on every retry.
const CHUNK_READ_CONCURRENCY: usize = 16;

/// Read-ahead GETs in flight at once across all consumers.
const READ_AHEAD_CONCURRENCY: usize = 4;

/// Reads committed chunks.
#[derive(Clone)]
pub struct Reader {
    pub tail: TailCache,
    pub blocks: BlockCache,
    pub storage: ObjectStorage,
    metrics: Arc<Metrics>,
    read_ahead: Arc<tokio::sync::Semaphore>,
}

impl Reader {
    pub fn new(tail: TailCache, blocks: BlockCache, storage: ObjectStorage, metrics: Arc<Metrics>) -> Self {
        Self {
            tail,
            blocks,
            storage,
            metrics,
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_CONCURRENCY)),
        }
    }

    /// Warms the block cache with the chunks a sequential consumer will ask for next. Runs in
    /// the background, bounded; skipped when read-ahead is saturated (it is only a hint).
    /// Concurrent reads of the same block coalesce with these GETs in the block cache. Chunks
    /// already cached (tail or blocks) are skipped without a task, and a warm-up fetches
    /// blocks without assembling them: the next fetches of a catch-up consumer ask for the
    /// same chunks again, and each used to copy them all.
    pub fn read_ahead(&self, chunks: Vec<Chunk>) {
        for chunk in chunks {
            let range = chunk.position..chunk.position + chunk.len;
            // Empty chunks (a cleaned range with no records left) have nothing to warm.
            if chunk.len == 0
                || self.tail.contains(&chunk.object, chunk.position)
                || self.blocks.is_cached(&chunk.object, range.clone())
            {
                continue;
            }
            let Ok(permit) = self.read_ahead.clone().try_acquire_owned() else { return };
            let blocks = self.blocks.clone();
            let storage = self.storage.clone();
            // Detached: a cache warm-up bounded by the read-ahead permits; its GET is bounded by
            // the storage retry deadline, and nothing waits for it.
            tokio::spawn(async move {
                let _ = blocks.warm(&storage, &chunk.object, range).await;
                drop(permit);
            });
        }
    }

    /// The bytes of one committed chunk (whole batches) of topic `topic_id`, in one buffer.
    pub async fn chunk(&self, topic_id: Uuid, chunk: &Chunk) -> Result<Bytes, StorageError> {
        let pieces = self.chunk_pieces(topic_id, chunk).await?;
        Ok(Rope::new(pieces).slice(0..usize::MAX))
    }

    /// The bytes of one committed chunk as consecutive slices of cached memory (the tail
    /// cache's one buffer, or the blocks it spans), not copied.
    pub async fn chunk_pieces(&self, topic_id: Uuid, chunk: &Chunk) -> Result<Vec<Bytes>, StorageError> {
        // A cleaned range whose records were all removed is an empty chunk: nothing to read.
        if chunk.len == 0 {
            return Ok(Vec::new());
        }
        let span = tracing::debug_span!(
            "log.read",
            key = &*chunk.object,
            position = chunk.position,
            bytes = chunk.len,
            source = tracing::field::Empty
        );
        if let Some(b) = self.tail.get(&chunk.object, chunk.position) {
            self.metrics.tail_read(true);
            span.record("source", "tail");
            return Ok(vec![b]);
        }
        self.metrics.tail_read(false);
        span.record("source", "storage");
        // Cost estimate: the blocks this chunk spans (some may be cached already).
        let block = self.blocks.block_size_bytes().max(1);
        let first = chunk.position / block;
        let last = (chunk.position + chunk.len.max(1) - 1) / block;
        self.metrics.attribute_gets(topic_id, (last - first + 1) as f64);
        self.blocks
            .read_pieces(&self.storage, &chunk.object, None, chunk.position..chunk.position + chunk.len)
            .instrument(span)
            .await
    }

    /// Reads the planned chunks and cuts them to whole batches from `offset` within `max_bytes`
    /// (the first batch regardless of the limit when `min_one`). A cleaned chunk may not start
    /// with a batch at its base offset and may end in a gap: reading starts at the first batch
    /// whose last offset reaches `offset`, in the next chunk if the first has none (a fetch
    /// inside a gap gets the next record, as in Kafka). Empty when no planned chunk has one:
    /// the caller plans on from the end of the last chunk.
    pub async fn records(
        &self,
        topic_id: Uuid,
        chunks: &[Chunk],
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Bytes, StorageError> {
        Ok(self.records_or_gap(topic_id, chunks, offset, max_bytes, min_one).await?.unwrap_or_default())
    }

    /// Like [`Self::records`], but `None` when the planned chunks hold no batch whose last
    /// offset reaches `offset` (it lies in a trailing gap): only then may a caller move on to
    /// later chunks. `Some` of empty bytes means a batch is there but does not fit `max_bytes`.
    pub async fn records_or_gap(
        &self,
        topic_id: Uuid,
        chunks: &[Chunk],
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Option<Bytes>, StorageError> {
        // The futures are built up front (lazily run) so no closure borrows across the stream.
        let reads: Vec<_> = chunks.iter().map(|c| self.chunk_pieces(topic_id, c)).collect();
        let parts: Vec<Vec<Bytes>> =
            futures::stream::iter(reads).buffered(CHUNK_READ_CONCURRENCY).try_collect().await?;
        if parts.is_empty() {
            return Ok(None);
        }
        let first_len: usize = parts[0].iter().map(Bytes::len).sum();
        let rope = Rope::new(parts.into_iter().flatten().collect());
        // The batch of the first chunk holding `offset`; none there: the later chunks from
        // their start (their offsets are all past the first chunk's).
        let start = rope.batch_reaching(first_len, offset).unwrap_or(first_len);
        if start >= rope.len() {
            return Ok(None);
        }
        let end = rope.whole_batches_within(start, max_bytes, min_one);
        Ok(Some(rope.slice(start..end)))
    }
}

/// Consecutive byte pieces read as one sequence of batches without joining them: a chunk read
/// from object storage is a slice of each cached block it spans, and a fetch keeps only part
/// of what it reads, so only that part is copied (once, and not at all when it lies in one
/// piece, as a tail-cache read does).
pub struct Rope {
    pieces: Vec<Bytes>,
    /// Start of each piece in the sequence.
    starts: Vec<usize>,
    len: usize,
}

impl Rope {
    pub fn new(pieces: Vec<Bytes>) -> Self {
        let pieces: Vec<Bytes> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let mut starts = Vec::with_capacity(pieces.len());
        let mut len = 0;
        for p in &pieces {
            starts.push(len);
            len += p.len();
        }
        Self { pieces, starts, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the piece holding byte `pos` (< len).
    fn piece_at(&self, pos: usize) -> usize {
        self.starts.partition_point(|s| *s <= pos) - 1
    }

    /// Copies up to `out.len()` bytes from `pos` into `out`; how many were there.
    fn copy_at(&self, pos: usize, out: &mut [u8]) -> usize {
        let mut done = 0;
        if pos >= self.len {
            return 0;
        }
        let mut i = self.piece_at(pos);
        let mut at = pos - self.starts[i];
        while done < out.len() && i < self.pieces.len() {
            let p = &self.pieces[i];
            let n = (p.len() - at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&p[at..at + n]);
            done += n;
            i += 1;
            at = 0;
        }
        done
    }

    /// As [`batch::slice_from_offset`] over the first `limit` bytes: the start of the first
    /// batch whose last offset reaches `offset` (headers checked as there).
    pub fn batch_reaching(&self, limit: usize, offset: i64) -> Option<usize> {
        let limit = limit.min(self.len);
        let mut header = [0u8; batch::HEADER_LEN];
        let mut pos = 0;
        while pos < limit {
            let n = self.copy_at(pos, &mut header[..batch::HEADER_LEN.min(limit - pos)]);
            let h = batch::parse_header_prefix(&header[..n], limit - pos).ok()?;
            if h.last_offset() >= offset {
                return Some(pos);
            }
            pos += h.size;
        }
        None
    }

    /// As [`batch::whole_batches_within`] from `start`: the end of the longest run of whole
    /// batches within `max_bytes` (the first one regardless with `min_one`).
    pub fn whole_batches_within(&self, start: usize, max_bytes: usize, min_one: bool) -> usize {
        let mut header = [0u8; 12];
        let mut end = start;
        while end < self.len {
            if self.copy_at(end, &mut header) < header.len() {
                break;
            }
            let Some((_, size)) = batch::peek_batch(&header) else { break };
            let next = end.saturating_add(size);
            if next > self.len || ((end > start || !min_one) && next - start > max_bytes) {
                break;
            }
            end = next;
        }
        end
    }

    /// Bytes `range` (its end capped at the length): a slice when one piece holds it, else one
    /// copy.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Bytes {
        let end = range.end.min(self.len);
        if range.start >= end {
            return Bytes::new();
        }
        let i = self.piece_at(range.start);
        let at = range.start - self.starts[i];
        if end - self.starts[i] <= self.pieces[i].len() {
            return self.pieces[i].slice(at..end - self.starts[i]);
        }
        let mut out = BytesMut::with_capacity(end - range.start);
        let mut pos = range.start;
        let mut i = i;
        while pos < end {
            let p = &self.pieces[i];
            let from = pos - self.starts[i];
            let to = (end - self.starts[i]).min(p.len());
            out.extend_from_slice(&p[from..to]);
            pos += to - from;
            i += 1;
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::batch::tests::encode_batch;
    use kafka_protocol::records::Compression;
    use skiff_storage::StorageConfig;

    /// `n_batches` batches of 10 records from offset `base`, as one chunk's bytes, and the
    /// (offset, position) of each batch.
    fn batches(base: i64, n_batches: usize) -> (Bytes, Vec<(i64, usize)>) {
        let mut out = BytesMut::new();
        let mut at = Vec::new();
        for b in 0..n_batches {
            let offset = base + 10 * b as i64;
            let mut one = batch::to_mut(&encode_batch(10, Compression::None, -1, 0, 1_000));
            batch::assign(&mut one, offset, 0);
            at.push((offset, out.len()));
            out.extend_from_slice(&one);
        }
        (out.freeze(), at)
    }

    /// A tail cache that has filled up once keeps taking the newest chunks: tailing consumers
    /// read what was flushed last, so the oldest chunks are the ones to go. (moka's default
    /// TinyLFU admission refused every new chunk once the cache was full: a new chunk has
    /// never been read, so its frequency never beats the victim's, and after the first
    /// `tail_cache_bytes` of produce every read went to object storage.)
    #[test]
    fn a_full_tail_cache_keeps_the_newest_chunks() {
        let chunk = 64 * 1024;
        let tail = TailCache::new(16 * chunk as u64);
        let object: Arc<str> = Arc::from("wal/1");
        // Three times the capacity, each chunk read once after its flush, as a tailing
        // consumer does.
        for i in 0..48u64 {
            tail.insert(object.clone(), i * chunk as u64, Bytes::from(vec![i as u8; chunk]));
            tail.cache.run_pending_tasks();
            assert!(tail.contains(&object, i * chunk as u64), "chunk {i} was not admitted");
            assert!(tail.get(&object, i * chunk as u64).is_some(), "chunk {i} was not admitted");
        }
        tail.cache.run_pending_tasks();
        assert!(tail.cache.weighted_size() <= 16 * chunk as u64, "bounded");
        assert!(!tail.contains(&object, 0), "the oldest chunk went first");
    }

    /// The rope walks batches exactly as the `batch` functions walk the joined bytes, wherever
    /// the piece boundaries fall (inside headers included).
    #[test]
    fn rope_cuts_batches_as_joined_bytes_do() {
        let (data, at) = batches(100, 6);
        let sizes: Vec<usize> = at.windows(2).map(|w| w[1].1 - w[0].1).collect();
        for piece in [1, 7, 12, 30, 61, 62, 100, sizes[0], sizes[0] + 1, data.len()] {
            let pieces: Vec<Bytes> =
                (0..data.len()).step_by(piece).map(|p| data.slice(p..(p + piece).min(data.len()))).collect();
            let rope = Rope::new(pieces);
            assert_eq!(rope.len(), data.len());
            assert_eq!(rope.slice(0..usize::MAX), data);
            for offset in [0, 100, 105, 110, 149, 159, 160, 1_000] {
                let want = batch::slice_from_offset(&data, offset);
                let got = rope.batch_reaching(data.len(), offset);
                assert_eq!(got.map(|p| data.slice(p..)), want, "piece {piece} offset {offset}");
                let Some(start) = got else { continue };
                for max in [0, 1, sizes[0] - 1, sizes[0], sizes[0] * 2 + 5, usize::MAX] {
                    for min_one in [false, true] {
                        let want = batch::whole_batches_within(&data.slice(start..), max, min_one);
                        let end = rope.whole_batches_within(start, max, min_one);
                        assert_eq!(rope.slice(start..end), want, "piece {piece} offset {offset} max {max} {min_one}");
                    }
                }
            }
        }
        // A slice inside one piece is that piece's memory, not a copy.
        let rope = Rope::new(vec![data.slice(..50), data.slice(50..)]);
        assert_eq!(rope.slice(60..90).as_ptr(), data[60..].as_ptr());
    }

    /// A catch-up consumer reading chunks that only object storage has: every record once, in
    /// order; every block of the object fetched once although the block cache holds only a
    /// fraction of them; and a fetch whose records lie in one block gets a slice of the cached
    /// block, not a copy of the chunk. (Before: a full block cache refused new blocks, so
    /// each fetch fetched its chunk's blocks again, and every chunk spanning two blocks was
    /// copied whole on every fetch to return part of it.)
    #[tokio::test]
    async fn a_cold_sequential_reader_fetches_each_block_once_and_copies_only_across_blocks() {
        let storage = skiff_storage::open(&StorageConfig::from_url("memory://")).expect("memory storage");
        let block = 4096u64;
        let blocks = BlockCache::new(8 * block, block);
        let reader = Reader::new(TailCache::new(1 << 20), blocks, storage.clone(), Arc::new(Metrics::default()));
        let key: Arc<str> = Arc::from("obj");
        // 24 chunks of 12 batches (~5 KiB each) in one object: most span two blocks.
        let mut object = BytesMut::new();
        let mut chunks = Vec::new();
        let mut position_of = std::collections::BTreeMap::new();
        for c in 0..24 {
            let base = c * 120;
            let (bytes, at) = batches(base, 12);
            for (offset, p) in at {
                position_of.insert(offset, object.len() + p);
            }
            chunks.push(Chunk {
                object: key.clone(),
                position: object.len() as u64,
                len: bytes.len() as u64,
                base_offset: base,
                last_offset: base + 119,
                max_timestamp: 1_000,
            });
            object.extend_from_slice(&bytes);
        }
        let object = object.freeze();
        storage.put_new(&key, object.clone()).await.expect("put");
        let end = 24 * 120;
        let max_bytes = 1500;
        let (mut offset, mut fetches, mut in_one_block) = (0i64, 0, 0);
        while offset < end {
            fetches += 1;
            assert!(fetches < 1_000, "no progress at {offset}");
            // As `PartitionView::chunks_from`: from the chunk holding `offset` until max_bytes.
            let mut plan = Vec::new();
            let mut planned = 0;
            for c in chunks.iter().filter(|c| c.last_offset >= offset) {
                if !plan.is_empty() && planned >= max_bytes {
                    break;
                }
                planned += c.len as usize;
                plan.push(c.clone());
            }
            let records = reader.records(Uuid::nil(), &plan, offset, max_bytes, true).await.expect("read");
            // The cache settles (evictions and admissions) between fetches.
            reader.blocks.weighted_size_bytes().await;
            let h = batch::parse_header(&records).expect("a batch");
            assert_eq!(h.base_offset, offset, "gapless, nothing skipped");
            assert!(records.len() <= max_bytes || records.len() == h.size);
            let p = position_of[&offset] as u64;
            assert_eq!(&records[..], &object[p as usize..p as usize + records.len()]);
            if p / block == (p + records.len() as u64 - 1) / block {
                in_one_block += 1;
                let cached = reader.blocks.read(&storage, &key, None, p..p + records.len() as u64).await.expect("hit");
                assert_eq!(records.as_ptr(), cached.as_ptr(), "fetch {fetches} copied its records");
            }
            offset = batch::end_offset(&records).expect("whole batches");
        }
        assert_eq!(offset, end);
        let object_blocks = (object.len() as u64).div_ceil(block);
        assert_eq!(storage.stats().snapshot().gets, object_blocks, "one GET per block");
        assert!(in_one_block >= 10, "{in_one_block} of {fetches} fetches within one block");
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    /// The tail cache's weight is what its entries keep in memory: a 1 KiB chunk costs its
    /// bytes plus a footer entry and the cache's bookkeeping, so 1,000 partitions of small
    /// chunks cannot hold a fifth more than `tail_cache_bytes`.
    #[test]
    fn the_tail_cache_weighs_entry_overhead() {
        let tail = TailCache::new(1 << 20);
        let object: Arc<str> = Arc::from("wal/1");
        for i in 0..10u64 {
            tail.insert(object.clone(), i * 1024, Bytes::from(vec![0u8; 1024]));
        }
        tail.cache.run_pending_tasks();
        // 10 × (1 KiB + 256): on main the weigher counted 10 KiB.
        assert_eq!(tail.cache.weighted_size(), 10 * (1024 + 256));
    }
}
