//! Counters and queues: a legal history of each passes, and each class of bug
//! the checks name is caught: a lost or doubled increment, a lost, invented,
//! doubled or reordered element.

mod common;

use common::{assert_first, Recorder};
use serde_json::{json, Value};
use shoal_checker::ViolationKind;

/// One node: sessions promised.
fn one_node() -> Recorder {
    let mut history = Recorder::new(true);
    history.drop_first_line();
    history.line(json!({
        "type": "meta", "seed": 7, "n": 1, "r": 1, "w": 1, "sessions": true,
        "nodes": [1], "converge_bound_ms": 5000, "pops_exclusive": true
    }));
    history
}

fn op(phase: &str, time_ms: u64, process: u64, f: &str, key: &str) -> Value {
    json!({"type": phase, "process": process, "f": f, "ns": 0, "key": key,
           "time_ms": time_ms, "node": 1})
}

fn with(mut line: Value, field: &str, value: Value) -> Value {
    line.as_object_mut()
        .expect("an op is an object")
        .insert(field.into(), value);
    line
}

/// `add` of `delta` by `process`, invoked at `t` and answered `total` at `t + 1`
/// (None: unknown outcome).
fn add(history: &mut Recorder, t: u64, process: u64, delta: i64, total: Option<i64>) {
    history.line(with(
        op("invoke", t, process, "add", "c"),
        "value",
        json!(delta.to_string()),
    ));
    match total {
        Some(total) => history.line(with(
            op("ok", t + 1, process, "add", "c"),
            "total",
            json!(total),
        )),
        None => history.line(op("info", t + 1, process, "add", "c")),
    };
}

fn count(history: &mut Recorder, t: u64, process: u64, total: Option<i64>) {
    history.line(op("invoke", t, process, "count", "c"));
    let ok = op("ok", t + 1, process, "count", "c");
    history.line(match total {
        Some(total) => with(ok, "total", json!(total)),
        None => ok,
    });
}

fn push(history: &mut Recorder, t: u64, process: u64, value: &str, acknowledged: bool) {
    history.line(with(
        op("invoke", t, process, "push", "q"),
        "value",
        json!(value),
    ));
    history.line(op(
        if acknowledged { "ok" } else { "info" },
        t + 1,
        process,
        "push",
        "q",
    ));
}

/// A pop answered `taken` (Some(None): empty), or of unknown outcome (None).
fn pop(history: &mut Recorder, t: u64, process: u64, taken: Option<Option<&str>>) {
    history.line(op("invoke", t, process, "pop", "q"));
    history.line(match taken {
        Some(Some(value)) => with(op("ok", t + 1, process, "pop", "q"), "value", json!(value)),
        Some(None) => op("ok", t + 1, process, "pop", "q"),
        None => op("info", t + 1, process, "pop", "q"),
    });
}

#[test]
fn counter_totals_within_the_bounds_pass() {
    let mut history = one_node();
    count(&mut history, 1, 1, None);
    add(&mut history, 10, 1, 5, Some(5));
    add(&mut history, 20, 2, 7, None); // may or may not have happened
    count(&mut history, 30, 1, Some(5));
    count(&mut history, 40, 3, Some(12));
    add(&mut history, 50, 1, 1, Some(13));
    let report = history.report();
    assert!(report.passed(), "{report}");
    let text = history.text();
    assert!(
        text.contains(r#""total":13"#),
        "totals travel as JSON: {text}"
    );
}

#[test]
fn a_lost_increment_is_caught() {
    let mut history = one_node();
    add(&mut history, 10, 1, 5, Some(5));
    add(&mut history, 20, 2, 7, Some(12));
    count(&mut history, 30, 1, Some(5)); // the 7 is gone
    let description = assert_first(&history.report(), ViolationKind::Counter, Some("c"));
    assert!(description.contains("below the 12"), "{description}");
}

#[test]
fn an_increment_counted_twice_is_caught() {
    let mut history = one_node();
    add(&mut history, 10, 1, 5, Some(5));
    add(&mut history, 20, 2, 7, Some(19)); // 5 + 7 + 7
    let description = assert_first(&history.report(), ViolationKind::Counter, Some("c"));
    assert!(description.contains("above the 12"), "{description}");
}

#[test]
fn a_drained_queue_that_kept_every_push_passes() {
    let mut history = one_node();
    push(&mut history, 10, 1, "a", true);
    push(&mut history, 20, 1, "b", true);
    push(&mut history, 25, 3, "x", false);
    pop(&mut history, 30, 2, Some(Some("a")));
    pop(&mut history, 40, 2, None); // took b, unseen
    pop(&mut history, 50, 2, Some(Some("x")));
    pop(&mut history, 60, 2, Some(None));
    let report = history.report();
    assert!(report.passed(), "{report}");
}

#[test]
fn a_lost_push_is_caught_once_the_queue_is_drained() {
    let mut history = one_node();
    push(&mut history, 10, 1, "a", true);
    push(&mut history, 20, 1, "b", true);
    pop(&mut history, 30, 2, Some(Some("a")));
    let report = history.report();
    assert!(
        report.passed(),
        "not drained, b may still be there: {report}"
    );
    pop(&mut history, 40, 2, Some(None));
    let description = assert_first(&history.report(), ViolationKind::Queue, Some("q"));
    assert!(description.contains(r#""b""#), "{description}");
}

#[test]
fn an_invented_a_doubled_and_a_reordered_element_are_caught() {
    let mut history = one_node();
    push(&mut history, 10, 1, "a", true);
    pop(&mut history, 20, 2, Some(Some("z")));
    let description = assert_first(&history.report(), ViolationKind::Queue, Some("q"));
    assert!(description.contains("nobody pushed"), "{description}");

    let mut history = one_node();
    push(&mut history, 10, 1, "a", true);
    pop(&mut history, 20, 2, Some(Some("a")));
    pop(&mut history, 30, 3, Some(Some("a")));
    let description = assert_first(&history.report(), ViolationKind::Queue, Some("q"));
    assert!(description.contains("took already"), "{description}");

    let mut history = one_node();
    push(&mut history, 10, 1, "a", true);
    push(&mut history, 20, 1, "b", true);
    pop(&mut history, 30, 2, Some(Some("b")));
    pop(&mut history, 40, 2, Some(Some("a")));
    let description = assert_first(&history.report(), ViolationKind::Queue, Some("q"));
    assert!(
        description.contains("pushed and acknowledged first"),
        "{description}"
    );
}

/// A cluster without strict quorums: no sessions promised.
fn split_cluster() -> Recorder {
    let mut history = Recorder::new(true);
    history.drop_first_line();
    history.line(json!({
        "type": "meta", "seed": 7, "n": 3, "r": 1, "w": 1, "sessions": false,
        "nodes": [1, 2, 3], "converge_bound_ms": 5000
    }));
    history
}

#[test]
fn a_split_cluster_may_count_behind_until_it_converges_never_ahead() {
    let mut history = split_cluster();
    add(&mut history, 10, 1, 5, Some(5)); // one side
    add(&mut history, 20, 2, 7, Some(7)); // the other, which had not seen the 5
    count(&mut history, 30, 2, Some(7));
    let report = history.report();
    assert!(report.passed(), "behind during the run: {report}");

    history.quiescence(true, 100);
    count(&mut history, 200, 3, Some(7)); // after converging, the 5 is gone
    let description = assert_first(&history.report(), ViolationKind::Counter, Some("c"));
    assert!(description.contains("below the 12"), "{description}");

    let mut history = split_cluster();
    add(&mut history, 10, 1, 5, Some(5));
    add(&mut history, 20, 2, 7, Some(17)); // ahead: the 5 counted twice
    let description = assert_first(&history.report(), ViolationKind::Counter, Some("c"));
    assert!(description.contains("above the 12"), "{description}");
}
