//! A primary's round of delete-marker collection, driven directly: when it
//! may run, what has settled and goes, the conjunction of every member's
//! verdicts, and nothing agreed when a member fails to answer or the ring
//! changed. No sockets, no madsim.

use bytes::Bytes;
use shoal_engine::cluster::marker_round::{start, RoundFacts, RoundStart, Verdicts};
use shoal_engine::cluster::tombstones::{settle_with_skew_ms, Agreed, MarkerItem};

const TIMEOUT_MS: u64 = 1_000;
const AGE_MAX_MS: u64 = 2_000;

fn facts(now_ms: u64) -> RoundFacts {
    RoundFacts {
        me: 1,
        members: vec![1, 2, 3],
        ring_version: 7,
        in_transition: false,
        ready: true,
        down: Vec::new(),
        skew_max_ms: Some(50),
        request_timeout_ms: TIMEOUT_MS,
        replica_write_age_max_ms: AGE_MAX_MS,
        now_ms,
    }
}

fn item(key: &str) -> MarkerItem {
    MarkerItem {
        namespace: 0,
        key: Bytes::from(key.to_string()),
        set_hash: 9,
    }
}

fn run(agreed: &mut Agreed, facts: &RoundFacts) -> Option<Vec<MarkerItem>> {
    match start(agreed, facts, false) {
        RoundStart::Skip => None,
        RoundStart::Run { due } => Some(due),
    }
}

#[test]
fn a_round_runs_only_on_a_settled_ring_with_every_member_up_and_measured() {
    let mut agreed = Agreed::default();
    assert_eq!(run(&mut agreed, &facts(0)), Some(Vec::new()));
    for unfit in [
        RoundFacts {
            in_transition: true,
            ..facts(0)
        },
        RoundFacts {
            ready: false,
            ..facts(0)
        },
        RoundFacts {
            down: vec![3],
            ..facts(0)
        },
        RoundFacts {
            skew_max_ms: None,
            ..facts(0)
        },
    ] {
        assert_eq!(run(&mut agreed, &unfit), None, "{unfit:?}");
    }
    // This node itself counted down does not stop it.
    assert!(run(
        &mut agreed,
        &RoundFacts {
            down: vec![1],
            ..facts(0)
        }
    )
    .is_some());
    // The planted bug runs whatever is down or unmeasured.
    let bugged = RoundFacts {
        down: vec![3],
        skew_max_ms: None,
        ..facts(0)
    };
    assert!(matches!(
        start(&mut agreed, &bugged, true),
        RoundStart::Run { .. }
    ));
}

#[test]
fn agreed_markers_go_once_the_skew_widened_settle_delay_passed() {
    let mut agreed = Agreed::default();
    agreed.keep_ring(7);
    agreed.insert(item("a"), 100);
    let settle_ms = settle_with_skew_ms(TIMEOUT_MS, AGE_MAX_MS, 50);
    assert_eq!(settle_ms, TIMEOUT_MS + AGE_MAX_MS + 500 + 100);
    assert_eq!(
        run(&mut agreed, &facts(100 + settle_ms - 1)),
        Some(Vec::new())
    );
    assert_eq!(
        run(&mut agreed, &facts(100 + settle_ms)),
        Some(vec![item("a")])
    );
    // A ring change drops agreements, even in a round that does not run.
    agreed.insert(item("b"), 100);
    let next_ring = RoundFacts {
        ring_version: 8,
        in_transition: true,
        ..facts(0)
    };
    assert_eq!(run(&mut agreed, &next_ring), None);
    assert!(agreed.is_empty());
}

#[test]
fn a_marker_is_agreed_only_when_every_member_says_yes() {
    let f = facts(500);
    let mut agreed = Agreed::default();
    run(&mut agreed, &f).expect("runs");
    let proposals = vec![item("a"), item("b"), item("c")];
    let mut verdicts = Verdicts::new(&f, proposals, vec![true, true, false], false);
    assert_eq!(verdicts.next_to_ask(), Some(2));
    assert!(verdicts.answered(2, Some(vec![true, false, true])));
    assert_eq!(verdicts.next_to_ask(), Some(3));
    assert!(verdicts.answered(3, Some(vec![true, true, true])));
    assert_eq!(verdicts.next_to_ask(), None);
    assert_eq!(verdicts.settle(&mut agreed, 600), 1);
    assert!(agreed.contains(0, b"a") && !agreed.contains(0, b"b") && !agreed.contains(0, b"c"));
}

#[test]
fn a_member_that_does_not_answer_as_asked_ends_the_round_agreeing_nothing() {
    let f = facts(500);
    for answer in [None, Some(vec![true])] {
        let mut verdicts = Verdicts::new(&f, vec![item("a"), item("b")], vec![true; 2], false);
        assert!(verdicts.answered(2, Some(vec![true, true])));
        assert!(!verdicts.answered(3, answer.clone()), "{answer:?}");
        assert_eq!(verdicts.next_to_ask(), None);
        let mut agreed = Agreed::default();
        agreed.keep_ring(7);
        assert_eq!(verdicts.settle(&mut agreed, 600), 0);
    }
}

#[test]
fn a_ring_change_during_the_round_agrees_nothing_and_the_bug_asks_nobody() {
    let f = facts(500);
    let mut agreed = Agreed::default();
    agreed.keep_ring(7);
    let mut verdicts = Verdicts::new(&f, vec![item("a")], vec![true], false);
    assert!(verdicts.answered(2, Some(vec![true])));
    assert!(verdicts.answered(3, Some(vec![true])));
    agreed.keep_ring(8);
    assert_eq!(verdicts.settle(&mut agreed, 600), 0);
    let bugged = Verdicts::new(&f, vec![item("a")], vec![false], true);
    assert_eq!(bugged.next_to_ask(), None);
    assert_eq!(
        bugged.settle(&mut agreed, 600),
        0,
        "ring 7's round under ring 8"
    );
    let bugged = Verdicts::new(
        &RoundFacts {
            ring_version: 8,
            ..f
        },
        vec![item("a")],
        vec![false],
        true,
    );
    assert_eq!(bugged.settle(&mut agreed, 600), 1, "agreed without asking");
}
