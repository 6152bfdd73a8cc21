//! G6 sessions, checked only when the meta promises them: read-your-writes and
//! monotonic reads, per process and key.
//!
//! A read "observes" a dot when its context covers it, or when the key's delete
//! markers may have been collected, and their context with them, before the read
//! ran (see `forgotten_before`).

use super::{forgotten_before, Facts, KeyFacts};
use crate::model::{Context, Dot, Key, NodeId};
use crate::operations::Operation;
use crate::report::{Violation, ViolationKind};
use std::collections::BTreeMap;

/// What one process has done to and seen of one key so far.
#[derive(Default)]
struct Session<'a> {
    /// The process's own acknowledged writes.
    own_writes: Vec<(Dot, &'a Operation)>,
    /// The join of the contexts of the process's earlier `ok` reads.
    seen: Context,
    /// For each node in `seen`, the read that brought its counter.
    seen_by: BTreeMap<NodeId, &'a Operation>,
}

pub fn check_sessions(facts: &Facts) -> Vec<Violation> {
    if !facts.history.meta.sessions {
        return Vec::new();
    }
    let mut sessions: BTreeMap<(u64, &Key), Session> = BTreeMap::new();
    let mut violations = Vec::new();
    for operation in &facts.operations {
        let Some(key_facts) = facts.keys.get(&operation.key) else {
            continue;
        };
        let session = sessions
            .entry((operation.process, &operation.key))
            .or_default();
        if let Some(dot) = operation.written_dot() {
            session.own_writes.push((dot, operation));
        }
        if let Some((_, context)) = operation.read_result() {
            violations.extend(read_your_writes(
                facts, key_facts, session, operation, context,
            ));
            violations.extend(monotonic_reads(
                facts, key_facts, session, operation, context,
            ));
            record_read(session, operation, context);
        }
    }
    violations
}

fn observes(
    facts: &Facts,
    key_facts: &KeyFacts,
    read: &Operation,
    context: &Context,
    dot: Dot,
) -> bool {
    context.covers(dot) || forgotten_before(facts, key_facts, dot, read)
}

fn read_your_writes(
    facts: &Facts,
    key_facts: &KeyFacts,
    session: &Session,
    read: &Operation,
    context: &Context,
) -> Option<Violation> {
    let (dot, write) = session
        .own_writes
        .iter()
        .find(|(dot, _)| !observes(facts, key_facts, read, context, *dot))?;
    Some(Violation::during_run(
        ViolationKind::G6Sessions,
        Some(read.key.clone()),
        read.ok_at()?,
        format!(
            "read-your-writes broken: {} returned context {} which does not cover dot {} of the process's own earlier {}",
            read.describe(),
            context,
            dot,
            write.describe()
        ),
    ))
}

fn monotonic_reads(
    facts: &Facts,
    key_facts: &KeyFacts,
    session: &Session,
    read: &Operation,
    context: &Context,
) -> Option<Violation> {
    let dot = session
        .seen
        .frontier()
        .find(|dot| !observes(facts, key_facts, read, context, *dot))?;
    let earlier = session
        .seen_by
        .get(&dot.node)
        .map_or_else(|| "an earlier read".to_string(), |read| read.describe());
    Some(Violation::during_run(
        ViolationKind::G6Sessions,
        Some(read.key.clone()),
        read.ok_at()?,
        format!(
            "monotonic reads broken: {} returned context {} which does not cover dot {} seen by the process's earlier {}",
            read.describe(),
            context,
            dot,
            earlier
        ),
    ))
}

fn record_read<'a>(session: &mut Session<'a>, read: &'a Operation, context: &Context) {
    for dot in context.frontier() {
        if !session.seen.covers(dot) {
            session.seen_by.insert(dot.node, read);
        }
    }
    session.seen.join(context);
}
