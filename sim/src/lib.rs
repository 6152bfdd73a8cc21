//! `shoal-sim` owns Shoal's deterministic simulation: a madsim world per seed in
//! which the real server (`shoal-net` built with `--cfg madsim`) runs on the
//! engine's in-memory disk with crash semantics, a fault plan derived from the
//! seed, workload clients that record a Jepsen-shaped history, and the checker's
//! verdict on it. A failing seed prints the one command that replays it.
//!
//! It must not change what it tests: it drives `shoal-engine` and `shoal-net`
//! through their public seams (`DiskDir`, `Runtime`, the RESP port) and judges
//! only through `shoal-checker`. No `std::time`, thread RNG or `HashMap` order in
//! its logic: simulated time, seeded SplitMix64 and `BTreeMap` only.
//!
//! Codemap: `plan` (scenario, swarm knobs and fault plan from the seed), `run`
//! (one seed, three phases, verdict), `node` (the node's init, its disk and clock),
//! `faults` (the supervisor that injects the plan), `workload` and `client` (the
//! RESP clients), `replies` (Shoal's replies in the checker's terms), `recorder`
//! (the history being written), `effects` (what the store did whatever its
//! clients learned, recorded for the checker), `digest` (the history digest),
//! `cluster` (cluster seeds: several real nodes with the cluster driver, crashes
//! with power loss, isolation and cut links, per-replica final reads),
//! `backup` (a backup taken during phase 1, restored and read after it),
//! `disk_bound` (the audit that compaction keeps the disk within twice the live
//! data), `typed` (counters and queues through Redis's commands, and phase 3's
//! drain of them).
//!
//! Only `plan`, `replies`, `typed`'s commands, `digest` and `disk_bound`'s judge exist outside
//! `--cfg madsim`: the rest needs madsim's runtime, so a normal workspace build
//! compiles this crate to them alone.

pub mod digest;
pub mod disk_bound;
pub mod plan;
pub mod replies;
pub mod typed;

#[cfg(madsim)]
pub mod backup;
#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod effects;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod heal;
#[cfg(madsim)]
pub mod node;
#[cfg(madsim)]
pub mod recorder;
#[cfg(madsim)]
pub mod run;
#[cfg(madsim)]
pub mod workload;

/// The single-node world's node id (its dots' actor, the node its clients'
/// operations name).
#[cfg(madsim)]
pub const NODE_ID: u32 = 1;

/// Lock a mutex, taking its data even if a panicking holder poisoned it (a
/// failing seed still reports).
#[cfg(madsim)]
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
