//! Fuzzes SASL/OAUTHBEARER (`skiff::security::sasl::oauthbearer`): the RFC 7628 client first
//! message parser, then JWT validation of the token it carries (header and payload decoding,
//! key lookup, signature check, claims) against a fixed JWKS.
//!
//! Properties: never panics on any bytes; an accepted client first message carries a non-empty
//! token taken verbatim from the input. A token cannot validate (the fuzzer has no private key).

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff::security::sasl::oauthbearer::{fuzz_one, parse_client_first};

fuzz_target!(|data: &[u8]| {
    if let Ok(first) = parse_client_first(data) {
        assert!(!first.token.is_empty());
        let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
        assert!(text.contains(&first.token));
    }
    fuzz_one(data);
});
