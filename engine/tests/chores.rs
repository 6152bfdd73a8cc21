//! Chores a driver takes (`Store::defer_chores`): a sealed segment's hint and a
//! compacted segment's removal wait for it, nothing they guard goes early, and
//! an open finds the same keys whether they ran, failed to run, or ran late.

mod common;

use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Chore, CompactionProgress, DiskDir, Store, StoreOptions};
use std::sync::Arc;

fn options() -> StoreOptions {
    StoreOptions {
        compaction_dead_percent_min: 40,
        ..small_options()
    }
}

fn files(dir: &MemDir, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = dir
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Overwrite ten keys for `rounds` rounds (values of about 100 bytes).
fn overwrite(store: &mut Store, rounds: usize) {
    for round in 0..rounds {
        for i in 0..10 {
            put(
                store,
                &format!("k{i}"),
                &format!("r{round}-{}", "z".repeat(100)),
            );
        }
    }
}

fn run_all(store: &mut Store, chores: Vec<Chore>) {
    for chore in chores {
        let result = chore.run();
        assert!(result.is_ok(), "{result:?}");
        store.chore_done(&chore, result);
    }
}

fn compact_until_idle(store: &mut Store) -> (u32, Vec<Chore>) {
    let mut finished = 0;
    let mut chores = Vec::new();
    for _ in 0..10_000 {
        let progress = store.compaction_tick(512).expect("compaction");
        chores.extend(store.take_chores());
        match progress {
            CompactionProgress::Idle => return (finished, chores),
            CompactionProgress::Finished { .. } => finished += 1,
            CompactionProgress::Running { .. } => {}
        }
    }
    panic!("compaction never went idle");
}

#[test]
fn a_segment_whose_hint_is_owed_is_not_compacted_until_it_is_written() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    store.defer_chores();
    overwrite(&mut store, 20);
    let owed = store.take_chores();
    assert!(owed.len() >= 3, "every rotation owes a hint");
    assert!(owed.iter().all(|c| matches!(c, Chore::Hint(_))));
    assert!(files(&dir, ".hint").is_empty(), "nothing ran yet");
    // Dead enough to compact, but every sealed segment's hint is pending.
    assert_eq!(compact_until_idle(&mut store).0, 0);
    run_all(&mut store, owed);
    assert_eq!(files(&dir, ".hint").len(), store.segment_count() - 1);
    let (finished, removals) = compact_until_idle(&mut store);
    assert!(finished > 0);
    assert!(removals.iter().any(|c| matches!(c, Chore::Remove(_))));
}

#[test]
fn compacted_files_stay_until_their_removal_runs_and_an_open_clears_them() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    store.defer_chores();
    overwrite(&mut store, 20);
    let hints = store.take_chores();
    run_all(&mut store, hints);
    let segments_before = files(&dir, ".log");
    let (finished, chores) = compact_until_idle(&mut store);
    assert!(finished > 0);
    // Unlisted but still there: the removal has not run.
    assert!(store.segment_count() < segments_before.len());
    let removals: Vec<Chore> = chores
        .into_iter()
        .filter(|c| matches!(c, Chore::Remove(_)))
        .collect();
    assert_eq!(removals.len(), finished as usize);
    for removal in &removals {
        let name = format!("seg-{:08}.log", removal.segment_id());
        assert!(segments_before.contains(&name), "{name}");
        assert!(files(&dir, ".log").contains(&name), "{name} went early");
    }
    // An open before the removals ran clears the leftovers and loses nothing.
    drop(store);
    let store = open(&dir, options());
    assert_eq!(files(&dir, ".log").len(), store.segment_count());
    for i in 0..10 {
        assert!(value_of(&store, &format!("k{i}"))
            .unwrap()
            .starts_with("r19-"));
    }
    // A removal that runs after all finds nothing to remove, and says so
    // without error.
    for removal in removals {
        assert!(removal.run().is_ok());
    }
}

#[test]
fn hints_from_a_scan_load_what_a_scan_at_open_finds() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    overwrite(&mut store, 15);
    put(&mut store, "k3", "last");
    let expected: Vec<Option<String>> = (0..10)
        .map(|i| value_of(&store, &format!("k{i}")))
        .collect();
    drop(store);
    assert!(
        !files(&dir, ".hint").is_empty(),
        "inline chores wrote hints"
    );
    let (store, report) = Store::open(Arc::new(dir.clone()), options()).expect("open");
    assert!(report.segments_from_hints >= 2, "{report:?}");
    let from_hints: Vec<Option<String>> = (0..10)
        .map(|i| value_of(&store, &format!("k{i}")))
        .collect();
    assert_eq!(from_hints, expected);
    drop(store);
    for name in files(&dir, ".hint") {
        dir.remove(&name).unwrap();
    }
    let (store, report) = Store::open(Arc::new(dir.clone()), options()).expect("open");
    assert_eq!(report.segments_from_hints, 0);
    let scanned: Vec<Option<String>> = (0..10)
        .map(|i| value_of(&store, &format!("k{i}")))
        .collect();
    assert_eq!(scanned, expected);
}
