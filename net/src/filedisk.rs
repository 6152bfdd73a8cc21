//! The production [`DiskDir`]: one directory of real files. `sync` is `fdatasync`;
//! growing a file uses `fallocate`, so a full device shows up as `NoSpace` when a
//! segment is created, never halfway through a write into it; directory changes are
//! made durable by syncing the directory itself.

use shoal_engine::{Disk, DiskDir, DiskError};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct FileDir {
    path: PathBuf,
}

pub struct FileDisk {
    file: File,
}

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
        })
    }

    /// Open a directory that must already exist (inspection of a stopped node).
    pub fn open_existing(path: &Path) -> Result<FileDir, DiskError> {
        if !path.is_dir() {
            return Err(DiskError::NotFound(path.display().to_string()));
        }
        Ok(FileDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl DiskDir for FileDir {
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(self.path.join(name))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => DiskError::NotFound(name.to_string()),
                _ => map_err(e),
            })?;
        Ok(Arc::new(FileDisk { file }))
    }

    fn list(&self) -> Result<Vec<String>, DiskError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(map_err)? {
            let entry = entry.map_err(map_err)?;
            if entry.file_type().map_err(map_err)?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
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

impl Disk for FileDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
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
        self.file.write_all_at(data, offset).map_err(map_err)
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), DiskError> {
        let current = self.len()?;
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
        self.file.sync_data().map_err(map_err)
    }

    fn len(&self) -> Result<u64, DiskError> {
        self.file.metadata().map(|m| m.len()).map_err(map_err)
    }
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
    fn open_existing_requires_the_directory() {
        let missing = std::env::temp_dir().join("shoal-definitely-missing-dir");
        assert!(matches!(
            FileDir::open_existing(&missing),
            Err(DiskError::NotFound(_))
        ));
    }
}
