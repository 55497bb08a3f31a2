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
//! Only committed data is ever read: callers find chunks through the applied metadata, and the
//! tail cache is only reachable through such a chunk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
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
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(capacity_bytes)
            .weigher(|_k: &(Arc<str>, u64), v: &Bytes| {
                u32::try_from(v.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD_BYTES)
            })
            .build();
        Self { cache }
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

    /// Applies pending admissions and evictions now (moka applies them lazily).
    #[cfg(test)]
    pub(crate) fn settle(&self) {
        self.cache.run_pending_tasks();
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
    /// Concurrent reads of the same block coalesce with these GETs in the block cache.
    pub fn read_ahead(&self, chunks: Vec<Chunk>) {
        for chunk in chunks {
            // Empty chunks (a cleaned range with no records left) have nothing to warm.
            if chunk.len == 0 || self.tail.get(&chunk.object, chunk.position).is_some() {
                continue;
            }
            let Ok(permit) = self.read_ahead.clone().try_acquire_owned() else { return };
            let blocks = self.blocks.clone();
            let storage = self.storage.clone();
            // Detached: a cache warm-up bounded by the read-ahead permits; its GET is bounded by
            // the storage retry deadline, and nothing waits for it.
            tokio::spawn(async move {
                let _ = blocks.read(&storage, &chunk.object, None, chunk.position..chunk.position + chunk.len).await;
                drop(permit);
            });
        }
    }

    /// The bytes of one committed chunk (whole batches) of topic `topic_id`.
    pub async fn chunk(&self, topic_id: Uuid, chunk: &Chunk) -> Result<Bytes, StorageError> {
        // A cleaned range whose records were all removed is an empty chunk: nothing to read.
        if chunk.len == 0 {
            return Ok(Bytes::new());
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
            return Ok(b);
        }
        self.metrics.tail_read(false);
        span.record("source", "storage");
        // Cost estimate: the blocks this chunk spans (some may be cached already).
        let block = self.blocks.block_size_bytes().max(1);
        let first = chunk.position / block;
        let last = (chunk.position + chunk.len.max(1) - 1) / block;
        self.metrics.attribute_gets(topic_id, (last - first + 1) as f64);
        self.blocks
            .read(&self.storage, &chunk.object, None, chunk.position..chunk.position + chunk.len)
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
        let reads: Vec<_> = chunks.iter().map(|c| self.chunk(topic_id, c)).collect();
        let parts: Vec<Bytes> = futures::stream::iter(reads).buffered(CHUNK_READ_CONCURRENCY).try_collect().await?;
        let first = match parts.first() {
            Some(f) => batch::slice_from_offset(f, offset).unwrap_or_default(),
            None => return Ok(None),
        };
        let joined = if parts.len() == 1 {
            first
        } else {
            let mut buf = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            buf.extend_from_slice(&first);
            for p in &parts[1..] {
                if buf.len() >= max_bytes {
                    break;
                }
                buf.extend_from_slice(p);
            }
            buf.freeze()
        };
        if joined.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch::whole_batches_within(&joined, max_bytes, min_one)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once full, the tail cache still takes each new section, evicting the oldest even if
    /// tailing readers read it several times (moka's default TinyLFU rejected the new one).
    #[test]
    fn full_tail_cache_keeps_the_newest_sections() {
        let tail = TailCache::new(1000);
        let key = |i: u64| Arc::<str>::from(format!("wal/1/x-{i}").as_str());
        for i in 0..10 {
            tail.insert(key(i), 0, Bytes::from(vec![0u8; 100]));
            tail.settle();
            for _ in 0..3 {
                assert!(tail.get(&key(i), 0).is_some(), "section {i} cached");
            }
        }
        for i in 10..20 {
            tail.insert(key(i), 0, Bytes::from(vec![1u8; 100]));
            tail.settle();
            assert!(tail.get(&key(i), 0).is_some(), "newest section {i} cached");
        }
        assert!(tail.get(&key(0), 0).is_none(), "oldest evicted");
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
