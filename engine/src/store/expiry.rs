//! Which keys expire, and when: every published key whose values all have
//! deadlines ([`SiblingSet::deadline_ms`]), by key and by deadline. Reads ask
//! it whether a key has expired without reading its record, and active expiry
//! takes the keys due first. Built at open from the records (or their hints),
//! kept at every publish. Holds nothing else: a value without a deadline is
//! never here.
//!
//! [`SiblingSet::deadline_ms`]: crate::version::SiblingSet::deadline_ms

use super::{dir_key, Store};
use crate::fields::is_deadlines_namespace;
use crate::store::{Covers, WriteOp};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct ExpiryIndex {
    by_key: BTreeMap<Box<[u8]>, u64>,
    by_deadline: BTreeSet<(u64, Box<[u8]>)>,
    /// How many keys of deadlines namespaces `by_key` holds (collection
    /// deadline records), and whether that is more than 0, for readers
    /// that do not take the store's lock (`Store::collection_deadlines_held`).
    deadline_records: usize,
    deadline_records_held: Arc<AtomicBool>,
}

impl ExpiryIndex {
    /// The key (a directory key) now expires at `deadline_ms`, or never.
    pub fn set(&mut self, dk: &[u8], deadline_ms: Option<u64>) {
        let (added, removed) = match deadline_ms {
            Some(at) => {
                let before = self.by_key.insert(dk.into(), at);
                if let Some(before) = before {
                    self.by_deadline.remove(&(before, dk.into()));
                }
                self.by_deadline.insert((at, dk.into()));
                (before.is_none(), false)
            }
            None => {
                let before = self.by_key.remove(dk);
                if let Some(before) = before {
                    self.by_deadline.remove(&(before, dk.into()));
                }
                (false, before.is_some())
            }
        };
        if is_deadlines_namespace(dk[0]) && added != removed {
            if added {
                self.deadline_records += 1;
            } else {
                self.deadline_records -= 1;
            }
            let held = self.deadline_records > 0;
            self.deadline_records_held.store(held, Ordering::Release);
        }
        debug_assert_eq!(self.by_key.len(), self.by_deadline.len());
    }

    pub fn get(&self, dk: &[u8]) -> Option<u64> {
        self.by_key.get(dk).copied()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// How many keys expire, per namespace.
    pub fn per_namespace(&self) -> BTreeMap<u8, u64> {
        let mut out = BTreeMap::new();
        for dk in self.by_key.keys() {
            *out.entry(dk[0]).or_insert(0) += 1;
        }
        out
    }

    /// Whether some key of a deadlines namespace has a deadline.
    pub fn holds_deadline_records(&self) -> bool {
        let held = self.deadline_records > 0;
        debug_assert_eq!(
            held,
            self.by_key
                .range::<[u8], _>(super::collection_deadline::deadline_records_range())
                .next()
                .is_some()
        );
        held
    }

    /// [`ExpiryIndex::holds_deadline_records`], readable without the store.
    pub fn deadline_records_held(&self) -> Arc<AtomicBool> {
        self.deadline_records_held.clone()
    }
}

impl Store {
    /// When the key stops reading as present (`None`: it does not expire, or
    /// is absent).
    pub fn deadline_of(&self, namespace: u8, key: &[u8]) -> Option<u64> {
        self.expiring.get(&dir_key(namespace, key))
    }

    /// The key expired at or before `now_ms` (still held until expiry deletes it).
    pub fn has_expired(&self, namespace: u8, key: &[u8], now_ms: u64) -> bool {
        self.deadline_of(namespace, key)
            .is_some_and(|d| d <= now_ms)
    }

    /// Up to `max` keys expired at `now_ms`, earliest deadline first.
    pub fn expired_keys(&self, now_ms: u64, max: usize) -> Vec<(u8, Bytes)> {
        self.expired_keys_where(now_ms, max, |_, _| true)
    }

    /// [`Store::expired_keys`] among the (namespace, key) that `keep` accepts.
    pub fn expired_keys_where(
        &self,
        now_ms: u64,
        max: usize,
        keep: impl Fn(u8, &[u8]) -> bool,
    ) -> Vec<(u8, Bytes)> {
        self.expiring
            .by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter(|(_, dk)| keep(dk[0], &dk[3..]))
            .take(max)
            .map(|(_, dk)| (dk[0], Bytes::copy_from_slice(&dk[3..])))
            .collect()
    }

    /// Active expiry's deletes: for up to `max` keys that `keep` accepts and
    /// whose every value has expired at `now_ms`, a delete covering only the
    /// context read here, so a value written since survives it. Never a
    /// collection's deadline record (`collection_deadline_chores` takes those
    /// with their collections).
    pub fn expiry_deletes(
        &self,
        now_ms: u64,
        max: usize,
        keep: impl Fn(u8, &[u8]) -> bool,
    ) -> Vec<WriteOp> {
        let keep = |ns, key: &[u8]| !crate::fields::is_deadlines_namespace(ns) && keep(ns, key);
        self.expired_keys_where(now_ms, max, keep)
            .into_iter()
            .filter_map(|(ns, key)| {
                let set = self.get(ns, &key).ok()??;
                if !set.is_absent_at(now_ms) || set.is_deleted() {
                    return None;
                }
                let mut op = WriteOp::delete(ns, key);
                op.covers = Covers::Context(set.context);
                Some(op)
            })
            .collect()
    }

    /// Keys that expire (expired or not yet).
    pub fn expiring_key_count(&self) -> usize {
        self.expiring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_deadline_per_key_both_ways() {
        let mut index = ExpiryIndex::default();
        index.set(b"a", Some(5));
        index.set(b"b", Some(3));
        index.set(b"a", Some(9));
        assert_eq!(index.get(b"a"), Some(9));
        assert_eq!(index.len(), 2);
        let order: Vec<_> = index.by_deadline.iter().map(|(at, _)| *at).collect();
        assert_eq!(order, vec![3, 9]);
        index.set(b"b", None);
        index.set(b"c", None);
        assert_eq!(index.len(), 1);
        assert_eq!(index.by_deadline.len(), 1);
    }
}
