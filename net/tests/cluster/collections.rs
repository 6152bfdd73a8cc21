//! Hashes, sets, lists and sorted sets on a cluster: fields, members,
//! elements and scores written through one node read the same through every
//! node; a field written while
//! one replica was down reaches it by anti-entropy; HDEL, SREM, SPOP, LPOP
//! and DEL remove what they saw; type checks hold; blocking pops poll;
//! multi-key writes are refused.

use crate::common::cluster::port_pairs;
use crate::common::{error_of, query, temp_dir};
use crate::helpers::{
    cluster_slot, node_dirs, start_node, start_nodes, wait_for_a_write, wait_for_equal_digests,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A setup write retried, like the helpers' setup writes, while peer
/// connections come up (for 15 s). Returns its integer reply and whether
/// an earlier try was refused (that try may have written where it reached).
fn setup_write(c: &mut redis::Connection, args: &[&str]) -> (i64, bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut retried = false;
    loop {
        match redis::cmd(args[0]).arg(&args[1..]).query::<i64>(c) {
            Ok(reply) => return (reply, retried),
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("setup {}: {e}; retrying", args[0]);
                retried = true;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("setup {}: {e}", args[0]),
        }
    }
}

fn hgetall(c: &mut redis::Connection, key: &str) -> BTreeMap<String, String> {
    query(c, &["HGETALL", key])
}

#[test]
fn fields_written_through_one_node_read_the_same_through_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-hashes");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let mut nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    let (added, retried) = setup_write(&mut c1, &["HSET", "user:1", "name", "ada", "lang", "en"]);
    // A refused try may have written the fields where it reached.
    assert!(added == 2 || retried, "HSET added {added}");
    let _: () = query(&mut c1, &["HMSET", "user:2", "a", "1", "b", "2", "c", "3"]);
    let expected: BTreeMap<String, String> = [("name", "ada"), ("lang", "en")]
        .map(|(f, v)| (f.into(), v.into()))
        .into();
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        assert_eq!(hgetall(&mut c, "user:1"), expected, "node {}", node.port);
        assert_eq!(query::<String>(&mut c, &["TYPE", "user:2"]), "hash");
        assert_eq!(query::<i64>(&mut c, &["HLEN", "user:2"]), 3);
    }
    let mut c3 = nodes[2].as_ref().unwrap().client();
    assert_eq!(query::<i64>(&mut c3, &["HDEL", "user:2", "b", "zz"]), 1);
    assert_eq!(query::<i64>(&mut c1, &["HLEN", "user:2"]), 2);
    let mut keys: Vec<String> = query(&mut c1, &["KEYS", "*"]);
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2", "warm"]);
    assert_eq!(query::<i64>(&mut c1, &["DBSIZE"]), 3);

    // A string key refuses hash commands; HINCRBY and HINCRBYFLOAT count
    // per node.
    assert!(error_of(&mut c1, &["HSET", "warm", "f", "v"]).starts_with("WRONGTYPE"));
    assert_eq!(query::<i64>(&mut c1, &["HINCRBY", "user:2", "a", "4"]), 5);
    assert_eq!(query::<String>(&mut c3, &["HGET", "user:2", "a"]), "5");
    let f: String = query(&mut c3, &["HINCRBYFLOAT", "user:2", "a", "1.5"]);
    assert_eq!(f, "6.5");

    // Node 3 down: fields still take writes (w=2) and reach it afterwards.
    wait_for_equal_digests(&nodes, Duration::from_secs(30));
    nodes[2].take().unwrap().kill9();
    let fields: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    for field in &fields {
        let _: i64 = query(&mut c1, &["HSET", "big", field, field]);
    }
    nodes[2] = Some(start_node(3, &ports, &dirs[2]));
    wait_for_equal_digests(&nodes, Duration::from_secs(60));
    let mut c3 = nodes[2].as_ref().unwrap().client();
    let on_3: Vec<String> = query(&mut c3, &["HKEYS", "big"]);
    assert_eq!(on_3.len(), fields.len());
    assert_eq!(query::<i64>(&mut c3, &["DEL", "big", "user:1", "nope"]), 2);
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        assert_eq!(query::<i64>(&mut c, &["EXISTS", "big", "user:1"]), 0);
    }
}

#[test]
fn members_added_through_one_node_read_the_same_through_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-sets");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    setup_write(&mut c1, &["SADD", "tags", "a", "b", "c", "d"]);
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        let members: std::collections::BTreeSet<String> = query(&mut c, &["SMEMBERS", "tags"]);
        assert_eq!(members.len(), 4, "node {}", node.port);
        assert_eq!(query::<String>(&mut c, &["TYPE", "tags"]), "set");
    }
    let mut c2 = nodes[1].as_ref().unwrap().client();
    assert_eq!(query::<i64>(&mut c2, &["SREM", "tags", "a", "zz"]), 1);
    let popped: String = query(&mut c2, &["SPOP", "tags"]);
    let mut c3 = nodes[2].as_ref().unwrap().client();
    assert_eq!(query::<i64>(&mut c3, &["SCARD", "tags"]), 2);
    assert_eq!(query::<i64>(&mut c3, &["SISMEMBER", "tags", &popped]), 0);
    let _: i64 = query(&mut c3, &["SADD", "other", "c", "z"]);
    let both: Vec<String> = query(&mut c1, &["SINTER", "tags", "other"]);
    assert!(both.len() <= 1, "{both:?}");
    let e = error_of(&mut c1, &["SMOVE", "tags", "other", "c"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    assert!(error_of(&mut c1, &["SADD", "warm", "m"]).starts_with("WRONGTYPE"));
    assert_eq!(query::<i64>(&mut c1, &["DEL", "tags", "other"]), 2);
    assert_eq!(query::<i64>(&mut c2, &["EXISTS", "tags", "other"]), 0);
}

#[test]
fn elements_pushed_through_one_node_read_in_order_through_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-lists");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    // A refused try may have pushed already: only the ends are checked.
    setup_write(&mut c1, &["RPUSH", "queue", "a", "b", "c"]);
    let mut c2 = nodes[1].as_ref().unwrap().client();
    let _: i64 = query(&mut c2, &["LPUSH", "queue", "z"]);
    let mut c3 = nodes[2].as_ref().unwrap().client();
    let all: Vec<String> = query(&mut c3, &["LRANGE", "queue", "0", "-1"]);
    assert_eq!(all.first().map(String::as_str), Some("z"));
    assert_eq!(all.last().map(String::as_str), Some("c"));
    assert_eq!(query::<String>(&mut c3, &["LPOP", "queue"]), "z");
    assert_eq!(query::<String>(&mut c1, &["TYPE", "queue"]), "list");
    // Blocking pops look every 100 ms on a cluster: an element there is
    // taken at once, one pushed through another node while blocked is
    // taken then, and an empty key answers nil at the timeout.
    let head: (String, String) = query(&mut c1, &["BLPOP", "queue", "1"]);
    assert_eq!(head.0, "queue");
    let mut waiter = nodes[1].as_ref().unwrap().client();
    let blocked = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let taken: Option<(String, String)> = query(&mut waiter, &["BRPOP", "jobs", "5"]);
        (taken, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: i64 = query(&mut c3, &["RPUSH", "jobs", "j1"]);
    let (taken, waited) = blocked.join().unwrap();
    assert_eq!(taken, Some(("jobs".into(), "j1".into())));
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    let started = std::time::Instant::now();
    let none: Option<(String, String)> = query(&mut c2, &["BLPOP", "nothing", "0.3"]);
    assert_eq!(none, None);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let e = error_of(&mut c1, &["LMOVE", "queue", "other", "LEFT", "LEFT"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    assert!(error_of(&mut c1, &["RPUSH", "warm", "m"]).starts_with("WRONGTYPE"));
    assert_eq!(query::<i64>(&mut c2, &["DEL", "queue"]), 1);
    assert_eq!(query::<i64>(&mut c3, &["LLEN", "queue"]), 0);
}

#[test]
fn scores_written_through_one_node_rank_the_same_through_every_node() {
    let _slot = cluster_slot();
    let root = temp_dir("cluster-zsets");
    let ports = port_pairs(3);
    let dirs = node_dirs(&root, 3);
    let nodes = start_nodes(&ports, &dirs, &[]);
    let mut c1 = nodes[0].as_ref().unwrap().client();
    wait_for_a_write(&mut c1, "x");
    setup_write(&mut c1, &["ZADD", "board", "30", "c", "10", "a", "20", "b"]);
    let mut c2 = nodes[1].as_ref().unwrap().client();
    // A new score replaces the old one in the order, through another node.
    assert_eq!(query::<i64>(&mut c2, &["ZADD", "board", "5", "c"]), 0);
    for node in nodes.iter().flatten() {
        let mut c = node.client();
        let order: Vec<String> = query(&mut c, &["ZRANGE", "board", "0", "-1"]);
        assert_eq!(order, ["c", "a", "b"], "node {}", node.port);
        assert_eq!(query::<String>(&mut c, &["TYPE", "board"]), "zset");
        assert_eq!(query::<i64>(&mut c, &["ZCARD", "board"]), 3);
    }
    let mut c3 = nodes[2].as_ref().unwrap().client();
    let popped: Vec<String> = query(&mut c3, &["ZPOPMAX", "board"]);
    assert_eq!(popped, ["b", "20"]);
    assert_eq!(query::<String>(&mut c1, &["ZSCORE", "board", "a"]), "10");
    assert_eq!(query::<i64>(&mut c1, &["ZRANK", "board", "a"]), 1);
    let e = error_of(&mut c1, &["ZINCRBY", "board", "1", "a"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    let e = error_of(&mut c1, &["ZUNIONSTORE", "out", "1", "board"]);
    assert!(e.contains("not supported on a cluster"), "{e}");
    let min: (String, String, String) = query(&mut c2, &["BZPOPMIN", "board", "1"]);
    assert_eq!(min, ("board".into(), "c".into(), "5".into()));
    assert!(error_of(&mut c1, &["ZADD", "warm", "1", "m"]).starts_with("WRONGTYPE"));
    assert_eq!(query::<i64>(&mut c2, &["DEL", "board"]), 1);
    assert_eq!(query::<i64>(&mut c3, &["ZCARD", "board"]), 0);
    let after: Vec<String> = query(&mut c3, &["ZRANGE", "board", "0", "-1"]);
    assert!(after.is_empty(), "{after:?}");
}
