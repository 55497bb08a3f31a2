use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

use super::*;

const NOW_MS: i64 = 1_800_000_000_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("load")
}

fn ec_jwk(key: &EcdsaKeyPair, kid: &str) -> serde_json::Value {
    let point = key.public_key().as_ref();
    serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

fn es256(key: &EcdsaKeyPair, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = key.sign(&SystemRandom::new(), signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(sig.as_ref()))
}

/// An RSA key from `openssl` (ring cannot generate RSA keys).
fn rsa_key() -> RsaKeyPair {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out", "k.pem", "2048"])
        .current_dir(dir.path())
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ring reads RSA private keys as PKCS#1 DER.
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-in", "k.pem", "-traditional", "-outform", "DER", "-out", "k.der"])
        .current_dir(dir.path())
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    RsaKeyPair::from_der(&std::fs::read(dir.path().join("k.der")).expect("read key")).expect("load RSA key")
}

fn rs256(key: &RsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "RS256", "kid": kid});
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut sig).expect("sign");
    format!("{signed}.{}", b64(&sig))
}

fn rsa_jwk(key: &RsaKeyPair, kid: &str) -> serde_json::Value {
    let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
    serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
}

fn claims(sub: &str, exp_s: i64) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": exp_s, "iat": NOW_MS / 1000 - 10, "iss": "https://idp", "aud": ["skiff", "other"]})
}

#[test]
fn client_first_messages_parse_as_kafka_reads_them() {
    let m = parse_client_first(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").expect("minimal");
    assert_eq!((m.authzid, m.token.as_str()), (None, "abc.def.ghi"));
    let m = parse_client_first(b"n,a=alice,\x01auth=Bearer a.b.c\x01traceId=123\x01\x01").expect("authzid");
    assert_eq!(m.authzid.as_deref(), Some("alice"));
    assert_eq!(m.extensions.get("traceId").map(String::as_str), Some("123"));
    assert!(!format!("{m:?}").contains("a.b.c"), "Debug hides the token");
    for bad in [
        &b""[..],
        b"y,,\x01auth=Bearer a.b.c\x01\x01",
        b"n,,\x01auth=Basic a.b.c\x01\x01",
        b"n,,\x01auth=Bearer a.b.c\x01",
        b"n,,\x01\x01",
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01auth=Bearer a b\x01\x01",
        b"n,,\x01auth=Bearer a.b.c\x01auth=Bearer a.b.c\x01\x01",
        b"n,,\x01auth=Bearer a.b.c\x01x1=2\x01\x01",
        b"n,a=,\x01auth=Bearer a.b.c\x01\x01",
        b"\xff",
    ] {
        assert!(parse_client_first(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn es256_and_rs256_tokens_validate_and_every_check_refuses() {
    let ec = ec_key();
    let rsa = rsa_key();
    let jwks =
        Jwks::parse(serde_json::json!({"keys": [ec_jwk(&ec, "e1"), rsa_jwk(&rsa, "r1")]}).to_string().as_bytes())
            .expect("jwks");
    assert_eq!(jwks.len(), 2);
    let expect =
        Expectations { issuer: Some("https://idp".into()), audience: vec!["skiff".into()], ..Default::default() };
    let exp = NOW_MS / 1000 + 600;
    let ok = validate(&es256(&ec, Some("e1"), &claims("alice", exp)), &jwks, &expect, NOW_MS).expect("ES256");
    assert_eq!(ok, Validated { principal: "alice".into(), expires_at_ms: exp * 1000 });
    let ok = validate(&rs256(&rsa, "r1", &claims("bob", exp)), &jwks, &expect, NOW_MS).expect("RS256");
    assert_eq!(ok.principal, "bob");
    // The only EC key is used without a kid.
    assert!(validate(&es256(&ec, None, &claims("alice", exp)), &jwks, &expect, NOW_MS).is_ok());

    let refused = |token: &str, expect: &Expectations, why: &str| {
        let e = validate(token, &jwks, expect, NOW_MS).expect_err(why);
        assert!(e.to_string().contains(why), "{e} (expected {why})");
        assert!(!e.to_string().contains(token), "the error quotes the token");
    };
    // Expired beyond the skew; within it still valid.
    refused(&es256(&ec, Some("e1"), &claims("alice", NOW_MS / 1000 - 31)), &expect, "expired");
    assert!(validate(&es256(&ec, Some("e1"), &claims("alice", NOW_MS / 1000 - 29)), &jwks, &expect, NOW_MS).is_ok());
    // Signed by another key.
    refused(&es256(&ec_key(), Some("e1"), &claims("alice", exp)), &expect, "signature does not verify");
    let mut tampered = es256(&ec, Some("e1"), &claims("alice", exp));
    let payload = b64(claims("admin", exp).to_string().as_bytes());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    refused(&tampered, &expect, "signature does not verify");
    refused(&es256(&ec, Some("nope"), &claims("alice", exp)), &expect, "no P-256 key nope");
    let other_aud = Expectations { audience: vec!["elsewhere".into()], ..expect.clone() };
    refused(&es256(&ec, Some("e1"), &claims("alice", exp)), &other_aud, "audience");
    let other_iss = Expectations { issuer: Some("https://evil".into()), ..expect.clone() };
    refused(&es256(&ec, Some("e1"), &claims("alice", exp)), &other_iss, "issuer");
    let mut c = claims("alice", exp);
    c["nbf"] = (NOW_MS / 1000 + 120).into();
    refused(&es256(&ec, Some("e1"), &c), &expect, "nbf");
    let mut c = claims("alice", exp);
    c.as_object_mut().expect("object").remove("exp");
    refused(&es256(&ec, Some("e1"), &c), &expect, "no exp");
    // Another principal claim (sasl.oauthbearer.sub.claim.name).
    let mut c = claims("alice", exp);
    c["client_id"] = "svc-orders".into();
    let by_client = Expectations { sub_claim: "client_id".into(), ..expect.clone() };
    assert_eq!(
        validate(&es256(&ec, Some("e1"), &c), &jwks, &by_client, NOW_MS).expect("client_id").principal,
        "svc-orders"
    );
    refused(&es256(&ec, Some("e1"), &claims("alice", exp)), &by_client, "no client_id claim");
    // alg none and HS256 (the public key as an HMAC secret) are refused whatever the signature.
    for alg in ["none", "HS256"] {
        let header = b64(serde_json::json!({"alg": alg, "kid": "e1"}).to_string().as_bytes());
        refused(&format!("{header}.{payload}.AAAA"), &expect, "alg is not RS256 or ES256");
    }
    refused("a.b", &expect, "three");
    refused("!!.b.c", &expect, "base64url");
}

#[test]
fn jwks_without_usable_keys_is_refused() {
    assert!(Jwks::parse(b"{}").is_err());
    assert!(Jwks::parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
    assert!(Jwks::parse(br#"{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}"#).is_err());
    assert!(Jwks::parse(b"not json").is_err());
}

#[test]
fn fuzz_entry_point_survives_garbage() {
    for bytes in [&b"n,,\x01auth=Bearer a.b.c\x01\x01"[..], b"n,,\x01auth=Bearer ...\x01\x01", b"\x00\x01\x02"] {
        fuzz_one(bytes);
    }
}
