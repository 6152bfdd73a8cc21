//! Redis Cluster clients on a Shoal cluster started with `--cluster-clients`:
//! the `redis` crate's cluster client and `redis-cli --cluster check` on the
//! members' Redis Cluster ports (client port + 1000) count each key once,
//! while a plain client on any member's plain port sees the whole keyspace.

use crate::common::cluster::port_pairs;
use crate::common::temp_dir;
use crate::helpers::{cluster_slot, node_dirs, start_nodes, wait_for_a_write};
use redis::Commands;
use std::net::TcpListener;
use std::process::Command;

/// Keys written, plus `warm` (the write that shows the cluster is up).
const KEYS: usize = 101;
const KEYS_IN_ALL: usize = KEYS + 1;

#[test]
fn cluster_clients_count_each_key_once_and_plain_clients_see_all() {
    let _slot = cluster_slot();
    let root = temp_dir("redis-cluster-clients");
    let ports = port_pairs(3);
    for p in &ports {
        assert!(
            TcpListener::bind(("127.0.0.1", p + 1000)).is_ok(),
            "Redis Cluster port {} is taken",
            p + 1000
        );
    }
    let nodes = start_nodes(&ports, &node_dirs(&root, 3), &["--cluster-clients"]);
    wait_for_a_write(&mut nodes[0].as_ref().unwrap().client(), "up");
    let cluster_urls: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{}/", p + 1000))
        .collect();
    let client = redis::cluster::ClusterClient::new(cluster_urls.clone()).unwrap();
    let mut cluster = client.get_connection().expect("cluster connection");
    for i in 0..KEYS {
        let _: () = cluster.set(format!("key:{i}"), i).expect("cluster SET");
    }
    for i in 0..KEYS {
        let v: usize = cluster.get(format!("key:{i}")).expect("cluster GET");
        assert_eq!(v, i);
    }

    // Each member's Redis Cluster port counts the slots it masters: together,
    // every key once.
    let mut per_master = Vec::new();
    for p in &ports {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", p + 1000))
            .unwrap()
            .get_connection()
            .unwrap();
        let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
        let scanned: Vec<String> = c.scan().unwrap().collect();
        assert_eq!(
            scanned.len(),
            dbsize,
            "SCAN and DBSIZE agree on port {}",
            p + 1000
        );
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
        assert!(info.contains("cluster_enabled:1"), "{info}");
        per_master.push(dbsize);
    }
    assert_eq!(
        per_master.iter().sum::<usize>(),
        KEYS_IN_ALL,
        "{per_master:?}"
    );
    // The cluster client sends DBSIZE to every master and adds the answers.
    let summed: usize = redis::cmd("DBSIZE").query(&mut cluster).unwrap();
    assert_eq!(summed, KEYS_IN_ALL);
    assert!(per_master.iter().all(|n| *n < KEYS), "{per_master:?}");

    // A plain client on any member sees the whole keyspace.
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(dbsize, KEYS_IN_ALL);
        let info: String = redis::cmd("INFO").arg("cluster").query(&mut c).unwrap();
        assert!(info.contains("cluster_enabled:0"), "{info}");
    }

    // CLUSTER NODES / SLOTS advertise the Redis Cluster ports, masters only.
    let mut c = nodes[1].as_ref().unwrap().client();
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
    for run in &slots {
        let redis::Value::Array(entry) = run else {
            panic!("{run:?}")
        };
        assert_eq!(entry.len(), 3, "a range and its master only: {entry:?}");
    }
    let key_slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("key:7")
        .query(&mut c)
        .unwrap();
    let in_slot: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(key_slot)
        .query(&mut c)
        .unwrap();
    assert!(in_slot >= 1);
    let _: () = redis::cmd("READONLY").query(&mut c).unwrap();

    redis_cli_check(ports[0] + 1000);
}

/// `redis-cli --cluster check` passes and counts every key once (skipped
/// when redis-cli is not installed, unless SHOAL_REQUIRE_REDIS_CLI is set).
fn redis_cli_check(port: u16) {
    let out = match Command::new("redis-cli")
        .args(["--cluster", "check", &format!("127.0.0.1:{port}")])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("SHOAL_REQUIRE_REDIS_CLI").is_none(),
                "redis-cli: {e}"
            );
            eprintln!("redis-cli not installed: --cluster check skipped");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-cli --cluster check failed:\n{text}"
    );
    assert!(
        text.contains(&format!("[OK] {KEYS_IN_ALL} keys in 3 masters.")),
        "{text}"
    );
    assert!(text.contains("[OK] All 16384 slots covered."), "{text}");
}
