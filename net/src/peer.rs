//! The peer transport: authenticated, checksummed frames over TCP, or over TLS
//! on TCP when the node runs with `tls_cluster` (Redis's `tls-cluster`).
//!
//! Frame: `[len u32 LE][crc32c u32 LE][body: len bytes][mac: 16 bytes]`. The CRC32C
//! covers the four length bytes and the body and catches damage; the MAC (HMAC-SHA256
//! under a per-connection, per-direction key, over the frame's sequence number and
//! body, truncated to 16 bytes) proves the frame comes from a holder of the cluster
//! secret and was not replayed or reordered. Bodies are postcard. A body longer than
//! `PEER_FRAME_BODY_MAX_BYTES` is refused before anything is allocated for it.
//!
//! Handshake (frames without a MAC): the dialer sends `Hello` (its id and a nonce);
//! the listener answers `Challenge` (its id, its nonce, and an HMAC of both nonces
//! and ids under the secret); the dialer checks it and answers `Proof` (its own HMAC).
//! Either side that fails a check closes the connection: a process without the
//! secret can neither join nor inject a message.
//!
//! TLS (`tls_cluster`): before the handshake, both ends run TLS with mutual
//! authentication ([`PeerTls`], built in `tls`): the listener requires a client
//! certificate chaining to the cluster's CA, the dialer checks the listener's
//! certificate against the CA and the host of the address it dialled. The
//! handshake above then runs inside TLS unchanged, so a holder of a valid
//! certificate still needs the secret. A plain peer dialling a TLS peer port
//! (or the other way round) fails its first handshake. The simulator's network
//! carries no TLS: under `--cfg madsim` [`PeerTls`] has no value.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shoal_engine::cluster::wire::Envelope;
use shoal_engine::NodeId;
use std::fmt;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};
use tokio::net::TcpStream;

/// What a peer connection runs over: a TCP stream, or TLS over one.
pub trait PeerStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerStream for T {}

/// A connection's stream, plain or TLS.
pub type BoxedPeerStream = Box<dyn PeerStream>;

#[cfg(not(madsim))]
pub use crate::tls::PeerTls;

/// The simulator's network carries no TLS: no value of this type exists, so a
/// `ClusterConfig::peer_tls` is always `None` there.
#[cfg(madsim)]
#[derive(Debug)]
pub enum PeerTls {}

#[cfg(madsim)]
impl PeerTls {
    pub(crate) async fn connect(
        &self,
        _addr: &str,
        _stream: TcpStream,
    ) -> Result<BoxedPeerStream, PeerError> {
        match *self {}
    }

    pub(crate) async fn accept(&self, _stream: TcpStream) -> Result<BoxedPeerStream, PeerError> {
        match *self {}
    }
}

/// Largest frame body accepted: a 64 MiB value with its key and sibling set fits.
pub const PEER_FRAME_BODY_MAX_BYTES: usize = 80 << 20;
/// Largest handshake frame.
const HANDSHAKE_BODY_MAX_BYTES: usize = 256;
const MAC_BYTES: usize = 16;
/// Bytes a connection's reader asks the socket for at once.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Encoded frames a writer gathers before it must write them out.
pub const WRITE_BATCH_MAX_BYTES: usize = 1 << 20;
/// Rounds of draining the queue per write (with a yield between them).
const YIELDS: usize = 3;
const HANDSHAKE_MAGIC: u32 = 0x5348_4c50; // "SHLP"
/// 2: reads of copies (`Read`, `ReadPrefix`, `ReadHints`) carry the asker's ring.
/// 3: set hashes (anti-entropy digests, `ForgetMarkers`) are taken a word at a
/// time: a peer of version 2 would see every key differ, and never forget.
/// 4: counted siblings (a cluster's INCR) in copies, `count_by` in proxied
/// writes and `minted_value` in their outcomes.
const PROTOCOL_VERSION: u8 = 4;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug)]
pub enum PeerError {
    Io(std::io::Error),
    FrameTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    Checksum,
    Mac,
    Decode(String),
    Auth(String),
    /// The TLS handshake failed (`tls_cluster`): a certificate that does not
    /// chain to the CA or does not name the dialled host, a plain peer, ...
    Tls(std::io::Error),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Io(e) => write!(f, "peer connection failed: {e}"),
            PeerError::FrameTooLarge {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "peer frame of {len_bytes} bytes refused (limit {max_bytes})"
            ),
            PeerError::Checksum => write!(f, "peer frame failed its CRC32C"),
            PeerError::Mac => write!(f, "peer frame failed authentication (bad MAC)"),
            PeerError::Decode(e) => write!(f, "peer frame could not be decoded: {e}"),
            PeerError::Auth(e) => write!(f, "peer handshake refused: {e}"),
            PeerError::Tls(e) => write!(f, "peer TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Io(e) | PeerError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> Self {
        PeerError::Io(e)
    }
}

#[derive(Serialize, Deserialize)]
enum Handshake {
    Hello {
        magic: u32,
        version: u8,
        node: NodeId,
        nonce: [u8; 16],
    },
    Challenge {
        node: NodeId,
        nonce: [u8; 16],
        proof: [u8; 32],
    },
    Proof {
        proof: [u8; 32],
    },
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn verify(secret: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(expected).is_ok()
}

/// A fresh nonce: the runtime's RNG (seeded, in simulation), mixed in production
/// with the process's random hash keys so nonces are not predictable from time.
fn nonce(random: &mut (dyn FnMut() -> u64 + Send)) -> [u8; 16] {
    let mut out = [0u8; 16];
    let a = random();
    let b = random();
    #[cfg(not(madsim))]
    let b = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(a);
        b ^ h.finish()
    };
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// The MAC state keyed with a session key (each frame's tag starts from a copy,
/// which saves hashing the key for every frame).
fn keyed(key: &[u8; 32]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

/// A frame's tag: the MAC of its sequence number and body.
fn frame_tag(keyed: &HmacSha256, seq: u64, body: &[u8]) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(&seq.to_le_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Encode one frame (the MAC only when a keyed state is given).
fn encode_frame(body: &[u8], mac: Option<(&HmacSha256, u64)>, out: &mut Vec<u8>) {
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    if let Some((keyed, seq)) = mac {
        out.extend_from_slice(&frame_tag(keyed, seq, body)[..MAC_BYTES]);
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
    mac: Option<(&HmacSha256, u64)>,
) -> Result<Vec<u8>, PeerError> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > max_bytes {
        return Err(PeerError::FrameTooLarge {
            len_bytes: len,
            max_bytes,
        });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    let mut tag = [0u8; MAC_BYTES];
    if mac.is_some() {
        reader.read_exact(&mut tag).await?;
    }
    let actual = crc32c::crc32c_append(crc32c::crc32c(&header[..4]), &body);
    if actual != crc {
        return Err(PeerError::Checksum);
    }
    if let Some((keyed, seq)) = mac {
        let expected = frame_tag(keyed, seq, &body);
        // Constant-time comparison of the truncated tag.
        let diff = expected[..MAC_BYTES]
            .iter()
            .zip(&tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(PeerError::Mac);
        }
    }
    Ok(body)
}

async fn send_handshake<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Handshake,
) -> Result<(), PeerError> {
    let body = postcard::to_allocvec(message).map_err(|e| PeerError::Decode(e.to_string()))?;
    let mut frame = Vec::new();
    encode_frame(&body, None, &mut frame);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

async fn recv_handshake<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Handshake, PeerError> {
    let body = read_frame(reader, HANDSHAKE_BODY_MAX_BYTES, None).await?;
    postcard::from_bytes(&body).map_err(|e| PeerError::Decode(e.to_string()))
}

/// The receiving half of an authenticated connection.
pub struct PeerReader {
    inner: BufReader<ReadHalf<BoxedPeerStream>>,
    /// Keyed with this direction's session key.
    mac: HmacSha256,
    seq: u64,
    body_max_bytes: usize,
}

/// The sending half of an authenticated connection.
pub struct PeerWriter {
    inner: WriteHalf<BoxedPeerStream>,
    /// Keyed with this direction's session key.
    mac: HmacSha256,
    seq: u64,
    buf: Vec<u8>,
    body_max_bytes: usize,
}

impl PeerReader {
    pub async fn recv(&mut self) -> Result<Envelope, PeerError> {
        let body = read_frame(
            &mut self.inner,
            self.body_max_bytes,
            Some((&self.mac, self.seq)),
        )
        .await?;
        self.seq += 1;
        postcard::from_bytes(&body).map_err(|e| PeerError::Decode(e.to_string()))
    }

    /// Refuse frames whose body is longer than this (default
    /// [`PEER_FRAME_BODY_MAX_BYTES`]; a simulation sets it low to exercise limits).
    pub fn set_body_max_bytes(&mut self, body_max_bytes: usize) {
        self.body_max_bytes = body_max_bytes;
    }
}

impl PeerWriter {
    /// Send one envelope now.
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), PeerError> {
        self.queue(envelope)?;
        self.flush().await
    }

    /// Encode one envelope behind those already queued; nothing is written until
    /// [`PeerWriter::flush`]. Callers flush before `queued_bytes` passes
    /// [`WRITE_BATCH_MAX_BYTES`].
    pub fn queue(&mut self, envelope: &Envelope) -> Result<(), PeerError> {
        let body = postcard::to_allocvec(envelope).map_err(|e| PeerError::Decode(e.to_string()))?;
        if body.len() > self.body_max_bytes {
            return Err(PeerError::FrameTooLarge {
                len_bytes: body.len(),
                max_bytes: self.body_max_bytes,
            });
        }
        encode_frame(&body, Some((&self.mac, self.seq)), &mut self.buf);
        self.seq += 1;
        Ok(())
    }

    /// See [`PeerReader::set_body_max_bytes`].
    pub fn set_body_max_bytes(&mut self, body_max_bytes: usize) {
        self.body_max_bytes = body_max_bytes;
    }

    pub fn queued_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Write every queued frame in one go.
    pub async fn flush(&mut self) -> Result<(), PeerError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.inner.write_all(&self.buf).await;
        self.buf.clear();
        if self.buf.capacity() > WRITE_BATCH_MAX_BYTES * 2 {
            self.buf = Vec::new();
        }
        written?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Send envelopes from `queue` until it closes or the connection fails: each
    /// wake-up writes everything waiting (up to [`WRITE_BATCH_MAX_BYTES`]) in one
    /// write, so a busy connection makes one syscall for many frames.
    pub async fn pump(mut self, queue: &mut tokio::sync::mpsc::Receiver<Envelope>) {
        while let Some(first) = queue.recv().await {
            if self.queue(&first).is_err() {
                return;
            }
            // Let the tasks that are ready run first: they often have frames for
            // this connection too, and one write for all of them is far cheaper
            // than one each.
            for round in 0..YIELDS {
                while self.queued_bytes() < WRITE_BATCH_MAX_BYTES {
                    let Ok(next) = queue.try_recv() else { break };
                    if self.queue(&next).is_err() {
                        return;
                    }
                }
                if round + 1 < YIELDS && self.queued_bytes() < WRITE_BATCH_MAX_BYTES {
                    tokio::task::yield_now().await;
                }
            }
            if self.flush().await.is_err() {
                return;
            }
        }
    }
}

/// Per-direction session keys, bound to both nonces and both ids.
fn session_key(secret: &[u8], from: NodeId, to: NodeId, dial: &[u8], listen: &[u8]) -> [u8; 32] {
    hmac(
        secret,
        &[
            b"shoal-session",
            &from.to_le_bytes(),
            &to.to_le_bytes(),
            dial,
            listen,
        ],
    )
}

fn split(
    stream: BoxedPeerStream,
    secret: &[u8],
    me: NodeId,
    remote: NodeId,
    dial_nonce: &[u8],
    listen_nonce: &[u8],
) -> (PeerReader, PeerWriter) {
    let (read, write) = tokio::io::split(stream);
    let reader = PeerReader {
        inner: BufReader::with_capacity(READ_BUFFER_BYTES, read),
        mac: keyed(&session_key(secret, remote, me, dial_nonce, listen_nonce)),
        seq: 0,
        body_max_bytes: PEER_FRAME_BODY_MAX_BYTES,
    };
    let writer = PeerWriter {
        inner: write,
        mac: keyed(&session_key(secret, me, remote, dial_nonce, listen_nonce)),
        seq: 0,
        buf: Vec::new(),
        body_max_bytes: PEER_FRAME_BODY_MAX_BYTES,
    };
    (reader, writer)
}

/// Connect to a peer and authenticate both ways (first with TLS when `tls` is
/// given). `expected` is the node id the address belongs to; a peer claiming
/// another id is refused.
pub async fn dial(
    addr: &str,
    me: NodeId,
    expected: NodeId,
    secret: &[u8],
    tls: Option<&PeerTls>,
    random: &mut (dyn FnMut() -> u64 + Send),
) -> Result<(PeerReader, PeerWriter), PeerError> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let mut stream: BoxedPeerStream = match tls {
        Some(tls) => tls.connect(addr, stream).await?,
        None => Box::new(stream),
    };
    let dial_nonce = nonce(random);
    send_handshake(
        &mut stream,
        &Handshake::Hello {
            magic: HANDSHAKE_MAGIC,
            version: PROTOCOL_VERSION,
            node: me,
            nonce: dial_nonce,
        },
    )
    .await?;
    let Handshake::Challenge {
        node,
        nonce: listen_nonce,
        proof,
    } = recv_handshake(&mut stream).await?
    else {
        return Err(PeerError::Auth("expected a challenge".into()));
    };
    if node != expected {
        return Err(PeerError::Auth(format!(
            "{addr} answered as node {node}, expected node {expected}"
        )));
    }
    let ids = [me.to_le_bytes(), node.to_le_bytes()].concat();
    if !verify(
        secret,
        &[b"listener", &dial_nonce, &listen_nonce, &ids],
        &proof,
    ) {
        return Err(PeerError::Auth(format!(
            "{addr} does not hold the cluster secret"
        )));
    }
    let mine = hmac(secret, &[b"dialer", &listen_nonce, &dial_nonce, &ids]);
    send_handshake(&mut stream, &Handshake::Proof { proof: mine }).await?;
    Ok(split(stream, secret, me, node, &dial_nonce, &listen_nonce))
}

/// Authenticate an accepted connection (first with TLS when `tls` is given).
/// `is_member` says whether a claimed id is in the cluster. Returns the peer's
/// id with the halves.
pub async fn accept(
    stream: TcpStream,
    me: NodeId,
    secret: &[u8],
    tls: Option<&PeerTls>,
    is_member: impl Fn(NodeId) -> bool,
    random: &mut (dyn FnMut() -> u64 + Send),
) -> Result<(NodeId, PeerReader, PeerWriter), PeerError> {
    let _ = stream.set_nodelay(true);
    let mut stream: BoxedPeerStream = match tls {
        Some(tls) => tls.accept(stream).await?,
        None => Box::new(stream),
    };
    let Handshake::Hello {
        magic,
        version,
        node,
        nonce: dial_nonce,
    } = recv_handshake(&mut stream).await?
    else {
        return Err(PeerError::Auth("expected a hello".into()));
    };
    if magic != HANDSHAKE_MAGIC || version != PROTOCOL_VERSION {
        return Err(PeerError::Auth(format!(
            "not a Shoal peer (magic {magic:#x}, version {version})"
        )));
    }
    if !is_member(node) || node == me {
        return Err(PeerError::Auth(format!(
            "node {node} is not a member of this cluster"
        )));
    }
    let listen_nonce = nonce(random);
    let ids = [node.to_le_bytes(), me.to_le_bytes()].concat();
    let proof = hmac(secret, &[b"listener", &dial_nonce, &listen_nonce, &ids]);
    send_handshake(
        &mut stream,
        &Handshake::Challenge {
            node: me,
            nonce: listen_nonce,
            proof,
        },
    )
    .await?;
    let Handshake::Proof { proof } = recv_handshake(&mut stream).await? else {
        return Err(PeerError::Auth("expected a proof".into()));
    };
    if !verify(
        secret,
        &[b"dialer", &listen_nonce, &dial_nonce, &ids],
        &proof,
    ) {
        return Err(PeerError::Auth(format!(
            "node {node} does not hold the cluster secret"
        )));
    }
    let (reader, writer) = split(stream, secret, me, node, &dial_nonce, &listen_nonce);
    Ok((node, reader, writer))
}
