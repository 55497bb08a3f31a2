//! Fuzzes the controller's RPC request decoding (`controller/src/raft/network.rs`): the frame
//! bodies brokers and peer controllers send, including a traced broker request's W3C
//! `traceparent` (`controller/src/trace_context.rs`).
//!
//! Property: decoding arbitrary bytes never panics (a bad frame closes the connection).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = skiff_controller::fuzz_decode_controller_request(data);
    // The same bytes as the text of a traced request, so the traceparent parser sees them too.
    if let Ok(text) = std::str::from_utf8(data) {
        let body = serde_json::json!({ "TracedBroker": { "traceparent": text, "request": "DescribeQuorum" } });
        let _ = skiff_controller::fuzz_decode_controller_request(body.to_string().as_bytes());
    }
});
