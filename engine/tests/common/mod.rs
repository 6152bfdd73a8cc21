//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Store, StoreOptions, WriteError, WriteOp, WriteOutcome};
use std::sync::Arc;

pub fn small_options() -> StoreOptions {
    StoreOptions {
        segment_size_bytes: 4096,
        record_size_max_bytes: 4096,
        ..StoreOptions::default()
    }
}

pub fn open(dir: &MemDir, options: StoreOptions) -> Store {
    Store::open(Arc::new(dir.clone()), options).expect("open").0
}

/// Prepare, sync and publish: the committer's cycle.
pub fn commit(store: &mut Store, ops: &[WriteOp]) -> Vec<Result<WriteOutcome, WriteError>> {
    let batch = store.prepare(ops, 1_000);
    match batch.sync() {
        Ok(()) => store.publish(batch),
        Err(e) => store.sync_failed(batch, e),
    }
}

pub fn put(store: &mut Store, key: &str, value: &str) {
    let op = WriteOp::put(
        0,
        Bytes::from(key.to_string()),
        Bytes::from(value.to_string()),
    );
    commit(store, &[op])[0].clone().expect("put");
}

pub fn value_of(store: &Store, key: &str) -> Option<String> {
    let set = store.get(0, key.as_bytes()).expect("read")?;
    set.winner()
        .map(|s| String::from_utf8(s.value.clone().expect("live").to_vec()).expect("utf8"))
}
