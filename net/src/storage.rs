//! The storage driver: owns the [`Store`] and its one committer task. Writers send
//! batches of operations over a bounded queue; the committer takes everything that is
//! waiting (group commit), writes it, syncs once without holding the store's lock,
//! publishes, and only then answers (fsync = always). Readers lock the store briefly
//! and read published state only.

use serde::Deserialize;
use shoal_engine::runtime::Runtime;
use shoal_engine::{CompactionProgress, Store, WriteError, WriteOp, WriteOutcome};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// When a write is acknowledged relative to its fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Acknowledge after the group-committed fsync that covers the write.
    Always,
    /// Acknowledge at once; fsync every `fsync_batch_interval_ms`.
    Batch,
    /// Acknowledge at once; leave flushing to the OS (and to shutdown).
    Never,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::Never => "never",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub fsync: Fsync,
    pub fsync_batch_interval_ms: u64,
    /// Write requests waiting for the committer; senders wait when it is full.
    pub write_queue_max: usize,
    /// Operations in one group-commit batch.
    pub batch_ops_max: usize,
    /// Key and value bytes in one batch (keeps a batch well inside a segment).
    pub batch_bytes_max: usize,
    pub compaction_interval_ms: u64,
    pub compaction_budget_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: Fsync::Always,
            fsync_batch_interval_ms: 1000,
            write_queue_max: 4096,
            batch_ops_max: 4096,
            batch_bytes_max: 16 << 20,
            compaction_interval_ms: 1000,
            compaction_budget_bytes: 4 << 20,
        }
    }
}

pub type WriteResults = Vec<Result<WriteOutcome, WriteError>>;

struct WriteRequest {
    ops: Vec<WriteOp>,
    reply: oneshot::Sender<WriteResults>,
}

/// Why a write could not even be submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The committer has stopped (shutdown, or it died on a fatal error).
    Stopped,
}

/// A write submitted to the committer; await it for the results.
pub struct WriteTicket {
    reply: oneshot::Receiver<WriteResults>,
    op_count: usize,
}

impl WriteTicket {
    pub async fn wait(self) -> WriteResults {
        let n = self.op_count;
        self.reply.await.unwrap_or_else(|_| {
            (0..n)
                .map(|_| {
                    Err(WriteError::SyncFailed(
                        "storage stopped before answering".into(),
                    ))
                })
                .collect()
        })
    }
}

/// Committer statistics shown by INFO.
#[derive(Clone, Debug, Default)]
pub struct CommitStats {
    pub batches: u64,
    pub ops: u64,
    pub syncs: u64,
    pub largest_batch_ops: u64,
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<Mutex<Store>>,
    queue: mpsc::Sender<WriteRequest>,
    stats: Arc<Mutex<CommitStats>>,
    config: StorageConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Start the committer (and, for `fsync = batch`, the sync timer) on `runtime`.
    pub fn start<R: Runtime>(store: Store, config: StorageConfig, runtime: R) -> Storage {
        let (queue, receiver) = mpsc::channel(config.write_queue_max);
        let storage = Storage {
            store: Arc::new(Mutex::new(store)),
            queue,
            stats: Arc::default(),
            config,
        };
        let committer = Committer {
            store: storage.store.clone(),
            stats: storage.stats.clone(),
            config: storage.config.clone(),
            runtime: runtime.clone(),
        };
        runtime.spawn(Box::pin(committer.run(receiver)));
        if storage.config.fsync == Fsync::Batch {
            let store = storage.store.clone();
            let interval_ms = storage.config.fsync_batch_interval_ms;
            let rt = runtime.clone();
            runtime.spawn(Box::pin(async move {
                loop {
                    rt.sleep_ms(interval_ms).await;
                    let disk = lock(&store).active_disk();
                    if let Err(e) = run_blocking(move || disk.sync()).await {
                        tracing::error!("periodic fsync failed: {e}; refusing writes");
                        lock(&store).poison(format!("periodic fsync failed: {e}"));
                    }
                }
            }));
        }
        storage
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    /// Queue a batch; the ticket resolves when it is acknowledged or refused.
    pub async fn submit(&self, ops: Vec<WriteOp>) -> Result<WriteTicket, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        let op_count = ops.len();
        self.queue
            .send(WriteRequest { ops, reply })
            .await
            .map_err(|_| SubmitError::Stopped)?;
        Ok(WriteTicket {
            reply: receiver,
            op_count,
        })
    }

    pub async fn write(&self, ops: Vec<WriteOp>) -> Result<WriteResults, SubmitError> {
        Ok(self.submit(ops).await?.wait().await)
    }

    /// Read published state under the store's lock (keep `f` short).
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&lock(&self.store))
    }

    pub fn commit_stats(&self) -> CommitStats {
        lock(&self.stats).clone()
    }

    /// Make everything written so far durable (shutdown, `fsync = never`).
    pub async fn flush(&self) -> Result<(), shoal_engine::DiskError> {
        let disk = lock(&self.store).active_disk();
        run_blocking(move || disk.sync()).await
    }
}

/// Run blocking disk work off the async workers (inline in simulation).
#[allow(deprecated)]
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking disk task panicked")
}

struct Committer<R: Runtime> {
    store: Arc<Mutex<Store>>,
    stats: Arc<Mutex<CommitStats>>,
    config: StorageConfig,
    runtime: R,
}

impl<R: Runtime> Committer<R> {
    async fn run(self, mut receiver: mpsc::Receiver<WriteRequest>) {
        let mut compaction_due_ms =
            self.runtime.monotonic_ms() + self.config.compaction_interval_ms;
        loop {
            let wait_ms = compaction_due_ms.saturating_sub(self.runtime.monotonic_ms());
            let first = tokio::select! {
                request = receiver.recv() => match request {
                    Some(r) => r,
                    None => break,
                },
                _ = self.runtime.sleep_ms(wait_ms) => {
                    self.compact().await;
                    compaction_due_ms = self.runtime.monotonic_ms() + self.config.compaction_interval_ms;
                    continue;
                }
            };
            let mut requests = vec![first];
            let mut op_count = requests[0].ops.len();
            let mut bytes = request_bytes(&requests[0]);
            while op_count < self.config.batch_ops_max && bytes < self.config.batch_bytes_max {
                match receiver.try_recv() {
                    Ok(r) => {
                        op_count += r.ops.len();
                        bytes += request_bytes(&r);
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(requests).await;
            if self.runtime.monotonic_ms() >= compaction_due_ms {
                self.compact().await;
                compaction_due_ms =
                    self.runtime.monotonic_ms() + self.config.compaction_interval_ms;
            }
        }
        // Queue closed: everything acknowledged is synced already under `always`;
        // make the rest durable too.
        let disk = lock(&self.store).active_disk();
        let _ = run_blocking(move || disk.sync()).await;
    }

    async fn commit(&self, requests: Vec<WriteRequest>) {
        let ops: Vec<WriteOp> = requests
            .iter()
            .flat_map(|r| r.ops.iter().cloned())
            .collect();
        let wall_ms = self.runtime.wall_ms();
        let batch = lock(&self.store).prepare(&ops, wall_ms);
        let wrote = !batch.is_empty();
        let results = if self.config.fsync == Fsync::Always && wrote {
            if cfg!(feature = "bug-ack-before-fsync") {
                // Planted bug: acknowledge first, sync afterwards.
                let results = lock(&self.store).publish(batch);
                let disk = lock(&self.store).active_disk();
                answer(requests, results);
                let _ = run_blocking(move || disk.sync()).await;
                return;
            }
            let (batch, synced) = run_blocking(move || {
                let r = batch.sync();
                (batch, r)
            })
            .await;
            let mut store = lock(&self.store);
            match synced {
                Ok(()) => store.publish(batch),
                Err(e) => {
                    tracing::error!("fsync failed: {e}; store is read-only until restart");
                    store.sync_failed(batch, e)
                }
            }
        } else {
            lock(&self.store).publish(batch)
        };
        {
            let mut stats = lock(&self.stats);
            stats.batches += 1;
            stats.ops += ops.len() as u64;
            stats.syncs += u64::from(wrote && self.config.fsync == Fsync::Always);
            stats.largest_batch_ops = stats.largest_batch_ops.max(ops.len() as u64);
        }
        answer(requests, results);
    }

    async fn compact(&self) {
        let store = self.store.clone();
        let budget = self.config.compaction_budget_bytes;
        let progress = run_blocking(move || lock(&store).compaction_tick(budget)).await;
        match progress {
            Ok(CompactionProgress::Finished { segment }) => {
                tracing::info!("compacted segment {segment}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("compaction paused: {e}"),
        }
    }
}

fn request_bytes(r: &WriteRequest) -> usize {
    r.ops
        .iter()
        .map(|op| op.key.len() + op.value.as_ref().map_or(0, |v| v.len()))
        .sum()
}

fn answer(requests: Vec<WriteRequest>, results: WriteResults) {
    let mut results = results.into_iter();
    for request in requests {
        let mine: WriteResults = results.by_ref().take(request.ops.len()).collect();
        let _ = request.reply.send(mine);
    }
}
