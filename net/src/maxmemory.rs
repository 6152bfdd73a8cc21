//! `maxmemory` with Redis's default policy, `noeviction`: once the process's
//! memory passes the limit, commands that can grow the data (the table's
//! `denyoom` flag: SET, LPUSH, HSET, ...) are refused with Redis's `OOM`
//! error, and reads, deletes and admin commands still run. A transaction
//! queueing such a command is aborted at EXEC, as in Redis. Shoal never
//! evicts: any other policy is refused by CONFIG SET.
//!
//! Used memory is the resident set (`info::rss_bytes`; Shoal has no counting
//! allocator, and values live on disk, so it is mostly the key directory),
//! sampled at most every `SAMPLE_INTERVAL_MS` while a limit is set; with
//! `maxmemory 0` (the default) nothing is sampled.
//!
//! Must not touch: data, storage, sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Redis's words for a refused command.
pub const OOM_ERROR: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// How stale the used-memory sample may be.
const SAMPLE_INTERVAL_MS: u64 = 100;

/// The limit, and the last sample of used memory.
#[derive(Default)]
pub struct MemoryLimit {
    max_bytes: AtomicU64,
    sample: Mutex<Option<(tokio::time::Instant, u64)>>,
}

impl MemoryLimit {
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Set the limit (0: none); the next check samples afresh.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        *self.sample.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a command that can grow the data must be refused now.
    pub fn exceeded(&self) -> bool {
        let max = self.max_bytes();
        max > 0 && self.used_bytes() > max
    }

    fn used_bytes(&self) -> u64 {
        let now = tokio::time::Instant::now();
        let mut sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        match *sample {
            Some((at, used))
                if now.duration_since(at).as_millis() < u128::from(SAMPLE_INTERVAL_MS) =>
            {
                used
            }
            _ => {
                let used = crate::info::rss_bytes();
                *sample = Some((now, used));
                used
            }
        }
    }
}

/// A CONFIG SET memory value: bytes, or with Redis's units (`100mb`, `1gb`,
/// `512k`; `k`/`m`/`g` are powers of 1000, `kb`/`mb`/`gb` of 1024).
pub fn parse_memory(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(digits_end);
    let unit_bytes: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_take_redis_units() {
        assert_eq!(parse_memory("0"), Some(0));
        assert_eq!(parse_memory("100mb"), Some(100 << 20));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("5k"), Some(5000));
        assert_eq!(parse_memory("12x"), None);
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn no_limit_refuses_nothing_and_a_tiny_one_refuses() {
        let limit = MemoryLimit::default();
        assert!(!limit.exceeded());
        limit.set_max_bytes(1);
        assert_eq!(limit.exceeded(), crate::info::rss_bytes() > 1);
    }
}
