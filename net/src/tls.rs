//! TLS with rustls, ring as its crypto, TLS 1.2 and 1.3, in two places:
//!
//! - The client port (Redis's `tls-port`): no client certificates. Each
//!   accepted connection gets at most [`HANDSHAKE_TIMEOUT`] to finish its
//!   handshake; then it is served exactly as a plain one (`server::handle`).
//! - Peer links (Redis's `tls-cluster`): [`PeerTls`], the node's certificate
//!   (`tls_cert_file`, `tls_key_file`) on both ends of every link, and mutual
//!   authentication against `tls_ca_cert_file`: the peer listener requires a
//!   client certificate chaining to the CA, a dialer checks the listener's
//!   certificate against the CA and the host it dialled (IP or DNS name).
//!   `peer::dial` and `peer::accept` run it before their own handshake, within
//!   the cluster's connect and handshake timeouts.
//!
//! Real tokio only: the simulator's network carries no TLS.
//!
//! Must not touch: commands, storage, the plain listener.

use crate::peer::{BoxedPeerStream, PeerError};
use crate::server::{accept, handle, ServerConfig, Shared};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS port or TLS on peer links could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate file could not be read or holds no certificate.
    Certificate {
        path: String,
        cause: Option<pem::Error>,
    },
    /// The key file could not be read or holds no private key.
    Key { path: String, cause: pem::Error },
    /// The certificate and key do not make a server configuration (a key
    /// that does not match the certificate, an unsupported key type).
    Config(rustls::Error),
    /// `tls_cluster` is on but this file setting is not set.
    Unset { setting: &'static str },
    /// The CA file could not be read or holds no certificate.
    CaCertificate {
        path: String,
        cause: Option<pem::Error>,
    },
    /// A certificate in the CA file cannot be a trust anchor.
    CaRejected { path: String, cause: rustls::Error },
    /// No verifier of peers' client certificates could be built from the CA.
    ClientVerifier(VerifierBuilderError),
    /// The certificate and key do not make the client side of peer links.
    PeerClient(rustls::Error),
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
            TlsSetupError::Unset { setting } => write!(
                f,
                "tls_cluster needs tls_cert_file, tls_key_file and tls_ca_cert_file: {setting} is not set"
            ),
            TlsSetupError::CaCertificate { path, cause: None } => {
                write!(f, "tls_ca_cert_file {path} holds no PEM certificate")
            }
            TlsSetupError::CaCertificate {
                path,
                cause: Some(e),
            } => write!(f, "cannot read tls_ca_cert_file {path}: {e}"),
            TlsSetupError::CaRejected { path, cause } => {
                write!(f, "tls_ca_cert_file {path} holds no usable CA: {cause}")
            }
            TlsSetupError::ClientVerifier(e) => {
                write!(f, "cannot verify peers against tls_ca_cert_file: {e}")
            }
            TlsSetupError::PeerClient(e) => write!(
                f,
                "tls_cert_file and tls_key_file do not make a TLS client for peer links: {e}"
            ),
        }
    }
}

impl std::error::Error for TlsSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsSetupError::Certificate { cause: Some(e), .. }
            | TlsSetupError::CaCertificate { cause: Some(e), .. }
            | TlsSetupError::Key { cause: e, .. } => Some(e),
            TlsSetupError::Config(e)
            | TlsSetupError::PeerClient(e)
            | TlsSetupError::CaRejected { cause: e, .. } => Some(e),
            TlsSetupError::ClientVerifier(e) => Some(e),
            _ => None,
        }
    }
}

/// rustls on ring. Deprecated in rustls 0.23.48 because ring has no
/// post-quantum key exchange; aws-lc-rs has, but its C build is several times
/// ring's on a 2-core CI. Classical X25519 / P-256 key exchange is what
/// `redis-cli --tls` and Redis's own TLS offer today.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every certificate of a PEM file; `Err(None)` when it holds none.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Option<pem::Error>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(Some)?;
    if certs.is_empty() {
        return Err(None);
    }
    Ok(certs)
}

/// The node's certificate chain (`tls_cert_file`).
fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    pem_certificates(path).map_err(|cause| TlsSetupError::Certificate {
        path: path.display().to_string(),
        cause,
    })
}

/// The node's private key (`tls_key_file`).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|cause| TlsSetupError::Key {
        path: path.display().to_string(),
        cause,
    })
}

/// The CAs peers' certificates must chain to (`tls_ca_cert_file`).
fn ca_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsSetupError> {
    let name = || path.display().to_string();
    let certs = pem_certificates(path).map_err(|cause| TlsSetupError::CaCertificate {
        path: name(),
        cause,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|cause| TlsSetupError::CaRejected {
            path: name(),
            cause,
        })?;
    }
    Ok(Arc::new(roots))
}

/// The acceptor for a PEM certificate chain and its PEM private key.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let certs = certificate_chain(cert_file)?;
    let key = private_key(key_file)?;
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

/// TLS on peer links (`tls_cluster`): the acceptor of the peer port (client
/// certificates required, chaining to the CA) and the connector of dials
/// (the listener's certificate checked against the CA and the dialled host,
/// this node's certificate offered). One per node, shared by every link.
pub struct PeerTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// From the node's PEM certificate chain and key and the PEM CA file.
    pub fn new(cert_file: &Path, key_file: &Path, ca_file: &Path) -> Result<Self, TlsSetupError> {
        let certs = certificate_chain(cert_file)?;
        let key = private_key(key_file)?;
        let roots = ca_roots(ca_file)?;
        let provider = Arc::new(ring_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(TlsSetupError::ClientVerifier)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(TlsSetupError::Config)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::PeerClient)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(TlsSetupError::PeerClient)?;
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// TLS over a stream dialled to `addr` (`host:port`): the listener's
    /// certificate must chain to the CA and name `host`.
    pub(crate) async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<BoxedPeerStream, PeerError> {
        let name = server_name(addr)?;
        let tls = self
            .connector
            .connect(name, stream)
            .await
            .map_err(PeerError::Tls)?;
        Ok(Box::new(tls))
    }

    /// TLS over an accepted stream: the dialer's certificate must chain to the CA.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Result<BoxedPeerStream, PeerError> {
        let tls = self.acceptor.accept(stream).await.map_err(PeerError::Tls)?;
        Ok(Box::new(tls))
    }
}

/// The name a dialled peer's certificate must carry: the host of `addr`
/// (`host:port`, an IPv6 host in brackets), an IP address or a DNS name.
fn server_name(addr: &str) -> Result<ServerName<'static>, PeerError> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        PeerError::Tls(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("peer host {host} is neither an IP address nor a DNS name: {e}"),
        ))
    })
}

/// TLS for peer links when `tls_cluster` is on (`None` when it is off), from
/// `tls_cert_file`, `tls_key_file` and `tls_ca_cert_file`, which must all be set.
pub fn peer_tls(server: &ServerConfig) -> Result<Option<Arc<PeerTls>>, TlsSetupError> {
    if !server.tls_cluster {
        return Ok(None);
    }
    fn file<'a>(
        value: &'a Option<String>,
        setting: &'static str,
    ) -> Result<&'a Path, TlsSetupError> {
        value
            .as_deref()
            .map(Path::new)
            .ok_or(TlsSetupError::Unset { setting })
    }
    let tls = PeerTls::new(
        file(&server.tls_cert_file, "tls_cert_file")?,
        file(&server.tls_key_file, "tls_key_file")?,
        file(&server.tls_ca_cert_file, "tls_ca_cert_file")?,
    )?;
    Ok(Some(Arc::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    /// `NAME-cert.pem` and `NAME-key.pem`, peers checked against `ca`.
    fn tls(name: &str, ca: &str) -> Option<PeerTls> {
        let cert = fixture(&format!("{name}-cert.pem"));
        let key = fixture(&format!("{name}-key.pem"));
        Some(PeerTls::new(&cert, &key, &fixture(ca)).expect("fixtures make a PeerTls"))
    }

    /// Node 2 dials node 1 listening on `ip`: what each end's handshake gave.
    async fn link(
        ip: &str,
        dialer: Option<PeerTls>,
        listener: Option<PeerTls>,
    ) -> (Result<(), PeerError>, Result<(), PeerError>) {
        let socket = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let (stream, _) = socket.accept().await.unwrap();
            let mut random = || 7;
            let is_member = |node| node == 2;
            peer::accept(stream, 1, b"s", listener.as_ref(), is_member, &mut random)
                .await
                .map(|_| ())
        });
        let mut random = || 9;
        let dialled = peer::dial(&addr, 2, 1, b"s", dialer.as_ref(), &mut random)
            .await
            .map(|_| ());
        let limit = Duration::from_secs(30);
        let accepted = tokio::time::timeout(limit, accepting).await;
        (dialled, accepted.expect("the listener gave up").unwrap())
    }

    fn tls_failure(result: &Result<(), PeerError>, words: &str) {
        match result {
            Err(e @ PeerError::Tls(_)) => assert!(e.to_string().contains(words), "{e}"),
            Err(e) => panic!("not a TLS failure: {e}"),
            Ok(()) => panic!("the handshake succeeded"),
        }
    }

    #[tokio::test]
    async fn peers_of_one_ca_link_and_others_are_refused() {
        let ok = link(
            "127.0.0.1",
            tls("peer", "peer-ca.pem"),
            tls("peer", "peer-ca.pem"),
        )
        .await;
        assert!(
            ok.0.is_ok() && ok.1.is_ok(),
            "{:?} {:?}",
            ok.0.err(),
            ok.1.err()
        );
        // A dialer whose certificate another CA signed: the listener refuses it.
        let foreign = tls("other", "peer-ca.pem");
        let (dialled, accepted) = link("127.0.0.1", foreign, tls("peer", "peer-ca.pem")).await;
        assert!(dialled.is_err());
        tls_failure(&accepted, "invalid peer certificate");
        // A listener whose certificate another CA signed: the dialer refuses it.
        let foreign = tls("other", "peer-ca.pem");
        let (dialled, accepted) = link("127.0.0.1", tls("peer", "peer-ca.pem"), foreign).await;
        tls_failure(&dialled, "invalid peer certificate");
        assert!(accepted.is_err());
        // A certificate that does not name the host dialled (127.0.0.2).
        let (dialled, _) = link(
            "127.0.0.2",
            tls("peer", "peer-ca.pem"),
            tls("peer", "peer-ca.pem"),
        )
        .await;
        tls_failure(&dialled, "invalid peer certificate");
        // A plain dialer on a TLS peer port, and the other way round.
        let (dialled, accepted) = link("127.0.0.1", None, tls("peer", "peer-ca.pem")).await;
        assert!(dialled.is_err());
        tls_failure(&accepted, "");
        let (dialled, accepted) = link("127.0.0.1", tls("peer", "peer-ca.pem"), None).await;
        tls_failure(&dialled, "");
        assert!(accepted.is_err());
    }

    #[test]
    fn tls_cluster_needs_its_three_files() {
        let mut server = ServerConfig::default();
        assert!(peer_tls(&server).unwrap().is_none());
        server.tls_cluster = true;
        server.tls_cert_file = Some(fixture("peer-cert.pem").display().to_string());
        server.tls_key_file = Some(fixture("peer-key.pem").display().to_string());
        let unset = peer_tls(&server).unwrap_err();
        assert!(matches!(
            unset,
            TlsSetupError::Unset {
                setting: "tls_ca_cert_file"
            }
        ));
        // A key file holds no certificate to trust.
        server.tls_ca_cert_file = Some(fixture("peer-key.pem").display().to_string());
        let no_ca = peer_tls(&server).unwrap_err();
        assert!(matches!(
            no_ca,
            TlsSetupError::CaCertificate { cause: None, .. }
        ));
        assert!(no_ca.to_string().contains("tls_ca_cert_file"), "{no_ca}");
        server.tls_ca_cert_file = Some(fixture("peer-ca.pem").display().to_string());
        assert!(peer_tls(&server).unwrap().is_some());
    }
}
