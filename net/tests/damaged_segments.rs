//! Damaged synced data on a real single node (G9): a `shoal server` with 1 MiB
//! segments takes a few thousand acknowledged writes through the `redis` crate
//! and is killed with kill -9. On copies of its data directory, one segment file
//! is deleted, one is cut short with `set_len` (as `truncate -s` does), the
//! newest one is zeroed after its header, or one byte of an older, sealed
//! segment is flipped. Each time the server must refuse
//! to start, name the segment, and exit non-zero, and `shoal inspect --check`
//! must exit non-zero; `shoal salvage` of the flipped copy makes a directory that
//! starts and serves every key it kept, unchanged, and names the loss; the
//! untouched directory starts and serves every write.

mod common;

use common::{free_port, temp_dir, ShoalProcess};
use redis::Commands;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: usize = 3000;
const VALUE_BYTES: usize = 1000;

fn value_of(i: usize) -> String {
    format!("{i:06}-{}", "v".repeat(VALUE_BYTES))
}

fn config_file(root: &Path) -> PathBuf {
    let path = root.join("shoal.toml");
    std::fs::write(&path, "segment_size_bytes = 1048576\n").expect("config");
    path
}

/// A stopped node's directory holding `KEYS` acknowledged writes.
fn written_directory(root: &Path, config: &Path) -> PathBuf {
    let dir = root.join("original");
    let node = ShoalProcess::start(&dir, &["--config", config.to_str().unwrap()]);
    let mut conn = node.client();
    for i in 0..KEYS {
        let _: () = conn.set(format!("key:{i}"), value_of(i)).expect("set");
    }
    // The committer records how far the active segment is synced (`SYNCED`)
    // once a tick (a second).
    std::thread::sleep(Duration::from_millis(2500));
    node.kill9();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

fn segment(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:08}.log"))
}

fn segment_count(dir: &Path) -> u32 {
    (1..).take_while(|id| segment(dir, *id).exists()).count() as u32
}

/// Starts a server on `dir` and waits for it to exit; its status and stderr.
fn start_expecting_exit(dir: &Path, config: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["server", "--port", &free_port().to_string(), "--data-dir"])
        .arg(dir)
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                .expect("stderr");
            return (status.success(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shoal started on damaged data and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `shoal salvage <from> --into <into>`: whether it succeeded, and its stdout.
fn salvage(from: &Path, into: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("salvage")
        .arg(from)
        .arg("--into")
        .arg(into)
        .output()
        .expect("salvage");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn inspect_check_passes(dir: &Path) -> bool {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["inspect", "--check"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("inspect")
        .success()
}

/// Applies `damage` to a copy of `original` and checks the node refuses it.
fn assert_refused(
    root: &Path,
    original: &Path,
    config: &Path,
    name: &str,
    damage: impl Fn(&Path),
    names: &str,
) {
    let dir = root.join(name);
    copy_dir(original, &dir);
    damage(&dir);
    let (ok, stderr) = start_expecting_exit(&dir, config);
    assert!(!ok, "{name}: the server exited successfully");
    assert!(
        stderr.contains(names),
        "{name}: stderr does not name {names:?}: {stderr}"
    );
    assert!(
        !inspect_check_passes(&dir),
        "{name}: inspect --check passed"
    );
}

#[test]
fn a_deleted_cut_or_flipped_segment_stops_the_node_and_fails_inspect() {
    let root = temp_dir("damaged-segments");
    let config = config_file(&root);
    let original = written_directory(&root, &config);
    let segments = segment_count(&original);
    assert!(segments >= 3, "{segments} segments");
    assert!(inspect_check_passes(&original));
    assert_refused(
        &root,
        &original,
        &config,
        "deleted",
        |d| {
            std::fs::remove_file(segment(d, 2)).unwrap();
            let _ = std::fs::remove_file(d.join("seg-00000002.hint"));
        },
        "segment 2",
    );
    assert_refused(
        &root,
        &original,
        &config,
        "cut-newest",
        |d| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(segment(d, segments))
                .unwrap();
            file.set_len(4096).unwrap();
        },
        &format!("segment {segments}"),
    );
    assert_refused(
        &root,
        &original,
        &config,
        "zeroed-newest",
        |d| {
            // Zeros over every record of the active segment, as a bad disk or a
            // stray `dd` leaves them: it reads like a segment never written to.
            let path = segment(d, segments);
            let mut bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes[16..].iter().any(|b| *b != 0),
                "the newest segment is empty"
            );
            bytes[16..].fill(0);
            std::fs::write(&path, bytes).unwrap();
        },
        &format!("segment {segments}"),
    );
    assert_refused(
        &root,
        &original,
        &config,
        "cut-sealed",
        |d| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(segment(d, 1))
                .unwrap();
            file.set_len(200_000).unwrap();
        },
        "segment 1",
    );
    assert_refused(
        &root,
        &original,
        &config,
        "flipped",
        |d| {
            let path = segment(d, 1);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[50_000] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        },
        "segment 1",
    );
    // An operator with no replica salvages the flipped copy: a new directory
    // that opens whole, holds every key it can, nothing garbled, and the loss
    // is named.
    let (ok, stdout) = salvage(&root.join("flipped"), &root.join("flipped-salvaged"));
    assert!(ok, "salvage failed: {stdout}");
    assert!(stdout.contains("lost: segment 1"), "{stdout}");
    let node = ShoalProcess::start(
        &root.join("flipped-salvaged"),
        &["--config", config.to_str().unwrap()],
    );
    let mut conn = node.client();
    let mut kept = 0;
    for i in 0..KEYS {
        let got: Option<String> = conn.get(format!("key:{i}")).expect("get");
        if let Some(got) = got {
            assert_eq!(got, value_of(i), "key:{i} garbled");
            kept += 1;
        }
    }
    let said = format!("salvaged {kept} keys ({kept} live)");
    assert!(
        stdout.contains(&said),
        "read back {kept} keys; salvage said: {stdout}"
    );
    assert!(kept > KEYS / 2 && kept < KEYS, "{kept} keys kept");
    drop(node);
    // Salvage of a whole store loses nothing.
    let (ok, stdout) = salvage(&original, &root.join("whole-salvaged"));
    assert!(ok && stdout.contains("nothing was lost"), "{stdout}");
    assert!(
        stdout.contains(&format!("salvaged {KEYS} keys")),
        "{stdout}"
    );
    // The untouched directory still opens whole, with every write.
    let node = ShoalProcess::start(&original, &["--config", config.to_str().unwrap()]);
    let mut conn = node.client();
    for i in (0..KEYS).step_by(97) {
        let got: Option<String> = conn.get(format!("key:{i}")).expect("get");
        assert_eq!(got.as_deref(), Some(value_of(i).as_str()), "key:{i}");
    }
    drop(node);
}

/// A byte flipped under a running single node: its scrubber finds it and
/// counts it, the key answers an error naming the damage instead of bytes
/// that fail their checksum, and every other key and every write still work.
#[test]
fn damage_under_a_running_node_is_found_by_the_scrubber_and_never_served() {
    let root = temp_dir("scrub-single");
    let dir = root.join("data");
    let node = ShoalProcess::start(&dir, &["--scrub-pass-interval-ms", "200"]);
    let mut conn = node.client();
    let marker = "VICTIM-a-value-the-flipped-byte-lands-in-VICTIM";
    let _: () = conn.set("victim", marker).expect("set");
    for i in 0..100 {
        let _: () = conn.set(format!("key:{i}"), value_of(i)).expect("set");
    }
    common::flip_inside(&dir, marker.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::persistence_count(&mut conn, "shoal_damaged_records_found") == 0 {
        assert!(Instant::now() < deadline, "the scrubber never found it");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = conn
        .get::<_, Option<String>>("victim")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("segment 1"), "names the damage: {refused}");
    for i in 0..100 {
        let got: String = conn.get(format!("key:{i}")).expect("get");
        assert_eq!(got, value_of(i));
    }
    let _: () = conn.set("after", "still writable").expect("set");
    assert!(common::persistence_count(&mut conn, "shoal_scrub_passes") >= 1);
    drop(conn);
    node.kill9();
}
