//! `shoal backup` and `shoal restore`, the operator's side of an online
//! backup (the node's side is `backup`).
//!
//! `backup --addr HOST:PORT --to DIR` asks the node for a backup view
//! (`SHOAL.BACKUP BEGIN`), copies each segment's bytes in chunks into
//! `DIR.partial`, seals the copies into a stopped store
//! (`shoal_engine::store::backup::seal_copies`), writes `MANIFEST` (each
//! copy's length and CRC32C), syncs, and renames the directory to `DIR`: a
//! directory named `DIR` is always a whole backup.
//!
//! `restore --from DIR --data-dir D` checks every copy against `MANIFEST`,
//! builds `D` from them with salvage (which must find nothing lost), and
//! raises the new store's incarnation to the restore's Unix time in seconds,
//! so it never mints a dot the source issued after the backup (the source's
//! incarnation grows by one per restart). A cluster member's backup is
//! refused: a member restores from its replicas (`shoal cluster replace`).
//!
//! Real tokio only: an operator's tool, with the wall clock and blocking I/O.

use crate::backup::{segment_id, Begun};
use crate::filedisk::FileDir;
use crate::resp::Reply;
use crate::salvage::{partial_path, sync_dir, sync_parent};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use shoal_engine::store::backup::seal_copies;
use shoal_engine::store::salvage::SalvageReport;
use shoal_engine::{Store, StoreOptions};
use std::io::{Read, Write};
use std::path::Path;

const MANIFEST_FILE: &str = "MANIFEST";
/// Bytes asked for per `READ` (the node answers at most its own cap).
const CHUNK_BYTES: u64 = crate::backup::BACKUP_CHUNK_BYTES_MAX;
/// How long one request may wait for its reply.
const CALL_TIMEOUT_S: u64 = 60;

/// What `MANIFEST` records of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub source: String,
    pub cluster_member: bool,
    pub taken_at_unix_ms: u64,
    pub segments: Vec<CopiedSegment>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopiedSegment {
    pub file: String,
    pub id: u32,
    pub bytes: u64,
    pub crc32c: u32,
}

/// One RESP connection, one request at a time.
struct Conn {
    stream: std::net::TcpStream,
    buf: BytesMut,
    addr: String,
}

impl Conn {
    fn open(addr: &str, requirepass: Option<&str>) -> Result<Conn, String> {
        let stream = std::net::TcpStream::connect(addr)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(CALL_TIMEOUT_S)))
            .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::new(),
            addr: addr.to_string(),
        };
        if let Some(pass) = requirepass {
            conn.call(&[b"AUTH", pass.as_bytes()])?;
        }
        Ok(conn)
    }

    /// Send one request; its reply, an error reply as `Err`.
    fn call(&mut self, args: &[&[u8]]) -> Result<Reply, String> {
        let mut request = BytesMut::new();
        crate::resp::encode_request(args, &mut request);
        self.stream
            .write_all(&request)
            .map_err(|e| format!("writing to {}: {e}", self.addr))?;
        loop {
            match crate::resp::decode_reply(&mut self.buf).map_err(|e| format!("{e:?}"))? {
                Some(Reply::Error(e)) => return Err(format!("{}: {e}", self.addr)),
                Some(reply) => return Ok(reply),
                None => {}
            }
            let mut chunk = vec![0u8; 256 << 10];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("reading from {}: {e}", self.addr))?;
            if n == 0 {
                return Err(format!("{} closed the connection", self.addr));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `shoal backup`: the node at `addr` copied into `to` (which must not exist).
pub fn backup(addr: &str, requirepass: Option<&str>, to: &Path) -> Result<Manifest, String> {
    if to.exists() {
        return Err(format!(
            "{} exists; a backup writes a new directory",
            to.display()
        ));
    }
    let partial = partial_path(to);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| format!("cannot remove {}: {e}", partial.display()))?;
    }
    let mut conn = Conn::open(addr, requirepass)?;
    let begun = Begun::parse(conn.call(&[b"SHOAL.BACKUP", b"BEGIN"])?).ok_or_else(|| {
        format!("{addr} answered SHOAL.BACKUP BEGIN with something else than a backup view")
    })?;
    let copied = copy_all(&mut conn, &begun, &partial);
    let _ = conn.call(&[b"SHOAL.BACKUP", b"END", begun.id.as_bytes()]);
    let segments = copied?;
    let manifest = Manifest {
        format: 1,
        source: addr.to_string(),
        cluster_member: begun.cluster_member,
        taken_at_unix_ms: unix_ms(),
        segments,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    write_synced(&partial.join(MANIFEST_FILE), text.as_bytes())?;
    sync_dir(&partial)?;
    std::fs::rename(&partial, to).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            to.display()
        )
    })?;
    sync_parent(to)?;
    Ok(manifest)
}

fn copy_all(conn: &mut Conn, begun: &Begun, into: &Path) -> Result<Vec<CopiedSegment>, String> {
    std::fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
    let mut copied = Vec::new();
    for (name, bytes) in &begun.segments {
        let id = segment_id(name)
            .ok_or_else(|| format!("the node named a segment {name:?} this tool does not know"))?;
        let crc32c = copy_segment(conn, &begun.id, name, *bytes, &into.join(name))?;
        copied.push(CopiedSegment {
            file: name.clone(),
            id,
            bytes: *bytes,
            crc32c,
        });
    }
    for (name, bytes) in &begun.small_files {
        write_synced(&into.join(name), bytes)?;
    }
    let dir = FileDir::create(into).map_err(|e| e.to_string())?;
    let sealed: Vec<(u32, u64)> = copied.iter().map(|c| (c.id, c.bytes)).collect();
    seal_copies(&dir, &sealed).map_err(|e| format!("cannot write the backup's catalog: {e}"))?;
    Ok(copied)
}

/// One segment's bytes, chunk by chunk, into `path`; their CRC32C.
fn copy_segment(
    conn: &mut Conn,
    id: &str,
    name: &str,
    bytes: u64,
    path: &Path,
) -> Result<u32, String> {
    let mut file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let (mut offset, mut crc) = (0u64, 0u32);
    while offset < bytes {
        let count = CHUNK_BYTES.min(bytes - offset).to_string();
        let at = offset.to_string();
        let args: [&[u8]; 6] = [
            b"SHOAL.BACKUP",
            b"READ",
            id.as_bytes(),
            name.as_bytes(),
            at.as_bytes(),
            count.as_bytes(),
        ];
        let chunk = match conn.call(&args)? {
            Reply::Bulk(chunk) if !chunk.is_empty() => chunk,
            other => {
                return Err(format!(
                    "reading {name} at {offset}: unexpected reply {other:?}"
                ))
            }
        };
        file.write_all(&chunk)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        crc = crc32c::crc32c_append(crc, &chunk);
        offset += chunk.len() as u64;
    }
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
    Ok(crc)
}

/// `shoal restore`: a data directory `data_dir` (must not exist) made from the
/// backup in `from`.
pub fn restore(from: &Path, data_dir: &Path) -> Result<(Manifest, SalvageReport), String> {
    let text = std::fs::read_to_string(from.join(MANIFEST_FILE)).map_err(|e| {
        format!(
            "{} is not a backup (no readable {MANIFEST_FILE}): {e}",
            from.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{MANIFEST_FILE} in {} is damaged: {e}", from.display()))?;
    if manifest.cluster_member {
        return Err(format!(
            "the backup in {} is of a cluster member ({}); a member is restored from its replicas: start a new node and `shoal cluster replace` the old one",
            from.display(),
            manifest.source
        ));
    }
    for segment in &manifest.segments {
        check_copy(from, segment)?;
    }
    let options = StoreOptions::default();
    let report = crate::salvage::run(from, data_dir, options.clone())?;
    if !report.losses.is_empty() {
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(format!(
            "the backup in {} is not whole: {}",
            from.display(),
            report.losses.join("; ")
        ));
    }
    let raised = FileDir::create(data_dir)
        .map_err(|e| e.to_string())
        .and_then(|dir| Store::open(std::sync::Arc::new(dir), options).map_err(|e| e.to_string()))
        .and_then(|(mut store, _)| {
            store
                .raise_incarnation(unix_ms() / 1000)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = raised {
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(format!(
            "cannot raise the restored store's incarnation: {e}"
        ));
    }
    Ok((manifest, report))
}

/// A copy whose length or CRC32C differs from the manifest's is damaged.
fn check_copy(from: &Path, segment: &CopiedSegment) -> Result<(), String> {
    let path = from.join(&segment.file);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 != segment.bytes || crc32c::crc32c(&bytes) != segment.crc32c {
        return Err(format!(
            "{} is damaged: {} bytes with CRC32C {:08x}, the backup recorded {} bytes with {:08x}",
            path.display(),
            bytes.len(),
            crc32c::crc32c(&bytes),
            segment.bytes,
            segment.crc32c
        ));
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
