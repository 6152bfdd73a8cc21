//! The set commands (SADD, SREM, SMEMBERS, SINTER, SPOP, ...), typed: parsed
//! once, then run against a `Backend`. Each member is its own stored key with
//! an empty value (`shoal_engine::fields`), so adding a member costs that
//! member's bytes, and on a cluster a set merges as an add-wins
//! observed-remove set: SREM, SPOP and DEL remove only the member versions
//! their coordinator holds, so an add concurrent with a remove survives.
//!
//! SPOP on a cluster reads the members, picks, and removes what it picked:
//! two SPOPs on two sides of a partition may both return one member (it is
//! popped twice, never lost). SMOVE and the *STORE commands write several
//! keys from what they read, so a cluster refuses them for now; one node
//! runs them, and SPOP with a count, under its exclusive turn, as one step.
//! SPOP takes members by conditional deletes (`elements::take`).
//!
//! Must not touch: how reads and writes travel (`backend`), connections.

use crate::backend::Backend;
use crate::elements::write_all;
use crate::keyspace::Kind;
use crate::reply::{err, parse_int, syntax_error, ReplyShape, Step};
use crate::resp::Reply;
use crate::types::{element_deletes, refuse_other};
use bytes::Bytes;
use shoal_engine::fields::{field_key, field_prefix, members_namespace};
use shoal_engine::WriteOp;
use std::collections::BTreeSet;

/// How a multi-set read combines its sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Inter,
    Union,
    Diff,
}

/// A set command and its parsed arguments.
pub enum SetCommand {
    Add(Bytes, Vec<Bytes>),
    Rem(Bytes, Vec<Bytes>),
    IsMember(Bytes, Bytes),
    MIsMember(Bytes, Vec<Bytes>),
    Card(Bytes),
    Members(Bytes),
    /// SRANDMEMBER key [count].
    RandMember(Bytes, Option<i64>),
    /// SPOP key [count].
    Pop(Bytes, Option<u64>),
    Move {
        from: Bytes,
        to: Bytes,
        member: Bytes,
    },
    /// SINTER, SUNION, SDIFF, and with `store` their *STORE forms.
    Combine {
        how: Combine,
        keys: Vec<Bytes>,
        store: Option<Bytes>,
    },
    /// SINTERCARD numkeys key [key ...] [LIMIT limit] (0: none).
    InterCard(Vec<Bytes>, usize),
    /// SSCAN key cursor [MATCH pattern] [COUNT n]: the whole set in one step.
    Scan(Bytes, Option<Bytes>),
}

/// Why SMOVE and the *STORE commands are refused on a cluster, for now.
const MULTI_KEY_WRITE_ON_CLUSTER: &str = "ERR SMOVE, SINTERSTORE, SUNIONSTORE and SDIFFSTORE are not supported on a cluster yet: they write several keys from what they read, and nothing yet makes that one step there; they work on a single node";

/// Whether a set command must run under the node's exclusive turn (it
/// writes from what it read).
pub fn runs_alone(name: &str, args: &[Bytes]) -> bool {
    matches!(name, "smove" | "sinterstore" | "sunionstore" | "sdiffstore")
        || (name == "spop" && args.len() > 2)
}

impl SetCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    pub fn parse(name: &str, args: &[Bytes]) -> Result<SetCommand, Step> {
        let key = args[1].clone();
        let rest = || args[2..].to_vec();
        let combine = |how, store: bool| {
            let (store, keys) = match store {
                true => (Some(args[1].clone()), args[2..].to_vec()),
                false => (None, args[1..].to_vec()),
            };
            SetCommand::Combine { how, keys, store }
        };
        Ok(match name {
            "sadd" => SetCommand::Add(key, rest()),
            "srem" => SetCommand::Rem(key, rest()),
            "sismember" => SetCommand::IsMember(key, args[2].clone()),
            "smismember" => SetCommand::MIsMember(key, rest()),
            "scard" => SetCommand::Card(key),
            "smembers" => SetCommand::Members(key),
            "srandmember" => SetCommand::RandMember(key, parse_count(args, false)?),
            "spop" => SetCommand::Pop(key, parse_count(args, true)?.map(|c| c as u64)),
            "smove" => SetCommand::Move {
                from: key,
                to: args[2].clone(),
                member: args[3].clone(),
            },
            "sinter" => combine(Combine::Inter, false),
            "sunion" => combine(Combine::Union, false),
            "sdiff" => combine(Combine::Diff, false),
            "sinterstore" => combine(Combine::Inter, true),
            "sunionstore" => combine(Combine::Union, true),
            "sdiffstore" => combine(Combine::Diff, true),
            "sintercard" => parse_intercard(args)?,
            "sscan" => SetCommand::Scan(key, crate::elements::parse_scan(&args[2..])?),
            other => unreachable!("set command {other} in the table but not parsed"),
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
        let mns = members_namespace(ns);
        let stored = |key: &Bytes, m: &Bytes| Bytes::from(field_key(key, m));
        let reply = match self {
            SetCommand::Add(key, members) => {
                refuse_other(backend, ns, &key, Kind::Set).await?;
                let ops = members
                    .iter()
                    .map(|m| WriteOp::put(mns, stored(&key, m), Bytes::new()))
                    .collect();
                return Ok(backend.write(ops, ReplyShape::Added).await);
            }
            SetCommand::Rem(key, members) => {
                refuse_other(backend, ns, &key, Kind::Set).await?;
                let ops = members
                    .iter()
                    .map(|m| WriteOp::delete(mns, stored(&key, m)))
                    .collect();
                return Ok(backend.write(ops, ReplyShape::Count).await);
            }
            SetCommand::Pop(key, count) => return pop(backend, ns, key, count).await,
            SetCommand::Move { .. } | SetCommand::Combine { store: Some(_), .. }
                if backend.is_routed() =>
            {
                return Err(Reply::error(MULTI_KEY_WRITE_ON_CLUSTER));
            }
            SetCommand::Move { from, to, member } => {
                return move_member(backend, ns, (from, to), member).await
            }
            SetCommand::Combine {
                how,
                keys,
                store: Some(destination),
            } => {
                let result = combine(backend, ns, how, &keys).await?;
                return store(backend, ns, destination, result).await;
            }
            SetCommand::IsMember(key, member) => {
                let found = is_member(backend, ns, &key, &[member]).await?;
                Reply::Integer(i64::from(found[0]))
            }
            SetCommand::MIsMember(key, members) => {
                let found = is_member(backend, ns, &key, &members).await?;
                Reply::Array(
                    found
                        .into_iter()
                        .map(|f| Reply::Integer(f.into()))
                        .collect(),
                )
            }
            whole => whole.run_read(backend, ns).await?,
        };
        Ok(Step::Reply(reply))
    }

    /// The commands that only read whole sets.
    async fn run_read(self, backend: &Backend<'_>, ns: u8) -> Result<Reply, Reply> {
        Ok(match self {
            SetCommand::Card(key) => crate::types::len_reply(backend, ns, &key, Kind::Set).await?,
            SetCommand::Members(key) => set_reply(members(backend, ns, &key).await?),
            SetCommand::RandMember(key, count) => {
                let all: Vec<Bytes> = members(backend, ns, &key).await?.into_iter().collect();
                rand_members(all, count, backend.entropy())
            }
            SetCommand::Combine { how, keys, .. } => {
                set_reply(combine(backend, ns, how, &keys).await?)
            }
            SetCommand::InterCard(keys, limit) => {
                let found = combine(backend, ns, Combine::Inter, &keys).await?.len();
                Reply::Integer(if limit == 0 { found } else { found.min(limit) } as i64)
            }
            SetCommand::Scan(key, pattern) => {
                let matching = members(backend, ns, &key).await?.into_iter().filter(|m| {
                    pattern
                        .as_ref()
                        .is_none_or(|p| crate::glob::glob_match(p, m, false))
                });
                Reply::Array(vec![
                    Reply::Bulk(Bytes::from_static(b"0")),
                    Reply::Array(matching.map(Reply::Bulk).collect()),
                ])
            }
            _ => unreachable!("not a read-only set command"),
        })
    }
}

/// The members of set `key` (empty when absent); WRONGTYPE when `key` holds
/// another type.
pub(crate) async fn members(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
) -> Result<BTreeSet<Bytes>, Reply> {
    let elements = backend.elements(ns, Kind::Set, key).await?;
    if elements.is_empty() {
        refuse_other(backend, ns, key, Kind::Set).await?;
    }
    Ok(elements.into_iter().map(|(m, _)| m).collect())
}

/// Whether each of `candidates` is a member of `key`.
async fn is_member(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    candidates: &[Bytes],
) -> Result<Vec<bool>, Reply> {
    let stored: Vec<Bytes> = candidates
        .iter()
        .map(|m| Bytes::from(field_key(key, m)))
        .collect();
    let mut found = Vec::with_capacity(stored.len());
    for read in backend.read(members_namespace(ns), &stored).await {
        found.push(read?.is_some_and(|s| !s.is_deleted()));
    }
    if !found.iter().any(|f| *f) {
        refuse_other(backend, ns, key, Kind::Set).await?;
    }
    Ok(found)
}

/// SINTER, SUNION, SDIFF of `keys` (every key checked for its type, as Redis
/// does).
async fn combine(
    backend: &Backend<'_>,
    ns: u8,
    how: Combine,
    keys: &[Bytes],
) -> Result<BTreeSet<Bytes>, Reply> {
    let mut result: Option<BTreeSet<Bytes>> = None;
    for key in keys {
        let set = members(backend, ns, key).await?;
        result = Some(match (result, how) {
            (None, _) => set,
            (Some(acc), Combine::Inter) => acc.intersection(&set).cloned().collect(),
            (Some(mut acc), Combine::Union) => {
                acc.extend(set);
                acc
            }
            (Some(acc), Combine::Diff) => acc.difference(&set).cloned().collect(),
        });
    }
    Ok(result.unwrap_or_default())
}

/// *STORE: `destination` (of any type) replaced by `members` in one batch;
/// answers how many it holds. An empty result deletes it.
async fn store(
    backend: &Backend<'_>,
    ns: u8,
    destination: Bytes,
    members: BTreeSet<Bytes>,
) -> Result<Step, Reply> {
    let mns = members_namespace(ns);
    let count = members.len() as i64;
    let mut ops = vec![WriteOp::delete(ns, destination.clone())];
    ops.extend(backend.deadline_delete(ns, &destination));
    for kind in Kind::COLLECTIONS {
        let old = element_deletes(backend, ns, kind, &destination).await?;
        ops.extend(old.into_iter().filter(|op| {
            !(op.namespace == mns && members.iter().any(|m| op.key == field_key(&destination, m)))
        }));
    }
    ops.extend(
        members
            .iter()
            .map(|m| WriteOp::put(mns, Bytes::from(field_key(&destination, m)), Bytes::new())),
    );
    write_all(backend, ops).await?;
    Ok(Step::Reply(Reply::Integer(count)))
}

/// SMOVE: 1 once `member` left `from` and joined `to` (one batch); 0 when
/// `from` does not hold it.
async fn move_member(
    backend: &Backend<'_>,
    ns: u8,
    (from, to): (Bytes, Bytes),
    member: Bytes,
) -> Result<Step, Reply> {
    let held = is_member(backend, ns, &from, std::slice::from_ref(&member)).await?[0];
    refuse_other(backend, ns, &to, Kind::Set).await?;
    if !held {
        return Ok(Step::Reply(Reply::Integer(0)));
    }
    if from == to {
        return Ok(Step::Reply(Reply::Integer(1)));
    }
    let mns = members_namespace(ns);
    let ops = vec![
        WriteOp::delete(mns, Bytes::from(field_key(&from, &member))),
        WriteOp::put(mns, Bytes::from(field_key(&to, &member)), Bytes::new()),
    ];
    Ok(backend.write(ops, ReplyShape::One).await)
}

/// SPOP: up to `count` members (one, as a bulk, without a count) removed
/// and answered. Members are taken by conditional deletes
/// (`elements::take`): one lost to a racing SPOP is picked again.
async fn pop(backend: &Backend<'_>, ns: u8, key: Bytes, count: Option<u64>) -> Result<Step, Reply> {
    let want = count.map_or(1, |c| c as usize);
    let mut popped = Vec::new();
    let prefix_len = field_prefix(&key).len();
    for _ in 0..crate::elements::TAKE_TRIES_MAX {
        // Only the members' names are listed (no value is read).
        let stored = backend.element_keys(ns, Kind::Set, &key).await?;
        if stored.is_empty() || popped.len() >= want {
            break;
        }
        let picked = crate::elements::pick(
            &stored,
            Some((want - popped.len()) as i64),
            backend.entropy(),
        )
        .unwrap_or_default();
        let taken = crate::elements::take(backend, members_namespace(ns), &picked).await?;
        let won = picked.into_iter().zip(taken).filter(|(_, t)| t.is_some());
        popped.extend(won.map(|(stored, _)| stored.slice(prefix_len..)));
    }
    if popped.is_empty() {
        refuse_other(backend, ns, &key, Kind::Set).await?;
    }
    Ok(Step::Reply(match count {
        Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
        None => popped.into_iter().next().map_or(Reply::Null, Reply::Bulk),
    }))
}

/// A set's members as RESP3's set type (an array in RESP2).
fn set_reply(members: BTreeSet<Bytes>) -> Reply {
    Reply::Set(members.into_iter().map(Reply::Bulk).collect())
}

/// SRANDMEMBER's reply from the members picked (`crate::elements::pick`).
fn rand_members(members: Vec<Bytes>, count: Option<i64>, seed: u64) -> Reply {
    match (crate::elements::pick(&members, count, seed), count) {
        (None, _) => Reply::Null,
        (Some(mut one), None) => Reply::Bulk(one.remove(0)),
        (Some(picked), Some(_)) => Reply::Array(picked.into_iter().map(Reply::Bulk).collect()),
    }
}

/// SRANDMEMBER's and SPOP's optional count (`positive`: SPOP's must be).
fn parse_count(args: &[Bytes], positive: bool) -> Result<Option<i64>, Step> {
    match args.get(2) {
        None => Ok(None),
        Some(_) if args.len() > 3 => Err(syntax_error()),
        Some(c) => match parse_int(c) {
            Some(c) if positive && c < 0 => Err(err("ERR value is out of range, must be positive")),
            Some(c) if c.unsigned_abs() > crate::elements::PICK_COUNT_MAX => {
                Err(err("ERR value is out of range"))
            }
            Some(c) => Ok(Some(c)),
            None => Err(err("ERR value is not an integer or out of range")),
        },
    }
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit].
fn parse_intercard(args: &[Bytes]) -> Result<SetCommand, Step> {
    let numkeys = match parse_int(&args[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(err("ERR numkeys should be greater than 0")),
    };
    if numkeys > args.len() - 2 {
        return Err(err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let keys = args[2..2 + numkeys].to_vec();
    let mut limit = 0usize;
    match &args[2 + numkeys..] {
        [] => {}
        [option, value] if option.eq_ignore_ascii_case(b"limit") => match parse_int(value) {
            Some(n) if n >= 0 => limit = n as usize,
            _ => return Err(err("ERR LIMIT can't be negative")),
        },
        _ => return Err(syntax_error()),
    }
    Ok(SetCommand::InterCard(keys, limit))
}
