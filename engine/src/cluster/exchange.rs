//! One anti-entropy exchange with one peer, decided here: which partitions the
//! two compare, which differ, how the round's key and byte budgets are spent
//! on the keys found, pushed and pulled, and whether the exchange was complete
//! (every differing key of every shared partition found, pulled and merged
//! here), which is what a restoring node counts toward being whole again. The
//! driver (`shoal-net`'s `cluster/anti_entropy.rs`) asks the peer, reads and
//! merges locally, and reports each step back.
//!
//! A partition is compared only while the budgets can still move its keys:
//! comparing every differing partition first cost a round trip per partition
//! and slot however little the budget then moved (cluster seed 20028909).
//!
//! Must not touch: sockets, tasks, clocks, the store.

use crate::cluster::map::ClusterMap;
use crate::cluster::wire::{chunk_by_bytes, items_bytes, items_within_bytes, ReplicaItem};
use crate::placement::PartitionId;
use crate::version::NodeId;
use std::collections::VecDeque;

/// The partitions an exchange between `me` and `peer` compares: those both
/// own; while `me` is restoring, also those both hold in either placement of
/// a transition (an outgoing owner may hold the only other copy).
pub fn shared_partitions(
    map: &ClusterMap,
    me: NodeId,
    peer: NodeId,
    restoring: bool,
) -> Vec<PartitionId> {
    map.partitions()
        .into_iter()
        .filter(|p| {
            let list = map.owners(*p);
            (list.contains(&me) && list.contains(&peer))
                || (restoring && map.holds(me, *p) && map.holds(peer, *p))
        })
        .collect()
}

/// How an exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeEnd {
    /// Differing keys found (the peer's lag behind or ahead of this node).
    pub found: usize,
    /// Every differing key was found, and every one pulled and merged here.
    pub complete: bool,
}

/// One exchange's budgets and what it has done so far.
#[derive(Debug)]
pub struct Exchange {
    keys_left: usize,
    bytes_left: usize,
    found: usize,
    complete: bool,
    differing: VecDeque<PartitionId>,
}

impl Exchange {
    pub fn new(keys_max: usize, bytes_max: usize) -> Exchange {
        Exchange {
            keys_left: keys_max,
            bytes_left: bytes_max,
            found: 0,
            complete: true,
            differing: VecDeque::new(),
        }
    }

    /// The digests of `partitions`, this node's and the peer's (in their
    /// order): those that differ are to be searched, in that order.
    pub fn compared(&mut self, partitions: &[PartitionId], mine: &[u64], theirs: &[u64]) {
        assert!(partitions.len() == mine.len() && mine.len() == theirs.len());
        let differ = partitions.iter().zip(mine.iter().zip(theirs));
        self.differing
            .extend(differ.filter(|(_, (a, b))| a != b).map(|(p, _)| *p));
    }

    /// The next differing partition to search, with the most keys it may
    /// yield; `None` when none is left or a budget is spent (then the
    /// exchange is incomplete).
    pub fn next_partition(&mut self) -> Option<(PartitionId, usize)> {
        let partition = *self.differing.front()?;
        if self.keys_left == 0 || self.bytes_left == 0 {
            self.complete = false;
            return None;
        }
        self.differing.pop_front();
        Some((partition, self.keys_left))
    }

    /// `count` differing keys were found in the partition searched last;
    /// reaching its budget, it may hold more.
    pub fn found(&mut self, count: usize) {
        assert!(count <= self.keys_left, "found more keys than the budget");
        self.complete &= count < self.keys_left;
        self.keys_left -= count;
        self.found += count;
    }

    /// This node's copies to push, cut to the bytes left (the first always
    /// goes, so a round moves any value size) and into requests of at most
    /// `request_bytes_max`. `ignore_bytes` is the planted bug that bounds them
    /// by count only.
    pub fn push_requests(
        &self,
        mut items: Vec<ReplicaItem>,
        request_bytes_max: usize,
        ignore_bytes: bool,
    ) -> Vec<Vec<ReplicaItem>> {
        if ignore_bytes {
            return chunk_by_bytes(items, usize::MAX);
        }
        items.truncate(items_within_bytes(&items, self.bytes_left));
        chunk_by_bytes(items, request_bytes_max)
    }

    /// The byte bound of the next pull request (`None`: the budget is spent,
    /// and the exchange incomplete).
    pub fn pull_bytes_max(&mut self, request_bytes_max: usize, ignore_bytes: bool) -> Option<u64> {
        if self.bytes_left == 0 {
            self.complete = false;
            return None;
        }
        Some(if ignore_bytes {
            u64::MAX
        } else {
            request_bytes_max.min(self.bytes_left) as u64
        })
    }

    /// Copies pushed or pulled: their bytes come off the budget.
    pub fn moved(&mut self, items: &[ReplicaItem]) -> usize {
        let bytes = items_bytes(items);
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        bytes
    }

    /// A pull's answer: whether every copy asked for was read and merged.
    pub fn pulled(&mut self, all_read_and_merged: bool) {
        self.complete &= all_read_and_merged;
    }

    /// The exchange stopped early (an answer not as asked): not complete.
    pub fn broke_off(&mut self) {
        self.complete = false;
    }

    pub fn end(self) -> ExchangeEnd {
        ExchangeEnd {
            found: self.found,
            complete: self.complete,
        }
    }
}
