//! Pinned namespaces: living on their own nodes, and going back to every node
//! when unpinned.

use crate::common::cluster::port_pairs;
use crate::common::temp_dir;
use crate::common::ShoalProcess;
use crate::helpers::{
    admin, cluster_slot, digest_line, handoffs_in_flight, inspect_live_keys, node_dirs,
    pin_namespace_1_to_nodes_2_and_3, start_node, start_nodes, status, wait_for_a_write,
    wait_for_handoffs, wait_until_seen_down,
};
use redis::Commands;
use std::time::Duration;
use std::time::Instant;

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

/// A pin's handoff does not count a copy that cannot be read back. Namespace 1's
/// keys are written with node 3 down (nodes 1 and 2 take them); a byte of the
/// last one's record flips in node 2's segment while node 2 runs; node 1 goes
/// down and namespace 1 is pinned to nodes 2 and 3. Node 2's copy is damaged and
/// node 3 never had the key, so the pin's handoffs wait for node 1 instead of
/// finishing (before, node 2's scan skipped the unreadable record and node 2
/// counted itself whole: the pin finished, node 1 dropped its copy, and the
/// acknowledged write was gone). Once node 1 is back, and node 2 restarted onto
/// its replicas, every key reads back through node 3.
#[test]
fn a_pin_waits_for_a_copy_that_reads_back() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-pin-damaged");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    nodes[2].take().unwrap().kill9();
    wait_until_seen_down(nodes[0].as_ref().unwrap(), 3);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c1).unwrap();
    let value = |i: usize| format!("{i}:{}", "v".repeat(600));
    for i in 0..20 {
        let _: String = c1.set(format!("k:{i}"), value(i)).unwrap();
    }
    flip_a_byte_of_the_last_record(&dirs[1]);
    drop(c1);
    nodes[0].take().unwrap().kill9();
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    let addr2 = format!("127.0.0.1:{}", ports[1]);
    let pinned = pin_namespace_1_to_nodes_2_and_3(&addr2);
    assert!(pinned.contains("ring version 1 -> 2"), "{pinned}");
    std::thread::sleep(Duration::from_secs(6));
    let node3 = nodes[2].as_ref().unwrap();
    assert!(
        handoffs_in_flight(node3) > 0,
        "the pin finished without node 1, the only whole copy of k:19:\n{}",
        status(node3)
    );
    // Node 2 says it found damage (its own read-back, node 3's scans of it).
    let mut c2 = nodes[1].as_ref().unwrap().client();
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut c2)
        .unwrap();
    let unreadable: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("shoal_records_unreadable:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("shoal_records_unreadable in INFO");
    assert!(unreadable > 0, "{info}");
    drop(c2);

    nodes[0] = Some(start_node(1, &ports, &dirs[0]));
    nodes[1].take().unwrap().kill9();
    nodes[1] = Some(start_node(2, &ports, &dirs[1]));
    let all: Vec<&ShoalProcess> = nodes.iter().map(|n| n.as_ref().unwrap()).collect();
    wait_for_handoffs(&all, "pin after node 1 came back");
    let mut c3 = all[2].client();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c3).unwrap();
    for i in 0..20 {
        let got: Option<String> = c3.get(format!("k:{i}")).unwrap();
        assert_eq!(got, Some(value(i)), "k:{i} through node 3");
    }
}

/// Flip a byte in the value of the last record of `dir`'s newest segment log.
fn flip_a_byte_of_the_last_record(dir: &std::path::Path) {
    let newest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .max()
        .expect("a segment log");
    let path = dir.join(newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let written = bytes.iter().rposition(|b| *b != 0).expect("records") + 1;
    bytes[written - 300] ^= 0xFF;
    std::fs::write(&path, bytes).unwrap();
}
