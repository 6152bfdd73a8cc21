//! The ring: members, replica count and one preference list per partition;
//! the diffs an operation returns and the balance report.

use super::*;
use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One replica of one partition changing hands: `to` must fetch the partition's data
/// (from `from` while it is still reachable, else from the other replicas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub partition: PartitionId,
    pub from: NodeId,
    pub to: NodeId,
}

/// A partition whose coordinator (first node of its preference list) changed. Moves
/// no data by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CoordinatorChange {
    pub partition: PartitionId,
    pub from: NodeId,
    pub to: NodeId,
}

/// Everything an operation changed between two ring versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingDiff {
    pub version_from: u64,
    pub version_to: u64,
    /// Every replica move, in the order the claim made them. On leave the leaving
    /// node's replicas come first, then any levelling moves (see [`Ring::leave`]).
    pub moves: Vec<ReplicaMove>,
    /// Every partition whose coordinator changed, by partition.
    pub coordinator_changes: Vec<CoordinatorChange>,
}

impl RingDiff {
    fn between(old: &Ring, new: &Ring, moves: Vec<ReplicaMove>) -> RingDiff {
        let coordinator_changes = old
            .owners
            .iter()
            .zip(&new.owners)
            .enumerate()
            .filter_map(|(partition, (before, after))| {
                let (from, to) = (*before.first()?, *after.first()?);
                (from != to).then_some(CoordinatorChange {
                    partition: partition as PartitionId,
                    from,
                    to,
                })
            })
            .collect();
        RingDiff {
            version_from: old.version,
            version_to: new.version,
            moves,
            coordinator_changes,
        }
    }

    /// Number of replicas `node` receives.
    pub fn received_by(&self, node: NodeId) -> usize {
        self.moves.iter().filter(|m| m.to == node).count()
    }

    /// Number of replicas `node` gives away.
    pub fn given_by(&self, node: NodeId) -> usize {
        self.moves.iter().filter(|m| m.from == node).count()
    }
}

/// Members, replica count and one preference list per partition. Immutable: every
/// change is an explicit operation returning a new ring with `version + 1`. Decoding
/// checks every invariant, so a `Ring` value is always well formed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingWire")]
pub struct Ring {
    pub(super) version: u64,
    pub(super) partition_count: u32,
    pub(super) replicas_n: u8,
    pub(super) members: BTreeSet<NodeId>,
    /// Per partition: `replicas_n` distinct members, in preference order.
    pub(super) owners: Vec<Vec<NodeId>>,
}

/// A ring as decoded, before its invariants are checked.
#[derive(Deserialize)]
pub(super) struct RingWire {
    version: u64,
    partition_count: u32,
    replicas_n: u8,
    members: BTreeSet<NodeId>,
    owners: Vec<Vec<NodeId>>,
}

impl TryFrom<RingWire> for Ring {
    type Error = PlacementError;

    fn try_from(wire: RingWire) -> Result<Ring, PlacementError> {
        let ring = Ring {
            version: wire.version,
            partition_count: wire.partition_count,
            replicas_n: wire.replicas_n,
            members: wire.members,
            owners: wire.owners,
        };
        ring.validate()?;
        Ok(ring)
    }
}

pub(super) fn check_counts(
    partition_count: u32,
    replicas_n: u8,
    members: usize,
) -> Result<(), PlacementError> {
    if !partition_count_is_valid(partition_count) {
        return Err(PlacementError::PartitionCountInvalid { partition_count });
    }
    if replicas_n == 0 {
        return Err(PlacementError::ReplicaCountInvalid { replicas_n });
    }
    if members < usize::from(replicas_n) {
        return Err(PlacementError::TooFewMembers {
            members,
            replicas_n,
        });
    }
    Ok(())
}

/// `(floor, ceil)` of `total / parts`; `parts` is never zero here.
pub(super) fn floor_ceil(total: usize, parts: usize) -> (usize, usize) {
    let floor = total / parts.max(1);
    let ceil = floor + usize::from(!total.is_multiple_of(parts.max(1)));
    (floor, ceil)
}

impl Ring {
    /// A ring over `members` (duplicates collapse; order does not matter). The first
    /// `replicas_n` members by id hold every partition, with coordinators rotating,
    /// and the others then join one by one in id order: the same claim as [`join`].
    ///
    /// [`join`]: Ring::join
    pub fn new(
        partition_count: u32,
        replicas_n: u8,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<Ring, PlacementError> {
        let members: BTreeSet<NodeId> = members.into_iter().collect();
        check_counts(partition_count, replicas_n, members.len())?;
        let replicas = usize::from(replicas_n);
        let seed: Vec<NodeId> = members.iter().take(replicas).copied().collect();
        let owners = (0..partition_count as usize)
            .map(|partition| {
                let mut list = seed.clone();
                list.rotate_left(partition % replicas);
                list
            })
            .collect();
        let mut ring = Ring {
            version: 1,
            partition_count,
            replicas_n,
            members: seed.iter().copied().collect(),
            owners,
        };
        for &node in members.iter().skip(replicas) {
            let mut layout = Layout::of(&ring);
            let moves = layout.join(node);
            layout.balance_primaries(moves.iter().map(|m| m.partition).collect());
            ring = ring.successor(layout, 0);
        }
        Ok(ring)
    }

    /// A joining node's stand-in before it learns the cluster's ring: `node` alone
    /// at version 0, so any real ring supersedes it.
    pub fn placeholder(partition_count: u32, node: NodeId) -> Result<Ring, PlacementError> {
        let mut ring = Ring::new(partition_count, 1, [node])?;
        ring.version = 0;
        Ok(ring)
    }

    /// Check every invariant: counts, one list per partition, `n` distinct members
    /// in each.
    pub fn validate(&self) -> Result<(), PlacementError> {
        check_counts(self.partition_count, self.replicas_n, self.members.len())?;
        if self.owners.len() != self.partition_count as usize {
            return Err(PlacementError::RingListCount {
                lists: self.owners.len(),
                partition_count: self.partition_count,
            });
        }
        for (partition, list) in self.owners.iter().enumerate() {
            let partition = partition as PartitionId;
            if list.len() != usize::from(self.replicas_n) {
                return Err(PlacementError::RingMalformed {
                    partition,
                    defect: RingDefect::ListLength,
                });
            }
            let mut seen = BTreeSet::new();
            for &node in list {
                if !self.members.contains(&node) {
                    return Err(PlacementError::RingMalformed {
                        partition,
                        defect: RingDefect::OwnerNotMember(node),
                    });
                }
                if !seen.insert(node) {
                    return Err(PlacementError::RingMalformed {
                        partition,
                        defect: RingDefect::DuplicateOwner(node),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn partition_count(&self) -> u32 {
        self.partition_count
    }

    pub fn replicas_n(&self) -> u8 {
        self.replicas_n
    }

    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    pub fn is_member(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }

    pub fn partition_of_slot(&self, slot: u16) -> PartitionId {
        partition_of_slot(slot, self.partition_count)
    }

    pub fn partition_of_key(&self, key: &[u8]) -> PartitionId {
        partition_of_key(key, self.partition_count)
    }

    pub fn slot_range(&self, partition: PartitionId) -> RangeInclusive<u16> {
        slot_range(partition, self.partition_count)
    }

    /// The `n` nodes holding `partition`, in preference order; empty for a partition
    /// outside the ring.
    pub fn preference_list(&self, partition: PartitionId) -> &[NodeId] {
        self.owners
            .get(partition as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// The first live node of the preference list: the node that coordinates writes
    /// to `partition`. `None` when every owner is down.
    pub fn coordinator(
        &self,
        partition: PartitionId,
        is_live: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        self.preference_list(partition)
            .iter()
            .copied()
            .find(|node| is_live(*node))
    }

    /// Live nodes outside the preference list, in the order a sloppy quorum takes
    /// them as stand-ins: the owners of the following partitions around the ring
    /// (`partition + 1`, `partition + 2`, ..., wrapping), each list in preference
    /// order, then any member holding no partition, by id. Each node appears once.
    pub fn fallbacks<'a>(
        &'a self,
        partition: PartitionId,
        is_live: impl Fn(NodeId) -> bool + 'a,
    ) -> impl Iterator<Item = NodeId> + 'a {
        let list = self.preference_list(partition);
        let mut seen: BTreeSet<NodeId> = list.iter().copied().collect();
        let outsiders = self.members.len().saturating_sub(seen.len());
        let count = self.partition_count;
        let start = partition.min(count);
        (1..count)
            .flat_map(move |step| self.preference_list((start + step) % count).iter().copied())
            .chain(self.members.iter().copied())
            .filter(move |node| seen.insert(*node))
            .take(outsiders)
            .filter(move |node| is_live(*node))
    }

    /// The partitions `node` holds a replica of, ascending.
    pub fn partitions_of(&self, node: NodeId) -> impl Iterator<Item = PartitionId> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, list)| list.contains(&node))
            .map(|(partition, _)| partition as PartitionId)
    }

    /// Number of replicas `node` holds.
    pub fn load(&self, node: NodeId) -> usize {
        self.partitions_of(node).count()
    }

    /// Number of partitions `node` is first in the preference list of.
    pub fn primary_count(&self, node: NodeId) -> usize {
        self.owners
            .iter()
            .filter(|list| list.first() == Some(&node))
            .count()
    }

    /// Per-node replica and coordinator counts against their ideal floor and ceiling.
    pub fn balance_report(&self) -> BalanceReport {
        let mut nodes: BTreeMap<NodeId, NodeLoad> = self
            .members
            .iter()
            .map(|node| (*node, NodeLoad::default()))
            .collect();
        for list in &self.owners {
            for (position, node) in list.iter().enumerate() {
                if let Some(entry) = nodes.get_mut(node) {
                    entry.replicas += 1;
                    if position == 0 {
                        entry.primaries += 1;
                    }
                }
            }
        }
        let members = self.members.len();
        let partitions = self.partition_count as usize;
        let replicas_total = partitions * usize::from(self.replicas_n);
        let (load_floor, load_ceil) = floor_ceil(replicas_total, members);
        let (primary_floor, primary_ceil) = floor_ceil(partitions, members);
        BalanceReport {
            version: self.version,
            replicas_total,
            load_floor,
            load_ceil,
            primary_floor,
            primary_ceil,
            nodes,
        }
    }

    /// Add `node`. It takes replicas only from the most loaded members (lowest id
    /// first among equals), one at a time, until every member holds the floor or
    /// ceiling of the average: the fewest moves that balance the ring.
    pub fn join(&self, node: NodeId) -> Result<(Ring, RingDiff), PlacementError> {
        if self.members.contains(&node) {
            return Err(PlacementError::JoinAlreadyMember { node });
        }
        let mut layout = Layout::of(self);
        let moves = layout.join(node);
        layout.balance_primaries(moves.iter().map(|m| m.partition).collect());
        Ok(self.finish(layout, moves))
    }

    /// Remove `node`. Its replicas move, each to the least loaded member not already
    /// holding that partition (lowest id first among equals); where that greedy
    /// choice would leave a member outside the floor or ceiling, the leaver's
    /// replicas are re-paired so that none is. Only if no pairing can balance the
    /// ring (a member short of the floor already holds every partition the leaver
    /// had) do further replicas move, most loaded to least loaded, listed after the
    /// leaver's in the diff.
    pub fn leave(&self, node: NodeId) -> Result<(Ring, RingDiff), PlacementError> {
        if !self.members.contains(&node) {
            return Err(PlacementError::LeaveNotMember { node });
        }
        let members_left = self.members.len() - 1;
        if members_left < usize::from(self.replicas_n) {
            return Err(PlacementError::LeaveTooFewMembers {
                node,
                members_left,
                replicas_n: self.replicas_n,
            });
        }
        let mut layout = Layout::of(self);
        let moves = layout.leave(node);
        layout.balance_primaries(moves.iter().map(|m| m.partition).collect());
        Ok(self.finish(layout, moves))
    }

    /// Put `new` in exactly `old`'s places (same partitions, same positions); every
    /// other assignment stays as it was.
    pub fn replace(&self, old: NodeId, new: NodeId) -> Result<(Ring, RingDiff), PlacementError> {
        if !self.members.contains(&old) {
            return Err(PlacementError::ReplaceNotMember { old });
        }
        if self.members.contains(&new) {
            return Err(PlacementError::ReplaceAlreadyMember { new });
        }
        let mut layout = Layout::of(self);
        let moves = layout.replace(old, new);
        Ok(self.finish(layout, moves))
    }

    fn finish(&self, layout: Layout, moves: Vec<ReplicaMove>) -> (Ring, RingDiff) {
        let ring = self.successor(layout, 1);
        let diff = RingDiff::between(self, &ring, moves);
        (ring, diff)
    }

    fn successor(&self, layout: Layout, version_step: u64) -> Ring {
        Ring {
            version: self.version + version_step,
            partition_count: self.partition_count,
            replicas_n: self.replicas_n,
            members: layout.held.keys().copied().collect(),
            owners: layout.owners,
        }
    }
}

/// One member's share of a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub replicas: usize,
    pub primaries: usize,
}

/// How evenly a ring spreads replicas and coordinators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceReport {
    pub version: u64,
    pub replicas_total: usize,
    pub load_floor: usize,
    pub load_ceil: usize,
    pub primary_floor: usize,
    pub primary_ceil: usize,
    pub nodes: BTreeMap<NodeId, NodeLoad>,
}

impl BalanceReport {
    /// Every member holds the floor or ceiling of the average replica count.
    pub fn loads_balanced(&self) -> bool {
        self.nodes
            .values()
            .all(|n| (self.load_floor..=self.load_ceil).contains(&n.replicas))
    }

    /// Every member coordinates the floor or ceiling of the average partition count.
    pub fn primaries_balanced(&self) -> bool {
        self.nodes
            .values()
            .all(|n| (self.primary_floor..=self.primary_ceil).contains(&n.primaries))
    }

    /// Most minus fewest coordinated partitions over the members.
    pub fn primary_spread(&self) -> usize {
        let counts = self.nodes.values().map(|n| n.primaries);
        counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
    }
}

impl fmt::Display for BalanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ring v{}: {} replicas, load {}..={}, primaries {}..={}",
            self.version,
            self.replicas_total,
            self.load_floor,
            self.load_ceil,
            self.primary_floor,
            self.primary_ceil
        )?;
        writeln!(f, "{:>6} {:>9} {:>10}", "node", "replicas", "primaries")?;
        for (node, load) in &self.nodes {
            writeln!(f, "{node:>6} {:>9} {:>10}", load.replicas, load.primaries)?;
        }
        Ok(())
    }
}
