//! A coordinated write, driven directly: real stores on in-memory disks for
//! each node, the coordinator's `Coordination` deciding, and an in-process
//! pump carrying its replica requests to the other stores and their answers
//! back. No sockets, no madsim, no clock: each test names the case it decides.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::cluster::coordination::{
    Coordination, Placement, ReplicaSend, Target, WriteAnswer,
};
use shoal_engine::cluster::refusal::{Outcome, Refusal, RemoteError};
use shoal_engine::cluster::wire::Response;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Condition, NodeId, Store, StoreOptions, WriteOp};
use std::collections::BTreeMap;

/// Nodes 1..=count, each with its own store.
struct Nodes {
    stores: BTreeMap<NodeId, Store>,
}

impl Nodes {
    fn new(count: u32) -> Nodes {
        let stores = (1..=count)
            .map(|node| {
                let options = StoreOptions {
                    node_id: node,
                    ..small_options()
                };
                (node, open(&MemDir::new(), options))
            })
            .collect();
        Nodes { stores }
    }

    fn store(&mut self, node: NodeId) -> &mut Store {
        self.stores.get_mut(&node).expect("a node of the test")
    }

    /// The coordinator's own writes, durable here first, as the driver feeds
    /// them to `Coordination::start`.
    fn write_locally(&mut self, node: NodeId, ops: &[WriteOp]) -> Vec<WriteAnswer> {
        commit(self.store(node), ops)
            .into_iter()
            .map(|r| r.map_err(|e| RemoteError::new(Refusal::OutcomeUnknown, format!("{e:?}"))))
            .collect()
    }

    /// What a replica answers a request: each copy merged into its store.
    fn deliver(&mut self, send: &ReplicaSend) -> Response {
        let ops: Vec<WriteOp> = send
            .items
            .iter()
            .map(|item| WriteOp::merge(item.namespace, item.key.clone(), item.set.clone()))
            .collect();
        let acks = commit(self.store(send.target.0), &ops)
            .into_iter()
            .map(|r| {
                r.map(|_| ())
                    .map_err(|e| RemoteError::new(Refusal::OutcomeUnknown, format!("{e:?}")))
            })
            .collect();
        Response::Replicated(acks)
    }
}

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::put(
        0,
        Bytes::from(key.to_string()),
        Bytes::from(value.to_string()),
    )
}

fn keys(ops: &[WriteOp]) -> Vec<(u8, Bytes)> {
    ops.iter().map(|o| (o.namespace, o.key.clone())).collect()
}

/// Every key on `targets` with write quorum `w`.
fn everywhere(w: u8, targets: &[Target]) -> impl FnMut(u8, &[u8]) -> Placement + '_ {
    move |_, _| (w, targets.to_vec())
}

const OWNERS: [Target; 3] = [(1, None), (2, None), (3, None)];

#[test]
fn a_write_is_answered_once_w_replicas_hold_it_and_each_replica_gets_one_request() {
    let mut nodes = Nodes::new(3);
    let ops = vec![put("a", "1"), put("b", "2")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 7, &keys(&ops), local, everywhere(2, &OWNERS));
    let targets: Vec<Target> = sends.iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        vec![(2, None), (3, None)],
        "one request per other owner"
    );
    assert!(sends
        .iter()
        .all(|s| s.ring_version == 7 && s.indexes == vec![0, 1]));
    assert!(coordination.undecided());
    let answer = nodes.deliver(&sends[0]);
    coordination.answer(2, &sends[0].indexes, Ok(answer));
    assert!(
        !coordination.undecided(),
        "met at w = 2 without waiting for node 3"
    );
    let (answers, missed) = coordination.finish(500);
    assert_eq!(missed, 0);
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|o| o.applied)));
    assert_eq!(value_of(nodes.store(2), "a").as_deref(), Some("1"));
    assert_eq!(
        value_of(nodes.store(3), "a"),
        None,
        "node 3 was never delivered to"
    );
}

#[test]
fn replicas_that_do_not_answer_leave_the_outcome_unknown() {
    let mut nodes = Nodes::new(3);
    let ops = vec![put("a", "1")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 1, &keys(&ops), local, everywhere(2, &OWNERS));
    coordination.answer(2, &sends[0].indexes, Err("timed out after 500 ms".into()));
    assert!(coordination.undecided(), "node 3 may still answer");
    coordination.answer(3, &sends[1].indexes, Err("connection refused".into()));
    assert!(!coordination.undecided(), "out of reach once both failed");
    let (answers, missed) = coordination.finish(500);
    assert_eq!(missed, 1);
    let error = answers[0].as_ref().expect_err("no quorum");
    assert_eq!(error.refusal, Refusal::NoQuorum);
    assert_eq!(
        error.refusal.outcome(),
        Outcome::Unknown,
        "durable here: it may be applied"
    );
    assert!(
        error
            .message
            .contains("durable on 1 of the 2 replicas required within 500 ms"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("node 3: connection refused"),
        "{}",
        error.message
    );
}

#[test]
fn a_write_that_did_not_apply_sends_nothing_and_answers_as_it_is() {
    let mut nodes = Nodes::new(3);
    nodes.write_locally(1, &[put("a", "old")]);
    let mut nx = put("a", "new");
    nx.condition = Condition::IfAbsent;
    let ops = vec![nx, put("b", "2")];
    let local = nodes.write_locally(1, &ops);
    let (coordination, sends) =
        Coordination::start(1, 1, &keys(&ops), local, everywhere(2, &OWNERS));
    assert!(
        sends.iter().all(|s| s.indexes == vec![1]),
        "only the applied write travels"
    );
    let (answers, missed) = coordination.finish(500);
    assert!(
        answers[0].as_ref().is_ok_and(|o| !o.applied),
        "SET NX on a present key"
    );
    assert_eq!(missed, 1, "the applied write had no answers");
}

#[test]
fn a_replica_refusing_one_item_fails_that_write_alone() {
    let mut nodes = Nodes::new(3);
    let ops = vec![put("a", "1"), put("b", "2")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 1, &keys(&ops), local, everywhere(3, &OWNERS));
    let full = RemoteError::new(Refusal::DiskFull, "no space left");
    coordination.answer(
        2,
        &sends[0].indexes,
        Ok(Response::Replicated(vec![Ok(()), Err(full)])),
    );
    let answer = nodes.deliver(&sends[1]);
    coordination.answer(3, &sends[1].indexes, Ok(answer));
    let (answers, missed) = coordination.finish(500);
    assert!(answers[0].is_ok(), "a met all three");
    let error = answers[1].as_ref().expect_err("b missed w = 3");
    assert!(
        error.message.contains("node 2: DISKFULL"),
        "{}",
        error.message
    );
    assert_eq!(missed, 1);
}

#[test]
fn a_replica_with_a_newer_ring_makes_the_short_writes_go_to_the_new_owners() {
    let mut nodes = Nodes::new(4);
    let ops = vec![put("a", "1")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 4, &keys(&ops), local, everywhere(2, &OWNERS));
    let stale = RemoteError::new(Refusal::StaleRing, "my ring is version 5");
    coordination.answer(2, &sends[0].indexes, Ok(Response::Error(stale)));
    coordination.answer(3, &sends[1].indexes, Err("timed out".into()));
    assert_eq!(
        coordination.newer_ring_at(),
        Some(2),
        "learn the ring from node 2"
    );
    // Under ring 5 the owners are 1, 3 and 4; node 1 already holds the write.
    let new_owners = [(1, None), (3, None), (4, None)];
    let retries = coordination.retry_under(5, everywhere(2, &new_owners));
    let targets: Vec<Target> = retries.iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        vec![(3, None), (4, None)],
        "not to node 1, which acked"
    );
    assert!(retries.iter().all(|s| s.ring_version == 5));
    let answer = nodes.deliver(&retries[1]);
    coordination.answer(4, &retries[1].indexes, Ok(answer));
    let (answers, missed) = coordination.finish(500);
    assert_eq!(missed, 0, "met under the new ring: nodes 1 and 4");
    assert!(answers[0].is_ok());
    assert_eq!(value_of(nodes.store(4), "a").as_deref(), Some("1"));
    // A write already met is not sent again.
    assert!(coordination_met_sends_nothing(&mut nodes));
}

fn coordination_met_sends_nothing(nodes: &mut Nodes) -> bool {
    let ops = vec![put("c", "3")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 4, &keys(&ops), local, everywhere(2, &OWNERS));
    let answer = nodes.deliver(&sends[0]);
    coordination.answer(2, &sends[0].indexes, Ok(answer));
    coordination
        .retry_under(5, everywhere(2, &[(3, None), (4, None)]))
        .is_empty()
}

#[test]
fn a_copy_for_a_down_owner_goes_to_its_fallback_as_a_hint() {
    let mut nodes = Nodes::new(4);
    let ops = vec![put("a", "1")];
    let local = nodes.write_locally(1, &ops);
    let sloppy = [(1, None), (2, None), (4, Some(3))];
    let (mut coordination, sends) =
        Coordination::start(1, 1, &keys(&ops), local, everywhere(2, &sloppy));
    assert_eq!(
        sends[1].target,
        (4, Some(3)),
        "node 4 keeps the copy for node 3"
    );
    let answer = nodes.deliver(&sends[1]);
    coordination.answer(4, &sends[1].indexes, Ok(answer));
    let (answers, _) = coordination.finish(500);
    assert!(answers[0].is_ok(), "the fallback's ack counts toward w");
}

#[test]
fn a_coordinator_that_could_not_keep_its_copy_answers_so_even_when_met() {
    let mut nodes = Nodes::new(3);
    let ops = vec![put("a", "1")];
    let local = nodes.write_locally(1, &ops);
    let (mut coordination, sends) =
        Coordination::start(1, 1, &keys(&ops), local, everywhere(2, &OWNERS));
    let answer = nodes.deliver(&sends[0]);
    coordination.answer(2, &sends[0].indexes, Ok(answer));
    let copies: Vec<usize> = coordination.copies().map(|(i, _)| i).collect();
    assert_eq!(copies, vec![0]);
    coordination.refuse(
        0,
        RemoteError::new(Refusal::OutcomeUnknown, "copy dropped by a ring change"),
    );
    let (answers, missed) = coordination.finish(500);
    assert_eq!(missed, 0);
    assert_eq!(
        answers[0].as_ref().expect_err("refused").refusal,
        Refusal::OutcomeUnknown
    );
}
