//! A cluster's keyspace listing settled directly: what each member listed in,
//! the agreed and disputed keys (or a refusal) out. No sockets, no madsim.

use bytes::Bytes;
use shoal_engine::cluster::listing::{settle, Listed, Settled};
use shoal_engine::cluster::map::{ClusterMap, RingChange};
use shoal_engine::cluster::refusal::Refusal;
use shoal_engine::placement::Ring;
use shoal_engine::NodeId;
use std::collections::{BTreeMap, BTreeSet};

const NS: u8 = 0;
const ALL_SLOTS: std::ops::RangeInclusive<u16> = 0..=16383;

/// Nodes 1..=4, 16 partitions, 3 copies of each.
fn four() -> ClusterMap {
    let ring = Ring::new(16, 3, [1, 2, 3, 4]).expect("ring");
    let addresses = (1..=4).map(|n| (n, format!("127.0.0.1:{}", 7000 + n)));
    ClusterMap::bootstrap(ring, addresses.collect()).expect("map")
}

fn key(text: &str) -> Bytes {
    Bytes::from(text.to_owned())
}

/// What each of `nodes` lists: the keys whose owners include it, except those
/// `missing` says it lacks.
fn listing(
    map: &ClusterMap,
    nodes: &[NodeId],
    keys: &[Bytes],
    missing: &[(NodeId, &Bytes)],
) -> Listed {
    let lists = |node: NodeId| {
        let owned = |k: &&Bytes| map.owners(map.partition_of_key(NS, k)).contains(&node);
        let kept = |k: &&Bytes| !missing.contains(&(node, *k));
        keys.iter()
            .filter(owned)
            .filter(kept)
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    nodes.iter().map(|n| (*n, lists(*n))).collect()
}

#[test]
fn keys_all_owners_list_are_agreed_and_a_key_one_lacks_is_disputed() {
    let map = four();
    let keys: Vec<Bytes> = (0..40).map(|i| key(&format!("k{i}"))).collect();
    let lagging = map.owners(map.partition_of_key(NS, &keys[7]))[0];
    let listed = listing(&map, &[1, 2, 3, 4], &keys, &[(lagging, &keys[7])]);
    let Settled { agreed, disputed } = settle(&map, NS, ALL_SLOTS, 2, &listed).expect("complete");
    assert_eq!(disputed, [keys[7].clone()]);
    assert_eq!(agreed.len(), 39);
    assert!(!agreed.contains(&keys[7]));
}

#[test]
fn a_key_listed_by_fewer_owners_than_the_read_quorum_is_disputed() {
    let map = four();
    let k = key("lonely");
    let owners = map.owners(map.partition_of_key(NS, &k)).to_vec();
    // Only one owner answered (the others are down): it lists the key, but a
    // quorum of 2 has not agreed on it.
    let mut listed = listing(&map, &[owners[0]], std::slice::from_ref(&k), &[]);
    let other: NodeId = (1..=4).find(|n| !owners.contains(n)).expect("a non-owner");
    listed.insert(other, BTreeSet::new());
    let settled = settle(&map, NS, ALL_SLOTS, 2, &listed).expect("every partition answered");
    assert_eq!(settled.disputed, [k]);
    assert!(settled.agreed.is_empty());
}

#[test]
fn a_partition_no_owner_answered_for_refuses_the_listing() {
    let map = four();
    // Only node 1 answered: partitions it does not own have nobody.
    let listed: Listed = BTreeMap::from([(1, BTreeSet::new())]);
    let refused = settle(&map, NS, ALL_SLOTS, 2, &listed).expect_err("incomplete");
    assert_eq!(refused.refusal, Refusal::Partial);
    let unowned = map
        .partitions()
        .iter()
        .filter(|p| !map.owners(**p).contains(&1))
        .count();
    assert!(refused
        .message
        .starts_with(&format!("{unowned} partition(s) had no reachable replica")));
    // A range within partitions node 1 owns is complete.
    let owned = map
        .partitions()
        .into_iter()
        .find(|p| map.owners(*p).contains(&1))
        .unwrap();
    assert!(settle(&map, NS, map.slot_range(owned), 2, &listed).is_ok());
}

#[test]
fn during_a_handoff_only_an_old_owner_makes_a_partition_complete() {
    let map = four();
    let (next, _) = map
        .change(&RingChange::Join {
            node: 5,
            address: "127.0.0.1:7005".into(),
        })
        .expect("join");
    let moved = next.incoming(5)[0];
    let slots = next.slot_range(moved);
    // The incoming owner answered, no old owner did: it may still be pulling.
    let listed: Listed = BTreeMap::from([(5, BTreeSet::new())]);
    let refused = settle(&next, NS, slots.clone(), 1, &listed).expect_err("incomplete");
    assert_eq!(refused.refusal, Refusal::Partial);
    let old = next.previous_owners(moved).expect("in transition")[0];
    let listed: Listed = BTreeMap::from([(old, BTreeSet::new())]);
    assert!(settle(&next, NS, slots, 1, &listed).is_ok());
}
