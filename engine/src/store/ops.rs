//! A write as the store takes it ([`WriteOp`]: a value, a delete, a replica's
//! merge, a forget or a read-modify-write, with what it supersedes and its
//! NX / XX condition), what it did ([`WriteOutcome`]) and why a write or a
//! read was refused ([`WriteError`], [`ReadError`]).

use super::modify::{Modify, ModifyError};
use crate::disk::DiskError;
use crate::version::{Dot, SiblingSet, VersionVector};
use bytes::Bytes;
use std::fmt;

/// What a write supersedes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Covers {
    /// Everything the store holds for the key now (a plain Redis SET or DEL).
    Current,
    /// Only what this causal context covers (a client that read siblings).
    Context(VersionVector),
}

/// Redis's NX / XX, and EXPIRE's NX / XX / GT / LT (on the current winner's
/// deadline; a value without one counts as never expiring). Every `Deadline*`
/// condition also needs the key present.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Condition {
    Always,
    IfAbsent,
    IfPresent,
    /// EXPIRE NX: the winner has no deadline.
    IfNoDeadline,
    /// EXPIRE XX: the winner has a deadline.
    IfDeadline,
    /// EXPIRE GT: the new deadline is later than the winner's (which has one).
    IfDeadlineLater,
    /// EXPIRE LT: the new deadline is earlier than the winner's (or it has
    /// none, unless `with_deadline`: LT with XX).
    IfDeadlineEarlier {
        with_deadline: bool,
    },
}

impl Condition {
    /// Whether the condition holds on a key that is `present` (live), whose
    /// winner expires at `current_ms` (`None`: never), for a write whose
    /// value would expire at `new_ms`.
    pub fn holds(self, present: bool, current_ms: Option<u64>, new_ms: Option<u64>) -> bool {
        match self {
            Condition::Always => true,
            Condition::IfAbsent => !present,
            Condition::IfPresent => present,
            Condition::IfNoDeadline => present && current_ms.is_none(),
            Condition::IfDeadline => present && current_ms.is_some(),
            Condition::IfDeadlineLater => {
                present && matches!((current_ms, new_ms), (Some(c), Some(n)) if n > c)
            }
            Condition::IfDeadlineEarlier { with_deadline } => {
                let earlier = match current_ms {
                    Some(c) => new_ms.is_some_and(|n| n < c),
                    None => !with_deadline && new_ms.is_some(),
                };
                present && earlier
            }
        }
    }
}

/// When a written value expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Deadline {
    /// Never (a plain SET).
    #[default]
    Never,
    /// When the key's current winner does (SET KEEPTTL; INCR, APPEND and
    /// SETRANGE keep it, as in Redis).
    Keep,
    /// At this wall time, ms since the Unix epoch. A deadline at or before the
    /// batch's wall time is written all the same, and the value reads as
    /// absent at once (Redis deletes a key given a deadline in the past).
    At(u64),
}

/// One write: a value, or a delete (`value: None`), or a replica's merge of a
/// sibling set another node coordinated (`merge`).
#[derive(Clone, Debug)]
pub struct WriteOp {
    pub namespace: u8,
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub covers: Covers,
    pub condition: Condition,
    /// Replica write: merge this set into the key's set (no new dot). `value`,
    /// `covers` and `condition` are ignored. Applied only when it changes the set.
    pub merge: Option<SiblingSet>,
    /// Forget the key (see [`WriteOp::forget_if`] and [`WriteOp::drop_copy`]).
    /// Everything else in the op is ignored.
    pub forget: Option<Forget>,
    /// Write the current winner modified (INCR, APPEND, ...) instead of
    /// `value` (see [`WriteOp::modify`]).
    pub modify: Option<Modify>,
    /// When the written value expires (ignored by merges, forgets and deletes).
    pub deadline: Deadline,
    /// Delete the first (or last) live key starting with `key` instead of
    /// `key` itself (see [`WriteOp::take`]).
    pub take: Option<TakeEnd>,
}

/// Which end of a prefix range a [`WriteOp::take`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeEnd {
    First,
    Last,
}

/// When a forget applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forget {
    /// Only while the key's set is made only of delete markers and hashes
    /// (`digest::set_hash`) to this.
    MarkersHashing(u64),
    /// Whatever the key holds: a copy of a partition this node no longer owns.
    Copy,
}

impl WriteOp {
    pub fn put(namespace: u8, key: Bytes, value: Bytes) -> Self {
        WriteOp {
            value: Some(value),
            ..WriteOp::delete(namespace, key)
        }
    }

    pub fn delete(namespace: u8, key: Bytes) -> Self {
        WriteOp {
            namespace,
            key,
            value: None,
            covers: Covers::Current,
            condition: Condition::Always,
            merge: None,
            forget: None,
            modify: None,
            deadline: Deadline::Never,
            take: None,
        }
    }

    /// Delete the first (or last) live key of `namespace` that starts with
    /// `prefix`, chosen as the store prepares the batch: after the batch's
    /// earlier writes and the batches not yet published, so pops in one
    /// group commit each remove a different element (LPOP, RPOP). The
    /// outcome's `previous_winner` is the value removed; not applied when no
    /// key is live. Keys only staged (written, not yet published) are not
    /// candidates.
    pub fn take(namespace: u8, prefix: Bytes, end: TakeEnd) -> Self {
        WriteOp {
            take: Some(end),
            ..WriteOp::delete(namespace, prefix)
        }
    }

    /// A read-modify-write: the store computes the value from the key's
    /// current winner as it prepares the batch (after the batch's earlier
    /// writes), and the write replaces everything the key holds.
    pub fn modify(namespace: u8, key: Bytes, modify: Modify) -> Self {
        WriteOp {
            modify: Some(modify),
            deadline: Deadline::Keep,
            ..WriteOp::delete(namespace, key)
        }
    }

    /// A replica write of `set`, minted elsewhere (replication, read repair,
    /// anti-entropy).
    pub fn merge(namespace: u8, key: Bytes, set: SiblingSet) -> Self {
        WriteOp {
            merge: Some(set),
            ..WriteOp::delete(namespace, key)
        }
    }

    /// Forget a delete-marker set that every replica holds (the cluster decided
    /// so). The key is written as an empty set (no siblings, no context): it reads
    /// as absent, leaves the digests, and a later merge or write starts afresh.
    /// The empty record stays on disk, shadowing older records of the key, until
    /// compaction collects it from the oldest segment. Not applied when the key's
    /// set changed since (its hash differs) or holds a value.
    pub fn forget_if(namespace: u8, key: Bytes, set_hash: u64) -> Self {
        WriteOp {
            forget: Some(Forget::MarkersHashing(set_hash)),
            ..WriteOp::delete(namespace, key)
        }
    }

    /// Forget a copy this node no longer needs (its partition moved to other
    /// nodes, which hold it whole), live or not, the same way.
    pub fn drop_copy(namespace: u8, key: Bytes) -> Self {
        WriteOp {
            forget: Some(Forget::Copy),
            ..WriteOp::delete(namespace, key)
        }
    }
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// False when a condition failed, or a delete found nothing live.
    pub applied: bool,
    /// The new sibling's dot when applied.
    pub dot: Option<Dot>,
    /// What the write superseded.
    pub superseded: VersionVector,
    /// The winner before the write (for `SET ... GET`).
    pub previous_winner: Option<Bytes>,
    pub previous_live: bool,
    /// The key's whole sibling set after the write (before it, when not applied),
    /// which a coordinator sends to the other replicas.
    pub set: SiblingSet,
}

impl WriteOutcome {
    /// The value of the sibling this write minted (`None`: it minted nothing,
    /// or a delete marker): the op's value, or what a read-modify-write
    /// computed.
    pub fn minted_value(&self) -> Option<Bytes> {
        let dot = self.dot?;
        let minted = self.set.siblings.iter().find(|s| s.dot == dot)?;
        minted.value.clone()
    }
}

/// Why a write was refused. `SyncFailed` and `Poisoned` leave the outcome of the
/// batch unknown; the others mean the write did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    KeyTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    RecordTooLarge {
        len_bytes: usize,
        max_bytes: u32,
    },
    /// A client write's value is over [`Store::value_size_max_bytes`].
    ValueTooLarge {
        len_bytes: usize,
        max_bytes: usize,
    },
    /// A coordinator's write would leave a set whose record is over half the
    /// record limit (so that two replicas' copies still merge into one).
    SiblingsTooLarge {
        len_bytes: usize,
        max_bytes: u32,
    },
    TooManySiblings {
        count: usize,
        max: usize,
    },
    DiskFull,
    Corrupt(ReadError),
    SyncFailed(String),
    Poisoned(String),
    Disk(DiskError),
    /// A read-modify-write found a value it cannot modify (not an integer,
    /// ...), or would make one too long. Nothing was written.
    Modify(ModifyError),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::KeyTooLarge { len_bytes, max_bytes } => {
                write!(f, "key of {len_bytes} bytes exceeds the limit of {max_bytes}")
            }
            WriteError::RecordTooLarge { len_bytes, max_bytes } => write!(
                f,
                "record of {len_bytes} bytes exceeds the limit of {max_bytes}"
            ),
            WriteError::ValueTooLarge { len_bytes, max_bytes } => write!(
                f,
                "value of {len_bytes} bytes exceeds the limit of {max_bytes} (a quarter of a record, so that concurrent values still merge into one)"
            ),
            WriteError::SiblingsTooLarge { len_bytes, max_bytes } => write!(
                f,
                "write would leave concurrent siblings of {len_bytes} bytes (limit {max_bytes}, half a record, so that two replicas' copies still merge into one); resolve them with a write whose context covers them"
            ),
            WriteError::TooManySiblings { count, max } => write!(
                f,
                "write would leave {count} concurrent siblings (limit {max}); resolve them with a write whose context covers them"
            ),
            WriteError::DiskFull => write!(f, "disk full: writes refused until space returns"),
            WriteError::Corrupt(e) => write!(f, "cannot read current value: {e}"),
            WriteError::SyncFailed(e) => write!(
                f,
                "fsync failed ({e}): outcome unknown; node is read-only until restart"
            ),
            WriteError::Poisoned(e) => {
                write!(f, "store is read-only after an earlier fsync failure ({e})")
            }
            WriteError::Disk(e) => write!(f, "disk write failed: {e}"),
            WriteError::Modify(e) => write!(f, "{e}"),
        }
    }
}

/// Why a read failed. Never returns bytes that fail their checksum (G5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    Corrupt {
        segment: u32,
        offset: u64,
        reason: &'static str,
    },
    Disk(DiskError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Corrupt {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "corrupt record in segment {segment} at offset {offset}: {reason}"
            ),
            ReadError::Disk(e) => write!(f, "disk read failed: {e}"),
        }
    }
}
