//! What the collection commands share: Redis's rank ranges, the random pick
//! of HRANDFIELD, SRANDMEMBER and SPOP, the arguments of HSCAN and SSCAN, and a batch of
//! writes waited for within the command.
//!
//! Must not touch: storage or replies (the commands' own).

use crate::backend::Backend;
use crate::reply::{err, lower, parse_int, syntax_error, ReplyShape, Step, Waiting};
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::WriteOp;

/// The most elements one random pick answers (a negative count may repeat
/// elements without end): a bigger count is refused, not built.
pub const PICK_COUNT_MAX: u64 = 1 << 20;

/// Picks from `items`: one (`None`; `None` back when empty), up to `count`
/// distinct ones (positive), or `-count` that may repeat (negative). The
/// generator is seeded by `seed` (`Backend::entropy`: the wall clock and
/// the node's count of draws), not the thread RNG.
pub fn pick<T: Clone>(items: &[T], count: Option<i64>, seed: u64) -> Option<Vec<T>> {
    let mut rng = shoal_engine::rng::SplitMix64::new(seed);
    let mut below = |n: usize| rng.next_u64() as usize % n;
    let Some(count) = count else {
        return (!items.is_empty()).then(|| vec![items[below(items.len())].clone()]);
    };
    if count >= 0 {
        let mut order: Vec<T> = items.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, below(i + 1));
        }
        order.truncate(count as usize);
        return Some(order);
    }
    if items.is_empty() {
        return Some(Vec::new());
    }
    let repeats = (0..count.unsigned_abs()).map(|_| items[below(items.len())].clone());
    Some(repeats.collect())
}

/// HSCAN's and SSCAN's arguments after the key: a cursor, then MATCH and
/// COUNT (checked, then ignored: one step answers everything). Returns the
/// MATCH pattern.
pub fn parse_scan(rest: &[Bytes]) -> Result<Option<Bytes>, Step> {
    if std::str::from_utf8(&rest[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .is_none()
    {
        return Err(err("ERR invalid cursor"));
    }
    let mut pattern = None;
    for pair in rest[1..].chunks(2) {
        let [option, value] = pair else {
            return Err(syntax_error());
        };
        match lower(option).as_str() {
            "match" => pattern = Some(value.clone()),
            "count" if parse_int(value).is_some_and(|n| n > 0) => {}
            "count" => return Err(err("ERR value is not an integer or out of range")),
            _ => return Err(syntax_error()),
        }
    }
    Ok(pattern)
}

/// The indexes `start..=stop` of a sequence of `len` (LRANGE, LTRIM,
/// ZRANGE): negative ones count from the end; a start before the first is
/// the first, a stop past the last the last, and a stop still negative
/// after counting from the end selects nothing, as in Redis.
pub fn rank_range(len: usize, start: i64, stop: i64) -> std::ops::Range<usize> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { len + stop } else { stop }.min(len - 1);
    if start > stop || start >= len {
        return 0..0;
    }
    start as usize..stop as usize + 1
}

/// How many times a pop lists again after losing every element it tried
/// to a concurrent pop.
pub const TAKE_TRIES_MAX: usize = 64;

/// Delete each of `stored` (in namespace `cns`) only if it still holds a
/// value, as one batch; per key, the value removed, or `None` when another
/// writer removed it first. Pops take elements this way without the node's
/// exclusive turn: of two pops racing for one element, one gets it.
pub async fn take(
    backend: &Backend<'_>,
    cns: u8,
    stored: &[Bytes],
) -> Result<Vec<Option<Bytes>>, Reply> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let ops = stored
        .iter()
        .map(|key| {
            let mut op = WriteOp::delete(cns, key.clone());
            op.condition = shoal_engine::Condition::IfPresent;
            op
        })
        .collect();
    run_takes(backend, ops).await
}

/// Write deletes that answer what they removed (conditional deletes, or
/// one node's `WriteOp::take`); per op, the value removed or `None`.
pub async fn run_takes(
    backend: &Backend<'_>,
    ops: Vec<WriteOp>,
) -> Result<Vec<Option<Bytes>>, Reply> {
    let written = Waiting::of(backend.write(ops, ReplyShape::Taken).await);
    match written.0.reply().await {
        Reply::Array(taken) => Ok(taken
            .into_iter()
            .map(|r| match r {
                Reply::Bulk(value) => Some(value),
                _ => None,
            })
            .collect()),
        error => Err(error),
    }
}

/// Write `ops` and wait for them; the error reply if they failed.
pub async fn write_all(backend: &Backend<'_>, ops: Vec<WriteOp>) -> Result<(), Reply> {
    if ops.is_empty() {
        return Ok(());
    }
    match Waiting::of(backend.write(ops, ReplyShape::Ok).await)
        .0
        .reply()
        .await
    {
        Reply::Error(e) => Err(Reply::Error(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_clamp_as_in_redis() {
        assert_eq!(rank_range(4, 0, -1), 0..4);
        assert_eq!(rank_range(4, -5, 1), 0..2);
        assert_eq!(rank_range(4, 0, -5), 0..0);
        assert_eq!(rank_range(4, 1, 9), 1..4);
        assert_eq!(rank_range(4, 5, -1), 0..0);
        assert_eq!(rank_range(0, 0, -1), 0..0);
    }

    #[test]
    fn picks_are_distinct_up_to_the_count_or_repeat_when_negative() {
        let items: Vec<u32> = (0..10).collect();
        let mut distinct = pick(&items, Some(20), 7).unwrap();
        distinct.sort();
        assert_eq!(distinct, items);
        assert_eq!(pick(&items, Some(3), 7).unwrap().len(), 3);
        assert_eq!(pick(&items, Some(-25), 7).unwrap().len(), 25);
        assert_eq!(pick::<u32>(&[], None, 7), None);
        assert_eq!(pick::<u32>(&[], Some(-3), 7), Some(vec![]));
    }
}
