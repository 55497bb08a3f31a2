//! Mutual TLS on the controller port: voter ↔ voter (openraft RPCs) and broker → controller
//! (registration, heartbeats, watches, intents) (docs/security.md, "Inside the cluster").
//!
//! One certificate, key and CA per process, from PEM files: every side presents its certificate
//! and verifies the peer's against the CA. The accepting controller requires a client
//! certificate (rustls' WebPKI client verifier: chain to the CA, validity period, `clientAuth`
//! when the certificate names extended key usages); the dialling side verifies the controller's
//! certificate chain and that it names the host it dialled (the host of `--voters` /
//! `--controllers`, a DNS name or an IP address in the subjectAltName). So a node's certificate
//! serves both ways: it needs both `serverAuth` and `clientAuth` (or no extended key usage).
//!
//! Invariants:
//! * nothing but a completed handshake reaches the RPC decoder: a connection without a valid
//!   certificate (none, another CA, expired) or speaking plaintext is closed after the handshake
//!   fails, counted ([`PeerTls::refused`], `skiff_controller_tls_refused_total`) and logged at
//!   most [`REFUSAL_LOG_LINES_PER_MINUTE`] times a minute, with the number of lines dropped;
//! * a handshake is bounded by [`HANDSHAKE_TIMEOUT`], so a silent peer cannot hold a task;
//! * the files are read again when they change (checked at most once a second, on the next
//!   connection); a reload that fails keeps the previous configs and is logged; established
//!   connections keep theirs. The key's content is never quoted in an error.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A controller connection: plain TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
pub type Conn = Box<dyn Io>;

/// A handshake must complete within this (a plaintext or silent peer is closed by then).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusal log lines per minute, whatever the number of refusals.
pub const REFUSAL_LOG_LINES_PER_MINUTE: u32 = 30;

/// The PEM files of a node's controller-port identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl PeerTlsFiles {
    fn paths(&self) -> [&Path; 3] {
        [&self.cert, &self.key, &self.ca]
    }
}

struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked_at_ms: i64,
}

/// Mutual TLS for the controller port, shared by its listener and its clients.
pub struct PeerTls {
    files: PeerTlsFiles,
    loaded: Mutex<Loaded>,
    refused: AtomicU64,
    /// (minute start ms, lines this minute, lines dropped since the last one written).
    log: Mutex<(i64, u32, u64)>,
    clock: Arc<dyn skiff_time::Clock>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the files and builds both sides; errors name the file and never quote the key.
fn build(files: &PeerTlsFiles) -> Result<(TlsAcceptor, TlsConnector), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("controller_tls_cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("controller_tls_cert {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key found",
            rustls::pki_types::pem::Error::Io(_) => "cannot read the file",
            _ => "malformed PEM",
        };
        format!("controller_tls_key {}: no usable private key ({why})", files.key.display())
    })?;
    let cas = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("controller_tls_ca {}: {e}", files.ca.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(format!("controller_tls_ca {}: no usable CA certificate", files.ca.display()));
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| format!("controller_tls_ca {}: {e}", files.ca.display()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("controller_tls_cert/controller_tls_key: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("controller_tls_cert/controller_tls_key: {e}"))?;
    Ok((TlsAcceptor::from(Arc::new(server)), TlsConnector::from(Arc::new(client))))
}

/// The server name to verify for `host:port` (`[v6]:port` too).
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: not a TLS server name: {e}")))
}

impl PeerTls {
    /// Loads the files (checked now, so a bad file fails the start with its name).
    pub fn load(files: PeerTlsFiles, clock: Arc<dyn skiff_time::Clock>) -> Result<PeerTls, String> {
        let stamps = files.paths().into_iter().map(stamp).collect();
        let (acceptor, connector) = build(&files)?;
        let now = clock.now_ms();
        Ok(PeerTls {
            files,
            loaded: Mutex::new(Loaded { acceptor, connector, stamps, checked_at_ms: now }),
            refused: AtomicU64::new(0),
            log: Mutex::new((i64::MIN, 0, 0)),
            clock,
        })
    }

    /// Connections refused so far (failed handshakes on the controller port).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The current configs, reloaded first if a file changed.
    fn current(&self) -> (TlsAcceptor, TlsConnector) {
        let now = self.clock.now_ms();
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(loaded.checked_at_ms) >= 1_000 {
            loaded.checked_at_ms = now;
            let stamps: Vec<_> = self.files.paths().into_iter().map(stamp).collect();
            if stamps != loaded.stamps {
                match build(&self.files) {
                    Ok((acceptor, connector)) => {
                        tracing::info!(cert = %self.files.cert.display(), "controller TLS files changed: reloaded");
                        (loaded.acceptor, loaded.connector, loaded.stamps) = (acceptor, connector, stamps);
                    }
                    // Not remembered: retried on the next check (the files may be mid-write).
                    Err(e) => tracing::warn!(
                        "controller TLS files changed but cannot be loaded, keeping the previous ones: {e}"
                    ),
                }
            }
        }
        (loaded.acceptor.clone(), loaded.connector.clone())
    }

    /// Server side: the handshake with a peer that connected; `None` (counted and logged) when
    /// it fails or takes longer than [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, stream: TcpStream, peer: std::net::SocketAddr) -> Option<Conn> {
        let (acceptor, _) = self.current();
        let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.admit_log_line() {
            tracing::warn!(%peer, suppressed, error = %error, "controller connection refused: TLS handshake failed");
        }
        None
    }

    /// Client side: TLS over a connected `stream` to `addr` (whose host the certificate must
    /// name).
    pub async fn connect(&self, addr: &str, stream: TcpStream) -> io::Result<Conn> {
        let name = server_name(addr)?;
        let (_, connector) = self.current();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("TLS handshake: {e}"))),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }

    /// `Some(lines dropped since the last one)` when a refusal line may be written now.
    fn admit_log_line(&self) -> Option<u64> {
        let now = self.clock.now_ms();
        let mut s = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(s.0) >= 60_000 {
            *s = (now, 0, s.2);
        }
        if s.1 >= REFUSAL_LOG_LINES_PER_MINUTE {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }
}

/// Dials `addr`, with TLS when `tls` is set. Errors are the dial's (nothing was sent).
pub(crate) async fn dial(addr: &str, tls: Option<&PeerTls>) -> io::Result<Conn> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    match tls {
        None => Ok(Box::new(stream)),
        Some(tls) => tls.connect(addr, stream).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host() {
        assert!(matches!(server_name("127.0.0.1:9093"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]:9093"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("ctl-1.skiff.svc:9093"), Ok(ServerName::DnsName(_))));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn unreadable_files_are_named() {
        let clock = Arc::new(skiff_time::ManualClock::new(0));
        let dir = tempfile::tempdir().expect("dir");
        let missing = PeerTlsFiles { cert: dir.path().join("c"), key: dir.path().join("k"), ca: dir.path().join("a") };
        let err = PeerTls::load(missing, clock).expect_err("missing files");
        assert!(err.contains("controller_tls_cert"), "{err}");
    }
}
