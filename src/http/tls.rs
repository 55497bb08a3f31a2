//! HTTPS for the HTTP listener (`http_tls`): the Kafka listeners' certificate and key
//! (`tls_cert`, `tls_key`), reloaded by the same [`Tls`] when the files change.
//!
//! [`TlsListener`] is an axum listener: it accepts TCP connections and runs their handshakes
//! concurrently (a client that stalls its handshake holds only its own task, for at most
//! [`HANDSHAKE_TIMEOUT`]), handing axum the connections whose handshake finished. At most
//! [`MAX_HANDSHAKES`] run at once; beyond, new connections wait in the listen backlog.
//! Dropping the listener (shutdown) aborts the handshakes still running. No client
//! certificate is asked for: HTTP clients authenticate with Basic or Bearer credentials.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;

use crate::broker::Clock;
use crate::security::tls::Tls;

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most.
pub const MAX_HANDSHAKES: usize = 256;

/// The HTTP listener over TLS.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<Tls>,
    clock: Arc<dyn Clock>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: Arc<Tls>, clock: Arc<dyn Clock>) -> Self {
        Self { tcp, tls, clock, handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = self.tls.acceptors(self.clock.now_ms()).server_only;
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => Some((s, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "HTTP listener: TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "HTTP listener: TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    // Out of file descriptors and the like: back off as axum's own listener does.
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP listener: accept failed");
                        self.clock.sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
