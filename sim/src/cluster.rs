//! Cluster seeds: 3 to 5 real Shoal nodes (the same server, cluster driver and
//! peer transport as production, on madsim's network and the in-memory disk) with
//! n=3, r=2, w=2, clients spread over every member, and a fault plan from the seed:
//! crashes with power loss (unsynced writes kept, dropped or torn), isolated nodes
//! and cut links between members. Phase 2 heals everything, restarts the dead and
//! waits until every replica's anti-entropy digest agrees (a liveness failure if it
//! does not within the bound); phase 3 reads every key from every replica's store
//! directly, and the checker judges the history (G1-G6 and convergence).

use crate::digest::history_digest;
use crate::node::lock;
use crate::plan::WorkloadKnobs;
use crate::recorder::Recorder;
use crate::workload::{self, run_client};
use shoal_checker::{
    check, Context, Dot, Event, FinalState, History, Key, Meta, Quiescence, Report, Sibling,
};
use shoal_engine::memdisk::MemDir;
use shoal_engine::rng::SplitMix64;
use shoal_engine::{Store, StoreOptions};
use shoal_net::cluster::{Cluster, ClusterConfig, MemberAddr, PEER_PORT_OFFSET};
use shoal_net::runtime::TokioRuntime;
use shoal_net::server::{serve, ServerConfig, Shared};
use shoal_net::storage::{Storage, StorageConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CLIENT_PORT: u16 = 7379;
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
    /// Cut the link between two members (both ways) for `duration_ms`.
    Cut { a: u32, b: u32, duration_ms: u64 },
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
            ClusterFault::Cut { a, b, duration_ms } => {
                write!(f, "cut link {a}-{b} for {duration_ms} ms")
            }
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
        }
    }
}

impl fmt::Display for ClusterPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cluster seed {}: {} nodes, n={} r={} w={}, phase 1 {} ms, {} clients, {} keys",
            self.seed,
            self.nodes,
            self.replicas_n,
            self.r,
            self.w,
            self.phase1_ms,
            self.workload.clients,
            self.workload.keys
        )?;
        for (at, fault) in &self.faults {
            writeln!(f, "  {at} ms: {fault}")?;
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
    open_failure: Mutex<Option<String>>,
}

impl Member {
    async fn run(self: Arc<Member>) {
        *lock(&self.storage) = None;
        let dir: Arc<dyn shoal_engine::DiskDir> = Arc::new(self.memdir.clone());
        let (store, report) = match Store::open(dir, self.store_options.clone()) {
            Ok(opened) => opened,
            Err(e) => {
                *lock(&self.open_failure) = Some(e.to_string());
                return;
            }
        };
        let runtime = TokioRuntime::new();
        let storage = Storage::start(store, StorageConfig::default(), runtime.clone());
        let cluster = Cluster::start(
            self.config.clone(),
            storage.clone(),
            Arc::new(runtime),
            report.incarnation,
        )
        .await
        .expect("a member's peer port is free after kill");
        *lock(&self.storage) = Some(storage.clone());
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

    fn digest(&self) -> Option<(u64, usize)> {
        let storage = lock(&self.storage).clone()?;
        Some(storage.read(|s| {
            s.digests().map_or((0, 0), |d| {
                (
                    d.range_digest(0..=shoal_engine::slot::SLOT_COUNT - 1),
                    d.key_count(),
                )
            })
        }))
    }
}

pub struct ClusterOutcome {
    pub plan: ClusterPlan,
    pub report: Report,
    pub digest: String,
    pub jsonl: String,
    pub failures: Vec<String>,
    /// Violations that are known checker gaps (see `gaps.rs`), reported, not failed.
    pub gaps: Vec<String>,
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
    let plan = ClusterPlan::from_seed(seed);
    let time_limit_ms = plan.phase1_ms + 600_000;
    crate::run::on_seed_thread(
        format!("cluster-seed-{seed}"),
        seed,
        time_limit_ms,
        move || simulate_cluster(plan),
    )
}

pub async fn simulate_cluster(plan: ClusterPlan) -> ClusterOutcome {
    let handle = madsim::runtime::Handle::current();
    let net = madsim::net::NetSim::current();
    net.update_config(|config| {
        config.packet_loss_rate = 0.0;
        config.send_latency = Duration::from_millis(1)..Duration::from_millis(10);
    });
    let recorder = Arc::new(Recorder::new());
    let ids: Vec<u32> = (1..=plan.nodes).collect();
    let members_addrs: BTreeMap<u32, MemberAddr> = ids
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
    let mut node_ids = BTreeMap::new();
    for id in &ids {
        let mut config = ClusterConfig::new(*id, members_addrs.clone(), SECRET.into());
        config.replicas_n = plan.replicas_n;
        config.read_quorum = plan.r;
        config.write_quorum = plan.w;
        config.anti_entropy_interval_ms = 500;
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
                segment_size_bytes: 1 << 20,
                delete_markers_collectable: false,
                ..StoreOptions::default()
            },
            open_failure: Mutex::new(None),
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
    for (at_ms, fault) in plan.faults.clone() {
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
                ClusterFault::Cut { a, b, duration_ms } => {
                    let (na, nb) = (node_ids[&a], node_ids[&b]);
                    net.clog_link(na, nb);
                    net.clog_link(nb, na);
                    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                    net.unclog_link(na, nb);
                    net.unclog_link(nb, na);
                    recorder.fault(format!("link {a}-{b} restored"));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(plan.phase1_ms)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for task in fault_tasks {
        let _ = task.await;
    }
    for task in client_tasks {
        let _ = task.await;
    }

    // Phase 2: every fault has healed (each task undoes its own); wait until every
    // replica's digest agrees. With n equal to the member count that is every node;
    // otherwise each partition's replicas are compared through their keys below.
    let heal_ms = recorder.now_ms();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(plan.converge_bound_ms);
    let converged = loop {
        if converged(&members, plan.replicas_n, plan.nodes) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    recorder.push(Event::Quiescence(Quiescence {
        converged,
        waited_ms: recorder.now_ms() - heal_ms,
    }));

    // Phase 3: every key touched, from every replica's store.
    let keys: BTreeSet<Key> = lock(&shared.keys_touched).clone();
    let mut failures = Vec::new();
    for member in &members {
        if let Some(reason) = lock(&member.open_failure).clone() {
            failures.push(format!("node {} refused to open: {reason}", member.id));
        }
    }
    if converged {
        let ring = shoal_engine::placement::Ring::new(
            members[0].config.partition_count,
            plan.replicas_n,
            ids.iter().copied(),
        )
        .expect("the plan's ring is valid");
        for key in &keys {
            let owners = ring.preference_list(ring.partition_of_key(key.name.as_bytes()));
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
    }
    let simulated_ms = recorder.now_ms();
    let history = History {
        meta: Meta {
            seed: Some(plan.seed),
            n: Some(u32::from(plan.replicas_n)),
            r: Some(u32::from(plan.r)),
            w: Some(u32::from(plan.w)),
            sessions: false,
            nodes: ids.clone(),
            converge_bound_ms: Some(plan.converge_bound_ms),
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
    let mut gaps = Vec::new();
    for violation in &report.violations {
        match crate::gaps::known_gap(&history, violation) {
            // The single-node sim's rule too: a write whose outcome the client never
            // learned may have superseded siblings the checker cannot see.
            Some(gap) => gaps.push(format!("checker gap ({gap}) for: {violation}")),
            None => failures.push(format!("checker: {violation}")),
        }
    }
    ClusterOutcome {
        plan,
        report,
        digest,
        jsonl,
        failures,
        gaps,
        simulated_ms,
    }
}

/// Whether every member is up and, when every member holds every partition, all
/// digests are equal (otherwise: every member is up and its digests are stable
/// enough for phase 3, which compares the replicas key by key).
fn converged(members: &[Arc<Member>], replicas_n: u8, nodes: u32) -> bool {
    let digests: Vec<Option<(u64, usize)>> = members.iter().map(|m| m.digest()).collect();
    if digests.iter().any(Option::is_none) {
        return false;
    }
    if u32::from(replicas_n) >= nodes {
        digests.windows(2).all(|w| w[0] == w[1])
    } else {
        replicas_agree(members)
    }
}

/// For clusters larger than n: every key's replicas hold equal sets.
fn replicas_agree(members: &[Arc<Member>]) -> bool {
    let ids: Vec<u32> = members.iter().map(|m| m.id).collect();
    let ring = shoal_engine::placement::Ring::new(
        members[0].config.partition_count,
        members[0].config.replicas_n,
        ids,
    )
    .expect("valid ring");
    let storages: Vec<Storage> = members
        .iter()
        .filter_map(|m| lock(&m.storage).clone())
        .collect();
    if storages.len() != members.len() {
        return false;
    }
    let mut all: BTreeMap<(u8, Vec<u8>), BTreeMap<u32, u64>> = BTreeMap::new();
    for (member, storage) in members.iter().zip(&storages) {
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
    all.iter().all(|((_, key), holders)| {
        let owners = ring.preference_list(ring.partition_of_key(key));
        let first = holders.get(&owners[0]);
        owners
            .iter()
            .all(|o| holders.get(o) == first && first.is_some())
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
