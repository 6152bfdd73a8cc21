//! Key expiry as Redis users know it: the deadline options of SET and GETEX,
//! SETEX and PSETEX, EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT with NX / XX / GT
//! / LT, PERSIST, and TTL / PTTL / EXPIRETIME / PEXPIRETIME; and active expiry,
//! which deletes a single node's expired keys in the background.
//!
//! A deadline belongs to the value written with it (`Sibling::deadline_ms`):
//! it is replicated, repaired and compacted with the value, and a value reads
//! as absent from its deadline on. Expiry deletes only what it saw expire (a
//! delete covering the read's context), so a value written since survives it.
//!
//! Must not touch: how a write travels (`backend`), the store's format
//! (`shoal_engine`).

use crate::reply::{err, lower, parse_int, syntax_error, ReplyShape, Step};
use crate::resp::Reply;
use crate::storage::Storage;
use bytes::Bytes;
use shoal_engine::{Condition, Deadline, Modify, SiblingSet, WriteOp};
use std::time::Duration;

/// Keys active expiry deletes per round, and how often rounds run.
const EXPIRED_KEYS_PER_ROUND_MAX: usize = 256;
const ACTIVE_EXPIRY_INTERVAL_MS: u64 = 100;

fn invalid_expire_time(command: &str) -> Step {
    err(format!("ERR invalid expire time in '{command}' command"))
}

/// A deadline `amount` seconds (`unit_ms` 1000) or ms (1) from `now_ms`, or
/// at that time when `absolute`. `None`: it overflows 64-bit milliseconds, as
/// Redis refuses.
fn deadline_from(amount: i64, unit_ms: i64, absolute: bool, now_ms: u64) -> Option<i64> {
    let ms = amount.checked_mul(unit_ms)?;
    if absolute {
        return Some(ms);
    }
    ms.checked_add(i64::try_from(now_ms).ok()?)
}

/// The ms per unit and whether absolute, of SET / GETEX's EX, PX, EXAT, PXAT.
fn deadline_option(word: &str) -> Option<(i64, bool)> {
    match word {
        "ex" => Some((1000, false)),
        "px" => Some((1, false)),
        "exat" => Some((1000, true)),
        "pxat" => Some((1, true)),
        _ => None,
    }
}

/// SET's options after the key and value: NX / XX, GET, and one of EX, PX,
/// EXAT, PXAT, KEEPTTL. The write and how its result is answered.
pub fn parse_set(ns: u8, args: &[Bytes], now_ms: u64) -> Result<(WriteOp, ReplyShape), Step> {
    let mut op = WriteOp::put(ns, args[0].clone(), args[1].clone());
    let mut get = false;
    let mut deadline_given = false;
    let mut rest = args[2..].iter();
    while let Some(opt) = rest.next() {
        let word = lower(opt);
        match word.as_str() {
            "nx" if op.condition == Condition::Always => op.condition = Condition::IfAbsent,
            "xx" if op.condition == Condition::Always => op.condition = Condition::IfPresent,
            "get" => get = true,
            "keepttl" if !deadline_given => {
                op.deadline = Deadline::Keep;
                deadline_given = true;
            }
            other => match deadline_option(other) {
                Some((unit_ms, absolute)) if !deadline_given => {
                    let amount = rest.next().ok_or_else(syntax_error)?;
                    let amount = parse_int(amount).ok_or_else(not_an_integer)?;
                    let at = deadline_from(amount, unit_ms, absolute, now_ms)
                        .filter(|_| amount > 0)
                        .ok_or_else(|| invalid_expire_time("set"))?;
                    op.deadline = Deadline::At(at as u64);
                    deadline_given = true;
                }
                _ => return Err(syntax_error()),
            },
        }
    }
    Ok((op, ReplyShape::Set { get }))
}

fn not_an_integer() -> Step {
    err("ERR value is not an integer or out of range")
}

/// SETEX / PSETEX key amount value.
pub fn parse_setex(ns: u8, name: &str, args: &[Bytes], now_ms: u64) -> Result<WriteOp, Step> {
    let unit_ms = if name == "psetex" { 1 } else { 1000 };
    let amount = parse_int(&args[2]).ok_or_else(not_an_integer)?;
    let at = deadline_from(amount, unit_ms, false, now_ms)
        .filter(|_| amount > 0)
        .ok_or_else(|| invalid_expire_time(name))?;
    let mut op = WriteOp::put(ns, args[1].clone(), args[3].clone());
    op.deadline = Deadline::At(at as u64);
    Ok(op)
}

/// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key amount [NX|XX|GT|LT]: the key's
/// value rewritten with the new deadline (one already past: it reads absent),
/// answered 1 when that happened and 0 when the key is absent or the
/// condition failed.
pub fn parse_expire(ns: u8, name: &str, args: &[Bytes], now_ms: u64) -> Result<WriteOp, Step> {
    let (unit_ms, absolute) = match name {
        "expire" => (1000, false),
        "pexpire" => (1, false),
        "expireat" => (1000, true),
        _ => (1, true),
    };
    let amount = parse_int(&args[2]).ok_or_else(not_an_integer)?;
    let at = deadline_from(amount, unit_ms, absolute, now_ms)
        .ok_or_else(|| invalid_expire_time(name))?;
    let mut op = WriteOp::modify(ns, args[1].clone(), Modify::Touch);
    // A deadline at or before now: the key reads as absent at once.
    op.deadline = Deadline::At(at.max(0) as u64);
    op.condition = expire_condition(&args[3..])?;
    Ok(op)
}

/// EXPIRE's NX / XX / GT / LT flags as one condition, refused as Redis does
/// when they contradict.
fn expire_condition(flags: &[Bytes]) -> Result<Condition, Step> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for flag in flags {
        match lower(flag).as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "gt" => gt = true,
            "lt" => lt = true,
            _ => {
                let as_sent = String::from_utf8_lossy(flag);
                return Err(err(format!("ERR Unsupported option {as_sent}")));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => Condition::IfNoDeadline,
        // GT needs a deadline to be later than: XX adds nothing.
        (_, _, true, _) => Condition::IfDeadlineLater,
        (_, xx, _, true) => Condition::IfDeadlineEarlier { with_deadline: xx },
        (_, true, ..) => Condition::IfDeadline,
        _ => Condition::Always,
    })
}

/// PERSIST key: the value without its deadline; 1 when it had one.
pub fn persist(ns: u8, key: Bytes) -> WriteOp {
    let mut op = WriteOp::modify(ns, key, Modify::Touch);
    op.deadline = Deadline::Never;
    op.condition = Condition::IfDeadline;
    op
}

/// GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]: `None` for a plain
/// read (no option).
pub fn parse_getex(ns: u8, args: &[Bytes], now_ms: u64) -> Result<Option<WriteOp>, Step> {
    let key = args[1].clone();
    match &args[2..] {
        [] => Ok(None),
        [word] if lower(word) == "persist" => {
            let mut op = WriteOp::modify(ns, key, Modify::Touch);
            op.deadline = Deadline::Never;
            Ok(Some(op))
        }
        [word, amount] => {
            let (unit_ms, absolute) = deadline_option(&lower(word)).ok_or_else(syntax_error)?;
            let amount = parse_int(amount).ok_or_else(not_an_integer)?;
            let at = deadline_from(amount, unit_ms, absolute, now_ms)
                .filter(|_| amount > 0)
                .ok_or_else(|| invalid_expire_time("getex"))?;
            let mut op = WriteOp::modify(ns, key, Modify::Touch);
            op.deadline = Deadline::At(at as u64);
            Ok(Some(op))
        }
        _ => Err(syntax_error()),
    }
}

/// What TTL, PTTL, EXPIRETIME and PEXPIRETIME answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlQuery {
    /// PTTL, PEXPIRETIME: milliseconds (else seconds, rounded as Redis does).
    pub in_ms: bool,
    /// EXPIRETIME, PEXPIRETIME: the deadline itself (else what is left of it).
    pub absolute: bool,
}

impl TtlQuery {
    pub fn of(name: &str) -> TtlQuery {
        TtlQuery {
            in_ms: name.starts_with('p'),
            absolute: name.ends_with("expiretime"),
        }
    }

    /// The reply for the key's set as read (expired values already left out):
    /// -2 absent, -1 no deadline.
    pub fn reply(self, set: Option<&SiblingSet>, now_ms: u64) -> Reply {
        let Some(winner) = set.and_then(|s| s.winner_at(now_ms)) else {
            return Reply::Integer(-2);
        };
        self.reply_deadline(winner.deadline_ms, now_ms)
    }

    /// The reply for a present key expiring at `deadline_ms` (-1: never).
    pub fn reply_deadline(self, deadline_ms: Option<u64>, now_ms: u64) -> Reply {
        let Some(deadline_ms) = deadline_ms else {
            return Reply::Integer(-1);
        };
        let ms = if self.absolute {
            deadline_ms as i64
        } else {
            deadline_ms.saturating_sub(now_ms) as i64
        };
        Reply::Integer(if self.in_ms { ms } else { (ms + 500) / 1000 })
    }
}

/// Active expiry on one node: every [`ACTIVE_EXPIRY_INTERVAL_MS`], delete up
/// to [`EXPIRED_KEYS_PER_ROUND_MAX`] expired keys, each only as far as the
/// read that found it expired (its context): a value written since stays.
pub async fn run_active_expiry(storage: Storage) {
    loop {
        tokio::time::sleep(Duration::from_millis(ACTIVE_EXPIRY_INTERVAL_MS)).await;
        let now_ms = storage.wall_ms();
        let ops =
            storage.read(|s| s.expiry_deletes(now_ms, EXPIRED_KEYS_PER_ROUND_MAX, |_, _| true));
        match crate::collection_ttl::expire_due(&storage).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!("active expiry deleted {deleted} collection record(s)"),
            Err(_) => return,
        }
        if ops.is_empty() {
            continue;
        }
        let deleted = ops.len();
        match storage.write(ops).await {
            Ok(_) => tracing::debug!("active expiry deleted {deleted} key(s)"),
            // Stopped or read-only: reads still hide what expired.
            Err(_) => return,
        }
    }
}
