//! Expiry on a cluster: a deadline set through one node holds through every
//! node; after it the value reads as absent everywhere and the keys'
//! coordinators delete it. EXPIRE and its kin, PERSIST, GETEX and SET
//! KEEPTTL change a string's deadline through any node; a counter keeps
//! counting across them (the rate limiter's INCR + EXPIRE); a collection's
//! deadline is refused plainly.

use crate::common::cluster::port_pairs;
use crate::common::{error_of, query, temp_dir};
use crate::helpers::{cluster_slot, node_dirs, start_nodes, status_count, wait_for_a_write};
use std::collections::BTreeMap;
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

#[test]
fn deadlines_change_through_any_node_and_counters_keep_counting() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-expire");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    let nodes: Vec<_> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    let (mut c1, mut c2, mut c3) = (nodes[0].client(), nodes[1].client(), nodes[2].client());
    wait_for_a_write(&mut c1, "x");

    // EXPIRE through node 2 of a value written through node 1; TTL through 3.
    let _: () = query(&mut c1, &["SET", "session", "ada"]);
    assert_eq!(query::<i64>(&mut c2, &["EXPIRE", "session", "100"]), 1);
    assert!((90..=100).contains(&query::<i64>(&mut c3, &["TTL", "session"])));
    // NX refuses a key that has one; GT refuses an earlier one; XX and LT take.
    assert_eq!(
        query::<i64>(&mut c3, &["EXPIRE", "session", "500", "NX"]),
        0
    );
    assert_eq!(query::<i64>(&mut c3, &["EXPIRE", "session", "50", "GT"]), 0);
    assert_eq!(query::<i64>(&mut c3, &["EXPIRE", "session", "50", "LT"]), 1);
    assert!(query::<i64>(&mut c1, &["TTL", "session"]) <= 50);
    // SET KEEPTTL keeps it; PERSIST removes it; GETEX sets it again.
    let _: () = query(&mut c2, &["SET", "session", "bob", "KEEPTTL"]);
    assert!(query::<i64>(&mut c1, &["TTL", "session"]) > 0);
    assert_eq!(query::<String>(&mut c3, &["GET", "session"]), "bob");
    assert_eq!(query::<i64>(&mut c1, &["PERSIST", "session"]), 1);
    assert_eq!(query::<i64>(&mut c2, &["TTL", "session"]), -1);
    let got: String = query(&mut c3, &["GETEX", "session", "PX", "300"]);
    assert_eq!(got, "bob");
    std::thread::sleep(Duration::from_millis(400));
    for c in [&mut c1, &mut c2, &mut c3] {
        assert_eq!(query::<Option<String>>(c, &["GET", "session"]), None);
    }
    // Absent keys answer as Redis does, and nothing is written.
    assert_eq!(query::<i64>(&mut c2, &["EXPIRE", "nobody", "10"]), 0);
    assert_eq!(
        query::<Option<String>>(&mut c2, &["GETEX", "nobody", "EX", "1"]),
        None
    );
    assert_eq!(query::<i64>(&mut c1, &["EXISTS", "nobody"]), 0);

    // The rate limiter: INCR, and EXPIRE on the first hit; the count goes on
    // through other nodes and ends with the window.
    assert_eq!(query::<i64>(&mut c1, &["INCR", "rate:ada"]), 1);
    assert_eq!(query::<i64>(&mut c1, &["PEXPIRE", "rate:ada", "800"]), 1);
    assert_eq!(query::<i64>(&mut c2, &["INCR", "rate:ada"]), 2);
    assert_eq!(query::<i64>(&mut c3, &["INCRBY", "rate:ada", "3"]), 5);
    let ttl: i64 = query(&mut c2, &["PTTL", "rate:ada"]);
    assert!(
        (1..=800).contains(&ttl),
        "the window kept its deadline: {ttl}"
    );
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(query::<Option<String>>(&mut c3, &["GET", "rate:ada"]), None);
    assert_eq!(
        query::<i64>(&mut c2, &["INCR", "rate:ada"]),
        1,
        "a new window"
    );

    // A collection's deadline is refused plainly; GETEX of one is WRONGTYPE.
    let _: i64 = query(&mut c1, &["HSET", "profile", "name", "ada"]);
    let e = error_of(&mut c2, &["EXPIRE", "profile", "10"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    let e = error_of(&mut c2, &["GETEX", "profile", "EX", "10"]);
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    let fields: BTreeMap<String, String> = query(&mut c3, &["HGETALL", "profile"]);
    assert_eq!(fields.len(), 1, "the refused EXPIRE changed nothing");
}
