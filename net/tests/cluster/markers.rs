//! Delete markers: collected only once every replica holds them, and never
//! undone by a node that rejoins with its old directory.

use crate::common::cluster::port_pairs;
use crate::common::temp_dir;
use crate::common::ShoalProcess;
use crate::helpers::{
    admin, cluster_slot, forgotten_here, inspect, node_dirs, set_once_connected, start_node_with,
    start_nodes, stop_once_markers_go, wait_for_a_write, wait_for_equal_digests, wait_for_handoffs,
    wait_until_forgotten, wait_until_seen_down,
};
use redis::Commands;
use std::process::Command;
use std::time::Duration;

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
        set_once_connected(&mut c1, key, "v");
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
        set_once_connected(&mut c1, key, "v");
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
