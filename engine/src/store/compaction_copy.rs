//! Compaction's copies made without the store's lock. A step's records live in
//! a sealed segment, whose bytes no longer change, so a driver can read and
//! encode them while writers and readers go on: it takes the step's list under
//! a shared lock ([`Store::compaction_reads`]), reads with no lock
//! ([`CompactionReads::copy`]), and hands the copies to the step under the
//! write lock, which appends each only if the key directory still points at
//! the record it was read from (the check a record read under the lock gets).
//!
//! A copy carries the batch number that was next when it was read, which is
//! at most the one next when it is appended: recovery takes the highest number
//! it meets and looks only for batches beyond it, so a lower one moves nothing.

use super::{dir_key, KeyEntry, Store};
use crate::disk::Disk;
use crate::record::{encode_frame, read_frame, FrameRead, RecordBody};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::compaction::CompactionPlan;

/// What the next compaction step would copy: taken under a shared lock, read
/// by [`CompactionReads::copy`] under none.
pub struct CompactionReads {
    segment: u32,
    disk: Arc<dyn Disk>,
    record_size_max_bytes: u32,
    batch_seq: u64,
    wanted: Vec<(Box<[u8]>, KeyEntry)>,
}

/// Records of one segment read and encoded for a compaction step.
pub struct CompactionCopies {
    segment: u32,
    /// By the record's offset in the segment.
    by_offset: BTreeMap<u32, Copied>,
}

/// One record read and encoded, as a step would have under the lock.
pub(super) struct Copied {
    /// The directory entry it was read from: used only while still current.
    entry: KeyEntry,
    pub frame: Vec<u8>,
    /// No sibling left (a forgotten key): collected, not copied, from the
    /// oldest segment.
    pub forgotten: bool,
}

impl Store {
    /// The records the next compaction step would read (from `plan` when no
    /// compaction is under way), at most `budget_bytes` of them. `None`: none
    /// to read here (the step itself decides what happens).
    pub fn compaction_reads(
        &self,
        plan: Option<&CompactionPlan>,
        budget_bytes: u64,
    ) -> Option<CompactionReads> {
        if self.poisoned.is_some() {
            return None;
        }
        let cursor = self.compaction.cursor().or(plan.map(|p| p.cursor()))?;
        let (segment, list) = cursor.pending();
        let (_, collect_markers) = self.collects_markers(segment);
        let mut wanted = Vec::new();
        let mut spent_bytes = 0u64;
        for (dk, entry) in list {
            if spent_bytes >= budget_bytes.max(1) {
                break;
            }
            if self.keydir.get(dk) != Some(entry) || self.staged.contains(dk) {
                continue;
            }
            spent_bytes += u64::from(entry.len);
            if entry.live || !collect_markers {
                wanted.push((dk.clone(), *entry));
            }
        }
        Some(CompactionReads {
            segment,
            disk: self.segments.get(&segment)?.disk.clone(),
            record_size_max_bytes: self.options.record_size_max_bytes,
            batch_seq: self.next_batch_seq,
            wanted,
        })
    }

    /// `entry`'s record as a compaction copy numbered `batch_seq`: taken from
    /// `copies` when it was read ahead from this very entry, else read now.
    pub(super) fn copy_of(
        &self,
        (dk, entry): (&[u8], KeyEntry),
        batch_seq: u64,
        copies: Option<&mut CompactionCopies>,
    ) -> Result<(Vec<u8>, bool), super::ReadError> {
        if let Some(copied) = copies.and_then(|c| c.take(entry)) {
            return Ok((copied.frame, copied.forgotten));
        }
        let body = self.read_record(entry)?;
        debug_assert_eq!(*dir_key(body.namespace, &body.key), *dk);
        Ok(reencode(body, batch_seq))
    }
}

/// `body` as a copy's frame numbered `batch_seq`, and whether it is a
/// forgotten key's (no sibling left).
fn reencode(mut body: RecordBody, batch_seq: u64) -> (Vec<u8>, bool) {
    let forgotten = body.set.siblings.is_empty();
    body.batch_seq = batch_seq;
    let mut frame = Vec::new();
    encode_frame(&body, &mut frame);
    (frame, forgotten)
}

impl CompactionReads {
    /// Read and encode every record wanted. One that does not read is left
    /// out: the step reads it again under the lock and reports the damage.
    pub fn copy(self) -> CompactionCopies {
        let mut by_offset = BTreeMap::new();
        for (dk, entry) in self.wanted {
            let mut buf = vec![0u8; entry.len as usize];
            if self
                .disk
                .read_cold_at(u64::from(entry.offset), &mut buf)
                .is_err()
            {
                continue;
            }
            let FrameRead::Valid { body, .. } = read_frame(&buf, self.record_size_max_bytes) else {
                continue;
            };
            debug_assert_eq!(dir_key(body.namespace, &body.key), dk);
            let (frame, forgotten) = reencode(body, self.batch_seq);
            let copied = Copied {
                entry,
                frame,
                forgotten,
            };
            by_offset.insert(entry.offset, copied);
        }
        CompactionCopies {
            segment: self.segment,
            by_offset,
        }
    }
}

impl CompactionCopies {
    /// The copy read from exactly `entry`, if any.
    fn take(&mut self, entry: KeyEntry) -> Option<Copied> {
        if entry.segment != self.segment {
            return None;
        }
        let copied = self.by_offset.remove(&entry.offset)?;
        (copied.entry == entry).then_some(copied)
    }
}
