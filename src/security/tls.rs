//! TLS for the `SSL` and `SASL_SSL` listeners (rustls, ring provider).
//!
//! The certificate chain, key and (for mutual TLS) client CA are PEM files, reloaded when any of
//! them changes: each new connection checks their modification times, at most once a second,
//! and a change builds new server configs for the connections that follow (established ones
//! keep theirs). A reload that fails (a half-written file) is logged and the previous
//! certificate stays in use.
//!
//! Mutual TLS applies to the `SSL` listener only, as Kafka applies `ssl.client.auth` to SSL
//! listeners and not to SASL_SSL ones: with `tls_client_ca` set, an SSL client must present a
//! certificate that chains to it, and its principal is the certificate's subject mapped by
//! `ssl.principal.mapping.rules` ([`super::principal`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::principal::PrincipalMapper;

/// The PEM files of the broker's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }
}

/// The acceptors built from one version of the files.
#[derive(Clone)]
pub struct Acceptors {
    /// For SASL_SSL (and SSL without a client CA): no client certificate asked.
    pub server_only: TlsAcceptor,
    /// For SSL with a client CA: a client certificate is required.
    pub mutual: Option<TlsAcceptor>,
}

struct Loaded {
    acceptors: Acceptors,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked_at_ms: i64,
}

/// Builds and reloads the TLS acceptors.
pub struct Tls {
    files: TlsFiles,
    pub mapper: PrincipalMapper,
    loaded: Mutex<Loaded>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files and builds both acceptors; errors name the file.
pub fn build(files: &TlsFiles) -> Result<Acceptors, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_cert {}: no certificate in the file", files.cert.display()));
    }
    // The key's content never goes into a message.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("tls_key {}: no usable private key ({})", files.key.display(), kind_only(&e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let server_only = builder
        .clone()
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    let mutual = match &files.client_ca {
        None => None,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_client_ca {}: {e}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(cas);
            if added == 0 {
                return Err(format!("tls_client_ca {}: no usable CA certificate", ca.display()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| format!("tls_client_ca {}: {e}", ca.display()))?;
            let mut config = builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
            // With client authentication a TLS 1.3 server can only send its session tickets
            // after the client's Finished, i.e. after the client believes the handshake is over;
            // kafka-python reads such a ticket before its first request as "Socket EVENT_READ
            // without in-flight-requests" and drops the connection (half the mutual-TLS runs of
            // tests/security_clients.rs). Kafka clients keep their connections, so resumption
            // buys little: mutual-TLS connections get no tickets.
            config.send_tls13_tickets = 0;
            Some(TlsAcceptor::from(Arc::new(config)))
        }
    };
    Ok(Acceptors { server_only: TlsAcceptor::from(Arc::new(server_only)), mutual })
}

/// The error's kind without details that could quote file content.
fn kind_only(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM private key found",
        Error::Io(_) => "cannot read the file",
        _ => "malformed PEM",
    }
}

impl Tls {
    pub fn load(files: TlsFiles, mapper: PrincipalMapper, now_ms: i64) -> Result<Self, String> {
        let stamps = files.paths().into_iter().map(stamp).collect();
        let acceptors = build(&files)?;
        Ok(Self { files, mapper, loaded: Mutex::new(Loaded { acceptors, stamps, checked_at_ms: now_ms }) })
    }

    /// The acceptors for a new connection, reloaded first if a file changed.
    pub fn acceptors(&self, now_ms: i64) -> Acceptors {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms.saturating_sub(loaded.checked_at_ms) >= 1_000 {
            loaded.checked_at_ms = now_ms;
            let stamps: Vec<_> = self.files.paths().into_iter().map(stamp).collect();
            if stamps != loaded.stamps {
                match build(&self.files) {
                    Ok(a) => {
                        info!(cert = %self.files.cert.display(), "TLS certificate files changed: reloaded");
                        loaded.acceptors = a;
                        loaded.stamps = stamps;
                    }
                    // Not remembered: retried on the next check (the files may be mid-write).
                    Err(e) => {
                        warn!("TLS certificate files changed but cannot be loaded, keeping the previous ones: {e}")
                    }
                }
            }
        }
        loaded.acceptors.clone()
    }
}
