//! Cluster seeds: 3 to 5 real Shoal nodes (the same server, cluster driver and
//! peer transport as production, on madsim's network and the in-memory disk) with
//! n=3, r=2, w=2, clients spread over every member, and a fault plan from the seed:
//! crashes with power loss (unsynced writes kept, dropped or torn), isolated nodes
//! and cut links between members. Phase 2 heals everything, restarts the dead and
//! waits until every replica's anti-entropy digest agrees (a liveness failure if it
//! does not within the bound); phase 3 reads every key from every replica's store
//! directly, and the checker judges the history (G1-G6 and convergence).

use crate::client::RespConn;
use crate::digest::history_digest;
use crate::effects::EffectLog;
use crate::lock;
use crate::plan::WorkloadKnobs;
use crate::recorder::Recorder;
use crate::workload::{self, run_client};
use shoal_checker::{
    check, Context, Dot, Event, FinalState, History, Key, Meta, Quiescence, Report, Sibling,
};
use shoal_engine::cluster::map::{placement_owners, ClusterMap};
use shoal_engine::memdisk::MemDir;
use shoal_engine::rng::SplitMix64;
use shoal_engine::store::OpenError;
use shoal_engine::{Store, StoreOptions};
use shoal_net::cluster::{Cluster, ClusterConfig, MemberAddr, PEER_PORT_OFFSET};
use shoal_net::node::{start_node, BootError, BootHooks, NodeSetup};
use shoal_net::resp::Reply;
use shoal_net::server::{serve, ServerConfig, Shared};
use shoal_net::storage::{Storage, StorageConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CLIENT_PORT: u16 = 7379;
/// Each member's segment size.
const SEGMENT_SIZE_BYTES: u64 = 1 << 20;
const SECRET: &str = "simulation-secret";

pub fn member_ip(node: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 3, node as u8))
}

/// One fault of a cluster plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterFault {
    /// Kill the node (power loss when asked), restart it after `down_ms`.
    Crash {
        node: u32,
        power_loss: bool,
        down_ms: u64,
    },
    /// Cut the node off from everyone for `duration_ms`.
    Isolate { node: u32, duration_ms: u64 },
    /// Cut the node off from everyone for a long `duration_ms` (its open peer
    /// connections deep in retransmission backoff), then write through it until
    /// a write is acknowledged: later than `heal::HEAL_SERVE_BOUND_MS` after the
    /// heal fails the seed (G7).
    LongIsolate { node: u32, duration_ms: u64 },
    /// Cut the link between two members (both ways) for `duration_ms`.
    Cut { a: u32, b: u32, duration_ms: u64 },
    /// The node's disk has no free space for `duration_ms`.
    DiskFull { node: u32, duration_ms: u64 },
    /// The node's next fsyncs fail; it is restarted (power loss) after 300 ms and
    /// is down for `down_ms`.
    FsyncFailure { node: u32, down_ms: u64 },
    /// The node's disk is lost: it is killed, its data directory replaced by an
    /// empty one, and it restarts after `down_ms` with only its member list.
    DiskLost { node: u32, down_ms: u64 },
    /// A byte of one of the node's hint files flips; the node is restarted after
    /// `after_ms` (recovery finds the damage and scans the segment instead) and is
    /// down 200 ms.
    Corrupt { node: u32, after_ms: u64 },
    /// A byte of one of the node's segment files flips; the node is restarted
    /// after `after_ms` and is down 200 ms. Damaged synced data makes it set its
    /// segments aside and restore from its replicas (`open_store`).
    SegmentCorrupt { node: u32, after_ms: u64 },
    /// The node's wall clock moves by `delta_ms` and stays there (the hybrid
    /// logical clocks, the replica-write age limit and marker grace see it).
    ClockSkew { node: u32, delta_ms: i64 },
    /// Every link loses `loss_percent` of its packets and delays each by up to
    /// `latency_max_ms` (reordering them) for `duration_ms`.
    Lossy {
        loss_percent: u64,
        latency_max_ms: u64,
        duration_ms: u64,
    },
}

impl fmt::Display for ClusterFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterFault::Crash {
                node,
                power_loss,
                down_ms,
            } => write!(
                f,
                "crash node {node}{} for {down_ms} ms",
                if *power_loss { " (power loss)" } else { "" }
            ),
            ClusterFault::Isolate { node, duration_ms } => {
                write!(f, "isolate node {node} for {duration_ms} ms")
            }
            ClusterFault::LongIsolate { node, duration_ms } => write!(
                f,
                "isolate node {node} for {duration_ms} ms, then write through it"
            ),
            ClusterFault::Cut { a, b, duration_ms } => {
                write!(f, "cut link {a}-{b} for {duration_ms} ms")
            }
            ClusterFault::DiskFull { node, duration_ms } => {
                write!(f, "disk of node {node} full for {duration_ms} ms")
            }
            ClusterFault::FsyncFailure { node, down_ms } => {
                write!(
                    f,
                    "fsyncs fail on node {node}, restart after {down_ms} ms down"
                )
            }
            ClusterFault::Corrupt { node, after_ms } => {
                write!(
                    f,
                    "latent corruption of a hint file on node {node}, restart after {after_ms} ms"
                )
            }
            ClusterFault::SegmentCorrupt { node, after_ms } => write!(
                f,
                "latent corruption of a segment on node {node}, restart after {after_ms} ms"
            ),
            ClusterFault::DiskLost { node, down_ms } => {
                write!(
                    f,
                    "disk of node {node} lost; restart on an empty one after {down_ms} ms"
                )
            }
            ClusterFault::ClockSkew { node, delta_ms } => {
                write!(f, "wall clock of node {node} moves {delta_ms:+} ms")
            }
            ClusterFault::Lossy {
                loss_percent,
                latency_max_ms,
                duration_ms,
            } => write!(
                f,
                "lossy network: {loss_percent}% loss, latency up to {latency_max_ms} ms, for {duration_ms} ms"
            ),
        }
    }
}

/// An operator's ring change, sent as `SHOAL.RING` to a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimRingChange {
    Join {
        node: u32,
    },
    Leave {
        node: u32,
    },
    Replace {
        old: u32,
        new: u32,
    },
    /// Pin `namespace` to `nodes` with its own replica count and quorums.
    Pin {
        namespace: u8,
        nodes: Vec<u32>,
        replicas_n: u8,
        r: u8,
        w: u8,
    },
    /// One step of sending pinned `namespace` back to the default ring (the
    /// first hands its keys back, the second drops the pin).
    Unpin {
        namespace: u8,
    },
    /// An operator's join of a node that never comes (nothing listens at its
    /// address): it must be refused, and the ring stay as it was.
    JoinAbsent {
        node: u32,
    },
    /// An operator's abort of the change just made, while its handoffs run: the
    /// ring before it comes back, and the owners it displaced pull back.
    Abort,
}

impl SimRingChange {
    fn args(&self) -> Vec<String> {
        let addr = |n: u32| format!("{}:{CLIENT_PORT}", member_ip(n));
        match self {
            SimRingChange::Join { node } => {
                vec![
                    "SHOAL.RING".into(),
                    "JOIN".into(),
                    node.to_string(),
                    addr(*node),
                ]
            }
            SimRingChange::Leave { node } => {
                vec!["SHOAL.RING".into(), "LEAVE".into(), node.to_string()]
            }
            SimRingChange::Replace { old, new } => vec![
                "SHOAL.RING".into(),
                "REPLACE".into(),
                old.to_string(),
                new.to_string(),
                addr(*new),
            ],
            SimRingChange::Pin {
                namespace,
                nodes,
                replicas_n,
                r,
                w,
            } => ["SHOAL.RING".into(), "PIN".into(), namespace.to_string()]
                .into_iter()
                .chain([replicas_n, r, w].map(|q| q.to_string()))
                .chain(nodes.iter().map(u32::to_string))
                .collect(),
            SimRingChange::Unpin { namespace } => {
                vec!["SHOAL.RING".into(), "UNPIN".into(), namespace.to_string()]
            }
            SimRingChange::JoinAbsent { node } => {
                vec![
                    "SHOAL.RING".into(),
                    "JOIN".into(),
                    node.to_string(),
                    addr(*node),
                ]
            }
            SimRingChange::Abort => vec!["SHOAL.RING".into(), "ABORT".into()],
        }
    }
}

impl fmt::Display for SimRingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimRingChange::Join { node } => write!(f, "ring: join node {node}"),
            SimRingChange::Leave { node } => write!(f, "ring: node {node} leaves"),
            SimRingChange::Replace { old, new } => write!(f, "ring: node {new} replaces {old}"),
            SimRingChange::Pin {
                namespace,
                nodes,
                replicas_n,
                r,
                w,
            } => write!(
                f,
                "ring: pin namespace {namespace} to nodes {nodes:?} (n={replicas_n} r={r} w={w})"
            ),
            SimRingChange::Unpin { namespace } => write!(f, "ring: unpin namespace {namespace}"),
            SimRingChange::JoinAbsent { node } => {
                write!(f, "ring: join node {node}, which never comes")
            }
            SimRingChange::Abort => write!(f, "ring: abort the change just made"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub seed: u64,
    pub nodes: u32,
    pub replicas_n: u8,
    pub r: u8,
    pub w: u8,
    pub phase1_ms: u64,
    pub converge_bound_ms: u64,
    pub workload: WorkloadKnobs,
    /// (at_ms, fault), by time.
    pub faults: Vec<(u64, ClusterFault)>,
    /// A node started with the founders as seeds, outside the ring until a
    /// change admits it (id `nodes + 1`).
    pub spare: Option<u32>,
    /// (at_ms, change), by time; each retried until the previous one's handoffs
    /// are done.
    pub ring_changes: Vec<(u64, SimRingChange)>,
    /// Sloppy quorum with hinted handoff (then read-your-writes is not promised:
    /// a write acknowledged by a fallback is invisible to the owners until its
    /// hint is delivered).
    pub sloppy: bool,
    /// Values up to `heal::LARGE_VALUE_MAX_BYTES` under a small peer frame limit.
    pub large_values: bool,
    /// Group-commit batches syncing at once on every node.
    pub syncs_in_flight_max: usize,
}

impl ClusterPlan {
    pub fn from_seed(seed: u64) -> ClusterPlan {
        let mut rng = SplitMix64::new(seed ^ 0xc1u64.rotate_left(56));
        let nodes = 3 + rng.below(3) as u32;
        let phase1_ms = 4_000 + rng.below(4_000);
        let mut workload = crate::plan::workload_knobs(&mut rng);
        // Proxied writes wait for a coordinator that waits for its replicas.
        workload.op_timeout_ms = workload.op_timeout_ms.max(2_500);
        let mut faults = Vec::new();
        for _ in 0..rng.below(5) {
            let at_ms = 300 + rng.below(phase1_ms - 300);
            let node = 1 + rng.below(u64::from(nodes)) as u32;
            let fault = match rng.below(3) {
                0 => ClusterFault::Crash {
                    node,
                    power_loss: rng.chance_percent(70),
                    down_ms: 200 + rng.below(3_000),
                },
                1 => ClusterFault::Isolate {
                    node,
                    duration_ms: 200 + rng.below(3_000),
                },
                _ => {
                    let other = 1 + (node + rng.below(u64::from(nodes) - 1) as u32) % nodes;
                    ClusterFault::Cut {
                        a: node,
                        b: other,
                        duration_ms: 200 + rng.below(3_000),
                    }
                }
            };
            faults.push((at_ms, fault));
        }
        // Disk faults draw from their own stream (older plans keep their faults).
        let mut disk_rng = SplitMix64::new(seed ^ 0xd15c);
        if disk_rng.chance_percent(40) {
            for i in 0..1 + disk_rng.below(2) {
                let at_ms = 300 + disk_rng.below(phase1_ms - 300);
                let node = 1 + disk_rng.below(u64::from(nodes)) as u32;
                let fault = match disk_rng.below(3) {
                    0 => ClusterFault::DiskFull {
                        node,
                        duration_ms: 200 + disk_rng.below(2_000),
                    },
                    1 => ClusterFault::FsyncFailure {
                        node,
                        down_ms: 200 + disk_rng.below(1_000),
                    },
                    _ if i == 0 => ClusterFault::Corrupt {
                        node,
                        after_ms: 100 + disk_rng.below(2_000),
                    },
                    _ => ClusterFault::DiskFull {
                        node,
                        duration_ms: 200 + disk_rng.below(2_000),
                    },
                };
                faults.push((at_ms, fault));
            }
        }
        faults.sort_by_key(|(at, _)| *at);
        // Ring changes draw from their own stream, so the fault plans above stay
        // what they were before ring changes existed.
        let mut ring_rng = SplitMix64::new(seed ^ 0x5249_4e47);
        let mut ring_changes = Vec::new();
        let spare_id = nodes + 1;
        if ring_rng.chance_percent(50) {
            let founder = 1 + ring_rng.below(u64::from(nodes)) as u32;
            let first = match ring_rng.below(3) {
                0 => SimRingChange::Join { node: spare_id },
                1 => SimRingChange::Replace {
                    old: founder,
                    new: spare_id,
                },
                _ if nodes > 3 => SimRingChange::Leave { node: founder },
                _ => SimRingChange::Join { node: spare_id },
            };
            let at_ms = 300 + ring_rng.below(phase1_ms / 2);
            let second = match &first {
                SimRingChange::Join { .. } if ring_rng.chance_percent(40) => {
                    Some(SimRingChange::Leave { node: founder })
                }
                SimRingChange::Leave { .. } if ring_rng.chance_percent(40) => {
                    Some(SimRingChange::Join { node: spare_id })
                }
                _ => None,
            };
            ring_changes.push((at_ms, first));
            if let Some(second) = second {
                ring_changes.push((at_ms + 500 + ring_rng.below(phase1_ms / 2), second));
            }
        }
        let spare = ring_changes
            .iter()
            .any(|(_, c)| !matches!(c, SimRingChange::Leave { .. }))
            .then_some(spare_id);
        // A founder leaves while it is down and is joined back under its old id
        // with its old disk (own stream), restarting either while it is out of the
        // ring or after it is back in: what it held before it left must not come
        // back over deletes made (and their markers collected) while it was out.
        let mut rejoin_rng = SplitMix64::new(seed ^ 0x5e_901e);
        if ring_changes.is_empty() && nodes > 3 && rejoin_rng.chance_percent(40) {
            let founder = 1 + rejoin_rng.below(u64::from(nodes)) as u32;
            let leave_ms = 500 + rejoin_rng.below(phase1_ms / 4);
            let out_ms = 6_000 + rejoin_rng.below(3_000);
            let down_ms = if rejoin_rng.chance_percent(50) {
                out_ms + 3_000 + rejoin_rng.below(2_000)
            } else {
                1_000 + rejoin_rng.below(out_ms - 2_000)
            };
            let join_ms = leave_ms + out_ms;
            faults.push((
                leave_ms - 100,
                ClusterFault::Crash {
                    node: founder,
                    power_loss: rejoin_rng.chance_percent(50),
                    down_ms,
                },
            ));
            faults.sort_by_key(|(at, _)| *at);
            ring_changes.push((leave_ms, SimRingChange::Leave { node: founder }));
            ring_changes.push((join_ms, SimRingChange::Join { node: founder }));
        }
        // A lost disk (own stream again), in seeds without ring changes: the node
        // comes back empty, under its old id, and must neither reuse its old dots
        // nor mint new ones that cover them.
        let mut lost_rng = SplitMix64::new(seed ^ 0x1057_d15c);
        if ring_changes.is_empty() && lost_rng.chance_percent(25) {
            let at_ms = 500 + lost_rng.below(phase1_ms - 500);
            let node = 1 + lost_rng.below(u64::from(nodes)) as u32;
            let down_ms = 100 + lost_rng.below(2_000);
            faults.push((at_ms, ClusterFault::DiskLost { node, down_ms }));
            faults.sort_by_key(|(at, _)| *at);
        }
        // Clock skew and a lossy network, each from its own stream. Skews stay
        // well inside the replica-write age limit (2 s), which marker collection
        // assumes bounds the skew between nodes.
        let mut clock_rng = SplitMix64::new(seed ^ 0xc10c_5e3d);
        if clock_rng.chance_percent(30) {
            for _ in 0..1 + clock_rng.below(2) {
                let at_ms = clock_rng.below(phase1_ms);
                let node = 1 + clock_rng.below(u64::from(nodes)) as u32;
                let delta_ms = 50 + clock_rng.below(450) as i64;
                let delta_ms = if clock_rng.chance_percent(50) {
                    delta_ms
                } else {
                    -delta_ms
                };
                faults.push((at_ms, ClusterFault::ClockSkew { node, delta_ms }));
            }
        }
        // A pinned namespace (own stream), not with a lost disk: a pin hands the
        // namespace off to its nodes, and a handoff source that lost its disk
        // may not hold what it acknowledged (as with any ring change).
        let mut pin_rng = SplitMix64::new(seed ^ 0x0009_1e5d);
        let loses_a_disk = faults
            .iter()
            .any(|(_, f)| matches!(f, ClusterFault::DiskLost { .. }));
        if !loses_a_disk && pin_rng.chance_percent(35) {
            let namespace = pin_rng.below(u64::from(workload.namespaces.max(1))) as u8;
            // From founders that stay: a leave that would shrink the pin below
            // its n is refused (the leave would go untested), and a pin naming a
            // node already replaced is refused (the pin would).
            let mut founders: Vec<u32> = (1..=nodes)
                .filter(|node| {
                    !ring_changes.iter().any(|(_, c)| {
                        matches!(c, SimRingChange::Leave { node: n }
                            | SimRingChange::Replace { old: n, .. } if n == node)
                    })
                })
                .collect();
            let size = 2 + pin_rng.below(founders.len().min(4) as u64 - 1) as usize;
            let mut chosen = Vec::new();
            while chosen.len() < size {
                let i = pin_rng.below(founders.len() as u64) as usize;
                chosen.push(founders.swap_remove(i));
            }
            chosen.sort_unstable();
            let replicas_n = if size >= 3 && pin_rng.chance_percent(50) {
                3
            } else {
                2
            };
            let (r, w) = match (replicas_n, pin_rng.chance_percent(50)) {
                (3, _) => (2, 2),
                (_, true) => (1, 2),
                (_, false) => (2, 1),
            };
            let at_ms = 300 + pin_rng.below(phase1_ms / 2);
            let pin = SimRingChange::Pin {
                namespace,
                nodes: chosen,
                replicas_n,
                r,
                w,
            };
            let at = ring_changes.partition_point(|(t, _)| *t <= at_ms);
            ring_changes.insert(at, (at_ms, pin));
            // Half of the pins are undone later: the namespace's keys go back to
            // the default ring under load, then the pin is dropped (the second
            // step waits for the first one's handoffs).
            if pin_rng.chance_percent(50) {
                let unpin_ms = at_ms + 1_000 + pin_rng.below(2_000);
                for step_ms in [unpin_ms, unpin_ms + 300] {
                    let at = ring_changes.partition_point(|(t, _)| *t <= step_ms);
                    ring_changes.insert(at, (step_ms, SimRingChange::Unpin { namespace }));
                }
            }
        }
        // A join of a node that never comes (own stream): refused, and the
        // changes after it go through.
        let mut absent_rng = SplitMix64::new(seed ^ 0x00ab_5e17);
        if absent_rng.chance_percent(15) {
            let at_ms = 200 + absent_rng.below(phase1_ms / 2);
            let at = ring_changes.partition_point(|(t, _)| *t <= at_ms);
            let node = spare_id + 1;
            ring_changes.insert(at, (at_ms, SimRingChange::JoinAbsent { node }));
        }
        // An abort of a join while its handoffs run (own stream), when no later
        // change names the joined node.
        let mut abort_rng = SplitMix64::new(seed ^ 0x0ab0_77ed);
        if abort_rng.chance_percent(20) {
            let candidates: Vec<usize> = (0..ring_changes.len())
                .filter(|i| match ring_changes[*i].1 {
                    SimRingChange::Join { node } => !ring_changes[i + 1..]
                        .iter()
                        .any(|(_, later)| later.args().contains(&node.to_string())),
                    _ => false,
                })
                .collect();
            if !candidates.is_empty() {
                let i = candidates[abort_rng.below(candidates.len() as u64) as usize];
                ring_changes.insert(i + 1, (ring_changes[i].0, SimRingChange::Abort));
            }
        }
        // Segment corruption (own stream), ring changes and pins allowed: the
        // node restoring from its replicas serves no handoff until it is whole.
        // One data-loss event per seed at most: a write acknowledged by exactly
        // the two nodes that lost data is gone (w=2 tolerates one).
        let mut segment_rng = SplitMix64::new(seed ^ 0x5e6c_0ffe);
        let loses_a_disk = faults
            .iter()
            .any(|(_, f)| matches!(f, ClusterFault::DiskLost { .. }));
        if !loses_a_disk && segment_rng.chance_percent(20) {
            let at_ms = 500 + segment_rng.below(phase1_ms - 500);
            let node = 1 + segment_rng.below(u64::from(nodes)) as u32;
            let after_ms = segment_rng.below(1_000);
            faults.push((at_ms, ClusterFault::SegmentCorrupt { node, after_ms }));
        }
        if ring_changes.is_empty() {
            long_isolation(seed, nodes, phase1_ms, &mut faults);
        }
        let large_values = SplitMix64::new(seed ^ 0x0b16_0b16).chance_percent(30);
        if large_values {
            // Many keys, so that a node that missed a few seconds of writes
            // differs by many frames' worth.
            workload.value_size_max_bytes = crate::heal::LARGE_VALUE_MAX_BYTES;
            workload.keys = workload.keys.max(crate::heal::LARGE_VALUE_KEYS_MIN);
        }
        let mut loss_rng = SplitMix64::new(seed ^ 0x0010_55e7);
        if loss_rng.chance_percent(25) {
            let at_ms = 300 + loss_rng.below(phase1_ms - 300);
            faults.push((
                at_ms,
                ClusterFault::Lossy {
                    loss_percent: loss_rng.below(6),
                    latency_max_ms: 10 + loss_rng.below(140),
                    duration_ms: 300 + loss_rng.below(1_700),
                },
            ));
        }
        faults.sort_by_key(|(at, _)| *at);
        ClusterPlan {
            seed,
            nodes,
            replicas_n: 3,
            r: 2,
            w: 2,
            phase1_ms,
            converge_bound_ms: 30_000,
            workload,
            faults,
            spare,
            ring_changes,
            sloppy: SplitMix64::new(seed ^ 0x5107).chance_percent(50),
            large_values,
            syncs_in_flight_max: if SplitMix64::new(seed ^ 0x5_1c5).chance_percent(50) {
                1
            } else {
                4
            },
        }
    }

    /// Whether some node loses synced data: its disk, or (restored from its
    /// replicas) its damaged segments. Until anti-entropy restores it, a write
    /// can be on one replica only, which a read quorum may miss.
    pub fn loses_data(&self) -> bool {
        self.faults.iter().any(|(_, f)| {
            matches!(
                f,
                ClusterFault::DiskLost { .. } | ClusterFault::SegmentCorrupt { .. }
            )
        })
    }

    /// Every node the plan starts: the founders, then the spare.
    pub fn node_ids(&self) -> Vec<u32> {
        (1..=self.nodes).chain(self.spare).collect()
    }
}

/// In 15% of the seeds without ring changes (own stream): one node is cut off
/// for 8-20 s, far past madsim's 10 s retransmission backoff cap, and no other
/// fault names it (the probe after the heal must find it up and its disk fine).
fn long_isolation(seed: u64, nodes: u32, phase1_ms: u64, faults: &mut Vec<(u64, ClusterFault)>) {
    let mut heal_rng = SplitMix64::new(seed ^ 0x4ea1_7153);
    if !heal_rng.chance_percent(15) {
        return;
    }
    let at_ms = 300 + heal_rng.below(phase1_ms / 2);
    let node = 1 + heal_rng.below(u64::from(nodes)) as u32;
    let duration_ms = 8_000 + heal_rng.below(12_000);
    faults.retain(|(_, fault)| !fault.names(node));
    faults.push((at_ms, ClusterFault::LongIsolate { node, duration_ms }));
    faults.sort_by_key(|(at, _)| *at);
}

impl ClusterFault {
    /// Whether the fault acts on `node` itself (network-wide faults name none).
    fn names(&self, node: u32) -> bool {
        match self {
            ClusterFault::Crash { node: n, .. }
            | ClusterFault::Isolate { node: n, .. }
            | ClusterFault::LongIsolate { node: n, .. }
            | ClusterFault::DiskFull { node: n, .. }
            | ClusterFault::FsyncFailure { node: n, .. }
            | ClusterFault::DiskLost { node: n, .. }
            | ClusterFault::Corrupt { node: n, .. }
            | ClusterFault::SegmentCorrupt { node: n, .. }
            | ClusterFault::ClockSkew { node: n, .. } => *n == node,
            ClusterFault::Cut { a, b, .. } => *a == node || *b == node,
            ClusterFault::Lossy { .. } => false,
        }
    }
}

impl fmt::Display for ClusterPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster seed {}: {} nodes, n={} r={} w={}{}, {} syncs in flight, phase 1 {} ms, {} clients, {} keys",
            self.seed,
            self.nodes,
            self.replicas_n,
            self.r,
            self.w,
            if self.sloppy { " sloppy" } else { "" },
            self.syncs_in_flight_max,
            self.phase1_ms,
            self.workload.clients,
            self.workload.keys
        )?;
        if self.large_values {
            writeln!(
                f,
                "  values up to {} B, peer frames up to {} B, repair requests up to {} B",
                crate::heal::LARGE_VALUE_MAX_BYTES,
                crate::heal::LARGE_FRAME_BODY_MAX_BYTES,
                crate::heal::LARGE_REPAIR_BATCH_BYTES_MAX
            )?;
        }
        if let Some(spare) = self.spare {
            writeln!(
                f,
                "  node {spare} starts outside the ring, with the founders as seeds"
            )?;
        }
        for (at, fault) in &self.faults {
            writeln!(f, "  {at} ms: {fault}")?;
        }
        for (at, change) in &self.ring_changes {
            writeln!(f, "  {at} ms: {change}")?;
        }
        Ok(())
    }
}

/// One member: what outlives its crashes (the disk), and its running storage.
struct Member {
    id: u32,
    memdir: MemDir,
    storage: Mutex<Option<Storage>>,
    config: ClusterConfig,
    store_options: StoreOptions,
    storage_config: StorageConfig,
    open_failure: Mutex<Option<String>>,
    /// Asks the simulation's supervisor to restart this node (after 500 ms).
    supervisor: tokio::sync::mpsc::UnboundedSender<u32>,
    cluster: Mutex<Option<Arc<Cluster>>>,
    hints: Mutex<Option<Storage>>,
    /// The wall-clock skew of this node's runtime (kept across restarts).
    skew_ms: Arc<std::sync::atomic::AtomicI64>,
    /// What its store did, recorded in the history (see `effects`).
    effects: Arc<EffectLog>,
}

impl BootHooks for Member {
    fn store_opened(&self, store: &mut Store) {
        self.effects.attach(store);
    }

    /// The node serves its peers from here on (Cluster::start's incarnation
    /// check waits for them), so the audits read these stores from here on:
    /// registering them only once the start returned, the hint audit saw an
    /// owner that had merged a delivered hint as holding nothing (cluster
    /// seed 20055520, a node restarted on an empty disk while isolated).
    fn storages_started(&self, storage: &Storage, hints: Option<&Storage>) {
        *lock(&self.storage) = Some(storage.clone());
        *lock(&self.hints) = hints.cloned();
    }
}

impl Member {
    /// The node was killed: its storages and driver are gone with it (audits
    /// skip a node that is down).
    fn mark_down(&self) {
        *lock(&self.storage) = None;
        *lock(&self.cluster) = None;
        *lock(&self.hints) = None;
    }

    async fn run(self: Arc<Member>) {
        *lock(&self.storage) = None;
        *lock(&self.cluster) = None;
        *lock(&self.hints) = None;
        let dir: Arc<dyn shoal_engine::DiskDir> = Arc::new(self.memdir.clone());
        let setup = NodeSetup {
            store: self.store_options.clone(),
            storage: self.storage_config.clone(),
            cluster: Some(self.config.clone()),
        };
        // The production boot (`start_node`). A supervisor restarts a node
        // whose boot failed on an I/O error (an fsync failing at start); damaged
        // synced data is set aside and restored from the replicas.
        let booted = loop {
            let runtime = crate::node::SkewedRuntime::new(self.skew_ms.clone());
            match start_node(dir.clone(), runtime, setup.clone(), self.as_ref()).await {
                Ok(booted) => break booted,
                Err(
                    BootError::Store(OpenError::Disk(_)) | BootError::HintStore(OpenError::Disk(_)),
                ) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) if e.is_disk_failure() => {
                    // A disk error in the cluster's start (saving the first
                    // map, recording a new actor or incarnation): the process
                    // exits and its supervisor restarts it (all of it: peer
                    // service may have begun).
                    let _ = self.supervisor.send(self.id);
                    std::future::pending::<()>().await;
                    return;
                }
                Err(BootError::Cluster(e)) => {
                    panic!("node {} could not start its cluster: {e}", self.id)
                }
                Err(e) => {
                    *lock(&self.open_failure) = Some(e.to_string());
                    return;
                }
            }
        };
        let storage = booted.storage;
        let cluster = booted.cluster.expect("a cluster member boots a cluster");
        *lock(&self.cluster) = Some(cluster.clone());
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(member_ip(self.id), CLIENT_PORT))
                .await
                .expect("the client port is free after kill");
        let config = ServerConfig {
            bind: member_ip(self.id).to_string(),
            port: CLIENT_PORT,
            data_dir: "memdir".into(),
            clients_max: 64,
            ..ServerConfig::default()
        };
        serve(
            listener,
            Shared::with_cluster(storage, config, Some(cluster)),
        )
        .await;
    }
}

pub struct ClusterOutcome {
    pub plan: ClusterPlan,
    pub report: Report,
    pub digest: String,
    pub jsonl: String,
    pub failures: Vec<String>,
    pub simulated_ms: u64,
}

impl ClusterOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

pub fn replay_command(seed: u64) -> String {
    let features = crate::run::features();
    if features.is_empty() {
        format!("ci/sim --cluster --seed {seed}")
    } else {
        format!(
            "ci/sim --cluster --seed {seed} --features {}",
            features.join(",")
        )
    }
}

/// Run one cluster seed in a fresh madsim runtime on its own thread.
pub fn run_cluster_seed(seed: u64) -> ClusterOutcome {
    run_cluster_plan(ClusterPlan::from_seed(seed))
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

/// Run one cluster plan (a seed's, or one a test built) on its own thread.
pub fn run_cluster_plan(plan: ClusterPlan) -> ClusterOutcome {
    let seed = plan.seed;
    let time_limit_ms = plan.phase1_ms + 600_000;
    crate::run::on_seed_thread(
        format!("cluster-plan-{seed}"),
        seed,
        time_limit_ms,
        move || simulate_cluster(plan),
    )
}

pub async fn simulate_cluster(plan: ClusterPlan) -> ClusterOutcome {
    let handle = madsim::runtime::Handle::current();
    set_network(&madsim::net::NetSim::current(), 0, NORMAL_LATENCY_MAX_MS);
    let recorder = Arc::new(Recorder::new());
    let ids: Vec<u32> = plan.node_ids();
    let founders: Vec<u32> = (1..=plan.nodes).collect();
    let addr_of = |id: u32| {
        let ip = member_ip(id);
        MemberAddr {
            client: format!("{ip}:{CLIENT_PORT}"),
            peer: format!("{ip}:{}", CLIENT_PORT + PEER_PORT_OFFSET),
        }
    };
    let members_addrs: BTreeMap<u32, MemberAddr> = founders
        .iter()
        .map(|id| {
            let ip = member_ip(*id);
            let addr = MemberAddr {
                client: format!("{ip}:{CLIENT_PORT}"),
                peer: format!("{ip}:{}", CLIENT_PORT + PEER_PORT_OFFSET),
            };
            (*id, addr)
        })
        .collect();
    let mut members = Vec::new();
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    // Ends the restart loop below when the seed ends. Its task lives on
    // madsim's main node and holds the runtime's handle, which holds the
    // members (in their nodes' init closures), which hold `restart_tx`: a cycle
    // that kept every seed's whole world in memory (0.8 MB a seed; a 100,000
    // seed sweep would not fit).
    let restarts_stop = Arc::new(tokio::sync::Notify::new());
    // Weak: each member's config holds the hint audit, which must not keep the
    // members (and their in-memory disks) alive after the seed.
    let all_members: Arc<std::sync::OnceLock<Vec<std::sync::Weak<Member>>>> = Arc::default();
    let mut node_ids = BTreeMap::new();
    for id in &ids {
        // The spare is not among the founders: they are its seeds.
        let mut config = ClusterConfig::new(*id, members_addrs.clone(), SECRET.into());
        config.self_addr = addr_of(*id);
        config.replicas_n = plan.replicas_n;
        config.read_quorum = plan.r;
        config.write_quorum = plan.w;
        config.anti_entropy_interval_ms = 500;
        // Delete markers become candidates quickly, so collection runs during the
        // faults and in phase 2.
        config.tombstone_grace_ms = 500;
        config.sloppy_quorum = plan.sloppy;
        config.hint_observer = Some(hint_audit(all_members.clone(), recorder.clone()));
        let mut record_size_max_bytes = StoreOptions::default().record_size_max_bytes;
        if plan.large_values {
            config.peer_frame_body_max_bytes = crate::heal::LARGE_FRAME_BODY_MAX_BYTES;
            config.repair_batch_bytes_max = crate::heal::LARGE_REPAIR_BATCH_BYTES_MAX;
            config.anti_entropy_bytes_per_round_max =
                crate::heal::LARGE_ANTI_ENTROPY_ROUND_BYTES_MAX;
            record_size_max_bytes = crate::heal::LARGE_RECORD_SIZE_MAX_BYTES;
        }
        if cfg!(feature = "bug-skip-anti-entropy") {
            // Planted bug: anti-entropy never runs, so a replica that missed writes
            // while down or cut off stays behind.
            config.anti_entropy_interval_ms = u64::MAX / 4;
        }
        let member = Arc::new(Member {
            id: *id,
            memdir: MemDir::new(),
            storage: Mutex::new(None),
            config,
            store_options: StoreOptions {
                node_id: *id,
                segment_size_bytes: SEGMENT_SIZE_BYTES,
                delete_markers_collectable: false,
                record_size_max_bytes,
                ..StoreOptions::default()
            },
            storage_config: StorageConfig {
                syncs_in_flight_max: plan.syncs_in_flight_max,
                // A batch stays well inside a segment.
                batch_bytes_max: (SEGMENT_SIZE_BYTES / 4) as usize,
                ..StorageConfig::default()
            },
            open_failure: Mutex::new(None),
            supervisor: restart_tx.clone(),
            cluster: Mutex::new(None),
            hints: Mutex::new(None),
            skew_ms: Arc::default(),
            effects: EffectLog::new(recorder.clone(), *id),
        });
        let init = member.clone();
        let node = handle
            .create_node()
            .name(format!("shoal-{id}"))
            .ip(member_ip(*id))
            .init(move || init.clone().run())
            .build();
        node_ids.insert(*id, node.id());
        members.push(member);
    }
    let _ = all_members.set(members.iter().map(Arc::downgrade).collect());
    let targets: Vec<SocketAddr> = ids
        .iter()
        .map(|id| SocketAddr::new(member_ip(*id), CLIENT_PORT))
        .collect();
    let shared = workload::Shared::with_targets(plan.workload.clone(), recorder.clone(), targets);
    let mut client_tasks = Vec::new();
    for index in 0..plan.workload.clients {
        let client = handle
            .create_node()
            .name(format!("client-{index}"))
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, index as u8 + 1)))
            .build();
        client_tasks.push(client.spawn(run_client(shared.clone(), index, plan.seed)));
    }

    // Phase 1: faults on their own tasks, workload meanwhile.
    let mut fault_tasks = Vec::new();
    let power_rng = Arc::new(Mutex::new(SplitMix64::new(plan.seed ^ 0x9e37)));
    // A node's crashes never overlap (a restart must follow its own kill).
    let crash_locks: Arc<BTreeMap<u32, tokio::sync::Mutex<()>>> = Arc::new(
        ids.iter()
            .map(|id| (*id, tokio::sync::Mutex::new(())))
            .collect(),
    );
    {
        let handle = handle.clone();
        let node_ids = node_ids.clone();
        let crash_locks = crash_locks.clone();
        let recorder = recorder.clone();
        let members = members.clone();
        let stop = restarts_stop.clone();
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
                let _serial = crash_locks[&id].lock().await;
                handle.kill(node_ids[&id]);
                members[id as usize - 1].mark_down();
                tokio::time::sleep(Duration::from_millis(500)).await;
                handle.restart(node_ids[&id]);
                recorder.fault(format!(
                    "supervisor restarts node {id} (disk error at start)"
                ));
            }
        });
    }
    let heal_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let prober = handle
        .create_node()
        .name("prober")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 4, 1)))
        .build();
    for (at_ms, fault) in plan.faults.clone() {
        let (prober, heal_failures) = (prober.clone(), heal_failures.clone());
        let handle = handle.clone();
        let recorder = recorder.clone();
        let node_ids = node_ids.clone();
        let members: Vec<Arc<Member>> = members.clone();
        let power_rng = power_rng.clone();
        let crash_locks = crash_locks.clone();
        fault_tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at_ms)).await;
            let net = madsim::net::NetSim::current();
            recorder.fault(fault.to_string());
            match fault {
                ClusterFault::Crash {
                    node,
                    power_loss,
                    down_ms,
                } => {
                    let _serial = crash_locks[&node].lock().await;
                    handle.kill(node_ids[&node]);
                    members[node as usize - 1].mark_down();
                    if power_loss {
                        let seed = lock(&power_rng).next_u64();
                        let report = members[node as usize - 1]
                            .memdir
                            .crash(&mut SplitMix64::new(seed));
                        recorder.fault(format!(
                            "node {node} power loss: unsynced writes kept {}, dropped {}, torn {}",
                            report.writes_kept, report.writes_dropped, report.writes_torn
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(down_ms)).await;
                    handle.restart(node_ids[&node]);
                    recorder.fault(format!("restart node {node}"));
                }
                ClusterFault::Isolate { node, duration_ms } => {
                    net.clog_node(node_ids[&node]);
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    net.unclog_node(node_ids[&node]);
                    recorder.fault(format!("node {node} reconnected"));
                }
                ClusterFault::LongIsolate { node, duration_ms } => {
                    net.clog_node(node_ids[&node]);
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    net.unclog_node(node_ids[&node]);
                    recorder.fault(format!("node {node} reconnected"));
                    let addr = SocketAddr::new(member_ip(node), CLIENT_PORT);
                    let probe = prober.spawn(crate::heal::first_acknowledged_write_ms(addr, node));
                    let took_ms = probe.await.ok().flatten();
                    recorder.fault(format!(
                        "first write through node {node} after the heal acknowledged after {}",
                        took_ms.map_or("never".to_string(), |ms| format!("{ms} ms"))
                    ));
                    if took_ms.is_none_or(|ms| ms > crate::heal::HEAL_SERVE_BOUND_MS) {
                        lock(&heal_failures).push(format!(
                            "G7 availability: after an isolation of {duration_ms} ms, node {node} acknowledged no write within {} ms of the heal (first after {})",
                            crate::heal::HEAL_SERVE_BOUND_MS,
                            took_ms.map_or("never".to_string(), |ms| format!("{ms} ms"))
                        ));
                    }
                }
                ClusterFault::DiskFull { node, duration_ms } => {
                    let memdir = &members[node as usize - 1].memdir;
                    let used = memdir.used_bytes();
                    memdir.set_capacity_bytes(Some(used));
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    memdir.set_capacity_bytes(None);
                    recorder.fault(format!("node {node} disk space back"));
                }
                ClusterFault::FsyncFailure { node, down_ms } => {
                    let _serial = crash_locks[&node].lock().await;
                    let member = &members[node as usize - 1];
                    member.memdir.fail_next_syncs(3);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    handle.kill(node_ids[&node]);
                    members[node as usize - 1].mark_down();
                    let seed = lock(&power_rng).next_u64();
                    let report = member.memdir.crash(&mut SplitMix64::new(seed));
                    member.memdir.fail_next_syncs(0);
                    recorder.fault(format!(
                        "node {node} restarted after failed fsyncs (power loss: unsynced writes kept {}, dropped {}, torn {})",
                        report.writes_kept, report.writes_dropped, report.writes_torn
                    ));
                    tokio::time::sleep(Duration::from_millis(down_ms)).await;
                    handle.restart(node_ids[&node]);
                }
                ClusterFault::Corrupt { node, after_ms }
                | ClusterFault::SegmentCorrupt { node, after_ms } => {
                    let _serial = crash_locks[&node].lock().await;
                    let member = &members[node as usize - 1];
                    let seed = lock(&power_rng).next_u64();
                    recorder.fault(match fault {
                        ClusterFault::SegmentCorrupt { .. } => {
                            corrupt_a_segment_byte(&member.memdir, seed)
                        }
                        _ => corrupt_a_byte(&member.memdir, seed),
                    });
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    handle.kill(node_ids[&node]);
                    members[node as usize - 1].mark_down();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    handle.restart(node_ids[&node]);
                    recorder.fault(format!("restart node {node}"));
                }
                ClusterFault::DiskLost { node, down_ms } => {
                    let _serial = crash_locks[&node].lock().await;
                    handle.kill(node_ids[&node]);
                    members[node as usize - 1].mark_down();
                    let files = members[node as usize - 1].memdir.wipe();
                    recorder.fault(format!("node {node}: {files} files gone with its disk"));
                    tokio::time::sleep(Duration::from_millis(down_ms)).await;
                    handle.restart(node_ids[&node]);
                    recorder.fault(format!("restart node {node} on an empty disk"));
                }
                ClusterFault::ClockSkew { node, delta_ms } => {
                    members[node as usize - 1]
                        .skew_ms
                        .fetch_add(delta_ms, Ordering::Relaxed);
                }
                ClusterFault::Lossy {
                    loss_percent,
                    latency_max_ms,
                    duration_ms,
                } => {
                    set_network(&net, loss_percent, latency_max_ms);
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    set_network(&net, 0, NORMAL_LATENCY_MAX_MS);
                    recorder.fault("network back to normal".to_string());
                }
                ClusterFault::Cut { a, b, duration_ms } => {
                    let (na, nb) = (node_ids[&a], node_ids[&b]);
                    net.clog_link(na, nb);
                    net.clog_link(nb, na);
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    // What each end's failure detector makes of the other now:
                    // with a third node reaching both, indirect probes keep the
                    // other alive, though requests cannot take the cut link.
                    for (x, y) in [(a, b), (b, a)] {
                        recorder.fault(view_across_cut(&members[x as usize - 1], y));
                    }
                    net.unclog_link(na, nb);
                    net.unclog_link(nb, na);
                    recorder.fault(format!("link {a}-{b} restored"));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(plan.phase1_ms)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let admin = handle
        .create_node()
        .name("admin")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let admin_task = admin.spawn(run_ring_changes(
        plan.ring_changes.clone(),
        members.clone(),
        recorder.clone(),
        plan.seed,
        plan.sloppy,
    ));
    for task in fault_tasks {
        let _ = task.await;
    }
    let _ = admin_task.await;
    for task in client_tasks {
        let _ = task.await;
    }

    // Phase 2: every fault has healed (each task undoes its own); wait until every
    // replica's digest agrees. With n equal to the member count that is every node;
    // otherwise each partition's replicas are compared through their keys below.
    let heal_ms = recorder.now_ms();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(plan.converge_bound_ms);
    let final_map = wait_converged(&members, deadline).await;
    let waited_ms = recorder.now_ms() - heal_ms;
    // Phase 2b: give delete-marker collection time to run on the healed cluster
    // (its settle delay and two rounds), then wait for agreement again.
    let final_map = match final_map {
        Some(_) => {
            let config = &members[0].config;
            let settle_ms = shoal_engine::cluster::tombstones::settle_ms(
                config.request_timeout_ms,
                config.replica_write_age_max_ms,
            );
            // (Capped: the skip-anti-entropy planted bug sets an interval that
            // would overflow simulated time.)
            let drain_ms = settle_ms + 2 * config.anti_entropy_interval_ms.min(1_000);
            tokio::time::sleep(Duration::from_millis(drain_ms)).await;
            wait_converged(&members, deadline + Duration::from_millis(drain_ms)).await
        }
        None => None,
    };
    let converged = final_map.is_some();
    if !converged {
        recorder.fault(why_not_converged(&members));
    }
    let (agreed, forgotten, dropped) = members
        .iter()
        .filter_map(|m| lock(&m.cluster).clone())
        .fold((0, 0, 0), |(a, f, d), c| {
            (
                a + c.stats.markers_agreed.load(Ordering::Relaxed),
                f + c.stats.markers_forgotten.load(Ordering::Relaxed),
                d + c.stats.copies_dropped.load(Ordering::Relaxed),
            )
        });
    recorder.fault(format!(
        "since the last restarts: delete markers agreed {agreed}, forgotten {forgotten} (per replica); copies of partitions no longer owned dropped {dropped}"
    ));
    recorder.push(Event::Quiescence(Quiescence {
        converged,
        // Convergence after the heal, before the collection wait.
        waited_ms,
    }));

    // Phase 3: every key touched, from every replica's store.
    let keys: BTreeSet<Key> = lock(&shared.keys_touched).clone();
    let mut failures = lock(&heal_failures).clone();
    for member in &members {
        if let Some(reason) = lock(&member.open_failure).clone() {
            failures.push(format!("node {} refused to open: {reason}", member.id));
        }
    }
    let (stored, delivered) = members
        .iter()
        .filter_map(|m| lock(&m.cluster).clone())
        .fold((0, 0), |(s, d), c| {
            (
                s + c.stats.hints_stored.load(Ordering::Relaxed),
                d + c.stats.hints_delivered.load(Ordering::Relaxed),
            )
        });
    recorder.fault(format!(
        "hints since the last restarts: stored {stored}, delivered {delivered}"
    ));
    // A fresh dot actor only for a node whose disk was lost: any other restart
    // must be recognised as the same directory.
    for member in &members {
        let Some(cluster) = lock(&member.cluster).clone() else {
            continue;
        };
        let lost = plan.faults.iter().any(|(_, f)| {
            matches!(f, ClusterFault::DiskLost { node, .. } | ClusterFault::SegmentCorrupt { node, .. } if *node == member.id)
        });
        if let Some((done, others)) = cluster.restoring() {
            failures.push(format!(
                "node {} is still restoring from its replicas after convergence ({done} of {others} merged)",
                member.id
            ));
        }
        let actor = cluster.actor();
        if actor != member.id && !lost {
            failures.push(format!(
                "node {} took a new dot actor {actor} although it never lost data",
                member.id
            ));
        }
        if actor != member.id {
            recorder.fault(format!("node {} mints dots as actor {actor}", member.id));
        }
        let skewed: Vec<String> = cluster
            .clock_offsets()
            .iter()
            .filter(|(_, (offset, _))| offset.unsigned_abs() >= 20)
            .map(|(node, (offset, error))| format!("node {node} {offset:+} ms (±{error})"))
            .collect();
        if !skewed.is_empty() {
            recorder.fault(format!(
                "node {} measures wall clocks: {}",
                member.id,
                skewed.join(", ")
            ));
        }
    }
    if let Some(map) = &final_map {
        recorder.fault(format!(
            "final ring version {}: members {:?}",
            map.version(),
            map.ring().members()
        ));
        for key in &keys {
            let owners = map.owners(map.partition_of_key(key.ns, key.name.as_bytes()));
            for owner in owners {
                let member = &members[*owner as usize - 1];
                let Some(storage) = lock(&member.storage).clone() else {
                    continue;
                };
                match storage.read(|s| s.get(key.ns, key.name.as_bytes())) {
                    Ok(set) => recorder.push(Event::Final(final_state(key, *owner, set))),
                    Err(e) => failures.push(format!("final read of {key} on node {owner}: {e}")),
                }
            }
        }
        failures.extend(audit_pins(&members, map, &recorder));
    }
    let simulated_ms = recorder.now_ms();
    let history = History {
        meta: Meta {
            seed: Some(plan.seed),
            n: Some(u32::from(plan.replicas_n)),
            r: Some(u32::from(plan.r)),
            w: Some(u32::from(plan.w)),
            // Strict quorums (r + w > n, no sloppy quorum) and reads that span both
            // rings during a handoff: a read after an acknowledged write sees it.
            // Not after a lost disk: until anti-entropy restores it, a write can be
            // on one replica only, which a read quorum may miss.
            sessions: !plan.sloppy && !plan.loses_data(),
            nodes: ids.clone(),
            converge_bound_ms: Some(plan.converge_bound_ms),
            effects: true,
            extra: BTreeMap::from([(
                "faults".to_string(),
                serde_json::json!(plan
                    .faults
                    .iter()
                    .map(|(at, f)| format!("{at} ms: {f}"))
                    .collect::<Vec<_>>()),
            )]),
        },
        events: recorder.take_events(),
    };
    let jsonl = history.to_jsonl();
    let digest = history_digest(&jsonl);
    let report = check(&history);
    for anomaly in &recorder.anomalies().kept {
        failures.push(format!("anomaly: {anomaly}"));
    }
    for violation in &report.violations {
        failures.push(format!("checker: {violation}"));
    }
    // Stop every member's tasks now: the runtime does not drop the tasks of
    // nodes still running when the seed ends, and they hold the members (stores,
    // in-memory disks), a few MiB per seed over a sweep of thousands.
    for id in node_ids.values() {
        handle.kill(*id);
    }
    // And each node's restart closure keeps its member: drop what it holds.
    for member in &members {
        member.mark_down();
        member.memdir.wipe();
    }
    restarts_stop.notify_one();
    ClusterOutcome {
        plan,
        report,
        digest,
        jsonl,
        failures,
        simulated_ms,
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

/// The operator: each change sent as `SHOAL.RING` to a member (a random one that
/// answers), retried while the previous change's handoffs run, given up after
/// 20 s. Outcomes go into the history as fault notes.
async fn run_ring_changes(
    changes: Vec<(u64, SimRingChange)>,
    members: Vec<Arc<Member>>,
    recorder: Arc<Recorder>,
    seed: u64,
    sloppy: bool,
) {
    let ids: Vec<u32> = members.iter().map(|m| m.id).collect();
    let mut rng = SplitMix64::new(seed ^ 0xad31);
    let started = tokio::time::Instant::now();
    let aborted_next: Vec<bool> = (0..changes.len())
        .map(|i| matches!(changes.get(i + 1), Some((_, SimRingChange::Abort))))
        .collect();
    for ((at_ms, change), aborted) in changes.into_iter().zip(aborted_next) {
        tokio::time::sleep_until(started + Duration::from_millis(at_ms)).await;
        let args = change.args();
        let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut last = String::from("no member answered");
        let mut before: Option<(Arc<ClusterMap>, Vec<Event>)> = None;
        let absent = matches!(change, SimRingChange::JoinAbsent { .. });
        let give_up = if absent {
            // Refused every time: a few tries show it stays refused.
            tokio::time::Instant::now() + Duration::from_secs(2)
        } else {
            give_up
        };
        let outcome = loop {
            if tokio::time::Instant::now() >= give_up {
                break format!("abandoned after {} s: {last}", if absent { 2 } else { 20 });
            }
            let via = ids[rng.below(ids.len() as u64) as usize];
            let target = SocketAddr::new(member_ip(via), CLIENT_PORT);
            // What the audit below compares against: the ring and the history as
            // they were before this attempt.
            if let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() {
                before = Some((cluster.map(), recorder.events()));
            }
            let reply = match RespConn::connect(target, 1_000).await {
                Ok(mut conn) => conn.call(&arg_refs, 10_000).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(reply) if crate::replies::text(&reply).is_some() => {
                    let text = crate::replies::text(&reply).expect("checked in the guard");
                    if let Some((ring_before, events)) = before.take() {
                        audit_handoff_plan(&ring_before, &members, via, &text, &recorder);
                        // An aborted change never finishes its handoffs; the
                        // abort's own audit covers the writes.
                        if !sloppy && !aborted {
                            audit_handoff(&members, via, &ring_before, &events, &recorder).await;
                        }
                    }
                    if absent {
                        recorder.anomaly(format!(
                            "{change} was accepted (via node {via}): a node that never answered got partitions"
                        ));
                    }
                    break format!("via node {via}: {}", text.trim());
                }
                Ok(Reply::Error(e)) if e.contains("in flight") || e.contains("retry") => {
                    last = format!("node {via}: {e}");
                }
                Ok(Reply::Error(e)) => break format!("refused by node {via}: {e}"),
                Ok(other) => break format!("node {via} answered {other:?}"),
                Err(e) => last = format!("node {via}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        recorder.fault(format!("{change}: {outcome}"));
    }
}

/// The handoff plan audit: every replica the change moved (a node in a
/// partition's new owners but not its old ones, counted here from the two rings;
/// every owner of a newly pinned namespace's partitions) must have had a handoff
/// started for it, as the `SHOAL.RING` reply reports.
fn audit_handoff_plan(
    map_before: &ClusterMap,
    members: &[Arc<Member>],
    via: u32,
    reply: &str,
    recorder: &Recorder,
) {
    let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() else {
        return;
    };
    let changed = cluster.map();
    if changed.version() != map_before.version() + 1 {
        return;
    }
    // Over every ring's partitions; a newly pinned namespace's keys were on the
    // default ring's owners, and every owner of its partitions pulls (the ones
    // that stay as well: they may lack writes the dropped owners acknowledged).
    let moved: usize = changed
        .partitions()
        .into_iter()
        .map(|p| {
            if !map_before.is_partition(p) {
                return changed.owners(p).len();
            }
            let before = placement_owners(map_before.placement(), p);
            changed
                .owners(p)
                .iter()
                .filter(|n| !before.contains(n))
                .count()
        })
        .sum();
    let started: Option<usize> = reply
        .split(" partition handoff")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok());
    if started != Some(moved) {
        recorder.anomaly(format!(
            "handoff plan audit: ring version {} moves {moved} replicas but the change started {started:?} handoffs (reply: {reply})",
            changed.version()
        ));
    }
}

/// The handoff audit: once the change's handoffs are done (as the node that made
/// it sees them), every node that gained a partition holds every write to it that
/// was acknowledged before the change was asked for. That is the handoff's promise,
/// checked before anti-entropy has had long to paper over a missing one. Nodes
/// down at the time are skipped, and so are keys no old owner holds any more
/// (deleted, their markers collected).
async fn audit_handoff(
    members: &[Arc<Member>],
    via: u32,
    map_before: &ClusterMap,
    events: &[Event],
    recorder: &Recorder,
) {
    let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() else {
        return;
    };
    let changed = cluster.map();
    if changed.version() <= map_before.version() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = cluster.map();
        if now.version() != changed.version() {
            return;
        }
        if now.handoffs_pending() == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut checked = 0usize;
    for event in events {
        let Event::Ok {
            op,
            result: shoal_checker::OkResult::Write { dot, value, .. },
        } = event
        else {
            continue;
        };
        let key = op.key.name.as_bytes();
        // Whether a store's copy of the key covers the write's dot.
        let covers_write = |st: &Storage| {
            st.read(|s| s.get(op.key.ns, key))
                .ok()
                .flatten()
                .is_some_and(|set| {
                    set.context.covers(shoal_engine::Dot {
                        node: dot.node,
                        counter: dot.counter,
                    })
                })
        };
        let partition = changed.partition_of_key(op.key.ns, key);
        let before = placement_owners(map_before.placement(), partition);
        for incoming in changed
            .owners(partition)
            .iter()
            .filter(|n| !before.contains(n))
        {
            let Some(storage) = lock(&members[*incoming as usize - 1].storage).clone() else {
                continue;
            };
            // A node whose data was set aside since (damaged segments, a lost
            // disk) restores it from its replicas; the checker judges the end.
            let restoring = lock(&members[*incoming as usize - 1].cluster)
                .clone()
                .is_some_and(|c| c.restoring().is_some());
            if restoring {
                continue;
            }
            let held = covers_write(&storage);
            checked += 1;
            // A key no old owner holds any more was deleted and its marker
            // collected cluster-wide: there was nothing to hand off (and if the
            // write was lost instead, the checker's final states show it).
            let collected = || {
                before.iter().all(|owner| {
                    lock(&members[*owner as usize - 1].storage)
                        .clone()
                        .is_some_and(|st| {
                            st.read(|s| s.get(op.key.ns, key)).ok().flatten().is_none()
                        })
                })
            };
            // A delete acknowledged before the change removed the write: its
            // marker may have been collected on the sources this node pulled
            // from (a collection the ring change interrupted leaves it on some
            // old owners), and absence here is the same state. So is a later
            // write made after the collection: its context starts afresh and
            // need not cover the deleted write.
            let deleted_here = || {
                let deleted = events.iter().any(|e| {
                    matches!(e, Event::Ok {
                        op: deleter,
                        result: shoal_checker::OkResult::Delete { context },
                    } if deleter.key == op.key && context.covers(*dot))
                });
                deleted
                    && lock(&members[*incoming as usize - 1].storage)
                        .clone()
                        .is_some_and(|st| {
                            st.read(|s| s.get(op.key.ns, key))
                                .ok()
                                .flatten()
                                .is_none_or(|set| {
                                    !set.siblings.iter().any(|sibling| {
                                        sibling.dot.node == dot.node
                                            && sibling.dot.counter == dot.counter
                                    })
                                })
                        })
            };
            if !held && !collected() && !deleted_here() {
                // Which old owners hold it now, for the diagnosis.
                let holders: Vec<u32> = before
                    .iter()
                    .copied()
                    .filter(|owner| {
                        lock(&members[*owner as usize - 1].storage)
                            .clone()
                            .is_some_and(|st| covers_write(&st))
                    })
                    .collect();
                let here = storage
                    .read(|s| s.get(op.key.ns, key))
                    .ok()
                    .flatten()
                    .map(|set| format!("context {:?}", set.context));
                recorder.anomaly(format!(
                    "handoff audit: ring version {} says node {incoming} took partition {partition}, and its handoffs are done, but it lacks {} write of {value:?} dot {dot}, acknowledged at {} ms before the change (old owners {before:?}; holding it now: {holders:?}; node {incoming} has {})",
                    changed.version(),
                    op.key,
                    op.time_ms,
                    here.unwrap_or_else(|| "nothing".into())
                ));
                return;
            }
        }
    }
    recorder.fault(format!(
        "handoff audit of ring version {}: {checked} (write, incoming owner) pairs held",
        changed.version()
    ));
}

/// The hint audit, run in the coordinator as each fallback acknowledges a hint:
/// the fallback must hold it (or the owner must, if it was delivered already).
/// Fallbacks that are down by then are skipped.
fn hint_audit(
    members: Arc<std::sync::OnceLock<Vec<std::sync::Weak<Member>>>>,
    recorder: Arc<Recorder>,
) -> shoal_net::cluster::HintObserver {
    use shoal_engine::cluster::hints;
    let covers = |held: &Option<shoal_engine::SiblingSet>, wanted: &shoal_engine::SiblingSet| {
        held.as_ref().is_some_and(|held| {
            let mut merged = held.clone();
            merged.merge(wanted);
            &merged == held
        })
    };
    shoal_net::cluster::HintObserver(Arc::new(move |fallback, owner, item| {
        let Some(members) = members.get() else {
            return;
        };
        let members: Vec<Arc<Member>> = members
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        let find = |id: u32| members.iter().find(|m| m.id == id);
        let Some(hint_store) = find(fallback).and_then(|m| lock(&m.hints).clone()) else {
            return;
        };
        let key = hints::hint_key(owner, item.namespace, &item.key);
        let hinted = hint_store.read(|s| {
            s.get(hints::HINT_NAMESPACE, &key)
                .ok()
                .flatten()
                .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                .and_then(|v| hints::decode_hint(&v))
        });
        if covers(&hinted, &item.set) {
            return;
        }
        let delivered = find(owner)
            .and_then(|m| lock(&m.storage).clone())
            .and_then(|s| s.read(|s| s.get(item.namespace, &item.key)).ok().flatten());
        if covers(&delivered, &item.set) {
            return;
        }
        recorder.anomaly(format!(
            "hint audit at {} ms: node {fallback} acknowledged a hint for node {owner} of ns={} key {:?} (set {:?}), but neither holds it (the hint there: {:?}; the owner's copy: {:?})",
            recorder.now_ms(),
            item.namespace,
            String::from_utf8_lossy(&item.key),
            item.set.context,
            hinted.map(|h| h.context),
            delivered.map(|d| d.context)
        ));
    }))
}

/// The common map once every node is up, every node has the same map with no
/// handoff pending, and every key's owners in that map hold equal sets (keys no
/// owner holds are ignored: only a node outside the ring, or a write whose
/// outcome was unknown, can leave those).
/// Link latency outside a lossy-network fault: 1 ms up to this.
const NORMAL_LATENCY_MAX_MS: u64 = 10;

/// Every link drops `loss_percent` of packets and delays each by 1 ms up to
/// `latency_max_ms`.
fn set_network(net: &madsim::net::NetSim, loss_percent: u64, latency_max_ms: u64) {
    net.update_config(|config| {
        config.packet_loss_rate = loss_percent as f64 / 100.0;
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_max_ms);
    });
}

/// The pin audit, once converged and drained: a pinned namespace's keys are
/// held by its own nodes only (every other member has dropped its copies).
fn audit_pins(members: &[Arc<Member>], map: &ClusterMap, recorder: &Recorder) -> Vec<String> {
    let mut failures = Vec::new();
    for (namespace, pin) in map.placement().pinned() {
        let mut held_by_pinned = 0usize;
        for member in members.iter().filter(|m| map.ring().is_member(m.id)) {
            let Some(storage) = lock(&member.storage).clone() else {
                continue;
            };
            let held = storage.read(|s| {
                s.dump()
                    .into_iter()
                    .filter(|(ns, _, set)| {
                        *ns == namespace && set.as_ref().is_ok_and(|s| !s.siblings.is_empty())
                    })
                    .count()
            });
            if pin.ring.is_member(member.id) {
                held_by_pinned += held;
            } else if held > 0 {
                failures.push(format!(
                    "pin audit: node {} holds {held} keys of namespace {namespace}, which is pinned to nodes {:?}",
                    member.id,
                    pin.ring.members()
                ));
            }
        }
        recorder.fault(format!(
            "pin audit: namespace {namespace} on nodes {:?} only ({held_by_pinned} copies there)",
            pin.ring.members()
        ));
    }
    failures
}

/// Poll [`converged`] every 100 ms until it holds or `deadline` passes.
async fn wait_converged(
    members: &[Arc<Member>],
    deadline: tokio::time::Instant,
) -> Option<Arc<ClusterMap>> {
    loop {
        if let Some(map) = converged(members) {
            return Some(map);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn converged(members: &[Arc<Member>]) -> Option<Arc<ClusterMap>> {
    let clusters: Vec<Arc<Cluster>> = members
        .iter()
        .map(|m| lock(&m.cluster).clone())
        .collect::<Option<Vec<_>>>()?;
    // A node restoring from its replicas refuses handoff and marker collection:
    // the cluster has not settled until it has merged every other member's
    // copies (an exchange moves a bounded number of bytes per round, so a large
    // loss takes several rounds).
    if clusters
        .iter()
        .any(|c| c.hints_pending() > 0 || c.restoring().is_some())
    {
        return None;
    }
    let maps: Vec<Arc<ClusterMap>> = clusters.iter().map(|c| c.map()).collect();
    let first = maps[0].clone();
    if maps
        .iter()
        .any(|m| m.fingerprint() != first.fingerprint() || m.handoffs_pending() > 0)
    {
        return None;
    }
    replicas_agree(members, &first).then_some(first)
}

/// Every key held by some owner is held equally by all of its owners.
/// What each member shows when the cluster did not converge: its map, handoffs
/// and hints pending, whether it is restoring, and its keys, so that a liveness
/// failure says where it is stuck.
fn why_not_converged(members: &[Arc<Member>]) -> String {
    let views: Vec<String> = members
        .iter()
        .map(|m| match lock(&m.cluster).clone() {
            None => format!("node {} down", m.id),
            Some(c) => {
                let map = c.map();
                format!(
                    "node {}: ring version {} fingerprint {:x}, handoffs pending {}, hints pending {}, restoring {:?}, keys {}",
                    m.id,
                    map.version(),
                    map.fingerprint(),
                    map.handoffs_pending(),
                    c.hints_pending(),
                    c.restoring(),
                    c.local_digest().1
                )
            }
        })
        .collect();
    format!(
        "not converged: {}; keys whose copies differ (first {DIFFERING_SHOWN_MAX}): {}",
        views.join("; "),
        differing_copies(members).join(" | ")
    )
}

/// Keys `why_not_converged` lists at most.
const DIFFERING_SHOWN_MAX: usize = 8;

/// Per key held differently by the members (or by fewer than all): each
/// holder's sibling count and bytes, or that its copy cannot be read.
fn differing_copies(members: &[Arc<Member>]) -> Vec<String> {
    // (namespace, key) -> (replica, what it holds).
    type Copies = BTreeMap<(u8, Vec<u8>), Vec<(u32, String)>>;
    let mut copies: Copies = BTreeMap::new();
    for m in members {
        let Some(storage) = lock(&m.storage).clone() else {
            continue;
        };
        storage.read(|s| {
            for (ns, key, set) in s.dump() {
                let held = set.map_or("unreadable".to_string(), |set| {
                    format!("{} sibling(s), {} B", set.siblings.len(), set.size_bytes())
                });
                copies
                    .entry((ns, key.to_vec()))
                    .or_default()
                    .push((m.id, held));
            }
        });
    }
    copies
        .iter()
        .filter(|(_, held)| held.iter().any(|(_, h)| *h != held[0].1) || held.len() < 2)
        .take(DIFFERING_SHOWN_MAX)
        .map(|((ns, key), held)| format!("ns {ns} {:?}: {held:?}", String::from_utf8_lossy(key)))
        .collect()
}

fn replicas_agree(members: &[Arc<Member>], map: &ClusterMap) -> bool {
    let mut all: BTreeMap<(u8, Vec<u8>), BTreeMap<u32, u64>> = BTreeMap::new();
    for member in members.iter().filter(|m| map.ring().is_member(m.id)) {
        let Some(storage) = lock(&member.storage).clone() else {
            return false;
        };
        storage.read(|s| {
            for (ns, key, set) in s.dump() {
                let hash = set
                    .map(|set| shoal_engine::digest::set_hash(&set))
                    .unwrap_or(0);
                all.entry((ns, key.to_vec()))
                    .or_default()
                    .insert(member.id, hash);
            }
        });
    }
    all.iter().all(|((ns, key), holders)| {
        let owners = map.owners(map.partition_of_key(*ns, key));
        let first = holders.get(&owners[0]);
        let ok = owners.iter().all(|o| holders.get(o) == first);
        ok
    })
}

fn final_state(key: &Key, replica: u32, set: Option<shoal_engine::SiblingSet>) -> FinalState {
    let Some(set) = set else {
        return FinalState {
            key: key.clone(),
            replica,
            siblings: Vec::new(),
            context: Context::new(),
            tombstone: false,
        };
    };
    let siblings: Vec<Sibling> = set
        .live()
        .map(|s| Sibling {
            value: String::from_utf8_lossy(s.value.as_ref().expect("live")).into_owned(),
            dot: Dot::new(s.dot.node, s.dot.counter),
        })
        .collect();
    let mut context = Context::new();
    for (node, counter) in set.context.entries() {
        context.0.insert(node, counter);
    }
    FinalState {
        key: key.clone(),
        replica,
        tombstone: siblings.is_empty(),
        siblings,
        context,
    }
}
