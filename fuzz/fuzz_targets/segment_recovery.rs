//! Arbitrary bytes as the only segment of a store: `Store::open` must return a
//! store or a typed error, never panic, and an opened store must read without
//! panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{DiskDir, Store, StoreOptions};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let dir = MemDir::new();
    let file = dir.open("seg-00000001.log", true).expect("create");
    file.write_at(0, data).expect("write");
    file.sync().expect("sync");
    let options = StoreOptions {
        segment_size_bytes: 4096,
        record_size_max_bytes: 1024,
        ..StoreOptions::default()
    };
    if let Ok((store, _)) = Store::open(Arc::new(dir), options) {
        for (_, _, set) in store.dump() {
            let _ = set.map(|s| s.winner().cloned());
        }
    }
});
