//! Hinted handoff's delivery rounds decided directly: which node each held
//! hint goes to, and how many go in one request. No sockets, no madsim.

use bytes::Bytes;
use shoal_engine::cluster::hints::{delivery_targets, hint_key, HINTS_PER_DELIVERY_MAX};
use shoal_engine::cluster::map::{ClusterMap, RingChange};
use shoal_engine::cluster::wire::{items_within_bytes, ReplicaItem};
use shoal_engine::placement::Ring;
use shoal_engine::NodeId;

const NS: u8 = 0;

/// Nodes 1..=4, 16 partitions, 3 copies of each.
fn four() -> ClusterMap {
    let ring = Ring::new(16, 3, [1, 2, 3, 4]).expect("ring");
    let addresses = (1..=4).map(|n| (n, format!("127.0.0.1:{}", 7000 + n)));
    ClusterMap::bootstrap(ring, addresses.collect()).expect("map")
}

/// A key of `map` whose owners do not include `node`, and one whose do.
fn keys_around(map: &ClusterMap, node: NodeId) -> (Bytes, Bytes) {
    let owned = |k: &Bytes| map.owners(map.partition_of_key(NS, k)).contains(&node);
    let keys: Vec<Bytes> = (0..100).map(|i| Bytes::from(format!("k{i}"))).collect();
    let outside = keys
        .iter()
        .find(|k| !owned(k))
        .expect("a key node does not own");
    let inside = keys.iter().find(|k| owned(k)).expect("a key node owns");
    (outside.clone(), inside.clone())
}

#[test]
fn a_hint_goes_to_its_owner_while_it_owns_the_key_else_to_the_first_live_owner() {
    let map = four();
    let (outside, inside) = keys_around(&map, 4);
    let still_owner = hint_key(4, NS, &inside);
    let moved = hint_key(4, NS, &outside);
    let first_live_owner = map.owners(map.partition_of_key(NS, &outside))[0];
    let chosen = |ns: u8, key: &[u8]| Some(map.owners(map.partition_of_key(ns, key))[0]);
    let targets = delivery_targets(&map, [still_owner.clone(), moved.clone()], chosen);
    assert_eq!(targets[&4], [still_owner]);
    assert!(targets[&first_live_owner].contains(&moved));
}

#[test]
fn a_hint_with_no_target_or_an_unreadable_key_stays() {
    let map = four();
    let (outside, _) = keys_around(&map, 4);
    let nobody = |_: u8, _: &[u8]| None;
    let hints = [hint_key(4, NS, &outside), Bytes::from_static(b"ab")];
    assert!(delivery_targets(&map, hints, nobody).is_empty());
}

#[test]
fn a_round_takes_at_most_its_cap_of_hints_per_target() {
    let map = four();
    let hints: Vec<Bytes> = (0..2000)
        .map(|i| Bytes::from(format!("key{i}")))
        .filter(|k| map.owners(map.partition_of_key(NS, k)).contains(&2))
        .map(|k| hint_key(2, NS, &k))
        .collect();
    assert!(hints.len() > HINTS_PER_DELIVERY_MAX);
    let targets = delivery_targets(&map, hints.clone(), |_, _| None);
    assert_eq!(targets[&2], hints[..HINTS_PER_DELIVERY_MAX]);
}

#[test]
fn a_hint_whose_owner_left_goes_to_an_owner_of_the_new_ring() {
    let map = four();
    let (next, _) = map.change(&RingChange::Leave { node: 4 }).expect("leave");
    let (_, inside) = keys_around(&map, 4);
    let partition = next.partition_of_key(NS, &inside);
    let chosen = |ns: u8, key: &[u8]| Some(next.owners(next.partition_of_key(ns, key))[0]);
    assert!(
        !next.owners(partition).contains(&4),
        "the leaving node is no owner of the new ring"
    );
    let targets = delivery_targets(&next, [hint_key(4, NS, &inside)], chosen);
    assert_eq!(
        targets.keys().copied().collect::<Vec<_>>(),
        [next.owners(partition)[0]]
    );
}

/// Copies of `sizes` bytes each (a key that long, an empty set).
fn items(sizes: &[usize]) -> Vec<ReplicaItem> {
    let item = |size: &usize| ReplicaItem {
        namespace: NS,
        key: Bytes::from(vec![b'k'; *size]),
        set: Default::default(),
    };
    sizes.iter().map(item).collect()
}

#[test]
fn a_request_carries_the_copies_within_its_bytes_and_always_the_first() {
    assert_eq!(items_within_bytes(&items(&[10, 10, 10]), 25), 2);
    assert_eq!(items_within_bytes(&items(&[10, 10, 10]), 30), 3);
    let oversized = items_within_bytes(&items(&[100, 1]), 50);
    assert_eq!(oversized, 1, "an oversized first still travels");
    assert_eq!(items_within_bytes(&[], 50), 0);
}

/// A hint holds a replica's whole sibling set, which may be larger than a
/// client's value may be: the hint store takes it up to the record limit,
/// where the data store refuses a client value over a quarter of it.
#[test]
fn the_hint_store_keeps_a_set_larger_than_a_client_value() {
    use shoal_engine::cluster::hints::{encode_hint, hint_store_location, HINT_NAMESPACE};
    use shoal_engine::memdisk::MemDir;
    use shoal_engine::{Hlc, SiblingSet, Store, StoreOptions, VersionVector, WriteError, WriteOp};
    use std::sync::Arc;

    let options = StoreOptions {
        record_size_max_bytes: 64 << 10,
        segment_size_bytes: 1 << 20,
        ..StoreOptions::default()
    };
    let mut set = SiblingSet::default();
    for node in 1..=2 {
        let value = Bytes::from(vec![b'v'; 20 << 10]);
        set.write(&VersionVector::new(), node, 1, Hlc(1), Some(value));
    }
    let hint = WriteOp::put(HINT_NAMESPACE, hint_key(3, NS, b"k"), encode_hint(&set));
    let put = |dir: Arc<dyn shoal_engine::DiskDir>, options: StoreOptions| {
        let (mut store, _) = Store::open(dir, options).expect("open");
        let batch = store.prepare(std::slice::from_ref(&hint), 1_000);
        batch.sync().expect("sync");
        store.publish(batch).remove(0)
    };
    let data_dir: Arc<dyn shoal_engine::DiskDir> = Arc::new(MemDir::new());
    assert!(matches!(
        put(data_dir, options.clone()),
        Err(WriteError::ValueTooLarge { .. })
    ));
    let (hint_dir, hint_options) = hint_store_location(Arc::new(MemDir::new()), &options);
    put(hint_dir, hint_options).expect("the hint store keeps it");
}
