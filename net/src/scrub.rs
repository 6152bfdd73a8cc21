//! The scrubber's driver: a paced walk over every live record
//! ([`Store::scrub_step`](shoal_engine::store::Store::scrub_step)), so that a
//! byte gone bad in synced data is found while the node runs rather than when
//! a client or a restart needs it, and what the node does with damage that
//! reads or the walk found: a cluster member sets it aside and restores it
//! from its replicas ([`Cluster::set_damage_aside`]); a single node reports
//! it (the keys answer an error naming the segment and offset until written
//! again, and `shoal inspect` / `shoal salvage` take it from there).
//!
//! Must not touch: the store's format, how a cluster repairs (`cluster`).

use crate::cluster::Cluster;
use crate::storage::{Storage, StorageConfig};
use shoal_engine::store::{DamagedRecord, ScrubCursor};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How often the driver wakes: a step of the walk, then any damage found.
pub const SCRUB_TICK_MS: u64 = 100;

/// Records one step reads at most (besides its bytes), so a store of tiny
/// records holds the shared lock (which the committer's publish waits for)
/// no longer than one of large ones: a step of 1,024 records of 100 bytes
/// took 371 us here (median of 50, page cache warm; 4.6 ms at most, with
/// two simulator sweeps on both cores). 10,240 records a second walk a
/// million keys in under two minutes.
const SCRUB_RECORDS_PER_STEP_MAX: u64 = 1024;

/// Damaged records named one by one in a log line (the rest are counted).
const DAMAGE_NAMED_MAX: usize = 8;

/// What the scrubber did since the node started.
#[derive(Debug, Default)]
pub struct ScrubStats {
    /// Walks over every live record finished.
    pub passes: AtomicU64,
    pub records_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Damaged records found (by the walk or by reads) and dealt with: set
    /// aside for a restore on a cluster, reported on a single node.
    pub records_damaged: AtomicU64,
}

/// Start the scrubber of `storage` at the pace its config sets.
pub fn spawn(storage: &Storage, cluster: Option<Arc<Cluster>>, config: &StorageConfig) {
    let pace = ScrubPace {
        bytes_per_sec: config.scrub_bytes_per_sec,
        pass_interval_ms: config.scrub_pass_interval_ms,
    };
    tokio::spawn(run_scrub(storage.clone(), cluster, pace));
}

/// Walk the store at `pace` (no walk at 0 bytes per second; damage reads
/// find is still dealt with), forever.
pub async fn run_scrub(storage: Storage, cluster: Option<Arc<Cluster>>, pace: ScrubPace) {
    let bytes_per_step = pace.bytes_per_sec * SCRUB_TICK_MS / 1000;
    let interval = Duration::from_millis(pace.pass_interval_ms);
    let mut cursor = ScrubCursor::default();
    let mut next_pass_at = tokio::time::Instant::now();
    let stats = storage.scrub_stats();
    loop {
        tokio::time::sleep(Duration::from_millis(SCRUB_TICK_MS)).await;
        let starting = cursor == ScrubCursor::default();
        let now = tokio::time::Instant::now();
        if bytes_per_step > 0 && !(starting && now < next_pass_at) {
            if starting {
                next_pass_at = now + interval;
            }
            let (next, step) =
                storage.read(|s| s.scrub_step(&cursor, bytes_per_step, SCRUB_RECORDS_PER_STEP_MAX));
            cursor = next;
            stats.records_read.fetch_add(step.records_read, Relaxed);
            stats.bytes_read.fetch_add(step.bytes_read, Relaxed);
            stats.passes.fetch_add(u64::from(step.pass_done), Relaxed);
        }
        deal_with_damage(&storage, cluster.as_ref(), stats).await;
    }
}

/// How fast the scrubber walks (`StorageConfig::scrub_bytes_per_sec`,
/// `scrub_pass_interval_ms`).
#[derive(Clone, Copy, Debug)]
pub struct ScrubPace {
    pub bytes_per_sec: u64,
    pub pass_interval_ms: u64,
}

/// Set the damage registered since the last look aside (a cluster member) or
/// report it (a single node); nothing when none was (the drain is then one
/// look at an empty register).
async fn deal_with_damage(storage: &Storage, cluster: Option<&Arc<Cluster>>, stats: &ScrubStats) {
    let damaged = storage.read(|s| s.drain_damage_found());
    if damaged.is_empty() {
        return;
    }
    stats
        .records_damaged
        .fetch_add(damaged.len() as u64, Relaxed);
    match cluster {
        Some(cluster) => cluster.set_damage_aside(&damaged).await,
        None => tracing::error!(
            "synced data went bad under the running node: {}; those keys answer an error until written again (run `shoal inspect --check`, and `shoal salvage` to keep what survives)",
            describe_damage(&damaged)
        ),
    }
}

/// `damaged`, the first few named by key, segment and offset.
pub fn describe_damage(damaged: &[DamagedRecord]) -> String {
    let named: Vec<String> = (damaged.iter().take(DAMAGE_NAMED_MAX))
        .map(|d| {
            format!(
                "key {:?} (namespace {}) in segment {} at offset {}",
                String::from_utf8_lossy(&d.key),
                d.namespace,
                d.segment,
                d.offset
            )
        })
        .collect();
    let more = damaged.len().saturating_sub(DAMAGE_NAMED_MAX);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} damaged record(s): {}{more}",
        damaged.len(),
        named.join(", ")
    )
}
