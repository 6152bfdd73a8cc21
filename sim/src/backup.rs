//! A backup taken during phase 1 and judged after phase 3. At the plan's moment
//! a client on the observer node runs `shoal backup`'s protocol against the
//! node (`SHOAL.BACKUP BEGIN`, `READ` chunk by chunk, `END`) into an in-memory
//! directory, while the workload and the faults go on. After the run the copies
//! are made a store the way `shoal restore` makes one (`seal_copies`, then
//! `salvage`, which must find nothing lost), and every key the clients touched
//! is read from it into a `backup` event: the checker judges it as the store's
//! state at one moment between `BEGIN`'s request and its answer.
//!
//! A backup the faults cut short (the node killed, its connection stalled) is
//! noted and tried again a few times: a real operator's `shoal backup` fails
//! the same way and leaves no backup behind.

use crate::client::{CallError, RespConn};
use crate::recorder::Recorder;
use shoal_checker::{BackupState, Context, Dot, Event, Key, Sibling};
use shoal_engine::disk::DiskDir;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::backup::seal_copies;
use shoal_engine::store::salvage::salvage;
use shoal_engine::{SiblingSet, Store, StoreOptions};
use shoal_net::backup::{segment_id, Begun};
use shoal_net::resp::Reply;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Bytes asked for per `READ`: small, so a copy spans many requests and the
/// workload's writes and compaction run between them.
const READ_CHUNK_BYTES: u64 = 64 << 10;
const CALL_TIMEOUT_MS: u64 = 2_000;
/// Backups tried before giving up, and the pause between two tries.
const ATTEMPTS_MAX: u32 = 4;
const RETRY_AFTER_MS: u64 = 500;

/// A whole copy, ready to restore.
pub struct TakenBackup {
    /// When `BEGIN` was sent and when it was answered (run time).
    pub started_ms: u64,
    pub taken_ms: u64,
    copies: MemDir,
    /// Each copied segment's id and length.
    segments: Vec<(u32, u64)>,
}

/// Wait until run time `at_ms`, then back the node at `addr` up, trying again
/// (up to [`ATTEMPTS_MAX`] times) while the run's faults cut it short, as an
/// operator would. None when every attempt failed (each noted with its cause).
pub async fn take(addr: SocketAddr, at_ms: u64, recorder: Arc<Recorder>) -> Option<TakenBackup> {
    let wait_ms = at_ms.saturating_sub(recorder.now_ms());
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    for _ in 0..ATTEMPTS_MAX {
        match copy(addr, &recorder).await {
            Ok(taken) => {
                let bytes: u64 = taken.segments.iter().map(|(_, bytes)| bytes).sum();
                recorder.fault(format!(
                    "backup begun at {} ms, view taken at {} ms: {} segment(s), {bytes} bytes copied",
                    taken.started_ms,
                    taken.taken_ms,
                    taken.segments.len()
                ));
                return Some(taken);
            }
            Err(why) => recorder.fault(format!("backup failed: {why}")),
        }
        tokio::time::sleep(Duration::from_millis(RETRY_AFTER_MS)).await;
    }
    None
}

async fn copy(addr: SocketAddr, recorder: &Recorder) -> Result<TakenBackup, String> {
    let mut conn = RespConn::connect(addr, CALL_TIMEOUT_MS)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let started_ms = recorder.now_ms();
    let begun = match call(&mut conn, &[b"SHOAL.BACKUP", b"BEGIN"]).await? {
        Reply::Error(message) => return Err(format!("BEGIN refused: {message}")),
        reply => Begun::parse(reply).ok_or("BEGIN answered something else")?,
    };
    let taken_ms = recorder.now_ms();
    let copies = MemDir::new();
    let copied = copy_segments(&mut conn, &begun, &copies).await;
    let _ = call(&mut conn, &[b"SHOAL.BACKUP", b"END", begun.id.as_bytes()]).await;
    let segments = copied?;
    for (name, bytes) in &begun.small_files {
        write_file(&copies, name, bytes)?;
    }
    Ok(TakenBackup {
        started_ms,
        taken_ms,
        copies,
        segments,
    })
}

async fn copy_segments(
    conn: &mut RespConn,
    begun: &Begun,
    copies: &MemDir,
) -> Result<Vec<(u32, u64)>, String> {
    let mut segments = Vec::new();
    for (name, bytes) in &begun.segments {
        let id = segment_id(name).ok_or_else(|| format!("unknown segment name {name:?}"))?;
        let file = copies.open(name, true).map_err(|e| e.to_string())?;
        let mut offset = 0;
        while offset < *bytes {
            let (at, count) = (offset.to_string(), READ_CHUNK_BYTES.min(bytes - offset));
            let count = count.to_string();
            let args: [&[u8]; 6] = [
                b"SHOAL.BACKUP",
                b"READ",
                begun.id.as_bytes(),
                name.as_bytes(),
                at.as_bytes(),
                count.as_bytes(),
            ];
            let chunk = match call(conn, &args).await? {
                Reply::Bulk(chunk) if !chunk.is_empty() => chunk,
                other => return Err(format!("READ {name} at {offset}: {other:?}")),
            };
            file.write_at(offset, &chunk).map_err(|e| e.to_string())?;
            offset += chunk.len() as u64;
        }
        file.sync().map_err(|e| e.to_string())?;
        segments.push((id, *bytes));
    }
    Ok(segments)
}

async fn call(conn: &mut RespConn, args: &[&[u8]]) -> Result<Reply, String> {
    conn.call(args, CALL_TIMEOUT_MS)
        .await
        .map_err(|e: CallError| format!("no answer ({e})"))
}

fn write_file(dir: &MemDir, name: &str, bytes: &[u8]) -> Result<(), String> {
    let file = dir.open(name, true).map_err(|e| e.to_string())?;
    file.write_at(0, bytes)
        .and_then(|()| file.sync())
        .map_err(|e| format!("cannot copy {name}: {e}"))
}

/// Restore `taken` as `shoal restore` does and read each of `keys` from it.
/// Err: the restore itself failed (a whole backup always restores).
pub fn restore_and_read(
    taken: &TakenBackup,
    keys: &BTreeSet<Key>,
    options: &StoreOptions,
) -> Result<Vec<Event>, String> {
    seal_copies(&taken.copies, &taken.segments)
        .map_err(|e| format!("cannot seal the copies: {e}"))?;
    let restored = MemDir::new();
    let report = salvage(&taken.copies, Arc::new(restored.clone()), options.clone())
        .map_err(|e| format!("restore failed: {e}"))?;
    if !report.losses.is_empty() {
        return Err(format!(
            "the backup is not whole: {}",
            report.losses.join("; ")
        ));
    }
    let (store, _) = Store::open(Arc::new(restored), options.clone())
        .map_err(|e| format!("the restored store does not open: {e}"))?;
    let mut events = Vec::new();
    for key in keys {
        let (namespace, stored) = crate::workload::stored_key(key);
        let set = store
            .get(namespace, &stored)
            .map_err(|e| format!("reading {key} from the restored store: {e}"))?;
        events.push(Event::Backup(state(key, taken, set)));
    }
    Ok(events)
}

fn state(key: &Key, taken: &TakenBackup, set: Option<SiblingSet>) -> BackupState {
    let (siblings, context) = match set {
        None => (Vec::new(), Context::new()),
        Some(set) => (
            set.siblings
                .iter()
                .filter_map(|sibling| {
                    Some(Sibling {
                        value: String::from_utf8_lossy(sibling.value.as_ref()?).into_owned(),
                        dot: Dot::new(sibling.dot.node, sibling.dot.counter),
                    })
                })
                .collect(),
            set.context.entries().collect(),
        ),
    };
    BackupState {
        key: key.clone(),
        started_ms: taken.started_ms,
        taken_ms: taken.taken_ms,
        siblings,
        context,
    }
}
