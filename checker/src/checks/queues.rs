//! Queues: each pushed value is unique, so a pop names the push it took.
//! - Nothing invented: a popped value was pushed (invoked before the pop
//!   completed, outcome not `fail`).
//! - Nothing lost: once a queue was drained (a pop found it empty after every
//!   push was invoked), the acknowledged pushes no `ok` pop took number at
//!   most the pops of unknown outcome (each may have taken one unseen).
//! - Where the run promises exclusive pops (one node): no value is popped twice,
//!   and values come out in push order: when push A was acknowledged before
//!   push B was invoked, a pop of B does not complete before a pop of A is
//!   invoked.

use super::Facts;
use crate::history::{Function, OkResult};
use crate::model::Key;
use crate::operations::Operation;
use crate::report::{Violation, ViolationKind};
use std::collections::BTreeMap;

/// Missing values named in one violation, at most.
const MISSING_NAMED_MAX: usize = 5;

pub fn check_queues(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        let operations: Vec<&Operation> = facts.operations_of(key_facts).collect();
        if !operations.iter().any(|op| op.f == Function::Push) {
            continue;
        }
        let queue = Queue::new(&operations);
        let exclusive = facts.history.meta.pops_exclusive;
        violations.extend(queue.invented_or_twice(key, exclusive));
        if exclusive {
            violations.extend(queue.out_of_order(key));
        }
        violations.extend(queue.lost(key));
    }
    violations
}

struct Queue<'a> {
    /// Pushes whose outcome is not `fail`, by value.
    pushes: BTreeMap<&'a str, &'a Operation>,
    /// `ok` pops that took a value, with it, in invoke order.
    takes: Vec<(&'a Operation, &'a str)>,
    pops: Vec<&'a Operation>,
}

impl<'a> Queue<'a> {
    fn new(operations: &[&'a Operation]) -> Queue<'a> {
        let pushes = operations
            .iter()
            .filter(|op| op.f == Function::Push && !op.is_fail())
            .filter_map(|op| Some((op.value.as_deref()?, *op)))
            .collect();
        let pops: Vec<&Operation> = operations
            .iter()
            .copied()
            .filter(|op| op.f == Function::Pop)
            .collect();
        let takes = pops
            .iter()
            .filter_map(|op| match op.ok_result() {
                Some(OkResult::Pop { value: Some(value) }) => Some((*op, value.as_str())),
                _ => None,
            })
            .collect();
        Queue {
            pushes,
            takes,
            pops,
        }
    }

    fn invented_or_twice(&self, key: &Key, exclusive: bool) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut taken_by: BTreeMap<&str, &Operation> = BTreeMap::new();
        for &(pop, value) in &self.takes {
            let at = pop.ok_at().expect("a take is an ok pop");
            let pushed = self.pushes.get(value).is_some_and(|push| push.invoked < at);
            let problem = if !pushed {
                Some(format!(
                    "{} took {value:?}, which nobody pushed",
                    pop.describe()
                ))
            } else {
                match taken_by.insert(value, pop) {
                    Some(first) if exclusive => Some(format!(
                        "{} took {value:?}, which {} took already",
                        pop.describe(),
                        first.describe()
                    )),
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                violations.push(Violation::during_run(
                    ViolationKind::Queue,
                    Some(key.clone()),
                    at,
                    problem,
                ));
            }
        }
        violations
    }

    /// Pops that overtook: B taken before A although A was pushed first.
    fn out_of_order(&self, key: &Key) -> Vec<Violation> {
        let mut violations = Vec::new();
        for &(pop_b, b) in &self.takes {
            let Some(push_b) = self.pushes.get(b) else {
                continue; // invented: judged above
            };
            let done_b = pop_b.ok_at().expect("a take is an ok pop");
            for &(pop_a, a) in &self.takes {
                let push_a = self.pushes.get(a);
                let a_first = push_a.is_some_and(|p| p.ok_at().is_some_and(|d| d < push_b.invoked));
                if a_first && done_b < pop_a.invoked {
                    violations.push(Violation::during_run(
                        ViolationKind::Queue,
                        Some(key.clone()),
                        done_b,
                        format!(
                            "{} took {b:?} before {} took {a:?}, pushed and acknowledged first",
                            pop_b.describe(),
                            pop_a.describe()
                        ),
                    ));
                    return violations; // one per queue: the rest follow from it
                }
            }
        }
        violations
    }

    /// Acknowledged pushes gone without an `ok` pop, beyond what the pops of
    /// unknown outcome can have taken; judged once the queue was drained.
    fn lost(&self, key: &Key) -> Option<Violation> {
        let last_push = self.pushes.values().map(|push| push.invoked).max()?;
        let drain = self.pops.iter().find(|pop| {
            pop.invoked > last_push
                && matches!(pop.ok_result(), Some(OkResult::Pop { value: None }))
        })?;
        let taken: std::collections::BTreeSet<&str> = self.takes.iter().map(|&(_, v)| v).collect();
        let missing: Vec<&str> = self
            .pushes
            .iter()
            .filter(|(value, push)| push.ok_at().is_some() && !taken.contains(*value))
            .map(|(value, _)| *value)
            .collect();
        let unknown_pops = self.pops.iter().filter(|pop| pop.is_info()).count();
        if missing.len() <= unknown_pops {
            return None;
        }
        let named: Vec<String> = missing
            .iter()
            .take(MISSING_NAMED_MAX)
            .map(|v| format!("{v:?}"))
            .collect();
        Some(Violation::during_run(
            ViolationKind::Queue,
            Some(key.clone()),
            drain.ok_at().expect("the drain is an ok pop"),
            format!(
                "{} found the queue empty, yet {} acknowledged push(es) were never taken by an ok pop and only {unknown_pops} pop(s) have unknown outcomes: {}",
                drain.describe(),
                missing.len(),
                named.join(", ")
            ),
        ))
    }
}
