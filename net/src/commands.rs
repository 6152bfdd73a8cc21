//! Redis commands: the command table (name, arity, flags, key positions, docs,
//! which also answers COMMAND) and each command's semantics, written once
//! against a `backend::Backend` (this node's storage, or the cluster). Owns
//! command semantics only: framing is `resp`, connections are `server`,
//! durability is `storage`, how a read or write travels is `backend`.
//!
//! Write commands are not awaited here: they return a [`Step::Pending`] ticket so that
//! a pipeline of writes from one connection lands in one group commit. The connection
//! resolves pending tickets, in order, before it runs any other command, so every
//! read sees the same connection's earlier writes.

use crate::backend::{Backend, KeyRead};
use crate::glob::glob_match;
use crate::info::REDIS_VERSION;
use crate::reply::{err, lower, parse_int, syntax_error};
pub use crate::reply::{
    finish_routed, finish_write, write_error_reply, ReplyShape, RoutedTicket, Step,
};
use crate::resp::{Protocol, Reply};
use crate::shared::Shared;
use bytes::Bytes;
use shoal_engine::{Condition, Covers, SiblingSet, VersionVector, WriteOp};
use std::sync::atomic::Ordering;

/// Per-connection state.
pub struct Session {
    pub id: u64,
    pub namespace: u8,
    pub protocol: Protocol,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub authenticated: bool,
    pub peer: String,
}

pub struct CommandSpec {
    pub name: &'static str,
    /// Redis convention: N = exactly N arguments including the name; -N = at least N.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub group: &'static str,
    pub summary: &'static str,
}

macro_rules! spec {
    ($name:expr, $arity:expr, [$($flag:expr),*], $fk:expr, $lk:expr, $st:expr, $group:expr, $summary:expr) => {
        CommandSpec { name: $name, arity: $arity, flags: &[$($flag),*], first_key: $fk, last_key: $lk, step: $st, group: $group, summary: $summary }
    };
}

pub static COMMANDS: &[CommandSpec] = &[
    spec!("get", 2, ["readonly", "fast"], 1, 1, 1, "string", "Returns the value of a key (the winning sibling)."),
    spec!("set", -3, ["write", "denyoom"], 1, 1, 1, "string", "Sets the value of a key, durably before the reply."),
    spec!("ping", -1, ["fast"], 0, 0, 0, "connection", "Returns the server's liveliness response."),
    spec!("echo", 2, ["fast"], 0, 0, 0, "connection", "Returns the given string."),
    spec!("quit", -1, ["fast", "no-auth"], 0, 0, 0, "connection", "Closes the connection."),
    spec!("auth", -2, ["fast", "no-auth"], 0, 0, 0, "connection", "Authenticates the connection."),
    spec!("hello", -1, ["fast", "no-auth"], 0, 0, 0, "connection", "Handshakes with the server (RESP2 or RESP3)."),
    spec!("select", 2, ["fast"], 0, 0, 0, "connection", "Changes the selected namespace (database)."),
    spec!("client", -2, ["slow"], 0, 0, 0, "connection", "CLIENT ID, SETNAME, GETNAME, SETINFO, LIST, INFO."),
    spec!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Sets the value of a key only when it does not exist."),
    spec!("mget", -2, ["readonly", "fast"], 1, -1, 1, "string", "Returns the values of several keys."),
    spec!("mset", -3, ["write", "denyoom"], 1, -1, 2, "string", "Sets several keys in one durable batch."),
    spec!("del", -2, ["write"], 1, -1, 1, "keyspace", "Deletes keys (delete markers until collected)."),
    spec!("unlink", -2, ["write", "fast"], 1, -1, 1, "keyspace", "Deletes keys (same as DEL)."),
    spec!("exists", -2, ["readonly", "fast"], 1, -1, 1, "keyspace", "Counts how many of the keys exist."),
    spec!("type", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Returns the type of a key (always string)."),
    spec!("ttl", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Returns -1 for a key (no expiry) or -2 when absent."),
    spec!("pttl", 2, ["readonly", "fast"], 1, 1, 1, "keyspace", "Like TTL, in milliseconds."),
    spec!("dbsize", 1, ["readonly", "fast"], 0, 0, 0, "server", "Returns the number of keys in the namespace."),
    spec!("keys", 2, ["readonly"], 0, 0, 0, "keyspace", "Returns all keys matching a pattern."),
    spec!("scan", -2, ["readonly"], 0, 0, 0, "keyspace", "Iterates over the keys of the namespace."),
    spec!("flushdb", -1, ["write"], 0, 0, 0, "server", "Deletes all keys of the namespace."),
    spec!("flushall", -1, ["write"], 0, 0, 0, "server", "Deletes all keys of all namespaces."),
    spec!("config", -2, ["admin"], 0, 0, 0, "server", "CONFIG GET parameters (CONFIG SET is not supported)."),
    spec!("info", -1, ["slow"], 0, 0, 0, "server", "Returns information and statistics about the server."),
    spec!("command", -1, ["slow"], 0, 0, 0, "server", "COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO."),
    spec!("cluster", -2, ["slow"], 0, 0, 0, "cluster", "CLUSTER INFO, MYID, NODES, SLOTS, SHARDS (any node serves any key)."),
    spec!("shoal.cluster", -1, ["slow"], 0, 0, 0, "shoal", "Cluster status: members, states, ring, partitions per node, anti-entropy and repair counters."),
    spec!("shoal.ring", -2, ["admin", "slow"], 0, 0, 0, "shoal", "Change the ring: JOIN id host:port, LEAVE id, REPLACE old new host:port."),
    spec!("shoal.siblings", 2, ["readonly"], 1, 1, 1, "shoal", "Returns all siblings of a key with their causal context."),
    spec!("shoal.put", -3, ["write", "denyoom"], 1, 1, 1, "shoal", "SHOAL.PUT key value [CONTEXT ctx]: write replacing only what ctx covers; replies [dot, superseded context]."),
    spec!("shoal.del", -2, ["write"], 1, 1, 1, "shoal", "SHOAL.DEL key [CONTEXT ctx]: delete what ctx covers; replies [dot, superseded context]."),
];

/// The command table entry for a request's first argument, case-insensitively and
/// without allocating (this runs once per request).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.len() == name.len() && c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether the command is a write that may be left pending (pipelined).
pub fn is_deferrable_write(spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|c| {
        matches!(
            c.name,
            "set" | "setnx" | "mset" | "del" | "unlink" | "shoal.put" | "shoal.del"
        )
    })
}

pub async fn execute(
    shared: &Shared,
    session: &mut Session,
    spec: Option<&'static CommandSpec>,
    args: Vec<Bytes>,
) -> Step {
    shared.commands_total.fetch_add(1, Ordering::Relaxed);
    let Some(spec) = spec else {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(&args[0])
        );
        for a in args.iter().skip(1).take(8) {
            msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        return err(msg);
    };
    let argc = args.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
        return err(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    if !session.authenticated && !spec.flags.contains(&"no-auth") {
        return err("NOAUTH Authentication required.");
    }
    let ns = session.namespace;
    match spec.name {
        "ping" => match args.len() {
            1 => Step::Reply(Reply::Simple("PONG".into())),
            2 => Step::Reply(Reply::Bulk(args[1].clone())),
            _ => err("ERR wrong number of arguments for 'ping' command"),
        },
        "echo" => Step::Reply(Reply::Bulk(args[1].clone())),
        "quit" => Step::Close(Reply::ok()),
        "auth" => Step::Reply(auth(shared, session, &args[1..])),
        "hello" => hello(shared, session, &args[1..]),
        "select" => match parse_int(&args[1]) {
            Some(db) if (0..shared.config.databases as i64).contains(&db) => {
                session.namespace = db as u8;
                Step::Reply(Reply::ok())
            }
            Some(_) => err("ERR DB index is out of range"),
            None => err("ERR value is not an integer or out of range"),
        },
        "client" => client(shared, session, &args[1..]),
        "config" => config(shared, &args[1..]),
        "info" => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: crate::info::render(shared, args.get(1).map(|a| lower(a))),
        }),
        "command" => command(&args[1..]),
        "cluster" | "shoal.cluster" | "shoal.ring" => cluster_only(shared, spec.name, &args).await,
        _ => data_command(&Backend::of(shared), ns, spec.name, &args).await,
    }
}

/// The data commands, each written once against `backend` (this node's
/// storage, or the cluster).
async fn data_command(backend: &Backend<'_>, ns: u8, name: &str, args: &[Bytes]) -> Step {
    match name {
        "get" => Step::Reply(one(backend.read(ns, &args[1..2]).await, winner)),
        "mget" => Step::Reply(Reply::Array(
            backend
                .read(ns, &args[1..])
                .await
                .into_iter()
                .map(|r| r.map_or_else(|e| e, winner))
                .collect(),
        )),
        "exists" => {
            let mut count = 0;
            for live in backend.live(ns, &args[1..]).await {
                match live {
                    Ok(live) => count += i64::from(live),
                    Err(reply) => return Step::Reply(reply),
                }
            }
            Step::Reply(Reply::Integer(count))
        }
        "type" | "ttl" | "pttl" => {
            let live = backend.live(ns, &args[1..2]).await.remove(0);
            Step::Reply(match (name, live) {
                (_, Err(reply)) => reply,
                ("type", Ok(true)) => Reply::Simple("string".into()),
                ("type", Ok(false)) => Reply::Simple("none".into()),
                (_, Ok(true)) => Reply::Integer(-1),
                (_, Ok(false)) => Reply::Integer(-2),
            })
        }
        "dbsize" => Step::Reply(
            backend
                .key_count(ns)
                .await
                .map_or_else(|e| e, Reply::Integer),
        ),
        "keys" => Step::Reply(match backend.keys(ns).await {
            Ok(keys) => Reply::Array(
                keys.into_iter()
                    .filter(|k| glob_match(&args[1], k, false))
                    .map(Reply::Bulk)
                    .collect(),
            ),
            Err(reply) => reply,
        }),
        "scan" => scan(backend, ns, &args[1..]).await,
        "set" => match parse_set(ns, &args[1..]) {
            Ok((op, shape)) => backend.write(vec![op], shape).await,
            Err(step) => step,
        },
        "setnx" => {
            let mut op = WriteOp::put(ns, args[1].clone(), args[2].clone());
            op.condition = Condition::IfAbsent;
            backend.write(vec![op], ReplyShape::SetNx).await
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                return err("ERR wrong number of arguments for 'mset' command");
            }
            let ops = args[1..]
                .chunks(2)
                .map(|kv| WriteOp::put(ns, kv[0].clone(), kv[1].clone()))
                .collect();
            backend.write(ops, ReplyShape::Ok).await
        }
        "del" | "unlink" => {
            let ops = args[1..]
                .iter()
                .map(|k| WriteOp::delete(ns, k.clone()))
                .collect();
            backend.write(ops, ReplyShape::Count).await
        }
        "flushdb" => Step::Reply(backend.flush(&[ns]).await),
        "flushall" => Step::Reply(backend.flush(&backend.namespaces_in_use()).await),
        "shoal.siblings" => Step::Reply(one(backend.read(ns, &args[1..2]).await, siblings_reply)),
        "shoal.put" | "shoal.del" => match parse_shoal_write(ns, name, &args[1..]) {
            Ok(op) => backend.write(vec![op], ReplyShape::ShoalWrite).await,
            Err(step) => step,
        },
        other => unreachable!("command {other} in the table but not dispatched"),
    }
}

/// CLUSTER, SHOAL.CLUSTER and SHOAL.RING: a cluster member's own commands.
async fn cluster_only(shared: &Shared, name: &str, args: &[Bytes]) -> Step {
    let Some(cluster) = &shared.cluster else {
        return err("ERR This instance has cluster support disabled");
    };
    match name {
        "cluster" => crate::routing::cluster_command(cluster, &args[1..]),
        "shoal.cluster" => Step::Reply(Reply::Verbatim {
            format: *b"txt",
            text: crate::routing::status_text(cluster),
        }),
        _ => crate::routing::ring_command(cluster, &args[1..]).await,
    }
}

/// The reply for the one key read, or its error.
fn one(mut reads: Vec<KeyRead>, f: impl FnOnce(Option<SiblingSet>) -> Reply) -> Reply {
    reads.remove(0).map_or_else(|e| e, f)
}

/// GET's reply: the deterministic winner's value, or nil.
fn winner(set: Option<SiblingSet>) -> Reply {
    set.and_then(|s| s.winner().and_then(|w| w.value.clone()))
        .map_or(Reply::Null, Reply::Bulk)
}

/// SET's options: the write and how its result is answered.
pub(crate) fn parse_set(ns: u8, args: &[Bytes]) -> Result<(WriteOp, ReplyShape), Step> {
    let mut op = WriteOp::put(ns, args[0].clone(), args[1].clone());
    let mut get = false;
    for opt in &args[2..] {
        match lower(opt).as_str() {
            "nx" if op.condition == Condition::Always => op.condition = Condition::IfAbsent,
            "xx" if op.condition == Condition::Always => op.condition = Condition::IfPresent,
            "get" => get = true,
            "ex" | "px" | "exat" | "pxat" | "keepttl" => {
                return Err(err(
                    "ERR Shoal does not support key expiry (EX, PX, EXAT, PXAT, KEEPTTL)",
                ))
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok((op, ReplyShape::Set { get }))
}

/// SHOAL.PUT / SHOAL.DEL with an optional CONTEXT.
pub(crate) fn parse_shoal_write(ns: u8, name: &str, args: &[Bytes]) -> Result<WriteOp, Step> {
    let is_put = name == "shoal.put";
    let fixed = if is_put { 2 } else { 1 };
    let mut op = if is_put {
        WriteOp::put(ns, args[0].clone(), args[1].clone())
    } else {
        WriteOp::delete(ns, args[0].clone())
    };
    match &args[fixed..] {
        [] => {}
        [word, ctx] if lower(word) == "context" => {
            match VersionVector::parse(&String::from_utf8_lossy(ctx)) {
                Some(vv) => op.covers = Covers::Context(vv),
                None => {
                    return Err(err(
                        "ERR invalid causal context (expected node:counter,...)",
                    ))
                }
            }
        }
        _ => return Err(syntax_error()),
    }
    Ok(op)
}

/// SHOAL.SIBLINGS's reply for a key's set.
pub(crate) fn siblings_reply(set: Option<shoal_engine::SiblingSet>) -> Reply {
    match set {
        None => Reply::Array(vec![Reply::Bulk(Bytes::new()), Reply::Array(vec![])]),
        Some(set) => Reply::Array(vec![
            Reply::Bulk(set.context.to_string().into()),
            Reply::Array(
                set.siblings
                    .iter()
                    .map(|s| {
                        Reply::Array(vec![
                            Reply::Bulk(s.dot.to_string().into()),
                            Reply::Integer(s.hlc.0 as i64),
                            s.value.clone().map_or(Reply::Null, Reply::Bulk),
                        ])
                    })
                    .collect(),
            ),
        ]),
    }
}

/// SCAN's arguments.
pub(crate) struct ScanArgs {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_filter: Option<String>,
}

impl ScanArgs {
    /// Whether a key passes MATCH and TYPE.
    pub fn wants(&self, key: &[u8]) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| glob_match(p, key, false))
            && self.type_filter.as_deref().is_none_or(|t| t == "string")
    }
}

/// SCAN: one step from the cursor (a slot on both backends), MATCH and TYPE
/// applied to what the step found.
async fn scan(backend: &Backend<'_>, ns: u8, args: &[Bytes]) -> Step {
    let scan = match parse_scan(args) {
        Ok(scan) => scan,
        Err(step) => return step,
    };
    match backend.scan(ns, scan.cursor, scan.count).await {
        Ok((keys, next)) => Step::Reply(Reply::Array(vec![
            Reply::Bulk(next.to_string().into()),
            Reply::Array(
                keys.into_iter()
                    .filter(|k| scan.wants(k))
                    .map(Reply::Bulk)
                    .collect(),
            ),
        ])),
        Err(reply) => Step::Reply(reply),
    }
}

pub(crate) fn parse_scan(args: &[Bytes]) -> Result<ScanArgs, Step> {
    let Some(cursor) = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Err(err("ERR invalid cursor"));
    };
    let mut pattern: Option<Bytes> = None;
    let mut count = 10usize;
    let mut type_filter: Option<String> = None;
    let mut rest = args[1..].chunks(2);
    for pair in rest.by_ref() {
        let [opt, value] = pair else {
            return Err(syntax_error());
        };
        match lower(opt).as_str() {
            "match" => pattern = Some(value.clone()),
            "count" => match parse_int(value) {
                Some(n) if n > 0 => count = n as usize,
                _ => return Err(err("ERR value is not an integer or out of range")),
            },
            "type" => type_filter = Some(lower(value)),
            _ => return Err(syntax_error()),
        }
    }
    Ok(ScanArgs {
        cursor,
        pattern,
        count,
        type_filter,
    })
}

fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let Some(expected) = &shared.config.requirepass else {
        return Reply::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    let (user, pass) = match args {
        [pass] => (&b"default"[..], pass),
        [user, pass] => (&user[..], pass),
        _ => return Reply::error("ERR syntax error"),
    };
    if user == b"default" && pass[..] == *expected.as_bytes() {
        session.authenticated = true;
        Reply::ok()
    } else {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Step {
    let mut protocol = session.protocol;
    let mut rest = args;
    if let Some(first) = args.first() {
        match parse_int(first) {
            Some(2) => protocol = Protocol::Resp2,
            Some(3) => protocol = Protocol::Resp3,
            Some(_) => return err("NOPROTO unsupported protocol version"),
            None => return err("ERR Protocol version is not an integer or out of range"),
        }
        rest = &args[1..];
    }
    let mut name = None;
    while !rest.is_empty() {
        match (lower(&rest[0]).as_str(), rest.len()) {
            ("auth", n) if n >= 3 => {
                if let Reply::Error(e) = auth(shared, session, &rest[1..3]) {
                    return err(e);
                }
                rest = &rest[3..];
            }
            ("setname", n) if n >= 2 => {
                name = Some(rest[1].clone());
                rest = &rest[2..];
            }
            _ => return syntax_error(),
        }
    }
    if !session.authenticated {
        return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    session.protocol = protocol;
    if name.is_some() {
        session.name = name;
    }
    let proto_number = if protocol == Protocol::Resp3 { 3 } else { 2 };
    let s = |v: &str| Reply::Bulk(Bytes::from(v.to_string()));
    Step::Reply(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_VERSION)),
        (s("proto"), Reply::Integer(proto_number)),
        (s("id"), Reply::Integer(session.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(vec![])),
    ]))
}

pub fn client_line(session: &Session) -> String {
    let text = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} name={} db={} resp={} lib-name={} lib-ver={}",
        session.id,
        session.peer,
        text(&session.name),
        session.namespace,
        if session.protocol == Protocol::Resp3 {
            3
        } else {
            2
        },
        text(&session.lib_name),
        text(&session.lib_ver),
    )
}

fn client(_shared: &Shared, session: &mut Session, args: &[Bytes]) -> Step {
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
        ("setinfo", 3) => {
            match lower(&args[1]).as_str() {
                "lib-name" => session.lib_name = Some(args[2].clone()),
                "lib-ver" => session.lib_ver = Some(args[2].clone()),
                _ => {
                    return err(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[1])
                    ))
                }
            }
            Step::Reply(Reply::ok())
        }
        ("info", 1) | ("list", 1) => {
            Step::Reply(Reply::Bulk(format!("{}\n", client_line(session)).into()))
        }
        (sub, _) => err(format!(
            "ERR unknown subcommand or wrong number of arguments for 'client|{sub}'. Shoal supports CLIENT ID, GETNAME, SETNAME, SETINFO, INFO and LIST (this connection only)."
        )),
    }
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
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        (
            "proto-max-bulk-len",
            shared.config.request_limits.bulk_len_max_bytes.to_string(),
        ),
        ("dir", shared.config.data_dir.clone()),
        ("timeout", "0".into()),
        ("cluster-enabled", "no".into()),
        ("shoal-fsync", fsync.as_str().into()),
    ]
}

fn config(shared: &Shared, args: &[Bytes]) -> Step {
    match lower(&args[0]).as_str() {
        "get" if args.len() >= 2 => {
            let params = config_params(shared);
            let mut pairs = Vec::new();
            for (name, value) in &params {
                if args[1..]
                    .iter()
                    .any(|p| glob_match(p, name.as_bytes(), true))
                {
                    pairs.push((
                        Reply::Bulk(Bytes::from_static(name.as_bytes())),
                        Reply::Bulk(value.clone().into()),
                    ));
                }
            }
            Step::Reply(Reply::Map(pairs))
        }
        "resetstat" => Step::Reply(Reply::ok()),
        "set" => err("ERR CONFIG SET is not supported by Shoal; edit the config file and restart"),
        _ => {
            err("ERR unknown subcommand or wrong number of arguments for 'config'. Try CONFIG GET.")
        }
    }
}

fn command_info(spec: &CommandSpec) -> Reply {
    let s = |v: &str| Reply::Simple(v.to_string());
    Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(spec.name.as_bytes())),
        Reply::Integer(spec.arity),
        Reply::Set(spec.flags.iter().map(|f| s(f)).collect()),
        Reply::Integer(spec.first_key),
        Reply::Integer(spec.last_key),
        Reply::Integer(spec.step),
        Reply::Set(vec![s(&format!("@{}", spec.group))]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

fn command_docs(spec: &CommandSpec) -> Reply {
    let b = |v: &str| Reply::Bulk(Bytes::from(v.to_string()));
    Reply::Map(vec![
        (b("summary"), b(spec.summary)),
        (b("since"), b("1.0.0")),
        (b("group"), b(spec.group)),
    ])
}

fn command(args: &[Bytes]) -> Step {
    let sub = args.first().map(|a| lower(a));
    let wanted = |a: &[Bytes]| -> Vec<&'static CommandSpec> {
        if a.is_empty() {
            COMMANDS.iter().collect()
        } else {
            a.iter().filter_map(|n| lookup(n)).collect()
        }
    };
    match sub.as_deref() {
        None => Step::Reply(Reply::Array(COMMANDS.iter().map(command_info).collect())),
        Some("count") => Step::Reply(Reply::Integer(COMMANDS.len() as i64)),
        Some("info") => Step::Reply(Reply::Array(
            args[1..]
                .iter()
                .map(|n| lookup(n).map_or(Reply::NullArray, command_info))
                .collect(),
        )),
        Some("docs") => Step::Reply(Reply::Map(
            wanted(&args[1..])
                .into_iter()
                .map(|c| (Reply::Bulk(Bytes::from_static(c.name.as_bytes())), command_docs(c)))
                .collect(),
        )),
        Some("list") => Step::Reply(Reply::Array(
            COMMANDS
                .iter()
                .map(|c| Reply::Bulk(Bytes::from_static(c.name.as_bytes())))
                .collect(),
        )),
        Some(other) => err(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO, COMMAND LIST."
        )),
    }
}
