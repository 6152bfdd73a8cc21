//! A real full disk: Shoal on a small tmpfs. Writes are refused with DISKFULL (and
//! nothing acknowledged is lost), reads keep working, and writes resume once space
//! returns. Needs root to mount the tmpfs; CI runs as root.

mod common;

use common::{temp_dir, ShoalProcess};
use redis::Commands;
use std::process::Command;

struct Tmpfs(common::TempDir);

impl Tmpfs {
    fn mount(size_mib: u32) -> Option<Tmpfs> {
        let dir = temp_dir("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.as_os_str())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.as_os_str()).status();
    }
}

#[test]
fn full_disk_refuses_writes_keeps_reads_and_recovers() {
    let Some(fs) = Tmpfs::mount(12) else {
        panic!("cannot mount a tmpfs: this test needs root (CI runs as root)");
    };
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![1u8; 5 << 20]).unwrap();
    let data = fs.0.join("data");
    let config = fs.0.join("shoal.toml");
    std::fs::write(&config, "segment_size_bytes = 1048576\n").unwrap();
    let config_arg = config.to_str().unwrap().to_string();
    let node = ShoalProcess::start(&data, &["--config", &config_arg]);
    let mut c = node.client();
    let value = "v".repeat(32 << 10);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..1000 {
        match c.set::<_, _, ()>(format!("key{i}"), format!("{i}:{value}")) {
            Ok(()) => acked.push(i),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled");
    assert!(refusal.contains("DISKFULL"), "{refusal}");
    assert!(acked.len() > 10, "only {} writes fit", acked.len());
    // Reads keep working; the refusal is counted.
    let first: String = c.get("key0").unwrap();
    assert!(first.starts_with("0:"));
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(!info.contains("shoal_disk_full_refusals:0"), "{info}");
    // Space returns: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let () = c.set("after", "space returned").unwrap();
    // Nothing acknowledged was lost, across a kill -9.
    let port = node.port;
    node.kill9();
    let node = ShoalProcess::start_on(port, &data, &["--config", &config_arg]);
    let mut c = node.client();
    for i in &acked {
        let v: String = c.get(format!("key{i}")).unwrap();
        assert_eq!(v, format!("{i}:{value}"), "key{i}");
    }
    assert_eq!(c.get::<_, String>("after").unwrap(), "space returned");
    drop(node);
}
