//! The narrow storage seam: a `Disk` is one file-like byte array, a `DiskDir` is the
//! directory of them that a store owns. Production implements them over files
//! (`shoal-net`), tests and the simulator over memory with crash semantics
//! ([`crate::memdisk`]). Both run the same conformance tests.

use std::fmt;
use std::sync::Arc;

/// Why a disk operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The device is full (ENOSPC). Retrying later may succeed.
    NoSpace,
    /// The named file does not exist.
    NotFound(String),
    /// A read asked for bytes past the end of the file.
    ShortRead {
        offset: u64,
        len: usize,
        file_len: u64,
    },
    /// Any other I/O failure, with the OS's words.
    Io(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::NoSpace => write!(f, "no space left on device"),
            DiskError::NotFound(name) => write!(f, "file {name} not found"),
            DiskError::ShortRead {
                offset,
                len,
                file_len,
            } => write!(
                f,
                "read of {len} bytes at offset {offset} past end of file ({file_len} bytes)"
            ),
            DiskError::Io(msg) => write!(f, "i/o error: {msg}"),
        }
    }
}

impl std::error::Error for DiskError {}

/// One file. Writes become durable only after a successful `sync`; a failed `sync`
/// means some earlier writes may be lost and the caller must not pretend otherwise.
pub trait Disk: Send + Sync {
    /// Fill `buf` from `offset`; fails with `ShortRead` past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// [`Disk::read_at`] for bytes not expected to be read again soon (a
    /// scrub's or a compaction's pass over records): an implementation may
    /// keep them out of what it holds close (the production disk reads them
    /// with `pread`, not through its mapping, whose pages would otherwise
    /// stay in the process's resident memory).
    fn read_cold_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.read_at(offset, buf)
    }
    /// Write all of `data` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Set the length, allocating space when growing (ENOSPC shows up here).
    fn set_len(&self, len_bytes: u64) -> Result<(), DiskError>;
    /// Make every earlier write durable (fdatasync).
    fn sync(&self) -> Result<(), DiskError>;
    /// Current length in bytes.
    fn len(&self) -> Result<u64, DiskError>;
    fn is_empty(&self) -> Result<bool, DiskError> {
        Ok(self.len()? == 0)
    }
}

/// A flat directory of files owned by one store. Names are plain file names.
/// Creating, renaming and removing files is durable once `sync_dir` returns.
pub trait DiskDir: Send + Sync {
    /// Open an existing file, or create an empty one when `create` is set.
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError>;
    /// Names of all files, sorted.
    fn list(&self) -> Result<Vec<String>, DiskError>;
    fn remove(&self, name: &str) -> Result<(), DiskError>;
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    fn sync_dir(&self) -> Result<(), DiskError>;
}

/// Replace file `name` with `bytes` atomically and durably: write a `.tmp`, sync
/// it, rename it over `name`, sync the directory.
pub fn replace_file(dir: &dyn DiskDir, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
    let tmp = format!("{name}.tmp");
    let file = dir.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_at(0, bytes)?;
    file.sync()?;
    dir.rename(&tmp, name)?;
    dir.sync_dir()
}

/// Why a small checksummed file could not be read.
#[derive(Debug)]
pub enum CheckedFileError {
    Disk(DiskError),
    /// Wrong length or checksum; the words say which.
    Damaged(String),
}

impl From<DiskError> for CheckedFileError {
    fn from(e: DiskError) -> Self {
        CheckedFileError::Disk(e)
    }
}

/// Replace file `name` with `payload` followed by its CRC32C (see
/// [`replace_file`]).
pub fn write_checked_file(dir: &dyn DiskDir, name: &str, payload: &[u8]) -> Result<(), DiskError> {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    replace_file(dir, name, &bytes)
}

/// The `payload_len`-byte payload of a file written by [`write_checked_file`]
/// (`None`: no such file).
pub fn read_checked_file(
    dir: &dyn DiskDir,
    name: &str,
    payload_len: usize,
) -> Result<Option<Vec<u8>>, CheckedFileError> {
    let file = match dir.open(name, false) {
        Ok(file) => file,
        Err(DiskError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.len()?;
    if len != payload_len as u64 + 4 {
        return Err(CheckedFileError::Damaged(format!(
            "{name} is {len} bytes, not {}",
            payload_len + 4
        )));
    }
    let mut bytes = vec![0u8; payload_len + 4];
    file.read_at(0, &mut bytes)?;
    let crc = u32::from_le_bytes(bytes[payload_len..].try_into().expect("4 bytes"));
    bytes.truncate(payload_len);
    if crc32c::crc32c(&bytes) != crc {
        return Err(CheckedFileError::Damaged(format!(
            "{name} fails its checksum"
        )));
    }
    Ok(Some(bytes))
}

/// The conformance suite every `DiskDir` implementation must pass.
/// The files of `inner` whose names start with `prefix`, seen without it: a second
/// store (a node's hints) sharing one directory with the main one. The main
/// store ignores these files (their names do not parse as its own).
pub struct PrefixedDir {
    inner: Arc<dyn DiskDir>,
    prefix: String,
}

impl PrefixedDir {
    pub fn new(inner: Arc<dyn DiskDir>, prefix: impl Into<String>) -> PrefixedDir {
        PrefixedDir {
            inner,
            prefix: prefix.into(),
        }
    }

    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl DiskDir for PrefixedDir {
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError> {
        self.inner.open(&self.full(name), create)
    }

    fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self
            .inner
            .list()?
            .into_iter()
            .filter_map(|n| n.strip_prefix(&self.prefix).map(str::to_string))
            .collect())
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.inner.remove(&self.full(name))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(&self.full(from), &self.full(to))
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        self.inner.sync_dir()
    }
}

pub mod conformance {
    use super::*;

    /// Runs every check against a fresh, empty directory.
    pub fn run_all(dir: &dyn DiskDir) {
        write_then_read(dir);
        read_past_end_fails(dir);
        set_len_grows_with_zeros(dir);
        list_rename_remove(dir);
    }

    fn write_then_read(dir: &dyn DiskDir) {
        let file = dir.open("a", true).expect("create");
        file.write_at(0, b"hello").expect("write");
        file.write_at(3, b"LO world").expect("overwrite");
        file.sync().expect("sync");
        let mut buf = vec![0; 11];
        file.read_at(0, &mut buf).expect("read");
        assert_eq!(&buf, b"helLO world");
        assert_eq!(file.len().expect("len"), 11);
        // A cold read sees the same bytes, and a later write, as a read does.
        let mut cold = vec![0; 11];
        file.read_cold_at(0, &mut cold).expect("cold read");
        assert_eq!(cold, buf);
        file.write_at(6, b"W").expect("write after reads");
        file.read_cold_at(6, &mut cold[..1]).expect("cold read");
        file.read_at(6, &mut buf[..1]).expect("read");
        assert_eq!((&cold[..1], &buf[..1]), (&b"W"[..], &b"W"[..]));
    }

    fn read_past_end_fails(dir: &dyn DiskDir) {
        let file = dir.open("b", true).expect("create");
        file.write_at(0, b"abc").expect("write");
        let mut buf = vec![0; 4];
        assert!(matches!(
            file.read_at(0, &mut buf),
            Err(DiskError::ShortRead { .. })
        ));
        assert!(matches!(
            file.read_cold_at(0, &mut buf),
            Err(DiskError::ShortRead { .. })
        ));
    }

    fn set_len_grows_with_zeros(dir: &dyn DiskDir) {
        let file = dir.open("c", true).expect("create");
        file.write_at(0, b"xy").expect("write");
        file.set_len(4096).expect("grow");
        assert_eq!(file.len().expect("len"), 4096);
        let mut buf = vec![1; 10];
        file.read_at(4000, &mut buf).expect("read zeros");
        assert!(buf.iter().all(|b| *b == 0));
        file.set_len(1).expect("shrink");
        assert_eq!(file.len().expect("len"), 1);
    }

    fn list_rename_remove(dir: &dyn DiskDir) {
        dir.open("z1", true).expect("create");
        dir.rename("z1", "z2").expect("rename");
        let names = dir.list().expect("list");
        assert!(names.contains(&"z2".to_string()) && !names.contains(&"z1".to_string()));
        assert!(matches!(dir.open("z1", false), Err(DiskError::NotFound(_))));
        dir.remove("z2").expect("remove");
        assert!(!dir.list().expect("list").contains(&"z2".to_string()));
        dir.sync_dir().expect("sync dir");
    }
}
