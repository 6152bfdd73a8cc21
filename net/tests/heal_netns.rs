//! After a long partition, a write through the isolated node is acknowledged
//! within 2 s of the heal (G7), between real processes on a real network.
//!
//! Each of three `shoal` processes (n=3, r=2, w=2) runs in its own network
//! namespace, reached from the host over a veth pair (10.77.X.1 host side,
//! 10.77.X.2 node side, the host forwarding between them). Node 3 is cut from
//! nodes 1 and 2 in both directions by `tc` ingress filters on the host ends that
//! redirect its packets to an `ifb` device left down: packets vanish silently and
//! open TCP connections stall in retransmission backoff, as in a real partition
//! (a reset would not show the problem). The host still reaches every node.
//! While node 3 is cut, writes go on through node 1 and every write through node
//! 3 fails (no quorum). Then the filters go, and the test writes through node 3 in
//! a loop and measures how long after the heal the first write is acknowledged;
//! it must be at most 2.5 s (2 s plus slack). Before stalled peer connections
//! were redialled, this took about 0.8 times the partition's length.
//!
//! Needs root, `ip netns`, `tc` (u32, mirred) and the ifb device; without them
//! the test prints why and passes without running. Names include the process
//! id, and every namespace, link and process is removed on every exit path.

mod common;

use common::cluster::SECRET;
use common::temp_dir;
use redis::Commands;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PORT: u16 = 7379;
const HEAL_LIMIT: Duration = Duration::from_millis(2500);

/// Runs `program args` and returns an error with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Runs a setup step this machine is known to support: a failure is the test's.
fn must(program: &str, args: &[&str]) {
    run(program, args).unwrap_or_else(|e| panic!("setting up the test network: {e}"));
}

/// Three namespaces, their veth pairs, the ifb sink and the nodes' data; all
/// removed on drop.
struct Net {
    tag: String,
    /// Third octet of each node's 10.77.X.0/24.
    octets: [u8; 3],
    namespaces: Vec<String>,
    links: Vec<String>,
    root: common::TempDir,
    forward_was: String,
}

impl Net {
    fn namespace(&self, node: usize) -> String {
        format!("{}n{node}", self.tag)
    }

    /// The host end of node `node`'s veth pair.
    fn host_link(&self, node: usize) -> String {
        format!("{}h{node}", self.tag)
    }

    fn ifb(&self) -> String {
        format!("{}b", self.tag)
    }

    fn node_ip(&self, node: usize) -> String {
        format!("10.77.{}.2", self.octets[node - 1])
    }

    fn subnet(&self, node: usize) -> String {
        format!("10.77.{}.0/24", self.octets[node - 1])
    }

    /// Sets up the namespaces, or says why this machine cannot.
    fn setup() -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        run("ip", &["-V"]).map_err(|e| format!("no ip(8): {e}"))?;
        run("tc", &["-V"]).map_err(|e| format!("no tc(8): {e}"))?;
        let forward_was = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map_err(|e| format!("cannot read ip_forward: {e}"))?;
        // Tests of this binary may run at once: each gets its own names.
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run_no = RUNS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("sh{}x{run_no}", std::process::id());
        let mut net = Net {
            octets: free_octets(run_no)?,
            root: temp_dir(&format!("heal-netns-{run_no}")),
            tag,
            namespaces: Vec::new(),
            links: Vec::new(),
            forward_was: forward_was.trim().to_string(),
        };
        let ifb = net.ifb();
        run("ip", &["link", "add", &ifb, "type", "ifb"]).map_err(|e| format!("no ifb: {e}"))?;
        net.links.push(ifb);
        for node in 1..=3 {
            net.add_node_network(node)?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| format!("cannot enable ip_forward: {e}"))?;
        // One filter on and off again: u32 and mirred are there.
        net.cut(&[(3, 1)])?;
        net.heal()?;
        Ok(net)
    }

    /// Namespace, veth pair, addresses, default route and ingress qdisc of
    /// `node`. Err (skip) when the namespace, veth or qdisc cannot be made.
    fn add_node_network(&mut self, node: usize) -> Result<(), String> {
        let ns = self.namespace(node);
        let host = self.host_link(node);
        let inner = format!("{}p{node}", self.tag);
        let octet = self.octets[node - 1];
        let (host_ip, node_ip) = (format!("10.77.{octet}.1"), self.node_ip(node));
        run("ip", &["netns", "add", &ns]).map_err(|e| format!("no ip netns: {e}"))?;
        self.namespaces.push(ns.clone());
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &inner],
        )
        .map_err(|e| format!("no veth: {e}"))?;
        self.links.push(host.clone());
        must("ip", &["link", "set", &inner, "netns", &ns]);
        must(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", &host],
        );
        must("ip", &["link", "set", &host, "up"]);
        let in_ns = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &ns, "ip"];
            full.extend_from_slice(args);
            must("ip", &full)
        };
        in_ns(&["addr", "add", &format!("{node_ip}/24"), "dev", &inner]);
        in_ns(&["link", "set", &inner, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        in_ns(&["route", "add", "default", "via", &host_ip]);
        run("tc", &["qdisc", "add", "dev", &host, "ingress"])
            .map_err(|e| format!("no tc ingress: {e}"))
    }

    /// Silently drops what arrives from node `from` for node `to`, for each pair.
    fn cut(&self, pairs: &[(usize, usize)]) -> Result<(), String> {
        for (prio, &(from, to)) in pairs.iter().enumerate() {
            let (link, dst, prio) = (
                self.host_link(from),
                self.subnet(to),
                (prio + 1).to_string(),
            );
            let ifb = self.ifb();
            let args = [
                "filter", "add", "dev", &link, "parent", "ffff:", "protocol", "ip", "prio", &prio,
                "u32", "match", "ip", "dst", &dst, "action", "mirred", "egress", "redirect", "dev",
                &ifb,
            ];
            run("tc", &args).map_err(|e| format!("no tc u32/mirred: {e}"))?;
        }
        Ok(())
    }

    /// Removes every filter.
    fn heal(&self) -> Result<(), String> {
        for node in 1..=3 {
            run(
                "tc",
                &[
                    "filter",
                    "del",
                    "dev",
                    &self.host_link(node),
                    "parent",
                    "ffff:",
                ],
            )?;
        }
        Ok(())
    }

    fn members(&self) -> String {
        (1..=3)
            .map(|node| format!("{node}@{}:{PORT}", self.node_ip(node)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        for link in &self.links {
            let _ = run("ip", &["link", "del", link]);
        }
        // Forwarding goes back off unless another run of this test still needs it.
        let others = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| {
                let list = String::from_utf8_lossy(&o.stdout).into_owned();
                list.lines().any(|l| l.starts_with("sh"))
            })
            .unwrap_or(true);
        if self.forward_was == "0" && !others {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0");
        }
    }
}

/// Three third octets for 10.77.X.0/24 subnets no route on the host uses yet,
/// starting from a block that depends on the process id and the run.
fn free_octets(run_no: u32) -> Result<[u8; 3], String> {
    let out = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map_err(|e| format!("ip route: {e}"))?;
    let routes = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = std::process::id() + run_no;
    for step in 0..80 {
        let base = ((start + step) % 80) as u8 * 3;
        let octets = [base + 1, base + 2, base + 3];
        if octets
            .iter()
            .all(|o| !routes.contains(&format!("10.77.{o}.")))
        {
            return Ok(octets);
        }
    }
    Err("no free 10.77.X.0/24 subnets".into())
}

/// A `shoal server` inside a namespace; killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(net: &Net, node: usize, dir: &Path) -> Node {
    let ip = net.node_ip(node);
    let child = Command::new("ip")
        .args(["netns", "exec", &net.namespace(node)])
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .arg("server")
        .args(["--bind", &ip, "--port", &PORT.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-id", &node.to_string(), "--members", &net.members()])
        .args(["--cluster-secret", SECRET])
        .args([
            "--replicas",
            "3",
            "--read-quorum",
            "2",
            "--write-quorum",
            "2",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn shoal in its namespace");
    let mut node = Node {
        child,
        addr: format!("{ip}:{PORT}").parse().expect("address"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&node.addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("node at {} exited during start: {status}", node.addr);
        }
        assert!(
            Instant::now() < deadline,
            "node at {} did not start",
            node.addr
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

/// A connection from the host whose calls give up after 5 s.
fn client(node: &Node) -> redis::Connection {
    let url = format!("redis://{}/", node.addr);
    let conn = redis::Client::open(url)
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect from the host");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    conn
}

/// One SET through `node` on `conn`, reconnecting first if the last call broke
/// the connection. True when acknowledged.
fn try_set(conn: &mut Option<redis::Connection>, node: &Node, key: &str) -> bool {
    let c = conn.get_or_insert_with(|| client(node));
    match c.set::<_, _, String>(key, "v") {
        Ok(_) => true,
        Err(e) => {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                *conn = None;
            }
            false
        }
    }
}

/// Writes through `node` until one is acknowledged (at most `limit`); returns
/// how long that took, or `None`.
fn first_ack(node: &Node, prefix: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut conn = None;
    let mut i = 0u64;
    while !try_set(&mut conn, node, &format!("{prefix}:{i}")) {
        if started.elapsed() > limit {
            return None;
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(started.elapsed())
}

/// Cuts node 3 off for `cut`, writing through node 1 (and now and then,
/// expecting failure, through node 3); returns (writes acknowledged through node
/// 1, writes acknowledged through node 3).
fn partition_node_3(net: &Net, nodes: &[Node], cut: Duration) -> (u64, u64) {
    net.cut(&[(3, 1), (3, 2), (1, 3), (2, 3)])
        .expect("cut node 3");
    let started = Instant::now();
    let (mut c1, mut c3) = (None, None);
    let (mut through_1, mut through_3) = (0, 0);
    let mut next_probe = started;
    let mut i = 0u64;
    while started.elapsed() < cut {
        if try_set(&mut c1, &nodes[0], &format!("during:{i}")) {
            through_1 += 1;
        }
        if Instant::now() >= next_probe {
            if try_set(&mut c3, &nodes[2], &format!("isolated:{i}")) {
                through_3 += 1;
            }
            next_probe = Instant::now() + Duration::from_secs(2);
        }
        i += 1;
    }
    (through_1, through_3)
}

/// Builds the cluster, partitions node 3 for `cut`, heals, and returns how long
/// after the heal the first write through node 3 was acknowledged; `None` when
/// this machine cannot run the test.
fn heal_time_after(cut: Duration) -> Option<Duration> {
    let net = match Net::setup() {
        Ok(net) => net,
        Err(reason) => {
            eprintln!("skipping the network-namespace test: {reason}");
            return None;
        }
    };
    let nodes: Vec<Node> = (1..=3)
        .map(|n| start_node(&net, n, &net.root.join(format!("node-{n}"))))
        .collect();
    first_ack(&nodes[2], "warm", Duration::from_secs(30)).expect("the cluster never took a write");
    let (through_1, through_3) = partition_node_3(&net, &nodes, cut);
    eprintln!(
        "during the {cut:?} cut: {through_1} writes through node 1, {through_3} through node 3"
    );
    assert_eq!(through_3, 0, "node 3 reached a quorum while cut off");
    assert!(
        through_1 > 0,
        "nodes 1 and 2 took no write while node 3 was cut"
    );
    net.heal().expect("heal");
    let took = first_ack(&nodes[2], "healed", Duration::from_secs(60))
        .expect("no write through node 3 was acknowledged within 60 s of the heal");
    eprintln!("after a {cut:?} partition: first write through node 3 acknowledged {took:?} after the heal");
    drop(nodes);
    Some(took)
}

#[test]
fn a_write_through_a_node_healed_from_a_20_s_partition_is_acknowledged_within_2_5_s() {
    let Some(took) = heal_time_after(Duration::from_secs(20)) else {
        return;
    };
    assert!(
        took <= HEAL_LIMIT,
        "G7: the first write through the healed node took {took:?} (limit {HEAL_LIMIT:?})"
    );
}

/// The same measurement after 10 s and 30 s partitions (about 70 s in all).
#[test]
#[ignore = "long: run with --ignored to measure heal times after 10 s and 30 s"]
fn writes_through_nodes_healed_from_10_s_and_30_s_partitions_are_acknowledged_within_2_5_s() {
    for cut in [10, 30] {
        let Some(took) = heal_time_after(Duration::from_secs(cut)) else {
            return;
        };
        assert!(
            took <= HEAL_LIMIT,
            "G7: after a {cut} s partition the first write took {took:?} (limit {HEAL_LIMIT:?})"
        );
    }
}
