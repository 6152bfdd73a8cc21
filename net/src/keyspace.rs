//! The keys of every type, as the keyspace commands see them: a string in
//! the database's namespace, a hash's fields and a set's members each in
//! their collection namespace (`shoal_engine::fields`). Listing, counting and
//! scanning gather all three; a collection's elements list from its key's
//! slot.
//!
//! Must not touch: commands' arguments and replies (`data`, `hash`, `set`,
//! `types`), how a single read or write travels (`backend`).

use crate::backend::{Backend, Place};
use crate::reply::refused;
use crate::resp::Reply;
use bytes::Bytes;
use shoal_engine::fields::{
    field_prefix, fields_namespace, lists_namespace, members_namespace, split_field_key,
    zset_members_namespace, zset_scores_namespace,
};
use shoal_engine::SiblingSet;
use std::collections::BTreeSet;

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
    Set,
    List,
    ZSet,
    /// A sorted set's score index (`fields::score_element`): listed only by
    /// the sorted-set commands, never a key's type of its own.
    ZSetScores,
}

impl Kind {
    /// The collections, in the order a key's type is looked for after strings.
    pub const COLLECTIONS: [Kind; 4] = [Kind::Hash, Kind::Set, Kind::List, Kind::ZSet];

    /// TYPE's answer.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::Set => "set",
            Kind::List => "list",
            Kind::ZSet | Kind::ZSetScores => "zset",
        }
    }

    /// The namespace of database `ns` holding this kind's keys or elements.
    pub fn namespace(self, ns: u8) -> u8 {
        match self {
            Kind::String => ns,
            Kind::Hash => fields_namespace(ns),
            Kind::Set => members_namespace(ns),
            Kind::List => lists_namespace(ns),
            Kind::ZSet => zset_members_namespace(ns),
            Kind::ZSetScores => zset_scores_namespace(ns),
        }
    }
}

/// One SCAN step's keys, by type (a key listed under an earlier type is not
/// listed again), and the next cursor (0: done).
pub struct ScanStep {
    pub keys: Vec<(Bytes, Kind)>,
    pub next: u64,
}

/// The distinct collection keys of stored element keys listed in order (a
/// key's elements are contiguous).
pub fn collection_keys(stored: Vec<Bytes>) -> impl Iterator<Item = Bytes> {
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

impl Backend<'_> {
    /// The live elements of collection `key` of `kind` with their sets
    /// (expired values left out), in element order.
    pub async fn elements(
        &self,
        ns: u8,
        kind: Kind,
        key: &[u8],
    ) -> Result<Vec<(Bytes, SiblingSet)>, Reply> {
        let stored = self.element_keys(ns, kind, key).await?;
        self.element_sets(ns, kind, key, stored).await
    }

    /// The stored keys of the live elements of collection `key` of `kind`,
    /// in element order, without reading their values (on one node, the key
    /// directory only).
    pub async fn element_keys(&self, ns: u8, kind: Kind, key: &[u8]) -> Result<Vec<Bytes>, Reply> {
        let (cns, prefix) = (kind.namespace(ns), field_prefix(key));
        Ok(match &self.place {
            Place::Local(storage) => {
                let cns = self.stored(cns);
                storage.read(|s| s.live_keys_with_prefix(cns, &prefix))
            }
            Place::Routed(cluster) => {
                let slot = shoal_engine::slot::key_slot(key);
                let mut keys = cluster
                    .keys(cns, slot..=slot)
                    .await
                    .map_err(|e| refused(&e))?;
                keys.retain(|k| k.starts_with(&prefix));
                keys
            }
        })
    }

    /// How many elements collection `key` of `kind` holds, without reading
    /// them on one node (the key directory's count); a cluster reads them.
    pub async fn element_count(&self, ns: u8, kind: Kind, key: &[u8]) -> Result<usize, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let (cns, prefix) = (self.stored(kind.namespace(ns)), field_prefix(key));
                Ok(storage.read(|s| s.live_count_with_prefix(cns, &prefix)) as usize)
            }
            Place::Routed(_) => Ok(self.elements(ns, kind, key).await?.len()),
        }
    }

    /// Up to `take` stored keys of the live elements of `key` of `kind`,
    /// `skip` of them passed over, from the first (or `from_back`, the last)
    /// on. One node walks only that end of the key directory.
    pub async fn element_keys_from(
        &self,
        ns: u8,
        kind: Kind,
        key: &[u8],
        (from_back, skip, take): (bool, usize, usize),
    ) -> Result<Vec<Bytes>, Reply> {
        if let Place::Local(storage) = &self.place {
            let (cns, prefix) = (self.stored(kind.namespace(ns)), field_prefix(key));
            let window = (from_back, skip, take);
            return Ok(storage.read(|s| s.live_keys_with_prefix_from(cns, &prefix, window)));
        }
        let mut all = self.element_keys(ns, kind, key).await?;
        if from_back {
            all.reverse();
        }
        Ok(all.into_iter().skip(skip).take(take).collect())
    }

    /// The elements stored under `stored` (keys of collection `key`), with
    /// their sets, expired values and deleted ones left out.
    pub async fn element_sets(
        &self,
        ns: u8,
        kind: Kind,
        key: &[u8],
        stored: Vec<Bytes>,
    ) -> Result<Vec<(Bytes, SiblingSet)>, Reply> {
        let (cns, prefix_len) = (kind.namespace(ns), field_prefix(key).len());
        let now_ms = self.now_ms();
        let mut elements = Vec::with_capacity(stored.len());
        for (stored_key, read) in stored.iter().zip(self.fetch(cns, &stored).await) {
            let Some(set) = read? else { continue };
            let set = set.without_expired(now_ms);
            if !set.is_deleted() {
                let element = Bytes::copy_from_slice(&stored_key[prefix_len..]);
                elements.push((element, set));
            }
        }
        Ok(elements)
    }

    /// Whether `key` is a collection of `kind` (some element holds a value).
    /// On a cluster only collection commands ask (a string command would pay
    /// a listing round).
    pub async fn holds(&self, ns: u8, kind: Kind, key: &[u8]) -> Result<bool, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let (cns, prefix) = (self.stored(kind.namespace(ns)), field_prefix(key));
                Ok(storage.read(|s| s.has_live_key_with_prefix(cns, &prefix)))
            }
            Place::Routed(_) => Ok(!self.elements(ns, kind, key).await?.is_empty()),
        }
    }

    /// The collection kind `key` holds where asking costs no round trip (one
    /// node); `None` on a cluster, whose string commands do not look.
    pub async fn collection_here(&self, ns: u8, key: &[u8]) -> Result<Option<Kind>, Reply> {
        let Place::Local(storage) = &self.place else {
            return Ok(None);
        };
        // One look at the key directory for every kind: every string write
        // and every string miss on one node asks.
        Ok(storage.read(|s| {
            if !s.holds_collections() {
                return None;
            }
            let prefix = field_prefix(key);
            Kind::COLLECTIONS
                .into_iter()
                .find(|kind| s.has_live_key_with_prefix(self.stored(kind.namespace(ns)), &prefix))
        }))
    }

    /// What `key` holds: a string first, then a hash, then a set.
    pub async fn kind_of(&self, ns: u8, key: &Bytes) -> Result<Option<Kind>, Reply> {
        if self.live(ns, std::slice::from_ref(key)).await.remove(0)? {
            return Ok(Some(Kind::String));
        }
        for kind in Kind::COLLECTIONS {
            if self.holds(ns, kind, key).await? {
                return Ok(Some(kind));
            }
        }
        Ok(None)
    }

    /// Every live key of database `ns` (not expired), each once: its
    /// strings, then its hashes and sets.
    pub async fn keys(&self, ns: u8) -> Result<Vec<Bytes>, Reply> {
        let mut keys = self.listed_keys(ns, false).await?;
        let mut seen: BTreeSet<Bytes> = keys.iter().cloned().collect();
        let now_ms = self.now_ms();
        for kind in Kind::COLLECTIONS {
            let stored = self.listed_keys(kind.namespace(ns), false).await?;
            let live = collection_keys(stored).filter(|k| !self.collection_expired(ns, k, now_ms));
            keys.extend(live.filter(|k| seen.insert(k.clone())));
        }
        Ok(keys)
    }

    /// Whether collection `key`'s deadline has passed: it is listed no more,
    /// though held until expiry deletes it (DBSIZE counts it until then, as
    /// Redis's does).
    fn collection_expired(&self, ns: u8, key: &[u8], now_ms: u64) -> bool {
        self.collection_deadline(ns, key)
            .is_some_and(|at_ms| at_ms <= now_ms)
    }

    /// How many live keys database `ns` holds (DBSIZE).
    pub async fn key_count(&self, ns: u8) -> Result<i64, Reply> {
        match &self.place {
            Place::Local(storage) => {
                let stored_ns = self.stored(ns);
                let strings = storage.read(|s| s.live_key_count(stored_ns)) as i64;
                let mut collections = BTreeSet::new();
                for kind in Kind::COLLECTIONS {
                    let stored = self.listed_keys(kind.namespace(ns), false).await?;
                    collections.extend(collection_keys(stored));
                }
                let only = storage.read(|s| {
                    collections
                        .iter()
                        .filter(|k| !s.contains_live(stored_ns, k))
                        .count()
                });
                Ok(strings + only as i64)
            }
            Place::Routed(_) => self.keys(ns).await.map(|keys| keys.len() as i64),
        }
    }

    /// One SCAN step: the keys from `cursor` on (about `count` strings on one
    /// node, a partition's on a cluster), with the collections of the same
    /// slots, and the next cursor (0 at the end). Cursors are slots on both
    /// backends.
    pub async fn scan(&self, ns: u8, cursor: u64, count: usize) -> Result<ScanStep, Reply> {
        let (strings, next) = self.scan_strings(ns, cursor, count).await?;
        let mut seen: BTreeSet<Bytes> = strings.iter().cloned().collect();
        let mut keys: Vec<(Bytes, Kind)> = strings.into_iter().map(|k| (k, Kind::String)).collect();
        let last_slot = match next {
            0 => shoal_engine::slot::SLOT_COUNT - 1,
            next => next as u16 - 1,
        };
        let first_slot = cursor.min(u64::from(last_slot)) as u16;
        for kind in Kind::COLLECTIONS {
            let cns = kind.namespace(ns);
            let stored = match &self.place {
                Place::Local(storage) => {
                    let cns = self.stored(cns);
                    storage.read(|s| s.live_keys_in_slots(cns, first_slot..=last_slot))
                }
                Place::Routed(cluster) => {
                    crate::routing::scan_partition(cluster, cns, cursor)
                        .await
                        .map_err(|e| refused(&e))?
                        .0
                }
            };
            let now_ms = self.now_ms();
            let live = collection_keys(stored).filter(|k| !self.collection_expired(ns, k, now_ms));
            let new = live.filter(|k| seen.insert(k.clone()));
            keys.extend(new.map(|k| (k, kind)).collect::<Vec<_>>());
        }
        Ok(ScanStep { keys, next })
    }

    /// SCAN's strings from `cursor` on, and the next cursor.
    async fn scan_strings(
        &self,
        ns: u8,
        cursor: u64,
        count: usize,
    ) -> Result<(Vec<Bytes>, u64), Reply> {
        match &self.place {
            Place::Local(storage) => {
                let (now_ms, ns) = (self.now_ms(), self.stored(ns));
                Ok(storage.read(|s| {
                    let (mut keys, next) = s.scan(ns, cursor, count);
                    keys.retain(|k| !s.has_expired(ns, k, now_ms));
                    (keys, next)
                }))
            }
            Place::Routed(cluster) => crate::routing::scan_partition(cluster, ns, cursor)
                .await
                .map_err(|e| refused(&e)),
        }
    }
}
