//! The RESP server: accepts connections, frames requests, runs commands, writes
//! replies. Every input is bounded: clients, query buffer, request shape (see
//! `resp::RequestLimits`) and output buffer; a breach is answered with an error and
//! the connection is closed, never the server.

use crate::commands::{self, Session};
use crate::reply::Waiting;
use crate::resp::{decode_request, encode_reply, Protocol, Reply};
pub use crate::shared::{ServerConfig, Shared};
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

async fn connection(stream: &mut TcpStream, peer: String, shared: &Shared) -> std::io::Result<()> {
    let mut session = Session {
        id: shared.next_client_id(),
        namespace: 0,
        protocol: Protocol::Resp2,
        name: None,
        lib_name: None,
        lib_ver: None,
        authenticated: shared.config.requirepass.is_none(),
        peer,
        transaction: Default::default(),
    };
    let limits = &shared.config.request_limits;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut slots: Vec<Timed> = Vec::new();
    loop {
        input.reserve(READ_CHUNK_BYTES);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        // Held while this read's commands run and their writes are answered:
        // EXEC waits for it (see `shared::Isolation`).
        let mut turn = Some(shared.isolation.shared().await);
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
                    slots.push(Timed::untimed(Waiting::Ready(e.to_reply())));
                    close = true;
                    break;
                }
            };
            let started = tokio::time::Instant::now();
            let spec = commands::lookup(&args[0]);
            if !commands::is_deferrable_write(spec) {
                resolve(&mut slots, session.protocol, &mut output, shared).await;
            }
            if spec.is_some_and(|s| commands::runs_alone(s.name)) {
                // EXEC, MSETNX, RENAME, ... take the exclusive turn; this
                // connection's own writes are all answered (resolved above).
                turn = None;
            }
            let (waiting, closes) =
                Waiting::of(commands::execute(shared, &mut session, spec, args).await);
            slots.push(Timed {
                waiting,
                kind: spec.map(commands::kind_of),
                started,
            });
            if turn.is_none() {
                turn = Some(shared.isolation.shared().await);
            }
            if closes {
                close = true;
                break;
            }
            if output.len() >= OUTPUT_FLUSH_BYTES {
                // Never wait on the socket holding a turn: a client that does
                // not read would stall every EXEC, and behind it (the lock
                // is fair) every connection of the node. This read's writes
                // are answered first, as the turn promises.
                resolve(&mut slots, session.protocol, &mut output, shared).await;
                drop(turn.take());
                stream.write_all(&output).await?;
                output.clear();
                turn = Some(shared.isolation.shared().await);
            }
        }
        resolve(&mut slots, session.protocol, &mut output, shared).await;
        drop(turn);
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

/// A reply in request order, with the command it answers (its place in the
/// table) and when its request was parsed, for the command statistics.
struct Timed {
    waiting: Waiting,
    kind: Option<usize>,
    started: tokio::time::Instant,
}

impl Timed {
    fn untimed(waiting: Waiting) -> Timed {
        Timed {
            waiting,
            kind: None,
            started: tokio::time::Instant::now(),
        }
    }
}

/// Wait for pending writes in order, count each command, encode every reply.
async fn resolve(
    slots: &mut Vec<Timed>,
    protocol: Protocol,
    output: &mut BytesMut,
    shared: &Shared,
) {
    for slot in slots.drain(..) {
        let reply = slot.waiting.reply().await;
        if let Some(kind) = slot.kind {
            let micros = slot.started.elapsed().as_micros() as u64;
            let failed = matches!(reply, Reply::Error(_));
            shared.command_stats.record(kind, micros, failed);
        }
        if let Reply::Error(message) = &reply {
            shared.command_stats.record_error(message);
        }
        encode_reply(&reply, protocol, output);
    }
}
