//! A histogram with fixed bucket bounds, counted with atomics so that every
//! connection and the committer record into it without a lock. Values are
//! whole units (microseconds, operations); the exporter scales them.
//!
//! Must not touch: how histograms are exported (`metrics`), what is measured
//! (the callers).

use std::sync::atomic::{AtomicU64, Ordering};

/// Command and fsync latency bounds, in microseconds (50 us .. 10 s).
pub const LATENCY_BOUNDS_MICROS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Group-commit batch sizes, in operations.
pub const BATCH_OPS_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then one for values above the last bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A histogram read at one moment: per-bucket counts (not cumulative), each
/// with its upper bound; the last bound is `u64::MAX` (+Inf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(u64, u64)>,
    pub sum: u64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Count `value` in the first bucket whose bound is at least it.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([u64::MAX])
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding quantile `q` (0..=1) of the
    /// values; `None` when empty. `u64::MAX` means above the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bound, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(*bound);
            }
        }
        self.buckets.last().map(|(bound, _)| *bound)
    }

    /// What was observed since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|((bound, now), (_, then))| (*bound, now.saturating_sub(*then)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_at_least_as_large() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5_000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(10, 2), (100, 2), (u64::MAX, 2)]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 5_222);
    }

    #[test]
    fn quantiles_name_the_bucket_that_holds_them() {
        let h = Histogram::new(&[10, 100, 1_000]);
        assert_eq!(h.snapshot().quantile_bound(0.5), None);
        for _ in 0..98 {
            h.observe(5);
        }
        h.observe(50);
        h.observe(500);
        let s = h.snapshot();
        assert_eq!(s.quantile_bound(0.5), Some(10));
        assert_eq!(s.quantile_bound(0.99), Some(100));
        assert_eq!(s.quantile_bound(1.0), Some(1_000));
        let before = s.clone();
        h.observe(5_000);
        let delta = h.snapshot().since(&before);
        assert_eq!(delta.count, 1);
        assert_eq!(delta.quantile_bound(0.5), Some(u64::MAX));
    }
}
