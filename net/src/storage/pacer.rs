//! Compaction pacing, sans-IO: how much compaction the committer owes, and when
//! to do it. Every byte written adds `bytes_per_written_byte` of debt; every
//! `interval_ms` adds `budget_bytes` (so an idle store still compacts) and asks for
//! the tick's other work (the `SYNCED` mark). The committer pays the debt in steps
//! of at most [`STEP_BYTES_MAX`] live bytes, one at a time beside its batches, and
//! holds new batches back while the debt is more than a couple of steps ahead of the
//! step under way, so a sustained load slows by the compaction it causes instead of
//! stalling for a whole tick, and the disk cannot outgrow the compaction
//! threshold's bound (a segment `d` dead moves `1 - d` live bytes per `d` freed:
//! at 2 bytes of debt per byte written, space is freed as fast as overwrites make
//! it dead once the segments compacted are a third dead or more).
//!
//! Time comes in as an argument; decisions go out as data. No I/O, no clock.

use shoal_engine::CompactionProgress;

/// Live bytes one compaction step may move under the store's lock.
pub const STEP_BYTES_MAX: u64 = 2 << 20;
/// Debt the pacer carries at most: a burst of writes after a long idle stretch
/// is paid for by this much, not by everything since.
pub const DEBT_BYTES_MAX: u64 = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacerConfig {
    pub interval_ms: u64,
    /// Debt added every `interval_ms`.
    pub budget_bytes: u64,
    /// Debt added per byte written.
    pub bytes_per_written_byte: u64,
}

#[derive(Debug)]
pub struct Pacer {
    config: PacerConfig,
    debt_bytes: u64,
    tick_due_ms: u64,
    /// The last step could not move on until a batch in flight is published.
    waiting_for_publish: bool,
}

impl Pacer {
    pub fn new(config: PacerConfig, now_ms: u64) -> Pacer {
        Pacer {
            config,
            debt_bytes: 0,
            tick_due_ms: now_ms.saturating_add(config.interval_ms),
            waiting_for_publish: false,
        }
    }

    /// A batch of `bytes` of keys and values was written.
    pub fn wrote(&mut self, bytes: u64) {
        if cfg!(feature = "bug-compaction-by-clock") {
            return; // planted: only the clock's budget, whatever the writes
        }
        let owed = bytes.saturating_mul(self.config.bytes_per_written_byte);
        self.debt_bytes = self.debt_bytes.saturating_add(owed).min(DEBT_BYTES_MAX);
    }

    /// A batch was published (or failed): a step waiting on it may go on.
    pub fn published(&mut self) {
        self.waiting_for_publish = false;
    }

    /// Whether the tick is due at `now_ms`; if so, it is taken: the idle budget
    /// is added and the next tick scheduled.
    pub fn take_tick(&mut self, now_ms: u64) -> bool {
        if now_ms < self.tick_due_ms {
            return false;
        }
        self.debt_bytes = self
            .debt_bytes
            .saturating_add(self.config.budget_bytes)
            .min(DEBT_BYTES_MAX);
        self.tick_due_ms = now_ms.saturating_add(self.config.interval_ms);
        self.waiting_for_publish = false;
        true
    }

    /// Compaction owed and not yet paid.
    pub fn owed_bytes(&self) -> u64 {
        self.debt_bytes
    }

    /// The budget of the next step, if one should run now.
    pub fn next_step_bytes(&self) -> Option<u64> {
        (self.debt_bytes > 0 && !self.waiting_for_publish)
            .then(|| self.debt_bytes.min(STEP_BYTES_MAX))
    }

    /// What a step did. Nothing to compact, or a failure, clears the debt (the
    /// next tick tries again); a step that moved nothing and did not finish is
    /// waiting on a batch in flight.
    pub fn stepped(&mut self, outcome: Result<(&CompactionProgress, u64), ()>) {
        match outcome {
            Ok((CompactionProgress::Idle, _)) | Err(()) => self.debt_bytes = 0,
            Ok((CompactionProgress::Running { .. }, 0)) => self.waiting_for_publish = true,
            Ok((_, spent_bytes)) => {
                self.debt_bytes = self.debt_bytes.saturating_sub(spent_bytes.max(1));
            }
        }
    }

    /// How long the committer may wait for a write before it has work here.
    pub fn idle_wait_ms(&self, now_ms: u64) -> u64 {
        if self.next_step_bytes().is_some() {
            0
        } else {
            self.tick_due_ms.saturating_sub(now_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer() -> Pacer {
        let config = PacerConfig {
            interval_ms: 1000,
            budget_bytes: 4 << 20,
            bytes_per_written_byte: 2,
        };
        Pacer::new(config, 0)
    }

    fn running(spent_bytes: u64) -> (CompactionProgress, u64) {
        let progress = CompactionProgress::Running {
            segment: 1,
            done: 1,
            total: 2,
        };
        (progress, spent_bytes)
    }

    #[test]
    fn writes_owe_twice_their_bytes_paid_in_bounded_steps() {
        let mut p = pacer();
        assert_eq!(p.next_step_bytes(), None);
        p.wrote(5 << 20);
        assert_eq!(p.next_step_bytes(), Some(STEP_BYTES_MAX));
        let (progress, _) = running(0);
        p.stepped(Ok((&progress, STEP_BYTES_MAX)));
        assert_eq!(p.next_step_bytes(), Some(STEP_BYTES_MAX));
        p.stepped(Ok((&progress, (9 << 20) - STEP_BYTES_MAX)));
        assert_eq!(
            p.next_step_bytes(),
            Some(1 << 20),
            "what is left, below a step"
        );
        p.stepped(Ok((&CompactionProgress::Finished { segment: 1 }, 3 << 20)));
        assert_eq!(p.next_step_bytes(), None);
        assert_eq!(p.idle_wait_ms(10), 990);
    }

    #[test]
    fn debt_is_capped_and_cleared_when_nothing_is_left_to_compact() {
        let mut p = pacer();
        p.wrote(u64::MAX / 4);
        assert_eq!(p.debt_bytes, DEBT_BYTES_MAX);
        p.stepped(Ok((&CompactionProgress::Idle, 0)));
        assert_eq!(p.next_step_bytes(), None);
        p.wrote(1);
        p.stepped(Err(()));
        assert_eq!(p.next_step_bytes(), None);
    }

    #[test]
    fn a_step_stuck_on_a_batch_in_flight_waits_for_its_publish() {
        let mut p = pacer();
        p.wrote(1 << 20);
        let (progress, spent) = running(0);
        p.stepped(Ok((&progress, spent)));
        assert_eq!(p.next_step_bytes(), None);
        assert_eq!(p.idle_wait_ms(0), 1000, "no busy loop while it waits");
        p.published();
        assert_eq!(p.next_step_bytes(), Some(2 << 20));
    }

    #[test]
    fn the_tick_adds_the_idle_budget_once_per_interval() {
        let mut p = pacer();
        assert!(!p.take_tick(999));
        assert!(p.take_tick(1000));
        assert!(!p.take_tick(1500));
        assert_eq!(p.debt_bytes, 4 << 20);
        assert_eq!(p.next_step_bytes(), Some(STEP_BYTES_MAX.min(4 << 20)));
        assert!(p.take_tick(2000));
        assert_eq!(p.debt_bytes, 8 << 20);
    }
}
