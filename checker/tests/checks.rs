//! One hand-written history per guarantee: the valid ones pass, each broken one is
//! caught with the right kind and key.

mod common;

use common::{assert_first, kinds_and_keys, Recorder};
use shoal_checker::{
    check, Context, Dot, Event, Function, History, Key, Meta, OkResult, OpHeader, ViolationKind,
};

/// Concurrent writes kept as siblings, a delete, an unknown-outcome write that
/// superseded an acknowledged one, a failed write, faults, and agreeing replicas.
fn valid_history() -> Recorder {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .write(10, 2, "k1", "b", (2, 1), &[])
        .write(12, 3, "k2", "c", (1, 2), &[])
        .fault(15, "partition {1} | {2,3}")
        .read(
            20,
            1,
            "k1",
            &[("a", (1, 1)), ("b", (2, 1))],
            &[(1, 1), (2, 1)],
        )
        .write(20, 2, "k3", "d", (2, 2), &[])
        .invoke_write(25, 4, "k3", "e")
        .read(
            30,
            1,
            "k1",
            &[("b", (2, 1)), ("a", (1, 1))],
            &[(1, 1), (2, 1)],
        )
        .invoke_write(30, 5, "k4", "f")
        .complete("fail", 31, 5, "write", "k4")
        .delete(40, 3, "k2", &[(1, 2)])
        .read(50, 3, "k2", &[], &[(1, 2)])
        .fault(60, "heal all partitions")
        .complete("info", 1025, 4, "write", "k3")
        .quiescence(true, 1200)
        .final_everywhere("k1", &[("a", (1, 1)), ("b", (2, 1))], &[(1, 1), (2, 1)])
        .final_everywhere("k3", &[("e", (3, 1))], &[(2, 2), (3, 1)]);
    for replica in 1..=3 {
        history.final_tombstone("k2", replica, &[(1, 2)]);
    }
    history
}

#[test]
fn valid_history_with_siblings_delete_and_info_write_passes() {
    let report = valid_history().report();
    assert!(report.passed(), "expected a pass:\n{report}");
    assert!(report.first_timeline.is_none());
    assert!(report.to_string().starts_with("PASS"));
}

#[test]
fn write_superseded_by_a_later_covering_write_is_not_flagged() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .write(20, 2, "k1", "b", (1, 2), &[(1, 1)])
        .final_everywhere("k1", &[("b", (1, 2))], &[(1, 2)]);
    let report = history.report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn write_deleted_and_absent_everywhere_is_not_flagged() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 2, "k1", &[(1, 1)])
        .read(30, 1, "k1", &[], &[]);
    let report = history.report();
    assert!(
        report.passed(),
        "expected a pass (tombstone collected):\n{report}"
    );
}

#[test]
fn acknowledged_write_missing_is_g1() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .write(10, 2, "k1", "b", (2, 1), &[])
        .final_everywhere("k1", &[("b", (2, 1))], &[(2, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G1Durability, Some("k1"));
    assert!(description.contains("\"a\""), "{description}");
    assert!(description.contains("1, 2, 3"), "{description}");
    assert_eq!(kinds_and_keys(&report).len(), 1, "{report}");
}

#[test]
fn sibling_dropped_while_context_covers_it_is_g2() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .write(10, 2, "k1", "b", (2, 1), &[])
        .final_everywhere("k1", &[("b", (2, 1))], &[(1, 1), (2, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k1"));
    assert!(description.contains("dropped"), "{description}");
    assert_eq!(
        kinds_and_keys(&report),
        vec![(ViolationKind::G2NoSilentLoss, Some("k1".to_string()))]
    );
}

#[test]
fn replicas_that_disagree_are_g3() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .invoke_write(12, 2, "k1", "b")
        .complete("info", 512, 2, "write", "k1")
        .final_state("k1", 1, &[("a", (1, 1)), ("b", (2, 1))], &[(1, 1), (2, 1)])
        .final_state(
            "k1",
            2,
            &[("a", (1, 1)), ("b", (2, 1))],
            &[(1, 1), (2, 1), (3, 0)],
        )
        .final_state("k1", 3, &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G3Convergence, Some("k1"));
    assert!(description.contains("replica 3"), "{description}");
    assert_eq!(report.violations.len(), 1, "{report}");
}

#[test]
fn tombstone_against_values_is_g3() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 1, "k1", &[(1, 1)])
        .final_tombstone("k1", 1, &[(1, 1)])
        .final_state("k1", 2, &[], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G3Convergence, Some("k1"));
}

#[test]
fn acknowledged_key_held_by_no_replica_is_g3() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .write(11, 1, "k2", "b", (1, 2), &[])
        .final_everywhere("k2", &[("b", (1, 2))], &[(1, 2)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G3Convergence, Some("k1"));
    assert!(
        description.contains("no replica holds the key"),
        "{description}"
    );
}

#[test]
fn deleted_value_read_again_is_g4() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 2, "k1", &[(1, 1)])
        .read(30, 3, "k1", &[("a", (1, 1))], &[(1, 1)])
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G4NoResurrection, Some("k1"));
    assert!(description.contains("p3 read"), "{description}");
    assert_eq!(report.first_violation().and_then(|v| v.time_ms), Some(31));
    let kinds: Vec<ViolationKind> = report.violations.iter().map(|v| v.kind).collect();
    assert_eq!(kinds, vec![ViolationKind::G4NoResurrection; 4], "{report}");
}

#[test]
fn read_concurrent_with_a_delete_may_still_see_the_value() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .invoke(20, 2, "delete", "k1")
        .read(21, 3, "k1", &[("a", (1, 1))], &[(1, 1)]);
    history.line(serde_json::json!({
        "type": "ok", "process": 2, "f": "delete", "ns": 0, "key": "k1",
        "time_ms": 25, "node": 1, "context": {"1": 1}
    }));
    history.final_tombstone("k1", 1, &[(1, 1)]);
    let report = history.report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn value_no_client_wrote_is_g5() {
    let mut history = Recorder::new(true);
    history.write(10, 1, "k1", "a", (1, 1), &[]).read(
        20,
        2,
        "k1",
        &[("a", (1, 1)), ("zzz", (1, 9))],
        &[(1, 9)],
    );
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G5NoGarbage, Some("k1"));
    assert!(description.contains("\"zzz\""), "{description}");
}

#[test]
fn value_under_the_wrong_dot_is_g5() {
    let mut history = Recorder::new(false);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(20, 2, "k1", &[("a", (2, 7))], &[(1, 1), (2, 7)])
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G5NoGarbage, Some("k1"));
    assert!(description.contains("[1,1]"), "{description}");
    assert_eq!(report.violations.len(), 1, "{report}");
}

#[test]
fn value_of_a_failed_write_is_g5() {
    let mut history = Recorder::new(false);
    history
        .invoke_write(10, 1, "k1", "a")
        .complete("fail", 11, 1, "write", "k1")
        .read(20, 2, "k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G5NoGarbage, Some("k1"));
    assert!(description.contains("failed"), "{description}");
}

#[test]
fn value_of_another_key_is_g5() {
    let mut history = Recorder::new(false);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(20, 2, "k2", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G5NoGarbage, Some("k2"));
}

#[test]
fn read_missing_own_write_is_g6_read_your_writes() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(20, 1, "k1", &[], &[])
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert_eq!(report.violations.len(), 1, "{report}");
    let description = assert_first(&report, ViolationKind::G6Sessions, Some("k1"));
    assert!(description.contains("read-your-writes"), "{description}");
}

#[test]
fn sessions_are_checked_only_when_promised() {
    let mut history = Recorder::new(false);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(20, 1, "k1", &[], &[])
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert!(
        report.passed(),
        "expected a pass without sessions:\n{report}"
    );
}

#[test]
fn own_write_deleted_by_another_process_satisfies_read_your_writes() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 2, "k1", &[(1, 1)])
        .read(30, 1, "k1", &[], &[]);
    let report = history.report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn read_going_back_in_time_is_g6_monotonic_reads() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(20, 2, "k1", &[("a", (1, 1))], &[(1, 1)])
        .read(30, 2, "k1", &[], &[])
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert_eq!(report.violations.len(), 1, "{report}");
    let description = assert_first(&report, ViolationKind::G6Sessions, Some("k1"));
    assert!(description.contains("monotonic reads"), "{description}");
    assert_eq!(report.first_violation().and_then(|v| v.time_ms), Some(31));
}

#[test]
fn cluster_that_did_not_converge_is_liveness() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .quiescence(false, 5000)
        .final_everywhere("k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::Liveness, None);
    assert_eq!(description, "did not converge within 5000 ms");
}

#[test]
fn converging_beyond_the_bound_is_liveness() {
    let mut history = Recorder::new(true);
    history.quiescence(true, 7000);
    let report = history.report();
    assert_first(&report, ViolationKind::Liveness, None);
}

#[test]
fn violations_come_in_detection_order() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .read(50, 2, "k2", &[("ghost", (3, 3))], &[(3, 3)])
        .delete(20, 3, "k1", &[(1, 1)])
        .read(30, 4, "k1", &[("a", (1, 1))], &[(1, 1)])
        .quiescence(false, 5000);
    let report = history.report();
    let order: Vec<(ViolationKind, Option<u64>)> = report
        .violations
        .iter()
        .map(|violation| (violation.kind, violation.time_ms))
        .collect();
    assert_eq!(
        order,
        vec![
            (ViolationKind::G4NoResurrection, Some(31)),
            (ViolationKind::G5NoGarbage, Some(51)),
            (ViolationKind::Liveness, None),
        ]
    );
}

#[test]
fn history_built_in_code_with_an_orphan_completion_is_malformed() {
    let op = OpHeader {
        process: 7,
        f: Function::Write,
        key: Key::new(0, "k1"),
        time_ms: 10,
        node: 1,
    };
    let history = History {
        meta: Meta::default(),
        events: vec![Event::Ok {
            op,
            result: OkResult::Write {
                value: "a".to_string(),
                dot: Dot::new(1, 1),
                context: Context::new(),
            },
        }],
    };
    let report = check(&history);
    let description = assert_first(&report, ViolationKind::Malformed, Some("k1"));
    assert!(description.contains("no open invoke"), "{description}");
}

#[test]
fn report_shows_the_first_violation_with_its_timeline_and_replay() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .fault(12, "crash node 2")
        .write(14, 2, "k2", "other", (2, 1), &[])
        .write(15, 2, "k1", "b", (2, 2), &[])
        .final_everywhere("k1", &[("b", (2, 2))], &[(2, 2)])
        .final_everywhere("k2", &[("other", (2, 1))], &[(2, 1)]);
    let text = history.report().to_string();
    for expected in [
        "FAIL: 1 violation(s) (G1 durability: 1)",
        "run: seed 42, n=3 r=2 w=2, sessions promised, nodes [1, 2, 3]",
        "  write            3        0        0",
        "first violation: G1 durability on ns=0 key=\"k1\", after the heal",
        "timeline of ns=0 key=\"k1\" (8 events):",
        "       10 ms  p1    invoke write  \"a\" via node 1",
        "       12 ms  fault  crash node 2",
        "       16 ms  p2    ok     write  \"b\" dot [2,2] context {}",
        "  after heal  final  replica 3: [\"b\"@[2,2]] context {2:2}",
        "replay: ci/sim --seed 42",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("\"other\""),
        "other keys leak into the timeline:\n{text}"
    );
}

#[test]
fn long_timelines_are_cut_in_the_middle() {
    let mut history = Recorder::new(true);
    history.write(0, 1, "k1", "lost", (1, 1), &[]);
    for counter in 2..=300u64 {
        let value = format!("v{counter}");
        history.write(
            counter * 10,
            2,
            "k1",
            &value,
            (2, counter),
            &[(2, counter - 1)],
        );
    }
    history.final_everywhere("k1", &[("v300", (2, 300))], &[(2, 300)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G1Durability, Some("k1"));
    let text = report.to_string();
    assert!(text.contains("... 403 lines cut ..."), "{text}");
    assert!(text.contains("p1    invoke write  \"lost\""), "{text}");
    assert!(
        text.lines().count() < 240,
        "report too long: {} lines",
        text.lines().count()
    );
}
