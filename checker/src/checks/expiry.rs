//! Expiry: no value is read after its deadline, beyond how far a node's wall
//! clock may lag the run's (`Meta::expiry_slack_ms`). A read invoked later than
//! that ran at a node whose clock was past the deadline, so it must not return
//! the value, from its own copy or from any replica's.

use super::Facts;
use crate::model::Key;
use crate::report::{Violation, ViolationKind};
use std::collections::BTreeMap;

pub fn check_expiry(facts: &Facts) -> Vec<Violation> {
    let slack_ms = facts.history.meta.expiry_slack_ms.unwrap_or(0);
    // Values are unique per history: each expiring value's deadline and write.
    let deadlines: BTreeMap<(&Key, &str), (u64, usize)> = facts
        .operations
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some(((&op.key, op.value.as_deref()?), (op.expires_ms?, i))))
        .collect();
    if deadlines.is_empty() {
        return Vec::new();
    }
    let mut violations = Vec::new();
    for read in &facts.operations {
        let (Some((siblings, _)), Some(done)) = (read.read_result(), read.ok_at()) else {
            continue;
        };
        for sibling in siblings {
            let Some(&(deadline_ms, write)) = deadlines.get(&(&read.key, sibling.value.as_str()))
            else {
                continue;
            };
            if read.invoked.time_ms <= deadline_ms + slack_ms {
                continue;
            }
            violations.push(Violation::during_run(
                ViolationKind::Expiry,
                Some(read.key.clone()),
                done,
                format!(
                    "{} returned {:?} of {}, which expired at {deadline_ms} ms: {} ms past its deadline (clocks may lag {slack_ms} ms)",
                    read.describe(),
                    sibling.value,
                    facts.operations[write].describe(),
                    read.invoked.time_ms - deadline_ms
                ),
            ));
        }
    }
    violations
}

/// The write's value may have expired, at the node that was read, by the time
/// `state` was read (a node whose clock runs ahead of the run's expires it
/// early; a state read at an unknown time may be read any time later): its
/// absence there is no loss.
pub fn expired_when_read(
    facts: &Facts,
    write: &crate::operations::Operation,
    state: &crate::history::FinalState,
) -> bool {
    let slack_ms = facts.history.meta.expiry_slack_ms.unwrap_or(0);
    let Some(deadline_ms) = write.expires_ms else {
        return false;
    };
    state
        .read_at_ms
        .is_none_or(|at| deadline_ms <= at + slack_ms)
}
