//! Histories that record what the store did (`"effects": true`): unknown outcomes
//! are judged by their effects, and a read may lose a context only to a recorded
//! marker collection. Each legal case passes, and the same history without the
//! evidence is caught.

mod common;

use common::{assert_first, Recorder};
use shoal_checker::{History, ViolationKind};

/// p1's write "old" times out (`info`) but is applied late, after p2's acknowledged
/// write, and supersedes it (a plain write's context is the key's current one).
fn late_unknown_write(late_effect: bool) -> Recorder {
    let mut history = Recorder::with_effects();
    history
        .invoke_write(10, 1, "k1", "old")
        .invoke_write(20, 2, "k1", "a")
        .effect(20, "k1", Some("a"), (1, 1), &[])
        .ok_write(21, 2, "k1", "a", (1, 1), &[])
        .complete("info", 30, 1, "write", "k1");
    if late_effect {
        history.effect(40, "k1", Some("old"), (1, 2), &[(1, 1)]);
    }
    history
        .quiescence(true, 100)
        .final_state("k1", 1, &[("old", (1, 2))], &[(1, 2)]);
    history
}

#[test]
fn unknown_write_applied_late_may_supersede_an_acknowledged_one() {
    let report = late_unknown_write(true).report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn unknown_write_with_no_effect_explains_no_loss() {
    let report = late_unknown_write(false).report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k1"));
}

#[test]
fn unknown_write_invoked_later_explains_no_loss_without_its_effect() {
    // Without recorded effects an unknown write invoked after an acknowledged one
    // is taken to have superseded it; with them, only what it did counts.
    let mut history = Recorder::with_effects();
    history
        .invoke_write(10, 1, "k1", "a")
        .effect(10, "k1", Some("a"), (1, 1), &[])
        .ok_write(11, 1, "k1", "a", (1, 1), &[])
        .invoke_write(20, 2, "k1", "b")
        .complete("info", 30, 2, "write", "k1")
        .quiescence(true, 100)
        .final_state("k1", 1, &[], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k1"));
}

#[test]
fn effect_of_a_failed_write_explains_nothing() {
    let mut history = Recorder::with_effects();
    history
        .invoke_write(10, 1, "k1", "a")
        .effect(10, "k1", Some("a"), (1, 1), &[])
        .ok_write(11, 1, "k1", "a", (1, 1), &[])
        .invoke_write(20, 2, "k1", "b")
        .complete("fail", 21, 2, "write", "k1")
        .effect(22, "k1", Some("b"), (1, 2), &[(1, 1)])
        .quiescence(true, 100)
        .final_state("k1", 1, &[], &[(1, 2)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k1"));
}

#[test]
fn unknown_delete_applied_late_then_collected_may_empty_the_key() {
    let mut history = Recorder::with_effects();
    history
        .invoke(5, 1, "delete", "k1")
        .invoke_write(10, 2, "k1", "a")
        .effect(10, "k1", Some("a"), (1, 1), &[])
        .ok_write(11, 2, "k1", "a", (1, 1), &[])
        .complete("info", 15, 1, "delete", "k1")
        .effect(30, "k1", None, (1, 2), &[(1, 1)])
        .collected(50, "k1", &[(1, 2)])
        .quiescence(true, 100)
        .final_state("k1", 1, &[], &[]);
    let report = history.report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

/// p2 reads "a", then the key is deleted; a later read of p2 finds it absent with
/// an empty context, which is legal only once the markers were collected.
fn read_after_delete(collected: bool) -> Recorder {
    let mut history = Recorder::with_effects();
    history
        .invoke_write(10, 1, "k1", "a")
        .effect(10, "k1", Some("a"), (1, 1), &[])
        .ok_write(11, 1, "k1", "a", (1, 1), &[])
        .read(20, 2, "k1", &[("a", (1, 1))], &[(1, 1)])
        .invoke(30, 3, "delete", "k1")
        .effect(30, "k1", None, (1, 2), &[(1, 1)]);
    history.line(serde_json::json!({
        "type": "ok", "process": 3, "f": "delete", "ns": 0, "key": "k1",
        "time_ms": 31, "node": 1, "context": {"1": 2}
    }));
    if collected {
        history.collected(40, "k1", &[(1, 2)]);
    }
    history.read(50, 2, "k1", &[], &[]).quiescence(true, 100);
    history
}

#[test]
fn read_after_a_recorded_collection_may_lose_the_context() {
    let report = read_after_delete(true).report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn read_losing_the_context_without_a_collection_is_g6() {
    // Without recorded effects the acknowledged delete would excuse it.
    let report = read_after_delete(false).report();
    let description = assert_first(&report, ViolationKind::G6Sessions, Some("k1"));
    assert!(description.contains("monotonic reads"), "{description}");
}

#[test]
fn effects_and_collections_round_trip_through_json_lines() {
    let history = read_after_delete(true).history();
    assert!(history.meta.effects);
    let again = History::parse(&history.to_jsonl()).expect("the history parses back");
    assert_eq!(again, history);
}
