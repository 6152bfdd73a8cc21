//! Which members of a sorted set a range names, as Redis reads one: by rank
//! (`0 -1`), by score (`(1 +inf`) or by member (`[a (c`, all of one score),
//! in either direction, with LIMIT and WITHSCORES. Parsed once for ZRANGE
//! and its older forms (ZRANGEBYSCORE, ZREVRANGE, ...), ZCOUNT, ZLEXCOUNT
//! and the ZREMRANGEBY commands; applied to members already in order.
//!
//! Must not touch: storage or replies (`zset`'s).

use crate::elements::rank_range;
use crate::reply::{err, lower, parse_int, syntax_error, Step};
use bytes::Bytes;

/// One end of a score range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    pub score: f64,
    pub exclusive: bool,
}

/// One end of a member range: `-` and `+` are the open ends.
#[derive(Clone, Debug, PartialEq)]
pub enum LexBound {
    Least,
    Most,
    At { member: Bytes, exclusive: bool },
}

/// What a range selects, before its direction.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// Ranks `start..=stop`, counted from the range's first end; negative
    /// from its other end.
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

/// A whole range: what it selects, from which end, and how much of it.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSpec {
    pub select: Select,
    /// From the highest score down; a score or member range then names its
    /// upper end first.
    pub rev: bool,
    /// LIMIT offset count (a negative count: all that are left).
    pub limit: Option<(i64, i64)>,
    pub with_scores: bool,
}

const NOT_A_FLOAT: &str = "ERR min or max is not a float";
const NOT_A_LEX: &str = "ERR min or max not valid string range item";

/// A score as Redis reads one: a float, `inf`, `+inf` or `-inf`; never NaN.
pub fn parse_score(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    text.parse::<f64>().ok().filter(|s| !s.is_nan())
}

/// A score range end: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
pub fn parse_score_bound(text: &[u8]) -> Result<ScoreBound, Step> {
    let (exclusive, number) = match text.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    match parse_score(number) {
        Some(score) => Ok(ScoreBound { score, exclusive }),
        None => Err(err(NOT_A_FLOAT)),
    }
}

/// A member range end: `-`, `+`, `[member` or `(member`.
pub fn parse_lex_bound(text: &Bytes) -> Result<LexBound, Step> {
    match text.first() {
        Some(b'-') if text.len() == 1 => Ok(LexBound::Least),
        Some(b'+') if text.len() == 1 => Ok(LexBound::Most),
        Some(b'[') => Ok(LexBound::At {
            member: text.slice(1..),
            exclusive: false,
        }),
        Some(b'(') => Ok(LexBound::At {
            member: text.slice(1..),
            exclusive: true,
        }),
        _ => Err(err(NOT_A_LEX)),
    }
}

/// Both ends of a score or member range, in the order given.
pub fn parse_select(by: &str, low: &Bytes, high: &Bytes) -> Result<Select, Step> {
    Ok(match by {
        "score" => Select::Score(parse_score_bound(low)?, parse_score_bound(high)?),
        "lex" => Select::Lex(parse_lex_bound(low)?, parse_lex_bound(high)?),
        _ => {
            let rank = |t: &[u8]| parse_int(t).ok_or_else(not_an_integer);
            Select::Rank(rank(low)?, rank(high)?)
        }
    })
}

fn not_an_integer() -> Step {
    err("ERR value is not an integer or out of range")
}

/// The range of ZRANGE and its older forms: `args` from the key on (`key
/// start stop [options]`).
pub fn parse_range(name: &str, args: &[Bytes]) -> Result<RangeSpec, Step> {
    let (mut by, mut rev) = match name {
        "zrangebyscore" => ("score", false),
        "zrevrangebyscore" => ("score", true),
        "zrangebylex" => ("lex", false),
        "zrevrangebylex" => ("lex", true),
        "zrevrange" => ("rank", true),
        _ => ("rank", false),
    };
    let (mut limit, mut with_scores) = (None, false);
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        match lower(option).as_str() {
            "withscores" if by != "lex" || name == "zrange" => with_scores = true,
            "limit" if name != "zrevrange" => {
                let mut number = || options.next().and_then(|n| parse_int(n));
                match (number(), number()) {
                    (Some(offset), Some(count)) => limit = Some((offset, count)),
                    _ => return Err(syntax_error()),
                }
            }
            "byscore" if name == "zrange" && by == "rank" => by = "score",
            "bylex" if name == "zrange" && by == "rank" => by = "lex",
            "rev" if name == "zrange" => rev = true,
            _ => return Err(syntax_error()),
        }
    }
    if limit.is_some() && by == "rank" {
        return Err(err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if with_scores && by == "lex" {
        return Err(err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // A reversed score or member range names its upper end first.
    let (low, high) = match (rev, by) {
        (true, "score" | "lex") => (&args[2], &args[1]),
        _ => (&args[1], &args[2]),
    };
    Ok(RangeSpec {
        select: parse_select(by, low, high)?,
        rev,
        limit,
        with_scores,
    })
}

impl ScoreBound {
    fn below(&self, score: f64) -> bool {
        score > self.score || (!self.exclusive && score == self.score)
    }

    fn above(&self, score: f64) -> bool {
        score < self.score || (!self.exclusive && score == self.score)
    }
}

impl LexBound {
    fn below(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Least => true,
            LexBound::Most => false,
            LexBound::At {
                member: m,
                exclusive,
            } => member > &m[..] || (!exclusive && member == &m[..]),
        }
    }

    fn above(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Least => false,
            LexBound::Most => true,
            LexBound::At {
                member: m,
                exclusive,
            } => member < &m[..] || (!exclusive && member == &m[..]),
        }
    }
}

/// Whether `(score, member)` lies in a score or member range (a rank range
/// holds everything: ranks are counted by [`pick`]).
pub fn contains(select: &Select, score: f64, member: &[u8]) -> bool {
    match select {
        Select::Rank(..) => true,
        Select::Score(low, high) => low.below(score) && high.above(score),
        Select::Lex(low, high) => low.below(member) && high.above(member),
    }
}

/// The members `spec` picks from `ordered`, which is already in the
/// range's direction (highest first when `spec.rev`), in reply order.
pub fn pick<T: Clone>(
    spec: &RangeSpec,
    ordered: &[(f64, T)],
    member: impl Fn(&T) -> &[u8],
) -> Vec<(f64, T)> {
    if let Select::Rank(start, stop) = spec.select {
        return ordered[rank_range(ordered.len(), start, stop)].to_vec();
    }
    let inside = ordered
        .iter()
        .filter(|(score, m)| contains(&spec.select, *score, member(m)));
    let (offset, count) = spec.limit.unwrap_or((0, -1));
    if offset < 0 {
        return Vec::new();
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    inside.skip(offset as usize).take(count).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn spec(name: &str, words: &str) -> RangeSpec {
        match parse_range(name, &args(words)) {
            Ok(spec) => spec,
            Err(_) => panic!("{name} {words} refused"),
        }
    }

    #[test]
    fn ranges_pick_as_redis_does() {
        let asc: Vec<(f64, &[u8])> = vec![(1.0, b"a"), (2.0, b"b"), (2.0, b"c"), (3.0, b"d")];
        let desc: Vec<(f64, &[u8])> = asc.iter().rev().cloned().collect();
        let names = |spec: &RangeSpec, from: &[(f64, &'static [u8])]| -> Vec<&[u8]> {
            pick(spec, from, |m| m)
                .into_iter()
                .map(|(_, m)| m)
                .collect()
        };
        assert_eq!(names(&spec("zrange", "k 0 -1"), &asc).len(), 4);
        assert_eq!(names(&spec("zrange", "k -2 -1"), &asc), [b"c", b"d"]);
        assert_eq!(names(&spec("zrevrange", "k 0 0"), &desc), [b"d"]);
        assert_eq!(names(&spec("zrangebyscore", "k (1 2"), &asc), [b"b", b"c"]);
        assert_eq!(
            names(&spec("zrange", "k +inf (2 BYSCORE REV"), &desc),
            [b"d"]
        );
        let limited = spec("zrangebyscore", "k -inf +inf LIMIT 1 2");
        assert_eq!(names(&limited, &asc), [b"b", b"c"]);
        assert_eq!(names(&spec("zrangebylex", "k [b (d"), &asc), [b"b", b"c"]);
        assert_eq!(
            names(&spec("zrevrangebylex", "k + [c"), &desc),
            [b"d", b"c"]
        );
        assert!(names(&spec("zrangebyscore", "k 0 5 LIMIT -1 2"), &asc).is_empty());
    }

    #[test]
    fn bad_ranges_get_redis_errors() {
        let refused = |name: &str, words: &str| parse_range(name, &args(words)).is_err();
        assert!(refused("zrangebyscore", "k a 1"));
        assert!(refused("zrangebylex", "k a b"));
        assert!(refused("zrange", "k 0 1 LIMIT 0 1"));
        assert!(refused("zrange", "k [a [b BYLEX WITHSCORES"));
        assert!(refused("zrevrange", "k 0 1 LIMIT 0 1"));
        assert!(refused("zrange", "k x 1"));
        assert_eq!(parse_score(b"nan"), None);
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY));
    }
}
