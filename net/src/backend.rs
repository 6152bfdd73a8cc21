//! Where a command's reads and writes go: this node's storage (a single node)
//! or the cluster (a member routes each key to its replicas). Every data
//! command is written once, in `data`, against [`Backend`]; the backend
//! decides how a read or a write travels, and turns its failures into the
//! error reply the client sees.
//!
//! Must not touch: command names, arguments or reply shapes (those are
//! `commands`' and `data`'s), framing (`resp`), connections (`server`).

use crate::cluster::Cluster;
use crate::command_stats::KeyspaceStats;
use crate::reply::{err, read_error, refused, write_error_reply, ReplyShape, Step};
use crate::resp::Reply;
use crate::shared::Shared;
use crate::storage::Storage;
use bytes::Bytes;
use shoal_engine::fields::{fields_namespace, lists_namespace, members_namespace};
use shoal_engine::{SiblingSet, WriteOp};
use std::sync::Arc;

/// Keys deleted per batch by FLUSHDB / FLUSHALL.
const KEYS_PER_FLUSH_BATCH: usize = 512;

/// A key's sibling set (`None`: absent), or the error reply for that key.
pub type KeyRead = Result<Option<SiblingSet>, Reply>;

/// [`Backend::read_winner`]'s answer: the winner's value and deadline, if
/// any, or the reply a failed read gives.
pub type WinnerRead = Result<Option<(Bytes, Option<u64>)>, Reply>;

/// The storage a connection's commands run against, and the keyspace's
/// hit and miss counts its lookups add to.
pub struct Backend<'a> {
    pub place: Place<'a>,
    keyspace: &'a KeyspaceStats,
    /// This node's storage, for its wall clock (what deadlines are read against).
    clock: &'a Storage,
    /// SWAPDB's map (`databases`): every namespace handed to the local
    /// store goes through [`Backend::stored`]. Read at each use, so a blocked
    /// command's next try sees a swap (SWAPDB takes the exclusive turn, so
    /// no command's reads straddle one).
    databases: &'a crate::databases::Databases,
    /// This node's count of tiebreaks and random draws (`Shared::sequence`).
    sequence: &'a std::sync::atomic::AtomicU64,
}

/// Where reads and writes go.
pub enum Place<'a> {
    /// This node's store: reads from memory and disk, writes group-committed.
    Local(&'a Storage),
    /// The cluster: reads from `r` replicas, writes through each key's
    /// coordinator, keyspace commands gathered from every partition.
    Routed(&'a Arc<Cluster>),
}

impl<'a> Backend<'a> {
    pub fn of(shared: &'a Shared) -> Backend<'a> {
        let place = match &shared.cluster {
            Some(cluster) => Place::Routed(cluster),
            None => Place::Local(&shared.storage),
        };
        Backend {
            place,
            keyspace: &shared.keyspace,
            clock: &shared.storage,
            databases: &shared.databases,
            sequence: &shared.sequence,
        }
    }

    /// The node's next sequence number: list elements' tiebreaks. Per node,
    /// never per process, so a simulated seed replays alike whatever ran
    /// before it in the process.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A seed for a random pick (SRANDMEMBER, SPOP, RANDOMKEY, ...): the wall
    /// clock and the node's next sequence number.
    pub fn entropy(&self) -> u64 {
        self.now_ms() ^ self.next_sequence().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The namespace the local store keeps selected namespace `ns` in.
    pub(crate) fn stored(&self, ns: u8) -> u8 {
        crate::databases::stored_namespace(&self.databases.snapshot(), ns)
    }

    /// Wall time, ms since the Unix epoch: a value whose deadline is at or
    /// before it reads as absent.
    pub fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// What sets this node's writes apart from other nodes' where they must
    /// differ (a list element's tiebreak): its node id on a cluster, else 0.
    pub fn node_tag(&self) -> u64 {
        match &self.place {
            Place::Local(_) => 0,
            Place::Routed(cluster) => u64::from(cluster.me()),
        }
    }

    /// Whether reads and writes go through the cluster.
    pub fn is_routed(&self) -> bool {
        matches!(self.place, Place::Routed(_))
    }

    /// Each key's set, in order, without the values expired by now (the
    /// context kept: a write under it supersedes them too).
    pub async fn read(&self, ns: u8, keys: &[Bytes]) -> Vec<KeyRead> {
        let now_ms = self.now_ms();
        let reads: Vec<KeyRead> = self
            .fetch(ns, keys)
            .await
            .into_iter()
            .map(|r| r.map(|set| set.map(|s| s.without_expired(now_ms))))
            .collect();
        for read in reads.iter().flatten() {
            self.keyspace
                .record(read.as_ref().is_some_and(|s| !s.is_deleted()));
        }
        reads
    }

    /// One key's winning value at `now_ms` and its deadline, counted as a
    /// hit or a miss: what GET needs, read without building the key's
    /// sibling set. One node only (`None` on a cluster, which reads through
    /// [`Backend::read`]).
    pub fn read_winner(&self, ns: u8, key: &[u8], now_ms: u64) -> Option<WinnerRead> {
        let Place::Local(storage) = &self.place else {
            return None;
        };
        let ns = self.stored(ns);
        let read = storage.read(|s| s.get_winner(ns, key, now_ms).map_err(read_error));
        if let Ok(winner) = &read {
            self.keyspace.record(winner.is_some());
        }
        Some(read)
    }

    /// [`Backend::read`] without counting hits and misses.
    pub(crate) async fn fetch(&self, ns: u8, keys: &[Bytes]) -> Vec<KeyRead> {
        match &self.place {
            Place::Local(storage) => {
                let ns = self.stored(ns);
                storage.read(|s| {
                    keys.iter()
                        .map(|k| s.get(ns, k).map_err(read_error))
                        .collect()
                })
            }
            Place::Routed(cluster) => cluster
                .read(ns, keys.to_vec())
                .await
                .into_iter()
                .map(|r| r.map_err(|e| refused(&e)))
                .collect(),
        }
    }

    /// Whether each key holds a value (not absent, not only delete markers).
    /// On one node this reads the key directory only, not the values.
    pub async fn live(&self, ns: u8, keys: &[Bytes]) -> Vec<Result<bool, Reply>> {
        let live: Vec<Result<bool, Reply>> = match &self.place {
            Place::Local(storage) => {
                let (now_ms, ns) = (self.now_ms(), self.stored(ns));
                storage.read(|s| {
                    keys.iter()
                        .map(|k| Ok(s.contains_live(ns, k) && !s.has_expired(ns, k, now_ms)))
                        .collect()
                })
            }
            Place::Routed(_) => {
                let now_ms = self.now_ms();
                self.fetch(ns, keys)
                    .await
                    .into_iter()
                    .map(|r| r.map(|set| set.is_some_and(|s| !s.is_absent_at(now_ms))))
                    .collect()
            }
        };
        for hit in live.iter().flatten() {
            self.keyspace.record(*hit);
        }
        live
    }

    /// Start `ops`; the connection resolves the returned step (a group-commit
    /// ticket, or a routed write's answer) in order.
    pub async fn write(&self, ops: Vec<WriteOp>, shape: ReplyShape) -> Step {
        match &self.place {
            Place::Local(storage) => match storage.submit(self.stored_ops(ops)).await {
                Ok(ticket) => Step::Pending(ticket, shape),
                Err(_) => err("IOERR storage has stopped; the write was not made"),
            },
            Place::Routed(cluster) => crate::routing::routed(cluster, ops, shape),
        }
    }

    /// Every key of namespace `ns` holding a value, expired ones too when
    /// `with_expired` (FLUSHDB deletes those as well).
    pub(crate) async fn listed_keys(
        &self,
        ns: u8,
        with_expired: bool,
    ) -> Result<Vec<Bytes>, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let (now_ms, ns) = (self.now_ms(), self.stored(ns));
                Ok(storage.read(|s| {
                    let mut keys = s.keys(ns);
                    keys.retain(|k| with_expired || !s.has_expired(ns, k, now_ms));
                    keys
                }))
            }
            Place::Routed(cluster) => cluster
                .keys(ns, 0..=shoal_engine::slot::SLOT_COUNT - 1)
                .await
                .map_err(|e| refused(&e)),
        }
    }

    /// The namespaces FLUSHALL empties.
    pub fn namespaces_in_use(&self) -> Vec<u8> {
        match &self.place {
            Place::Local(storage) => storage.read(|s| {
                let map = self.databases.snapshot();
                let selected = |ns| crate::databases::selected_namespace(&map, ns);
                s.namespaces()
                    .into_iter()
                    .map(|(ns, _)| selected(ns))
                    .collect()
            }),
            Place::Routed(_) => (0..16)
                .flat_map(|db| {
                    [
                        db,
                        fields_namespace(db),
                        members_namespace(db),
                        lists_namespace(db),
                    ]
                })
                .collect(),
        }
    }

    /// Delete every key of `namespaces`, in batches of
    /// [`KEYS_PER_FLUSH_BATCH`]; the first failure is the reply.
    pub async fn flush(&self, namespaces: &[u8]) -> Reply {
        for ns in namespaces {
            loop {
                let keys = match self.listed_keys(*ns, true).await {
                    Ok(keys) => keys,
                    Err(reply) => return reply,
                };
                if keys.is_empty() {
                    break;
                }
                for chunk in keys.chunks(KEYS_PER_FLUSH_BATCH) {
                    let ops = chunk
                        .iter()
                        .map(|k| WriteOp::delete(*ns, k.clone()))
                        .collect();
                    if let Err(reply) = self.write_now(ops).await {
                        return reply;
                    }
                }
                if self.is_routed() {
                    // A routed listing is gathered once: keys written since
                    // are not this FLUSH's.
                    break;
                }
            }
        }
        Reply::ok()
    }

    /// `ops` with their namespaces as the local store keeps them.
    fn stored_ops(&self, mut ops: Vec<WriteOp>) -> Vec<WriteOp> {
        for op in &mut ops {
            op.namespace = self.stored(op.namespace);
        }
        ops
    }

    /// Write `ops` and wait for them (FLUSH's batches).
    async fn write_now(&self, ops: Vec<WriteOp>) -> Result<(), Reply> {
        match &self.place {
            Place::Local(storage) => write_stored(storage, self.stored_ops(ops)).await,
            Place::Routed(cluster) => {
                match cluster.write(ops).await.into_iter().find_map(Result::err) {
                    Some(e) => Err(refused(&e)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Write ops whose namespaces are already the store's (`Backend::stored`) to
/// this node's storage, and wait for them; the first failure is the reply.
pub(crate) async fn write_stored(storage: &Storage, ops: Vec<WriteOp>) -> Result<(), Reply> {
    match storage.write(ops).await {
        Ok(results) => match results.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => Err(write_error_reply(e)),
            None => Ok(()),
        },
        Err(_) => Err(Reply::error("IOERR storage has stopped")),
    }
}
