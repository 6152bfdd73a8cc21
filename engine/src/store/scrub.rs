//! Damage found while the store runs: the scrubber, which reads every live
//! record again, a little at a time, so that a byte gone bad in synced data is
//! found before a read needs it; the register of what reads and the scrubber
//! found; and what a replicated node does about it.
//!
//! A damaged record is never served (G5): reads name its segment and offset.
//! A single node can only report it. A cluster node marks its copies
//! incomplete ([`Store::mark_copies_incomplete`]: from now on its dots are
//! minted above every dot the lost records may have held, and each key is
//! caught up from its replicas before its first mint, as after a cut tail),
//! forgets the damaged keys, and restores them from its replicas. A replica's
//! merge onto a record that no longer reads replaces it (`prepare`).
//!
//! Must not touch: sockets, tasks, clocks (the driver paces the steps).

use super::{KeyEntry, ReadError, Store};
use crate::disk::DiskError;
use crate::record::FrameScan;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Damaged record locations the register keeps until a driver drains them.
/// More are still counted ([`super::StoreStats::records_unreadable`]) and
/// found again by the next scrub pass.
pub const DAMAGE_FOUND_MAX: usize = 4096;

/// A record found damaged, and the key it is the latest record of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    pub namespace: u8,
    /// The stored key (a collection element's key for its elements).
    pub key: Bytes,
    pub segment: u32,
    pub offset: u32,
}

/// Where a scrub pass goes on from: after this directory key (the start when
/// `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubCursor {
    after: Option<Box<[u8]>>,
}

/// What one scrub step read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStep {
    pub records_read: u64,
    pub bytes_read: u64,
    /// Records that failed their checksum (registered for the driver).
    pub records_damaged: u64,
    /// The pass reached the directory's end; the cursor starts over.
    pub pass_done: bool,
}

/// The register reads and scrubs fill: damaged (segment, offset) locations
/// not yet drained, those drained before (a record that stays damaged, on a
/// single node, is reported once, however often it is read), and how many
/// reads found damage.
#[derive(Default)]
pub(crate) struct DamageRegister {
    locations: std::sync::Mutex<Locations>,
    records_unreadable: AtomicU64,
}

#[derive(Default)]
struct Locations {
    found: BTreeSet<(u32, u32)>,
    drained: BTreeSet<(u32, u32)>,
}

impl DamageRegister {
    pub fn note(&self, entry: KeyEntry) {
        self.records_unreadable.fetch_add(1, Ordering::Relaxed);
        let at = (entry.segment, entry.offset);
        let mut locations = self.lock();
        if locations.found.len() < DAMAGE_FOUND_MAX && !locations.drained.contains(&at) {
            locations.found.insert(at);
        }
    }

    pub fn records_unreadable(&self) -> u64 {
        self.records_unreadable.load(Ordering::Relaxed)
    }

    fn take(&self) -> BTreeSet<(u32, u32)> {
        let mut locations = self.lock();
        let found = std::mem::take(&mut locations.found);
        if locations.drained.len() + found.len() <= DAMAGE_FOUND_MAX {
            locations.drained.extend(found.iter().copied());
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.lock().found.is_empty()
    }

    fn undrain(&self, at: impl Iterator<Item = (u32, u32)>) {
        let mut locations = self.lock();
        for at in at {
            locations.drained.remove(&at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Locations> {
        self.locations.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Read live records after `cursor` until `bytes_max` bytes or
    /// `records_max` records were read, checking each frame's checksum; a
    /// damaged one is counted and registered ([`Store::drain_damage_found`]).
    /// Returns where the next step goes on from.
    pub fn scrub_step(
        &self,
        cursor: &ScrubCursor,
        bytes_max: u64,
        records_max: u64,
    ) -> (ScrubCursor, ScrubStep) {
        let mut step = ScrubStep::default();
        let mut buf = Vec::new();
        let mut last: Option<&Box<[u8]>> = None;
        for (dir_key, entry) in self.keydir.entries_after(cursor.after.as_deref()) {
            if step.records_read >= records_max || step.bytes_read >= bytes_max {
                let after = last.cloned();
                return (ScrubCursor { after }, step);
            }
            buf.resize(entry.len as usize, 0);
            step.records_read += 1;
            step.bytes_read += u64::from(entry.len);
            last = Some(dir_key);
            // A pass over every record: read cold, or the pages it touched
            // would stay in the process's resident memory.
            let read = self.frame_disk(*entry).and_then(|disk| {
                (disk.read_cold_at(u64::from(entry.offset), &mut buf)).map_err(ReadError::Disk)
            });
            if read.is_err() {
                continue;
            }
            let damage = match crate::record::scan_frame(&buf, self.options.record_size_max_bytes) {
                FrameScan::Valid { .. } => continue,
                FrameScan::Zero => "record zeroed",
                FrameScan::Invalid(reason) => reason,
            };
            let _ = self.unreadable(*entry, damage);
            step.records_damaged += 1;
        }
        step.pass_done = true;
        (ScrubCursor::default(), step)
    }

    /// Whether reads or scrubs registered damage not yet drained.
    pub fn damage_found_pending(&self) -> bool {
        !self.damage_found.is_empty()
    }

    /// The damaged records reads and scrubs registered since the last drain
    /// that are still their keys' latest (a key written since reads whole).
    pub fn drain_damage_found(&self) -> Vec<DamagedRecord> {
        let locations = self.damage_found.take();
        if locations.is_empty() {
            return Vec::new();
        }
        (self.keydir.iter())
            .filter(|(_, e)| locations.contains(&(e.segment, e.offset)))
            .map(|(dir_key, e)| DamagedRecord {
                namespace: dir_key[0],
                key: Bytes::copy_from_slice(&dir_key[3..]),
                segment: e.segment,
                offset: e.offset,
            })
            .collect()
    }

    /// `damaged` (drained before) was not dealt with: reads and scrubs
    /// register it again.
    pub fn damage_not_dealt_with(&self, damaged: &[DamagedRecord]) {
        (self.damage_found).undrain(damaged.iter().map(|d| (d.segment, d.offset)));
    }

    /// This store's copies may lack writes it acknowledged (records of them
    /// went bad): like an open that cut a tail, every dot minted from now on
    /// is above every dot it issued so far, each key is caught up from the
    /// replicas before its first mint ([`Store::mint_may_claim_lost_dots`]),
    /// and `CUT-TAIL` keeps this across restarts until a full restore
    /// ([`Store::cut_tail_made_good`]). Compaction retries segments it gave up
    /// on. A no-op when no dot was minted since the last mark. Returns the
    /// floor.
    pub fn mark_copies_incomplete(&mut self) -> Result<u64, DiskError> {
        let floor = self.counter_floor.max(self.counter_issued_max + 1);
        if self.cut_a_tail_below.is_some_and(|f| f >= floor) {
            return Ok(floor);
        }
        super::recovery::record_cut_tail_floor(self.dir.as_ref(), floor)?;
        self.counter_floor = floor;
        self.cut_a_tail_below = Some(floor);
        self.compaction.forget_damaged();
        Ok(floor)
    }
}
