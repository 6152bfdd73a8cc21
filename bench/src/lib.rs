//! `shoal-bench` owns Shoal's benchmarks and load generators: the criterion benches
//! of the engine (`benches/engine.rs`) and the helpers they share (temporary data
//! directories, key and value generation, bulk loading). The scripts that compare
//! a running `shoal` with Redis live in `ci/bench-redis` and `ci/bench-restart`;
//! `bench-plot` (`src/bin`) draws what `ci/bench-redis` and `ci/bench-cluster`
//! measured as an SVG chart.
//!
//! It must not be depended on by the product: nothing in `engine`, `net`, `sim` or
//! `checker` may import it. Benchmarks print numbers and ratios; they never assert
//! on timing.

use shoal_engine::{Store, StoreOptions, WriteOp};
use shoal_net::filedisk::FileDir;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Key length the targets are stated for (DESIGN.md section 5).
pub const KEY_SIZE_BYTES: usize = 16;
/// Value length the targets are stated for.
pub const VALUE_SIZE_BYTES: usize = 100;
/// Namespace 0 is what a plain Redis client writes to.
pub const NAMESPACE: u8 = 0;

/// A directory under the system temp dir, `shoal-bench-<pid>-<name>`, emptied when
/// created and removed when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("shoal-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove every file in the directory whose name ends with `suffix`; returns
    /// how many were removed.
    pub fn remove_files_ending_with(&self, suffix: &str) -> usize {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.path).expect("list temp dir") {
            let path = entry.expect("dir entry").path();
            let matches = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix));
            if matches {
                std::fs::remove_file(&path).expect("remove file");
                removed += 1;
            }
        }
        removed
    }

    /// Make this directory an exact copy of the files in `source`.
    pub fn copy_files_from(&self, source: &TempDir) {
        let _ = std::fs::remove_dir_all(&self.path);
        std::fs::create_dir_all(&self.path).expect("recreate temp dir");
        for entry in std::fs::read_dir(&source.path).expect("list source dir") {
            let entry = entry.expect("dir entry");
            if entry.file_type().expect("file type").is_file() {
                std::fs::copy(entry.path(), self.path.join(entry.file_name())).expect("copy file");
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The 16-byte key of index `i`: `key:` and 12 decimal digits, the same keys the
/// `ci/bench-*` scripts load (and close to redis-benchmark's `key:__rand_int__`).
pub fn key(i: u64) -> Vec<u8> {
    let k = format!("key:{i:012}").into_bytes();
    debug_assert_eq!(k.len(), KEY_SIZE_BYTES);
    k
}

/// The 100-byte value of index `i`: 88 `v`s and 12 decimal digits.
pub fn value(i: u64) -> Vec<u8> {
    let v = format!("{}{i:012}", "v".repeat(VALUE_SIZE_BYTES - 12)).into_bytes();
    debug_assert_eq!(v.len(), VALUE_SIZE_BYTES);
    v
}

/// A plain SET of key `i` to value `i`.
pub fn put(i: u64) -> WriteOp {
    WriteOp::put(NAMESPACE, key(i).into(), value(i).into())
}

/// Wall-clock milliseconds for `Store::prepare` (the benches stand in for the
/// runtime, which is where the product reads the clock).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Open (or create) a store on real files in `dir`.
pub fn open_store(dir: &TempDir, options: StoreOptions) -> Store {
    let file_dir = FileDir::create(dir.path()).expect("create data dir");
    let (store, _report) = Store::open(Arc::new(file_dir), options).expect("open store");
    store
}

/// One durable batch, as the committer does it: prepare, sync, publish. Panics on
/// any refused write (a bench that silently measures errors measures nothing).
pub fn commit(store: &mut Store, ops: &[WriteOp]) {
    let batch = store.prepare(ops, wall_ms());
    batch.sync().expect("sync batch");
    for result in store.publish(batch) {
        result.expect("write applied");
    }
}

/// Write keys `0..count` in batches of `batch_ops` with one sync per batch.
pub fn load_keys(store: &mut Store, count: u64, batch_ops: u64) {
    let mut start = 0;
    while start < count {
        let end = (start + batch_ops).min(count);
        let ops: Vec<WriteOp> = (start..end).map(put).collect();
        commit(store, &ops);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_stated_sizes() {
        for i in [0, 1, 999_999, 999_999_999_999] {
            assert_eq!(key(i).len(), KEY_SIZE_BYTES);
            assert_eq!(value(i).len(), VALUE_SIZE_BYTES);
        }
        assert_eq!(&key(42)[..], b"key:000000000042");
    }

    #[test]
    fn loaded_keys_survive_reopen() {
        let dir = TempDir::new("lib-test-reopen");
        let mut store = open_store(&dir, StoreOptions::default());
        load_keys(&mut store, 2_500, 1_000);
        drop(store);
        let store = open_store(&dir, StoreOptions::default());
        assert_eq!(store.live_key_count(NAMESPACE), 2_500);
        let set = store.get(NAMESPACE, &key(1234)).unwrap().unwrap();
        assert_eq!(
            set.winner().unwrap().value.as_deref(),
            Some(&value(1234)[..])
        );
    }
}
