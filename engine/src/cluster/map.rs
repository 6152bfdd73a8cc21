//! The cluster map every node routes by: the current [`Placement`] (the default
//! [`Ring`] and each pinned namespace's ring), the placement before the last admin
//! change while that change's handoffs are in flight, and each node's client
//! address. Partitions here are *map partitions* (see [`pinned_partition`]): the
//! default ring's, then each pinned namespace's.
//!
//! A change (join, leave, replace, pin) is only made while no handoff is pending.
//! It marks, for every map partition whose owners changed, the *incoming* owners
//! (in the new placement, not in the old; a newly pinned namespace's old owners
//! are the default ring's). Each incoming owner pulls the partition whole from
//! `sources_needed` of its old owners and then reports done; once every incoming
//! owner of every partition has reported, the old ring is dropped. Until then:
//! - writes go to the new owners (w of them must ack);
//! - reads need r replies from the new owners *and* r from the old owners, so a
//!   write acknowledged under either ring is seen;
//! - a replica refuses writes sent under an older ring version than its own, and a
//!   handoff source adopts the new map before it scans. A write acknowledged under
//!   the old ring was therefore applied on w old owners before they learned the new
//!   ring, and any `n - w + 1` old owners include one of them.
//!
//! Maps spread by gossip and merge deterministically: a higher ring version wins;
//! at equal versions done reports accumulate (pending sets only shrink); two
//! different rings with one version (two admins at once) are settled by the ring's
//! fingerprint, the same way on every node.
//!
//! Must not touch: sockets, tasks, clocks. [`save`] and [`load`] use the
//! [`DiskDir`] seam only.

use crate::disk::{DiskDir, DiskError};
use crate::placement::{
    NamespacePlacement, PartitionId, PinnedRing, Placement, PlacementError, Ring,
};
use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The file a node keeps its map in (next to its segments).
pub const MAP_FILE: &str = "cluster-map";
/// Larger map files are refused as corrupt (a 16384-partition ring is ~200 KiB).
pub const MAP_FILE_BYTES_MAX: u64 = 4 << 20;

/// An operator's ring change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingChange {
    Join {
        node: NodeId,
        address: String,
    },
    Leave {
        node: NodeId,
    },
    Replace {
        old: NodeId,
        new: NodeId,
        address: String,
    },
    /// Place `namespace`'s keys on `nodes` only (cluster members), with its own
    /// replica count and quorums. Its keys stream from the default ring's owners
    /// to the pinned ones. Undone in two [`RingChange::Unpin`] steps.
    Pin {
        namespace: u8,
        nodes: BTreeSet<NodeId>,
        replicas_n: u8,
        r: u8,
        w: u8,
    },
    /// Add cluster member `node` to pinned `namespace`'s nodes.
    PinJoin {
        namespace: u8,
        node: NodeId,
    },
    /// Remove `node` from pinned `namespace`'s nodes (it stays a member).
    PinLeave {
        namespace: u8,
        node: NodeId,
    },
    /// Send pinned `namespace` back to the default ring, in two changes: the
    /// first makes its ring a copy of the default one (quorums `r`, `w`) and
    /// hands its keys to the default ring's owners; the second, once those
    /// handoffs are done, drops the pin and moves nothing (`Placement::unpin`).
    Unpin {
        namespace: u8,
        r: u8,
        w: u8,
    },
    /// Undo the change whose handoffs are still running (its new owner never
    /// takes its partitions, say): the placement before it comes back as a new
    /// version, and the old owners it took partitions from pull back what was
    /// written meanwhile from the owners that can answer. A pin cannot be
    /// aborted (its keys would have no handoff back): unpin it instead.
    Abort,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A change was asked for while the last one's handoffs are still running.
    HandoffInProgress {
        version: u64,
        pending: usize,
    },
    Placement(PlacementError),
    /// A decoded map breaks an invariant.
    Malformed(String),
    /// An abort was asked for with no change in flight.
    NothingToAbort {
        version: u64,
    },
    /// An abort of a pin while its handoffs run.
    PinNotAbortable {
        version: u64,
        namespace: u8,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::HandoffInProgress { version, pending } => write!(
                f,
                "ring version {version} still has {pending} partition handoff(s) in flight; change the ring again once they finish"
            ),
            MapError::Placement(e) => write!(f, "{e}"),
            MapError::Malformed(why) => write!(f, "malformed cluster map: {why}"),
            MapError::NothingToAbort { version } => write!(
                f,
                "ring version {version} has no handoff running: there is no change to abort"
            ),
            MapError::PinNotAbortable { version, namespace } => write!(
                f,
                "ring version {version} pins namespace {namespace}; a pin cannot be aborted (its keys would have no way back): let its handoffs finish, then unpin it"
            ),
        }
    }
}

impl std::error::Error for MapError {}

/// Bits of a map partition id above the ring's own partition index: 0 for the
/// default ring, `namespace + 1` for a pinned namespace's ring.
const GROUP_SHIFT: u32 = 16;

/// The map partition holding pinned `namespace`'s keys of its ring's `partition`.
///
/// Map partitions number every ring's partitions in one space: the default ring's
/// partition `p` is `p` (it holds the keys of every namespace not pinned), and a
/// pinned namespace's partition `p` is `(namespace + 1) << 16 | p` (that
/// namespace's keys only). Digests, anti-entropy, handoff, marker collection and
/// copy dropping all work per map partition, so a pinned namespace's keys are only
/// ever compared, streamed and kept on its own nodes.
pub fn pinned_partition(namespace: u8, partition: PartitionId) -> PartitionId {
    ((u32::from(namespace) + 1) << GROUP_SHIFT) | partition
}

/// `(pinned namespace or None for the default ring, the ring's partition index)`.
pub fn split_partition(id: PartitionId) -> (Option<u8>, PartitionId) {
    let group = id >> GROUP_SHIFT;
    let index = id & ((1 << GROUP_SHIFT) - 1);
    match group {
        0 => (None, index),
        g => (Some((g - 1).min(u32::from(u8::MAX)) as u8), index),
    }
}

/// The namespaces whose keys a map partition holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Namespaces {
    /// A pinned namespace's partition.
    Only(u8),
    /// A default-ring partition: every namespace but the pinned ones.
    AllBut(BTreeSet<u8>),
}

use crate::fields::database_of;

/// A namespace's hash fields (`fields`) belong where their database does.
impl Namespaces {
    pub fn contains(&self, namespace: u8) -> bool {
        match self {
            Namespaces::Only(only) => *only == database_of(namespace),
            Namespaces::AllBut(pinned) => !pinned.contains(&database_of(namespace)),
        }
    }
}

/// The owners, under `placement`, of the keys map partition `id` holds: for a
/// namespace not pinned there, the default ring's owners of the same partition
/// (where its keys were before it was pinned).
pub fn placement_owners(placement: &Placement, id: PartitionId) -> &[NodeId] {
    let (pinned, partition) = split_partition(id);
    let ring = match pinned {
        Some(namespace) => placement.ring_for(namespace),
        None => placement.default_ring(),
    };
    if partition >= ring.partition_count() {
        return &[];
    }
    ring.preference_list(partition)
}

/// What a change did, summed over every ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiff {
    pub version_from: u64,
    pub version_to: u64,
    /// (map partition, node) pairs where the node is a new owner.
    pub replicas_moved: usize,
    /// Map partitions whose first owner changed.
    pub coordinator_changes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The default ring and every pinned namespace's ring. The map's version is
    /// the default ring's; every change, pins included, raises it by one.
    placement: Placement,
    /// The placement before the last change; `None` once every handoff is done.
    previous: Option<Placement>,
    /// Per map partition in transition: incoming owners that have not reported
    /// done.
    pending: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Client address (`host:port`) of every node of `placement` and `previous`.
    addresses: BTreeMap<NodeId, String>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl ClusterMap {
    /// The first map of a cluster: `ring` with no change in flight.
    pub fn bootstrap(
        ring: Ring,
        addresses: BTreeMap<NodeId, String>,
    ) -> Result<ClusterMap, MapError> {
        let map = ClusterMap {
            placement: Placement::new(ring, []).map_err(MapError::Placement)?,
            previous: None,
            pending: BTreeMap::new(),
            addresses,
        };
        map.check()?;
        Ok(map)
    }

    /// Every invariant a received or loaded map must hold.
    pub fn check(&self) -> Result<(), MapError> {
        let bad = |why: String| Err(MapError::Malformed(why));
        for node in self.nodes() {
            if !self.addresses.contains_key(&node) {
                return bad(format!("node {node} has no address"));
            }
        }
        if self.previous.is_none() && !self.pending.is_empty() {
            return bad("handoffs pending without a previous ring".into());
        }
        if let Some(previous) = &self.previous {
            let (before, now) = (previous.default_ring(), self.ring());
            if before.partition_count() != now.partition_count()
                || before.version() >= now.version()
            {
                return bad("previous ring does not precede the current one".into());
            }
            if previous
                .pinned()
                .any(|(namespace, _)| self.placement.pin_for(namespace).is_none())
            {
                return bad("a pin was dropped while a handoff runs".into());
            }
        }
        for (partition, nodes) in &self.pending {
            if !self.is_partition(*partition) || nodes.is_empty() {
                return bad(format!("pending entry for partition {partition}"));
            }
            // New owners, or (after a pin) owners that stayed and pull the rest.
            let owners = self.owners(*partition);
            if !nodes.iter().all(|n| owners.contains(n)) {
                return bad(format!(
                    "partition {partition}: a pending node is not an owner"
                ));
            }
        }
        Ok(())
    }

    /// The default ring (every member; the namespaces not pinned).
    pub fn ring(&self) -> &Ring {
        self.placement.default_ring()
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn version(&self) -> u64 {
        self.ring().version()
    }

    /// Nodes of the current ring and, during a transition, the previous one
    /// (pinned rings' members are default-ring members).
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let mut nodes = self.ring().members().clone();
        if let Some(previous) = &self.previous {
            nodes.extend(previous.default_ring().members().iter().copied());
        }
        nodes
    }

    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    pub fn addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.addresses
    }

    /// Every map partition: the default ring's, then each pinned namespace's.
    pub fn partitions(&self) -> Vec<PartitionId> {
        let count = self.ring().partition_count();
        let pinned = self.placement.pinned().map(|(namespace, _)| namespace);
        (0..count)
            .chain(
                pinned
                    .flat_map(|namespace| (0..count).map(move |p| pinned_partition(namespace, p))),
            )
            .collect()
    }

    /// Whether `id` is a map partition of this map.
    pub fn is_partition(&self, id: PartitionId) -> bool {
        let (pinned, partition) = split_partition(id);
        partition < self.ring().partition_count()
            && pinned.is_none_or(|namespace| {
                self.placement.pin_for(namespace).is_some()
                    && pinned_partition(namespace, partition) == id
            })
    }

    /// The map partition holding stored key `key` of `namespace` (a hash
    /// field's is its hash key's).
    pub fn partition_of_key(&self, namespace: u8, key: &[u8]) -> PartitionId {
        let slot = if cfg!(feature = "bug-field-placed-by-own-bytes") {
            // Planted bug: placement and the stores disagree on a field's slot.
            crate::slot::key_slot(key)
        } else {
            crate::fields::stored_key_slot(namespace, key)
        };
        self.partition_of_slot(namespace, slot)
    }

    /// The map partition holding `slot` of `namespace`.
    pub fn partition_of_slot(&self, namespace: u8, slot: u16) -> PartitionId {
        let partition = self.ring().partition_of_slot(slot);
        match self.placement.pin_for(namespace) {
            Some(_) => pinned_partition(database_of(namespace), partition),
            None => partition,
        }
    }

    /// The slots of map partition `id`.
    pub fn slot_range(&self, id: PartitionId) -> std::ops::RangeInclusive<u16> {
        self.ring().slot_range(split_partition(id).1)
    }

    /// The namespaces whose keys map partition `id` holds.
    pub fn namespaces(&self, id: PartitionId) -> Namespaces {
        match split_partition(id).0 {
            Some(namespace) => Namespaces::Only(namespace),
            None => Namespaces::AllBut(self.placement.pinned().map(|(ns, _)| ns).collect()),
        }
    }

    /// The ring placing map partition `id` (None: not a partition of this map).
    pub fn ring_of(&self, id: PartitionId) -> Option<&Ring> {
        if !self.is_partition(id) {
            return None;
        }
        Some(match split_partition(id).0 {
            Some(namespace) => self.placement.ring_for(namespace),
            None => self.ring(),
        })
    }

    /// The placement before the last change, while its handoffs run.
    pub fn previous_placement(&self) -> Option<&Placement> {
        self.previous.as_ref()
    }

    /// Pinned `namespace`'s ring and quorums, if it is pinned.
    pub fn pin_for(&self, namespace: u8) -> Option<&PinnedRing> {
        self.placement.pin_for(namespace)
    }

    /// Write targets: the map partition's owners in the current placement (none
    /// for an id that is not a partition of this map).
    pub fn owners(&self, id: PartitionId) -> &[NodeId] {
        if !self.is_partition(id) {
            return &[];
        }
        placement_owners(&self.placement, id)
    }

    /// The partition's owners under the previous placement while its handoff runs.
    pub fn previous_owners(&self, id: PartitionId) -> Option<&[NodeId]> {
        if !self.pending.contains_key(&id) {
            return None;
        }
        self.previous
            .as_ref()
            .map(|placement| placement_owners(placement, id))
    }

    /// Whether `node` holds the partition in either placement of a transition.
    pub fn holds(&self, node: NodeId, id: PartitionId) -> bool {
        self.owners(id).contains(&node)
            || self.previous_owners(id).is_some_and(|o| o.contains(&node))
    }

    /// Every node holding a copy some partition's owners may need: the ring's
    /// members, and the previous owners of partitions whose handoffs still run
    /// (a node that left the ring keeps its copies until they are pulled).
    pub fn holders(&self) -> BTreeSet<NodeId> {
        let mut holders = self.ring().members().clone();
        for id in self.pending.keys() {
            holders.extend(self.previous_owners(*id).unwrap_or_default());
        }
        holders
    }

    fn incoming_owners(&self, id: PartitionId) -> Vec<NodeId> {
        let Some(previous) = &self.previous else {
            return Vec::new();
        };
        let before = placement_owners(previous, id);
        self.owners(id)
            .iter()
            .copied()
            .filter(|n| !before.contains(n))
            .collect()
    }

    /// Partitions `node` must still pull, in order.
    pub fn incoming(&self, node: NodeId) -> Vec<PartitionId> {
        self.pending
            .iter()
            .filter(|(_, nodes)| nodes.contains(&node))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether `node` owned `id` before the change that put it in transition
    /// (an owner that stays: it pulls the rest, not what it holds).
    pub fn was_owner(&self, id: PartitionId, node: NodeId) -> bool {
        self.previous_owners(id).is_some_and(|o| o.contains(&node))
    }

    /// Old owners an incoming owner may pull `id` from (itself excluded).
    pub fn handoff_sources(&self, id: PartitionId, node: NodeId) -> Vec<NodeId> {
        self.previous
            .as_ref()
            .map(|placement| {
                placement_owners(placement, id)
                    .iter()
                    .copied()
                    .filter(|n| *n != node)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many old owners an incoming owner must pull map partition `id` from so
    /// that every write acknowledged by `write_quorum` old owners is among what it
    /// pulls.
    pub fn sources_needed(&self, id: PartitionId, write_quorum: u8) -> usize {
        let old_owners = self
            .previous
            .as_ref()
            .map_or(0, |placement| placement_owners(placement, id).len());
        let n = if old_owners == 0 {
            usize::from(self.ring().replicas_n())
        } else {
            old_owners
        };
        (n + 1).saturating_sub(usize::from(write_quorum)).max(1)
    }

    /// Incoming (partition, node) pairs not yet reported done.
    pub fn handoffs_pending(&self) -> usize {
        self.pending.values().map(BTreeSet::len).sum()
    }

    /// Partitions whose handoff is not finished.
    pub fn partitions_in_transition(&self) -> usize {
        self.pending.len()
    }

    /// `node` has pulled `id` whole. Returns whether anything changed.
    pub fn mark_done(&mut self, id: PartitionId, node: NodeId) -> bool {
        let Some(nodes) = self.pending.get_mut(&id) else {
            return false;
        };
        let changed = nodes.remove(&node);
        if nodes.is_empty() {
            self.pending.remove(&id);
        }
        self.settle();
        changed
    }

    /// Drop the previous placement, and addresses of nodes that left, once nothing
    /// is pending.
    fn settle(&mut self) {
        if self.pending.is_empty() && self.previous.is_some() {
            self.previous = None;
            let members = self.ring().members().clone();
            self.addresses.retain(|n, _| members.contains(n));
        }
    }

    /// The next map after an operator's change, and what it moves.
    pub fn change(&self, change: &RingChange) -> Result<(ClusterMap, MapDiff), MapError> {
        if *change == RingChange::Abort {
            return self.abort();
        }
        if !self.pending.is_empty() {
            return Err(MapError::HandoffInProgress {
                version: self.version(),
                pending: self.handoffs_pending(),
            });
        }
        let mut addresses = self.addresses.clone();
        let placement = &self.placement;
        let next = match change {
            RingChange::Join { node, address } => {
                addresses.insert(*node, address.clone());
                placement.join(*node).map(|(p, _)| p)
            }
            RingChange::Leave { node } => placement.leave(*node).map(|(p, _)| p),
            RingChange::Replace { old, new, address } => {
                addresses.insert(*new, address.clone());
                placement.replace(*old, *new).map(|(p, _)| p)
            }
            RingChange::Pin {
                namespace,
                nodes,
                replicas_n,
                r,
                w,
            } => placement.pin(NamespacePlacement {
                namespace: *namespace,
                nodes: nodes.clone(),
                replicas_n: *replicas_n,
                r: *r,
                w: *w,
            }),
            RingChange::PinJoin { namespace, node } => {
                placement.join_pinned(*namespace, *node).map(|(p, _)| p)
            }
            RingChange::PinLeave { namespace, node } => {
                placement.leave_pinned(*namespace, *node).map(|(p, _)| p)
            }
            RingChange::Unpin { namespace, r, w } => placement.unpin(*namespace, *r, *w),
            RingChange::Abort => unreachable!("handled above"),
        }
        .map_err(MapError::Placement)?
        .numbered(self.version() + 1);
        self.succeed(next, addresses, change)
    }

    /// The change in flight undone: the placement before it, as the next version.
    /// Owners it took partitions from are the incoming owners of the result: they
    /// pull what was written meanwhile (`n - w + 1` of the aborted placement's
    /// owners, the ones that answer: a new owner that never came is skipped).
    fn abort(&self) -> Result<(ClusterMap, MapDiff), MapError> {
        let version = self.version();
        // Pending handoffs imply a previous placement (`check`).
        let (Some(previous), false) = (&self.previous, self.pending.is_empty()) else {
            return Err(MapError::NothingToAbort { version });
        };
        if let Some((namespace, _)) = self
            .placement
            .pinned()
            .find(|(namespace, _)| previous.pin_for(*namespace).is_none())
        {
            return Err(MapError::PinNotAbortable { version, namespace });
        }
        let placement = previous.clone().numbered(version + 1);
        let result = self.succeed(placement, self.addresses.clone(), &RingChange::Abort);
        // Planted bug: the restored owners are not asked to pull anything.
        #[cfg(feature = "bug-abort-skips-pull")]
        let result = result.map(|(mut next, diff)| {
            next.pending.clear();
            next.settle();
            (next, diff)
        });
        result
    }

    /// The map after `change` made `placement`, with its pending handoffs.
    fn succeed(
        &self,
        placement: Placement,
        addresses: BTreeMap<NodeId, String>,
        change: &RingChange,
    ) -> Result<(ClusterMap, MapDiff), MapError> {
        let mut next = ClusterMap {
            placement,
            previous: Some(self.placement.clone()),
            pending: BTreeMap::new(),
            addresses,
        };
        let mut diff = MapDiff {
            version_from: self.version(),
            version_to: next.version(),
            replicas_moved: 0,
            coordinator_changes: 0,
        };
        // A pin may leave a write on fewer of the namespace's new owners than the
        // pin's write quorum (it shrinks n, or raises w, and the owners it drops
        // forget their copies once it settles): every new owner pulls, the ones
        // that stay as well (cluster seeds 20000582, 20001710, 20001795).
        let pinned_now = match change {
            RingChange::Pin { namespace, .. } => Some(*namespace),
            _ => None,
        };
        for id in next.partitions() {
            let mut incoming: BTreeSet<NodeId> = next.incoming_owners(id).into_iter().collect();
            diff.replicas_moved += incoming.len();
            if pinned_now.is_some() && split_partition(id).0 == pinned_now {
                incoming.extend(next.owners(id).iter().copied());
            }
            let before = placement_owners(&self.placement, id).first();
            if next.owners(id).first() != before {
                diff.coordinator_changes += 1;
            }
            if !incoming.is_empty() {
                next.pending.insert(id, incoming);
            }
        }
        // Planted bug: the claim forgets the incoming replica of every other moved
        // partition: it is routed to but never pulls, and reads skip the old owners.
        #[cfg(feature = "bug-claim-forgets-replica")]
        next.pending.retain(|p, _| p % 2 == 1);
        next.settle();
        next.check()?;
        Ok((next, diff))
    }

    /// A short hash of everything gossip must agree on (placement, pending
    /// reports).
    pub fn fingerprint(&self) -> u64 {
        let bytes =
            postcard::to_allocvec(&(&self.placement, &self.pending)).expect("maps serialize");
        fnv1a(&bytes)
    }

    fn placement_fingerprint(&self) -> u64 {
        fnv1a(&postcard::to_allocvec(&self.placement).expect("placements serialize"))
    }

    /// Fold in a map heard from a peer. Returns whether this map changed.
    pub fn merge(&mut self, other: &ClusterMap) -> bool {
        use std::cmp::Ordering;
        let ours = (self.version(), self.placement_fingerprint());
        let theirs = (other.version(), other.placement_fingerprint());
        match theirs.cmp(&ours) {
            Ordering::Greater => {
                *self = other.clone();
                true
            }
            Ordering::Less => false,
            Ordering::Equal => {
                let before = self.pending.clone();
                let theirs_pending = &other.pending;
                self.pending.retain(|p, nodes| {
                    match theirs_pending.get(p) {
                        Some(their_nodes) => nodes.retain(|n| their_nodes.contains(n)),
                        None => nodes.clear(),
                    }
                    !nodes.is_empty()
                });
                self.settle();
                self.pending != before
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("maps serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<ClusterMap, MapError> {
        let map: ClusterMap =
            postcard::from_bytes(bytes).map_err(|e| MapError::Malformed(e.to_string()))?;
        map.check()?;
        Ok(map)
    }
}

#[derive(Debug)]
pub enum MapFileError {
    Disk(DiskError),
    Corrupt(String),
}

impl fmt::Display for MapFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapFileError::Disk(e) => write!(f, "{MAP_FILE}: {e}"),
            MapFileError::Corrupt(why) => write!(f, "{MAP_FILE} is corrupt: {why}"),
        }
    }
}

impl std::error::Error for MapFileError {}

impl From<DiskError> for MapFileError {
    fn from(e: DiskError) -> Self {
        MapFileError::Disk(e)
    }
}

/// Make `map` durable: write a temporary file, sync it, rename it over
/// [`MAP_FILE`], sync the directory. A crash leaves the old map or the new one.
pub fn save(dir: &dyn DiskDir, map: &ClusterMap) -> Result<(), MapFileError> {
    let body = map.encode();
    let mut file_bytes = Vec::with_capacity(body.len() + 8);
    file_bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file_bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    file_bytes.extend_from_slice(&body);
    crate::disk::replace_file(dir, MAP_FILE, &file_bytes)?;
    Ok(())
}

/// The saved map, if this node has one.
pub fn load(dir: &dyn DiskDir) -> Result<Option<ClusterMap>, MapFileError> {
    if !dir.list()?.iter().any(|n| n == MAP_FILE) {
        return Ok(None);
    }
    let file = dir.open(MAP_FILE, false)?;
    let len = file.len()?;
    if !(8..=MAP_FILE_BYTES_MAX).contains(&len) {
        return Err(MapFileError::Corrupt(format!("{len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes)?;
    let body_len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let body = bytes
        .get(8..8 + body_len)
        .ok_or_else(|| MapFileError::Corrupt("shorter than its length field".into()))?;
    if crc32c::crc32c(body) != crc {
        return Err(MapFileError::Corrupt("checksum mismatch".into()));
    }
    match ClusterMap::decode(body) {
        Ok(map) => Ok(Some(map)),
        // A map saved before namespaces could be pinned (one ring per map).
        Err(e) => match decode_ring_only(body) {
            Some(map) => Ok(Some(map)),
            None => Err(MapFileError::Corrupt(e.to_string())),
        },
    }
}

/// The map file as saved before pinned namespaces: the default ring alone.
#[derive(Deserialize)]
struct RingOnlyMap {
    ring: Ring,
    previous: Option<Ring>,
    pending: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    addresses: BTreeMap<NodeId, String>,
}

fn decode_ring_only(body: &[u8]) -> Option<ClusterMap> {
    let old: RingOnlyMap = postcard::from_bytes(body).ok()?;
    let placement = |ring: Ring| Placement::new(ring, []).ok();
    let map = ClusterMap {
        placement: placement(old.ring)?,
        previous: match old.previous {
            Some(ring) => Some(placement(ring)?),
            None => None,
        },
        pending: old.pending,
        addresses: old.addresses,
    };
    map.check().ok()?;
    Some(map)
}

#[cfg(test)]
mod tests;
