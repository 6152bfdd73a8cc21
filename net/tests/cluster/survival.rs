//! Nodes killed, restarted on empty or damaged disks, peers without the secret,
//! fallbacks holding hints, and a namespace with its own quorums.

use crate::common::cluster::members;
use crate::common::cluster::port_pair;
use crate::common::cluster::port_pairs;
use crate::common::cluster::SECRET;
use crate::common::temp_dir;
use crate::common::ShoalProcess;
use crate::helpers::{
    cluster_slot, cluster_slots, corrupt_first_segment, hints_pending, inspect, node_dirs,
    start_node, start_nodes, status, wait_for_a_write, wait_for_equal_digests, wait_until_restored,
    wait_until_seen_down,
};
use redis::Commands;
use shoal_engine::slot::key_slot;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

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
    // Read-modify-writes other than counters are refused on a cluster,
    // plainly, and write nothing.
    let incr = redis::cmd("APPEND")
        .arg("x")
        .arg("y")
        .query::<i64>(&mut c1)
        .unwrap_err();
    assert!(
        incr.to_string().contains("not supported on a cluster"),
        "{incr}"
    );
    assert_eq!(c1.get::<_, String>("warm").unwrap(), "x");
    let exists: i64 = c1.exists("x").unwrap();
    assert_eq!(exists, 0, "the refused APPEND created nothing");
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
    wait_until_restored(node3);
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
