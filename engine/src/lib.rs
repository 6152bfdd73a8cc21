//! `shoal-engine` owns everything in Shoal that decides: the storage engine
//! (segments, key directory, recovery, compaction), versions (sibling sets with
//! dotted version vectors, hybrid logical clock), key slots, and the seams the rest
//! of the system plugs into (`Disk`, `Runtime`).
//!
//! It must not touch the world: no tokio, no sockets, no `std::fs`, no `std::time`,
//! no thread RNG, no `HashMap` iteration order. Whatever it needs comes through the
//! [`disk::DiskDir`] and [`runtime::Runtime`] traits, so the same code runs in
//! production and in the deterministic simulator.

pub mod cluster;
pub mod commit_order;
pub mod counter;
pub mod digest;
pub mod disk;
pub mod fields;
pub mod memdisk;
pub mod placement;
pub mod record;
pub mod rng;
pub mod runtime;
pub mod slot;
pub mod store;
pub mod version;

pub use disk::{Disk, DiskDir, DiskError};
pub use store::modify::{Modify, ModifyError};
pub use store::{
    Applied, Change, Chore, CompactionProgress, Condition, Covers, Deadline, OpenError,
    PreparedBatch, ReadError, RecoveryReport, Store, StoreObserver, StoreOptions, StoreStats,
    TakeEnd, WriteError, WriteOp, WriteOutcome,
};
pub use version::{Dot, Hlc, NodeId, Sibling, SiblingSet, VersionVector};
