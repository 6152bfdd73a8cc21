//! The cluster map's tests: changes, merges, pins, aborts, the map file.

use super::*;
use crate::memdisk::MemDir;

fn addresses(nodes: impl IntoIterator<Item = NodeId>) -> BTreeMap<NodeId, String> {
    nodes
        .into_iter()
        .map(|n| (n, format!("127.0.0.1:{}", 7000 + n)))
        .collect()
}

fn three() -> ClusterMap {
    let ring = Ring::new(16, 3, [1, 2, 3]).expect("ring");
    ClusterMap::bootstrap(ring, addresses([1, 2, 3])).expect("map")
}

fn join4(map: &ClusterMap) -> ClusterMap {
    map.change(&RingChange::Join {
        node: 4,
        address: "127.0.0.1:7004".into(),
    })
    .expect("join")
    .0
}

#[test]
fn join_marks_incoming_owners_and_keeps_the_old_ring_until_done() {
    let map = three();
    let next = join4(&map);
    assert_eq!(next.version(), map.version() + 1);
    let incoming = next.incoming(4);
    assert!(!incoming.is_empty());
    assert_eq!(next.handoffs_pending(), incoming.len());
    assert!(next.incoming(1).is_empty(), "old members take nothing new");
    for p in 0..16 {
        let moved = next.owners(p).contains(&4);
        assert_eq!(incoming.contains(&p), moved, "partition {p}");
        if moved {
            assert_eq!(next.previous_owners(p), Some(map.owners(p)));
            assert_eq!(next.handoff_sources(p, 4), map.owners(p).to_vec());
        } else {
            assert_eq!(next.previous_owners(p), None);
        }
    }
    assert!(matches!(
        next.change(&RingChange::Leave { node: 1 }),
        Err(MapError::HandoffInProgress { .. })
    ));
    let mut done = next.clone();
    for p in &incoming {
        assert!(done.mark_done(*p, 4));
        assert!(!done.mark_done(*p, 4), "a second report changes nothing");
    }
    assert_eq!(done.handoffs_pending(), 0);
    assert_eq!(done.previous_owners(incoming[0]), None);
    assert!(done.change(&RingChange::Leave { node: 1 }).is_ok());
}

#[test]
fn abort_brings_the_old_placement_back_and_the_old_owners_pull() {
    let map = three();
    assert!(matches!(
        map.change(&RingChange::Abort),
        Err(MapError::NothingToAbort { .. })
    ));
    let joined = join4(&map);
    // Node 4 pulled one partition, then never came again.
    let mut partly = joined.clone();
    let first = joined.incoming(4)[0];
    partly.mark_done(first, 4);
    let (aborted, diff) = partly.change(&RingChange::Abort).expect("abort");
    assert_eq!(aborted.version(), joined.version() + 1);
    assert!(!aborted.ring().members().contains(&4));
    assert_eq!(aborted.ring().members(), map.ring().members());
    for p in 0..16 {
        assert_eq!(aborted.owners(p), map.owners(p), "partition {p}");
        // The owners node 4 displaced pull back, from the aborted placement's
        // owners (node 4 among them: it is skipped when it does not answer).
        let displaced: Vec<NodeId> = map
            .owners(p)
            .iter()
            .copied()
            .filter(|n| !joined.owners(p).contains(n))
            .collect();
        for node in [1, 2, 3] {
            assert_eq!(
                aborted.incoming(node).contains(&p),
                displaced.contains(&node)
            );
        }
        if !displaced.is_empty() {
            assert_eq!(aborted.handoff_sources(p, displaced[0]), joined.owners(p));
        }
    }
    assert_eq!(diff.replicas_moved, aborted.handoffs_pending());
    assert!(aborted.incoming(4).is_empty());
    // Settled, node 4 and its address are gone; nothing is left to abort.
    let back = settled(aborted);
    assert!(!back.nodes().contains(&4));
    assert!(back.address(4).is_none());
    assert!(matches!(
        back.change(&RingChange::Abort),
        Err(MapError::NothingToAbort { .. })
    ));
    // A pin's handoffs cannot be aborted.
    let (pinned, _) = pin3(&settled(join4(&three())));
    assert!(matches!(
        pinned.change(&RingChange::Abort),
        Err(MapError::PinNotAbortable { namespace: 3, .. })
    ));
}

#[test]
fn merge_takes_higher_versions_and_accumulates_done_reports() {
    let next = join4(&three());
    let incoming = next.incoming(4);
    let mut a = next.clone();
    let mut b = next.clone();
    a.mark_done(incoming[0], 4);
    b.mark_done(incoming[1], 4);
    let mut old = three();
    assert!(old.merge(&a), "an older map takes the newer");
    assert_eq!(old, a);
    assert!(!a.clone().merge(&three()), "an older map changes nothing");
    assert!(a.merge(&b));
    assert_eq!(a.handoffs_pending(), incoming.len() - 2);
    let mut b2 = b.clone();
    b2.merge(&a);
    assert_eq!(a, b2, "merge commutes");
    assert!(!a.clone().merge(&b2));
}

#[test]
fn two_changes_at_one_version_settle_the_same_way_everywhere() {
    let map = three();
    let joined = join4(&map);
    let (replaced, _) = map
        .change(&RingChange::Replace {
            old: 3,
            new: 5,
            address: "127.0.0.1:7005".into(),
        })
        .expect("replace");
    let mut x = joined.clone();
    x.merge(&replaced);
    let mut y = replaced.clone();
    y.merge(&joined);
    assert_eq!(x, y);
}

#[test]
fn leave_drops_the_leaver_only_after_its_handoffs() {
    let four = {
        let mut m = join4(&three());
        for p in m.incoming(4) {
            m.mark_done(p, 4);
        }
        m
    };
    let (left, diff) = four.change(&RingChange::Leave { node: 2 }).expect("leave");
    assert!(!left.ring().is_member(2));
    assert!(left.nodes().contains(&2), "the leaver serves its handoffs");
    assert!(left.address(2).is_some());
    assert_eq!(diff.replicas_moved, four.ring().load(2));
    let mut settled = left.clone();
    for node in [1, 3, 4] {
        for p in settled.incoming(node) {
            assert!(settled.handoff_sources(p, node).contains(&2));
            settled.mark_done(p, node);
        }
    }
    assert!(!settled.nodes().contains(&2));
    assert_eq!(settled.address(2), None);
}

#[test]
fn sources_needed_covers_every_write_quorum() {
    let map = three();
    assert_eq!(map.sources_needed(0, 2), 2);
    assert_eq!(map.sources_needed(0, 3), 1);
    assert_eq!(map.sources_needed(0, 1), 3);
}

fn four() -> ClusterMap {
    let ring = Ring::new(16, 2, [1, 2, 3, 4]).expect("ring");
    ClusterMap::bootstrap(ring, addresses([1, 2, 3, 4])).expect("map")
}

fn pin3(map: &ClusterMap) -> (ClusterMap, MapDiff) {
    map.change(&RingChange::Pin {
        namespace: 3,
        nodes: BTreeSet::from([3, 4]),
        replicas_n: 2,
        r: 1,
        w: 2,
    })
    .expect("pin")
}

fn settled(mut map: ClusterMap) -> ClusterMap {
    for node in map.nodes() {
        for p in map.incoming(node) {
            map.mark_done(p, node);
        }
    }
    assert_eq!(map.handoffs_pending(), 0);
    map
}

#[test]
fn a_pin_moves_only_its_namespace_onto_its_nodes() {
    let map = four();
    let (pinned, diff) = pin3(&map);
    assert_eq!(pinned.version(), map.version() + 1);
    assert_eq!(diff.version_to, pinned.version());
    assert_eq!(pinned.partitions().len(), 32, "16 default, 16 pinned");
    for p in 0..16u32 {
        let id = pinned_partition(3, p);
        assert!(pinned.is_partition(id) && !map.is_partition(id));
        assert_eq!(split_partition(id), (Some(3), p));
        assert_eq!(pinned.owners(id).len(), 2);
        assert!(pinned.owners(id).iter().all(|n| [3, 4].contains(n)));
        assert_eq!(
            pinned.owners(p),
            map.owners(p),
            "the default ring is unchanged"
        );
        assert_eq!(pinned.previous_owners(p), None);
        // The pinned partition's keys were on the default ring's owners.
        let incoming: Vec<NodeId> = pinned
            .owners(id)
            .iter()
            .copied()
            .filter(|n| !map.owners(p).contains(n))
            .collect();
        // Every new owner pulls, an old owner that stays as well (it may
        // lack writes the owners the pin drops acknowledged).
        assert!(pinned.incoming(3).contains(&id) && pinned.incoming(4).contains(&id));
        assert_eq!(pinned.previous_owners(id), Some(map.owners(p)));
        for node in [3, 4] {
            assert_eq!(pinned.was_owner(id, node), !incoming.contains(&node));
        }
        assert_eq!(pinned.namespaces(id), Namespaces::Only(3));
        assert!(!pinned.namespaces(p).contains(3) && pinned.namespaces(p).contains(0));
    }
    assert!(diff.replicas_moved > 0);
    assert!(diff.replicas_moved < pinned.handoffs_pending());
    assert_eq!(pinned.handoffs_pending(), 16 * 2);
    assert!(pinned.incoming(1).is_empty() && pinned.incoming(2).is_empty());
    for key in [&b"a"[..], b"b", b"{t}x", b"zz"] {
        let id = pinned.partition_of_key(3, key);
        assert_eq!(split_partition(id).0, Some(3));
        assert_eq!(
            pinned.partition_of_key(0, key),
            map.partition_of_key(0, key)
        );
        assert!(pinned.slot_range(id).contains(&crate::slot::key_slot(key)));
        // The database's hash fields are pinned with it, in the key's slot.
        let (fields, field) = (
            crate::fields::fields_namespace(3),
            crate::fields::field_key(key, b"f"),
        );
        assert_eq!(pinned.partition_of_key(fields, &field), id);
        assert!(pinned.namespaces(id).contains(fields));
        assert!(pinned.pin_for(fields).is_some() && pinned.pin_for(0x80).is_none());
    }
    let settled = settled(pinned);
    assert_eq!(settled.previous_owners(pinned_partition(3, 0)), None);
    assert!(!settled.holds(1, pinned_partition(3, 0)));
    assert!(settled
        .change(&RingChange::Pin {
            namespace: 3,
            nodes: BTreeSet::from([1, 2]),
            replicas_n: 2,
            r: 1,
            w: 1,
        })
        .is_err());
}

#[test]
fn leaving_and_pin_changes_move_pinned_partitions() {
    let pinned = settled(pin3(&four()).0);
    let (grown, _) = pinned
        .change(&RingChange::PinJoin {
            namespace: 3,
            node: 1,
        })
        .expect("pin join");
    assert!(!grown.incoming(1).is_empty());
    assert!(grown
        .incoming(1)
        .iter()
        .all(|id| split_partition(*id).0 == Some(3)));
    for id in grown.incoming(1) {
        assert!(grown
            .handoff_sources(id, 1)
            .iter()
            .all(|n| [3, 4].contains(n)));
    }
    let grown = settled(grown);
    let (left, _) = grown.change(&RingChange::Leave { node: 4 }).expect("leave");
    assert!(!left.pin_for(3).expect("pinned").ring.is_member(4));
    assert!(left
        .partitions()
        .iter()
        .all(|id| !left.owners(*id).contains(&4)));
    assert!(left
        .incoming(1)
        .iter()
        .any(|id| split_partition(*id).0 == Some(3)));
    let (shrunk, _) = grown
        .change(&RingChange::PinLeave {
            namespace: 3,
            node: 1,
        })
        .expect("pin leave");
    assert!(shrunk.incoming(1).is_empty());
    assert!(shrunk
        .partitions()
        .iter()
        .filter(|id| split_partition(**id).0 == Some(3))
        .all(|id| !shrunk.owners(*id).contains(&1)));
}

#[test]
fn unpinning_hands_the_namespace_back_then_drops_the_pin() {
    let four = four();
    let pinned = settled(pin3(&four).0);
    let unpin = RingChange::Unpin {
        namespace: 3,
        r: 1,
        w: 2,
    };
    let (back, diff) = pinned.change(&unpin).expect("first unpin step");
    assert_eq!(back.version(), pinned.version() + 1);
    let pin = back
        .pin_for(3)
        .expect("still pinned, to a copy of the default ring");
    assert_eq!((pin.ring.replicas_n(), pin.r, pin.w), (2, 1, 2));
    assert!(diff.replicas_moved > 0);
    for p in 0..16u32 {
        let id = pinned_partition(3, p);
        assert_eq!(back.owners(id), four.owners(p), "the default ring's owners");
        let incoming: BTreeSet<NodeId> = four
            .owners(p)
            .iter()
            .copied()
            .filter(|n| !pinned.owners(id).contains(n))
            .collect();
        for node in 1..=4 {
            assert_eq!(
                back.incoming(node).contains(&id),
                incoming.contains(&node),
                "partition {p}, node {node}"
            );
        }
        for node in &incoming {
            assert!(back
                .handoff_sources(id, *node)
                .iter()
                .all(|n| [3, 4].contains(n)));
        }
    }
    assert!(matches!(
        back.change(&unpin),
        Err(MapError::HandoffInProgress { .. })
    ));
    let back = settled(back);
    let (unpinned, diff) = back.change(&unpin).expect("second unpin step");
    assert_eq!(diff.replicas_moved, 0);
    assert_eq!(unpinned.handoffs_pending(), 0);
    assert!(unpinned.pin_for(3).is_none());
    assert_eq!(unpinned.partitions().len(), 16);
    assert_eq!(unpinned.namespaces(0), Namespaces::AllBut(BTreeSet::new()));
    for key in [&b"a"[..], b"{t}x"] {
        assert_eq!(
            unpinned.owners(unpinned.partition_of_key(3, key)),
            back.owners(back.partition_of_key(3, key)),
            "the last step moves nothing"
        );
    }
    assert_eq!(ClusterMap::decode(&unpinned.encode()), Ok(unpinned.clone()));
    assert!(matches!(
        unpinned.change(&unpin),
        Err(MapError::Placement(PlacementError::NamespaceNotPinned {
            namespace: 3
        }))
    ));
}

#[test]
fn pinned_maps_roundtrip_and_a_pin_dropped_mid_handoff_is_refused() {
    let (pinned, _) = pin3(&four());
    assert_eq!(ClusterMap::decode(&pinned.encode()), Ok(pinned.clone()));
    assert_ne!(pinned.fingerprint(), four().fingerprint());
    let mut bad = pinned.clone();
    bad.placement = four().placement.numbered(pinned.version());
    bad.previous = Some(pinned.placement.clone().numbered(1));
    bad.pending.clear();
    assert!(matches!(bad.check(), Err(MapError::Malformed(_))));
}

#[test]
fn save_load_roundtrip_and_corruption_is_refused() {
    let dir = MemDir::new();
    assert!(load(&dir).expect("empty dir").is_none());
    let map = join4(&three());
    save(&dir, &map).expect("save");
    assert_eq!(load(&dir).expect("load"), Some(map.clone()));
    let mut done = map.clone();
    done.mark_done(map.incoming(4)[0], 4);
    save(&dir, &done).expect("save again");
    assert_eq!(load(&dir).expect("load"), Some(done));
    dir.corrupt_byte(MAP_FILE, 12).expect("corrupt");
    assert!(matches!(load(&dir), Err(MapFileError::Corrupt(_))));
}

#[test]
fn a_map_saved_before_pins_still_loads() {
    #[derive(Serialize)]
    struct RingOnly<'a> {
        ring: &'a Ring,
        previous: Option<&'a Ring>,
        pending: &'a BTreeMap<PartitionId, BTreeSet<NodeId>>,
        addresses: &'a BTreeMap<NodeId, String>,
    }
    for map in [three(), join4(&three())] {
        let body = postcard::to_allocvec(&RingOnly {
            ring: map.ring(),
            previous: map.previous.as_ref().map(Placement::default_ring),
            pending: &map.pending,
            addresses: &map.addresses,
        })
        .unwrap();
        let mut file = (body.len() as u32).to_le_bytes().to_vec();
        file.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        file.extend_from_slice(&body);
        let dir = MemDir::new();
        crate::disk::replace_file(&dir, MAP_FILE, &file).unwrap();
        assert_eq!(load(&dir).expect("load"), Some(map));
    }
}

#[test]
fn decode_checks_invariants() {
    let mut map = join4(&three());
    map.addresses.remove(&4);
    assert!(ClusterMap::decode(&map.encode()).is_err());
    assert!(ClusterMap::decode(b"garbage").is_err());
}
