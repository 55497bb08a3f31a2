//! The partition log: the one owner of how a partition's records are written, found and read,
//! and of the background work on what is stored.
//!
//! ```text
//!  handler/produce ──▶ wal::Wal::append ──PUT object──▶ storage ──commit_object──▶ controller
//!  handler/fetch   ──▶ PartitionView::chunks_from (image) ──▶ read::Reader ◀── tail cache / GETs
//!  handler/list_offsets ──▶ lookup::offset_for_time (chunk from the image, then one batch)
//!  background/     compaction.rs · retention.rs · gc.rs (tasks started by node.rs)
//! ```
//!
//! * [`wal`]: the write path (offsets, write-ahead buffer, flushes, commits).
//! * [`read`]: the read path (tail cache, block cache, object storage).
//! * [`lookup`]: offsets by timestamp inside a chunk's batches.
//! * [`txn`]: transactional checks at append and the markers a leader owes (RFC 0004).
//! * [`background`]: compaction, retention and garbage collection of stored objects.
//!
//! Where the offsets, epochs and chunks of a partition are is the controller's business: this
//! module asks the metadata image (`skiff_controller::image`) and writes through the typed
//! intents (`skiff_controller::intent`). Invariants (gapless offsets, one writer per leader
//! epoch, nothing referenced ever deleted) are stated where they are kept, in each file.

pub mod background;
pub mod lookup;
pub mod read;
pub mod txn;
pub mod wal;
