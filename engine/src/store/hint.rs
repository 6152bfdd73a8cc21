//! Hint files: for each sealed segment, the directory entries that point into it,
//! so a restart reads a compact list instead of scanning every record. One frame:
//! `[len u32 LE][crc32c u32 LE][postcard HintFile]`. A hint that fails its checksum
//! is ignored and the segment is scanned instead. The checksum starts from
//! [`HINT_FORMAT`], so a hint of another format (before entries carried
//! deadlines) fails it and is never misread.

use super::recovery::{frame_len_at, SegmentReader};
use super::{hint_file_name, KeyEntry, Store};
use crate::disk::{Disk, DiskDir, DiskError};
use crate::fields::stored_key_slot;
use crate::record::{scan_frame, FrameScan, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A hint's body. `entries` is a `Vec<HintEntry>` when read; a hint being
/// written lists them straight from its scan ([`LastRecords`]), in the same
/// encoding.
#[derive(Serialize, Deserialize)]
pub(crate) struct HintFile<E = Vec<HintEntry>> {
    pub segment_id: u32,
    pub written_bytes: u64,
    /// Every batch in the segment has a smaller sequence number.
    pub batch_seq_next: u64,
    pub hlc_max: u64,
    /// CRC32C of the segment's bytes `[0, written_bytes)`: an open that loads
    /// the hint checks the segment against it, so damage to sealed data (a
    /// flipped byte, a truncation) is found at start, not at some later read.
    pub data_crc: u32,
    pub entries: E,
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
        let bytes = encode_hint(&hint)?;
        let name = hint_file_name(self.segment_id);
        let tmp = format!("{name}.tmp");
        let file = self.dir.open(&tmp, true)?;
        file.set_len(0)?;
        file.write_at(0, &bytes)?;
        file.sync()?;
        self.dir.rename(&tmp, &name)?;
        self.dir.sync_dir()
    }

    fn scan(&self) -> Result<HintFile<LastRecords>, DiskError> {
        let mut reader = SegmentReader::new(self.disk.as_ref())?;
        let mut last = LastRecords::default();
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
            let record = Listed {
                offset: pos as u32,
                len: frame_len as u32,
                live: view.is_live(),
                deadline_ms: view.deadline_ms(),
            };
            last.push(view.namespace, view.key, record);
            pos += frame_len;
        }
        assert_eq!(
            pos, end,
            "a sealed segment's records end where its data does"
        );
        last.keep_last_by_key();
        Ok(HintFile {
            segment_id: self.segment_id,
            written_bytes: self.written_bytes,
            batch_seq_next,
            hlc_max,
            data_crc: self.data_crc,
            entries: last,
        })
    }
}

/// A hint as its file holds it: `[len][crc][body]`, built in one buffer.
fn encode_hint<E: Serialize>(hint: &HintFile<E>) -> Result<Vec<u8>, DiskError> {
    let mut bytes =
        postcard::to_extend(hint, vec![0u8; 8]).map_err(|e| DiskError::Io(e.to_string()))?;
    let len = u32::try_from(bytes.len() - 8).expect("a hint's body fits its u32 length");
    let crc = hint_crc(&len.to_le_bytes(), &bytes[8..]);
    bytes[0..4].copy_from_slice(&len.to_le_bytes());
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Each key's last record in a segment, as a scan meets them: every key in
/// one buffer and no allocation per record, so a sealed segment of a million
/// small records costs about 50 bytes per record while its hint is built (a
/// map of owned keys cost about 250, and the small allocations it freed
/// stayed in the process's resident memory among the key directory's).
#[derive(Default)]
struct LastRecords {
    /// Directory keys, back to back.
    keys: Vec<u8>,
    /// In log order until [`LastRecords::keep_last_by_key`].
    records: Vec<Scanned>,
}

/// One record the scan met; its directory key is at `key_start` in `keys`.
struct Scanned {
    key_start: u32,
    key_len: u32,
    listed: Listed,
}

/// What a hint lists of a record, besides its key.
struct Listed {
    offset: u32,
    len: u32,
    live: bool,
    deadline_ms: Option<u64>,
}

impl LastRecords {
    fn push(&mut self, namespace: u8, key: &[u8], listed: Listed) {
        // A segment's keys are fewer bytes than its data, whose offsets are u32.
        let key_start = u32::try_from(self.keys.len()).expect("a segment's keys fit in u32");
        let key_len = u32::try_from(3 + key.len()).expect("a key fits in u32");
        self.keys.push(namespace);
        let slot = stored_key_slot(namespace, key);
        self.keys.extend_from_slice(&slot.to_be_bytes());
        self.keys.extend_from_slice(key);
        self.records.push(Scanned {
            key_start,
            key_len,
            listed,
        });
    }

    fn key(&self, record: &Scanned) -> &[u8] {
        let start = record.key_start as usize;
        &self.keys[start..start + record.key_len as usize]
    }

    /// Keep each key's last record (the highest offset), ordered by key.
    fn keep_last_by_key(&mut self) {
        let mut records = std::mem::take(&mut self.records);
        records.sort_unstable_by(|a, b| {
            self.key(a)
                .cmp(self.key(b))
                .then(b.listed.offset.cmp(&a.listed.offset))
        });
        records.dedup_by(|later, first| self.key(later) == self.key(first));
        self.records = records;
    }
}

impl Serialize for LastRecords {
    /// As `Vec<HintEntry>` serializes: a sequence of entries.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.records.iter().map(|r| ListedEntry(self, r)))
    }
}

/// One kept record, serialized as its [`HintEntry`] would be.
struct ListedEntry<'a>(&'a LastRecords, &'a Scanned);

impl Serialize for ListedEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (last, record) = (self.0, self.1);
        let listed = &record.listed;
        let mut entry = serializer.serialize_struct("HintEntry", 5)?;
        // As `Vec<u8>`: a sequence of bytes.
        entry.serialize_field("dir_key", &KeyBytes(last.key(record)))?;
        entry.serialize_field("offset", &listed.offset)?;
        entry.serialize_field("len", &listed.len)?;
        entry.serialize_field("live", &listed.live)?;
        entry.serialize_field("deadline_ms", &listed.deadline_ms)?;
        entry.end()
    }
}

/// Key bytes serialized as a `Vec<u8>` is (a sequence of `u8`).
struct KeyBytes<'a>(&'a [u8]);

impl Serialize for KeyBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// What a hint lists for records met in this order: each directory key's
    /// last record, by key (the map of owned keys hints were once built with).
    fn listed_by_a_map(records: &[(u8, Vec<u8>, bool, Option<u64>)]) -> Vec<HintEntry> {
        let mut latest = BTreeMap::new();
        for (i, (namespace, key, live, deadline_ms)) in records.iter().enumerate() {
            let dir_key = super::super::dir_key(*namespace, key).into_vec();
            let entry = HintEntry {
                dir_key: dir_key.clone(),
                offset: 100 * i as u32,
                len: 7 + i as u32,
                live: *live,
                deadline_ms: *deadline_ms,
            };
            latest.insert(dir_key, entry);
        }
        latest.into_values().collect()
    }

    fn hint_of(entries: impl Serialize) -> HintFile {
        let written = HintFile {
            segment_id: 3,
            written_bytes: 4096,
            batch_seq_next: 12,
            hlc_max: 99,
            data_crc: 0xdead_beef,
            entries,
        };
        let bytes = encode_hint(&written).unwrap();
        let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(len + 8, bytes.len());
        let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(crc, hint_crc(&bytes[0..4], &bytes[8..]));
        postcard::from_bytes(&bytes[8..]).unwrap()
    }

    fn records() -> impl Strategy<Value = Vec<(u8, Vec<u8>, bool, Option<u64>)>> {
        let key = proptest::collection::vec(0u8..4, 0..4);
        let record = (
            0u8..3,
            key,
            any::<bool>(),
            proptest::option::of(0u64..1 << 40),
        );
        proptest::collection::vec(record, 0..60)
    }

    proptest! {
        /// A hint built from the scan's buffer reads back exactly as one
        /// built from a map of owned keys: same entries, same order.
        #[test]
        fn last_records_list_what_a_map_of_keys_did(records in records()) {
            let mut last = LastRecords::default();
            for (i, (namespace, key, live, deadline_ms)) in records.iter().enumerate() {
                let scanned = Listed {
                    offset: 100 * i as u32,
                    len: 7 + i as u32,
                    live: *live,
                    deadline_ms: *deadline_ms,
                };
                last.push(*namespace, key, scanned);
            }
            last.keep_last_by_key();
            let read = hint_of(last);
            let expected = hint_of(listed_by_a_map(&records));
            prop_assert_eq!(read.entries.len(), expected.entries.len());
            for (got, want) in read.entries.iter().zip(&expected.entries) {
                prop_assert_eq!(&got.dir_key, &want.dir_key);
                prop_assert_eq!((got.offset, got.len), (want.offset, want.len));
                prop_assert_eq!((got.live, got.deadline_ms), (want.live, want.deadline_ms));
            }
            prop_assert_eq!((read.segment_id, read.batch_seq_next), (3, 12));
        }
    }
}
