//! Listeners, TLS and SASL authentication (docs/security.md).
//!
//! * [`listener`]: the `PROTOCOL://host:port` listener list and advertised addresses.
//! * [`tls`]: rustls acceptors, reloaded when the certificate files change; mutual TLS.
//! * [`principal`]: a client certificate's subject (RFC 2253) and Kafka's mapping rules.
//! * [`sasl`]: the per-connection SASL state machine (KIP-152, KIP-368), PLAIN, SCRAM and
//!   OAUTHBEARER (JWTs against a JWKS).
//!
//! * [`authorizer`]: ACL decisions for the principal a connection authenticated as.
//!
//! What a connection learns here (its [`Principal`]) is kept on the connection and handed to
//! every handler call; `handler/authorize.rs` asks the [`authorizer::Authorizer`].

pub mod authorizer;
pub mod listener;
pub mod principal;
pub mod sasl;
pub mod tls;

use std::sync::Arc;
use std::sync::Mutex;

use skiff_controller::intent::{ScramCredential, ScramMechanism};
use tracing::warn;

use self::listener::{Advertised, SecurityProtocol};
pub use self::sasl::Principal;
use crate::broker::Broker;

/// One bound Kafka listener: how its clients authenticate and what it advertises.
pub struct ListenerContext {
    pub protocol: SecurityProtocol,
    pub advertised: Advertised,
    /// Set for SSL and SASL_SSL.
    pub tls: Option<Arc<tls::Tls>>,
    /// Set for SASL_PLAINTEXT and SASL_SSL.
    pub sasl: Option<sasl::SaslSettings>,
}

impl ListenerContext {
    /// A PLAINTEXT listener advertising `advertised` (tests, and the single-listener default).
    pub fn plaintext(advertised: Advertised) -> Self {
        Self { protocol: SecurityProtocol::Plaintext, advertised, tls: None, sasl: None }
    }
}

/// Log lines about failed authentications per minute, whatever their number.
pub const AUTH_LOG_LINES_PER_MINUTE: u32 = 30;

/// A log that writes at most `per_minute` lines a minute and says how many it dropped.
pub struct RateLimitedLog {
    per_minute: u32,
    state: Mutex<(i64, u32, u64)>,
}

impl RateLimitedLog {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, state: Mutex::new((i64::MIN, 0, 0)) }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms.saturating_sub(s.0) >= 60_000 {
            *s = (now_ms, 0, s.2);
        }
        if s.1 >= self.per_minute {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }
}

/// What the broker shares between connections for authentication.
pub struct BrokerSecurity {
    /// Failed authentications (and refused connections), rate-limited.
    pub audit: RateLimitedLog,
    /// Keys the decoy salts of unknown SCRAM users (random per process).
    decoy_key: [u8; 32],
    /// ACL decisions and the denial audit (`authorizer.rs`).
    pub authorizer: authorizer::Authorizer,
    /// OAUTHBEARER's token validator, when the mechanism is enabled.
    pub oauth: Option<Arc<sasl::oauthbearer::Validator>>,
}

impl Default for BrokerSecurity {
    fn default() -> Self {
        Self::new(authorizer::Authorizer::default(), None)
    }
}

impl BrokerSecurity {
    /// `oauth`: OAUTHBEARER's validator (`None`: the mechanism is not enabled).
    pub fn new(authorizer: authorizer::Authorizer, oauth: Option<Arc<sasl::oauthbearer::Validator>>) -> Self {
        Self { audit: RateLimitedLog::new(AUTH_LOG_LINES_PER_MINUTE), decoy_key: rand::random(), authorizer, oauth }
    }

    /// Logs a failed authentication: principal, address and mechanism, never a password.
    pub fn log_failure(&self, now_ms: i64, peer: std::net::SocketAddr, listener: SecurityProtocol, f: &sasl::Failure) {
        if let Some(suppressed) = self.audit.admit(now_ms) {
            warn!(
                %peer,
                %listener,
                mechanism = f.mechanism.map_or("none", |m| m.name()),
                principal = %f.user.as_deref().map_or_else(|| "unknown".to_string(), |u| format!("User:{u}")),
                suppressed,
                "authentication failed: {}", f.reason
            );
        }
    }
}

/// [`sasl::Credentials`] from the broker's metadata image.
pub struct BrokerCredentials<'a>(pub &'a Arc<Broker>);

impl sasl::Credentials for BrokerCredentials<'_> {
    fn scram(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.0.metadata.read(|m| m.scram().credential(user, mechanism).cloned())
    }

    fn nonce(&self) -> String {
        use base64::Engine;
        let bytes: [u8; 24] = rand::random();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn decoy_salt(&self, user: &str) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0.security.decoy_key).expect("any key length");
        mac.update(user.as_bytes());
        mac.finalize().into_bytes()[..16].to_vec()
    }

    fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    fn bearer(&self, token: &str) -> Result<sasl::oauthbearer::Validated, sasl::oauthbearer::OAuthError> {
        match &self.0.security.oauth {
            Some(v) => v.validate(token, self.0.clock.now_ms()),
            None => Err(sasl::oauthbearer::OAuthError::NotConfigured),
        }
    }
}
