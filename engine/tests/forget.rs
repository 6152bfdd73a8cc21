//! Forgetting a delete marker the whole cluster holds (`WriteOp::forget_if`):
//! the key reads as absent and leaves the digests; the empty record shadows the
//! key's older records across restarts until compaction collects it from the
//! oldest segment; it is refused when the set changed since; and dots minted
//! afterwards are never covered by the forgotten context.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::digest::set_hash;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{CompactionProgress, Store, StoreOptions, WriteOp};

fn options() -> StoreOptions {
    StoreOptions {
        // As on a cluster node: markers are collected only by agreement.
        delete_markers_collectable: false,
        compaction_dead_percent_min: 40,
        ..small_options()
    }
}

fn key(name: &str) -> Bytes {
    Bytes::from(name.to_string())
}

fn delete(store: &mut Store, name: &str) {
    commit(store, &[WriteOp::delete(0, key(name))])[0]
        .clone()
        .expect("delete");
}

/// The hash the cluster would have agreed on for the key's current set.
fn current_hash(store: &Store, name: &str) -> u64 {
    set_hash(&store.get(0, name.as_bytes()).unwrap().expect("held"))
}

fn forget(store: &mut Store, name: &str, hash: u64) -> bool {
    commit(store, &[WriteOp::forget_if(0, key(name), hash)])[0]
        .clone()
        .expect("forget")
        .applied
}

/// Write `name`, delete it, and forget the marker (as the cluster would).
fn write_delete_forget(store: &mut Store, name: &str) {
    put(store, name, "old");
    delete(store, name);
    let hash = current_hash(store, name);
    assert!(forget(store, name, hash));
}

fn digest_keys(store: &Store) -> usize {
    store.digests().expect("digests on").key_count()
}

#[test]
fn a_forgotten_marker_reads_as_absent_and_leaves_the_digests() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    store.enable_digests();
    put(&mut store, "gone", "v1");
    put(&mut store, "kept", "v1");
    delete(&mut store, "gone");
    assert_eq!(digest_keys(&store), 2);
    let hash = current_hash(&store, "gone");

    assert!(forget(&mut store, "gone", hash));
    assert_eq!(store.get(0, b"gone").unwrap(), None);
    assert_eq!(digest_keys(&store), 1);
    assert_eq!(store.stats().tombstones_forgotten, 1);
    assert!(store.dump().iter().all(|(_, k, _)| &k[..] != b"gone"));
    assert_eq!(value_of(&store, "kept").as_deref(), Some("v1"));

    // Forgetting again does nothing: the key no longer holds that set.
    assert!(!forget(&mut store, "gone", hash));
    assert_eq!(store.stats().tombstones_forgotten, 1);
}

#[test]
fn forgetting_is_refused_when_the_set_changed_or_holds_a_value() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put(&mut store, "k", "v1");
    let live_hash = current_hash(&store, "k");
    assert!(
        !forget(&mut store, "k", live_hash),
        "a live value is never forgotten"
    );

    delete(&mut store, "k");
    let marker_hash = current_hash(&store, "k");
    put(&mut store, "k", "v2");
    delete(&mut store, "k");
    assert!(
        !forget(&mut store, "k", marker_hash),
        "the marker agreed on was superseded"
    );
    assert!(store.get(0, b"k").unwrap().is_some());
    let hash = current_hash(&store, "k");
    assert!(forget(&mut store, "k", hash));
}

#[test]
fn the_empty_record_shadows_older_records_across_a_restart() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    write_delete_forget(&mut store, "k");
    drop(store);

    let mut store = open(&dir, options());
    assert_eq!(store.get(0, b"k").unwrap(), None, "the old value came back");
    store.enable_digests();
    assert_eq!(digest_keys(&store), 0);
    assert_eq!(store.live_key_count(0), 0);
}

#[test]
fn compaction_collects_forgotten_keys_only_from_the_oldest_segment() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    write_delete_forget(&mut store, "k");
    // Fill segments so the ones holding "k" become dead and the oldest.
    for round in 0..20 {
        for i in 0..10 {
            put(
                &mut store,
                &format!("f{i}"),
                &format!("{round}{}", "z".repeat(100)),
            );
        }
    }
    let collected_before = store.stats().tombstones_collected;
    let mut finished = 0;
    for _ in 0..10_000 {
        match store.compaction_tick(512).expect("compaction") {
            CompactionProgress::Idle => break,
            CompactionProgress::Finished { .. } => finished += 1,
            CompactionProgress::Running { .. } => {}
        }
    }
    assert!(finished > 0);
    assert!(
        store.stats().tombstones_collected > collected_before,
        "the empty record was never collected"
    );
    drop(store);
    let store = open(&dir, options());
    assert_eq!(
        store.get(0, b"k").unwrap(),
        None,
        "an older record came back"
    );
}

#[test]
fn writes_after_forgetting_mint_dots_the_old_context_does_not_cover() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put(&mut store, "k", "v1");
    delete(&mut store, "k");
    let marker = store.get(0, b"k").unwrap().expect("marker");
    assert!(forget(&mut store, "k", set_hash(&marker)));

    put(&mut store, "k", "v2");
    let set = store.get(0, b"k").unwrap().expect("written");
    let dot = set.winner().expect("live").dot;
    assert!(
        !marker.context.covers(dot),
        "dot {dot:?} is covered by the forgotten context {:?}",
        marker.context
    );
    // A replica that never forgot the marker keeps the new value on merge.
    let mut replica = marker.clone();
    replica.merge(&set);
    assert!(!replica.is_deleted());

    // And a merge into a forgotten key takes the incoming set whole.
    let dir2 = MemDir::new();
    let mut other = open(&dir2, options());
    write_delete_forget(&mut other, "k");
    commit(&mut other, &[WriteOp::merge(0, key("k"), set.clone())])[0]
        .clone()
        .expect("merge");
    assert_eq!(other.get(0, b"k").unwrap(), Some(set));
}

#[test]
fn a_dropped_copy_is_gone_live_or_not_and_stays_gone() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    store.enable_digests();
    put(&mut store, "live", "v");
    put(&mut store, "deleted", "v");
    delete(&mut store, "deleted");
    put(&mut store, "kept", "v");
    let outcomes = commit(
        &mut store,
        &[
            WriteOp::drop_copy(0, key("live")),
            WriteOp::drop_copy(0, key("deleted")),
            WriteOp::drop_copy(0, key("never-written")),
        ],
    );
    let applied: Vec<bool> = outcomes
        .iter()
        .map(|o| o.clone().unwrap().applied)
        .collect();
    assert_eq!(applied, [true, true, false]);
    assert_eq!(digest_keys(&store), 1);
    assert_eq!(store.live_key_count(0), 1);
    assert_eq!(
        store.stats().tombstones_forgotten,
        0,
        "not a marker collection"
    );
    drop(store);
    let store = open(&dir, options());
    assert_eq!(store.get(0, b"live").unwrap(), None);
    assert_eq!(store.get(0, b"deleted").unwrap(), None);
    assert_eq!(value_of(&store, "kept").as_deref(), Some("v"));
}

#[test]
fn marker_listing_keeps_to_the_grace_the_cap_and_the_read_budget() {
    use shoal_engine::Hlc;
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    for i in 0..6 {
        put(&mut store, &format!("d{i}"), "v");
        delete(&mut store, &format!("d{i}"));
    }
    put(&mut store, "live", "v");
    let all = 0..=shoal_engine::slot::SLOT_COUNT - 1;
    let list = |before_ms: u64, max: usize, reads: usize, store: &Store| {
        let mut reads_left = reads;
        let found = store.delete_markers_in_slots(
            all.clone(),
            Hlc::at_wall_ms(before_ms),
            max,
            &mut reads_left,
            |_, k| k == b"d0",
        );
        (found, reads_left)
    };
    // The helpers write at wall time 1000 ms: inside a grace ending there.
    let (found, _) = list(1_000, 100, 100, &store);
    assert!(found.is_empty(), "{found:?}");
    let (found, reads_left) = list(2_000, 100, 100, &store);
    let names: Vec<&[u8]> = found.iter().map(|(_, k, _)| &k[..]).collect();
    assert_eq!(
        names.len(),
        5,
        "d0 is skipped, the live key never read: {names:?}"
    );
    assert_eq!(reads_left, 95);
    for (ns, key, hash) in &found {
        let set = store.get(*ns, key).unwrap().unwrap();
        assert!(set.is_deleted());
        assert_eq!(set_hash(&set), *hash);
    }
    assert_eq!(list(2_000, 2, 100, &store).0.len(), 2);
    let (found, reads_left) = list(2_000, 100, 3, &store);
    assert_eq!((found.len(), reads_left), (3, 0));
}
