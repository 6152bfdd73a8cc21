//! G4 no resurrection: once a delete completed, no later read and no final state
//! holds a sibling its context covers. Reads are judged only in runs that promise
//! a read sees every completed operation (`meta.sessions`: one node, or strict
//! quorums); under a sloppy quorum a read may be stale for a while (the delete
//! may sit in a hint on a fallback), and only the final states are judged.

use super::{Facts, KeyFacts};
use crate::model::{Key, Sibling};
use crate::operations::{Operation, Stamp};
use crate::report::{Violation, ViolationKind};

pub fn check_resurrection(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        if facts.history.meta.sessions {
            violations.extend(resurrected_reads(facts, key, key_facts));
        }
        violations.extend(resurrected_finals(facts, key, key_facts));
    }
    violations
}

fn resurrected_reads(facts: &Facts, key: &Key, key_facts: &KeyFacts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for read in facts.operations_of(key_facts) {
        let (Some((siblings, _)), Some(at)) = (read.read_result(), read.ok_at()) else {
            continue;
        };
        let found = first_resurrected(facts, key_facts, siblings, Some(read.invoked));
        if let Some((sibling, delete)) = found {
            violations.push(Violation::during_run(
                ViolationKind::G4NoResurrection,
                Some(key.clone()),
                at,
                format!(
                    "read {} returned {} after {} removed it (completed at {} ms, context {})",
                    read.describe(),
                    sibling,
                    delete.describe(),
                    delete.ok_at().map_or(0, |done| done.time_ms),
                    delete.deleted_context().cloned().unwrap_or_default()
                ),
            ));
        }
    }
    violations
}

fn resurrected_finals(facts: &Facts, key: &Key, key_facts: &KeyFacts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (event_index, state) in facts.finals_of(key_facts) {
        if let Some((sibling, delete)) = first_resurrected(facts, key_facts, &state.siblings, None)
        {
            violations.push(Violation::after_heal(
                ViolationKind::G4NoResurrection,
                Some(key.clone()),
                event_index,
                format!(
                    "replica {} holds {} after the heal, but {} removed it (context {})",
                    state.replica,
                    sibling,
                    delete.describe(),
                    delete.deleted_context().cloned().unwrap_or_default()
                ),
            ));
        }
    }
    violations
}

/// The first sibling covered by an `ok` delete that completed before `invoked`
/// (any `ok` delete when `invoked` is None: the final states come after all).
pub(super) fn first_resurrected<'a, 'f>(
    facts: &'f Facts,
    key_facts: &'f KeyFacts,
    siblings: &'a [Sibling],
    invoked: Option<Stamp>,
) -> Option<(&'a Sibling, &'f Operation)> {
    siblings.iter().find_map(|sibling| {
        facts
            .ok_deletes_of(key_facts)
            .find(|delete| {
                let before = match (delete.ok_at(), invoked) {
                    (Some(done), Some(invoked)) => done < invoked,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let covers = delete
                    .deleted_context()
                    .is_some_and(|context| context.covers(sibling.dot));
                before && covers
            })
            .map(|delete| (sibling, delete))
    })
}
