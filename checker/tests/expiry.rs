//! Expiry: a value read past its deadline plus the clock slack is caught; one
//! read within the slack is not; and an expiring value gone from the final
//! state is no loss, while a value that never expires still is.

mod common;

use common::{assert_first, Recorder};
use serde_json::json;
use shoal_checker::ViolationKind;

/// One node, effects recorded, clocks that may lag 100 ms; "a" written at
/// 10 ms to expire at 1,010 ms.
fn expiring_write() -> Recorder {
    let mut history = Recorder::new(true);
    history.line(json!({
        "type": "meta", "seed": 7, "n": 1, "r": 1, "w": 1, "sessions": true,
        "nodes": [1], "converge_bound_ms": 5000, "expiry_slack_ms": 100
    }));
    history.line(json!({
        "type": "invoke", "process": 1, "f": "write", "ns": 0, "key": "k", "time_ms": 10,
        "node": 1, "value": "a", "expires_ms": 1010
    }));
    history.ok_write(11, 1, "k", "a", (1, 1), &[]);
    history
}

fn without_first_meta(history: &mut Recorder) -> &mut Recorder {
    // Recorder::new wrote a meta line first; the one above replaces it.
    history.drop_first_line();
    history
}

#[test]
fn a_read_within_the_slack_passes_and_one_after_it_is_caught() {
    let mut history = expiring_write();
    without_first_meta(&mut history)
        .read(1100, 2, "k", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("k", 1, &[], &[(1, 1)]);
    let report = history.report();
    assert!(
        report.passed(),
        "within the slack, and gone at the end:\n{report}"
    );

    let mut history = expiring_write();
    without_first_meta(&mut history)
        .read(1111, 2, "k", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("k", 1, &[], &[(1, 1)]);
    let report = history.report();
    let text = assert_first(&report, ViolationKind::Expiry, Some("k"));
    assert!(text.contains("101 ms past its deadline"), "{text}");
}

#[test]
fn a_value_that_never_expires_is_still_lost_when_gone() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k", "a", (1, 1), &[])
        .quiescence(true, 100)
        .final_everywhere("k", &[], &[(1, 1)]);
    let report = history.report();
    assert!(!report.passed(), "a lost value must fail:\n{report}");
}

#[test]
fn an_expiring_value_gone_from_a_state_read_before_its_deadline_is_lost() {
    let mut history = expiring_write();
    without_first_meta(&mut history)
        .quiescence(true, 100)
        .line(json!({
            "type": "final", "ns": 0, "key": "k", "replica": 1, "siblings": [],
            "context": {"1": 1}, "tombstone": false, "read_at_ms": 500
        }));
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k"));
    // Read after the deadline (and the slack), the same state is no loss.
    let mut history = expiring_write();
    without_first_meta(&mut history)
        .quiescence(true, 100)
        .line(json!({
            "type": "final", "ns": 0, "key": "k", "replica": 1, "siblings": [],
            "context": {"1": 1}, "tombstone": false, "read_at_ms": 1200
        }));
    let report = history.report();
    assert!(report.passed(), "{report}");
}

/// One node, clocks that may lag 100 ms: field "h:f" written as "a" at 10 ms,
/// then collection "h" expired at 1,000 ms by an expire sent at 20 ms
/// (`applied`: what its ok said).
fn expiring_collection(applied: bool) -> Recorder {
    let mut history = Recorder::new(true);
    history.drop_first_line().line(json!({
        "type": "meta", "seed": 7, "n": 1, "r": 1, "w": 1, "sessions": true,
        "nodes": [1], "converge_bound_ms": 5000, "expiry_slack_ms": 100
    }));
    history.write(10, 1, "h:f", "a", (1, 1), &[]);
    history.line(json!({
        "type": "invoke", "process": 2, "f": "expire", "ns": 0, "key": "h", "time_ms": 20,
        "node": 1, "expires_ms": 1000
    }));
    history.line(json!({
        "type": "ok", "process": 2, "f": "expire", "ns": 0, "key": "h", "time_ms": 21,
        "node": 1, "applied": applied
    }));
    history
}

#[test]
fn an_element_read_after_its_collections_deadline_is_caught() {
    let mut history = expiring_collection(true);
    history
        .read(1101, 3, "h:f", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 1)]);
    let report = history.report();
    let text = assert_first(&report, ViolationKind::Expiry, Some("h:f"));
    assert!(text.contains("expired its collection at 1000 ms"), "{text}");
    // Within the slack, it may still be read; gone at the end, it is no loss.
    let mut history = expiring_collection(true);
    history
        .read(1090, 3, "h:f", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 1)]);
    let report = history.report();
    assert!(report.passed(), "{report}");
}

#[test]
fn a_read_sent_before_the_expire_was_acknowledged_is_not_judged_by_it() {
    // Expire sent at 20 ms to take effect at 30 ms, acknowledged at 60 ms;
    // the read at 40-41 ms may have run before it took effect.
    let mut history = Recorder::new(true);
    history.drop_first_line().line(json!({
        "type": "meta", "seed": 7, "n": 1, "r": 1, "w": 1, "sessions": true,
        "nodes": [1], "converge_bound_ms": 5000, "expiry_slack_ms": 0
    }));
    history.write(10, 1, "h:f", "a", (1, 1), &[]);
    history.line(json!({
        "type": "invoke", "process": 2, "f": "expire", "ns": 0, "key": "h", "time_ms": 20,
        "node": 1, "expires_ms": 30
    }));
    history.read(40, 3, "h:f", &[("a", (1, 1))], &[(1, 1)]);
    history.line(json!({
        "type": "ok", "process": 2, "f": "expire", "ns": 0, "key": "h", "time_ms": 60,
        "node": 1, "applied": true
    }));
    history.read(70, 3, "h:f", &[("a", (1, 1))], &[(1, 1)]);
    history
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 1)]);
    let report = history.report();
    let text = assert_first(&report, ViolationKind::Expiry, Some("h:f"));
    assert!(
        text.contains("read invoked at 70 ms"),
        "only the later read: {text}"
    );
    assert_eq!(report.violations.len(), 1, "{report}");
}

#[test]
fn an_expire_of_an_absent_collection_or_moved_later_binds_nothing() {
    // Found absent: the element must stay.
    let mut history = expiring_collection(false);
    history
        .read(1500, 3, "h:f", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("h:f"));
    // A later expire with a later deadline: still readable after the first.
    let mut history = expiring_collection(true);
    history.line(json!({
        "type": "invoke", "process": 4, "f": "expire", "ns": 0, "key": "h", "time_ms": 30,
        "node": 1, "expires_ms": 9000
    }));
    history.complete("info", 31, 4, "expire", "h");
    history
        .read(1500, 3, "h:f", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert!(report.passed(), "{report}");
}

#[test]
fn a_value_written_after_its_collections_deadline_is_still_lost_when_gone() {
    let mut history = expiring_collection(true);
    history
        .write(1200, 3, "h:f", "b", (1, 2), &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 2)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("h:f"));
}

/// An expire whose deadline has passed deletes what the collection holds when
/// it applies: a write sent before that expire was acknowledged may have been
/// applied first, and then deleted by it (fresh single-node seed
/// 20794090044: PEXPIREAT h0 16666 sent at 16663 and acknowledged at 16679,
/// a field written at 16667, deleted at 16670).
#[test]
fn a_value_written_while_an_expire_of_a_past_deadline_was_out_may_be_gone() {
    let sent = |history: &mut Recorder| {
        history.line(json!({
            "type": "invoke", "process": 4, "f": "expire", "ns": 0, "key": "h",
            "time_ms": 1190, "node": 1, "expires_ms": 1050
        }));
    };
    let acknowledged = |history: &mut Recorder, time_ms: u64| {
        history.line(json!({
            "type": "ok", "process": 4, "f": "expire", "ns": 0, "key": "h",
            "time_ms": time_ms, "node": 1, "applied": true
        }));
    };
    // The expire is acknowledged after the write was sent: no loss.
    let mut history = expiring_collection(true);
    sent(&mut history);
    history.write(1200, 3, "h:f", "b", (1, 2), &[(1, 1)]);
    acknowledged(&mut history, 1205);
    history
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 2)]);
    let report = history.report();
    assert!(report.passed(), "{report}");

    // Acknowledged before the write was sent: the write is lost.
    let mut history = expiring_collection(true);
    sent(&mut history);
    acknowledged(&mut history, 1195);
    history
        .write(1200, 3, "h:f", "b", (1, 2), &[(1, 1)])
        .quiescence(true, 100)
        .final_state("h:f", 1, &[], &[(1, 2)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("h:f"));
}

/// One node, no clock slack: "a" written at 10 ms under dot (1,1); an expire of
/// string "k" sent at 20 ms with a deadline at `deadline_ms`, acknowledged at
/// 25 ms, which wrote "a" again under dot (1,2) carrying that deadline.
fn expired_string(deadline_ms: u64) -> Recorder {
    let mut history = Recorder::new(true);
    history.drop_first_line();
    history.line(json!({
        "type": "meta", "seed": 7, "n": 1, "r": 1, "w": 1, "sessions": true,
        "nodes": [1], "converge_bound_ms": 5000, "expiry_slack_ms": 0
    }));
    history.write(10, 1, "k", "a", (1, 1), &[]);
    history.line(json!({
        "type": "invoke", "process": 2, "f": "expire", "ns": 0, "key": "k", "time_ms": 20,
        "node": 1, "expires_ms": deadline_ms
    }));
    history.line(json!({
        "type": "ok", "process": 2, "f": "expire", "ns": 0, "key": "k", "time_ms": 25,
        "node": 1, "applied": true
    }));
    history
}

/// A string's expire writes its value again under a dot of its own: that is
/// no garbage, and such a value read past the deadline of every expire that
/// may have written it is caught.
#[test]
fn a_string_value_written_again_by_an_expire_is_explained_and_held_to_its_deadline() {
    let mut history = expired_string(1000);
    history
        .read(900, 3, "k", &[("a", (1, 2))], &[(1, 2)])
        .quiescence(true, 100)
        .final_state("k", 1, &[], &[(1, 2)]);
    let report = history.report();
    assert!(
        report.passed(),
        "rewritten, read before its deadline, gone at the end:\n{report}"
    );

    let mut history = expired_string(1000);
    history
        .read(1001, 3, "k", &[("a", (1, 2))], &[(1, 2)])
        .quiescence(true, 100)
        .final_state("k", 1, &[], &[(1, 2)]);
    let report = history.report();
    let text = assert_first(&report, ViolationKind::Expiry, Some("k"));
    assert!(text.contains("the latest 1000 ms: 1 ms past it"), "{text}");
}

/// Without an expire that may have written it, the same value under another
/// dot is garbage; an expire acknowledged before the write was sent cannot
/// have written it again either.
#[test]
fn a_value_under_another_dot_without_an_expire_out_is_garbage() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k", "a", (1, 1), &[])
        .read(900, 3, "k", &[("a", (1, 2))], &[(1, 2)])
        .quiescence(true, 100)
        .final_state("k", 1, &[("a", (1, 1))], &[(1, 1)]);
    assert_first(&history.report(), ViolationKind::G5NoGarbage, Some("k"));

    let mut history = Recorder::new(true);
    history.line(json!({
        "type": "invoke", "process": 2, "f": "expire", "ns": 0, "key": "k", "time_ms": 1,
        "node": 1, "expires_ms": 5000
    }));
    history.line(json!({
        "type": "ok", "process": 2, "f": "expire", "ns": 0, "key": "k", "time_ms": 2,
        "node": 1, "applied": true
    }));
    history
        .write(10, 1, "k", "a", (1, 1), &[])
        .read(900, 3, "k", &[("a", (1, 2))], &[(1, 2)])
        .quiescence(true, 100)
        .final_state("k", 1, &[("a", (1, 1))], &[(1, 1)]);
    assert_first(&history.report(), ViolationKind::G5NoGarbage, Some("k"));
}

/// A persist writes the value again without a deadline: a value it may have
/// written is read past every expire's deadline without a violation.
#[test]
fn a_string_value_a_persist_may_have_written_again_has_no_deadline() {
    let mut history = expired_string(1000);
    history.line(json!({
        "type": "invoke", "process": 4, "f": "persist", "ns": 0, "key": "k", "time_ms": 30,
        "node": 1
    }));
    history.line(json!({
        "type": "ok", "process": 4, "f": "persist", "ns": 0, "key": "k", "time_ms": 35,
        "node": 1, "applied": true
    }));
    history
        .read(2000, 3, "k", &[("a", (1, 3))], &[(1, 3)])
        .quiescence(true, 100)
        .final_state("k", 1, &[("a", (1, 3))], &[(1, 3)]);
    let report = history.report();
    assert!(report.passed(), "persisted, kept:\n{report}");
}
