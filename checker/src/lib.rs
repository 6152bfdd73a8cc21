//! The checker of Shoal's contract.
//!
//! It owns the history format — JSON lines, Jepsen-shaped: a `meta` line, then client
//! operations (`invoke` followed by one `ok` / `fail` / `info` from the same
//! `process`), fault notes, the liveness verdict (`quiescence`), every replica's
//! `final` state of every key after the heal, and, from a harness that can watch
//! the store, what writes did whatever their clients learned (`effect`) and
//! delete-marker collections (`collected`), and each key's state in a backup
//! taken during the run (`backup`) — and the checks of the contract:
//! G1 durability, G2 no silent loss, G3 convergence, G4 no resurrection, G5 no
//! garbage, G6 sessions, and liveness, for registers (G1, G4 and G5 also for
//! backups, as of the moment each was taken); and for counters (`add`,
//! `count`) and queues (`push`, `pop`), totals within what was acknowledged
//! and attempted, and no element lost, invented or (one node) popped twice;
//! and expiry: no value read past its deadline, nor an element (a key named
//! `collection:element`) past its collection's (`expire`), and what a
//! deadline took is no loss. G7 availability is not judged here: an invoke
//! that never completes counts as `info`.
//!
//! It must not depend on the engine, the network or the simulator: it judges
//! histories from the outside, whether they came from the simulator or from real
//! processes. Its only dependencies are serde and serde_json.
//!
//! Codemap: `model` (dots, contexts, siblings, keys), `history` and `format` (typed
//! events and their JSON lines), `operations` (invokes paired with completions),
//! `checks` (one module per guarantee), `report` and `timeline` (the verdict a person
//! reads).

pub mod checks;
mod format;
pub mod history;
mod jsonl;
pub mod model;
pub mod operations;
pub mod report;
pub mod timeline;

pub use checks::Facts;
pub use history::{
    BackupState, Collection, Effect, Event, Fault, FinalState, Function, History, Meta, OkResult,
    OpHeader, ParseError, Quiescence,
};
pub use model::{Context, Dot, Key, NodeId, Sibling};
pub use operations::{pair_operations, HistoryError, Operation, Outcome, Stamp};
pub use report::{OutcomeCounts, Report, Violation, ViolationKind};
pub use timeline::Timeline;

/// Judges one history against the contract. Violations come in detection order.
pub fn check(history: &History) -> Report {
    let mut violations = match Facts::new(history) {
        Ok(facts) => checks::check_all(&facts),
        Err(error) => vec![malformed(history, error)],
    };
    violations.sort_by_key(Violation::detection_order);
    let first_timeline = violations
        .first()
        .map(|first| timeline::key_timeline(history, first.key.as_ref()));
    Report {
        meta: history.meta.clone(),
        op_counts: report::count_outcomes(history),
        violations,
        first_timeline,
    }
}

fn malformed(history: &History, error: HistoryError) -> Violation {
    let event = history.events.get(error.event_index);
    Violation {
        kind: ViolationKind::Malformed,
        key: event.and_then(Event::key).cloned(),
        time_ms: event.and_then(Event::time_ms),
        event_index: error.event_index,
        description: error.message,
    }
}
