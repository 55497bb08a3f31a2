//! Fuzzes the record-batch byte handling of `skiff::broker::batch` with arbitrary bytes.
//!
//! Properties: nothing panics; `validate_produce` returns headers whose sizes tile the input
//! exactly; `slice_from_offset` returns a suffix of the input that starts at a batch boundary;
//! `whole_batches_within` returns a prefix no longer than the input and, past the first batch,
//! within `max_bytes`; `below_offset` returns a prefix of whole batches starting below the bound;
//! `records::decode_end_txn_marker` (transaction markers read back from storage) never panics.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use skiff::broker::batch::{
    below_offset, end_offset, parse_header, peek_batch, slice_from_offset, validate_produce, whole_batches_within,
};
use skiff::broker::records::decode_end_txn_marker;

fuzz_target!(|input: &[u8]| {
    // The first 16 bytes steer the limits and the offset; the rest is the record data.
    let Some((steer, records)) = input.split_first_chunk::<16>() else { return };
    let max_batch_bytes = u32::from_be_bytes([steer[0], steer[1], steer[2], steer[3]]) as usize;
    let offset = i64::from_be_bytes([steer[4], steer[5], steer[6], steer[7], steer[8], steer[9], steer[10], steer[11]]);
    let max_bytes = u32::from_be_bytes([steer[12], steer[13], steer[14], steer[15]]) as usize;
    let data = Bytes::copy_from_slice(records);

    if let Ok(headers) = validate_produce(&data, max_batch_bytes) {
        assert!(!headers.is_empty());
        assert_eq!(headers.iter().map(|h| h.size).sum::<usize>(), data.len());
        for h in &headers {
            assert!(h.size <= max_batch_bytes);
            assert!(h.records_count >= 1);
        }
    }
    let _ = parse_header(&data);

    if let Some(suffix) = slice_from_offset(&data, offset) {
        assert!(suffix.len() <= data.len());
        assert_eq!(&data[data.len() - suffix.len()..], &suffix[..]);
        let h = parse_header(&suffix).expect("a slice starts at a parsable batch");
        assert!(h.last_offset() >= offset);
    }

    for min_one in [true, false] {
        let prefix = whole_batches_within(&data, max_bytes, min_one);
        assert!(prefix.len() <= data.len());
        assert_eq!(&data[..prefix.len()], &prefix[..]);
        if !min_one {
            assert!(prefix.len() <= max_bytes, "without min_one the limit is hard");
        }
        let again = whole_batches_within(&prefix, max_bytes, min_one);
        assert_eq!(again.len(), prefix.len());
    }

    let stable = below_offset(&data, offset);
    assert_eq!(&data[..stable.len()], &stable[..]);
    let mut pos = 0;
    while pos < stable.len() {
        let (base, size) = peek_batch(&stable[pos..]).expect("whole batches");
        assert!(base < offset);
        pos += size;
    }
    assert_eq!(pos, stable.len());
    let _ = end_offset(&data);
    let _ = decode_end_txn_marker(&data);
});
