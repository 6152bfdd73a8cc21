//! The sorted-set commands that read several keys: ZUNION, ZINTER, ZDIFF,
//! their *STORE forms, ZINTERCARD and ZRANGESTORE. Inputs may be sorted sets
//! or sets (a set's members score 1), as in Redis. The stores run under the
//! node's exclusive turn and replace their destination, of any type, in one
//! batch; on a cluster they are refused (their keys need not share a slot).
//!
//! Must not touch: how members are stored (`zset`), how writes travel.

use crate::backend::Backend;
use crate::elements::write_all;
use crate::keyspace::Kind;
use crate::reply::{err, lower, parse_int, syntax_error, Step};
use crate::resp::Reply;
use crate::types::{element_deletes, WRONGTYPE};
use crate::zrange::{self, parse_score, RangeSpec};
use crate::zset;
use bytes::Bytes;
use shoal_engine::WriteOp;
use std::collections::{BTreeMap, BTreeSet};

/// Commands that read and write under the node's exclusive turn.
pub fn runs_alone(name: &str) -> bool {
    matches!(
        name,
        "zunionstore" | "zinterstore" | "zdiffstore" | "zrangestore"
    )
}

/// Whether `name` is one of this module's commands.
pub fn parses(name: &str) -> bool {
    matches!(
        name,
        "zunion"
            | "zinter"
            | "zdiff"
            | "zintercard"
            | "zunionstore"
            | "zinterstore"
            | "zdiffstore"
            | "zrangestore"
    )
}

/// How the inputs combine.
#[derive(Clone, Copy, PartialEq)]
pub enum How {
    Union,
    Inter,
    Diff,
}

/// How the scores of one member in several inputs combine.
#[derive(Clone, Copy)]
pub enum Aggregate {
    Sum,
    Min,
    Max,
}

/// A combining command and its parsed arguments.
pub enum ZCombineCommand {
    Combine {
        how: How,
        keys: Vec<Bytes>,
        weights: Vec<f64>,
        aggregate: Aggregate,
        with_scores: bool,
        store: Option<Bytes>,
    },
    InterCard(Vec<Bytes>, usize),
    RangeStore(Bytes, Bytes, RangeSpec),
}

const MULTI_KEY_ON_CLUSTER: &str = "ERR ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE and ZRANGESTORE are not supported on a cluster yet: their keys may live on different replicas; they work on a single node";

/// `numkeys key [key ...]` from `args[at]`: the keys and what follows.
fn keys_at<'a>(
    name: &str,
    args: &'a [Bytes],
    at: usize,
) -> Result<(&'a [Bytes], &'a [Bytes]), Step> {
    let numkeys = match parse_int(&args[at]) {
        Some(n) if n > 0 => n as usize,
        Some(_) => {
            return Err(err(format!(
                "ERR at least 1 input key is needed for '{name}' command"
            )))
        }
        None => return Err(err("ERR value is not an integer or out of range")),
    };
    match args.get(at + 1..at + 1 + numkeys) {
        Some(keys) => Ok((keys, &args[at + 1 + numkeys..])),
        None => Err(syntax_error()),
    }
}

impl ZCombineCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    pub fn parse(name: &str, args: &[Bytes]) -> Result<ZCombineCommand, Step> {
        if name == "zrangestore" {
            let spec = zrange::parse_range("zrange", &args[2..])?;
            if spec.with_scores {
                return Err(syntax_error());
            }
            return Ok(ZCombineCommand::RangeStore(
                args[1].clone(),
                args[2].clone(),
                spec,
            ));
        }
        if name == "zintercard" {
            let (keys, rest) = keys_at(name, args, 1)?;
            let limit = match rest {
                [] => 0,
                [word, n] if word.eq_ignore_ascii_case(b"limit") => match parse_int(n) {
                    Some(n) if n >= 0 => n as usize,
                    _ => return Err(err("ERR LIMIT can't be negative")),
                },
                _ => return Err(syntax_error()),
            };
            return Ok(ZCombineCommand::InterCard(keys.to_vec(), limit));
        }
        let store = name.ends_with("store").then(|| args[1].clone());
        let how = match name.trim_end_matches("store") {
            "zunion" => How::Union,
            "zinter" => How::Inter,
            _ => How::Diff,
        };
        let (keys, rest) = keys_at(name, args, if store.is_some() { 2 } else { 1 })?;
        let (weights, aggregate, with_scores) =
            parse_options(how, keys.len(), rest, store.is_none())?;
        Ok(ZCombineCommand::Combine {
            how,
            keys: keys.to_vec(),
            weights,
            aggregate,
            with_scores,
            store,
        })
    }
}

/// WEIGHTS, AGGREGATE (not for ZDIFF) and WITHSCORES (not for a store).
fn parse_options(
    how: How,
    keys: usize,
    mut rest: &[Bytes],
    replies: bool,
) -> Result<(Vec<f64>, Aggregate, bool), Step> {
    let (mut weights, mut aggregate, mut with_scores) = (vec![1.0; keys], Aggregate::Sum, false);
    while let Some(word) = rest.first() {
        match lower(word).as_str() {
            "weights" if how != How::Diff && rest.len() > keys => {
                for (weight, text) in weights.iter_mut().zip(&rest[1..=keys]) {
                    *weight =
                        parse_score(text).ok_or_else(|| err("ERR weight value is not a float"))?;
                }
                rest = &rest[1 + keys..];
            }
            "aggregate" if how != How::Diff && rest.len() > 1 => {
                aggregate = match lower(&rest[1]).as_str() {
                    "sum" => Aggregate::Sum,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    _ => return Err(syntax_error()),
                };
                rest = &rest[2..];
            }
            "withscores" if replies => {
                with_scores = true;
                rest = &rest[1..];
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok((weights, aggregate, with_scores))
}

/// The members of `key` with their scores, whether it is a sorted set or a
/// set (score 1); empty when absent; WRONGTYPE for another type.
async fn scored(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<BTreeMap<Bytes, f64>, Reply> {
    match backend.kind_of(ns, key).await? {
        None => Ok(BTreeMap::new()),
        Some(Kind::ZSet) => Ok(zset::all_ordered(backend, ns, key)
            .await?
            .into_iter()
            .map(|(score, member)| (member, score))
            .collect()),
        Some(Kind::Set) => {
            let prefix_len = shoal_engine::fields::field_prefix(key).len();
            let stored = backend.element_keys(ns, Kind::Set, key).await?;
            Ok(stored
                .into_iter()
                .map(|k| (k.slice(prefix_len..), 1.0))
                .collect())
        }
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A weighted score; Redis reads 0 × ±inf as 0.
fn weighted(score: f64, weight: f64) -> f64 {
    let product = score * weight;
    if product.is_nan() {
        0.0
    } else {
        product
    }
}

fn aggregate_into(into: &mut f64, score: f64, how: Aggregate) {
    *into = match how {
        Aggregate::Sum if (*into + score).is_nan() => 0.0,
        Aggregate::Sum => *into + score,
        Aggregate::Min => into.min(score),
        Aggregate::Max => into.max(score),
    };
}

/// The combination of `keys`, in score order.
async fn combine(
    backend: &Backend<'_>,
    ns: u8,
    (how, keys, weights, aggregate): (How, &[Bytes], &[f64], Aggregate),
) -> Result<Vec<(f64, Bytes)>, Reply> {
    let mut result: Option<BTreeMap<Bytes, f64>> = None;
    for (key, weight) in keys.iter().zip(weights) {
        let input = scored(backend, ns, key).await?;
        result = Some(match (result, how) {
            (None, How::Diff) => input,
            (None, _) => input
                .into_iter()
                .map(|(m, s)| (m, weighted(s, *weight)))
                .collect(),
            (Some(mut acc), How::Union) => {
                for (member, score) in input {
                    let score = weighted(score, *weight);
                    acc.entry(member)
                        .and_modify(|into| aggregate_into(into, score, aggregate))
                        .or_insert(score);
                }
                acc
            }
            (Some(mut acc), How::Inter) => {
                acc.retain(|m, _| input.contains_key(m));
                for (member, into) in acc.iter_mut() {
                    aggregate_into(into, weighted(input[member], *weight), aggregate);
                }
                acc
            }
            (Some(mut acc), How::Diff) => {
                acc.retain(|m, _| !input.contains_key(m));
                acc
            }
        });
    }
    let mut ordered: Vec<(f64, Bytes)> = result
        .unwrap_or_default()
        .into_iter()
        .map(|(m, s)| (s, m))
        .collect();
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(ordered)
}

impl ZCombineCommand {
    /// Run against `backend` in database `ns` (`resp3`: scores in pairs).
    pub async fn run(self, backend: &Backend<'_>, ns: u8, resp3: bool) -> Step {
        Step::Reply(match self.run_checked(backend, ns, resp3).await {
            Ok(reply) | Err(reply) => reply,
        })
    }

    async fn run_checked(self, backend: &Backend<'_>, ns: u8, resp3: bool) -> Result<Reply, Reply> {
        match self {
            ZCombineCommand::Combine { store: Some(_), .. } | ZCombineCommand::RangeStore(..)
                if backend.is_routed() =>
            {
                Err(Reply::error(MULTI_KEY_ON_CLUSTER))
            }
            ZCombineCommand::Combine {
                how,
                keys,
                weights,
                aggregate,
                with_scores,
                store,
            } => {
                let result = combine(backend, ns, (how, &keys, &weights, aggregate)).await?;
                match store {
                    Some(destination) => store_into(backend, ns, &destination, result).await,
                    None if with_scores => Ok(zset::with_scores_reply(result, resp3)),
                    None => Ok(Reply::Array(
                        result.into_iter().map(|(_, m)| Reply::Bulk(m)).collect(),
                    )),
                }
            }
            ZCombineCommand::InterCard(keys, limit) => {
                let weights = vec![1.0; keys.len()];
                let found =
                    combine(backend, ns, (How::Inter, &keys, &weights, Aggregate::Sum)).await?;
                let found = if limit == 0 {
                    found.len()
                } else {
                    found.len().min(limit)
                };
                Ok(Reply::Integer(found as i64))
            }
            ZCombineCommand::RangeStore(destination, source, spec) => {
                let picked = zset::range(backend, ns, &source, &spec).await?;
                store_into(backend, ns, &destination, picked).await
            }
        }
    }
}

/// `destination` (of any type) replaced by `members` in one batch; answers
/// how many it holds. An empty result deletes it.
async fn store_into(
    backend: &Backend<'_>,
    ns: u8,
    destination: &Bytes,
    members: Vec<(f64, Bytes)>,
) -> Result<Reply, Reply> {
    let count = members.len() as i64;
    let puts: Vec<WriteOp> = members
        .iter()
        .flat_map(|(score, member)| zset::member_writes(ns, destination, member, Some(*score), &[]))
        .collect();
    let written: BTreeSet<(u8, Bytes)> = puts
        .iter()
        .map(|op| (op.namespace, op.key.clone()))
        .collect();
    let mut ops = vec![WriteOp::delete(ns, destination.clone())];
    ops.extend(backend.deadline_delete(ns, destination));
    for kind in Kind::COLLECTIONS.into_iter().chain([Kind::ZSetScores]) {
        let old = element_deletes(backend, ns, kind, destination).await?;
        ops.extend(
            old.into_iter()
                .filter(|op| !written.contains(&(op.namespace, op.key.clone()))),
        );
    }
    ops.extend(puts);
    write_all(backend, ops).await?;
    Ok(Reply::Integer(count))
}
