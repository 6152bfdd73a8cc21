//! How keys of several types share one keyspace (`keyspace::Kind`): the
//! keyspace commands (EXISTS, TYPE, DEL, TTL, MEMORY USAGE) look at every
//! type; on one node a string write to a collection's key replaces it (SET,
//! MSET) or is refused WRONGTYPE (INCR, APPEND, GETSET, ...), and a
//! collection command refuses a key of another type, as in Redis. On a
//! cluster string commands do not look at collections, and collection
//! commands look only for a string (see `hash`).
//!
//! Must not touch: how reads and writes travel (`backend`), replies' shapes
//! beyond choosing one.

use crate::backend::Backend;
use crate::keyspace::Kind;
use crate::reply::{ReplyShape, Step};
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::{Condition, Deadline, Modify, WriteOp};

/// Redis's reply to a command on a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The writes that remove every element of collection `key` of `kind`, as of
/// now.
pub async fn element_deletes(
    backend: &Backend<'_>,
    ns: u8,
    kind: Kind,
    key: &[u8],
) -> Result<Vec<WriteOp>, Reply> {
    // The names only: a delete reads no element's value.
    let cns = kind.namespace(ns);
    Ok(backend
        .element_keys(ns, kind, key)
        .await?
        .into_iter()
        .map(|stored| WriteOp::delete(cns, stored))
        .collect())
}

/// The writes that remove every collection element of `key`, of any kind.
async fn collection_deletes(
    backend: &Backend<'_>,
    ns: u8,
    key: &[u8],
) -> Result<Vec<WriteOp>, Reply> {
    let mut ops = Vec::new();
    for kind in Kind::COLLECTIONS {
        let found = element_deletes(backend, ns, kind, key).await?;
        if kind == Kind::ZSet && !found.is_empty() {
            ops.extend(element_deletes(backend, ns, Kind::ZSetScores, key).await?);
        }
        ops.extend(found);
    }
    ops.extend(backend.deadline_delete(ns, key));
    Ok(ops)
}

/// The writes that delete everything `key` holds: its string and every
/// element of its collections.
pub async fn key_deletes(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
) -> Result<Vec<WriteOp>, Reply> {
    let mut ops = vec![WriteOp::delete(ns, key.clone())];
    ops.extend(collection_deletes(backend, ns, key).await?);
    Ok(ops)
}

/// WRONGTYPE when `key` holds another type than `kind`: on one node any
/// other; on a cluster a string only (finding another collection costs a
/// listing round per kind).
pub async fn refuse_other(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    kind: Kind,
) -> Result<(), Reply> {
    if backend
        .live(ns, std::slice::from_ref(key))
        .await
        .remove(0)?
    {
        return Err(Reply::error(WRONGTYPE));
    }
    match backend.collection_here(ns, key).await? {
        Some(other) if other != kind => Err(Reply::error(WRONGTYPE)),
        _ => Ok(()),
    }
}

/// How many elements collection `key` of `kind` holds (LLEN, HLEN, SCARD;
/// one lookup on one node); WRONGTYPE when none and `key` holds another type.
pub async fn collection_len(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    kind: Kind,
) -> Result<usize, Reply> {
    let len = backend.element_count(ns, kind, key).await?;
    if len == 0 {
        refuse_other(backend, ns, key, kind).await?;
    }
    Ok(len)
}

/// [`collection_len`] as an integer reply (LLEN, HLEN, SCARD, ZCARD).
pub async fn len_reply(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    kind: Kind,
) -> Result<Reply, Reply> {
    Ok(Reply::Integer(
        collection_len(backend, ns, key, kind).await? as i64,
    ))
}

/// EXISTS and TOUCH: how many of `keys` hold something (a key named twice
/// counts twice, as in Redis).
pub async fn exists(backend: &Backend<'_>, ns: u8, keys: &[Bytes]) -> Reply {
    let mut count = 0;
    for key in keys {
        match backend.kind_of(ns, key).await {
            Ok(kind) => count += i64::from(kind.is_some()),
            Err(reply) => return reply,
        }
    }
    Reply::Integer(count)
}

/// TYPE: `string`, `hash`, `set`, `list`, `zset` or `none`.
pub async fn type_of(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Reply {
    match backend.kind_of(ns, key).await {
        Ok(kind) => Reply::Simple(kind.map_or("none", Kind::name).into()),
        Err(reply) => reply,
    }
}

/// DEL and UNLINK: each key's string and every element of its collections
/// deleted in one batch; answers how many keys existed.
pub async fn delete(backend: &Backend<'_>, ns: u8, keys: Vec<Bytes>) -> Step {
    let mut ops = Vec::with_capacity(keys.len());
    let mut ops_per_key = Vec::with_capacity(keys.len());
    for key in keys {
        let elements = match collection_deletes(backend, ns, &key).await {
            Ok(elements) => elements,
            Err(reply) => return Step::Reply(reply),
        };
        ops_per_key.push(1 + elements.len());
        ops.push(WriteOp::delete(ns, key));
        ops.extend(elements);
    }
    backend
        .write(ops, ReplyShape::CountKeys(ops_per_key.into()))
        .await
}

/// A key read as absent by a string command: WRONGTYPE when it holds a
/// collection on this node, else `absent`.
pub async fn absent_or_wrong_type(
    backend: &Backend<'_>,
    ns: u8,
    key: &[u8],
    absent: Reply,
) -> Reply {
    match backend.collection_here(ns, key).await {
        Ok(Some(_)) => Reply::error(WRONGTYPE),
        Ok(None) => absent,
        Err(reply) => reply,
    }
}

/// TTL and its kin for a key with no string: a collection's deadline
/// (`collection_ttl`), else -2.
pub async fn ttl_of_absent(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    query: crate::expire::TtlQuery,
) -> Reply {
    match backend.kind_of(ns, key).await {
        Ok(Some(_)) => crate::collection_ttl::ttl(backend, ns, key, query),
        Ok(None) => Reply::Integer(-2),
        Err(reply) => reply,
    }
}

/// A string write as one node runs it when some of its keys are
/// collections: a plain SET or MSET also deletes the collection's elements
/// (SET replaces any type; SET XX finds the key present); SET NX and SETNX
/// find it present; a write that reads the old value (INCR, APPEND, GETSET,
/// SET GET, ...) is refused WRONGTYPE. `Err` is the reply instead of the
/// write.
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
        let kind = match backend.collection_here(ns, &op.key).await {
            Err(reply) => return Err(Step::Reply(reply)),
            Ok(None) => continue,
            Ok(Some(kind)) => kind,
        };
        if matches!(op.modify, Some(Modify::Touch)) && matches!(shape, ReplyShape::SetNx) {
            // EXPIRE and its kin, PERSIST: the collection's deadline.
            let reply = crate::collection_ttl::expire(backend, ns, kind, op).await;
            return Err(Step::Reply(reply));
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
            collection_deletes(backend, ns, &op.key)
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
/// `SiblingSet::size_bytes`, plus the key), its string's or its
/// collection's elements'; nil when it holds nothing.
pub async fn memory_usage(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Reply {
    let string = match backend.read(ns, std::slice::from_ref(key)).await.remove(0) {
        Ok(set) => set.filter(|s| !s.is_deleted()),
        Err(reply) => return reply,
    };
    if let Some(set) = string {
        return Reply::Integer((set.size_bytes() + key.len()) as i64);
    }
    for kind in Kind::COLLECTIONS {
        match backend.elements(ns, kind, key).await {
            Ok(elements) if elements.is_empty() => continue,
            Ok(elements) => {
                let bytes = elements
                    .iter()
                    .map(|(e, set)| set.size_bytes() + e.len() + key.len());
                return Reply::Integer(bytes.sum::<usize>() as i64);
            }
            Err(reply) => return reply,
        }
    }
    Reply::Null
}

/// OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ | HELP key. Shoal keeps
/// every key as its own records, shared with nothing, so REFCOUNT is 1;
/// ENCODING names the encoding Redis would report for a value of this type
/// and size (clients and tests read it), not how Shoal stores it; access
/// times and frequencies are not tracked, and those subcommands say so.
pub async fn object(backend: &Backend<'_>, ns: u8, args: &[Bytes]) -> Reply {
    let sub = crate::reply::lower(&args[0]);
    if sub == "help" {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    The encoding Redis would report for the key's type and size.",
            "REFCOUNT <key>",
            "    Always 1: Shoal shares no value between keys.",
        ];
        return Reply::Array(lines.iter().map(|l| Reply::Simple(l.to_string())).collect());
    }
    let [_, key] = args else {
        return Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try OBJECT HELP."
        ));
    };
    let kind = match backend.kind_of(ns, key).await {
        Ok(Some(kind)) => kind,
        Ok(None) => return Reply::Null,
        Err(reply) => return reply,
    };
    match sub.as_str() {
        "refcount" => Reply::Integer(1),
        "encoding" => Reply::bulk(match kind {
            Kind::String => string_encoding(backend, ns, key).await,
            Kind::Hash => "hashtable",
            Kind::Set => "hashtable",
            Kind::List => "quicklist",
            Kind::ZSet | Kind::ZSetScores => "skiplist",
        }),
        "idletime" | "freq" => Reply::error(format!(
            "ERR OBJECT {} is not tracked: Shoal keeps no access times or frequencies",
            sub.to_uppercase()
        )),
        _ => Reply::error(format!("ERR unknown subcommand '{sub}'. Try OBJECT HELP.")),
    }
}

/// Redis's encoding name for a string value: `int`, `embstr` (44 bytes at
/// most) or `raw`.
async fn string_encoding(backend: &Backend<'_>, ns: u8, key: &Bytes) -> &'static str {
    let read = backend.read(ns, std::slice::from_ref(key)).await.remove(0);
    let value = read.ok().flatten().and_then(|s| s.string_value());
    match value {
        Some(v) if shoal_engine::store::modify::parse_i64(&v).is_some() => "int",
        Some(v) if v.len() <= 44 => "embstr",
        _ => "raw",
    }
}
