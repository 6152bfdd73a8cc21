//! The slow log (SLOWLOG) and the latency monitor (LATENCY): what took long on
//! this node, kept in memory, bounded, and set at run time by CONFIG SET.
//! A command's time is measured from its parse to its reply being ready, so a
//! write's includes its fsync (and on a cluster, its quorum round): the time a
//! client waited, not only the time a core spent.
//!
//! Must not touch: sockets, storage, the command table.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Arguments one slow-log entry keeps; the last one kept says how many more
/// there were.
pub const SLOWLOG_ARGS_MAX: usize = 32;
/// Bytes one argument keeps; a longer one says how many more bytes it had.
pub const SLOWLOG_ARG_BYTES_MAX: usize = 128;
/// Entries the slow log may be set to keep (slowlog-max-len).
pub const SLOWLOG_LEN_LIMIT: usize = 100_000;
/// Samples the latency monitor keeps per event, one per second at most.
pub const LATENCY_SAMPLES_MAX: usize = 160;
/// Events the latency monitor tracks (names are fixed by the code, so this
/// only guards against a mistake).
const LATENCY_EVENTS_MAX: usize = 16;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowEntry {
    pub id: u64,
    pub unix_s: u64,
    pub micros: u64,
    pub args: Vec<Bytes>,
    pub addr: String,
    pub name: Bytes,
}

pub struct SlowLog {
    /// slowlog-log-slower-than in microseconds; negative: off, 0: everything.
    threshold_us: AtomicI64,
    len_max: AtomicUsize,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            threshold_us: AtomicI64::new(10_000),
            len_max: AtomicUsize::new(128),
            next_id: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }
}

impl SlowLog {
    pub fn threshold_us(&self) -> i64 {
        self.threshold_us.load(Ordering::Relaxed)
    }

    pub fn set_threshold_us(&self, us: i64) {
        self.threshold_us.store(us, Ordering::Relaxed)
    }

    pub fn len_max(&self) -> usize {
        self.len_max.load(Ordering::Relaxed)
    }

    pub fn set_len_max(&self, len: usize) {
        assert!(len <= SLOWLOG_LEN_LIMIT, "CONFIG SET checks the limit");
        self.len_max.store(len, Ordering::Relaxed);
        let mut entries = locked(&self.entries);
        entries.truncate(len);
    }

    /// Whether a command should keep its arguments in case it is slow.
    pub fn enabled(&self) -> bool {
        self.threshold_us() >= 0 && self.len_max() > 0
    }

    /// Whether a command that took `micros` belongs in the log.
    pub fn is_slow(&self, micros: u64) -> bool {
        let threshold = self.threshold_us();
        threshold >= 0 && micros >= threshold as u64
    }

    /// The arguments an entry keeps, cut to the limits as Redis cuts them.
    pub fn kept_args(args: &[Bytes]) -> Vec<Bytes> {
        let mut kept = Vec::with_capacity(args.len().min(SLOWLOG_ARGS_MAX));
        for (i, arg) in args.iter().enumerate() {
            if i + 1 == SLOWLOG_ARGS_MAX && args.len() > SLOWLOG_ARGS_MAX {
                let more = args.len() - i;
                kept.push(Bytes::from(format!("... ({more} more arguments)")));
                break;
            }
            if arg.len() > SLOWLOG_ARG_BYTES_MAX {
                let more = arg.len() - SLOWLOG_ARG_BYTES_MAX;
                let mut cut = arg[..SLOWLOG_ARG_BYTES_MAX].to_vec();
                cut.extend_from_slice(format!("... ({more} more bytes)").as_bytes());
                kept.push(Bytes::from(cut));
            } else {
                kept.push(arg.clone());
            }
        }
        kept
    }

    pub fn record(&self, unix_s: u64, micros: u64, args: Vec<Bytes>, addr: &str, name: Bytes) {
        let len_max = self.len_max();
        if len_max == 0 {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = locked(&self.entries);
        entries.push_front(SlowEntry {
            id,
            unix_s,
            micros,
            args,
            addr: addr.to_string(),
            name,
        });
        entries.truncate(len_max);
    }

    /// The newest `count` entries (all when `None`), newest first.
    pub fn newest(&self, count: Option<usize>) -> Vec<SlowEntry> {
        let entries = locked(&self.entries);
        entries
            .iter()
            .take(count.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        locked(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        locked(&self.entries).clear();
    }
}

/// One latency event's history: (unix s, ms) samples, oldest first, and its max.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyEvent {
    pub samples: VecDeque<(u64, u64)>,
    pub max_ms: u64,
}

pub struct LatencyMonitor {
    /// latency-monitor-threshold in ms; 0: off (Redis's default).
    threshold_ms: AtomicU64,
    events: Mutex<BTreeMap<&'static str, LatencyEvent>>,
}

impl Default for LatencyMonitor {
    fn default() -> Self {
        LatencyMonitor {
            threshold_ms: AtomicU64::new(0),
            events: Mutex::default(),
        }
    }
}

impl LatencyMonitor {
    pub fn threshold_ms(&self) -> u64 {
        self.threshold_ms.load(Ordering::Relaxed)
    }

    pub fn set_threshold_ms(&self, ms: u64) {
        self.threshold_ms.store(ms, Ordering::Relaxed)
    }

    /// Note that `event` took `ms` at `unix_s`, if the monitor is on and it
    /// reached the threshold. Samples of one second keep their maximum.
    pub fn record(&self, event: &'static str, unix_s: u64, ms: u64) {
        let threshold = self.threshold_ms();
        if threshold == 0 || ms < threshold {
            return;
        }
        let mut events = locked(&self.events);
        assert!(
            events.len() < LATENCY_EVENTS_MAX || events.contains_key(event),
            "latency event names are fixed by the code"
        );
        let history = events.entry(event).or_default();
        history.max_ms = history.max_ms.max(ms);
        match history.samples.back_mut() {
            Some((at, worst)) if *at == unix_s => *worst = (*worst).max(ms),
            _ => {
                history.samples.push_back((unix_s, ms));
                if history.samples.len() > LATENCY_SAMPLES_MAX {
                    history.samples.pop_front();
                }
            }
        }
    }

    pub fn events(&self) -> BTreeMap<&'static str, LatencyEvent> {
        locked(&self.events).clone()
    }

    /// Forget the named events (all when empty); returns how many were reset.
    pub fn reset(&self, names: &[Bytes]) -> usize {
        let mut events = locked(&self.events);
        if names.is_empty() {
            let count = events.len();
            events.clear();
            return count;
        }
        let before = events.len();
        events.retain(|name, _| {
            !names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        });
        before - events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_entries_are_newest_first_and_bounded() {
        let log = SlowLog::default();
        log.set_len_max(2);
        for i in 0..3u64 {
            log.record(
                i,
                20_000,
                vec![Bytes::from(format!("c{i}"))],
                "a:1",
                Bytes::new(),
            );
        }
        let ids: Vec<u64> = log.newest(None).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert!(log.is_slow(10_000) && !log.is_slow(9_999));
        log.set_threshold_us(-1);
        assert!(!log.enabled() && !log.is_slow(u64::MAX));
    }

    #[test]
    fn long_commands_are_cut_as_redis_cuts_them() {
        let args: Vec<Bytes> = (0..40).map(|_| Bytes::from(vec![b'x'; 200])).collect();
        let kept = SlowLog::kept_args(&args);
        assert_eq!(kept.len(), SLOWLOG_ARGS_MAX);
        assert_eq!(kept[31], Bytes::from("... (9 more arguments)"));
        assert!(kept[0].ends_with(b"... (72 more bytes)"));
    }

    #[test]
    fn latency_keeps_one_sample_per_second_and_the_max() {
        let monitor = LatencyMonitor::default();
        monitor.record("command", 1, 500);
        assert!(monitor.events().is_empty(), "off by default");
        monitor.set_threshold_ms(100);
        monitor.record("command", 1, 50);
        monitor.record("command", 1, 120);
        monitor.record("command", 1, 300);
        monitor.record("command", 2, 150);
        let command = &monitor.events()["command"];
        assert_eq!(command.samples, VecDeque::from(vec![(1, 300), (2, 150)]));
        assert_eq!(command.max_ms, 300);
        assert_eq!(monitor.reset(&[Bytes::from("COMMAND")]), 1);
    }
}
