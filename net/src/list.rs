//! The list commands (LPUSH, RPOP, LRANGE, LINSERT, BLPOP, ...), typed:
//! parsed once, then run against a `Backend`. Each element is its own stored
//! key, named by its position and a tiebreak (`fields::list_element`), so a
//! push costs the element's bytes and elements list in order. A push takes
//! the position one step past the current end; two pushes that chose one
//! position (racing, or on two sides of a partition) are two elements, in
//! tiebreak order: a push is never lost.
//!
//! Pops of several elements and the commands that rewrite from what they
//! read (LREM, LTRIM, LINSERT, LSET, LMOVE) run under one node's exclusive
//! turn, as one step; a pop of one element on one node lets the store
//! choose it as it prepares the group commit (`WriteOp::take`), so racing
//! pops never wait on each other's sync (a cluster's coordinator takes by a
//! conditional delete, `elements::take`).
//! On a cluster a pop removes what its coordinator holds: two pops on two
//! sides of a partition may return one element twice, never lose it; LMOVE,
//! RPOPLPUSH and the blocking pops are refused there for now. A blocking pop
//! tries again every `blocking::BLOCKED_RETRY_MS` until its timeout; the client that
//! blocked first on a key is served first; a client that disconnects stops
//! waiting (`server::until_closed`).
//!
//! Must not touch: how reads and writes travel (`backend`), connections.

use crate::backend::Backend;
use crate::blocking::Try;
use crate::elements::{rank_range, run_takes, take, write_all, TAKE_TRIES_MAX};
use crate::keyspace::Kind;
use crate::reply::{err, parse_int, syntax_error, Step};
use crate::resp::Reply;
use crate::types::refuse_other;
use bytes::Bytes;
use shoal_engine::fields::{field_key, list_element, list_position, lists_namespace};
use shoal_engine::{TakeEnd, WriteOp};

/// Positions between pushed elements: room for LINSERT's midpoints.
const POSITION_STEP: i64 = 1 << 32;

/// Which end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

/// A list command and its parsed arguments.
pub enum ListCommand {
    /// LPUSH, RPUSH, and with `existing` LPUSHX, RPUSHX.
    Push {
        key: Bytes,
        values: Vec<Bytes>,
        end: End,
        existing: bool,
    },
    /// LPOP, RPOP [count].
    Pop(Bytes, End, Option<usize>),
    Len(Bytes),
    Range(Bytes, i64, i64),
    Index(Bytes, i64),
    Set(Bytes, i64, Bytes),
    /// LREM key count element.
    Rem(Bytes, i64, Bytes),
    Trim(Bytes, i64, i64),
    /// LINSERT key BEFORE|AFTER pivot element (`after`).
    Insert {
        key: Bytes,
        after: bool,
        pivot: Bytes,
        value: Bytes,
    },
    Pos(Bytes, Bytes, PosArgs),
    /// LMOVE, RPOPLPUSH, and with a timeout BLMOVE, BRPOPLPUSH.
    Move {
        from: Bytes,
        to: Bytes,
        ends: (End, End),
        timeout_ms: Option<u64>,
    },
    /// BLPOP, BRPOP: the first of `keys` holding an element (0 ms: forever).
    BlockingPop(Vec<Bytes>, End, u64),
    /// LMPOP, and with a timeout BLMPOP: up to `count` elements of the first
    /// of `keys` holding any.
    MPop {
        keys: Vec<Bytes>,
        end: End,
        count: usize,
        timeout_ms: Option<u64>,
    },
}

/// LPOS's options.
#[derive(Clone, Copy, Debug)]
pub struct PosArgs {
    rank: i64,
    count: Option<usize>,
    maxlen: usize,
}

/// One element as read: its stored name and value.
struct Item {
    name: Bytes,
    value: Bytes,
}

/// Whether a list command blocks: it gives up its connection's turn and
/// takes the node's exclusive one only for each try.
pub fn blocks(name: &str) -> bool {
    matches!(name, "blpop" | "brpop" | "blmove" | "brpoplpush" | "blmpop")
}

/// Whether a list command must run under the node's exclusive turn (it
/// writes from what it read). The blocking ones take it per try instead. A
/// pop of one element needs no turn (`elements::take`); a pop of several
/// takes it, so that its elements are contiguous.
pub fn runs_alone(name: &str, args: &[Bytes]) -> bool {
    matches!(
        name,
        "lmpop" | "lset" | "lrem" | "ltrim" | "linsert" | "lmove" | "rpoplpush"
    ) || (matches!(name, "lpop" | "rpop") && args.len() > 2)
}

/// Why LMOVE, RPOPLPUSH and their blocking forms are refused on a cluster.
const NOT_ON_CLUSTER: &str = "ERR LMOVE, RPOPLPUSH, BLMOVE and BRPOPLPUSH are not supported on a cluster yet: they write two keys from what they read; they work on a single node";

fn end_of(word: &[u8]) -> Result<End, Step> {
    match crate::reply::lower(word).as_str() {
        "left" => Ok(End::Left),
        "right" => Ok(End::Right),
        _ => Err(syntax_error()),
    }
}

fn int_arg(word: &[u8]) -> Result<i64, Step> {
    parse_int(word).ok_or_else(|| err("ERR value is not an integer or out of range"))
}

/// A blocking command's timeout in seconds (a float), in ms.
pub(crate) fn timeout_arg(word: &[u8]) -> Result<u64, Step> {
    let seconds: f64 = std::str::from_utf8(word)
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| err("ERR timeout is not a float or out of range"))?;
    if seconds < 0.0 {
        return Err(err("ERR timeout is negative"));
    }
    Ok((seconds * 1000.0) as u64)
}

impl ListCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    pub fn parse(name: &str, args: &[Bytes]) -> Result<ListCommand, Step> {
        let key = args[1].clone();
        let push = |end, existing| ListCommand::Push {
            key: args[1].clone(),
            values: args[2..].to_vec(),
            end,
            existing,
        };
        Ok(match name {
            "lpush" => push(End::Left, false),
            "rpush" => push(End::Right, false),
            "lpushx" => push(End::Left, true),
            "rpushx" => push(End::Right, true),
            "lpop" | "rpop" => {
                let end = if name == "lpop" {
                    End::Left
                } else {
                    End::Right
                };
                let count = match args.get(2) {
                    None => None,
                    Some(_) if args.len() > 3 => {
                        return Err(err(format!(
                            "ERR wrong number of arguments for '{name}' command"
                        )))
                    }
                    Some(c) => match parse_int(c) {
                        Some(c) if c >= 0 => Some(c as usize),
                        _ => return Err(err("ERR value is out of range, must be positive")),
                    },
                };
                ListCommand::Pop(key, end, count)
            }
            "llen" => ListCommand::Len(key),
            "lrange" => ListCommand::Range(key, int_arg(&args[2])?, int_arg(&args[3])?),
            "lindex" => ListCommand::Index(key, int_arg(&args[2])?),
            "lset" => ListCommand::Set(key, int_arg(&args[2])?, args[3].clone()),
            "lrem" => ListCommand::Rem(key, int_arg(&args[2])?, args[3].clone()),
            "ltrim" => ListCommand::Trim(key, int_arg(&args[2])?, int_arg(&args[3])?),
            "linsert" => ListCommand::Insert {
                key,
                after: match crate::reply::lower(&args[2]).as_str() {
                    "before" => false,
                    "after" => true,
                    _ => return Err(syntax_error()),
                },
                pivot: args[3].clone(),
                value: args[4].clone(),
            },
            "lpos" => ListCommand::Pos(key, args[2].clone(), parse_pos(&args[3..])?),
            _ => Self::parse_moves(name, args)?,
        })
    }

    fn parse_moves(name: &str, args: &[Bytes]) -> Result<ListCommand, Step> {
        let (from, to) = (args[1].clone(), args.get(2).cloned().unwrap_or_default());
        let moving = |ends, timeout_ms| ListCommand::Move {
            from: from.clone(),
            to: to.clone(),
            ends,
            timeout_ms,
        };
        Ok(match name {
            "rpoplpush" => moving((End::Right, End::Left), None),
            "brpoplpush" => moving((End::Right, End::Left), Some(timeout_arg(&args[3])?)),
            "lmove" => moving((end_of(&args[3])?, end_of(&args[4])?), None),
            "blmove" => moving(
                (end_of(&args[3])?, end_of(&args[4])?),
                Some(timeout_arg(&args[5])?),
            ),
            "lmpop" => parse_mpop(&args[1..], None)?,
            "blmpop" => parse_mpop(&args[2..], Some(timeout_arg(&args[1])?))?,
            "blpop" | "brpop" => {
                let end = if name == "blpop" {
                    End::Left
                } else {
                    End::Right
                };
                let timeout_ms = timeout_arg(&args[args.len() - 1])?;
                ListCommand::BlockingPop(args[1..args.len() - 1].to_vec(), end, timeout_ms)
            }
            other => unreachable!("list command {other} in the table but not parsed"),
        })
    }
}

/// LMPOP's arguments after the name (BLMPOP's after its timeout):
/// numkeys key [key ...] LEFT|RIGHT [COUNT count].
fn parse_mpop(args: &[Bytes], timeout_ms: Option<u64>) -> Result<ListCommand, Step> {
    let numkeys = match parse_int(&args[0]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(err("ERR numkeys should be greater than 0")),
    };
    if numkeys + 1 >= args.len() {
        return Err(syntax_error());
    }
    let keys = args[1..=numkeys].to_vec();
    let end = end_of(&args[numkeys + 1])?;
    let count = match &args[numkeys + 2..] {
        [] => 1,
        [option, n] if option.eq_ignore_ascii_case(b"count") => match parse_int(n) {
            Some(n) if n > 0 => n as usize,
            _ => return Err(err("ERR count should be greater than 0")),
        },
        _ => return Err(syntax_error()),
    };
    Ok(ListCommand::MPop {
        keys,
        end,
        count,
        timeout_ms,
    })
}

fn parse_pos(options: &[Bytes]) -> Result<PosArgs, Step> {
    let mut pos = PosArgs {
        rank: 1,
        count: None,
        maxlen: 0,
    };
    for pair in options.chunks(2) {
        let [option, value] = pair else {
            return Err(syntax_error());
        };
        let n = int_arg(value)?;
        match crate::reply::lower(option).as_str() {
            "rank" if n == 0 || n == i64::MIN => return Err(err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list")),
            "rank" => pos.rank = n,
            "count" if n < 0 => return Err(err("ERR COUNT can't be negative")),
            "count" => pos.count = Some(n as usize),
            "maxlen" if n < 0 => return Err(err("ERR MAXLEN can't be negative")),
            "maxlen" => pos.maxlen = n as usize,
            _ => return Err(syntax_error()),
        }
    }
    Ok(pos)
}

/// A unique tiebreak for a pushed element: wall ms, node, then a count.
fn tiebreak(backend: &Backend<'_>) -> u64 {
    let count = backend.next_sequence() & 0xffff;
    (backend.now_ms() << 22) | ((backend.node_tag() & 0x3f) << 16) | count
}

/// The elements of list `key`, in order; WRONGTYPE when there is none and
/// `key` holds another type.
async fn items(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<Vec<Item>, Reply> {
    let elements = backend.elements(ns, Kind::List, key).await?;
    if elements.is_empty() {
        refuse_other(backend, ns, key, Kind::List).await?;
    }
    let mut items = Vec::with_capacity(elements.len());
    for (name, set) in elements {
        if let Some(value) = set.winner().and_then(|w| w.value.clone()) {
            items.push(Item { name, value });
        }
    }
    Ok(items)
}

/// The values of list `key`, in order (SORT's input).
pub(crate) async fn values(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
) -> Result<Vec<Bytes>, Reply> {
    Ok(items(backend, ns, key)
        .await?
        .into_iter()
        .map(|i| i.value)
        .collect())
}

/// The writes that make `key` (of any type, or none) the list `values`.
pub(crate) async fn replace_with(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    values: Vec<Bytes>,
) -> Result<Vec<WriteOp>, Reply> {
    let mut ops = crate::types::key_deletes(backend, ns, key).await?;
    ops.extend(push_ops(backend, ns, key, None, values, End::Right));
    Ok(ops)
}

/// The names of the elements of list `key`, in order, without their values;
/// WRONGTYPE when there is none and `key` holds another type.
async fn names(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<Vec<Bytes>, Reply> {
    let stored = backend.element_keys(ns, Kind::List, key).await?;
    if stored.is_empty() {
        refuse_other(backend, ns, key, Kind::List).await?;
    }
    let prefix_len = shoal_engine::fields::field_prefix(key).len();
    Ok(stored.into_iter().map(|k| k.slice(prefix_len..)).collect())
}

/// How many elements list `key` holds (`types::collection_len`).
async fn length(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<usize, Reply> {
    crate::types::collection_len(backend, ns, key, Kind::List).await
}

/// The names of up to `take` elements of list `key` from `end` on, `skip`
/// of them passed over, in order from that end.
async fn names_from(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    end: End,
    (skip, take): (usize, usize),
) -> Result<Vec<Bytes>, Reply> {
    let window = (end == End::Right, skip, take);
    let stored = backend
        .element_keys_from(ns, Kind::List, key, window)
        .await?;
    let prefix_len = shoal_engine::fields::field_prefix(key).len();
    Ok(stored.into_iter().map(|k| k.slice(prefix_len..)).collect())
}

/// A push's view of list `key`: its length and the name of its element at
/// `end` (one listing on a cluster, two key-directory lookups on one node).
async fn length_and_edge(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    end: End,
) -> Result<(usize, Option<Bytes>), Reply> {
    if backend.is_routed() {
        let all = names(backend, ns, key).await?;
        let edge = match end {
            End::Left => all.first(),
            End::Right => all.last(),
        };
        return Ok((all.len(), edge.cloned()));
    }
    let len = length(backend, ns, key).await?;
    if len == 0 {
        return Ok((0, None));
    }
    Ok((len, names_from(backend, ns, key, end, (0, 1)).await?.pop()))
}

/// The elements of list `key` at the indexes `range` picks for its length,
/// read; only those are listed and read on one node (from the nearer end).
async fn window(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    range: impl FnOnce(usize) -> std::ops::Range<usize>,
) -> Result<Vec<Item>, Reply> {
    if backend.is_routed() {
        let mut all = items(backend, ns, key).await?;
        let range = range(all.len());
        return Ok(all.drain(range).collect());
    }
    let len = length(backend, ns, key).await?;
    let range = range(len);
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let chosen = if range.start <= len - range.end {
        names_from(backend, ns, key, End::Left, (range.start, range.len())).await?
    } else {
        let skip = len - range.end;
        let mut back = names_from(backend, ns, key, End::Right, (skip, range.len())).await?;
        back.reverse();
        back
    };
    read_items(backend, ns, key, &chosen).await
}

/// The elements named `chosen` of list `key`, read (a name whose element
/// is gone since is left out).
async fn read_items(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    chosen: &[Bytes],
) -> Result<Vec<Item>, Reply> {
    let stored = chosen.iter().map(|n| stored(key, n)).collect();
    let sets = backend.element_sets(ns, Kind::List, key, stored).await?;
    Ok(sets
        .into_iter()
        .filter_map(|(name, set)| {
            let value = set.winner()?.value.clone()?;
            Some(Item { name, value })
        })
        .collect())
}

/// The stored key of element `name` of `key`.
fn stored(key: &[u8], name: &[u8]) -> Bytes {
    Bytes::from(field_key(key, name))
}

/// The writes that push `values` at `end` of `key` (whose element at that
/// end is named `edge`), in order, each a step past the last.
fn push_ops(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    edge: Option<&Bytes>,
    values: Vec<Bytes>,
    end: End,
) -> Vec<WriteOp> {
    let mut position = edge.and_then(|name| list_position(name)).unwrap_or(0);
    let step = if end == End::Left {
        -POSITION_STEP
    } else {
        POSITION_STEP
    };
    if edge.is_none() {
        position -= step;
    }
    values
        .into_iter()
        .map(|value| {
            position = position.saturating_add(step);
            let name = list_element(position, tiebreak(backend));
            WriteOp::put(lists_namespace(ns), stored(key, &name), value)
        })
        .collect()
}

impl ListCommand {
    /// Run against `backend` in database `ns`; a blocking one takes the
    /// node's exclusive turn from `isolation` for each try. Without one (in
    /// EXEC, already alone) a blocking command tries once and does not wait.
    pub async fn run(
        self,
        backend: &Backend<'_>,
        ns: u8,
        isolation: Option<&crate::shared::Isolation>,
    ) -> Step {
        let Some(isolation) = isolation else {
            return Step::Reply(self.run_now(backend, ns).await.unwrap_or_else(|r| r));
        };
        let result = match self {
            ListCommand::Move { .. } if backend.is_routed() => Err(Reply::error(NOT_ON_CLUSTER)),
            ListCommand::Move {
                timeout_ms: Some(timeout_ms),
                from,
                to,
                ends,
            } => blocking_move(backend, ns, (from, to, ends), (timeout_ms, isolation)).await,
            ListCommand::Move { from, to, ends, .. } => move_element(backend, ns, &from, &to, ends)
                .await
                .map(|moved| moved.unwrap_or(Reply::Null)),
            pops @ (ListCommand::BlockingPop(..) | ListCommand::MPop { .. }) => {
                pops.run_pops(backend, ns, isolation).await
            }
            command => command.run_one(backend, ns).await,
        };
        Step::Reply(result.unwrap_or_else(|reply| reply))
    }

    /// A command as it runs inside EXEC: a blocking one tries once.
    async fn run_now(self, backend: &Backend<'_>, ns: u8) -> Result<Reply, Reply> {
        match self {
            ListCommand::BlockingPop(keys, end, _) => {
                Ok(match first_pop(backend, ns, &keys, end, 1).await? {
                    Some((key, mut values)) => Reply::Array(vec![
                        Reply::Bulk(key),
                        Reply::Bulk(values.pop().expect("a pop takes one")),
                    ]),
                    None => Reply::NullArray,
                })
            }
            ListCommand::MPop {
                keys, end, count, ..
            } => Ok(match first_pop(backend, ns, &keys, end, count).await? {
                Some((key, values)) => Reply::Array(vec![
                    Reply::Bulk(key),
                    Reply::Array(values.into_iter().map(Reply::Bulk).collect()),
                ]),
                None => Reply::NullArray,
            }),
            ListCommand::Move { from, to, ends, .. } => {
                Ok(move_element(backend, ns, &from, &to, ends)
                    .await?
                    .unwrap_or(Reply::Null))
            }
            other => other.run_one(backend, ns).await,
        }
    }

    /// BLPOP, BRPOP, LMPOP, BLMPOP.
    async fn run_pops(
        self,
        backend: &Backend<'_>,
        ns: u8,
        isolation: &crate::shared::Isolation,
    ) -> Result<Reply, Reply> {
        Ok(match self {
            ListCommand::BlockingPop(keys, end, timeout_ms) => {
                let found = blocking_pop(backend, ns, (&keys, end, 1), (timeout_ms, isolation));
                match found.await? {
                    Some((key, mut values)) => Reply::Array(vec![
                        Reply::Bulk(key),
                        Reply::Bulk(values.pop().expect("a pop takes one")),
                    ]),
                    None => Reply::NullArray,
                }
            }
            ListCommand::MPop {
                keys,
                end,
                count,
                timeout_ms,
            } => {
                let found = match timeout_ms {
                    Some(t) => blocking_pop(backend, ns, (&keys, end, count), (t, isolation)).await,
                    None => first_pop(backend, ns, &keys, end, count).await,
                };
                match found? {
                    Some((key, values)) => Reply::Array(vec![
                        Reply::Bulk(key),
                        Reply::Array(values.into_iter().map(Reply::Bulk).collect()),
                    ]),
                    None => Reply::NullArray,
                }
            }
            _ => unreachable!("not a multi-key pop"),
        })
    }

    async fn run_one(self, backend: &Backend<'_>, ns: u8) -> Result<Reply, Reply> {
        Ok(match self {
            ListCommand::Push {
                key,
                values,
                end,
                existing,
            } => {
                // A push reads no element's value: only the length and the
                // name at its end.
                let (len, edge) = length_and_edge(backend, ns, &key, end).await?;
                if existing && len == 0 {
                    return Ok(Reply::Integer(0));
                }
                let ops = push_ops(backend, ns, &key, edge.as_ref(), values, end);
                let len = len + ops.len();
                write_all(backend, ops).await?;
                Reply::Integer(len as i64)
            }
            ListCommand::Pop(key, end, count) => {
                let popped = pop(backend, ns, &key, end, count.unwrap_or(1)).await?;
                match (count, popped) {
                    (None, None) => Reply::Null,
                    (Some(_), None) => Reply::NullArray,
                    (None, Some(mut values)) => values.pop().map_or(Reply::Null, Reply::Bulk),
                    (Some(_), Some(values)) => {
                        Reply::Array(values.into_iter().map(Reply::Bulk).collect())
                    }
                }
            }
            ListCommand::Len(key) => Reply::Integer(length(backend, ns, &key).await? as i64),
            ListCommand::Range(key, start, stop) => {
                let window = window(backend, ns, &key, |len| rank_range(len, start, stop)).await?;
                Reply::Array(window.into_iter().map(|i| Reply::Bulk(i.value)).collect())
            }
            ListCommand::Index(key, index) => {
                let at = |len: usize| match index < 0 && index.unsigned_abs() as usize > len {
                    true => 0..0,
                    false => rank_range(len, index, index),
                };
                let mut window = window(backend, ns, &key, at).await?;
                window.pop().map_or(Reply::Null, |i| Reply::Bulk(i.value))
            }
            ListCommand::Pos(key, element, args) => {
                lpos(&items(backend, ns, &key).await?, &element, args)
            }
            rewrite => rewrite.run_rewrite(backend, ns).await?,
        })
    }

    /// LSET, LREM, LTRIM, LINSERT: writes computed from the list as read.
    async fn run_rewrite(self, backend: &Backend<'_>, ns: u8) -> Result<Reply, Reply> {
        let lns = lists_namespace(ns);
        Ok(match self {
            ListCommand::Set(key, index, value) => {
                let all = items(backend, ns, &key).await?;
                if all.is_empty() {
                    return Err(Reply::error("ERR no such key"));
                }
                let range = rank_range(all.len(), index, index);
                if range.is_empty() || (index < 0 && index.unsigned_abs() as usize > all.len()) {
                    return Err(Reply::error("ERR index out of range"));
                }
                let name = &all[range.start].name;
                write_all(backend, vec![WriteOp::put(lns, stored(&key, name), value)]).await?;
                Reply::ok()
            }
            ListCommand::Rem(key, count, value) => {
                let all = items(backend, ns, &key).await?;
                let matching = all.iter().filter(|i| i.value == value);
                let picked: Vec<&Item> = match count {
                    0 => matching.collect(),
                    n if n > 0 => matching.take(n as usize).collect(),
                    n => matching.rev().take(n.unsigned_abs() as usize).collect(),
                };
                let ops = picked
                    .iter()
                    .map(|i| WriteOp::delete(lns, stored(&key, &i.name)))
                    .collect::<Vec<_>>();
                let removed = ops.len();
                write_all(backend, ops).await?;
                Reply::Integer(removed as i64)
            }
            ListCommand::Trim(key, start, stop) => {
                let all = items(backend, ns, &key).await?;
                let keep = rank_range(all.len(), start, stop);
                let ops = all
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !keep.contains(n))
                    .map(|(_, i)| WriteOp::delete(lns, stored(&key, &i.name)))
                    .collect();
                write_all(backend, ops).await?;
                Reply::ok()
            }
            ListCommand::Insert {
                key,
                after,
                pivot,
                value,
            } => insert(backend, ns, &key, (after, &pivot), value).await?,
            _ => unreachable!("not a rewriting list command"),
        })
    }
}

/// Up to `count` elements removed from `end` of `key` and answered in pop
/// order; `None` when the list is absent.
async fn pop(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    end: End,
    count: usize,
) -> Result<Option<Vec<Bytes>>, Reply> {
    if count == 0 {
        return Ok((length(backend, ns, key).await? > 0).then(Vec::new));
    }
    if !backend.is_routed() {
        return local_pop(backend, ns, key, end, count).await;
    }
    // Only the popped elements are listed, and taken by conditional
    // deletes that answer the values they removed: a pop lost to a racing
    // one (through this coordinator) lists the next elements.
    let mut popped = Vec::with_capacity(count.min(1024));
    for _ in 0..TAKE_TRIES_MAX {
        let names = names_from(backend, ns, key, end, (0, count - popped.len())).await?;
        if names.is_empty() {
            break;
        }
        let stored: Vec<Bytes> = names.iter().map(|n| stored(key, n)).collect();
        popped.extend(
            take(backend, lists_namespace(ns), &stored)
                .await?
                .into_iter()
                .flatten(),
        );
        if popped.len() == count {
            break;
        }
    }
    if popped.is_empty() {
        refuse_other(backend, ns, key, Kind::List).await?;
        return Ok(None);
    }
    Ok(Some(popped))
}

/// A pop on one node: the store chooses each element as it prepares the
/// write (`WriteOp::take`), so racing pops in one group commit each take a
/// different element and none waits for another's sync.
async fn local_pop(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    end: End,
    count: usize,
) -> Result<Option<Vec<Bytes>>, Reply> {
    let len = length(backend, ns, key).await?;
    if len == 0 {
        return Ok(None);
    }
    let prefix = Bytes::from(shoal_engine::fields::field_prefix(key));
    let end = match end {
        End::Left => TakeEnd::First,
        End::Right => TakeEnd::Last,
    };
    let take = |_| WriteOp::take(lists_namespace(ns), prefix.clone(), end);
    // Planted (checker self-test): a pop from a list of three or more takes
    // one element more than it answers.
    let takes = count.min(len) + usize::from(cfg!(feature = "bug-pop-takes-extra") && len >= 3);
    let popped = run_takes(backend, (0..takes).map(take).collect()).await?;
    let popped: Vec<Bytes> = popped.into_iter().flatten().take(count).collect();
    // Racing pops emptied it between the count and the takes.
    Ok((!popped.is_empty()).then_some(popped))
}

/// LMOVE: the element at `ends.0` of `from` moved to `ends.1` of `to` in
/// one batch, and answered; `None` when `from` is empty.
async fn move_element(
    backend: &Backend<'_>,
    ns: u8,
    from: &Bytes,
    to: &Bytes,
    ends: (End, End),
) -> Result<Option<Reply>, Reply> {
    let source = items(backend, ns, from).await?;
    let mut destination = items(backend, ns, to).await?;
    let taken = match ends.0 {
        End::Left => source.first(),
        End::Right => source.last(),
    };
    let Some(taken) = taken else {
        return Ok(None);
    };
    let mut ops = vec![WriteOp::delete(
        lists_namespace(ns),
        stored(from, &taken.name),
    )];
    if from == to {
        destination.retain(|i| i.name != taken.name);
    }
    let edge = match ends.1 {
        End::Left => destination.first(),
        End::Right => destination.last(),
    };
    let edge = edge.map(|i| i.name.clone());
    ops.extend(push_ops(
        backend,
        ns,
        to,
        edge.as_ref(),
        vec![taken.value.clone()],
        ends.1,
    ));
    write_all(backend, ops).await?;
    Ok(Some(Reply::Bulk(taken.value.clone())))
}

/// LINSERT: `value` placed before or after the first `pivot`; the new
/// length, -1 without the pivot, 0 without the list. Takes the midpoint
/// position; when the neighbours leave no room, the list is written afresh.
async fn insert(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    (after, pivot): (bool, &Bytes),
    value: Bytes,
) -> Result<Reply, Reply> {
    let all = items(backend, ns, key).await?;
    if all.is_empty() {
        return Ok(Reply::Integer(0));
    }
    let Some(at) = all.iter().position(|i| i.value == *pivot) else {
        return Ok(Reply::Integer(-1));
    };
    let slot = if after { at + 1 } else { at };
    let position = |i: usize| all.get(i).and_then(|item| list_position(&item.name));
    let before = slot.checked_sub(1).and_then(position);
    let next = position(slot);
    let lns = lists_namespace(ns);
    let chosen = match (before, next) {
        (Some(b), Some(n)) if n - b > 1 => Some(b + (n - b) / 2),
        (Some(b), None) => b.checked_add(POSITION_STEP),
        (None, Some(n)) => n.checked_sub(POSITION_STEP),
        _ => None,
    };
    let ops = match chosen {
        Some(p) => vec![WriteOp::put(
            lns,
            stored(key, &list_element(p, tiebreak(backend))),
            value,
        )],
        None => respace(backend, ns, key, &all, (slot, value)),
    };
    write_all(backend, ops).await?;
    Ok(Reply::Integer(all.len() as i64 + 1))
}

/// The list written afresh with `value` at index `slot`: every element
/// deleted and put again, a step apart.
fn respace(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    all: &[Item],
    (slot, value): (usize, Bytes),
) -> Vec<WriteOp> {
    let lns = lists_namespace(ns);
    let mut values: Vec<Bytes> = all.iter().map(|i| i.value.clone()).collect();
    values.insert(slot, value);
    let mut ops: Vec<WriteOp> = all
        .iter()
        .map(|i| WriteOp::delete(lns, stored(key, &i.name)))
        .collect();
    ops.extend(push_ops(backend, ns, key, None, values, End::Right));
    ops
}

/// LPOS over the elements as read.
fn lpos(all: &[Item], element: &Bytes, args: PosArgs) -> Reply {
    let limit = if args.maxlen == 0 {
        all.len()
    } else {
        args.maxlen.min(all.len())
    };
    let indexes: Box<dyn Iterator<Item = usize>> = if args.rank > 0 {
        Box::new(0..limit)
    } else {
        Box::new((all.len() - limit..all.len()).rev())
    };
    let skip = (args.rank.unsigned_abs() - 1) as usize;
    let mut found = indexes.filter(|i| all[*i].value == *element).skip(skip);
    match args.count {
        None => found
            .next()
            .map_or(Reply::Null, |i| Reply::Integer(i as i64)),
        Some(count) => {
            let take = if count == 0 { usize::MAX } else { count };
            Reply::Array(found.take(take).map(|i| Reply::Integer(i as i64)).collect())
        }
    }
}

/// LMPOP: up to `count` elements popped from the first of `keys` holding
/// any, with its name; `None` when all are empty.
async fn first_pop(
    backend: &Backend<'_>,
    ns: u8,
    keys: &[Bytes],
    end: End,
    count: usize,
) -> Result<Option<(Bytes, Vec<Bytes>)>, Reply> {
    for key in keys {
        if let Some(values) = pop(backend, ns, key, end, count).await? {
            return Ok(Some((key.clone(), values)));
        }
    }
    Ok(None)
}

/// A blocked command's look at list `key`: whether it has an element.
/// A key of another type is not an error here: the client keeps waiting,
/// as in Redis.
fn holds<'a>(backend: &'a Backend<'a>, ns: u8, key: Bytes) -> Try<'a, bool> {
    Box::pin(async move {
        // A list whose deadline passed while the client waited is gone.
        backend
            .settle_collection_deadlines(ns, std::iter::once(&key))
            .await?;
        Ok(backend.element_count(ns, Kind::List, &key).await? > 0)
    })
}

/// BLPOP, BRPOP, BLMPOP: [`first_pop`] once a key has an element; `None`
/// once `timeout_ms` passed (0: never).
async fn blocking_pop(
    backend: &Backend<'_>,
    ns: u8,
    (keys, end, count): (&[Bytes], End, usize),
    (timeout_ms, isolation): (u64, &crate::shared::Isolation),
) -> Result<Option<(Bytes, Vec<Bytes>)>, Reply> {
    // A key of another type is refused when the command starts, not after.
    for key in keys {
        length(backend, ns, key).await?;
    }
    let take = |key: Bytes| -> Try<'_, _> {
        Box::pin(async move {
            let popped = pop(backend, ns, &key, end, count).await?;
            Ok(popped.map(|values| (key, values)))
        })
    };
    let holds = |key| holds(backend, ns, key);
    crate::blocking::wait_for(
        ns,
        keys,
        (timeout_ms, isolation, backend.is_routed()),
        holds,
        take,
    )
    .await
}

/// BLMOVE / BRPOPLPUSH: LMOVE once `from` has an element; nil once
/// `timeout_ms` passed (0: never).
async fn blocking_move(
    backend: &Backend<'_>,
    ns: u8,
    (from, to, ends): (Bytes, Bytes, (End, End)),
    (timeout_ms, isolation): (u64, &crate::shared::Isolation),
) -> Result<Reply, Reply> {
    length(backend, ns, &from).await?;
    let to = &to;
    let take = |key: Bytes| -> Try<'_, _> {
        Box::pin(async move {
            backend
                .settle_collection_deadlines(ns, std::iter::once(to))
                .await?;
            move_element(backend, ns, &key, to, ends).await
        })
    };
    let holds = |key| holds(backend, ns, key);
    let keys = std::slice::from_ref(&from);
    let moved = crate::blocking::wait_for(
        ns,
        keys,
        (timeout_ms, isolation, backend.is_routed()),
        holds,
        take,
    )
    .await?;
    Ok(moved.unwrap_or(Reply::Null))
}
