//! The synced mark (`SYNCED`): how far the active segment's data was synced, at
//! least. A sealed segment's synced length is in the catalog, but the active
//! segment's grows with every batch, and without a record of it a tail that was
//! synced (acknowledged) and then zeroed or cut reads as the end of the data.
//! With it, the open refuses when the active segment's valid data ends before the
//! mark, naming the segment and offset.
//!
//! The mark is written at most once per committer tick (`Store::record_synced_mark`,
//! about once a second), with the end of the newest published batch, so only the
//! batches synced since the last tick are unguarded (the recovery table's known
//! limit, widened from a few batches to a tick). Format: `[segment u32 LE][bytes
//! u64 LE][crc32c u32 LE]`, replaced whole.

use super::{OpenError, Store};
use crate::disk::{read_checked_file, write_checked_file, CheckedFileError, DiskDir, DiskError};

pub(crate) const SYNCED_FILE: &str = "SYNCED";

/// A segment, and the bytes of it known synced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncedMark {
    pub segment: u32,
    pub bytes: u64,
}

/// Where the mark stands: what was recorded, and what could be.
#[derive(Debug, Default)]
pub(crate) struct SyncedMarks {
    /// The mark last written (or read at open).
    pub recorded: Option<SyncedMark>,
    /// The end of the newest published batch's data.
    pub published: Option<SyncedMark>,
}

impl SyncedMarks {
    /// Note a published record ending at `end` in `segment`.
    pub fn published_to(&mut self, segment: u32, end: u64) {
        let mark = SyncedMark {
            segment,
            bytes: end,
        };
        let newer = self
            .published
            .is_none_or(|p| (p.segment, p.bytes) < (segment, end));
        if newer {
            self.published = Some(mark);
        }
    }
}

/// The mark in `dir`, if any. A damaged mark refuses the open: it never falls
/// back to trusting whatever tail is there.
pub fn read_synced_mark(dir: &dyn DiskDir) -> Result<Option<SyncedMark>, OpenError> {
    match read_checked_file(dir, SYNCED_FILE, 12) {
        Ok(payload) => Ok(payload.map(|p| SyncedMark {
            segment: u32::from_le_bytes(p[..4].try_into().expect("4 bytes")),
            bytes: u64::from_le_bytes(p[4..12].try_into().expect("8 bytes")),
        })),
        Err(CheckedFileError::Disk(e)) => Err(e.into()),
        Err(CheckedFileError::Damaged(why)) => Err(OpenError::Corrupt {
            segment: 0,
            offset: 0,
            reason: format!("{SYNCED_FILE} is damaged: {why}"),
        }),
    }
}

impl Store {
    /// Record how far the active segment is synced, if that moved since the
    /// last mark. Returns whether a mark was written. A failure loses nothing
    /// (the mark only guards older data); the caller logs it.
    pub fn record_synced_mark(&mut self) -> Result<bool, DiskError> {
        let Some(published) = self.synced.published else {
            return Ok(false);
        };
        if self.synced.recorded == Some(published) {
            return Ok(false);
        }
        let mut payload = published.segment.to_le_bytes().to_vec();
        payload.extend_from_slice(&published.bytes.to_le_bytes());
        write_checked_file(self.dir.as_ref(), SYNCED_FILE, &payload)?;
        self.synced.recorded = Some(published);
        Ok(true)
    }

    /// The bytes of segment `id` the mark says were synced (0: no mark for it).
    pub(crate) fn synced_bytes_min(&self, id: u32) -> u64 {
        // Planted bug: the open trusts whatever tail the active segment has.
        if cfg!(feature = "bug-ignore-synced-mark") {
            return 0;
        }
        self.synced
            .recorded
            .filter(|m| m.segment == id)
            .map_or(0, |m| m.bytes)
    }
}
