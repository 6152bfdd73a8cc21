//! `shoal inspect`: prints a stopped node's data directory as JSON lines and says
//! whether it would open whole. It owns only the output format; the scan itself is
//! [`shoal_engine::store::inspect::inspect_dir`], which is read-only. This module
//! never modifies the directory either: it does not create it, lock it, or open a
//! `Store` on it (opening would bump the incarnation and cut torn tails).
//!
//! Lines, in this order:
//! - one per key (unless `check_only`): `{"namespace":0,"key":"user:1","siblings":
//!   [{"dot":"1:5","hlc":123,"value":"..."}],"context":"1:5","tombstone":false}`.
//!   Keys and values that are not UTF-8 appear as `key_hex` / `value_hex` (lowercase
//!   hex); a delete marker has `"value":null`; `tombstone` means no sibling holds a
//!   value;
//! - one per segment: `{"segment":1,"file":"seg-00000001.log","file_len_bytes":4096,
//!   "records":10,"data_end_bytes":1234,"status":"ok","hint":"valid"}`, where status
//!   is `ok`, `torn-tail` (with `offset`, `bytes`), `corrupt` (with `offset`,
//!   `reason`) or `bad-header`, and hint is `valid`, `damaged` or `none`;
//! - a summary: `{"summary":{"segments":N,"keys":N,"live_keys":N,"whole":true}}`.

use crate::filedisk::FileDir;
use serde::Serialize;
use shoal_engine::store::inspect::{inspect_dir, InspectedKey, SegmentCheck, SegmentStatus};
use shoal_engine::StoreOptions;
use std::io::Write;
use std::path::Path;

/// Inspects `data_dir` and writes the JSON lines to `out`. Returns whether the store
/// is whole (no corruption; at most a torn tail in the last segment). Errors are for
/// a directory or output that cannot be used at all, not for damage found.
pub fn run(data_dir: &Path, out: &mut dyn Write, check_only: bool) -> Result<bool, String> {
    let dir = FileDir::open_existing(data_dir)
        .map_err(|e| format!("cannot open data directory {}: {e}", data_dir.display()))?;
    let record_size_max_bytes = StoreOptions::default().record_size_max_bytes;
    let inspection = inspect_dir(&dir, record_size_max_bytes)
        .map_err(|e| format!("cannot read data directory {}: {e}", data_dir.display()))?;
    if !check_only {
        for key in &inspection.keys {
            write_line(out, &key_line(key))?;
        }
    }
    for segment in &inspection.segments {
        write_line(out, &segment_line(segment))?;
    }
    for fault in &inspection.synced_data_faults {
        write_line(out, &FaultLine { fault })?;
    }
    let whole = inspection.is_whole();
    let summary = SummaryLine {
        summary: Summary {
            segments: inspection.segments.len(),
            keys: inspection.keys.len(),
            live_keys: inspection.live_key_count(),
            whole,
        },
    };
    write_line(out, &summary)?;
    out.flush()
        .map_err(|e| format!("cannot write output: {e}"))?;
    Ok(whole)
}

fn write_line(out: &mut dyn Write, line: &impl Serialize) -> Result<(), String> {
    let mut text = serde_json::to_string(line).map_err(|e| format!("cannot encode a line: {e}"))?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write output: {e}"))
}

#[derive(Serialize)]
struct KeyLine<'a> {
    namespace: u8,
    #[serde(flatten)]
    key: KeyField<'a>,
    siblings: Vec<SiblingLine<'a>>,
    context: String,
    tombstone: bool,
}

#[derive(Serialize)]
enum KeyField<'a> {
    #[serde(rename = "key")]
    Text(&'a str),
    #[serde(rename = "key_hex")]
    Hex(String),
}

#[derive(Serialize)]
struct SiblingLine<'a> {
    dot: String,
    hlc: u64,
    #[serde(flatten)]
    value: ValueField<'a>,
}

#[derive(Serialize)]
enum ValueField<'a> {
    /// UTF-8 text, or `None` for a delete marker (`"value":null`).
    #[serde(rename = "value")]
    Text(Option<&'a str>),
    #[serde(rename = "value_hex")]
    Hex(String),
}

fn key_line(key: &InspectedKey) -> KeyLine<'_> {
    let key_field = match std::str::from_utf8(&key.key) {
        Ok(text) => KeyField::Text(text),
        Err(_) => KeyField::Hex(hex(&key.key)),
    };
    let siblings = key
        .set
        .siblings
        .iter()
        .map(|s| SiblingLine {
            dot: s.dot.to_string(),
            hlc: s.hlc.0,
            value: match s.value.as_deref() {
                None => ValueField::Text(None),
                Some(bytes) => match std::str::from_utf8(bytes) {
                    Ok(text) => ValueField::Text(Some(text)),
                    Err(_) => ValueField::Hex(hex(bytes)),
                },
            },
        })
        .collect();
    KeyLine {
        namespace: key.namespace,
        key: key_field,
        siblings,
        context: key.set.context.to_string(),
        tombstone: key.set.is_deleted(),
    }
}

#[derive(Serialize)]
struct SegmentLine<'a> {
    segment: u32,
    file: String,
    file_len_bytes: u64,
    records: u64,
    data_end_bytes: u64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    hint: &'static str,
}

fn segment_line(check: &SegmentCheck) -> SegmentLine<'_> {
    let (status, offset, bytes, reason) = match &check.status {
        SegmentStatus::Ok => ("ok", None, None, None),
        SegmentStatus::TornTail { offset, bytes } => {
            ("torn-tail", Some(*offset), Some(*bytes), None)
        }
        SegmentStatus::Corrupt { offset, reason } => {
            ("corrupt", Some(*offset), None, Some(reason.as_str()))
        }
        SegmentStatus::BadHeader => ("bad-header", None, None, None),
    };
    let hint = match (check.has_hint, check.hint_valid) {
        (false, _) => "none",
        (true, true) => "valid",
        (true, false) => "damaged",
    };
    SegmentLine {
        segment: check.segment,
        file: format!("seg-{:08}.log", check.segment),
        file_len_bytes: check.file_len_bytes,
        records: check.records,
        data_end_bytes: check.data_end_bytes,
        status,
        offset,
        bytes,
        reason,
        hint,
    }
}

#[derive(Serialize)]
struct SummaryLine {
    summary: Summary,
}

/// `{"fault":"..."}`: synced data missing or cut short (see `synced_data_faults`).
#[derive(Serialize)]
struct FaultLine<'a> {
    fault: &'a str,
}

#[derive(Serialize)]
struct Summary {
    segments: usize,
    keys: usize,
    live_keys: usize,
    whole: bool,
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[(b >> 4) as usize] as char);
        text.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::Value;
    use shoal_engine::{Store, WriteOp};
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let name = format!("shoal-inspect-{test}-{}", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn options() -> StoreOptions {
        StoreOptions {
            segment_size_bytes: 4096,
            record_size_max_bytes: 1024,
            ..StoreOptions::default()
        }
    }

    fn commit(store: &mut Store, ops: &[WriteOp], wall_ms: u64) {
        let batch = store.prepare(ops, wall_ms);
        batch.sync().expect("sync");
        for result in store.publish(batch) {
            assert!(result.expect("write accepted").applied);
        }
    }

    fn op(namespace: u8, key: &[u8], value: &[u8]) -> WriteOp {
        WriteOp::put(
            namespace,
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(value),
        )
    }

    /// Writes a store: text and binary keys, a deleted key, and enough filler
    /// records to seal segment 1.
    fn write_store(path: &Path) {
        let dir = FileDir::create(path).expect("create dir");
        let (mut store, _) = Store::open(Arc::new(dir), options()).expect("open store");
        commit(&mut store, &[op(0, b"user:1", b"alice")], 1_000);
        commit(&mut store, &[op(1, &[0xff, 0x00], &[0xfe, 0x01])], 1_001);
        commit(&mut store, &[op(0, b"gone", b"soon")], 1_002);
        commit(
            &mut store,
            &[WriteOp::delete(0, Bytes::from("gone"))],
            1_003,
        );
        for i in 0..30u64 {
            let key = format!("filler{i}");
            commit(
                &mut store,
                &[op(2, key.as_bytes(), &[b'v'; 200])],
                1_004 + i,
            );
        }
        assert!(store.segment_count() >= 2);
    }

    fn run_lines(path: &Path, check_only: bool) -> (Result<bool, String>, Vec<Value>) {
        let mut out = Vec::new();
        let result = run(path, &mut out, check_only);
        let text = String::from_utf8(out).expect("utf-8 output");
        let lines = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect();
        (result, lines)
    }

    fn key_lines(lines: &[Value]) -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l.get("namespace").is_some())
            .collect()
    }

    fn segment_lines(lines: &[Value]) -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l.get("segment").is_some())
            .collect()
    }

    #[test]
    fn inspect_prints_keys_segments_and_summary_as_json_lines() {
        let temp = TempDir::new("lines");
        write_store(&temp.0);

        let (result, lines) = run_lines(&temp.0, false);

        assert_eq!(result, Ok(true));
        let keys = key_lines(&lines);
        assert_eq!(keys.len(), 33);
        let user = keys
            .iter()
            .find(|k| k["key"] == "user:1")
            .expect("user:1 listed");
        assert_eq!(user["namespace"], 0);
        assert_eq!(user["tombstone"], false);
        let siblings = user["siblings"].as_array().expect("siblings");
        assert_eq!(siblings.len(), 1);
        assert_eq!(siblings[0]["value"], "alice");
        let dot = siblings[0]["dot"].as_str().expect("dot");
        assert_eq!(user["context"], dot, "one write: the context is its dot");
        assert!(siblings[0]["hlc"].as_u64().expect("hlc") > 0);
        let binary = keys
            .iter()
            .find(|k| k["key_hex"] == "ff00")
            .expect("binary key listed as hex");
        assert!(binary.get("key").is_none());
        assert_eq!(binary["namespace"], 1);
        assert_eq!(binary["siblings"][0]["value_hex"], "fe01");
        assert!(binary["siblings"][0].get("value").is_none());
        let gone = keys.iter().find(|k| k["key"] == "gone").expect("gone");
        assert_eq!(gone["tombstone"], true);
        assert_eq!(gone["siblings"][0]["value"], Value::Null);

        let segments = segment_lines(&lines);
        assert!(segments.len() >= 2);
        assert_eq!(segments[0]["file"], "seg-00000001.log");
        assert_eq!(segments[0]["status"], "ok");
        assert_eq!(segments[0]["hint"], "valid");
        assert_eq!(segments.last().expect("last")["hint"], "none");
        let records: u64 = segments
            .iter()
            .map(|s| s["records"].as_u64().expect("n"))
            .sum();
        assert_eq!(records, 34);

        let summary = &lines.last().expect("summary")["summary"];
        assert_eq!(summary["segments"], segments.len());
        assert_eq!(summary["keys"], 33);
        assert_eq!(summary["live_keys"], 32);
        assert_eq!(summary["whole"], true);
    }

    #[test]
    fn inspect_check_only_reports_corruption_without_keys() {
        let temp = TempDir::new("check");
        write_store(&temp.0);
        let segment_path = temp.0.join("seg-00000001.log");
        let mut bytes = std::fs::read(&segment_path).expect("read segment");
        bytes[16 + 10] ^= 0xff;
        std::fs::write(&segment_path, &bytes).expect("damage segment");

        let (result, lines) = run_lines(&temp.0, true);

        assert_eq!(result, Ok(false));
        assert!(key_lines(&lines).is_empty());
        let first = segment_lines(&lines)[0];
        assert_eq!(first["status"], "corrupt");
        assert_eq!(first["offset"], 16);
        assert!(first["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(lines.last().expect("summary")["summary"]["whole"], false);
    }

    #[test]
    fn inspect_missing_directory_is_an_error_and_is_not_created() {
        let temp = TempDir::new("missing");
        let (result, lines) = run_lines(&temp.0, false);
        assert!(result.is_err());
        assert!(lines.is_empty());
        assert!(!temp.0.exists());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff, 0x10]), "00abff10");
    }
}
