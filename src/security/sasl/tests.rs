use std::cell::Cell;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};

use super::*;

struct Store {
    password: &'static str,
    now: Cell<i64>,
}

impl Credentials for Store {
    fn scram(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        (user == "alice").then(|| scram::credential(m, self.password, b"0123456789abcdef", 4096))
    }
    fn nonce(&self) -> String {
        "servernonce".into()
    }
    fn decoy_salt(&self, _user: &str) -> Vec<u8> {
        b"decoy".to_vec()
    }
    fn now_ms(&self) -> i64 {
        self.now.get()
    }
    /// `good.jwt` is alice's token, valid for 90 s from now; anything else is refused.
    fn bearer(&self, token: &str) -> Result<oauthbearer::Validated, oauthbearer::OAuthError> {
        match token {
            "good.jwt" => {
                Ok(oauthbearer::Validated { principal: "alice".into(), expires_at_ms: self.now.get() + 90_000 })
            }
            _ => Err(oauthbearer::OAuthError::InvalidToken("signature does not verify".into())),
        }
    }
}

fn store() -> Store {
    Store { password: "alice-secret", now: Cell::new(0) }
}

fn req(api_key: ApiKey, version: i16, body: RequestKind) -> Request {
    Request { header: RequestHeader::default(), api_key, version, body }
}

fn handshake(m: &str, version: i16) -> Request {
    let body = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(m.into()));
    req(ApiKey::SaslHandshake, version, RequestKind::SaslHandshake(body))
}

fn authenticate(bytes: &[u8]) -> Request {
    let body = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(bytes));
    req(ApiKey::SaslAuthenticate, 2, RequestKind::SaslAuthenticate(body))
}

fn metadata() -> Request {
    req(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default()))
}

fn settings(reauth: Option<Duration>) -> SaslSettings {
    SaslSettings { mechanisms: Mechanism::ALL.to_vec(), max_reauth: reauth }
}

fn answer(g: Gate) -> (ResponseKind, bool, Option<Event>) {
    match g {
        Gate::Answer { body, close, event } => (body, close, event),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn auth_response(g: Gate) -> (SaslAuthenticateResponse, bool) {
    match answer(g) {
        (ResponseKind::SaslAuthenticate(r), close, _) => (r, close),
        other => panic!("{other:?}"),
    }
}

/// A SCRAM client: the proof for `password` over the exchange so far.
fn scram_login(
    a: &mut Authenticator,
    s: &Store,
    m: ScramMechanism,
    password: &str,
) -> (SaslAuthenticateResponse, bool) {
    let (r, _, _) = answer(a.admit(&handshake(m.name(), 1), s));
    assert!(matches!(r, ResponseKind::SaslHandshake(ref h) if h.error_code == 0));
    let first_bare = "n=alice,r=clientnonce";
    let (r, close) = auth_response(a.admit(&authenticate(format!("n,,{first_bare}").as_bytes()), s));
    assert!(!close && r.error_code == 0);
    let server_first = String::from_utf8(r.auth_bytes.to_vec()).expect("utf8");
    let salt =
        B64.decode(server_first.split(",s=").nth(1).and_then(|x| x.split(',').next()).expect("salt")).expect("b64");
    let salted = scram::salted_password(m, password.as_bytes(), &salt, 4096);
    let cred = scram::credential_from_salted(m, &salted, &salt, 4096);
    let without_proof = "c=biws,r=clientnonceservernonce";
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let client_key = scram::tests_support::hmac(m, &salted, b"Client Key");
    let signature = scram::tests_support::hmac(m, &cred.stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    auth_response(a.admit(&authenticate(format!("{without_proof},p={}", B64.encode(proof)).as_bytes()), s))
}

#[test]
fn scram_login_then_requests_pass() {
    for m in ScramMechanism::ALL {
        let s = store();
        let mut a = Authenticator::new(settings(Some(Duration::from_secs(60))));
        assert!(matches!(
            a.admit(&req(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())), &s),
            Gate::Pass
        ));
        let (r, close) = scram_login(&mut a, &s, m, "alice-secret");
        assert_eq!((r.error_code, close, r.session_lifetime_ms), (0, false, 60_000));
        assert!(r.auth_bytes.starts_with(b"v="));
        assert_eq!(a.principal(), Some(&Principal::user("alice")));
        assert!(matches!(a.admit(&metadata(), &s), Gate::Pass));
        // KIP-368: the session ends; only re-authentication is accepted after it.
        s.now.set(60_001);
        assert!(matches!(a.admit(&metadata(), &s), Gate::Close { .. }));
        let (r, close) = scram_login(&mut a, &s, m, "alice-secret");
        assert_eq!((r.error_code, close), (0, false));
        assert!(matches!(a.admit(&metadata(), &s), Gate::Pass));
    }
}

#[test]
fn wrong_password_fails_and_closes() {
    let s = store();
    let mut a = Authenticator::new(settings(None));
    let (r, close) = scram_login(&mut a, &s, ScramMechanism::ScramSha512, "wrong");
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(close);
    assert_eq!(
        r.error_message.as_deref(),
        Some(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
        )
    );
    assert_eq!(a.principal(), None);
}

#[test]
fn plain_checks_the_scram_store() {
    let s = store();
    for (password, ok) in [("alice-secret", true), ("nope", false)] {
        let mut a = Authenticator::new(settings(None));
        answer(a.admit(&handshake("PLAIN", 1), &s));
        let (r, close) = auth_response(a.admit(&authenticate(format!("\0alice\0{password}").as_bytes()), &s));
        assert_eq!((r.error_code == 0, close), (ok, !ok));
        assert_eq!(a.is_authenticated(), ok);
    }
}

#[test]
fn kip152_order_is_enforced() {
    let s = store();
    // Anything but ApiVersions or SaslHandshake first: closed without an answer.
    let mut a = Authenticator::new(settings(None));
    assert!(matches!(a.admit(&metadata(), &s), Gate::Close { .. }));
    // A second ApiVersions: closed, as Kafka.
    let mut a = Authenticator::new(settings(None));
    let versions = || req(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default()));
    assert!(matches!(a.admit(&versions(), &s), Gate::Pass));
    assert!(matches!(a.admit(&versions(), &s), Gate::Close { .. }));
    // SaslAuthenticate before the handshake.
    let mut a = Authenticator::new(settings(None));
    assert!(matches!(a.admit(&authenticate(b"\0alice\0alice-secret"), &s), Gate::Close { .. }));
    // A mechanism the listener does not enable: UNSUPPORTED_SASL_MECHANISM, the list, closed.
    let mut a = Authenticator::new(SaslSettings { mechanisms: vec![Mechanism::Plain], max_reauth: None });
    match answer(a.admit(&handshake("SCRAM-SHA-512", 1), &s)) {
        (ResponseKind::SaslHandshake(h), true, Some(Event::Failed(_))) => {
            assert_eq!(h.error_code, 33);
            assert_eq!(h.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>(), vec!["PLAIN"]);
        }
        other => panic!("{other:?}"),
    }
    // Another request in the middle of the exchange.
    let mut a = Authenticator::new(settings(None));
    answer(a.admit(&handshake("SCRAM-SHA-256", 1), &s));
    assert!(matches!(a.admit(&metadata(), &s), Gate::Close { .. }));
}

#[test]
fn reauthentication_cannot_change_principal() {
    struct Two(Store);
    impl Credentials for Two {
        fn scram(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
            (user == "alice" || user == "bob").then(|| scram::credential(m, "alice-secret", b"0123456789abcdef", 4096))
        }
        fn nonce(&self) -> String {
            self.0.nonce()
        }
        fn decoy_salt(&self, u: &str) -> Vec<u8> {
            self.0.decoy_salt(u)
        }
        fn now_ms(&self) -> i64 {
            0
        }
    }
    let s = Two(store());
    let mut a = Authenticator::new(settings(None));
    answer(a.admit(&handshake("PLAIN", 1), &s));
    assert_eq!(auth_response(a.admit(&authenticate(b"\0alice\0alice-secret"), &s)).0.error_code, 0);
    answer(a.admit(&handshake("PLAIN", 1), &s));
    let (r, close) = auth_response(a.admit(&authenticate(b"\0bob\0alice-secret"), &s));
    assert_eq!((r.error_code, close), (58, true));
    // Re-authentication with another mechanism: ILLEGAL_SASL_STATE.
    let mut a = Authenticator::new(settings(None));
    answer(a.admit(&handshake("PLAIN", 1), &s));
    auth_response(a.admit(&authenticate(b"\0alice\0alice-secret"), &s));
    match answer(a.admit(&handshake("SCRAM-SHA-256", 1), &s)) {
        (ResponseKind::SaslHandshake(h), true, _) => assert_eq!(h.error_code, 34),
        other => panic!("{other:?}"),
    }
}

#[test]
fn handshake_v0_takes_raw_tokens() {
    let s = store();
    let mut a = Authenticator::new(settings(None));
    answer(a.admit(&handshake("PLAIN", 0), &s));
    assert!(a.expects_raw_token());
    let (frame, event) = a.raw_token(b"\0alice\0alice-secret", &s);
    assert_eq!(frame.as_deref(), Some(&[0u8, 0, 0, 0][..]), "an empty token, size-prefixed");
    assert!(matches!(event, Some(Event::Authenticated { .. })));
    let mut a = Authenticator::new(settings(None));
    answer(a.admit(&handshake("PLAIN", 0), &s));
    assert_eq!(a.raw_token(b"\0alice\0bad", &s).0, None, "a failure closes the connection");
}

/// An OAUTHBEARER session ends with its token, whatever `connections.max.reauth.ms` says
/// (Kafka's SaslServerAuthenticator: the shorter of the two, and the token's alone when unset).
#[test]
fn oauthbearer_token_expiry_bounds_the_session() {
    let s = store();
    for (reauth, lifetime) in
        [(None, 90_000), (Some(Duration::from_secs(3600)), 90_000), (Some(Duration::from_secs(10)), 10_000)]
    {
        let mut a = Authenticator::new(settings(reauth));
        let (h, _, _) = answer(a.admit(&handshake("OAUTHBEARER", 1), &s));
        assert!(matches!(h, ResponseKind::SaslHandshake(ref h) if h.error_code == 0));
        let (r, close) = auth_response(a.admit(&authenticate(b"n,,\x01auth=Bearer good.jwt\x01\x01"), &s));
        assert_eq!((r.error_code, close, r.session_lifetime_ms), (0, false, lifetime), "max reauth {reauth:?}");
        assert_eq!(a.principal(), Some(&Principal::user("alice")));
    }
    // A refused token, an authorization id naming someone else, a malformed message: 58, closed.
    for bad in [&b"n,,\x01auth=Bearer bad.jwt\x01\x01"[..], b"n,a=bob,\x01auth=Bearer good.jwt\x01\x01", b"n,,\x01\x01"]
    {
        let mut a = Authenticator::new(settings(None));
        answer(a.admit(&handshake("OAUTHBEARER", 1), &s));
        let (r, close) = auth_response(a.admit(&authenticate(bad), &s));
        assert_eq!((r.error_code, close), (58, true), "{bad:?}");
        assert!(a.principal().is_none());
    }
}
