//! Known gaps of the checker: violations it reports for histories that are legal
//! under the contract. Each rule here is narrow, names the evidence that makes the
//! violation legal, and is reported as a `checker gap` note (never silently
//! dropped); `--strict` (or `SHOAL_SIM_STRICT=1`) turns them back into failures.
//! Remove a rule once the checker handles its case.
//!
//! 1. Late unknown writes (G2, G1). The checker counts an `info` write or delete
//!    as a possible superseder of an acknowledged write only when it was invoked
//!    after that write. But an `info` operation may take effect at any time after
//!    its invoke: a request stuck in a clogged link is delivered seconds after the
//!    client gave up, runs after later writes, and (as a plain `SHOAL.PUT` or
//!    `SHOAL.DEL`, whose context is the key's current one) supersedes them. Legal
//!    when an `info` write or delete of the key was invoked before the lost write
//!    and either the final context covers the lost dot (G2), or the key is gone
//!    (no siblings, empty context: a late delete whose marker compaction then
//!    collected, G1) and the `info` operation was a delete.
//! 2. Collected delete markers (G6). The checker excuses a read that no longer
//!    covers a dot when an `ok` delete covering it completed before the read. A
//!    delete whose outcome was unknown (`info`) also leaves a marker; once compaction
//!    collects it, the key reads as absent with an empty context. Legal when the read
//!    found the key absent (no siblings, empty context) and a delete of the key
//!    (`ok` or `info`) was invoked before the read completed.
//!
//! Pure: no madsim.

use shoal_checker::{
    pair_operations, Event, Function, History, Operation, Outcome, Violation, ViolationKind,
};

/// Why a violation is a known checker gap, or None when it is real.
pub fn known_gap(history: &History, violation: &Violation) -> Option<String> {
    let operations = pair_operations(&history.events).ok()?;
    match violation.kind {
        ViolationKind::G1Durability | ViolationKind::G2NoSilentLoss => {
            late_unknown_write(history, &operations, violation)
        }
        ViolationKind::G6Sessions => collected_marker(&operations, violation),
        _ => None,
    }
}

fn is_unknown_write_or_delete(op: &Operation) -> bool {
    op.f != Function::Read && op.is_info()
}

fn late_unknown_write(
    history: &History,
    operations: &[Operation],
    violation: &Violation,
) -> Option<String> {
    let key = violation.key.as_ref()?;
    let Some(Event::Final(state)) = history.events.get(violation.event_index) else {
        return None;
    };
    let on_key: Vec<&Operation> = operations.iter().filter(|op| &op.key == key).collect();
    let key_gone = state.siblings.is_empty() && state.context.frontier().next().is_none();
    let mut explanations = Vec::new();
    for write in &on_key {
        let Some(dot) = write.written_dot() else {
            continue;
        };
        if state.siblings.iter().any(|s| s.dot == dot) {
            continue;
        }
        let covered = state.context.covers(dot);
        if !covered && !key_gone {
            return None; // lost without any supersession: a real G1
        }
        let superseded_by_ok = on_key.iter().any(|other| {
            other.invoked != write.invoked
                && other.superseded_context().is_some_and(|c| c.covers(dot))
        });
        let unknown_after = on_key
            .iter()
            .any(|other| is_unknown_write_or_delete(other) && other.invoked > write.invoked);
        if superseded_by_ok || unknown_after {
            continue; // the checker explains this one itself
        }
        let earlier_unknown = on_key.iter().find(|other| {
            is_unknown_write_or_delete(other)
                && other.invoked < write.invoked
                && (covered || other.f == Function::Delete)
        })?;
        explanations.push(format!(
            "{} dot {dot} may have been superseded by {} (outcome unknown, so it may have taken effect after it)",
            write.describe(),
            earlier_unknown.describe()
        ));
    }
    (!explanations.is_empty()).then(|| format!("late unknown write: {}", explanations.join("; ")))
}

fn collected_marker(operations: &[Operation], violation: &Violation) -> Option<String> {
    let read = operations.iter().find(|op| match &op.outcome {
        Outcome::Ok { at, .. } => at.event_index == violation.event_index,
        _ => false,
    })?;
    let (siblings, context) = read.read_result()?;
    if !siblings.is_empty() || context.frontier().next().is_some() {
        return None;
    }
    let done = read.ok_at()?;
    let delete = operations.iter().rev().find(|op| {
        op.key == read.key && op.f == Function::Delete && !op.is_fail() && op.invoked < done
    })?;
    Some(format!(
        "collected delete marker: {} found the key absent after {} (whose marker compaction may have collected)",
        read.describe(),
        delete.describe()
    ))
}
