//! SASL/OAUTHBEARER (RFC 7628, KIP-255) with JWT bearer tokens validated against a JWKS
//! (Kafka's `OAuthBearerValidatorCallbackHandler`, KIP-768).
//!
//! * [`parse_client_first`]: the client's initial response, `n,[a=authzid],\x01auth=Bearer
//!   <token>\x01[key=value\x01]*\x01`, as Kafka's `OAuthBearerClientInitialResponse` reads it.
//! * [`Jwks`]: RSA (`RS256`) and EC P-256 (`ES256`) public keys of a JSON Web Key Set.
//! * [`Validator`]: signature (ring, the crypto library rustls already uses), `exp` (required),
//!   `nbf` and `iat` with a bounded clock skew, the expected issuer and audiences, the
//!   principal from a configurable claim (`sasl.oauthbearer.sub.claim.name`). A JWKS file is
//!   read again when it changes, at most once per refresh interval; a JWKS URL (http or https,
//!   rustls with the system's roots) is fetched at start and then every refresh interval by
//!   [`Validator::refresh_url`], each fetch bounded in time ([`FETCH_TIMEOUT`]) and size
//!   ([`MAX_JWKS_BYTES`]); a failed fetch keeps the previous keys. A token naming a `kid` the
//!   fetched set lacks is refused and brings the next fetch forward, at most once per
//!   [`MISSING_KID_RETRY`] for that `kid` (Kafka's `RefreshingHttpsJwks.maybeExpediteRefresh`),
//!   so a key the IdP starts signing with is accepted on the client's retry.
//!
//! Invariants: bytes from the network and the JWKS file are never trusted (errors, never
//! panics; `fuzz/fuzz_targets/sasl_oauthbearer.rs`); only `RS256` and `ES256` are accepted,
//! so `alg: none` and HMAC algorithms (key confusion) are refused; a token never appears in an
//! error or a log line (errors name the claim or the check, not the value).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use ring::signature;

/// A parsed client initial response. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub authzid: Option<String>,
    pub token: String,
    /// SASL extensions (`key=value` pairs other than `auth`).
    pub extensions: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClientFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFirst")
            .field("authzid", &self.authzid)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

/// Why an OAUTHBEARER exchange was refused. Messages never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("Invalid OAUTHBEARER client first message: {0}")]
    Malformed(&'static str),
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("OAUTHBEARER is not configured (no JWKS)")]
    NotConfigured,
    /// The JWKS has no key of the token's type with its `kid` (or, without one, no single key).
    #[error("invalid token: no {kind} key {} in the JWKS", .kid.as_deref().unwrap_or("(no kid)"))]
    UnknownKey { kind: &'static str, kid: Option<String> },
}

fn malformed(why: &'static str) -> OAuthError {
    OAuthError::Malformed(why)
}

/// RFC 7628 §3.1 / Kafka's `OAuthBearerClientInitialResponse`.
pub fn parse_client_first(bytes: &[u8]) -> Result<ClientFirst, OAuthError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))?;
    // gs2-header: "n," (no channel binding: Kafka accepts only n), then "a=authzid" or nothing, ",".
    let rest = text.strip_prefix("n,").ok_or_else(|| malformed("expected the GS2 header n,"))?;
    let (authz, rest) = rest.split_once(',').ok_or_else(|| malformed("GS2 header not terminated"))?;
    let authzid = match authz {
        "" => None,
        a => {
            let name = a.strip_prefix("a=").ok_or_else(|| malformed("bad authorization identity"))?;
            if name.is_empty() {
                return Err(malformed("empty authorization identity"));
            }
            Some(name.to_string())
        }
    };
    // kvsep *(kvpair kvsep) kvsep
    let body = rest.strip_prefix('\u{1}').ok_or_else(|| malformed("expected a key-value separator"))?;
    let body = body.strip_suffix("\u{1}\u{1}").ok_or_else(|| malformed("not terminated by two separators"))?;
    let mut token = None;
    let mut extensions = BTreeMap::new();
    for pair in body.split('\u{1}') {
        let (key, value) = pair.split_once('=').ok_or_else(|| malformed("a key-value pair without ="))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(malformed("a key that is not alphabetic"));
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            return Err(malformed("a value with forbidden characters"));
        }
        if key == "auth" {
            let (scheme, t) = value.split_once(' ').ok_or_else(|| malformed("auth value is not `Bearer <token>`"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(malformed("auth scheme is not Bearer"));
            }
            let t = t.trim_start_matches(' ');
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(malformed("token is not a JWS compact serialization"));
            }
            if token.replace(t.to_string()).is_some() {
                return Err(malformed("two auth values"));
            }
        } else if extensions.insert(key.to_string(), value.to_string()).is_some() {
            return Err(malformed("a repeated extension"));
        }
    }
    let token = token.ok_or_else(|| malformed("no auth value"))?;
    Ok(ClientFirst { authzid, token, extensions })
}

/// One verification key of a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// `kty: RSA`: modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// `kty: EC, crv: P-256`: the uncompressed point `04 || x || y`.
    P256(Vec<u8>),
}

/// The usable keys of a JSON Web Key Set (RFC 7517). Keys of other types, curves, uses
/// (`use` other than `sig`) or algorithms are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<(Option<String>, Key)>,
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

impl Jwks {
    pub fn parse(text: &[u8]) -> Result<Jwks, String> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(text).map_err(|e| format!("not a JWKS ({{\"keys\": [...]}}): {e}"))?;
        let mut keys = Vec::new();
        for k in &set.keys {
            let field = |name: &str| k.get(name).and_then(|v| v.as_str());
            if field("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = field("kid").map(str::to_string);
            let key = match (field("kty"), field("alg")) {
                (Some("RSA"), None | Some("RS256")) => match (field("n").and_then(b64url), field("e").and_then(b64url))
                {
                    (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => Key::Rsa { n, e },
                    _ => continue,
                },
                (Some("EC"), None | Some("ES256")) if field("crv") == Some("P-256") => {
                    match (field("x").and_then(b64url), field("y").and_then(b64url)) {
                        (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                            Key::P256([&[4u8][..], &x, &y].concat())
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            };
            keys.push((kid, key));
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable RS256 or ES256 key".into());
        }
        Ok(Jwks { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a token names with `kid` (or, without `kid`, the set's only key of the
    /// algorithm's type).
    fn find(&self, kid: Option<&str>, rsa: bool) -> Option<&Key> {
        let of_type = |k: &&(Option<String>, Key)| matches!(k.1, Key::Rsa { .. }) == rsa;
        match kid {
            Some(kid) => self.keys.iter().filter(of_type).find(|(id, _)| id.as_deref() == Some(kid)).map(|(_, k)| k),
            None => {
                let mut candidates = self.keys.iter().filter(of_type);
                match (candidates.next(), candidates.next()) {
                    (Some((_, k)), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

/// What a token must satisfy besides its signature (Kafka's `sasl.oauthbearer.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// `sasl.oauthbearer.expected.issuer`: the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// `sasl.oauthbearer.expected.audience`: the `aud` claim must name one of them.
    pub audience: Vec<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim holding the principal's name.
    pub sub_claim: String,
    /// `sasl.oauthbearer.clock.skew.seconds`.
    pub clock_skew: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Self { issuer: None, audience: Vec::new(), sub_claim: "sub".into(), clock_skew: Duration::from_secs(30) }
    }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub principal: String,
    /// The `exp` claim in ms since the epoch: the session ends no later (KIP-368).
    pub expires_at_ms: i64,
}

fn invalid(why: impl Into<String>) -> OAuthError {
    OAuthError::InvalidToken(why.into())
}

/// Checks `token` (a JWS compact serialization) against `jwks` and `expect` at `now_ms`.
pub fn validate(token: &str, jwks: &Jwks, expect: &Expectations, now_ms: i64) -> Result<Validated, OAuthError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not three dot-separated parts"));
    };
    let header_json = b64url(header_b64).ok_or_else(|| invalid("header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|_| invalid("header is not a JSON object"))?;
    let alg = header.get("alg").and_then(|a| a.as_str()).ok_or_else(|| invalid("no alg"))?;
    let kid = header.get("kid").and_then(|k| k.as_str());
    let sig = b64url(sig).ok_or_else(|| invalid("signature is not base64url"))?;
    // The signing input, `header.payload`: a prefix of the token.
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload.len()];
    let ok = match alg {
        "RS256" => match jwks.find(kid, true) {
            Some(Key::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                .is_ok(),
            _ => return Err(OAuthError::UnknownKey { kind: "RSA", kid: kid.map(str::to_string) }),
        },
        "ES256" => match jwks.find(kid, false) {
            Some(Key::P256(point)) => signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(signed, &sig)
                .is_ok(),
            _ => return Err(OAuthError::UnknownKey { kind: "P-256", kid: kid.map(str::to_string) }),
        },
        // `none`, HMAC (whose "key" would be the public key) and everything else.
        _ => return Err(invalid("alg is not RS256 or ES256")),
    };
    if !ok {
        return Err(invalid("signature does not verify"));
    }
    let claims_json = b64url(payload).ok_or_else(|| invalid("payload is not base64url"))?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&claims_json).map_err(|_| invalid("payload is not a JSON object"))?;
    let skew_ms = i64::try_from(expect.clock_skew.as_millis()).unwrap_or(i64::MAX);
    // NumericDate: seconds, possibly fractional.
    let time = |name: &str| -> Result<Option<i64>, OAuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e13)
                .map(|s| Some((s * 1000.0) as i64))
                .ok_or_else(|| invalid(format!("{name} is not a NumericDate"))),
        }
    };
    let exp = time("exp")?.ok_or_else(|| invalid("no exp claim"))?;
    if now_ms.saturating_sub(skew_ms) >= exp {
        return Err(invalid("expired (exp)"));
    }
    if let Some(nbf) = time("nbf")?
        && now_ms.saturating_add(skew_ms) < nbf
    {
        return Err(invalid("not valid yet (nbf)"));
    }
    if let Some(iat) = time("iat")?
        && now_ms.saturating_add(skew_ms) < iat
    {
        return Err(invalid("issued in the future (iat)"));
    }
    if let Some(issuer) = &expect.issuer
        && claims.get("iss").and_then(|i| i.as_str()) != Some(issuer.as_str())
    {
        return Err(invalid("unexpected issuer (iss)"));
    }
    if !expect.audience.is_empty() {
        let named = |a: &str| expect.audience.iter().any(|e| e == a);
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => named(a),
            Some(serde_json::Value::Array(list)) => list.iter().filter_map(|a| a.as_str()).any(named),
            _ => false,
        };
        if !ok {
            return Err(invalid("unexpected audience (aud)"));
        }
    }
    let principal = claims
        .get(&expect.sub_claim)
        .and_then(|s| s.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid(format!("no {} claim", expect.sub_claim)))?;
    Ok(Validated { principal: principal.to_string(), expires_at_ms: exp })
}

/// A JWKS larger than this is refused (real ones are a few KB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// One JWKS fetch over HTTP(S), connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// An unknown `kid` brings a JWKS fetch forward at most this often (Kafka's
/// `MISSING_KEY_ID_CACHE_IN_FLIGHT_MS`), so tokens naming keys that do not exist cannot make the
/// broker hammer the IdP.
pub const MISSING_KID_RETRY: Duration = Duration::from_secs(60);
/// Unknown `kid`s remembered for [`MISSING_KID_RETRY`] (Kafka's 16; the oldest is forgotten),
/// and the longest one that may bring a fetch forward (Kafka's 1000 characters).
const MISSING_KIDS: usize = 16;
const MAX_KID_LEN: usize = 1000;

/// Where the JWKS comes from (`sasl_oauthbearer_jwks_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `file:///path`: re-read when it changes.
    File(PathBuf),
    /// `http://` or `https://`: fetched every refresh interval.
    Url(String),
}

/// Where the JWKS comes from and what tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSettings {
    pub jwks: JwksSource,
    /// How often the file is checked for changes, or the URL fetched
    /// (`sasl.oauthbearer.jwks.endpoint.refresh.ms`).
    pub refresh: Duration,
    pub expect: Expectations,
}

struct Loaded {
    jwks: Arc<Jwks>,
    stamp: Option<(SystemTime, u64)>,
    checked_at_ms: i64,
}

/// Validates bearer tokens against the configured JWKS, reloading it when the file changes.
pub struct Validator {
    settings: ValidatorSettings,
    loaded: Mutex<Loaded>,
    /// Unknown `kid`s and when each may next bring a fetch forward (clock ms), oldest first.
    missing_kids: Mutex<Vec<(String, i64)>>,
    /// Wakes [`Self::refresh_url`] for an early fetch.
    expedite: tokio::sync::Notify,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_jwks(path: &std::path::Path) -> Result<Jwks, String> {
    // Bounded: a JWKS is a few KB.
    let meta = std::fs::metadata(path).map_err(|e| format!("JWKS {}: {e}", path.display()))?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!("JWKS {}: larger than 1 MiB", path.display()));
    }
    let text = std::fs::read(path).map_err(|e| format!("JWKS {}: {e}", path.display()))?;
    Jwks::parse(&text).map_err(|e| format!("JWKS {}: {e}", path.display()))
}

/// Fetches a JWKS over HTTP(S): bounded in time and size; errors name the URL and the cause.
async fn fetch_jwks(url: &str) -> Result<Jwks, String> {
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("JWKS {url}: {e}"))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("JWKS {url}: {e}"))?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("JWKS {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS {url}: larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Jwks::parse(&body).map_err(|e| format!("JWKS {url}: {e}"))
}

impl Validator {
    /// Reads (or fetches) the JWKS now, so a bad file or URL fails the start with its name.
    pub async fn load(settings: ValidatorSettings, now_ms: i64) -> Result<Validator, String> {
        let (jwks, stamp) = match &settings.jwks {
            JwksSource::File(path) => (read_jwks(path)?, stamp(path)),
            JwksSource::Url(url) => (fetch_jwks(url).await?, None),
        };
        let jwks = Arc::new(jwks);
        Ok(Validator {
            settings,
            loaded: Mutex::new(Loaded { jwks, stamp, checked_at_ms: now_ms }),
            missing_kids: Mutex::new(Vec::new()),
            expedite: tokio::sync::Notify::new(),
        })
    }

    /// The JWKS URL, when the keys come from one (then [`Self::refresh_url`] must run).
    pub fn url(&self) -> Option<&str> {
        match &self.settings.jwks {
            JwksSource::Url(url) => Some(url),
            JwksSource::File(_) => None,
        }
    }

    /// Fetches the JWKS URL every refresh interval until `stop`; a failed fetch is logged and
    /// the previous keys stay in use. Returns at once for a file.
    pub async fn refresh_url(
        self: Arc<Self>,
        clock: Arc<dyn skiff_time::Clock>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(url) = self.url().map(str::to_string) else { return };
        loop {
            tokio::select! {
                () = clock.sleep(self.settings.refresh) => {}
                () = self.expedite.notified() => {}
                () = stop.cancelled() => return,
            }
            let fetched = tokio::select! {
                r = fetch_jwks(&url) => r,
                () = stop.cancelled() => return,
            };
            match fetched {
                Ok(jwks) => {
                    let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
                    if *loaded.jwks != jwks {
                        tracing::info!(url = %url, keys = jwks.len(), "JWKS changed: reloaded");
                        loaded.jwks = Arc::new(jwks);
                    }
                }
                Err(e) => tracing::warn!("JWKS refresh failed, keeping the previous keys: {e}"),
            }
        }
    }

    fn jwks(&self, now_ms: i64) -> Arc<Jwks> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let refresh_ms = i64::try_from(self.settings.refresh.as_millis()).unwrap_or(i64::MAX);
        if let JwksSource::File(path) = &self.settings.jwks
            && now_ms.saturating_sub(loaded.checked_at_ms) >= refresh_ms
        {
            let path = path.clone();
            loaded.checked_at_ms = now_ms;
            let stamp = stamp(&path);
            if stamp != loaded.stamp {
                match read_jwks(&path) {
                    Ok(jwks) => {
                        tracing::info!(file = %path.display(), keys = jwks.len(), "JWKS reloaded");
                        loaded.jwks = Arc::new(jwks);
                        loaded.stamp = stamp;
                    }
                    Err(e) => tracing::warn!("JWKS changed but cannot be used, keeping the previous keys: {e}"),
                }
            }
        }
        loaded.jwks.clone()
    }

    pub fn validate(&self, token: &str, now_ms: i64) -> Result<Validated, OAuthError> {
        let result = validate(token, &self.jwks(now_ms), &self.settings.expect, now_ms);
        if let Err(OAuthError::UnknownKey { kid: Some(kid), .. }) = &result
            && let Some(url) = self.url()
            && self.may_expedite(kid, now_ms)
        {
            tracing::info!(url = %url, "a token names a key the JWKS lacks: fetching the JWKS early");
            self.expedite.notify_one();
        }
        result
    }

    /// Kafka's `maybeExpediteRefresh`: true at most once per [`MISSING_KID_RETRY`] per `kid`.
    fn may_expedite(&self, kid: &str, now_ms: i64) -> bool {
        if kid.len() > MAX_KID_LEN {
            return false;
        }
        let mut missing = self.missing_kids.lock().unwrap_or_else(|e| e.into_inner());
        let retry_ms = i64::try_from(MISSING_KID_RETRY.as_millis()).unwrap_or(i64::MAX);
        match missing.iter().position(|(k, _)| k == kid) {
            Some(i) if missing[i].1 > now_ms => false,
            Some(i) => {
                missing[i].1 = now_ms.saturating_add(retry_ms);
                true
            }
            None => {
                if missing.len() >= MISSING_KIDS {
                    missing.remove(0);
                }
                missing.push((kid.to_string(), now_ms.saturating_add(retry_ms)));
                true
            }
        }
    }
}

/// For the `sasl_oauthbearer` fuzz target: parses a client first message and validates its
/// token against a fixed key set. Bytes from the network: must never panic.
pub fn fuzz_one(bytes: &[u8]) {
    static JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},{"kty":"RSA","kid":"r","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;
    let Ok(first) = parse_client_first(bytes) else { return };
    if let Ok(jwks) = Jwks::parse(JWKS.as_bytes()) {
        let _ = validate(&first.token, &jwks, &Expectations::default(), 0);
    }
}

#[cfg(test)]
mod tests;
