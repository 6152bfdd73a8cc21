//! Who is connected to this node: one entry per client connection (CLIENT LIST,
//! CLIENT KILL, CLIENT INFO), the node-wide pause (CLIENT PAUSE / UNPAUSE) and
//! the MONITOR feed. `server` registers each connection, refreshes its entry
//! once per socket read, waits out a pause before each command and obeys the
//! entry's kill switch.
//!
//! Must not touch: sockets (`server` owns them), command semantics, storage.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

/// Lines the MONITOR feed holds for its slowest reader; past it that reader is
/// told how many it missed and disconnected.
pub const MONITOR_LINES_MAX: usize = 1024;
/// Bytes of one MONITOR line; a longer command is shown cut, with the count of
/// bytes left out. With [`MONITOR_LINES_MAX`], the feed holds at most 16 MiB.
pub const MONITOR_LINE_BYTES_MAX: usize = 16 << 10;

/// What CLIENT LIST shows of one connection, refreshed once per socket read.
#[derive(Clone, Debug)]
pub struct ClientView {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub db: u8,
    pub resp: u8,
    /// Commands queued by MULTI, or `None` outside a transaction.
    pub multi: Option<usize>,
    pub monitor: bool,
    pub query_buffer_bytes: usize,
    pub last_command: &'static str,
    pub connected_at: Instant,
    pub last_active: Instant,
}

impl ClientView {
    /// A connection just accepted: default db, RESP2, nothing run yet.
    pub fn new(id: u64, addr: String, laddr: String, now: Instant) -> ClientView {
        ClientView {
            id,
            addr,
            laddr,
            name: None,
            lib_name: None,
            lib_ver: None,
            db: 0,
            resp: 2,
            multi: None,
            monitor: false,
            query_buffer_bytes: 0,
            last_command: "NULL",
            connected_at: now,
            last_active: now,
        }
    }

    /// One line of CLIENT LIST, in Redis's field order (fields Shoal cannot
    /// fill truthfully are left out).
    pub fn line(&self, now: Instant) -> String {
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let flags = match (self.monitor, self.multi.is_some()) {
            (true, _) => "O",
            (false, true) => "x",
            (false, false) => "N",
        };
        format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags={flags} db={} sub=0 psub=0 ssub=0 multi={} qbuf={} cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            text(&self.name),
            now.saturating_duration_since(self.connected_at).as_secs(),
            now.saturating_duration_since(self.last_active).as_secs(),
            self.db,
            self.multi.map_or(-1, |n| n as i64),
            self.query_buffer_bytes,
            self.last_command,
            self.resp,
            text(&self.lib_name),
            text(&self.lib_ver),
        )
    }
}

/// One connection's entry. Its view has its own lock, so that refreshing it
/// (once per socket read of that connection) never waits on another's.
struct Entry {
    view: Arc<Mutex<ClientView>>,
    kill: Arc<Notify>,
}

/// Which commands a CLIENT PAUSE holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseMode {
    /// Commands that may write (and EXEC); reads go on.
    Write,
    /// Every command.
    All,
}

#[derive(Clone, Copy, Debug)]
struct Pause {
    until: Instant,
    mode: PauseMode,
}

/// A way to pick clients for CLIENT KILL; all given filters must match.
#[derive(Clone, Debug, Default)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub max_age_s: Option<u64>,
    /// The client asking, spared unless SKIPME no.
    pub skip: Option<u64>,
}

pub struct Clients {
    entries: Mutex<BTreeMap<u64, Entry>>,
    pause: Mutex<Option<Pause>>,
    /// Whether a pause may be in force: the per-command check without a lock.
    paused: AtomicBool,
    unpaused: Notify,
    monitor: broadcast::Sender<Bytes>,
    /// MONITOR feeds open: checked once per command without a lock (the
    /// channel's own count takes one).
    monitors: Arc<AtomicUsize>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            entries: Mutex::default(),
            pause: Mutex::default(),
            paused: AtomicBool::new(false),
            unpaused: Notify::new(),
            monitor: broadcast::channel(MONITOR_LINES_MAX).0,
            monitors: Arc::default(),
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place in the registry; leaving it (drop) removes the entry.
pub struct Registration<'a> {
    clients: &'a Clients,
    id: u64,
    kill: Arc<Notify>,
    view: Arc<Mutex<ClientView>>,
}

impl Registration<'_> {
    /// Resolves once CLIENT KILL picked this connection.
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    /// Refresh what CLIENT LIST shows of this connection.
    pub fn refresh(&self, update: impl FnOnce(&mut ClientView)) {
        update(&mut locked(&self.view));
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        locked(&self.clients.entries).remove(&self.id);
    }
}

impl Clients {
    pub fn register(&self, view: ClientView) -> Registration<'_> {
        let id = view.id;
        let kill = Arc::new(Notify::new());
        let view = Arc::new(Mutex::new(view));
        let entry = Entry {
            view: view.clone(),
            kill: kill.clone(),
        };
        let previous = locked(&self.entries).insert(id, entry);
        assert!(previous.is_none(), "client id {id} registered twice");
        Registration {
            clients: self,
            id,
            kill,
            view,
        }
    }

    /// Every connection, by id.
    pub fn list(&self) -> Vec<ClientView> {
        locked(&self.entries)
            .values()
            .map(|e| locked(&e.view).clone())
            .collect()
    }

    pub fn view(&self, id: u64) -> Option<ClientView> {
        locked(&self.entries)
            .get(&id)
            .map(|e| locked(&e.view).clone())
    }

    /// Close every connection the filter picks (after its current command);
    /// returns how many.
    pub fn kill(&self, filter: &KillFilter, now: Instant) -> usize {
        let entries = locked(&self.entries);
        let mut killed = 0;
        for (id, entry) in entries.iter() {
            let v = locked(&entry.view);
            let age_s = now.saturating_duration_since(v.connected_at).as_secs();
            let picked = filter.skip != Some(*id)
                && filter.id.is_none_or(|want| want == *id)
                && filter.addr.as_ref().is_none_or(|a| *a == v.addr)
                && filter.laddr.as_ref().is_none_or(|a| *a == v.laddr)
                && filter.max_age_s.is_none_or(|max| age_s >= max);
            if picked {
                entry.kill.notify_one();
                killed += 1;
            }
        }
        killed
    }

    /// Hold back `mode`'s commands until `until` (a later pause extends, as
    /// in Redis; ALL is never narrowed to WRITE while it lasts).
    pub fn pause(&self, until: Instant, mode: PauseMode) {
        let mut pause = locked(&self.pause);
        let merged = match *pause {
            Some(p) => Pause {
                until: p.until.max(until),
                mode: if p.mode == PauseMode::All || mode == PauseMode::All {
                    PauseMode::All
                } else {
                    PauseMode::Write
                },
            },
            None => Pause { until, mode },
        };
        *pause = Some(merged);
        self.paused.store(true, Ordering::Release);
    }

    pub fn unpause(&self) {
        *locked(&self.pause) = None;
        self.paused.store(false, Ordering::Release);
        self.unpaused.notify_waiters();
    }

    /// The pause holding back a command that `writes` (or not), if any.
    fn holding(&self, writes: bool, now: Instant) -> Option<Instant> {
        if !self.paused.load(Ordering::Acquire) {
            return None;
        }
        let mut pause = locked(&self.pause);
        match *pause {
            Some(p) if p.until <= now => {
                *pause = None;
                self.paused.store(false, Ordering::Release);
                None
            }
            Some(p) if p.mode == PauseMode::All || writes => Some(p.until),
            _ => None,
        }
    }

    /// Wait until no pause holds back a command that `writes` (or not).
    pub async fn wait_out_pause(&self, writes: bool) {
        // Every command asks: without a pause that is one atomic load, not a
        // registration with `unpaused` and a clock reading.
        if !self.paused.load(Ordering::Acquire) {
            return;
        }
        loop {
            let unpaused = self.unpaused.notified();
            tokio::pin!(unpaused);
            unpaused.as_mut().enable();
            let Some(until) = self.holding(writes, Instant::now()) else {
                return;
            };
            tokio::select! {
                // A fixed polling order: unbiased select! draws from tokio's
                // thread RNG, which breaks the simulator's determinism.
                biased;
                _ = unpaused => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Whether anyone reads the MONITOR feed (checked before a line is made).
    pub fn monitored(&self) -> bool {
        self.monitors.load(Ordering::Relaxed) > 0
    }

    pub fn subscribe_monitor(&self) -> MonitorFeed {
        self.monitors.fetch_add(1, Ordering::Relaxed);
        MonitorFeed {
            lines: self.monitor.subscribe(),
            monitors: self.monitors.clone(),
        }
    }

    /// One command for the MONITOR feed, as Redis prints it:
    /// `+<unix s.us> [<db> <addr>] "arg" ...`, with AUTH's and HELLO's
    /// arguments redacted.
    pub fn feed_monitor(&self, unix_micros: u64, db: u8, addr: &str, args: &[Bytes]) {
        let mut line = format!(
            "+{}.{:06} [{db} {addr}]",
            unix_micros / 1_000_000,
            unix_micros % 1_000_000
        )
        .into_bytes();
        let redact = args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"auth") || a.eq_ignore_ascii_case(b"hello"));
        for (i, arg) in args.iter().enumerate() {
            line.push(b' ');
            if redact && i > 0 {
                line.extend_from_slice(b"\"(redacted)\"");
            } else {
                quote_into(arg, &mut line);
            }
            if line.len() > MONITOR_LINE_BYTES_MAX {
                let left: usize = args[i + 1..].iter().map(|a| a.len()).sum();
                line.truncate(MONITOR_LINE_BYTES_MAX);
                line.extend_from_slice(format!(" ... ({left} more bytes)").as_bytes());
                break;
            }
        }
        line.extend_from_slice(b"\r\n");
        // No reader left between the check and now: nothing to do.
        let _ = self.monitor.send(Bytes::from(line));
    }
}

/// One MONITOR connection's feed; counted while it lives.
pub struct MonitorFeed {
    pub lines: broadcast::Receiver<Bytes>,
    monitors: Arc<AtomicUsize>,
}

impl Drop for MonitorFeed {
    fn drop(&mut self) {
        self.monitors.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wall-clock microseconds since the Unix epoch (MONITOR, SLOWLOG).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `arg` as Redis's `sdscatrepr` prints it: in double quotes, with `\\`, `\"`,
/// `\n`, `\r`, `\t`, `\a`, `\b` escaped and other unprintable bytes as `\xHH`.
pub fn quote_into(arg: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in arg {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, addr: &str) -> ClientView {
        ClientView::new(id, addr.into(), "127.0.0.1:7379".into(), Instant::now())
    }

    #[test]
    fn quoting_matches_redis_repr() {
        let mut out = Vec::new();
        quote_into(b"a\"b\\c\n\x01 z", &mut out);
        assert_eq!(out, b"\"a\\\"b\\\\c\\n\\x01 z\"");
    }

    #[tokio::test]
    async fn kill_picks_by_filter_and_spares_the_asker() {
        let clients = Clients::default();
        let a = clients.register(view(1, "10.0.0.1:1"));
        let _b = clients.register(view(2, "10.0.0.2:2"));
        let now = Instant::now();
        let by_addr = KillFilter {
            addr: Some("10.0.0.1:1".into()),
            ..Default::default()
        };
        assert_eq!(clients.kill(&by_addr, now), 1);
        // The kill is remembered until the connection looks.
        a.killed().await;
        let everyone_but_2 = KillFilter {
            skip: Some(2),
            ..Default::default()
        };
        assert_eq!(clients.kill(&everyone_but_2, now), 1);
        drop(a);
        assert_eq!(clients.list().len(), 1);
    }

    #[tokio::test]
    async fn a_write_pause_holds_writes_not_reads_until_unpaused() {
        let clients = Arc::new(Clients::default());
        clients.pause(
            Instant::now() + std::time::Duration::from_secs(60),
            PauseMode::Write,
        );
        clients.wait_out_pause(false).await;
        let waiting = {
            let clients = clients.clone();
            tokio::spawn(async move { clients.wait_out_pause(true).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        clients.unpause();
        waiting.await.unwrap();
    }
}
