//! Client writes and their outcomes as the peer protocol carries them
//! (proxied to a coordinator), and store errors as refusals.

use super::*;

/// A store's refusal as the peer protocol and the client see it.
pub fn remote_error(e: &WriteError) -> RemoteError {
    let refusal = match e {
        WriteError::SyncFailed(_) | WriteError::Disk(_) => Refusal::OutcomeUnknown,
        WriteError::Poisoned(_) => Refusal::ReadOnly,
        WriteError::DiskFull => Refusal::DiskFull,
        WriteError::TooManySiblings { .. } | WriteError::SiblingsTooLarge { .. } => {
            Refusal::TooManySiblings
        }
        _ => Refusal::Invalid,
    };
    RemoteError::new(refusal, e.to_string())
}

pub(super) fn outcome_from_wire(o: ClientOutcome) -> WriteOutcome {
    WriteOutcome {
        applied: o.applied,
        dot: o.dot,
        superseded: o.superseded,
        previous_winner: o.previous_winner,
        previous_live: o.previous_live,
        // Only the minted sibling comes back: enough for `minted_value`.
        set: minted_only(o.dot, o.minted_value),
    }
}

/// A set of the one sibling a proxied write minted, as far as its
/// coordinator told (its value).
fn minted_only(dot: Option<Dot>, value: Option<Bytes>) -> SiblingSet {
    let Some(dot) = dot else {
        return SiblingSet::default();
    };
    let mut set = SiblingSet::default();
    set.context.add(dot);
    set.siblings.push(Sibling {
        dot,
        hlc: Hlc::default(),
        value,
        deadline_ms: None,
        counter: None,
    });
    set
}

pub(super) fn outcome_to_wire(o: &WriteOutcome) -> ClientOutcome {
    ClientOutcome {
        // Only a counted write's (INCR answers it): a proxied SET's value
        // would otherwise cross the wire twice.
        minted_value: o
            .dot
            .and_then(|dot| o.set.siblings.iter().find(|s| s.dot == dot))
            .filter(|minted| minted.counter.is_some())
            .and_then(|minted| minted.value.clone()),
        applied: o.applied,
        dot: o.dot,
        superseded: o.superseded.clone(),
        previous_winner: o.previous_winner.clone(),
        previous_live: o.previous_live,
    }
}

pub fn write_to_wire(op: &WriteOp) -> ClientWrite {
    let modify = op.modify.as_ref().map(|m| match m {
        Modify::CountBy(by) => WireModify::CountBy(*by),
        Modify::CountByFloat(by) => WireModify::CountByFloat(by.to_bits()),
        Modify::Touch => WireModify::Touch,
        other => unreachable!("{other:?} is refused before it is routed"),
    });
    assert!(op.take.is_none(), "a take is rewritten before it is routed");
    ClientWrite {
        namespace: op.namespace,
        key: op.key.clone(),
        value: op.value.clone(),
        context: match &op.covers {
            Covers::Current => None,
            Covers::Context(vv) => Some(vv.clone()),
        },
        condition: op.condition,
        deadline: op.deadline,
        modify,
    }
}

pub(super) fn write_from_wire(w: ClientWrite) -> WriteOp {
    let mut op = match (w.modify, w.value) {
        (Some(WireModify::CountBy(by)), _) => {
            WriteOp::modify(w.namespace, w.key, Modify::CountBy(by))
        }
        (Some(WireModify::CountByFloat(bits)), _) => {
            let by = f64::from_bits(bits);
            WriteOp::modify(w.namespace, w.key, Modify::CountByFloat(by))
        }
        (Some(WireModify::Touch), _) => WriteOp::modify(w.namespace, w.key, Modify::Touch),
        (None, Some(v)) => WriteOp::put(w.namespace, w.key, v),
        (None, None) => WriteOp::delete(w.namespace, w.key),
    };
    op.covers = w.context.map_or(Covers::Current, Covers::Context);
    op.condition = w.condition;
    op.deadline = w.deadline;
    op
}

/// The keys that have a readable copy, as replica writes of it.
pub(super) fn replica_items(
    namespace: u8,
    keys: &[Bytes],
    sets: Vec<Result<Option<SiblingSet>, RemoteError>>,
) -> Vec<ReplicaItem> {
    sets.into_iter()
        .zip(keys)
        .filter_map(|(set, key)| {
            Some(ReplicaItem {
                namespace,
                key: key.clone(),
                set: set.ok()??,
            })
        })
        .collect()
}

/// A write whose call failed after it was sent: its outcome is unknown.
pub(super) fn unknown_outcome(what: &str, e: &CallError) -> RemoteError {
    RemoteError::new(
        Refusal::OutcomeUnknown,
        format!("{what}: {e}; the write's outcome is unknown"),
    )
}
