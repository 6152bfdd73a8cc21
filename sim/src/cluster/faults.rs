//! Phase 1's fault tasks: each planned fault on its own task, at its time,
//! undoing itself (restart, reconnect, space back) before it ends; and the
//! supervisor that restarts a node whose store failed to open.
//!
//! Must not touch: the workload, the checker, the phases after the heal.

use super::audit::{set_network, NORMAL_LATENCY_MAX_MS};
use super::plan::{member_ip, ClusterFault, CLIENT_PORT};
use super::Member;
use crate::lock;
use crate::recorder::Recorder;
use shoal_engine::memdisk::MemDir;
use shoal_engine::rng::SplitMix64;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a fault task may touch: the runtime's nodes, the members, the history.
#[derive(Clone)]
pub(super) struct FaultWorld {
    pub handle: madsim::runtime::Handle,
    pub recorder: Arc<Recorder>,
    pub node_ids: BTreeMap<u32, madsim::task::NodeId>,
    pub members: Vec<Arc<Member>>,
    /// Draws for power losses and corruptions, in the order faults reach them.
    pub power_rng: Arc<Mutex<SplitMix64>>,
    /// A node's crashes never overlap (a restart must follow its own kill).
    pub crash_locks: Arc<BTreeMap<u32, tokio::sync::Mutex<()>>>,
    /// The node the heal probes write from.
    pub prober: madsim::runtime::NodeHandle,
    /// G7 failures the heal probes found.
    pub heal_failures: Arc<Mutex<Vec<String>>>,
}

impl FaultWorld {
    /// The world of a seed's members; the heal probes' node is created here.
    pub fn new(
        seed: u64,
        handle: &madsim::runtime::Handle,
        recorder: &Arc<Recorder>,
        members: &[Arc<Member>],
        node_ids: &BTreeMap<u32, madsim::task::NodeId>,
    ) -> FaultWorld {
        FaultWorld {
            handle: handle.clone(),
            recorder: recorder.clone(),
            node_ids: node_ids.clone(),
            members: members.to_vec(),
            power_rng: Arc::new(Mutex::new(SplitMix64::new(seed ^ 0x9e37))),
            crash_locks: Arc::new(
                node_ids
                    .keys()
                    .map(|id| (*id, tokio::sync::Mutex::new(())))
                    .collect(),
            ),
            prober: handle
                .create_node()
                .name("prober")
                .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 4, 1)))
                .build(),
            heal_failures: Arc::default(),
        }
    }

    fn member(&self, node: u32) -> &Arc<Member> {
        &self.members[node as usize - 1]
    }

    /// Kill `node` (its member marked down).
    fn kill(&self, node: u32) {
        self.handle.kill(self.node_ids[&node]);
        self.member(node).mark_down();
    }

    fn restart(&self, node: u32) {
        self.handle.restart(self.node_ids[&node]);
    }

    /// A crash of `node`'s disk with the next power draw: what it kept.
    fn power_loss(&self, node: u32) -> String {
        let seed = lock(&self.power_rng).next_u64();
        let report = self.member(node).memdir.crash(&mut SplitMix64::new(seed));
        format!(
            "unsynced writes kept {}, dropped {}, torn {}",
            report.writes_kept, report.writes_dropped, report.writes_torn
        )
    }
}

/// Restart each node the members ask for (a disk error at start), 500 ms
/// after killing it, until `stop`.
pub(super) fn spawn_supervisor(
    world: FaultWorld,
    mut restart_rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    stop: Arc<tokio::sync::Notify>,
) {
    tokio::spawn(async move {
        loop {
            // `biased`: no draw from tokio's thread RNG (determinism).
            let id = tokio::select! {
                biased;
                _ = stop.notified() => break,
                id = restart_rx.recv() => match id {
                    Some(id) => id,
                    None => break,
                },
            };
            let _serial = world.crash_locks[&id].lock().await;
            world.kill(id);
            tokio::time::sleep(Duration::from_millis(500)).await;
            world.restart(id);
            world.recorder.fault(format!(
                "supervisor restarts node {id} (disk error at start)"
            ));
        }
    });
}

/// At `at_ms`, inject `fault`, and undo it when its time is up.
pub(super) async fn run_fault(world: FaultWorld, at_ms: u64, fault: ClusterFault) {
    tokio::time::sleep(Duration::from_millis(at_ms)).await;
    let net = madsim::net::NetSim::current();
    world.recorder.fault(fault.to_string());
    let sleep = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    match fault {
        ClusterFault::Crash {
            node,
            power_loss,
            down_ms,
        } => crash(&world, node, power_loss, down_ms).await,
        ClusterFault::Isolate { node, duration_ms } => {
            net.clog_node(world.node_ids[&node]);
            sleep(duration_ms).await;
            net.unclog_node(world.node_ids[&node]);
            world.recorder.fault(format!("node {node} reconnected"));
        }
        ClusterFault::LongIsolate { node, duration_ms } => {
            long_isolate(&world, &net, node, duration_ms).await
        }
        ClusterFault::DiskFull { node, duration_ms } => {
            let memdir = &world.member(node).memdir;
            let used = memdir.used_bytes();
            memdir.set_capacity_bytes(Some(used));
            sleep(duration_ms).await;
            memdir.set_capacity_bytes(None);
            world.recorder.fault(format!("node {node} disk space back"));
        }
        ClusterFault::FsyncFailure { node, down_ms } => fsync_failure(&world, node, down_ms).await,
        ClusterFault::Corrupt { node, after_ms }
        | ClusterFault::SegmentCorrupt { node, after_ms } => {
            let segment = matches!(fault, ClusterFault::SegmentCorrupt { .. });
            corrupt(&world, node, after_ms, segment).await
        }
        ClusterFault::SegmentRot { node } => {
            let _serial = world.crash_locks[&node].lock().await;
            let seed = lock(&world.power_rng).next_u64();
            let flipped = corrupt_a_segment_byte(&world.member(node).memdir, seed);
            world
                .recorder
                .fault(format!("node {node} keeps running: {flipped}"));
        }
        ClusterFault::DiskLost { node, down_ms } => disk_lost(&world, node, down_ms).await,
        ClusterFault::ClockSkew { node, delta_ms } => {
            world
                .member(node)
                .skew_ms
                .fetch_add(delta_ms, Ordering::Relaxed);
        }
        ClusterFault::Lossy {
            loss_percent,
            latency_max_ms,
            duration_ms,
        } => {
            set_network(&net, loss_percent, latency_max_ms);
            sleep(duration_ms).await;
            set_network(&net, 0, NORMAL_LATENCY_MAX_MS);
            world.recorder.fault("network back to normal".to_string());
        }
        ClusterFault::Cut { a, b, duration_ms } => cut(&world, &net, (a, b), duration_ms).await,
    }
}

async fn crash(world: &FaultWorld, node: u32, power_loss: bool, down_ms: u64) {
    let _serial = world.crash_locks[&node].lock().await;
    world.kill(node);
    if power_loss {
        let kept = world.power_loss(node);
        world
            .recorder
            .fault(format!("node {node} power loss: {kept}"));
    }
    tokio::time::sleep(Duration::from_millis(down_ms)).await;
    world.restart(node);
    world.recorder.fault(format!("restart node {node}"));
}

/// Isolate `node`, then probe: its first acknowledged write after the heal
/// must come within `heal::HEAL_SERVE_BOUND_MS` (G7).
async fn long_isolate(world: &FaultWorld, net: &madsim::net::NetSim, node: u32, duration_ms: u64) {
    net.clog_node(world.node_ids[&node]);
    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
    net.unclog_node(world.node_ids[&node]);
    world.recorder.fault(format!("node {node} reconnected"));
    let addr = SocketAddr::new(member_ip(node), CLIENT_PORT);
    let probe = world
        .prober
        .spawn(crate::heal::first_acknowledged_write_ms(addr, node));
    let took_ms = probe.await.ok().flatten();
    let took = took_ms.map_or("never".to_string(), |ms| format!("{ms} ms"));
    world.recorder.fault(format!(
        "first write through node {node} after the heal acknowledged after {took}"
    ));
    if took_ms.is_none_or(|ms| ms > crate::heal::HEAL_SERVE_BOUND_MS) {
        lock(&world.heal_failures).push(format!(
            "G7 availability: after an isolation of {duration_ms} ms, node {node} acknowledged no write within {} ms of the heal (first after {took})",
            crate::heal::HEAL_SERVE_BOUND_MS,
        ));
    }
}

/// The node's next fsyncs fail; 300 ms later it loses power, and is down
/// for `down_ms`.
async fn fsync_failure(world: &FaultWorld, node: u32, down_ms: u64) {
    let _serial = world.crash_locks[&node].lock().await;
    let member = world.member(node);
    member.memdir.fail_next_syncs(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.kill(node);
    let kept = world.power_loss(node);
    member.memdir.fail_next_syncs(0);
    world.recorder.fault(format!(
        "node {node} restarted after failed fsyncs (power loss: {kept})"
    ));
    tokio::time::sleep(Duration::from_millis(down_ms)).await;
    world.restart(node);
}

/// A byte of a hint file (or of a segment, `segment`) flips; after
/// `after_ms` the node restarts and finds it.
async fn corrupt(world: &FaultWorld, node: u32, after_ms: u64, segment: bool) {
    let _serial = world.crash_locks[&node].lock().await;
    let member = world.member(node);
    let seed = lock(&world.power_rng).next_u64();
    world.recorder.fault(if segment {
        corrupt_a_segment_byte(&member.memdir, seed)
    } else {
        corrupt_a_byte(&member.memdir, seed)
    });
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    world.kill(node);
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.restart(node);
    world.recorder.fault(format!("restart node {node}"));
}

async fn disk_lost(world: &FaultWorld, node: u32, down_ms: u64) {
    let _serial = world.crash_locks[&node].lock().await;
    world.kill(node);
    let files = world.member(node).memdir.wipe();
    world
        .recorder
        .fault(format!("node {node}: {files} files gone with its disk"));
    tokio::time::sleep(Duration::from_millis(down_ms)).await;
    world.restart(node);
    world
        .recorder
        .fault(format!("restart node {node} on an empty disk"));
}

async fn cut(world: &FaultWorld, net: &madsim::net::NetSim, (a, b): (u32, u32), duration_ms: u64) {
    let (na, nb) = (world.node_ids[&a], world.node_ids[&b]);
    net.clog_link(na, nb);
    net.clog_link(nb, na);
    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
    // What each end's failure detector makes of the other now: with a third
    // node reaching both, indirect probes keep the other alive, though
    // requests cannot take the cut link.
    for (x, y) in [(a, b), (b, a)] {
        world.recorder.fault(view_across_cut(world.member(x), y));
    }
    net.unclog_link(na, nb);
    net.unclog_link(nb, na);
    world.recorder.fault(format!("link {a}-{b} restored"));
}

/// "node x sees node y alive, no direct link" (or why it cannot say).
fn view_across_cut(x: &Member, y: u32) -> String {
    let Some(cluster) = lock(&x.cluster).clone() else {
        return format!("node {} is down: no view of node {y} across the cut", x.id);
    };
    match cluster.members().into_iter().find(|m| m.node == y) {
        Some(m) => format!(
            "across the cut, node {} sees node {y} {}{}",
            x.id,
            m.state.as_str(),
            if m.reachable {
                ", direct link up"
            } else {
                ", no direct link"
            }
        ),
        None => format!("node {} does not know node {y}", x.id),
    }
}

/// Flip one byte of one of the node's hint files.
fn corrupt_a_byte(memdir: &MemDir, seed: u64) -> String {
    use shoal_engine::DiskDir;
    let mut rng = SplitMix64::new(seed);
    let names: Vec<String> = memdir
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".hint"))
        .collect();
    if names.is_empty() {
        return "latent corruption: no hint file yet, nothing done".into();
    }
    let name = &names[rng.below(names.len() as u64) as usize];
    let len = memdir.open(name, false).and_then(|f| f.len()).unwrap_or(0);
    if len == 0 {
        return format!("latent corruption: {name} is empty, nothing done");
    }
    let offset = rng.below(len);
    match memdir.corrupt_byte(name, offset) {
        Ok(()) => format!("latent corruption: {name} byte {offset} flipped"),
        Err(e) => format!("latent corruption of {name} failed: {e}"),
    }
}

/// Flip one byte past the header of one of the node's segment logs (its own
/// store's, not the hint store's).
fn corrupt_a_segment_byte(memdir: &MemDir, seed: u64) -> String {
    use shoal_engine::DiskDir;
    let mut rng = SplitMix64::new(seed);
    let names: Vec<String> = memdir
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    let Some(name) = names.get(rng.below(names.len().max(1) as u64) as usize) else {
        return "latent corruption: no segment yet, nothing done".into();
    };
    // The written part (a segment may be longer, zero-filled past its records).
    let len = memdir
        .open(name, false)
        .and_then(|f| {
            let mut bytes = vec![0u8; f.len()? as usize];
            f.read_at(0, &mut bytes)?;
            Ok(bytes
                .iter()
                .rposition(|b| *b != 0)
                .map_or(0, |i| i as u64 + 1))
        })
        .unwrap_or(0);
    // Past the segment header, so the damage is in a record.
    let header = shoal_engine::record::SEGMENT_HEADER_BYTES;
    if len <= header {
        return format!("latent corruption: {name} holds no record, nothing done");
    }
    let offset = header + rng.below(len - header);
    match memdir.corrupt_byte(name, offset) {
        Ok(()) => format!("latent corruption: {name} byte {offset} flipped"),
        Err(e) => format!("latent corruption of {name} failed: {e}"),
    }
}
