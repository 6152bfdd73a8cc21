//! A coordinated quorum read, driven directly: the coordinator's `Reading`
//! deciding, with the replicas' copies fed in by hand. No sockets, no madsim,
//! no clock: each test names the case it decides.

use bytes::Bytes;
use shoal_engine::cluster::quorum::ReadRound;
use shoal_engine::cluster::reading::{KeyPlan, ReadSend, Reading, RepairSend};
use shoal_engine::cluster::refusal::{Refusal, RemoteError};
use shoal_engine::cluster::wire::{Request, Response};
use shoal_engine::{Hlc, NodeId, SiblingSet};
use std::collections::BTreeMap;

const ME: NodeId = 1;
const NS: u8 = 0;

/// A copy holding `value`, written by node 9 over `over` (its whole context).
fn written(over: &SiblingSet, value: &str) -> SiblingSet {
    let mut set = over.clone();
    let hlc = Hlc(set.siblings.len() as u64 + 1);
    set.write(
        &over.context,
        9,
        0,
        hlc,
        Some(Bytes::from(value.to_owned())),
    );
    set
}

/// One key read from owners 1, 2 and 3 with `r` = 2.
fn one_key() -> Reading {
    let plan = KeyPlan {
        round: ReadRound::new(2, [1, 2, 3]),
        stand_ins: BTreeMap::new(),
    };
    Reading::new(NS, vec![Bytes::from_static(b"k")], vec![plan])
}

fn everyone_holds(_: NodeId, _: &[u8]) -> bool {
    true
}

fn sets(copies: Vec<Option<SiblingSet>>) -> Option<Response> {
    Some(Response::Sets(copies.into_iter().map(Ok).collect()))
}

#[test]
fn equal_copies_answer_without_repair() {
    let a = written(&SiblingSet::default(), "a");
    let mut reading = one_key();
    assert_eq!(reading.own_copies(ME), [0]);
    assert!(reading.own_hints(ME).is_empty());
    let sends = reading.sends(ME, 7);
    let peers: Vec<NodeId> = sends.iter().map(|s| s.target.0).collect();
    assert_eq!(peers, [2, 3]);
    let read = Request::Read {
        ring_version: 7,
        namespace: NS,
        keys: vec![Bytes::from_static(b"k")],
    };
    assert_eq!(sends[0].request, read);
    reading.reply(0, ME, Ok(Some(a.clone())));
    assert!(!reading.all_decided(), "one of two replies");
    reading.answer(2, &[0], sets(vec![Some(a.clone())]));
    assert!(reading.all_decided());
    assert!(reading.repairs(everyone_holds).is_empty());
    assert_eq!(reading.answers(100, everyone_holds), [Ok(Some(a))]);
}

/// A round where the coordinator's copy is older than node 2's: met, with
/// the coordinator behind the merge, which is returned.
fn coordinator_behind_node_2() -> (Reading, SiblingSet) {
    let a = written(&SiblingSet::default(), "a");
    let b = written(&a, "b");
    let mut reading = one_key();
    reading.reply(0, ME, Ok(Some(a)));
    reading.answer(2, &[0], sets(vec![Some(b.clone())]));
    (reading, b)
}

#[test]
fn a_replier_behind_the_merge_gets_it_written_back_before_the_answer() {
    let (mut reading, b) = coordinator_behind_node_2();
    let repairs = reading.repairs(everyone_holds);
    let expected = RepairSend {
        node: ME,
        entries: vec![(0, b.clone())],
    };
    assert_eq!(repairs, std::slice::from_ref(&expected));
    reading.repaired(expected, &[true]);
    reading.uncount_unrepaired(everyone_holds);
    assert!(reading.all_decided());
    assert!(
        reading.repairs(everyone_holds).is_empty(),
        "a confirmed write-back is not sent again"
    );
    assert_eq!(reading.answers(100, everyone_holds), [Ok(Some(b))]);
}

#[test]
fn a_failed_write_back_stops_its_replier_counting_until_another_replies() {
    let (mut reading, b) = coordinator_behind_node_2();
    let repairs = reading.repairs(everyone_holds);
    assert_eq!(repairs.len(), 1);
    reading.repaired(repairs[0].clone(), &[false]);
    reading.uncount_unrepaired(everyone_holds);
    assert!(
        !reading.all_decided(),
        "node 1 still holds less than the answer: it must not count"
    );
    reading.answer(3, &[0], sets(vec![Some(b.clone())]));
    assert!(reading.all_decided());
    assert_eq!(reading.answers(100, everyone_holds), [Ok(Some(b.clone()))]);
    let again = reading.repairs(everyone_holds);
    assert_eq!(again.len(), 1, "node 1 is repaired again");
    assert_eq!(again[0].entries, [(0, b)]);
}

#[test]
fn failed_replicas_answer_no_quorum_naming_the_count() {
    let a = written(&SiblingSet::default(), "a");
    let mut reading = one_key();
    reading.reply(0, ME, Ok(Some(a)));
    reading.answer(2, &[0], None);
    assert!(!reading.all_decided(), "node 3 may still reply");
    reading.answer(3, &[0], None);
    assert!(reading.all_decided());
    let answers = reading.answers(250, everyone_holds);
    let [Err(e)] = answers.as_slice() else {
        panic!("a read of one reply out of two answered: {answers:?}");
    };
    assert_eq!(e.refusal, Refusal::NoQuorum);
    assert!(e
        .line()
        .contains("read reached 1 of the 2 replicas required within 250 ms"));
}

#[test]
fn an_answer_of_the_wrong_shape_fails_every_key_it_covers() {
    let a = written(&SiblingSet::default(), "a");
    let mut reading = one_key();
    reading.reply(0, ME, Ok(Some(a.clone())));
    reading.answer(2, &[0], sets(vec![Some(a.clone()), Some(a.clone())]));
    assert!(
        !reading.all_decided(),
        "two copies for one key count as none"
    );
    let refused = Err(RemoteError::new(Refusal::Restoring, "restoring"));
    reading.answer(3, &[0], Some(Response::Sets(vec![refused])));
    assert!(reading.all_decided());
    assert!(reading.answers(100, everyone_holds)[0].is_err());
}

#[test]
fn a_fallback_answers_with_its_hints_and_read_repair_passes_it_by() {
    // Owner 3 is held down: fallback 4 stands in with its hints for 3, and
    // the coordinator itself (1) stands in for nobody.
    let plan = KeyPlan {
        round: ReadRound::new(2, [1, 2, 4]),
        stand_ins: BTreeMap::from([(4, 3)]),
    };
    let key = Bytes::from_static(b"k");
    let mut reading = Reading::new(NS, vec![key.clone()], vec![plan]);
    let sends: Vec<ReadSend> = reading.sends(ME, 3);
    assert_eq!(sends[1].target, (4, Some(3)));
    let hints = Request::ReadHints {
        ring_version: 3,
        owner: 3,
        namespace: NS,
        keys: vec![key],
    };
    assert_eq!(sends[1].request, hints);
    let a = written(&SiblingSet::default(), "a");
    let b = written(&a, "b");
    reading.reply(0, ME, Ok(Some(b.clone())));
    reading.answer(4, &[0], sets(vec![Some(a)]));
    assert!(reading.all_decided());
    let owners_only = |node: NodeId, _: &[u8]| node != 4;
    assert!(reading.repairs(owners_only).is_empty());
    reading.uncount_unrepaired(owners_only);
    assert_eq!(reading.answers(100, owners_only), [Ok(Some(b))]);
}

#[test]
fn a_coordinator_standing_in_reads_its_hints_not_its_copies() {
    let plan = KeyPlan {
        round: ReadRound::new(2, [1, 2, 3]),
        stand_ins: BTreeMap::from([(ME, 4)]),
    };
    let reading = Reading::new(NS, vec![Bytes::from_static(b"k")], vec![plan]);
    assert!(reading.own_copies(ME).is_empty());
    assert_eq!(reading.own_hints(ME), [(0, 4)]);
}

#[test]
fn during_a_handoff_both_the_old_and_the_new_owners_must_meet() {
    let plan = KeyPlan {
        round: ReadRound::joint(2, [1, 2, 3], 2, [4, 5, 6]),
        stand_ins: BTreeMap::new(),
    };
    let mut reading = Reading::new(NS, vec![Bytes::from_static(b"k")], vec![plan]);
    let peers: Vec<NodeId> = reading.sends(ME, 1).iter().map(|s| s.target.0).collect();
    assert_eq!(peers, [2, 3, 4, 5, 6]);
    let a = written(&SiblingSet::default(), "a");
    reading.reply(0, ME, Ok(Some(a.clone())));
    reading.answer(2, &[0], sets(vec![Some(a.clone())]));
    assert!(!reading.all_decided(), "no old owner replied yet");
    reading.answer(4, &[0], sets(vec![Some(a.clone())]));
    assert!(!reading.all_decided(), "one old owner of two");
    reading.answer(5, &[0], sets(vec![None]));
    assert!(reading.all_decided());
    let repair = RepairSend {
        node: 5,
        entries: vec![(0, a.clone())],
    };
    assert_eq!(
        reading.repairs(everyone_holds),
        std::slice::from_ref(&repair)
    );
    reading.repaired(repair, &[true]);
    reading.uncount_unrepaired(everyone_holds);
    assert_eq!(reading.answers(100, everyone_holds), [Ok(Some(a))]);
}

#[test]
fn keys_of_a_batch_are_decided_apart() {
    let plan = |targets: [NodeId; 3]| KeyPlan {
        round: ReadRound::new(2, targets),
        stand_ins: BTreeMap::new(),
    };
    let keys = vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")];
    let mut reading = Reading::new(NS, keys, vec![plan([1, 2, 3]), plan([2, 3, 4])]);
    assert_eq!(reading.own_copies(ME), [0]);
    let sends = reading.sends(ME, 1);
    let per_peer: Vec<(NodeId, Vec<usize>)> = sends
        .iter()
        .map(|s| (s.target.0, s.indexes.clone()))
        .collect();
    assert_eq!(per_peer, [(2, vec![0, 1]), (3, vec![0, 1]), (4, vec![1])]);
    let a = written(&SiblingSet::default(), "a");
    reading.reply(0, ME, Ok(None));
    reading.answer(2, &[0, 1], sets(vec![None, Some(a.clone())]));
    assert!(!reading.all_decided(), "y has one reply of two");
    reading.answer(4, &[1], sets(vec![Some(a.clone())]));
    assert!(reading.all_decided());
    assert_eq!(
        reading.answers(100, everyone_holds),
        [Ok(None), Ok(Some(a))]
    );
}

#[test]
#[should_panic(expected = "lacks the merge")]
fn answering_before_a_behind_replier_is_repaired_or_uncounted_is_a_bug() {
    let a = written(&SiblingSet::default(), "a");
    let b = written(&a, "b");
    let mut reading = one_key();
    reading.reply(0, ME, Ok(Some(a)));
    reading.answer(2, &[0], sets(vec![Some(b)]));
    // No repair, no uncounting: node 1 counts while it holds less.
    let _ = reading.answers(100, everyone_holds);
}
