//! One coordinated quorum read of a batch of keys, sans-IO, with blocking read
//! repair. The driver plans each key's round (its owners, or the old and new
//! owners during a handoff, and the fallbacks standing in for owners held
//! down); this machine says which keys the coordinator reads from its own
//! copies or hints and which requests go to peers, takes their answers, says
//! which repliers are behind the merge and need it written back, and turns each
//! round into the client's answer.
//!
//! Why blocking: whatever a read answers must already be on the `r` repliers it
//! counts, so any later read quorum meets one of them (monotonic reads). A
//! replier whose write-back failed stops counting (`ReadRound::unrepaired`) and
//! the round waits for another replier or fails. Counting it let a read answer
//! a write held by one node while a replica with failing fsyncs kept its older
//! copy, and the next read went back in time (cluster seed 20030511).
//!
//! Must not touch: sending or timing (the driver's), placement (the driver
//! passes the rounds it planned and a `holds` function built from its map).

use crate::cluster::coordination::Target;
use crate::cluster::quorum::{ReadRound, RoundState};
use crate::cluster::refusal::{Refusal, RemoteError};
use crate::cluster::wire::{ReplicaItem, Request, Response};
use crate::version::{NodeId, SiblingSet};
use bytes::Bytes;
use std::collections::BTreeMap;

/// A key's answer: the merge of its replies (`None`: no replica holds it), or
/// why the read could not decide.
pub type ReadAnswer = Result<Option<SiblingSet>, RemoteError>;

/// One key's round as the driver planned it, with the fallbacks that stand in
/// for owners held down (sloppy quorum): fallback → the owner whose hints it
/// answers with.
#[derive(Clone, Debug)]
pub struct KeyPlan {
    pub round: ReadRound,
    pub stand_ins: BTreeMap<NodeId, NodeId>,
}

/// One read request to send: `request` to `target` (a fallback answers with
/// its hints for the owner beside it), answering the batch indexes beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadSend {
    pub target: Target,
    pub indexes: Vec<usize>,
    pub request: Request,
}

/// Read repair's copies for one node: each batch index with the merge to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairSend {
    pub node: NodeId,
    pub entries: Vec<(usize, SiblingSet)>,
}

impl RepairSend {
    /// The copies as a replicate request carries them.
    pub fn items(&self, namespace: u8, keys: &[Bytes]) -> Vec<ReplicaItem> {
        let item = |(i, set): &(usize, SiblingSet)| ReplicaItem {
            namespace,
            key: keys[*i].clone(),
            set: set.clone(),
        };
        self.entries.iter().map(item).collect()
    }
}

/// One batch being read.
#[derive(Debug)]
pub struct Reading {
    namespace: u8,
    keys: Vec<Bytes>,
    plans: Vec<KeyPlan>,
    /// What repair wrote back, confirmed durable: (key index, node, set).
    repaired: Vec<(usize, NodeId, SiblingSet)>,
}

impl Reading {
    pub fn new(namespace: u8, keys: Vec<Bytes>, plans: Vec<KeyPlan>) -> Reading {
        assert_eq!(keys.len(), plans.len(), "one planned round per key");
        Reading {
            namespace,
            keys,
            plans,
            repaired: Vec::new(),
        }
    }

    pub fn namespace(&self) -> u8 {
        self.namespace
    }

    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }

    /// Indexes `me` reads from its own copies: it is a target, not standing in.
    pub fn own_copies(&self, me: NodeId) -> Vec<usize> {
        let own = |(_, p): &(usize, &KeyPlan)| {
            p.round.targets().contains(&me) && !p.stand_ins.contains_key(&me)
        };
        self.plans
            .iter()
            .enumerate()
            .filter(own)
            .map(|(i, _)| i)
            .collect()
    }

    /// Indexes `me` answers from its hints, with the owner it stands in for.
    pub fn own_hints(&self, me: NodeId) -> Vec<(usize, NodeId)> {
        let hint = |(i, p): (usize, &KeyPlan)| p.stand_ins.get(&me).map(|o| (i, *o));
        self.plans.iter().enumerate().filter_map(hint).collect()
    }

    /// The requests to every target but `me`, one per (peer, stand-in owner).
    pub fn sends(&self, me: NodeId, ring_version: u64) -> Vec<ReadSend> {
        let mut per_target: BTreeMap<Target, Vec<usize>> = BTreeMap::new();
        for (i, plan) in self.plans.iter().enumerate() {
            for peer in plan.round.targets().iter().filter(|p| **p != me) {
                let target = (*peer, plan.stand_ins.get(peer).copied());
                per_target.entry(target).or_default().push(i);
            }
        }
        per_target
            .into_iter()
            .map(|(target, indexes)| {
                let keys = indexes.iter().map(|i| self.keys[*i].clone()).collect();
                let request = read_request(ring_version, self.namespace, keys, target.1);
                ReadSend {
                    target,
                    indexes,
                    request,
                }
            })
            .collect()
    }

    /// One key's copy from `node` (`Err`: it could not read it).
    pub fn reply(&mut self, index: usize, node: NodeId, copy: Result<Option<SiblingSet>, ()>) {
        let round = &mut self.plans[index].round;
        match copy {
            Ok(set) => round.reply(node, set),
            Err(()) => round.fail(node),
        };
    }

    /// A peer's answer to a [`ReadSend`] for `indexes` (`None`: the call failed
    /// or timed out). An answer of the wrong shape fails every key it covers.
    pub fn answer(&mut self, peer: NodeId, indexes: &[usize], response: Option<Response>) {
        match response {
            Some(Response::Sets(sets)) if sets.len() == indexes.len() => {
                for (i, set) in indexes.iter().zip(sets) {
                    self.reply(*i, peer, set.map_err(|_| ()));
                }
            }
            _ => {
                for i in indexes {
                    self.reply(*i, peer, Err(()));
                }
            }
        }
    }

    pub fn all_decided(&self) -> bool {
        self.plans
            .iter()
            .all(|p| p.round.state() != RoundState::Pending)
    }

    /// The repliers behind their key's merge that `holds` the key's partition
    /// (a fallback that answered with its hint keeps no copy: its hint reaches
    /// the owner by hinted handoff), with the merge, except what was already
    /// written back. Per key index, in order.
    fn behind(&self, holds: &impl Fn(NodeId, &[u8]) -> bool) -> Vec<(usize, NodeId, SiblingSet)> {
        let mut behind = Vec::new();
        for (i, plan) in self.plans.iter().enumerate() {
            let Some(merged) = plan.round.merged() else {
                continue;
            };
            for node in plan.round.stale_repliers() {
                let written = self
                    .repaired
                    .iter()
                    .any(|(j, n, set)| *j == i && *n == node && *set == merged);
                if holds(node, &self.keys[i]) && !written {
                    behind.push((i, node, merged.clone()));
                }
            }
        }
        behind
    }

    /// Read repair's copies to send now, one [`RepairSend`] per node.
    pub fn repairs(&self, holds: impl Fn(NodeId, &[u8]) -> bool) -> Vec<RepairSend> {
        let mut per_node: BTreeMap<NodeId, Vec<(usize, SiblingSet)>> = BTreeMap::new();
        for (i, node, merged) in self.behind(&holds) {
            per_node.entry(node).or_default().push((i, merged));
        }
        let send = |(node, entries)| RepairSend { node, entries };
        per_node.into_iter().map(send).collect()
    }

    /// Which of a [`RepairSend`]'s copies are now durable at its node.
    pub fn repaired(&mut self, send: RepairSend, durable: &[bool]) {
        for ((i, set), ok) in send.entries.into_iter().zip(durable) {
            if *ok {
                self.repaired.push((i, send.node, set));
            }
        }
    }

    /// Every replier still behind after read repair stops counting.
    pub fn uncount_unrepaired(&mut self, holds: impl Fn(NodeId, &[u8]) -> bool) {
        let behind = self.behind(&holds);
        for (i, node, _) in behind {
            if cfg!(feature = "bug-read-counts-unrepaired") {
                // Planted bug: a replier whose write-back failed still counts.
                continue;
            }
            self.plans[i].round.unrepaired(node);
        }
    }

    /// Each key's answer: the merge once its round met, else `NOQUORUM`
    /// naming how many replicas replied within `timeout_ms`. Asserts the
    /// invariant read repair keeps: every replier a met round counts that
    /// `holds` the key and sent less than the merge has it written back.
    pub fn answers(
        &self,
        timeout_ms: u64,
        holds: impl Fn(NodeId, &[u8]) -> bool,
    ) -> Vec<ReadAnswer> {
        if !cfg!(feature = "bug-read-counts-unrepaired") {
            for (i, node, _) in self.behind(&holds) {
                let round = &self.plans[i].round;
                assert!(
                    round.state() != RoundState::Met || !round.counts(node),
                    "a read answers key {i} counting node {node}, which lacks the merge"
                );
            }
        }
        let answer = |plan: &KeyPlan| match plan.round.state() {
            RoundState::Met => Ok(plan.round.merged()),
            _ => Err(RemoteError::new(
                Refusal::NoQuorum,
                format!(
                    "read reached {} of the {} replicas required within {timeout_ms} ms",
                    plan.round.replied(),
                    plan.round.needed()
                ),
            )),
        };
        self.plans.iter().map(answer).collect()
    }
}

/// A read's request to one replica: its copies, or (`stand_in_for`) the hints
/// it keeps for a down owner.
fn read_request(
    ring_version: u64,
    namespace: u8,
    keys: Vec<Bytes>,
    stand_in_for: Option<NodeId>,
) -> Request {
    match stand_in_for {
        Some(owner) => Request::ReadHints {
            ring_version,
            owner,
            namespace,
            keys,
        },
        None => Request::Read {
            ring_version,
            namespace,
            keys,
        },
    }
}
