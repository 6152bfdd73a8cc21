//! Anti-entropy repairs a replica that missed many large values. Three real
//! `shoal` processes on loopback (n=3, r=2, w=2); node 3 is killed with kill -9,
//! 1,100 values of 140 KB each (about 154 MB, more than twice the 64 MiB one
//! exchange may move and past the 80 MiB peer frame limit as one frame) are
//! written through node 1, node 3 is restarted, and the test waits (at most 120 s)
//! until its local digest equals the other two. With only three members every
//! node owns every key, so there is no fallback to hold hints: only anti-entropy
//! can bring the values over. Node 3's status must show bytes pulled by
//! anti-entropy, and `shoal inspect` on node 3's stopped directory must show
//! every key with its acknowledged value. The directories (about 460 MB) are
//! removed however the test ends.
//!
//! Before repair streams were bounded in bytes, an exchange took up to 1,024
//! differing keys as one frame, the peer refused the frame, and the same keys
//! were offered again every round: node 3 never converged.

mod common;

use common::cluster::{numbers, port_pairs, start_member, status, status_line};
use common::{temp_dir, ShoalProcess};
use redis::Commands;
use shoal_engine::rng::SplitMix64;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 1100;
const VALUE_BYTES: usize = 140_000;
const WRITERS: usize = 8;
const QUORUMS: [&str; 6] = [
    "--replicas",
    "3",
    "--read-quorum",
    "2",
    "--write-quorum",
    "2",
];

/// Random letters shared by every value; each value starts with its key's index.
fn filler() -> Arc<String> {
    let mut rng = SplitMix64::new(0x1A26E);
    let text = (0..VALUE_BYTES)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect();
    Arc::new(text)
}

fn key(i: usize) -> String {
    format!("big:{i}")
}

fn value(i: usize, filler: &str) -> String {
    let head = format!("{i:08}:");
    format!("{head}{}", &filler[head.len()..])
}

/// SET with retries (bounded): right after the kill the cluster may still route
/// to node 3 until its detector notices, and a write may come back NOQUORUM.
fn set_with_retries(conn: &mut redis::Connection, key: &str, value: &str) {
    let mut last = String::new();
    for _ in 0..100 {
        match conn.set::<_, _, String>(key, value) {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{key} was never acknowledged with node 3 down: {last}");
}

/// Writes every value through `node`, from `WRITERS` connections at once.
fn write_all_values(node: &ShoalProcess, filler: &Arc<String>) {
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut conn = node.client();
            let filler = filler.clone();
            std::thread::spawn(move || {
                for i in (w..KEYS).step_by(WRITERS) {
                    set_with_retries(&mut conn, &key(i), &value(i, &filler));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer");
    }
}

fn digest_line(node: &ShoalProcess) -> String {
    status_line(&status(&mut node.client()), "local digest")
}

/// Waits (at most `limit`) until all nodes show the same local digest; returns
/// how long it took.
fn wait_for_equal_digests(nodes: &[ShoalProcess], limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last_print = started;
    loop {
        let lines: Vec<String> = nodes.iter().map(digest_line).collect();
        if lines.iter().all(|l| *l == lines[0]) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "node 3 was not repaired in {} s: {lines:#?}\n{}",
            limit.as_secs(),
            status(&mut nodes[2].client())
        );
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("{:?}: {lines:?}", started.elapsed());
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Anti-entropy counters: (keys pushed, bytes pushed, keys pulled, bytes pulled).
fn repair_counters(node: &ShoalProcess) -> (u64, u64, u64, u64) {
    let line = status_line(&status(&mut node.client()), "anti-entropy rounds");
    match numbers(&line)[..] {
        [_rounds, kp, bp, kl, bl] => (kp, bp, kl, bl),
        _ => panic!("unexpected anti-entropy line: {line}"),
    }
}

/// The indexes of the `big:` keys `shoal inspect` shows holding their value in
/// the stopped node's `dir` (read line by line: the output is about 154 MB).
fn keys_held(dir: &Path, filler: &str) -> BTreeSet<usize> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("inspect")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run shoal inspect");
    let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut held = BTreeSet::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.expect("read")).expect("JSON");
        let Some(i) = v["key"].as_str().and_then(|k| k.strip_prefix("big:")) else {
            continue;
        };
        let i: usize = i.parse().expect("key index");
        let expected = value(i, filler);
        let siblings = v["siblings"].as_array().expect("siblings");
        if siblings
            .iter()
            .any(|s| s["value"].as_str() == Some(&expected))
        {
            held.insert(i);
        }
    }
    let exit = child.wait().expect("wait for shoal inspect");
    assert!(
        exit.success(),
        "shoal inspect {} found damage",
        dir.display()
    );
    held
}

/// Removes the nodes' directories (about 460 MB) however the test ends.
#[test]
fn anti_entropy_repairs_a_restarted_node_that_missed_154_mb_of_large_values() {
    let root = temp_dir("large-repair");
    let ports = port_pairs(3);
    let dirs: Vec<_> = (1..=3).map(|i| root.join(format!("node-{i}"))).collect();
    let mut nodes: Vec<ShoalProcess> = (1..=3)
        .map(|i| start_member(i, &ports, &dirs[i - 1], &QUORUMS))
        .collect();
    set_with_retries(&mut nodes[0].client(), "warm", "up");
    nodes.pop().expect("node 3").kill9();

    let filler = filler();
    let started = Instant::now();
    write_all_values(&nodes[0], &filler);
    eprintln!(
        "{KEYS} values of {VALUE_BYTES} bytes written with node 3 down in {:?}",
        started.elapsed()
    );

    nodes.push(start_member(3, &ports, &dirs[2], &QUORUMS));
    let took = wait_for_equal_digests(&nodes, Duration::from_secs(120));
    eprintln!("node 3 converged {took:?} after its restart");

    let (_, pushed_1, _, _) = repair_counters(&nodes[0]);
    let (_, pushed_2, _, _) = repair_counters(&nodes[1]);
    let (_, _, keys_pulled_3, pulled_3) = repair_counters(&nodes[2]);
    // Pushes are counted once acknowledged: one that timed out may have landed
    // uncounted, so these are lower bounds and only pulls are checked.
    eprintln!(
        "anti-entropy: node 1 pushed {pushed_1} B, node 2 pushed {pushed_2} B, \
         node 3 pulled {keys_pulled_3} keys ({pulled_3} B)"
    );
    assert!(pulled_3 > 0, "node 3 pulled no bytes by anti-entropy");

    for node in nodes {
        node.kill9();
    }
    let started = Instant::now();
    let held = keys_held(&dirs[2], &filler);
    eprintln!("shoal inspect of node 3 checked in {:?}", started.elapsed());
    let missing: Vec<usize> = (0..KEYS).filter(|i| !held.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "node 3 lacks {} of {KEYS} keys (or holds other values), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
