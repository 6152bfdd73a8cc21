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
//!
//! Layout: this file holds the partition math and the errors; `ring` the
//! [`Ring`] and its diffs and balance; `claim` the claim's working state
//! (`Layout`, the coordinator `Matching`); `pins` namespace pinning
//! ([`Placement`]).

mod claim;
mod pins;
mod ring;

#[allow(unused_imports)]
use claim::*;
pub use pins::*;
pub use ring::*;

use crate::slot::{key_slot, SLOT_COUNT};
use crate::version::NodeId;
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
            PlacementError::RingMalformed { partition, defect } => {
                write!(f, "cannot accept ring: partition {partition} {defect}")
            }
            PlacementError::QuorumInvalid { .. }
            | PlacementError::NamespaceNodeNotMember { .. }
            | PlacementError::NamespacePinnedTwice { .. }
            | PlacementError::NamespaceNotPinned { .. } => self.fmt_pin(f),
            PlacementError::Namespace { namespace, error } => {
                write!(f, "namespace {namespace}: {error}")
            }
        }
    }
}

impl PlacementError {
    /// The refusals of a pin change.
    fn fmt_pin(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
            _ => unreachable!("not a pin refusal"),
        }
    }
}

impl std::error::Error for PlacementError {}

impl fmt::Display for RingDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingDefect::ListLength => write!(f, "does not list exactly n owners"),
            RingDefect::DuplicateOwner(node) => write!(f, "lists node {node} twice"),
            RingDefect::OwnerNotMember(node) => {
                write!(f, "lists node {node}, which is not a member")
            }
        }
    }
}

#[cfg(test)]
mod tests;
