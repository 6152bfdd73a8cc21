//! A collection's time to live on one node: what its deadline record
//! (`fields::deadlines_namespace`) calls for. The record binds while a
//! collection of the kind it names holds elements at its key; once none does
//! (the collection was emptied, deleted or replaced) it is stale and goes.
//! Once its deadline passes, the collection's elements go, then the record.
//! Every delete covers only what was read here, so a write made after the
//! collection expired survives it.
//!
//! Generic expiry (`Store::expiry_deletes`) never takes a record: deleting it
//! alone would bring its collection back without a deadline.

use super::Store;
use crate::fields::{
    database_of, deadline_covers, holds_keys_clients_see, is_deadlines_namespace, kind_bits,
};
use crate::store::{Covers, WriteOp};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

impl Store {
    /// Whether any collection deadline record is held (a store without one
    /// need not look for them).
    pub fn holds_collection_deadlines(&self) -> bool {
        self.expiring.holds_deadline_records()
    }

    /// [`Store::holds_collection_deadlines`] as a flag a reader may load
    /// without the store's lock (one per store, kept at every publish): a
    /// command that starts after a record's write was acknowledged sees it
    /// set.
    pub fn collection_deadlines_held(&self) -> Arc<AtomicBool> {
        self.expiring.deadline_records_held()
    }

    /// The deadline of the collection whose elements start with `prefix`
    /// (`fields::field_prefix`), recorded in stored namespace `deadlines_ns`.
    pub fn collection_deadline(&self, deadlines_ns: u8, prefix: &[u8]) -> Option<u64> {
        assert!(is_deadlines_namespace(deadlines_ns));
        self.deadline_of(deadlines_ns, prefix)
    }

    /// The deletes the deadline record of collection `prefix` calls for at
    /// `now_ms`, each covering only the context read here. `None`: nothing
    /// (no record, or it binds and has not passed). Stale: the record's
    /// delete. Passed: up to `max_ops` of the collection's elements, and the
    /// record once the rest of them are in this batch.
    pub fn collection_deadline_chores(
        &self,
        deadlines_ns: u8,
        prefix: &[u8],
        now_ms: u64,
        max_ops: usize,
    ) -> Option<Vec<WriteOp>> {
        assert!(is_deadlines_namespace(deadlines_ns) && max_ops > 0);
        let record = self.get(deadlines_ns, prefix).ok()??;
        let kind_bits = record.winner()?.value.as_ref()?.first().copied();
        let mut record_delete = WriteOp::delete(deadlines_ns, Bytes::copy_from_slice(prefix));
        record_delete.covers = Covers::Context(record.context.clone());
        let Some((elements_ns, index_ns)) =
            kind_bits.and_then(|b| deadline_covers(deadlines_ns, b))
        else {
            // Not a record this build writes: it can bind nothing.
            return Some(vec![record_delete]);
        };
        let stale_at_most = u64::from(cfg!(feature = "bug-deadline-record-stale-early"));
        if self.live_count_with_prefix(elements_ns, prefix) <= stale_at_most {
            return Some(vec![record_delete]);
        }
        if !record.is_absent_at(now_ms) {
            return None;
        }
        let mut ops = Vec::new();
        let mut whole = true;
        for ns in [Some(elements_ns), index_ns].into_iter().flatten() {
            let take = max_ops - ops.len();
            let listed = self.live_keys_with_prefix_from(ns, prefix, (false, 0, take));
            whole &= listed.len() < take;
            for stored in listed {
                let Ok(Some(set)) = self.get(ns, &stored) else {
                    whole = false;
                    continue;
                };
                let mut op = WriteOp::delete(ns, stored);
                op.covers = Covers::Context(set.context);
                ops.push(op);
            }
            if !whole {
                break;
            }
        }
        if whole {
            ops.push(record_delete);
        }
        Some(ops)
    }

    /// INFO keyspace's counts per stored database: its keys (strings and
    /// collections) and how many of them have a deadline (strings with one,
    /// and collections' deadline records).
    pub fn keyspace_counts(&self) -> BTreeMap<u8, (u64, u64)> {
        let mut out: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
        let collections = self.keydir.collections_per_namespace();
        let strings = self
            .namespaces()
            .into_iter()
            .filter(|(ns, _)| kind_bits(*ns) == 0);
        for (ns, keys) in strings.chain(collections) {
            if holds_keys_clients_see(ns) {
                out.entry(database_of(ns)).or_default().0 += keys;
            }
        }
        for (ns, expiring) in self.expiring.per_namespace() {
            if kind_bits(ns) == 0 || is_deadlines_namespace(ns) {
                out.entry(database_of(ns)).or_default().1 += expiring;
            }
        }
        out
    }

    /// Up to `max` collection deadline records whose deadline passed at
    /// `now_ms`, earliest first: (stored namespace, stored key).
    pub fn due_collection_deadlines(&self, now_ms: u64, max: usize) -> Vec<(u8, Bytes)> {
        self.expired_keys_where(now_ms, max, |ns, _| is_deadlines_namespace(ns))
    }
}

/// The directory keys of every deadlines namespace, as a range: they are the
/// namespace bytes `DEADLINES_BITS | db`, contiguous.
pub(super) fn deadline_records_range() -> (Bound<&'static [u8]>, Bound<&'static [u8]>) {
    const FIRST: [u8; 1] = [crate::fields::DEADLINES_BITS];
    const END: [u8; 1] = [crate::fields::DEADLINES_BITS + 0x10];
    (Bound::Included(&FIRST), Bound::Excluded(&END))
}
