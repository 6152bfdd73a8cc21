//! KEYS across members from outside: complete while every partition has a
//! replica answering, refused PARTIAL (never silently short) while one does
//! not, complete again once it is back.

use crate::common::cluster::port_pairs;
use crate::common::{error_of, query, temp_dir};
use crate::helpers::{cluster_slot, node_dirs, set_once_connected, start_node_with, start_nodes};
use std::time::{Duration, Instant};

#[test]
fn keys_is_refused_partial_while_a_partition_has_no_replica_up() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-keys-partial");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    // One copy of each key: a node down takes its partitions' only replica.
    let one_copy = ["--replicas", "1"];
    let mut nodes = start_nodes(&ports, &dirs, &one_copy);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    for i in 0..60 {
        set_once_connected(&mut c1, &format!("k{i}"), "v");
    }
    let mut all: Vec<String> = query(&mut c1, &["KEYS", "k*"]);
    all.sort();
    assert_eq!(all.len(), 60, "every key listed: {all:?}");

    nodes[2].take().expect("node 3").kill9();
    let refused = error_of(&mut c1, &["KEYS", "k*"]);
    assert!(
        refused.contains("PARTIAL") && refused.contains("had no reachable replica"),
        "KEYS with node 3's partitions unreachable answered: {refused}"
    );

    nodes[2] = Some(start_node_with(3, &ports, &dirs[2], &one_copy));
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("KEYS").arg("k*").query(&mut c1);
        match reply {
            Ok(keys) => break keys,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for node 3: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("KEYS never complete again: {e}"),
        }
    };
    assert_eq!(listed.len(), 60, "node 3's keys are back: {listed:?}");
}
