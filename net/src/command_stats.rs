//! Per-command counters: calls, failed calls and time spent, indexed by the
//! command's place in the command table, plus one latency histogram of every
//! command. Atomics only: each connection records after each reply.
//!
//! Must not touch: the command table itself (`commands`), export (`metrics`).

use crate::histogram::{Histogram, LATENCY_BOUNDS_MICROS};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Command table entries counted; the table is checked against it in a test.
pub const COMMAND_KINDS_MAX: usize = 256;
/// Distinct error codes counted (INFO errorstats); later new codes count as
/// `OTHER`.
pub const ERROR_CODES_MAX: usize = 128;

pub struct CommandStats {
    calls: Box<[AtomicU64]>,
    failed: Box<[AtomicU64]>,
    micros: Box<[AtomicU64]>,
    /// Every command's latency, from its request parsed to its reply known.
    pub latency_micros: Histogram,
    /// Error replies by their first word (`ERR`, `WRONGPASS`, `NOQUORUM`, ...).
    errors: Mutex<BTreeMap<String, u64>>,
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
            errors: Mutex::default(),
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

    /// Count one error reply by its code, the first word of `message`.
    pub fn record_error(&self, message: &str) {
        let code = message.split(' ').next().unwrap_or_default();
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let code = if errors.contains_key(code) || errors.len() < ERROR_CODES_MAX {
            code
        } else {
            "OTHER"
        };
        *errors.entry(code.to_string()).or_default() += 1;
    }

    /// Error replies by code, in code order.
    pub fn errors(&self) -> Vec<(String, u64)> {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.iter().map(|(code, n)| (code.clone(), *n)).collect()
    }

    /// CONFIG RESETSTAT: every counter and error count back to zero (the
    /// latency histogram, a Prometheus counter, keeps counting).
    pub fn reset(&self) {
        for counter in self.calls.iter().chain(&*self.failed).chain(&*self.micros) {
            counter.store(0, Ordering::Relaxed);
        }
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn counts(&self, kind: usize) -> CommandCounts {
        CommandCounts {
            calls: self.calls[kind].load(Ordering::Relaxed),
            failed: self.failed[kind].load(Ordering::Relaxed),
            micros: self.micros[kind].load(Ordering::Relaxed),
        }
    }
}

/// Lookups of keys by reading commands (GET, MGET, EXISTS, TYPE, ...): found
/// live or not (INFO's keyspace_hits and keyspace_misses).
#[derive(Default)]
pub struct KeyspaceStats {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl KeyspaceStats {
    pub fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
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

    #[test]
    fn errors_count_by_code_and_distinct_codes_are_bounded() {
        let stats = CommandStats::default();
        stats.record_error("ERR syntax error");
        stats.record_error("ERR unknown command");
        stats.record_error("NOQUORUM write is durable on 1 of 2");
        assert_eq!(
            stats.errors(),
            vec![("ERR".to_string(), 2), ("NOQUORUM".to_string(), 1)]
        );
        for i in 0..ERROR_CODES_MAX {
            stats.record_error(&format!("CODE{i} x"));
        }
        let errors = stats.errors();
        assert_eq!(errors.len(), ERROR_CODES_MAX + 1, "the codes, then OTHER");
        assert!(errors.contains(&("OTHER".to_string(), 2)));
    }
}
