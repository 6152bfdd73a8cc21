//! Counters: every total a client is told (an add's new total, a count) lies
//! between the sum of the additions acknowledged before the operation was
//! invoked (plus its own, for an add) and the sum of every addition that may
//! have happened before it completed: acknowledged, or of unknown outcome,
//! invoked before then. Additions are positive, so both sums only grow. An
//! increment applied twice shows as a total above the upper bound; a lost
//! one, below the lower.
//!
//! Where the run does not promise that a read sees every operation completed
//! before it (`meta.sessions`: a cluster with sloppy or non-strict quorums,
//! or one that lost a disk), a total may be behind while a side of a split
//! counts alone: the lower bound then judges only totals told after the
//! cluster was seen to converge (a `Quiescence`), such as the drain's; the
//! upper bound judges every total.

use super::Facts;
use crate::history::{Event, Function, OkResult};
use crate::operations::{Operation, Stamp};
use crate::report::{Violation, ViolationKind};

pub fn check_counters(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    let converged_at = lower_bound_from(facts);
    for (key, key_facts) in &facts.keys {
        let operations: Vec<&Operation> = facts.operations_of(key_facts).collect();
        let adds: Vec<(&Operation, i64)> = operations
            .iter()
            .filter(|op| op.f == Function::Add && !op.is_fail())
            .filter_map(|op| Some((*op, op.value.as_deref()?.parse::<i64>().ok()?)))
            .collect();
        for op in &operations {
            let Some((total, at)) = told_total(op) else {
                continue;
            };
            let judge_lower = op.invoked.event_index >= converged_at;
            if let Some(problem) = out_of_bounds(&adds, op, (total, at), judge_lower) {
                violations.push(Violation::during_run(
                    ViolationKind::Counter,
                    Some(key.clone()),
                    at,
                    format!("{} was told {problem}", op.describe()),
                ));
            }
        }
    }
    violations
}

/// The total an `ok` add or count reported (an absent counter is 0), and when.
fn told_total(op: &Operation) -> Option<(i64, Stamp)> {
    let at = op.ok_at()?;
    match op.ok_result()? {
        OkResult::Add { total } => Some((*total, at)),
        OkResult::Count { total } => Some((total.unwrap_or(0), at)),
        _ => None,
    }
}

/// The first event index from which totals must count every acknowledged
/// addition: 0 where reads see every completed operation, else the first
/// converged `Quiescence` (none: never).
fn lower_bound_from(facts: &Facts) -> usize {
    if facts.history.meta.sessions {
        return 0;
    }
    let events = &facts.history.events;
    events
        .iter()
        .position(|e| matches!(e, Event::Quiescence(q) if q.converged))
        .unwrap_or(usize::MAX)
}

/// What is wrong with `total`, reported to `op` at `at`, if anything (below
/// the lower bound only when `judge_lower`).
fn out_of_bounds(
    adds: &[(&Operation, i64)],
    op: &Operation,
    (total, at): (i64, Stamp),
    judge_lower: bool,
) -> Option<String> {
    let mut lower: i64 = 0;
    let mut upper: i64 = 0;
    for (add, delta) in adds {
        let before_invoke = add.ok_at().is_some_and(|done| done < op.invoked);
        if before_invoke || add.invoked == op.invoked {
            lower = lower.saturating_add(*delta);
        }
        if add.invoked < at {
            upper = upper.saturating_add(*delta);
        }
    }
    if judge_lower && total < lower {
        return Some(format!(
            "total {total}, below the {lower} that additions acknowledged before it sum to: an acknowledged increment was lost"
        ));
    }
    if total > upper {
        return Some(format!(
            "total {total}, above the {upper} that every addition invoked before it could make: an increment was counted twice or invented"
        ));
    }
    None
}
