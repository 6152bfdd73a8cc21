//! One coordinated batch of writes, sans-IO. The coordinator has made its own
//! copies durable (the results come in); this machine says which replica
//! requests to send, takes their answers, says whether a replica knew a newer
//! ring and, once the driver has learned that ring, which copies to send again
//! and where; at the end it turns each write's round into the client's answer:
//! the outcome when `w` replicas confirmed it durable, else `NOQUORUM`
//! (outcome unknown). No clock, no channel, no task: the driver sends, waits
//! (up to its request timeout) and feeds answers back.
//!
//! Must not touch: sending or timing (the driver's), placement (the driver
//! passes a `placement` function built from its map and failure detector).

use crate::cluster::quorum::{RoundState, WriteRound};
use crate::cluster::refusal::{Refusal, RemoteError};
use crate::cluster::wire::{ReplicaItem, Response};
use crate::store::WriteOutcome;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Where a replica copy goes: a node, and the owner it keeps a hint for when
/// it is a fallback (sloppy quorum).
pub type Target = (NodeId, Option<NodeId>);

/// A write's answer to its client: its outcome, or why not.
pub type WriteAnswer = Result<WriteOutcome, RemoteError>;

/// One replica request to send: `items` (each answering the batch index beside
/// it) to `target`, under `ring_version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSend {
    pub target: Target,
    pub ring_version: u64,
    pub indexes: Vec<usize>,
    pub items: Vec<ReplicaItem>,
}

/// A key's write quorum and the targets its copies go to, as the driver's
/// placement says under one ring.
pub type Placement = (u8, Vec<Target>);

/// One batch being coordinated.
#[derive(Debug)]
pub struct Coordination {
    /// Per batch index: its round while it has one (applied writes only).
    rounds: Vec<Option<WriteRound>>,
    /// Per batch index: the copy replicas get (applied writes only).
    copies: Vec<Option<ReplicaItem>>,
    answers: Vec<WriteAnswer>,
    /// Replicas that refused a request because their ring was newer, in the
    /// order their refusals came.
    stale_peers: Vec<NodeId>,
}

impl Coordination {
    /// Start from the coordinator's own results (`local`, one per write of the
    /// batch, for `keys` in order): every applied write gets a round, acked by
    /// `me`, and a copy for each other target `placement` names under
    /// `ring_version`. Returns the requests to send, one per target.
    pub fn start(
        me: NodeId,
        ring_version: u64,
        keys: &[(u8, Bytes)],
        local: Vec<WriteAnswer>,
        mut placement: impl FnMut(u8, &[u8]) -> Placement,
    ) -> (Coordination, Vec<ReplicaSend>) {
        assert_eq!(keys.len(), local.len(), "one local result per write");
        let mut coordination = Coordination {
            rounds: Vec::with_capacity(keys.len()),
            copies: Vec::with_capacity(keys.len()),
            answers: Vec::with_capacity(keys.len()),
            stale_peers: Vec::new(),
        };
        let mut per_target: BTreeMap<Target, Vec<(usize, ReplicaItem)>> = BTreeMap::new();
        for (i, (result, (namespace, key))) in local.into_iter().zip(keys).enumerate() {
            let applied = matches!(&result, Ok(outcome) if outcome.applied);
            if !applied {
                coordination.rounds.push(None);
                coordination.copies.push(None);
                coordination.answers.push(result);
                continue;
            }
            let outcome = result.expect("applied writes are Ok");
            let (w, targets) = placement(*namespace, key);
            let mut round = WriteRound::new(w, targets.iter().map(|(node, _)| *node));
            round.ack(me);
            let copy = ReplicaItem {
                namespace: *namespace,
                key: key.clone(),
                set: outcome.set.clone(),
            };
            for target in targets.iter().filter(|(node, _)| *node != me) {
                per_target
                    .entry(*target)
                    .or_default()
                    .push((i, copy.clone()));
            }
            coordination.rounds.push(Some(round));
            coordination.copies.push(Some(copy));
            coordination.answers.push(Ok(outcome));
        }
        (coordination, sends(ring_version, per_target))
    }

    /// `peer`'s answer to the request that carried `indexes` (`Err`: no answer
    /// came, and why).
    pub fn answer(&mut self, peer: NodeId, indexes: &[usize], answer: Result<Response, String>) {
        match answer {
            Ok(Response::Replicated(acks)) if acks.len() == indexes.len() => {
                for (i, ack) in indexes.iter().zip(acks) {
                    let round = self.rounds[*i]
                        .as_mut()
                        .expect("replicated writes have rounds");
                    match ack {
                        Ok(()) => round.ack(peer),
                        Err(e) => round.fail(peer, e.line()),
                    };
                }
            }
            other => {
                if let Ok(Response::Error(e)) = &other {
                    if e.refusal == Refusal::StaleRing && !self.stale_peers.contains(&peer) {
                        self.stale_peers.push(peer);
                    }
                }
                let reason = match other {
                    Err(e) => e,
                    Ok(r) => format!("unexpected answer {r:?}"),
                };
                for i in indexes {
                    let round = self.rounds[*i]
                        .as_mut()
                        .expect("replicated writes have rounds");
                    round.fail(peer, reason.clone());
                }
            }
        }
    }

    /// Some write's round is neither met nor out of reach.
    pub fn undecided(&self) -> bool {
        self.rounds
            .iter()
            .flatten()
            .any(|r| r.state() == RoundState::Pending)
    }

    /// The first replica that refused because its ring was newer: the driver
    /// learns the ring from it, then calls [`Coordination::retry_under`].
    pub fn newer_ring_at(&self) -> Option<NodeId> {
        self.stale_peers.first().copied()
    }

    /// Under a newer ring: each write still short of its quorum gets a new
    /// round over the new targets, keeping the acks it has, and its copy goes
    /// to every new target that has not acked. Returns the requests to send.
    pub fn retry_under(
        &mut self,
        ring_version: u64,
        mut placement: impl FnMut(u8, &[u8]) -> Placement,
    ) -> Vec<ReplicaSend> {
        let mut per_target: BTreeMap<Target, Vec<(usize, ReplicaItem)>> = BTreeMap::new();
        for (i, round) in self.rounds.iter_mut().enumerate() {
            let (Some(old), Some(copy)) = (round.as_ref(), self.copies[i].as_ref()) else {
                continue;
            };
            if old.state() == RoundState::Met {
                continue;
            }
            let (w, targets) = placement(copy.namespace, &copy.key);
            let mut retry = WriteRound::new(w, targets.iter().map(|(node, _)| *node));
            for node in old.acked() {
                retry.ack(*node);
            }
            for target in &targets {
                if !retry.acked().contains(&target.0) {
                    per_target
                        .entry(*target)
                        .or_default()
                        .push((i, copy.clone()));
                }
            }
            *round = Some(retry);
        }
        sends(ring_version, per_target)
    }

    /// Each applied write's copy, by batch index.
    pub fn copies(&self) -> impl Iterator<Item = (usize, &ReplicaItem)> {
        self.copies
            .iter()
            .enumerate()
            .filter_map(|(i, copy)| Some((i, copy.as_ref()?)))
    }

    /// Answer write `index` with `error` whatever its round says (the
    /// coordinator could not keep its own copy).
    pub fn refuse(&mut self, index: usize, error: RemoteError) {
        self.answers[index] = Err(error);
    }

    /// The clients' answers, in batch order, and how many writes missed their
    /// quorum. A write whose round is not met (its replicas said no, or did
    /// not answer within `request_timeout_ms`) answers `NOQUORUM`: it is
    /// durable here and may be elsewhere, so its outcome is unknown.
    pub fn finish(self, request_timeout_ms: u64) -> (Vec<WriteAnswer>, u64) {
        let mut missed = 0;
        let answers = self
            .answers
            .into_iter()
            .zip(&self.rounds)
            .map(|(answer, round)| match round {
                Some(round) if round.state() != RoundState::Met => {
                    missed += 1;
                    Err(no_quorum(round, request_timeout_ms))
                }
                _ => answer,
            })
            .collect();
        (answers, missed)
    }
}

fn sends(
    ring_version: u64,
    per_target: BTreeMap<Target, Vec<(usize, ReplicaItem)>>,
) -> Vec<ReplicaSend> {
    per_target
        .into_iter()
        .map(|(target, items)| {
            let (indexes, items) = items.into_iter().unzip();
            ReplicaSend {
                target,
                ring_version,
                indexes,
                items,
            }
        })
        .collect()
}

fn no_quorum(round: &WriteRound, request_timeout_ms: u64) -> RemoteError {
    let failures: Vec<String> = round
        .failures()
        .iter()
        .map(|(node, why)| format!("node {node}: {why}"))
        .collect();
    RemoteError::new(
        Refusal::NoQuorum,
        format!(
            "write is durable on {} of the {} replicas required within {} ms ({}); it may still be applied: outcome unknown",
            round.acked().len(),
            round.needed(),
            request_timeout_ms,
            if failures.is_empty() { "no answer".to_string() } else { failures.join("; ") }
        ),
    )
}
