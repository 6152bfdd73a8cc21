//! The sibling cap: a client write that would leave more than `siblings_max`
//! concurrent siblings is refused (and counted), so the writer resolves them; a
//! replica merge above the cap is kept whole (and counted), because every sibling
//! in it is a write some node acknowledged. The same holds for bytes: a client
//! value may take a quarter of the record limit, so that concurrent values that
//! large, written on different replicas, merge into one record, and the set a
//! client write leaves may take half of it, so that two replicas' copies merge.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::Covers;
use shoal_engine::{StoreOptions, VersionVector, WriteError, WriteOp};

fn blind_put(key: &str, value: &str) -> WriteOp {
    WriteOp {
        covers: Covers::Context(VersionVector::new()),
        ..WriteOp::put(
            0,
            Bytes::from(key.to_string()),
            Bytes::from(value.to_string()),
        )
    }
}

fn options(node_id: u32, siblings_max: usize) -> StoreOptions {
    StoreOptions {
        node_id,
        siblings_max,
        ..small_options()
    }
}

#[test]
fn client_writes_past_the_cap_are_refused_and_counted() {
    let dir = MemDir::new();
    let mut store = open(&dir, options(1, 3));
    for i in 0..3 {
        commit(&mut store, &[blind_put("doc", &format!("v{i}"))])[0]
            .clone()
            .expect("under the cap");
    }
    let refused = commit(&mut store, &[blind_put("doc", "v3")])[0].clone();
    assert_eq!(
        refused,
        Err(WriteError::TooManySiblings { count: 4, max: 3 })
    );
    let set = store.get(0, b"doc").unwrap().unwrap();
    assert_eq!(set.siblings.len(), 3, "the refused write left nothing");
    assert_eq!(store.stats().sibling_writes_refused, 1);
    assert_eq!(store.stats().siblings_largest, 3);

    // A write whose context covers them all resolves the key.
    let resolve = WriteOp {
        covers: Covers::Context(set.context.clone()),
        ..WriteOp::put(0, Bytes::from("doc"), Bytes::from("merged"))
    };
    commit(&mut store, &[resolve])[0].clone().expect("resolve");
    assert_eq!(store.get(0, b"doc").unwrap().unwrap().siblings.len(), 1);
    assert_eq!(value_of(&store, "doc").as_deref(), Some("merged"));
}

#[test]
fn replica_merges_past_the_cap_keep_every_sibling_and_are_counted() {
    // Node 2 has no cap to speak of and accepts five concurrent writes.
    let dir2 = MemDir::new();
    let mut node2 = open(&dir2, options(2, 64));
    for i in 0..5 {
        commit(&mut node2, &[blind_put("doc", &format!("v{i}"))])[0]
            .clone()
            .expect("write on node 2");
    }
    let five = node2.get(0, b"doc").unwrap().unwrap();
    assert_eq!(five.siblings.len(), 5);

    // Node 1, capped at 3, merges them: all five are kept.
    let dir1 = MemDir::new();
    let mut node1 = open(&dir1, options(1, 3));
    let outcome = commit(
        &mut node1,
        &[WriteOp::merge(0, Bytes::from("doc"), five.clone())],
    )[0]
    .clone()
    .expect("merge");
    assert!(outcome.applied);
    assert_eq!(node1.get(0, b"doc").unwrap().unwrap(), five);
    assert_eq!(node1.stats().sibling_merges_over_cap, 1);
    assert_eq!(node1.stats().siblings_largest, 5);
    assert_eq!(node1.stats().sibling_writes_refused, 0);
    // Node 1's own blind write on top is refused: the cap binds client writes.
    assert!(matches!(
        commit(&mut node1, &[blind_put("doc", "one more")])[0],
        Err(WriteError::TooManySiblings { count: 6, max: 3 })
    ));
}

fn sized_options(node_id: u32) -> StoreOptions {
    StoreOptions {
        node_id,
        record_size_max_bytes: 64 << 10,
        segment_size_bytes: 1 << 20,
        ..small_options()
    }
}

#[test]
fn a_value_over_a_quarter_of_a_record_is_refused_and_four_concurrent_largest_values_merge() {
    let dir = MemDir::new();
    let mut store = open(&dir, sized_options(1));
    let max = store.value_size_max_bytes();
    assert_eq!(
        max,
        (64 << 10) / shoal_engine::store::CONCURRENT_VALUES_PER_RECORD
    );
    let over = "x".repeat(max + 1);
    assert_eq!(
        commit(&mut store, &[blind_put("doc", &over)])[0].clone(),
        Err(WriteError::ValueTooLarge {
            len_bytes: max + 1,
            max_bytes: max
        })
    );
    assert_eq!(store.get(0, b"doc").unwrap(), None, "nothing written");

    // Largest values written concurrently on three other replicas (each
    // under its own dot actor), and this node's own: one record holds all.
    let value = |node: u32| format!("{node}{}", "v".repeat(max - 1 - 64));
    commit(&mut store, &[blind_put("doc", &value(1))])[0]
        .clone()
        .expect("the largest value");
    for node in 2..=4 {
        let other_dir = MemDir::new();
        let mut other = open(&other_dir, sized_options(node));
        commit(&mut other, &[blind_put("doc", &value(node))])[0]
            .clone()
            .expect("a largest value on another replica");
        let set = other.get(0, b"doc").unwrap().unwrap();
        let merged = commit(&mut store, &[WriteOp::merge(0, Bytes::from("doc"), set)])[0].clone();
        assert!(merged.expect("the merge fits one record").applied);
    }
    let set = store.get(0, b"doc").unwrap().unwrap();
    assert_eq!(set.siblings.len(), 4, "every concurrent value kept");
    assert_eq!(store.stats().merges_over_record_limit, 0);

    // A fifth is more than one record holds: the merge is refused (and
    // counted), and the four stay as they were.
    let fifth_dir = MemDir::new();
    let mut fifth = open(&fifth_dir, sized_options(5));
    commit(&mut fifth, &[blind_put("doc", &value(5))])[0]
        .clone()
        .expect("a largest value on a fifth replica");
    let set5 = fifth.get(0, b"doc").unwrap().unwrap();
    let refused = commit(&mut store, &[WriteOp::merge(0, Bytes::from("doc"), set5)])[0].clone();
    assert!(
        matches!(refused, Err(WriteError::RecordTooLarge { .. })),
        "{refused:?}"
    );
    assert_eq!(store.stats().merges_over_record_limit, 1);
    assert_eq!(store.get(0, b"doc").unwrap().unwrap(), set);
}

/// Blind writes on one replica until one is refused for bytes; the refused
/// write left nothing. Returns the replica's copy of "doc".
fn fill_half_a_record(store: &mut shoal_engine::Store, tag: &str) -> shoal_engine::SiblingSet {
    let value_bytes = store.value_size_max_bytes() / 3;
    for i in 0.. {
        let value = format!("{tag}{i}{}", "v".repeat(value_bytes));
        match commit(store, &[blind_put("doc", &value)])[0].clone() {
            Ok(_) => assert!(i < 8, "half a record holds a few values this large"),
            Err(WriteError::SiblingsTooLarge {
                len_bytes,
                max_bytes,
            }) => {
                assert_eq!(max_bytes, (64 << 10) / 2);
                assert!(len_bytes > max_bytes as usize);
                break;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    store.get(0, b"doc").unwrap().unwrap()
}

/// Cluster seed 20795012524: blind writes through two replicas each filled
/// their copy of a key to the record limit, and every repair's merge of the
/// two was refused, so a restoring node never finished. A client write may now
/// leave at most half a record, so two such copies merge into one.
#[test]
fn a_client_write_leaves_at_most_half_a_record_so_two_full_copies_merge() {
    let (dir1, dir2) = (MemDir::new(), MemDir::new());
    let mut one = open(&dir1, sized_options(1));
    let mut two = open(&dir2, sized_options(2));
    let copy_one = fill_half_a_record(&mut one, "a");
    let copy_two = fill_half_a_record(&mut two, "b");
    assert_eq!(one.stats().sibling_writes_refused, 1);
    let merged = commit(
        &mut one,
        &[WriteOp::merge(0, Bytes::from("doc"), copy_two.clone())],
    )[0]
    .clone()
    .expect("two copies of at most half a record merge into one");
    assert!(merged.applied);
    let union = one.get(0, b"doc").unwrap().unwrap();
    assert_eq!(
        union.siblings.len(),
        copy_one.siblings.len() + copy_two.siblings.len(),
        "every sibling of both copies kept"
    );
    assert_eq!(one.stats().merges_over_record_limit, 0);

    // A blind write over the union is refused; one whose context covers it
    // resolves the key.
    let refused = commit(&mut one, &[blind_put("doc", "late")])[0].clone();
    assert!(
        matches!(refused, Err(WriteError::SiblingsTooLarge { .. })),
        "{refused:?}"
    );
    let resolve = WriteOp {
        covers: Covers::Context(union.context.clone()),
        ..WriteOp::put(0, Bytes::from("doc"), Bytes::from("resolved"))
    };
    commit(&mut one, &[resolve])[0].clone().expect("resolve");
    assert_eq!(one.get(0, b"doc").unwrap().unwrap().siblings.len(), 1);
}
