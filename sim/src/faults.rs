//! The supervisor: carries out the fault plan against the node, its disk and the
//! network, and notes every fault it injects in the history. Node faults (crash,
//! pause, fsync failure, corruption) run one after another on one timeline; the
//! network, the disk-full windows and the clock have their own. Restarts always
//! follow a kill; a node whose recovery refused to open (detected corruption) stays
//! down rather than restarting from an empty store.

use crate::lock;
use crate::node::{NodeStatus, NodeWorld};
use crate::plan::{CorruptTarget, CrashMode, Fault, NetKnobs, TimedFault};
use crate::recorder::Recorder;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use shoal_checker::Key;
use shoal_engine::disk::DiskDir;
use shoal_engine::record::{read_frame, FrameRead, SEGMENT_HEADER_BYTES};
use shoal_engine::rng::SplitMix64;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a mid-write crash waits for a segment write before crashing at idle.
const MID_WRITE_ARM_WINDOW_MS: u64 = 1000;
/// How long a restart waits for recovery to settle the node's status.
const RECOVERY_WAIT_MS: u64 = 1000;

pub struct Supervisor {
    pub handle: Handle,
    pub node: NodeId,
    pub clients: Vec<NodeId>,
    pub world: Arc<NodeWorld>,
    pub recorder: Arc<Recorder>,
    pub net: NetKnobs,
    pub start: Instant,
    rng: Mutex<SplitMix64>,
    /// An fsync failed since the last restart: the store is read-only until one.
    needs_restart: AtomicBool,
    /// Keys whose records were hit by latent corruption.
    pub damaged_keys: Mutex<BTreeSet<Key>>,
    /// A power loss tore an unsynced write since the store last opened: only then
    /// may recovery cut a torn tail.
    torn_since_open: AtomicBool,
    /// Engine misbehaviour the supervisor saw directly (not through the history).
    pub invariant_failures: Mutex<Vec<String>>,
    /// Until when (ms since start) the disk-bound audit judges no sample: a
    /// disk fault, crash or restart was in force or recent.
    disturbed_until_ms: AtomicU64,
}

impl Supervisor {
    pub fn new(
        handle: Handle,
        node: NodeId,
        clients: Vec<NodeId>,
        world: Arc<NodeWorld>,
        recorder: Arc<Recorder>,
        net: NetKnobs,
        seed: u64,
    ) -> Supervisor {
        Supervisor {
            handle,
            node,
            clients,
            world,
            recorder,
            net,
            start: Instant::now(),
            rng: Mutex::new(SplitMix64::new(seed ^ 0xFA17_5EED_0000_0000)),
            needs_restart: AtomicBool::new(false),
            damaged_keys: Mutex::new(BTreeSet::new()),
            torn_since_open: AtomicBool::new(false),
            invariant_failures: Mutex::new(Vec::new()),
            disturbed_until_ms: AtomicU64::new(0),
        }
    }

    /// A fault that may hold compaction back for `for_ms` starts now.
    fn disturb(&self, for_ms: u64) {
        let until_ms = self
            .recorder
            .now_ms()
            .saturating_add(for_ms)
            .saturating_add(crate::disk_bound::SETTLE_MS);
        self.disturbed_until_ms
            .fetch_max(until_ms, Ordering::Relaxed);
    }

    /// Whether the disk-bound audit may judge the store now.
    pub fn disk_settled(&self) -> bool {
        self.recorder.now_ms() >= self.disturbed_until_ms.load(Ordering::Relaxed)
    }

    fn random_below(&self, bound: u64) -> u64 {
        lock(&self.rng).below(bound.max(1))
    }

    async fn sleep_until_ms(&self, at_ms: u64) {
        tokio::time::sleep_until(self.start + Duration::from_millis(at_ms)).await;
    }

    /// The node's faults, one after another.
    pub async fn run_node_timeline(self: Arc<Self>, faults: Vec<TimedFault>) {
        for timed in faults {
            self.sleep_until_ms(timed.at_ms).await;
            match timed.fault {
                Fault::Crash {
                    mode,
                    down_ms,
                    power_loss,
                } => {
                    self.crash(mode, power_loss).await;
                    sleep_ms(down_ms).await;
                    self.restart().await;
                }
                Fault::Pause { duration_ms } => {
                    self.recorder
                        .fault(format!("pause node for {duration_ms} ms"));
                    self.handle.pause(self.node);
                    sleep_ms(duration_ms).await;
                    self.handle.resume(self.node);
                    self.recorder.fault("resume node");
                }
                Fault::FsyncFailure {
                    syncs,
                    restart_after_ms,
                    down_ms,
                } => {
                    self.disturb(restart_after_ms.saturating_add(down_ms));
                    self.world.memdir.fail_next_syncs(syncs);
                    self.needs_restart.store(true, Ordering::Relaxed);
                    self.recorder
                        .fault(format!("fsync failures: the next {syncs} fsync(s) fail"));
                    sleep_ms(restart_after_ms).await;
                    self.crash(CrashMode::Idle, true).await;
                    sleep_ms(down_ms).await;
                    self.restart().await;
                }
                Fault::Corrupt {
                    target,
                    restart_after_ms,
                } if matches!(
                    target,
                    CorruptTarget::DeletedSegment
                        | CorruptTarget::CutSegment
                        | CorruptTarget::ZeroedTail
                ) =>
                {
                    // Files are deleted or cut on a stopped node (an operator's
                    // or a broken disk's doing), and the node started again.
                    let _ = restart_after_ms;
                    self.crash(CrashMode::Idle, false).await;
                    self.corrupt(target);
                    self.restart().await;
                }
                Fault::Corrupt {
                    target,
                    restart_after_ms,
                } => {
                    self.corrupt(target);
                    if let Some(after_ms) = restart_after_ms {
                        sleep_ms(after_ms).await;
                        self.crash(CrashMode::Idle, true).await;
                        self.restart().await;
                    }
                }
                other => unreachable!("{other} is not a node fault"),
            }
        }
    }

    /// Network faults, one after another.
    pub async fn run_network_timeline(self: Arc<Self>, faults: Vec<TimedFault>) {
        let net = NetSim::current();
        for timed in faults {
            self.sleep_until_ms(timed.at_ms).await;
            match timed.fault {
                Fault::ClogNode { duration_ms } => {
                    self.recorder
                        .fault(format!("clog node for {duration_ms} ms"));
                    net.clog_node(self.node);
                    sleep_ms(duration_ms).await;
                    net.unclog_node(self.node);
                    self.recorder.fault("unclog node");
                }
                Fault::ClogLink {
                    client,
                    toward_node,
                    duration_ms,
                } => {
                    let client_node = self.clients[client as usize];
                    let (src, dst) = if toward_node {
                        (client_node, self.node)
                    } else {
                        (self.node, client_node)
                    };
                    self.recorder.fault(format!(
                        "clog link {} of client {client} for {duration_ms} ms",
                        if toward_node {
                            "client->node"
                        } else {
                            "node->client"
                        }
                    ));
                    net.clog_link(src, dst);
                    sleep_ms(duration_ms).await;
                    net.unclog_link(src, dst);
                    self.recorder
                        .fault(format!("unclog link of client {client}"));
                }
                Fault::Lossy {
                    loss_percent,
                    latency_max_ms,
                    duration_ms,
                } => {
                    self.recorder.fault(format!(
                        "lossy network: {loss_percent}% loss, latency up to {latency_max_ms} ms, for {duration_ms} ms"
                    ));
                    net.update_config(|config| {
                        config.packet_loss_rate = loss_percent as f64 / 100.0;
                        config.send_latency = Duration::from_millis(self.net.latency_min_ms)
                            ..Duration::from_millis(latency_max_ms);
                    });
                    sleep_ms(duration_ms).await;
                    self.restore_network(&net);
                    self.recorder.fault("network back to normal");
                }
                other => unreachable!("{other} is not a network fault"),
            }
        }
    }

    /// Disk-full windows and clock jumps, in time order.
    pub async fn run_disk_and_clock_timeline(self: Arc<Self>, faults: Vec<TimedFault>) {
        for timed in faults {
            self.sleep_until_ms(timed.at_ms).await;
            match timed.fault {
                Fault::DiskFull { duration_ms } => {
                    self.disturb(duration_ms);
                    let used = self.world.memdir.used_bytes();
                    self.world.memdir.set_capacity_bytes(Some(used));
                    self.recorder.fault(format!(
                        "disk full (capacity {used} bytes) for {duration_ms} ms"
                    ));
                    sleep_ms(duration_ms).await;
                    self.world.memdir.set_capacity_bytes(None);
                    self.recorder.fault("disk space back");
                }
                Fault::ClockJump { delta_ms } => {
                    self.world.skew_ms.fetch_add(delta_ms, Ordering::Relaxed);
                    self.recorder
                        .fault(format!("node wall clock jumps {delta_ms:+} ms"));
                }
                other => unreachable!("{other} is not a disk or clock fault"),
            }
        }
    }

    fn restore_network(&self, net: &NetSim) {
        net.update_config(|config| {
            config.packet_loss_rate = 0.0;
            config.send_latency = Duration::from_millis(self.net.latency_min_ms)
                ..Duration::from_millis(self.net.latency_max_ms);
        });
    }

    /// Kill the node; with `power_loss` the disk then loses, keeps or tears each
    /// unsynced write (a process crash alone keeps them, as the OS would).
    pub async fn crash(&self, mode: CrashMode, power_loss: bool) {
        self.disturb(0);
        let mut fired_on = None;
        if let CrashMode::MidWrite { nth } = mode {
            self.world.trigger.arm(nth);
            let deadline = Instant::now() + Duration::from_millis(MID_WRITE_ARM_WINDOW_MS);
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let waited = tokio::time::timeout(remaining, self.world.trigger.fired()).await;
                if waited.is_err() || self.world.trigger.has_fired() {
                    break;
                }
            }
            fired_on = self.world.trigger.disarm();
        }
        if fired_on.is_none() {
            self.handle.kill(self.node);
        }
        let when = match &fired_on {
            Some(file) => format!("right after a write to {file}, before its fsync"),
            None => "at idle".to_string(),
        };
        if !matches!(self.world.status(), NodeStatus::Refused(_)) {
            self.world.set_status(NodeStatus::Down);
        }
        if power_loss {
            let seed = lock(&self.rng).next_u64();
            let report = self.world.memdir.crash(&mut SplitMix64::new(seed));
            if report.tore_a_tail() {
                self.torn_since_open.store(true, Ordering::Relaxed);
            }
            self.recorder.fault(format!(
                "crash (power loss) {when}: unsynced writes kept {}, dropped {}, torn {}",
                report.writes_kept, report.writes_dropped, report.writes_torn
            ));
        } else {
            self.recorder.fault(format!(
                "crash (process only, unsynced writes survive) {when}"
            ));
        }
        self.needs_restart.store(false, Ordering::Relaxed);
    }

    /// Start the node again (it must be down: killed or exited). A node that
    /// refused to open stays down.
    pub async fn restart(&self) {
        self.disturb(0);
        if let NodeStatus::Refused(reason) = self.world.status() {
            self.recorder.fault(format!(
                "node stays down: recovery refused earlier ({reason})"
            ));
            return;
        }
        self.handle.kill(self.node);
        self.world.set_status(NodeStatus::Starting);
        self.handle.restart(self.node);
        let deadline = Instant::now() + Duration::from_millis(RECOVERY_WAIT_MS);
        while self.world.status() == NodeStatus::Starting && Instant::now() < deadline {
            sleep_ms(1).await;
        }
        match self.world.status() {
            NodeStatus::Up {
                incarnation,
                recovery,
                torn_tail,
            } => {
                self.recorder.fault(format!(
                    "restart: recovered, incarnation {incarnation}: {recovery}"
                ));
                let torn = self.torn_since_open.swap(false, Ordering::Relaxed);
                if let (Some((segment, offset, bytes)), false) = (torn_tail, torn) {
                    lock(&self.invariant_failures).push(format!(
                        "undetected damage: at {} ms recovery cut {bytes} bytes of segment {segment} from offset {offset} as a torn tail, but no crash tore a write since the store last opened: synced data was dropped silently",
                        self.recorder.now_ms()
                    ));
                }
            }
            NodeStatus::Refused(reason) => {
                self.recorder
                    .fault(format!("restart: node refused to start: {reason}"));
                self.recorder
                    .detection(None, format!("recovery refused: {reason}"));
            }
            NodeStatus::OpenFailed(reason) => self
                .recorder
                .fault(format!("restart: store failed to open: {reason}")),
            other => self.recorder.fault(format!(
                "restart: node still {other:?} after {RECOVERY_WAIT_MS} ms"
            )),
        }
    }

    /// Phase 2: stop every fault. Restarts the node when it is down or read-only.
    pub async fn heal(&self) {
        let net = NetSim::current();
        net.unclog_node(self.node);
        for client in &self.clients {
            net.unclog_link(*client, self.node);
            net.unclog_link(self.node, *client);
        }
        self.restore_network(&net);
        self.world.memdir.set_capacity_bytes(None);
        self.world.memdir.fail_next_syncs(0);
        self.handle.resume(self.node);
        self.recorder
            .fault("heal: network, disk and process faults stopped");
        if self.needs_restart.load(Ordering::Relaxed) {
            self.crash(CrashMode::Idle, true).await;
            self.restart().await;
        }
        let mut attempts = 0;
        while matches!(
            self.world.status(),
            NodeStatus::Down | NodeStatus::OpenFailed(_) | NodeStatus::Starting
        ) && attempts < 5
        {
            attempts += 1;
            self.restart().await;
            if !matches!(self.world.status(), NodeStatus::Up { .. }) {
                sleep_ms(500).await;
            }
        }
    }

    /// Flip one byte of the store's files, as latent media corruption would.
    fn corrupt(&self, target: CorruptTarget) {
        let memdir = &self.world.memdir;
        let names = memdir.list().unwrap_or_default();
        if target == CorruptTarget::Hint {
            let hints: Vec<&String> = names.iter().filter(|n| n.ends_with(".hint")).collect();
            if hints.is_empty() {
                self.recorder
                    .fault("latent corruption of a hint file: no hint file yet, nothing done");
                return;
            }
            let name = hints[self.random_below(hints.len() as u64) as usize].clone();
            let len = memdir.open(&name, false).and_then(|f| f.len()).unwrap_or(0);
            let offset = self.random_below(len);
            let _ = memdir.corrupt_byte(&name, offset);
            self.recorder
                .fault(format!("latent corruption: {name} byte {offset} flipped"));
            return;
        }
        if matches!(
            target,
            CorruptTarget::DeletedSegment | CorruptTarget::CutSegment | CorruptTarget::ZeroedTail
        ) {
            self.lose_segment_data(target);
            return;
        }
        let frames = self.frames();
        let active = frames.iter().map(|f| f.segment).max();
        let newest_batch_in_active = frames
            .iter()
            .filter(|f| Some(f.segment) == active)
            .map(|f| f.batch_seq)
            .max()
            .unwrap_or(0);
        let marked_bytes = active.map_or(0, |a| self.synced_mark_bytes(a));
        let candidates: Vec<&FoundFrame> = frames
            .iter()
            .filter(|f| match target {
                // What recovery can prove was synced: a sealed segment's data,
                // or the active one's below its SYNCED mark. A batch a few
                // later is no proof: up to UNSYNCED_BATCHES_MAX batches may be
                // in flight, and a crash may keep a later one past a torn
                // earlier one (seed 47231799 damaged a record two batches
                // before the newest, a crash found it past the mark, and
                // recovery rightly took it for a torn tail).
                CorruptTarget::SyncedRecord => {
                    Some(f.segment) != active || f.offset + f.len <= marked_bytes
                }
                CorruptTarget::TailRecord => {
                    Some(f.segment) == active && f.batch_seq == newest_batch_in_active
                }
                _ => false,
            })
            .collect();
        if candidates.is_empty() {
            self.recorder
                .fault("latent corruption: no eligible record yet, nothing done");
            return;
        }
        let frame = candidates[self.random_below(candidates.len() as u64) as usize];
        let offset = frame.offset + self.random_below(frame.len);
        let name = segment_name(frame.segment);
        let _ = memdir.corrupt_byte(&name, offset);
        let key = crate::workload::key_of_stored(frame.namespace, &frame.key);
        self.recorder.fault(format!(
            "latent corruption: {name} byte {offset} flipped (record of {key} at offset {}, batch {})",
            frame.offset, frame.batch_seq
        ));
        lock(&self.damaged_keys).insert(key);
    }

    /// Delete a sealed segment, or cut a segment at a provably synced record:
    /// the keys whose latest record goes with it are damaged, and the next
    /// open must refuse (G9) rather than serve them as never written.
    fn lose_segment_data(&self, target: CorruptTarget) {
        let memdir = &self.world.memdir;
        let frames = self.frames();
        let Some(active) = frames.iter().map(|f| f.segment).max() else {
            self.recorder
                .fault("segment damage: no record yet, nothing done");
            return;
        };
        let newest_batch = frames
            .iter()
            .filter(|f| f.segment == active)
            .map(|f| f.batch_seq)
            .max()
            .unwrap_or(0);
        let marked_bytes = self.synced_mark_bytes(active);
        let cuts: Vec<(u32, u64)> = frames
            .iter()
            .filter(|f| match target {
                CorruptTarget::DeletedSegment => f.segment != active,
                CorruptTarget::ZeroedTail => {
                    f.segment == active && f.offset + f.len <= marked_bytes
                }
                _ => f.segment != active || f.batch_seq + 2 <= newest_batch,
            })
            .map(|f| match target {
                CorruptTarget::DeletedSegment => (f.segment, 0),
                _ => (f.segment, f.offset),
            })
            .collect();
        if cuts.is_empty() {
            self.recorder
                .fault("segment damage: no eligible segment yet, nothing done");
            return;
        }
        let (segment, cut) = cuts[self.random_below(cuts.len() as u64) as usize];
        let name = segment_name(segment);
        let done = if target == CorruptTarget::DeletedSegment {
            let _ = memdir.remove(&format!("seg-{segment:08}.hint"));
            memdir.remove(&name).is_ok()
        } else if target == CorruptTarget::ZeroedTail {
            memdir
                .open(&name, false)
                .and_then(|f| {
                    let len = f.len()?;
                    f.write_at(cut, &vec![0u8; (len - cut) as usize])
                })
                .is_ok()
        } else {
            memdir
                .open(&name, false)
                .and_then(|f| f.set_len(cut))
                .is_ok()
        };
        self.recorder.fault(format!(
            "segment damage: {name} {} (done: {done})",
            if cut == 0 {
                "deleted".to_string()
            } else if target == CorruptTarget::ZeroedTail {
                format!("zeroed from byte {cut} (SYNCED marks {marked_bytes})")
            } else {
                format!("cut at byte {cut}")
            }
        ));
        self.note_damaged(&frames, segment, cut);
    }

    /// What the store recorded as synced of its active segment `active`
    /// (`SYNCED`), in bytes.
    fn synced_mark_bytes(&self, active: u32) -> u64 {
        shoal_engine::store::read_synced_mark(&self.world.memdir)
            .ok()
            .flatten()
            .filter(|m| m.segment == active)
            .map_or(0, |m| m.bytes)
    }

    /// Damaged: each key whose latest record (highest segment, then offset) is
    /// in `segment` at or past byte `cut`.
    fn note_damaged(&self, frames: &[FoundFrame], segment: u32, cut: u64) {
        let mut latest: BTreeMap<(u8, Vec<u8>), (u32, u64)> = BTreeMap::new();
        for f in frames {
            let at = latest
                .entry((f.namespace, f.key.clone()))
                .or_insert((f.segment, f.offset));
            *at = (*at).max((f.segment, f.offset));
        }
        for ((namespace, key), (s, offset)) in latest {
            if s == segment && offset >= cut {
                lock(&self.damaged_keys).insert(crate::workload::key_of_stored(namespace, &key));
            }
        }
    }

    /// Every valid frame of every segment, as found on the disk image now.
    fn frames(&self) -> Vec<FoundFrame> {
        let memdir = &self.world.memdir;
        let mut found = Vec::new();
        for name in memdir.list().unwrap_or_default() {
            let Some(segment) = name
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(file) = memdir.open(&name, false) else {
                continue;
            };
            let len = file.len().unwrap_or(0) as usize;
            let mut data = vec![0u8; len];
            if file.read_at(0, &mut data).is_err() {
                continue;
            }
            let mut pos = SEGMENT_HEADER_BYTES as usize;
            while pos < data.len() {
                match read_frame(&data[pos..], u32::MAX) {
                    FrameRead::Valid { body, frame_len } => {
                        found.push(FoundFrame {
                            segment,
                            offset: pos as u64,
                            len: frame_len as u64,
                            batch_seq: body.batch_seq,
                            namespace: body.namespace,
                            key: body.key,
                        });
                        pos += frame_len;
                    }
                    _ => break,
                }
            }
        }
        found
    }
}

struct FoundFrame {
    segment: u32,
    offset: u64,
    len: u64,
    batch_seq: u64,
    namespace: u8,
    key: Vec<u8>,
}

fn segment_name(id: u32) -> String {
    format!("seg-{id:08}.log")
}

async fn sleep_ms(duration_ms: u64) {
    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
}
