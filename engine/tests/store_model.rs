//! The engine against a `BTreeMap` model, under random operations, crashes that drop,
//! keep or tear unsynced writes, clean restarts, compactions, fsync failures and a
//! full disk. Acknowledged writes must survive; nothing unwritten may appear.

mod common;

use bytes::Bytes;
use common::commit;
use proptest::prelude::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::rng::SplitMix64;
use shoal_engine::store::{CompactionReads, UNSYNCED_BATCHES_MAX};
use shoal_engine::{CompactionProgress, Store, StoreOptions, WriteError, WriteOp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// (key, value or delete) pairs written as one batch.
type Batch = Vec<(u8, Option<u16>)>;

#[derive(Clone, Debug)]
enum Step {
    /// Acknowledged batch of (key, value or delete).
    Write(Vec<(u8, Option<u16>)>),
    /// Pipelined batches written but not synced before a crash (as the committer
    /// keeps up to `UNSYNCED_BATCHES_MAX` in flight).
    WriteThenCrash(Vec<Vec<(u8, Option<u16>)>>, u64),
    Crash(u64),
    Restart,
    /// Damage one hint file (chosen by the seed), then restart: recovery must scan
    /// that segment instead and still load every segment in order.
    DamageHintThenRestart(u64),
    Compact(u8),
    /// Compaction steps whose records are read ahead (as the server reads them,
    /// off the store's lock); between the reading and each step a batch is
    /// prepared, and published before or after the step (`true`: after).
    CompactAround(Vec<(Batch, bool)>),
    FailNextSync(Vec<(u8, Option<u16>)>),
    DiskFull(Vec<(u8, Option<u16>)>),
}

fn arb_batch() -> impl Strategy<Value = Vec<(u8, Option<u16>)>> {
    proptest::collection::vec(
        (0u8..12, proptest::option::weighted(0.8, any::<u16>())),
        1..5,
    )
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => arb_batch().prop_map(Step::Write),
        2 => (
            proptest::collection::vec(arb_batch(), 1..=UNSYNCED_BATCHES_MAX as usize),
            any::<u64>()
        )
            .prop_map(|(b, s)| Step::WriteThenCrash(b, s)),
        1 => any::<u64>().prop_map(Step::Crash),
        1 => Just(Step::Restart),
        1 => any::<u64>().prop_map(Step::DamageHintThenRestart),
        2 => (1u8..20).prop_map(Step::Compact),
        2 => proptest::collection::vec((arb_batch(), any::<bool>()), 1..12)
            .prop_map(Step::CompactAround),
        1 => arb_batch().prop_map(Step::FailNextSync),
        1 => arb_batch().prop_map(Step::DiskFull),
    ]
}

fn options() -> StoreOptions {
    StoreOptions {
        segment_size_bytes: 4096,
        record_size_max_bytes: 1024,
        compaction_dead_percent_min: 30,
        ..StoreOptions::default()
    }
}

fn value_bytes(key: u8, v: u16) -> Bytes {
    // Values vary in size so segments fill and rotate.
    Bytes::from(format!("{key}:{v}:{}", "p".repeat((v % 97) as usize)))
}

fn ops(batch: &[(u8, Option<u16>)]) -> Vec<WriteOp> {
    batch
        .iter()
        .map(|(k, v)| {
            let key = Bytes::from(format!("k{k}"));
            match v {
                Some(v) => WriteOp::put(0, key, value_bytes(*k, *v)),
                None => WriteOp::delete(0, key),
            }
        })
        .collect()
}

/// For each key, the states it may be in: the acknowledged one, plus any written
/// since but not acknowledged (a crash may or may not have kept them).
type Model = BTreeMap<u8, BTreeSet<Option<u16>>>;

fn allowed(model: &Model, key: u8) -> BTreeSet<Option<u16>> {
    model.get(&key).cloned().unwrap_or_else(|| [None].into())
}

fn check(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    for key in 0u8..12 {
        let set = store
            .get(0, format!("k{key}").as_bytes())
            .map_err(|e| TestCaseError::fail(format!("read k{key}: {e}")))?;
        let actual = set.and_then(|s| s.winner().and_then(|w| w.value.clone()));
        let ok = allowed(model, key).iter().any(|candidate| match candidate {
            None => actual.is_none(),
            Some(v) => actual.as_ref() == Some(&value_bytes(key, *v)),
        });
        prop_assert!(
            ok,
            "k{}: store has {:?}, model allows {:?}",
            key,
            actual,
            allowed(model, key)
        );
    }
    Ok(())
}

/// After a crash, whatever recovery kept is durable: narrow each key's allowed
/// states to the one the store holds (already checked to be allowed).
fn pin_to_store(store: &Store, model: &mut Model) {
    for key in 0u8..12 {
        let set = store.get(0, format!("k{key}").as_bytes()).unwrap();
        let actual = set.and_then(|s| s.winner().and_then(|w| w.value.clone()));
        let state = allowed(model, key).into_iter().find(|c| match c {
            None => actual.is_none(),
            Some(v) => actual.as_ref() == Some(&value_bytes(key, *v)),
        });
        model.insert(key, [state.expect("checked above")].into());
    }
}

fn reopen(dir: &MemDir) -> Result<Store, TestCaseError> {
    Store::open(Arc::new(dir.clone()), options())
        .map(|(s, _)| s)
        .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))
}

fn settle(model: &mut Model, batch: &[(u8, Option<u16>)]) {
    for (k, v) in batch {
        model.insert(*k, [*v].into());
    }
}

fn add_possible(model: &mut Model, batch: &[(u8, Option<u16>)]) {
    for (k, v) in batch {
        let mut states = allowed(model, *k);
        states.insert(*v);
        model.insert(*k, states);
    }
}

/// One compaction step read ahead, with `batch` prepared between the reading
/// and the step, and published before the step or after it (before a
/// finished segment's sync).
fn compact_around(
    store: &mut Store,
    batch: &[WriteOp],
    publish_after: bool,
) -> Result<(), TestCaseError> {
    let plan = store.compaction_plan();
    let copies = store
        .compaction_reads(plan.as_ref(), 600)
        .map(CompactionReads::copy);
    let prepared = store.prepare(batch, 1_000);
    let mut prepared = Some(prepared);
    if !publish_after {
        publish(store, prepared.take().expect("prepared"))?;
    }
    if let Err(e) = store.compaction_tick_spending(600, plan, copies) {
        prop_assert!(false, "compaction: {}", e);
    }
    // A finished segment's copies are synced off the lock: the batch may be
    // published between the step and that sync.
    let owed = store.compaction_sync_owed();
    if let Some(prepared) = prepared {
        publish(store, prepared)?;
    }
    if let Some(owed) = owed {
        let synced = owed.sync();
        if let Err(e) = store.compaction_synced(owed, synced) {
            prop_assert!(false, "compaction: {}", e);
        }
    }
    Ok(())
}

fn publish(store: &mut Store, batch: shoal_engine::PreparedBatch) -> Result<(), TestCaseError> {
    prop_assert!(batch.sync().is_ok());
    for r in store.publish(batch) {
        prop_assert!(r.is_ok(), "write failed: {:?}", r);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_writes_survive_crashes(steps in proptest::collection::vec(arb_step(), 1..60)) {
        let dir = MemDir::new();
        let mut store = reopen(&dir)?;
        let mut model = Model::new();
        for step in steps {
            match step {
                Step::Write(batch) => {
                    let results = commit(&mut store, &ops(&batch));
                    for r in &results {
                        prop_assert!(r.is_ok(), "write failed: {:?}", r);
                    }
                    settle(&mut model, &batch);
                }
                Step::WriteThenCrash(batches, seed) => {
                    for batch in &batches {
                        let prepared = store.prepare(&ops(batch), 5);
                        drop(prepared);
                        add_possible(&mut model, batch);
                    }
                    dir.crash(&mut SplitMix64::new(seed));
                    store = reopen(&dir)?;
                    check(&store, &model)?;
                    // Whatever recovery chose is now durable: pin it down.
                    pin_to_store(&store, &mut model);
                }
                Step::Crash(seed) => {
                    dir.crash(&mut SplitMix64::new(seed));
                    store = reopen(&dir)?;
                }
                Step::Restart => {
                    drop(store);
                    store = reopen(&dir)?;
                }
                Step::DamageHintThenRestart(seed) => {
                    drop(store);
                    let hints: Vec<String> = shoal_engine::DiskDir::list(&dir)
                        .unwrap()
                        .into_iter()
                        .filter(|n| n.ends_with(".hint"))
                        .collect();
                    if !hints.is_empty() {
                        let name = &hints[(seed % hints.len() as u64) as usize];
                        dir.corrupt_byte(name, 8 + seed % 16).unwrap();
                    }
                    store = reopen(&dir)?;
                }
                Step::Compact(ticks) => {
                    for _ in 0..ticks {
                        match store.compaction_tick(600) {
                            Ok(CompactionProgress::Idle) => break,
                            Ok(_) => {}
                            Err(e) => prop_assert!(false, "compaction: {}", e),
                        }
                    }
                }
                Step::CompactAround(batches) => {
                    for (batch, publish_after) in batches {
                        compact_around(&mut store, &ops(&batch), publish_after)?;
                        settle(&mut model, &batch);
                    }
                    check(&store, &model)?;
                }
                Step::FailNextSync(batch) => {
                    dir.fail_next_syncs(1);
                    let results = commit(&mut store, &ops(&batch));
                    let wrote = results.iter().any(|r| matches!(r, Err(WriteError::SyncFailed(_))));
                    prop_assert!(results.iter().all(|r| matches!(r, Err(WriteError::SyncFailed(_)) | Ok(_))));
                    dir.fail_next_syncs(0);
                    add_possible(&mut model, &batch);
                    if wrote {
                        // Poisoned: further writes are refused, reads still work.
                        let refused = commit(&mut store, &ops(&[(0, Some(1))]));
                        prop_assert!(matches!(refused[0], Err(WriteError::Poisoned(_))));
                    }
                    check(&store, &model)?;
                    drop(store);
                    store = reopen(&dir)?;
                    check(&store, &model)?;
                    pin_to_store(&store, &mut model);
                }
                Step::DiskFull(batch) => {
                    let used = dir.used_bytes();
                    dir.set_capacity_bytes(Some(used));
                    let results = commit(&mut store, &ops(&batch));
                    // Each write either landed (fit in the preallocated segment) or
                    // was refused cleanly as disk-full.
                    for (r, item) in results.iter().zip(&batch) {
                        match r {
                            Ok(_) => settle(&mut model, std::slice::from_ref(item)),
                            Err(WriteError::DiskFull) => {}
                            Err(e) => prop_assert!(false, "unexpected {:?}", e),
                        }
                    }
                    check(&store, &model)?;
                    dir.set_capacity_bytes(None);
                    let results = commit(&mut store, &ops(&batch));
                    prop_assert!(results.iter().all(|r| r.is_ok()), "writes resume: {:?}", results);
                    settle(&mut model, &batch);
                }
            }
            check(&store, &model)?;
        }
        drop(store);
        let store = reopen(&dir)?;
        check(&store, &model)?;
    }
}
