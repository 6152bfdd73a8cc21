//! The RESP server: accepts connections, frames requests, runs commands, writes
//! replies. Every input is bounded: clients, query buffer, request shape (see
//! `resp::RequestLimits`) and output buffer; a breach is answered with an error and
//! the connection is closed, never the server.

use crate::clients::{ClientView, Registration};
use crate::commands::{self, Session};
use crate::reply::{Step, Waiting};
use crate::resp::{decode_request, encode_reply, Reply};
use crate::shared::SharedTurn;
pub use crate::shared::{ServerConfig, Shared};
use crate::slowlog::SlowLog;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;

/// Serve connections until the listener fails for good.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    serve_port(listener, shared, false).await
}

/// Serve a listener's connections; `redis_cluster`: it is a member's Redis
/// Cluster port (see `commands::Session::redis_cluster`).
pub async fn serve_port(listener: TcpListener, shared: Arc<Shared>, redis_cluster: bool) {
    loop {
        let Some((stream, ends)) = accept(&listener, redis_cluster).await else {
            continue;
        };
        tokio::spawn(handle(stream, ends, shared.clone()));
    }
}

/// Who is at either end of a connection, and which port it came in on.
#[derive(Clone, Debug)]
pub struct Ends {
    pub peer: String,
    pub local: String,
    /// A member's Redis Cluster port (see `commands::Session::redis_cluster`).
    pub redis_cluster: bool,
}

/// The next connection, with Nagle off; `None` after a failed accept (EMFILE
/// and friends: it backs off, and the clients already here are served).
pub async fn accept(listener: &TcpListener, redis_cluster: bool) -> Option<(TcpStream, Ends)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            let local = stream
                .local_addr()
                .map_or_else(|_| String::new(), |a| a.to_string());
            let ends = Ends {
                peer: peer.to_string(),
                local,
                redis_cluster,
            };
            Some((stream, ends))
        }
        Err(e) => {
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            None
        }
    }
}

/// One accepted connection (plain or TLS): counted, refused past maxclients,
/// else served until it ends.
pub async fn handle<S>(mut stream: S, ends: Ends, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.connections_total.fetch_add(1, Ordering::Relaxed);
    let connected = shared.clients_connected.fetch_add(1, Ordering::AcqRel) + 1;
    if connected > shared.config.clients_max {
        shared.connections_rejected.fetch_add(1, Ordering::Relaxed);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = stream.flush().await;
    } else {
        let peer = ends.peer.clone();
        if let Err(e) = connection(&mut stream, ends, &shared).await {
            tracing::debug!("connection {peer} ended: {e}");
        }
    }
    shared.clients_connected.fetch_sub(1, Ordering::AcqRel);
}

/// Flush replies to the socket once this many are waiting, so memory stays bounded
/// while a long pipeline is answered.
const OUTPUT_FLUSH_BYTES: usize = 64 << 10;
const READ_CHUNK_BYTES: usize = 16 << 10;

/// One connection's state between socket reads.
struct Conn<'a> {
    shared: &'a Shared,
    session: Session,
    input: BytesMut,
    output: BytesMut,
    slots: Vec<Timed>,
}

async fn connection<S>(stream: &mut S, ends: Ends, shared: &Shared) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ends {
        peer,
        local: laddr,
        redis_cluster,
    } = ends;
    let session = Session::new(shared.next_client_id(), peer, redis_cluster, shared);
    let registration = shared.clients.register(first_view(&session, laddr));
    let mut conn = Conn {
        shared,
        session,
        input: BytesMut::with_capacity(READ_CHUNK_BYTES),
        output: BytesMut::with_capacity(READ_CHUNK_BYTES),
        slots: Vec::new(),
    };
    loop {
        conn.input.reserve(READ_CHUNK_BYTES);
        tokio::select! {
            // A fixed polling order: unbiased select! draws from tokio's
            // thread RNG, which breaks the simulator's determinism.
            // A kill first, so a client that never stops sending still goes.
            biased;
            _ = registration.killed() => return Ok(()),
            read = stream.read_buf(&mut conn.input) => if read? == 0 {
                return Ok(());
            },
        }
        let (close, last_command) = conn.run_batch(stream).await?;
        registration.refresh(|view| conn.describe(view, last_command));
        if conn.output.len() > shared.config.client_output_buffer_max_bytes {
            tracing::warn!(
                "client {} exceeded the output buffer limit ({} bytes); disconnecting",
                conn.session.id,
                conn.output.len()
            );
            return Ok(());
        }
        stream.write_all(&conn.output).await?;
        stream.flush().await?;
        conn.output.clear();
        if close {
            return Ok(());
        }
        if conn.session.monitor {
            return monitor_feed(stream, shared, &registration).await;
        }
    }
}

/// A blocking command's step, or `None` once its client closed the
/// connection (or sent more than `input_max_bytes` while it waited): a
/// blocked pop must not outlive its client. What the client sends meanwhile
/// stays in `input`, for after.
async fn until_closed<F, S>(
    execution: F,
    stream: &mut S,
    input: &mut BytesMut,
    input_max_bytes: usize,
) -> Option<Step>
where
    F: std::future::Future<Output = Step>,
    S: AsyncRead + Unpin,
{
    tokio::pin!(execution);
    loop {
        input.reserve(READ_CHUNK_BYTES);
        tokio::select! {
            // Fixed order, as in `connection`: the command first.
            biased;
            step = &mut execution => return Some(step),
            read = stream.read_buf(input) => match read {
                Ok(n) if n > 0 && input.len() <= input_max_bytes => {}
                _ => return None,
            },
        }
    }
}

fn first_view(session: &Session, laddr: String) -> ClientView {
    ClientView::new(
        session.id,
        session.peer.clone(),
        laddr,
        tokio::time::Instant::now(),
    )
}

impl Conn<'_> {
    /// Run the commands of one socket read (or its query-buffer refusal)
    /// under a shared turn; returns whether to close after replying, and the
    /// last command's name.
    async fn run_batch<S>(&mut self, stream: &mut S) -> std::io::Result<(bool, &'static str)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let shared = self.shared;
        // Held while this read's commands run and their writes are answered:
        // EXEC waits for it (see `shared::Isolation`).
        let mut turn = Some(shared.isolation.shared().await);
        if self.input.len() > shared.config.query_buffer_max_bytes {
            let reply =
                Reply::error("ERR Protocol error: query buffer limit exceeded; closing connection");
            encode_reply(&reply, self.session.protocol, &mut self.output);
            return Ok((true, "NULL"));
        }
        let mut last_command = "NULL";
        loop {
            let args = match decode_request(&mut self.input, &shared.config.request_limits) {
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    self.slots
                        .push(Timed::untimed(Waiting::Ready(e.to_reply())));
                    self.resolve().await;
                    return Ok((true, last_command));
                }
            };
            let spec = commands::lookup(&args[0]);
            last_command = spec.map_or("NULL", |s| s.name);
            if self.run_one(spec, args, &mut turn, stream).await {
                self.resolve().await;
                return Ok((true, last_command));
            }
            if self.output.len() >= OUTPUT_FLUSH_BYTES {
                // Never wait on the socket holding a turn: a client that does
                // not read would stall every EXEC, and behind it (the lock
                // is fair) every connection of the node. This read's writes
                // are answered first, as the turn promises.
                self.resolve().await;
                drop(turn.take());
                stream.write_all(&self.output).await?;
                self.output.clear();
                turn = Some(shared.isolation.shared().await);
            }
        }
        self.resolve().await;
        Ok((false, last_command))
    }

    /// Run one command; returns whether the connection closes after it.
    async fn run_one<S>(
        &mut self,
        spec: Option<&'static commands::CommandSpec>,
        args: Vec<Bytes>,
        turn: &mut Option<SharedTurn>,
        stream: &mut S,
    ) -> bool
    where
        S: AsyncRead + Unpin,
    {
        let shared = self.shared;
        let started = tokio::time::Instant::now();
        shared
            .clients
            .wait_out_pause(spec.is_some_and(commands::may_write))
            .await;
        if !commands::is_deferrable_write(spec) {
            self.resolve().await;
        }
        if spec.is_some_and(|s| commands::releases_turn(s.name, &args)) {
            // EXEC, MSETNX, RENAME, ... take the exclusive turn, BLPOP for
            // each try; this connection's own writes are all answered
            // (resolved above).
            *turn = None;
        }
        if spec.is_some() && shared.clients.monitored() {
            let micros = crate::clients::unix_micros();
            let (db, addr) = (self.session.namespace, &self.session.peer);
            shared.clients.feed_monitor(micros, db, addr, &args);
        }
        let step = if spec.is_some_and(|s| crate::blocking::blocks(s.name)) {
            let execution = commands::execute(shared, &mut self.session, spec, &args);
            let limit = shared.config.query_buffer_max_bytes;
            // Boxed: the wait is rare and its future large (see `execute`).
            match Box::pin(until_closed(execution, stream, &mut self.input, limit)).await {
                Some(step) => step,
                None => return true, // the client left while blocked
            }
        } else {
            // Awaited where it is made: not first held in a local and moved.
            commands::execute(shared, &mut self.session, spec, &args).await
        };
        // As Redis counts it: the command's own run, not the wait for its
        // write's group commit (the committer's sync timings show that).
        let micros = started.elapsed().as_micros() as u64;
        let (waiting, closes) = Waiting::of(step);
        self.slots.push(Timed {
            waiting,
            kind: spec.map(|s| (commands::kind_of(s), s.flags.contains(&"fast"))),
            micros,
            args,
        });
        if turn.is_none() {
            *turn = Some(shared.isolation.shared().await);
        }
        closes
    }

    /// Wait for pending writes in order, count each command, encode every reply.
    async fn resolve(&mut self) {
        for slot in self.slots.drain(..) {
            // A read's reply is ready: no future to build and move for it.
            let reply = match slot.waiting {
                Waiting::Ready(reply) => reply,
                waiting => waiting.reply().await,
            };
            if let Some((kind, fast)) = slot.kind {
                let micros = slot.micros;
                let failed = matches!(reply, Reply::Error(_));
                self.shared.command_stats.record(kind, micros, failed);
                note_if_slow(self.shared, &self.session, micros, fast, &slot.args);
            }
            if let Reply::Error(message) = &reply {
                self.shared.command_stats.record_error(message);
            }
            encode_reply(&reply, self.session.protocol, &mut self.output);
        }
    }

    /// What CLIENT LIST shows of this connection after a socket read.
    fn describe(&self, view: &mut ClientView, last_command: &'static str) {
        self.session.fill_view(view);
        view.query_buffer_bytes = self.input.len();
        view.last_command = last_command;
        view.last_active = tokio::time::Instant::now();
    }
}

/// The slow log and the latency monitor's "command" / "fast-command" events.
fn note_if_slow(shared: &Shared, session: &Session, micros: u64, fast: bool, args: &[Bytes]) {
    let slow = shared.slowlog.is_slow(micros);
    let spike = shared.latency.threshold_ms() > 0;
    if !slow && !spike {
        return;
    }
    let unix_s = crate::clients::unix_micros() / 1_000_000;
    if slow {
        let name = session.name.clone().unwrap_or_default();
        let kept = SlowLog::kept_args(args);
        shared
            .slowlog
            .record(unix_s, micros, kept, &session.peer, name);
    }
    let event = if fast { "fast-command" } else { "command" };
    shared.latency.record(event, unix_s, micros / 1000);
}

/// MONITOR: from now on the connection only carries the feed of commands,
/// until the client leaves, is killed, or falls more than
/// `clients::MONITOR_LINES_MAX` lines behind.
async fn monitor_feed<S>(
    stream: &mut S,
    shared: &Shared,
    registration: &Registration<'_>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut feed = shared.clients.subscribe_monitor();
    let mut scratch = [0u8; 1024];
    loop {
        tokio::select! {
            // A fixed polling order: unbiased select! draws from tokio's
            // thread RNG, which breaks the simulator's determinism.
            biased;
            _ = registration.killed() => return Ok(()),
            line = feed.lines.recv() => match line {
                Ok(line) => stream.write_all(&line).await?,
                Err(RecvError::Lagged(missed)) => {
                    let text = format!("-ERR MONITOR fell behind by {missed} commands; disconnecting\r\n");
                    stream.write_all(text.as_bytes()).await?;
                    return Ok(());
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            read = stream.read(&mut scratch) => if read? == 0 {
                return Ok(());
            },
        }
    }
}

/// A reply in request order, with the command it answers (its place in the
/// table) and how long it ran, for the command statistics.
struct Timed {
    waiting: Waiting,
    /// The command's place in the table, and whether it is flagged fast.
    kind: Option<(usize, bool)>,
    /// From its request parsed to its step made (a write's commit not
    /// included).
    micros: u64,
    /// Its arguments, for the slow log.
    args: Vec<Bytes>,
}

impl Timed {
    fn untimed(waiting: Waiting) -> Timed {
        Timed {
            waiting,
            kind: None,
            micros: 0,
            args: Vec::new(),
        }
    }
}
