//! Fuzzes the SCRAM server (`skiff::security::sasl::scram`): the client-first and client-final
//! parsers, and a whole exchange driven by the input.
//!
//! Properties: parsing and stepping never panic on any bytes; an exchange completes only with
//! the right proof, which the fuzzer cannot forge, so `Step::Done` never happens for inputs that
//! do not carry it. The input is `client-first NUL client-final`; its first byte picks the
//! mechanism.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff::security::sasl::scram::{ScramServer, Step, credential, parse_client_final, parse_client_first};
use skiff_controller::intent::{ScramCredential, ScramMechanism};

fn cred(m: ScramMechanism) -> ScramCredential {
    // Deriving a credential costs 4,096 HMACs: once per mechanism, not per input.
    static CREDS: OnceLock<[ScramCredential; 2]> = OnceLock::new();
    let creds = CREDS.get_or_init(|| {
        ScramMechanism::ALL.map(|m| credential(m, "pencil", b"fuzz-salt", 4096))
    });
    creds[usize::from(m == ScramMechanism::ScramSha512)].clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_client_first(data);
    let _ = parse_client_final(data);
    let m = if data.first().is_some_and(|b| b & 1 == 1) { ScramMechanism::ScramSha512 } else { ScramMechanism::ScramSha256 };
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (first, last) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut server = ScramServer::new(m);
    if let Ok(Step::Continue(out)) = server.step(first, |_| Some(cred(m)), "srvnonce", |_| b"decoy".to_vec()) {
        assert!(out.starts_with(b"r="), "server-first starts with the nonce");
        let r = server.step(last, |_| None, "", |_| Vec::new());
        assert!(!matches!(r, Ok(Step::Done(_))), "authenticated without the password's proof");
        assert!(server.step(last, |_| None, "", |_| Vec::new()).is_err(), "a finished exchange takes nothing more");
    }
});
