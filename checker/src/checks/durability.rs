//! G1 durability and G2 no silent loss: every acknowledged write is, on every replica
//! that reports its key, either present or legitimately superseded.

use super::{expired_when_read, ok_writes_of, replicas_text, superseded, Facts, KeyFacts};
use crate::history::FinalState;
use crate::model::{Dot, Key};
use crate::operations::Operation;
use crate::report::{Violation, ViolationKind};

/// Replicas on which an acknowledged write is gone, split by how it went.
#[derive(Default)]
struct Losses {
    /// Context does not cover the dot: the write never arrived or was lost (G1).
    uncovered_replicas: Vec<u32>,
    /// Context covers the dot but no sibling holds it: a merge dropped it (G2).
    dropped_replicas: Vec<u32>,
    first_event_index: Option<usize>,
}

pub fn check_durability(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        for (write, dot) in ok_writes_of(facts, key_facts) {
            if superseded(facts, key_facts, write, dot) {
                continue;
            }
            let losses = find_losses(facts, key_facts, write, dot);
            violations.extend(loss_violations(key, write, dot, &losses));
        }
    }
    violations
}

fn find_losses(facts: &Facts, key_facts: &KeyFacts, write: &Operation, dot: Dot) -> Losses {
    let mut losses = Losses::default();
    for (event_index, state) in facts.finals_of(key_facts) {
        if holds(state, dot) || expired_when_read(facts, write, state) {
            continue;
        }
        losses.first_event_index.get_or_insert(event_index);
        if state.context.covers(dot) {
            losses.dropped_replicas.push(state.replica);
        } else {
            losses.uncovered_replicas.push(state.replica);
        }
    }
    losses
}

fn holds(state: &FinalState, dot: Dot) -> bool {
    state.siblings.iter().any(|sibling| sibling.dot == dot)
}

fn loss_violations(key: &Key, write: &Operation, dot: Dot, losses: &Losses) -> Vec<Violation> {
    let Some(event_index) = losses.first_event_index else {
        return Vec::new();
    };
    let mut violations = Vec::new();
    if !losses.uncovered_replicas.is_empty() {
        violations.push(Violation::after_heal(
            ViolationKind::G1Durability,
            Some(key.clone()),
            event_index,
            format!(
                "acknowledged write {} dot {} is missing on replica(s) {} (their context does not cover it) and no write or delete superseded it",
                write.describe(),
                dot,
                replicas_text(&losses.uncovered_replicas)
            ),
        ));
    }
    if !losses.dropped_replicas.is_empty() {
        violations.push(Violation::after_heal(
            ViolationKind::G2NoSilentLoss,
            Some(key.clone()),
            event_index,
            format!(
                "merge dropped a sibling: acknowledged write {} dot {} is covered by the context of replica(s) {} but no sibling holds it, and no write or delete covered it",
                write.describe(),
                dot,
                replicas_text(&losses.dropped_replicas)
            ),
        ));
    }
    violations
}
