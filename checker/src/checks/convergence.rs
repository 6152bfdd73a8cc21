//! G3 convergence: after the heal every replica of a key holds the identical state,
//! and a key with a surviving acknowledged write is held by some replica.

use super::{ok_writes_of, superseded, Facts, KeyFacts};
use crate::history::FinalState;
use crate::model::{siblings_text, Dot, Key, Sibling};
use crate::report::{Violation, ViolationKind};

pub fn check_convergence(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        violations.extend(disagreement(facts, key, key_facts));
        violations.extend(absence(facts, key, key_facts));
    }
    violations
}

/// One violation when the replicas' final states of the key are not all identical.
fn disagreement(facts: &Facts, key: &Key, key_facts: &KeyFacts) -> Option<Violation> {
    let mut finals = facts.finals_of(key_facts);
    let (_, first) = finals.next()?;
    let (event_index, differing) = finals.find(|(_, state)| !same_state(first, state))?;
    Some(Violation::after_heal(
        ViolationKind::G3Convergence,
        Some(key.clone()),
        event_index,
        format!(
            "replicas disagree: replica {} holds {} but replica {} holds {}",
            first.replica,
            state_text(first),
            differing.replica,
            state_text(differing)
        ),
    ))
}

fn same_state(left: &FinalState, right: &FinalState) -> bool {
    left.tombstone == right.tombstone
        && sorted_siblings(left) == sorted_siblings(right)
        && left.context.equivalent(&right.context)
}

fn sorted_siblings(state: &FinalState) -> Vec<(Dot, &str)> {
    let mut siblings: Vec<(Dot, &str)> = state
        .siblings
        .iter()
        .map(|Sibling { value, dot }| (*dot, value.as_str()))
        .collect();
    siblings.sort_unstable();
    siblings
}

/// A final state as one phrase for reports.
pub fn state_text(state: &FinalState) -> String {
    if state.tombstone {
        format!("a tombstone, context {}", state.context)
    } else {
        format!(
            "siblings {}, context {}",
            siblings_text(&state.siblings),
            state.context
        )
    }
}

/// One violation when no replica reports the key although an acknowledged write to
/// it was never superseded.
fn absence(facts: &Facts, key: &Key, key_facts: &KeyFacts) -> Option<Violation> {
    if !key_facts.finals.is_empty() {
        return None;
    }
    let mut surviving = ok_writes_of(facts, key_facts)
        .filter(|(write, dot)| !superseded(facts, key_facts, write, *dot));
    let (write, dot) = surviving.next()?;
    let others_count = surviving.count();
    Some(Violation::after_heal(
        ViolationKind::G3Convergence,
        Some(key.clone()),
        facts.history.events.len(),
        format!(
            "no replica holds the key after the heal, yet acknowledged write {} dot {} (and {} more) was never superseded",
            write.describe(),
            dot,
            others_count
        ),
    ))
}
