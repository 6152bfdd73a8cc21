//! One seed, start to finish, inside a madsim runtime: build the world (the node,
//! the client nodes, the supervisor), phase 1 (workload and faults), phase 2 (heal,
//! restart if needed, wait for the node to answer), phase 3 (read every key), then
//! the history, the checker's report and the scenario's verdict.

use crate::client::RespConn;
use crate::digest::history_digest;
use crate::disk_bound::{BoundKnobs, DiskSample, DiskSampler, SAMPLE_INTERVAL_MS};
use crate::effects::EffectLog;
use crate::faults::Supervisor;
use crate::lock;
use crate::node::{self, node_addr, NodeStatus, NodeWorld, NODE_ID};
use crate::plan::{CrashMode, Plan, Scenario};
use crate::recorder::Recorder;
use crate::replies::parse_siblings;
use crate::workload;
use shoal_checker::{
    check, Context, Event, FinalState, History, Key, Meta, Quiescence, Report, ViolationKind,
};
use shoal_net::resp::Reply;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Namespaces phase 3 lists with `KEYS *` to find keys no client wrote.
const NAMESPACES_LISTED: u8 = 16;
/// Attempts phase 3 makes to read one key before giving up on it.
const FINAL_READ_ATTEMPTS_MAX: u32 = 5;
const FINAL_READ_TIMEOUT_MS: u64 = 2000;
const PING_TIMEOUT_MS: u64 = 500;

/// Each named feature that is on (`cfg!` needs the names spelled out).
macro_rules! planted_bugs_on {
    ($($name:literal),* $(,)?) => {{
        let mut on = Vec::new();
        $(
            if cfg!(feature = $name) {
                on.push($name);
            }
        )*
        on
    }};
}

/// The planted-bug features this binary was built with.
pub fn features() -> Vec<&'static str> {
    planted_bugs_on!(
        "bug-ack-before-fsync",
        "bug-torn-accept",
        "bug-merge-drops-sibling",
        "bug-early-tombstone-gc",
        "bug-claim-forgets-replica",
        "bug-drop-hint",
        "bug-forget-without-agreement",
        "bug-drop-before-handoff",
        "bug-pin-drop-ignores-namespace",
        "bug-restoring-serves-handoff",
        "bug-rejoin-keeps-residue",
        "bug-unpin-skips-handoff",
        "bug-skip-anti-entropy",
        "bug-repair-ignores-bytes",
        "bug-keep-stalled-connections",
        "bug-trust-hints",
        "bug-skip-catalog",
        "bug-join-unchecked",
        "bug-abort-skips-pull",
        "bug-ignore-synced-mark",
        "bug-mint-without-catch-up",
        "bug-compaction-by-clock",
        "bug-modify-twice",
        "bug-pop-takes-extra",
        "bug-remove-wins",
        "bug-backup-skips-active",
        "bug-deadline-record-stale-early",
        "bug-field-placed-by-own-bytes",
        "bug-merge-drops-deadline",
        "bug-read-counts-unrepaired",
        "bug-read-ignores-ring",
    )
}

/// The one command that replays a seed as it ran.
pub fn replay_command(seed: u64, options: &RunOptions) -> String {
    let mut command = format!("ci/sim --seed {seed}");
    if let Some(scenario) = options.scenario {
        command.push_str(&format!(" --scenario {scenario}"));
    }
    let features = features();
    if !features.is_empty() {
        command.push_str(&format!(" --features {}", features.join(",")));
    }
    command
}

/// How to run a seed.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Force a scenario (None: the seed's own).
    pub scenario: Option<Scenario>,
}

/// Everything one run produced.
pub struct RunOutcome {
    pub plan: Plan,
    pub history: History,
    pub report: Report,
    /// Why the run fails by its scenario's expectation (empty: it passes).
    pub failures: Vec<String>,
    /// Notes for the reader (detections, expected damage) whatever the verdict.
    pub notes: Vec<String>,
    pub simulated_ms: u64,
}

impl RunOutcome {
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

/// Stack of the thread each seed runs on.
const SEED_THREAD_STACK_BYTES: usize = 16 << 20;

/// Run `seed` in a fresh madsim runtime on a fresh thread: thread-local state
/// (std's hash keys, tokio's context) then starts the same for every run, so a
/// seed in a sweep behaves exactly as when replayed alone. A panic in the run is
/// resumed on the caller's thread.
pub fn run_seed(seed: u64, options: &RunOptions) -> RunOutcome {
    let plan = Plan::from_seed(seed, options.scenario);
    let time_limit_ms = plan.phase1_ms + 600_000;
    on_seed_thread(format!("seed-{seed}"), seed, time_limit_ms, move || {
        simulate(plan)
    })
}

/// Run the future `make` builds in a fresh madsim runtime seeded with `seed`, on a
/// fresh thread (see [`run_seed`] for why), bounded by `time_limit_ms` of
/// simulated time. A panic in the run is resumed on the caller's thread.
pub fn on_seed_thread<T, F>(
    name: String,
    seed: u64,
    time_limit_ms: u64,
    make: impl FnOnce() -> F + Send + 'static,
) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .stack_size(SEED_THREAD_STACK_BYTES)
        .spawn(move || {
            let mut runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.set_time_limit(Duration::from_millis(time_limit_ms));
            runtime.block_on(make())
        })
        .expect("spawn the seed's thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The body of a run; call inside a madsim runtime whose seed is `plan.seed`.
/// The plan's faults on three timelines (node, network, disk and clock), each
/// its own task.
fn spawn_timelines(
    supervisor: &Arc<Supervisor>,
    faults: &[crate::plan::TimedFault],
) -> Vec<tokio::task::JoinHandle<()>> {
    let (node_faults, rest): (Vec<_>, Vec<_>) = faults
        .iter()
        .cloned()
        .partition(|t| t.fault.on_node_timeline());
    let (network_faults, disk_and_clock_faults): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|t| {
            matches!(
                t.fault,
                crate::plan::Fault::ClogNode { .. }
                    | crate::plan::Fault::ClogLink { .. }
                    | crate::plan::Fault::Lossy { .. }
            )
        });
    vec![
        tokio::spawn(supervisor.clone().run_node_timeline(node_faults)),
        tokio::spawn(supervisor.clone().run_network_timeline(network_faults)),
        tokio::spawn(
            supervisor
                .clone()
                .run_disk_and_clock_timeline(disk_and_clock_faults),
        ),
    ]
}

/// Phase 2: heal, restart if the plan says so, wait for the node to answer;
/// phase 3: read every key the clients touched (from the observer).
async fn heal_and_read(
    plan: &Plan,
    supervisor: &Supervisor,
    observer: &madsim::runtime::NodeHandle,
    shared: &Arc<workload::Shared>,
) {
    let recorder = &shared.recorder;
    let keys: BTreeSet<Key> = lock(&shared.keys_touched).clone();
    supervisor.heal().await;
    if plan.final_restart {
        supervisor.crash(CrashMode::Idle, true).await;
        supervisor.restart().await;
    }
    let heal_ms = recorder.now_ms();
    let converged = observer
        .spawn(wait_for_node(plan.converge_bound_ms))
        .await
        .unwrap_or(false);
    recorder.push(Event::Quiescence(Quiescence {
        converged,
        waited_ms: recorder.now_ms() - heal_ms,
    }));
    if converged {
        let finals = observer
            .spawn(read_finals(keys, recorder.clone()))
            .await
            .unwrap_or_default();
        for state in finals {
            recorder.push(Event::Final(state));
        }
        let typed: BTreeSet<Key> = lock(&shared.typed_touched).clone();
        let processes = shared.clone();
        let _ = observer
            .spawn(crate::typed::drain(
                typed,
                recorder.clone(),
                move || processes.new_process(),
                crate::node::node_addr(),
            ))
            .await;
    }
}

/// The seed's history and the checker's report.
fn history_and_report(plan: &Plan, recorder: &Recorder) -> (History, Report) {
    let mut history = History {
        meta: meta(plan),
        events: recorder.take_events(),
    };
    history.events.shrink_to_fit();
    let report = check(&history);
    (history, report)
}

/// The network's latency, and the node on its in-memory disk, started.
fn start_server(
    plan: &Plan,
    handle: &madsim::runtime::Handle,
    recorder: &Arc<Recorder>,
) -> (Arc<NodeWorld>, madsim::runtime::NodeHandle) {
    madsim::net::NetSim::current().update_config(|config| {
        config.packet_loss_rate = 0.0;
        config.send_latency = Duration::from_millis(plan.net.latency_min_ms)
            ..Duration::from_millis(plan.net.latency_max_ms);
    });
    let (store_options, storage_config) = node::settings(&plan.store);
    let effects = EffectLog::new(recorder.clone(), NODE_ID);
    let world = NodeWorld::new(store_options, storage_config, effects);
    let init_world = world.clone();
    let server = handle
        .create_node()
        .name("shoal-1")
        .ip(node::NODE_IP)
        .init(move || init_world.clone().run())
        .build();
    world.trigger.set_node(server.id());
    (world, server)
}

pub async fn simulate(plan: Plan) -> RunOutcome {
    let handle = madsim::runtime::Handle::current();
    let recorder = Arc::new(Recorder::new());
    let (world, server) = start_server(&plan, &handle, &recorder);
    let shared = workload::Shared::new(plan.workload.clone(), recorder.clone());
    let (client_nodes, client_tasks) =
        workload::spawn_clients(&handle, &shared, plan.workload.clients, plan.seed);
    let observer = handle
        .create_node()
        .name("observer")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))
        .build();

    let supervisor = Arc::new(Supervisor::new(
        handle.clone(),
        server.id(),
        client_nodes,
        world.clone(),
        recorder.clone(),
        plan.net.clone(),
        plan.seed,
    ));
    let timelines = spawn_timelines(&supervisor, &plan.faults);
    let backup = plan
        .backup_at_ms
        .map(|at_ms| observer.spawn(crate::backup::take(node_addr(), at_ms, recorder.clone())));

    let tasks = timelines.into_iter().chain(client_tasks).collect();
    let disk_samples = phase1(&plan, &shared, &supervisor, tasks).await;

    // Phases 2 and 3: heal, then read every key and drain the queues.
    heal_and_read(&plan, &supervisor, &observer, &shared).await;
    read_backup(backup, &shared, &world.store_options, &recorder).await;
    let simulated_ms = recorder.now_ms();
    // Stop the node's tasks and drop its disk images now: the runtime keeps the
    // tasks of nodes still running, and the init closure keeps the world, past
    // the seed (megabytes per seed over a sweep).
    handle.kill(server.id());
    world.memdir.wipe();

    let (history, report) = history_and_report(&plan, &recorder);
    let verdict = judge(
        &plan,
        &Evidence {
            report: &report,
            recorder: &recorder,
            damaged: &lock(&supervisor.damaged_keys).clone(),
            invariant_failures: &lock(&supervisor.invariant_failures).clone(),
            status: &world.status(),
            disk_samples: &disk_samples.samples(),
        },
    );
    RunOutcome {
        plan,
        history,
        report,
        failures: verdict.failures,
        notes: verdict.notes,
        simulated_ms,
    }
}

/// Phase 1: workload and faults, the store's disk sampled throughout; then
/// wait for `tasks` (the fault timelines and the clients) to stop.
async fn phase1(
    plan: &Plan,
    shared: &workload::Shared,
    supervisor: &Arc<Supervisor>,
    tasks: Vec<madsim::task::JoinHandle<()>>,
) -> Arc<DiskSampler> {
    let disk_samples = Arc::new(DiskSampler::default());
    let sampling = tokio::spawn(sample_disk(&disk_samples, supervisor, plan.phase1_ms));
    tokio::time::sleep(Duration::from_millis(plan.phase1_ms)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let _ = sampling.await;
    for task in tasks {
        let _ = task.await;
    }
    disk_samples
}

/// Restore the backup taken in phase 1, if one was planned and whole, and
/// record what it holds of every key the clients touched (a backup that does
/// not restore is an anomaly: `shoal restore` would refuse it).
async fn read_backup(
    backup: Option<madsim::task::JoinHandle<Option<crate::backup::TakenBackup>>>,
    shared: &workload::Shared,
    options: &shoal_engine::StoreOptions,
    recorder: &Recorder,
) {
    let Some(taken) = (match backup {
        Some(backup) => backup.await.ok().flatten(),
        None => None,
    }) else {
        return;
    };
    let keys = lock(&shared.keys_touched).clone();
    match crate::backup::restore_and_read(&taken, &keys, options) {
        Ok(events) => events.into_iter().for_each(|event| recorder.push(event)),
        Err(why) => recorder.anomaly(format!("backup: {why}")),
    }
}

/// Sample the store every `SAMPLE_INTERVAL_MS` until phase 1 ends.
fn sample_disk(
    sampler: &Arc<DiskSampler>,
    supervisor: &Arc<Supervisor>,
    phase1_ms: u64,
) -> impl std::future::Future<Output = ()> + 'static {
    let (sampler, supervisor) = (sampler.clone(), supervisor.clone());
    sample_disk_until(sampler, supervisor, phase1_ms)
}

async fn sample_disk_until(sampler: Arc<DiskSampler>, supervisor: Arc<Supervisor>, phase1_ms: u64) {
    for _ in 0..phase1_ms / SAMPLE_INTERVAL_MS {
        tokio::time::sleep(Duration::from_millis(SAMPLE_INTERVAL_MS)).await;
        let storage = supervisor.world.storage();
        let unsettled = !supervisor.disk_settled();
        sampler.sample(storage.as_ref(), unsettled, &supervisor.recorder);
    }
}

fn meta(plan: &Plan) -> Meta {
    let mut extra = BTreeMap::new();
    extra.insert(
        "scenario".to_string(),
        serde_json::json!(plan.scenario.name()),
    );
    extra.insert("phase1_ms".to_string(), serde_json::json!(plan.phase1_ms));
    extra.insert("fsync".to_string(), serde_json::json!("always"));
    extra.insert("features".to_string(), serde_json::json!(features()));
    extra.insert(
        "faults".to_string(),
        serde_json::json!(plan
            .faults
            .iter()
            .map(|t| format!("{} ms: {}", t.at_ms, t.fault))
            .collect::<Vec<_>>()),
    );
    Meta {
        seed: Some(plan.seed),
        n: Some(1),
        r: Some(1),
        w: Some(1),
        sessions: true,
        nodes: vec![NODE_ID],
        converge_bound_ms: Some(plan.converge_bound_ms),
        expiry_slack_ms: Some(clock_jumps_ms(plan)),
        effects: true,
        pops_exclusive: true,
        extra,
    }
}

/// How far the node's clock can be from the run's: every jump the plan makes,
/// added up (they accumulate).
fn clock_jumps_ms(plan: &Plan) -> u64 {
    plan.faults
        .iter()
        .map(|t| match t.fault {
            crate::plan::Fault::ClockJump { delta_ms } => delta_ms.unsigned_abs(),
            _ => 0,
        })
        .sum()
}

/// Phase 2: PING until PONG, within `bound_ms`.
async fn wait_for_node(bound_ms: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(bound_ms);
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut conn) = RespConn::connect(node_addr(), PING_TIMEOUT_MS).await {
            if let Ok(Reply::Simple(pong)) = conn.call(&[b"PING"], PING_TIMEOUT_MS).await {
                if pong == "PONG" {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The collections whose elements are among `keys`: a listing shows them,
/// and their elements are read as keys already.
fn hashes_of(keys: &BTreeSet<Key>) -> BTreeSet<Key> {
    keys.iter()
        .filter_map(|k| match crate::workload::key_parts(k) {
            (collection, Some(_)) => Some(Key::new(k.ns, collection)),
            _ => None,
        })
        .collect()
}

/// Phase 3: the node's state of every key touched, and of every live key it lists
/// that no client touched. Keys whose read fails are noted, not reported.
async fn read_finals(mut keys: BTreeSet<Key>, recorder: Arc<Recorder>) -> Vec<FinalState> {
    let mut conn: Option<RespConn> = None;
    let mut selected: Option<u8> = None;
    let hashes = hashes_of(&keys);
    for ns in 0..NAMESPACES_LISTED {
        let listed = call_with_retries(
            &mut conn,
            &mut selected,
            ns,
            &[b"KEYS".as_slice(), b"*".as_slice()],
            &recorder,
        )
        .await;
        if let Some(Reply::Array(names)) = listed {
            for name in names {
                if let Reply::Bulk(bytes) = name {
                    let key = Key::new(ns, String::from_utf8_lossy(&bytes));
                    if hashes.contains(&key) || crate::typed::is_typed_name(&key.name) {
                        continue; // a hash whose fields are keys already; a counter or queue
                    }
                    if keys.insert(key.clone()) {
                        recorder.fault(format!(
                            "final listing found {key}, which no client touched"
                        ));
                    }
                }
            }
        }
    }
    let mut finals = Vec::new();
    for key in keys {
        let (name, field) = crate::workload::key_args(&key);
        let mut args: Vec<&[u8]> = vec![b"SHOAL.SIBLINGS", &name];
        args.extend(field.iter().map(Vec::as_slice));
        let reply = call_with_retries(&mut conn, &mut selected, key.ns, &args, &recorder).await;
        match reply {
            Some(Reply::Error(message)) => {
                recorder.fault(format!("final read of {key} failed: {message}"));
                if message.contains("corrupt") {
                    recorder.detection(Some(key.clone()), format!("final read: {message}"));
                }
            }
            Some(reply) => match parse_siblings(&reply) {
                Some(parsed) => {
                    let exists = parsed.exists();
                    finals.push(FinalState {
                        tombstone: exists && parsed.live.is_empty(),
                        siblings: parsed.live,
                        context: if exists {
                            parsed.context
                        } else {
                            Context::new()
                        },
                        key,
                        replica: NODE_ID,
                        read_at_ms: Some(recorder.now_ms()),
                    })
                }
                None => {
                    recorder.anomaly(format!("final read of {key}: unexpected reply {reply:?}"))
                }
            },
            None => recorder.anomaly(format!(
                "final read of {key}: no reply after {FINAL_READ_ATTEMPTS_MAX} attempts"
            )),
        }
    }
    finals
}

/// One request in namespace `ns`, reconnecting and retrying on timeouts.
async fn call_with_retries(
    conn: &mut Option<RespConn>,
    selected: &mut Option<u8>,
    ns: u8,
    args: &[&[u8]],
    recorder: &Recorder,
) -> Option<Reply> {
    for _ in 0..FINAL_READ_ATTEMPTS_MAX {
        if conn.is_none() {
            *conn = RespConn::connect(node_addr(), FINAL_READ_TIMEOUT_MS)
                .await
                .ok();
            *selected = None;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let c = conn.as_mut().expect("connected above");
        if *selected != Some(ns) {
            let db = ns.to_string();
            match c
                .call(&[b"SELECT", db.as_bytes()], FINAL_READ_TIMEOUT_MS)
                .await
            {
                Ok(Reply::Simple(_)) => *selected = Some(ns),
                Ok(Reply::Error(message)) => {
                    recorder.anomaly(format!("SELECT {ns} refused: {message}"));
                    return None;
                }
                _ => {
                    *conn = None;
                    continue;
                }
            }
        }
        match c.call(args, FINAL_READ_TIMEOUT_MS).await {
            Ok(reply) => return Some(reply),
            Err(_) => *conn = None,
        }
    }
    None
}

#[derive(Default)]
struct Verdict {
    failures: Vec<String>,
    notes: Vec<String>,
}

/// What a run's verdict weighs.
struct Evidence<'a> {
    report: &'a Report,
    recorder: &'a Recorder,
    /// Keys whose records latent corruption hit.
    damaged: &'a BTreeSet<Key>,
    /// Engine misbehaviour the supervisor saw directly.
    invariant_failures: &'a [String],
    disk_samples: &'a [DiskSample],
    status: &'a NodeStatus,
}

/// The scenario's verdict: which violations make the run fail, and notes.
fn judge(plan: &Plan, evidence: &Evidence) -> Verdict {
    let Evidence {
        report,
        recorder,
        damaged,
        invariant_failures,
        status,
        disk_samples,
    } = *evidence;
    let mut verdict = Verdict {
        failures: invariant_failures.to_vec(),
        ..Verdict::default()
    };
    let bound = BoundKnobs {
        segment_size_bytes: plan.store.segment_size_bytes,
        compaction_dead_percent_min: plan.store.compaction_dead_percent_min,
    };
    verdict.failures.extend(bound.judge(disk_samples));
    let anomalies = recorder.anomalies();
    for anomaly in &anomalies.kept {
        verdict.failures.push(format!("anomaly: {anomaly}"));
    }
    if anomalies.dropped > 0 {
        verdict
            .failures
            .push(format!("... and {} more anomalies", anomalies.dropped));
    }
    let detections = recorder.detections();
    let detected_keys: BTreeSet<Key> = detections.iter().filter_map(|(k, _)| k.clone()).collect();
    for (_, note) in detections.iter().take(10) {
        verdict.notes.push(format!("detected: {note}"));
    }
    let refused = matches!(status, NodeStatus::Refused(_));
    if let (NodeStatus::Refused(reason), false) = (status, plan.scenario.corrupts()) {
        verdict.failures.push(format!(
            "recovery refused to open although no corruption was injected: {reason}"
        ));
    }
    if !damaged.is_empty() {
        let names: Vec<String> = damaged.iter().map(|k| k.to_string()).collect();
        verdict
            .notes
            .push(format!("damaged keys: {}", names.join("; ")));
    }
    for violation in &report.violations {
        // Corruption: "detected, never garbage". Damage may cost the damaged keys
        // (or, when recovery refused, every key's final state), once detected.
        let on_detected_damage = violation
            .key
            .as_ref()
            .is_some_and(|k| damaged.contains(k) && (refused || detected_keys.contains(k)));
        let expected = plan.scenario.corrupts()
            && match violation.kind {
                ViolationKind::G1Durability => on_detected_damage,
                ViolationKind::G3Convergence => on_detected_damage || refused,
                ViolationKind::Liveness => refused,
                _ => false,
            };
        if expected {
            verdict
                .notes
                .push(format!("expected after detected damage: {violation}"));
        } else {
            verdict.failures.push(format!("checker: {violation}"));
        }
    }
    verdict
}
