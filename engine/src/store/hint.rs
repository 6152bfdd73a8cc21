//! Hint files: for each sealed segment, the directory entries that point into it,
//! so a restart reads a compact list instead of scanning every record. One frame:
//! `[len u32 LE][crc32c u32 LE][postcard HintFile]`. A hint that fails its checksum
//! is ignored and the segment is scanned instead. The checksum starts from
//! [`HINT_FORMAT`], so a hint of another format (before entries carried
//! deadlines) fails it and is never misread.

use super::recovery::{frame_len_at, SegmentReader};
use super::{hint_file_name, KeyEntry, Store};
use crate::disk::{Disk, DiskDir, DiskError};
use crate::record::{scan_frame, FrameScan, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
pub(crate) struct HintFile {
    pub segment_id: u32,
    pub written_bytes: u64,
    /// Every batch in the segment has a smaller sequence number.
    pub batch_seq_next: u64,
    pub hlc_max: u64,
    /// CRC32C of the segment's bytes `[0, written_bytes)`: an open that loads
    /// the hint checks the segment against it, so damage to sealed data (a
    /// flipped byte, a truncation) is found at start, not at some later read.
    pub data_crc: u32,
    pub entries: Vec<HintEntry>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct HintEntry {
    pub dir_key: Vec<u8>,
    pub offset: u32,
    pub len: u32,
    pub live: bool,
    /// When the record's set expires (the expiry index's entry).
    pub deadline_ms: Option<u64>,
}

/// What a hint's checksum starts from: the format of its body.
const HINT_FORMAT: &[u8] = b"shoal hint 2: entries with deadlines";

fn hint_crc(len: &[u8], body: &[u8]) -> u32 {
    let seeded = crc32c::crc32c_append(crc32c::crc32c(HINT_FORMAT), len);
    crc32c::crc32c_append(seeded, body)
}

/// Writing a sealed segment's hint. It needs no lock on the store: a sealed
/// segment's data no longer changes, and its hint lists what a scan of that
/// data at open would find (each key's last record in the segment; a later
/// segment's record of the key overrides it at open as it would the scan's).
pub struct HintJob {
    dir: Arc<dyn DiskDir>,
    disk: Arc<dyn Disk>,
    segment_id: u32,
    written_bytes: u64,
    data_crc: u32,
    record_size_max_bytes: u32,
}

impl HintJob {
    pub fn segment_id(&self) -> u32 {
        self.segment_id
    }

    /// Scan the segment and write its hint (to a temporary name, renamed into
    /// place). A segment that does not scan whole gets no hint: the open scans
    /// it and reports the damage.
    pub fn run(&self) -> Result<(), DiskError> {
        let hint = self.scan()?;
        let body = postcard::to_allocvec(&hint).map_err(|e| DiskError::Io(e.to_string()))?;
        let mut bytes = Vec::with_capacity(body.len() + 8);
        let len = body.len() as u32;
        bytes.extend_from_slice(&len.to_le_bytes());
        let crc = hint_crc(&len.to_le_bytes(), &body);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&body);
        let name = hint_file_name(self.segment_id);
        let tmp = format!("{name}.tmp");
        let file = self.dir.open(&tmp, true)?;
        file.set_len(0)?;
        file.write_at(0, &bytes)?;
        file.sync()?;
        self.dir.rename(&tmp, &name)?;
        self.dir.sync_dir()
    }

    fn scan(&self) -> Result<HintFile, DiskError> {
        let mut reader = SegmentReader::new(self.disk.as_ref())?;
        let mut latest: BTreeMap<Vec<u8>, HintEntry> = BTreeMap::new();
        let (mut batch_seq_next, mut hlc_max) = (0u64, 0u64);
        let mut pos = SEGMENT_HEADER_BYTES as usize;
        let end = self.written_bytes as usize;
        while pos < end {
            let frame_len = frame_len_at(
                reader.at(pos, FRAME_HEADER_BYTES)?,
                self.record_size_max_bytes,
            );
            let FrameScan::Valid { view, frame_len } =
                scan_frame(reader.at(pos, frame_len)?, self.record_size_max_bytes)
            else {
                return Err(DiskError::Io(format!(
                    "segment {} does not scan at offset {pos}: no hint written",
                    self.segment_id
                )));
            };
            batch_seq_next = batch_seq_next.max(view.batch_seq + 1);
            hlc_max = hlc_max.max(view.max_hlc().0);
            let entry = HintEntry {
                dir_key: super::dir_key(view.namespace, view.key).into_vec(),
                offset: pos as u32,
                len: frame_len as u32,
                live: view.is_live(),
                deadline_ms: view.deadline_ms(),
            };
            latest.insert(entry.dir_key.clone(), entry);
            pos += frame_len;
        }
        assert_eq!(
            pos, end,
            "a sealed segment's records end where its data does"
        );
        Ok(HintFile {
            segment_id: self.segment_id,
            written_bytes: self.written_bytes,
            batch_seq_next,
            hlc_max,
            data_crc: self.data_crc,
            entries: latest.into_values().collect(),
        })
    }
}

impl Store {
    /// The job that writes the hint of sealed segment `segment_id`.
    pub(crate) fn hint_job(&self, segment_id: u32) -> HintJob {
        let segment = &self.segments[&segment_id];
        assert_ne!(
            segment_id, self.active_id,
            "only a sealed segment gets a hint"
        );
        HintJob {
            dir: self.dir.clone(),
            disk: segment.disk.clone(),
            segment_id,
            written_bytes: segment.written_bytes,
            data_crc: segment.data_crc,
            record_size_max_bytes: self.options.record_size_max_bytes,
        }
    }

    /// The hint for a segment, or `None` when it is missing or damaged.
    pub(crate) fn read_hint(&self, segment_id: u32) -> Option<HintFile> {
        read_hint_file(self.dir.as_ref(), segment_id)
    }
}

/// The hint for a segment in `dir`, or `None` when it is missing or damaged.
pub(crate) fn read_hint_file(dir: &dyn crate::disk::DiskDir, segment_id: u32) -> Option<HintFile> {
    let file = dir.open(&hint_file_name(segment_id), false).ok()?;
    let len_bytes = file.len().ok()?;
    if len_bytes < 8 {
        return None;
    }
    let mut bytes = vec![0u8; len_bytes as usize];
    file.read_at(0, &mut bytes).ok()?;
    let len = u32::from_le_bytes(bytes[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if hint_crc(&bytes[0..4], body) != crc {
        return None;
    }
    let hint: HintFile = postcard::from_bytes(body).ok()?;
    (hint.segment_id == segment_id).then_some(hint)
}

/// Bytes read at once while checksumming a segment.
const CRC_CHUNK_BYTES: u64 = 4 << 20;

/// CRC32C of `disk`'s bytes `[0, len_bytes)`; an error if it is shorter.
pub(crate) fn data_crc(disk: &dyn crate::disk::Disk, len_bytes: u64) -> Result<u32, DiskError> {
    if disk.len()? < len_bytes {
        return Err(DiskError::Io(format!(
            "segment is {} bytes, shorter than its {len_bytes} bytes of data",
            disk.len()?
        )));
    }
    let mut crc = 0u32;
    let mut buf = vec![0u8; CRC_CHUNK_BYTES.min(len_bytes) as usize];
    let mut at = 0u64;
    while at < len_bytes {
        let n = CRC_CHUNK_BYTES.min(len_bytes - at) as usize;
        disk.read_at(at, &mut buf[..n])?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok(crc)
}

impl HintEntry {
    pub(crate) fn entry(&self, segment: u32) -> KeyEntry {
        KeyEntry {
            segment,
            offset: self.offset,
            len: self.len,
            live: self.live,
        }
    }
}
