//! TLS on peer links (`--tls-cluster`) against real `shoal` processes: three
//! members with certificates of one CA replicate through TLS links (written
//! through one node, read back through the others); a member whose
//! certificate another CA signed, or one without TLS, is refused by the others
//! with a logged reason, cannot reach a write quorum, and the healthy members
//! keep serving.

mod common;

use common::cluster::{member_args, port_pairs};
use common::{temp_dir, tls_fixture as fixture, ShoalProcess};
use redis::Commands;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `--tls-cluster` with `NAME-cert.pem` / `NAME-key.pem`, trusting the peer CA.
fn tls_flags(name: &str) -> Vec<String> {
    vec![
        "--tls-cluster".into(),
        "--tls-cert-file".into(),
        fixture(&format!("{name}-cert.pem")),
        "--tls-key-file".into(),
        fixture(&format!("{name}-key.pem")),
        "--tls-ca-cert-file".into(),
        fixture("peer-ca.pem"),
    ]
}

/// A member whose log (stderr) goes to a file the test reads.
struct Node {
    process: ShoalProcess,
    log: PathBuf,
}

impl Node {
    /// Member `id` (1-based) of the cluster on `ports`, with `extra` flags.
    fn start(id: usize, ports: &[u16], dir: &Path, extra: &[String]) -> Node {
        let data = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join(format!("node{id}.log"));
        let mut args = member_args(id, ports);
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = ShoalProcess::start_logging_to(ports[id - 1], &data, &args, &log);
        Node { process, log }
    }

    fn client(&self) -> redis::Connection {
        let conn = self.process.client();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        conn
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (generously) until a line of the log holds every one of `words`.
    fn wait_for_log(&self, words: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.lines().any(|l| words.iter().all(|w| l.contains(w))) {
                return;
            }
            assert!(Instant::now() < deadline, "{words:?} not logged:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// SET through `node` until it succeeds (the members are still meeting).
fn first_write(node: &Node, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = node.client();
    loop {
        match conn.set::<_, _, ()>(key, "first") {
            Ok(()) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "no write succeeded: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Ten keys written through `writer`, each read back through every reader.
fn replicate(writer: &Node, readers: &[&Node], tag: &str) {
    let mut conn = writer.client();
    for i in 0..10 {
        let _: () = conn
            .set(format!("{tag}-{i}"), format!("value-{i}"))
            .unwrap_or_else(|e| panic!("write {tag}-{i}: {e}"));
    }
    for reader in readers {
        let mut conn = reader.client();
        for i in 0..10 {
            let value: Option<String> = conn.get(format!("{tag}-{i}")).unwrap();
            assert_eq!(value.as_deref(), Some(format!("value-{i}").as_str()));
        }
    }
}

#[test]
fn three_tls_members_replicate_over_tls_links() {
    let dir = temp_dir("peer-tls");
    let ports = port_pairs(3);
    let nodes: Vec<Node> = (1..=3)
        .map(|id| Node::start(id, &ports, &dir, &tls_flags("peer")))
        .collect();
    first_write(&nodes[0], "warm-up");
    // n = 3, w = r = 2: every write needs a copy over a link, every read a
    // reply over one.
    replicate(&nodes[0], &[&nodes[1], &nodes[2]], "a");
    replicate(&nodes[2], &[&nodes[0], &nodes[1]], "b");
    for node in &nodes {
        let log = node.log();
        assert!(!log.contains("TLS handshake failed"), "{log}");
        assert!(!log.contains("refused peer connection"), "{log}");
    }
}

/// Members 1 and 2 with the cluster's certificates, member 3 with `outsider`'s
/// flags: member 1 logs `refused` (3 dialled it) and `dial_failure` (it
/// dialled 3); 3's writes fail; 1 and 2 serve on.
fn outsider_is_refused(name: &str, outsider: &[String], refused: &str, dial_failure: &str) {
    let dir = temp_dir(name);
    let ports = port_pairs(3);
    let one = Node::start(1, &ports, &dir, &tls_flags("peer"));
    let two = Node::start(2, &ports, &dir, &tls_flags("peer"));
    let three = Node::start(3, &ports, &dir, outsider);
    first_write(&one, "warm-up");
    replicate(&one, &[&two], "a");
    one.wait_for_log(&["refused peer connection", refused]);
    one.wait_for_log(&["cannot connect to node 3", dial_failure]);
    // Every key has all three members as owners (n = 3): member 3 alone is
    // short of w = 2 whichever member coordinates.
    let mut conn = three.client();
    for i in 0..3 {
        let written: redis::RedisResult<()> = conn.set(format!("cut-off-{i}"), "x");
        assert!(written.is_err(), "member 3 wrote cut-off-{i}");
    }
    replicate(&two, &[&one], "b");
}

#[test]
fn a_member_whose_certificate_another_ca_signed_is_refused() {
    outsider_is_refused(
        "peer-tls-other-ca",
        &tls_flags("other"),
        "invalid peer certificate",
        "invalid peer certificate",
    );
}

#[test]
fn a_member_without_tls_is_refused() {
    outsider_is_refused(
        "peer-tls-plain",
        &[],
        "peer TLS handshake failed",
        "peer TLS handshake failed",
    );
}
