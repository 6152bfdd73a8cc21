//! How keys of two types share one keyspace: a string lives in the
//! database's namespace, a hash in its fields namespace
//! (`shoal_engine::fields`). The keyspace commands (EXISTS, TYPE, DEL, TTL)
//! look at both; on one node a string write to a hash key replaces the hash
//! (SET, MSET) or is refused WRONGTYPE (INCR, APPEND, GETSET, ...), as in
//! Redis. On a cluster string commands do not look at hashes (see `hash`).
//!
//! Must not touch: how reads and writes travel (`backend`), replies' shapes
//! beyond choosing one.

use crate::backend::Backend;
use crate::hash::WRONGTYPE;
use crate::reply::{ReplyShape, Step};
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::fields::{field_key, fields_namespace};
use shoal_engine::{Condition, Deadline, Modify, WriteOp};

/// The writes that remove every field of hash `key`, as of now.
async fn field_deletes(backend: &Backend<'_>, ns: u8, key: &[u8]) -> Result<Vec<WriteOp>, Reply> {
    let fns = fields_namespace(ns);
    Ok(backend
        .fields(ns, key)
        .await?
        .into_iter()
        .map(|(field, _)| WriteOp::delete(fns, Bytes::from(field_key(key, &field))))
        .collect())
}

/// EXISTS and TOUCH: how many of `keys` hold a string or a hash (a key named
/// twice counts twice, as in Redis).
pub async fn exists(backend: &Backend<'_>, ns: u8, keys: &[Bytes]) -> Reply {
    let mut count = 0;
    for (key, live) in keys.iter().zip(backend.live(ns, keys).await) {
        let found = match live {
            Ok(true) => Ok(true),
            Ok(false) => backend.is_hash(ns, key).await,
            Err(reply) => Err(reply),
        };
        match found {
            Ok(found) => count += i64::from(found),
            Err(reply) => return reply,
        }
    }
    Reply::Integer(count)
}

/// TYPE: `string`, `hash` or `none`.
pub async fn type_of(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Reply {
    let name = match backend.live(ns, std::slice::from_ref(key)).await.remove(0) {
        Ok(true) => "string",
        Ok(false) => match backend.is_hash(ns, key).await {
            Ok(true) => "hash",
            Ok(false) => "none",
            Err(reply) => return reply,
        },
        Err(reply) => return reply,
    };
    Reply::Simple(name.into())
}

/// DEL and UNLINK: each key's string and every field of its hash deleted in
/// one batch; answers how many keys existed.
pub async fn delete(backend: &Backend<'_>, ns: u8, keys: Vec<Bytes>) -> Step {
    let mut ops = Vec::with_capacity(keys.len());
    let mut ops_per_key = Vec::with_capacity(keys.len());
    for key in keys {
        let fields = match field_deletes(backend, ns, &key).await {
            Ok(fields) => fields,
            Err(reply) => return Step::Reply(reply),
        };
        ops_per_key.push(1 + fields.len());
        ops.push(WriteOp::delete(ns, key));
        ops.extend(fields);
    }
    backend
        .write(ops, ReplyShape::CountKeys(ops_per_key.into()))
        .await
}

/// A key read as absent by a string command: WRONGTYPE when it is a hash on
/// this node, else `absent`.
pub async fn absent_or_wrong_type(
    backend: &Backend<'_>,
    ns: u8,
    key: &[u8],
    absent: Reply,
) -> Reply {
    match backend.is_hash_here(ns, key).await {
        Ok(true) => Reply::error(WRONGTYPE),
        Ok(false) => absent,
        Err(reply) => reply,
    }
}

/// TTL and its kin for a key with no string: -1 for a hash (hashes never
/// expire yet), else -2.
pub async fn ttl_of_absent(backend: &Backend<'_>, ns: u8, key: &[u8]) -> Reply {
    match backend.is_hash(ns, key).await {
        Ok(true) => Reply::Integer(-1),
        Ok(false) => Reply::Integer(-2),
        Err(reply) => reply,
    }
}

/// Why EXPIRE and its kin, RENAME and COPY refuse a hash, for now.
pub const HASH_NOT_YET: &str = "ERR EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST, GETEX, RENAME, RENAMENX and COPY of a hash are not supported yet; they work on strings";

/// A string write as one node runs it when some of its keys are hashes:
/// a plain SET or MSET also deletes the hash's fields (SET replaces any
/// type; SET XX finds the key present); SET NX and SETNX find it present;
/// a write that reads the old value (INCR, APPEND, GETSET, SET GET, ...)
/// is refused WRONGTYPE. `Err` is the reply instead of the write.
pub async fn string_write(
    backend: &Backend<'_>,
    ns: u8,
    mut ops: Vec<WriteOp>,
    shape: &ReplyShape,
) -> Result<Vec<WriteOp>, Step> {
    let reads_old = matches!(
        shape,
        ReplyShape::Previous | ReplyShape::Set { get: true } | ReplyShape::NewInteger
    ) || matches!(shape, ReplyShape::NewValue | ReplyShape::NewLength);
    let mut extra = Vec::new();
    for op in ops.iter_mut() {
        let is_hash = backend.is_hash_here(ns, &op.key).await;
        match is_hash {
            Err(reply) => return Err(Step::Reply(reply)),
            Ok(false) => continue,
            Ok(true) => {}
        }
        if matches!(op.modify, Some(Modify::Touch)) {
            return Err(Step::Reply(Reply::error(HASH_NOT_YET)));
        }
        if reads_old || op.modify.is_some() || op.deadline == Deadline::Keep {
            return Err(Step::Reply(Reply::error(WRONGTYPE)));
        }
        match op.condition {
            Condition::IfAbsent => return Err(Step::Reply(not_applied(shape))),
            Condition::IfPresent => op.condition = Condition::Always,
            _ => {}
        }
        extra.extend(
            field_deletes(backend, ns, &op.key)
                .await
                .map_err(Step::Reply)?,
        );
    }
    ops.extend(extra);
    Ok(ops)
}

/// The reply of a conditional write that did not apply.
fn not_applied(shape: &ReplyShape) -> Reply {
    match shape {
        ReplyShape::SetNx => Reply::Integer(0),
        _ => Reply::Null,
    }
}

/// MEMORY USAGE key: about how many bytes the key's stored sets take (by
/// `SiblingSet::size_bytes`, plus the key), its string's or its hash's
/// fields'; nil when it holds neither.
pub async fn memory_usage(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Reply {
    let string = match backend.read(ns, std::slice::from_ref(key)).await.remove(0) {
        Ok(set) => set.filter(|s| !s.is_deleted()),
        Err(reply) => return reply,
    };
    if let Some(set) = string {
        return Reply::Integer((set.size_bytes() + key.len()) as i64);
    }
    match backend.fields(ns, key).await {
        Ok(fields) if fields.is_empty() => Reply::Null,
        Ok(fields) => Reply::Integer(
            fields
                .iter()
                .map(|(f, set)| set.size_bytes() + f.len() + key.len())
                .sum::<usize>() as i64,
        ),
        Err(reply) => reply,
    }
}
