//! Expiry: no value is read after its deadline, beyond how far a node's wall
//! clock may lag the run's (`Meta::expiry_slack_ms`). A read invoked later than
//! that ran at a node whose clock was past the deadline, so it must not return
//! the value, from its own copy or from any replica's.
//!
//! A collection's deadline (`Function::Expire` of key `c`) binds its elements
//! (keys `c:element`): a value acknowledged before an applied expire was sent
//! was in the collection when the deadline was set, and a value is written
//! once, so if it is read at all after the deadline it stayed in the
//! collection all along, and the collection expired with it in. A read sent
//! after the expire was acknowledged (before, the two may be taken in either
//! order) and after the deadline must not return it, unless an expire that
//! may have come after gave a later deadline. Values the deadline may have taken are no loss
//! ([`may_have_expired_by`]).

use super::Facts;
use crate::history::{Function, OkResult};
use crate::model::{Key, Sibling};
use crate::operations::Operation;
use crate::report::{Violation, ViolationKind};
use std::collections::BTreeMap;

pub fn check_expiry(facts: &Facts) -> Vec<Violation> {
    let mut violations = check_value_deadlines(facts);
    violations.extend(check_collection_deadlines(facts));
    violations.extend(check_rewritten_deadlines(facts));
    violations
}

/// The expires and persists of a string key (`Function::Expire` and
/// `Function::Persist` of the key itself; a collection's expires are of the
/// collection's key, never of an element's). Each writes the value it finds
/// again under a dot of its own, with its deadline (a persist's: none).
pub(super) fn string_expires<'a>(facts: &'a Facts, key: &Key) -> Vec<&'a Operation> {
    let key_facts = facts.keys.get(key);
    key_facts
        .into_iter()
        .flat_map(|key_facts| facts.operations_of(key_facts))
        .filter(|op| matches!(op.f, Function::Expire | Function::Persist))
        .collect()
}

/// Whether a string `expire` may have written `write`'s value again, under a
/// dot of its own carrying its deadline, by run time `by_ms` (`None`: at any
/// time): it may have applied, was still out when the write was sent (it
/// writes again the value it reads, which may be one sent after it), and was
/// sent by then.
pub(super) fn may_rewrite(expire: &Operation, write: &Operation, by_ms: Option<u64>) -> bool {
    may_apply(expire)
        && expire.ok_at().is_none_or(|done| done > write.invoked)
        && by_ms.is_none_or(|by| expire.invoked.time_ms <= by)
}

/// Reads of a value an expire wrote again (under a dot other than the one its
/// write was acknowledged with) after every deadline such an expire could
/// have given it: the rewrite carries its expire's deadline, and nothing else
/// the workload sends writes a string's value again.
fn check_rewritten_deadlines(facts: &Facts) -> Vec<Violation> {
    let slack_ms = facts.history.meta.expiry_slack_ms.unwrap_or(0);
    let mut violations = Vec::new();
    for (key, key_facts) in &facts.keys {
        let expires = string_expires(facts, key);
        if expires.is_empty() {
            continue;
        }
        for read in facts.operations_of(key_facts) {
            let (Some((siblings, _)), Some(done)) = (read.read_result(), read.ok_at()) else {
                continue;
            };
            for sibling in siblings {
                let Some(write) = facts.operations_of(key_facts).find(|op| {
                    op.f == Function::Write && op.value.as_deref() == Some(&sibling.value)
                }) else {
                    continue;
                };
                if write.written_dot().is_none_or(|dot| dot == sibling.dot) {
                    continue;
                }
                let writers: Vec<&&Operation> = expires
                    .iter()
                    .filter(|expire| may_rewrite(expire, write, Some(done.time_ms)))
                    .collect();
                if writers.iter().any(|op| op.f == Function::Persist) {
                    continue; // A persist may have written it, to stay.
                }
                let Some(latest_ms) = writers.iter().filter_map(|op| op.expires_ms).max() else {
                    continue; // G5's to report: nothing wrote it again.
                };
                if read.invoked.time_ms <= latest_ms + slack_ms {
                    continue;
                }
                violations.push(Violation::during_run(
                    ViolationKind::Expiry,
                    Some(key.clone()),
                    done,
                    format!(
                        "{} returned {sibling} (the value of {}, written again by an expire), but every expire that may have written it set a deadline passed by then, the latest {latest_ms} ms: {} ms past it (clocks may lag {slack_ms} ms)",
                        read.describe(),
                        write.describe(),
                        read.invoked.time_ms - latest_ms
                    ),
                ));
            }
        }
    }
    violations
}

fn check_value_deadlines(facts: &Facts) -> Vec<Violation> {
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
            if rewritten(facts, &facts.operations[write], sibling, done.time_ms) {
                continue; // Its deadline is the expire's.
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

/// Whether `sibling`, read by `done_ms`, may be `write`'s value written again by
/// a string expire: not under the dot the write was acknowledged with (any
/// dot, for a write whose outcome is unknown), with such an expire sent.
fn rewritten(facts: &Facts, write: &Operation, sibling: &Sibling, done_ms: u64) -> bool {
    write.written_dot().is_none_or(|dot| dot != sibling.dot)
        && string_expires(facts, &write.key)
            .iter()
            .any(|expire| may_rewrite(expire, write, Some(done_ms)))
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
    may_have_expired_by(facts, write, state.read_at_ms)
}

/// Whether `write`'s value may have expired by run time `at_ms` (`None`: at
/// some time later): by its own deadline, or by its collection's, set by an
/// expire that may have applied, if the value was written before that
/// deadline (after it, a write finds the collection gone and starts afresh)
/// or while that expire was still out (it may have applied after the write,
/// and an expire whose deadline has passed deletes what it finds).
pub fn may_have_expired_by(facts: &Facts, write: &Operation, at_ms: Option<u64>) -> bool {
    let slack_ms = facts.history.meta.expiry_slack_ms.unwrap_or(0);
    let passed = |deadline_ms: u64| at_ms.is_none_or(|at| deadline_ms <= at + slack_ms);
    if write.expires_ms.is_some_and(passed) {
        return true;
    }
    let by_collection = collection_expires(facts, &write.key).any(|expire| {
        let deadline_ms = expire.expires_ms.expect("an expire has a deadline");
        let before_deadline = write.invoked.time_ms <= deadline_ms + slack_ms;
        let expire_out = expire.ok_at().is_none_or(|done| done > write.invoked);
        may_apply(expire) && passed(deadline_ms) && (before_deadline || expire_out)
    });
    // A string's expire takes the value it found (written again under its
    // deadline), which a write sent after it completed is not.
    // A persist (no deadline) expires nothing.
    by_collection
        || string_expires(facts, &write.key)
            .iter()
            .any(|expire| expire.expires_ms.is_some_and(passed) && may_rewrite(expire, write, None))
}

/// The expires of the collection `element` belongs to, if any.
fn collection_expires<'a>(facts: &'a Facts, element: &Key) -> impl Iterator<Item = &'a Operation> {
    let key_facts = element
        .collection()
        .and_then(|collection| facts.keys.get(&collection));
    key_facts
        .into_iter()
        .flat_map(|key_facts| facts.operations_of(key_facts))
        .filter(|op| op.f == Function::Expire)
}

/// An expire (or persist) that may have set (or removed) its deadline: not
/// failed, not found absent (or without a deadline).
fn may_apply(expire: &Operation) -> bool {
    !expire.is_fail()
        && !matches!(
            expire.ok_result(),
            Some(OkResult::Expire { applied: false } | OkResult::Persist { applied: false })
        )
}

/// Reads of an element after its collection's deadline (see the module doc).
fn check_collection_deadlines(facts: &Facts) -> Vec<Violation> {
    let slack_ms = facts.history.meta.expiry_slack_ms.unwrap_or(0);
    let mut violations = Vec::new();
    for read in &facts.operations {
        let (Some((siblings, _)), Some(done)) = (read.read_result(), read.ok_at()) else {
            continue;
        };
        let Some(key_facts) = facts.keys.get(&read.key) else {
            continue;
        };
        if collection_expires(facts, &read.key).next().is_none() {
            continue; // Not an element of a collection ever given a deadline.
        }
        for sibling in siblings {
            let Some(write) = facts
                .operations_of(key_facts)
                .find(|op| op.f == Function::Write && op.value.as_deref() == Some(&sibling.value))
            else {
                continue;
            };
            let Some(expire) = binding_expire(facts, read, write, slack_ms) else {
                continue;
            };
            let deadline_ms = expire.expires_ms.expect("an expire has a deadline");
            violations.push(Violation::during_run(
                ViolationKind::Expiry,
                Some(read.key.clone()),
                done,
                format!(
                    "{} returned {:?} of {}, but {} (acknowledged, applied) expired its collection at {deadline_ms} ms with it in: {} ms past that deadline (clocks may lag {slack_ms} ms)",
                    read.describe(),
                    sibling.value,
                    write.describe(),
                    expire.describe(),
                    read.invoked.time_ms - deadline_ms
                ),
            ));
        }
    }
    violations
}

/// An applied expire of `write`'s collection, sent after `write` was
/// acknowledged and acknowledged before `read` was sent, whose deadline passed
/// before `read` was sent, and which no expire that may have come after it
/// moved later.
fn binding_expire<'a>(
    facts: &'a Facts,
    read: &Operation,
    write: &Operation,
    slack_ms: u64,
) -> Option<&'a Operation> {
    let written = write.ok_at()?;
    let read_done = read.ok_at()?;
    let expires: Vec<&Operation> = collection_expires(facts, &read.key).collect();
    expires.iter().copied().find(|expire| {
        let applied = matches!(expire.ok_result(), Some(OkResult::Expire { applied: true }));
        let deadline_ms = expire.expires_ms.expect("an expire has a deadline");
        let moved_later = expires.iter().any(|other| {
            other.invoked != expire.invoked
                && may_apply(other)
                && other.invoked < read_done
                && other.ok_at().is_none_or(|at| at >= expire.invoked)
                && other.expires_ms.is_some_and(|at| at > deadline_ms)
        });
        applied
            && written < expire.invoked
            && expire.ok_at().is_some_and(|done| done < read.invoked)
            && read.invoked.time_ms > deadline_ms + slack_ms
            && !moved_later
    })
}
