//! Salvage: a whole store built from what survives of a damaged one. For an
//! operator who has no replica to restore from and chooses to run on what is
//! left (`shoal salvage`); a node never does it by itself. It owns the copy and
//! the account of what was lost; the scan is [`super::inspect::inspect_dir`]
//! (read-only), so the damaged directory stays as it was.
//!
//! What survives: each key's latest intact record, in every segment up to the
//! first damage in it. What is lost: everything in a segment from its first
//! damage to the end of its data, which the report names by segment and offset.
//! A key whose latest write was there reads as its last earlier version, or as
//! never written; which keys those are cannot be known (their records are the
//! damage), which the report says too.

use super::inspect::{inspect_dir, InspectedKey, SegmentStatus};
use super::recovery::{ACTOR_FILE, INCARNATION_FILE};
use super::{OpenError, Store, StoreOptions};
use crate::disk::{replace_file, DiskDir, DiskError};
use crate::store::WriteOp;
use std::fmt;
use std::sync::Arc;

/// Keys per batch the salvage writes (each batch synced before the next).
const SALVAGE_BATCH_KEYS_MAX: usize = 256;
/// Bytes per batch, at most (and at most a quarter segment); a batch always
/// takes one key, whatever its size.
const SALVAGE_BATCH_BYTES_MAX: usize = 4 << 20;

/// `keys` cut into batches of at most `SALVAGE_BATCH_KEYS_MAX` keys and
/// `bytes_max` bytes.
fn batches(keys: &[InspectedKey], bytes_max: usize) -> Vec<&[InspectedKey]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        let size = key.key.len() + key.set.size_bytes();
        if i > start && (i - start == SALVAGE_BATCH_KEYS_MAX || bytes + size > bytes_max) {
            out.push(&keys[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < keys.len() {
        out.push(&keys[start..]);
    }
    out
}

/// What a salvage kept and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Keys written to the new store (delete-marker-only keys included).
    pub keys_kept: u64,
    /// Of those, keys with a live value.
    pub live_keys_kept: u64,
    /// One line per loss: a segment's data from an offset on, a missing or cut
    /// segment, a damaged catalog. Empty: the store was whole.
    pub losses: Vec<String>,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum SalvageError {
    /// The damaged directory cannot be read at all.
    Read(DiskError),
    /// The new store cannot be made or written.
    Open(OpenError),
    Write(String),
}

impl fmt::Display for SalvageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SalvageError::Read(e) => write!(f, "cannot read the damaged store: {e}"),
            SalvageError::Open(e) => write!(f, "cannot make the new store: {e}"),
            SalvageError::Write(e) => write!(f, "cannot write the new store: {e}"),
        }
    }
}

impl std::error::Error for SalvageError {}

/// Build a store in `into` (empty) from what survives in `from`. Carries the
/// incarnation and dot actor over, so the new store never mints a dot the old
/// one issued.
pub fn salvage(
    from: &dyn DiskDir,
    into: Arc<dyn DiskDir>,
    options: StoreOptions,
) -> Result<SalvageReport, SalvageError> {
    let inspection =
        inspect_dir(from, options.record_size_max_bytes).map_err(SalvageError::Read)?;
    for name in [INCARNATION_FILE, ACTOR_FILE, super::DATABASES_FILE] {
        copy_file(from, into.as_ref(), name).map_err(SalvageError::Read)?;
    }
    let options_segment_bytes = options.segment_size_bytes as usize;
    let (mut store, _) = Store::open(into, options).map_err(SalvageError::Open)?;
    let mut report = SalvageReport {
        losses: losses(&inspection),
        ..SalvageReport::default()
    };
    let batch_bytes_max = (options_segment_bytes / 4).min(SALVAGE_BATCH_BYTES_MAX);
    for chunk in batches(&inspection.keys, batch_bytes_max) {
        let ops: Vec<WriteOp> = chunk
            .iter()
            .map(|k| WriteOp::merge(k.namespace, k.key.clone().into(), k.set.clone()))
            .collect();
        let batch = store.prepare(&ops, 0);
        let results = match batch.sync() {
            Ok(()) => store.publish(batch),
            Err(e) => return Err(SalvageError::Write(e.to_string())),
        };
        if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
            return Err(SalvageError::Write(e.to_string()));
        }
        report.keys_kept += chunk.len() as u64;
        report.live_keys_kept += chunk.iter().filter(|k| !k.set.is_deleted()).count() as u64;
    }
    Ok(report)
}

/// Every loss the inspection found, as words.
fn losses(inspection: &super::inspect::Inspection) -> Vec<String> {
    let mut losses: Vec<String> = inspection
        .segments
        .iter()
        .filter_map(|s| match &s.status {
            SegmentStatus::Ok | SegmentStatus::TornTail { .. } => None,
            SegmentStatus::Corrupt { offset, reason } => Some(format!(
                "segment {}: everything from offset {offset} to its end ({} bytes of file) is not read ({reason}); {} records before it kept",
                s.segment, s.file_len_bytes, s.records
            )),
            SegmentStatus::BadHeader => Some(format!(
                "segment {}: its header is damaged, none of its {} bytes is read",
                s.segment, s.file_len_bytes
            )),
        })
        .collect();
    losses.extend(inspection.synced_data_faults.iter().cloned());
    if !losses.is_empty() {
        losses.push(
            "a key whose latest write was in the lost data reads as its last earlier version, or as never written; which keys those are cannot be told from what is left".to_string(),
        );
    }
    losses
}

/// Copy `name` from one directory to another, if it exists (durably).
fn copy_file(from: &dyn DiskDir, into: &dyn DiskDir, name: &str) -> Result<(), DiskError> {
    let file = match from.open(name, false) {
        Ok(file) => file,
        Err(DiskError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut bytes = vec![0u8; file.len()? as usize];
    file.read_at(0, &mut bytes)?;
    replace_file(into, name, &bytes)
}
