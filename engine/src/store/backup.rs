//! Online backup: a consistent copy of a running store, taken without pausing
//! writes. [`Store::backup_view`] names every segment with the bytes of it to
//! copy (a sealed segment's data; the active one's data written so far) and
//! keeps a handle on each file. The copy is the store's log cut at a frame
//! boundary after every batch published before the view: a prefix of the log,
//! which is a state the store passed through (batches prepared but not yet
//! synced at the view may be in it, as after a crash that kept them). The
//! caller syncs the view ([`BackupView::sync`]) before copying, so nothing it
//! copies can still be lost from the source.
//!
//! A segment that compaction removes while the copy runs is read through the
//! handle the view holds: the disk directory must keep a removed file's open
//! handles readable, as POSIX files are (an unlinked file lives until its last
//! descriptor closes). The in-memory disk does too, so the simulator takes
//! backups while compaction runs (`shoal-sim`'s `backup`).
//!
//! [`seal_copies`] makes a directory of copies a stopped store that `salvage`
//! reads whole: a catalog listing every copy sealed at its copied length.
//!
//! Must not touch: the network (the copy's transport is the caller's).

use super::catalog::{write_catalog, CatalogEntry};
use super::recovery::{ACTOR_FILE, INCARNATION_FILE};
use super::{segment_file_name, Store};
use crate::disk::{Disk, DiskDir, DiskError};
use std::sync::Arc;

/// Small files copied whole with the segments: the SWAPDB map, the
/// incarnation and the dot actor, so a store made from the copy never mints a dot the source issued
/// before the copy (the restore raises the incarnation past the source's
/// later ones too).
pub const BACKUP_SMALL_FILES: [&str; 3] = [INCARNATION_FILE, ACTOR_FILE, super::DATABASES_FILE];

/// One segment of a backup: its id and the bytes of it to copy.
#[derive(Clone)]
pub struct BackupSegment {
    pub id: u32,
    pub bytes: u64,
    disk: Arc<dyn Disk>,
}

impl BackupSegment {
    /// The segment's file name, in the source and in the copy.
    pub fn file_name(&self) -> String {
        segment_file_name(self.id)
    }

    /// Read `buf.len()` bytes at `offset`, all within the bytes to copy.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.bytes) {
            return Err(DiskError::Io(format!(
                "backup read of {} bytes at {offset} passes the copy's end {} of segment {}",
                buf.len(),
                self.bytes,
                self.id
            )));
        }
        self.disk.read_at(offset, buf)
    }
}

/// What a backup copies: every segment's data up to one frame boundary, and
/// the small files.
#[derive(Clone)]
pub struct BackupView {
    /// In id order; the last one was the active segment.
    pub segments: Vec<BackupSegment>,
    /// Name and contents of each of [`BACKUP_SMALL_FILES`] that exists.
    pub small_files: Vec<(String, Vec<u8>)>,
}

impl BackupView {
    /// Make everything the view copies durable in the source (the active
    /// segment may hold batches written and not yet synced).
    pub fn sync(&self) -> Result<(), DiskError> {
        match self.segments.last() {
            Some(active) => active.disk.sync(),
            None => Ok(()),
        }
    }

    /// Bytes of segment data to copy.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

impl Store {
    /// What a backup of the store as it stands copies (see the module doc).
    /// Cheap: no data is read; call under the store's lock, copy outside it.
    pub fn backup_view(&self) -> Result<BackupView, DiskError> {
        let segments = self
            .segments
            .iter()
            // Planted bug: copy only the sealed segments, as if the active
            // one were not part of the store's state yet.
            .filter(|(id, _)| !cfg!(feature = "bug-backup-skips-active") || **id != self.active_id)
            .map(|(id, segment)| BackupSegment {
                id: *id,
                bytes: segment.written_bytes,
                disk: segment.disk.clone(),
            })
            .collect();
        let mut small_files = Vec::new();
        for name in BACKUP_SMALL_FILES {
            let file = match self.dir.open(name, false) {
                Ok(file) => file,
                Err(DiskError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut bytes = vec![0u8; file.len()? as usize];
            file.read_at(0, &mut bytes)?;
            small_files.push((name.to_string(), bytes));
        }
        Ok(BackupView {
            segments,
            small_files,
        })
    }
}

/// Make `dir`, holding segment copies of the given ids and lengths, a
/// stopped store: a catalog listing each sealed at its copied length.
pub fn seal_copies(dir: &dyn DiskDir, segments: &[(u32, u64)]) -> Result<(), DiskError> {
    let entries: Vec<CatalogEntry> = segments
        .iter()
        .map(|&(id, bytes)| CatalogEntry {
            id,
            allocated_bytes: bytes,
            sealed_bytes: Some(bytes),
        })
        .collect();
    write_catalog(dir, &entries)
}
