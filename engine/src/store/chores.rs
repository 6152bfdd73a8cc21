//! Disk work the store owes but need not do under its lock: a sealed segment's
//! hint, and the files of a compacted segment once the catalog no longer lists
//! them. Each needs only files whose contents no longer change, so the driver
//! runs them off the lock and the store keeps serving (both once held it for
//! 110 to 190 ms per 128 MiB segment under load: the hint's scan of the whole
//! directory, and ext4's unlink of a large file). Until a driver says it takes
//! them ([`Store::defer_chores`]) the store runs each where it arises.
//!
//! A segment whose hint is owed or being written is no compaction candidate,
//! so its files cannot be removed under the job.

use super::hint::HintJob;
use super::{hint_file_name, segment_file_name, Store};
use crate::disk::{DiskDir, DiskError};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Chores owed at once, at most: a step owes one or two (a rotation's hint,
/// a compaction's removal) and the driver takes them after each step.
const CHORES_OWED_MAX: usize = 64;

/// One piece of owed disk work; [`Chore::run`] it without the store's lock,
/// then tell the store with [`Store::chore_done`].
pub enum Chore {
    /// Write a sealed segment's hint.
    Hint(HintJob),
    /// Remove a compacted segment's files (already unlisted from the catalog: a
    /// crash before this leaves leftovers the next open removes).
    Remove(Removal),
}

pub struct Removal {
    dir: Arc<dyn DiskDir>,
    segment_id: u32,
}

impl Chore {
    /// The segment the work is about.
    pub fn segment_id(&self) -> u32 {
        match self {
            Chore::Hint(job) => job.segment_id(),
            Chore::Remove(removal) => removal.segment_id,
        }
    }

    pub fn run(&self) -> Result<(), DiskError> {
        match self {
            Chore::Hint(job) => job.run(),
            Chore::Remove(removal) => removal.run(),
        }
    }
}

impl Removal {
    fn run(&self) -> Result<(), DiskError> {
        let id = self.segment_id;
        for name in [hint_file_name(id), segment_file_name(id)] {
            match self.dir.remove(&name) {
                Ok(()) | Err(DiskError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.dir.sync_dir()
    }
}

/// Chores owed and not yet handed out, and the segments whose hint is pending.
#[derive(Default)]
pub(crate) struct Chores {
    deferred: bool,
    owed: Vec<Chore>,
    hints_pending: BTreeSet<u32>,
}

impl Chores {
    pub(crate) fn hint_pending(&self, segment_id: u32) -> bool {
        self.hints_pending.contains(&segment_id)
    }
}

impl Store {
    /// From now on, leave the chores for the caller to take
    /// ([`Store::take_chores`]) after every prepare and compaction step.
    pub fn defer_chores(&mut self) {
        self.chores.deferred = true;
    }

    /// Owe `chore`: run it now, or leave it for the driver.
    fn owe(&mut self, chore: Chore) {
        if let Chore::Hint(job) = &chore {
            self.chores.hints_pending.insert(job.segment_id());
        }
        if self.chores.deferred {
            self.chores.owed.push(chore);
            assert!(
                self.chores.owed.len() <= CHORES_OWED_MAX,
                "the driver takes the chores after every step that owes one"
            );
        } else {
            let result = chore.run();
            self.chore_done(&chore, result);
        }
    }

    /// The hint of the segment just sealed.
    pub(crate) fn owe_hint(&mut self, segment_id: u32) {
        let job = self.hint_job(segment_id);
        self.owe(Chore::Hint(job));
    }

    /// The files of a segment compaction just unlisted.
    pub(crate) fn owe_removal(&mut self, segment_id: u32) {
        let removal = Removal {
            dir: self.dir.clone(),
            segment_id,
        };
        self.owe(Chore::Remove(removal));
    }

    /// Hand out the owed chores, to run without the store's lock.
    pub fn take_chores(&mut self) -> Vec<Chore> {
        std::mem::take(&mut self.chores.owed)
    }

    /// A chore ran. A failed hint only slows the next open (it scans the
    /// segment); a failed removal leaves files the next open removes.
    pub fn chore_done(&mut self, chore: &Chore, result: Result<(), DiskError>) {
        match chore {
            Chore::Hint(job) => {
                self.chores.hints_pending.remove(&job.segment_id());
                self.stats.hints_written += u64::from(result.is_ok());
            }
            Chore::Remove(_) => {}
        }
        if result.is_err() {
            self.stats.chores_failed += 1;
        }
    }
}
