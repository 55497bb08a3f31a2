//! [`BlockCache`]: a byte-bounded cache of fixed-size blocks of immutable objects, for the
//! cold read path (ranged GETs of WAL objects and segments).
//!
//! Objects never change once written, so a cached block never goes stale and needs no
//! invalidation; entries leave only by eviction (least recently used first, by weight = block
//! bytes). Concurrent misses on the same block share one GET. Reads hand out slices of the
//! cached blocks ([`BlockCache::read_pieces`]) so a caller that walks them copies only what it
//! keeps. The leader's tail cache of recent batches lives in
//! the broker, separately, so catch-up reads here cannot evict it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use crate::error::{Operation, StorageError};
use crate::store::ObjectStorage;

/// Default block size: 1 MiB, a reasonable S3 GET size (a GET costs the same for 1 byte or
/// 1 MiB, and first-byte latency dominates below a few MiB).
pub const DEFAULT_BLOCK_SIZE_BYTES: u64 = 1024 * 1024;

/// Blocks fetched concurrently for one read whose object length is known.
const FETCH_CONCURRENCY: usize = 4;

type BlockKey = (Arc<str>, u64);

/// Hit/miss counters. A miss is one block fetched by this reader or joined while in flight.
#[derive(Debug, Default)]
pub struct BlockCacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Blocks actually fetched from storage (misses minus coalesced waiters).
    pub fetches: AtomicU64,
}

/// Cache of `block_size_bytes`-aligned blocks of objects; clones share the cache.
#[derive(Clone)]
pub struct BlockCache {
    cache: Cache<BlockKey, Bytes>,
    block_size_bytes: u64,
    stats: Arc<BlockCacheStats>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("block_size_bytes", &self.block_size_bytes)
            .field("weighted_size_bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most about `capacity_bytes` of blocks of `block_size_bytes` each.
    /// Block sizes are clamped to `1..=u32::MAX`.
    pub fn new(capacity_bytes: u64, block_size_bytes: u64) -> Self {
        let block_size_bytes = block_size_bytes.clamp(1, u64::from(u32::MAX));
        // LRU, not moka's default TinyLFU: TinyLFU admits a new block only if it was looked up
        // more often than the blocks it would evict, so once the cache was full a catch-up
        // reader's read-ahead blocks (never read yet) were refused and every fetch paid a
        // synchronous GET of blocks it had just fetched ahead.
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|_key: &BlockKey, block: &Bytes| u32::try_from(block.len()).unwrap_or(u32::MAX))
            .build();
        BlockCache { cache, block_size_bytes, stats: Arc::new(BlockCacheStats::default()) }
    }

    /// A cache of `capacity_bytes` with 1 MiB blocks.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        Self::new(capacity_bytes, DEFAULT_BLOCK_SIZE_BYTES)
    }

    pub fn block_size_bytes(&self) -> u64 {
        self.block_size_bytes
    }

    pub fn stats(&self) -> &BlockCacheStats {
        &self.stats
    }

    /// Bytes currently cached by the cache's own weighing, without waiting for pending
    /// maintenance (for `/metrics`).
    pub fn cached_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.cache.policy().max_capacity().unwrap_or(0)
    }

    /// Bytes currently cached (after pending maintenance).
    pub async fn weighted_size_bytes(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size()
    }

    /// Bytes `range` of the object `key`, assembled from cached blocks, fetching missing ones
    /// with ranged GETs. Pass `object_len` when known (the index knows it): missing blocks are
    /// then fetched concurrently. Without it, blocks are fetched in order and a short block
    /// marks the end of the object. A range extending past the object's end is
    /// [`ErrorKind::Invalid`](crate::ErrorKind). A range within one block is a slice of it; a
    /// longer one is copied into one buffer ([`Self::read_pieces`] does not copy).
    pub async fn read(
        &self,
        storage: &ObjectStorage,
        key: &str,
        object_len: Option<u64>,
        range: Range<u64>,
    ) -> Result<Bytes, StorageError> {
        let pieces = self.read_pieces(storage, key, object_len, range).await?;
        Ok(match pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                for p in many {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        })
    }

    /// Like [`Self::read`], but the range as consecutive slices of the cached blocks (one per
    /// block it spans, none empty), without copying.
    pub async fn read_pieces(
        &self,
        storage: &ObjectStorage,
        key: &str,
        object_len: Option<u64>,
        range: Range<u64>,
    ) -> Result<Vec<Bytes>, StorageError> {
        if range.start > range.end {
            return Err(StorageError::invalid(Operation::Get, key, format!("inverted range {range:?}")));
        }
        if let Some(len) = object_len.filter(|len| range.end > *len) {
            return Err(StorageError::invalid(
                Operation::Get,
                key,
                format!("range {range:?} extends past the end of the object ({len} bytes)"),
            ));
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let bs = self.block_size_bytes;
        let first = range.start / bs;
        let last = (range.end - 1) / bs;
        let key: Arc<str> = Arc::from(key);

        let blocks: Vec<Bytes> = match object_len {
            Some(len) => {
                futures::stream::iter(first..=last)
                    .map(|b| self.block(storage, &key, b, Some(len)))
                    .buffered(FETCH_CONCURRENCY)
                    .try_collect()
                    .await?
            }
            None => {
                let mut blocks = Vec::new();
                for b in first..=last {
                    let block = self.block(storage, &key, b, None).await?;
                    let short = (block.len() as u64) < bs;
                    blocks.push(block);
                    if short {
                        break;
                    }
                }
                blocks
            }
        };

        // Slice the requested range out of the blocks.
        let mut pieces = Vec::with_capacity(blocks.len());
        let mut got = 0u64;
        for (i, block) in blocks.iter().enumerate() {
            let block_start = (first + i as u64) * bs;
            let from = range.start.saturating_sub(block_start);
            let to = (range.end - block_start).min(block.len() as u64);
            if from >= to {
                continue;
            }
            got += to - from;
            pieces.push(block.slice(from as usize..to as usize));
        }
        if got != range.end - range.start {
            return Err(StorageError::invalid(
                Operation::Get,
                &key,
                format!("range {range:?} extends past the end of the object (got {got} bytes)"),
            ));
        }
        Ok(pieces)
    }

    /// Whether every block of `range` of `key` is cached (no lookup is recorded).
    pub fn is_cached(&self, key: &str, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        let key: Arc<str> = Arc::from(key);
        let bs = self.block_size_bytes;
        (range.start / bs..=(range.end - 1) / bs).all(|b| self.cache.contains_key(&(key.clone(), b)))
    }

    /// Fetches the blocks of `range` of `key` that are not cached, in order, without
    /// assembling anything (read-ahead). Blocks already cached are not touched, so warming
    /// neither counts as a hit nor refreshes them. Stops at the first error or short block.
    pub async fn warm(&self, storage: &ObjectStorage, key: &str, range: Range<u64>) -> Result<(), StorageError> {
        if range.is_empty() {
            return Ok(());
        }
        let key: Arc<str> = Arc::from(key);
        let bs = self.block_size_bytes;
        for b in range.start / bs..=(range.end - 1) / bs {
            if self.cache.contains_key(&(key.clone(), b)) {
                continue;
            }
            if (self.block(storage, &key, b, None).await?.len() as u64) < bs {
                break;
            }
        }
        Ok(())
    }

    async fn block(
        &self,
        storage: &ObjectStorage,
        key: &Arc<str>,
        index: u64,
        object_len: Option<u64>,
    ) -> Result<Bytes, StorageError> {
        let cache_key = (key.clone(), index);
        if let Some(block) = self.cache.get(&cache_key).await {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(block);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let bs = self.block_size_bytes;
        let start = index * bs;
        let end = match object_len {
            Some(len) => (start + bs).min(len),
            None => start + bs,
        };
        let stats = self.stats.clone();
        self.cache
            .try_get_with(cache_key, async move {
                stats.fetches.fetch_add(1, Ordering::Relaxed);
                storage.get_range_clamped(key, start..end).await
            })
            .await
            .map_err(|e: Arc<StorageError>| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultInjectingStore;
    use object_store::memory::InMemory;
    use std::time::Duration;

    async fn setup(data_len: usize) -> (ObjectStorage, FaultInjectingStore, Bytes) {
        let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), 7);
        let storage = ObjectStorage::new(Arc::new(faults.clone()), "p");
        let data: Bytes = (0..data_len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        storage.put_new("p/obj", data.clone()).await.expect("put");
        (storage, faults, data)
    }

    #[tokio::test]
    async fn reads_ranges_across_blocks() {
        let (storage, faults, data) = setup(1000).await;
        let cache = BlockCache::new(1 << 20, 64);
        for (len, range) in [
            (Some(1000), 0..1000u64),
            (Some(1000), 10..20),
            (Some(1000), 60..70),
            (None, 900..1000),
            (None, 0..1),
            (Some(1000), 999..1000),
            (None, 5..5),
        ] {
            let got = cache.read(&storage, "p/obj", len, range.clone()).await.expect("read");
            assert_eq!(&got[..], &data[range.start as usize..range.end as usize], "{range:?}");
        }
        // Everything was loaded by the first read.
        assert_eq!(faults.counts().gets, 16);
        let e = cache.read(&storage, "p/obj", Some(1000), 990..1001).await.expect_err("past end");
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        let e = cache.read(&storage, "p/obj", None, 990..1001).await.expect_err("past end");
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
    }

    #[tokio::test]
    async fn concurrent_misses_coalesce_into_one_get() {
        let (storage, faults, data) = setup(100).await;
        faults.set_get_latency(Duration::from_millis(50));
        let cache = BlockCache::new(1 << 20, 1024);
        let before = faults.counts().gets;
        let reads = (0..16).map(|i| {
            let cache = cache.clone();
            let storage = storage.clone();
            tokio::spawn(async move { cache.read(&storage, "p/obj", Some(100), i..i + 10).await })
        });
        for (i, r) in futures::future::join_all(reads).await.into_iter().enumerate() {
            let got = r.expect("join").expect("read");
            assert_eq!(&got[..], &data[i..i + 10]);
        }
        assert_eq!(faults.counts().gets - before, 1, "16 concurrent misses, one GET");
        assert_eq!(cache.stats().fetches.load(Ordering::Relaxed), 1);
        cache.read(&storage, "p/obj", Some(100), 0..100).await.expect("hit");
        assert!(cache.stats().hits.load(Ordering::Relaxed) >= 1);
        assert_eq!(faults.counts().gets - before, 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let (storage, faults, data) = setup(100).await;
        let storage = storage.with_retry(crate::RetryPolicy::no_retry());
        let cache = BlockCache::new(1 << 20, 1024);
        faults.set_down(true);
        let e = cache.read(&storage, "p/obj", Some(100), 0..10).await.expect_err("down");
        assert!(e.is_retriable());
        faults.set_down(false);
        let got = cache.read(&storage, "p/obj", Some(100), 0..10).await.expect("up again");
        assert_eq!(&got[..], &data[..10]);
    }

    /// A sequential reader's next block is kept once the cache is full (least recently used
    /// blocks go). moka's default TinyLFU refused it: a block looked up once never beats the
    /// blocks already read once, so every read of it was a GET again. Each block is read
    /// twice, as consecutive fetches of a catch-up consumer read the block they stopped in.
    #[tokio::test]
    async fn a_full_cache_still_admits_the_next_block() {
        let (storage, faults, data) = setup(16 * 1024).await;
        let cache = BlockCache::new(4 * 1024, 1024);
        let before = faults.counts().gets;
        for b in 0..16u64 {
            for _ in 0..2 {
                let range = b * 1024..(b + 1) * 1024;
                let read = cache.read(&storage, "p/obj", Some(16 * 1024), range.clone()).await.expect("read");
                assert_eq!(&read[..], &data[range.start as usize..range.end as usize]);
                // Admission and eviction settle between reads.
                assert!(cache.weighted_size_bytes().await <= 4 * 1024, "bounded");
            }
        }
        assert_eq!(faults.counts().gets - before, 16, "each block fetched once");
    }

    /// `read_pieces` hands out slices of the cached blocks: nothing is copied, and the pieces
    /// are exactly the range.
    #[tokio::test]
    async fn pieces_are_slices_of_the_cached_blocks() {
        let (storage, faults, data) = setup(1000).await;
        let cache = BlockCache::new(1 << 20, 64);
        let pieces = cache.read_pieces(&storage, "p/obj", None, 100..300).await.expect("read");
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [28, 64, 64, 44]);
        assert_eq!(pieces.concat(), &data[100..300]);
        let gets = faults.counts().gets;
        let again = cache.read_pieces(&storage, "p/obj", None, 100..300).await.expect("read");
        assert_eq!(faults.counts().gets, gets, "all cached");
        for (a, b) in pieces.iter().zip(&again) {
            assert_eq!(a.as_ptr(), b.as_ptr(), "the same cached memory, not a copy");
        }
        let e = cache.read_pieces(&storage, "p/obj", None, 990..1001).await.expect_err("past end");
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
    }

    /// Warming fetches only the missing blocks and records no hit; a read after it needs no GET.
    #[tokio::test]
    async fn warm_fetches_only_missing_blocks() {
        let (storage, faults, data) = setup(1000).await;
        let cache = BlockCache::new(1 << 20, 64);
        cache.read(&storage, "p/obj", None, 0..64).await.expect("read");
        assert!(cache.is_cached("p/obj", 0..64));
        assert!(!cache.is_cached("p/obj", 0..65));
        let gets = faults.counts().gets;
        cache.warm(&storage, "p/obj", 0..1000).await.expect("warm");
        assert_eq!(faults.counts().gets - gets, 15, "blocks 1..=15");
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 0);
        assert!(cache.is_cached("p/obj", 0..1000));
        let gets = faults.counts().gets;
        let all = cache.read(&storage, "p/obj", None, 0..1000).await.expect("read");
        assert_eq!(&all[..], &data[..]);
        assert_eq!(faults.counts().gets, gets);
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let (storage, _faults, _data) = setup(64 * 1024).await;
        let cache = BlockCache::new(8 * 1024, 1024);
        cache.read(&storage, "p/obj", Some(64 * 1024), 0..64 * 1024).await.expect("read");
        assert!(cache.weighted_size_bytes().await <= 8 * 1024);
    }
}
