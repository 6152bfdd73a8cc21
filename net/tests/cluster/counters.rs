//! Counters on a cluster: INCR, DECR, INCRBY, DECRBY and HINCRBY coordinated
//! on different nodes add up, also when the coordinators could not see each
//! other (`shoal_engine::counter`), and refuse what Redis refuses.

use crate::common::cluster::port_pairs;
use crate::common::{error_of, query, temp_dir};
use crate::helpers::{
    cluster_slot, node_dirs, start_node_with, start_nodes, wait_for_a_write,
    wait_for_equal_digests, wait_until_connected,
};
use std::time::{Duration, Instant};

/// A quorum of one in namespace 1, so each side of a split takes writes.
const ONE_REPLICA: [&str; 2] = ["--namespace-quorum", "1:1:1"];

/// `INCRBY key by` in namespace 1 through `c`, retried (for 20 s) while
/// the node still dials peers that are down or just started.
fn incrby_once_taken(c: &mut redis::Connection, key: &str, by: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match redis::cmd("INCRBY").arg(key).arg(by).query::<i64>(c) {
            Ok(total) => return total,
            // Refusals here are TRYAGAIN or CLUSTERDOWN: nothing was added.
            Err(e) if Instant::now() < deadline => {
                eprintln!("INCRBY {key} {by}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("INCRBY {key} {by}: {e}"),
        }
    }
}

fn select_1(c: &mut redis::Connection) {
    let _: () = query(c, &["SELECT", "1"]);
}

#[test]
fn increments_on_both_sides_of_a_split_add_up() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-counter-split");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &ONE_REPLICA);
    wait_for_a_write(&mut nodes[0].as_ref().unwrap().client(), "x");

    // Side A: node 1 alone counts 5.
    nodes[1].take().unwrap().kill9();
    nodes[2].take().unwrap().kill9();
    let mut c1 = nodes[0].as_ref().unwrap().client();
    select_1(&mut c1);
    assert_eq!(incrby_once_taken(&mut c1, "hits", 5), 5);
    assert_eq!(query::<i64>(&mut c1, &["HINCRBY", "page", "views", "3"]), 3);

    // Side B: nodes 2 and 3, which never saw it, count 7 more.
    nodes[0].take().unwrap().kill9();
    for i in [1, 2] {
        nodes[i] = Some(start_node_with(i + 1, &ports, &dirs[i], &ONE_REPLICA));
    }
    let mut c2 = nodes[1].as_ref().unwrap().client();
    select_1(&mut c2);
    assert_eq!(
        incrby_once_taken(&mut c2, "hits", 7),
        7,
        "side B sees only its own increments"
    );
    assert_eq!(query::<i64>(&mut c2, &["HINCRBY", "page", "views", "4"]), 4);

    // Healed: both sides' increments, through every node.
    nodes[0] = Some(start_node_with(1, &ports, &dirs[0], &ONE_REPLICA));
    wait_until_connected(&nodes);
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        select_1(&mut c);
        assert_eq!(
            query::<String>(&mut c, &["GET", "hits"]),
            "12",
            "through node {}: a side's increments were lost",
            node.port
        );
        assert_eq!(
            query::<String>(&mut c, &["HGET", "page", "views"]),
            "7",
            "through node {}: a side's field increments were lost",
            node.port
        );
    }
    let mut c3 = nodes[2].as_ref().unwrap().client();
    select_1(&mut c3);
    assert_eq!(query::<i64>(&mut c3, &["DECRBY", "hits", "2"]), 10);
}

#[test]
fn concurrent_increments_through_every_node_add_up() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-counter-concurrent");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    wait_for_a_write(&mut nodes[0].as_ref().unwrap().client(), "x");
    let per_client = 40;
    let handles: Vec<_> = nodes
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, node)| {
            let mut c = node.client();
            std::thread::spawn(move || {
                let by = i as i64 + 1;
                let mut last = 0;
                for _ in 0..per_client {
                    let total: i64 = query(&mut c, &["INCRBY", "shared", &by.to_string()]);
                    assert!(
                        total > last,
                        "a client's totals only grow: {last} then {total}"
                    );
                    last = total;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client failed");
    }
    let expected = per_client * (1 + 2 + 3);
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        assert_eq!(
            query::<i64>(&mut c, &["GET", "shared"]),
            expected,
            "node {}",
            node.port
        );
    }

    // Redis's refusals, and nothing written by them.
    let mut c = nodes[1].as_ref().unwrap().client();
    let _: () = query(&mut c, &["SET", "text", "abc"]);
    let e = error_of(&mut c, &["INCR", "text"]);
    assert!(e.contains("value is not an integer or out of range"), "{e}");
    let _: () = query(&mut c, &["SET", "big", &i64::MAX.to_string()]);
    let e = error_of(&mut c, &["INCR", "big"]);
    assert!(e.contains("increment or decrement would overflow"), "{e}");
    assert_eq!(
        query::<String>(&mut c, &["GET", "big"]),
        i64::MAX.to_string()
    );
    // A SET after increments replaces the count, and counting starts again.
    let _: () = query(&mut c, &["SET", "shared", "100"]);
    assert_eq!(query::<i64>(&mut c, &["INCR", "shared"]), 101);
    // INCRBYFLOAT counts per node too; INCR refuses a total that is not whole.
    let f: String = query(
        &mut nodes[2].as_ref().unwrap().client(),
        &["INCRBYFLOAT", "shared", "1.5"],
    );
    assert_eq!(f, "102.5");
    let e = error_of(&mut c, &["INCR", "shared"]);
    assert!(e.contains("value is not an integer or out of range"), "{e}");
    let f: String = query(&mut c, &["INCRBYFLOAT", "shared", "0.5"]);
    assert_eq!(f, "103");
    assert_eq!(query::<i64>(&mut c, &["INCR", "shared"]), 104);
}

/// Tallies of one client's INCRBY 1 calls.
#[derive(Default)]
struct Tally {
    acknowledged: i64,
    /// Errors: not made, or of unknown outcome (a node killed mid-call).
    failed: i64,
}

/// `INCRBY kills 1` through `url` until `stop`, reconnecting after errors
/// (its node may be down for a while).
fn count_until(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Tally {
    use std::sync::atomic::Ordering;
    let client = redis::Client::open(url).expect("client");
    let mut tally = Tally::default();
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            conn = client.get_connection().ok();
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match redis::cmd("INCRBY").arg("kills").arg(1).query::<i64>(c) {
            Ok(_) => tally.acknowledged += 1,
            Err(e) => {
                tally.failed += 1;
                if e.is_io_error() || e.is_connection_dropped() {
                    conn = None;
                }
            }
        }
    }
    tally
}

#[test]
fn acknowledged_increments_survive_a_kill_9_of_a_coordinator() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _slot = cluster_slot();
    let root = temp_dir("cluster-counter-kill");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    wait_for_a_write(&mut nodes[0].as_ref().unwrap().client(), "x");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = nodes
        .iter()
        .flatten()
        .flat_map(|node| [node.url(), node.url()])
        .map(|url| {
            let stop = stop.clone();
            std::thread::spawn(move || count_until(url, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    nodes[1].take().unwrap().kill9();
    std::thread::sleep(Duration::from_millis(1500));
    nodes[1] = Some(start_node_with(2, &ports, &dirs[1], &[]));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let acknowledged: i64 = tallies.iter().map(|t| t.acknowledged).sum();
    let attempted = acknowledged + tallies.iter().map(|t| t.failed).sum::<i64>();
    assert!(acknowledged > 0, "no increment was acknowledged");
    wait_until_connected(&nodes);
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    for node in nodes.iter().flatten() {
        let total: i64 = query(&mut node.client(), &["GET", "kills"]);
        assert!(
            (acknowledged..=attempted).contains(&total),
            "through node {}: total {total}, but {acknowledged} increments were acknowledged and {attempted} attempted",
            node.port
        );
    }
    eprintln!("kill -9 mid-count: {acknowledged} acknowledged, {attempted} attempted");
}
