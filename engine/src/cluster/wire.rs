//! The peer protocol's messages (postcard bodies inside the transport's frames;
//! framing and authentication are `shoal-net`'s `peer` module). Every request has
//! one response with the same id. Lists in requests are bounded by the senders
//! (`*_MAX` below) and checked by the receivers.

use crate::version::{Dot, NodeId, SiblingSet, VersionVector};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Keys in one `Read`, `Replicate` or `Coordinate` request.
pub const ITEMS_PER_REQUEST_MAX: usize = 4096;

/// One replica write: merge `set` into the key's copy, make it durable, ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaItem {
    pub namespace: u8,
    pub key: Bytes,
    pub set: SiblingSet,
}

/// Redis's NX / XX on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireCondition {
    Always,
    IfAbsent,
    IfPresent,
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
    pub condition: WireCondition,
}

/// What a coordinated write did (the store's `WriteOutcome`, minus the set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOutcome {
    pub applied: bool,
    pub dot: Option<Dot>,
    pub superseded: VersionVector,
    pub previous_winner: Option<Bytes>,
    pub previous_live: bool,
}

/// A refusal, with the Redis error code the client should see (`IOERR` means the
/// outcome is unknown; any other code means the write did not happen).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: String,
    pub message: String,
}

impl RemoteError {
    pub fn new(code: &str, message: impl Into<String>) -> RemoteError {
        RemoteError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The Redis error line: `CODE message`.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.message)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness; answered with `Pong`.
    Ping { incarnation: u64 },
    /// Merge each set into the local copy and sync before answering.
    Replicate { items: Vec<ReplicaItem> },
    /// The local copies of keys (no quorum: the asker runs the round).
    Read { namespace: u8, keys: Vec<Bytes> },
    /// Coordinate these writes here (the asker is not their coordinator).
    Coordinate { writes: Vec<ClientWrite> },
    /// Anti-entropy: this node's digest of each listed partition (a range of
    /// slots, all namespaces).
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong { incarnation: u64 },
    Replicated(Vec<Result<(), RemoteError>>),
    Sets(Vec<Result<Option<SiblingSet>, RemoteError>>),
    Coordinated(Vec<Result<ClientOutcome, RemoteError>>),
    PartitionDigests(Vec<u64>),
    SlotDigests(Vec<crate::digest::SlotDigestEntry>),
    SlotKeys(Vec<(Vec<u8>, u64)>),
    Keys(Vec<Bytes>),
    Error(RemoteError),
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
