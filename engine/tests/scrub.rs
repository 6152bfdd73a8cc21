//! Damage under a running store: the scrubber finds a flipped byte wherever it
//! lands among live records, reads name it, and a replicated node's repair
//! replaces it once its copies are marked incomplete (`store/scrub.rs`).

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::{CompactionProgress, ScrubCursor};
use shoal_engine::{DiskDir, Hlc, ReadError, SiblingSet, Store, VersionVector, WriteOp};

/// Flip a byte inside the record holding `marker` (a value written once).
fn flip_inside(dir: &MemDir, marker: &[u8]) {
    for name in dir.list().unwrap() {
        if !name.starts_with("seg-") {
            continue;
        }
        let disk = dir.open(&name, false).unwrap();
        let mut bytes = vec![0u8; disk.len().unwrap() as usize];
        disk.read_at(0, &mut bytes).unwrap();
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            dir.corrupt_byte(&name, (at + marker.len() / 2) as u64)
                .unwrap();
            return;
        }
    }
    panic!("no segment holds the marker");
}

/// Scrub a whole pass in steps of `bytes_max`; the records found damaged.
fn scrub_pass(store: &Store, bytes_max: u64) -> (u64, u64) {
    let (mut cursor, mut read, mut damaged) = (ScrubCursor::default(), 0, 0);
    for _ in 0..10_000 {
        let (next, step) = store.scrub_step(&cursor, bytes_max, 3);
        read += step.records_read;
        damaged += step.records_damaged;
        if step.pass_done {
            return (read, damaged);
        }
        cursor = next;
    }
    panic!("the pass never ended");
}

fn store_with_keys(dir: &MemDir) -> Store {
    let mut store = open(dir, small_options());
    for i in 0..40 {
        put(
            &mut store,
            &format!("k{i:02}"),
            &format!("value-{i:02}-{}", "v".repeat(40)),
        );
    }
    store
}

#[test]
fn a_scrub_pass_reads_every_live_record_once_in_any_step_size() {
    let dir = MemDir::new();
    let mut store = store_with_keys(&dir);
    put(&mut store, "k00", "overwritten");
    for bytes_max in [1, 100, 1 << 20] {
        assert_eq!(
            scrub_pass(&store, bytes_max),
            (40, 0),
            "steps of {bytes_max} bytes"
        );
    }
}

#[test]
fn a_flipped_byte_is_found_named_and_replaced_by_a_replica_merge() {
    let dir = MemDir::new();
    let mut store = store_with_keys(&dir);
    put(&mut store, "victim", "MARKER-0123456789-MARKER");
    put(&mut store, "gone", "OTHER-0123456789-OTHER");
    assert!(
        !store.mint_may_claim_lost_dots(0, b"k01"),
        "nothing lost yet"
    );
    flip_inside(&dir, b"MARKER-0123456789-MARKER");
    flip_inside(&dir, b"OTHER-0123456789-OTHER");
    assert!(!store.damage_found_pending());
    assert_eq!(scrub_pass(&store, 64), (42, 2));
    assert!(matches!(
        store.get(0, b"victim"),
        Err(ReadError::Corrupt { .. })
    ));
    let mut found: Vec<(Bytes, u32)> = (store.drain_damage_found().into_iter())
        .map(|d| (d.key, d.segment))
        .collect();
    found.sort();
    assert_eq!(found.len(), 2);
    assert_eq!(
        (&found[0].0[..], &found[1].0[..]),
        (&b"gone"[..], &b"victim"[..])
    );
    assert!(store.drain_damage_found().is_empty(), "drained");
    assert!(store.get(0, b"victim").is_err());
    assert!(!store.damage_found_pending(), "reported once");
    assert_eq!(
        scrub_pass(&store, 64),
        (42, 2),
        "still damaged, still counted"
    );
    assert!(!store.damage_found_pending(), "reported once");

    // A client write cannot build on what it cannot read.
    let write = commit(&mut store, &[WriteOp::put(0, "victim".into(), "x".into())]);
    assert!(write[0].is_err());
    let floor = store.mark_copies_incomplete().unwrap();
    assert!(
        dir.list().unwrap().iter().any(|n| n == "CUT-TAIL"),
        "kept across restarts"
    );
    assert!(store.may_lack_acknowledged_writes());
    assert!(
        store.mint_may_claim_lost_dots(0, b"k01"),
        "its dots may be lost"
    );
    assert_eq!(
        store.mark_copies_incomplete().unwrap(),
        floor,
        "nothing minted since"
    );

    // The replica's copy replaces the damaged record; a forget of the other
    // leaves it absent.
    let mut theirs = SiblingSet::default();
    let value = Some(Bytes::from("from-a-replica"));
    theirs.write(&VersionVector::new(), 9, 1, Hlc(1), value);
    let merged = commit(
        &mut store,
        &[
            WriteOp::merge(0, "victim".into(), theirs),
            WriteOp::drop_copy(0, "gone".into()),
        ],
    );
    assert!(merged.iter().all(|r| r.as_ref().is_ok_and(|o| o.applied)));
    assert_eq!(
        value_of(&store, "victim").as_deref(),
        Some("from-a-replica")
    );
    assert_eq!(value_of(&store, "gone"), None);
    assert_eq!(store.stats().damaged_records_replaced, 2);
    assert_eq!(
        scrub_pass(&store, 1 << 20),
        (42, 0),
        "nothing damaged is live"
    );

    // Minting after the mark stays above it: the key needs no catch-up.
    put(&mut store, "k01", "new");
    assert!(!store.mint_may_claim_lost_dots(0, b"k01"));
    assert!(
        store.mark_copies_incomplete().unwrap() > floor,
        "new damage, new floor"
    );

    // The segments that held the damage are rewritten first, however little
    // of them is dead, so the next open finds nothing damaged.
    for i in 0..40 {
        put(&mut store, &format!("later{i:02}"), &"w".repeat(60));
    }
    for _ in 0..100 {
        if store.compaction_tick(1 << 20).unwrap() == CompactionProgress::Idle {
            break;
        }
    }
    drop(store);
    let (store, _) = Store::open(std::sync::Arc::new(dir.clone()), small_options())
        .expect("no damage left for the open to find");
    assert_eq!(
        value_of(&store, "victim").as_deref(),
        Some("from-a-replica")
    );
    assert_eq!(value_of(&store, "gone"), None);
    let kept = value_of(&store, "k02").expect("k02 kept");
    assert!(kept.starts_with("value-02"), "{kept}");
    assert!(store.may_lack_acknowledged_writes(), "until a full restore");
}
