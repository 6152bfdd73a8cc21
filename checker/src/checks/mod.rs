//! The checks of the contract. Each takes the `Facts` of one history and returns the
//! violations it finds; none of them stops at the first.

mod backups;
mod convergence;
mod counters;
mod durability;
mod expiry;
mod garbage;
mod liveness;
mod queues;
mod resurrection;
mod sessions;

pub use backups::check_backups;
pub use convergence::check_convergence;
pub use counters::check_counters;
pub use durability::check_durability;
pub use expiry::{check_expiry, expired_when_read};
pub use garbage::check_garbage;
pub use liveness::check_liveness;
pub use queues::check_queues;
pub use resurrection::check_resurrection;
pub use sessions::check_sessions;

use crate::history::{BackupState, Collection, Effect, Event, FinalState, Function, History};
use crate::model::{Dot, Key};
use crate::operations::{pair_operations, HistoryError, Operation};
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

/// Indices of the operations (into `Facts::operations`) and of the final states,
/// effects and marker collections (into `History::events`) of one key.
#[derive(Clone, Debug, Default)]
pub struct KeyFacts {
    pub operations: Vec<usize>,
    pub finals: Vec<usize>,
    /// Only effects an operation of the history can have made (see
    /// [`attributable`]): a store that reports a write no client asked for, or
    /// one whose client was told it failed, explains no loss.
    pub effects: Vec<usize>,
    pub collections: Vec<usize>,
    pub backups: Vec<usize>,
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
        let makers = effect_makers(&operations);
        for (event_index, event) in history.events.iter().enumerate() {
            let Some(key) = event.key() else {
                continue;
            };
            let key_facts = keys.entry(key.clone()).or_default();
            match event {
                Event::Final(_) => key_facts.finals.push(event_index),
                Event::Effect(effect) if attributable(&makers, event_index, effect) => {
                    key_facts.effects.push(event_index)
                }
                Event::Collected(_) => key_facts.collections.push(event_index),
                Event::Backup(_) => key_facts.backups.push(event_index),
                _ => {}
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

    /// The attributable effects of one key with their event indices, in history
    /// order.
    pub fn effects_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = (usize, &'h Effect)> + 'a {
        let events = &self.history.events;
        key_facts
            .effects
            .iter()
            .filter_map(move |&index| match events.get(index) {
                Some(Event::Effect(effect)) => Some((index, effect)),
                _ => None,
            })
    }

    /// The delete-marker collections of one key with their event indices.
    pub fn collections_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = (usize, &'h Collection)> + 'a {
        let events = &self.history.events;
        key_facts
            .collections
            .iter()
            .filter_map(move |&index| match events.get(index) {
                Some(Event::Collected(collection)) => Some((index, collection)),
                _ => None,
            })
    }

    /// The backup states of one key with their event indices.
    pub fn backups_of<'a>(
        &'a self,
        key_facts: &'a KeyFacts,
    ) -> impl Iterator<Item = (usize, &'h BackupState)> + 'a {
        let events = &self.history.events;
        key_facts
            .backups
            .iter()
            .filter_map(move |&index| match events.get(index) {
                Some(Event::Backup(state)) => Some((index, state)),
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
    violations.extend(check_expiry(facts));
    violations.extend(check_counters(facts));
    violations.extend(check_queues(facts));
    violations.extend(check_backups(facts));
    violations
}

/// Who can have made an effect: per key, function and written value (None for a
/// delete), the first invoke (event index) whose outcome was not `fail`.
type EffectMakers = BTreeMap<(Key, Function, Option<String>), usize>;

fn effect_makers(operations: &[Operation]) -> EffectMakers {
    let mut makers = EffectMakers::new();
    for op in operations.iter().filter(|op| !op.is_fail()) {
        let maker = (op.key.clone(), op.f, op.value.clone());
        makers.entry(maker).or_insert(op.invoked.event_index);
    }
    makers
}

/// True when the effect at `effect_index` can be an operation's: a write's by its
/// value (values are unique), a delete's by any delete of the key; either invoked
/// before it, with an outcome other than `fail`.
fn attributable(makers: &EffectMakers, effect_index: usize, effect: &Effect) -> bool {
    let maker = (effect.key.clone(), effect.f, effect.value.clone());
    makers
        .get(&maker)
        .is_some_and(|&invoked| invoked < effect_index)
}

/// True when something may legitimately have replaced the `ok` write `write`
/// (whose dot is `dot`): an `ok` write or delete whose context covers the dot, or
/// one of unknown outcome. With recorded effects the unknown ones are known too:
/// a write or delete that took effect superseding a context that covers the dot
/// (whenever it took effect: a request delivered late, after writes acknowledged
/// meanwhile, supersedes them). Without, an unknown write or delete invoked after
/// `write` is taken to have.
pub fn superseded(facts: &Facts, key_facts: &KeyFacts, write: &Operation, dot: Dot) -> bool {
    let by_ok = facts.operations_of(key_facts).any(|other| {
        other.invoked != write.invoked
            && other
                .superseded_context()
                .is_some_and(|context| context.covers(dot))
    });
    if by_ok {
        return true;
    }
    if facts.history.meta.effects {
        return facts
            .effects_of(key_facts)
            .any(|(_, effect)| effect.superseded.covers(dot));
    }
    facts
        .operations_of(key_facts)
        .any(|other| other.is_info() && other.f != Function::Read && other.invoked > write.invoked)
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

/// True when the key's context may legitimately have lost `dot` by the time
/// `read` ran: its delete markers were collected, and their context with them.
/// With recorded effects, a collection whose context covers the dot, before the
/// read completed (it may have run any time until then); without, an `ok` delete
/// covering it that completed before the read was invoked.
pub fn forgotten_before(facts: &Facts, key_facts: &KeyFacts, dot: Dot, read: &Operation) -> bool {
    if facts.history.meta.effects {
        let Some(done) = read.ok_at() else {
            return false;
        };
        return facts
            .collections_of(key_facts)
            .any(|(index, collection)| index < done.event_index && collection.context.covers(dot));
    }
    facts.ok_deletes_of(key_facts).any(|delete| {
        let completed_before = delete.ok_at().is_some_and(|at| at < read.invoked);
        let covers = delete.deleted_context().is_some_and(|c| c.covers(dot));
        completed_before && covers
    })
}

/// Replica ids as `2, 3`.
pub fn replicas_text(replicas: &[u32]) -> String {
    let parts: Vec<String> = replicas.iter().map(u32::to_string).collect();
    parts.join(", ")
}
