//! `store::backup`: a view taken while the store runs, copied, sealed and
//! salvaged, is exactly the store as it stood at the view.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::backup::{seal_copies, BackupView};
use shoal_engine::store::salvage::salvage;
use shoal_engine::{DiskDir, WriteOp};
use std::sync::Arc;

fn put(i: u32, value: &str) -> WriteOp {
    WriteOp::put(
        0,
        Bytes::from(format!("key{i}")),
        Bytes::from(value.to_string()),
    )
}

/// Copy what `view` names into `into`, as `shoal backup` does over the wire.
fn copy(view: &BackupView, into: &MemDir) -> Vec<(u32, u64)> {
    view.sync().unwrap();
    let mut copied = Vec::new();
    for segment in &view.segments {
        let mut bytes = vec![0u8; segment.bytes as usize];
        segment.read(0, &mut bytes).unwrap();
        let file = into.open(&segment.file_name(), true).unwrap();
        file.write_at(0, &bytes).unwrap();
        file.sync().unwrap();
        copied.push((segment.id, segment.bytes));
    }
    for (name, bytes) in &view.small_files {
        let file = into.open(name, true).unwrap();
        file.write_at(0, bytes).unwrap();
    }
    seal_copies(into, &copied).unwrap();
    copied
}

#[test]
fn a_backup_holds_what_was_written_before_its_view_and_nothing_after() {
    let source = MemDir::new();
    let mut store = open(&source, small_options());
    for i in 0..60 {
        commit(&mut store, &[put(i, &"a".repeat(200))])[0]
            .clone()
            .unwrap();
    }
    commit(&mut store, &[WriteOp::delete(0, Bytes::from("key3"))])[0]
        .clone()
        .unwrap();
    let view = store.backup_view().unwrap();
    assert!(
        view.segments.len() >= 3,
        "sealed segments and the active one"
    );
    let last_dot = commit(&mut store, &[put(0, "after")])[0]
        .clone()
        .unwrap()
        .dot
        .unwrap();
    commit(&mut store, &[put(100, "after")])[0].clone().unwrap();
    // A read past the copy's end is refused, not served from later data.
    let active = view.segments.last().unwrap();
    assert!(active.read(active.bytes - 1, &mut [0u8; 2]).is_err());

    let copies = MemDir::new();
    copy(&view, &copies);
    let restored = MemDir::new();
    let report = salvage(&copies, Arc::new(restored.clone()), small_options()).unwrap();
    assert!(report.losses.is_empty(), "{:?}", report.losses);
    assert_eq!(report.live_keys_kept, 59);
    let mut restored_store = open(&restored, small_options());
    assert_eq!(value_of(&restored_store, "key0"), Some("a".repeat(200)));
    assert_eq!(value_of(&restored_store, "key3"), None);
    assert_eq!(value_of(&restored_store, "key100"), None);
    restored_store.raise_incarnation(1_000).unwrap();
    let dot = commit(&mut restored_store, &[put(7, "new")])[0]
        .clone()
        .unwrap()
        .dot
        .unwrap();
    assert!(dot.counter > last_dot.counter, "{dot:?} after {last_dot:?}");
}
