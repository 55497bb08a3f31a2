//! Fuzzes the SASL/PLAIN parser (`skiff::security::sasl::plain::parse`).
//!
//! Properties: never panics on any bytes; an accepted response has a non-empty user and
//! password, both taken verbatim from the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff::security::sasl::plain::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse(data) {
        assert!(!r.user.is_empty() && !r.password.is_empty());
        let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
        assert!(text.contains(&r.user) && text.ends_with(&r.password));
    }
});
