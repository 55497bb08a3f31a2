//! The log cleaner of compacted topics (`cleanup.policy=compact`, RFC 0003): Kafka's
//! `LogCleaner` on object storage.
//!
//! * [`map`]: the bounded key → latest offset map (phase 1's output).
//! * [`filter`]: Kafka's retention rules for one batch (phase 2), pure.
//!
//! The pass (planning, I/O, the swap) builds on these.

pub(crate) mod filter;
pub(crate) mod map;
#[cfg(test)]
mod model;
