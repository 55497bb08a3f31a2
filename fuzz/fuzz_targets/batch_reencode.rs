//! Fuzzes the log cleaner's record decoding, filtering and re-encoding
//! (`skiff::broker::records`, the cleaner's `map_batch` / `filter_batch`) with arbitrary bytes.
//!
//! Properties: nothing panics; a batch that decodes re-encodes with any subset of its records
//! and any delete horizon, and the output decodes to those records (same offsets, keys,
//! values, headers, timestamps) under the same baseOffset, lastOffsetDelta, baseSequence and
//! producer; whatever `filter_batch` rewrites decodes and keeps the batch's offsets.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use skiff::broker::records;
use skiff::log::background::cleaner_fuzzing::{OffsetMap, Outcome, Rules, TxnTracker, filter_batch, map_batch};

fuzz_target!(|input: &[u8]| {
    // 16 steering bytes: which records to keep (bitmask), horizon on/off and value, map size,
    // map end, clock; the rest is one batch.
    let Some((steer, batch)) = input.split_first_chunk::<16>() else { return };
    let keep_mask = u32::from_be_bytes([steer[0], steer[1], steer[2], steer[3]]);
    let horizon = (steer[4] & 1 == 1).then(|| i64::from(i32::from_be_bytes([steer[5], steer[6], steer[7], steer[8]])));
    let map_entries = usize::from(steer[9] % 16);
    let map_end = i64::from(i16::from_be_bytes([steer[10], steer[11]]));
    let now_ms = i64::from(i32::from_be_bytes([steer[12], steer[13], steer[14], steer[15]]));

    if let Ok(d) = records::decode(batch) {
        let keep: Vec<usize> = (0..d.len()).filter(|i| keep_mask & (1 << (i % 32)) != 0).collect();
        let out = records::rewrite(&d, &keep, horizon).expect("re-encodes what it decoded");
        let o = records::decode(&out).expect("re-encoded output parses");
        let (h, oh) = (d.header, o.header);
        assert_eq!(
            (oh.base_offset, oh.last_offset_delta, oh.base_sequence, oh.producer_id, oh.producer_epoch),
            (h.base_offset, h.last_offset_delta, h.base_sequence, h.producer_id, h.producer_epoch)
        );
        assert_eq!(o.len(), keep.len());
        for (r, &i) in o.records().zip(&keep) {
            let orig = d.record(i).expect("kept record");
            assert_eq!(
                (r.offset, r.timestamp, r.key, r.value, r.headers),
                (orig.offset, orig.timestamp, orig.key, orig.value, orig.headers)
            );
        }
        if !keep.is_empty() {
            assert_eq!(o.delete_horizon_ms(), horizon);
        }
    }

    let mut map = OffsetMap::with_capacity(map_entries);
    let _ = map_batch(batch, &[], &mut map);
    let last = HashMap::from([(1i64, 0i64)]);
    let rules = Rules {
        map: &map,
        map_end,
        now_ms,
        delete_retention_ms: 1000,
        aborted: &[],
        producer_last_batch: &last,
    };
    if let Ok(f) = filter_batch(batch, &rules, &mut TxnTracker::default())
        && let Outcome::Rewritten(out) = f.outcome
    {
        let o = records::decode(&out).expect("filtered output parses");
        let h = skiff::broker::batch::parse_header(batch).expect("filter read it");
        assert_eq!((o.header.base_offset, o.header.last_offset_delta), (h.base_offset, h.last_offset_delta));
        assert_eq!(o.len(), f.records_kept as usize);
    }
});
