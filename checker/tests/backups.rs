//! Backups judged as the store's state at one moment between their start and
//! the taking of their view: legal cuts pass, each broken one is caught.

mod common;

use common::{assert_first, kinds_and_keys, Recorder};
use shoal_checker::ViolationKind;

/// `a` acknowledged before the backup, `b` written while it was taken, `c`
/// after: each of the three cuts the backup may show.
fn around_a_backup() -> Recorder {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .invoke_write(50, 2, "k1", "b")
        .ok_write(70, 2, "k1", "b", (1, 2), &[(1, 1)])
        .write(100, 3, "k1", "c", (1, 3), &[(1, 2)])
        .final_everywhere("k1", &[("c", (1, 3))], &[(1, 3)]);
    history
}

#[test]
fn every_cut_between_start_and_view_passes() {
    for (siblings, context) in [
        (vec![("a", (1, 1))], vec![(1, 1)]),
        (vec![("b", (1, 2))], vec![(1, 2)]),
    ] {
        let mut history = around_a_backup();
        history.backup(40, 60, "k1", &siblings, &context);
        let report = history.report();
        assert!(report.passed(), "expected a pass:\n{report}");
    }
}

#[test]
fn backup_lacking_a_write_acknowledged_before_it_is_g1() {
    let mut history = around_a_backup();
    history.backup(40, 60, "k1", &[], &[]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G1Durability, Some("k1"));
    assert!(
        description.contains("backup taken 40..60 ms"),
        "{description}"
    );
    assert!(description.contains("\"a\""), "{description}");
}

#[test]
fn backup_covering_but_not_holding_a_write_is_g2() {
    let mut history = around_a_backup();
    history.backup(40, 60, "k1", &[], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G2NoSilentLoss, Some("k1"));
}

#[test]
fn backup_holding_a_write_invoked_after_its_view_is_g5() {
    let mut history = around_a_backup();
    history.backup(40, 60, "k1", &[("c", (1, 3))], &[(1, 3)]);
    let report = history.report();
    let description = assert_first(&report, ViolationKind::G5NoGarbage, Some("k1"));
    assert!(
        description.contains("before any client wrote it"),
        "{description}"
    );
}

#[test]
fn backup_holding_what_a_delete_removed_before_it_began_is_g4() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 1, "k1", &[(1, 1)])
        .backup(40, 60, "k1", &[("a", (1, 1))], &[(1, 1)]);
    let report = history.report();
    assert_first(&report, ViolationKind::G4NoResurrection, Some("k1"));
    assert_eq!(kinds_and_keys(&report).len(), 1, "{report}");
}

#[test]
fn a_deleted_key_the_backup_lacks_passes() {
    let mut history = Recorder::new(true);
    history
        .write(10, 1, "k1", "a", (1, 1), &[])
        .delete(20, 1, "k1", &[(1, 1)])
        .backup(40, 60, "k1", &[], &[(1, 1)]);
    let report = history.report();
    assert!(report.passed(), "expected a pass:\n{report}");
}

#[test]
fn a_backup_line_round_trips_through_the_jsonl() {
    let mut history = around_a_backup();
    history.backup(40, 60, "k1", &[("a", (1, 1))], &[(1, 1)]);
    let parsed = history.history();
    let again = shoal_checker::History::parse(&parsed.to_jsonl()).expect("parses");
    assert_eq!(parsed, again);
}
