//! Starting and stopping real `shoal` processes for integration tests.
#![allow(dead_code)]

pub mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ShoalProcess {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
}

/// A fresh, empty directory under the system temp dir, removed when the guard
/// drops after a passing test. A failing test keeps it (and says where) so its
/// segments can be read; the next test run sweeps it once its process is gone.
/// Every node preallocates 128 MiB segments, so leaked directories fill a disk.
pub struct TempDir {
    path: PathBuf,
}

pub fn temp_dir(name: &str) -> TempDir {
    sweep_dead_runs();
    let path = std::env::temp_dir().join(format!("shoal-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("create temp dir");
    TempDir { path }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its data stays in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Remove `shoal-test-<pid>-*` directories whose test process no longer runs.
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("shoal-test-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A port nothing listens on now, never handed out before in this process,
/// below Linux's ephemeral range (32768 up, where the local end of any outgoing
/// connection may take it before the node binds) and below the cluster tests'
/// ports (12000 up, see `cluster::port_pair`). The start depends on the process
/// id, so test binaries running at once start apart.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = (std::process::id() % 1000) * 10;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 2000 + ((base + n) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 2000..12000");
}

/// Whether a server listens on `port`: a connection that is not the probe
/// connected to itself. TCP's simultaneous open joins a socket whose ephemeral
/// local port is `port` to itself when the machine's ephemeral range reaches
/// `port`, as it may on other machines than this one: such a probe "connects"
/// before the node has bound, and the test's first client is refused. (No
/// PING: the probe must leave the node's counters as they were.)
fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|stream| stream.local_addr().ok() != stream.peer_addr().ok())
}

impl ShoalProcess {
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> ShoalProcess {
        Self::start_on(free_port(), data_dir, extra_args)
    }

    pub fn start_on(port: u16, data_dir: &Path, extra_args: &[&str]) -> ShoalProcess {
        Self::start_waiting_for(port, port, data_dir, extra_args)
    }

    /// Start on `port`, waiting until something listens on `ready_port` (a node that
    /// cannot join opens its peer port but never its Redis port).
    pub fn start_waiting_for(
        port: u16,
        ready_port: u16,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> ShoalProcess {
        Self::spawn(port, ready_port, data_dir, extra_args, Stdio::inherit())
    }

    /// Start on `port` with the node's log (stderr) written to `log`, for a
    /// test that reads what the node logged.
    pub fn start_logging_to(
        port: u16,
        data_dir: &Path,
        extra_args: &[&str],
        log: &Path,
    ) -> ShoalProcess {
        let stderr = std::fs::File::create(log).expect("create the node's log file");
        Self::spawn(port, port, data_dir, extra_args, stderr.into())
    }

    fn spawn(
        port: u16,
        ready_port: u16,
        data_dir: &Path,
        extra_args: &[&str],
        stderr: Stdio,
    ) -> ShoalProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("server")
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            // SHOAL_TEST_LOG=info (say) shows what the nodes log.
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_TEST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn shoal");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("shoal exited during start: {status}");
            }
            if listening(ready_port) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("shoal did not start listening on port {ready_port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ShoalProcess {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A client of the node. A refused or reset connect is tried again for
    /// up to 5 s: a CI run (84c22fd) saw one refused, and one of f4df291 one
    /// reset (hashes.rs, the first client after a fresh start, on a loaded
    /// 2-core machine), right after the start's probe had connected, for a
    /// cause not found.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let deadline = Instant::now() + Duration::from_secs(5);
        let retry = |e: &redis::RedisError| e.is_connection_refusal() || e.is_connection_dropped();
        loop {
            match client.get_connection() {
                Ok(connection) => return connection,
                Err(e) if retry(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send raw bytes and read whatever comes back until the server closes or
    /// `wait` passes.
    pub fn raw(&self, bytes: &[u8], wait: Duration) -> Vec<u8> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(wait)).unwrap();
        stream.write_all(bytes).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }
}

impl Drop for ShoalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `args` sent as one command; its reply as `T`, or a panic naming the command.
pub fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// The error reply `args` gets (a panic if it succeeds).
pub fn error_of(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(c)
        .expect_err("an error reply")
        .to_string()
}

/// The path of a test-only TLS file in `tests/fixtures/tls` (see its README).
pub fn tls_fixture(name: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// Flip a byte in the middle of `marker` where a segment of `dir` holds it,
/// through the file (the running node reads the same page cache).
pub fn flip_inside(dir: &std::path::Path, marker: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("seg-") && name.ends_with(".log")) {
            continue;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) else {
            continue;
        };
        let at = (at + marker.len() / 2) as u64;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at)).unwrap();
        std::io::Write::write_all(&mut file, &[bytes[at as usize] ^ 0xFF]).unwrap();
        file.sync_all().unwrap();
        return;
    }
    panic!("no segment of {} holds the marker", dir.display());
}

/// The number after `field:` in INFO persistence.
pub fn persistence_count(conn: &mut redis::Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("persistence").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has no {field}: {info}"))
}
