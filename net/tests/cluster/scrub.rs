//! A byte gone bad under a running member: its scrubber finds it, the node
//! sets the damaged key aside, restores it from its replicas and keeps
//! serving, all without a restart (`net/src/scrub.rs`, `cluster/damage.rs`).

use crate::common::cluster::port_pairs;
use crate::common::{flip_inside, persistence_count, temp_dir};
use crate::helpers::{
    cluster_slot, node_dirs, start_node, start_nodes, status, wait_for_a_write,
    wait_for_equal_digests, wait_until_restored,
};
use redis::Commands;
use std::time::{Duration, Instant};

#[test]
fn a_byte_gone_bad_under_a_running_node_is_found_and_restored() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-scrub");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &["--scrub-pass-interval-ms", "500"]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let marker = "VICTIM-the-value-a-flipped-byte-will-hit-VICTIM";
    let _: String = c1.set("victim", marker).unwrap();
    for i in 0..50 {
        let _: String = c1.set(format!("kept:{i}"), i).unwrap();
    }
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    let node3 = nodes[2].as_ref().unwrap();
    let mut c3 = node3.client();
    assert_eq!(persistence_count(&mut c3, "shoal_damaged_records_found"), 0);

    flip_inside(&dirs[2], marker.as_bytes());
    wait_until_counted(
        &mut c3,
        "shoal_damaged_records_found",
        "the scrubber never found the damage",
    );
    assert!(persistence_count(&mut c3, "shoal_scrub_records") >= 51);
    assert_eq!(
        persistence_count(&mut c3, "shoal_damaged_records_replaced"),
        1
    );
    // Restored without a restart: the replicas agree again, node 3 stops
    // restoring, and it still mints as itself (nothing else was lost).
    wait_for_equal_digests(&nodes, Duration::from_secs(60));
    wait_until_restored(node3);
    let first_line = status(node3).lines().next().unwrap_or_default().to_string();
    assert!(!first_line.contains("dots minted as actor"), "{first_line}");
    let got: Option<String> = c3.get("victim").unwrap();
    assert_eq!(got.as_deref(), Some(marker));
    for i in 0..50 {
        let got: Option<u32> = c3.get(format!("kept:{i}")).unwrap();
        assert_eq!(got, Some(i), "kept:{i} through node 3");
    }
    let _: String = c3.set("victim", "written again").unwrap();
    let got: Option<String> = c1.get("victim").unwrap();
    assert_eq!(got.as_deref(), Some("written again"));

    // The segment that held the damage is sealed and rewritten, so a restart
    // finds nothing damaged: no segment set aside, no fresh actor.
    wait_until_counted(
        &mut c3,
        "shoal_compactions",
        "the damaged segment was never rewritten",
    );
    drop(c3);
    let mut nodes = nodes;
    nodes[2].take().unwrap().kill9();
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let set_aside: Vec<String> = (std::fs::read_dir(&dirs[2]).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("damaged-"))
        .collect();
    assert!(set_aside.is_empty(), "set aside at restart: {set_aside:?}");
    let node3 = nodes[2].as_ref().unwrap();
    let first_line = status(node3).lines().next().unwrap_or_default().to_string();
    assert!(!first_line.contains("dots minted as actor"), "{first_line}");
    let got: Option<String> = node3.client().get("victim").unwrap();
    assert_eq!(got.as_deref(), Some("written again"));
}

/// Wait (up to 30 s) until INFO persistence's `field` is above 0.
fn wait_until_counted(conn: &mut redis::Connection, field: &str, never: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while persistence_count(conn, field) == 0 {
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
