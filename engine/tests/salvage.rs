//! `store::salvage`: a whole store from what survives of a damaged one.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::salvage::salvage;
use shoal_engine::{DiskDir, Store, WriteOp};
use std::sync::Arc;

/// Several sealed segments and an active one; returns the highest dot counter
/// the store issued.
fn written(dir: &MemDir) -> u64 {
    let mut store = open(dir, small_options());
    let mut counter_max = 0;
    for i in 0..60 {
        let op = WriteOp::put(
            0,
            Bytes::from(format!("key{i}")),
            Bytes::from("v".repeat(200)),
        );
        let outcome = commit(&mut store, &[op])[0].clone().expect("put");
        counter_max = counter_max.max(outcome.dot.expect("minted").counter);
    }
    assert!(store.segment_count() >= 3);
    counter_max
}

#[test]
fn a_cut_segment_is_salvaged_to_what_survives_and_the_loss_is_named() {
    let damaged = MemDir::new();
    let counter_max = written(&damaged);
    let first = damaged.open("seg-00000001.log", false).unwrap();
    first.set_len(16 + 100).unwrap();
    assert!(Store::open(Arc::new(damaged.clone()), small_options()).is_err());
    let into = MemDir::new();
    let report = salvage(&damaged, Arc::new(into.clone()), small_options()).unwrap();
    assert!(report.keys_kept > 0 && report.keys_kept < 60, "{report:?}");
    assert!(
        report.losses.iter().any(|l| l.starts_with("segment 1")),
        "{:?}",
        report.losses
    );
    let mut store = open(&into, small_options());
    let kept = (0..60)
        .filter(|i| value_of(&store, &format!("key{i}")).is_some())
        .count() as u64;
    assert_eq!(kept, report.live_keys_kept);
    // The new store's dots never reuse the old one's.
    let op = WriteOp::put(0, Bytes::from("new"), Bytes::from("x"));
    let dot = commit(&mut store, &[op])[0].clone().unwrap().dot.unwrap();
    assert!(
        dot.counter > counter_max,
        "{} <= {counter_max}",
        dot.counter
    );
}

#[test]
fn a_whole_store_is_salvaged_without_loss() {
    let whole = MemDir::new();
    written(&whole);
    let into = MemDir::new();
    let report = salvage(&whole, Arc::new(into.clone()), small_options()).unwrap();
    assert_eq!((report.keys_kept, report.live_keys_kept), (60, 60));
    assert!(report.losses.is_empty(), "{:?}", report.losses);
    let store = open(&into, small_options());
    for i in 0..60 {
        assert_eq!(
            value_of(&store, &format!("key{i}")).as_deref(),
            Some(&*"v".repeat(200))
        );
    }
}
