//! Online backup on a real node: `shoal server` with 1 MiB segments takes
//! overwrites (so compaction removes segments while the copy runs) and a
//! writer that keeps writing during `shoal backup`. The restored directory
//! holds every write acknowledged before the backup began, none acknowledged
//! after it ended, and the phase-one data exactly. A copy with one flipped
//! byte, and a restore over an existing directory, are refused with the cause.

mod common;

use common::{temp_dir, ShoalProcess};
use redis::Commands;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const KEYS: usize = 2000;
const ROUNDS: usize = 4;

fn value_of(i: usize, round: usize) -> String {
    format!("{i:05}-{round}-{}", "v".repeat(500))
}

fn shoal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A writer of `live:{n}`, n = 0, 1, ...; `acked` is how many were acknowledged.
fn spawn_writer(
    node: &ShoalProcess,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let mut conn = node.client();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _: () = conn.set(format!("live:{n}"), n).expect("set");
            n += 1;
            acked.store(n, Ordering::SeqCst);
        }
    })
}

fn restore(from: &Path, into: &Path) -> std::process::Output {
    shoal(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--data-dir",
        into.to_str().unwrap(),
    ])
}

#[test]
fn a_backup_taken_under_writes_restores_exactly_what_it_saw() {
    let root = temp_dir("backup");
    let config = root.join("shoal.toml");
    std::fs::write(&config, "segment_size_bytes = 1048576\n").unwrap();
    let node = ShoalProcess::start(&root.join("node"), &["--config", config.to_str().unwrap()]);
    let mut conn = node.client();
    for round in 0..ROUNDS {
        for i in 0..KEYS {
            let _: () = conn
                .set(format!("key:{i}"), value_of(i, round))
                .expect("set");
        }
    }
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = spawn_writer(&node, stop.clone(), acked.clone());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = acked.load(Ordering::SeqCst);
    let backup_dir: PathBuf = root.join("backup");
    let addr = format!("127.0.0.1:{}", node.port);
    let output = shoal(&[
        "backup",
        "--addr",
        &addr,
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    let after = acked.load(Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(output.status.success(), "backup: {}", text(&output));
    assert!(
        before > 0 && after > before,
        "the writer ran during the backup: {before}..{after}"
    );

    let restored_dir = root.join("restored");
    let output = restore(&backup_dir, &restored_dir);
    assert!(output.status.success(), "restore: {}", text(&output));
    let restored = ShoalProcess::start(&restored_dir, &[]);
    let mut check = restored.client();
    for i in 0..KEYS {
        let value: Option<String> = check.get(format!("key:{i}")).unwrap();
        assert_eq!(value, Some(value_of(i, ROUNDS - 1)), "key:{i}");
    }
    for n in 0..before {
        let value: Option<u64> = check.get(format!("live:{n}")).unwrap();
        assert_eq!(
            value,
            Some(n),
            "live:{n}, acknowledged before the backup began"
        );
    }
    let late: Option<u64> = check.get(format!("live:{}", after + 1)).unwrap();
    assert_eq!(late, None, "a write acknowledged after the backup ended");
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut check).unwrap();
    assert!(
        dbsize >= KEYS as u64 + before && dbsize <= KEYS as u64 + after + 1,
        "{dbsize}"
    );

    let output = restore(&backup_dir, &restored_dir);
    assert!(
        !output.status.success() && text(&output).contains("exists"),
        "{}",
        text(&output)
    );
    let damaged = root.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    for entry in std::fs::read_dir(&backup_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), damaged.join(entry.file_name())).unwrap();
    }
    let segment = damaged.join("seg-00000001.log");
    let mut bytes = std::fs::read(&segment).unwrap_or_default();
    if bytes.is_empty() {
        // Compaction removed segment 1 before the backup: flip the first copy's.
        let first = std::fs::read_dir(&damaged)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        bytes = std::fs::read(&first).unwrap();
        bytes[100] ^= 0x40;
        std::fs::write(&first, &bytes).unwrap();
    } else {
        bytes[100] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
    }
    let output = restore(&damaged, &root.join("from-damaged"));
    assert!(
        !output.status.success() && text(&output).contains("is damaged"),
        "{}",
        text(&output)
    );
    assert!(!root.join("from-damaged").exists());
}
