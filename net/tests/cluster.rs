//! Three real `shoal` processes on loopback as one cluster (n=3, r=2, w=2): writes
//! through one node are read through another; one node is killed with kill -9
//! while a client keeps writing, restarted, and after anti-entropy converges,
//! `shoal inspect` on each stopped node's data directory shows every acknowledged
//! write on all three replicas.

mod common;

use common::cluster::{members, port_pair, port_pairs, start_member, SECRET};
use common::{temp_dir, ShoalProcess};
use redis::Commands;
use shoal_engine::slot::key_slot;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `root/node-1` .. `root/node-{count}`.
fn node_dirs(root: &Path, count: usize) -> Vec<std::path::PathBuf> {
    (1..=count)
        .map(|i| root.join(format!("node-{i}")))
        .collect()
}

/// Nodes 1..=ports.len(), each with `extra` flags.
/// Cluster tests running at once in this process. Each starts three to five
/// nodes; all thirteen at once put some sixty processes on CI's two cores, and
/// peer links then churned under starvation (a late heartbeat replaces a
/// connection) until setup writes failed NOQUORUM with peers "recently
/// unreachable": a failure of the machine's capacity, not of the cluster.
const CLUSTER_TESTS_AT_ONCE_MAX: usize = 4;

/// A slot among [`CLUSTER_TESTS_AT_ONCE_MAX`], held for the test's life.
struct ClusterSlot;

static CLUSTER_SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

fn cluster_slot() -> ClusterSlot {
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

fn start_nodes(
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
fn wait_until_connected(nodes: &[Option<ShoalProcess>]) {
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
fn wait_for_equal_digests(nodes: &[Option<ShoalProcess>], limit: Duration) {
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
fn wait_for_a_write(conn: &mut redis::Connection, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while conn.set::<_, _, String>("warm", value).is_err() {
        assert!(Instant::now() < deadline, "the cluster never took a write");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_node(id: usize, ports: &[u16], dir: &Path) -> ShoalProcess {
    start_node_with(id, ports, dir, &[])
}

fn start_node_with(id: usize, ports: &[u16], dir: &Path, extra: &[&str]) -> ShoalProcess {
    start_member(id, ports, dir, extra)
}

fn status(node: &ShoalProcess) -> String {
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
fn digest_line(node: &ShoalProcess) -> String {
    status(node)
        .lines()
        .find(|l| l.starts_with("local digest"))
        .expect("status has a digest line")
        .to_string()
}

/// key -> winning value, as `shoal inspect` prints a stopped node's directory.
fn inspect(dir: &Path) -> BTreeMap<String, Vec<String>> {
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

#[test]
fn three_nodes_survive_kill_9_of_one_and_converge() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);

    // Written through node 1, read through node 2.
    let mut c1 = nodes[0].as_ref().unwrap().client();
    let mut c2 = nodes[1].as_ref().unwrap().client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c1.set::<_, _, String>("hello", "world") {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cluster never accepted a write: {e}"),
        }
    }
    let got: Option<String> = c2.get("hello").unwrap();
    assert_eq!(got.as_deref(), Some("world"), "read through node 2");
    let _: () = c2
        .mset(&[("{t}a", "1"), ("{t}b", "2"), ("other", "3")])
        .unwrap();
    let got: Vec<Option<String>> = c1.mget(&["{t}a", "{t}b", "other", "none"]).unwrap();
    assert_eq!(
        got,
        vec![Some("1".into()), Some("2".into()), Some("3".into()), None]
    );
    let count: i64 = c1.del(&["{t}a", "other"]).unwrap();
    assert_eq!(count, 2);
    let size: i64 = redis::cmd("DBSIZE").query(&mut c2).unwrap();
    assert_eq!(size, 2, "hello and {{t}}b remain");

    // A client writes with w=2 through nodes 1 and 2 while node 3 is killed.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    acknowledged.insert("hello".into(), "world".into());
    acknowledged.insert("{t}b".into(), "2".into());
    let mut refused = 0;
    for i in 0..600 {
        if i == 200 {
            nodes[2].take().unwrap().kill9();
        }
        let key = format!("w:{i}");
        let value = format!("v{i}");
        let conn = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        match conn.set::<_, _, String>(&key, &value) {
            Ok(_) => {
                acknowledged.insert(key, value);
            }
            Err(e) => {
                refused += 1;
                eprintln!("write {i} refused: {e}");
            }
        }
    }
    assert!(
        refused <= 30,
        "with one of three nodes down, w=2 writes must go on ({refused} refused)"
    );

    // Node 3 comes back and catches up by anti-entropy.
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    wait_for_equal_digests(&nodes, Duration::from_secs(60));
    // A restart on its own directory is no lost disk: same actor, next incarnation.
    let first_line = status(nodes[2].as_ref().unwrap())
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(first_line, "node 3", "a normal restart keeps its actor");
    // Replication lag is visible: node 1's anti-entropy finds node 3 in sync.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = status(nodes[0].as_ref().unwrap());
        if text.contains("  node 3: in sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never reported node 3 in sync:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(c1);
    drop(c2);
    for node in nodes.iter_mut() {
        node.take().unwrap().kill9();
    }
    for dir in &dirs {
        let held = inspect(dir);
        for (key, value) in &acknowledged {
            let values = held
                .get(key)
                .unwrap_or_else(|| panic!("{} lost acknowledged {key}", dir.display()));
            assert!(
                values.contains(value),
                "{} holds {values:?} for {key}, acknowledged {value}",
                dir.display()
            );
        }
    }
    eprintln!(
        "{} acknowledged writes on all 3 replicas; {refused} refused while node 3 was down",
        acknowledged.len()
    );
}

#[test]
fn a_peer_without_the_secret_is_refused() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-secret");
    let p1 = port_pair(&[]);
    let p2 = port_pair(&[p1]);
    let ports = [p1, p2];
    let good = start_node(1, &ports, &root.join("node-1"));
    let members = members(&ports);
    // Node 2 joins with the wrong secret: node 1 must refuse its peer traffic, so
    // a write needing both (n=2, w=2) fails with a clear error instead of hanging.
    let bad = ShoalProcess::start_on(
        p2,
        &root.join("node-2"),
        &[
            "--node-id",
            "2",
            "--members",
            &members,
            "--cluster-secret",
            "wrong",
        ],
    );
    let mut conn = good.client();
    let started = Instant::now();
    let mut last = String::new();
    for _ in 0..5 {
        match conn.set::<_, _, String>("k", "v") {
            Ok(_) => panic!("a write reached a peer that lacks the secret"),
            Err(e) => last = e.to_string(),
        }
    }
    assert!(
        last.contains("NOQUORUM") || last.contains("CLUSTERDOWN"),
        "unexpected error: {last}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "errors, not hangs"
    );
    let text = status(&good);
    assert!(
        !text.contains("peer handshakes refused 0,"),
        "node 1 counted no refused handshake:\n{text}"
    );
    // Garbage on the peer port is refused too, and the node keeps serving.
    let mut garbage = std::net::TcpStream::connect(("127.0.0.1", p1 + 10000)).unwrap();
    std::io::Write::write_all(&mut garbage, &[0xff; 64]).unwrap();
    drop(garbage);
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    drop(bad);
}

/// Run `shoal cluster <args>` and return its output (panics on failure).
fn admin(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster")
        .args(args)
        .output()
        .expect("run shoal cluster");
    assert!(
        out.status.success(),
        "shoal cluster {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number right after `prefix` on a line of a node's status.
fn status_count(node: &ShoalProcess, prefix: &str) -> u64 {
    status(node)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("status has no \"{prefix}N\" line"))
}

/// The number on the "handoffs in flight: N" line of a node's status.
fn handoffs_in_flight(node: &ShoalProcess) -> u64 {
    status_count(node, "handoffs in flight: ")
}

fn wait_for_handoffs(nodes: &[&ShoalProcess], what: &str) {
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
fn founders_and_a_newcomer(root: &Path) -> (Vec<u16>, Vec<ShoalProcess>, ShoalProcess) {
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

/// A fourth node starts with the three as seeds, an operator admits it with
/// `shoal cluster join`, later takes node 1 out with `shoal cluster leave`, and a
/// client writes through node 2 the whole time. Every acknowledged write is then
/// read back through the new node and through node 2.
#[test]
fn a_node_joins_and_another_leaves_while_a_client_writes() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-ring");
    let (ports, nodes, node4) = founders_and_a_newcomer(&root);
    let mut c2 = nodes[1].client();
    wait_for_a_write(&mut c2, "up");
    let before = status(&nodes[0]);
    assert!(
        before.contains("ring version 1,"),
        "founders start at ring version 1:\n{before}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut conn = nodes[1].client();
        std::thread::spawn(move || {
            let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
            let mut refused = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k:{i}");
                let value = format!("v{i}");
                match conn.set::<_, _, String>(&key, &value) {
                    Ok(_) => {
                        acknowledged.insert(key, value);
                    }
                    Err(e) => refused.push(format!("{key}: {e}")),
                }
                i += 1;
            }
            (acknowledged, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let joined = admin(&[
        "join",
        "--addr",
        &addr1,
        "--node",
        &format!("4@127.0.0.1:{}", ports[3]),
    ]);
    eprintln!("join: {joined}");
    assert!(joined.contains("ring version 1 -> 2"), "{joined}");
    wait_for_handoffs(&[&nodes[0], &nodes[1], &nodes[2], &node4], "join");
    std::thread::sleep(Duration::from_millis(300));
    let addr4 = format!("127.0.0.1:{}", ports[3]);
    let left = admin(&["leave", "--addr", &addr4, "--node", "1"]);
    eprintln!("leave: {left}");
    assert!(left.contains("ring version 2 -> 3"), "{left}");
    wait_for_handoffs(&[&nodes[1], &nodes[2], &node4], "leave");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (acknowledged, refused) = writer.join().expect("writer");
    assert!(
        acknowledged.len() >= 50,
        "too few writes went through: {} ({} refused, first: {:?})",
        acknowledged.len(),
        refused.len(),
        refused.first()
    );

    let after = admin(&["status", "--addr", &addr4]);
    assert!(after.contains("ring version 3,"), "{after}");
    assert!(
        !after.contains(&format!("127.0.0.1:{} ", ports[0])),
        "node 1 left the map once its handoffs were done:\n{after}"
    );
    // Node 1 owns nothing now: once the ring settled it drops every copy it
    // held (and the reads below show that nothing it dropped was needed).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = digest_line(&nodes[0]);
        if line.ends_with("over 0 keys") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 still holds copies after leaving: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c4 = node4.client();
    for (reader, conn) in [("node 4", &mut c4), ("node 2", &mut c2)] {
        for (key, value) in &acknowledged {
            let got: Option<String> = conn.get(key).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "{key} read through {reader}"
            );
        }
    }
    let size: i64 = redis::cmd("DBSIZE").query(&mut c4).unwrap();
    assert!(
        size as usize > acknowledged.len(),
        "DBSIZE through node 4 is {size}, with {} acknowledged keys",
        acknowledged.len() + 1
    );
    eprintln!(
        "{} writes acknowledged and read back through nodes 4 and 2 ({} refused during the ring changes)\n{after}",
        acknowledged.len(),
        refused.len()
    );
    drop(nodes);
    drop(node4);
}

/// The "hints pending N" number of a node's status.
/// CLUSTER SLOTS as (first slot, last slot, owners' client ports in preference
/// order).
fn cluster_slots(c: &mut redis::Connection) -> Vec<(i64, i64, Vec<i64>)> {
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

fn hints_pending(node: &ShoalProcess) -> u64 {
    status_count(node, "hints pending ")
}

/// Four real nodes, n=3, w=2, sloppy quorum. Two owners of a key are killed:
/// writes through the third owner still succeed because node 4 (a fallback)
/// keeps hints for them. The two come back, node 4 hands the hints over, and
/// with node 4 and the writing owner killed, the two returned owners alone
/// answer every acknowledged value.
#[test]
fn a_fallback_keeps_hints_while_two_owners_are_down() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-hints");
    let ports = port_pairs(4);
    let dirs = node_dirs(&root, 4);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    // Keys whose owners are nodes 1, 2 and 3 (CLUSTER SLOTS says which).
    let slots = cluster_slots(&mut c1);
    // CLUSTER NODES lists each node as the master of the slots it coordinates
    // (first in CLUSTER SLOTS): every slot exactly once, as cluster-aware clients
    // such as `redis-benchmark --cluster` need.
    let nodes_text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c1).unwrap();
    let mut coordinator_of = vec![None; 16384];
    for line in nodes_text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let port: i64 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
        for range in &fields[8..] {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
            for (slot, coordinator) in coordinator_of[first..=last].iter_mut().enumerate() {
                assert_eq!(*coordinator, None, "slot {} listed twice", first + slot);
                *coordinator = Some(port);
            }
        }
    }
    for (first, last, owners) in &slots {
        for slot in *first..=*last {
            assert_eq!(
                coordinator_of[slot as usize],
                Some(owners[0]),
                "slot {slot}"
            );
        }
    }
    let owned_by_123 = |key: &str| {
        let slot = i64::from(key_slot(key.as_bytes()));
        slots.iter().any(|(first, last, owners)| {
            (*first..=*last).contains(&slot)
                && owners.len() == 3
                && owners.iter().all(|p| ports[..3].contains(&(*p as u16)))
        })
    };
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("h:{i}"))
        .filter(|k| owned_by_123(k))
        .take(40)
        .collect();
    assert!(
        keys.len() >= 20,
        "too few keys owned by nodes 1-3: {}",
        keys.len()
    );

    nodes[1].take().unwrap().kill9();
    nodes[2].take().unwrap().kill9();
    // Wait until node 1 holds them down.
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 2);
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 3);
    let mut acknowledged = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let value = format!("while-down-{i}");
        let _: String = c1
            .set(key, &value)
            .unwrap_or_else(|e| panic!("sloppy write of {key} refused: {e}"));
        acknowledged.insert(key.clone(), value);
    }
    let node4 = nodes[3].as_ref().unwrap();
    assert!(
        hints_pending(node4) > 0,
        "node 4 keeps no hints:\n{}",
        status(node4)
    );
    // Reads go on too (r=2 with one owner up): node 4 answers for owner 2 with
    // its hint, so each write just made reads back.
    for (key, value) in &acknowledged {
        let got: Option<String> = c1
            .get(key)
            .unwrap_or_else(|e| panic!("read of {key} with two owners down: {e}"));
        assert_eq!(got.as_deref(), Some(value.as_str()), "{key} through node 1");
    }
    let text = status(nodes[0].as_ref().unwrap());
    let asked: u64 = text
        .split("reads that asked a fallback ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(asked >= acknowledged.len() as u64, "{text}");

    nodes[1] = Some(start_node(2, &ports, &dirs[1]));
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while hints_pending(nodes[3].as_ref().unwrap()) > 0 {
        assert!(Instant::now() < deadline, "hints never delivered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = status(nodes[3].as_ref().unwrap());
    drop(c1);
    nodes[0].take().unwrap().kill9();
    nodes[3].take().unwrap().kill9();
    std::thread::sleep(Duration::from_millis(2000));
    let mut c2 = nodes[1].as_ref().unwrap().client();
    for (key, value) in &acknowledged {
        let got: Option<String> = c2.get(key).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_str()), "{key} through node 2");
    }
    eprintln!(
        "{} writes acknowledged by a fallback while two owners were down, all read back from the owners\n{text}",
        acknowledged.len()
    );
    drop(nodes);
}

/// Node 3's disk is lost: it restarts on an empty data directory. Its peers still
/// hold writes it coordinated, with its old dots; the node must move past its old
/// incarnation, or its next write to such a key reuses a dot and the replicas keep
/// the old value. The write through node 3 must win everywhere.
#[test]
fn a_node_restarted_on_an_empty_disk_does_not_reuse_its_old_dots() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-lost-disk");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    let slots = cluster_slots(&mut c1);
    // Keys node 3 coordinates (first in their preference list).
    let keys: Vec<String> = (0..500)
        .map(|i| format!("lost:{i}"))
        .filter(|k| {
            let slot = i64::from(key_slot(k.as_bytes()));
            slots.iter().any(|(first, last, owners)| {
                (*first..=*last).contains(&slot) && owners[0] == i64::from(ports[2])
            })
        })
        .take(20)
        .collect();
    assert!(keys.len() >= 10, "too few keys coordinated by node 3");
    let deadline = Instant::now() + Duration::from_secs(20);
    for key in &keys {
        loop {
            match c1.set::<_, _, String>(key, "old") {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for the cluster: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("write of {key} failed: {e}"),
            }
        }
    }
    // Every replica holds the old values before node 3's disk goes.
    wait_for_equal_digests(&nodes, Duration::from_secs(30));

    nodes[2].take().unwrap().kill9();
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    std::fs::create_dir_all(&dirs[2]).unwrap();
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let node3 = nodes[2].as_ref().unwrap();
    let own_line = status(node3)
        .lines()
        .find(|l| l.starts_with("  node 3 "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        own_line.contains("incarnation 2 "),
        "node 3 should start past its old incarnation: {own_line}"
    );
    let first_line = status(node3).lines().next().unwrap_or_default().to_string();
    assert!(
        first_line.contains("knew in incarnation 1; dots minted as actor"),
        "node 3 should mint its dots as a new actor: {first_line}"
    );
    let mut c3 = node3.client();
    for key in &keys {
        let _: String = c3.set(key, "new").unwrap();
    }
    for (i, node) in nodes.iter().enumerate() {
        let mut c = node.as_ref().unwrap().client();
        for key in &keys {
            let value: String = c.get(key).unwrap();
            assert_eq!(value, "new", "{key} through node {}", i + 1);
        }
    }
    // A later restart on the new directory keeps the actor it took.
    let actor = first_line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    nodes[2].take().unwrap().kill9();
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let again = status(nodes[2].as_ref().unwrap())
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        again.contains(&format!("dots minted as actor {actor}, taken when")),
        "after a normal restart: {again} (actor was {actor})"
    );
}

/// Namespace 1 has its own quorums (r=1, w=1: a cache that stays writable with
/// one replica up); namespace 0 keeps n=3 r=2 w=2. With two of three nodes down,
/// namespace 0 refuses writes and namespace 1 takes them and reads them back.
#[test]
fn a_namespace_with_its_own_quorums_stays_writable_with_one_replica() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-ns-quorum");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &["--namespace-quorum", "1:1:1"]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let text = status(nodes[0].as_ref().unwrap());
    assert!(text.contains("n=3 r=2 w=2; namespace 1: r=1 w=1"), "{text}");
    // Read-modify-writes are refused on a cluster, plainly, and write nothing.
    let incr = redis::cmd("INCR")
        .arg("x")
        .query::<i64>(&mut c1)
        .unwrap_err();
    assert!(
        incr.to_string().contains("not supported on a cluster"),
        "{incr}"
    );
    assert_eq!(c1.get::<_, String>("warm").unwrap(), "x");
    let exists: i64 = c1.exists("x").unwrap();
    assert_eq!(exists, 0, "the refused INCR created nothing");
    let rename = redis::cmd("RENAME")
        .arg("warm")
        .arg("moved")
        .query::<()>(&mut c1)
        .unwrap_err();
    assert!(
        rename.to_string().contains("not supported on a cluster"),
        "{rename}"
    );
    assert_eq!(
        c1.get::<_, String>("warm").unwrap(),
        "x",
        "the refused RENAME moved nothing"
    );

    nodes[1].take().unwrap().kill9();
    nodes[2].take().unwrap().kill9();
    // Until node 1 sees them down, a write it proxies to one has an unknown
    // outcome.
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 2);
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 3);
    let mut cache = nodes[0].as_ref().unwrap().client();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut cache).unwrap();
    for i in 0..20 {
        let key = format!("cache:{i}");
        let _: String = cache.set(&key, i).unwrap();
        let value: i64 = cache.get(&key).unwrap();
        assert_eq!(value, i);
    }
    // Namespace 0 needs two replicas: refused, plainly.
    let refused = c1.set::<_, _, String>("strict", "x").unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("NOQUORUM") || text.contains("CLUSTERDOWN"),
        "{text}"
    );
}

/// Wait until `observer`'s status shows node `down` as down.
fn wait_until_seen_down(observer: &ShoalProcess, down: usize) {
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
fn forgotten_here(node: &ShoalProcess) -> u64 {
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
fn wait_until_forgotten(nodes: &[&ShoalProcess], count: u64) {
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

/// Delete markers are collected only once every replica holds them: while
/// node 3 is down, the markers of keys deleted meanwhile stay on nodes 1 and 2;
/// once it is back and has them (anti-entropy), all three forget them, the
/// deleted keys stay deleted, and the stopped data directories hold only the
/// keys that were kept.
#[test]
fn delete_markers_go_only_once_every_replica_holds_them() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-markers");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let extra = ["--tombstone-grace-ms", "0"];
    let mut nodes = start_nodes(&ports, &dirs, &extra);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let keys: Vec<String> = (0..30).map(|i| format!("marker:{i}")).collect();
    for key in &keys {
        let _: String = c1.set(key, "v").unwrap();
    }
    wait_for_equal_digests(&nodes, Duration::from_secs(30));

    nodes[2].take().unwrap().kill9();
    // Until node 1 sees node 3 down, a delete it proxies there has an unknown
    // outcome.
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 3);
    let (deleted, kept) = keys.split_at(15);
    for key in deleted {
        let removed: i64 = c1.del(key).unwrap();
        assert_eq!(removed, 1, "{key}");
    }
    // Longer than the settle delay (request timeout + replica-write age limit
    // + slack, 3.5 s) and several collection rounds: nothing may go.
    std::thread::sleep(Duration::from_secs(8));
    for node in nodes.iter().take(2) {
        assert_eq!(
            forgotten_here(node.as_ref().unwrap()),
            0,
            "a marker went while a replica was down"
        );
    }

    nodes[2] = Some(start_node_with(3, &ports, &dirs[2], &extra));
    let all: Vec<&ShoalProcess> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    wait_until_forgotten(&all, deleted.len() as u64);
    drop(all);
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    for (i, node) in nodes.iter().enumerate() {
        let mut c = node.as_ref().unwrap().client();
        for key in deleted {
            let value: Option<String> = c.get(key).unwrap();
            assert_eq!(value, None, "{key} came back through node {}", i + 1);
        }
        for key in kept {
            let value: String = c.get(key).unwrap();
            assert_eq!(value, "v", "{key} through node {}", i + 1);
        }
    }
    let held_by_node = stop_once_markers_go(&mut nodes, &ports, &dirs, &extra, deleted);
    for (i, held) in held_by_node.iter().enumerate() {
        for key in deleted {
            assert!(!held.contains_key(key), "node {} still holds {key}", i + 1);
        }
        for key in kept {
            assert_eq!(
                held.get(key),
                Some(&vec!["v".to_string()]),
                "node {}",
                i + 1
            );
        }
    }
}

/// A node taken out of the ring while it is down, and joined back under its old
/// id with its old directory, must not bring back what was deleted while it was
/// out: node 4 is killed holding copies, leaves (`shoal cluster leave`), keys it
/// holds are deleted and their markers collected on the three others, and it is
/// joined again (`shoal cluster join`) and restarted. Adopting the ring that
/// hands its partitions back, it drops its old copies and pulls them afresh, so
/// the deleted keys stay deleted through every node and in every directory.
#[test]
fn a_node_joined_back_with_its_old_directory_does_not_resurrect_deleted_keys() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-rejoin");
    let ports = port_pairs(4);
    let dirs = node_dirs(&root, 4);
    let extra = ["--tombstone-grace-ms", "0"];
    let mut nodes = start_nodes(&ports, &dirs, &extra);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let keys: Vec<String> = (0..40).map(|i| format!("rejoin:{i}")).collect();
    for key in &keys {
        let _: String = c1.set(key, "v").unwrap();
    }
    // Every write reached all three of its replicas (the third answers within
    // milliseconds; anti-entropy runs every second as well).
    std::thread::sleep(Duration::from_secs(2));
    nodes[3].take().unwrap().kill9();
    let held_by_4: Vec<String> = {
        let held = inspect(&dirs[3]);
        keys.iter()
            .filter(|k| held.contains_key(*k))
            .cloned()
            .collect()
    };
    assert!(
        held_by_4.len() >= 10,
        "node 4 holds only {} of the keys",
        held_by_4.len()
    );
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 4);
    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let left = admin(&["leave", "--addr", &addr1, "--node", "4"]);
    assert!(left.contains("ring version 1 -> 2"), "{left}");
    let three: Vec<&ShoalProcess> = nodes.iter().take(3).map(|n| n.as_ref().unwrap()).collect();
    wait_for_handoffs(&three, "leave");

    // Three members, n=3: each of them owns every key now.
    let deleted = &held_by_4[..held_by_4.len() / 2];
    for key in deleted {
        let removed: i64 = c1.del(key).unwrap();
        assert_eq!(removed, 1, "{key}");
    }
    wait_until_forgotten(&three, deleted.len() as u64);
    drop(three);

    // A join checks that the node answers: while it is down the join is
    // refused and nothing changes; started again (outside the ring, on its old
    // directory), it is joined back.
    let join_args = [
        "join".to_string(),
        "--addr".to_string(),
        addr1.clone(),
        "--node".to_string(),
        format!("4@127.0.0.1:{}", ports[3]),
    ];
    let join_args: Vec<&str> = join_args.iter().map(String::as_str).collect();
    let refused = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster")
        .args(&join_args)
        .output()
        .expect("run shoal cluster");
    assert!(
        !refused.status.success(),
        "a join of a down node was accepted"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    nodes[3] = Some(start_node_with(4, &ports, &dirs[3], &extra));
    let joined = admin(&join_args);
    assert!(joined.contains("ring version 2 -> 3"), "{joined}");
    let all: Vec<&ShoalProcess> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    wait_for_handoffs(&all, "join");
    // A few anti-entropy rounds: a copy node 4 had kept would spread now.
    std::thread::sleep(Duration::from_secs(4));
    for (i, node) in all.iter().enumerate() {
        let mut c = node.client();
        for key in &keys {
            let value: Option<String> = c.get(key).unwrap();
            if deleted.contains(key) {
                assert_eq!(value, None, "{key} came back through node {}", i + 1);
            } else {
                assert_eq!(value.as_deref(), Some("v"), "{key} through node {}", i + 1);
            }
        }
    }
    drop(all);
    let held_by_node = stop_once_markers_go(&mut nodes, &ports, &dirs, &extra, deleted);
    for (i, held) in held_by_node.iter().enumerate() {
        for key in deleted {
            assert!(!held.contains_key(key), "node {} still holds {key}", i + 1);
        }
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
fn stop_once_markers_go(
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
fn inspect_live_keys(dir: &Path) -> std::collections::BTreeSet<(u64, String)> {
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
/// the member at `addr`; its reply.
fn pin_namespace_1_to_nodes_2_and_3(addr: &str) -> String {
    admin(&[
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
    ])
}

/// A tenant's namespace pinned to two of three nodes (`shoal cluster pin`): its
/// keys written before the pin move there, new ones go only there, the third
/// node drops its copies, and the namespace has its own quorums (with n=2 w=2 it
/// refuses writes once one of its nodes is down, while namespace 0 on all three
/// nodes stays writable, and reads with r=1 go on).
#[test]
fn a_pinned_namespace_lives_on_its_own_nodes() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-pin");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let node = |nodes: &[Option<ShoalProcess>], i: usize| -> redis::Connection {
        nodes[i].as_ref().unwrap().client()
    };
    let mut c1 = node(&nodes, 0);
    wait_for_a_write(&mut c1, "x");
    let mut tenant1 = node(&nodes, 0);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut tenant1).unwrap();
    for i in 0..40 {
        let _: String = tenant1.set(format!("before:{i}"), i).unwrap();
        let _: String = c1.set(format!("shared:{i}"), i).unwrap();
    }

    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let pinned = pin_namespace_1_to_nodes_2_and_3(&addr1);
    assert!(pinned.contains("ring version 1 -> 2"), "{pinned}");
    let all: Vec<&ShoalProcess> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    wait_for_handoffs(&all, "pin");
    let text = status(all[0]);
    assert!(
        text.contains("namespace 1 pinned to nodes {2, 3}: n=2 r=1 w=2"),
        "{text}"
    );
    for i in 0..40 {
        let _: String = tenant1.set(format!("after:{i}"), i).unwrap();
    }
    // Through every node, namespace 1 reads back whole.
    for (i, reader) in [0usize, 1, 2].into_iter().enumerate() {
        let mut conn = node(&nodes, reader);
        let _: () = redis::cmd("SELECT").arg(1).query(&mut conn).unwrap();
        for k in 0..40 {
            for prefix in ["before", "after"] {
                let got: Option<i64> = conn.get(format!("{prefix}:{k}")).unwrap();
                assert_eq!(got, Some(k), "{prefix}:{k} through node {}", i + 1);
            }
        }
        let size: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        assert_eq!(size, 80, "DBSIZE of namespace 1 through node {}", i + 1);
    }
    // Node 1 drops its copies of namespace 1 once the pin's handoffs are done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // 41 namespace-0 keys (shared:* and warm) on each node, and on nodes 2
        // and 3 the 80 of namespace 1 as well.
        let line = digest_line(all[0]);
        if line.ends_with("over 41 keys") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 still holds namespace 1's keys: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in [1, 2] {
        let line = digest_line(all[i]);
        assert!(line.ends_with("over 121 keys"), "node {}: {line}", i + 1);
    }

    // Namespace 1 needs both its nodes for a write (w=2), one for a read (r=1);
    // namespace 0 still has two of its three.
    drop(all);
    nodes[2].take().unwrap().kill9();
    // Once node 1 sees node 3 down it coordinates through node 2 (before that, a
    // write proxied to node 3 has an unknown outcome).
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 3);
    let refused = tenant1.set::<_, _, String>("during", "x").unwrap_err();
    assert!(
        refused.to_string().contains("NOQUORUM") || refused.to_string().contains("CLUSTERDOWN"),
        "{refused}"
    );
    let got: Option<i64> = tenant1.get("before:7").unwrap();
    assert_eq!(got, Some(7));
    let _: String = c1.set("shared:during", "y").unwrap();

    drop((c1, tenant1));
    for (i, slot) in nodes.iter_mut().enumerate() {
        if let Some(process) = slot.take() {
            process.kill9();
            eprintln!("node {} stopped", i + 1);
        }
    }
    let node1 = inspect_live_keys(&dirs[0]);
    assert!(
        node1.iter().all(|(ns, _)| *ns == 0),
        "node 1 still holds namespace 1 keys: {:?}",
        node1
            .iter()
            .filter(|(ns, _)| *ns == 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    for dir in &dirs[1..] {
        let held = inspect_live_keys(dir);
        for k in 0..40 {
            for prefix in ["before", "after"] {
                assert!(
                    held.contains(&(1, format!("{prefix}:{k}"))),
                    "{} lacks {prefix}:{k}",
                    dir.display()
                );
            }
        }
    }
}

/// `shoal cluster unpin`, run twice, sends a pinned namespace back to the
/// default ring: the first run hands its keys to the default ring's owners (with
/// three nodes and n=3, all of them), the second drops the pin, and node 1, which
/// had dropped its copies under the pin, holds the namespace whole again.
#[test]
fn an_unpinned_namespace_goes_back_to_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-unpin");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let pinned = pin_namespace_1_to_nodes_2_and_3(&addr1);
    assert!(pinned.contains("ring version 1 -> 2"), "{pinned}");
    let all: Vec<&ShoalProcess> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    wait_for_handoffs(&all, "pin");
    let mut tenant1 = all[0].client();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut tenant1).unwrap();
    for i in 0..40 {
        let _: String = tenant1.set(format!("pinned:{i}"), i).unwrap();
    }
    // Node 1 holds only "warm".
    let deadline = Instant::now() + Duration::from_secs(30);
    while !digest_line(all[0]).ends_with("over 1 keys") {
        assert!(Instant::now() < deadline, "node 1 kept namespace 1's keys");
        std::thread::sleep(Duration::from_millis(200));
    }

    let unpin = ["unpin", "--addr", &addr1, "--namespace", "1"];
    let first = admin(&unpin);
    assert!(first.contains("ring version 2 -> 3"), "{first}");
    assert!(first.contains("placed like the default ring"), "{first}");
    for i in 0..40 {
        let _: String = tenant1.set(format!("between:{i}"), i).unwrap();
    }
    wait_for_handoffs(&all, "unpin");
    let text = status(all[2]);
    assert!(
        text.contains("namespace 1 pinned to nodes {1, 2, 3}: n=3 r=2 w=2 (being unpinned"),
        "{text}"
    );
    let second = admin(&unpin);
    assert!(second.contains("ring version 3 -> 4"), "{second}");
    assert!(second.contains("0 replica(s) move"), "{second}");
    assert!(second.contains("no longer pinned"), "{second}");
    for i in 0..40 {
        let _: String = tenant1.set(format!("after:{i}"), i).unwrap();
    }
    let text = status(all[1]);
    assert!(!text.contains("pinned to nodes"), "{text}");
    // Anti-entropy and the handoff brought every namespace-1 key to node 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !digest_line(all[0]).ends_with("over 121 keys") {
        assert!(
            Instant::now() < deadline,
            "node 1 does not hold namespace 1 again: {}",
            digest_line(all[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(all);
    drop((c1, tenant1));
    for slot in nodes.iter_mut() {
        slot.take().unwrap().kill9();
    }
    for dir in &dirs {
        let held = inspect_live_keys(dir);
        for k in 0..40 {
            for prefix in ["pinned", "between", "after"] {
                assert!(
                    held.contains(&(1, format!("{prefix}:{k}"))),
                    "{} lacks {prefix}:{k}",
                    dir.display()
                );
            }
        }
    }
}

/// Flip one byte in the middle of the written part of `dir`'s first segment log,
/// and remove its key-hint files so recovery scans the log (and finds it).
fn corrupt_first_segment(dir: &Path) {
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

/// A cluster node whose synced data is damaged sets its segments aside and is
/// restored by its replicas instead of refusing to start (and with
/// `--rebuild-damaged false` it refuses, as a single node does).
#[test]
fn a_node_with_a_damaged_segment_is_restored_from_its_replicas() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-rebuild");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let keys: Vec<String> = (0..50).map(|i| format!("kept:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: String = c1.set(key, i).unwrap();
    }
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    nodes[2].take().unwrap().kill9();
    corrupt_first_segment(&dirs[2]);

    let members = members(&ports);
    let refused = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["server", "--port", &ports[2].to_string(), "--data-dir"])
        .arg(&dirs[2])
        .args([
            "--node-id",
            "3",
            "--members",
            &members,
            "--cluster-secret",
            SECRET,
        ])
        .args(["--rebuild-damaged", "false"])
        .output()
        .expect("run shoal");
    assert!(!refused.status.success(), "started on damaged data");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("corrupt"), "{stderr}");

    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let set_aside: Vec<String> = std::fs::read_dir(&dirs[2])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("damaged-"))
        .collect();
    assert!(
        set_aside.iter().any(|n| n.ends_with("seg-00000001.log")),
        "the damaged log is kept aside: {set_aside:?}"
    );
    wait_for_equal_digests(&nodes, Duration::from_secs(60));
    let node3 = nodes[2].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(node3).contains("restoring from replicas") {
        assert!(
            Instant::now() < deadline,
            "still restoring:\n{}",
            status(node3)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_line = status(node3).lines().next().unwrap_or_default().to_string();
    assert!(
        first_line.contains("dots minted as actor"),
        "a fresh dot actor for the new life: {first_line}"
    );
    let mut c3 = node3.client();
    for (i, key) in keys.iter().enumerate() {
        let got: Option<usize> = c3.get(key).unwrap();
        assert_eq!(got, Some(i), "{key} through node 3");
    }
    let _: String = c3.set("after", "rebuild").unwrap();
    drop((c1, c3));
    for slot in nodes.iter_mut() {
        slot.take().unwrap().kill9();
    }
    let held = inspect(&dirs[2]);
    for key in &keys {
        assert!(held.contains_key(key), "node 3's directory lacks {key}");
    }
}

/// `shoal cluster join` of a node started with another secret is refused and
/// changes nothing (it used to be accepted, its handoffs never finished, and
/// every later change was refused); once the node runs with the cluster's
/// secret, the same join goes through and its handoffs finish.
#[test]
fn a_join_of_a_node_without_the_secret_is_refused_and_changes_nothing() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-join-check");
    let ports = port_pairs(4);
    let founders = &ports[..3];
    let dirs = node_dirs(&root, 4);
    let nodes: Vec<ShoalProcess> = (1..=3)
        .map(|i| start_node(i, founders, &dirs[i - 1]))
        .collect();
    let seeds = members(founders);
    // Without the secret no seed gives it the map, so it never opens its Redis
    // port: wait for the peer port (Redis port + 10000) instead.
    let start_4 = |secret: &str, ready_port: u16| {
        let args = [
            "--node-id",
            "4",
            "--members",
            &seeds,
            "--cluster-secret",
            secret,
        ];
        ShoalProcess::start_waiting_for(ports[3], ready_port, &dirs[3], &args)
    };
    let mut c1 = nodes[0].client();
    wait_for_a_write(&mut c1, "up");
    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let node_arg = format!("4@127.0.0.1:{}", ports[3]);
    let join = [
        "join",
        "--addr",
        addr1.as_str(),
        "--node",
        node_arg.as_str(),
    ];
    let impostor = start_4("not-the-cluster-secret", ports[3] + 10000);
    let refused = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("cluster")
        .args(join)
        .output()
        .expect("run shoal cluster");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the join was accepted");
    assert!(
        stderr.contains("cannot take part") && stderr.contains("nothing changed"),
        "{stderr}"
    );
    let after = status(&nodes[0]);
    assert!(
        after.contains("ring version 1,"),
        "the ring changed:\n{after}"
    );
    drop(impostor);
    let node4 = start_4(SECRET, ports[3]);
    let joined = admin(&join);
    assert!(joined.contains("ring version 1 -> 2"), "{joined}");
    let all: Vec<&ShoalProcess> = nodes.iter().chain([&node4]).collect();
    wait_for_handoffs(&all, "join");
    // `wait_for_a_write` wrote "up" under the key "warm".
    let value: Option<String> = node4.client().get("warm").unwrap();
    assert_eq!(
        value.as_deref(),
        Some("up"),
        "node 4 serves the write made before it joined"
    );
    drop(all);
    drop(node4);
    drop(nodes);
}

/// A node joins, then dies (kill -9) before it takes its partitions: its
/// handoffs never finish and every other change is refused. `shoal cluster
/// abort` brings the ring before the join back as a new version; the nodes the
/// join took partitions from pull back what was written meanwhile, every write
/// acknowledged before or during the failed join reads back, and the ring takes
/// changes again.
#[test]
fn an_operator_aborts_a_join_whose_node_died() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-abort");
    let (ports, nodes, node4) = founders_and_a_newcomer(&root);
    let mut c1 = nodes[0].client();
    wait_for_a_write(&mut c1, "up");
    // Enough data that node 4 cannot have pulled its share before it dies.
    let value = "v".repeat(2048);
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..4000 {
        let key = format!("before:{i}");
        let _: String = c1.set(&key, &value).expect("write before the join");
        acknowledged.insert(key, value.clone());
    }
    let addr1 = format!("127.0.0.1:{}", ports[0]);
    let joined = admin(&[
        "join",
        "--addr",
        &addr1,
        "--node",
        &format!("4@127.0.0.1:{}", ports[3]),
    ]);
    drop(node4); // kill -9, right after the join
    assert!(joined.contains("ring version 1 -> 2"), "{joined}");
    let pending = handoffs_in_flight(&nodes[0]);
    assert!(pending > 0, "node 4 pulled everything before it died");
    // Writes go on, as far as quorums allow without node 4.
    for i in 0..300 {
        let key = format!("during:{i}");
        if c1.set::<_, _, String>(&key, &value).is_ok() {
            acknowledged.insert(key, value.clone());
        }
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "leave", "--addr", &addr1, "--node", "3"])
        .output()
        .expect("run shoal cluster");
    assert!(
        !refused.status.success(),
        "a change went through mid-handoff"
    );
    let aborted = admin(&["abort", "--addr", &addr1]);
    eprintln!("abort: {aborted}");
    assert!(aborted.contains("ring version 2 -> 3"), "{aborted}");
    let live: Vec<&ShoalProcess> = nodes.iter().collect();
    wait_for_handoffs(&live, "abort");
    let after = status(&nodes[1]);
    assert!(after.contains("ring version 3,"), "{after}");
    for node in &nodes {
        let mut conn = node.client();
        for (key, value) in &acknowledged {
            let read: Option<String> = conn.get(key).expect("read");
            assert_eq!(
                read.as_deref(),
                Some(value.as_str()),
                "{key} via port {}",
                node.port
            );
        }
    }
    // Nothing is in flight any more: a second abort is refused, and says why.
    let again = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["cluster", "abort", "--addr", &addr1])
        .output()
        .expect("run shoal cluster");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("no change to abort"),
        "{stderr}"
    );
    drop(nodes);
}
