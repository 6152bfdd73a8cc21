//! The simulated Shoal node: the real server (`Store::open` -> `Storage::start` ->
//! `TcpListener::bind` -> `serve`) started by madsim's node init, so every restart
//! runs recovery again. What must outlive a crash lives here, outside the node: the
//! in-memory disk (`MemDir`), the crash trigger, the wall-clock skew and the node's
//! status as the supervisor sees it.

use crate::effects::EffectLog;
use crate::lock;
use shoal_engine::disk::{Disk, DiskDir, DiskError};
use shoal_engine::memdisk::MemDir;
use shoal_engine::runtime::{BoxFuture, Runtime};
use shoal_engine::{OpenError, Store, StoreOptions};
use shoal_net::node::{start_node, BootError, BootHooks, NodeSetup};
use shoal_net::runtime::TokioRuntime;
use shoal_net::server::{serve, ServerConfig, Shared};
use shoal_net::storage::{Fsync, Storage, StorageConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

pub const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
pub const NODE_PORT: u16 = 7379;
/// The node's id in dots and in the history.
pub use crate::NODE_ID;

pub fn node_addr() -> SocketAddr {
    SocketAddr::new(NODE_IP, NODE_PORT)
}

/// The node's life as the supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Init is running recovery.
    Starting,
    /// Recovered and serving. `recovery` says what recovery did (torn tail cut,
    /// segments scanned or loaded from hints).
    Up {
        incarnation: u64,
        recovery: String,
        /// (segment, offset, bytes) of a torn tail recovery cut off.
        torn_tail: Option<(u32, u64, u64)>,
    },
    /// `Store::open` refused: synced data is damaged (detected corruption).
    Refused(String),
    /// `Store::open` failed for another reason (e.g. no space); a later restart
    /// may succeed.
    OpenFailed(String),
    /// Killed and not yet restarted.
    Down,
}

/// Kills the node right after the `n`-th write to a segment file once armed, so the
/// power loss lands between a batch's write and its fsync. The node dies at its
/// next await: code after the write in the same synchronous step still runs.
pub struct CrashTrigger {
    state: Mutex<TriggerState>,
    fired: tokio::sync::Notify,
}

#[derive(Default)]
struct TriggerState {
    node: Option<madsim::task::NodeId>,
    writes_left: Option<u64>,
    fired_on: Option<String>,
}

impl CrashTrigger {
    fn new() -> CrashTrigger {
        CrashTrigger {
            state: Mutex::new(TriggerState::default()),
            fired: tokio::sync::Notify::new(),
        }
    }

    pub fn set_node(&self, node: madsim::task::NodeId) {
        lock(&self.state).node = Some(node);
    }

    pub fn arm(&self, nth_write: u64) {
        let mut state = lock(&self.state);
        state.writes_left = Some(nth_write.max(1));
        state.fired_on = None;
    }

    /// Disarm; returns the file whose write fired the trigger, if it fired.
    pub fn disarm(&self) -> Option<String> {
        let mut state = lock(&self.state);
        state.writes_left = None;
        state.fired_on.take()
    }

    pub fn has_fired(&self) -> bool {
        lock(&self.state).fired_on.is_some()
    }

    /// Wait until the trigger fires (the caller bounds the wait).
    pub async fn fired(&self) {
        self.fired.notified().await
    }

    fn after_write(&self, name: &str) {
        let mut state = lock(&self.state);
        let Some(left) = state.writes_left else {
            return;
        };
        if left > 1 {
            state.writes_left = Some(left - 1);
            return;
        }
        state.writes_left = None;
        state.fired_on = Some(name.to_string());
        let node = state.node;
        drop(state);
        if let Some(node) = node {
            madsim::runtime::Handle::current().kill(node);
        }
        self.fired.notify_one();
    }
}

/// The node's directory: the shared `MemDir`, with the crash trigger watching
/// segment writes.
struct TriggeredDir {
    inner: MemDir,
    trigger: Arc<CrashTrigger>,
}

struct TriggeredFile {
    inner: Arc<dyn Disk>,
    name: String,
    trigger: Arc<CrashTrigger>,
}

impl Disk for TriggeredFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.inner.write_at(offset, data)?;
        if self.name.ends_with(".log") {
            self.trigger.after_write(&self.name);
        }
        Ok(())
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), DiskError> {
        self.inner.set_len(len_bytes)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.inner.sync()
    }

    fn len(&self) -> Result<u64, DiskError> {
        self.inner.len()
    }
}

impl DiskDir for TriggeredDir {
    fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Disk>, DiskError> {
        Ok(Arc::new(TriggeredFile {
            inner: self.inner.open(name, create)?,
            name: name.to_string(),
            trigger: self.trigger.clone(),
        }))
    }

    fn list(&self) -> Result<Vec<String>, DiskError> {
        self.inner.list()
    }

    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.inner.remove(name)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self) -> Result<(), DiskError> {
        self.inner.sync_dir()
    }
}

/// The node's runtime: madsim's clock and tasks through `TokioRuntime`, with a
/// wall clock the fault plan can skew and jump (the hybrid logical clock feeds on
/// it; monotonic time is left alone).
#[derive(Clone)]
pub struct SkewedRuntime {
    inner: TokioRuntime,
    skew_ms: Arc<AtomicI64>,
}

impl SkewedRuntime {
    /// madsim's runtime with its wall clock moved by `skew_ms`.
    pub fn new(skew_ms: Arc<AtomicI64>) -> SkewedRuntime {
        SkewedRuntime {
            inner: TokioRuntime::new(),
            skew_ms,
        }
    }
}

impl Runtime for SkewedRuntime {
    fn wall_ms(&self) -> u64 {
        let wall_ms = self.inner.wall_ms() as i64 + self.skew_ms.load(Ordering::Relaxed);
        wall_ms.max(0) as u64
    }

    fn monotonic_ms(&self) -> u64 {
        self.inner.monotonic_ms()
    }

    fn sleep_ms(&self, duration_ms: u64) -> BoxFuture {
        self.inner.sleep_ms(duration_ms)
    }

    fn spawn(&self, task: BoxFuture) {
        self.inner.spawn(task)
    }

    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }
}

/// Everything the node's init needs, and everything that survives its crashes.
pub struct NodeWorld {
    pub memdir: MemDir,
    pub trigger: Arc<CrashTrigger>,
    pub skew_ms: Arc<AtomicI64>,
    status: Mutex<NodeStatus>,
    pub store_options: StoreOptions,
    pub storage_config: StorageConfig,
    /// What the store did, recorded in the history (see `effects`).
    effects: Arc<EffectLog>,
    /// The serving node's storage (for the disk-bound audit); none while down.
    storage: Mutex<Option<Storage>>,
}

impl BootHooks for NodeWorld {
    fn store_opened(&self, store: &mut Store) {
        self.effects.attach(store);
    }

    fn storages_started(&self, storage: &Storage, _hints: Option<&Storage>) {
        *lock(&self.storage) = Some(storage.clone());
    }
}

impl NodeWorld {
    pub fn new(
        store_options: StoreOptions,
        storage_config: StorageConfig,
        effects: Arc<EffectLog>,
    ) -> Arc<NodeWorld> {
        Arc::new(NodeWorld {
            memdir: MemDir::new(),
            trigger: Arc::new(CrashTrigger::new()),
            skew_ms: Arc::new(AtomicI64::new(0)),
            status: Mutex::new(NodeStatus::Starting),
            store_options,
            storage_config,
            effects,
            storage: Mutex::new(None),
        })
    }

    pub fn status(&self) -> NodeStatus {
        lock(&self.status).clone()
    }

    pub fn set_status(&self, status: NodeStatus) {
        if !matches!(status, NodeStatus::Up { .. }) {
            // Down, starting again or refused: the old life's store goes.
            *lock(&self.storage) = None;
        }
        *lock(&self.status) = status;
    }

    /// The serving node's storage, if it is up.
    pub fn storage(&self) -> Option<Storage> {
        lock(&self.storage).clone()
    }

    /// The node's init task: recover, then serve until killed.
    pub async fn run(self: Arc<NodeWorld>) {
        self.set_status(NodeStatus::Starting);
        let dir: Arc<dyn DiskDir> = Arc::new(TriggeredDir {
            inner: self.memdir.clone(),
            trigger: self.trigger.clone(),
        });
        let setup = NodeSetup {
            store: self.store_options.clone(),
            storage: self.storage_config.clone(),
            cluster: None,
        };
        let runtime = SkewedRuntime::new(self.skew_ms.clone());
        // The production boot (`start_node`), a single node.
        let booted = match start_node(dir, runtime, setup, self.as_ref()).await {
            Ok(booted) => booted,
            Err(BootError::Store(e @ OpenError::Corrupt { .. })) => {
                self.set_status(NodeStatus::Refused(e.to_string()));
                return;
            }
            Err(e) => {
                self.set_status(NodeStatus::OpenFailed(e.to_string()));
                return;
            }
        };
        let report = &booted.report;
        let mut recovery = format!(
            "{} segment(s) scanned, {} from hints, {} keys",
            report.segments_scanned, report.segments_from_hints, report.keys_loaded
        );
        if let Some((segment, offset, bytes)) = report.torn_tail {
            recovery.push_str(&format!(
                ", torn tail cut in segment {segment} at offset {offset} ({bytes} bytes)"
            ));
        }
        self.set_status(NodeStatus::Up {
            incarnation: report.incarnation,
            recovery,
            torn_tail: report.torn_tail,
        });
        let storage = booted.storage;
        let listener = tokio::net::TcpListener::bind(node_addr())
            .await
            .expect("the node's address is free after kill");
        let config = ServerConfig {
            bind: NODE_IP.to_string(),
            port: NODE_PORT,
            data_dir: "memdir".into(),
            clients_max: 64,
            ..ServerConfig::default()
        };
        serve(listener, Shared::new(storage, config)).await;
    }
}

/// The store and storage settings for a plan.
pub fn settings(store: &crate::plan::StoreKnobs) -> (StoreOptions, StorageConfig) {
    let options = StoreOptions {
        node_id: NODE_ID,
        segment_size_bytes: store.segment_size_bytes,
        compaction_dead_percent_min: store.compaction_dead_percent_min,
        ..StoreOptions::default()
    };
    let config = StorageConfig {
        fsync: Fsync::Always,
        write_queue_max: store.write_queue_max,
        batch_ops_max: store.batch_ops_max,
        // A batch must fit a segment with room to spare: records carry whole
        // sibling sets, larger than the key and value bytes counted here.
        batch_bytes_max: (store.segment_size_bytes / 8) as usize,
        compaction_interval_ms: store.compaction_interval_ms,
        compaction_budget_bytes: store.compaction_budget_bytes,
        syncs_in_flight_max: store.syncs_in_flight_max,
        scrub_pass_interval_ms: 5_000,
        ..StorageConfig::default()
    };
    (options, config)
}
