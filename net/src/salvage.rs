//! `shoal salvage`: a stopped single node's damaged data directory, copied
//! into a new directory as a whole store of what survives, with an account of
//! what was lost. The damaged directory is only read. The new store is built
//! in `<into>.partial` and renamed to `<into>` once every key is synced, so a
//! crash mid-way never leaves a directory that opens as if it were complete.
//! A cluster node needs none of this: it restores from its replicas.

use crate::filedisk::FileDir;
use shoal_engine::store::salvage::{salvage, SalvageReport};
use shoal_engine::{DiskDir, StoreOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Salvage `data_dir` into `into`, which must not exist yet.
pub fn run(data_dir: &Path, into: &Path, options: StoreOptions) -> Result<SalvageReport, String> {
    if into.exists() {
        return Err(format!(
            "{} exists; salvage writes a new directory",
            into.display()
        ));
    }
    let from = FileDir::open_existing(data_dir)
        .map_err(|e| format!("cannot open data directory {}: {e}", data_dir.display()))?;
    let partial = partial_path(into);
    if partial.exists() {
        // Left by a salvage that did not finish: it holds nothing to keep.
        std::fs::remove_dir_all(&partial)
            .map_err(|e| format!("cannot remove {}: {e}", partial.display()))?;
    }
    let new_dir = FileDir::create(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let new_dir: Arc<dyn DiskDir> = Arc::new(new_dir);
    let report = salvage(&from, new_dir.clone(), options).map_err(|e| e.to_string())?;
    new_dir
        .sync_dir()
        .map_err(|e| format!("cannot sync {}: {e}", partial.display()))?;
    drop(new_dir);
    std::fs::rename(&partial, into).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            into.display()
        )
    })?;
    sync_parent(into)?;
    Ok(report)
}

pub(crate) fn partial_path(into: &Path) -> PathBuf {
    let mut name = into.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    into.with_file_name(name)
}

pub(crate) fn sync_parent(path: &Path) -> Result<(), String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// Sync directory `path` (its entries: files created, renamed, removed).
pub(crate) fn sync_dir(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}
