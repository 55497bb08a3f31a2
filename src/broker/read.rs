//! The read path: committed chunks from the tail cache or from object storage.
//!
//! Two separate byte budgets so catch-up readers never evict the tail:
//! * the tail cache holds each chunk this broker flushed, inserted before its commit, keyed by
//!   its location (object, position): tailing consumers read from memory without decoding;
//! * the block cache (storage crate) holds ranged GETs of objects for everything else.
//!
//! Only committed data is ever read: callers find chunks through the applied metadata, and the
//! tail cache is only reachable through such a chunk.

use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;
use skiff_controller::metadata::Chunk;
use skiff_storage::{BlockCache, ObjectStorage, StorageError};

use crate::metrics::Metrics;

/// Recently flushed chunks by (object key, position).
#[derive(Clone)]
pub struct TailCache {
    cache: Cache<(Arc<str>, u64), Bytes>,
}

impl TailCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_k: &(Arc<str>, u64), v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        Self { cache }
    }

    pub fn insert(&self, object: Arc<str>, position: u64, bytes: Bytes) {
        self.cache.insert((object, position), bytes);
    }

    pub fn get(&self, object: &Arc<str>, position: u64) -> Option<Bytes> {
        self.cache.get(&(object.clone(), position))
    }
}

/// Reads committed chunks.
#[derive(Clone)]
pub struct Reader {
    pub tail: TailCache,
    pub blocks: BlockCache,
    pub storage: ObjectStorage,
    metrics: Arc<Metrics>,
}

impl Reader {
    pub fn new(tail: TailCache, blocks: BlockCache, storage: ObjectStorage, metrics: Arc<Metrics>) -> Self {
        Self { tail, blocks, storage, metrics }
    }

    /// The bytes of one committed chunk (whole batches).
    pub async fn chunk(&self, chunk: &Chunk) -> Result<Bytes, StorageError> {
        if let Some(b) = self.tail.get(&chunk.object, chunk.position) {
            self.metrics.tail_read(true);
            return Ok(b);
        }
        self.metrics.tail_read(false);
        self.blocks.read(&self.storage, &chunk.object, None, chunk.position..chunk.position + chunk.len).await
    }
}
