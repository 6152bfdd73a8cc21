//! The peer protocol's messages (postcard bodies inside the transport's frames;
//! framing and authentication are `shoal-net`'s `peer` module). Every request has
//! one response with the same id. Lists in requests are bounded by the senders
//! (`*_MAX` below) and checked by the receivers.

use crate::cluster::map::{ClusterMap, Namespaces};
pub use crate::cluster::refusal::{Outcome, Refusal, RemoteError};
use crate::cluster::tombstones::MarkerItem;
use crate::store::{Condition, Deadline};
use crate::version::{Dot, NodeId, SiblingSet, VersionVector};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Keys in one `Read`, `Replicate` or `Coordinate` request.
pub const ITEMS_PER_REQUEST_MAX: usize = 4096;
/// Keys in one handoff batch.
pub const HANDOFF_ITEMS_PER_BATCH_MAX: usize = 512;
/// Bytes of values in one handoff batch (a batch always carries at least one key).
pub const HANDOFF_BATCH_BYTES_MAX: usize = 8 << 20;

/// Splits `items` into requests of at most `bytes_max` bytes of sibling sets
/// and [`ITEMS_PER_REQUEST_MAX`] items, in order; each holds at least one item,
/// so a set larger than `bytes_max` travels alone.
pub fn chunk_by_bytes(items: Vec<ReplicaItem>, bytes_max: usize) -> Vec<Vec<ReplicaItem>> {
    let mut chunks: Vec<Vec<ReplicaItem>> = Vec::new();
    let mut chunk_bytes = 0usize;
    for item in items {
        let item_bytes = item.key.len() + item.set.size_bytes();
        let full = match chunks.last() {
            None => true,
            Some(c) => c.len() >= ITEMS_PER_REQUEST_MAX || chunk_bytes + item_bytes > bytes_max,
        };
        if full {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += item_bytes;
        chunks.last_mut().expect("pushed above").push(item);
    }
    chunks
}

/// Where a handoff scan resumes: after this key of this (slot, namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HandoffCursor {
    pub slot: u16,
    pub namespace: u8,
    pub key: Bytes,
}

/// One replica write: merge `set` into the key's copy, make it durable, ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaItem {
    pub namespace: u8,
    pub key: Bytes,
    pub set: SiblingSet,
}

/// The bytes copies take in frames ([`ReplicaItem::size_bytes`] summed).
pub fn items_bytes(items: &[ReplicaItem]) -> usize {
    items.iter().map(ReplicaItem::size_bytes).sum()
}

impl ReplicaItem {
    /// About how many bytes it takes in a frame: its key and its set.
    pub fn size_bytes(&self) -> usize {
        self.key.len() + self.set.size_bytes()
    }
}

/// How many of `items` (in order) one bounded request or round carries: the
/// longest prefix within `bytes_max`, and always the first, so an item larger
/// than the budget still travels alone and every value size makes progress.
pub fn items_within_bytes<'a>(
    items: impl IntoIterator<Item = &'a ReplicaItem>,
    bytes_max: usize,
) -> usize {
    let mut total = 0usize;
    let mut count = 0;
    for item in items {
        total = total.saturating_add(item.size_bytes());
        if count > 0 && total > bytes_max {
            break;
        }
        count += 1;
    }
    count
}

/// The read-modify-writes a cluster routes: each reads the key from a quorum
/// first, then is computed by the coordinator's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireModify {
    /// INCRBY and its kin (`Modify::CountBy`).
    CountBy(i64),
    /// INCRBYFLOAT (`Modify::CountByFloat`): the f64's bits.
    CountByFloat(u64),
    /// EXPIRE and its kin, PERSIST, GETEX (`Modify::Touch`).
    Touch,
}

/// A client's write, proxied to the key's coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWrite {
    pub namespace: u8,
    pub key: Bytes,
    /// `None`: a delete.
    pub value: Option<Bytes>,
    /// `None`: supersede everything the coordinator holds (plain SET/DEL).
    pub context: Option<VersionVector>,
    pub condition: Condition,
    pub deadline: Deadline,
    /// A read-modify-write instead of `value`.
    pub modify: Option<WireModify>,
}

/// What a coordinated write did (the store's `WriteOutcome`, minus the set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOutcome {
    pub applied: bool,
    pub dot: Option<Dot>,
    pub superseded: VersionVector,
    pub previous_winner: Option<Bytes>,
    pub previous_live: bool,
    /// The value the write minted (what INCR answers).
    pub minted_value: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness; answered with `Pong`. Both carry the sender's map version and
    /// fingerprint, so maps that differ are noticed and synced.
    Ping {
        incarnation: u64,
        /// The sender's data directory's random id: tells a directory that
        /// replaced the one it ran on.
        dir_id: u64,
        map_version: u64,
        map_fingerprint: u64,
    },
    /// Merge each set into the local copy and sync before answering. Refused
    /// ([`Refusal::StaleRing`]) when `ring_version` is older than the receiver's ring. With
    /// `hint_for`, the receiver is a fallback: it keeps the sets durably as hints
    /// for that owner instead, and hands them over when the owner is back.
    /// Refused ([`Refusal::TooOld`]) when it arrives more than `replica_write_age_max_ms`
    /// after `sent_wall_ms` (the sender's wall clock): a copy held up that long
    /// (a stalled link) must not land after a delete marker it predates was
    /// collected.
    Replicate {
        ring_version: u64,
        sent_wall_ms: u64,
        items: Vec<ReplicaItem>,
        hint_for: Option<NodeId>,
    },
    /// Merge this map into yours and answer with the result.
    MapSync { map: ClusterMap },
    /// Handoff: every key (delete markers too) of `namespaces` held in a range of
    /// slots, in (slot, namespace, key) order from after `after`, one bounded batch
    /// at a time. Refused ([`Refusal::MapBehind`]) by a node whose ring is older than
    /// `ring_version`: a source must know the new ring before it scans.
    HandoffScan {
        ring_version: u64,
        first_slot: u16,
        last_slot: u16,
        namespaces: Namespaces,
        after: Option<HandoffCursor>,
    },
    /// The local copies of keys (no quorum: the asker runs the round). Every
    /// request answered with copies carries the asker's `ring_version`: a node
    /// behind it learns that ring first, since adopting it may drop copies
    /// left over from before it lost their partitions (values whose delete
    /// markers were collected without it), and refuses
    /// ([`Refusal::TryAgain`]) if it cannot.
    Read {
        ring_version: u64,
        namespace: u8,
        keys: Vec<Bytes>,
    },
    /// Repair's read: the local copies of the first of `keys` whose sets add up
    /// to at most `bytes_max` (by `SiblingSet::size_bytes`), at least one,
    /// answered with `Sets` for that prefix; the asker sends the rest again.
    /// Anti-entropy pulls this way, so a round moves any value size. Ring
    /// admission as `Read`.
    ReadPrefix {
        ring_version: u64,
        namespace: u8,
        keys: Vec<Bytes>,
        bytes_max: u64,
    },
    /// Sloppy quorum's read side: the hints this node keeps for `owner`, one per
    /// key (`None`: no hint), as the fallback standing in for it while it is
    /// down. Ring admission as `Read` (adopting a ring may drop every hint).
    ReadHints {
        ring_version: u64,
        owner: NodeId,
        namespace: u8,
        keys: Vec<Bytes>,
    },
    /// Coordinate these writes here (the asker is not their coordinator).
    /// Refused ([`Refusal::TooOld`], nothing written) when coordinating would start more
    /// than `request_timeout_ms` after `sent_wall_ms`: the asker would give up
    /// before the answer, and a write applied that late could overwrite writes
    /// acknowledged since.
    Coordinate {
        sent_wall_ms: u64,
        writes: Vec<ClientWrite>,
    },
    /// Anti-entropy: this node's digest of each listed map partition (a range of
    /// slots, the namespaces the partition holds under the receiver's map).
    PartitionDigests { partitions: Vec<u32> },
    /// Anti-entropy: this node's (slot, namespace) digests of a range of slots.
    SlotDigests { first_slot: u16, last_slot: u16 },
    /// Anti-entropy: every key of one slot with its hash.
    SlotKeys { namespace: u8, slot: u16 },
    /// Live keys held locally in a range of slots (KEYS, SCAN, DBSIZE).
    Keys {
        namespace: u8,
        first_slot: u16,
        last_slot: u16,
    },
    /// SWIM's ping-req: ping `target` and answer with `Vouch` (the asker cannot
    /// hear it directly).
    PingReq { target: NodeId },
    /// Marker collection, step 1 (`tombstones`): this node's verdict on each.
    /// Refused ([`Refusal::StaleRing`]) unless the receiver has the same ring, settled.
    MarkerVerdicts {
        ring_version: u64,
        items: Vec<MarkerItem>,
    },
    /// Marker collection, step 3: forget each marker still held as agreed.
    /// Refused like `MarkerVerdicts`, and like `Replicate` when too old.
    ForgetMarkers {
        ring_version: u64,
        sent_wall_ms: u64,
        items: Vec<MarkerItem>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong {
        incarnation: u64,
        dir_id: u64,
        map_version: u64,
        map_fingerprint: u64,
        /// The highest incarnation the answerer saw of the asker on a directory
        /// other than the asking one (0: none). A starting node learns from it
        /// whether its directory replaced one it ran on.
        your_incarnation: u64,
        /// The answerer's wall clock as it answered: the asker estimates the
        /// skew between their clocks, which marker collection's wait covers.
        wall_ms: u64,
    },
    Map(ClusterMap),
    /// One handoff batch; `next` is where to resume (`None`: the range is done).
    HandoffItems {
        items: Vec<ReplicaItem>,
        next: Option<HandoffCursor>,
    },
    Replicated(Vec<Result<(), RemoteError>>),
    Sets(Vec<Result<Option<SiblingSet>, RemoteError>>),
    Coordinated(Vec<Result<ClientOutcome, RemoteError>>),
    PartitionDigests(Vec<u64>),
    SlotDigests(Vec<crate::digest::SlotDigestEntry>),
    SlotKeys(Vec<(Vec<u8>, u64)>),
    Keys(Vec<Bytes>),
    Error(RemoteError),
    /// `PingReq`'s answer: the target's incarnation if it answered the ping.
    Vouch {
        answered: Option<u64>,
    },
    /// `MarkerVerdicts`' answer, one per item: true when it may go.
    Verdicts(Vec<bool>),
    /// `ForgetMarkers`' answer: how many this node forgot.
    Forgot(u64),
}

/// What travels in one frame after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope {
    Request {
        id: u64,
        from: NodeId,
        body: Request,
    },
    Response {
        id: u64,
        body: Response,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Dot, Hlc, Sibling};

    fn item(key: &str, value_bytes: usize) -> ReplicaItem {
        ReplicaItem {
            namespace: 0,
            key: Bytes::from(key.to_string()),
            set: SiblingSet {
                context: VersionVector::new(),
                siblings: vec![Sibling {
                    dot: Dot {
                        node: 1,
                        counter: 1,
                    },
                    hlc: Hlc(0),
                    value: Some(Bytes::from(vec![b'v'; value_bytes])),
                    deadline_ms: None,
                    counter: None,
                }],
            },
        }
    }

    #[test]
    fn chunks_hold_at_most_the_budget_and_at_least_one_item() {
        let items: Vec<ReplicaItem> = [10, 10, 500, 10, 10, 10]
            .iter()
            .enumerate()
            .map(|(i, n)| item(&format!("k{i}"), *n))
            .collect();
        let sizes: Vec<Vec<usize>> = chunk_by_bytes(items, 100)
            .iter()
            .map(|c| c.iter().map(|i| i.set.size_bytes() - 32).collect())
            .collect();
        assert_eq!(sizes, vec![vec![10, 10], vec![500], vec![10, 10], vec![10]]);
        assert!(chunk_by_bytes(Vec::new(), 100).is_empty());
    }
}
