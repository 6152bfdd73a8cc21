//! Shared setup for the cluster tests: starting and stopping nodes, waiting for
//! convergence and handoffs, reading status and stopped directories.

use crate::common::cluster::members;
use crate::common::cluster::port_pairs;
use crate::common::cluster::start_member;
use crate::common::cluster::SECRET;
use crate::common::ShoalProcess;
use redis::Commands;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

/// `root/node-1` .. `root/node-{count}`.
pub(crate) fn node_dirs(root: &Path, count: usize) -> Vec<std::path::PathBuf> {
    (1..=count)
        .map(|i| root.join(format!("node-{i}")))
        .collect()
}

/// Cluster tests running at once in this process. Each starts three to five
/// nodes; all thirteen at once put some sixty processes on CI's two cores, and
/// peer links then churned under starvation (a late heartbeat replaces a
/// connection) until setup writes failed NOQUORUM with peers "recently
/// unreachable": a failure of the machine's capacity, not of the cluster.
pub(crate) const CLUSTER_TESTS_AT_ONCE_MAX: usize = 4;

/// A slot among [`CLUSTER_TESTS_AT_ONCE_MAX`], held for the test's life.
pub(crate) struct ClusterSlot;

pub(crate) static CLUSTER_SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

pub(crate) fn cluster_slot() -> ClusterSlot {
    let (running, freed) = &CLUSTER_SLOTS;
    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
    while *running >= CLUSTER_TESTS_AT_ONCE_MAX {
        running = freed.wait(running).unwrap_or_else(|p| p.into_inner());
    }
    *running += 1;
    ClusterSlot
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        let (running, freed) = &CLUSTER_SLOTS;
        *running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// Nodes 1..=ports.len(), each with `extra` flags.
pub(crate) fn start_nodes(
    ports: &[u16],
    dirs: &[std::path::PathBuf],
    extra: &[&str],
) -> Vec<Option<ShoalProcess>> {
    let nodes: Vec<Option<ShoalProcess>> = (1..=ports.len())
        .map(|i| Some(start_node_with(i, ports, &dirs[i - 1], extra)))
        .collect();
    wait_until_connected(&nodes);
    nodes
}

/// Wait (up to 30 s) until every node sees every other member connected and
/// not suspected (`CLUSTER NODES`). A first write can succeed on two of three
/// replicas while the last peer link is still coming up; on a loaded machine
/// the writes after it then failed NOQUORUM with two peers "recently
/// unreachable", a failure of the test's setup, not of the cluster.
pub(crate) fn wait_until_connected(nodes: &[Option<ShoalProcess>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes.iter().flatten() {
        let mut conn = node.client();
        loop {
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .expect("CLUSTER NODES");
            let all_up = text.lines().all(|line| {
                line.contains("myself") || (line.contains(" connected") && !line.contains(",fail"))
            });
            if all_up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never saw every member connected:\n{text}",
                node.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Wait (up to `limit`) until every node reports the same local digest.
pub(crate) fn wait_for_equal_digests(nodes: &[Option<ShoalProcess>], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let lines: Vec<String> = nodes
            .iter()
            .map(|n| digest_line(n.as_ref().unwrap()))
            .collect();
        if lines.iter().all(|l| *l == lines[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge in {} s: {lines:?}",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait (up to 20 s) until the cluster takes a quorum write: `SET warm value`.
pub(crate) fn wait_for_a_write(conn: &mut redis::Connection, value: &str) {
    set_once_connected(conn, "warm", value);
}

/// A setup write, retried while the cluster is still starting: one write
/// taken does not mean every peer connection is up yet (a node's first dial
/// to a peer still starting backs off), so a key whose replicas are those
/// peers may get NOQUORUM for a moment.
pub(crate) fn set_once_connected(conn: &mut redis::Connection, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while conn.set::<_, _, String>(key, value).is_err() {
        assert!(
            Instant::now() < deadline,
            "the cluster never took a write of {key}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn start_node(id: usize, ports: &[u16], dir: &Path) -> ShoalProcess {
    start_node_with(id, ports, dir, &[])
}

pub(crate) fn start_node_with(
    id: usize,
    ports: &[u16],
    dir: &Path,
    extra: &[&str],
) -> ShoalProcess {
    start_member(id, ports, dir, extra)
}

pub(crate) fn status(node: &ShoalProcess) -> String {
    let mut conn = node.client();
    let reply: redis::Value = redis::cmd("SHOAL.CLUSTER")
        .query(&mut conn)
        .expect("status");
    match reply {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected status reply {other:?}"),
    }
}

/// The "local digest ... over N keys" line of a node's status.
pub(crate) fn digest_line(node: &ShoalProcess) -> String {
    status(node)
        .lines()
        .find(|l| l.starts_with("local digest"))
        .expect("status has a digest line")
        .to_string()
}

/// key -> winning value, as `shoal inspect` prints a stopped node's directory.
pub(crate) fn inspect(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("inspect")
        .arg(dir)
        .output()
        .expect("run shoal inspect");
    assert!(
        out.status.success(),
        "shoal inspect {} found damage: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut keys = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let Some(key) = v.get("key").and_then(|k| k.as_str()) else {
            continue;
        };
        let values = v["siblings"]
            .as_array()
            .expect("siblings")
            .iter()
            .filter_map(|s| s["value"].as_str().map(str::to_string))
            .collect();
        keys.insert(key.to_string(), values);
    }
    keys
}

/// Run `shoal cluster <args>` and return its output (panics on failure).
pub(crate) fn admin(args: &[&str]) -> String {
    try_admin(args).unwrap_or_else(|e| panic!("shoal cluster {args:?} failed: {e}"))
}

/// Run `shoal cluster <args>`: its output, or its error output.
pub(crate) fn try_admin(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster")
        .args(args)
        .output()
        .expect("run shoal cluster");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The number right after `prefix` on a line of a node's status.
pub(crate) fn status_count(node: &ShoalProcess, prefix: &str) -> u64 {
    status(node)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("status has no \"{prefix}N\" line"))
}

/// The number on the "handoffs in flight: N" line of a node's status.
pub(crate) fn handoffs_in_flight(node: &ShoalProcess) -> u64 {
    status_count(node, "handoffs in flight: ")
}

pub(crate) fn wait_for_handoffs(nodes: &[&ShoalProcess], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while nodes.iter().any(|n| handoffs_in_flight(n) > 0) {
        assert!(
            Instant::now() < deadline,
            "{what}: handoffs still in flight after 90 s:\n{}",
            status(nodes[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nodes 1-3 founded in `root`, and node 4 started with them as seeds (running,
/// not yet joined). Returns the four client ports, the founders and node 4.
pub(crate) fn founders_and_a_newcomer(root: &Path) -> (Vec<u16>, Vec<ShoalProcess>, ShoalProcess) {
    let ports = port_pairs(4);
    let founders = &ports[..3];
    let dirs = node_dirs(root, 4);
    let nodes: Vec<ShoalProcess> = (1..=3)
        .map(|i| start_node(i, founders, &dirs[i - 1]))
        .collect();
    let seeds = members(founders);
    let node4 = ShoalProcess::start_on(
        ports[3],
        &dirs[3],
        &[
            "--node-id",
            "4",
            "--members",
            &seeds,
            "--cluster-secret",
            SECRET,
        ],
    );
    (ports, nodes, node4)
}

/// The "hints pending N" number of a node's status.
/// CLUSTER SLOTS as (first slot, last slot, owners' client ports in preference
/// order).
pub(crate) fn cluster_slots(c: &mut redis::Connection) -> Vec<(i64, i64, Vec<i64>)> {
    let reply: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(c).unwrap();
    let redis::Value::Array(ranges) = reply else {
        panic!("CLUSTER SLOTS: {reply:?}")
    };
    ranges
        .into_iter()
        .map(|range| {
            let redis::Value::Array(parts) = range else {
                panic!("range")
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i,
                other => panic!("{other:?}"),
            };
            let ports: Vec<i64> = parts[2..]
                .iter()
                .map(|node| match node {
                    redis::Value::Array(n) => int(&n[1]),
                    other => panic!("{other:?}"),
                })
                .collect();
            (int(&parts[0]), int(&parts[1]), ports)
        })
        .collect()
}

pub(crate) fn hints_pending(node: &ShoalProcess) -> u64 {
    status_count(node, "hints pending ")
}

/// Wait until `observer`'s status shows node `down` as down.
pub(crate) fn wait_until_seen_down(observer: &ShoalProcess, down: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("node {down} ");
    while !status(observer)
        .lines()
        .any(|l| l.trim_start().starts_with(&prefix) && l.contains(" down "))
    {
        assert!(Instant::now() < deadline, "node {down} never seen down");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many delete markers a node's store forgot (its status line).
pub(crate) fn forgotten_here(node: &ShoalProcess) -> u64 {
    let text = status(node);
    let at = text
        .find("forgotten here ")
        .expect("status has the delete-marker line");
    text[at + "forgotten here ".len()..]
        .split(';')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("a count")
}

/// Wait (up to 60 s) until each of `nodes` has forgotten at least `count`
/// delete markers.
pub(crate) fn wait_until_forgotten(nodes: &[&ShoalProcess], count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts: Vec<u64> = nodes.iter().map(|n| forgotten_here(n)).collect();
        if counts.iter().all(|c| *c >= count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "markers not forgotten on every node asked: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stop every node (kill -9) and read its directory, once no directory holds
/// a delete marker of `deleted`. A marker can outlive its first collection: a
/// member that forgot it can be sent it again by one that has not yet
/// (anti-entropy between the two forgets, `tombstones` step 3), and a later
/// round agrees on it and forgets it again. So while markers remain, the nodes
/// are started again on their directories for a few more collection rounds,
/// up to `RESTARTS_MAX` times. A deleted key's value in any directory fails at
/// once: that is a resurrection, not a slow collection. (CI failed once on a
/// marker spread back this way: the whole cluster test binary on 2 loaded
/// cores.)
pub(crate) fn stop_once_markers_go(
    nodes: &mut [Option<ShoalProcess>],
    ports: &[u16],
    dirs: &[std::path::PathBuf],
    extra: &[&str],
    deleted: &[String],
) -> Vec<BTreeMap<String, Vec<String>>> {
    const RESTARTS_MAX: usize = 3;
    for restart in 0..=RESTARTS_MAX {
        let mut held_by_node = Vec::new();
        let mut markers = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            node.take().unwrap().kill9();
            let held = inspect(&dirs[i]);
            for key in deleted {
                match held.get(key) {
                    Some(values) if !values.is_empty() => {
                        panic!("node {} holds deleted key {key}: {values:?}", i + 1)
                    }
                    Some(_) => markers.push(format!("node {}: {key}", i + 1)),
                    None => {}
                }
            }
            held_by_node.push(held);
        }
        if markers.is_empty() {
            return held_by_node;
        }
        assert!(
            restart < RESTARTS_MAX,
            "delete markers still held after {RESTARTS_MAX} restarts: {markers:?}"
        );
        eprintln!("delete markers still held, started again to collect them: {markers:?}");
        for (i, node) in nodes.iter_mut().enumerate() {
            *node = Some(start_node_with(i + 1, ports, &dirs[i], extra));
        }
        wait_until_connected(nodes);
        std::thread::sleep(Duration::from_secs(8));
    }
    unreachable!("the last round returns or fails")
}

/// (namespace, key) of every key holding a value, as `shoal inspect` prints a
/// stopped node's directory.
pub(crate) fn inspect_live_keys(dir: &Path) -> std::collections::BTreeSet<(u64, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("inspect")
        .arg(dir)
        .output()
        .expect("run shoal inspect");
    assert!(out.status.success(), "shoal inspect {}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            let key = v.get("key")?.as_str()?.to_string();
            let live = v["siblings"]
                .as_array()?
                .iter()
                .any(|s| s["value"].is_string());
            live.then(|| (v["namespace"].as_u64().expect("namespace"), key))
        })
        .collect()
}

/// `shoal cluster pin` of namespace 1 to nodes 2 and 3 (n=2 r=1 w=2), through
/// the member at `addr`; its reply. Tried again for up to 30 s while the member
/// cannot yet compare maps with a majority (a peer just restarted).
pub(crate) fn pin_namespace_1_to_nodes_2_and_3(addr: &str) -> String {
    let args = [
        "pin",
        "--addr",
        addr,
        "--namespace",
        "1",
        "--nodes",
        "2,3",
        "--n",
        "2",
        "--r",
        "1",
        "--w",
        "2",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_admin(&args) {
            Ok(reply) => return reply,
            Err(e) if e.contains("reaches a majority") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("shoal cluster {args:?} failed: {e}"),
        }
    }
}

/// Flip one byte in the middle of the written part of `dir`'s first segment log,
/// and remove its key-hint files so recovery scans the log (and finds it).
pub(crate) fn corrupt_first_segment(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") && name.ends_with(".hint") {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    let path = dir.join("seg-00000001.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let written = bytes.iter().rposition(|b| *b != 0).expect("records") + 1;
    bytes[written / 2] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
}

/// Wait (up to 30 s) until `node`'s status no longer says it is restoring
/// from its replicas.
pub(crate) fn wait_until_restored(node: &ShoalProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(node).contains("restoring from replicas") {
        assert!(
            Instant::now() < deadline,
            "still restoring:\n{}",
            status(node)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
