//! Placement: which partition a key falls in and which nodes hold each partition's
//! replicas, in preference order.
//!
//! Owns: the slot → partition mapping (a partition is a contiguous range of the 16384
//! key slots, so keys sharing a `{hash tag}` share a partition), the [`Ring`] (members,
//! replica count, one preference list of `n` distinct nodes per partition), the claim
//! algorithm that changes it (`join`, `leave`, `replace`, each returning a new ring
//! and a [`RingDiff`] of every replica move), and namespace pinning ([`Placement`]).
//!
//! Must not touch: I/O, time, randomness, liveness detection. This module never
//! decides that a node is down; callers pass liveness in as an `is_live` closure, and
//! a ring changes only by an explicit operation. Everything here is plain data in
//! `BTreeMap`/`BTreeSet`, so the same inputs give the same ring on every node.
//!
//! The claim moves the minimum: on join the new node takes replicas only from the
//! most loaded nodes, until every node holds the floor or ceiling of
//! `partition_count * n / members` replicas; on leave the leaving node's replicas
//! move, each to the least loaded node that does not already hold that partition,
//! and nothing else moves unless no such placement can balance the ring (see
//! [`Ring::leave`]). Coordinator (first-in-list) counts are kept to their floor or
//! ceiling by choosing which replicas the joiner takes and by reordering preference
//! lists, which moves no data: in the partitions an operation touched when that is
//! enough, else anywhere.

use crate::slot::{key_slot, SLOT_COUNT};
use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;

/// Index of a partition, `0..partition_count`.
pub type PartitionId = u32;

pub const PARTITION_COUNT_DEFAULT: u32 = 256;
pub const PARTITION_COUNT_MIN: u32 = 8;
pub const PARTITION_COUNT_MAX: u32 = SLOT_COUNT as u32;

/// Whether `partition_count` is a power of two in
/// `PARTITION_COUNT_MIN..=PARTITION_COUNT_MAX`.
pub fn partition_count_is_valid(partition_count: u32) -> bool {
    partition_count.is_power_of_two()
        && (PARTITION_COUNT_MIN..=PARTITION_COUNT_MAX).contains(&partition_count)
}

/// The partition holding `slot`: `slot * partition_count / 16384`. Slots at or past
/// `SLOT_COUNT` wrap, as `key_slot` never produces them.
pub fn partition_of_slot(slot: u16, partition_count: u32) -> PartitionId {
    let slot = u64::from(slot % SLOT_COUNT);
    (slot * u64::from(partition_count) / u64::from(SLOT_COUNT)) as PartitionId
}

/// The partition holding `key` (its `{hash tag}` if it has one).
pub fn partition_of_key(key: &[u8], partition_count: u32) -> PartitionId {
    partition_of_slot(key_slot(key), partition_count)
}

/// The slots of `partition`, first to last. Empty (`1..=0`) for a partition outside
/// `0..partition_count` or an invalid `partition_count`.
pub fn slot_range(partition: PartitionId, partition_count: u32) -> RangeInclusive<u16> {
    if !partition_count_is_valid(partition_count) || partition >= partition_count {
        // Empty: its start is past its end.
        return RangeInclusive::new(1, 0);
    }
    let slots_per_partition = u32::from(SLOT_COUNT) / partition_count;
    let first = partition * slots_per_partition;
    let last = first + slots_per_partition - 1;
    // Both are below SLOT_COUNT, so they fit in u16.
    (first as u16)..=(last as u16)
}

/// Why a placement could not be built or changed. Each names the operation refused
/// and the subject it was refused for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementError {
    PartitionCountInvalid {
        partition_count: u32,
    },
    ReplicaCountInvalid {
        replicas_n: u8,
    },
    TooFewMembers {
        members: usize,
        replicas_n: u8,
    },
    JoinAlreadyMember {
        node: NodeId,
    },
    LeaveNotMember {
        node: NodeId,
    },
    LeaveTooFewMembers {
        node: NodeId,
        members_left: usize,
        replicas_n: u8,
    },
    ReplaceNotMember {
        old: NodeId,
    },
    ReplaceAlreadyMember {
        new: NodeId,
    },
    /// A decoded ring (from a peer or a file) lacks one list per partition.
    RingListCount {
        lists: usize,
        partition_count: u32,
    },
    /// A decoded ring breaks an invariant of one partition's list.
    RingMalformed {
        partition: PartitionId,
        defect: RingDefect,
    },
    QuorumInvalid {
        namespace: u8,
        replicas_n: u8,
        r: u8,
        w: u8,
    },
    NamespaceNodeNotMember {
        namespace: u8,
        node: NodeId,
    },
    NamespacePinnedTwice {
        namespace: u8,
    },
    NamespaceNotPinned {
        namespace: u8,
    },
    /// An operation on a pinned namespace's ring failed.
    Namespace {
        namespace: u8,
        error: Box<PlacementError>,
    },
}

/// What is wrong with a decoded ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingDefect {
    ListLength,
    DuplicateOwner(NodeId),
    OwnerNotMember(NodeId),
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::PartitionCountInvalid { partition_count } => write!(
                f,
                "cannot build ring: partition count {partition_count} is not a power of two in {PARTITION_COUNT_MIN}..={PARTITION_COUNT_MAX}"
            ),
            PlacementError::ReplicaCountInvalid { replicas_n } => write!(
                f,
                "cannot build ring: replica count {replicas_n} is below 1"
            ),
            PlacementError::TooFewMembers {
                members,
                replicas_n,
            } => write!(
                f,
                "cannot build ring: {members} members cannot hold {replicas_n} distinct replicas"
            ),
            PlacementError::JoinAlreadyMember { node } => {
                write!(f, "cannot join node {node}: it is already a member")
            }
            PlacementError::LeaveNotMember { node } => {
                write!(f, "cannot remove node {node}: it is not a member")
            }
            PlacementError::LeaveTooFewMembers {
                node,
                members_left,
                replicas_n,
            } => write!(
                f,
                "cannot remove node {node}: {members_left} members would be left for {replicas_n} replicas"
            ),
            PlacementError::ReplaceNotMember { old } => {
                write!(f, "cannot replace node {old}: it is not a member")
            }
            PlacementError::ReplaceAlreadyMember { new } => write!(
                f,
                "cannot replace with node {new}: it is already a member"
            ),
            PlacementError::RingListCount {
                lists,
                partition_count,
            } => write!(
                f,
                "cannot accept ring: it has {lists} preference lists for {partition_count} partitions"
            ),
            PlacementError::RingMalformed { partition, defect } => match defect {
                RingDefect::ListLength => write!(
                    f,
                    "cannot accept ring: partition {partition} does not list exactly n owners"
                ),
                RingDefect::DuplicateOwner(node) => write!(
                    f,
                    "cannot accept ring: partition {partition} lists node {node} twice"
                ),
                RingDefect::OwnerNotMember(node) => write!(
                    f,
                    "cannot accept ring: partition {partition} lists node {node}, which is not a member"
                ),
            },
            PlacementError::QuorumInvalid {
                namespace,
                replicas_n,
                r,
                w,
            } => write!(
                f,
                "cannot pin namespace {namespace}: r={r} and w={w} must each be in 1..={replicas_n} (n)"
            ),
            PlacementError::NamespaceNodeNotMember { namespace, node } => write!(
                f,
                "cannot pin namespace {namespace}: node {node} is not a cluster member"
            ),
            PlacementError::NamespacePinnedTwice { namespace } => {
                write!(f, "cannot pin namespace {namespace}: it is already pinned")
            }
            PlacementError::NamespaceNotPinned { namespace } => {
                write!(f, "cannot change namespace {namespace}: it is not pinned")
            }
            PlacementError::Namespace { namespace, error } => {
                write!(f, "namespace {namespace}: {error}")
            }
        }
    }
}

impl std::error::Error for PlacementError {}

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
    version: u64,
    partition_count: u32,
    replicas_n: u8,
    members: BTreeSet<NodeId>,
    /// Per partition: `replicas_n` distinct members, in preference order.
    owners: Vec<Vec<NodeId>>,
}

/// A ring as decoded, before its invariants are checked.
#[derive(Deserialize)]
struct RingWire {
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

fn check_counts(
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
fn floor_ceil(total: usize, parts: usize) -> (usize, usize) {
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

/// A ring being changed: owners plus indexes of who holds what.
struct Layout {
    partition_count: u32,
    replicas_n: usize,
    owners: Vec<Vec<NodeId>>,
    /// Every member (even one holding nothing) → the partitions it holds.
    held: BTreeMap<NodeId, BTreeSet<PartitionId>>,
    primaries: BTreeMap<NodeId, usize>,
}

impl Layout {
    fn of(ring: &Ring) -> Layout {
        let mut held: BTreeMap<NodeId, BTreeSet<PartitionId>> = ring
            .members
            .iter()
            .map(|node| (*node, BTreeSet::new()))
            .collect();
        let mut primaries: BTreeMap<NodeId, usize> =
            ring.members.iter().map(|node| (*node, 0)).collect();
        for (partition, list) in ring.owners.iter().enumerate() {
            for node in list {
                held.entry(*node)
                    .or_default()
                    .insert(partition as PartitionId);
            }
            if let Some(first) = list.first() {
                *primaries.entry(*first).or_default() += 1;
            }
        }
        Layout {
            partition_count: ring.partition_count,
            replicas_n: usize::from(ring.replicas_n),
            owners: ring.owners.clone(),
            held,
            primaries,
        }
    }

    fn load(&self, node: NodeId) -> usize {
        self.held.get(&node).map_or(0, BTreeSet::len)
    }

    fn primary_count(&self, node: NodeId) -> usize {
        self.primaries.get(&node).copied().unwrap_or(0)
    }

    fn holds(&self, node: NodeId, partition: PartitionId) -> bool {
        self.held
            .get(&node)
            .is_some_and(|set| set.contains(&partition))
    }

    fn position(&self, partition: PartitionId, node: NodeId) -> Option<usize> {
        self.owners
            .get(partition as usize)?
            .iter()
            .position(|n| *n == node)
    }

    fn add_member(&mut self, node: NodeId) {
        self.held.entry(node).or_default();
        self.primaries.entry(node).or_default();
    }

    /// Give `from`'s replica of `partition` to `to`, in the same list position.
    fn hand_over(&mut self, partition: PartitionId, from: NodeId, to: NodeId) -> ReplicaMove {
        let position = self.position(partition, from);
        debug_assert!(position.is_some(), "{from} does not hold {partition}");
        debug_assert!(!self.holds(to, partition), "{to} already holds {partition}");
        if let (Some(position), Some(list)) = (position, self.owners.get_mut(partition as usize)) {
            list[position] = to;
            if position == 0 {
                if let Some(count) = self.primaries.get_mut(&from) {
                    *count -= 1;
                }
                *self.primaries.entry(to).or_default() += 1;
            }
        }
        if let Some(set) = self.held.get_mut(&from) {
            set.remove(&partition);
        }
        self.held.entry(to).or_default().insert(partition);
        ReplicaMove {
            partition,
            from,
            to,
        }
    }

    fn totals(&self) -> (usize, usize) {
        (
            self.partition_count as usize * self.replicas_n,
            self.held.len(),
        )
    }

    /// The most loaded member other than `except`, lowest id among equals.
    fn most_loaded_except(&self, except: NodeId) -> Option<(NodeId, usize)> {
        self.held
            .iter()
            .filter(|(node, _)| **node != except)
            .map(|(node, set)| (*node, set.len()))
            .max_by_key(|(node, load)| (*load, Reverse(*node)))
    }

    fn join(&mut self, joiner: NodeId) -> Vec<ReplicaMove> {
        self.add_member(joiner);
        let (replicas_total, members) = self.totals();
        let (load_floor, load_ceil) = floor_ceil(replicas_total, members);
        let (primary_floor, primary_ceil) = floor_ceil(self.partition_count as usize, members);
        let mut moves = Vec::with_capacity(load_floor);
        loop {
            let joiner_load = self.load(joiner);
            let Some((donor, donor_load)) = self.most_loaded_except(joiner) else {
                break;
            };
            if joiner_load >= load_floor && donor_load <= load_ceil {
                break;
            }
            // On a ring that was balanced this never triggers; on any other it stops
            // a move that would not narrow the spread.
            if donor_load <= joiner_load + 1 {
                break;
            }
            let want_primary = self.primary_count(donor) > primary_floor
                && self.primary_count(joiner) < primary_ceil;
            // Spread what the joiner takes over the whole partition range.
            let start = (joiner_load * self.partition_count as usize / load_floor.max(1))
                % self.partition_count as usize;
            let Some(partition) = self.pick(donor, joiner, want_primary, start as PartitionId)
            else {
                break;
            };
            moves.push(self.hand_over(partition, donor, joiner));
        }
        moves
    }

    /// A partition `donor` holds and `joiner` does not, scanning from `start` and
    /// wrapping; one where the donor is coordinator if `want_primary`, else one where
    /// it is not, if there is such a partition.
    fn pick(
        &self,
        donor: NodeId,
        joiner: NodeId,
        want_primary: bool,
        start: PartitionId,
    ) -> Option<PartitionId> {
        let set = self.held.get(&donor)?;
        let mut fallback = None;
        for &partition in set.range(start..).chain(set.range(..start)) {
            if self.holds(joiner, partition) {
                continue;
            }
            let donor_is_primary = self.position(partition, donor) == Some(0);
            if donor_is_primary == want_primary {
                return Some(partition);
            }
            fallback.get_or_insert(partition);
        }
        fallback
    }

    fn leave(&mut self, leaver: NodeId) -> Vec<ReplicaMove> {
        let items: Vec<PartitionId> = self
            .held
            .remove(&leaver)
            .map(|set| set.into_iter().collect())
            .unwrap_or_default();
        self.primaries.remove(&leaver);
        let (replicas_total, members) = self.totals();
        let (load_floor, load_ceil) = floor_ceil(replicas_total, members);
        let current: BTreeMap<NodeId, usize> =
            self.held.iter().map(|(n, set)| (*n, set.len())).collect();
        let bounds: BTreeMap<NodeId, (usize, usize)> = current
            .iter()
            .map(|(node, load)| {
                (
                    *node,
                    (
                        load_floor.saturating_sub(*load),
                        load_ceil.saturating_sub(*load),
                    ),
                )
            })
            .collect();
        let eligible: Vec<Vec<NodeId>> = items
            .iter()
            .map(|partition| {
                let list = self.owners.get(*partition as usize);
                self.held
                    .keys()
                    .copied()
                    .filter(|node| list.is_none_or(|l| !l.contains(node)))
                    .collect()
            })
            .collect();
        let mut matching = Matching {
            eligible,
            bounds,
            assigned: vec![None; items.len()],
            received: current.keys().map(|node| (*node, 0)).collect(),
        };
        // Greedy: each replica to the least loaded eligible member with room.
        for item in 0..items.len() {
            let choice = matching.eligible[item]
                .iter()
                .copied()
                .filter(|node| matching.has_room(*node))
                .min_by_key(|node| {
                    (
                        current.get(node).copied().unwrap_or(0) + matching.received(*node),
                        *node,
                    )
                });
            if let Some(node) = choice {
                matching.assign(item, node);
            }
        }
        // Repair what the greedy order got wrong, moving only the leaver's replicas.
        for item in 0..items.len() {
            if matching.assigned[item].is_none() && !matching.augment_upper(item) {
                // No balanced home exists (the ring was unbalanced before): least
                // loaded eligible member, ignoring the ceiling.
                let choice = matching.eligible[item].iter().copied().min_by_key(|node| {
                    (
                        current.get(node).copied().unwrap_or(0) + matching.received(*node),
                        *node,
                    )
                });
                if let Some(node) = choice {
                    matching.assign(item, node);
                }
            }
        }
        let nodes: Vec<NodeId> = current.keys().copied().collect();
        for node in nodes {
            while matching.received(node) < matching.lower(node) {
                if !matching.augment_lower(node) {
                    break;
                }
            }
        }
        let mut moves = Vec::with_capacity(items.len());
        for (item, partition) in items.iter().enumerate() {
            match matching.assigned[item] {
                Some(to) => moves.push(self.hand_over(*partition, leaver, to)),
                // Only when fewer than n members would remain, which `Ring::leave`
                // refuses before getting here.
                None => debug_assert!(false, "no member can take partition {partition}"),
            }
        }
        self.level(&mut moves);
        moves
    }

    /// Move replicas from the most loaded member to the least loaded one until no
    /// two members differ by more than one. After a leave this runs only when no
    /// placement of the leaver's replicas alone can balance the ring: a member short
    /// of the floor already holds every partition the leaver had (possible when a
    /// member holds only a few replicas, e.g. 8 partitions on 12 nodes).
    fn level(&mut self, moves: &mut Vec<ReplicaMove>) {
        while let Some((short, short_load)) = self.least_loaded() {
            let Some((full, full_load)) = self.most_loaded_except(short) else {
                break;
            };
            if full_load <= short_load + 1 {
                break;
            }
            // `full` holds more partitions than `short`, so one of them is new to it.
            let Some(partition) = self.pick(full, short, false, 0) else {
                break;
            };
            moves.push(self.hand_over(partition, full, short));
        }
    }

    /// The least loaded member, lowest id among equals.
    fn least_loaded(&self) -> Option<(NodeId, usize)> {
        self.held
            .iter()
            .map(|(node, set)| (*node, set.len()))
            .min_by_key(|(node, load)| (*load, *node))
    }

    fn replace(&mut self, old: NodeId, new: NodeId) -> Vec<ReplicaMove> {
        self.add_member(new);
        let partitions: Vec<PartitionId> = self
            .held
            .get(&old)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        let moves = partitions
            .into_iter()
            .map(|partition| self.hand_over(partition, old, new))
            .collect();
        self.held.remove(&old);
        self.primaries.remove(&old);
        moves
    }

    /// Bring every member's coordinator count to the floor or ceiling of
    /// `partition_count / members` by reordering preference lists: a coordinator
    /// hands its place to another owner of the same partition, along a chain of
    /// partitions when no single swap helps. Moves no replica. Searches the
    /// partitions the operation `touched` first, and all partitions only if those
    /// cannot reach the floor and ceiling. Stops when no chain exists.
    fn balance_primaries(&mut self, touched: BTreeSet<PartitionId>) {
        let (floor, ceil) = floor_ceil(self.partition_count as usize, self.held.len());
        for scope in [Some(&touched), None] {
            // Each shift lowers one member above the ceiling (or raises one below the
            // floor) by one and pushes no other member past a bound, so this ends.
            loop {
                let over = self
                    .primaries
                    .iter()
                    .find(|(_, count)| **count > ceil)
                    .map(|(node, _)| *node);
                if let Some(node) = over {
                    if self.shift_primary(node, true, |count| count < ceil, scope) {
                        continue;
                    }
                }
                let under = self
                    .primaries
                    .iter()
                    .find(|(_, count)| **count < floor)
                    .map(|(node, _)| *node);
                if let Some(node) = under {
                    if self.shift_primary(node, false, |count| count > floor, scope) {
                        continue;
                    }
                }
                break;
            }
        }
    }

    /// Breadth first from `start` over "`x` coordinates a partition `y` also owns"
    /// (`away`: `start` gives a coordinatorship away) or its reverse (`start` gains
    /// one), within `scope` (all partitions when `None`). At the first member whose
    /// coordinator count passes `accept`, shift along the path found and return true.
    fn shift_primary(
        &mut self,
        start: NodeId,
        away: bool,
        accept: impl Fn(usize) -> bool,
        scope: Option<&BTreeSet<PartitionId>>,
    ) -> bool {
        // For each member reached: (partition, the member there that becomes its
        // coordinator, the member reached before).
        let mut parent: BTreeMap<NodeId, (PartitionId, NodeId, NodeId)> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut visited = BTreeSet::from([start]);
        while let Some(node) = queue.pop_front() {
            let Some(partitions) = self.held.get(&node) else {
                continue;
            };
            for &partition in partitions {
                if scope.is_some_and(|s| !s.contains(&partition)) {
                    continue;
                }
                let Some(list) = self.owners.get(partition as usize) else {
                    continue;
                };
                let Some(&first) = list.first() else {
                    continue;
                };
                // away: `node` coordinates here and hands over to another owner.
                // toward: `node` owns it and takes over from its coordinator.
                let next: Vec<(NodeId, NodeId)> = match (away, first == node) {
                    (true, true) => list[1..].iter().map(|other| (*other, *other)).collect(),
                    (false, false) => vec![(first, node)],
                    _ => continue,
                };
                for (reached, new_first) in next {
                    if !visited.insert(reached) {
                        continue;
                    }
                    parent.insert(reached, (partition, new_first, node));
                    if accept(self.primary_count(reached)) {
                        let mut at = reached;
                        while let Some(&(partition, new_first, before)) = parent.get(&at) {
                            self.promote(partition, new_first);
                            if before == start {
                                return true;
                            }
                            at = before;
                        }
                        return false;
                    }
                    queue.push_back(reached);
                }
            }
        }
        false
    }

    /// Make `node` the coordinator of `partition` by swapping it with the current
    /// one.
    fn promote(&mut self, partition: PartitionId, node: NodeId) {
        let Some(position) = self.position(partition, node) else {
            return;
        };
        let Some(list) = self.owners.get_mut(partition as usize) else {
            return;
        };
        let previous = list[0];
        list.swap(0, position);
        if previous != node {
            if let Some(count) = self.primaries.get_mut(&previous) {
                *count -= 1;
            }
            *self.primaries.entry(node).or_default() += 1;
        }
    }
}

/// Which member receives each of a leaving node's replicas: a bipartite assignment
/// where member `i` must receive between `bounds[i].0` and `bounds[i].1` replicas and
/// replica `j` may go only to `eligible[j]` (members not holding its partition).
struct Matching {
    eligible: Vec<Vec<NodeId>>,
    /// Per member: (fewest, most) replicas it should receive.
    bounds: BTreeMap<NodeId, (usize, usize)>,
    assigned: Vec<Option<NodeId>>,
    received: BTreeMap<NodeId, usize>,
}

impl Matching {
    fn received(&self, node: NodeId) -> usize {
        self.received.get(&node).copied().unwrap_or(0)
    }

    fn lower(&self, node: NodeId) -> usize {
        self.bounds.get(&node).map_or(0, |b| b.0)
    }

    fn has_room(&self, node: NodeId) -> bool {
        self.received(node) < self.bounds.get(&node).map_or(0, |b| b.1)
    }

    fn assign(&mut self, item: usize, node: NodeId) {
        if let Some(previous) = self.assigned[item].replace(node) {
            if let Some(count) = self.received.get_mut(&previous) {
                *count -= 1;
            }
        }
        *self.received.entry(node).or_default() += 1;
    }

    /// Place unassigned `item` by shifting assigned items along a path of full
    /// members to one with room. Breadth first, members in id order.
    fn augment_upper(&mut self, item: usize) -> bool {
        // For each member reached: the item that would move onto it.
        let mut reached_by: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([item]);
        while let Some(current) = queue.pop_front() {
            for &node in &self.eligible[current] {
                if reached_by.contains_key(&node) {
                    continue;
                }
                reached_by.insert(node, current);
                if self.has_room(node) {
                    // Walk back: each item moves onto the member that reached it.
                    let mut target = node;
                    loop {
                        let Some(&moving) = reached_by.get(&target) else {
                            return false;
                        };
                        let previous = self.assigned[moving];
                        self.assign(moving, target);
                        match previous {
                            Some(p) => target = p,
                            None => return true,
                        }
                    }
                }
                for (other, assigned) in self.assigned.iter().enumerate() {
                    if *assigned == Some(node) {
                        queue.push_back(other);
                    }
                }
            }
        }
        false
    }

    /// Raise `short` by one received replica, taking it along a path that ends at a
    /// member receiving more than its minimum. Breadth first, items in order.
    fn augment_lower(&mut self, short: NodeId) -> bool {
        // For each member reached: (item it would give, member that item goes to).
        let mut gives: BTreeMap<NodeId, (usize, NodeId)> = BTreeMap::new();
        let mut queue = VecDeque::from([short]);
        let mut visited = BTreeSet::from([short]);
        while let Some(taker) = queue.pop_front() {
            for item in 0..self.assigned.len() {
                let Some(holder) = self.assigned[item] else {
                    continue;
                };
                if visited.contains(&holder) || !self.eligible[item].contains(&taker) {
                    continue;
                }
                visited.insert(holder);
                gives.insert(holder, (item, taker));
                if self.received(holder) > self.lower(holder) {
                    let mut giver = holder;
                    while let Some(&(moving, to)) = gives.get(&giver) {
                        self.assign(moving, to);
                        if to == short {
                            return true;
                        }
                        giver = to;
                    }
                    return false;
                }
                queue.push_back(holder);
            }
        }
        false
    }
}

/// A namespace whose keys live on a chosen subset of the cluster, with its own
/// replica count and quorums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlacement {
    pub namespace: u8,
    pub nodes: BTreeSet<NodeId>,
    pub replicas_n: u8,
    pub r: u8,
    pub w: u8,
}

impl NamespacePlacement {
    /// Check the quorums against `replicas_n` and the subset against the cluster.
    pub fn validate(&self, cluster: &BTreeSet<NodeId>) -> Result<(), PlacementError> {
        let namespace = self.namespace;
        let quorum = 1..=self.replicas_n;
        if self.replicas_n == 0 || !quorum.contains(&self.r) || !quorum.contains(&self.w) {
            return Err(PlacementError::QuorumInvalid {
                namespace,
                replicas_n: self.replicas_n,
                r: self.r,
                w: self.w,
            });
        }
        if let Some(node) = self.nodes.iter().find(|node| !cluster.contains(node)) {
            return Err(PlacementError::NamespaceNodeNotMember {
                namespace,
                node: *node,
            });
        }
        if self.nodes.len() < usize::from(self.replicas_n) {
            return Err(PlacementError::Namespace {
                namespace,
                error: Box::new(PlacementError::TooFewMembers {
                    members: self.nodes.len(),
                    replicas_n: self.replicas_n,
                }),
            });
        }
        Ok(())
    }
}

/// A pinned namespace's ring and quorums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedRing {
    pub ring: Ring,
    pub r: u8,
    pub w: u8,
}

/// The cluster's placement: a default ring over every member, and per pinned
/// namespace a ring over its node subset (same partition count, same claim).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlacementWire")]
pub struct Placement {
    default: Ring,
    pinned: BTreeMap<u8, PinnedRing>,
}

#[derive(Deserialize)]
struct PlacementWire {
    default: Ring,
    pinned: BTreeMap<u8, PinnedRing>,
}

impl TryFrom<PlacementWire> for Placement {
    type Error = PlacementError;

    fn try_from(wire: PlacementWire) -> Result<Placement, PlacementError> {
        for (namespace, pin) in &wire.pinned {
            NamespacePlacement {
                namespace: *namespace,
                nodes: pin.ring.members().clone(),
                replicas_n: pin.ring.replicas_n(),
                r: pin.r,
                w: pin.w,
            }
            .validate(wire.default.members())?;
        }
        Ok(Placement {
            default: wire.default,
            pinned: wire.pinned,
        })
    }
}

/// What a cluster-wide operation changed, ring by ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementDiff {
    pub default: Option<RingDiff>,
    pub pinned: BTreeMap<u8, RingDiff>,
}

impl Placement {
    /// Pin each namespace in `pins` to its subset of `default`'s members.
    pub fn new(
        default: Ring,
        pins: impl IntoIterator<Item = NamespacePlacement>,
    ) -> Result<Placement, PlacementError> {
        let mut placement = Placement {
            default,
            pinned: BTreeMap::new(),
        };
        for pin in pins {
            placement = placement.pin(pin)?;
        }
        Ok(placement)
    }

    /// A copy with one more pinned namespace.
    pub fn pin(&self, pin: NamespacePlacement) -> Result<Placement, PlacementError> {
        let namespace = pin.namespace;
        if self.pinned.contains_key(&namespace) {
            return Err(PlacementError::NamespacePinnedTwice { namespace });
        }
        pin.validate(self.default.members())?;
        let ring = Ring::new(self.default.partition_count(), pin.replicas_n, pin.nodes).map_err(
            |error| PlacementError::Namespace {
                namespace,
                error: Box::new(error),
            },
        )?;
        let mut next = self.clone();
        next.pinned.insert(
            namespace,
            PinnedRing {
                ring,
                r: pin.r,
                w: pin.w,
            },
        );
        Ok(next)
    }

    pub fn default_ring(&self) -> &Ring {
        &self.default
    }

    /// The same placement numbered `version` (the cluster map numbers every change
    /// by its default ring's version, pinned-namespace changes included).
    pub fn numbered(mut self, version: u64) -> Placement {
        self.default.version = version;
        self
    }

    /// The ring placing `namespace`'s keys: its pinned ring, else the default.
    pub fn ring_for(&self, namespace: u8) -> &Ring {
        self.pinned
            .get(&namespace)
            .map_or(&self.default, |pin| &pin.ring)
    }

    /// The pinned ring and quorums of `namespace`, if it is pinned.
    pub fn pin_for(&self, namespace: u8) -> Option<&PinnedRing> {
        self.pinned.get(&namespace)
    }

    /// Whether pinned `namespace`'s ring places every partition as the default
    /// ring does: the first unpin step ran, and the next one drops the pin.
    pub fn unpinning(&self, namespace: u8) -> bool {
        self.pinned
            .get(&namespace)
            .is_some_and(|pin| places_alike(&pin.ring, &self.default))
    }

    pub fn pinned(&self) -> impl Iterator<Item = (u8, &PinnedRing)> {
        self.pinned.iter().map(|(namespace, pin)| (*namespace, pin))
    }

    /// Add `node` to the cluster (the default ring only; pinned subsets change only
    /// by [`Placement::join_pinned`]).
    pub fn join(&self, node: NodeId) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, diff) = self.default.join(node)?;
        let next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        Ok((
            next,
            PlacementDiff {
                default: Some(diff),
                pinned: BTreeMap::new(),
            },
        ))
    }

    /// Remove `node` from the cluster and from every pinned namespace holding it.
    /// Refused if any of those rings would keep fewer members than its `n`.
    pub fn leave(&self, node: NodeId) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, default_diff) = self.default.leave(node)?;
        let mut next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        let mut pinned = BTreeMap::new();
        for (namespace, pin) in &self.pinned {
            if pin.ring.is_member(node) {
                let (ring, diff) =
                    pin.ring
                        .leave(node)
                        .map_err(|error| PlacementError::Namespace {
                            namespace: *namespace,
                            error: Box::new(error),
                        })?;
                next.pinned.insert(*namespace, PinnedRing { ring, ..*pin });
                pinned.insert(*namespace, diff);
            }
        }
        Ok((
            next,
            PlacementDiff {
                default: Some(default_diff),
                pinned,
            },
        ))
    }

    /// Put `new` in `old`'s places in the default ring and every pinned ring.
    pub fn replace(
        &self,
        old: NodeId,
        new: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, default_diff) = self.default.replace(old, new)?;
        let mut next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        let mut pinned = BTreeMap::new();
        for (namespace, pin) in &self.pinned {
            if pin.ring.is_member(old) {
                let (ring, diff) =
                    pin.ring
                        .replace(old, new)
                        .map_err(|error| PlacementError::Namespace {
                            namespace: *namespace,
                            error: Box::new(error),
                        })?;
                next.pinned.insert(*namespace, PinnedRing { ring, ..*pin });
                pinned.insert(*namespace, diff);
            }
        }
        Ok((
            next,
            PlacementDiff {
                default: Some(default_diff),
                pinned,
            },
        ))
    }

    /// Add cluster member `node` to pinned `namespace`'s subset.
    pub fn join_pinned(
        &self,
        namespace: u8,
        node: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let Some(pin) = self.pinned.get(&namespace) else {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        };
        if !self.default.is_member(node) {
            return Err(PlacementError::NamespaceNodeNotMember { namespace, node });
        }
        let (ring, diff) = pin
            .ring
            .join(node)
            .map_err(|error| PlacementError::Namespace {
                namespace,
                error: Box::new(error),
            })?;
        let mut next = self.clone();
        next.pinned.insert(namespace, PinnedRing { ring, ..*pin });
        Ok((
            next,
            PlacementDiff {
                default: None,
                pinned: BTreeMap::from([(namespace, diff)]),
            },
        ))
    }

    /// One step of unpinning `namespace`, whose keys go back to the default ring.
    /// While its pinned ring places them differently from the default ring, the
    /// step makes that ring a copy of the default one (quorums `r`, `w`): a pin
    /// change like any other, whose handoffs move the keys onto the default
    /// ring's owners. Once the two place every partition alike, the step drops
    /// the pin, which moves nothing ([`Placement::unpinning`] tells the two
    /// apart).
    pub fn unpin(&self, namespace: u8, r: u8, w: u8) -> Result<Placement, PlacementError> {
        if !self.pinned.contains_key(&namespace) {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        }
        let mut next = self.clone();
        // Planted bug: the first step already drops the pin, so nothing hands the
        // namespace's keys to the default ring's owners.
        if self.unpinning(namespace) || cfg!(feature = "bug-unpin-skips-handoff") {
            next.pinned.remove(&namespace);
            return Ok(next);
        }
        NamespacePlacement {
            namespace,
            nodes: self.default.members().clone(),
            replicas_n: self.default.replicas_n(),
            r,
            w,
        }
        .validate(self.default.members())?;
        next.pinned.insert(
            namespace,
            PinnedRing {
                ring: self.default.clone(),
                r,
                w,
            },
        );
        Ok(next)
    }

    /// Remove `node` from pinned `namespace`'s subset (it stays a cluster member).
    pub fn leave_pinned(
        &self,
        namespace: u8,
        node: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let Some(pin) = self.pinned.get(&namespace) else {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        };
        let (ring, diff) = pin
            .ring
            .leave(node)
            .map_err(|error| PlacementError::Namespace {
                namespace,
                error: Box::new(error),
            })?;
        let mut next = self.clone();
        next.pinned.insert(namespace, PinnedRing { ring, ..*pin });
        Ok((
            next,
            PlacementDiff {
                default: None,
                pinned: BTreeMap::from([(namespace, diff)]),
            },
        ))
    }
}

/// Whether two rings give every partition the same preference list.
fn places_alike(a: &Ring, b: &Ring) -> bool {
    a.partition_count() == b.partition_count()
        && (0..a.partition_count()).all(|p| a.preference_list(p) == b.preference_list(p))
}

/// Whether `acks` replies meet a quorum of `needed` (`r` or `w`).
pub fn quorum_met(acks: usize, needed: u8) -> bool {
    acks >= usize::from(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(partition_count: u32, replicas_n: u8, members: &[NodeId]) -> Ring {
        Ring::new(partition_count, replicas_n, members.iter().copied()).expect("valid ring")
    }

    /// Every invariant a ring must keep after any operation.
    fn assert_invariants(ring: &Ring) {
        ring.validate().expect("well formed");
        let report = ring.balance_report();
        assert!(report.loads_balanced(), "loads unbalanced:\n{report}");
        assert_eq!(
            report.nodes.values().map(|n| n.replicas).sum::<usize>(),
            report.replicas_total
        );
        for partition in 0..ring.partition_count() {
            let list = ring.preference_list(partition);
            assert_eq!(list.len(), usize::from(ring.replicas_n()));
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(
                distinct.len(),
                list.len(),
                "partition {partition}: {list:?}"
            );
            assert!(list.iter().all(|node| ring.is_member(*node)));
        }
    }

    fn owner_sets(ring: &Ring) -> Vec<BTreeSet<NodeId>> {
        ring.owners
            .iter()
            .map(|list| list.iter().copied().collect())
            .collect()
    }

    #[test]
    fn partitions_are_contiguous_slot_ranges() {
        for partition_count in [8, 256, 1024, 16384] {
            let mut next_slot = 0u32;
            for partition in 0..partition_count {
                let range = slot_range(partition, partition_count);
                assert_eq!(u32::from(*range.start()), next_slot);
                for slot in [*range.start(), *range.end()] {
                    assert_eq!(partition_of_slot(slot, partition_count), partition);
                }
                next_slot = u32::from(*range.end()) + 1;
            }
            assert_eq!(next_slot, u32::from(SLOT_COUNT));
        }
        assert_eq!(slot_range(0, 256), 0..=63);
        assert_eq!(slot_range(255, 256), 16320..=16383);
        assert!(slot_range(256, 256).is_empty());
        assert!(slot_range(0, 100).is_empty());
        assert_eq!(partition_of_slot(16383, 8), 7);
    }

    #[test]
    fn keys_sharing_a_hash_tag_share_a_partition() {
        let ring = ring(256, 3, &[1, 2, 3]);
        let partition = ring.partition_of_key(b"{user1000}.following");
        assert_eq!(ring.partition_of_key(b"{user1000}.followers"), partition);
        assert_eq!(ring.partition_of_key(b"user1000"), partition);
        assert_eq!(partition, key_slot(b"user1000") as u32 * 256 / 16384);
        assert!(ring.slot_range(partition).contains(&key_slot(b"user1000")));
    }

    #[test]
    fn bad_counts_are_refused_with_a_reason() {
        for partition_count in [0, 4, 7, 100, 32768] {
            let err = Ring::new(partition_count, 1, [1]).unwrap_err();
            assert_eq!(
                err,
                PlacementError::PartitionCountInvalid { partition_count }
            );
            assert!(err
                .to_string()
                .starts_with("cannot build ring: partition count"));
        }
        assert_eq!(
            Ring::new(256, 0, [1]).unwrap_err(),
            PlacementError::ReplicaCountInvalid { replicas_n: 0 }
        );
        let err = Ring::new(256, 3, [1, 2, 2]).unwrap_err();
        assert_eq!(
            err,
            PlacementError::TooFewMembers {
                members: 2,
                replicas_n: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot build ring: 2 members cannot hold 3 distinct replicas"
        );
    }

    #[test]
    fn new_rings_are_balanced_for_many_shapes() {
        for partition_count in [8, 64, 256] {
            for replicas_n in 1..=4u8 {
                for members in usize::from(replicas_n)..=9 {
                    let nodes: Vec<NodeId> = (1..=members as NodeId).map(|n| n * 10).collect();
                    let ring = ring(partition_count, replicas_n, &nodes);
                    assert_invariants(&ring);
                    assert_eq!(ring.version(), 1);
                    let report = ring.balance_report();
                    assert!(
                        report.primaries_balanced(),
                        "P={partition_count} n={replicas_n} m={members}\n{report}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_members_in_any_order_give_the_same_ring() {
        let a = ring(256, 3, &[1, 2, 3, 4, 5, 6, 7]);
        let b = ring(256, 3, &[7, 3, 5, 1, 6, 2, 4, 3, 7]);
        assert_eq!(a, b);
        let (a, diff_a) = a.join(9).unwrap();
        let (b, diff_b) = b.join(9).unwrap();
        assert_eq!((&a, &diff_a), (&b, &diff_b));
        let (a, _) = a.leave(4).unwrap();
        let (b, _) = b.leave(4).unwrap();
        assert_eq!(a, b);
        // Built directly from the final member set: balanced too, though the layout
        // differs from the history-built one (placement depends on history).
        assert_invariants(&ring(256, 3, &[1, 2, 3, 5, 6, 7, 9]));
    }

    #[test]
    fn every_operation_increments_the_version() {
        let r1 = ring(64, 2, &[1, 2, 3]);
        let (r2, d2) = r1.join(4).unwrap();
        let (r3, d3) = r2.leave(1).unwrap();
        let (r4, d4) = r3.replace(2, 7).unwrap();
        assert_eq!(
            [r1.version(), r2.version(), r3.version(), r4.version()],
            [1, 2, 3, 4]
        );
        assert_eq!((d2.version_from, d2.version_to), (1, 2));
        assert_eq!((d3.version_from, d3.version_to), (2, 3));
        assert_eq!((d4.version_from, d4.version_to), (3, 4));
        assert_eq!(r4.members(), &BTreeSet::from([3, 4, 7]));
    }

    #[test]
    fn loads_stay_within_floor_and_ceiling_after_every_operation() {
        let mut current = ring(256, 3, &[1, 2, 3]);
        let ops: [(&str, NodeId); 10] = [
            ("join", 4),
            ("join", 5),
            ("join", 6),
            ("leave", 2),
            ("join", 7),
            ("join", 8),
            ("leave", 5),
            ("leave", 1),
            ("join", 9),
            ("leave", 8),
        ];
        for (op, node) in ops {
            let before = current.load(node);
            let (next, diff) = match op {
                "join" => current.join(node),
                _ => current.leave(node),
            }
            .unwrap();
            assert_invariants(&next);
            match op {
                "join" => {
                    assert_eq!(diff.moves.len(), next.load(node));
                    assert_eq!(diff.moves.len(), next.balance_report().load_floor);
                }
                _ => assert_eq!(diff.moves.len(), before),
            }
            current = next;
        }
    }

    #[test]
    fn replace_keeps_every_other_assignment() {
        let before = ring(256, 3, &[1, 2, 3, 4, 5]);
        let (after, diff) = before.replace(3, 30).unwrap();
        assert_invariants(&after);
        assert_eq!(diff.moves.len(), before.load(3));
        assert_eq!(after.load(30), before.load(3));
        assert_eq!(after.primary_count(30), before.primary_count(3));
        for partition in 0..256 {
            let expected: Vec<NodeId> = before
                .preference_list(partition)
                .iter()
                .map(|node| if *node == 3 { 30 } else { *node })
                .collect();
            assert_eq!(after.preference_list(partition), expected.as_slice());
        }
        assert!(diff.moves.iter().all(|m| m.from == 3
            && m.to == 30
            && before.preference_list(m.partition).contains(&3)));
        assert_eq!(diff.coordinator_changes.len(), before.primary_count(3));
    }

    #[test]
    fn operations_on_the_wrong_nodes_are_refused() {
        let base = ring(64, 3, &[1, 2, 3]);
        assert_eq!(
            base.join(2).unwrap_err(),
            PlacementError::JoinAlreadyMember { node: 2 }
        );
        assert_eq!(
            base.leave(9).unwrap_err(),
            PlacementError::LeaveNotMember { node: 9 }
        );
        let err = base.leave(1).unwrap_err();
        assert_eq!(
            err,
            PlacementError::LeaveTooFewMembers {
                node: 1,
                members_left: 2,
                replicas_n: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot remove node 1: 2 members would be left for 3 replicas"
        );
        assert_eq!(
            base.replace(9, 10).unwrap_err(),
            PlacementError::ReplaceNotMember { old: 9 }
        );
        assert_eq!(
            base.replace(1, 2).unwrap_err(),
            PlacementError::ReplaceAlreadyMember { new: 2 }
        );
    }

    #[test]
    fn join_and_leave_move_only_what_they_must() {
        let before = ring(256, 3, &[1, 2, 3, 4]);
        let (after, diff) = before.join(5).unwrap();
        let (old_sets, new_sets) = (owner_sets(&before), owner_sets(&after));
        let moved: BTreeSet<PartitionId> = diff.moves.iter().map(|m| m.partition).collect();
        for partition in 0..256u32 {
            let (old, new) = (&old_sets[partition as usize], &new_sets[partition as usize]);
            if moved.contains(&partition) {
                assert!(new.contains(&5));
            } else {
                assert_eq!(old, new, "partition {partition} changed without a move");
            }
        }
        assert!(diff.moves.iter().all(|m| m.to == 5));
        let (back, diff) = after.leave(5).unwrap();
        assert_eq!(diff.moves.len(), after.load(5));
        assert!(diff.moves.iter().all(|m| m.from == 5));
        assert_invariants(&back);
    }

    #[test]
    fn coordinator_is_the_first_live_owner() {
        let ring = ring(64, 3, &[1, 2, 3, 4, 5]);
        for partition in 0..64 {
            let list = ring.preference_list(partition).to_vec();
            assert_eq!(ring.coordinator(partition, |_| true), Some(list[0]));
            assert_eq!(
                ring.coordinator(partition, |node| node != list[0]),
                Some(list[1])
            );
            assert_eq!(
                ring.coordinator(partition, |node| !list.contains(&node)),
                None
            );
        }
        assert_eq!(ring.coordinator(64, |_| true), None);
        assert!(ring.preference_list(64).is_empty());
    }

    #[test]
    fn fallbacks_are_live_distinct_outsiders_in_a_fixed_order() {
        let ring = ring(64, 3, &[1, 2, 3, 4, 5, 6, 7]);
        for partition in 0..64 {
            let list = ring.preference_list(partition);
            let all: Vec<NodeId> = ring.fallbacks(partition, |_| true).collect();
            let outsiders: BTreeSet<NodeId> = ring
                .members()
                .iter()
                .copied()
                .filter(|node| !list.contains(node))
                .collect();
            assert_eq!(all.len(), outsiders.len());
            assert_eq!(all.iter().copied().collect::<BTreeSet<_>>(), outsiders);
            // The first fallback comes from the next partition's owners.
            let next = ring.preference_list((partition + 1) % 64);
            if let Some(first) = next.iter().find(|node| !list.contains(node)) {
                assert_eq!(all[0], *first);
            }
            let live: Vec<NodeId> = ring.fallbacks(partition, |node| node % 2 == 1).collect();
            let expected: Vec<NodeId> = all.iter().copied().filter(|n| n % 2 == 1).collect();
            assert_eq!(live, expected);
        }
        // Members holding nothing still serve as fallbacks.
        let sparse = Ring::new(8, 1, 1..=10).unwrap();
        assert_eq!(sparse.fallbacks(0, |_| true).count(), 9);
    }

    #[test]
    fn ring_survives_encoding_and_malformed_rings_are_refused() {
        let original = ring(64, 3, &[1, 2, 3, 4]);
        let bytes = postcard::to_allocvec(&original).unwrap();
        let decoded: Ring = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, original);

        let mut duplicate = original.clone();
        duplicate.owners[5][1] = duplicate.owners[5][0];
        let mut stranger = original.clone();
        stranger.owners[7][2] = 99;
        let mut short = original.clone();
        short.owners.pop();
        let mut bad_count = original.clone();
        bad_count.partition_count = 48;
        for (broken, expected) in [
            (duplicate, "partition 5 lists node"),
            (stranger, "partition 7 lists node 99, which is not a member"),
            (short, "63 preference lists for 64 partitions"),
            (bad_count, "partition count 48"),
        ] {
            let bytes = postcard::to_allocvec(&broken).unwrap();
            let err = postcard::from_bytes::<Ring>(&bytes).unwrap_err();
            let reason = broken.validate().unwrap_err().to_string();
            assert!(reason.contains(expected), "{reason}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn pinned_namespaces_get_their_own_ring() {
        let default = ring(256, 3, &[1, 2, 3, 4, 5, 6]);
        let pin = NamespacePlacement {
            namespace: 7,
            nodes: BTreeSet::from([2, 4, 6]),
            replicas_n: 2,
            r: 1,
            w: 2,
        };
        let placement = Placement::new(default.clone(), [pin.clone()]).unwrap();
        assert_eq!(placement.ring_for(0), &default);
        let pinned = placement.ring_for(7);
        assert_eq!(pinned.members(), &BTreeSet::from([2, 4, 6]));
        assert_eq!(pinned.replicas_n(), 2);
        assert_invariants(pinned);
        assert_eq!(placement.pin_for(7).map(|p| (p.r, p.w)), Some((1, 2)));
        assert_eq!(pinned, &Ring::new(256, 2, [6, 4, 2]).unwrap());

        let bytes = postcard::to_allocvec(&placement).unwrap();
        assert_eq!(
            postcard::from_bytes::<Placement>(&bytes).unwrap(),
            placement
        );

        // Leaving the cluster leaves the pinned ring too.
        let (after, diff) = placement.leave(4).unwrap();
        assert!(!after.ring_for(7).is_member(4));
        assert!(!after.ring_for(0).is_member(4));
        assert_eq!(diff.pinned[&7].moves.len(), pinned.load(4));
        // A pinned ring may not shrink below its n.
        let err = after.leave(2).unwrap_err();
        assert!(matches!(
            err,
            PlacementError::Namespace { namespace: 7, .. }
        ));
        assert_eq!(
            err.to_string(),
            "namespace 7: cannot remove node 2: 1 members would be left for 2 replicas"
        );
        let (grown, _) = after.join_pinned(7, 5).unwrap();
        assert!(grown.ring_for(7).is_member(5));
        assert_invariants(grown.ring_for(7));
        let (replaced, diff) = grown.replace(6, 60).unwrap();
        assert!(replaced.ring_for(7).is_member(60));
        assert_eq!(diff.pinned[&7].moves.len(), grown.ring_for(7).load(6));
    }

    #[test]
    fn bad_pins_are_refused() {
        let default = ring(64, 3, &[1, 2, 3, 4]);
        let pin = |nodes: &[NodeId], replicas_n, r, w| NamespacePlacement {
            namespace: 3,
            nodes: nodes.iter().copied().collect(),
            replicas_n,
            r,
            w,
        };
        let cases = [
            (
                pin(&[1, 2, 3], 3, 4, 2),
                "r=4 and w=2 must each be in 1..=3",
            ),
            (pin(&[1, 2, 3], 3, 2, 0), "r=2 and w=0"),
            (pin(&[1, 2, 3], 0, 0, 0), "r=0 and w=0"),
            (pin(&[1, 9], 2, 1, 1), "node 9 is not a cluster member"),
            (
                pin(&[1, 2], 3, 2, 2),
                "2 members cannot hold 3 distinct replicas",
            ),
        ];
        for (bad, expected) in cases {
            let err = Placement::new(default.clone(), [bad]).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let good = pin(&[1, 2, 3], 3, 2, 2);
        let err = Placement::new(default.clone(), [good.clone(), good]).unwrap_err();
        assert_eq!(err, PlacementError::NamespacePinnedTwice { namespace: 3 });
        let placement = Placement::new(default, []).unwrap();
        assert_eq!(
            placement.join_pinned(3, 1).unwrap_err(),
            PlacementError::NamespaceNotPinned { namespace: 3 }
        );
    }

    /// Found by a random search: 8 partitions, n=3, 13 members → 12, so every member
    /// must end with exactly 2 replicas. The leaver (107) holds one replica, of
    /// partition 6; the only member short of 2 (node 3) already holds partition 6. No
    /// placement of the leaver's replica alone balances the ring: one more move,
    /// to node 3, is needed, and is the only extra one made.
    #[test]
    fn leave_levels_when_the_short_member_holds_every_leaving_partition() {
        let owners: Vec<Vec<NodeId>> = vec![
            vec![105, 1, 8],
            vec![4, 106, 103],
            vec![102, 7, 6],
            vec![103, 7, 105],
            vec![8, 108, 102],
            vec![6, 104, 106],
            vec![108, 107, 3],
            vec![104, 4, 1],
        ];
        let before = Ring {
            version: 12,
            partition_count: 8,
            replicas_n: 3,
            members: owners.iter().flatten().copied().collect(),
            owners,
        };
        assert_eq!(before.members().len(), 13);
        assert_eq!((before.load(107), before.load(3)), (1, 1));
        let (after, diff) = before.leave(107).unwrap();
        assert_invariants(&after);
        assert_eq!(
            diff.moves,
            vec![
                // Least loaded member not holding partition 6, lowest id.
                ReplicaMove {
                    partition: 6,
                    from: 107,
                    to: 1
                },
                // Levelling: node 1 now has 3, node 3 has 1.
                ReplicaMove {
                    partition: 0,
                    from: 1,
                    to: 3
                },
            ]
        );
    }

    /// Found by a random search (history: 4 nodes, 16 partitions, n=4, then joins
    /// and leaves): the greedy placement of node 1005's replicas leaves a member
    /// short of the floor (64/7 → 9 or 10 each), and re-pairing the leaver's own
    /// replicas fixes it, so no other replica may move.
    #[test]
    fn leave_re_pairs_the_leavers_replicas_before_moving_anything_else() {
        let owners: Vec<Vec<NodeId>> = vec![
            vec![1002, 2, 3, 1005],
            vec![1004, 1, 4, 1003],
            vec![1004, 4, 1002, 1],
            vec![1, 4, 2, 3],
            vec![1002, 2, 1003, 4],
            vec![1005, 1004, 4, 1003],
            vec![1005, 1003, 4, 3],
            vec![3, 1005, 1004, 1002],
            vec![1003, 1005, 1, 1002],
            vec![1003, 1004, 2, 1005],
            vec![2, 1002, 1003, 3],
            vec![4, 1, 1005, 1004],
            vec![1, 1002, 3, 1003],
            vec![2, 1004, 1005, 1],
            vec![3, 1002, 1004, 2],
            vec![4, 1, 2, 3],
        ];
        let before = Ring {
            version: 9,
            partition_count: 16,
            replicas_n: 4,
            members: owners.iter().flatten().copied().collect(),
            owners,
        };
        assert_invariants(&before);
        let (after, diff) = before.leave(1005).unwrap();
        assert_invariants(&after);
        assert_eq!(diff.moves.len(), before.load(1005));
        assert!(diff.moves.iter().all(|m| m.from == 1005));
    }

    fn matching(eligible: Vec<Vec<NodeId>>, bounds: &[(NodeId, usize, usize)]) -> Matching {
        Matching {
            assigned: vec![None; eligible.len()],
            eligible,
            bounds: bounds.iter().map(|(n, lo, hi)| (*n, (*lo, *hi))).collect(),
            received: bounds.iter().map(|(n, _, _)| (*n, 0)).collect(),
        }
    }

    #[test]
    fn matching_makes_room_along_a_path_of_full_members() {
        // Item 2 fits only on node 1, which is full with item 0; item 0 can go to
        // node 2, which is full with item 1; item 1 can go to node 3, which has room.
        let mut m = matching(
            vec![vec![1, 2], vec![2, 3], vec![1]],
            &[(1, 0, 1), (2, 0, 1), (3, 0, 1)],
        );
        m.assign(0, 1);
        m.assign(1, 2);
        assert!(m.augment_upper(2));
        assert_eq!(m.assigned, vec![Some(2), Some(3), Some(1)]);
        // Nowhere left to go.
        let mut full = matching(vec![vec![1], vec![1]], &[(1, 0, 1)]);
        full.assign(0, 1);
        assert!(!full.augment_upper(1));
    }

    #[test]
    fn matching_fills_a_short_member_along_a_path() {
        // Node 2 needs one; only item 2 can go there and node 3 holds it at its
        // minimum; node 3 can take item 0 from node 1, which has one to spare.
        let mut m = matching(
            vec![vec![1, 3], vec![1], vec![3, 2]],
            &[(1, 1, 2), (2, 1, 2), (3, 1, 1)],
        );
        m.assign(0, 1);
        m.assign(1, 1);
        m.assign(2, 3);
        assert!(m.augment_lower(2));
        assert_eq!(m.assigned, vec![Some(3), Some(1), Some(2)]);
        assert_eq!((m.received(1), m.received(2), m.received(3)), (1, 1, 1));
        // Node 2 is eligible for nothing: no path.
        let mut stuck = matching(vec![vec![1], vec![1]], &[(1, 1, 2), (2, 1, 2)]);
        stuck.assign(0, 1);
        stuck.assign(1, 1);
        assert!(!stuck.augment_lower(2));
    }

    #[test]
    fn coordinators_shift_along_a_chain_of_partitions() {
        // 8 partitions over 3 members: each should coordinate 2 or 3. Node 1
        // coordinates 4 and node 3 one; they share no partition, so no single swap
        // helps: 1 hands partition 0 to 2, and 2 hands partition 4 to 3.
        let owners: Vec<Vec<NodeId>> = vec![
            vec![1, 2],
            vec![1, 2],
            vec![1, 2],
            vec![1, 2],
            vec![2, 3],
            vec![2, 3],
            vec![2, 3],
            vec![3, 2],
        ];
        let ring = Ring {
            version: 1,
            partition_count: 8,
            replicas_n: 2,
            members: BTreeSet::from([1, 2, 3]),
            owners,
        };
        let mut layout = Layout::of(&ring);
        // Nothing touched: the search has to widen to every partition.
        layout.balance_primaries(BTreeSet::new());
        let counts = [1, 2, 3].map(|node| layout.primary_count(node));
        assert_eq!(counts, [3, 3, 2]);
        assert_eq!(layout.owners[0], vec![2, 1]);
        assert_eq!(layout.owners[4], vec![3, 2]);
        let unchanged = [1, 2, 3, 5, 6, 7].map(|p| layout.owners[p] == ring.owners[p]);
        assert!(unchanged.iter().all(|same| *same));
    }

    #[test]
    fn quorums() {
        assert!(quorum_met(2, 2));
        assert!(!quorum_met(1, 2));
    }
}
