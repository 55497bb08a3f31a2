//! Authentication on the HTTP listener (docs/security.md, "The HTTP listener").
//!
//! One middleware ([`authenticate`]) in front of every route decides who a request comes from
//! and puts a [`Caller`] into its extensions; the console API authorizes that caller with the
//! broker's authorizer (`console/api/access.rs`), exactly as a Kafka connection's principal.
//!
//! ```text
//!  /health                         always open (liveness and readiness probes)
//!  /metrics                        open when `http_metrics_open`, else as below
//!  everything else, auth off       User:ANONYMOUS (the ACLs still apply, as on PLAINTEXT)
//!  everything else, auth on        Authorization: Basic <user:password>   SCRAM store
//!                                  Authorization: Bearer <JWT>            OAUTHBEARER's validator
//!                                  none or wrong: 401 + WWW-Authenticate: Basic realm="skiff"
//! ```
//!
//! A Basic password is checked as SASL/PLAIN checks one: salted with the user's stored salt
//! and iteration count (SCRAM-SHA-512, else SCRAM-SHA-256), its StoredKey compared in constant
//! time; an unknown user costs the same derivation (a decoy salt), so timing does not tell
//! whether a user exists. The derivation (thousands of HMACs) runs on the blocking pool. A
//! browser sends the credentials again with every request, so a verified (user, password) is
//! remembered, keyed by an HMAC with a per-process random key, and only for as long as the
//! user's stored key is the one it was verified against: a changed or deleted credential is
//! never accepted from memory.
//!
//! Failures are counted (`skiff_authentication_failures_total` and
//! `skiff_http_authentication_failures_total`), logged at WARN with the client address and the
//! claimed user (never a password or token) within the Kafka listeners' rate-limited budget,
//! and answered `connection_failed_authentication_delay` late, as on the Kafka listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use hmac::Mac;
use skiff_controller::intent::ScramMechanism;
use subtle::ConstantTimeEq;

use crate::broker::Broker;
use crate::security::Principal;
use crate::security::sasl::scram;

/// The Basic challenge (realm `skiff`); a browser shows its log-in prompt on it.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"skiff\", charset=\"UTF-8\"";
/// Verified (user, password) pairs remembered at most; beyond, the memory starts over.
const VERIFIED_CAPACITY: usize = 1024;
/// Iterations of the decoy derivation for unknown users (the bootstrap user's count).
const DECOY_ITERATIONS: i32 = 4096;

/// The HTTP listener's authentication rules (`[security]` `http_auth`, `http_metrics_open`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuth {
    /// Every route but `/health` (and `/metrics` when open) needs credentials.
    pub required: bool,
    /// `/metrics` needs none even when `required`.
    pub metrics_open: bool,
    /// A failed authentication is answered this late (Kafka's
    /// `connection.failed.authentication.delay.ms`).
    pub failed_delay: Duration,
}

impl Default for HttpAuth {
    /// Open: no credentials asked (a controller-only node, tests).
    fn default() -> Self {
        Self { required: false, metrics_open: false, failed_delay: Duration::from_millis(100) }
    }
}

/// The client address of an HTTP connection (axum's connect info for both listener kinds).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::tls::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::tls::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Who sent a request: its principal and address. Every request past [`authenticate`] has one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub peer: SocketAddr,
}

impl Caller {
    /// `User:ANONYMOUS` at an unknown address (a request that bypassed the middleware).
    pub fn anonymous() -> Self {
        Self { principal: Principal::anonymous(), peer: SocketAddr::from(([0, 0, 0, 0], 0)) }
    }
}

/// What the middleware shares between requests.
#[derive(Clone)]
pub struct Authenticator {
    settings: HttpAuth,
    broker: Option<Arc<Broker>>,
    verified: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>>,
    key: Arc<[u8; 32]>,
}

impl Authenticator {
    pub fn new(settings: HttpAuth, broker: Option<Arc<Broker>>) -> Self {
        Self { settings, broker, verified: Arc::default(), key: Arc::new(rand::random()) }
    }

    fn open_path(&self, path: &str) -> bool {
        path == "/health" || (path == "/metrics" && self.settings.metrics_open)
    }
}

/// Why a request was not authenticated.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No `Authorization` header: a browser's first request, not a failure.
    Missing,
    /// Credentials that do not verify: (scheme, claimed user, reason for the log).
    Failed { scheme: &'static str, user: Option<String>, reason: String },
}

/// The middleware: puts a [`Caller`] into the request, or answers 401.
pub async fn authenticate(State(auth): State<Authenticator>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map_or(Caller::anonymous().peer, |c| c.0.0);
    if !auth.settings.required || auth.open_path(req.uri().path()) {
        req.extensions_mut().insert(Caller { principal: Principal::anonymous(), peer });
        return next.run(req).await;
    }
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let outcome = match (&auth.broker, header) {
        (_, None) => Err(Refusal::Missing),
        // A controller-only node holds no credentials: nothing can verify.
        (None, Some(_)) => Err(Refusal::Failed {
            scheme: "none",
            user: None,
            reason: "this node runs no broker and holds no credentials".into(),
        }),
        (Some(broker), Some(value)) => verify(&auth, broker, &value).await,
    };
    match outcome {
        Ok(principal) => {
            req.extensions_mut().insert(Caller { principal, peer });
            next.run(req).await
        }
        Err(Refusal::Missing) => unauthorized(
            &auth,
            "AUTHENTICATION_REQUIRED",
            "This listener needs a user name and password (HTTP Basic) or a bearer token.",
        ),
        Err(Refusal::Failed { scheme, user, reason }) => {
            if let Some(broker) = &auth.broker {
                broker.metrics.auth_failures.fetch_add(1, Relaxed);
                broker.metrics.http_auth_failures.fetch_add(1, Relaxed);
                if let Some(suppressed) = broker.security.audit.admit(broker.clock.now_ms()) {
                    tracing::warn!(
                        %peer,
                        listener = "HTTP",
                        scheme,
                        principal = %user.as_deref().map_or_else(|| "unknown".to_string(), |u| format!("User:{u}")),
                        path = req.uri().path(),
                        suppressed,
                        "authentication failed: {reason}"
                    );
                }
            }
            if let Some(broker) = &auth.broker {
                broker.clock.sleep(auth.settings.failed_delay).await;
            }
            unauthorized(&auth, "AUTHENTICATION_FAILED", "Authentication failed: invalid user name, password or token.")
        }
    }
}

/// 401 with the Basic challenge (and the Bearer one when OAUTHBEARER is configured).
fn unauthorized(auth: &Authenticator, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = crate::console::api::json(StatusCode::UNAUTHORIZED, &body);
    let headers = response.headers_mut();
    headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
    if auth.broker.as_ref().is_some_and(|b| b.security.oauth.is_some()) {
        headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"skiff\""));
    }
    response
}

/// The principal of an `Authorization` header value.
async fn verify(auth: &Authenticator, broker: &Arc<Broker>, value: &[u8]) -> Result<Principal, Refusal> {
    match parse_authorization(value) {
        Err(AuthorizationError { scheme, reason }) => Err(failed(scheme, None, reason)),
        Ok(Credentials::Basic { user, password }) => {
            if verify_password(auth, broker, &user, &password).await {
                Ok(Principal::user(user))
            } else {
                Err(failed("Basic", Some(user), "invalid user name or password"))
            }
        }
        Ok(Credentials::Bearer(token)) => {
            let Some(validator) = &broker.security.oauth else {
                return Err(failed("Bearer", None, "bearer tokens need OAUTHBEARER (sasl_oauthbearer_jwks_url)"));
            };
            // The reason names the check that failed, never the token.
            match validator.validate(token, broker.clock.now_ms()) {
                Ok(v) => Ok(Principal::user(v.principal)),
                Err(e) => Err(failed("Bearer", None, &e.to_string())),
            }
        }
    }
}

/// What an `Authorization` header presents (its `Debug` shows neither password nor token).
#[derive(PartialEq, Eq)]
pub enum Credentials<'a> {
    /// RFC 7617: a user name (non-empty, no colon) and a password.
    Basic { user: String, password: String },
    /// RFC 6750: the token, unchecked.
    Bearer(&'a str),
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: <redacted> }}"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

/// Why an `Authorization` header was not understood: the scheme it claimed and a reason that
/// never quotes the credentials.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationError {
    pub scheme: &'static str,
    pub reason: &'static str,
}

/// Parses an `Authorization` header value from the network (fuzz target `http_authorization`).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials<'_>, AuthorizationError> {
    let err = |scheme, reason| AuthorizationError { scheme, reason };
    let text = std::str::from_utf8(value).map_err(|_| err("unknown", "Authorization is not UTF-8"))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, password) = parse_basic(rest).map_err(|why| err("Basic", why))?;
        Ok(Credentials::Basic { user, password })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credentials::Bearer(rest))
    } else {
        Err(err("unknown", "unsupported Authorization scheme (Basic or Bearer)"))
    }
}

fn failed(scheme: &'static str, user: Option<String>, reason: &str) -> Refusal {
    Refusal::Failed { scheme, user, reason: reason.to_string() }
}

/// `base64(user:password)` (RFC 7617; the user name holds no colon, the password may).
fn parse_basic(encoded: &str) -> Result<(String, String), &'static str> {
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| "Basic credentials are not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "Basic credentials are not UTF-8")?;
    let (user, password) = text.split_once(':').ok_or("Basic credentials hold no ':'")?;
    if user.is_empty() {
        return Err("empty user name");
    }
    Ok((user.to_string(), password.to_string()))
}

/// Whether `password` is `user`'s, against the SCRAM store (as SASL/PLAIN checks it).
async fn verify_password(auth: &Authenticator, broker: &Arc<Broker>, user: &str, password: &str) -> bool {
    let credential = [ScramMechanism::ScramSha512, ScramMechanism::ScramSha256]
        .into_iter()
        .find_map(|m| broker.metadata.read(|md| md.scram().credential(user, m).cloned()).map(|c| (m, c)));
    let memo = {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&auth.key[..]).expect("any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        <[u8; 32]>::from(mac.finalize().into_bytes())
    };
    if let Some((_, c)) = &credential {
        let verified = auth.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.get(&memo).is_some_and(|stored| bool::from(stored.ct_eq(&c.stored_key))) {
            return true;
        }
    }
    let decoy_salt = {
        use crate::security::sasl::Credentials;
        crate::security::BrokerCredentials(broker).decoy_salt(user)
    };
    let password = password.to_string();
    let check = credential.clone();
    let ok = tokio::task::spawn_blocking(move || match check {
        Some((m, c)) => scram::password_matches(m, &c, &password),
        None => {
            // Same work as a known user, so the answer's timing does not tell.
            let _ =
                scram::salted_password(ScramMechanism::ScramSha512, password.as_bytes(), &decoy_salt, DECOY_ITERATIONS);
            false
        }
    })
    .await
    .unwrap_or(false);
    if let (true, Some((_, c))) = (ok, credential) {
        let mut verified = auth.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(memo, c.stored_key);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers() {
        let basic = parse_authorization(b"basic  YWxpY2U6cHc= ").expect("basic");
        assert_eq!(basic, Credentials::Basic { user: "alice".into(), password: "pw".into() });
        assert!(!format!("{basic:?}").contains("pw"), "Debug hides the password");
        assert_eq!(parse_authorization(b"Bearer a.b.c"), Ok(Credentials::Bearer("a.b.c")));
        assert_eq!(parse_authorization(b"Digest x").map_err(|e| e.scheme), Err("unknown"));
        assert_eq!(parse_authorization(b"Basic %%").map_err(|e| e.scheme), Err("Basic"));
        assert!(parse_authorization(&[0xff, 0xfe]).is_err());
        assert!(parse_authorization(b"").is_err());
    }

    #[test]
    fn basic_credentials() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(parse_basic(&enc("alice:pa:ss")), Ok(("alice".into(), "pa:ss".into())));
        assert_eq!(parse_basic(&enc("alice:")), Ok(("alice".into(), String::new())));
        assert!(parse_basic(&enc("alice")).is_err());
        assert!(parse_basic(&enc(":x")).is_err());
        assert!(parse_basic("%%%").is_err());
    }
}
