//! Offsets by timestamp (ListOffsets): the image names the first chunk whose max timestamp
//! reaches the target (`PartitionView::chunk_for_timestamp`); this reads that chunk and finds
//! the exact record, decoding only the one batch that holds it.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use skiff_controller::image::Chunk;
use skiff_storage::StorageError;
use uuid::Uuid;

use super::read::Reader;
use crate::broker::batch;

/// The first record of `chunk` at or after `log_start` whose timestamp is >= `target`, as
/// (offset, timestamp); `None` if the chunk holds none.
pub async fn offset_for_time(
    reader: &Reader,
    topic_id: Uuid,
    chunk: &Chunk,
    target: i64,
    log_start: i64,
) -> Result<Option<(i64, i64)>, StorageError> {
    let data = reader.chunk(topic_id, chunk).await?;
    Ok(find_in_chunk(data, target, log_start).await)
}

/// The first record at or after `log_start` with timestamp >= `target`, as (offset, timestamp).
async fn find_in_chunk(data: Bytes, target: i64, log_start: i64) -> Option<(i64, i64)> {
    // Decoding may decompress: keep it off the async workers and contain any decoder panic.
    tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| {
            let mut pos = 0;
            while pos < data.len() {
                let h = batch::parse_header(&data[pos..]).ok()?;
                if h.max_timestamp >= target && h.last_offset() >= log_start {
                    let mut one = data.slice(pos..pos + h.size);
                    let set = RecordBatchDecoder::decode(&mut one).ok()?;
                    // A cleaned batch may have lost its first records: the first record that
                    // is there, not the base offset, answers.
                    if h.is_log_append_time() {
                        if let Some(r) = set.records.iter().find(|r| r.offset >= log_start) {
                            return Some((r.offset, h.max_timestamp));
                        }
                    } else if let Some(r) = set.records.iter().find(|r| r.offset >= log_start && r.timestamp >= target)
                    {
                        return Some((r.offset, r.timestamp));
                    }
                }
                pos += h.size;
            }
            None
        })
        .ok()
        .flatten()
    })
    .await
    .ok()
    .flatten()
}
