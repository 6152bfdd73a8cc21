//! One way to boot a node: open its store (a cluster node sets damaged synced
//! data aside and restores it from its replicas), open its hint store, start
//! the committers, then the cluster driver. The `shoal` binary and both
//! simulations (`shoal-sim`'s single node and cluster members) call
//! [`start_node`], so the simulator runs the production wiring. What differs
//! between them comes in as arguments: the directory, the runtime, a test
//! harness's hooks ([`BootHooks`]), and what to do about an error (the binary
//! exits; the simulator's supervisor retries a disk error).
//!
//! Must not touch: sockets other than the cluster's peer listener (the client
//! listener is the caller's), the process (exit codes, signals), `std::fs`.

use crate::cluster::{self, Cluster, ClusterClock, ClusterConfig, Rebuilt, StartError};
use crate::storage::{Storage, StorageConfig};
use shoal_engine::runtime::Runtime;
use shoal_engine::store::{OpenError, RecoveryReport};
use shoal_engine::{DiskDir, Store, StoreOptions};
use std::fmt;
use std::sync::Arc;

/// What a node is: its store's options, its committer's, and its cluster's
/// (`None`: a single node).
#[derive(Clone, Debug)]
pub struct NodeSetup {
    pub store: StoreOptions,
    pub storage: StorageConfig,
    pub cluster: Option<ClusterConfig>,
}

/// A booted node: what the RESP server and a test harness need.
pub struct BootedNode {
    pub storage: Storage,
    /// The hint store (cluster nodes).
    pub hints: Option<Storage>,
    pub cluster: Option<Arc<Cluster>>,
    pub report: RecoveryReport,
    /// Set when damaged synced data was set aside (cluster nodes).
    pub rebuilt: Option<Rebuilt>,
}

/// A test harness's view of the boot (the binary passes [`NoHooks`]).
pub trait BootHooks {
    /// The store is open and nothing has been written through it yet.
    fn store_opened(&self, _store: &mut Store) {}
    /// The committers run: from here on the node may serve its peers (the
    /// cluster start's incarnation check waits for them), so a harness that
    /// audits the node's data must read these storages from now on.
    fn storages_started(&self, _storage: &Storage, _hints: Option<&Storage>) {}
}

/// No hooks: the production boot.
pub struct NoHooks;

impl BootHooks for NoHooks {}

/// Why a node could not boot.
#[non_exhaustive]
#[derive(Debug)]
pub enum BootError {
    /// The store did not open: damaged synced data on a single node (or a
    /// cluster node told not to rebuild), a disk error, a full disk.
    Store(OpenError),
    /// The hint store did not open.
    HintStore(OpenError),
    /// The cluster driver did not start.
    Cluster(StartError),
}

impl BootError {
    /// Whether the disk failed (a supervisor restarts the node; nothing in its
    /// configuration or data needs a person).
    pub fn is_disk_failure(&self) -> bool {
        match self {
            BootError::Store(e) | BootError::HintStore(e) => matches!(e, OpenError::Disk(_)),
            BootError::Cluster(e) => e.is_disk_failure(),
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Store(e) => write!(f, "{e}"),
            BootError::HintStore(e) => write!(f, "the hint store: {e}"),
            BootError::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BootError {}

/// Boot a node on `dir`: recover its store, start its committers and, for a
/// cluster member, its cluster driver. Both stores open before either
/// committer starts, so a caller may retry a failed boot from the top.
pub async fn start_node<R: Runtime + Clone>(
    dir: Arc<dyn DiskDir>,
    runtime: R,
    mut setup: NodeSetup,
    hooks: &dyn BootHooks,
) -> Result<BootedNode, BootError> {
    if setup.cluster.is_some() {
        // Another replica may still hold what a marker deleted: markers go
        // only by the cluster's agreement (`tombstones`), never by compaction.
        setup.store.delete_markers_collectable = false;
    }
    let (mut store, report, rebuilt) = match &setup.cluster {
        Some(config) => cluster::open_store(
            dir.clone(),
            setup.store.clone(),
            config.rebuild_damaged,
            ClusterClock::random_u64(&runtime),
        ),
        None => Store::open(dir.clone(), setup.store.clone()).map(|(s, r)| (s, r, None)),
    }
    .map_err(BootError::Store)?;
    let hint_store = match setup.cluster {
        Some(_) => {
            let (hint_dir, hint_options) =
                shoal_engine::cluster::hints::hint_store_location(dir.clone(), &setup.store);
            let (hint_store, _) =
                Store::open(hint_dir, hint_options).map_err(BootError::HintStore)?;
            Some(hint_store)
        }
        None => None,
    };
    hooks.store_opened(&mut store);
    let storage = Storage::start(store, setup.storage.clone(), runtime.clone());
    let hints = hint_store.map(|s| Storage::start(s, setup.storage.clone(), runtime.clone()));
    hooks.storages_started(&storage, hints.as_ref());
    if setup.cluster.is_none() {
        // A cluster's keys are deleted by their coordinators instead, through
        // the write path (`cluster/expiry.rs`): a node must not delete alone
        // what its replicas hold.
        tokio::spawn(crate::expire::run_active_expiry(storage.clone()));
    }
    let cluster = match setup.cluster {
        Some(config) => Some(
            Cluster::start(
                config,
                storage.clone(),
                hints.clone(),
                Arc::new(runtime),
                report.incarnation,
            )
            .await
            .map_err(BootError::Cluster)?,
        ),
        None => None,
    };
    crate::scrub::spawn(&storage, cluster.clone(), &setup.storage);
    Ok(BootedNode {
        storage,
        hints,
        cluster,
        report,
        rebuilt,
    })
}
