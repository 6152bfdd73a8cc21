//! An in-memory [`DiskDir`] with crash semantics, for the engine's tests and the
//! simulator. Each file keeps its durable image (what survives power loss) apart from
//! the writes made since the last `sync`. [`MemDir::crash`] decides, write by write,
//! whether each pending write is dropped, kept or torn (a prefix survives), exactly as
//! a disk without a battery-backed cache may do. Faults can be injected: failing
//! syncs, a full device, latent corruption of stored bytes.
//!
//! Directory operations (create, rename, remove) are durable at once: the simulator
//! models data loss, not lost directory entries. A removed file stays readable
//! through the handles opened before (as POSIX keeps an unlinked file until its
//! last descriptor closes) until the next crash.

use crate::disk::{Disk, DiskDir, DiskError};
use crate::rng::SplitMix64;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a crash did to the pending writes, for the simulator's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub writes_kept: u64,
    pub writes_dropped: u64,
    pub writes_torn: u64,
    /// Writes that survived (whole or in part) beyond where an earlier write of
    /// the same file was lost or torn: the file has a hole below kept data,
    /// which recovery sees as a torn tail just as it sees a torn write.
    pub writes_kept_past_a_hole: u64,
}

impl CrashReport {
    /// Whether the crash left any file with a tail recovery must cut.
    pub fn tore_a_tail(&self) -> bool {
        self.writes_torn > 0 || self.writes_kept_past_a_hole > 0
    }
}

#[derive(Default)]
struct FileImage {
    /// Bytes as the running process sees them.
    current: Vec<u8>,
    current_len: u64,
    /// Bytes that survive a crash.
    durable: Vec<u8>,
    durable_len: u64,
    /// Writes since the last successful sync, oldest first.
    pending: Vec<PendingWrite>,
}

enum PendingWrite {
    Data { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Default)]
struct DirState {
    files: BTreeMap<String, Arc<Mutex<FileImage>>>,
    /// Incremented by every crash; handles from an older generation are dead.
    generation: u64,
    capacity_bytes: Option<u64>,
    syncs_to_fail: u64,
    sync_count: u64,
}

/// The in-memory directory. Cloning shares the same files.
#[derive(Clone, Default)]
pub struct MemDir {
    state: Arc<Mutex<DirState>>,
}

struct MemFile {
    dir: MemDir,
    image: Arc<Mutex<FileImage>>,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[offset as usize..end].copy_from_slice(data);
}

impl MemDir {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes allowed across all files; `None` is unlimited. Growing past it
    /// fails with `NoSpace`.
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        lock(&self.state).capacity_bytes = capacity;
    }

    /// The next `count` syncs fail (their writes stay pending, as after a real EIO).
    pub fn fail_next_syncs(&self, count: u64) {
        lock(&self.state).syncs_to_fail = count;
    }

    /// Successful syncs so far, over all files.
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).sync_count
    }

    /// Flip the bits of one stored byte, durably: latent corruption.
    pub fn corrupt_byte(&self, name: &str, offset: u64) -> Result<(), DiskError> {
        let state = lock(&self.state);
        let image = state
            .files
            .get(name)
            .ok_or_else(|| DiskError::NotFound(name.to_string()))?;
        let mut image = lock(image);
        let at = offset as usize;
        if at < image.current.len() {
            image.current[at] ^= 0xFF;
        }
        if at < image.durable.len() {
            image.durable[at] ^= 0xFF;
        }
        // And in the pending writes over it, so that the durable image plus the
        // pending writes still make the current one (`sync` relies on it).
        for write in &mut image.pending {
            if let PendingWrite::Data {
                offset: start,
                bytes,
            } = write
            {
                if (*start..*start + bytes.len() as u64).contains(&offset) {
                    bytes[(offset - *start) as usize] ^= 0xFF;
                }
            }
        }
        Ok(())
    }

    /// The disk is lost and replaced by an empty one: every file is gone, and
    /// handles opened before stop working.
    pub fn wipe(&self) -> usize {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.syncs_to_fail = 0;
        let files = state.files.len();
        state.files.clear();
        files
    }

    /// Bytes in use across all files, as the running process sees them.
    pub fn used_bytes(&self) -> u64 {
        let state = lock(&self.state);
        state.files.values().map(|f| lock(f).current_len).sum()
    }

    /// Power loss: every file goes back to its durable image plus, for each pending
    /// write in order, the write kept whole, dropped, or torn (a random prefix kept).
    /// Handles opened before the crash stop working.
    pub fn crash(&self, rng: &mut SplitMix64) -> CrashReport {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.syncs_to_fail = 0;
        let mut report = CrashReport::default();
        for image in state.files.values() {
            let mut image = lock(image);
            let mut bytes = std::mem::take(&mut image.durable);
            let mut len = image.durable_len;
            // The lowest offset from which a pending write went missing.
            let mut hole_at = u64::MAX;
            for write in std::mem::take(&mut image.pending) {
                match write {
                    PendingWrite::SetLen(new_len) => {
                        if rng.chance_percent(50) {
                            len = new_len;
                            bytes.truncate(new_len as usize);
                        }
                    }
                    PendingWrite::Data {
                        offset,
                        bytes: data,
                    } => {
                        let torn_before = report.writes_torn;
                        let kept = match rng.below(3) {
                            0 => {
                                report.writes_dropped += 1;
                                0
                            }
                            1 => {
                                report.writes_kept += 1;
                                data.len()
                            }
                            _ => {
                                report.writes_torn += 1;
                                rng.below(data.len() as u64 + 1) as usize
                            }
                        };
                        if kept > 0 && offset + kept as u64 > hole_at {
                            report.writes_kept_past_a_hole += 1;
                        }
                        if kept < data.len() {
                            hole_at = hole_at.min(offset + kept as u64);
                        }
                        if kept > 0 || report.writes_torn > torn_before {
                            // (A write torn to nothing still set the length.)
                            write_into(&mut bytes, offset, &data[..kept]);
                            len = len.max(offset + kept as u64);
                        }
                    }
                }
            }
            bytes.truncate(len as usize);
            image.current = bytes.clone();
            image.current_len = len;
            image.durable = bytes;
            image.durable_len = len;
        }
        report
    }

    fn check_space(&self, growth_bytes: u64) -> Result<(), DiskError> {
        let capacity = lock(&self.state).capacity_bytes;
        match capacity {
            Some(cap) if self.used_bytes() + growth_bytes > cap => Err(DiskError::NoSpace),
            _ => Ok(()),
        }
    }
}

impl MemFile {
    fn image(&self) -> Result<MutexGuard<'_, FileImage>, DiskError> {
        if lock(&self.dir.state).generation != self.generation {
            return Err(DiskError::Io("handle from before a crash".into()));
        }
        Ok(lock(&self.image))
    }
}

impl Disk for MemFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let image = self.image()?;
        let end = offset + buf.len() as u64;
        if end > image.current_len {
            return Err(DiskError::ShortRead {
                offset,
                len: buf.len(),
                file_len: image.current_len,
            });
        }
        // Bytes past `current.len()` but within the length read as zeros (sparse).
        buf.fill(0);
        let stored = image.current.len() as u64;
        if offset < stored {
            let available = (stored.min(end) - offset) as usize;
            buf[..available]
                .copy_from_slice(&image.current[offset as usize..offset as usize + available]);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let current_len = self.image()?.current_len;
        let end = offset + data.len() as u64;
        if end > current_len {
            self.dir.check_space(end - current_len)?;
        }
        let mut image = self.image()?;
        write_into(&mut image.current, offset, data);
        image.current_len = image.current_len.max(end);
        image.pending.push(PendingWrite::Data {
            offset,
            bytes: data.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), DiskError> {
        let current_len = self.image()?.current_len;
        if len_bytes > current_len {
            self.dir.check_space(len_bytes - current_len)?;
        }
        let mut image = self.image()?;
        image.current.truncate(len_bytes as usize);
        image.current_len = len_bytes;
        image.pending.push(PendingWrite::SetLen(len_bytes));
        Ok(())
    }

    fn sync(&self) -> Result<(), DiskError> {
        {
            let mut state = lock(&self.dir.state);
            if state.generation != self.generation {
                return Err(DiskError::Io("handle from before a crash".into()));
            }
            if state.syncs_to_fail > 0 {
                state.syncs_to_fail -= 1;
                return Err(DiskError::Io("injected fsync failure".into()));
            }
            state.sync_count += 1;
        }
        // The pending writes, applied to the durable image in order, make it the
        // current one (without copying the whole file at every sync).
        let mut image = self.image()?;
        let image = &mut *image;
        for write in image.pending.drain(..) {
            match write {
                PendingWrite::Data { offset, bytes } => {
                    write_into(&mut image.durable, offset, &bytes);
                    image.durable_len = image.durable_len.max(offset + bytes.len() as u64);
                }
                PendingWrite::SetLen(len) => {
                    image.durable.truncate(len as usize);
                    image.durable_len = len;
                }
            }
        }
        debug_assert_eq!(image.durable_len, image.current_len);
        debug_assert!(image.durable == image.current, "durable image diverged");
        Ok(())
    }

    fn len(&self) -> Result<u64, DiskError> {
        Ok(self.image()?.current_len)
    }
}

impl DiskDir for MemDir {
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError> {
        let mut state = lock(&self.state);
        let generation = state.generation;
        let image = match state.files.get(name) {
            Some(image) => image.clone(),
            None if create => {
                let image = Arc::new(Mutex::new(FileImage::default()));
                state.files.insert(name.to_string(), image.clone());
                image
            }
            None => return Err(DiskError::NotFound(name.to_string())),
        };
        Ok(Arc::new(MemFile {
            dir: self.clone(),
            image,
            generation,
        }))
    }

    fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(lock(&self.state).files.keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        lock(&self.state)
            .files
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| DiskError::NotFound(name.to_string()))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut state = lock(&self.state);
        let image = state
            .files
            .remove(from)
            .ok_or_else(|| DiskError::NotFound(from.to_string()))?;
        state.files.insert(to.to_string(), image);
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_disk_conformance() {
        crate::disk::conformance::run_all(&MemDir::new());
    }

    #[test]
    fn a_prefixed_dir_passes_conformance_and_hides_the_rest() {
        let dir = MemDir::new();
        dir.open("seg-00000001.log", true).unwrap();
        let inner: std::sync::Arc<dyn DiskDir> = std::sync::Arc::new(dir.clone());
        let hints = crate::disk::PrefixedDir::new(inner, "hints-");
        crate::disk::conformance::run_all(&hints);
        assert!(!hints
            .list()
            .unwrap()
            .contains(&"seg-00000001.log".to_string()));
        hints.open("x", true).unwrap();
        assert!(dir.list().unwrap().contains(&"hints-x".to_string()));
    }

    #[test]
    fn synced_bytes_survive_every_crash() {
        for seed in 0..50 {
            let dir = MemDir::new();
            let file = dir.open("f", true).unwrap();
            file.write_at(0, b"durable").unwrap();
            file.sync().unwrap();
            file.write_at(7, b"-pending").unwrap();
            dir.crash(&mut SplitMix64::new(seed));
            let file = dir.open("f", false).unwrap();
            let mut buf = vec![0; 7];
            file.read_at(0, &mut buf).unwrap();
            assert_eq!(&buf, b"durable", "seed {seed}");
            let len = file.len().unwrap();
            assert!((7..=15).contains(&len), "seed {seed}: len {len}");
        }
    }

    #[test]
    fn crash_outcomes_cover_drop_keep_and_tear() {
        let mut totals = CrashReport::default();
        for seed in 0..60 {
            let dir = MemDir::new();
            let file = dir.open("f", true).unwrap();
            file.write_at(0, b"0123456789").unwrap();
            let report = dir.crash(&mut SplitMix64::new(seed));
            totals.writes_kept += report.writes_kept;
            totals.writes_dropped += report.writes_dropped;
            totals.writes_torn += report.writes_torn;
        }
        assert!(totals.writes_kept > 0 && totals.writes_dropped > 0 && totals.writes_torn > 0);
    }

    #[test]
    fn a_hole_below_kept_data_is_reported_as_a_tail_to_cut() {
        let (mut holes, mut whole_prefixes) = (0, 0);
        for seed in 0..80 {
            let dir = MemDir::new();
            let file = dir.open("f", true).unwrap();
            file.write_at(0, b"aaaa").unwrap();
            file.write_at(4, b"bbbb").unwrap();
            let report = dir.crash(&mut SplitMix64::new(seed));
            let file = dir.open("f", false).unwrap();
            let mut image = vec![0; file.len().unwrap() as usize];
            file.read_at(0, &mut image).unwrap();
            // What survived is a prefix of what was written, or has a hole.
            let prefix = b"aaaabbbb".starts_with(&image);
            assert_eq!(
                report.tore_a_tail(),
                !prefix || report.writes_torn > 0,
                "seed {seed}: {report:?} {image:?}"
            );
            if report.writes_kept_past_a_hole > 0 {
                holes += 1;
                assert!(!prefix, "seed {seed}: reported a hole that is not there");
            } else if prefix {
                whole_prefixes += 1;
            }
        }
        assert!(
            holes > 0 && whole_prefixes > 0,
            "{holes} holes, {whole_prefixes} prefixes"
        );
    }

    #[test]
    fn old_handles_die_at_crash() {
        let dir = MemDir::new();
        let file = dir.open("f", true).unwrap();
        dir.crash(&mut SplitMix64::new(1));
        assert!(file.write_at(0, b"x").is_err());
        assert!(file.sync().is_err());
    }

    #[test]
    fn a_removed_file_stays_readable_through_its_open_handle() {
        // As POSIX keeps an unlinked file until its last descriptor closes:
        // a backup reads segments compaction removes meanwhile.
        let dir = MemDir::new();
        let file = dir.open("f", true).unwrap();
        file.write_at(0, b"abc").unwrap();
        file.sync().unwrap();
        dir.remove("f").unwrap();
        assert!(dir.open("f", false).is_err());
        let mut buf = [0; 3];
        file.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }

    #[test]
    fn failed_sync_keeps_writes_pending() {
        let dir = MemDir::new();
        let file = dir.open("f", true).unwrap();
        file.write_at(0, b"abc").unwrap();
        dir.fail_next_syncs(1);
        assert!(file.sync().is_err());
        file.sync().unwrap();
        assert_eq!(dir.sync_count(), 1);
    }

    #[test]
    fn capacity_limits_growth_but_not_overwrites() {
        let dir = MemDir::new();
        dir.set_capacity_bytes(Some(100));
        let file = dir.open("f", true).unwrap();
        file.set_len(100).unwrap();
        assert_eq!(file.write_at(100, b"x"), Err(DiskError::NoSpace));
        file.write_at(10, b"inside").unwrap();
        dir.set_capacity_bytes(Some(200));
        file.write_at(100, b"x").unwrap();
    }

    #[test]
    fn corrupt_byte_is_visible_on_read() {
        let dir = MemDir::new();
        let file = dir.open("f", true).unwrap();
        file.write_at(0, b"abc").unwrap();
        file.sync().unwrap();
        dir.corrupt_byte("f", 1).unwrap();
        let mut buf = [0; 3];
        file.read_at(0, &mut buf).unwrap();
        assert_ne!(&buf, b"abc");
    }
}
