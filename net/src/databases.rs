//! SWAPDB's indirection: which stored database (the low four bits of a
//! namespace, `shoal_engine::fields`) each database number a client selects
//! stands for. Identity until a SWAPDB; SWAPDB exchanges two entries, so it
//! is O(1) and atomic, as in Redis, whatever the databases hold. The map is
//! kept durably in the store's directory (`DATABASES`: 16 bytes and a
//! CRC32C, replaced whole) before a SWAPDB answers, so it survives restarts,
//! backups and salvage.
//!
//! Applied at one place: `Backend` translates every namespace it hands the
//! local store. A cluster never swaps (SWAPDB is refused there: members would
//! disagree about what a database holds), so its map stays the identity.
//!
//! Must not touch: command parsing, replies.

use shoal_engine::store::DATABASES_FILE;
use shoal_engine::{DiskDir, DiskError};
use std::sync::RwLock;

/// Databases a namespace can name.
pub const DATABASES: usize = 16;
const DATABASE_BITS: u8 = 0x0f;

/// The map from selected database to stored database.
pub struct Databases {
    map: RwLock<[u8; DATABASES]>,
}

impl Default for Databases {
    fn default() -> Self {
        Databases {
            map: RwLock::new(std::array::from_fn(|db| db as u8)),
        }
    }
}

impl Databases {
    /// The map recorded in `dir`; the identity when none is (or, with an
    /// error logged, when the file is damaged: then SWAPDBs are undone).
    pub fn load(dir: &dyn DiskDir) -> Databases {
        let loaded = shoal_engine::disk::read_checked_file(dir, DATABASES_FILE, DATABASES);
        let databases = Databases::default();
        match loaded {
            Ok(Some(bytes)) if is_permutation(&bytes) => {
                let mut map = databases.map.write().unwrap_or_else(|e| e.into_inner());
                map.copy_from_slice(&bytes);
            }
            Ok(None) => {}
            Ok(Some(_)) => tracing::error!(
                "{DATABASES_FILE} is not a permutation; databases read as never swapped"
            ),
            Err(e) => tracing::error!(
                "{DATABASES_FILE} cannot be read ({e:?}); databases read as never swapped"
            ),
        }
        databases
    }

    /// The map now (a command takes it once, so it sees one map throughout).
    pub fn snapshot(&self) -> [u8; DATABASES] {
        *self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Exchange databases `a` and `b`, durably first.
    pub fn swap(&self, a: usize, b: usize, dir: &dyn DiskDir) -> Result<(), DiskError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut next = *map;
        next.swap(a, b);
        shoal_engine::disk::write_checked_file(dir, DATABASES_FILE, &next)?;
        *map = next;
        Ok(())
    }
}

/// Namespace `ns` (a selected database's) as stored under `map`.
pub fn stored_namespace(map: &[u8; DATABASES], ns: u8) -> u8 {
    (ns & !DATABASE_BITS) | map[usize::from(ns & DATABASE_BITS)]
}

/// Stored namespace `stored` as the database clients select under `map`.
pub fn selected_namespace(map: &[u8; DATABASES], stored: u8) -> u8 {
    let db = map
        .iter()
        .position(|&s| s == stored & DATABASE_BITS)
        .expect("the map is a permutation") as u8;
    (stored & !DATABASE_BITS) | db
}

fn is_permutation(bytes: &[u8]) -> bool {
    let mut seen = [false; DATABASES];
    bytes.len() == DATABASES
        && bytes.iter().all(|&b| {
            let fresh = usize::from(b) < DATABASES && !seen[usize::from(b)];
            if fresh {
                seen[usize::from(b)] = true;
            }
            fresh
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_engine::memdisk::MemDir;

    #[test]
    fn a_swap_maps_both_ways_keeps_kind_bits_and_survives_a_reload() {
        let dir = MemDir::new();
        let databases = Databases::load(&dir);
        databases.swap(0, 3, &dir).unwrap();
        let map = databases.snapshot();
        assert_eq!(
            stored_namespace(&map, 0x80),
            0x83,
            "hash fields of db 0 live in db 3"
        );
        assert_eq!(stored_namespace(&map, 3), 0);
        assert_eq!(selected_namespace(&map, 0x83), 0x80);
        assert_eq!(Databases::load(&dir).snapshot(), map);
        assert!(!is_permutation(&[0; DATABASES]));
    }
}
