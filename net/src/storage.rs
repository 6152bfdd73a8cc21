//! The storage driver: owns the [`Store`] and its one committer task. Writers send
//! batches of operations over a bounded queue; the committer takes everything that is
//! waiting (group commit), writes it, and syncs it without holding the store's lock;
//! while that sync runs, the next batches may be written and start syncing too (at
//! most `UNSYNCED_BATCHES_MAX`). Batches are published and answered strictly in
//! order, each only after its own sync succeeded (fsync = always). Readers lock the
//! store briefly and read published state only.

use crate::histogram::{Histogram, BATCH_OPS_BOUNDS, LATENCY_BOUNDS_MICROS};
use serde::Deserialize;
use shoal_engine::commit_order::{CommitOrder, Ready, Verdict};
use shoal_engine::runtime::Runtime;
use shoal_engine::store::{CompactionReads, UNSYNCED_BATCHES_MAX};
use shoal_engine::version::SiblingSet;
use shoal_engine::{
    Chore, CompactionProgress, DiskError, PreparedBatch, Store, WriteError, WriteOp, WriteOutcome,
};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot};

mod pacer;
use pacer::{Pacer, PacerConfig};

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
    /// Batches written and syncing at once (1..=`UNSYNCED_BATCHES_MAX`). More
    /// overlaps fsyncs, which helps devices that serve them in parallel; fewer
    /// makes larger batches, and so fewer fsyncs per write, which is cheaper where
    /// each fsync costs CPU (1: 15.9 writes per fsync and 24 CPU ms per 1000 SETs
    /// here, against 6.2 and 29 ms at 4; redis-benchmark -c 50).
    pub syncs_in_flight_max: usize,
    pub compaction_interval_ms: u64,
    pub compaction_budget_bytes: u64,
    /// How fast the scrubber reads every live record again to find damage
    /// (`scrub`; 0: never). 8 MiB/s walks 64 GiB in about 2.3 hours.
    pub scrub_bytes_per_sec: u64,
    /// A scrub pass starts at most this often, however small the store (a
    /// store that reads in less is not read again sooner).
    pub scrub_pass_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            fsync: Fsync::Always,
            fsync_batch_interval_ms: 1000,
            write_queue_max: 4096,
            batch_ops_max: 4096,
            batch_bytes_max: 16 << 20,
            syncs_in_flight_max: 1,
            compaction_interval_ms: 1000,
            compaction_budget_bytes: 4 << 20,
            scrub_bytes_per_sec: 8 << 20,
            scrub_pass_interval_ms: 60_000,
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

/// The committer's distributions, recorded without a lock.
pub struct CommitTimings {
    /// How long each group-commit sync took.
    pub sync_micros: Histogram,
    /// Operations per published batch.
    pub batch_ops: Histogram,
}

impl Default for CommitTimings {
    fn default() -> Self {
        CommitTimings {
            sync_micros: Histogram::new(LATENCY_BOUNDS_MICROS),
            batch_ops: Histogram::new(BATCH_OPS_BOUNDS),
        }
    }
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<RwLock<Store>>,
    queue: mpsc::Sender<WriteRequest>,
    stats: Arc<Mutex<CommitStats>>,
    timings: Arc<CommitTimings>,
    config: StorageConfig,
    /// The runtime's wall clock (`Storage::wall_ms`).
    wall_clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Set while the store holds a collection deadline record
    /// (`Store::collection_deadlines_held`): every command with keys asks.
    collection_deadlines: Arc<std::sync::atomic::AtomicBool>,
    scrub: Arc<crate::scrub::ScrubStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The store for reading: readers share it (a GET on every worker at once);
/// the committer's prepare and publish exclude them.
fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl Storage {
    /// Start the committer (and, for `fsync = batch`, the sync timer) on `runtime`.
    pub fn start<R: Runtime>(mut store: Store, config: StorageConfig, runtime: R) -> Storage {
        assert!(
            (1..=UNSYNCED_BATCHES_MAX as usize).contains(&config.syncs_in_flight_max),
            "syncs_in_flight_max {} is outside 1..={UNSYNCED_BATCHES_MAX}",
            config.syncs_in_flight_max
        );
        store.defer_chores(); // the committer takes them (`spawn_chores`)
        let (queue, receiver) = mpsc::channel(config.write_queue_max);
        let storage = Storage {
            collection_deadlines: store.collection_deadlines_held(),
            store: Arc::new(RwLock::new(store)),
            scrub: Arc::default(),
            queue,
            stats: Arc::default(),
            timings: Arc::default(),
            config: config.clone(),
            wall_clock: {
                let runtime = runtime.clone();
                Arc::new(move || runtime.wall_ms())
            },
        };
        let pacer = Pacer::new(
            PacerConfig {
                interval_ms: config.compaction_interval_ms,
                budget_bytes: config.compaction_budget_bytes,
                bytes_per_written_byte: COMPACTION_BYTES_PER_WRITTEN_BYTE,
            },
            runtime.monotonic_ms(),
        );
        let committer = Committer {
            pacer: Mutex::new(pacer),
            store: storage.store.clone(),
            stats: storage.stats.clone(),
            timings: storage.timings.clone(),
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
                    let disk = read_lock(&store).active_disk();
                    if let Err(e) = run_blocking(move || disk.sync()).await {
                        tracing::error!("periodic fsync failed: {e}; refusing writes");
                        write_lock(&store).poison(format!("periodic fsync failed: {e}"));
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

    /// The wall clock the store stamps writes with, in ms since the Unix
    /// epoch: what deadlines are set and checked against.
    pub fn wall_ms(&self) -> u64 {
        (self.wall_clock)()
    }

    /// Read published state under the store's lock (keep `f` short).
    /// Whether some collection may have a deadline, without the store's lock
    /// (see `Store::collection_deadlines_held`).
    pub fn holds_collection_deadlines(&self) -> bool {
        self.collection_deadlines
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&read_lock(&self.store))
    }

    /// Change the store directly under its lock (start-up work such as enabling
    /// anti-entropy digests; never a write, which must go through the committer).
    pub fn with_store_mut<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut write_lock(&self.store))
    }

    /// What the scrubber did (`scrub`).
    pub fn scrub_stats(&self) -> &crate::scrub::ScrubStats {
        &self.scrub
    }

    pub fn commit_stats(&self) -> CommitStats {
        lock(&self.stats).clone()
    }

    pub fn commit_timings(&self) -> &CommitTimings {
        &self.timings
    }

    /// Make everything written so far durable (shutdown, `fsync = never`).
    pub async fn flush(&self) -> Result<(), shoal_engine::DiskError> {
        let disk = read_lock(&self.store).active_disk();
        run_blocking(move || disk.sync()).await
    }
}

/// Run blocking disk work off the async workers (inline in simulation),
/// started at once; the future is its result.
#[allow(deprecated)]
fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> + Send {
    let task = tokio::task::spawn_blocking(f);
    async move {
        match task.await {
            Ok(value) => value,
            Err(e) if e.is_panic() => panic!("blocking disk task panicked: {e}"),
            // The runtime is shutting down and dropped the task before it ran:
            // this task is being dropped too, so it waits for that.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Run blocking disk work off the async workers (inline in simulation),
/// without waiting for it: `f` reports its own result.
#[allow(deprecated)]
fn spawn_blocking_detached(f: impl FnOnce() + Send + 'static) {
    drop(tokio::task::spawn_blocking(f));
}

/// Compaction owed per byte written (see [`pacer`]).
const COMPACTION_BYTES_PER_WRITTEN_BYTE: u64 = 2;

struct Committer<R: Runtime> {
    /// Compaction owed and when the next tick is due (only the committer's task
    /// touches it).
    pacer: Mutex<Pacer>,
    store: Arc<RwLock<Store>>,
    stats: Arc<Mutex<CommitStats>>,
    timings: Arc<CommitTimings>,
    config: StorageConfig,
    runtime: R,
}

/// A batch whose writes are on their way to disk, waiting for its answer.
struct InFlight {
    /// Per writer, in order: how many operations it sent, and where to answer.
    answers: Vec<Answer>,
    op_count: u64,
}

/// Publish order and poison (`shoal_engine::commit_order`) over this
/// committer's batches.
type Order = CommitOrder<InFlight, PreparedBatch, DiskError>;

/// A finished sync: (committer sequence, the batch, what the sync said).
type SyncDone = (u64, PreparedBatch, Result<(), DiskError>);

impl<R: Runtime> Committer<R> {
    /// Pipelined group commit. Up to `UNSYNCED_BATCHES_MAX` batches are written and
    /// syncing at once (overlapping fsyncs are far cheaper than serial ones on many
    /// devices); each is published and answered only after its own sync succeeded
    /// and every earlier batch was published. One failed sync fails every batch not
    /// yet published: they were built on it.
    async fn run(self, mut receiver: mpsc::Receiver<WriteRequest>) {
        let depth = self.config.syncs_in_flight_max;
        let (done_tx, mut done_rx) = mpsc::channel::<SyncDone>(depth + 1);
        let mut order = Order::default();
        let mut open = true;
        let mut compacting: Option<CompactionStep> = None;
        loop {
            while let Some(ready) = order.next_ready() {
                self.finish(ready);
            }
            let tick = lock(&self.pacer).take_tick(self.runtime.monotonic_ms());
            if tick {
                self.record_synced_mark().await;
            }
            // Compaction keeps pace with the writes: a step runs beside the
            // batches whenever the pacer says one is owed, and new batches
            // wait while it is more than `COMPACTION_LAG_BYTES_MAX` behind
            // (`pacer`), so the disk stays bounded under any load.
            if compacting.is_none() {
                compacting = self.next_compaction_step();
            }
            let idle = order.in_flight() == 0 && compacting.is_none();
            if idle && !open {
                break;
            }
            let behind =
                compacting.is_some() && lock(&self.pacer).owed_bytes() > COMPACTION_LAG_BYTES_MAX;
            let take = open && order.in_flight() < depth && !behind;
            let wait_ms = lock(&self.pacer).idle_wait_ms(self.runtime.monotonic_ms());
            let stepping = compacting.is_some();
            let step = async {
                match compacting.as_mut() {
                    Some(step) => step.await,
                    None => std::future::pending().await,
                }
            };
            // `biased`: a fixed polling order. Unbiased select! draws from
            // tokio's thread RNG, whose seed comes from a process-wide counter,
            // which breaks the simulator's determinism (same seed, same run).
            // Completions first; compaction cannot starve (checked above).
            tokio::select! {
                biased;
                done = done_rx.recv(), if order.in_flight() > 0 => {
                    if let Some((seq, batch, synced)) = done {
                        order.synced(seq, batch, synced);
                    }
                }
                stepped = step, if stepping => {
                    compacting = None;
                    self.compacted(stepped);
                }
                request = receiver.recv(), if take => match request {
                    Some(r) => self.start(r, &mut receiver, &mut order, &done_tx),
                    None => open = false,
                },
                _ = self.runtime.sleep_ms(wait_ms), if idle => {}
            }
        }
        // Queue closed: everything acknowledged is synced already under `always`;
        // make the rest durable too.
        let disk = read_lock(&self.store).active_disk();
        let _ = run_blocking(move || disk.sync()).await;
    }

    /// Take `first` and whatever else is waiting, write it as one batch, and start
    /// its sync (or mark it done when nothing needs syncing before the answer).
    fn start(
        &self,
        first: WriteRequest,
        receiver: &mut mpsc::Receiver<WriteRequest>,
        order: &mut Order,
        done_tx: &mpsc::Sender<SyncDone>,
    ) {
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
        lock(&self.pacer).wrote(bytes as u64);
        // Move the operations out; keep only how many each writer sent, and its reply.
        let mut ops = Vec::with_capacity(op_count);
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push((request.ops.len(), request.reply));
            ops.extend(request.ops);
        }
        let (batch, chores) = {
            let mut store = write_lock(&self.store);
            (
                store.prepare(&ops, self.runtime.wall_ms()),
                store.take_chores(),
            )
        };
        self.spawn_chores(chores);
        let seq = order.start(InFlight {
            answers,
            op_count: op_count as u64,
        });
        let must_sync = self.config.fsync == Fsync::Always && !batch.is_empty();
        if must_sync && !cfg!(feature = "bug-ack-before-fsync") {
            self.start_sync(seq, batch, done_tx.clone());
        } else {
            if must_sync {
                // Planted bug: acknowledge first, sync whenever.
                let disk = read_lock(&self.store).active_disk();
                self.runtime.spawn(Box::pin(async move {
                    let _ = run_blocking(move || disk.sync()).await;
                }));
            }
            order.synced(seq, batch, Ok(()));
        }
    }

    /// Sync batch `seq` on a blocking thread, which reports to the committer
    /// itself: no task in between to spawn and wake per batch.
    fn start_sync(&self, seq: u64, batch: PreparedBatch, done_tx: mpsc::Sender<SyncDone>) {
        lock(&self.stats).syncs += 1;
        let timings = self.timings.clone();
        spawn_blocking_detached(move || {
            let started = tokio::time::Instant::now();
            let synced = batch.sync();
            let micros = started.elapsed().as_micros() as u64;
            timings.sync_micros.observe(micros);
            // Room is certain: the channel holds `syncs_in_flight_max + 1`
            // and at most that many syncs run. Closed: the committer is
            // gone, and the batch with it.
            if let Err(mpsc::error::TrySendError::Full(_)) = done_tx.try_send((seq, batch, synced))
            {
                unreachable!("more syncs in flight than the done channel holds");
            }
        });
    }

    /// Run the store's owed chores (segment hints, removal of compacted files)
    /// off its lock, each on a blocking thread that reports back to the store.
    fn spawn_chores(&self, chores: Vec<Chore>) {
        for chore in chores {
            let store = self.store.clone();
            spawn_blocking_detached(move || {
                let result = chore.run();
                if let Err(e) = &result {
                    tracing::warn!(
                        "segment {}: hint or removal failed: {e}",
                        chore.segment_id()
                    );
                }
                write_lock(&store).chore_done(&chore, result);
            });
        }
    }

    /// Publish (or fail) the oldest batch and answer its writers.
    fn finish(&self, ready: Ready<InFlight, PreparedBatch, DiskError>) {
        let Ready {
            payload: in_flight,
            batch,
            verdict,
            ..
        } = ready;
        let results = {
            let mut store = write_lock(&self.store);
            match verdict {
                Verdict::Publish => store.publish(batch),
                Verdict::Poison(e) => {
                    tracing::error!("fsync failed: {e}; store is read-only until restart");
                    store.sync_failed(batch, e)
                }
                Verdict::FailAfter(earlier) => store.sync_failed(batch, earlier),
            }
        };
        {
            let mut stats = lock(&self.stats);
            stats.batches += 1;
            stats.ops += in_flight.op_count;
            stats.largest_batch_ops = stats.largest_batch_ops.max(in_flight.op_count);
        }
        self.timings.batch_ops.observe(in_flight.op_count);
        lock(&self.pacer).published();
        answer(in_flight.answers, results);
    }

    /// Once a tick, with fsync `always` (every published batch is synced):
    /// record how far the active segment is synced, so that an open finds a
    /// synced tail that was zeroed or cut since (`SYNCED`).
    async fn record_synced_mark(&self) {
        if self.config.fsync != Fsync::Always {
            return;
        }
        let store = self.store.clone();
        if let Err(e) = run_blocking(move || write_lock(&store).record_synced_mark()).await {
            tracing::warn!("cannot record how far the active segment is synced: {e}");
        }
    }

    /// The compaction step the pacer says is owed now, if any, started at
    /// once off this task. A planted bug (`bug-compaction-by-clock`) pays only the
    /// fixed per-tick budget, as compaction once did, and falls behind a
    /// sustained load.
    fn next_compaction_step(&self) -> Option<CompactionStep> {
        let step_bytes = lock(&self.pacer).next_step_bytes()?;
        let store = self.store.clone();
        Some(Box::pin(run_blocking(move || {
            compaction_step(&store, step_bytes)
        })))
    }

    /// What a compaction step did: its chores run, the pacer told.
    fn compacted(&self, (step, chores): StepDone) {
        self.spawn_chores(chores);
        let mut pacer = lock(&self.pacer);
        match &step {
            Ok((progress, spent_bytes)) => {
                if let CompactionProgress::Finished { segment } = progress {
                    tracing::info!("compacted segment {segment}");
                }
                pacer.stepped(Ok((progress, *spent_bytes)));
            }
            Err(e) => {
                tracing::warn!("compaction paused: {e}");
                pacer.stepped(Err(()));
            }
        }
    }
}

/// A compaction step's outcome and the chores it left.
type StepDone = (Result<(CompactionProgress, u64), WriteError>, Vec<Chore>);

/// A compaction step under way beside the committer's batches.
type CompactionStep = std::pin::Pin<Box<dyn std::future::Future<Output = StepDone> + Send>>;

/// Compaction owed beyond which new batches wait for it to catch up: two
/// steps' worth, so writes overlap compaction without outrunning it.
const COMPACTION_LAG_BYTES_MAX: u64 = 2 * pacer::STEP_BYTES_MAX;

/// One compaction step of `step_bytes`, holding the store's write lock only
/// to append copies and to drop a finished segment. A new segment's walk of
/// the directory and the step's list of records are taken under the shared
/// lock; the records (in a sealed segment, whose bytes no longer change) are
/// read and encoded, and a finished segment's copies synced, under none.
fn compaction_step(
    store: &RwLock<Store>,
    step_bytes: u64,
) -> (Result<(CompactionProgress, u64), WriteError>, Vec<Chore>) {
    let (plan, reads) = {
        let shared = read_lock(store);
        let plan = shared.compaction_plan();
        let reads = shared.compaction_reads(plan.as_ref(), step_bytes);
        (plan, reads)
    };
    let copies = reads.map(CompactionReads::copy);
    let (step, owed, mut chores) = {
        let mut store = write_lock(store);
        let step = store.compaction_tick_spending(step_bytes, plan, copies);
        (step, store.compaction_sync_owed(), store.take_chores())
    };
    let step = match (step, owed) {
        (Ok((_, spent_bytes)), Some(owed)) => {
            let synced = owed.sync();
            let mut store = write_lock(store);
            let finished = store.compaction_synced(owed, synced);
            chores.extend(store.take_chores());
            finished.map(|progress| (progress, spent_bytes))
        }
        (step, _) => step,
    };
    (step, chores)
}

fn request_bytes(r: &WriteRequest) -> usize {
    r.ops
        .iter()
        .map(|op| {
            let value = op.value.as_ref().map_or(0, |v| v.len());
            op.key.len() + value + op.merge.as_ref().map_or(0, SiblingSet::size_bytes)
        })
        .sum()
}

/// A writer's share of a batch: its operation count and its reply channel.
type Answer = (usize, oneshot::Sender<WriteResults>);

fn answer(answers: Vec<Answer>, results: WriteResults) {
    let mut results = results.into_iter();
    for (op_count, reply) in answers {
        let mine: WriteResults = results.by_ref().take(op_count).collect();
        let _ = reply.send(mine);
    }
}
