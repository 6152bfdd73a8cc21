//! Quorum rounds. A coordinator sends a write to every replica of the key's
//! preference list and answers the client once `w` of them (itself included) have
//! made it durable; a read asks the replicas and answers once `r` replied, with the
//! merge of their sibling sets, and repairs the replicas whose copy was behind.
//!
//! A round is decided as soon as its outcome is certain: met at `w` (or `r`)
//! successes, failed once too few replicas are left to reach it. Replies after the
//! decision are still recorded (a read repairs late repliers too).

use crate::version::{NodeId, SiblingSet};
use std::collections::{BTreeMap, BTreeSet};

/// Where a round stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundState {
    Pending,
    Met,
    Failed,
}

fn state_of(needed: usize, ok: usize, failed: usize, targets: usize) -> RoundState {
    if ok >= needed {
        RoundState::Met
    } else if ok + (targets - ok - failed) < needed {
        RoundState::Failed
    } else {
        RoundState::Pending
    }
}

/// One replicated write: which replicas made it durable and which could not.
#[derive(Clone, Debug)]
pub struct WriteRound {
    w: usize,
    targets: BTreeSet<NodeId>,
    acked: BTreeSet<NodeId>,
    failed: BTreeMap<NodeId, String>,
}

impl WriteRound {
    /// `targets` are the replicas written to (the coordinator among them when it
    /// holds one); `w` of them must acknowledge.
    pub fn new(w: u8, targets: impl IntoIterator<Item = NodeId>) -> WriteRound {
        let targets: BTreeSet<NodeId> = targets.into_iter().collect();
        assert!(w >= 1, "a write quorum of 0 acknowledges nothing");
        WriteRound {
            w: usize::from(w),
            targets,
            acked: BTreeSet::new(),
            failed: BTreeMap::new(),
        }
    }

    pub fn ack(&mut self, node: NodeId) -> RoundState {
        if self.targets.contains(&node) && !self.failed.contains_key(&node) {
            self.acked.insert(node);
        }
        self.state()
    }

    pub fn fail(&mut self, node: NodeId, reason: impl Into<String>) -> RoundState {
        if self.targets.contains(&node) && !self.acked.contains(&node) {
            self.failed.entry(node).or_insert_with(|| reason.into());
        }
        self.state()
    }

    pub fn state(&self) -> RoundState {
        state_of(
            self.w,
            self.acked.len(),
            self.failed.len(),
            self.targets.len(),
        )
    }

    pub fn acked(&self) -> &BTreeSet<NodeId> {
        &self.acked
    }

    pub fn failures(&self) -> &BTreeMap<NodeId, String> {
        &self.failed
    }

    pub fn needed(&self) -> usize {
        self.w
    }
}

/// One quorum read of a key.
#[derive(Clone, Debug)]
pub struct ReadRound {
    r: usize,
    targets: BTreeSet<NodeId>,
    /// During a ring transition: the new owners, the old owners, and how many of
    /// the old must reply (`r` of the new must).
    previous: Option<(BTreeSet<NodeId>, BTreeSet<NodeId>, usize)>,
    replies: BTreeMap<NodeId, Option<SiblingSet>>,
    failed: BTreeSet<NodeId>,
    /// Repliers whose copy could not be brought up to the merge (read repair
    /// failed): their copies stay in the merge, but they no longer count.
    unrepaired: BTreeSet<NodeId>,
}

impl ReadRound {
    pub fn new(r: u8, targets: impl IntoIterator<Item = NodeId>) -> ReadRound {
        assert!(r >= 1, "a read quorum of 0 reads nothing");
        ReadRound {
            r: usize::from(r),
            targets: targets.into_iter().collect(),
            previous: None,
            replies: BTreeMap::new(),
            failed: BTreeSet::new(),
            unrepaired: BTreeSet::new(),
        }
    }

    /// A read while the key's partition is handed off: `r` replies are needed from
    /// the new owners (`targets`) and `previous_r` from the old ones (`previous`;
    /// the old placement's read quorum, which differs when a namespace was just
    /// pinned), so a write acknowledged under either placement is seen.
    pub fn joint(
        r: u8,
        targets: impl IntoIterator<Item = NodeId>,
        previous_r: u8,
        previous: impl IntoIterator<Item = NodeId>,
    ) -> ReadRound {
        assert!(previous_r >= 1, "a read quorum of 0 reads nothing");
        let mut round = ReadRound::new(r, targets);
        let current = round.targets.clone();
        let previous: BTreeSet<NodeId> = previous.into_iter().collect();
        round.targets.extend(previous.iter().copied());
        round.previous = Some((current, previous, usize::from(previous_r)));
        round
    }

    /// Every node the read asks.
    pub fn targets(&self) -> &BTreeSet<NodeId> {
        &self.targets
    }

    /// `set` is the replica's copy (`None`: it holds nothing for the key).
    pub fn reply(&mut self, node: NodeId, set: Option<SiblingSet>) -> RoundState {
        if self.targets.contains(&node) && !self.failed.contains(&node) {
            self.replies.insert(node, set);
        }
        self.state()
    }

    pub fn fail(&mut self, node: NodeId) -> RoundState {
        if self.targets.contains(&node) && !self.replies.contains_key(&node) {
            self.failed.insert(node);
        }
        self.state()
    }

    /// A replier whose copy could not be written up to the merge: it holds less
    /// than the read would answer, so it no longer counts toward `r` (the round
    /// waits for another replier, or fails). What it sent stays in the merge.
    pub fn unrepaired(&mut self, node: NodeId) -> RoundState {
        if self.replies.contains_key(&node) {
            self.unrepaired.insert(node);
        }
        self.state()
    }

    pub fn state(&self) -> RoundState {
        let counted = |n: &&NodeId| !self.unrepaired.contains(n);
        let Some((current, previous, previous_r)) = &self.previous else {
            return state_of(
                self.r,
                self.replied(),
                self.failed.len() + self.unrepaired.len(),
                self.targets.len(),
            );
        };
        let group_state = |group: &BTreeSet<NodeId>, r: usize| {
            let ok = self
                .replies
                .keys()
                .filter(|n| group.contains(n))
                .filter(counted)
                .count();
            let failed = self.failed.iter().chain(&self.unrepaired);
            let failed = failed.filter(|n| group.contains(n)).count();
            state_of(r.min(group.len()), ok, failed, group.len())
        };
        match (
            group_state(current, self.r),
            group_state(previous, *previous_r),
        ) {
            (RoundState::Met, RoundState::Met) => RoundState::Met,
            (RoundState::Failed, _) | (_, RoundState::Failed) => RoundState::Failed,
            _ => RoundState::Pending,
        }
    }

    /// The merge of every reply so far (`None` when no replica holds the key).
    pub fn merged(&self) -> Option<SiblingSet> {
        let mut merged: Option<SiblingSet> = None;
        for set in self.replies.values().flatten() {
            match &mut merged {
                Some(m) => m.merge(set),
                None => merged = Some(set.clone()),
            }
        }
        merged
    }

    /// Replicas that replied with less than the merge: they need it written back.
    pub fn stale_repliers(&self) -> Vec<NodeId> {
        let Some(merged) = self.merged() else {
            return Vec::new();
        };
        self.replies
            .iter()
            .filter(|(_, set)| set.as_ref() != Some(&merged))
            .map(|(node, _)| *node)
            .collect()
    }

    /// Whether `node` replied and counts toward `r` (its write-back, if it
    /// needed one, did not fail).
    pub fn counts(&self, node: NodeId) -> bool {
        self.replies.contains_key(&node) && !self.unrepaired.contains(&node)
    }

    /// How many replies the round needs (of the new owners, in a joint round).
    pub fn needed(&self) -> usize {
        self.r
    }

    /// Repliers that count toward `r` (an unrepaired one does not).
    pub fn replied(&self) -> usize {
        self.replies.len() - self.unrepaired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, VersionVector};
    use bytes::Bytes;

    #[test]
    fn write_round_table() {
        // (w, targets, events, expected state after each event)
        type Event = (u32, bool);
        type Row<'a> = (u8, &'a [u32], &'a [Event], &'a [RoundState]);
        let table: &[Row] = &[
            (
                2,
                &[1, 2, 3],
                &[(1, true), (2, true)],
                &[RoundState::Pending, RoundState::Met],
            ),
            (
                2,
                &[1, 2, 3],
                &[(1, false), (2, false)],
                &[RoundState::Pending, RoundState::Failed],
            ),
            (
                2,
                &[1, 2, 3],
                &[(1, true), (2, false), (3, true)],
                &[RoundState::Pending, RoundState::Pending, RoundState::Met],
            ),
            (
                3,
                &[1, 2, 3],
                &[(1, true), (2, true), (3, false)],
                &[RoundState::Pending, RoundState::Pending, RoundState::Failed],
            ),
            (1, &[1], &[(1, true)], &[RoundState::Met]),
            // A node outside the targets changes nothing; a duplicate ack counts once.
            (
                2,
                &[1, 2, 3],
                &[(9, true), (1, true), (1, true)],
                &[
                    RoundState::Pending,
                    RoundState::Pending,
                    RoundState::Pending,
                ],
            ),
            // An ack after a failure from the same node does not count.
            (
                2,
                &[1, 2],
                &[(1, false), (1, true)],
                &[RoundState::Failed, RoundState::Failed],
            ),
        ];
        for (row, (w, targets, events, expected)) in table.iter().enumerate() {
            let mut round = WriteRound::new(*w, targets.iter().copied());
            for ((node, ok), want) in events.iter().zip(expected.iter()) {
                let got = if *ok {
                    round.ack(*node)
                } else {
                    round.fail(*node, "down")
                };
                assert_eq!(got, *want, "row {row}: after {node} {ok}");
            }
        }
    }

    fn set(value: &str, node: u32, covered: &VersionVector) -> SiblingSet {
        let mut s = SiblingSet::default();
        s.write(
            covered,
            node,
            0,
            Hlc(1),
            Some(Bytes::from(value.to_string())),
        );
        s
    }

    #[test]
    fn read_round_merges_and_names_the_stale() {
        let mut round = ReadRound::new(2, [1, 2, 3]);
        let newer = set("new", 1, &VersionVector::new());
        assert_eq!(round.reply(1, Some(newer.clone())), RoundState::Pending);
        assert_eq!(round.reply(2, None), RoundState::Met);
        assert_eq!(round.merged(), Some(newer.clone()));
        assert_eq!(round.stale_repliers(), vec![2]);
        // Concurrent copies merge into siblings, and both repliers are stale.
        let other = set("other", 2, &VersionVector::new());
        round.reply(3, Some(other));
        assert_eq!(round.merged().unwrap().siblings.len(), 2);
        assert_eq!(round.stale_repliers(), vec![1, 2, 3]);
    }

    /// A stale replier whose read repair failed holds less than the answer:
    /// it stops counting, and the round waits for (and then needs) another.
    #[test]
    fn read_round_uncounts_an_unrepaired_replier() {
        let mut round = ReadRound::new(2, [1, 2, 3]);
        let newer = set("new", 1, &VersionVector::new());
        round.reply(1, Some(newer.clone()));
        assert_eq!(round.reply(2, None), RoundState::Met);
        assert_eq!(round.unrepaired(2), RoundState::Pending);
        assert_eq!(round.replied(), 1);
        assert_eq!(round.merged(), Some(newer.clone()));
        assert_eq!(round.reply(3, None), RoundState::Met);
        assert_eq!(round.unrepaired(3), RoundState::Failed);
        // During a handoff, per placement.
        let mut round = ReadRound::joint(1, [3, 4], 1, [1, 2]);
        round.reply(1, Some(newer.clone()));
        assert_eq!(round.reply(3, None), RoundState::Met);
        assert_eq!(round.unrepaired(3), RoundState::Pending);
        assert_eq!(round.reply(4, Some(newer)), RoundState::Met);
    }

    #[test]
    fn read_round_fails_when_too_few_can_answer() {
        let mut round = ReadRound::new(2, [1, 2, 3]);
        round.fail(1);
        assert_eq!(round.fail(2), RoundState::Failed);
        assert_eq!(round.merged(), None);
    }

    /// During a handoff, old owners {1,2,3} and new owners {1,2,4}: r=2 of each.
    #[test]
    fn joint_read_takes_each_placements_own_quorum() {
        // A namespace just pinned to {3, 4} with r=1; before, r=2 of {1, 2, 3}.
        let mut round = ReadRound::joint(1, [3, 4], 2, [1, 2, 3]);
        assert_eq!(round.reply(3, None), RoundState::Pending);
        assert_eq!(round.reply(4, None), RoundState::Pending);
        assert_eq!(round.reply(1, None), RoundState::Met);
        let mut round = ReadRound::joint(1, [3, 4], 2, [1, 2, 3]);
        round.fail(1);
        assert_eq!(round.fail(2), RoundState::Failed);
    }

    #[test]
    fn joint_read_needs_a_quorum_of_both_rings() {
        let table: &[(&[u32], &[u32], RoundState)] = &[
            // replied, failed, state
            (&[1, 2], &[], RoundState::Met),
            (&[1, 4], &[], RoundState::Pending),
            (&[1, 4, 3], &[], RoundState::Met),
            (&[3, 4], &[], RoundState::Pending),
            (&[1], &[2, 3], RoundState::Failed),
            (&[1], &[2, 4], RoundState::Failed),
            (&[2, 3, 4], &[1], RoundState::Met),
        ];
        for (replied, failed, expected) in table {
            let mut round = ReadRound::joint(2, [1, 2, 4], 2, [1, 2, 3]);
            assert_eq!(round.targets().len(), 4);
            for n in *failed {
                round.fail(*n);
            }
            for n in *replied {
                round.reply(*n, None);
            }
            assert_eq!(
                round.state(),
                *expected,
                "replied {replied:?} failed {failed:?}"
            );
        }
    }
}
