//! SORT and SORT_RO: a list's, set's or sorted set's elements sorted as
//! numbers (or with ALPHA as bytes), optionally by weights looked up through
//! a BY pattern (`weight_*`, or a hash field `h_*->f`), cut by LIMIT, turned
//! into GET patterns' values (`#` is the element), and answered or, with
//! STORE, written as a list (replacing whatever the destination held).
//! Elements of equal weight keep byte order, so the answer is deterministic,
//! as in Redis.
//!
//! Must not touch: storage (everything goes through the `Backend`).

use crate::backend::Backend;
use crate::keyspace::Kind;
use crate::reply::Step;
use crate::resp::Reply;
use bytes::Bytes;
use std::cmp::Ordering;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A SORT's options.
#[derive(Default)]
struct SortArgs {
    by: Option<Bytes>,
    /// Offset and count.
    limit: Option<(i64, i64)>,
    gets: Vec<Bytes>,
    descending: bool,
    alpha: bool,
    store: Option<Bytes>,
}

fn syntax() -> Reply {
    Reply::error("ERR syntax error")
}

fn parse(options: &[Bytes], read_only: bool) -> Result<SortArgs, Reply> {
    let mut args = SortArgs::default();
    let mut i = 0;
    while i < options.len() {
        let word = String::from_utf8_lossy(&options[i]).to_ascii_lowercase();
        let next = options.get(i + 1);
        match (word.as_str(), next) {
            ("asc", _) => args.descending = false,
            ("desc", _) => args.descending = true,
            ("alpha", _) => args.alpha = true,
            ("by", Some(pattern)) => (args.by, i) = (Some(pattern.clone()), i + 1),
            ("get", Some(pattern)) => (args.gets.push(pattern.clone()), i += 1).1,
            ("store", Some(key)) if !read_only => (args.store, i) = (Some(key.clone()), i + 1),
            ("limit", Some(offset)) => {
                let count = options.get(i + 2).ok_or_else(syntax)?;
                let int = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
                let not_int = || Reply::error("ERR value is not an integer or out of range");
                args.limit = Some((
                    int(offset).ok_or_else(not_int)?,
                    int(count).ok_or_else(not_int)?,
                ));
                i += 2;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    Ok(args)
}

/// SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC]
/// [ALPHA] [STORE destination]; SORT_RO without STORE.
pub async fn sort(backend: &Backend<'_>, ns: u8, args: &[Bytes], read_only: bool) -> Step {
    Step::Reply(
        run(backend, ns, args, read_only)
            .await
            .unwrap_or_else(|r| r),
    )
}

async fn run(
    backend: &Backend<'_>,
    ns: u8,
    args: &[Bytes],
    read_only: bool,
) -> Result<Reply, Reply> {
    let key = &args[1];
    let options = parse(&args[2..], read_only)?;
    let elements = match backend.kind_of(ns, key).await? {
        None => Vec::new(),
        Some(Kind::List) => crate::list::values(backend, ns, key).await?,
        Some(Kind::Set) => crate::set::members(backend, ns, key)
            .await?
            .into_iter()
            .collect(),
        Some(Kind::ZSet) => crate::zset::all_ordered(backend, ns, key)
            .await?
            .into_iter()
            .map(|(_, member)| member)
            .collect(),
        Some(_) => return Err(Reply::error(WRONGTYPE)),
    };
    let sorts = options.by.as_ref().is_none_or(|by| by.contains(&b'*'));
    let mut elements = if sorts {
        sorted(backend, ns, elements, &options).await?
    } else {
        elements
    };
    let range = limit_range(elements.len(), options.limit);
    elements = elements.drain(range).collect();
    let values = if options.gets.is_empty() {
        elements.into_iter().map(Some).collect()
    } else {
        let mut out = Vec::with_capacity(elements.len() * options.gets.len());
        for element in &elements {
            for pattern in &options.gets {
                out.push(lookup(backend, ns, pattern, element).await?);
            }
        }
        out
    };
    match options.store {
        Some(destination) => store(backend, ns, &destination, values).await,
        None => Ok(Reply::Array(
            values
                .into_iter()
                .map(|v| v.map_or(Reply::Null, Reply::Bulk))
                .collect(),
        )),
    }
}

/// The elements in order of their weights (the elements themselves without
/// BY), ties in byte order.
async fn sorted(
    backend: &Backend<'_>,
    ns: u8,
    elements: Vec<Bytes>,
    options: &SortArgs,
) -> Result<Vec<Bytes>, Reply> {
    let mut weighted = Vec::with_capacity(elements.len());
    for element in elements {
        let weight = match &options.by {
            Some(pattern) => lookup(backend, ns, pattern, &element).await?,
            None => Some(element.clone()),
        };
        let key = match (options.alpha, weight) {
            (true, weight) => Weight::Bytes(weight),
            (false, None) => Weight::Number(0.0),
            (false, Some(w)) => Weight::Number(number(&w).ok_or_else(|| {
                Reply::error("ERR One or more scores can't be converted into double")
            })?),
        };
        weighted.push((key, element));
    }
    weighted.sort_by(|(wa, a), (wb, b)| {
        let order = wa.compare(wb).then_with(|| a.cmp(b));
        if options.descending {
            order.reverse()
        } else {
            order
        }
    });
    Ok(weighted.into_iter().map(|(_, e)| e).collect())
}

enum Weight {
    Number(f64),
    /// None (no such key) sorts first.
    Bytes(Option<Bytes>),
}

impl Weight {
    fn compare(&self, other: &Weight) -> Ordering {
        match (self, other) {
            (Weight::Number(a), Weight::Number(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Weight::Bytes(a), Weight::Bytes(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

/// A weight as Redis reads one (`strtod`: leading and trailing spaces are
/// not allowed, `inf` is).
fn number(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

/// Redis's LIMIT: a negative offset is 0, a negative count is all.
fn limit_range(len: usize, limit: Option<(i64, i64)>) -> std::ops::Range<usize> {
    let Some((offset, count)) = limit else {
        return 0..len;
    };
    let start = (offset.max(0) as usize).min(len);
    let end = if count < 0 {
        len
    } else {
        start.saturating_add(count as usize).min(len)
    };
    start..end
}

/// What `pattern` names for `element`: `#` is the element; otherwise the
/// first `*` is replaced by it, and the string key (or, after `->`, the hash
/// field) is read. None when the pattern has no `*` or nothing is there.
async fn lookup(
    backend: &Backend<'_>,
    ns: u8,
    pattern: &Bytes,
    element: &Bytes,
) -> Result<Option<Bytes>, Reply> {
    if pattern.as_ref() == b"#" {
        return Ok(Some(element.clone()));
    }
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return Ok(None);
    };
    let after = &pattern[star + 1..];
    let field_at = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&at| at + 2 < after.len());
    let (suffix, field) = match field_at {
        Some(at) => (&after[..at], Some(&after[at + 2..])),
        None => (after, None),
    };
    let mut key = pattern[..star].to_vec();
    key.extend_from_slice(element);
    key.extend_from_slice(suffix);
    let (namespace, stored) = match field {
        Some(field) => (
            shoal_engine::fields::fields_namespace(ns),
            shoal_engine::fields::field_key(&key, field),
        ),
        None => (ns, key),
    };
    let read = backend.read(namespace, &[Bytes::from(stored)]).await;
    let set = read.into_iter().next().expect("one read per key")?;
    Ok(set.and_then(|s| s.string_value()))
}

/// STORE: `destination` becomes the list of `values` (a missing GET value
/// is stored empty, as Redis does), or is deleted when there are none; the
/// number stored.
async fn store(
    backend: &Backend<'_>,
    ns: u8,
    destination: &Bytes,
    values: Vec<Option<Bytes>>,
) -> Result<Reply, Reply> {
    let count = values.len() as i64;
    let values = values.into_iter().map(Option::unwrap_or_default).collect();
    let ops = crate::list::replace_with(backend, ns, destination, values).await?;
    crate::elements::write_all(backend, ops).await?;
    Ok(Reply::Integer(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_redis() {
        assert_eq!(limit_range(10, None), 0..10);
        assert_eq!(limit_range(10, Some((2, 3))), 2..5);
        assert_eq!(limit_range(10, Some((-5, 3))), 0..3);
        assert_eq!(limit_range(10, Some((8, -1))), 8..10);
        assert_eq!(limit_range(10, Some((20, 5))), 10..10);
    }

    #[test]
    fn options_parse_and_store_is_refused_read_only() {
        let words = |text: &str| -> Vec<Bytes> {
            text.split(' ')
                .map(|w| Bytes::from(w.to_string()))
                .collect()
        };
        let args = parse(&words("BY w_* LIMIT 0 2 GET # GET o_* DESC ALPHA"), false).unwrap();
        assert!(
            args.descending && args.alpha && args.gets.len() == 2 && args.limit == Some((0, 2))
        );
        assert!(parse(&words("STORE dst"), true).is_err());
        assert!(parse(&words("LIMIT 0"), false).is_err());
        assert_eq!(number(b"1.5"), Some(1.5));
        assert_eq!(number(b"x"), None);
    }
}
