//! The sorted-set commands (ZADD, ZRANGE, ZPOPMIN, ...), typed: parsed once,
//! then run against a `Backend`. A member is its own record holding its
//! score, and is indexed by score (`shoal_engine::fields::score_element`), so
//! a write costs one member's bytes and a pop or a short range lists only
//! the index entries it needs.
//!
//! Merge on a cluster: members are an add-wins observed-remove set, a score
//! a register (the latest write wins, by the hybrid clock). A write puts the
//! member and its new index entry and removes the index entries of the
//! scores it read, in one batch; an index entry whose score is not its
//! member's (left by a write concurrent with another) is passed over when
//! read, so ranges never show a member twice or at a score it lost.
//!
//! Must not touch: how reads and writes travel (`backend`), connections.

use crate::backend::Backend;
use crate::blocking::Try;
use crate::elements::write_all;
use crate::keyspace::Kind;
use crate::reply::{err, lower, parse_int, syntax_error, Step};
use crate::resp::Reply;
use crate::types::{collection_len, refuse_other};
use crate::zrange::{self, parse_score, RangeSpec, Select};
use bytes::Bytes;
use shoal_engine::fields::{
    database_of, field_key, field_prefix, score_element, split_field_key, split_score_element,
    zset_members_namespace, zset_scores_namespace,
};
use shoal_engine::WriteOp;
use std::collections::BTreeMap;

/// Commands that read and write under the node's exclusive turn.
pub fn runs_alone(name: &str) -> bool {
    matches!(
        name,
        "zpopmin" | "zpopmax" | "zmpop" | "zremrangebyrank" | "zremrangebyscore" | "zremrangebylex"
    )
}

/// ZADD's options.
#[derive(Clone, Copy, Default)]
pub struct AddOptions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// A sorted-set command and its parsed arguments.
pub enum ZSetCommand {
    /// ZADD, and ZINCRBY as ZADD INCR.
    Add {
        key: Bytes,
        options: AddOptions,
        pairs: Vec<(f64, Bytes)>,
    },
    Rem(Bytes, Vec<Bytes>),
    Card(Bytes),
    Score(Bytes, Bytes),
    MScore(Bytes, Vec<Bytes>),
    Rank(Bytes, Bytes, bool),
    /// ZCOUNT and ZLEXCOUNT.
    Count(Bytes, Select),
    Range(Bytes, RangeSpec),
    /// ZPOPMIN, ZPOPMAX, ZMPOP and their blocking forms: from the first of the keys holding members;
    /// `count` given or not (the reply's shape differs).
    Pop {
        keys: Vec<Bytes>,
        max: bool,
        count: Option<usize>,
        named: bool,
        /// BZPOPMIN, BZPOPMAX, BZMPOP: how long to wait (0: forever).
        timeout_ms: Option<u64>,
    },
    RemRange(Bytes, Select),
    RandMember(Bytes, Option<i64>, bool),
    Scan(Bytes, Option<Bytes>),
}

/// Why the sorted-set increments are refused on a cluster, for now.
const INCR_ON_CLUSTER: &str = "ERR ZINCRBY and ZADD INCR are not supported on a cluster yet: two nodes incrementing one member at once would each write their own result, and one increment would be lost; they work on a single node";

fn not_a_float() -> Step {
    err("ERR value is not a valid float")
}

impl ZSetCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    pub fn parse(name: &str, args: &[Bytes]) -> Result<ZSetCommand, Step> {
        let key = args[1].clone();
        Ok(match name {
            "zadd" => parse_add(args)?,
            "zincrby" => ZSetCommand::Add {
                key,
                options: AddOptions {
                    incr: true,
                    ..AddOptions::default()
                },
                pairs: vec![(
                    parse_score(&args[2]).ok_or_else(not_a_float)?,
                    args[3].clone(),
                )],
            },
            "zrem" => ZSetCommand::Rem(key, args[2..].to_vec()),
            "zcard" => ZSetCommand::Card(key),
            "zscore" => ZSetCommand::Score(key, args[2].clone()),
            "zmscore" => ZSetCommand::MScore(key, args[2..].to_vec()),
            "zrank" | "zrevrank" => ZSetCommand::Rank(key, args[2].clone(), name == "zrevrank"),
            "zcount" => ZSetCommand::Count(key, zrange::parse_select("score", &args[2], &args[3])?),
            "zlexcount" => {
                ZSetCommand::Count(key, zrange::parse_select("lex", &args[2], &args[3])?)
            }
            "zremrangebyrank" | "zremrangebyscore" | "zremrangebylex" => {
                let by = name.trim_start_matches("zremrangeby");
                ZSetCommand::RemRange(key, zrange::parse_select(by, &args[2], &args[3])?)
            }
            "zpopmin" | "zpopmax" => ZSetCommand::Pop {
                keys: vec![key],
                max: name == "zpopmax",
                count: match args.get(2) {
                    None => None,
                    Some(_) if args.len() > 3 => return Err(syntax_error()),
                    Some(n) => Some(count_arg(n)?),
                },
                named: false,
                timeout_ms: None,
            },
            "bzpopmin" | "bzpopmax" => ZSetCommand::Pop {
                keys: args[1..args.len() - 1].to_vec(),
                max: name == "bzpopmax",
                count: None,
                named: false,
                timeout_ms: Some(crate::list::timeout_arg(&args[args.len() - 1])?),
            },
            "zmpop" => parse_mpop(args, None)?,
            "bzmpop" => parse_mpop(&args[1..], Some(crate::list::timeout_arg(&args[1])?))?,
            "zrandmember" => parse_randmember(args)?,
            "zscan" => ZSetCommand::Scan(key, crate::elements::parse_scan(&args[2..])?),
            _ => ZSetCommand::Range(key, zrange::parse_range(name, &args[1..])?),
        })
    }
}

/// A count that must not be negative.
fn count_arg(text: &[u8]) -> Result<usize, Step> {
    match parse_int(text) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => Err(err("ERR value is out of range, must be positive")),
    }
}

/// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...].
fn parse_add(args: &[Bytes]) -> Result<ZSetCommand, Step> {
    let mut options = AddOptions::default();
    let mut at = 2;
    while let Some(word) = args.get(at) {
        match lower(word).as_str() {
            "nx" => options.nx = true,
            "xx" => options.xx = true,
            "gt" => options.gt = true,
            "lt" => options.lt = true,
            "ch" => options.ch = true,
            "incr" => options.incr = true,
            _ => break,
        }
        at += 1;
    }
    let rest = &args[at..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(syntax_error());
    }
    if options.incr && rest.len() > 2 {
        return Err(err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    if options.nx && options.xx {
        return Err(err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (options.gt && (options.nx || options.lt)) || (options.lt && options.nx) {
        return Err(err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        pairs.push((
            parse_score(&pair[0]).ok_or_else(not_a_float)?,
            pair[1].clone(),
        ));
    }
    Ok(ZSetCommand::Add {
        key: args[1].clone(),
        options,
        pairs,
    })
}

/// ZMPOP numkeys key [key ...] MIN|MAX [COUNT n] (BZMPOP's, after its
/// timeout).
fn parse_mpop(args: &[Bytes], timeout_ms: Option<u64>) -> Result<ZSetCommand, Step> {
    let numkeys = match parse_int(&args[1]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(err("ERR numkeys should be greater than 0")),
    };
    let Some(keys) = args.get(2..2 + numkeys) else {
        return Err(syntax_error());
    };
    let max = match args.get(2 + numkeys).map(|w| lower(w)) {
        Some(w) if w == "min" => false,
        Some(w) if w == "max" => true,
        _ => return Err(syntax_error()),
    };
    let count = match &args[3 + numkeys..] {
        [] => 1,
        [word, n] if word.eq_ignore_ascii_case(b"count") => match parse_int(n) {
            Some(n) if n > 0 => n as usize,
            _ => return Err(err("ERR count should be greater than 0")),
        },
        _ => return Err(syntax_error()),
    };
    Ok(ZSetCommand::Pop {
        keys: keys.to_vec(),
        max,
        count: Some(count),
        named: true,
        timeout_ms,
    })
}

/// ZRANDMEMBER key [count [WITHSCORES]].
fn parse_randmember(args: &[Bytes]) -> Result<ZSetCommand, Step> {
    let count = match args.get(2) {
        None => None,
        Some(n) => match parse_int(n) {
            Some(n) if n.unsigned_abs() <= crate::elements::PICK_COUNT_MAX => Some(n),
            Some(_) => return Err(err("ERR value is out of range")),
            None => return Err(err("ERR value is not an integer or out of range")),
        },
    };
    let with_scores = match args.get(3) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"withscores") && args.len() == 4 => true,
        Some(_) => return Err(syntax_error()),
    };
    Ok(ZSetCommand::RandMember(args[1].clone(), count, with_scores))
}

/// A member as read: the score that wins and every score its versions hold
/// (whose index entries a write replaces).
struct Member {
    score: f64,
    scores: Vec<f64>,
}

/// A score as a member's record holds it (reads back exactly).
fn score_value(score: f64) -> Bytes {
    Bytes::from(format!("{score:?}"))
}

/// The stored member records of `members` of `key`, each `None` when absent.
async fn read_members(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    members: &[Bytes],
) -> Result<Vec<Option<Member>>, Reply> {
    let stored: Vec<Bytes> = members
        .iter()
        .map(|m| Bytes::from(field_key(key, m)))
        .collect();
    let mut found = Vec::with_capacity(stored.len());
    for read in backend.read(zset_members_namespace(ns), &stored).await {
        let Some(set) = read? else {
            found.push(None);
            continue;
        };
        let parse = |v: &Option<Bytes>| v.as_deref().and_then(parse_score);
        found.push(set.winner().and_then(|w| parse(&w.value)).map(|score| {
            Member {
                score,
                scores: set
                    .siblings
                    .iter()
                    .filter_map(|s| parse(&s.value))
                    .collect(),
            }
        }));
    }
    Ok(found)
}

/// The writes that give `member` of `key` the score `new` (or remove it,
/// `None`), replacing the index entries of the scores it held.
pub fn member_writes(
    ns: u8,
    key: &Bytes,
    member: &Bytes,
    new: Option<f64>,
    held: &[f64],
) -> Vec<WriteOp> {
    let (mns, sns) = (zset_members_namespace(ns), zset_scores_namespace(ns));
    let entry = |score: f64| Bytes::from(field_key(key, &score_element(score, member)));
    let stored = Bytes::from(field_key(key, member));
    let mut ops = Vec::with_capacity(2 + held.len());
    match new {
        Some(score) => {
            ops.push(WriteOp::put(mns, stored, score_value(score)));
            ops.push(WriteOp::put(sns, entry(score), Bytes::new()));
        }
        None => ops.push(WriteOp::delete(mns, stored)),
    }
    let mut gone: Vec<Vec<u8>> = held.iter().map(|s| score_element(*s, member)).collect();
    gone.sort();
    gone.dedup();
    let kept = new.map(|s| score_element(s, member));
    for name in gone.into_iter().filter(|n| Some(n) != kept.as_ref()) {
        ops.push(WriteOp::delete(sns, Bytes::from(field_key(key, &name))));
    }
    ops
}

/// The score index writes for member puts copied to `to` (RENAME, COPY).
pub fn index_of(puts: &[WriteOp], to: &Bytes, members_ns: u8) -> Vec<WriteOp> {
    let sns = zset_scores_namespace(database_of(members_ns));
    let entry = |op: &WriteOp| {
        let (_, member) = split_field_key(&op.key)?;
        let score = parse_score(op.value.as_deref()?)?;
        let name = field_key(to, &score_element(score, member));
        Some(WriteOp::put(sns, Bytes::from(name), Bytes::new()))
    };
    puts.iter().filter_map(entry).collect()
}

/// Up to `want` members of `key` with their scores, from the lowest score
/// (or, `from_back`, the highest) on, each checked against its member's
/// record: an index entry a concurrent write left behind is passed over.
async fn ordered(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    from_back: bool,
    want: usize,
) -> Result<Vec<(f64, Bytes)>, Reply> {
    let prefix_len = field_prefix(key).len();
    let mut fetch = want.saturating_add(want / 8).saturating_add(4);
    loop {
        let window = (from_back, 0, fetch);
        let stored = backend
            .element_keys_from(ns, Kind::ZSetScores, key, window)
            .await?;
        let exhausted = stored.len() < fetch;
        let entries: Vec<(f64, Bytes)> = stored
            .iter()
            .filter_map(|k| {
                let (score, member) = split_score_element(&k[prefix_len..])?;
                Some((score, k.slice_ref(member)))
            })
            .collect();
        let members: Vec<Bytes> = entries.iter().map(|(_, m)| m.clone()).collect();
        let records = read_members(backend, ns, key, &members).await?;
        let checked = entries
            .into_iter()
            .zip(records)
            .filter(|((score, _), record)| record.as_ref().is_some_and(|r| r.score == *score))
            .map(|(entry, _)| entry);
        let checked: Vec<(f64, Bytes)> = checked.take(want).collect();
        if checked.len() >= want || exhausted {
            return Ok(checked);
        }
        fetch = fetch.saturating_mul(2);
    }
}

/// Every member of `key` in score order; WRONGTYPE when there is none and
/// `key` holds another type.
pub async fn all_ordered(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
) -> Result<Vec<(f64, Bytes)>, Reply> {
    let all = ordered(backend, ns, key, false, usize::MAX).await?;
    if all.is_empty() {
        refuse_other(backend, ns, key, Kind::ZSet).await?;
    }
    Ok(all)
}

/// Members with scores: flat (member, score, member, score, ...), or in
/// `pairs` ([member, score] each), as RESP3 answers most of them.
pub fn with_scores_reply(picked: Vec<(f64, Bytes)>, pairs: bool) -> Reply {
    if pairs {
        let pairs = picked
            .into_iter()
            .map(|(score, member)| Reply::Array(vec![Reply::Bulk(member), Reply::Double(score)]));
        return Reply::Array(pairs.collect());
    }
    let flat = picked
        .into_iter()
        .flat_map(|(score, member)| [Reply::Bulk(member), Reply::Double(score)]);
    Reply::Array(flat.collect())
}

impl ZSetCommand {
    /// Run against `backend` in database `ns`; `resp3`: the connection
    /// speaks RESP3 (members with scores answer in pairs).
    /// A blocking pop takes the node's exclusive turn from `isolation` per
    /// try; without one (in EXEC, already alone) it tries once.
    pub async fn run(
        self,
        backend: &Backend<'_>,
        ns: u8,
        resp3: bool,
        isolation: Option<&crate::shared::Isolation>,
    ) -> Step {
        Step::Reply(
            match self.run_checked(backend, ns, (resp3, isolation)).await {
                Ok(reply) | Err(reply) => reply,
            },
        )
    }

    async fn run_checked(
        self,
        backend: &Backend<'_>,
        ns: u8,
        (resp3, isolation): (bool, Option<&crate::shared::Isolation>),
    ) -> Result<Reply, Reply> {
        Ok(match self {
            ZSetCommand::Add { options, .. } if options.incr && backend.is_routed() => {
                return Err(Reply::error(INCR_ON_CLUSTER))
            }
            ZSetCommand::Add {
                key,
                options,
                pairs,
            } => add(backend, ns, &key, options, pairs).await?,
            ZSetCommand::Rem(key, members) => {
                refuse_other(backend, ns, &key, Kind::ZSet).await?;
                let found = read_members(backend, ns, &key, &members).await?;
                let mut removed = BTreeMap::new();
                for (member, record) in members.into_iter().zip(found) {
                    if let Some(record) = record {
                        removed.insert(member, record.scores);
                    }
                }
                let count = removed.len();
                let ops = removed
                    .iter()
                    .flat_map(|(m, held)| member_writes(ns, &key, m, None, held))
                    .collect();
                write_all(backend, ops).await?;
                Reply::Integer(count as i64)
            }
            ZSetCommand::Card(key) => {
                crate::types::len_reply(backend, ns, &key, Kind::ZSet).await?
            }
            ZSetCommand::Score(key, member) => {
                let mut found = scores(backend, ns, &key, &[member]).await?;
                found.pop().flatten().map_or(Reply::Null, Reply::Double)
            }
            ZSetCommand::MScore(key, members) => {
                let found = scores(backend, ns, &key, &members).await?;
                Reply::Array(
                    found
                        .into_iter()
                        .map(|s| s.map_or(Reply::Null, Reply::Double))
                        .collect(),
                )
            }
            read => read.run_read(backend, ns, (resp3, isolation)).await?,
        })
    }

    /// The commands that read the set in order (and the removals by range).
    async fn run_read(
        self,
        backend: &Backend<'_>,
        ns: u8,
        (resp3, isolation): (bool, Option<&crate::shared::Isolation>),
    ) -> Result<Reply, Reply> {
        Ok(match self {
            ZSetCommand::Rank(key, member, rev) => {
                let all = all_ordered(backend, ns, &key).await?;
                match all.iter().position(|(_, m)| *m == member) {
                    Some(at) if rev => Reply::Integer((all.len() - 1 - at) as i64),
                    Some(at) => Reply::Integer(at as i64),
                    None => Reply::Null,
                }
            }
            ZSetCommand::Count(key, select) => {
                let all = all_ordered(backend, ns, &key).await?;
                let inside = all.iter().filter(|(s, m)| zrange::contains(&select, *s, m));
                Reply::Integer(inside.count() as i64)
            }
            ZSetCommand::Range(key, spec) => {
                let picked = range(backend, ns, &key, &spec).await?;
                match spec.with_scores {
                    true => with_scores_reply(picked, resp3),
                    false => {
                        Reply::Array(picked.into_iter().map(|(_, m)| Reply::Bulk(m)).collect())
                    }
                }
            }
            pop @ ZSetCommand::Pop { .. } => pop.run_pop(backend, ns, (resp3, isolation)).await?,
            ZSetCommand::RemRange(key, select) => {
                let spec = RangeSpec {
                    select,
                    rev: false,
                    limit: None,
                    with_scores: false,
                };
                let picked = range(backend, ns, &key, &spec).await?;
                remove(backend, ns, &key, &picked).await?;
                Reply::Integer(picked.len() as i64)
            }
            ZSetCommand::RandMember(key, count, with_scores) => {
                let all = all_ordered(backend, ns, &key).await?;
                rand_members(all, count, (with_scores, resp3), backend.entropy())
            }
            ZSetCommand::Scan(key, pattern) => {
                let all = all_ordered(backend, ns, &key).await?;
                let matching = all.into_iter().filter(|(_, m)| {
                    pattern
                        .as_ref()
                        .is_none_or(|p| crate::glob::glob_match(p, m, false))
                });
                Reply::Array(vec![
                    Reply::Bulk(Bytes::from_static(b"0")),
                    with_scores_reply(matching.collect(), false),
                ])
            }
            _ => unreachable!("not an ordered sorted-set read"),
        })
    }

    /// ZPOPMIN, ZPOPMAX, ZMPOP and the blocking pops.
    async fn run_pop(
        self,
        backend: &Backend<'_>,
        ns: u8,
        (resp3, isolation): (bool, Option<&crate::shared::Isolation>),
    ) -> Result<Reply, Reply> {
        let ZSetCommand::Pop {
            keys,
            max,
            count,
            named,
            timeout_ms,
        } = self
        else {
            unreachable!("not a pop");
        };
        Ok({
            let shape = PopShape {
                named,
                blocking: timeout_ms.is_some(),
                pairs: resp3 && count.is_some(),
            };
            let want = (max, count.unwrap_or(1));
            match (timeout_ms, isolation) {
                (Some(timeout_ms), Some(isolation)) => {
                    let wait = (timeout_ms, isolation);
                    blocking_pop(backend, ns, (&keys, want.0, want.1), shape, wait).await?
                }
                // Inside EXEC a blocking pop tries once.
                _ => pop(backend, ns, &keys, want, shape).await?,
            }
        })
    }
}

/// The scores of `members` of `key` (`None`: not a member); WRONGTYPE when
/// none is found and `key` holds another type.
async fn scores(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    members: &[Bytes],
) -> Result<Vec<Option<f64>>, Reply> {
    let found: Vec<Option<f64>> = read_members(backend, ns, key, members)
        .await?
        .into_iter()
        .map(|r| r.map(|r| r.score))
        .collect();
    if found.iter().all(Option::is_none) {
        refuse_other(backend, ns, key, Kind::ZSet).await?;
    }
    Ok(found)
}

/// The members `spec` picks, in reply order (ZRANGE, ZRANGESTORE). A rank
/// range from the start reads only as far as its end.
pub async fn range(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    spec: &RangeSpec,
) -> Result<Vec<(f64, Bytes)>, Reply> {
    let ordered_part = match spec.select {
        Select::Rank(start, stop) if start >= 0 && stop >= 0 && start <= stop => {
            let part = ordered(backend, ns, key, spec.rev, stop as usize + 1).await?;
            if part.is_empty() {
                refuse_other(backend, ns, key, Kind::ZSet).await?;
            }
            part
        }
        _ => {
            let mut all = all_ordered(backend, ns, key).await?;
            if spec.rev {
                all.reverse();
            }
            all
        }
    };
    Ok(zrange::pick(spec, &ordered_part, |m| m))
}

/// Remove `picked` members of `key` (and every index entry they hold).
async fn remove(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    picked: &[(f64, Bytes)],
) -> Result<(), Reply> {
    let members: Vec<Bytes> = picked.iter().map(|(_, m)| m.clone()).collect();
    let records = read_members(backend, ns, key, &members).await?;
    let mut ops = Vec::new();
    for ((score, member), record) in picked.iter().zip(records) {
        let mut held = record.map_or_else(Vec::new, |r| r.scores);
        held.push(*score);
        ops.extend(member_writes(ns, key, member, None, &held));
    }
    write_all(backend, ops).await
}

/// A member as ZADD sees it while applying its pairs in order.
struct Pending {
    score: Option<f64>,
    held: Vec<f64>,
    changed: bool,
}

/// ZADD: each pair applied in order under `options`; answers how many were
/// added (changed, with CH), or the new score with INCR (nil: not applied).
async fn add(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    options: AddOptions,
    pairs: Vec<(f64, Bytes)>,
) -> Result<Reply, Reply> {
    refuse_other(backend, ns, key, Kind::ZSet).await?;
    let members: Vec<Bytes> = pairs.iter().map(|(_, m)| m.clone()).collect();
    let records = read_members(backend, ns, key, &members).await?;
    let mut pending: BTreeMap<Bytes, Pending> = BTreeMap::new();
    for (member, record) in members.into_iter().zip(records) {
        let (score, held) = record.map_or((None, Vec::new()), |r| (Some(r.score), r.scores));
        let changed = false;
        pending.entry(member).or_insert(Pending {
            score,
            held,
            changed,
        });
    }
    let (mut added, mut changed, mut last) = (0, 0, None);
    for (score, member) in pairs {
        let now = pending.get_mut(&member).expect("read above");
        let new = if options.incr {
            now.score.unwrap_or(0.0) + score
        } else {
            score
        };
        if new.is_nan() {
            return Err(Reply::error("ERR resulting score is not a number (NaN)"));
        }
        let skip = (options.nx && now.score.is_some())
            || (options.xx && now.score.is_none())
            || (options.gt && now.score.is_some_and(|n| new <= n))
            || (options.lt && now.score.is_some_and(|n| new >= n));
        last = (!skip).then_some(new);
        if !skip && now.score != Some(new) {
            added += usize::from(now.score.is_none());
            changed += 1;
            (now.score, now.changed) = (Some(new), true);
        }
    }
    let ops = pending
        .iter()
        .filter(|(_, p)| p.changed)
        .flat_map(|(m, p)| member_writes(ns, key, m, p.score, &p.held))
        .collect();
    write_all(backend, ops).await?;
    Ok(match (options.incr, last) {
        (true, Some(score)) => Reply::Double(score),
        (true, None) => Reply::Null,
        (false, _) => Reply::Integer(if options.ch { changed } else { added } as i64),
    })
}

/// How a pop answers: ZPOPMIN/ZPOPMAX (flat, or pairs in RESP3 with a
/// count), ZMPOP and BZMPOP (`named`: the key, then pairs), BZPOPMIN and
/// BZPOPMAX (`blocking` without `named`: key, member, score).
#[derive(Clone, Copy)]
struct PopShape {
    named: bool,
    blocking: bool,
    pairs: bool,
}

/// Up to `want` members from the low (or `max` high) end of `key`, removed;
/// `None` when it holds none.
async fn take_from(
    backend: &Backend<'_>,
    ns: u8,
    key: &Bytes,
    max: bool,
    want: usize,
) -> Result<Option<Vec<(f64, Bytes)>>, Reply> {
    let picked = ordered(backend, ns, key, max, want).await?;
    if picked.is_empty() {
        refuse_other(backend, ns, key, Kind::ZSet).await?;
        return Ok(None);
    }
    remove(backend, ns, key, &picked).await?;
    Ok(Some(picked))
}

fn popped_reply(key: Bytes, picked: Vec<(f64, Bytes)>, shape: PopShape) -> Reply {
    match shape {
        PopShape { named: true, .. } => {
            Reply::Array(vec![Reply::Bulk(key), with_scores_reply(picked, true)])
        }
        PopShape { blocking: true, .. } => {
            let mut reply = vec![Reply::Bulk(key)];
            if let Reply::Array(flat) = with_scores_reply(picked, false) {
                reply.extend(flat);
            }
            Reply::Array(reply)
        }
        PopShape { pairs, .. } => with_scores_reply(picked, pairs),
    }
}

/// ZPOPMIN, ZPOPMAX, ZMPOP, and a blocking pop's one try: up to `want`
/// members from the first key holding any, removed and answered.
async fn pop(
    backend: &Backend<'_>,
    ns: u8,
    keys: &[Bytes],
    (max, want): (bool, usize),
    shape: PopShape,
) -> Result<Reply, Reply> {
    for key in keys {
        if let Some(picked) = take_from(backend, ns, key, max, want).await? {
            return Ok(popped_reply(key.clone(), picked, shape));
        }
    }
    Ok(match shape.named || shape.blocking {
        true => Reply::NullArray,
        false => Reply::Array(Vec::new()),
    })
}

/// BZPOPMIN, BZPOPMAX, BZMPOP: a pop once a key holds members; nil once
/// `timeout_ms` passed (0: never).
async fn blocking_pop(
    backend: &Backend<'_>,
    ns: u8,
    (keys, max, want): (&[Bytes], bool, usize),
    shape: PopShape,
    (timeout_ms, isolation): (u64, &crate::shared::Isolation),
) -> Result<Reply, Reply> {
    // A key of another type is refused when the command starts, not after.
    for key in keys {
        collection_len(backend, ns, key, Kind::ZSet).await?;
    }
    let holds = |key: Bytes| -> Try<'_, bool> {
        // Another type is not an error: the client keeps waiting. A sorted
        // set whose deadline passed while the client waited is gone.
        Box::pin(async move {
            backend
                .settle_collection_deadlines(ns, std::iter::once(&key))
                .await?;
            Ok(backend.element_count(ns, Kind::ZSet, &key).await? > 0)
        })
    };
    let take = |key: Bytes| -> Try<'_, Option<Reply>> {
        Box::pin(async move {
            let picked = take_from(backend, ns, &key, max, want).await?;
            Ok(picked.map(|picked| popped_reply(key, picked, shape)))
        })
    };
    let taken = crate::blocking::wait_for(
        ns,
        keys,
        (timeout_ms, isolation, backend.is_routed()),
        holds,
        take,
    )
    .await?;
    Ok(taken.unwrap_or(Reply::NullArray))
}

/// ZRANDMEMBER's reply from every member (`crate::elements::pick`);
/// `with_scores`: (WITHSCORES given, in RESP3 pairs).
fn rand_members(
    all: Vec<(f64, Bytes)>,
    count: Option<i64>,
    with_scores: (bool, bool),
    seed: u64,
) -> Reply {
    match (crate::elements::pick(&all, count, seed), count) {
        (None, _) => Reply::Null,
        (Some(mut one), None) => Reply::Bulk(one.remove(0).1),
        (Some(picked), Some(_)) if with_scores.0 => with_scores_reply(picked, with_scores.1),
        (Some(picked), Some(_)) => {
            Reply::Array(picked.into_iter().map(|(_, m)| Reply::Bulk(m)).collect())
        }
    }
}
