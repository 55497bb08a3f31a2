//! Fuzzes request decoding (`skiff::protocol::decode_request`) with arbitrary frames.
//!
//! Properties: decoding never panics out of `decode_request`, never aborts and never makes a
//! huge allocation (run with `-malloc_limit_mb`, see scripts/fuzz.sh); a successful decode
//! reports the API key and version of the frame's first four bytes. `peek_client_id` (who sent
//! a frame that cannot be decoded, for the "not served" log) never panics and never reads past
//! the frame.
//!
//! An input whose first two bytes are not the key of an API Skiff serves gets them replaced by
//! one that is (picked by their value), so the fuzzer spends its time inside the body decoders
//! rather than on the unknown-key early exit; the raw input is decoded too.

#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;
use skiff::protocol::{SUPPORTED_APIS, decode_request, peek_client_id, supported_range};

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    if frame.len() >= 8 {
        let raw = u16::from_be_bytes([frame[0], frame[1]]);
        let served = ApiKey::try_from(raw as i16).is_ok_and(|k| supported_range(k).is_some());
        if !served {
            let key = SUPPORTED_APIS[raw as usize % SUPPORTED_APIS.len()].key as i16;
            frame[..2].copy_from_slice(&key.to_be_bytes());
        }
    }
    let expected_key = frame.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let expected_version = frame.get(2..4).map(|b| i16::from_be_bytes([b[0], b[1]]));
    if let Ok(request) = decode_request(Bytes::from(frame)) {
        assert_eq!(Some(request.api_key as i16), expected_key);
        assert_eq!(Some(request.version), expected_version);
    }
    // The raw input too, so unknown keys and the header checks stay covered.
    let _ = decode_request(Bytes::copy_from_slice(data));
    if let Some(id) = peek_client_id(data) {
        assert!(id.len() <= data.len().saturating_mul(3), "lossy UTF-8 grows at most 3x");
    }
});
