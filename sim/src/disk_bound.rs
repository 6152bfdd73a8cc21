//! The disk-bound audit (DESIGN.md: under any sustained write load the disk stays
//! within twice the live data plus one segment per writer). Every
//! [`SAMPLE_INTERVAL_MS`] of phase 1 the node's store is sampled: the bytes
//! written in its segments against the bytes its key directory points at (live
//! records and the delete markers it keeps). Compaction that falls behind the
//! writes shows as the written bytes outgrowing the live ones.
//!
//! The bound, for a store that compacts segments at least `t` dead: every sealed
//! segment under the threshold is more than `1 - t` live, so the sealed ones
//! take at most `live / (1 - t)`; `t` is at most 50% in production (2×) and up to
//! 60% in some plans. On top of that come the active segment, the one being
//! compacted and one waiting, each at most a whole segment, and every segment
//! compaction had to leave because a record in it no longer reads. (The room a batch
//! leaves unfilled at the end of a sealed segment is not counted: it is set by
//! the batch and segment sizes, not by compaction; `ci/bench-disk` measures the
//! whole footprint on a real disk.)
//!
//! The judge is lenient about the moments it cannot promise anything: a sample
//! taken while the disk was full, an fsync had failed, or within
//! [`SETTLE_MS`] of either or of a restart is not judged.

#[cfg(madsim)]
use crate::recorder::Recorder;
#[cfg(madsim)]
use shoal_net::storage::Storage;
#[cfg(madsim)]
use std::sync::Mutex;

/// How often the store is sampled in phase 1.
pub const SAMPLE_INTERVAL_MS: u64 = 100;
/// Samples this soon after a disk fault or restart are not judged.
pub const SETTLE_MS: u64 = 2_000;
/// Samples kept (phase 1 is seconds long; a sample is a few words).
pub const SAMPLES_MAX: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSample {
    pub at_ms: u64,
    pub segments: u64,
    pub written_bytes: u64,
    pub dead_bytes: u64,
    /// Segments compaction left because a record in them no longer reads.
    pub damaged_segments: u64,
    /// A disk fault or restart was in force or recent: not judged.
    pub unsettled: bool,
}

/// What bounds a store's disk, from its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundKnobs {
    pub segment_size_bytes: u64,
    pub compaction_dead_percent_min: u64,
}

impl BoundKnobs {
    /// The most bytes a store with `live_bytes` may have written in its segments.
    pub fn bound_bytes(&self, live_bytes: u64, damaged_segments: u64) -> u64 {
        let live_percent = 100u64
            .saturating_sub(self.compaction_dead_percent_min)
            .max(1);
        let sealed_bytes = (live_bytes * 100)
            .div_ceil(live_percent)
            .max(live_bytes * 2);
        let in_motion_bytes = (3 + damaged_segments) * self.segment_size_bytes;
        sealed_bytes + in_motion_bytes
    }

    /// The first judged sample over the bound, as a failure to report.
    pub fn judge(&self, samples: &[DiskSample]) -> Option<String> {
        samples.iter().filter(|s| !s.unsettled).find_map(|s| {
            let live = s.written_bytes.saturating_sub(s.dead_bytes);
            let bound = self.bound_bytes(live, s.damaged_segments);
            (s.written_bytes > bound).then(|| {
                format!(
                    "disk bound: at {} ms the store's {} segments held {} bytes for {live} live bytes, over its bound of {bound} (compaction threshold {}%, segments of {} bytes): compaction fell behind the writes",
                    s.at_ms, s.segments, s.written_bytes, self.compaction_dead_percent_min, self.segment_size_bytes
                )
            })
        })
    }
}

/// Samples the node's store while phase 1 runs.
#[cfg(madsim)]
#[derive(Default)]
pub struct DiskSampler {
    samples: Mutex<Vec<DiskSample>>,
}

#[cfg(madsim)]
impl DiskSampler {
    /// Record one sample of `storage` (if the node is serving).
    pub fn sample(&self, storage: Option<&Storage>, unsettled: bool, recorder: &Recorder) {
        let Some(storage) = storage else { return };
        let (written_bytes, dead_bytes, segments, damaged_segments, poisoned) =
            storage.read(|store| {
                let (written, dead) = store.disk_usage_bytes();
                let damaged = store.stats().compaction_segments_damaged;
                let poisoned = store.is_poisoned().is_some();
                (
                    written,
                    dead,
                    store.segment_count() as u64,
                    damaged,
                    poisoned,
                )
            });
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < SAMPLES_MAX {
            samples.push(DiskSample {
                at_ms: recorder.now_ms(),
                segments,
                written_bytes,
                dead_bytes,
                damaged_segments,
                unsettled: unsettled || poisoned,
            });
        }
    }

    pub fn samples(&self) -> Vec<DiskSample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOBS: BoundKnobs = BoundKnobs {
        segment_size_bytes: 1000,
        compaction_dead_percent_min: 50,
    };

    fn sample(written_bytes: u64, live_bytes: u64) -> DiskSample {
        DiskSample {
            at_ms: 7,
            segments: 13,
            written_bytes,
            dead_bytes: written_bytes - live_bytes,
            damaged_segments: 0,
            unsettled: false,
        }
    }

    #[test]
    fn twice_the_live_data_plus_the_segments_in_motion() {
        // 2 × 4000 + 3 × 1000 = 11000 bytes.
        assert_eq!(KNOBS.bound_bytes(4000, 0), 11_000);
        assert_eq!(KNOBS.bound_bytes(4000, 2), 13_000, "damaged segments stay");
        assert_eq!(KNOBS.judge(&[sample(11_000, 4000)]), None);
        let failure = KNOBS
            .judge(&[sample(11_001, 4000)])
            .expect("over the bound");
        assert!(failure.contains("held 11001 bytes"), "{failure}");
    }

    #[test]
    fn a_higher_threshold_allows_more_and_unsettled_samples_are_not_judged() {
        let lax = BoundKnobs {
            compaction_dead_percent_min: 60,
            ..KNOBS
        };
        assert_eq!(lax.bound_bytes(4000, 0), 10_000 + 3000);
        let mut over = sample(40_000, 4000);
        over.unsettled = true;
        assert_eq!(KNOBS.judge(&[over]), None);
    }
}
