//! Skiff's object storage layer: everything between the broker and S3-compatible storage.
//!
//! It owns
//! - choosing a backend by URL ([`open`]: `file://`, `memory://`, `s3://`) and checking it
//!   is reachable ([`ObjectStorage::check`]);
//! - object keys ([`ObjectStorage::wal_key`]) and create-only writes with retries
//!   ([`ObjectStorage::put_new`], [`RetryPolicy`]);
//! - the WAL object byte format ([`format`], specified in `docs/format.md`);
//! - the block cache for ranged reads ([`BlockCache`]);
//! - a fault-injecting store for tests ([`FaultInjectingStore`]).
//!
//! It knows nothing of Kafka requests: a WAL object section is an opaque run of bytes tagged
//! with (topic id, partition, offset range, max timestamp).
//!
//! Invariants:
//! - Objects are immutable: created once, never overwritten, never appended to. Caches
//!   therefore never need invalidation.
//! - Keys are unique per writer: a WAL key embeds the broker id, the broker's incarnation and
//!   a per-incarnation sequence number, so two processes never write the same key. That is
//!   what lets a retried PUT recognise its own earlier, lost-response attempt.
//! - Bytes read back are untrusted: decoders bounds-check every length and report corruption
//!   as [`ErrorKind::Corrupt`], never by panicking.

#[cfg(feature = "aws-profile")]
pub mod aws_profile;
pub mod backend;
pub mod cache;
pub mod error;
pub mod fault;
pub mod format;
pub mod store;

pub mod histogram;

pub use backend::{StorageConfig, open};
pub use cache::BlockCache;
pub use error::{ErrorKind, Operation, StorageError};
pub use fault::FaultInjectingStore;
pub use format::{SectionMeta, WalObjectBuilder, decode_footer, verify_section};
pub use histogram::LatencyHistogram;
pub use store::{ObjectInfo, ObjectStorage, RetryPolicy, StorageStats};
