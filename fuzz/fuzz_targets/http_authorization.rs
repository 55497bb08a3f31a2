//! Fuzzes the HTTP listener's `Authorization` header parser
//! (`skiff::http::auth::parse_authorization`: Basic base64 user:password, Bearer tokens).
//!
//! Properties: never panics on any bytes; accepted Basic credentials have a non-empty user
//! name without a colon; an accepted Bearer token is a substring of the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff::http::auth::{parse_authorization, Credentials};

fuzz_target!(|data: &[u8]| {
    match parse_authorization(data) {
        Ok(Credentials::Basic { user, .. }) => assert!(!user.is_empty() && !user.contains(':')),
        Ok(Credentials::Bearer(token)) => {
            let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
            assert!(text.contains(token));
        }
        Err(_) => {}
    }
});
