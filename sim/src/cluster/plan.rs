//! A cluster seed's plan: its faults, its ring changes and its knobs, all
//! derived from the seed.

use super::*;

pub const CLIENT_PORT: u16 = 7379;
/// Each member's segment size.
pub(super) const SEGMENT_SIZE_BYTES: u64 = 1 << 20;
pub(super) const SECRET: &str = "simulation-secret";

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
    /// A byte of one of the node's segment files flips while it runs, and it
    /// keeps running: its scrubber or a read must find the damage, and the
    /// node must restore what it lost from its replicas.
    SegmentRot { node: u32 },
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
            ClusterFault::SegmentRot { node } => {
                write!(f, "latent corruption of a segment on node {node}, which keeps running")
            }
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
    pub(super) fn args(&self) -> Vec<String> {
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
        crate::plan::expiring_writes(seed, &mut workload);
        crate::plan::hash_fields(seed, &mut workload);
        crate::plan::typed_ops(seed, &mut workload);
        crate::plan::string_expiry(seed, &mut workload);
        // Proxied writes wait for a coordinator that waits for its replicas.
        workload.op_timeout_ms = workload.op_timeout_ms.max(2_500);
        let mut faults = base_faults(&mut rng, nodes, phase1_ms);
        disk_faults(seed, nodes, phase1_ms, &mut faults);
        faults.sort_by_key(|(at, _)| *at);
        let mut ring_changes = first_ring_changes(seed, nodes, phase1_ms);
        let spare_id = nodes + 1;
        let spare = ring_changes
            .iter()
            .any(|(_, c)| !matches!(c, SimRingChange::Leave { .. }))
            .then_some(spare_id);
        rejoin(seed, nodes, phase1_ms, &mut faults, &mut ring_changes);
        lost_disk(seed, nodes, phase1_ms, &mut faults, &ring_changes);
        clock_skews(seed, nodes, phase1_ms, &mut faults);
        let namespaces = workload.namespaces;
        pin(
            seed,
            nodes,
            phase1_ms,
            namespaces,
            &faults,
            &mut ring_changes,
        );
        join_absent(seed, nodes, phase1_ms, &mut ring_changes);
        abort(seed, &mut ring_changes);
        segment_corrupt(seed, nodes, phase1_ms, &mut faults);
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
        lossy(seed, phase1_ms, &mut faults);
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
                ClusterFault::DiskLost { .. }
                    | ClusterFault::SegmentCorrupt { .. }
                    | ClusterFault::SegmentRot { .. }
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
pub(super) fn long_isolation(
    seed: u64,
    nodes: u32,
    phase1_ms: u64,
    faults: &mut Vec<(u64, ClusterFault)>,
) {
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
            | ClusterFault::SegmentRot { node: n }
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

/// Crashes, isolations and cut links, from the plan's main stream.
fn base_faults(rng: &mut SplitMix64, nodes: u32, phase1_ms: u64) -> Vec<(u64, ClusterFault)> {
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
    faults
}

/// A full disk, failed fsyncs or a flipped hint-file byte.
fn disk_faults(seed: u64, nodes: u32, phase1_ms: u64, faults: &mut Vec<(u64, ClusterFault)>) {
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
}

/// A join, leave or replace under load, and maybe a second change after it.
fn first_ring_changes(seed: u64, nodes: u32, phase1_ms: u64) -> Vec<(u64, SimRingChange)> {
    let mut ring_changes = Vec::new();
    // Ring changes draw from their own stream, so the fault plans above stay
    // what they were before ring changes existed.
    let mut ring_rng = SplitMix64::new(seed ^ 0x5249_4e47);
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
    ring_changes
}

/// A founder that leaves while down and is joined back with its old disk.
fn rejoin(
    seed: u64,
    nodes: u32,
    phase1_ms: u64,
    faults: &mut Vec<(u64, ClusterFault)>,
    ring_changes: &mut Vec<(u64, SimRingChange)>,
) {
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
}

/// A lost disk, in seeds without ring changes.
fn lost_disk(
    seed: u64,
    nodes: u32,
    phase1_ms: u64,
    faults: &mut Vec<(u64, ClusterFault)>,
    ring_changes: &[(u64, SimRingChange)],
) {
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
}

impl ClusterPlan {
    /// How far any node's clock can be from the run's: every skew the plan
    /// gives, added up (a node's accumulate; a bound for all of them).
    pub fn clock_skews_ms(&self) -> u64 {
        self.faults
            .iter()
            .map(|(_, f)| match f {
                ClusterFault::ClockSkew { delta_ms, .. } => delta_ms.unsigned_abs(),
                _ => 0,
            })
            .sum()
    }
}

/// Clock skews.
fn clock_skews(seed: u64, nodes: u32, phase1_ms: u64, faults: &mut Vec<(u64, ClusterFault)>) {
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
}

/// A pinned namespace, maybe unpinned later.
fn pin(
    seed: u64,
    nodes: u32,
    phase1_ms: u64,
    namespaces: u8,
    faults: &[(u64, ClusterFault)],
    ring_changes: &mut Vec<(u64, SimRingChange)>,
) {
    // A pinned namespace (own stream), not with a lost disk: a pin hands the
    // namespace off to its nodes, and a handoff source that lost its disk
    // may not hold what it acknowledged (as with any ring change).
    let mut pin_rng = SplitMix64::new(seed ^ 0x0009_1e5d);
    let loses_a_disk = faults
        .iter()
        .any(|(_, f)| matches!(f, ClusterFault::DiskLost { .. }));
    if !loses_a_disk && pin_rng.chance_percent(35) {
        let namespace = pin_rng.below(u64::from(namespaces.max(1))) as u8;
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
}

/// A join of a node that never comes.
fn join_absent(
    seed: u64,
    nodes: u32,
    phase1_ms: u64,
    ring_changes: &mut Vec<(u64, SimRingChange)>,
) {
    let spare_id = nodes + 1;
    // A join of a node that never comes (own stream): refused, and the
    // changes after it go through.
    let mut absent_rng = SplitMix64::new(seed ^ 0x00ab_5e17);
    if absent_rng.chance_percent(15) {
        let at_ms = 200 + absent_rng.below(phase1_ms / 2);
        let at = ring_changes.partition_point(|(t, _)| *t <= at_ms);
        let node = spare_id + 1;
        ring_changes.insert(at, (at_ms, SimRingChange::JoinAbsent { node }));
    }
}

/// An abort of a join while its handoffs run.
fn abort(seed: u64, ring_changes: &mut Vec<(u64, SimRingChange)>) {
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
}

/// A flipped byte in a segment, unless a disk is lost.
fn segment_corrupt(seed: u64, nodes: u32, phase1_ms: u64, faults: &mut Vec<(u64, ClusterFault)>) {
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
        return;
    }
    // Or damage a running node that is never restarted (its own stream, so
    // the seeds above keep their plans).
    let mut rot_rng = SplitMix64::new(seed ^ 0x0207_da7a);
    if !loses_a_disk && rot_rng.chance_percent(20) {
        let at_ms = 500 + rot_rng.below(phase1_ms - 500);
        let node = 1 + rot_rng.below(u64::from(nodes)) as u32;
        faults.push((at_ms, ClusterFault::SegmentRot { node }));
    }
}

/// A lossy, reordering network for a while.
fn lossy(seed: u64, phase1_ms: u64, faults: &mut Vec<(u64, ClusterFault)>) {
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
}
