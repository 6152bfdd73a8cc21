//! The segment catalog (`SEGMENTS`): which segments the store holds, how long
//! each file was made, and for a sealed segment how many bytes of it were
//! synced. Without it a deleted segment, or one cut short, opens as a store
//! that simply never had those records; with it the open refuses (G9).
//!
//! Format: `[postcard Vec<CatalogEntry>][crc32c u32 LE]`, replaced whole (tmp,
//! sync, rename, sync dir) when a segment is created (before anything is
//! written to it) and when compaction removes one (before the file goes). So
//! a crash leaves at most one new, unlisted segment above the listed ones (a
//! rotation cut short: it holds nothing yet) or one listed segment whose
//! removal was cut short after its records were rewritten and synced
//! elsewhere... never the other way round, since the catalog is written first.

use crate::disk::{replace_file, DiskDir, DiskError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const CATALOG_FILE: &str = "SEGMENTS";

/// One segment as the catalog lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogEntry {
    pub id: u32,
    /// The file's preallocated length: a shorter file was cut.
    pub allocated_bytes: u64,
    /// For a sealed segment: the end of its data, all synced.
    pub sealed_bytes: Option<u64>,
}

/// Why the catalog cannot be used.
#[derive(Debug)]
pub(crate) enum CatalogError {
    Disk(DiskError),
    /// Wrong checksum or undecodable: the words say which.
    Damaged(String),
}

/// Replace the catalog with `entries`.
pub(crate) fn write_catalog(dir: &dyn DiskDir, entries: &[CatalogEntry]) -> Result<(), DiskError> {
    let mut bytes = postcard::to_allocvec(entries).map_err(|e| DiskError::Io(e.to_string()))?;
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    replace_file(dir, CATALOG_FILE, &bytes)
}

/// The catalog, by segment id (`None`: the store has none yet, as a store made
/// before catalogs existed).
pub(crate) fn read_catalog(
    dir: &dyn DiskDir,
) -> Result<Option<BTreeMap<u32, CatalogEntry>>, CatalogError> {
    let file = match dir.open(CATALOG_FILE, false) {
        Ok(file) => file,
        Err(DiskError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(CatalogError::Disk(e)),
    };
    let len = file.len().map_err(CatalogError::Disk)? as usize;
    if len < 4 {
        return Err(CatalogError::Damaged(format!(
            "{CATALOG_FILE} is {len} bytes"
        )));
    }
    let mut bytes = vec![0u8; len];
    file.read_at(0, &mut bytes).map_err(CatalogError::Disk)?;
    let crc = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
    bytes.truncate(len - 4);
    if crc32c::crc32c(&bytes) != crc {
        return Err(CatalogError::Damaged(format!(
            "{CATALOG_FILE} fails its checksum"
        )));
    }
    let entries: Vec<CatalogEntry> = postcard::from_bytes(&bytes)
        .map_err(|e| CatalogError::Damaged(format!("{CATALOG_FILE} does not decode: {e}")))?;
    Ok(Some(entries.into_iter().map(|e| (e.id, e)).collect()))
}

/// What the open makes of the segment files it found, against the catalog.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CatalogCheck {
    /// Every listed segment is there; `leftovers` are unlisted files below the
    /// newest listed one (a compaction's removal cut short), to be removed.
    Whole { leftovers: Vec<u32> },
    /// A listed segment's file is gone.
    Missing { id: u32 },
}

/// Compare the files found (`present`, sorted) with the catalog.
pub(crate) fn check_present(
    catalog: &BTreeMap<u32, CatalogEntry>,
    present: &[u32],
) -> CatalogCheck {
    if let Some(id) = catalog.keys().find(|id| present.binary_search(id).is_err()) {
        return CatalogCheck::Missing { id: *id };
    }
    let newest_listed = catalog.keys().next_back().copied().unwrap_or(0);
    let leftovers = present
        .iter()
        .filter(|id| !catalog.contains_key(id) && **id < newest_listed)
        .copied()
        .collect();
    CatalogCheck::Whole { leftovers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ids: &[u32]) -> BTreeMap<u32, CatalogEntry> {
        ids.iter()
            .map(|id| {
                let entry = CatalogEntry {
                    id: *id,
                    allocated_bytes: 4096,
                    sealed_bytes: None,
                };
                (*id, entry)
            })
            .collect()
    }

    #[test]
    fn a_listed_segment_that_is_gone_is_missing() {
        assert_eq!(
            check_present(&listed(&[3, 4, 5]), &[3, 5]),
            CatalogCheck::Missing { id: 4 }
        );
    }

    #[test]
    fn an_unlisted_older_file_is_a_leftover_and_a_newer_one_a_fresh_segment() {
        assert_eq!(
            check_present(&listed(&[3, 5]), &[2, 3, 4, 5, 6]),
            CatalogCheck::Whole {
                leftovers: vec![2, 4]
            }
        );
    }

    #[test]
    fn the_catalog_round_trips_and_damage_is_refused() {
        let dir = crate::memdisk::MemDir::new();
        let entries = vec![CatalogEntry {
            id: 7,
            allocated_bytes: 1 << 20,
            sealed_bytes: Some(9000),
        }];
        write_catalog(&dir, &entries).expect("write");
        let read = read_catalog(&dir).expect("read").expect("present");
        assert_eq!(read.values().copied().collect::<Vec<_>>(), entries);
        let file = dir.open(CATALOG_FILE, false).expect("open");
        let mut byte = [0u8; 1];
        file.read_at(0, &mut byte).expect("read");
        file.write_at(0, &[byte[0] ^ 1]).expect("flip");
        assert!(matches!(read_catalog(&dir), Err(CatalogError::Damaged(_))));
    }
}
