//! The cluster map every node routes by: the current [`Ring`], the ring before the
//! last admin change while that change's handoffs are in flight, and each node's
//! client address.
//!
//! A ring change (join, leave, replace) is only made while no handoff is pending.
//! It marks, for every partition whose owners changed, the *incoming* owners (in
//! the new ring, not in the old). Each incoming owner pulls the partition whole from
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
use crate::placement::{PartitionId, PlacementError, Ring, RingDiff};
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
        }
    }
}

impl std::error::Error for MapError {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    ring: Ring,
    /// The ring before the last change; `None` once every handoff is done.
    previous: Option<Ring>,
    /// Per partition in transition: incoming owners that have not reported done.
    pending: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Client address (`host:port`) of every node of `ring` and `previous`.
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
            ring,
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
            if previous.partition_count() != self.ring.partition_count()
                || previous.version() >= self.ring.version()
            {
                return bad("previous ring does not precede the current one".into());
            }
        }
        for (partition, nodes) in &self.pending {
            if *partition >= self.ring.partition_count() || nodes.is_empty() {
                return bad(format!("pending entry for partition {partition}"));
            }
            let incoming = self.incoming_owners(*partition);
            if !nodes.iter().all(|n| incoming.contains(n)) {
                return bad(format!(
                    "partition {partition}: a pending node is not an incoming owner"
                ));
            }
        }
        Ok(())
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn version(&self) -> u64 {
        self.ring.version()
    }

    /// Nodes of the current ring and, during a transition, the previous one.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let mut nodes = self.ring.members().clone();
        if let Some(previous) = &self.previous {
            nodes.extend(previous.members().iter().copied());
        }
        nodes
    }

    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    pub fn addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.addresses
    }

    /// Write targets: the partition's owners in the current ring.
    pub fn owners(&self, partition: PartitionId) -> &[NodeId] {
        self.ring.preference_list(partition)
    }

    /// The partition's owners under the previous ring while its handoff runs.
    pub fn previous_owners(&self, partition: PartitionId) -> Option<&[NodeId]> {
        if !self.pending.contains_key(&partition) {
            return None;
        }
        self.previous
            .as_ref()
            .map(|ring| ring.preference_list(partition))
    }

    /// Whether `node` holds the partition in either ring of a transition.
    pub fn holds(&self, node: NodeId, partition: PartitionId) -> bool {
        self.owners(partition).contains(&node)
            || self
                .previous_owners(partition)
                .is_some_and(|o| o.contains(&node))
    }

    fn incoming_owners(&self, partition: PartitionId) -> Vec<NodeId> {
        let Some(previous) = &self.previous else {
            return Vec::new();
        };
        let before = previous.preference_list(partition);
        self.ring
            .preference_list(partition)
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

    /// Old owners an incoming owner may pull `partition` from (itself excluded).
    pub fn handoff_sources(&self, partition: PartitionId, node: NodeId) -> Vec<NodeId> {
        self.previous
            .as_ref()
            .map(|ring| {
                ring.preference_list(partition)
                    .iter()
                    .copied()
                    .filter(|n| *n != node)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many old owners an incoming owner must pull a partition from so that
    /// every write acknowledged by `write_quorum` old owners is among what it pulls.
    pub fn sources_needed(&self, write_quorum: u8) -> usize {
        let n = usize::from(self.ring.replicas_n());
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

    /// `node` has pulled `partition` whole. Returns whether anything changed.
    pub fn mark_done(&mut self, partition: PartitionId, node: NodeId) -> bool {
        let Some(nodes) = self.pending.get_mut(&partition) else {
            return false;
        };
        let changed = nodes.remove(&node);
        if nodes.is_empty() {
            self.pending.remove(&partition);
        }
        self.settle();
        changed
    }

    /// Drop the previous ring, and addresses of nodes that left, once nothing is
    /// pending.
    fn settle(&mut self) {
        if self.pending.is_empty() && self.previous.is_some() {
            self.previous = None;
            let members = self.ring.members().clone();
            self.addresses.retain(|n, _| members.contains(n));
        }
    }

    /// The next map after an operator's change, and which replicas move.
    pub fn change(&self, change: &RingChange) -> Result<(ClusterMap, RingDiff), MapError> {
        if !self.pending.is_empty() {
            return Err(MapError::HandoffInProgress {
                version: self.version(),
                pending: self.handoffs_pending(),
            });
        }
        let mut addresses = self.addresses.clone();
        let (ring, diff) = match change {
            RingChange::Join { node, address } => {
                let next = self.ring.join(*node).map_err(MapError::Placement)?;
                addresses.insert(*node, address.clone());
                next
            }
            RingChange::Leave { node } => self.ring.leave(*node).map_err(MapError::Placement)?,
            RingChange::Replace { old, new, address } => {
                let next = self.ring.replace(*old, *new).map_err(MapError::Placement)?;
                addresses.insert(*new, address.clone());
                next
            }
        };
        let mut next = ClusterMap {
            ring,
            previous: Some(self.ring.clone()),
            pending: BTreeMap::new(),
            addresses,
        };
        for partition in 0..next.ring.partition_count() {
            let incoming: BTreeSet<NodeId> = next.incoming_owners(partition).into_iter().collect();
            if !incoming.is_empty() {
                next.pending.insert(partition, incoming);
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

    /// A short hash of everything gossip must agree on (ring, pending reports).
    pub fn fingerprint(&self) -> u64 {
        let bytes = postcard::to_allocvec(&(&self.ring, &self.pending)).expect("maps serialize");
        fnv1a(&bytes)
    }

    fn ring_fingerprint(&self) -> u64 {
        fnv1a(&postcard::to_allocvec(&self.ring).expect("rings serialize"))
    }

    /// Fold in a map heard from a peer. Returns whether this map changed.
    pub fn merge(&mut self, other: &ClusterMap) -> bool {
        use std::cmp::Ordering;
        let ours = (self.version(), self.ring_fingerprint());
        let theirs = (other.version(), other.ring_fingerprint());
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
    ClusterMap::decode(body)
        .map(Some)
        .map_err(|e| MapFileError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDir;

    fn addresses(nodes: impl IntoIterator<Item = NodeId>) -> BTreeMap<NodeId, String> {
        nodes
            .into_iter()
            .map(|n| (n, format!("127.0.0.1:{}", 7000 + n)))
            .collect()
    }

    fn three() -> ClusterMap {
        let ring = Ring::new(16, 3, [1, 2, 3]).expect("ring");
        ClusterMap::bootstrap(ring, addresses([1, 2, 3])).expect("map")
    }

    fn join4(map: &ClusterMap) -> ClusterMap {
        map.change(&RingChange::Join {
            node: 4,
            address: "127.0.0.1:7004".into(),
        })
        .expect("join")
        .0
    }

    #[test]
    fn join_marks_incoming_owners_and_keeps_the_old_ring_until_done() {
        let map = three();
        let next = join4(&map);
        assert_eq!(next.version(), map.version() + 1);
        let incoming = next.incoming(4);
        assert!(!incoming.is_empty());
        assert_eq!(next.handoffs_pending(), incoming.len());
        assert!(next.incoming(1).is_empty(), "old members take nothing new");
        for p in 0..16 {
            let moved = next.owners(p).contains(&4);
            assert_eq!(incoming.contains(&p), moved, "partition {p}");
            if moved {
                assert_eq!(next.previous_owners(p), Some(map.owners(p)));
                assert_eq!(next.handoff_sources(p, 4), map.owners(p).to_vec());
            } else {
                assert_eq!(next.previous_owners(p), None);
            }
        }
        assert!(matches!(
            next.change(&RingChange::Leave { node: 1 }),
            Err(MapError::HandoffInProgress { .. })
        ));
        let mut done = next.clone();
        for p in &incoming {
            assert!(done.mark_done(*p, 4));
            assert!(!done.mark_done(*p, 4), "a second report changes nothing");
        }
        assert_eq!(done.handoffs_pending(), 0);
        assert_eq!(done.previous_owners(incoming[0]), None);
        assert!(done.change(&RingChange::Leave { node: 1 }).is_ok());
    }

    #[test]
    fn merge_takes_higher_versions_and_accumulates_done_reports() {
        let next = join4(&three());
        let incoming = next.incoming(4);
        let mut a = next.clone();
        let mut b = next.clone();
        a.mark_done(incoming[0], 4);
        b.mark_done(incoming[1], 4);
        let mut old = three();
        assert!(old.merge(&a), "an older map takes the newer");
        assert_eq!(old, a);
        assert!(!a.clone().merge(&three()), "an older map changes nothing");
        assert!(a.merge(&b));
        assert_eq!(a.handoffs_pending(), incoming.len() - 2);
        let mut b2 = b.clone();
        b2.merge(&a);
        assert_eq!(a, b2, "merge commutes");
        assert!(!a.clone().merge(&b2));
    }

    #[test]
    fn two_changes_at_one_version_settle_the_same_way_everywhere() {
        let map = three();
        let joined = join4(&map);
        let (replaced, _) = map
            .change(&RingChange::Replace {
                old: 3,
                new: 5,
                address: "127.0.0.1:7005".into(),
            })
            .expect("replace");
        let mut x = joined.clone();
        x.merge(&replaced);
        let mut y = replaced.clone();
        y.merge(&joined);
        assert_eq!(x, y);
    }

    #[test]
    fn leave_drops_the_leaver_only_after_its_handoffs() {
        let four = {
            let mut m = join4(&three());
            for p in m.incoming(4) {
                m.mark_done(p, 4);
            }
            m
        };
        let (left, diff) = four.change(&RingChange::Leave { node: 2 }).expect("leave");
        assert!(!left.ring().is_member(2));
        assert!(left.nodes().contains(&2), "the leaver serves its handoffs");
        assert!(left.address(2).is_some());
        assert_eq!(diff.given_by(2), four.ring().load(2));
        let mut settled = left.clone();
        for node in [1, 3, 4] {
            for p in settled.incoming(node) {
                assert!(settled.handoff_sources(p, node).contains(&2));
                settled.mark_done(p, node);
            }
        }
        assert!(!settled.nodes().contains(&2));
        assert_eq!(settled.address(2), None);
    }

    #[test]
    fn sources_needed_covers_every_write_quorum() {
        let map = three();
        assert_eq!(map.sources_needed(2), 2);
        assert_eq!(map.sources_needed(3), 1);
        assert_eq!(map.sources_needed(1), 3);
    }

    #[test]
    fn save_load_roundtrip_and_corruption_is_refused() {
        let dir = MemDir::new();
        assert!(load(&dir).expect("empty dir").is_none());
        let map = join4(&three());
        save(&dir, &map).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(map.clone()));
        let mut done = map.clone();
        done.mark_done(map.incoming(4)[0], 4);
        save(&dir, &done).expect("save again");
        assert_eq!(load(&dir).expect("load"), Some(done));
        dir.corrupt_byte(MAP_FILE, 12).expect("corrupt");
        assert!(matches!(load(&dir), Err(MapFileError::Corrupt(_))));
    }

    #[test]
    fn decode_checks_invariants() {
        let mut map = join4(&three());
        map.addresses.remove(&4);
        assert!(ClusterMap::decode(&map.encode()).is_err());
        assert!(ClusterMap::decode(b"garbage").is_err());
    }
}
