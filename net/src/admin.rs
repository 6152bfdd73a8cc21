//! The operators' Redis commands: CLIENT (LIST, INFO, KILL, PAUSE, UNPAUSE,
//! NO-EVICT, NO-TOUCH, names), CONFIG (GET, SET of what can change at run
//! time, RESETSTAT), SLOWLOG and LATENCY. They read and set the node's
//! registries (`clients`, `slowlog`, `command_stats`); MONITOR only marks the
//! session, and `server` turns the connection into a feed.
//!
//! Must not touch: data, storage, sockets.

use crate::clients::{ClientView, KillFilter, PauseMode};
use crate::commands::Session;
use crate::glob::glob_match;
use crate::reply::{err, lower, parse_int, syntax_error, Step};
use crate::resp::Reply;
use crate::shared::Shared;
use crate::slowlog::SLOWLOG_LEN_LIMIT;
use bytes::Bytes;
use tokio::time::Instant;

fn bulk(text: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(text.into()))
}

/// This connection as CLIENT LIST shows it, with the session's latest state
/// (the registry is refreshed once per socket read).
fn own_view(shared: &Shared, session: &Session, command: &'static str) -> Option<ClientView> {
    let mut view = shared.clients.view(session.id)?;
    session.fill_view(&mut view);
    view.last_command = command;
    view.last_active = Instant::now();
    Some(view)
}

pub fn client(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Step {
    let valid_name = |v: &Bytes| v.iter().all(|b| (b'!'..=b'~').contains(b));
    match (lower(&args[0]).as_str(), args.len()) {
        ("id", 1) => Step::Reply(Reply::Integer(session.id as i64)),
        ("getname", 1) => Step::Reply(session.name.clone().map_or(Reply::Null, Reply::Bulk)),
        ("setname", 2) => {
            if !valid_name(&args[1]) {
                return err("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            session.name = (!args[1].is_empty()).then(|| args[1].clone());
            Step::Reply(Reply::ok())
        }
        ("setinfo", 3) => set_info(session, &args[1], &args[2]),
        ("info", 1) => {
            let now = Instant::now();
            let line = own_view(shared, session, "client|info").map_or(String::new(), |v| v.line(now));
            Step::Reply(bulk(format!("{line}\n")))
        }
        ("list", _) => client_list(shared, session, &args[1..]),
        ("kill", _) => client_kill(shared, session, &args[1..]),
        ("pause", 2 | 3) => client_pause(shared, &args[1..]),
        ("unpause", 1) => {
            shared.clients.unpause();
            Step::Reply(Reply::ok())
        }
        // Shoal never evicts and keeps no access times: both are accepted.
        ("no-evict" | "no-touch", 2) => match lower(&args[1]).as_str() {
            "on" | "off" => Step::Reply(Reply::ok()),
            _ => syntax_error(),
        },
        (sub, _) => err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'client|{sub}'. Try CLIENT HELP."
        )),
    }
}

fn set_info(session: &mut Session, attr: &Bytes, value: &Bytes) -> Step {
    match lower(attr).as_str() {
        "lib-name" => session.lib_name = Some(value.clone()),
        "lib-ver" => session.lib_ver = Some(value.clone()),
        _ => {
            return err(format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(attr)
            ))
        }
    }
    Step::Reply(Reply::ok())
}

/// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...].
fn client_list(shared: &Shared, session: &Session, args: &[Bytes]) -> Step {
    let mut ids: Option<Vec<u64>> = None;
    let mut normal_only = true;
    match args.first().map(|a| lower(a)).as_deref() {
        None => {}
        Some("type") if args.len() == 2 => match lower(&args[1]).as_str() {
            "normal" => {}
            "master" | "replica" | "slave" | "pubsub" => normal_only = false,
            other => return err(format!("ERR Unknown client type '{other}'")),
        },
        Some("id") if args.len() >= 2 => {
            let mut wanted = Vec::new();
            for a in &args[1..] {
                match parse_int(a) {
                    Some(id) if id > 0 => wanted.push(id as u64),
                    _ => return err("ERR Invalid client ID"),
                }
            }
            ids = Some(wanted);
        }
        _ => return syntax_error(),
    }
    let now = Instant::now();
    let mut text = String::new();
    if normal_only {
        for mut view in shared.clients.list() {
            if ids.as_ref().is_some_and(|ids| !ids.contains(&view.id)) {
                continue;
            }
            if view.id == session.id {
                view = own_view(shared, session, "client|list").unwrap_or(view);
            }
            text.push_str(&view.line(now));
            text.push('\n');
        }
    }
    Step::Reply(bulk(text))
}

/// CLIENT KILL addr:port (old form: OK or an error), or CLIENT KILL with
/// filters ID, ADDR, LADDR, USER, TYPE, MAXAGE, SKIPME (the count killed).
fn client_kill(shared: &Shared, session: &Session, args: &[Bytes]) -> Step {
    let now = Instant::now();
    if args.len() == 1 {
        let filter = KillFilter {
            addr: Some(String::from_utf8_lossy(&args[0]).into_owned()),
            ..Default::default()
        };
        return match shared.clients.kill(&filter, now) {
            0 => err("ERR No such client"),
            _ => Step::Reply(Reply::ok()),
        };
    }
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return syntax_error();
    }
    let mut filter = KillFilter {
        skip: Some(session.id),
        ..Default::default()
    };
    let mut nobody = false;
    for pair in args.chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match lower(&pair[0]).as_str() {
            "id" => match parse_int(&pair[1]) {
                Some(id) if id > 0 => filter.id = Some(id as u64),
                _ => return err("ERR client-id should be greater than 0"),
            },
            "addr" => filter.addr = Some(value),
            "laddr" => filter.laddr = Some(value),
            "maxage" => match parse_int(&pair[1]) {
                Some(age) if age >= 0 => filter.max_age_s = Some(age as u64),
                _ => return err("ERR value is not an integer or out of range"),
            },
            "user" => nobody |= value != "default",
            "type" => match value.to_ascii_lowercase().as_str() {
                "normal" => {}
                "master" | "replica" | "slave" | "pubsub" => nobody = true,
                _ => return err(format!("ERR Unknown client type '{value}'")),
            },
            "skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => filter.skip = Some(session.id),
                "no" => filter.skip = None,
                _ => return syntax_error(),
            },
            _ => return syntax_error(),
        }
    }
    let killed = if nobody {
        0
    } else {
        shared.clients.kill(&filter, now)
    };
    Step::Reply(Reply::Integer(killed as i64))
}

/// CLIENT PAUSE timeout-ms [WRITE|ALL].
fn client_pause(shared: &Shared, args: &[Bytes]) -> Step {
    let Some(ms) = parse_int(&args[0]).filter(|ms| *ms >= 0) else {
        return err("ERR timeout is not an integer or out of range");
    };
    let mode = match args.get(1).map(|a| lower(a)).as_deref() {
        None | Some("all") => PauseMode::All,
        Some("write") => PauseMode::Write,
        Some(_) => return syntax_error(),
    };
    let until = Instant::now() + std::time::Duration::from_millis(ms as u64);
    shared.clients.pause(until, mode);
    Step::Reply(Reply::ok())
}

/// SLOWLOG GET [count] | LEN | RESET | HELP.
pub fn slowlog(shared: &Shared, args: &[Bytes]) -> Step {
    let log = &shared.slowlog;
    match (lower(&args[0]).as_str(), args.len()) {
        ("get", 1 | 2) => {
            let count = match args.get(1).map(|a| parse_int(a)) {
                None => Some(10),
                Some(Some(-1)) => None,
                Some(Some(n)) if n >= 0 => Some(n as usize),
                Some(_) => {
                    return err("ERR count should be greater than or equal to -1")
                }
            };
            let entries = log.newest(count).into_iter().map(|e| {
                Reply::Array(vec![
                    Reply::Integer(e.id as i64),
                    Reply::Integer(e.unix_s as i64),
                    Reply::Integer(e.micros as i64),
                    Reply::Array(e.args.into_iter().map(Reply::Bulk).collect()),
                    bulk(e.addr),
                    Reply::Bulk(e.name),
                ])
            });
            Step::Reply(Reply::Array(entries.collect()))
        }
        ("len", 1) => Step::Reply(Reply::Integer(log.len() as i64)),
        ("reset", 1) => {
            log.reset();
            Step::Reply(Reply::ok())
        }
        ("help", 1) => help(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of: id, timestamp, time in microseconds, arguments array,",
            "    client IP and port, client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Print this help.",
        ]),
        (sub, _) => err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'slowlog|{sub}'. Try SLOWLOG HELP."
        )),
    }
}

fn help(lines: &[&str]) -> Step {
    Step::Reply(Reply::Array(
        lines.iter().map(|l| Reply::Simple(l.to_string())).collect(),
    ))
}

/// LATENCY LATEST | HISTORY event | RESET [event ...] | DOCTOR | HELP.
pub fn latency(shared: &Shared, args: &[Bytes]) -> Step {
    let monitor = &shared.latency;
    match (lower(&args[0]).as_str(), args.len()) {
        ("latest", 1) => Step::Reply(Reply::Array(
            monitor
                .events()
                .into_iter()
                .filter_map(|(name, event)| {
                    let (at, ms) = *event.samples.back()?;
                    Some(Reply::Array(vec![
                        bulk(name),
                        Reply::Integer(at as i64),
                        Reply::Integer(ms as i64),
                        Reply::Integer(event.max_ms as i64),
                    ]))
                })
                .collect(),
        )),
        ("history", 2) => {
            let events = monitor.events();
            let samples = events
                .iter()
                .find(|(name, _)| args[1].eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, e)| e.samples.clone())
                .unwrap_or_default();
            Step::Reply(Reply::Array(
                samples
                    .into_iter()
                    .map(|(at, ms)| {
                        Reply::Array(vec![Reply::Integer(at as i64), Reply::Integer(ms as i64)])
                    })
                    .collect(),
            ))
        }
        ("reset", _) => Step::Reply(Reply::Integer(monitor.reset(&args[1..]) as i64)),
        ("doctor", 1) => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: latency_doctor(shared),
        }),
        ("help", 1) => help(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Print this help.",
        ]),
        (sub, _) => err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'latency|{sub}'. Try LATENCY HELP."
        )),
    }
}

fn latency_doctor(shared: &Shared) -> String {
    let threshold = shared.latency.threshold_ms();
    if threshold == 0 {
        return "The latency monitor is off: CONFIG SET latency-monitor-threshold <ms> turns it on.\n".into();
    }
    let events = shared.latency.events();
    if events.is_empty() {
        return format!(
            "No latency spike of {threshold} ms or more was seen since the last reset.\n"
        );
    }
    let mut text = String::new();
    for (name, event) in events {
        let sum: u64 = event.samples.iter().map(|(_, ms)| ms).sum();
        text.push_str(&format!(
            "{name}: {} latency spikes (average {} ms, worst {} ms) of {threshold} ms or more.\n",
            event.samples.len(),
            sum / event.samples.len().max(1) as u64,
            event.max_ms,
        ));
    }
    text.push_str("A write's time includes its fsync (and on a cluster its quorum round): see shoal_fsync_seconds on the HTTP port.\n");
    text
}

/// Parameters CONFIG GET answers, as Redis names them.
fn config_params(shared: &Shared) -> Vec<(&'static str, String)> {
    let fsync = shared.storage.config().fsync;
    vec![
        ("bind", shared.config.bind.clone()),
        ("port", shared.config.port.to_string()),
        ("databases", shared.config.databases.to_string()),
        ("maxclients", shared.config.clients_max.to_string()),
        ("appendonly", "yes".into()),
        (
            "appendfsync",
            match fsync {
                crate::storage::Fsync::Always => "always",
                crate::storage::Fsync::Batch => "everysec",
                crate::storage::Fsync::Never => "no",
            }
            .into(),
        ),
        ("save", String::new()),
        ("maxmemory", shared.maxmemory.max_bytes().to_string()),
        ("maxmemory-policy", "noeviction".into()),
        (
            "proto-max-bulk-len",
            shared.config.request_limits.bulk_len_max_bytes.to_string(),
        ),
        ("dir", shared.config.data_dir.clone()),
        ("timeout", "0".into()),
        ("cluster-enabled", "no".into()),
        ("shoal-fsync", fsync.as_str().into()),
        (
            "slowlog-log-slower-than",
            shared.slowlog.threshold_us().to_string(),
        ),
        ("slowlog-max-len", shared.slowlog.len_max().to_string()),
        ("lazyfree-lazy-user-del", "no".into()),
        (
            "latency-monitor-threshold",
            shared.latency.threshold_ms().to_string(),
        ),
    ]
    .into_iter()
    .chain(shared.encoding_knobs.values())
    .collect()
}

/// Redis's knobs for its compact encodings (listpack, intset), with their
/// Redis 7.0 defaults. Shoal stores every type one way, so they change
/// nothing; CONFIG GET and SET accept them so that clients and tests that
/// tune them keep working. The `ziplist` names are aliases.
const ENCODING_KNOBS: &[(&str, &str, i64)] = &[
    ("hash-max-listpack-entries", "hash-max-ziplist-entries", 128),
    ("hash-max-listpack-value", "hash-max-ziplist-value", 64),
    ("set-max-intset-entries", "set-max-intset-entries", 512),
    ("set-max-listpack-entries", "set-max-listpack-entries", 128),
    ("set-max-listpack-value", "set-max-listpack-value", 64),
    ("zset-max-listpack-entries", "zset-max-ziplist-entries", 128),
    ("zset-max-listpack-value", "zset-max-ziplist-value", 64),
    ("list-max-listpack-size", "list-max-ziplist-size", -2),
    ("list-compress-depth", "list-compress-depth", 0),
];

/// The encoding knobs' current values (see [`ENCODING_KNOBS`]).
pub struct EncodingKnobs(std::sync::Mutex<Vec<i64>>);

impl Default for EncodingKnobs {
    fn default() -> Self {
        EncodingKnobs(std::sync::Mutex::new(
            ENCODING_KNOBS.iter().map(|(_, _, v)| *v).collect(),
        ))
    }
}

impl EncodingKnobs {
    /// The index of knob `name` (or its alias).
    fn find(name: &str) -> Option<usize> {
        ENCODING_KNOBS
            .iter()
            .position(|(n, alias, _)| *n == name || *alias == name)
    }

    /// Every knob under its name and its alias, with its value.
    fn values(&self) -> Vec<(&'static str, String)> {
        let values = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        for ((name, alias, _), value) in ENCODING_KNOBS.iter().zip(values) {
            out.push((*name, value.to_string()));
            if alias != name {
                out.push((*alias, value.to_string()));
            }
        }
        out
    }

    fn set(&self, index: usize, value: i64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[index] = value;
    }
}

/// Parameters CONFIG SET changes at run time.
const SETTABLE: &[&str] = &[
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "latency-monitor-threshold",
];

pub fn config(shared: &Shared, args: &[Bytes]) -> Step {
    match lower(&args[0]).as_str() {
        "get" if args.len() >= 2 => {
            let mut pairs = Vec::new();
            for (name, value) in config_params(shared) {
                if args[1..]
                    .iter()
                    .any(|p| glob_match(p, name.as_bytes(), true))
                {
                    pairs.push((Reply::Bulk(Bytes::from_static(name.as_bytes())), bulk(value)));
                }
            }
            Step::Reply(Reply::Map(pairs))
        }
        "set" if args.len() >= 3 && !args.len().is_multiple_of(2) => config_set(shared, &args[1..]),
        "resetstat" if args.len() == 1 => {
            shared.command_stats.reset();
            shared.keyspace.reset();
            shared.slowlog.reset();
            shared.latency.reset(&[]);
            Step::Reply(Reply::ok())
        }
        _ => err("ERR unknown subcommand or wrong number of arguments for 'config'. Try CONFIG GET, CONFIG SET or CONFIG RESETSTAT."),
    }
}

/// CONFIG SET name value [name value ...]: every pair is checked before any
/// is applied, so a bad one changes nothing.
fn config_set(shared: &Shared, pairs: &[Bytes]) -> Step {
    let mut checked = Vec::new();
    let mut knobs = Vec::new();
    let mut memory = None;
    for pair in pairs.chunks(2) {
        let name = lower(&pair[0]);
        if name == "save" && pair[1].is_empty() {
            continue; // no snapshots to turn off: every write is durable
        }
        if let Some(index) = EncodingKnobs::find(&name) {
            match parse_int(&pair[1]) {
                Some(value) => knobs.push((index, value)),
                None => return err(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer")),
            }
            continue;
        }
        if let Some(step) = memory_setting(&name, &pair[1], &mut memory) {
            return step;
        }
        if name == "maxmemory" || name == "maxmemory-policy" {
            continue;
        }
        let Some(&known) = SETTABLE.iter().find(|s| **s == name) else {
            return err(format!(
                "ERR CONFIG SET of '{name}' is not supported: Shoal changes {} at run time; the rest is set in the config file",
                SETTABLE.join(", ")
            ));
        };
        let value = parse_int(&pair[1]);
        let valid = match (known, value) {
            ("slowlog-log-slower-than", Some(v)) => v >= -1,
            ("slowlog-max-len", Some(v)) => (0..=SLOWLOG_LEN_LIMIT as i64).contains(&v),
            ("latency-monitor-threshold", Some(v)) => v >= 0,
            _ => false,
        };
        if !valid {
            return err(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer in range"
            ));
        }
        checked.push((known, value.expect("valid values are integers")));
    }
    for (name, value) in checked {
        match name {
            "slowlog-log-slower-than" => shared.slowlog.set_threshold_us(value),
            "slowlog-max-len" => shared.slowlog.set_len_max(value as usize),
            _ => shared.latency.set_threshold_ms(value as u64),
        }
    }
    for (index, value) in knobs {
        shared.encoding_knobs.set(index, value);
    }
    if let Some(max_bytes) = memory {
        shared.maxmemory.set_max_bytes(max_bytes);
    }
    Step::Reply(Reply::ok())
}

/// `maxmemory` (bytes, Redis's units) and `maxmemory-policy` (`noeviction`
/// only: Shoal never evicts); the refusal when the value is bad.
fn memory_setting(name: &str, value: &Bytes, memory: &mut Option<u64>) -> Option<Step> {
    let text = String::from_utf8_lossy(value);
    match name {
        "maxmemory" => match crate::maxmemory::parse_memory(&text) {
            Some(bytes) => *memory = Some(bytes),
            None => return Some(err(format!("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value, not '{text}'"))),
        },
        "maxmemory-policy" if !text.eq_ignore_ascii_case("noeviction") => {
            return Some(err(format!("ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - Shoal never evicts keys: only noeviction, not '{text}'")));
        }
        _ => {}
    }
    None
}

/// When the last SAVE finished, in Unix seconds (0: none yet; LASTSAVE
/// answers the start then).
static LAST_SAVE_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// SAVE, BGSAVE, LASTSAVE. Every acknowledged write is already on disk with
/// fsync `always`; SAVE makes whatever else was written durable too (fsync
/// `never` or `periodic`) before it answers, and BGSAVE does the same.
pub async fn save(shared: &Shared, name: &str) -> Step {
    use std::sync::atomic::Ordering;
    let now_s = shared.storage.wall_ms() / 1000;
    if name == "lastsave" {
        let last = LAST_SAVE_S.load(Ordering::Relaxed);
        let started_s = now_s.saturating_sub(shared.started.elapsed().as_secs());
        return Step::Reply(Reply::Integer(last.max(started_s) as i64));
    }
    if let Err(e) = shared.storage.flush().await {
        return Step::Reply(Reply::error(format!("ERR the save's sync failed: {e}")));
    }
    LAST_SAVE_S.store(now_s, Ordering::Relaxed);
    Step::Reply(match name {
        "bgsave" => Reply::Simple("Background saving started".into()),
        _ => Reply::ok(),
    })
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: the node stops as on SIGTERM
/// (the log synced, exit 0). Every acknowledged write is durable already, so
/// SAVE and NOSAVE stop alike. As in Redis, a shutdown that goes ahead sends no
/// reply: the connection closes as the process exits.
pub async fn shutdown(shared: &Shared, args: &[Bytes]) -> Step {
    let mut abort = false;
    for arg in args {
        match String::from_utf8_lossy(arg).to_ascii_lowercase().as_str() {
            "nosave" | "save" | "now" | "force" => {}
            "abort" => abort = true,
            _ => return Step::Reply(Reply::error("ERR syntax error")),
        }
    }
    if abort {
        return Step::Reply(Reply::error("ERR No shutdown in progress."));
    }
    if !shared.shutdown.request() {
        return Step::Reply(Reply::error(
            "ERR SHUTDOWN is not available here: this server runs embedded, not as `shoal server`",
        ));
    }
    std::future::pending().await
}

/// How SHUTDOWN reaches the process that runs the node: `shoal server`
/// arms it and waits for a request beside its signals.
#[derive(Default)]
pub struct ShutdownSwitch {
    armed: std::sync::atomic::AtomicBool,
    requested: tokio::sync::Notify,
}

impl ShutdownSwitch {
    /// Let SHUTDOWN stop this process.
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ask for a shutdown; false when nothing listens.
    fn request(&self) -> bool {
        let armed = self.armed.load(std::sync::atomic::Ordering::SeqCst);
        if armed {
            self.requested.notify_one();
        }
        armed
    }

    /// Wait for SHUTDOWN.
    pub async fn requested(&self) {
        self.requested.notified().await
    }
}
