//! Hinted handoff's records. When a key's owner is down, its coordinator sends the
//! owner's copy to a fallback node instead (sloppy quorum), which keeps it as a
//! hint in a store of its own until the owner is back, then hands it over.
//!
//! A hint is one key of the hint store: `[owner u32 BE][namespace][key]`, whose
//! value is the owner's sibling set, postcard-encoded (a put, so a hint that is
//! itself a delete is still a live key). Adding to a hint merges into the set
//! already held. Delivering one deletes it with the context of the put that was
//! delivered, so a hint added meanwhile survives. Which node a round takes
//! each hint to, and how many go in one request, are decided here
//! ([`delivery_targets`], [`within_bytes`]).
//!
//! Must not touch: sockets, tasks, clocks (the driver is `shoal-net`'s cluster).

use crate::cluster::map::ClusterMap;
use crate::disk::{DiskDir, PrefixedDir};
use crate::store::StoreOptions;
use crate::version::{NodeId, SiblingSet};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The hint store's files carry this prefix in the node's data directory.
pub const HINT_FILE_PREFIX: &str = "hints-";
/// The hint store's only namespace.
pub const HINT_NAMESPACE: u8 = 0;
/// Hints one node keeps at most; beyond it a fallback refuses (the write then
/// needs another target, or fails).
pub const HINTS_MAX_DEFAULT: u64 = 100_000;
/// Hints handed to one owner per delivery round.
pub const HINTS_PER_DELIVERY_MAX: usize = 256;

/// Where a node's hint store lives and how it is opened: a second store in the
/// node's directory (files [`HINT_FILE_PREFIX`]`*`), with the main store's options
/// except that its delete markers are collectable (no other replica shares them).
pub fn hint_store_location(
    dir: Arc<dyn DiskDir>,
    store_options: &StoreOptions,
) -> (Arc<dyn DiskDir>, StoreOptions) {
    let hint_dir: Arc<dyn DiskDir> = Arc::new(PrefixedDir::new(dir, HINT_FILE_PREFIX));
    let options = StoreOptions {
        delete_markers_collectable: true,
        // A hint's value is a whole sibling set (a replica's merge): it may
        // take the whole record, as a merge may.
        values_per_record: 1,
        write_sets_per_record: 1,
        ..store_options.clone()
    };
    (hint_dir, options)
}

pub fn hint_key(owner: NodeId, namespace: u8, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + key.len());
    out.put_u32(owner);
    out.put_u8(namespace);
    out.put_slice(key);
    out.freeze()
}

/// `(owner, namespace, key)` of a hint key.
pub fn parse_hint_key(hint: &[u8]) -> Option<(NodeId, u8, Bytes)> {
    if hint.len() < 5 {
        return None;
    }
    let owner = NodeId::from_be_bytes(hint[0..4].try_into().ok()?);
    Some((owner, hint[4], Bytes::copy_from_slice(&hint[5..])))
}

pub fn encode_hint(set: &SiblingSet) -> Bytes {
    Bytes::from(postcard::to_allocvec(set).expect("sibling sets serialize"))
}

pub fn decode_hint(bytes: &[u8]) -> Option<SiblingSet> {
    postcard::from_bytes(bytes).ok()
}

/// Where one delivery round takes each held hint (its stored key): to its
/// owner while that node is still one of the key's owners under `map`; else
/// (it left, or a join or a pin moved the partition, even while that handoff
/// still runs) to `fallback`'s choice for the key, the first live owner: a
/// copy delivered to a node giving the partition up would be dropped there,
/// and the new owners may have pulled from it before it arrived. At most
/// [`HINTS_PER_DELIVERY_MAX`] per target, in the order given; an unparsable
/// key, or one with no target, stays.
pub fn delivery_targets(
    map: &ClusterMap,
    hints: impl IntoIterator<Item = Bytes>,
    fallback: impl Fn(u8, &[u8]) -> Option<NodeId>,
) -> BTreeMap<NodeId, Vec<Bytes>> {
    let mut per_target: BTreeMap<NodeId, Vec<Bytes>> = BTreeMap::new();
    for hint in hints {
        let Some((owner, namespace, key)) = parse_hint_key(&hint) else {
            continue;
        };
        let partition = map.partition_of_key(namespace, &key);
        let target = if map.owners(partition).contains(&owner) {
            Some(owner)
        } else {
            fallback(namespace, &key)
        };
        let Some(target) = target else {
            continue;
        };
        let batch = per_target.entry(target).or_default();
        if batch.len() < HINTS_PER_DELIVERY_MAX {
            batch.push(hint);
        }
    }
    per_target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, VersionVector};

    #[test]
    fn hint_keys_roundtrip_and_refuse_short_input() {
        let k = hint_key(7, 3, b"user:{1}");
        assert_eq!(
            parse_hint_key(&k),
            Some((7, 3, Bytes::from_static(b"user:{1}")))
        );
        assert_eq!(parse_hint_key(b"abc"), None);
        assert_eq!(
            parse_hint_key(&hint_key(1, 0, b"")).map(|h| h.2.len()),
            Some(0)
        );
    }

    #[test]
    fn hint_values_roundtrip() {
        let mut set = SiblingSet::default();
        set.write(
            &VersionVector::new(),
            2,
            9,
            Hlc(5),
            Some(Bytes::from_static(b"v")),
        );
        assert_eq!(decode_hint(&encode_hint(&set)), Some(set));
        assert_eq!(decode_hint(b"\xff\xff\xff"), None);
    }
}
