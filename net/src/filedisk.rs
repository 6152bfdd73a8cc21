//! The production [`DiskDir`]: one directory of real files. `sync` is `fdatasync`;
//! growing a file uses `fallocate`, so a full device shows up as `NoSpace` when a
//! segment is created, never halfway through a write into it; directory changes are
//! made durable by syncing the directory itself.
//!
//! For tests of real processes, [`FileDir::with_power_loss_journal`] keeps, for each
//! segment file, an undo journal of every write since its last sync (old bytes
//! first, then the write). After a kill -9, [`undo_unsynced_writes`] rolls them back:
//! what power loss would do to writes that never reached a sync. A process killed
//! between an fdatasync and the journal's truncation loses only writes it had not
//! yet acknowledged, so the emulation is never harsher than a real power cut.

use shoal_engine::{Disk, DiskDir, DiskError};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct FileDir {
    path: PathBuf,
    read_only: bool,
    power_loss_journal: bool,
}

pub struct FileDisk {
    file: File,
    /// Test-only undo journal of unsynced writes.
    undo: Option<std::sync::Mutex<File>>,
    /// Read-only shared mapping of the file, so reads need no system call. Made on
    /// the first read, dropped before any change of length.
    map: std::sync::RwLock<Option<Mapping>>,
    read_only: bool,
}

/// A `PROT_READ`, `MAP_SHARED` mapping. Shared mappings see this process's own
/// `pwrite`s at once (one page cache). The file never shrinks under it: only this
/// process writes the directory (LOCK), and `set_len` unmaps first.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this struct; reads of it from
// several threads are plain loads, and it is unmapped only by Drop or under the
// write half of the RwLock.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

impl Mapping {
    /// Copy `buf.len()` bytes from `offset`; false when the range is not mapped.
    /// Callers hold the read half of the lock, so the mapping stays live.
    fn copy_to(&self, offset: usize, buf: &mut [u8]) -> bool {
        if offset + buf.len() > self.len {
            return false;
        }
        // SAFETY: [offset, offset + len) lies inside the live mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.ptr as *const u8).add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        true
    }

    fn new(file: &File, len: usize) -> Option<Mapping> {
        if len == 0 {
            return None;
        }
        // SAFETY: mapping a file descriptor we own, read-only, for its current length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapping { ptr, len })
    }
}

const UNDO_SUFFIX: &str = ".undo";
const MAPPED_READ_MAX_BYTES: usize = 1 << 20;
const UNDO_WRITE: u8 = 1;
const UNDO_SET_LEN: u8 = 2;

fn map_err(e: std::io::Error) -> DiskError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        DiskError::NoSpace
    } else {
        DiskError::Io(e.to_string())
    }
}

impl FileDir {
    /// Open the directory, creating it (and its parents) if needed.
    pub fn create(path: &Path) -> Result<FileDir, DiskError> {
        std::fs::create_dir_all(path).map_err(map_err)?;
        Ok(FileDir {
            path: path.to_path_buf(),
            read_only: false,
            power_loss_journal: false,
        })
    }

    /// Open a directory that must already exist, read-only (inspection of a stopped
    /// node): files are opened without write access, so nothing can change them.
    pub fn open_existing(path: &Path) -> Result<FileDir, DiskError> {
        if !path.is_dir() {
            return Err(DiskError::NotFound(path.display().to_string()));
        }
        Ok(FileDir {
            path: path.to_path_buf(),
            read_only: true,
            power_loss_journal: false,
        })
    }

    /// Journal unsynced writes to segment files so a test can emulate power loss
    /// after killing the process (see the module doc). Never for production data.
    pub fn with_power_loss_journal(mut self) -> FileDir {
        self.power_loss_journal = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DiskDir for FileDir {
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .create(create && !self.read_only)
            .truncate(false)
            .open(self.path.join(name))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => DiskError::NotFound(name.to_string()),
                _ => map_err(e),
            })?;
        let undo = if self.power_loss_journal && name.ends_with(".log") {
            let journal = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path.join(format!("{name}{UNDO_SUFFIX}")))
                .map_err(map_err)?;
            Some(std::sync::Mutex::new(journal))
        } else {
            None
        };
        Ok(Arc::new(FileDisk {
            file,
            undo,
            map: std::sync::RwLock::new(None),
            read_only: self.read_only,
        }))
    }

    fn list(&self) -> Result<Vec<String>, DiskError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(map_err)? {
            let entry = entry.map_err(map_err)?;
            if entry.file_type().map_err(map_err)?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    if !name.ends_with(UNDO_SUFFIX) {
                        names.push(name.to_string());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        std::fs::remove_file(self.path.join(name)).map_err(|e| match e.kind() {
            ErrorKind::NotFound => DiskError::NotFound(name.to_string()),
            _ => map_err(e),
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        std::fs::rename(self.path.join(from), self.path.join(to)).map_err(map_err)
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(map_err)
    }
}

impl FileDisk {
    /// Copy from the mapping when it covers the range; false when it does not.
    fn read_mapped(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset as usize + buf.len();
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if map
                .as_ref()
                .is_some_and(|m| m.copy_to(offset as usize, buf))
            {
                return true;
            }
        }
        // Map (or remap) the file at its current length, then retry once.
        let Ok(len) = self.len() else { return false };
        if end as u64 > len || self.read_only {
            return false;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        *map = Mapping::new(&self.file, len as usize);
        drop(map);
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.as_ref()
            .is_some_and(|m| m.copy_to(offset as usize, buf))
    }

    fn unmap(&self) {
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Disk for FileDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        // Small reads (a record) come from the mapping; large sequential ones (a
        // whole segment at recovery) are cheaper as one pread than as page faults.
        if buf.len() <= MAPPED_READ_MAX_BYTES && self.read_mapped(offset, buf) {
            return Ok(());
        }
        self.read_cold_at(offset, buf)
    }

    fn read_cold_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                DiskError::ShortRead {
                    offset,
                    len: buf.len(),
                    file_len: self.file.metadata().map(|m| m.len()).unwrap_or(0),
                }
            } else {
                map_err(e)
            }
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if let Some(undo) = &self.undo {
            let len = self.len()?;
            let kept = data.len().min(len.saturating_sub(offset) as usize);
            let mut old = vec![0u8; kept];
            self.file.read_exact_at(&mut old, offset).map_err(map_err)?;
            let mut record = vec![UNDO_WRITE];
            record.extend_from_slice(&offset.to_le_bytes());
            record.extend_from_slice(&(kept as u32).to_le_bytes());
            record.extend_from_slice(&old);
            self.journal(undo, &record)?;
            if offset + data.len() as u64 > len {
                self.journal_len(undo, len)?;
            }
        }
        self.file.write_all_at(data, offset).map_err(map_err)
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), DiskError> {
        self.unmap();
        let current = self.len()?;
        if let Some(undo) = &self.undo {
            self.journal_len(undo, current)?;
        }
        if len_bytes > current {
            // Reserve the blocks now, so writes into the file cannot hit ENOSPC and
            // fdatasync has no allocation metadata to flush later.
            // SAFETY: fallocate on a file descriptor we own, with valid ranges.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    0,
                    current as libc::off_t,
                    (len_bytes - current) as libc::off_t,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(map_err(err));
            }
        }
        self.file.set_len(len_bytes).map_err(map_err)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(map_err)?;
        if let Some(undo) = &self.undo {
            let journal = undo.lock().unwrap_or_else(|p| p.into_inner());
            journal.set_len(0).map_err(map_err)?;
        }
        Ok(())
    }

    fn len(&self) -> Result<u64, DiskError> {
        self.file.metadata().map(|m| m.len()).map_err(map_err)
    }
}

impl FileDisk {
    fn journal(&self, undo: &std::sync::Mutex<File>, record: &[u8]) -> Result<(), DiskError> {
        use std::io::Write;
        let mut journal = undo.lock().unwrap_or_else(|p| p.into_inner());
        journal.write_all(record).map_err(map_err)
    }

    fn journal_len(&self, undo: &std::sync::Mutex<File>, old_len: u64) -> Result<(), DiskError> {
        let mut record = vec![UNDO_SET_LEN];
        record.extend_from_slice(&old_len.to_le_bytes());
        self.journal(undo, &record)
    }
}

/// Emulate power loss on a stopped node's directory written with
/// [`FileDir::with_power_loss_journal`]: undo every write made since the last
/// successful sync of its file, newest first. Returns how many writes were undone.
pub fn undo_unsynced_writes(dir: &Path) -> std::io::Result<u64> {
    let mut undone = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(target) = name.strip_suffix(UNDO_SUFFIX) else {
            continue;
        };
        let journal = std::fs::read(&path)?;
        let mut records: Vec<(u8, u64, Vec<u8>)> = Vec::new();
        let mut at = 0;
        while at < journal.len() {
            let kind = journal[at];
            let Some(offset) = journal.get(at + 1..at + 9) else {
                break;
            };
            let offset = u64::from_le_bytes(offset.try_into().expect("8 bytes"));
            at += 9;
            if kind == UNDO_WRITE {
                let Some(len) = journal.get(at..at + 4) else {
                    break;
                };
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let Some(old) = journal.get(at + 4..at + 4 + len) else {
                    break;
                };
                records.push((kind, offset, old.to_vec()));
                at += 4 + len;
            } else {
                records.push((kind, offset, Vec::new()));
            }
        }
        let file = OpenOptions::new().write(true).open(dir.join(target))?;
        for (kind, offset, old) in records.into_iter().rev() {
            if kind == UNDO_WRITE {
                file.write_all_at(&old, offset)?;
            } else {
                file.set_len(offset)?;
            }
            undone += 1;
        }
        file.sync_all()?;
        std::fs::remove_file(&path)?;
    }
    Ok(undone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_disk_conformance() {
        let path = std::env::temp_dir().join(format!("shoal-filedisk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = FileDir::create(&path).unwrap();
        shoal_engine::disk::conformance::run_all(&dir);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn power_loss_journal_undoes_exactly_the_unsynced_writes() {
        let path = std::env::temp_dir().join(format!("shoal-undo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let dir = FileDir::create(&path).unwrap().with_power_loss_journal();
        let file = dir.open("seg-00000001.log", true).unwrap();
        file.set_len(64).unwrap();
        file.write_at(0, b"synced").unwrap();
        file.sync().unwrap();
        file.write_at(3, b"PENDING").unwrap();
        file.write_at(100, b"grown").unwrap();
        assert!(!dir.list().unwrap().iter().any(|n| n.ends_with(".undo")));
        drop(file);
        assert_eq!(undo_unsynced_writes(&path).unwrap(), 3);
        let file = FileDir::create(&path)
            .unwrap()
            .open("seg-00000001.log", false)
            .unwrap();
        assert_eq!(file.len().unwrap(), 64);
        let mut buf = [0u8; 10];
        file.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"synced\0\0\0\0");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn open_existing_requires_the_directory() {
        let missing = std::env::temp_dir().join("shoal-definitely-missing-dir");
        assert!(matches!(
            FileDir::open_existing(&missing),
            Err(DiskError::NotFound(_))
        ));
    }
}
