//! Compaction: rewrite the live records of a mostly-dead sealed segment into the
//! active one, then delete it. Runs in ticks of at most a byte budget, so it never
//! monopolises the disk. Delete markers are collected only from the oldest segment,
//! where no older record of the key can remain to come back (G4); a store in a
//! cluster will additionally wait until every replica holds them.

use super::compaction_copy::CompactionCopies;
use super::{KeyEntry, PendingFrame, Store, WriteError};
use crate::disk::{Disk, DiskError};
use crate::record::SEGMENT_HEADER_BYTES;
use crate::version::{Dot, VersionVector};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Compaction's state between ticks.
#[derive(Default)]
pub(crate) struct State {
    cursor: Option<Cursor>,
    /// Segments holding a record that no longer reads: never candidates again
    /// (the record cannot be copied, so the segment cannot go).
    damaged: BTreeSet<u32>,
    /// Segments holding a damaged record whose key a cluster node has since
    /// forgotten or replaced: rewritten first, whatever their dead share, so
    /// that no later open meets the damage and sets the whole store aside.
    rewrite: BTreeSet<u32>,
    /// A segment whose copies are all appended and pointed at: it goes once
    /// they are synced ([`Store::compaction_synced`]). No compaction starts
    /// meanwhile.
    sync_owed: Option<CompactionSync>,
}

/// A compacted segment's copies to make durable before the segment goes: a
/// driver syncs them with no lock held ([`CompactionSync::sync`]) and then
/// reports it ([`Store::compaction_synced`]).
#[derive(Clone)]
pub struct CompactionSync {
    segment: u32,
    /// The segment the last copies were appended to (earlier ones were synced
    /// when their segment was sealed).
    disk: Arc<dyn Disk>,
}

impl CompactionSync {
    pub fn sync(&self) -> Result<(), DiskError> {
        self.disk.sync()
    }

    /// What a tick reports while this sync is owed.
    fn waiting(&self) -> CompactionProgress {
        CompactionProgress::Running {
            segment: self.segment,
            done: 0,
            total: 0,
        }
    }
}

impl State {
    /// Try the segments given up on again (the damage was dealt with: its
    /// keys were forgotten or replaced, so nothing live may be left there).
    pub fn forget_damaged(&mut self) {
        self.damaged.clear();
    }

    /// Rewrite `segment` soon (see `rewrite`).
    pub fn rewrite_soon(&mut self, segment: u32) {
        self.damaged.remove(&segment);
        self.rewrite.insert(segment);
    }

    /// Whether `segment` is to be rewritten: the active one is sealed at the
    /// next append, so that it can be.
    pub fn rewrites(&self, segment: u32) -> bool {
        self.rewrite.contains(&segment)
    }

    /// The compaction under way, if any.
    pub(super) fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }
}

/// A compaction's starting cursor, built ahead under a shared lock.
pub struct CompactionPlan(Cursor);

impl CompactionPlan {
    pub(super) fn cursor(&self) -> &Cursor {
        &self.0
    }
}

/// Directory keys with the entries they had.
pub(super) type DirEntries = [(Box<[u8]>, KeyEntry)];

pub(crate) struct Cursor {
    segment: u32,
    /// Entries that pointed into the segment when compaction began.
    entries: Vec<(Box<[u8]>, KeyEntry)>,
    next: usize,
    /// Entries whose key a prepared, unpublished batch is rewriting: copied
    /// now, the old record would land after the newer one and win at recovery;
    /// skipped, the segment could go while that batch may still fail. They are
    /// taken up again once the rest is done, and the segment goes only when
    /// none is left.
    deferred: Vec<(Box<[u8]>, KeyEntry)>,
}

impl Cursor {
    /// The cursor's segment and the entries its next step starts from: the
    /// deferred ones once everything else is done.
    pub(super) fn pending(&self) -> (u32, &DirEntries) {
        if self.next >= self.entries.len() && !self.deferred.is_empty() {
            (self.segment, &self.deferred)
        } else {
            (self.segment, &self.entries[self.next..])
        }
    }
}

/// What one tick did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactionProgress {
    /// No segment is worth compacting.
    Idle,
    /// Working on `segment`: `done` of `total` entries handled.
    Running {
        segment: u32,
        done: usize,
        total: usize,
    },
    /// `segment` was rewritten and deleted.
    Finished { segment: u32 },
}

impl Store {
    /// A sealed segment to rewrite for damage set aside, else the sealed
    /// segment with the largest dead share above the threshold.
    fn compaction_candidate(&self) -> Option<u32> {
        let ready = |id: &u32| *id != self.active_id && !self.chores.hint_pending(*id);
        let rewrite = (self.compaction.rewrite.iter())
            .filter(|id| self.segments.contains_key(id))
            .find(|id| ready(id) && !self.compaction.damaged.contains(id));
        if let Some(id) = rewrite {
            return Some(*id);
        }
        self.segments
            .iter()
            .filter(|(id, _)| **id != self.active_id && !self.compaction.damaged.contains(id))
            .filter(|(id, _)| !self.chores.hint_pending(**id))
            .filter(|(_, s)| {
                let payload = s.written_bytes.saturating_sub(SEGMENT_HEADER_BYTES).max(1);
                s.dead_bytes * 100 >= payload * self.options.compaction_dead_percent_min
            })
            .max_by_key(|(_, s)| s.dead_bytes)
            .map(|(id, _)| *id)
    }

    /// Do at most `budget_bytes` of compaction work. The directory points at the
    /// copies at once (they read as their originals); the copies are synced, and
    /// only then the old segment removed, when the segment's last step finishes.
    pub fn compaction_tick(&mut self, budget_bytes: u64) -> Result<CompactionProgress, WriteError> {
        let (progress, _) = self.compaction_tick_spending(budget_bytes, None, None)?;
        match self.compaction_sync_owed() {
            Some(owed) => {
                let synced = owed.sync();
                self.compaction_synced(owed, synced)
            }
            None => Ok(progress),
        }
    }

    /// The sync a finished segment waits on, if any (see [`CompactionSync`]).
    pub fn compaction_sync_owed(&self) -> Option<CompactionSync> {
        self.compaction.sync_owed.clone()
    }

    /// `owed`'s sync went as `synced`: the segment goes (and the tick that
    /// finished it is reported as `Finished`), or the store is poisoned.
    pub fn compaction_synced(
        &mut self,
        owed: CompactionSync,
        synced: Result<(), DiskError>,
    ) -> Result<CompactionProgress, WriteError> {
        let segment = owed.segment;
        assert_eq!(
            self.compaction.sync_owed.as_ref().map(|o| o.segment),
            Some(segment),
            "a compaction sync reported that was not owed"
        );
        self.compaction.sync_owed = None;
        if let Err(e) = synced {
            self.stats.syncs_failed += 1;
            let reason = format!("fsync of compaction's copies failed: {e}");
            self.poison(reason.clone());
            return Err(WriteError::SyncFailed(reason));
        }
        self.finish_compaction(segment)?;
        self.compaction.rewrite.remove(&segment);
        Ok(CompactionProgress::Finished { segment })
    }

    /// Where the next compaction tick would start a new segment, when none is
    /// under way: a walk of the whole directory, so a driver builds it under a
    /// shared lock and passes it to [`Store::compaction_tick_spending`]. It
    /// stays good until then: only that tick starts a compaction, a sealed
    /// segment gains no records, and each entry is checked again as it is
    /// copied (a later record of the key makes it skipped).
    pub fn compaction_plan(&self) -> Option<CompactionPlan> {
        if self.compaction.cursor.is_some() || self.compaction.sync_owed.is_some() {
            return None;
        }
        self.new_cursor().map(CompactionPlan)
    }

    /// [`Store::compaction_tick`], also returning the bytes of records it
    /// handled, so a caller can spend one budget over several segments.
    /// `plan` (from [`Store::compaction_plan`]) saves the walk under `&mut`;
    /// `copies` (from [`Store::compaction_reads`]) the reading and encoding.
    pub fn compaction_tick_spending(
        &mut self,
        budget_bytes: u64,
        plan: Option<CompactionPlan>,
        copies: Option<CompactionCopies>,
    ) -> Result<(CompactionProgress, u64), WriteError> {
        if let Some(reason) = &self.poisoned {
            return Err(WriteError::Poisoned(reason.clone()));
        } else if let Some(owed) = &self.compaction.sync_owed {
            // Waiting on the last segment's sync: nothing to do here yet.
            return Ok((owed.waiting(), 0));
        }
        // A cursor under way wins over a plan (none is made while one is).
        let started = self.compaction.cursor.take().or(plan.map(|p| p.0));
        let Some(mut cursor) = started.or_else(|| self.new_cursor()) else {
            return Ok((CompactionProgress::Idle, 0));
        };
        if cursor.next >= cursor.entries.len() && !cursor.deferred.is_empty() {
            // Everything else is done: take the deferred entries up again.
            cursor.entries = std::mem::take(&mut cursor.deferred);
            cursor.next = 0;
        }
        let (step_start, deferred_before) = (cursor.next, cursor.deferred.len());
        let result = self.compaction_step(&mut cursor, budget_bytes, copies);
        let spent_bytes = *result.as_ref().unwrap_or(&0);
        if result.is_err() {
            // Nothing of the failed step took effect: take its entries up again, or
            // finishing would remove the segment under their directory entries.
            cursor.next = step_start;
            cursor.deferred.truncate(deferred_before);
        }
        let mut finished = cursor.next >= cursor.entries.len() && cursor.deferred.is_empty();
        if finished && result.is_ok() {
            finished = self.no_stragglers(&mut cursor);
        }
        let segment = cursor.segment;
        let (done, total) = (cursor.next, cursor.entries.len());
        match result {
            Err(e @ WriteError::Corrupt(_)) => {
                // A record of the segment no longer reads: leave the segment
                // (and the key's damage, which reads report) where it is and
                // go on with the others. What this segment's earlier steps
                // moved is moved; the rest stays in place.
                self.compaction.damaged.insert(segment);
                self.compaction.rewrite.remove(&segment);
                self.stats.compaction_segments_damaged += 1;
                Err(e)
            }
            Err(e) => {
                self.compaction.cursor = Some(cursor);
                Err(e)
            }
            Ok(_) => {
                if finished {
                    // The copies are made durable before the segment goes, by
                    // whoever called (`compaction_sync_owed`), off the lock.
                    let disk = self.active_disk();
                    self.compaction.sync_owed = Some(CompactionSync { segment, disk });
                } else {
                    self.compaction.cursor = Some(cursor);
                }
                let running = CompactionProgress::Running {
                    segment,
                    done,
                    total,
                };
                Ok((running, spent_bytes))
            }
        }
    }

    /// A cursor over the next segment worth compacting, if any: every directory
    /// entry that points into it.
    fn new_cursor(&self) -> Option<Cursor> {
        let segment = self.compaction_candidate()?;
        let entries = self
            .keydir
            .iter()
            .filter(|(_, e)| e.segment == segment)
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        Some(Cursor {
            segment,
            entries,
            next: 0,
            deferred: Vec::new(),
        })
    }

    /// Whether nothing points into the cursor's segment any more. A batch still in
    /// flight when the segment was sealed wrote its records there, and they were
    /// not among the entries the cursor began with: once published they are taken
    /// up as a new pass; while unpublished the segment waits (seed 487: the
    /// segment went with a published write in it).
    fn no_stragglers(&self, cursor: &mut Cursor) -> bool {
        let segment = cursor.segment;
        if self.staged.in_segment(segment) {
            return false;
        }
        let stragglers: Vec<(Box<[u8]>, KeyEntry)> = self
            .keydir
            .iter()
            .filter(|(_, e)| e.segment == segment)
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        if stragglers.is_empty() {
            return true;
        }
        cursor.entries = stragglers;
        cursor.next = 0;
        false
    }

    /// Whether `segment` is the oldest, and whether its delete markers are
    /// collected rather than copied (only from the oldest: G4).
    pub(super) fn collects_markers(&self, segment: u32) -> (bool, bool) {
        let oldest = self.segments.keys().next().copied() == Some(segment);
        let collect = (oldest && self.options.delete_markers_collectable)
            || cfg!(feature = "bug-early-tombstone-gc");
        (oldest, collect)
    }

    fn compaction_step(
        &mut self,
        cursor: &mut Cursor,
        budget_bytes: u64,
        mut copies: Option<CompactionCopies>,
    ) -> Result<u64, WriteError> {
        let (oldest, collect_tombstones) = self.collects_markers(cursor.segment);
        // The next client batch's number, not one of their own: unsynced
        // copies numbered apart would let the numbers in flight outrun
        // UNSYNCED_BATCHES_MAX, by which recovery tells a torn tail (a later
        // batch within that many) from damage to synced data (one beyond).
        let batch_seq = self.next_batch_seq;
        let mut frames = Vec::new();
        let mut collected = Vec::new();
        let mut spent_bytes = 0u64;
        while cursor.next < cursor.entries.len() && spent_bytes < budget_bytes.max(1) {
            let (dk, entry) = &cursor.entries[cursor.next];
            cursor.next += 1;
            if self.keydir.get(dk) != Some(entry) {
                continue; // superseded since: nothing to keep
            }
            if self.staged.contains(dk) {
                cursor.deferred.push((dk.clone(), *entry));
                continue;
            }
            spent_bytes += entry.len as u64;
            if !entry.live && collect_tombstones {
                collected.push(dk.clone());
                continue;
            }
            let (frame, forgotten) = self
                .copy_of((dk, *entry), batch_seq, copies.as_mut())
                .map_err(WriteError::Corrupt)?;
            if oldest && forgotten {
                // Forgotten (cluster tombstone collection): nothing older is left
                // for the empty record to shadow.
                collected.push(dk.clone());
                continue;
            }
            frames.push(PendingFrame {
                dir_key: dk.clone(),
                bytes: frame,
                live: entry.live,
                set_hash: None,
                deadline_ms: None,
            });
        }
        if !frames.is_empty() {
            self.rewrite(frames)?;
        }
        self.collect(collected);
        Ok(spent_bytes)
    }

    /// Drop the delete markers (and forgotten keys) a step collected.
    fn collect(&mut self, collected: Vec<Box<[u8]>>) {
        if !collected.is_empty() {
            // The markers' contexts go with them: never reissue a dot they covered.
            self.counter_floor = self.counter_floor.max(self.counter_issued_max + 1);
        }
        for dk in collected {
            self.report_collected(&dk);
            self.expiring.set(&dk, None);
            if let Some(previous) = self.keydir.remove(&dk) {
                self.retire(previous, dk[0]);
                self.stats.tombstones_collected += 1;
            }
            if let Some(digests) = &mut self.digests {
                digests.remove(dk[0], u16::from_be_bytes([dk[1], dk[2]]), &dk[3..]);
            }
        }
    }

    /// Append compaction's copies in one batch and point the directory at them,
    /// unsynced: a copy reads exactly as its original, which stays on disk
    /// until `finish_compaction` syncs the copies and only then removes the
    /// segment. A crash before that finds the original (the copy, if torn,
    /// is an unsynced tail). So no fsync is paid under the store's lock per
    /// step, only one per segment compacted.
    fn rewrite(&mut self, frames: Vec<PendingFrame>) -> Result<(), WriteError> {
        let (placed, _) = self.append_frames(&frames)?;
        for (frame, at) in frames.into_iter().zip(placed) {
            self.stats.compaction_bytes_rewritten += frame.bytes.len() as u64;
            let (dk, live) = (frame.dir_key, frame.live);
            if let Some(previous) = self.keydir.insert(dk.clone(), at.entry(live)) {
                self.retire(previous, dk[0]);
            }
            if live {
                *self.live_keys.entry(dk[0]).or_insert(0) += 1;
            }
        }
        Ok(())
    }

    /// Tell the observer (if any) the context of the markers about to be collected.
    /// A record that no longer reads (damaged) covered at most every dot this store
    /// minted, so that bound stands in for it.
    fn report_collected(&self, dk: &[u8]) {
        let (Some(observer), Some(entry)) = (&self.observer, self.keydir.get(dk)) else {
            return;
        };
        let context = match self.read_record(*entry) {
            Ok(body) => body.set.context,
            Err(_) => {
                let mut bound = VersionVector::new();
                let counter = self
                    .counter_issued_max
                    .max(self.counter_floor.saturating_sub(1));
                bound.add(Dot {
                    node: self.options.node_id,
                    counter,
                });
                bound
            }
        };
        observer.collected(dk[0], &dk[3..], &context);
    }

    /// Remove `segment`, whose copies `rewrite` appended unsynced and
    /// `compaction_synced` was told are now durable (a rotation since synced
    /// those in a sealed segment).
    fn finish_compaction(&mut self, segment: u32) -> Result<(), WriteError> {
        debug_assert!(self.keydir.values().all(|e| e.segment != segment));
        debug_assert!(!self.staged.in_segment(segment));
        self.segments.remove(&segment);
        // Unlisted first: a crash before the file goes leaves a leftover the
        // next open removes, never a listed segment that is gone.
        self.save_catalog().map_err(WriteError::Disk)?;
        self.owe_removal(segment);
        self.stats.compactions_done += 1;
        Ok(())
    }
}
