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
use shoal_engine::fields::{field_prefix, fields_namespace, split_field_key};
use shoal_engine::{SiblingSet, WriteOp};
use std::sync::Arc;

/// Keys deleted per batch by FLUSHDB / FLUSHALL.
const KEYS_PER_FLUSH_BATCH: usize = 512;

/// A key's sibling set (`None`: absent), or the error reply for that key.
pub type KeyRead = Result<Option<SiblingSet>, Reply>;

/// The storage a connection's commands run against, and the keyspace's
/// hit and miss counts its lookups add to.
pub struct Backend<'a> {
    pub place: Place<'a>,
    keyspace: &'a KeyspaceStats,
    /// This node's storage, for its wall clock (what deadlines are read against).
    clock: &'a Storage,
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
        }
    }

    /// Wall time, ms since the Unix epoch: a value whose deadline is at or
    /// before it reads as absent.
    pub fn now_ms(&self) -> u64 {
        self.clock.wall_ms()
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

    /// [`Backend::read`] without counting hits and misses.
    async fn fetch(&self, ns: u8, keys: &[Bytes]) -> Vec<KeyRead> {
        match &self.place {
            Place::Local(storage) => storage.read(|s| {
                keys.iter()
                    .map(|k| s.get(ns, k).map_err(read_error))
                    .collect()
            }),
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
                let now_ms = self.now_ms();
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
            Place::Local(storage) => match storage.submit(ops).await {
                Ok(ticket) => Step::Pending(ticket, shape),
                Err(_) => err("IOERR storage has stopped; the write was not made"),
            },
            Place::Routed(cluster) => crate::routing::routed(cluster, ops, shape),
        }
    }

    /// Every live key of namespace `ns` (not expired): its strings, then its
    /// hashes that are not also strings.
    pub async fn keys(&self, ns: u8) -> Result<Vec<Bytes>, Reply> {
        let mut keys = self.listed_keys(ns, false).await?;
        let strings: std::collections::BTreeSet<Bytes> = keys.iter().cloned().collect();
        let hashes = self.listed_keys(fields_namespace(ns), false).await?;
        keys.extend(hash_keys(hashes).filter(|k| !strings.contains(k)));
        Ok(keys)
    }

    /// The live fields of hash `key` with their sets (expired values left
    /// out), in field order.
    pub async fn fields(&self, ns: u8, key: &[u8]) -> Result<Vec<(Bytes, SiblingSet)>, Reply> {
        let (fns, prefix) = (fields_namespace(ns), field_prefix(key));
        let stored: Vec<Bytes> = match &self.place {
            Place::Local(storage) => storage.read(|s| s.live_keys_with_prefix(fns, &prefix)),
            Place::Routed(cluster) => {
                let slot = shoal_engine::slot::key_slot(key);
                let mut keys = cluster
                    .keys(fns, slot..=slot)
                    .await
                    .map_err(|e| refused(&e))?;
                keys.retain(|k| k.starts_with(&prefix));
                keys
            }
        };
        let now_ms = self.now_ms();
        let mut fields = Vec::with_capacity(stored.len());
        for (stored_key, read) in stored.iter().zip(self.fetch(fns, &stored).await) {
            let Some(set) = read? else { continue };
            let set = set.without_expired(now_ms);
            if !set.is_deleted() {
                let field = Bytes::copy_from_slice(&stored_key[prefix.len()..]);
                fields.push((field, set));
            }
        }
        Ok(fields)
    }

    /// Whether `key` is a hash (some field holds a value). On a cluster only
    /// hash commands ask (a string command would pay a listing round).
    pub async fn is_hash(&self, ns: u8, key: &[u8]) -> Result<bool, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let (fns, prefix) = (fields_namespace(ns), field_prefix(key));
                Ok(storage.read(|s| !s.live_keys_with_prefix(fns, &prefix).is_empty()))
            }
            Place::Routed(_) => Ok(!self.fields(ns, key).await?.is_empty()),
        }
    }

    /// [`Backend::is_hash`] where it costs no round trip (one node);
    /// `false` on a cluster, whose string commands do not look at hashes.
    pub async fn is_hash_here(&self, ns: u8, key: &[u8]) -> Result<bool, Reply> {
        match self.place {
            Place::Local(_) => self.is_hash(ns, key).await,
            Place::Routed(_) => Ok(false),
        }
    }

    /// Every key of namespace `ns` holding a value, expired ones too when
    /// `with_expired` (FLUSHDB deletes those as well).
    async fn listed_keys(&self, ns: u8, with_expired: bool) -> Result<Vec<Bytes>, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let now_ms = self.now_ms();
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

    /// How many live keys namespace `ns` holds (DBSIZE).
    pub async fn key_count(&self, ns: u8) -> Result<i64, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let strings = storage.read(|s| s.live_key_count(ns)) as i64;
                let hashes = self.listed_keys(fields_namespace(ns), false).await?;
                let hashes_only = storage.read(|s| {
                    hash_keys(hashes)
                        .filter(|k| !s.contains_live(ns, k))
                        .count()
                });
                Ok(strings + hashes_only as i64)
            }
            Place::Routed(_) => self.keys(ns).await.map(|keys| keys.len() as i64),
        }
    }

    /// One SCAN step: the keys from `cursor` on (about `count` on one node, a
    /// partition's on a cluster) and the next cursor (0 at the end). Cursors
    /// are slots on both backends.
    pub async fn scan(&self, ns: u8, cursor: u64, count: usize) -> Result<ScanStep, Reply> {
        let fns = fields_namespace(ns);
        let (strings, stored, next) = match &self.place {
            Place::Local(storage) => {
                let now_ms = self.now_ms();
                storage.read(|s| {
                    let (mut keys, next) = s.scan(ns, cursor, count);
                    keys.retain(|k| !s.has_expired(ns, k, now_ms));
                    let last_slot = match next {
                        0 => shoal_engine::slot::SLOT_COUNT - 1,
                        next => next as u16 - 1,
                    };
                    let first_slot = cursor.min(u64::from(last_slot)) as u16;
                    (
                        keys,
                        s.live_keys_in_slots(fns, first_slot..=last_slot),
                        next,
                    )
                })
            }
            Place::Routed(cluster) => {
                let scan = |ns| crate::routing::scan_partition(cluster, ns, cursor);
                let (keys, next) = scan(ns).await.map_err(|e| refused(&e))?;
                let (stored, _) = scan(fns).await.map_err(|e| refused(&e))?;
                (keys, stored, next)
            }
        };
        let listed: std::collections::BTreeSet<&Bytes> = strings.iter().collect();
        let hashes = hash_keys(stored).filter(|k| !listed.contains(k)).collect();
        Ok(ScanStep {
            strings,
            hashes,
            next,
        })
    }

    /// The namespaces FLUSHALL empties.
    pub fn namespaces_in_use(&self) -> Vec<u8> {
        match &self.place {
            Place::Local(storage) => {
                storage.read(|s| s.namespaces().into_iter().map(|(ns, _)| ns).collect())
            }
            Place::Routed(_) => (0..16).chain((0..16).map(fields_namespace)).collect(),
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

    /// Write `ops` and wait for them (FLUSH's batches).
    async fn write_now(&self, ops: Vec<WriteOp>) -> Result<(), Reply> {
        match &self.place {
            Place::Local(storage) => match storage.write(ops).await {
                Ok(results) => match results.iter().find_map(|r| r.as_ref().err()) {
                    Some(e) => Err(write_error_reply(e)),
                    None => Ok(()),
                },
                Err(_) => Err(Reply::error("IOERR storage has stopped")),
            },
            Place::Routed(cluster) => {
                match cluster.write(ops).await.into_iter().find_map(Result::err) {
                    Some(e) => Err(refused(&e)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// One SCAN step's keys, by type, and the next cursor (0: done).
pub struct ScanStep {
    pub strings: Vec<Bytes>,
    /// Hashes that are not also strings.
    pub hashes: Vec<Bytes>,
    pub next: u64,
}

/// The distinct hash keys of stored field keys listed in order (a key's
/// fields are contiguous).
pub fn hash_keys(stored: Vec<Bytes>) -> impl Iterator<Item = Bytes> {
    let mut last: Option<Bytes> = None;
    stored.into_iter().filter_map(move |k| {
        let (key, _) = split_field_key(&k)?;
        if last.as_deref() == Some(key) {
            return None;
        }
        let key = k.slice_ref(key);
        last = Some(key.clone());
        Some(key)
    })
}
