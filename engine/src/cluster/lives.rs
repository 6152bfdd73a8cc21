//! What a node remembers of its peers' lives, and the file that keeps it across
//! its own restarts (`LIVES`).
//!
//! A life is a data directory (its random id, made when the directory is first
//! used) with the highest incarnation seen under it. A starting node asks its
//! peers for the highest incarnation of it under any *other* directory: any at
//! all means its directory replaced one it ran on (a lost, wiped or swapped disk),
//! and it must mint its dots under a fresh actor. A peer that forgot what it heard
//! would answer "none" and let the old dots be minted again, so the record is
//! saved whenever it learns something (a new directory or a higher incarnation:
//! rare, once per peer restart) and read back at start.
//!
//! Must not touch: sockets, tasks, clocks. Files only through [`DiskDir`].

use crate::disk::{replace_file, DiskDir, DiskError};
use crate::NodeId;
use std::collections::BTreeMap;
use std::fmt;

/// The file [`save`] writes and [`load`] reads.
pub const LIVES_FILE: &str = "LIVES";

/// Lives remembered per peer (the ones with the highest incarnations).
const LIVES_PER_PEER_MAX: usize = 8;

/// Bytes of one saved life: node id, directory id, incarnation.
const LIFE_BYTES: usize = 4 + 8 + 8;

/// The largest `LIVES` file [`load`] reads (far above 8 lives of 4,096 peers).
const LIVES_FILE_BYTES_MAX: u64 = 1 << 20;

/// Peers' lives, by node and then directory id: kept by directory, not by order
/// of arrival, so a delayed message from an old life never passes for a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lives {
    peers: BTreeMap<NodeId, BTreeMap<u64, u64>>,
}

impl Lives {
    /// A message from `node` running on directory `dir_id`, in `incarnation`.
    /// True when this taught something new (worth saving).
    pub fn record(&mut self, node: NodeId, dir_id: u64, incarnation: u64) -> bool {
        let lives = self.peers.entry(node).or_default();
        let before = lives.get(&dir_id).copied();
        let seen = lives.entry(dir_id).or_insert(incarnation);
        *seen = (*seen).max(incarnation);
        let changed = before != Some(*seen);
        if lives.len() > LIVES_PER_PEER_MAX {
            let lowest = lives
                .iter()
                .min_by_key(|(dir, incarnation)| (**incarnation, **dir))
                .map(|(dir, _)| *dir)
                .expect("more than the cap");
            lives.remove(&lowest);
        }
        changed
    }

    /// The highest incarnation seen of `node` on a directory other than `dir_id`
    /// (0: none).
    pub fn other_lives_max(&self, node: NodeId, dir_id: u64) -> u64 {
        self.peers.get(&node).map_or(0, |lives| {
            lives
                .iter()
                .filter(|(dir, _)| **dir != dir_id)
                .map(|(_, incarnation)| *incarnation)
                .max()
                .unwrap_or(0)
        })
    }

    /// Every life, fixed-width little-endian records, then a CRC32C of them.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (node, lives) in &self.peers {
            for (dir_id, incarnation) in lives {
                bytes.extend_from_slice(&node.to_le_bytes());
                bytes.extend_from_slice(&dir_id.to_le_bytes());
                bytes.extend_from_slice(&incarnation.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Lives, LivesFileError> {
        let corrupt = |why: &str| LivesFileError::Corrupt(why.to_string());
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or_else(|| corrupt("shorter than its checksum"))?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        if body.len() % LIFE_BYTES != 0 {
            return Err(corrupt("not a whole number of records"));
        }
        let mut lives = Lives::default();
        for record in body.chunks_exact(LIFE_BYTES) {
            let node = u32::from_le_bytes(record[0..4].try_into().expect("4 bytes"));
            let dir_id = u64::from_le_bytes(record[4..12].try_into().expect("8 bytes"));
            let incarnation = u64::from_le_bytes(record[12..20].try_into().expect("8 bytes"));
            lives.record(node, dir_id, incarnation);
        }
        Ok(lives)
    }
}

/// Why [`LIVES_FILE`] could not be written or read.
#[derive(Debug)]
#[non_exhaustive]
pub enum LivesFileError {
    Disk(DiskError),
    /// Wrong length or checksum; the words say which.
    Corrupt(String),
}

impl fmt::Display for LivesFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LivesFileError::Disk(e) => write!(f, "{LIVES_FILE}: {e}"),
            LivesFileError::Corrupt(why) => write!(f, "{LIVES_FILE} is corrupt: {why}"),
        }
    }
}

impl std::error::Error for LivesFileError {}

impl From<DiskError> for LivesFileError {
    fn from(e: DiskError) -> Self {
        LivesFileError::Disk(e)
    }
}

/// Make `lives` durable (temporary file, sync, rename, sync the directory).
pub fn save(dir: &dyn DiskDir, lives: &Lives) -> Result<(), LivesFileError> {
    replace_file(dir, LIVES_FILE, &lives.encode())?;
    Ok(())
}

/// The saved lives; empty when there is no file yet.
pub fn load(dir: &dyn DiskDir) -> Result<Lives, LivesFileError> {
    let file = match dir.open(LIVES_FILE, false) {
        Ok(file) => file,
        Err(DiskError::NotFound(_)) => return Ok(Lives::default()),
        Err(e) => return Err(e.into()),
    };
    let len = file.len()?;
    if len > LIVES_FILE_BYTES_MAX {
        return Err(LivesFileError::Corrupt(format!("{len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_at(0, &mut bytes)?;
    Lives::decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_tell_an_earlier_life_from_this_one() {
        let mut lives = Lives::default();
        assert_eq!(lives.other_lives_max(3, 77), 0, "never heard of");
        // Node 3's first directory (id 11) ran as incarnation 1, then 2.
        let _ = lives.record(3, 11, 1);
        let _ = lives.record(3, 11, 2);
        // Its disk is lost; the new directory (id 22) is incarnation 1 again.
        assert_eq!(lives.other_lives_max(3, 22), 2, "asked before we heard it");
        let _ = lives.record(3, 22, 1);
        assert_eq!(lives.other_lives_max(3, 22), 2, "asked after we heard it");
        // A restart on the new directory: the old one is still known.
        let _ = lives.record(3, 22, 2);
        assert_eq!(lives.other_lives_max(3, 22), 2);
        // A cold start: first heard in this very life, nothing earlier.
        let mut fresh = Lives::default();
        let _ = fresh.record(4, 5, 1);
        assert_eq!(fresh.other_lives_max(4, 5), 0);
        // A normal restart on the same directory: still nothing elsewhere.
        let _ = fresh.record(4, 5, 2);
        assert_eq!(fresh.other_lives_max(4, 5), 0);
        // Many directories: the highest incarnations are kept.
        for dir in 100..120 {
            let _ = fresh.record(4, dir, dir);
        }
        assert_eq!(fresh.other_lives_max(4, 999), 119);
        assert_eq!(fresh.other_lives_max(4, 119), 118);
    }

    #[test]
    fn record_says_when_it_learned_something() {
        let mut lives = Lives::default();
        assert!(lives.record(3, 11, 1), "a new directory");
        assert!(!lives.record(3, 11, 1), "the same again");
        assert!(!lives.record(3, 11, 0), "an older incarnation");
        assert!(lives.record(3, 11, 2), "a higher incarnation");
        assert!(lives.record(3, 22, 1), "another directory");
    }

    #[test]
    fn lives_survive_encoding_and_damage_is_refused() {
        let mut lives = Lives::default();
        for (node, dir, incarnation) in [(1, 7, 3), (1, 9, 4), (2, 5, 1), (4_000_000, u64::MAX, 9)]
        {
            let _ = lives.record(node, dir, incarnation);
        }
        let bytes = lives.encode();
        assert_eq!(Lives::decode(&bytes).unwrap(), lives);
        assert_eq!(
            Lives::decode(&Lives::default().encode()).unwrap(),
            Lives::default()
        );
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(Lives::decode(&flipped).is_err(), "flip at {i} accepted");
        }
        assert!(Lives::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Lives::decode(&[]).is_err());
    }
}
