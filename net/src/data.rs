//! The data commands, typed: each parsed once from its arguments into a
//! [`DataCommand`] (the command table in `commands` has already checked its
//! name and arity), then run against a `Backend`, this node's storage or the
//! cluster, by one piece of code for both. Adding a data command is one table
//! entry, one variant with its parse, and one arm of [`DataCommand::run`].
//!
//! Must not touch: connections and sessions (`commands`, `server`), how a read
//! or write travels (`backend`).

use crate::backend::{Backend, KeyRead};
use crate::expire::{self, TtlQuery};
use crate::glob::glob_match;
use crate::keyspace::Kind;
use crate::reply::{err, lower, parse_int, syntax_error, ReplyShape, Step};
use crate::resp::Reply;
use crate::types;
use bytes::Bytes;
use shoal_engine::fields::{
    deadlines_namespace, field_key, fields_namespace, lists_namespace, members_namespace,
    zset_members_namespace, zset_scores_namespace,
};
use shoal_engine::store::modify::{parse_f64, STRING_LEN_MAX_BYTES};
use shoal_engine::{Condition, Covers, Deadline, Modify, SiblingSet, VersionVector, WriteOp};

/// A data command and its parsed arguments.
pub enum DataCommand {
    Get(Bytes),
    MGet(Vec<Bytes>),
    Exists(Vec<Bytes>),
    Type(Bytes),
    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME.
    Ttl(Bytes, TtlQuery),
    DbSize,
    Keys {
        pattern: Bytes,
    },
    Scan(ScanArgs),
    /// SET, SETNX, MSET, SHOAL.PUT, SHOAL.DEL: writes, and how their results
    /// are answered.
    Write(Vec<WriteOp>, ReplyShape),
    /// DEL, UNLINK: strings and hashes.
    Del(Vec<Bytes>),
    FlushDb,
    FlushAll,
    /// SHOAL.SIBLINGS key [FIELD f | MEMBER m]: the stored key's namespace
    /// and name.
    Siblings(u8, Bytes),
    StrLen(Bytes),
    /// MSETNX: all the pairs, or none if any key exists.
    MSetNx(Vec<(Bytes, Bytes)>),
    /// RENAME / RENAMENX (`nx`).
    Rename {
        from: Bytes,
        to: Bytes,
        nx: bool,
    },
    /// COPY source destination [DB n] [REPLACE], and MOVE key db (a copy
    /// to another database that removes the source).
    Copy {
        from: Bytes,
        to: Bytes,
        to_ns: u8,
        replace: bool,
        remove_source: bool,
    },
    RandomKey,
    /// GETRANGE and SUBSTR: Redis's inclusive range, negative from the end.
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
}

impl DataCommand {
    /// `args[0]` is the command's name as sent; `name` is its table name;
    /// `databases` is how many namespaces exist (COPY ... DB n).
    /// `now_ms` (wall time) anchors relative deadlines (EX, EXPIRE); it is
    /// read only by the commands that may carry one (not by GET, whose read
    /// takes the time itself).
    pub fn parse(
        ns: u8,
        databases: u8,
        name: &str,
        args: &[Bytes],
        now_ms: impl FnOnce() -> u64,
    ) -> Result<DataCommand, Step> {
        let key = || args[1].clone();
        let keys = || args[1..].to_vec();
        Ok(match name {
            "get" => DataCommand::Get(key()),
            "mget" => DataCommand::MGet(keys()),
            "exists" | "touch" => DataCommand::Exists(keys()),
            "msetnx" => {
                if args.len().is_multiple_of(2) {
                    return Err(err("ERR wrong number of arguments for 'msetnx' command"));
                }
                let pairs = args[1..].chunks(2).map(|kv| (kv[0].clone(), kv[1].clone()));
                DataCommand::MSetNx(pairs.collect())
            }
            "rename" | "renamenx" => DataCommand::Rename {
                from: key(),
                to: args[2].clone(),
                nx: name == "renamenx",
            },
            "copy" => parse_copy(ns, databases, args)?,
            "move" => parse_move(databases, args)?,
            "randomkey" => DataCommand::RandomKey,
            "type" => DataCommand::Type(key()),
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
                DataCommand::Ttl(key(), TtlQuery::of(name))
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" | "setex" | "psetex"
            | "getex" => parse_expiry(ns, name, args, now_ms())?,
            "dbsize" => DataCommand::DbSize,
            "keys" => DataCommand::Keys { pattern: key() },
            "scan" => DataCommand::Scan(parse_scan(&args[1..])?),
            "set" | "setnx" | "mset" | "del" | "unlink" | "getset" | "getdel" => {
                parse_write(ns, name, args, now_ms())?
            }
            "strlen" => DataCommand::StrLen(key()),
            "getrange" | "substr" => match (parse_int(&args[2]), parse_int(&args[3])) {
                (Some(start), Some(end)) => DataCommand::GetRange {
                    key: key(),
                    start,
                    end,
                },
                _ => return Err(not_an_integer()),
            },
            "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "append" | "setrange" => {
                parse_modify(ns, name, args)?
            }
            "flushdb" => DataCommand::FlushDb,
            "flushall" => DataCommand::FlushAll,
            "shoal.siblings" => match &args[2..] {
                [] => DataCommand::Siblings(ns, key()),
                [option, element] => match element_namespace(ns, option) {
                    Some(cns) => DataCommand::Siblings(cns, field_key(&args[1], element).into()),
                    None => return Err(syntax_error()),
                },
                _ => return Err(syntax_error()),
            },
            "shoal.put" | "shoal.del" => {
                let op = parse_shoal_write(ns, name, &args[1..])?;
                DataCommand::Write(vec![op], ReplyShape::ShoalWrite)
            }
            other => unreachable!("command {other} in the table but not parsed"),
        })
    }

    /// Run against `backend` in namespace `ns`.
    pub async fn run(self, backend: &Backend<'_>, ns: u8) -> Step {
        match self {
            read @ (DataCommand::Get(_)
            | DataCommand::StrLen(_)
            | DataCommand::GetRange { .. }
            | DataCommand::Ttl(..)) => Step::Reply(read.string_read(backend, ns).await),
            DataCommand::MGet(keys) => Step::Reply(Reply::Array(
                backend
                    .read(ns, &keys)
                    .await
                    .into_iter()
                    .map(|r| r.map_or_else(|e| e, winner))
                    .collect(),
            )),
            DataCommand::Exists(keys) => Step::Reply(types::exists(backend, ns, &keys).await),
            DataCommand::Type(key) => Step::Reply(types::type_of(backend, ns, &key).await),
            DataCommand::Del(keys) => types::delete(backend, ns, keys).await,
            listing @ (DataCommand::DbSize | DataCommand::Keys { .. } | DataCommand::Scan(_)) => {
                listing.list(backend, ns, None).await
            }
            DataCommand::Write(ops, _) if is_modify(&ops) && backend.is_routed() => {
                Step::Reply(Reply::error(MODIFY_ON_CLUSTER))
            }
            DataCommand::Write(ops, shape) if counts_on_cluster(&ops) && backend.is_routed() => {
                backend.write(counted(ops), shape).await
            }
            DataCommand::Write(ops, shape) if touches(&ops) && backend.is_routed() => {
                touch_routed(backend, ns, ops, shape).await
            }
            DataCommand::Write(ops, shape) if matches!(shape, ReplyShape::ShoalWrite) => {
                backend.write(ops, shape).await
            }
            DataCommand::Write(ops, shape) => {
                match types::string_write(backend, ns, ops, &shape).await {
                    Ok(ops) => backend.write(ops, shape).await,
                    Err(step) => step,
                }
            }
            DataCommand::MSetNx(_) | DataCommand::Rename { .. } | DataCommand::Copy { .. }
                if backend.is_routed() =>
            {
                Step::Reply(Reply::error(ALONE_ON_CLUSTER))
            }
            DataCommand::MSetNx(pairs) => {
                msetnx(backend, ns, pairs).await.unwrap_or_else(Step::Reply)
            }
            DataCommand::Rename { from, to, nx } => rename(backend, ns, from, to, nx)
                .await
                .unwrap_or_else(Step::Reply),
            DataCommand::Copy {
                from,
                to,
                to_ns,
                replace,
                remove_source,
            } => copy(backend, ns, (from, to, to_ns), (replace, remove_source))
                .await
                .unwrap_or_else(Step::Reply),
            DataCommand::RandomKey => Step::Reply(random_key(backend, ns).await),
            DataCommand::FlushDb => Step::Reply(backend.flush(&database_namespaces(ns)).await),
            DataCommand::FlushAll => Step::Reply(backend.flush(&backend.namespaces_in_use()).await),
            DataCommand::Siblings(stored_ns, key) => {
                Step::Reply(one(backend.read(stored_ns, &[key]).await, siblings_reply))
            }
        }
    }
}

impl DataCommand {
    /// GET, STRLEN, GETRANGE, TTL and its kin: one key's string, and what a
    /// key holding none answers (on one node WRONGTYPE for a hash; TTL -1
    /// for a hash anywhere).
    async fn string_read(self, backend: &Backend<'_>, ns: u8) -> Reply {
        let key = match &self {
            DataCommand::Get(k)
            | DataCommand::StrLen(k)
            | DataCommand::Ttl(k, _)
            | DataCommand::GetRange { key: k, .. } => k.clone(),
            _ => unreachable!("not a string read"),
        };
        let now_ms = backend.now_ms();
        if !matches!(self, DataCommand::Ttl(..)) {
            if let Some(read) = backend.read_winner(ns, &key, now_ms) {
                return match read {
                    Ok(Some((value, _))) => self.string_reply(value),
                    Ok(None) => self.absent_string(backend, ns, &key).await,
                    Err(reply) => reply,
                };
            }
        }
        let read = match backend.read(ns, std::slice::from_ref(&key)).await.remove(0) {
            Ok(read) => read,
            Err(reply) => return reply,
        };
        let winner = read.as_ref().and_then(SiblingSet::string_value);
        match (winner, self) {
            (Some(_), DataCommand::Ttl(_, query)) => query.reply(read.as_ref(), now_ms),
            (Some(value), string) => string.string_reply(value),
            (None, string) => string.absent_string(backend, ns, &key).await,
        }
    }

    /// GET, STRLEN or GETRANGE of a key whose winner is `value`.
    fn string_reply(self, value: Bytes) -> Reply {
        match self {
            DataCommand::Get(_) => Reply::Bulk(value),
            DataCommand::StrLen(_) => Reply::Integer(value.len() as i64),
            DataCommand::GetRange { start, end, .. } => {
                Reply::Bulk(value.slice(redis_range(value.len(), start, end)))
            }
            _ => unreachable!("not a string read"),
        }
    }

    /// What a string read answers for a key holding no string.
    async fn absent_string(self, backend: &Backend<'_>, ns: u8, key: &Bytes) -> Reply {
        let absent = match self {
            DataCommand::Ttl(_, query) => {
                return types::ttl_of_absent(backend, ns, key, query).await
            }
            DataCommand::Get(_) => Reply::Null,
            DataCommand::StrLen(_) => Reply::Integer(0),
            _ => Reply::Bulk(Bytes::new()),
        };
        types::absent_or_wrong_type(backend, ns, key, absent).await
    }
}

/// Every namespace of database `ns`: what FLUSHDB empties.
fn database_namespaces(ns: u8) -> [u8; 7] {
    [
        ns,
        fields_namespace(ns),
        members_namespace(ns),
        lists_namespace(ns),
        zset_members_namespace(ns),
        zset_scores_namespace(ns),
        deadlines_namespace(ns),
    ]
}

/// The reply for the one key read, or its error.
fn one(mut reads: Vec<KeyRead>, f: impl FnOnce(Option<SiblingSet>) -> Reply) -> Reply {
    reads.remove(0).map_or_else(|e| e, f)
}

/// GET's reply: the deterministic winner's value, or nil.
fn winner(set: Option<SiblingSet>) -> Reply {
    winner_bytes(set).map_or(Reply::Null, Reply::Bulk)
}

/// Why APPEND and SETRANGE are refused on a cluster, for now.
const MODIFY_ON_CLUSTER: &str = "ERR APPEND and SETRANGE are not supported on a cluster yet: two nodes modifying one value at once would each write their own result, and one update would be lost; they work on a single node";

/// Why MSETNX, RENAME, RENAMENX and COPY are refused on a cluster, for now.
const ALONE_ON_CLUSTER: &str = "ERR MSETNX, RENAME, RENAMENX, COPY and MOVE are not supported on a cluster yet: their keys live on different replicas, and nothing yet makes the read and the writes one step there; they work on a single node";

/// Whether `key` holds a string or a hash.
async fn live(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<bool, Reply> {
    match types::exists(backend, ns, std::slice::from_ref(key)).await {
        Reply::Integer(n) => Ok(n > 0),
        reply => Err(reply),
    }
}

/// The writes that give `to` in `to_ns` what `from` holds (RENAME, COPY): its
/// string with its deadline, or every element of its collection; `None`:
/// `from` holds nothing.
async fn copy_of(
    backend: &Backend<'_>,
    ns: u8,
    from: &Bytes,
    to_ns: u8,
    to: &Bytes,
) -> Result<Option<Vec<WriteOp>>, Reply> {
    let read = backend
        .read(ns, std::slice::from_ref(from))
        .await
        .remove(0)?;
    if let Some(winner) = read.as_ref().and_then(|s| s.winner()) {
        let Some(value) = read.as_ref().and_then(SiblingSet::string_value) else {
            return Ok(None);
        };
        let mut op = WriteOp::put(to_ns, to.clone(), value);
        op.deadline = winner.deadline_ms.map_or(Deadline::Never, Deadline::At);
        return Ok(Some(vec![op]));
    }
    let Some(kind) = backend.collection_here(ns, from).await? else {
        return Ok(None);
    };
    let elements = backend.elements(ns, kind, from).await?;
    let puts = elements.into_iter().filter_map(|(element, set)| {
        let value = set.winner()?.value.clone()?;
        let stored = Bytes::from(field_key(to, &element));
        Some(WriteOp::put(kind.namespace(to_ns), stored, value))
    });
    let mut puts: Vec<WriteOp> = puts.collect();
    if kind == Kind::ZSet {
        puts.extend(crate::zset::index_of(&puts, to, kind.namespace(to_ns)));
    }
    if let Some(at_ms) = backend.collection_deadline(ns, from) {
        puts.push(crate::collection_ttl::deadline_record(
            to_ns, kind, to, at_ms,
        ));
    }
    Ok(Some(puts))
}

/// MSETNX (under the node's exclusive turn): 0 if any key exists, else every
/// pair written in one batch and 1. `Err`: a read's error reply.
async fn msetnx(backend: &Backend<'_>, ns: u8, pairs: Vec<(Bytes, Bytes)>) -> Result<Step, Reply> {
    let keys: Vec<Bytes> = pairs.iter().map(|(k, _)| k.clone()).collect();
    match types::exists(backend, ns, &keys).await {
        Reply::Integer(0) => {}
        Reply::Integer(_) => return Ok(Step::Reply(Reply::Integer(0))),
        reply => return Err(reply),
    }
    let ops = pairs
        .into_iter()
        .map(|(k, v)| WriteOp::put(ns, k, v))
        .collect();
    Ok(backend.write(ops, ReplyShape::One).await)
}

/// RENAME / RENAMENX (under the node's exclusive turn): the value written
/// under the new name and the old one deleted, in one batch.
async fn rename(
    backend: &Backend<'_>,
    ns: u8,
    from: Bytes,
    to: Bytes,
    nx: bool,
) -> Result<Step, Reply> {
    let Some(copy) = copy_of(backend, ns, &from, ns, &to).await? else {
        return Ok(err("ERR no such key"));
    };
    if from == to {
        return Ok(Step::Reply(if nx {
            Reply::Integer(0)
        } else {
            Reply::ok()
        }));
    }
    if nx && live(backend, ns, &to).await? {
        return Ok(Step::Reply(Reply::Integer(0)));
    }
    let shape = if nx { ReplyShape::One } else { ReplyShape::Ok };
    // One batch, in order: the destination emptied, filled, the source gone.
    let mut ops = types::key_deletes(backend, ns, &to).await?;
    ops.extend(copy);
    ops.extend(types::key_deletes(backend, ns, &from).await?);
    Ok(backend.write(ops, shape).await)
}

/// COPY (under the node's exclusive turn): 1 once written, 0 when the source
/// is absent or the destination exists without REPLACE.
async fn copy(
    backend: &Backend<'_>,
    ns: u8,
    (from, to, to_ns): (Bytes, Bytes, u8),
    (replace, remove_source): (bool, bool),
) -> Result<Step, Reply> {
    if from == to && ns == to_ns {
        return Ok(err("ERR source and destination objects are the same"));
    }
    let Some(copy) = copy_of(backend, ns, &from, to_ns, &to).await? else {
        return Ok(Step::Reply(Reply::Integer(0)));
    };
    if !replace && live(backend, to_ns, &to).await? {
        return Ok(Step::Reply(Reply::Integer(0)));
    }
    let mut ops = types::key_deletes(backend, to_ns, &to).await?;
    ops.extend(copy);
    if remove_source {
        ops.extend(types::key_deletes(backend, ns, &from).await?);
    }
    Ok(backend.write(ops, ReplyShape::One).await)
}

/// RANDOMKEY: one live key of database `ns`, picked at random; nil when
/// there is none.
async fn random_key(backend: &Backend<'_>, ns: u8) -> Reply {
    match backend.keys(ns).await {
        Ok(keys) => crate::elements::pick(&keys, None, backend.entropy())
            .and_then(|mut one| one.pop())
            .map_or(Reply::Null, Reply::Bulk),
        Err(reply) => reply,
    }
}

/// EXPIRE and its kin, PERSIST, SETEX, PSETEX, GETEX (`expire`).
fn parse_expiry(ns: u8, name: &str, args: &[Bytes], now_ms: u64) -> Result<DataCommand, Step> {
    Ok(match name {
        "persist" => DataCommand::Write(
            vec![expire::persist(ns, args[1].clone())],
            ReplyShape::SetNx,
        ),
        "setex" | "psetex" => DataCommand::Write(
            vec![expire::parse_setex(ns, name, args, now_ms)?],
            ReplyShape::Ok,
        ),
        "getex" => match expire::parse_getex(ns, args, now_ms)? {
            Some(op) => DataCommand::Write(vec![op], ReplyShape::Previous),
            None => DataCommand::Get(args[1].clone()),
        },
        _ => DataCommand::Write(
            vec![expire::parse_expire(ns, name, args, now_ms)?],
            ReplyShape::SetNx,
        ),
    })
}

/// COPY's options: `DB n` (a namespace below `databases`) and `REPLACE`.
/// SET, SETNX, MSET, DEL, UNLINK, GETSET, GETDEL: writes, and how their
/// results are answered.
fn parse_write(ns: u8, name: &str, args: &[Bytes], now_ms: u64) -> Result<DataCommand, Step> {
    let key = || args[1].clone();
    Ok(match name {
        "set" => {
            let (op, shape) = expire::parse_set(ns, &args[1..], now_ms)?;
            DataCommand::Write(vec![op], shape)
        }
        "setnx" => {
            let mut op = WriteOp::put(ns, args[1].clone(), args[2].clone());
            op.condition = Condition::IfAbsent;
            DataCommand::Write(vec![op], ReplyShape::SetNx)
        }
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(err("ERR wrong number of arguments for 'mset' command"));
            }
            let ops = args[1..]
                .chunks(2)
                .map(|kv| WriteOp::put(ns, kv[0].clone(), kv[1].clone()))
                .collect();
            DataCommand::Write(ops, ReplyShape::Ok)
        }
        "del" | "unlink" => DataCommand::Del(args[1..].to_vec()),
        "getset" => {
            let op = WriteOp::put(ns, args[1].clone(), args[2].clone());
            DataCommand::Write(vec![op], ReplyShape::Previous)
        }
        "getdel" => DataCommand::Write(vec![WriteOp::delete(ns, key())], ReplyShape::Previous),
        other => unreachable!("{other} is not a plain write"),
    })
}

fn parse_copy(ns: u8, databases: u8, args: &[Bytes]) -> Result<DataCommand, Step> {
    let (mut to_ns, mut replace) = (ns, false);
    let mut rest = args[3..].iter();
    while let Some(word) = rest.next() {
        match lower(word).as_str() {
            "replace" => replace = true,
            "db" => match rest.next().and_then(|db| parse_int(db)) {
                Some(db) if (0..i64::from(databases)).contains(&db) => to_ns = db as u8,
                Some(_) => return Err(err("ERR DB index is out of range")),
                None => return Err(not_an_integer()),
            },
            _ => return Err(syntax_error()),
        }
    }
    Ok(DataCommand::Copy {
        from: args[1].clone(),
        to: args[2].clone(),
        to_ns,
        replace,
        remove_source: false,
    })
}

/// MOVE key db: a copy into database `db` (never replacing) that removes
/// the source.
fn parse_move(databases: u8, args: &[Bytes]) -> Result<DataCommand, Step> {
    let to_ns = match parse_int(&args[2]) {
        Some(db) if (0..i64::from(databases)).contains(&db) => db as u8,
        Some(_) => return Err(err("ERR DB index is out of range")),
        None => return Err(not_an_integer()),
    };
    Ok(DataCommand::Copy {
        from: args[1].clone(),
        to: args[1].clone(),
        to_ns,
        replace: false,
        remove_source: true,
    })
}

/// A read-modify-write: INCR and the like, EXPIRE, PERSIST, GETEX with an
/// option, SET KEEPTTL (the new value keeps the current one's deadline).
/// A read-modify-write a cluster refuses: APPEND, SETRANGE (SETBIT in
/// `bits.rs`). INCR, INCRBYFLOAT and their kin count per node
/// (`counts_on_cluster`); EXPIRE and its kin, PERSIST, GETEX and SET KEEPTTL
/// read the key from a quorum, then rewrite what they read.
fn is_modify(ops: &[WriteOp]) -> bool {
    ops.iter().any(|op| match op.modify {
        Some(Modify::IncrBy(_) | Modify::IncrByFloat(_)) => ops.len() > 1,
        Some(Modify::Touch | Modify::CountBy(_) | Modify::CountByFloat(_)) | None => false,
        Some(_) => true,
    })
}

/// EXPIRE and its kin, PERSIST, GETEX with an option: one key's deadline.
fn touches(ops: &[WriteOp]) -> bool {
    matches!(ops, [op] if op.modify == Some(Modify::Touch))
}

/// A cluster's EXPIRE (and kin): a string key's value rewritten with its new
/// deadline by its coordinator. A key that holds no string is looked up
/// first: a collection's deadline is refused plainly, and an absent key
/// answers as Redis does without a write.
async fn touch_routed(backend: &Backend<'_>, ns: u8, ops: Vec<WriteOp>, shape: ReplyShape) -> Step {
    let key = ops[0].key.clone();
    match backend.read(ns, std::slice::from_ref(&key)).await.remove(0) {
        Err(reply) => return Step::Reply(reply),
        Ok(Some(set)) if set.string_value().is_some() => return backend.write(ops, shape).await,
        Ok(_) => {}
    }
    Step::Reply(match backend.kind_of(ns, &key).await {
        Err(reply) => reply,
        Ok(Some(Kind::String) | None) => match shape {
            ReplyShape::SetNx => Reply::Integer(0),
            _ => Reply::Null,
        },
        Ok(Some(_)) if matches!(shape, ReplyShape::SetNx) => {
            Reply::error(EXPIRE_COLLECTION_ON_CLUSTER)
        }
        Ok(Some(_)) => Reply::error(types::WRONGTYPE),
    })
}

/// Why EXPIRE of a hash, set, list or sorted set is refused on a cluster.
const EXPIRE_COLLECTION_ON_CLUSTER: &str = "ERR EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT and PERSIST of a hash, set, list or sorted set are not supported on a cluster yet (a collection's deadline is one record of its own, not yet replicated with a merge rule); they work on a single node, and on strings here";

/// INCR, DECR, INCRBY, DECRBY or INCRBYFLOAT of one key: on a cluster, a
/// counter that merges per node (`shoal_engine::counter`).
fn counts_on_cluster(ops: &[WriteOp]) -> bool {
    matches!(ops, [op] if matches!(op.modify, Some(Modify::IncrBy(_) | Modify::IncrByFloat(_))))
}

/// `ops` (see `counts_on_cluster`) as a cluster counts them.
fn counted(mut ops: Vec<WriteOp>) -> Vec<WriteOp> {
    for op in &mut ops {
        op.modify = op.modify.take().map(Modify::per_node);
    }
    ops
}

fn not_an_integer() -> Step {
    err("ERR value is not an integer or out of range")
}

/// The winner's value, if the key holds one.
fn winner_bytes(set: Option<SiblingSet>) -> Option<Bytes> {
    set.and_then(|s| s.string_value())
}

/// GETRANGE's byte range of a value `len` bytes long: `start` and `end` are
/// inclusive, negative ones count from the end; empty when they cross.
fn redis_range(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    let len = len as i64;
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    if len == 0 || start > end {
        return 0..0;
    }
    start as usize..end as usize + 1
}

/// INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT, APPEND, SETRANGE: a write the
/// store computes from the current value (see `shoal_engine::Modify`).
fn parse_modify(ns: u8, name: &str, args: &[Bytes]) -> Result<DataCommand, Step> {
    let key = args[1].clone();
    let by = || parse_int(&args[2]).ok_or_else(not_an_integer);
    let (modify, shape) = match name {
        "incr" => (Modify::IncrBy(1), ReplyShape::NewInteger),
        "decr" => (Modify::IncrBy(-1), ReplyShape::NewInteger),
        "incrby" => (Modify::IncrBy(by()?), ReplyShape::NewInteger),
        "decrby" => {
            let by = by()?
                .checked_neg()
                .ok_or_else(|| err("ERR decrement would overflow"))?;
            (Modify::IncrBy(by), ReplyShape::NewInteger)
        }
        "incrbyfloat" => match parse_f64(&args[2]) {
            Some(by) => (Modify::IncrByFloat(by), ReplyShape::NewValue),
            // Redis reads "inf" as a float, and refuses the sum.
            None if lower(&args[2]).trim_start_matches(['+', '-']) == "inf" => {
                return Err(err("ERR increment would produce NaN or Infinity"))
            }
            None => return Err(err("ERR value is not a valid float")),
        },
        "append" => (Modify::Append(args[2].clone()), ReplyShape::NewLength),
        _ => {
            let offset = parse_int(&args[2]).ok_or_else(not_an_integer)?;
            if offset < 0 {
                return Err(err("ERR offset is out of range"));
            }
            if offset as u64 + args[3].len() as u64 > STRING_LEN_MAX_BYTES as u64 {
                return Err(err(
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                ));
            }
            if args[3].is_empty() {
                // Redis writes nothing and answers the current length.
                return Ok(DataCommand::StrLen(key));
            }
            let modify = Modify::SetRange {
                offset_bytes: offset as usize,
                bytes: args[3].clone(),
            };
            (modify, ReplyShape::NewLength)
        }
    };
    Ok(DataCommand::Write(
        vec![WriteOp::modify(ns, key, modify)],
        shape,
    ))
}

/// SHOAL.PUT / SHOAL.DEL with an optional CONTEXT.
fn parse_shoal_write(ns: u8, name: &str, args: &[Bytes]) -> Result<WriteOp, Step> {
    let is_put = name == "shoal.put";
    let fixed = if is_put { 2 } else { 1 };
    let mut op = if is_put {
        WriteOp::put(ns, args[0].clone(), args[1].clone())
    } else {
        WriteOp::delete(ns, args[0].clone())
    };
    for pair in args[fixed..].chunks(2) {
        match (lower(&pair[0]).as_str(), pair.get(1)) {
            ("context", Some(ctx)) => match VersionVector::parse(&String::from_utf8_lossy(ctx)) {
                Some(vv) => op.covers = Covers::Context(vv),
                None => {
                    return Err(err(
                        "ERR invalid causal context (expected node:counter,...)",
                    ))
                }
            },
            // A field of the hash (a member of the set) named by the key:
            // its own register.
            ("field" | "member", Some(element)) if op.namespace == ns => {
                op.key = field_key(&op.key, element).into();
                op.namespace = element_namespace(ns, &pair[0]).expect("FIELD or MEMBER");
            }
            // SHOAL.PUT's value expires at this wall time (ms since the epoch).
            ("pxat", Some(at)) if is_put => match parse_int(at) {
                Some(at) if at > 0 => op.deadline = Deadline::At(at as u64),
                _ => return Err(err("ERR invalid expire time in 'shoal.put' command")),
            },
            _ => return Err(syntax_error()),
        }
    }
    Ok(op)
}

/// The namespace `FIELD` (hash fields) or `MEMBER` (set members) names in
/// database `ns`.
fn element_namespace(ns: u8, option: &[u8]) -> Option<u8> {
    match lower(option).as_str() {
        "field" => Some(fields_namespace(ns)),
        "member" => Some(members_namespace(ns)),
        _ => None,
    }
}

/// SHOAL.SIBLINGS's reply for a key's set.
fn siblings_reply(set: Option<SiblingSet>) -> Reply {
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
pub struct ScanArgs {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_filter: Option<String>,
}

impl ScanArgs {
    /// Whether a key of type `type_name` passes MATCH and TYPE.
    pub fn wants(&self, key: &[u8], type_name: &str) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| glob_match(p, key, false))
            && self.type_filter.as_deref().is_none_or(|t| t == type_name)
    }
}

/// SCAN: one step from the cursor (a slot on both backends), MATCH and TYPE
/// applied to what the step found.
/// Keeps only some keys in a listing (DBSIZE, KEYS, SCAN).
pub type KeyFilter<'f> = &'f (dyn Fn(&[u8]) -> bool + Sync);

impl DataCommand {
    /// DBSIZE, KEYS and SCAN, keeping only the keys `keep` accepts (all when
    /// `None`): a Redis Cluster client's view of one node counts only the
    /// slots it masters. Any other command runs as [`DataCommand::run`].
    pub async fn list(self, backend: &Backend<'_>, ns: u8, filter: Option<KeyFilter<'_>>) -> Step {
        let keep = |k: &[u8]| filter.is_none_or(|f| f(k));
        let reply = match self {
            // One node counts without listing.
            DataCommand::DbSize if filter.is_none() && !backend.is_routed() => backend
                .key_count(ns)
                .await
                .map_or_else(|e| e, Reply::Integer),
            DataCommand::DbSize => match backend.keys(ns).await {
                Ok(keys) => Reply::Integer(keys.iter().filter(|k| keep(k)).count() as i64),
                Err(reply) => reply,
            },
            DataCommand::Keys { pattern } => match backend.keys(ns).await {
                Ok(keys) => Reply::Array(
                    keys.into_iter()
                        .filter(|k| keep(k) && glob_match(&pattern, k, false))
                        .map(Reply::Bulk)
                        .collect(),
                ),
                Err(reply) => reply,
            },
            DataCommand::Scan(scan) => match backend.scan(ns, scan.cursor, scan.count).await {
                Ok(step) => {
                    let typed = step.keys.into_iter().map(|(k, kind)| (k, kind.name()));
                    Reply::Array(vec![
                        Reply::Bulk(step.next.to_string().into()),
                        Reply::Array(
                            typed
                                .filter(|(k, t)| keep(k) && scan.wants(k, t))
                                .map(|(k, _)| Reply::Bulk(k))
                                .collect(),
                        ),
                    ])
                }
                Err(reply) => reply,
            },
            other => return Box::pin(other.run(backend, ns)).await,
        };
        Step::Reply(reply)
    }
}

fn parse_scan(args: &[Bytes]) -> Result<ScanArgs, Step> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn refusal(step: Step) -> String {
        match step {
            Step::Reply(Reply::Error(e)) => e,
            _ => panic!("not an error reply"),
        }
    }

    #[test]
    fn a_command_is_parsed_once_into_what_it_does() {
        let Ok(DataCommand::Write(ops, ReplyShape::Set { get: true })) =
            DataCommand::parse(3, 16, "set", &args(&["SET", "k", "v", "nx", "GET"]), || 0)
        else {
            panic!("SET k v NX GET");
        };
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].namespace, 3);
        assert_eq!(ops[0].condition, Condition::IfAbsent);
        let Ok(DataCommand::Del(keys)) =
            DataCommand::parse(0, 16, "unlink", &args(&["UNLINK", "a", "b"]), || 0)
        else {
            panic!("UNLINK a b");
        };
        assert_eq!(keys.len(), 2);
        let Ok(DataCommand::Write(ops, ReplyShape::ShoalWrite)) = DataCommand::parse(
            2,
            16,
            "shoal.put",
            &args(&["SHOAL.PUT", "h", "v", "FIELD", "f"]),
            || 0,
        ) else {
            panic!("SHOAL.PUT h v FIELD f");
        };
        assert_eq!(ops[0].namespace, fields_namespace(2));
        assert_eq!(&ops[0].key[..], &field_key(b"h", b"f")[..]);
        assert!(matches!(
            DataCommand::parse(0, 16, "pttl", &args(&["PTTL", "k"]), || 0),
            Ok(DataCommand::Ttl(
                _,
                TtlQuery {
                    in_ms: true,
                    absolute: false
                }
            ))
        ));
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_runs() {
        let cases: [(&str, &[&str], &str); 5] = [
            ("set", &["SET", "k", "v", "EX", "0"], "invalid expire time"),
            ("set", &["SET", "k", "v", "NX", "XX"], "syntax error"),
            (
                "mset",
                &["MSET", "a", "1", "b"],
                "wrong number of arguments",
            ),
            ("scan", &["SCAN", "x"], "invalid cursor"),
            (
                "shoal.put",
                &["SHOAL.PUT", "k", "v", "CONTEXT", "??"],
                "causal context",
            ),
        ];
        for (name, words, why) in cases {
            let Err(step) = DataCommand::parse(0, 16, name, &args(words), || 0) else {
                panic!("{words:?} parsed");
            };
            let message = refusal(step);
            assert!(message.contains(why), "{words:?}: {message}");
        }
    }
}
