//! `SHOAL.BACKUP`: the node's side of an online backup (`shoal backup`, in
//! `backup_tool`). `BEGIN` takes the store's backup view
//! (`shoal_engine::store::backup`) under the store's lock, syncs it, and
//! answers an id, each segment's name and bytes to copy, the small files
//! whole, and whether the node is a cluster member. `READ id segment offset
//! count` answers at most `BACKUP_CHUNK_BYTES_MAX` bytes of one copy; `END id`
//! lets the view go. Writes never wait for a backup: only `BEGIN` reads under the
//! store's lock, for as long as listing the segments takes.
//!
//! Bounded: at most `BACKUPS_OPEN_MAX` backups at once, and one left idle for
//! `BACKUP_IDLE_MAX_MS` is ended by the next `BEGIN`.
//!
//! Must not touch: the data path (reads here go to the view's file handles).

use crate::reply::Step;
use crate::resp::Reply;
use crate::shared::Shared;
use bytes::Bytes;
use shoal_engine::store::backup::BackupView;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The most bytes one `READ` answers.
pub const BACKUP_CHUNK_BYTES_MAX: u64 = 1 << 20;
/// Backups open at once, at most.
const BACKUPS_OPEN_MAX: usize = 2;
/// A backup idle this long is ended by the next `BEGIN`.
const BACKUP_IDLE_MAX_MS: u64 = 10 * 60 * 1000;

/// The backups in progress on this node.
#[derive(Default)]
pub struct BackupSessions {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    views: BTreeMap<u64, (BackupView, tokio::time::Instant)>,
}

fn err(text: impl Into<String>) -> Step {
    Step::Reply(Reply::Error(text.into()))
}

/// `SHOAL.BACKUP BEGIN | READ id segment offset count | END id`.
pub fn command(shared: &Shared, args: &[Bytes]) -> Step {
    let sub = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    match (sub.as_deref(), args.len()) {
        (Some("begin"), 2) => begin(shared),
        (Some("read"), 6) => match (number(&args[2]), number(&args[4]), number(&args[5])) {
            (Some(id), Some(offset), Some(count)) => read(shared, id, &args[3], offset, count),
            _ => {
                err("ERR SHOAL.BACKUP READ takes an id, a segment file name, an offset and a count")
            }
        },
        (Some("end"), 3) => match number(&args[2]) {
            Some(id) => {
                let ended = lock(&shared.backups.open).views.remove(&id).is_some();
                if ended {
                    Step::Reply(Reply::ok())
                } else {
                    err(format!("ERR no backup {id} is open"))
                }
            }
            None => err("ERR SHOAL.BACKUP END takes a backup id"),
        },
        _ => err("ERR usage: SHOAL.BACKUP BEGIN | READ id segment offset count | END id"),
    }
}

fn begin(shared: &Shared) -> Step {
    let now = tokio::time::Instant::now();
    let mut open = lock(&shared.backups.open);
    let idle_max = std::time::Duration::from_millis(BACKUP_IDLE_MAX_MS);
    open.views
        .retain(|_, (_, used)| now.duration_since(*used) < idle_max);
    if open.views.len() >= BACKUPS_OPEN_MAX {
        return err(format!(
            "BUSY {BACKUPS_OPEN_MAX} backups are in progress; end one (SHOAL.BACKUP END id) or wait"
        ));
    }
    let view = match shared.storage.read(|store| store.backup_view()) {
        Ok(view) => view,
        Err(e) => return err(format!("IOERR cannot list the store's segments: {e}")),
    };
    if let Err(e) = view.sync() {
        return err(format!(
            "IOERR cannot sync the active segment for a backup: {e}"
        ));
    }
    open.next_id += 1;
    let id = open.next_id;
    let segments = view
        .segments
        .iter()
        .map(|s| {
            Reply::Array(vec![
                Reply::Bulk(Bytes::from(s.file_name())),
                Reply::Integer(s.bytes as i64),
            ])
        })
        .collect();
    let small_files = view
        .small_files
        .iter()
        .map(|(name, bytes)| {
            Reply::Array(vec![
                Reply::Bulk(Bytes::from(name.clone())),
                Reply::Bulk(Bytes::from(bytes.clone())),
            ])
        })
        .collect();
    open.views.insert(id, (view, now));
    Step::Reply(Reply::Array(vec![
        Reply::Integer(id as i64),
        Reply::Array(segments),
        Reply::Array(small_files),
        Reply::Integer(i64::from(shared.cluster.is_some())),
    ]))
}

fn read(shared: &Shared, id: u64, name: &[u8], offset: u64, count: u64) -> Step {
    let segment = {
        let mut open = lock(&shared.backups.open);
        let Some((view, used)) = open.views.get_mut(&id) else {
            return err(format!("ERR no backup {id} is open"));
        };
        *used = tokio::time::Instant::now();
        let name = String::from_utf8_lossy(name);
        match view.segments.iter().find(|s| s.file_name() == name) {
            Some(segment) => segment.clone(),
            None => return err(format!("ERR backup {id} copies no segment {name}")),
        }
    };
    let count = count
        .min(BACKUP_CHUNK_BYTES_MAX)
        .min(segment.bytes.saturating_sub(offset));
    let mut buf = vec![0u8; count as usize];
    match segment.read(offset, &mut buf) {
        Ok(()) => Step::Reply(Reply::Bulk(Bytes::from(buf))),
        Err(e) => err(format!("IOERR backup read of {}: {e}", segment.file_name())),
    }
}

/// What `SHOAL.BACKUP BEGIN` answered.
pub struct Begun {
    pub id: String,
    /// Each segment's file name and the bytes of it to copy.
    pub segments: Vec<(String, u64)>,
    /// Each small file's name and its whole content.
    pub small_files: Vec<(String, Bytes)>,
    pub cluster_member: bool,
}

impl Begun {
    /// `BEGIN`'s answer read back (None: not the shape `begin` answers).
    pub fn parse(reply: Reply) -> Option<Begun> {
        let Reply::Array(parts) = reply else {
            return None;
        };
        let [Reply::Integer(id), Reply::Array(segments), Reply::Array(small), Reply::Integer(cluster)] =
            &parts[..]
        else {
            return None;
        };
        let pair = |item: &Reply| match item {
            Reply::Array(p) => match &p[..] {
                [Reply::Bulk(name), second] => {
                    Some((String::from_utf8_lossy(name).into_owned(), second.clone()))
                }
                _ => None,
            },
            _ => None,
        };
        let segments = segments
            .iter()
            .map(|s| match pair(s)? {
                (name, Reply::Integer(bytes)) if bytes >= 0 => Some((name, bytes as u64)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let small_files = small
            .iter()
            .map(|s| match pair(s)? {
                (name, Reply::Bulk(bytes)) => Some((name, bytes)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Begun {
            id: id.to_string(),
            segments,
            small_files,
            cluster_member: *cluster != 0,
        })
    }
}

/// The id of segment file `seg-<id>.log` (None: not a segment's name).
pub fn segment_id(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn number(arg: &Bytes) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
