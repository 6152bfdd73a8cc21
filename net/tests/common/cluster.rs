//! Helpers for tests that run several `shoal` processes as one cluster on
//! loopback: ports, member lists, starting a member, reading its status.

use super::ShoalProcess;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

pub const SECRET: &str = "integration-test-secret";

/// A client port whose peer port (+10000) is free too, below Linux's ephemeral
/// range (32768 up), so no connection's local end takes it before the node binds.
/// The base depends on the process id, so test binaries running at once start
/// apart; the counter keeps the tests of one binary apart.
pub fn port_pair(used: &[u16]) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 12000 + (std::process::id() % 900) as u16 * 10;
    loop {
        let p = base + NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(p < 22000, "no free port pair");
        if !used.contains(&p)
            && TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
}

/// `count` client ports, each with its peer port free.
pub fn port_pairs(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..count {
        let p = port_pair(&ports);
        ports.push(p);
    }
    ports
}

/// `1@127.0.0.1:p1,2@127.0.0.1:p2,...`
pub fn members(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Member `id` (1-based) of the cluster on `ports`, with `extra` flags.
pub fn start_member(id: usize, ports: &[u16], dir: &Path, extra: &[&str]) -> ShoalProcess {
    let mut args = member_args(id, ports);
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ShoalProcess::start_on(ports[id - 1], dir, &args)
}

/// The flags that make a node member `id` (1-based) of the cluster on `ports`.
pub fn member_args(id: usize, ports: &[u16]) -> Vec<String> {
    let mut args = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--members".to_string(),
    ];
    args.extend([
        members(ports),
        "--cluster-secret".to_string(),
        SECRET.to_string(),
    ]);
    args
}

/// A node's `SHOAL.CLUSTER` text (what `shoal cluster status` prints).
pub fn status(conn: &mut redis::Connection) -> String {
    let reply: redis::Value = redis::cmd("SHOAL.CLUSTER").query(conn).expect("status");
    match reply {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected status reply {other:?}"),
    }
}

/// The first line of a status text that starts with `prefix`.
pub fn status_line(text: &str, prefix: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("status has no \"{prefix}\" line:\n{text}"))
        .to_string()
}

/// The numbers on a line, in order ("keys pulled 3 (420 bytes)" gives [3, 420]).
pub fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}
