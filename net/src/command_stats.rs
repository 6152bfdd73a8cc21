//! Per-command counters: calls, failed calls and time spent, indexed by the
//! command's place in the command table, plus one latency histogram of every
//! command. Atomics only: each connection records after each reply.
//!
//! Must not touch: the command table itself (`commands`), export (`metrics`).

use crate::histogram::{Histogram, LATENCY_BOUNDS_MICROS};
use std::sync::atomic::{AtomicU64, Ordering};

/// Command table entries counted; the table is checked against it in a test.
pub const COMMAND_KINDS_MAX: usize = 128;

pub struct CommandStats {
    calls: Box<[AtomicU64]>,
    failed: Box<[AtomicU64]>,
    micros: Box<[AtomicU64]>,
    /// Every command's latency, from its request parsed to its reply known.
    pub latency_micros: Histogram,
}

/// One command's counters, read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandCounts {
    pub calls: u64,
    /// Calls answered with an error.
    pub failed: u64,
    pub micros: u64,
}

impl Default for CommandStats {
    fn default() -> Self {
        let zeros = || (0..COMMAND_KINDS_MAX).map(|_| AtomicU64::new(0)).collect();
        CommandStats {
            calls: zeros(),
            failed: zeros(),
            micros: zeros(),
            latency_micros: Histogram::new(LATENCY_BOUNDS_MICROS),
        }
    }
}

impl CommandStats {
    /// Count one call of table entry `kind` that took `micros` and failed or not.
    pub fn record(&self, kind: usize, micros: u64, failed: bool) {
        debug_assert!(kind < COMMAND_KINDS_MAX, "command kind {kind} not counted");
        let Some(calls) = self.calls.get(kind) else {
            return;
        };
        calls.fetch_add(1, Ordering::Relaxed);
        self.micros[kind].fetch_add(micros, Ordering::Relaxed);
        if failed {
            self.failed[kind].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_micros.observe(micros);
    }

    pub fn counts(&self, kind: usize) -> CommandCounts {
        CommandCounts {
            calls: self.calls[kind].load(Ordering::Relaxed),
            failed: self.failed[kind].load(Ordering::Relaxed),
            micros: self.micros[kind].load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_failures_and_time_add_up_per_kind() {
        let stats = CommandStats::default();
        stats.record(3, 120, false);
        stats.record(3, 80, true);
        stats.record(5, 7, false);
        assert_eq!(
            stats.counts(3),
            CommandCounts {
                calls: 2,
                failed: 1,
                micros: 200
            }
        );
        assert_eq!(stats.counts(5).calls, 1);
        assert_eq!(stats.counts(4), CommandCounts::default());
        assert_eq!(stats.latency_micros.snapshot().count, 3);
    }
}
