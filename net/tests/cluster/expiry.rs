//! Expiry on a cluster: a deadline set through one node holds through every
//! node; after it the value reads as absent everywhere and the keys'
//! coordinators delete it; read-modify-writes of a deadline are refused.

use crate::common::cluster::port_pairs;
use crate::common::{error_of, query, temp_dir};
use crate::helpers::{cluster_slot, node_dirs, start_nodes, status_count, wait_for_a_write};
use std::time::{Duration, Instant};

#[test]
fn a_deadline_set_through_one_node_holds_through_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-expiry");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    let nodes: Vec<_> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    let mut c1 = nodes[0].client();
    wait_for_a_write(&mut c1, "x");
    let keys: Vec<String> = (0..20).map(|i| format!("exp:{i}")).collect();
    for key in &keys {
        let _: () = query(&mut c1, &["SET", key, "v", "PX", "1500"]);
    }
    let _: () = query(&mut c1, &["SETEX", "keep", "1000", "v"]);
    let mut c2 = nodes[1].client();
    let ttl: i64 = query(&mut c2, &["PTTL", "exp:0"]);
    assert!(
        (1..=1500).contains(&ttl),
        "PTTL through another node: {ttl}"
    );
    let e = error_of(&mut c2, &["EXPIRE", "keep", "10"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    std::thread::sleep(Duration::from_millis(1600));
    for node in &nodes {
        let mut c = node.client();
        let left: Vec<String> = query(&mut c, &["KEYS", "exp:*"]);
        assert!(left.is_empty(), "node {}: {left:?}", node.port);
        let value: Option<String> = query(&mut c, &["GET", "exp:3"]);
        assert_eq!(value, None);
        assert!(query::<i64>(&mut c, &["TTL", "keep"]) > 990);
    }
    // Each key's coordinator deletes it (anti-entropy rounds, every second).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let expired: u64 = nodes
            .iter()
            .map(|n| status_count(n, "keys expired here "))
            .sum();
        if expired >= keys.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {expired} deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
}
