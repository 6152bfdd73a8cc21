//! Collecting delete markers on a cluster. A key whose set is made only of delete
//! markers keeps them so that an older copy of its value, still held somewhere,
//! is covered when it arrives (the marker's context absorbs it). The marker may go
//! only when no such copy is left anywhere: otherwise anti-entropy would bring the
//! value back (a resurrected delete).
//!
//! The agreement, run for each partition by its first owner (its primary) while
//! the ring is settled (no handoff) and every member is live:
//! 1. Propose markers whose newest write is older than the grace period, and ask
//!    every member for a [`verdict`]: an owner must hold exactly this set (a
//!    lagging owner may still hold the value); any other member must hold it or
//!    nothing (a stale copy from an earlier ring); and no member may hold a hint
//!    for the key.
//! 2. Wait [`settle_ms`]. From the moment every owner holds the marker, a copy of
//!    an older value can only be in flight (a replica write or a read's answer
//!    sent before). Answers are dropped after the request timeout, and replica
//!    writes are refused once older than `replica_write_age_max_ms`, so after
//!    the wait each such copy has reached its owner's write queue, where the
//!    marker absorbs it, or never will.
//! 3. Ask every member to forget the marker if its set still hashes the same
//!    (`WriteOp::forget_if`, applied in the write queue's order). A member whose
//!    set changed meanwhile (a newer write) keeps it; anti-entropy then spreads
//!    the newer write, and a member that missed the forget spreads the marker
//!    back, to be agreed on again.
//!
//! Must not touch: sockets, tasks, clocks (the driver is `shoal-net`'s cluster).

use crate::cluster::hints::{hint_key, HINT_NAMESPACE};
use crate::digest::set_hash;
use crate::store::Store;
use crate::version::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Markers a primary proposes in one round.
pub const PROPOSALS_PER_ROUND_MAX: usize = 256;
/// Records a primary reads looking for markers in one round (its I/O budget:
/// markers still inside the grace are read and passed over).
pub const MARKER_READS_PER_ROUND_MAX: usize = 4 * PROPOSALS_PER_ROUND_MAX;
/// Agreed markers a primary keeps waiting out the settle delay.
pub const AGREED_MAX: usize = 4096;
/// Added to the settle delay for scheduling and queueing.
pub const SETTLE_SLACK_MS: u64 = 500;

/// One proposed marker: the key and the hash of the set every member must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerItem {
    pub namespace: u8,
    pub key: Bytes,
    pub set_hash: u64,
}

/// How long an agreed marker waits before it is forgotten: a read's answer
/// carrying an older copy arrives within `request_timeout_ms` of the read, and
/// the repair it leads to is refused after `replica_write_age_max_ms`.
pub fn settle_ms(request_timeout_ms: u64, replica_write_age_max_ms: u64) -> u64 {
    request_timeout_ms + replica_write_age_max_ms + SETTLE_SLACK_MS
}

/// [`settle_ms`] when wall clocks disagree: a copy's age is judged by its
/// receiver's clock against its sender's stamp, so a sender `d` ms ahead of its
/// receiver gets copies `d` ms older past the age limit. With every member's
/// clock within `skew_max_ms` of the proposer's (each estimate's error
/// included), two members differ by at most twice that.
pub fn settle_with_skew_ms(
    request_timeout_ms: u64,
    replica_write_age_max_ms: u64,
    skew_max_ms: u64,
) -> u64 {
    settle_ms(request_timeout_ms, replica_write_age_max_ms) + 2 * skew_max_ms
}

/// Whether this node agrees the marker may go: it holds exactly that set (or,
/// when it is not one of the key's owners, nothing of the key), and no hint for
/// the key for any of `hint_owners`. A read error is a no.
pub fn verdict(
    store: &Store,
    hint_store: Option<&Store>,
    hint_owners: &BTreeSet<NodeId>,
    is_owner: bool,
    item: &MarkerItem,
) -> bool {
    let holds_marker_or_nothing = match store.get(item.namespace, &item.key) {
        Ok(None) => !is_owner,
        Ok(Some(set)) => set.is_deleted() && set_hash(&set) == item.set_hash,
        Err(_) => false,
    };
    let hinted = hint_store.is_some_and(|hints| {
        hint_owners.iter().any(|owner| {
            hints.contains_live(HINT_NAMESPACE, &hint_key(*owner, item.namespace, &item.key))
        })
    });
    holds_marker_or_nothing && !hinted
}

/// Markers every member agreed on, each waiting out the settle delay from when
/// it was agreed. Tied to one ring version: a ring change drops them all.
#[derive(Debug, Default)]
pub struct Agreed {
    ring_version: u64,
    /// (namespace, key) -> (set hash, agreed at ms).
    entries: BTreeMap<(u8, Bytes), (u64, u64)>,
}

impl Agreed {
    /// Forget every agreement made under another ring.
    pub fn keep_ring(&mut self, ring_version: u64) {
        if self.ring_version != ring_version {
            self.entries.clear();
            self.ring_version = ring_version;
        }
    }

    pub fn ring_version_is(&self, ring_version: u64) -> bool {
        self.ring_version == ring_version
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Agreements that still fit under [`AGREED_MAX`].
    pub fn room(&self) -> usize {
        AGREED_MAX.saturating_sub(self.entries.len())
    }

    pub fn contains(&self, namespace: u8, key: &[u8]) -> bool {
        self.entries
            .contains_key(&(namespace, Bytes::copy_from_slice(key)))
    }

    /// Record an agreement at `now_ms` (ignored when full or already held).
    pub fn insert(&mut self, item: MarkerItem, now_ms: u64) {
        if self.room() > 0 {
            self.entries
                .entry((item.namespace, item.key))
                .or_insert((item.set_hash, now_ms));
        }
    }

    /// Remove and return up to `max` agreements made at least `settle_ms` ago.
    pub fn take_due(&mut self, now_ms: u64, settle_ms: u64, max: usize) -> Vec<MarkerItem> {
        let due: Vec<(u8, Bytes)> = self
            .entries
            .iter()
            .filter(|(_, (_, at))| now_ms.saturating_sub(*at) >= settle_ms)
            .take(max)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .map(|(namespace, key)| {
                let (set_hash, _) = self
                    .entries
                    .remove(&(namespace, key.clone()))
                    .expect("listed");
                MarkerItem {
                    namespace,
                    key,
                    set_hash,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::hints::encode_hint;
    use crate::memdisk::MemDir;
    use crate::store::{StoreOptions, WriteOp};
    use std::sync::Arc;

    fn open(dir: &MemDir) -> Store {
        let options = StoreOptions {
            delete_markers_collectable: false,
            ..StoreOptions::default()
        };
        Store::open(Arc::new(dir.clone()), options).expect("open").0
    }

    fn commit(store: &mut Store, ops: &[WriteOp]) {
        let batch = store.prepare(ops, 1_000);
        batch.sync().expect("sync");
        for result in store.publish(batch) {
            result.expect("write");
        }
    }

    fn marker_of(store: &Store, key: &str) -> MarkerItem {
        let set = store.get(0, key.as_bytes()).unwrap().expect("held");
        MarkerItem {
            namespace: 0,
            key: Bytes::from(key.to_string()),
            set_hash: set_hash(&set),
        }
    }

    #[test]
    fn verdicts_need_the_same_marker_on_owners_and_no_hint_anywhere() {
        let (dir, other_dir, hint_dir) = (MemDir::new(), MemDir::new(), MemDir::new());
        let mut store = open(&dir);
        commit(&mut store, &[WriteOp::put(0, "k".into(), "v".into())]);
        let lagging = store.get(0, b"k").unwrap().unwrap();
        commit(&mut store, &[WriteOp::delete(0, "k".into())]);
        let item = marker_of(&store, "k");
        let owners = BTreeSet::from([1, 2, 3]);
        assert!(verdict(&store, None, &owners, true, &item));

        // An owner still holding the value, or holding nothing, says no; a
        // non-owner holding nothing says yes.
        let mut other = open(&other_dir);
        assert!(!verdict(&other, None, &owners, true, &item));
        assert!(verdict(&other, None, &owners, false, &item));
        commit(&mut other, &[WriteOp::merge(0, "k".into(), lagging)]);
        assert!(!verdict(&other, None, &owners, false, &item));

        // A hint for the key, for any owner, is a no.
        let mut hints = open(&hint_dir);
        assert!(verdict(&store, Some(&hints), &owners, true, &item));
        let hinted = hint_key(3, 0, b"k");
        let set = store.get(0, b"k").unwrap().unwrap();
        commit(
            &mut hints,
            &[WriteOp::put(HINT_NAMESPACE, hinted, encode_hint(&set))],
        );
        assert!(!verdict(&store, Some(&hints), &owners, true, &item));
    }

    #[test]
    fn agreements_wait_out_the_settle_delay_and_die_with_the_ring() {
        let item = |k: &str| MarkerItem {
            namespace: 0,
            key: Bytes::from(k.to_string()),
            set_hash: 7,
        };
        let mut agreed = Agreed::default();
        agreed.keep_ring(3);
        agreed.insert(item("a"), 100);
        agreed.insert(item("b"), 900);
        agreed.insert(item("a"), 800); // the first agreement's time stands
        assert!(agreed.take_due(1_000, 1_000, 10).is_empty());
        assert_eq!(agreed.take_due(1_100, 1_000, 10), vec![item("a")]);
        assert!(!agreed.contains(0, b"a") && agreed.contains(0, b"b"));
        agreed.keep_ring(3);
        assert_eq!(agreed.len(), 1);
        agreed.keep_ring(4);
        assert!(agreed.is_empty());
    }
}
