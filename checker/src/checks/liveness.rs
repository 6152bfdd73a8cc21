//! Liveness: after the heal the cluster converged, within the run's bound.

use super::Facts;
use crate::history::Event;
use crate::report::{Violation, ViolationKind};

pub fn check_liveness(facts: &Facts) -> Vec<Violation> {
    let bound_ms = facts.history.meta.converge_bound_ms;
    let mut violations = Vec::new();
    for (event_index, event) in facts.history.events.iter().enumerate() {
        let Event::Quiescence(quiescence) = event else {
            continue;
        };
        let description = if !quiescence.converged {
            format!("did not converge within {} ms", quiescence.waited_ms)
        } else {
            match bound_ms {
                Some(bound_ms) if quiescence.waited_ms > bound_ms => format!(
                    "converged only after {} ms, beyond the bound of {} ms",
                    quiescence.waited_ms, bound_ms
                ),
                _ => continue,
            }
        };
        violations.push(Violation::after_heal(
            ViolationKind::Liveness,
            None,
            event_index,
            description,
        ));
    }
    violations
}
