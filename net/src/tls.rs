//! TLS on the client port (Redis's `tls-port`): rustls, with ring as its
//! crypto, TLS 1.2 and 1.3, no client certificates. Each accepted connection
//! gets at most [`HANDSHAKE_TIMEOUT`] to finish its handshake; then it is
//! served exactly as a plain one (`server::handle`).
//!
//! Real tokio only: the simulator's network carries no TLS.
//!
//! Must not touch: commands, storage, the plain listener.

use crate::server::{accept, handle, Shared};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS port could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate file could not be read or holds no certificate.
    Certificate {
        path: String,
        cause: Option<rustls::pki_types::pem::Error>,
    },
    /// The key file could not be read or holds no private key.
    Key {
        path: String,
        cause: rustls::pki_types::pem::Error,
    },
    /// The certificate and key do not make a server configuration (a key
    /// that does not match the certificate, an unsupported key type).
    Config(rustls::Error),
}

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSetupError::Certificate { path, cause: None } => {
                write!(f, "tls_cert_file {path} holds no PEM certificate")
            }
            TlsSetupError::Certificate {
                path,
                cause: Some(e),
            } => write!(f, "cannot read tls_cert_file {path}: {e}"),
            TlsSetupError::Key { path, cause } => {
                write!(
                    f,
                    "cannot read a private key from tls_key_file {path}: {cause}"
                )
            }
            TlsSetupError::Config(e) => {
                write!(
                    f,
                    "tls_cert_file and tls_key_file do not make a TLS server: {e}"
                )
            }
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// rustls on ring. Deprecated in rustls 0.23.48 because ring has no
/// post-quantum key exchange; aws-lc-rs has, but its C build is several times
/// ring's on a 2-core CI. Classical X25519 / P-256 key exchange is what
/// `redis-cli --tls` and Redis's own TLS offer today.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The acceptor for a PEM certificate chain and its PEM private key.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let cert_path = cert_file.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsSetupError::Certificate {
            path: cert_path.clone(),
            cause: Some(e),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Certificate {
            path: cert_path,
            cause: None,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|cause| TlsSetupError::Key {
        path: key_file.display().to_string(),
        cause,
    })?;
    let provider = Arc::new(ring_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve TLS connections until the listener fails for good.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Some((stream, ends)) = accept(&listener, false).await else {
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => handle(tls, ends, shared).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake with {} failed: {e}", ends.peer),
                Err(_) => tracing::debug!("TLS handshake with {} timed out", ends.peer),
            }
        });
    }
}
