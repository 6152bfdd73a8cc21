//! The RESP server: accepts connections, frames requests, runs commands, writes
//! replies. Every input is bounded: clients, query buffer, request shape (see
//! `resp::RequestLimits`) and output buffer; a breach is answered with an error and
//! the connection is closed, never the server.

use crate::commands::{self, Session, Step};
use crate::resp::{decode_request, encode_reply, Protocol, Reply, RequestLimits};
use crate::storage::Storage;
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: String,
    pub port: u16,
    pub data_dir: String,
    pub requirepass: Option<String>,
    pub databases: u8,
    pub clients_max: usize,
    pub request_limits: RequestLimits,
    /// Unparsed input a client may have buffered.
    pub query_buffer_max_bytes: usize,
    /// Replies a client may have waiting; past it the client is disconnected.
    pub client_output_buffer_max_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".into(),
            port: 7379,
            data_dir: "./shoal-data".into(),
            requirepass: None,
            databases: 16,
            clients_max: 10_000,
            request_limits: RequestLimits {
                bulk_len_max_bytes: 64 << 20,
                ..RequestLimits::default()
            },
            query_buffer_max_bytes: 256 << 20,
            client_output_buffer_max_bytes: 256 << 20,
        }
    }
}

/// State shared by all connections.
pub struct Shared {
    pub storage: Storage,
    /// Set when this node is a cluster member: data commands are routed.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub config: ServerConfig,
    pub clients_connected: AtomicUsize,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub commands_total: AtomicU64,
    next_client_id: AtomicU64,
    pub started: tokio::time::Instant,
}

impl Shared {
    pub fn new(storage: Storage, config: ServerConfig) -> Arc<Shared> {
        Self::with_cluster(storage, config, None)
    }

    pub fn with_cluster(
        storage: Storage,
        config: ServerConfig,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            storage,
            cluster,
            config,
            clients_connected: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            commands_total: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            started: tokio::time::Instant::now(),
        })
    }
}

/// Serve connections until the listener fails for good.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off, keep serving the clients we have.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.connections_total.fetch_add(1, Ordering::Relaxed);
        let connected = shared.clients_connected.fetch_add(1, Ordering::AcqRel) + 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            if connected > shared.config.clients_max {
                shared.connections_rejected.fetch_add(1, Ordering::Relaxed);
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
                let _ = stream.flush().await;
            } else {
                let _ = stream.set_nodelay(true);
                if let Err(e) = connection(&mut stream, peer.to_string(), &shared).await {
                    tracing::debug!("connection {peer} ended: {e}");
                }
            }
            shared.clients_connected.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Flush replies to the socket once this many are waiting, so memory stays bounded
/// while a long pipeline is answered.
const OUTPUT_FLUSH_BYTES: usize = 64 << 10;
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Replies in request order: some ready, some waiting for their group commit.
enum Slot {
    Ready(Reply),
    Waiting(commands::ReplyShape, crate::storage::WriteTicket),
    /// A write routed through the cluster (its coordinator answers).
    Routed(commands::ReplyShape, commands::RoutedTicket),
}

async fn connection(stream: &mut TcpStream, peer: String, shared: &Shared) -> std::io::Result<()> {
    let mut session = Session {
        id: shared.next_client_id.fetch_add(1, Ordering::Relaxed),
        namespace: 0,
        protocol: Protocol::Resp2,
        name: None,
        lib_name: None,
        lib_ver: None,
        authenticated: shared.config.requirepass.is_none(),
        peer,
    };
    let limits = &shared.config.request_limits;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut slots: Vec<Slot> = Vec::new();
    loop {
        input.reserve(READ_CHUNK_BYTES);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        if input.len() > shared.config.query_buffer_max_bytes {
            let reply =
                Reply::error("ERR Protocol error: query buffer limit exceeded; closing connection");
            encode_reply(&reply, session.protocol, &mut output);
            stream.write_all(&output).await?;
            stream.flush().await?;
            return Ok(());
        }
        let mut close = false;
        loop {
            let args = match decode_request(&mut input, limits) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    slots.push(Slot::Ready(e.to_reply()));
                    close = true;
                    break;
                }
            };
            let spec = commands::lookup(&args[0]);
            if !commands::is_deferrable_write(spec) {
                resolve(&mut slots, session.protocol, &mut output).await;
            }
            match commands::execute(shared, &mut session, spec, args).await {
                Step::Reply(reply) => slots.push(Slot::Ready(reply)),
                Step::Pending(ticket, shape) => slots.push(Slot::Waiting(shape, ticket)),
                Step::Routed(ticket, shape) => slots.push(Slot::Routed(shape, ticket)),
                Step::Close(reply) => {
                    slots.push(Slot::Ready(reply));
                    close = true;
                    break;
                }
            }
            if output.len() >= OUTPUT_FLUSH_BYTES {
                stream.write_all(&output).await?;
                output.clear();
            }
        }
        resolve(&mut slots, session.protocol, &mut output).await;
        if output.len() > shared.config.client_output_buffer_max_bytes {
            tracing::warn!(
                "client {} exceeded the output buffer limit ({} bytes); disconnecting",
                session.id,
                output.len()
            );
            return Ok(());
        }
        stream.write_all(&output).await?;
        stream.flush().await?;
        output.clear();
        if close {
            return Ok(());
        }
    }
}

/// Wait for pending writes in order and encode every reply.
async fn resolve(slots: &mut Vec<Slot>, protocol: Protocol, output: &mut BytesMut) {
    for slot in slots.drain(..) {
        let reply = match slot {
            Slot::Ready(reply) => reply,
            Slot::Waiting(shape, ticket) => commands::finish_write(ticket.wait().await, shape),
            Slot::Routed(shape, ticket) => commands::finish_routed(ticket.wait().await, shape),
        };
        encode_reply(&reply, protocol, output);
    }
}
