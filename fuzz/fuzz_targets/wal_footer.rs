//! Fuzzes the WAL object decoder (`docs/format.md`) with arbitrary bytes.
//!
//! Properties: decoding never panics; reading the footer from the tail agrees with decoding
//! the whole object; an object that validates completely is re-encoded byte for byte by
//! `WalObjectBuilder` (the format has exactly one encoding of each object).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use skiff_storage::format::{FooterRead, WalObjectBuilder, decode_footer, read_footer_from_tail, validate_object};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let whole = decode_footer(data);
    for cut in [0, data.len() / 2, data.len().saturating_sub(13), data.len()] {
        let _ = read_footer_from_tail(&data[cut..], len);
    }
    if let Ok(sections) = &whole {
        match read_footer_from_tail(data, len) {
            Ok(FooterRead::Complete(from_tail)) => assert_eq!(&from_tail, sections),
            other => panic!("whole-object decode succeeded but tail decode gave {other:?}"),
        }
    }
    if let Ok(sections) = validate_object(data) {
        let mut builder = WalObjectBuilder::new();
        for s in &sections {
            let bytes = Bytes::copy_from_slice(&data[s.position as usize..(s.position + s.len) as usize]);
            builder
                .add_section(s.topic_id, s.partition, s.base_offset, s.last_offset, s.max_timestamp, &[bytes])
                .expect("a decoded object's sections are valid builder input");
        }
        let (rebuilt, metas) = builder.finish();
        assert_eq!(&rebuilt[..], data);
        assert_eq!(metas, sections);
    }
});
