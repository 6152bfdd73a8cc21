//! The checks of the contract. Each takes the `Facts` of one history and returns the
//! violations it finds; none of them stops at the first.

mod convergence;
mod durability;
mod garbage;
mod liveness;
mod resurrection;
mod sessions;

pub use convergence::check_convergence;
pub use durability::check_durability;
pub use garbage::check_garbage;
pub use liveness::check_liveness;
pub use resurrection::check_resurrection;
pub use sessions::check_sessions;

use crate::history::{Event, FinalState, Function, History};
use crate::model::{Dot, Key};
use crate::operations::{pair_operations, HistoryError, Operation, Stamp};
use crate::report::Violation;
use std::collections::BTreeMap;

/// What every check needs, computed once: the paired operations and, per key, the
/// operations and final states that touch it.
#[derive(Debug)]
pub struct Facts<'h> {
    pub history: &'h History,
    /// In invoke order.
    pub operations: Vec<Operation>,
    /// The latest run time in the history; phase-3 events happen after it.
    pub end_time_ms: u64,
    pub keys: BTreeMap<Key, KeyFacts>,
}

/// Indices of the operations (into `Facts::operations`) and final states (into
/// `History::events`) of one key.
#[derive(Clone, Debug, Default)]
pub struct KeyFacts {
    pub operations: Vec<usize>,
    pub finals: Vec<usize>,
}

impl<'h> Facts<'h> {
    pub fn new(history: &'h History) -> Result<Facts<'h>, HistoryError> {
        let operations = pair_operations(&history.events)?;
        let end_time_ms = history
            .events
            .iter()
            .filter_map(Event::time_ms)
            .max()
            .unwrap_or(0);
        let mut keys: BTreeMap<Key, KeyFacts> = BTreeMap::new();
        for (operation_index, operation) in operations.iter().enumerate() {
            let key_facts = keys.entry(operation.key.clone()).or_default();
            key_facts.operations.push(operation_index);
        }
        for (event_index, event) in history.events.iter().enumerate() {
            if let Event::Final(state) = event {
                let key_facts = keys.entry(state.key.clone()).or_default();
                key_facts.finals.push(event_index);
            }
        }
        Ok(Facts {
            history,
            operations,
            end_time_ms,
            keys,
        })
    }

    /// The operations of one key, in invoke order.
    pub fn operations_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = &'a Operation> + 'a {
        key_facts
            .operations
            .iter()
            .filter_map(|&index| self.operations.get(index))
    }

    /// The final states of one key with their event indices, in history order.
    pub fn finals_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = (usize, &'h FinalState)> + 'a {
        let events = &self.history.events;
        key_facts
            .finals
            .iter()
            .filter_map(move |&index| match events.get(index) {
                Some(Event::Final(state)) => Some((index, state)),
                _ => None,
            })
    }

    /// The `ok` deletes of one key.
    pub fn ok_deletes_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = &'a Operation> + 'a {
        self.operations_of(key_facts)
            .filter(|operation| operation.deleted_context().is_some())
    }
}

/// Runs every check of the contract (G6 only when the meta promises sessions).
pub fn check_all(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    violations.extend(check_durability(facts));
    violations.extend(check_convergence(facts));
    violations.extend(check_resurrection(facts));
    violations.extend(check_garbage(facts));
    violations.extend(check_sessions(facts));
    violations.extend(check_liveness(facts));
    violations
}

/// An operation on the same key that may legitimately have replaced the `ok` write
/// `write` (whose dot is `dot`): an `ok` write or delete whose context covers the dot,
/// or a write or delete of unknown outcome invoked after `write` was invoked.
pub fn superseder<'a>(
    facts: &'a Facts,
    key_facts: &'a KeyFacts,
    write: &Operation,
    dot: Dot,
) -> Option<&'a Operation> {
    facts.operations_of(key_facts).find(|other| {
        if other.invoked == write.invoked {
            return false;
        }
        if let Some(context) = other.superseded_context() {
            return context.covers(dot);
        }
        other.is_info() && other.f != Function::Read && other.invoked > write.invoked
    })
}

/// The `ok` writes of one key with their dots.
pub fn ok_writes_of<'a>(
    facts: &'a Facts,
    key_facts: &'a KeyFacts,
) -> impl Iterator<Item = (&'a Operation, Dot)> + 'a {
    facts
        .operations_of(key_facts)
        .filter_map(|operation| operation.written_dot().map(|dot| (operation, dot)))
}

/// True when an `ok` delete of the key that completed before `before` covers `dot`.
pub fn deleted_before(facts: &Facts, key_facts: &KeyFacts, dot: Dot, before: Stamp) -> bool {
    facts.ok_deletes_of(key_facts).any(|delete| {
        let completed_before = delete.ok_at().is_some_and(|at| at < before);
        let covers = delete.deleted_context().is_some_and(|c| c.covers(dot));
        completed_before && covers
    })
}

/// Replica ids as `2, 3`.
pub fn replicas_text(replicas: &[u32]) -> String {
    let parts: Vec<String> = replicas.iter().map(u32::to_string).collect();
    parts.join(", ")
}
