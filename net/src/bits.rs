//! The string commands that read or write a value's bits, and LCS: GETBIT,
//! SETBIT (a read-modify-write the store computes, `Modify::SetBit`),
//! BITCOUNT, BITPOS and LCS, with Redis's ranges, replies and errors. Bit 0
//! is the first byte's highest bit, as in Redis.
//!
//! Must not touch: how a write is made or travels (`backend`, the store).

use crate::backend::Backend;
use crate::reply::{err, lower, parse_int, syntax_error, ReplyShape, Step};
use crate::resp::Reply;
use crate::types;
use bytes::Bytes;
use shoal_engine::{Modify, WriteOp};

/// The bits a string may hold (512 MiB).
const BITS_MAX: u64 = 512 * 1024 * 1024 * 8;
/// LCS's table may take at most this many bytes (Redis's proto-max-bulk-len).
const LCS_TABLE_MAX_BYTES: u64 = 512 * 1024 * 1024;

const MODIFY_ON_CLUSTER: &str = "ERR SETBIT is not supported on a cluster yet: two nodes modifying one value at once would each write their own result, and one update would be lost; it works on a single node";

/// A range's unit: bytes (Redis's default) or bits.
#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    Byte,
    Bit,
}

/// A parsed bit command.
pub enum BitCommand {
    GetBit(Bytes, u64),
    SetBit(Bytes, u64, bool),
    /// BITCOUNT key [start end [BYTE|BIT]].
    Count(Bytes, Option<(i64, i64, Unit)>),
    /// BITPOS key bit [start [end [BYTE|BIT]]]: the end given or not.
    Pos {
        key: Bytes,
        bit: bool,
        start: i64,
        end: Option<i64>,
        unit: Unit,
    },
    Lcs(Bytes, Bytes, LcsOptions),
}

/// LCS's options.
#[derive(Clone, Copy, Default)]
pub struct LcsOptions {
    len: bool,
    idx: bool,
    min_match_len: usize,
    with_match_len: bool,
}

/// The bit at `offset_bits` of `value` (0 past its end).
pub fn bit_at(value: &[u8], offset_bits: u64) -> bool {
    let byte = usize::try_from(offset_bits / 8).unwrap_or(usize::MAX);
    value
        .get(byte)
        .is_some_and(|b| b & (0x80 >> (offset_bits % 8)) != 0)
}

fn offset_arg(text: &[u8]) -> Result<u64, Step> {
    match parse_int(text) {
        Some(n) if (0..BITS_MAX as i64).contains(&n) => Ok(n as u64),
        _ => Err(err("ERR bit offset is not an integer or out of range")),
    }
}

fn unit_arg(text: Option<&Bytes>) -> Result<Unit, Step> {
    match text.map(|t| lower(t)) {
        None => Ok(Unit::Byte),
        Some(u) if u == "byte" => Ok(Unit::Byte),
        Some(u) if u == "bit" => Ok(Unit::Bit),
        Some(_) => Err(syntax_error()),
    }
}

fn int_arg(text: &[u8]) -> Result<i64, Step> {
    parse_int(text).ok_or_else(|| err("ERR value is not an integer or out of range"))
}

impl BitCommand {
    /// `args[0]` is the name as sent; `name` the table's (arity checked).
    pub fn parse(name: &str, args: &[Bytes]) -> Result<BitCommand, Step> {
        let key = args[1].clone();
        Ok(match name {
            "getbit" => BitCommand::GetBit(key, offset_arg(&args[2])?),
            "setbit" => {
                let offset = offset_arg(&args[2])?;
                match &args[3][..] {
                    b"0" => BitCommand::SetBit(key, offset, false),
                    b"1" => BitCommand::SetBit(key, offset, true),
                    _ => return Err(err("ERR bit is not an integer or out of range")),
                }
            }
            "bitcount" => match &args[2..] {
                [] => BitCommand::Count(key, None),
                [start, end, unit @ ..] if unit.len() <= 1 => {
                    let range = (int_arg(start)?, int_arg(end)?, unit_arg(unit.first())?);
                    BitCommand::Count(key, Some(range))
                }
                _ => return Err(syntax_error()),
            },
            "bitpos" => parse_pos(key, &args[2..])?,
            _ => parse_lcs(args)?,
        })
    }
}

/// BITPOS's arguments after the key.
fn parse_pos(key: Bytes, rest: &[Bytes]) -> Result<BitCommand, Step> {
    let bit = match &rest[0][..] {
        b"0" => false,
        b"1" => true,
        _ => return Err(err("ERR The bit argument must be 1 or 0.")),
    };
    if rest.len() > 4 {
        return Err(syntax_error());
    }
    let start = rest.get(1).map_or(Ok(0), |s| int_arg(s))?;
    let end = rest.get(2).map(|e| int_arg(e)).transpose()?;
    Ok(BitCommand::Pos {
        key,
        bit,
        start,
        end,
        unit: unit_arg(rest.get(3))?,
    })
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN].
fn parse_lcs(args: &[Bytes]) -> Result<BitCommand, Step> {
    let mut options = LcsOptions::default();
    let mut rest = args[3..].iter();
    while let Some(word) = rest.next() {
        match lower(word).as_str() {
            "len" => options.len = true,
            "idx" => options.idx = true,
            "withmatchlen" => options.with_match_len = true,
            "minmatchlen" => {
                let n = rest.next().ok_or_else(syntax_error)?;
                options.min_match_len = int_arg(n)?.max(0) as usize;
            }
            _ => return Err(syntax_error()),
        }
    }
    if options.len && options.idx {
        return Err(err(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    Ok(BitCommand::Lcs(args[1].clone(), args[2].clone(), options))
}

impl BitCommand {
    /// Run against `backend` in database `ns`.
    pub async fn run(self, backend: &Backend<'_>, ns: u8) -> Step {
        match self {
            BitCommand::SetBit(..) if backend.is_routed() => err(MODIFY_ON_CLUSTER),
            BitCommand::SetBit(key, offset_bits, bit) => {
                let op = WriteOp::modify(ns, key, Modify::SetBit { offset_bits, bit });
                let shape = ReplyShape::OldBit(offset_bits);
                match types::string_write(backend, ns, vec![op], &shape).await {
                    Ok(ops) => backend.write(ops, shape).await,
                    Err(step) => step,
                }
            }
            BitCommand::Lcs(a, b, options) => {
                let (a, b) = match (string(backend, ns, &a).await, string(backend, ns, &b).await) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(reply), _) | (_, Err(reply)) => return Step::Reply(reply),
                };
                Step::Reply(lcs(&a, &b, options))
            }
            read => {
                let key = match &read {
                    BitCommand::GetBit(k, _) | BitCommand::Count(k, _) => k.clone(),
                    BitCommand::Pos { key, .. } => key.clone(),
                    _ => unreachable!("a write or LCS"),
                };
                Step::Reply(match string(backend, ns, &key).await {
                    Ok(value) => read.answer(&value),
                    Err(reply) => reply,
                })
            }
        }
    }

    /// GETBIT, BITCOUNT, BITPOS from the value read (empty: absent).
    fn answer(self, value: &[u8]) -> Reply {
        match self {
            BitCommand::GetBit(_, offset) => Reply::Integer(i64::from(bit_at(value, offset))),
            BitCommand::Count(_, range) => {
                let (first, last) = match range {
                    None => (0, value.len() as u64 * 8),
                    Some((start, end, unit)) => bit_range(value.len(), start, end, unit),
                };
                let ones = (first..last).filter(|bit| bit_at(value, *bit)).count();
                Reply::Integer(ones as i64)
            }
            BitCommand::Pos {
                bit,
                start,
                end,
                unit,
                ..
            } => Reply::Integer(bit_pos(value, bit, (start, end, unit))),
            _ => unreachable!("not a bit read"),
        }
    }
}

/// `key`'s string (empty when absent); WRONGTYPE for another type.
async fn string(backend: &Backend<'_>, ns: u8, key: &Bytes) -> Result<Bytes, Reply> {
    let read = backend
        .read(ns, std::slice::from_ref(key))
        .await
        .remove(0)?;
    let value = read.and_then(|set| set.string_value());
    match value {
        Some(value) => Ok(value),
        None => match types::absent_or_wrong_type(backend, ns, key, Reply::Null).await {
            Reply::Error(e) => Err(Reply::Error(e)),
            _ => Ok(Bytes::new()),
        },
    }
}

/// The bits `[first, last)` a range of `unit`s names over a value of
/// `len_bytes` (negative indexes from the end, clamped, as Redis does).
fn bit_range(len_bytes: usize, start: i64, end: i64, unit: Unit) -> (u64, u64) {
    let len = match unit {
        Unit::Byte => len_bytes as i64,
        Unit::Bit => len_bytes as i64 * 8,
    };
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    if start > end || len == 0 {
        return (0, 0);
    }
    match unit {
        Unit::Byte => (start as u64 * 8, (end as u64 + 1) * 8),
        Unit::Bit => (start as u64, end as u64 + 1),
    }
}

/// BITPOS: the first `bit` in the range; -1 when none. Looking for a clear
/// bit without an end, the bits past the value count as clear.
fn bit_pos(value: &[u8], bit: bool, (start, end, unit): (i64, Option<i64>, Unit)) -> i64 {
    if value.is_empty() {
        return if bit { -1 } else { 0 };
    }
    let last = match unit {
        Unit::Byte => value.len() as i64 - 1,
        Unit::Bit => value.len() as i64 * 8 - 1,
    };
    let (first, past) = bit_range(value.len(), start, end.unwrap_or(last), unit);
    if let Some(found) = (first..past).find(|b| bit_at(value, *b) == bit) {
        return found as i64;
    }
    if !bit && end.is_none() && first < past {
        return value.len() as i64 * 8;
    }
    -1
}

/// LCS's reply, by Redis's dynamic programme and its walk back from the end
/// (matches are reported last first).
fn lcs(a: &[u8], b: &[u8], options: LcsOptions) -> Reply {
    let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
    if cells.saturating_mul(4) > LCS_TABLE_MAX_BYTES {
        return Reply::error(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        );
    }
    let width = b.len() + 1;
    let mut table = vec![0u32; cells as usize];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    let at = |i: usize, j: usize| table[i * width + j];
    let length = at(a.len(), b.len()) as usize;
    if options.len {
        return Reply::Integer(length as i64);
    }
    let (common, matches) = walk_back(a, b, &at, (length, options));
    if !options.idx {
        return Reply::Bulk(Bytes::from(common));
    }
    Reply::Map(vec![
        (Reply::bulk("matches"), Reply::Array(matches)),
        (Reply::bulk("len"), Reply::Integer(length as i64)),
    ])
}

/// The common subsequence and the matched ranges, walking the table back
/// from its end as Redis does.
fn walk_back(
    a: &[u8],
    b: &[u8],
    at: &dyn Fn(usize, usize) -> u32,
    (length, options): (usize, LcsOptions),
) -> (Vec<u8>, Vec<Reply>) {
    let mut common = vec![0u8; length];
    let mut matches = Vec::new();
    let (mut i, mut j, mut idx) = (a.len(), b.len(), length);
    // `a_start == a.len()`: no range is open.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (a.len(), 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            common[idx - 1] = a[i - 1];
            if a_start == a.len() {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            emit |= a_start == 0 || b_start == 0;
            (idx, i, j) = (idx - 1, i - 1, j - 1);
        } else {
            if at(i - 1, j) > at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = a_start != a.len();
        }
        // Meaningful only while a range is open (when `emit` is set).
        let match_len = a_end.wrapping_sub(a_start).wrapping_add(1);
        if emit {
            if options.min_match_len == 0 || match_len >= options.min_match_len {
                let pair = |s: usize, e: usize| {
                    Reply::Array(vec![Reply::Integer(s as i64), Reply::Integer(e as i64)])
                };
                let mut one = vec![pair(a_start, a_end), pair(b_start, b_end)];
                if options.with_match_len {
                    one.push(Reply::Integer(match_len as i64));
                }
                matches.push(Reply::Array(one));
            }
            a_start = a.len();
        }
    }
    (common, matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_answers_as_redis_does() {
        let a = b"ohmytext";
        let b = b"mynewtext";
        assert_eq!(lcs(a, b, LcsOptions::default()), Reply::bulk("mytext"));
        let len = LcsOptions {
            len: true,
            ..LcsOptions::default()
        };
        assert_eq!(lcs(a, b, len), Reply::Integer(6));
        let idx = LcsOptions {
            idx: true,
            with_match_len: true,
            ..LcsOptions::default()
        };
        let Reply::Map(pairs) = lcs(a, b, idx) else {
            panic!("IDX answers a map")
        };
        let pair = |s, e| Reply::Array(vec![Reply::Integer(s), Reply::Integer(e)]);
        let expected = vec![
            Reply::Array(vec![pair(4, 7), pair(5, 8), Reply::Integer(4)]),
            Reply::Array(vec![pair(2, 3), pair(0, 1), Reply::Integer(2)]),
        ];
        assert_eq!(pairs[0].1, Reply::Array(expected));
    }

    #[test]
    fn bit_ranges_and_positions_follow_redis() {
        let value = [0xff, 0xf0, 0x00];
        assert_eq!(bit_range(3, 0, -1, Unit::Byte), (0, 24));
        assert_eq!(bit_range(3, 1, 1, Unit::Byte), (8, 16));
        assert_eq!(bit_range(3, 5, 3, Unit::Bit), (0, 0));
        assert_eq!(bit_pos(&value, false, (0, None, Unit::Byte)), 12);
        assert_eq!(bit_pos(&[0xff], false, (0, None, Unit::Byte)), 8);
        assert_eq!(bit_pos(&[0xff], false, (0, Some(-1), Unit::Byte)), -1);
        assert_eq!(bit_pos(&value, true, (2, None, Unit::Byte)), -1);
        assert_eq!(bit_pos(&value, true, (7, Some(15), Unit::Bit)), 7);
        assert_eq!(bit_pos(&[], true, (0, None, Unit::Byte)), -1);
        assert!(bit_at(&value, 0) && !bit_at(&value, 12) && !bit_at(&value, 99));
    }
}
