//! The recovery decision table (see `store/recovery.rs`), one test per row.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::rng::SplitMix64;
use shoal_engine::{Disk, DiskDir, OpenError, Store, WriteOp};
use std::sync::Arc;

const FIRST_RECORD_OFFSET: u64 = 16;

fn seg(dir: &MemDir, id: u32) -> Arc<dyn Disk> {
    dir.open(&format!("seg-{id:08}.log"), false)
        .expect("segment")
}

#[test]
fn valid_records_are_loaded() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "a", "1");
    put(&mut store, "b", "2");
    put(&mut store, "a", "3");
    drop(store);
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert_eq!(value_of(&store, "a").as_deref(), Some("3"));
    assert_eq!(value_of(&store, "b").as_deref(), Some("2"));
    assert_eq!(report.records_loaded, 3);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn torn_tail_is_cut_off_and_earlier_records_survive() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "a", "acked");
    // A batch written but never synced, then power loss tearing it.
    let batch = store.prepare(
        &[WriteOp::put(
            0,
            Bytes::from("b"),
            Bytes::from("x".repeat(300)),
        )],
        1,
    );
    assert!(!batch.is_empty());
    let disk = seg(&dir, 1);
    let end = disk.len().unwrap();
    // Simulate the tear directly: keep the first 20 bytes of the unsynced record.
    let mut record_start = FIRST_RECORD_OFFSET;
    let mut buf = [0u8; 4];
    disk.read_at(record_start, &mut buf).unwrap();
    record_start += 8 + u32::from_le_bytes(buf) as u64;
    let mut tail = vec![0u8; 200];
    disk.read_at(record_start, &mut tail).unwrap();
    dir.crash(&mut SplitMix64::new(0));
    let disk = seg(&dir, 1);
    disk.write_at(record_start, &tail[..20]).unwrap();
    disk.sync().unwrap();
    assert!(end > record_start);
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert_eq!(value_of(&store, "a").as_deref(), Some("acked"));
    assert_eq!(store.get(0, b"b").unwrap(), None);
    let (segment, offset, discarded) = report.torn_tail.expect("torn tail reported");
    assert_eq!((segment, offset), (1, record_start));
    assert!(discarded > 0);
    // The cut is durable: a second open finds a clean log.
    drop(store);
    let (_, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert_eq!(report.torn_tail, None);
}

#[test]
fn corruption_followed_by_a_later_batch_refuses_to_open() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    // More later batches than can ever be in flight unsynced at once, so the damaged
    // first record must have been synced.
    let later = shoal_engine::store::UNSYNCED_BATCHES_MAX + 2;
    for i in 0..=later {
        put(&mut store, &format!("k{i}"), "v");
    }
    drop(store);
    dir.corrupt_byte("seg-00000001.log", FIRST_RECORD_OFFSET + 10)
        .unwrap();
    match Store::open(Arc::new(dir.clone()), small_options()) {
        Err(OpenError::Corrupt {
            segment, offset, ..
        }) => assert_eq!((segment, offset), (1, FIRST_RECORD_OFFSET)),
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("opened a store with synced data missing"),
    }
}

#[test]
fn corruption_in_a_sealed_segment_refuses_to_open() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    for i in 0..40 {
        put(&mut store, &format!("key{i}"), &"v".repeat(200));
    }
    assert!(store.segment_count() >= 2);
    drop(store);
    dir.remove("seg-00000001.hint").unwrap();
    dir.corrupt_byte("seg-00000001.log", FIRST_RECORD_OFFSET + 30)
        .unwrap();
    let err = Store::open(Arc::new(dir.clone()), small_options())
        .err()
        .expect("must refuse");
    assert!(
        matches!(err, OpenError::Corrupt { segment: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("segment 1"));
}

#[test]
fn sealed_segment_loads_from_its_hint() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    for i in 0..40 {
        put(
            &mut store,
            &format!("key{i}"),
            &format!("value{i}-{}", "x".repeat(150)),
        );
    }
    drop(store);
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(report.segments_from_hints >= 1, "{report:?}");
    for i in 0..40 {
        assert!(value_of(&store, &format!("key{i}"))
            .unwrap()
            .starts_with(&format!("value{i}-")));
    }
}

#[test]
fn damaged_hint_falls_back_to_scanning() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    for i in 0..40 {
        put(&mut store, &format!("key{i}"), &"y".repeat(150));
    }
    drop(store);
    dir.corrupt_byte("seg-00000001.hint", 12).unwrap();
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(report.segments_scanned >= 2, "{report:?}");
    assert_eq!(store.live_key_count(0), 40);
}

#[test]
fn torn_segment_creation_is_redone() {
    let dir = MemDir::new();
    let store = open(&dir, small_options());
    drop(store);
    // A new segment whose creation was lost entirely: empty file.
    dir.open("seg-00000002.log", true).unwrap();
    let (mut store, _) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    put(&mut store, "k", "v");
    drop(store);
    let store = open(&dir, small_options());
    assert_eq!(value_of(&store, "k").as_deref(), Some("v"));
}

#[test]
fn bad_header_in_a_written_segment_refuses() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "k", "v");
    drop(store);
    dir.corrupt_byte("seg-00000001.log", 2).unwrap();
    assert!(matches!(
        Store::open(Arc::new(dir.clone()), small_options()),
        Err(OpenError::Corrupt {
            segment: 1,
            offset: 0,
            ..
        })
    ));
}

#[test]
fn latent_corruption_is_reported_on_read_never_returned() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "k", "value");
    dir.corrupt_byte("seg-00000001.log", FIRST_RECORD_OFFSET + 12)
        .unwrap();
    let err = store.get(0, b"k").expect_err("corrupt read must fail");
    assert!(err.to_string().contains("segment 1"), "{err}");
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Arbitrary damage to a real segment: recovery either opens (and then every
        /// read either succeeds or reports corruption) or refuses with a typed error.
        /// It never panics and never hands out bytes that fail their checksum.
        #[test]
        fn damaged_segments_never_panic(
            flips in proptest::collection::vec((16u64..2048, any::<u8>()), 0..8),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            garbage_at in 16u64..2048,
        ) {
            let dir = MemDir::new();
            let mut store = open(&dir, small_options());
            for i in 0..12 {
                put(&mut store, &format!("k{i}"), &format!("value-{i}"));
            }
            drop(store);
            let file = seg(&dir, 1);
            for (offset, mask) in flips {
                let mut b = [0u8; 1];
                file.read_at(offset, &mut b).unwrap();
                file.write_at(offset, &[b[0] ^ mask]).unwrap();
            }
            file.write_at(garbage_at, &garbage).unwrap();
            file.sync().unwrap();
            match Store::open(Arc::new(dir.clone()), small_options()) {
                Ok((store, _)) => {
                    for i in 0..12 {
                        if let Ok(Some(set)) = store.get(0, format!("k{i}").as_bytes()) {
                            let value = set.winner().and_then(|w| w.value.clone());
                            prop_assert!(
                                value.is_none() || value == Some(Bytes::from(format!("value-{i}"))),
                                "k{} read back {:?}", i, value
                            );
                        }
                    }
                }
                Err(OpenError::Corrupt { segment, .. }) => prop_assert_eq!(segment, 1),
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }
    }
}

/// Segment order decides, however each segment is loaded: an older segment that
/// must be scanned (damaged hint) never overrides a newer one loaded from its hint.
#[test]
fn newer_hinted_segment_wins_over_older_scanned_one() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let mut round = 0;
    while store.segment_count() < 4 {
        for i in 0..5 {
            put(
                &mut store,
                &format!("key{i}"),
                &format!("round{round}-{}", "x".repeat(120)),
            );
        }
        round += 1;
    }
    let last_round = round - 1;
    drop(store);
    dir.corrupt_byte("seg-00000001.hint", 12).unwrap();
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(
        report.segments_from_hints >= 1 && report.segments_scanned >= 2,
        "{report:?}"
    );
    for i in 0..5 {
        let value = value_of(&store, &format!("key{i}")).unwrap();
        assert!(
            value.starts_with(&format!("round{last_round}-")),
            "key{i}: {value}"
        );
    }
}

/// Damage followed only by batches that could have been in flight with it (the
/// newest `UNSYNCED_BATCHES_MAX`) is a torn tail: none of them can have been
/// acknowledged, since the damaged batch never finished syncing.
#[test]
fn damage_followed_only_by_in_flight_batches_is_a_torn_tail() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "acked", "yes");
    let batches: Vec<_> = (0..shoal_engine::store::UNSYNCED_BATCHES_MAX)
        .map(|i| {
            store.prepare(
                &[WriteOp::put(
                    0,
                    Bytes::from(format!("p{i}")),
                    Bytes::from("x".repeat(40)),
                )],
                1,
            )
        })
        .collect();
    drop(batches);
    let disk = seg(&dir, 1);
    // Tear the first pipelined batch's record; the later ones stay whole.
    let mut buf = [0u8; 4];
    disk.read_at(FIRST_RECORD_OFFSET, &mut buf).unwrap();
    let torn_at = FIRST_RECORD_OFFSET + 8 + u32::from_le_bytes(buf) as u64;
    disk.sync().unwrap();
    dir.corrupt_byte("seg-00000001.log", torn_at + 12).unwrap();
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert_eq!(report.torn_tail.map(|t| t.1), Some(torn_at));
    assert_eq!(value_of(&store, "acked").as_deref(), Some("yes"));
    for i in 0..shoal_engine::store::UNSYNCED_BATCHES_MAX {
        assert_eq!(store.get(0, format!("p{i}").as_bytes()).unwrap(), None);
    }
}

/// A store of several sealed segments (each with its hint) and an active one.
fn store_of_segments(dir: &MemDir) -> usize {
    let mut store = open(dir, small_options());
    for i in 0..60 {
        put(&mut store, &format!("key{i}"), &"v".repeat(200));
    }
    let segments = store.segment_count();
    assert!(segments >= 3, "{segments} segments");
    segments
}

fn refusal(dir: &MemDir) -> (u32, String) {
    match Store::open(Arc::new(dir.clone()), small_options()) {
        Err(OpenError::Corrupt {
            segment, reason, ..
        }) => (segment, reason),
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("opened a store with synced data missing"),
    }
}

#[test]
fn a_deleted_middle_segment_refuses_to_open() {
    let dir = MemDir::new();
    store_of_segments(&dir);
    dir.remove("seg-00000002.log").unwrap();
    dir.remove("seg-00000002.hint").unwrap();
    let (segment, reason) = refusal(&dir);
    assert_eq!(segment, 2);
    assert!(reason.contains("gone"), "{reason}");
    assert_not_whole(&dir, "segment 2 is listed in SEGMENTS but its file is gone");
}

/// `shoal inspect --check` (the same inspection) says the store is not whole,
/// with this fault among its reasons.
fn assert_not_whole(dir: &MemDir, fault: &str) {
    let inspection = shoal_engine::store::inspect::inspect_dir(dir, 1 << 20).unwrap();
    assert!(!inspection.is_whole());
    assert!(
        inspection
            .synced_data_faults
            .iter()
            .any(|f| f.contains(fault)),
        "{:?}",
        inspection.synced_data_faults
    );
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_with_its_hint_refuses_to_open() {
    let dir = MemDir::new();
    store_of_segments(&dir);
    assert!(dir.open("seg-00000001.hint", false).is_ok());
    dir.corrupt_byte("seg-00000001.log", FIRST_RECORD_OFFSET + 30)
        .unwrap();
    assert_eq!(refusal(&dir).0, 1);
    assert!(!shoal_engine::store::inspect::inspect_dir(&dir, 1 << 20)
        .unwrap()
        .is_whole());
}

#[test]
fn a_sealed_segment_cut_short_refuses_to_open() {
    let dir = MemDir::new();
    store_of_segments(&dir);
    seg(&dir, 1).set_len(FIRST_RECORD_OFFSET + 100).unwrap();
    assert_eq!(refusal(&dir).0, 1);
    // Without its hint the scan finds less data than the catalog says was synced.
    dir.remove("seg-00000001.hint").unwrap();
    assert_eq!(refusal(&dir).0, 1);
}

#[test]
fn the_active_segment_cut_short_refuses_to_open() {
    let dir = MemDir::new();
    let segments = store_of_segments(&dir) as u32;
    let active = seg(&dir, segments);
    let mut len = [0u8; 4];
    active.read_at(FIRST_RECORD_OFFSET, &mut len).unwrap();
    // Cut right after its first record: what is left scans as whole.
    active
        .set_len(FIRST_RECORD_OFFSET + 8 + u64::from(u32::from_le_bytes(len)))
        .unwrap();
    let (segment, reason) = refusal(&dir);
    assert_eq!(segment, segments);
    assert!(reason.contains("cut"), "{reason}");
    assert_not_whole(&dir, "cut from the");
}

#[test]
fn a_leftover_of_a_compaction_cut_short_is_removed() {
    let dir = MemDir::new();
    store_of_segments(&dir);
    let old = seg(&dir, 1);
    let mut old_bytes = vec![0u8; old.len().unwrap() as usize];
    old.read_at(0, &mut old_bytes).unwrap();
    let mut store = Store::open(Arc::new(dir.clone()), small_options())
        .unwrap()
        .0;
    for i in 0..60 {
        put(&mut store, &format!("key{i}"), &"w".repeat(200));
    }
    let mut ticks_left = 100;
    while dir.open("seg-00000001.log", false).is_ok() && ticks_left > 0 {
        store.compaction_tick(1 << 20).unwrap();
        ticks_left -= 1;
    }
    drop(store);
    // As if the compaction had unlisted segment 1 and crashed before its file
    // went: its records were rewritten and synced elsewhere.
    let leftover = dir.open("seg-00000001.log", true).unwrap();
    leftover.write_at(0, &old_bytes).unwrap();
    leftover.sync().unwrap();
    let (store, _) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(
        dir.open("seg-00000001.log", false).is_err(),
        "leftover removed"
    );
    assert_eq!(value_of(&store, "key7").as_deref(), Some(&*"w".repeat(200)));
}

/// The active segment with its synced tail zeroed (the mark recorded first):
/// the open refuses, naming where the data now ends.
#[test]
fn the_active_segment_zeroed_before_its_synced_mark_refuses_to_open() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    for i in 0..5 {
        put(&mut store, &format!("key{i}"), &"v".repeat(100));
    }
    assert!(store.record_synced_mark().unwrap());
    assert!(!store.record_synced_mark().unwrap(), "nothing new to mark");
    let segments = store.segment_count() as u32;
    drop(store);
    let active = seg(&dir, segments);
    let mut len = [0u8; 4];
    active.read_at(FIRST_RECORD_OFFSET, &mut len).unwrap();
    let second_record = FIRST_RECORD_OFFSET + 8 + u64::from(u32::from_le_bytes(len));
    active.write_at(second_record, &vec![0u8; 4096]).unwrap();
    let (segment, reason) = refusal(&dir);
    assert_eq!(segment, segments);
    assert!(reason.contains("SYNCED"), "{reason}");
    assert_not_whole(&dir, "SYNCED recorded as synced");
}

/// Writes after the mark are not guarded by it: a torn batch past the mark is
/// still cut off as a torn tail, and the mark never refuses a whole store.
#[test]
fn a_torn_tail_past_the_synced_mark_is_still_cut() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "a", "acked");
    assert!(store.record_synced_mark().unwrap());
    put(&mut store, "b", "after the mark");
    let batch = store.prepare(
        &[WriteOp::put(
            0,
            Bytes::from("c"),
            Bytes::from("x".repeat(300)),
        )],
        1,
    );
    assert!(!batch.is_empty());
    drop(batch);
    drop(store);
    // Tear the unsynced batch: keep a few bytes of its frame.
    let disk = seg(&dir, 1);
    let mut pos = FIRST_RECORD_OFFSET;
    for _ in 0..2 {
        let mut len = [0u8; 4];
        disk.read_at(pos, &mut len).unwrap();
        pos += 8 + u64::from(u32::from_le_bytes(len));
    }
    let mut head = vec![0u8; 20];
    disk.read_at(pos, &mut head).unwrap();
    disk.write_at(pos, &vec![0u8; 400]).unwrap();
    disk.write_at(pos, &head).unwrap();
    let (store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert_eq!(value_of(&store, "a").as_deref(), Some("acked"));
    assert_eq!(value_of(&store, "b").as_deref(), Some("after the mark"));
    assert_eq!(report.torn_tail.map(|t| t.1), Some(pos));
}

/// After an open that cut a tail, a key not written since may lack dots of the
/// store's earlier lives that replicas hold, in this life and later ones; once
/// written (or with no cut at all) it may not.
#[test]
fn a_cut_tail_marks_keys_not_written_since_as_needing_a_catch_up() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    put(&mut store, "a", "1");
    put(&mut store, "b", "2");
    assert!(
        !store.mint_may_claim_lost_dots(0, b"a"),
        "no cut, nothing lost"
    );
    let batch = store.prepare(
        &[WriteOp::put(
            0,
            Bytes::from("c"),
            Bytes::from("x".repeat(300)),
        )],
        1,
    );
    drop(batch);
    drop(store);
    let disk = seg(&dir, 1);
    let mut pos = FIRST_RECORD_OFFSET;
    for _ in 0..2 {
        let mut len = [0u8; 4];
        disk.read_at(pos, &mut len).unwrap();
        pos += 8 + u64::from(u32::from_le_bytes(len));
    }
    disk.write_at(pos + 10, &[0u8; 4]).unwrap();
    let (mut store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(report.torn_tail.is_some());
    assert!(store.mint_may_claim_lost_dots(0, b"a"));
    assert!(store.mint_may_claim_lost_dots(0, b"never-written"));
    put(&mut store, "a", "3");
    assert!(
        !store.mint_may_claim_lost_dots(0, b"a"),
        "written in this life"
    );
    assert!(store.mint_may_claim_lost_dots(0, b"b"));
    drop(store);
    // A later life still owes "b" its catch-up: the dots the cut took are
    // below this life's floor too.
    let (mut store, report) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(report.torn_tail.is_none());
    assert!(store.mint_may_claim_lost_dots(0, b"b"));
    assert!(
        !store.mint_may_claim_lost_dots(0, b"a"),
        "written after the cut"
    );
    put(&mut store, "b", "4");
    assert!(!store.mint_may_claim_lost_dots(0, b"b"));
    // A full restore from the replicas makes the cut good, for good.
    assert!(store.may_lack_acknowledged_writes());
    store.cut_tail_made_good().unwrap();
    assert!(!store.may_lack_acknowledged_writes());
    assert!(!store.mint_may_claim_lost_dots(0, b"never-written"));
    drop(store);
    let (store, _) = Store::open(Arc::new(dir.clone()), small_options()).unwrap();
    assert!(!store.may_lack_acknowledged_writes());
    assert!(!store.mint_may_claim_lost_dots(0, b"never-written"));
}
