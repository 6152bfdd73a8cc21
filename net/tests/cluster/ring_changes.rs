//! Joins and leaves under writes, a join of a node that cannot authenticate, and
//! an operator's abort of a join whose node died.

use crate::common::cluster::members;
use crate::common::cluster::port_pairs;
use crate::common::cluster::SECRET;
use crate::common::temp_dir;
use crate::common::ShoalProcess;
use crate::helpers::{
    admin, cluster_slot, digest_line, founders_and_a_newcomer, handoffs_in_flight, node_dirs,
    start_node, status, wait_for_a_write, wait_for_handoffs,
};
use redis::Commands;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

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
