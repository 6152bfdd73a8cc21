//! Cluster seeds: 3 to 5 real Shoal nodes (the same server, cluster driver and
//! peer transport as production, on madsim's network and the in-memory disk) with
//! n=3, r=2, w=2, clients spread over every member, and a fault plan from the seed:
//! crashes with power loss (unsynced writes kept, dropped or torn), isolated nodes
//! and cut links between members. Phase 2 heals everything, restarts the dead and
//! waits until every replica's anti-entropy digest agrees (a liveness failure if it
//! does not within the bound); phase 3 reads every key from every replica's store
//! directly, and the checker judges the history (G1-G6 and convergence).
//!
//! Layout: this file runs a seed (members, workload, phases, the verdict);
//! `plan` derives the seed's plan (faults, ring changes, knobs); `faults` runs
//! each planned fault on its own task and the restart supervisor; `audit`
//! holds the audits and convergence waits the phases call.

mod audit;
mod faults;
mod plan;

use audit::*;
use faults::{run_fault, spawn_supervisor, FaultWorld};
pub use plan::*;

use crate::client::RespConn;
use crate::digest::history_digest;
use crate::effects::EffectLog;
use crate::lock;
use crate::plan::WorkloadKnobs;
use crate::recorder::Recorder;
use crate::workload;
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
    pub history: History,
    pub failures: Vec<String>,
    pub simulated_ms: u64,
}

impl ClusterOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The history as JSON lines (built on demand: a sweep needs it only for
    /// what it prints).
    pub fn jsonl(&self) -> String {
        self.history.to_jsonl()
    }

    /// The history's digest: equal for equal histories.
    pub fn digest(&self) -> String {
        history_digest(&self.jsonl())
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

/// A member's client and peer addresses.
fn member_addr(id: u32) -> MemberAddr {
    let ip = member_ip(id);
    MemberAddr {
        client: format!("{ip}:{CLIENT_PORT}"),
        peer: format!("{ip}:{}", CLIENT_PORT + PEER_PORT_OFFSET),
    }
}

/// Every planned member (the founders, and a spare that joins later) on its
/// own simulated node, running; with their madsim node ids.
fn start_members(
    plan: &ClusterPlan,
    handle: &madsim::runtime::Handle,
    recorder: &Arc<Recorder>,
    restart_tx: &tokio::sync::mpsc::UnboundedSender<u32>,
) -> (Vec<Arc<Member>>, BTreeMap<u32, madsim::task::NodeId>) {
    // Weak: each member's config holds the hint audit, which must not keep the
    // members (and their in-memory disks) alive after the seed.
    let all_members: Arc<std::sync::OnceLock<Vec<std::sync::Weak<Member>>>> = Arc::default();
    let mut members = Vec::new();
    let mut node_ids = BTreeMap::new();
    for id in plan.node_ids() {
        let (config, record_size_max_bytes) =
            member_config(plan, id, all_members.clone(), recorder.clone());
        let member = Arc::new(Member {
            id,
            memdir: MemDir::new(),
            storage: Mutex::new(None),
            config,
            store_options: StoreOptions {
                node_id: id,
                segment_size_bytes: SEGMENT_SIZE_BYTES,
                delete_markers_collectable: false,
                record_size_max_bytes,
                ..StoreOptions::default()
            },
            storage_config: StorageConfig {
                syncs_in_flight_max: plan.syncs_in_flight_max,
                // A batch stays well inside a segment.
                batch_bytes_max: (SEGMENT_SIZE_BYTES / 4) as usize,
                // A pass every 5 s finds a flipped byte well inside the
                // convergence bound (`ClusterFault::SegmentRot`).
                scrub_pass_interval_ms: 5_000,
                ..StorageConfig::default()
            },
            open_failure: Mutex::new(None),
            supervisor: restart_tx.clone(),
            cluster: Mutex::new(None),
            hints: Mutex::new(None),
            skew_ms: Arc::default(),
            effects: EffectLog::new(recorder.clone(), id),
        });
        let init = member.clone();
        let node = handle
            .create_node()
            .name(format!("shoal-{id}"))
            .ip(member_ip(id))
            .init(move || init.clone().run())
            .build();
        node_ids.insert(id, node.id());
        members.push(member);
    }
    let _ = all_members.set(members.iter().map(Arc::downgrade).collect());
    (members, node_ids)
}

/// Member `id`'s cluster configuration, and its store's record size limit.
fn member_config(
    plan: &ClusterPlan,
    id: u32,
    all_members: Arc<std::sync::OnceLock<Vec<std::sync::Weak<Member>>>>,
    recorder: Arc<Recorder>,
) -> (ClusterConfig, u32) {
    // The spare is not among the founders: they are its seeds.
    let founders: BTreeMap<u32, MemberAddr> =
        (1..=plan.nodes).map(|id| (id, member_addr(id))).collect();
    let mut config = ClusterConfig::new(id, founders, SECRET.into());
    config.self_addr = member_addr(id);
    config.replicas_n = plan.replicas_n;
    config.read_quorum = plan.r;
    config.write_quorum = plan.w;
    config.anti_entropy_interval_ms = 500;
    // Delete markers become candidates quickly, so collection runs during the
    // faults and in phase 2.
    config.tombstone_grace_ms = 500;
    config.sloppy_quorum = plan.sloppy;
    config.hint_observer = Some(hint_audit(all_members, recorder));
    let mut record_size_max_bytes = StoreOptions::default().record_size_max_bytes;
    if plan.large_values {
        config.peer_frame_body_max_bytes = crate::heal::LARGE_FRAME_BODY_MAX_BYTES;
        config.repair_batch_bytes_max = crate::heal::LARGE_REPAIR_BATCH_BYTES_MAX;
        config.anti_entropy_bytes_per_round_max = crate::heal::LARGE_ANTI_ENTROPY_ROUND_BYTES_MAX;
        record_size_max_bytes = crate::heal::LARGE_RECORD_SIZE_MAX_BYTES;
        config.partition_count = crate::heal::LARGE_VALUE_PARTITIONS;
    }
    if cfg!(feature = "bug-skip-anti-entropy") {
        // Planted bug: anti-entropy never runs, so a replica that missed writes
        // while down or cut off stays behind.
        config.anti_entropy_interval_ms = u64::MAX / 4;
    }
    (config, record_size_max_bytes)
}

/// Wait until every replica's digest agrees (with n equal to the member
/// count that is every node; otherwise each partition's replicas are compared
/// through their keys in phase 3), then give delete-marker collection time to
/// run (its settle delay and two rounds) and wait for agreement again. The
/// final map, or `None` if the cluster did not converge in the bound.
async fn heal_and_converge(
    plan: &ClusterPlan,
    members: &[Arc<Member>],
    recorder: &Recorder,
) -> Option<Arc<ClusterMap>> {
    let heal_ms = recorder.now_ms();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(plan.converge_bound_ms);
    let final_map = wait_converged(members, deadline).await;
    let waited_ms = recorder.now_ms() - heal_ms;
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
            wait_converged(members, deadline + Duration::from_millis(drain_ms)).await
        }
        None => None,
    };
    let converged = final_map.is_some();
    if !converged {
        recorder.fault(why_not_converged(members));
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
    final_map
}

/// After the heal: members that refused to open, are still restoring, or took
/// a new dot actor without losing data; hint and clock notes for the history.
fn audit_members(plan: &ClusterPlan, members: &[Arc<Member>], recorder: &Recorder) -> Vec<String> {
    let mut failures = Vec::new();
    for member in members {
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
    for member in members {
        let Some(cluster) = lock(&member.cluster).clone() else {
            continue;
        };
        failures.extend(audit_member(plan, member, &cluster, recorder));
    }
    failures
}

/// One member after the heal. A fresh dot actor only for a node whose disk was
/// lost: any other restart must be recognised as the same directory.
fn audit_member(
    plan: &ClusterPlan,
    member: &Member,
    cluster: &Cluster,
    recorder: &Recorder,
) -> Vec<String> {
    let mut failures = Vec::new();
    let lost = plan.faults.iter().any(|(_, f)| {
        matches!(f, ClusterFault::DiskLost { node, .. } | ClusterFault::SegmentCorrupt { node, .. } | ClusterFault::SegmentRot { node } if *node == member.id)
    });
    if let Some((done, others)) = cluster.restoring() {
        failures.push(format!(
            "node {} is still restoring from its replicas after convergence ({done} of {others} merged)",
            member.id
        ));
    }
    let actor = cluster.actor();
    // A new directory whose start-up check nobody answered takes a fresh
    // actor too: it cannot tell a first start from a lost disk.
    let unanswered = cluster.stats.life_unanswered.load(Ordering::Relaxed);
    if actor != member.id && !lost && !unanswered {
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
    failures
}

/// Every touched key as each of its final owners' stores hold it (for the
/// checker), and the pins' audit.
fn record_final_states(
    map: &ClusterMap,
    keys: &BTreeSet<Key>,
    members: &[Arc<Member>],
    recorder: &Recorder,
) -> Vec<String> {
    let mut failures = Vec::new();
    recorder.fault(format!(
        "final ring version {}: members {:?}",
        map.version(),
        map.ring().members()
    ));
    for key in keys {
        let (ns, stored) = crate::workload::stored_key(key);
        let owners = map.owners(map.partition_of_key(ns, &stored));
        for owner in owners {
            let member = &members[*owner as usize - 1];
            let Some(storage) = lock(&member.storage).clone() else {
                continue;
            };
            match storage.read(|s| s.get(ns, &stored)) {
                Ok(set) => {
                    let mut state = final_state(key, *owner, set);
                    state.read_at_ms = Some(recorder.now_ms());
                    recorder.push(Event::Final(state));
                }
                Err(e) => failures.push(format!("final read of {key} on node {owner}: {e}")),
            }
        }
    }
    failures.extend(audit_pins(members, map, recorder));
    failures
}

/// Phase 3 for queues: pop each until it is empty, through a member of the
/// final ring (`typed::drain`), after the final states are recorded.
async fn drain_queues(
    handle: &madsim::runtime::Handle,
    map: &ClusterMap,
    shared: &Arc<workload::Shared>,
) {
    let typed = lock(&shared.typed_touched).clone();
    let Some(&member) = map.ring().members().first() else {
        return;
    };
    if typed.is_empty() {
        return;
    }
    let drainer = handle
        .create_node()
        .name("drainer")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)))
        .build();
    let processes = shared.clone();
    let target = SocketAddr::new(member_ip(member), CLIENT_PORT);
    let drain = crate::typed::drain(
        typed,
        shared.recorder.clone(),
        move || processes.new_process(),
        target,
    );
    let _ = drainer.spawn(drain).await;
    handle.kill(drainer.id());
}

/// The seed's history, its events taken from the recorder.
fn history_of(plan: &ClusterPlan, ids: Vec<u32>, recorder: &Recorder) -> History {
    History {
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
            nodes: ids,
            converge_bound_ms: Some(plan.converge_bound_ms),
            expiry_slack_ms: Some(plan.clock_skews_ms()),
            effects: true,
            // Under a partition, a queue's element may be popped on both sides.
            pops_exclusive: false,
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
    }
}

/// Phase 1: the workload on its clients, each planned fault on its own task,
/// then the operator's ring changes; returns once all of them ended, with the
/// keys the clients touched and the heal probes' failures.
async fn run_phase1(
    plan: &ClusterPlan,
    handle: &madsim::runtime::Handle,
    recorder: &Arc<Recorder>,
    (members, node_ids): (&[Arc<Member>], &BTreeMap<u32, madsim::task::NodeId>),
    restart_rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    restarts_stop: Arc<tokio::sync::Notify>,
) -> (Arc<workload::Shared>, Vec<String>) {
    let ids = plan.node_ids();
    let targets: Vec<SocketAddr> = ids
        .iter()
        .map(|id| SocketAddr::new(member_ip(*id), CLIENT_PORT))
        .collect();
    let shared = workload::Shared::with_targets(plan.workload.clone(), recorder.clone(), targets);
    let (_, client_tasks) =
        workload::spawn_clients(handle, &shared, plan.workload.clients, plan.seed);

    // Phase 1: faults on their own tasks, workload meanwhile.
    let world = FaultWorld::new(plan.seed, handle, recorder, members, node_ids);
    spawn_supervisor(world.clone(), restart_rx, restarts_stop);
    let heal_failures = world.heal_failures.clone();
    let fault_tasks: Vec<_> = plan
        .faults
        .iter()
        .map(|(at_ms, fault)| tokio::spawn(run_fault(world.clone(), *at_ms, fault.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(plan.phase1_ms)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let admin = handle
        .create_node()
        .name("admin")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let admin_task = admin.spawn(run_ring_changes(
        plan.ring_changes.clone(),
        members.to_vec(),
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

    drop(world);
    let failures = lock(&heal_failures).clone();
    (shared, failures)
}

/// Stop every member's tasks now: the runtime does not drop the tasks of nodes
/// still running when the seed ends, and they hold the members (stores,
/// in-memory disks), a few MiB per seed over a sweep of thousands. And each
/// node's restart closure keeps its member: drop what it holds.
fn stop_world(
    handle: &madsim::runtime::Handle,
    node_ids: &BTreeMap<u32, madsim::task::NodeId>,
    members: &[Arc<Member>],
    restarts_stop: &tokio::sync::Notify,
) {
    for id in node_ids.values() {
        handle.kill(*id);
    }
    for member in members {
        member.mark_down();
        member.memdir.wipe();
    }
    restarts_stop.notify_one();
}

pub async fn simulate_cluster(plan: ClusterPlan) -> ClusterOutcome {
    let handle = madsim::runtime::Handle::current();
    set_network(&madsim::net::NetSim::current(), 0, NORMAL_LATENCY_MAX_MS);
    let recorder = Arc::new(Recorder::new());
    let ids: Vec<u32> = plan.node_ids();
    let (restart_tx, restart_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    // Ends the restart loop below when the seed ends. Its task lives on
    // madsim's main node and holds the runtime's handle, which holds the
    // members (in their nodes' init closures), which hold `restart_tx`: a cycle
    // that kept every seed's whole world in memory (0.8 MB a seed; a 100,000
    // seed sweep would not fit).
    let restarts_stop = Arc::new(tokio::sync::Notify::new());
    let (members, node_ids) = start_members(&plan, &handle, &recorder, &restart_tx);
    let (shared, mut failures) = run_phase1(
        &plan,
        &handle,
        &recorder,
        (&members, &node_ids),
        restart_rx,
        restarts_stop.clone(),
    )
    .await;

    // Phase 2: every fault has healed (each task undoes its own).
    let final_map = heal_and_converge(&plan, &members, &recorder).await;

    // Phase 3: every key touched, from every replica's store.
    failures.extend(audit_members(&plan, &members, &recorder));
    if let Some(map) = &final_map {
        let keys = lock(&shared.keys_touched).clone();
        failures.extend(record_final_states(map, &keys, &members, &recorder));
        drain_queues(&handle, map, &shared).await;
    }
    let simulated_ms = recorder.now_ms();
    let history = history_of(&plan, ids, &recorder);
    let report = check(&history);
    for anomaly in &recorder.anomalies().kept {
        failures.push(format!("anomaly: {anomaly}"));
    }
    for violation in &report.violations {
        failures.push(format!("checker: {violation}"));
    }
    stop_world(&handle, &node_ids, &members, &restarts_stop);
    ClusterOutcome {
        plan,
        report,
        history,
        failures,
        simulated_ms,
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
        let mut last = String::from("no member answered");
        let mut before: Option<(Arc<ClusterMap>, usize)> = None;
        let absent = matches!(change, SimRingChange::JoinAbsent { .. });
        // A join of an absent node is refused every time: a few tries show it
        // stays refused.
        let give_up_s = if absent { 2 } else { 20 };
        let give_up = tokio::time::Instant::now() + Duration::from_secs(give_up_s);
        let outcome = loop {
            if tokio::time::Instant::now() >= give_up {
                break format!("abandoned after {give_up_s} s: {last}");
            }
            let via = ids[rng.below(ids.len() as u64) as usize];
            let target = SocketAddr::new(member_ip(via), CLIENT_PORT);
            // What the audit below compares against: the ring and the history as
            // they were before this attempt.
            if let Some(cluster) = lock(&members[via as usize - 1].cluster).clone() {
                before = Some((cluster.map(), recorder.event_count()));
            }
            let reply = match RespConn::connect(target, 1_000).await {
                Ok(mut conn) => conn.call(&arg_refs, 10_000).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(reply) if crate::replies::text(&reply).is_some() => {
                    let text = crate::replies::text(&reply).expect("checked in the guard");
                    if let Some((ring_before, mark)) = before.take() {
                        audit_handoff_plan(&ring_before, &members, via, &text, &recorder);
                        // An aborted change never finishes its handoffs; the
                        // abort's own audit covers the writes.
                        if !sloppy && !aborted {
                            let events = recorder.events_before(mark);
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

fn final_state(key: &Key, replica: u32, set: Option<shoal_engine::SiblingSet>) -> FinalState {
    let Some(set) = set else {
        return FinalState {
            key: key.clone(),
            replica,
            siblings: Vec::new(),
            context: Context::new(),
            tombstone: false,
            read_at_ms: None,
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
        read_at_ms: None,
    }
}
