//! SASL authentication of one connection: Kafka's `SaslServerAuthenticator` state machine
//! (KIP-43, KIP-152, KIP-368), without I/O.
//!
//! ```text
//!  HandshakeOrVersions ──ApiVersions──▶ Handshake ──SaslHandshake(mech)──▶ Authenticate
//!        └──────────────SaslHandshake(mech)──────────────────────────────▶   │ SaslAuthenticate…
//!  anything else before authentication: the connection is closed            ▼
//!                                   Authenticated ◀──────────────────── (success)
//!                        SaslHandshake (same mechanism) = re-authentication (KIP-368)
//! ```
//!
//! A failed authentication is answered SASL_AUTHENTICATION_FAILED and the connection closed;
//! an unknown mechanism UNSUPPORTED_SASL_MECHANISM and closed. With `connections.max.reauth.ms`
//! set, a session lasts that long: the final SaslAuthenticate says so (`session_lifetime_ms`)
//! and a request other than re-authentication after it closes the connection. After a
//! SaslHandshake v0, the tokens come as raw size-prefixed frames (Kafka's pre-KIP-152 clients).

pub mod oauthbearer;
pub mod plain;
pub mod scram;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::intent::{ScramCredential, ScramMechanism};

use self::scram::{ScramServer, Step};
use crate::protocol::Request;

/// A SASL mechanism Skiff serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    /// RFC 7628 / KIP-255: JWT bearer tokens checked against a JWKS ([`oauthbearer`]).
    OAuthBearer,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::ScramSha256),
        Mechanism::Scram(ScramMechanism::ScramSha512),
        Mechanism::OAuthBearer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Kafka's `KafkaPrincipal`: `User:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
}

impl Principal {
    /// Kafka's `User:ANONYMOUS`: PLAINTEXT, and TLS without a client certificate.
    pub fn anonymous() -> Self {
        Self { name: "ANONYMOUS".into() }
    }

    pub fn user(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

/// What the authenticator needs from the broker: credentials and randomness.
pub trait Credentials {
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
    /// A fresh server nonce: printable ASCII without `,`.
    fn nonce(&self) -> String;
    /// The salt shown for a user that does not exist: the same for the same name.
    fn decoy_salt(&self, user: &str) -> Vec<u8>;
    /// Wall time in ms (session expiry).
    fn now_ms(&self) -> i64;
    /// Validates an OAUTHBEARER token (signature, times, issuer, audience) and names its
    /// principal. Default: OAUTHBEARER is not configured.
    fn bearer(&self, _token: &str) -> Result<oauthbearer::Validated, oauthbearer::OAuthError> {
        Err(oauthbearer::OAuthError::NotConfigured)
    }
}

/// A SASL listener's settings.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    pub mechanisms: Vec<Mechanism>,
    /// `connections.max.reauth.ms`; `None`: sessions do not expire.
    pub max_reauth: Option<Duration>,
}

/// Why an authentication failed, for the audit log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub mechanism: Option<Mechanism>,
    /// The user the client claimed, when it got that far.
    pub user: Option<String>,
    pub reason: String,
}

/// What the connection does with a request. Not boxed: built once and moved once per request,
/// like `handler::Handled`.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Gate {
    /// Hand it to the handlers.
    Pass,
    /// Answer with this body, then close the connection if `close`.
    Answer { body: ResponseKind, close: bool, event: Option<Event> },
    /// Close the connection without an answer.
    Close { reason: String },
}

/// Something worth counting and logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Authenticated { principal: Principal, mechanism: Mechanism, reauthentication: bool },
    Failed(Failure),
}

#[derive(Debug)]
enum Exchange {
    Plain,
    Scram(Box<ScramServer>),
    OAuthBearer,
}

#[derive(Debug)]
enum State {
    HandshakeOrVersions,
    Handshake,
    Authenticate { mechanism: Mechanism, exchange: Exchange, raw: bool },
    Authenticated { mechanism: Mechanism, expires_at_ms: Option<i64> },
    Reauthenticate { mechanism: Mechanism, exchange: Exchange, expires_at_ms: Option<i64> },
}

/// One connection's authentication.
#[derive(Debug)]
pub struct Authenticator {
    settings: SaslSettings,
    state: State,
    principal: Option<Principal>,
}

impl Authenticator {
    pub fn new(settings: SaslSettings) -> Self {
        Self { settings, state: State::HandshakeOrVersions, principal: None }
    }

    /// The authenticated principal, once there is one.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated { .. } | State::Reauthenticate { .. })
    }

    /// True after a SaslHandshake v0: the next frame is a raw SASL token.
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Authenticate { raw: true, .. })
    }

    fn mechanism_names(&self) -> Vec<StrBytes> {
        self.settings.mechanisms.iter().map(|m| StrBytes::from_static_str(m.name())).collect()
    }

    fn new_exchange(mechanism: Mechanism) -> Exchange {
        match mechanism {
            Mechanism::Plain => Exchange::Plain,
            Mechanism::Scram(m) => Exchange::Scram(Box::new(ScramServer::new(m))),
            Mechanism::OAuthBearer => Exchange::OAuthBearer,
        }
    }

    /// Decides what happens to a decoded request.
    pub fn admit(&mut self, request: &Request, creds: &dyn Credentials) -> Gate {
        let key = request.api_key;
        match (&mut self.state, &request.body) {
            (State::HandshakeOrVersions, RequestKind::ApiVersions(_)) => {
                self.state = State::Handshake;
                Gate::Pass
            }
            (State::HandshakeOrVersions | State::Handshake, RequestKind::SaslHandshake(r)) => {
                let wanted = r.mechanism.as_str();
                let mechanisms = self.mechanism_names();
                match Mechanism::from_name(wanted).filter(|m| self.settings.mechanisms.contains(m)) {
                    Some(mechanism) => {
                        self.state = State::Authenticate {
                            mechanism,
                            exchange: Self::new_exchange(mechanism),
                            raw: request.version == 0,
                        };
                        Gate::Answer {
                            body: ResponseKind::SaslHandshake(
                                SaslHandshakeResponse::default().with_mechanisms(mechanisms),
                            ),
                            close: false,
                            event: None,
                        }
                    }
                    None => Gate::Answer {
                        body: ResponseKind::SaslHandshake(
                            SaslHandshakeResponse::default()
                                .with_error_code(crate::handler::errors::unsupported_sasl_mechanism())
                                .with_mechanisms(mechanisms),
                        ),
                        close: true,
                        event: Some(Event::Failed(Failure {
                            mechanism: None,
                            user: None,
                            reason: format!("unsupported SASL mechanism {wanted:?}"),
                        })),
                    },
                }
            }
            (State::Authenticate { raw: false, .. }, RequestKind::SaslAuthenticate(r)) => {
                let version = request.version;
                self.authenticate(&r.auth_bytes, creds, version)
            }
            (State::Authenticated { mechanism, expires_at_ms }, RequestKind::SaslHandshake(r)) => {
                // KIP-368 re-authentication: same mechanism, same principal.
                let (mechanism, expires_at_ms) = (*mechanism, *expires_at_ms);
                if r.mechanism.as_str() != mechanism.name() || request.version == 0 {
                    return Gate::Answer {
                        body: ResponseKind::SaslHandshake(
                            SaslHandshakeResponse::default()
                                .with_error_code(crate::handler::errors::illegal_sasl_state())
                                .with_mechanisms(self.mechanism_names()),
                        ),
                        close: true,
                        event: Some(Event::Failed(Failure {
                            mechanism: Some(mechanism),
                            user: self.principal.as_ref().map(|p| p.name.clone()),
                            reason: format!("re-authentication with another mechanism ({})", r.mechanism.as_str()),
                        })),
                    };
                }
                self.state =
                    State::Reauthenticate { mechanism, exchange: Self::new_exchange(mechanism), expires_at_ms };
                Gate::Answer {
                    body: ResponseKind::SaslHandshake(
                        SaslHandshakeResponse::default().with_mechanisms(self.mechanism_names()),
                    ),
                    close: false,
                    event: None,
                }
            }
            (State::Reauthenticate { .. }, RequestKind::SaslAuthenticate(r)) => {
                let version = request.version;
                self.authenticate(&r.auth_bytes, creds, version)
            }
            (State::Authenticated { .. }, RequestKind::SaslAuthenticate(_)) => Gate::Answer {
                body: ResponseKind::SaslAuthenticate(
                    SaslAuthenticateResponse::default()
                        .with_error_code(crate::handler::errors::illegal_sasl_state())
                        .with_error_message(Some(StrBytes::from_static_str(
                            "SaslAuthenticate request received after successful authentication",
                        ))),
                ),
                close: false,
                event: None,
            },
            (State::Authenticated { expires_at_ms, .. } | State::Reauthenticate { expires_at_ms, .. }, _) => {
                match expires_at_ms {
                    Some(t) if creds.now_ms() > *t => Gate::Close {
                        reason: format!("{key:?} after the SASL session expired (connections.max.reauth.ms)"),
                    },
                    _ => Gate::Pass,
                }
            }
            (state, _) => {
                Gate::Close { reason: format!("unexpected {key:?} request in SASL state {}", state_name(state)) }
            }
        }
    }

    /// A raw token after SaslHandshake v0: the answer frame (size-prefixed), or why to close.
    pub fn raw_token(&mut self, token: &[u8], creds: &dyn Credentials) -> (Option<Bytes>, Option<Event>) {
        match self.authenticate(token, creds, 0) {
            Gate::Answer { body: ResponseKind::SaslAuthenticate(r), close: false, event } => {
                let mut frame = (r.auth_bytes.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&r.auth_bytes);
                (Some(Bytes::from(frame)), event)
            }
            Gate::Answer { event, .. } => (None, event),
            _ => (None, None),
        }
    }

    fn authenticate(&mut self, token: &[u8], creds: &dyn Credentials, version: i16) -> Gate {
        let (mechanism, exchange, reauth_expiry) = match &mut self.state {
            State::Authenticate { mechanism, exchange, .. } => (*mechanism, exchange, None),
            State::Reauthenticate { mechanism, exchange, expires_at_ms } => {
                (*mechanism, exchange, Some(*expires_at_ms))
            }
            _ => return Gate::Close { reason: "SASL token outside authentication".into() },
        };
        let outcome: Result<Progress, Refusal> = match exchange {
            Exchange::Plain => match plain::parse(token) {
                Ok(p) => {
                    let ok = [ScramMechanism::ScramSha512, ScramMechanism::ScramSha256]
                        .into_iter()
                        .find_map(|m| creds.scram(&p.user, m).map(|c| (m, c)))
                        .is_some_and(|(m, c)| scram::password_matches(m, &c, &p.password));
                    if ok {
                        Ok(Progress { token: Vec::new(), user: Some(p.user), expires_at_ms: None })
                    } else {
                        Err(Refusal {
                            user: Some(p.user),
                            reason: "invalid user name or password".into(),
                            message: "Authentication failed: Invalid username or password".into(),
                        })
                    }
                }
                Err(e) => Err(Refusal { user: None, reason: e.to_string(), message: e.to_string() }),
            },
            Exchange::Scram(server) => {
                let step = server.step(
                    token,
                    |u| creds.scram(u, server_mech(mechanism)),
                    &creds.nonce(),
                    |u| creds.decoy_salt(u),
                );
                let user = server.user().map(str::to_string);
                match step {
                    Ok(Step::Continue(token)) => Ok(Progress { token, user: None, expires_at_ms: None }),
                    Ok(Step::Done(done)) => {
                        Ok(Progress { token: done.server_final, user: Some(done.user), expires_at_ms: None })
                    }
                    Err(e) => Err(Refusal {
                        user,
                        reason: e.to_string(),
                        message: format!(
                            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                            mechanism.name()
                        ),
                    }),
                }
            }
            Exchange::OAuthBearer => oauth_step(token, creds),
        };
        match outcome {
            Ok(Progress { token: bytes, user: None, .. }) => Gate::Answer {
                body: ResponseKind::SaslAuthenticate(
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                ),
                close: false,
                event: None,
            },
            Ok(Progress { token: bytes, user: Some(user), expires_at_ms: credential_expiry }) => {
                let principal = Principal::user(user);
                let reauthentication = reauth_expiry.is_some();
                if let Some(previous) = self.principal.as_ref().filter(|p| **p != principal) {
                    let message =
                        format!("Cannot change principals during re-authentication from {previous}: {principal}");
                    return self.failed(mechanism, Some(principal.name), message.clone(), message);
                }
                let max_reauth_ms =
                    self.settings.max_reauth.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0);
                // Kafka's SaslServerAuthenticator: a credential with a lifetime (an OAUTHBEARER
                // token's exp) bounds the session whether or not connections.max.reauth.ms is
                // set; the session lasts the shorter of the two.
                let now = creds.now_ms();
                let lifetime_ms = match credential_expiry {
                    None => max_reauth_ms,
                    Some(exp) if max_reauth_ms > 0 => exp.saturating_sub(now).min(max_reauth_ms).max(0),
                    Some(exp) => exp.saturating_sub(now).max(0),
                };
                let expires_at_ms = (lifetime_ms > 0).then(|| now.saturating_add(lifetime_ms));
                self.state = State::Authenticated { mechanism, expires_at_ms };
                self.principal = Some(principal.clone());
                let mut response = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes));
                if version >= 1 {
                    response = response.with_session_lifetime_ms(lifetime_ms);
                }
                Gate::Answer {
                    body: ResponseKind::SaslAuthenticate(response),
                    close: false,
                    event: Some(Event::Authenticated { principal, mechanism, reauthentication }),
                }
            }
            Err(Refusal { user, reason, message }) => self.failed(mechanism, user, reason, message),
        }
    }

    fn failed(&mut self, mechanism: Mechanism, user: Option<String>, reason: String, message: String) -> Gate {
        // Closed right after the answer: nothing more is read on this connection.
        self.state = State::Handshake;
        Gate::Answer {
            body: ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(crate::handler::errors::sasl_authentication_failed())
                    .with_error_message(Some(StrBytes::from_string(message))),
            ),
            close: true,
            event: Some(Event::Failed(Failure { mechanism: Some(mechanism), user, reason })),
        }
    }
}

/// A step that went through: the token to answer with, the user once authenticated, and
/// when the credential expires if it does (an OAUTHBEARER token).
struct Progress {
    token: Vec<u8>,
    user: Option<String>,
    expires_at_ms: Option<i64>,
}

/// OAUTHBEARER's single step: the client's initial response carries the token. A refused token
/// is answered SASL_AUTHENTICATION_FAILED at once (Kafka first sends an RFC 7628 error
/// challenge and fails after the client's `%x01`; clients see the same error either way).
fn oauth_step(token: &[u8], creds: &dyn Credentials) -> Result<Progress, Refusal> {
    let message =
        "Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";
    let refuse = |user: Option<String>, reason: String| Refusal { user, reason, message: message.into() };
    let first = oauthbearer::parse_client_first(token).map_err(|e| refuse(None, e.to_string()))?;
    let valid = creds.bearer(&first.token).map_err(|e| refuse(first.authzid.clone(), e.to_string()))?;
    if let Some(authzid) = first.authzid.filter(|a| *a != valid.principal) {
        return Err(refuse(
            Some(valid.principal.clone()),
            format!("authorization id {authzid:?} differs from the token's principal"),
        ));
    }
    Ok(Progress { token: Vec::new(), user: Some(valid.principal), expires_at_ms: Some(valid.expires_at_ms) })
}

/// A failed step: the user the client claimed, why (for the log), what the client is told.
struct Refusal {
    user: Option<String>,
    reason: String,
    message: String,
}

fn server_mech(m: Mechanism) -> ScramMechanism {
    match m {
        Mechanism::Scram(s) => s,
        Mechanism::Plain | Mechanism::OAuthBearer => ScramMechanism::ScramSha512,
    }
}

fn state_name(s: &State) -> &'static str {
    match s {
        State::HandshakeOrVersions => "HANDSHAKE_OR_VERSIONS_REQUEST",
        State::Handshake => "HANDSHAKE_REQUEST",
        State::Authenticate { .. } => "AUTHENTICATE",
        State::Authenticated { .. } => "COMPLETE",
        State::Reauthenticate { .. } => "REAUTH_PROCESS_HANDSHAKE",
    }
}

/// The APIs a client may send before it is authenticated (KIP-152).
pub fn allowed_before_authentication(key: ApiKey) -> bool {
    matches!(key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
}

#[cfg(test)]
mod tests;
