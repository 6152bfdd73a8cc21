//! The hash commands (HSET, HGET, HGETALL, HDEL, HINCRBY, ...), typed: parsed
//! once, then run against a `Backend`. Each field is its own stored key
//! (`shoal_engine::fields`), so a field write costs that field's bytes, and on
//! a cluster fields merge as an add-wins map: HDEL removes only the field
//! versions its coordinator holds. A hash exists while one of its fields
//! holds a value; its last HDEL removes it.
//!
//! Types: on one node a hash and a string never share a key (WRONGTYPE, and
//! SET replaces a hash, as in Redis). On a cluster, hash commands refuse a
//! string key, but string commands do not look for hashes (that would cost
//! every SET a listing round), so a SET and an HSET of one key, concurrent or
//! not, leave both: string commands see the string, hash commands the hash,
//! TYPE says string, DEL removes both.
//!
//! Must not touch: how reads and writes travel (`backend`), connections.

use crate::backend::Backend;
use crate::keyspace::Kind;
use crate::reply::{err, parse_int, ReplyShape, Step};
use crate::resp::Reply;
use crate::types::{len_reply, refuse_other};
use bytes::Bytes;
use shoal_engine::fields::{field_key, fields_namespace};
use shoal_engine::store::modify::parse_f64;
use shoal_engine::{Condition, Modify, SiblingSet, WriteOp};

/// A hash command and its parsed arguments.
pub enum HashCommand {
    /// HSET (`added`: answers how many fields were new) and HMSET (OK).
    Set {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
        added: bool,
    },
    SetNx(Bytes, Bytes, Bytes),
    Get(Bytes, Bytes),
    MGet(Bytes, Vec<Bytes>),
    Exists(Bytes, Bytes),
    StrLen(Bytes, Bytes),
    GetAll(Bytes),
    Keys(Bytes),
    Vals(Bytes),
    Len(Bytes),
    Del(Bytes, Vec<Bytes>),
    /// HINCRBY and HINCRBYFLOAT: a read-modify-write of one field.
    Incr(Bytes, Bytes, Modify),
    /// HRANDFIELD key [count [WITHVALUES]].
    RandField {
        key: Bytes,
        count: Option<i64>,
        with_values: bool,
        /// RESP3 pairs each field with its value.
        pairs: bool,
    },
    /// HSCAN key cursor [MATCH pattern] [COUNT n]: the whole hash in one step.
    Scan(Bytes, Option<Bytes>),
}

impl HashCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    /// `resp3`: the connection speaks RESP3 (HRANDFIELD's pairs).
    pub fn parse(name: &str, args: &[Bytes], resp3: bool) -> Result<HashCommand, Step> {
        let key = args[1].clone();
        let field = || args[2].clone();
        Ok(match name {
            "hset" | "hmset" => {
                if !args.len().is_multiple_of(2) {
                    return Err(err(format!(
                        "ERR wrong number of arguments for '{name}' command"
                    )));
                }
                let pairs = args[2..].chunks(2).map(|p| (p[0].clone(), p[1].clone()));
                HashCommand::Set {
                    key,
                    pairs: pairs.collect(),
                    added: name == "hset",
                }
            }
            "hsetnx" => HashCommand::SetNx(key, field(), args[3].clone()),
            "hget" => HashCommand::Get(key, field()),
            "hmget" => HashCommand::MGet(key, args[2..].to_vec()),
            "hexists" => HashCommand::Exists(key, field()),
            "hstrlen" => HashCommand::StrLen(key, field()),
            "hgetall" => HashCommand::GetAll(key),
            "hkeys" => HashCommand::Keys(key),
            "hvals" => HashCommand::Vals(key),
            "hlen" => HashCommand::Len(key),
            "hdel" => HashCommand::Del(key, args[2..].to_vec()),
            "hincrby" => match parse_int(&args[3]) {
                Some(by) => HashCommand::Incr(key, field(), Modify::IncrBy(by)),
                None => return Err(err("ERR value is not an integer or out of range")),
            },
            "hincrbyfloat" => match parse_f64(&args[3]) {
                Some(by) => HashCommand::Incr(key, field(), Modify::IncrByFloat(by)),
                // Redis reads "inf" as a float, and refuses it.
                None if crate::reply::lower(&args[3]).trim_start_matches(['+', '-']) == "inf" => {
                    return Err(err("ERR value is NaN or Infinity"))
                }
                None => return Err(err("ERR value is not a valid float")),
            },
            "hrandfield" => parse_randfield(key, &args[2..], resp3)?,
            "hscan" => HashCommand::Scan(key, crate::elements::parse_scan(&args[2..])?),
            other => unreachable!("hash command {other} in the table but not parsed"),
        })
    }

    /// Run against `backend` in database `ns`.
    pub async fn run(self, backend: &Backend<'_>, ns: u8) -> Step {
        match self.run_checked(backend, ns).await {
            Ok(step) => step,
            Err(reply) => Step::Reply(reply),
        }
    }

    async fn run_checked(self, backend: &Backend<'_>, ns: u8) -> Result<Step, Reply> {
        let fns = fields_namespace(ns);
        let stored = |key: &Bytes, field: &Bytes| Bytes::from(field_key(key, field));
        Ok(match self {
            HashCommand::Set { key, pairs, added } => {
                refuse_other_type(backend, ns, &key).await?;
                let ops = pairs
                    .iter()
                    .map(|(f, v)| WriteOp::put(fns, stored(&key, f), v.clone()))
                    .collect();
                let shape = if added {
                    ReplyShape::Added
                } else {
                    ReplyShape::Ok
                };
                backend.write(ops, shape).await
            }
            HashCommand::SetNx(key, field, value) => {
                refuse_other_type(backend, ns, &key).await?;
                let mut op = WriteOp::put(fns, stored(&key, &field), value);
                op.condition = Condition::IfAbsent;
                backend.write(vec![op], ReplyShape::SetNx).await
            }
            HashCommand::Incr(key, field, modify) => {
                incr(backend, ns, (key, field), modify).await?
            }
            HashCommand::Del(key, fields) => {
                refuse_other_type(backend, ns, &key).await?;
                let ops = fields
                    .iter()
                    .map(|f| WriteOp::delete(fns, stored(&key, f)))
                    .collect();
                backend.write(ops, ReplyShape::Count).await
            }
            HashCommand::Get(key, field) => {
                let mut sets = read_fields(backend, ns, &key, &[field]).await?;
                Step::Reply(value_of(sets.remove(0)).map_or(Reply::Null, Reply::Bulk))
            }
            HashCommand::MGet(key, fields) => {
                let sets = read_fields(backend, ns, &key, &fields).await?;
                let values = sets
                    .into_iter()
                    .map(|s| value_of(s).map_or(Reply::Null, Reply::Bulk));
                Step::Reply(Reply::Array(values.collect()))
            }
            HashCommand::Exists(key, field) => {
                let mut sets = read_fields(backend, ns, &key, &[field]).await?;
                Step::Reply(Reply::Integer(i64::from(
                    value_of(sets.remove(0)).is_some(),
                )))
            }
            HashCommand::StrLen(key, field) => {
                let mut sets = read_fields(backend, ns, &key, &[field]).await?;
                let len = value_of(sets.remove(0)).map_or(0, |v| v.len());
                Step::Reply(Reply::Integer(len as i64))
            }
            HashCommand::Len(key) => Step::Reply(len_reply(backend, ns, &key, Kind::Hash).await?),
            whole => Step::Reply(whole.run_whole(backend, ns).await?),
        })
    }

    /// The commands that read every field.
    async fn run_whole(self, backend: &Backend<'_>, ns: u8) -> Result<Reply, Reply> {
        let key = match &self {
            HashCommand::GetAll(k)
            | HashCommand::Keys(k)
            | HashCommand::Vals(k)
            | HashCommand::RandField { key: k, .. }
            | HashCommand::Scan(k, _) => k.clone(),
            _ => unreachable!("a single-field command"),
        };
        let fields = all_fields(backend, ns, &key).await?;
        Ok(match self {
            HashCommand::GetAll(_) => Reply::Map(
                fields
                    .into_iter()
                    .map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v)))
                    .collect(),
            ),
            HashCommand::Keys(_) => {
                Reply::Array(fields.into_iter().map(|(f, _)| Reply::Bulk(f)).collect())
            }
            HashCommand::Vals(_) => {
                Reply::Array(fields.into_iter().map(|(_, v)| Reply::Bulk(v)).collect())
            }
            HashCommand::RandField {
                count,
                with_values,
                pairs,
                ..
            } => rand_fields(fields, count, (with_values, pairs), backend.entropy()),
            HashCommand::Scan(_, pattern) => {
                let matching = fields.into_iter().filter(|(f, _)| {
                    pattern
                        .as_ref()
                        .is_none_or(|p| crate::glob::glob_match(p, f, false))
                });
                let flat = matching.flat_map(|(f, v)| [Reply::Bulk(f), Reply::Bulk(v)]);
                Reply::Array(vec![
                    Reply::Bulk(Bytes::from_static(b"0")),
                    Reply::Array(flat.collect()),
                ])
            }
            _ => unreachable!("a single-field command"),
        })
    }
}

/// HINCRBY, HINCRBYFLOAT: a read-modify-write of the field; on a cluster
/// they count per node (`Modify::CountBy`, `CountByFloat`), as INCRBY and
/// INCRBYFLOAT a key do.
async fn incr(
    backend: &Backend<'_>,
    ns: u8,
    (key, field): (Bytes, Bytes),
    modify: Modify,
) -> Result<Step, Reply> {
    let modify = if backend.is_routed() {
        modify.per_node()
    } else {
        modify
    };
    refuse_other_type(backend, ns, &key).await?;
    let shape = match modify {
        Modify::IncrBy(_) | Modify::CountBy(_) => ReplyShape::NewInteger,
        _ => ReplyShape::NewValue,
    };
    let stored = Bytes::from(field_key(&key, &field));
    let op = WriteOp::modify(fields_namespace(ns), stored, modify);
    Ok(backend.write(vec![op], shape).await)
}

/// WRONGTYPE when `key` holds another type than a hash.
async fn refuse_other_type(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<(), Reply> {
    refuse_other(backend, ns, key, Kind::Hash).await
}

/// The sets of `fields` of `key`; WRONGTYPE when none holds a value and `key`
/// holds another type.
async fn read_fields(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    fields: &[Bytes],
) -> Result<Vec<Option<SiblingSet>>, Reply> {
    let stored: Vec<Bytes> = fields
        .iter()
        .map(|f| Bytes::from(field_key(key, f)))
        .collect();
    let sets = backend
        .read(fields_namespace(ns), &stored)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Reply>>()?;
    if sets.iter().all(|s| value_of(s.clone()).is_none()) {
        refuse_other_type(backend, ns, key).await?;
    }
    Ok(sets)
}

/// Every live field of `key` with its value; WRONGTYPE when there is none
/// and `key` holds another type.
async fn all_fields(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
) -> Result<Vec<(Bytes, Bytes)>, Reply> {
    let fields = backend.elements(ns, Kind::Hash, key).await?;
    if fields.is_empty() {
        refuse_other_type(backend, ns, key).await?;
    }
    Ok(fields
        .into_iter()
        .filter_map(|(f, set)| Some((f, value_of(Some(set))?)))
        .collect())
}

/// A field's value: its set's deterministic winner (a counted field's
/// counters merged, `shoal_engine::counter`).
fn value_of(set: Option<SiblingSet>) -> Option<Bytes> {
    set.and_then(|s| s.string_value())
}

fn parse_randfield(key: Bytes, rest: &[Bytes], pairs: bool) -> Result<HashCommand, Step> {
    let count = match rest.first() {
        None => None,
        Some(c) => {
            Some(parse_int(c).ok_or_else(|| err("ERR value is not an integer or out of range"))?)
        }
    };
    let with_values = match rest.get(1) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"withvalues") && rest.len() == 2 => true,
        Some(_) => return Err(crate::reply::syntax_error()),
    };
    if count.is_some_and(|c| c.unsigned_abs() > crate::elements::PICK_COUNT_MAX) {
        return Err(err("ERR value is out of range"));
    }
    Ok(HashCommand::RandField {
        key,
        count,
        with_values,
        pairs,
    })
}

/// HRANDFIELD's reply from the fields picked (`crate::elements::pick`).
/// `(with_values, pairs)`: WITHVALUES, and RESP3's pairs.
fn rand_fields(
    fields: Vec<(Bytes, Bytes)>,
    count: Option<i64>,
    (with_values, pairs): (bool, bool),
    seed: u64,
) -> Reply {
    let Some(picked) = crate::elements::pick(&fields, count, seed) else {
        return Reply::Null;
    };
    if count.is_none() {
        return Reply::Bulk(picked[0].0.clone());
    }
    if with_values && pairs {
        let pairs = picked
            .into_iter()
            .map(|(f, v)| Reply::Array(vec![Reply::Bulk(f), Reply::Bulk(v)]));
        return Reply::Array(pairs.collect());
    }
    let items = picked.into_iter().flat_map(|(f, v)| {
        let value = with_values.then_some(Reply::Bulk(v));
        std::iter::once(Reply::Bulk(f)).chain(value)
    });
    Reply::Array(items.collect())
}
