//! G1, G2, G4 and G5 for backups: a backup is the store's state at one moment
//! between its start and the taking of its view, so, for every key, it holds
//! every write acknowledged before it started (unless the state then had
//! superseded it), nothing a delete acknowledged before it started removed, and
//! nothing that was not written by a write invoked before its view was taken.

use super::garbage::{garbage_problem, writes_by_value};
use super::resurrection::first_resurrected;
use super::{ok_writes_of, Facts, KeyFacts};
use crate::history::BackupState;
use crate::model::Dot;
use crate::operations::{Operation, Stamp};
use crate::report::{Violation, ViolationKind};

pub fn check_backups(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        for (event_index, state) in facts.backups_of(key_facts) {
            let at = |kind, text| Violation::after_heal(kind, Some(key.clone()), event_index, text);
            let taken = format!(
                "the backup taken {}..{} ms",
                state.started_ms, state.taken_ms
            );
            for (write, dot) in ok_writes_of(facts, key_facts) {
                if let Some((kind, why)) = lost(facts, key_facts, state, write, dot) {
                    violations.push(at(kind, format!("{taken} {why}")));
                }
            }
            let writes = writes_by_value(facts, key_facts);
            let expires = super::expiry::string_expires(facts, key);
            let problem = state.siblings.iter().find_map(|sibling| {
                garbage_problem((&writes, &expires), sibling, Some(state.taken_ms))
            });
            if let Some(problem) = problem {
                violations.push(at(
                    ViolationKind::G5NoGarbage,
                    format!("{taken} holds {problem}"),
                ));
            }
            let started = Stamp {
                time_ms: state.started_ms,
                event_index: 0,
            };
            if let Some((sibling, delete)) =
                first_resurrected(facts, key_facts, &state.siblings, Some(started))
            {
                violations.push(at(
                    ViolationKind::G4NoResurrection,
                    format!(
                        "{taken} holds {sibling}, but {} removed it before the backup began",
                        delete.describe()
                    ),
                ));
            }
        }
    }
    violations
}

/// Why the backup `state` lacks the `ok` write `write` (dot `dot`) it must
/// hold, or None when it holds it or may legitimately not.
fn lost(
    facts: &Facts,
    key_facts: &KeyFacts,
    state: &BackupState,
    write: &Operation,
    dot: Dot,
) -> Option<(ViolationKind, String)> {
    let acknowledged_before = write
        .ok_at()
        .is_some_and(|done| done.time_ms < state.started_ms);
    let expired = super::expiry::may_have_expired_by(facts, write, Some(state.taken_ms));
    let held = state.siblings.iter().any(|sibling| sibling.dot == dot);
    if !acknowledged_before || expired || held {
        return None;
    }
    if !state.context.covers(dot) {
        let forgotten = facts.collections_of(key_facts).any(|(_, collection)| {
            collection.time_ms <= state.taken_ms && collection.context.covers(dot)
        });
        return (!forgotten).then(|| {
            (
                ViolationKind::G1Durability,
                format!(
                    "lacks acknowledged write {} dot {} (its context {} does not cover it)",
                    write.describe(),
                    dot,
                    state.context
                ),
            )
        });
    }
    (!superseded_in_backup(facts, key_facts, state, dot)).then(|| {
        (
            ViolationKind::G2NoSilentLoss,
            format!(
                "covers acknowledged write {} dot {} in its context {} but holds no sibling of it, and nothing the backup holds superseded it",
                write.describe(),
                dot,
                state.context
            ),
        )
    })
}

/// True when a write or delete the backup holds (its context covers the dot
/// that write or delete minted) superseded `dot`.
fn superseded_in_backup(
    facts: &Facts,
    key_facts: &KeyFacts,
    state: &BackupState,
    dot: Dot,
) -> bool {
    let by_effect = facts
        .effects_of(key_facts)
        .any(|(_, effect)| effect.superseded.covers(dot) && state.context.covers(effect.dot));
    let by_ok_write = facts.operations_of(key_facts).any(|other| {
        other
            .written_dot()
            .is_some_and(|minted| state.context.covers(minted))
            && other.superseded_context().is_some_and(|c| c.covers(dot))
    });
    let by_ok_delete = facts.ok_deletes_of(key_facts).any(|delete| {
        delete.invoked.time_ms <= state.taken_ms
            && delete.deleted_context().is_some_and(|c| c.covers(dot))
    });
    by_effect || by_ok_write || by_ok_delete
}
