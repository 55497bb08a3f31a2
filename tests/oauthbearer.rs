//! SASL/OAUTHBEARER with JWTs checked against a JWKS file (docs/security.md, "OAUTHBEARER").
//!
//! The test makes the identity provider's keys (an ES256 key with ring, an RS256 key with
//! `openssl`), writes their public halves as the JWKS the broker reads, and signs tokens.
//! librdkafka (confluent-kafka's `oauth_cb`, tests/compat/python-confluent) runs the compat
//! scenario with one; raw connections check that the token's expiry bounds the KIP-368 session
//! and that expired, badly signed, wrong-audience, `alg: none` and garbage tokens are answered
//! SASL_AUTHENTICATION_FAILED and the connection closed. Every wait is bounded.
#![allow(clippy::disallowed_methods)] // black-box tests wait and measure in real time

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use kafka_protocol::messages::{MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use support::SkiffProcess;
use support::client::Client;
use support::cluster::http_get;
use support::slot::Slot;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "skiff";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// The identity provider: an ES256 and an RS256 key.
struct Idp {
    ec: EcdsaKeyPair,
    rsa: RsaKeyPair,
    dir: tempfile::TempDir,
}

impl Idp {
    fn new() -> Idp {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load ec key");
        let dir = tempfile::Builder::new().prefix("skiff-idp-").tempdir().expect("dir");
        // ring reads RSA private keys as PKCS#1 DER.
        for args in [
            &["genrsa", "-traditional", "-out", "rsa.pem", "2048"][..],
            &["rsa", "-in", "rsa.pem", "-traditional", "-outform", "DER", "-out", "rsa.der"],
        ] {
            let out =
                std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let rsa = RsaKeyPair::from_der(&std::fs::read(dir.path().join("rsa.der")).expect("read")).expect("rsa key");
        Idp { ec, rsa, dir }
    }

    /// Writes the JWKS (public keys only) and returns its `file://` URL.
    fn jwks_url(&self) -> String {
        let path = self.dir.path().join("jwks.json");
        std::fs::write(&path, self.jwks()).expect("write jwks");
        format!("file://{}", path.display())
    }

    /// The JWKS: the public halves of both keys.
    fn jwks(&self) -> String {
        let point = self.ec.public_key().as_ref();
        let rsa = signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": b64(&rsa.n), "e": b64(&rsa.e)},
        ]});
        jwks.to_string()
    }

    fn claims(sub: &str, exp: i64, aud: &str) -> serde_json::Value {
        serde_json::json!({"sub": sub, "iss": ISSUER, "aud": aud, "iat": now_s() - 5, "exp": exp, "scope": "kafka"})
    }

    fn es256(&self, claims: &serde_json::Value) -> String {
        self.es256_kid(claims, "ec-1")
    }

    /// The public half of the EC key as a JWK named `kid`.
    fn ec_jwk(&self, kid: &str) -> serde_json::Value {
        let point = self.ec.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn es256_kid(&self, claims: &serde_json::Value, kid: &str) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.ec.sign(&SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn rs256(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let mut sig = vec![0; self.rsa.public().modulus_len()];
        self.rsa.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
        format!("{input}.{}", b64(&sig))
    }
}

fn start(idp: &Idp) -> SkiffProcess {
    start_with_jwks(&idp.jwks_url(), &[])
}

fn start_with_jwks(url: &str, extra: &[(&str, &str)]) -> SkiffProcess {
    let mut env = vec![
        ("SKIFF_SASL_MECHANISMS".to_string(), "OAUTHBEARER,SCRAM-SHA-512".to_string()),
        ("SKIFF_SASL_OAUTHBEARER_JWKS_URL".into(), url.to_string()),
        ("SKIFF_SASL_OAUTHBEARER_EXPECTED_ISSUER".into(), ISSUER.into()),
        ("SKIFF_SASL_OAUTHBEARER_EXPECTED_AUDIENCE".into(), AUDIENCE.into()),
        // Every authentication failure in the log (the default budget is 30 lines a minute).
        ("SKIFF_LOG".into(), "info,openraft=warn".into()),
        // These tests are about authentication: the token's principal may do everything
        // (with a SASL listener nothing is open without ACLs; tests/authorization.rs).
        ("SKIFF_SUPER_USERS".into(), "User:alice".into()),
        // These tests read /metrics without credentials; with a SASL listener the HTTP
        // listener would ask for them (tests/http_auth.rs covers that).
        ("SKIFF_HTTP_METRICS_OPEN".into(), "true".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    SkiffProcess::start_with_listeners("SASL_PLAINTEXT://127.0.0.1:0", None, env)
}

fn client_first(token: &str) -> SaslAuthenticateRequest {
    let bytes = format!("n,,\u{1}auth=Bearer {token}\u{1}\u{1}");
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes))
}

fn handshake() -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("OAUTHBEARER"))
}

/// librdkafka's full compat scenario (produce and consume every codec) authenticated by an
/// ES256 token its `oauth_cb` returns.
#[test]
fn librdkafka_authenticates_with_a_jwt() {
    let _slot = Slot::acquire();
    let idp = Idp::new();
    let broker = start(&idp);
    let exp = now_s() + 3600;
    let token = idp.es256(&Idp::claims("alice", exp, AUDIENCE));
    let exp_text = exp.to_string();
    support::compat::run_client_env(
        "python-confluent",
        &broker,
        "oauth-librdkafka",
        "full",
        "600",
        &[
            ("BOOTSTRAP", broker.listener("SASL_PLAINTEXT")),
            ("COMPAT_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("COMPAT_SASL_MECHANISM", "OAUTHBEARER"),
            ("COMPAT_OAUTH_TOKEN", &token),
            ("COMPAT_OAUTH_EXPIRY", &exp_text),
            ("COMPAT_OAUTH_PRINCIPAL", "alice"),
        ],
    );
    let metrics = http_get(broker.http(), "/metrics").expect("metrics");
    let log = std::fs::read_to_string(broker.stderr_path()).expect("log");
    assert!(!log.contains(&token), "the token is logged");
    assert!(!metrics.contains(&token), "the token is in /metrics");
}

/// The token's expiry bounds the session (KIP-368, as Kafka's SaslServerAuthenticator); bad
/// tokens are refused with SASL_AUTHENTICATION_FAILED and the connection closed.
#[test]
fn token_lifetime_bounds_the_session_and_bad_tokens_are_refused() {
    let idp = Idp::new();
    let broker = start(&idp);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let other = Idp::new();
    let now = now_s();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // RS256, valid for 90 s: the session lasts at most that long.
        let mut c = Client::connect(&addr).await.expect("connect");
        assert_eq!(c.send(&handshake(), 1).await.expect("handshake").error_code, 0);
        let r = c.send(&client_first(&idp.rs256(&Idp::claims("bob", now + 90, AUDIENCE))), 1).await.expect("auth");
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        assert!(
            r.session_lifetime_ms > 0 && r.session_lifetime_ms <= 90_000,
            "session_lifetime_ms {} is not bounded by the token's exp",
            r.session_lifetime_ms
        );
        c.send(&MetadataRequest::default(), 12).await.expect("metadata once authenticated");

        let mut none = Idp::claims("mallory", now + 600, AUDIENCE).to_string();
        none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(none.as_bytes()));
        let bad = [
            ("expired", idp.es256(&Idp::claims("alice", now - 120, AUDIENCE))),
            ("signed by another key", other.es256(&Idp::claims("alice", now + 600, AUDIENCE))),
            ("wrong audience", idp.es256(&Idp::claims("alice", now + 600, "elsewhere"))),
            ("alg none", none),
            ("garbage", "not-a-jwt".to_string()),
        ];
        for (what, token) in &bad {
            let mut c = Client::connect(&addr).await.expect("connect");
            assert_eq!(c.send(&handshake(), 1).await.expect("handshake").error_code, 0);
            let r = c.send(&client_first(token), 1).await.expect("authenticate");
            assert_eq!(r.error_code, 58, "{what}: SASL_AUTHENTICATION_FAILED expected");
            assert!(c.closed_within(Duration::from_secs(5)).await.expect("read"), "{what}: connection left open");
        }
        // Malformed client first messages.
        for raw in [&b"n,,\x01auth=Bearer\x01\x01"[..], b"\xff\x00", b"n,,"] {
            let mut c = Client::connect(&addr).await.expect("connect");
            assert_eq!(c.send(&handshake(), 1).await.expect("handshake").error_code, 0);
            let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(raw));
            assert_eq!(c.send(&req, 1).await.expect("authenticate").error_code, 58, "{raw:?}");
            assert!(c.closed_within(Duration::from_secs(5)).await.expect("read"));
        }
    });
    let log = std::fs::read_to_string(broker.stderr_path()).expect("log");
    for why in ["expired (exp)", "signature does not verify", "unexpected audience (aud)", "alg is not RS256 or ES256"]
    {
        assert!(log.contains(why), "`{why}` not logged:\n{}", broker.stderr_tail(30));
    }
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// A loopback HTTP server answering every request with the current `body` (bounded: it stops
/// after 200 connections, far more than the test makes).
fn serve_jwks(body: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    serve_jwks_counted(body, Default::default())
}

/// [`serve_jwks`], counting the requests in `served`.
fn serve_jwks_counted(
    body: std::sync::Arc<std::sync::Mutex<String>>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = body.lock().expect("body").clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

/// Whether a token authenticates: the SaslAuthenticate error code.
async fn login(addr: &str, token: &str) -> i16 {
    let mut c = Client::connect(addr).await.expect("connect");
    assert_eq!(c.send(&handshake(), 1).await.expect("handshake").error_code, 0);
    c.send(&client_first(token), 1).await.expect("authenticate").error_code
}

/// `sasl_oauthbearer_jwks_url` over HTTP: fetched at start and again every refresh interval, so
/// a key rotation at the identity provider is followed (the old key refused, the new accepted).
#[test]
fn jwks_is_fetched_from_a_url_and_refreshed() {
    let (old, new) = (Idp::new(), Idp::new());
    let body = std::sync::Arc::new(std::sync::Mutex::new(old.jwks()));
    let url = serve_jwks(body.clone());
    let broker = start_with_jwks(&url, &[("SKIFF_SASL_OAUTHBEARER_JWKS_REFRESH", "500ms")]);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let claims = Idp::claims("carol", now_s() + 600, AUDIENCE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        assert_eq!(login(&addr, &old.es256(&claims)).await, 0, "a token of the served key");
        assert_eq!(login(&addr, &new.rs256(&claims)).await, 58, "a key not served yet");
        *body.lock().expect("body") = new.jwks();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while login(&addr, &new.rs256(&claims)).await != 0 {
            assert!(std::time::Instant::now() < deadline, "the rotated JWKS was not fetched again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(login(&addr, &old.es256(&claims)).await, 58, "the removed key is refused");
    });
}

/// A token naming a `kid` the fetched JWKS lacks brings the next fetch forward (Kafka's
/// `RefreshingHttpsJwks.maybeExpediteRefresh`): a key the IdP published after the broker's last
/// fetch is accepted on the client's retry, long before the 1 h refresh. The token that
/// triggered it is refused, as in Kafka; the same unknown `kid` brings at most one fetch forward
/// per minute.
#[test]
fn an_unknown_kid_fetches_the_jwks_early_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let (idp, next) = (Idp::new(), Idp::new());
    let body = std::sync::Arc::new(std::sync::Mutex::new(idp.jwks()));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = serve_jwks_counted(body.clone(), served.clone());
    let broker = start_with_jwks(&url, &[]);
    let addr = broker.listener("SASL_PLAINTEXT").to_string();
    let claims = Idp::claims("carol", now_s() + 600, AUDIENCE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        assert_eq!(login(&addr, &idp.es256(&claims)).await, 0);
        assert_eq!(served.load(SeqCst), 1, "fetched once at start");
        // The IdP publishes a second key, ec-2, and signs with it.
        let keys = serde_json::json!({"keys": [idp.ec_jwk("ec-1"), next.ec_jwk("ec-2")]});
        *body.lock().expect("body") = keys.to_string();
        let token = next.es256_kid(&claims, "ec-2");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while login(&addr, &token).await != 0 {
            assert!(std::time::Instant::now() < deadline, "the unknown kid did not bring the JWKS fetch forward");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served.load(SeqCst), 2, "one early fetch");
        // A kid that never appears: one early fetch, then none for a minute however often.
        let bogus = next.es256_kid(&claims, "never-published");
        for _ in 0..5 {
            assert_eq!(login(&addr, &bogus).await, 58);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(served.load(SeqCst), 3, "at most one early fetch per unknown kid");
    });
}

/// The HTTP listener takes the same tokens (`Authorization: Bearer`, docs/security.md "The HTTP
/// listener") with the same checks: a valid token is its `sub`'s principal (alice, a super user,
/// lists topics; bob, without ACLs, may not create one); no token, an expired one or one signed
/// by another key is 401 with both challenges, and no token is logged.
#[test]
fn http_listener_takes_bearer_tokens() {
    let idp = Idp::new();
    let broker = start(&idp);
    let now = now_s();
    let alice = idp.es256(&Idp::claims("alice", now + 3600, AUDIENCE));
    let bob = idp.rs256(&Idp::claims("bob", now + 3600, AUDIENCE));
    let expired = idp.es256(&Idp::claims("alice", now - 3600, AUDIENCE));
    let forged = Idp::new().es256(&Idp::claims("alice", now + 3600, AUDIENCE));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        let base = broker.http().to_string();
        let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut req = client.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if method != reqwest::Method::GET {
                req = req.header("Content-Type", "application/json").body(r#"{"name":"bobs"}"#);
            }
            async move {
                let resp = req.send().await?;
                let challenges: Vec<String> = resp
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .collect();
                anyhow::Ok((resp.status().as_u16(), challenges, resp.text().await?))
            }
        };
        let (status, challenges, _) = call(reqwest::Method::GET, "/api/v1/topics", None).await?;
        anyhow::ensure!(status == 401, "no token: {status}");
        anyhow::ensure!(
            challenges.iter().any(|c| c.starts_with("Basic realm=\"skiff\""))
                && challenges.iter().any(|c| c.starts_with("Bearer realm=\"skiff\"")),
            "challenges {challenges:?}"
        );
        let (status, _, body) = call(reqwest::Method::GET, "/api/v1/topics", Some(&alice)).await?;
        anyhow::ensure!(status == 200, "alice's token: {status} {body}");
        let (status, _, body) = call(reqwest::Method::POST, "/api/v1/topics", Some(&bob)).await?;
        anyhow::ensure!(status == 403 && body.contains("TOPIC_AUTHORIZATION_FAILED"), "bob's create: {status} {body}");
        for (what, token) in [("expired", &expired), ("forged", &forged), ("garbage", &"a.b.c".to_string())] {
            let (status, _, body) = call(reqwest::Method::GET, "/api/v1/topics", Some(token)).await?;
            anyhow::ensure!(status == 401, "{what} token: {status} {body}");
        }
        anyhow::Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.stderr_tail(30)));
    let log = std::fs::read_to_string(broker.stderr_path()).expect("log");
    for token in [&alice, &bob, &expired, &forged] {
        assert!(!log.contains(token.as_str()), "a token is logged");
    }
    assert!(log.contains("authentication failed") && log.contains("scheme=\"Bearer\""), "no Bearer failure logged");
}
