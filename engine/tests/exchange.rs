//! One anti-entropy exchange's decisions, driven directly: which partitions
//! two members compare, the differing ones searched in order while the key
//! and byte budgets last, pushes cut to the bytes left (the first copy always
//! goes), pulls bounded by them, and completeness (what a restoring node
//! counts) lost to a spent budget, a full key budget or a failed pull. No
//! sockets, no madsim.

use bytes::Bytes;
use shoal_engine::cluster::exchange::{shared_partitions, Exchange, ExchangeEnd};
use shoal_engine::cluster::map::ClusterMap;
use shoal_engine::cluster::wire::ReplicaItem;
use shoal_engine::placement::Ring;
use shoal_engine::{Hlc, SiblingSet, VersionVector};

/// A copy of `value_bytes` bytes under a one-byte key.
fn copy(value_bytes: usize) -> ReplicaItem {
    let mut set = SiblingSet::default();
    let value = Bytes::from(vec![b'v'; value_bytes]);
    set.write(&VersionVector::new(), 1, 1, Hlc(1), Some(value));
    ReplicaItem {
        namespace: 0,
        key: Bytes::from_static(b"k"),
        set,
    }
}

#[test]
fn two_members_compare_the_partitions_both_own() {
    let ring = Ring::new(16, 2, [1, 2, 3]).expect("ring");
    let addresses = (1..=3).map(|n| (n, format!("127.0.0.1:{}", 7000 + n)));
    let map = ClusterMap::bootstrap(ring, addresses.collect()).expect("map");
    let shared = shared_partitions(&map, 1, 2, false);
    assert!(!shared.is_empty());
    for p in map.partitions() {
        let both = map.owners(p).contains(&1) && map.owners(p).contains(&2);
        assert_eq!(shared.contains(&p), both, "partition {p:?}");
    }
    // Without a transition, restoring adds nothing.
    assert_eq!(shared_partitions(&map, 1, 2, true), shared);
}

#[test]
fn differing_partitions_are_searched_in_order_while_the_key_budget_lasts() {
    let mut exchange = Exchange::new(10, 1 << 20);
    let partitions = [4, 5, 6, 7];
    exchange.compared(&partitions, &[1, 2, 3, 4], &[1, 9, 3, 9]);
    assert_eq!(exchange.next_partition(), Some((5, 10)));
    exchange.found(4);
    assert_eq!(exchange.next_partition(), Some((7, 6)));
    exchange.found(5);
    assert_eq!(exchange.next_partition(), None);
    assert_eq!(
        exchange.end(),
        ExchangeEnd {
            found: 9,
            complete: true
        }
    );
    // A partition that fills the key budget may hold more: incomplete, and
    // the next differing one is not searched.
    let mut exchange = Exchange::new(3, 1 << 20);
    exchange.compared(&partitions, &[1, 1, 1, 1], &[2, 2, 2, 2]);
    assert_eq!(exchange.next_partition(), Some((4, 3)));
    exchange.found(3);
    assert_eq!(exchange.next_partition(), None);
    assert!(!exchange.end().complete);
}

#[test]
fn pushes_are_cut_to_the_bytes_left_and_pulls_bounded_by_them() {
    let size = copy(100).size_bytes();
    let mut exchange = Exchange::new(100, 2 * size + 1);
    let items = vec![copy(100), copy(100), copy(100), copy(100)];
    let requests = exchange.push_requests(items.clone(), size, false);
    assert_eq!(requests.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    // The planted bug ignores bytes: everything, in one request.
    assert_eq!(exchange.push_requests(items.clone(), size, true).len(), 1);
    for request in &requests {
        exchange.moved(request);
    }
    assert_eq!(exchange.pull_bytes_max(10_000, false), Some(1));
    assert_eq!(exchange.pull_bytes_max(10_000, true), Some(u64::MAX));
    exchange.moved(&items[..1]);
    // Spent: the first copy still goes on a push; a pull stops, incomplete.
    assert_eq!(exchange.push_requests(items, size, false).len(), 1);
    assert_eq!(exchange.pull_bytes_max(10_000, false), None);
    assert!(!exchange.end().complete);
}

#[test]
fn a_pull_that_failed_or_a_spent_byte_budget_leaves_the_exchange_incomplete() {
    let mut exchange = Exchange::new(100, 1 << 20);
    exchange.compared(&[1], &[1], &[2]);
    assert_eq!(exchange.next_partition(), Some((1, 100)));
    exchange.found(2);
    exchange.pulled(true);
    exchange.pulled(false);
    assert!(!exchange.end().complete);
    let mut exchange = Exchange::new(100, 10);
    exchange.compared(&[1, 2], &[1, 1], &[2, 2]);
    assert!(exchange.next_partition().is_some());
    exchange.moved(&[copy(100)]);
    assert_eq!(
        exchange.next_partition(),
        None,
        "no bytes left for partition 2"
    );
    assert!(!exchange.end().complete);
}
