//! Compaction: space comes back, values stay, delete markers are collected only
//! when no older record of their key can come back.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{CompactionProgress, Store, StoreOptions, WriteOp};

fn options() -> StoreOptions {
    StoreOptions {
        compaction_dead_percent_min: 40,
        ..small_options()
    }
}

fn compact_all(store: &mut Store) -> u32 {
    let mut finished = 0;
    for _ in 0..10_000 {
        match store.compaction_tick(512).expect("compaction") {
            CompactionProgress::Idle => return finished,
            CompactionProgress::Finished { .. } => finished += 1,
            CompactionProgress::Running { .. } => {}
        }
    }
    panic!("compaction never went idle");
}

#[test]
fn compaction_reclaims_dead_segments_and_keeps_values() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    for round in 0..20 {
        for i in 0..10 {
            put(
                &mut store,
                &format!("k{i}"),
                &format!("r{round}-{}", "z".repeat(100)),
            );
        }
    }
    let segments_before = store.segment_count();
    let (bytes_before, dead_before) = store.disk_usage_bytes();
    assert!(dead_before > bytes_before / 2);
    assert!(compact_all(&mut store) > 0);
    assert!(store.segment_count() < segments_before);
    for i in 0..10 {
        assert!(value_of(&store, &format!("k{i}"))
            .unwrap()
            .starts_with("r19-"));
    }
    drop(store);
    let store = open(&dir, options());
    for i in 0..10 {
        assert!(value_of(&store, &format!("k{i}"))
            .unwrap()
            .starts_with("r19-"));
    }
    assert_eq!(store.live_key_count(0), 10);
}

/// Segment 1 holds `victim`'s value; segment 2 holds its delete marker and is mostly
/// dead. Compacting segment 2 must keep the marker, or a restart loads the value
/// from segment 1 again (resurrection, G4).
#[test]
fn delete_marker_outlives_older_records_of_its_key() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put(&mut store, "victim", "old-value");
    for i in 0..30 {
        put(&mut store, &format!("keep{i}"), &"k".repeat(150));
        if store.segment_count() >= 2 {
            break;
        }
    }
    assert!(store.segment_count() >= 2);
    commit(&mut store, &[WriteOp::delete(0, Bytes::from("victim"))])[0]
        .clone()
        .unwrap();
    for round in 0..30 {
        put(&mut store, "churn", &format!("{round}{}", "c".repeat(150)));
        if store.segment_count() >= 4 {
            break;
        }
    }
    compact_all(&mut store);
    assert_eq!(value_of(&store, "victim"), None);
    drop(store);
    let store = open(&dir, options());
    assert_eq!(value_of(&store, "victim"), None, "deleted value came back");
}

#[test]
fn delete_markers_are_collected_from_the_oldest_segment() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    for i in 0..8 {
        put(&mut store, &format!("gone{i}"), &"g".repeat(100));
    }
    for i in 0..8 {
        commit(
            &mut store,
            &[WriteOp::delete(0, Bytes::from(format!("gone{i}")))],
        )[0]
        .clone()
        .unwrap();
    }
    for round in 0..60 {
        put(&mut store, "churn", &format!("{round}{}", "c".repeat(150)));
    }
    for _ in 0..5 {
        compact_all(&mut store);
    }
    assert!(
        store.stats().tombstones_collected > 0,
        "{:?}",
        store.stats()
    );
    drop(store);
    let store = open(&dir, options());
    for i in 0..8 {
        assert_eq!(value_of(&store, &format!("gone{i}")), None);
    }
}

/// Found by the simulator (`ci/sim --seed 1`): once a key's delete marker is
/// collected its causal context is gone, and a new write to the key must still get a
/// dot never issued before in this incarnation. A reused dot is covered by the old
/// delete's context, so the new value reads as resurrected (G4) and any client still
/// holding that context would silently replace it (G2).
#[test]
fn dots_stay_fresh_after_a_delete_marker_is_collected() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    let first = commit(
        &mut store,
        &[WriteOp::put(0, Bytes::from("reborn"), Bytes::from("v1"))],
    )[0]
    .clone()
    .unwrap();
    let deleted = commit(&mut store, &[WriteOp::delete(0, Bytes::from("reborn"))])[0]
        .clone()
        .unwrap();
    for round in 0..60 {
        put(&mut store, "churn", &format!("{round}{}", "c".repeat(150)));
    }
    for _ in 0..5 {
        compact_all(&mut store);
    }
    assert!(
        store.stats().tombstones_collected > 0,
        "{:?}",
        store.stats()
    );
    assert!(
        store.get(0, b"reborn").unwrap().is_none(),
        "marker collected"
    );
    let again = commit(
        &mut store,
        &[WriteOp::put(0, Bytes::from("reborn"), Bytes::from("v2"))],
    )[0]
    .clone()
    .unwrap();
    let new_dot = again.dot.unwrap();
    assert_ne!(
        Some(new_dot),
        first.dot,
        "the first write's dot was reissued"
    );
    assert_ne!(
        Some(new_dot),
        deleted.dot,
        "the delete marker's dot was reissued"
    );
    assert!(
        !deleted.superseded.covers(new_dot),
        "the old delete's context {} covers the new dot {new_dot}",
        deleted.superseded
    );
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_recovers() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "kept", "before");
    dir.set_capacity_bytes(Some(dir.used_bytes()));
    let mut refused = 0;
    for i in 0..60 {
        let op = WriteOp::put(
            0,
            Bytes::from(format!("f{i}")),
            Bytes::from("x".repeat(200)),
        );
        match &commit(&mut store, &[op])[0] {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e.to_string(),
                    "disk full: writes refused until space returns"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
    assert_eq!(value_of(&store, "kept").as_deref(), Some("before"));
    dir.set_capacity_bytes(None);
    put(&mut store, "after", "space-returned");
    drop(store);
    let store = open(&dir, small_options());
    assert_eq!(value_of(&store, "kept").as_deref(), Some("before"));
    assert_eq!(value_of(&store, "after").as_deref(), Some("space-returned"));
}

/// Found by the simulator (`ci/sim --seed 341`): a compaction step that fails (the
/// disk is full when it must rotate) must not skip the entries it had taken up, or
/// compaction later finishes, removes the segment, and their directory entries point
/// into a deleted file ("segment missing": acknowledged data gone).
/// Twelve keys written once (`live{i}`) and one overwritten 40 times
/// (`churn`): segments mostly dead, with live records to copy.
fn put_live_and_churn(store: &mut Store) {
    for i in 0..12 {
        put(
            store,
            &format!("live{i}"),
            &format!("{i}-{}", "v".repeat(150)),
        );
    }
    for round in 0..40 {
        put(store, "churn", &format!("{round}{}", "c".repeat(150)));
    }
}

/// Every `live{i}` of `put_live_and_churn` holds its value.
fn assert_live_values(store: &Store) {
    for i in 0..12 {
        let value = value_of(store, &format!("live{i}"));
        assert_eq!(value, Some(format!("{i}-{}", "v".repeat(150))), "live{i}");
    }
}

#[test]
fn compaction_interrupted_by_a_full_disk_loses_nothing() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put_live_and_churn(&mut store);
    dir.set_capacity_bytes(Some(dir.used_bytes()));
    let mut refused = 0;
    for _ in 0..200 {
        match store.compaction_tick(256) {
            Err(_) => refused += 1,
            Ok(CompactionProgress::Idle) => break,
            Ok(_) => {}
        }
    }
    assert!(refused > 0, "the full disk never interrupted compaction");
    dir.set_capacity_bytes(None);
    compact_all(&mut store);
    assert_live_values(&store);
    drop(store);
    let store = open(&dir, options());
    for i in 0..12 {
        assert!(
            value_of(&store, &format!("live{i}")).is_some(),
            "live{i} after restart"
        );
    }
}

/// Seed 487 (single-node sweep): a batch still in flight when its segment was
/// sealed wrote its record there; compaction began on that segment before the
/// batch was published, so the record was not among its entries, and the segment
/// went with the published write in it. The key must survive, and a restart.
#[test]
fn a_write_published_into_a_segment_being_compacted_is_kept() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    let filler = "f".repeat(300);
    // Overwrite one key until a second segment starts, then a few more times:
    // the active segment holds only that key's records.
    while store.segment_count() == 1 {
        put(&mut store, "dead", &filler);
    }
    for _ in 0..8 {
        put(&mut store, "dead", &filler);
    }
    assert_eq!(store.segment_count(), 2);
    // In flight: "k" written into the active segment; a batch that does not fit
    // seals it while the first is unpublished.
    let pending = store.prepare(&[put_op("k", "new")], 1_000);
    let mut sealing = Vec::new();
    while store.segment_count() == 2 {
        sealing.push(store.prepare(&[put_op("big", &"b".repeat(600))], 1_000));
    }
    assert_eq!(store.segment_count(), 3, "a later batch sealed the segment");
    // Compaction of both sealed segments, while "k"'s batch is in flight.
    for _ in 0..256 {
        if let CompactionProgress::Idle = store.compaction_tick(64).expect("tick") {
            break;
        }
    }
    pending.sync().expect("sync");
    assert!(store.publish(pending)[0].is_ok());
    for batch in sealing {
        batch.sync().expect("sync");
        assert!(store.publish(batch)[0].is_ok());
    }
    compact_all(&mut store);
    assert_eq!(value_of(&store, "k").as_deref(), Some("new"));
    drop(store);
    let store = open(&dir, options());
    assert_eq!(
        value_of(&store, "k").as_deref(),
        Some("new"),
        "lost at restart"
    );
}

fn put_op(key: &str, value: &str) -> WriteOp {
    WriteOp::put(
        0,
        Bytes::from(key.to_string()),
        Bytes::from(value.to_string()),
    )
}

/// A record that no longer reads (latent corruption) cannot be copied, so its
/// segment cannot go; compaction sets that segment aside and goes on with the
/// others instead of retrying it forever while the disk fills.
#[test]
fn a_damaged_record_holds_its_segment_and_no_other() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put(&mut store, "cold", &"c".repeat(100));
    for round in 0..30 {
        for i in 0..6 {
            put(
                &mut store,
                &format!("k{i}"),
                &format!("r{round}-{}", "z".repeat(100)),
            );
        }
    }
    // The cold record is the first of segment 1, right after its header.
    let offset = shoal_engine::record::SEGMENT_HEADER_BYTES + 20;
    dir.corrupt_byte("seg-00000001.log", offset)
        .expect("corrupt");
    let segments_before = store.segment_count();
    let (mut finished, mut damaged) = (0, 0);
    for _ in 0..10_000 {
        match store.compaction_tick(512) {
            Ok(CompactionProgress::Idle) => break,
            Ok(CompactionProgress::Finished { segment }) => {
                assert_ne!(segment, 1, "the damaged segment went");
                finished += 1;
            }
            Ok(CompactionProgress::Running { .. }) => {}
            Err(e) => {
                damaged += 1;
                assert!(damaged == 1, "compaction retried the damaged segment: {e}");
            }
        }
    }
    assert_eq!((damaged, store.stats().compaction_segments_damaged), (1, 1));
    assert!(finished > 0 && store.segment_count() < segments_before);
    assert!(
        store.get(0, b"cold").is_err(),
        "the damage is still reported"
    );
    for i in 0..6 {
        assert!(value_of(&store, &format!("k{i}"))
            .unwrap()
            .starts_with("r29-"));
    }
}

/// A finished segment waits for its copies' sync, which a driver runs off the
/// store's lock: while it is owed no compaction starts, a failed sync poisons
/// the store and keeps the segment, and a crash then finds every value.
#[test]
fn a_segment_goes_only_after_its_copies_sync() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    put_live_and_churn(&mut store);
    let owed = loop {
        store
            .compaction_tick_spending(1 << 20, None, None)
            .expect("step");
        if let Some(owed) = store.compaction_sync_owed() {
            break owed;
        }
    };
    let segments = store.segment_count();
    assert!(
        store.compaction_plan().is_none(),
        "a compaction planned while a sync is owed"
    );
    let waiting = store.compaction_tick_spending(1 << 20, None, None);
    assert!(matches!(
        waiting,
        Ok((CompactionProgress::Running { .. }, 0))
    ));
    dir.fail_next_syncs(1);
    let synced = owed.sync();
    assert!(synced.is_err(), "the planted sync failure did not happen");
    assert!(store.compaction_synced(owed, synced).is_err());
    assert!(store.is_poisoned().is_some());
    assert_eq!(
        store.segment_count(),
        segments,
        "the segment went without its copies"
    );
    drop(store);
    dir.crash(&mut shoal_engine::rng::SplitMix64::new(7));
    let store = open(&dir, options());
    assert_live_values(&store);
}
