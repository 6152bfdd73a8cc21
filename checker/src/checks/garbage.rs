//! G5 no garbage: every value read or held was written to that key by some client,
//! under the dot its write was acknowledged with.

use super::expiry::{may_rewrite, string_expires};
use super::{Facts, KeyFacts};
use crate::model::{Key, Sibling};
use crate::operations::Operation;
use crate::report::{Violation, ViolationKind};
use std::collections::BTreeMap;

/// A key's write operations (any outcome) by the value they tried to write.
pub(super) type WritesByValue<'a> = BTreeMap<&'a str, Vec<&'a Operation>>;

pub fn check_garbage(facts: &Facts) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        let writes = writes_by_value(facts, key_facts);
        let expires = string_expires(facts, key);
        for read in facts.operations_of(key_facts) {
            violations.extend(garbage_read(key, (&writes, &expires), read));
        }
        for (event_index, state) in facts.finals_of(key_facts) {
            let problem = state
                .siblings
                .iter()
                .find_map(|sibling| garbage_problem((&writes, &expires), sibling, None));
            if let Some(problem) = problem {
                violations.push(Violation::after_heal(
                    ViolationKind::G5NoGarbage,
                    Some(key.clone()),
                    event_index,
                    format!("replica {} holds {problem}", state.replica),
                ));
            }
        }
    }
    violations
}

/// A key's write operations (any outcome) by the value they tried to write.
pub(super) fn writes_by_value<'a>(facts: &'a Facts, key_facts: &'a KeyFacts) -> WritesByValue<'a> {
    let mut writes: WritesByValue = BTreeMap::new();
    for operation in facts.operations_of(key_facts) {
        if let Some(value) = &operation.value {
            writes.entry(value.as_str()).or_default().push(operation);
        }
    }
    writes
}

fn garbage_read(
    key: &Key,
    writes: (&WritesByValue, &[&Operation]),
    read: &Operation,
) -> Option<Violation> {
    let (siblings, _) = read.read_result()?;
    let at = read.ok_at()?;
    let problem = siblings
        .iter()
        .find_map(|sibling| garbage_problem(writes, sibling, Some(at.time_ms)))?;
    Some(Violation::during_run(
        ViolationKind::G5NoGarbage,
        Some(key.clone()),
        at,
        format!("read {} returned {problem}", read.describe()),
    ))
}

/// Why `sibling` is garbage, or None when some write explains it (or a string
/// expire of the key, `expires`, that wrote a write's value again under a dot
/// of its own). A read that completed at `read_done_ms` can only return
/// writes invoked by then.
pub(super) fn garbage_problem(
    (writes, expires): (&WritesByValue, &[&Operation]),
    sibling: &Sibling,
    read_done_ms: Option<u64>,
) -> Option<String> {
    let Some(candidates) = writes.get(sibling.value.as_str()) else {
        return Some(format!("{sibling}, a value no client wrote to this key"));
    };
    let invoked_in_time: Vec<&Operation> = candidates
        .iter()
        .copied()
        .filter(|write| !matches!(read_done_ms, Some(done_ms) if write.invoked.time_ms > done_ms))
        .collect();
    if invoked_in_time.is_empty() {
        return Some(format!(
            "{sibling} before any client wrote it (first {})",
            candidates[0].describe()
        ));
    }
    let happened: Vec<&Operation> = invoked_in_time
        .into_iter()
        .filter(|write| !write.is_fail())
        .collect();
    if happened.is_empty() {
        return Some(format!(
            "{sibling}, written only by a failed {} (fail means it did not happen)",
            candidates[0].describe()
        ));
    }
    let explained = happened.iter().any(|write| {
        !matches!(write.written_dot(), Some(dot) if dot != sibling.dot)
            || expires
                .iter()
                .any(|expire| may_rewrite(expire, write, read_done_ms))
    });
    if explained {
        return None;
    }
    let acknowledged: Vec<String> = happened
        .iter()
        .filter_map(|write| write.written_dot())
        .map(|dot| dot.to_string())
        .collect();
    Some(format!(
        "{sibling}, but that value was acknowledged with dot {}",
        acknowledged.join(" or ")
    ))
}
