//! When a restoring node is whole again. A node whose synced data was set
//! aside as damaged, whose disk was replaced, or whose start cut a tail of its
//! log may lack writes it acknowledged. It restores by anti-entropy: once an
//! exchange with every other holder ([`ClusterMap::holders`]) completed with
//! every differing key merged here, all under one and the same map, it holds
//! every write any of them acknowledged before, and it serves handoff scans
//! and votes on markers again.
//!
//! Exchanges count together only under one map fingerprint, done reports
//! included: a peer whose pull finished after this node's exchange with it
//! holds copies the exchange never saw, and its done report is what changes
//! the map (cluster seed 20000280: restored from a new owner before its pull,
//! then from the old one once the ring had settled and no longer compared the
//! partition; the next change pulled from this node and missed a write).
//!
//! Must not touch: the store, files, clocks. The driver clears `RESTORING`
//! when [`RestoreProgress::exchange_complete`] says [`RestoreStep::Whole`].
//!
//! [`ClusterMap::holders`]: crate::cluster::map::ClusterMap::holders

use crate::version::NodeId;
use std::collections::BTreeSet;

/// What one completed exchange means for the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreStep {
    /// The exchange ran under a map that is no longer the node's: not counted.
    MapMoved,
    /// Counted; these holders are still to be merged from.
    Waiting { missing: usize },
    /// Every other holder's copies are merged under one map: the node is whole.
    Whole { merged_from: usize },
}

/// The exchanges completed under one map fingerprint.
#[derive(Clone, Debug, Default)]
pub struct RestoreProgress {
    under_fingerprint: u64,
    done: BTreeSet<NodeId>,
}

impl RestoreProgress {
    /// An exchange with `peer` completed under a map with `exchange_fingerprint`;
    /// the node's map now has `current_fingerprint` and these `holders`
    /// (`me` among them or not).
    pub fn exchange_complete(
        &mut self,
        me: NodeId,
        peer: NodeId,
        exchange_fingerprint: u64,
        current_fingerprint: u64,
        holders: &BTreeSet<NodeId>,
    ) -> RestoreStep {
        if exchange_fingerprint != current_fingerprint {
            return RestoreStep::MapMoved;
        }
        if self.under_fingerprint != exchange_fingerprint {
            self.under_fingerprint = exchange_fingerprint;
            self.done.clear();
        }
        self.done.insert(peer);
        let missing = holders
            .iter()
            .filter(|n| **n != me && !self.done.contains(n))
            .count();
        if missing > 0 {
            return RestoreStep::Waiting { missing };
        }
        RestoreStep::Whole {
            merged_from: self.done.len(),
        }
    }

    /// Holders merged from so far under the current fingerprint.
    pub fn merged_from(&self) -> usize {
        self.done.len()
    }

    /// Whether `node`'s copies are merged under the current fingerprint.
    pub fn has_merged_from(&self, node: NodeId) -> bool {
        self.done.contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn whole_once_every_other_holder_is_merged_under_one_map() {
        let mut progress = RestoreProgress::default();
        let h = holders(&[1, 2, 3]);
        assert_eq!(
            progress.exchange_complete(1, 2, 7, 7, &h),
            RestoreStep::Waiting { missing: 1 }
        );
        assert_eq!(
            progress.exchange_complete(1, 3, 7, 7, &h),
            RestoreStep::Whole { merged_from: 2 }
        );
    }

    #[test]
    fn a_map_change_starts_the_count_again() {
        let mut progress = RestoreProgress::default();
        let h = holders(&[1, 2, 3]);
        progress.exchange_complete(1, 2, 7, 7, &h);
        // A done report changed the map: node 2's exchange no longer counts.
        assert_eq!(
            progress.exchange_complete(1, 3, 8, 8, &h),
            RestoreStep::Waiting { missing: 1 }
        );
        assert_eq!(progress.merged_from(), 1);
        assert_eq!(
            progress.exchange_complete(1, 2, 8, 8, &h),
            RestoreStep::Whole { merged_from: 2 }
        );
    }

    #[test]
    fn an_exchange_under_an_older_map_is_not_counted() {
        let mut progress = RestoreProgress::default();
        let h = holders(&[1, 2]);
        assert_eq!(
            progress.exchange_complete(1, 2, 7, 8, &h),
            RestoreStep::MapMoved
        );
        assert_eq!(progress.merged_from(), 0);
    }

    #[test]
    fn an_old_owner_that_left_the_ring_is_waited_for() {
        // Holders include a node that left but whose handoffs still run.
        let mut progress = RestoreProgress::default();
        let h = holders(&[1, 2, 3, 9]);
        progress.exchange_complete(1, 2, 7, 7, &h);
        assert_eq!(
            progress.exchange_complete(1, 3, 7, 7, &h),
            RestoreStep::Waiting { missing: 1 }
        );
        assert_eq!(
            progress.exchange_complete(1, 9, 7, 7, &h),
            RestoreStep::Whole { merged_from: 3 }
        );
    }
}
