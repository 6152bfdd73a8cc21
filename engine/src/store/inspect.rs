//! Read-only offline inspection of a store directory (`shoal inspect`).
//!
//! It owns one question: what is in this directory, and would it open whole? It scans
//! every segment's frames, ignoring hint files for the key map (it only reports
//! whether each hint exists and passes its checksum), applies the recovery decision
//! table of [`super::recovery`] to name each segment's state, and lists every key's
//! latest sibling set, delete-marker-only keys included.
//!
//! It never modifies anything: no `write_at`, `set_len`, `sync`, `remove`, `rename`,
//! no file creation, and no incarnation bump. Unlike `Store::open`, which cuts a torn
//! tail and re-creates a torn segment header, it only reports what it finds, so it
//! is safe to run on the directory of a node that refused to start.

use super::recovery::find_later_batch;
use super::{hint_file_name, segment_file_name};
use crate::disk::{DiskDir, DiskError};
use crate::record::{
    parse_segment_header, read_frame, FrameRead, RecordBody, SEGMENT_HEADER_BYTES,
};
use crate::version::SiblingSet;
use std::collections::BTreeMap;

/// What the scan of one segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCheck {
    pub segment: u32,
    pub file_len_bytes: u64,
    /// Valid frames read before the data ended or damage was found.
    pub records: u64,
    /// Where valid data ends: the first zero header, or the damaged frame's offset.
    pub data_end_bytes: u64,
    pub status: SegmentStatus,
    pub has_hint: bool,
    /// The hint passes its checksum, decodes, and names this segment.
    pub hint_valid: bool,
}

/// A segment's state, by the recovery decision table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentStatus {
    /// Valid frames, then zeros to the end.
    Ok,
    /// The newest, never-synced batch of the last segment is incomplete: recovery
    /// would zero `bytes` bytes from `offset` and go on. A last segment whose
    /// creation was torn (header damaged, nothing written after it) is reported as a
    /// torn tail at offset 0, because recovery re-creates it.
    TornTail { offset: u64, bytes: u64 },
    /// Synced data is damaged at `offset`: recovery would refuse to open.
    Corrupt { offset: u64, reason: String },
    /// The segment header is damaged or names another segment.
    BadHeader,
}

/// The latest record of one key, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedKey {
    pub namespace: u8,
    pub key: Vec<u8>,
    /// May hold only delete markers (`set.is_deleted()`).
    pub set: SiblingSet,
    /// Where the record is: segment id and the frame's byte offset in it.
    pub segment: u32,
    pub offset: u64,
}

/// Everything an inspection found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// In segment order.
    pub segments: Vec<SegmentCheck>,
    /// Sorted by (namespace, key). Keys the cluster forgot (an empty set as their
    /// latest record) are left out.
    pub keys: Vec<InspectedKey>,
    /// What the segment catalog (`SEGMENTS`) says is missing or cut short, and
    /// sealed segments whose data no longer matches their hint.
    pub synced_data_faults: Vec<String>,
}

impl Inspection {
    /// True when the store would open without losing synced data: no corruption, no
    /// bad header, and a torn tail (if any) only in the last segment.
    pub fn is_whole(&self) -> bool {
        let last = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .enumerate()
            .all(|(i, s)| match s.status {
                SegmentStatus::Ok => true,
                SegmentStatus::TornTail { .. } => i == last,
                SegmentStatus::Corrupt { .. } | SegmentStatus::BadHeader => false,
            })
            && self.synced_data_faults.is_empty()
    }

    /// Keys with at least one sibling holding a value.
    pub fn live_key_count(&self) -> usize {
        self.keys.iter().filter(|k| !k.set.is_deleted()).count()
    }
}

/// Inspects the store in `dir` without modifying it. Fails only when the directory
/// or a file cannot be read; damage inside files is reported, not returned as an error.
pub fn inspect_dir(dir: &dyn DiskDir, record_size_max_bytes: u32) -> Result<Inspection, DiskError> {
    let names = dir.list()?;
    let mut ids: Vec<u32> = names.iter().filter_map(|n| segment_id_of(n)).collect();
    ids.sort_unstable();
    let mut latest: BTreeMap<(u8, Vec<u8>), InspectedKey> = BTreeMap::new();
    let mut segments = Vec::with_capacity(ids.len());
    // The newest batch seen so far, over all segments, as recovery tracks it.
    let mut batch_seq_last = 0u64;
    for (i, id) in ids.iter().copied().enumerate() {
        let disk = dir.open(&segment_file_name(id), false)?;
        let file_len_bytes = disk.len()?;
        let len = usize::try_from(file_len_bytes)
            .map_err(|_| DiskError::Io(format!("segment {id} is too large to read")))?;
        let mut data = vec![0u8; len];
        disk.read_at(0, &mut data)?;
        let scan = scan_segment(
            &data,
            id,
            i + 1 == ids.len(),
            record_size_max_bytes,
            &mut batch_seq_last,
            |offset, body| {
                let key = InspectedKey {
                    namespace: body.namespace,
                    key: body.key,
                    set: body.set,
                    segment: id,
                    offset,
                };
                latest.insert((key.namespace, key.key.clone()), key);
            },
        );
        let hint_name = hint_file_name(id);
        let has_hint = names.contains(&hint_name);
        let hint_valid = has_hint && hint_is_valid(dir, &hint_name, id)?;
        segments.push(SegmentCheck {
            segment: id,
            file_len_bytes,
            records: scan.records,
            data_end_bytes: scan.data_end_bytes,
            status: scan.status,
            has_hint,
            hint_valid,
        });
    }
    let synced_data_faults = synced_data_faults(dir, &segments)?;
    Ok(Inspection {
        segments,
        synced_data_faults,
        keys: latest
            .into_values()
            .filter(|k| !k.set.siblings.is_empty())
            .collect(),
    })
}

/// Against the synced mark: the newest segment's data ends before the bytes
/// `SYNCED` recorded as synced (a damaged mark is a fault too).
fn synced_mark_fault(
    dir: &dyn DiskDir,
    segments: &[SegmentCheck],
) -> Result<Option<String>, DiskError> {
    let mark = match super::synced::read_synced_mark(dir) {
        Ok(Some(mark)) => mark,
        Ok(None) => return Ok(None),
        Err(super::OpenError::Disk(e)) => return Err(e),
        Err(e) => return Ok(Some(e.to_string())),
    };
    let newest = segments.iter().max_by_key(|s| s.segment);
    Ok(newest
        .filter(|s| s.segment == mark.segment && s.data_end_bytes < mark.bytes)
        .map(|s| {
            format!(
                "segment {}'s data ends at {}, before the {} bytes SYNCED recorded as synced",
                s.segment, s.data_end_bytes, mark.bytes
            )
        }))
}

/// Against the catalog: listed segments that are gone, files cut from their
/// made length, sealed segments whose data ends before what was synced; and
/// hinted segments whose bytes no longer match their hint's checksum.
fn synced_data_faults(
    dir: &dyn DiskDir,
    segments: &[SegmentCheck],
) -> Result<Vec<String>, DiskError> {
    let mut faults = Vec::new();
    let catalog = match super::catalog::read_catalog(dir) {
        Ok(catalog) => catalog.unwrap_or_default(),
        Err(super::catalog::CatalogError::Disk(e)) => return Err(e),
        Err(super::catalog::CatalogError::Damaged(reason)) => {
            faults.push(reason);
            BTreeMap::new()
        }
    };
    for listed in catalog.values() {
        let Some(found) = segments.iter().find(|s| s.segment == listed.id) else {
            faults.push(format!(
                "segment {} is listed in SEGMENTS but its file is gone",
                listed.id
            ));
            continue;
        };
        if found.file_len_bytes < listed.allocated_bytes {
            faults.push(format!(
                "segment {} is {} bytes, cut from the {} it was made",
                listed.id, found.file_len_bytes, listed.allocated_bytes
            ));
        }
        if listed
            .sealed_bytes
            .is_some_and(|sealed| found.data_end_bytes < sealed)
        {
            faults.push(format!(
                "segment {}'s data ends at {}, before the {} bytes synced when it was sealed",
                listed.id,
                found.data_end_bytes,
                listed.sealed_bytes.unwrap_or(0)
            ));
        }
    }
    faults.extend(synced_mark_fault(dir, segments)?);
    for found in segments.iter().filter(|s| s.hint_valid) {
        let disk = dir.open(&segment_file_name(found.segment), false)?;
        let hint = super::hint::read_hint_file(dir, found.segment);
        let matches = hint.is_some_and(|h| {
            super::hint::data_crc(disk.as_ref(), h.written_bytes).ok() == Some(h.data_crc)
        });
        if !matches {
            faults.push(format!(
                "segment {}'s data does not match the checksum its hint recorded",
                found.segment
            ));
        }
    }
    Ok(faults)
}

/// The id in a segment file name, only for names exactly as the store writes them.
fn segment_id_of(name: &str) -> Option<u32> {
    let id: u32 = name
        .strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()?;
    (segment_file_name(id) == name).then_some(id)
}

struct SegmentScan {
    records: u64,
    data_end_bytes: u64,
    status: SegmentStatus,
}

/// Walks the frames of one segment's bytes, calling `on_record` for each valid one in
/// order, and classifies where the walk stopped exactly as recovery would.
fn scan_segment(
    data: &[u8],
    id: u32,
    is_last: bool,
    record_max: u32,
    batch_seq_last: &mut u64,
    mut on_record: impl FnMut(u64, RecordBody),
) -> SegmentScan {
    if parse_segment_header(data) != Some(id) {
        let nothing_written =
            data.len() < SEGMENT_HEADER_BYTES as usize || data.iter().skip(8).all(|b| *b == 0);
        let status = if is_last && nothing_written {
            SegmentStatus::TornTail {
                offset: 0,
                bytes: nonzero_end(data, 0) as u64,
            }
        } else {
            SegmentStatus::BadHeader
        };
        return SegmentScan {
            records: 0,
            data_end_bytes: 0,
            status,
        };
    }
    let mut records = 0u64;
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let stopped = |records: u64, pos: usize, status| SegmentScan {
        records,
        data_end_bytes: pos as u64,
        status,
    };
    loop {
        let damage = match read_frame(&data[pos..], record_max) {
            FrameRead::Valid { body, frame_len } => {
                *batch_seq_last = (*batch_seq_last).max(body.batch_seq);
                on_record(pos as u64, body);
                records += 1;
                pos += frame_len;
                continue;
            }
            FrameRead::Zero if data[pos..].iter().all(|b| *b == 0) => {
                return stopped(records, pos, SegmentStatus::Ok);
            }
            FrameRead::Zero => "zero header followed by data",
            FrameRead::Invalid(reason) => reason,
        };
        let offset = pos as u64;
        if !is_last {
            let reason = damage.to_string();
            return stopped(records, pos, SegmentStatus::Corrupt { offset, reason });
        }
        if let Some((later, seq)) = find_later_batch(data, pos, record_max, *batch_seq_last) {
            let reason =
                format!("{damage}; a later synced batch ({seq}) follows at offset {later}");
            return stopped(records, pos, SegmentStatus::Corrupt { offset, reason });
        }
        let bytes = (nonzero_end(data, pos) - pos) as u64;
        return stopped(records, pos, SegmentStatus::TornTail { offset, bytes });
    }
}

/// One past the last nonzero byte at or after `from` (`from` when there is none).
fn nonzero_end(data: &[u8], from: usize) -> usize {
    data.iter()
        .rposition(|b| *b != 0)
        .map_or(from, |i| (i + 1).max(from))
}

/// Whether a hint would be used by recovery (`hint::read_hint_file`: its
/// checksum of its format, and a body for `segment_id`).
fn hint_is_valid(dir: &dyn DiskDir, name: &str, segment_id: u32) -> Result<bool, DiskError> {
    match dir.open(name, false) {
        Ok(_) => Ok(super::hint::read_hint_file(dir, segment_id).is_some()),
        Err(DiskError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDir;
    use crate::store::{OpenError, Store, StoreOptions, WriteOp};
    use bytes::Bytes;
    use std::sync::Arc;

    const RECORD_SIZE_MAX_BYTES: u32 = 1024;

    /// (namespace, key) → the winner's value, `None` for a deleted key.
    type Model = BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>;

    fn options() -> StoreOptions {
        StoreOptions {
            segment_size_bytes: 4096,
            record_size_max_bytes: RECORD_SIZE_MAX_BYTES,
            ..Default::default()
        }
    }

    fn open(dir: &MemDir) -> Store {
        Store::open(Arc::new(dir.clone()), options())
            .expect("open")
            .0
    }

    fn commit(store: &mut Store, ops: &[WriteOp], wall_ms: u64) {
        let batch = store.prepare(ops, wall_ms);
        batch.sync().expect("sync");
        for result in store.publish(batch) {
            assert!(result.expect("write accepted").applied);
        }
    }

    fn put(namespace: u8, key: &str, value: &str) -> WriteOp {
        WriteOp::put(
            namespace,
            Bytes::from(key.to_string()),
            Bytes::from(value.to_string()),
        )
    }

    fn inspect(dir: &MemDir) -> Inspection {
        inspect_dir(dir, RECORD_SIZE_MAX_BYTES).expect("inspect")
    }

    /// Four keys written once, three rounds over 20 keys in two namespaces, then
    /// four deletes: 68 records over several segments, sealed ones with hints.
    fn populate(dir: &MemDir) -> (Store, Model) {
        let mut store = open(dir);
        let mut model = Model::new();
        let mut wall_ms = 1_000;
        // Written once, so segment 1 keeps latest records too.
        let first: Vec<WriteOp> = (0..4)
            .map(|i| {
                let key = format!("first{i}");
                model.insert((2, key.clone().into_bytes()), Some(b"once".to_vec()));
                put(2, &key, "once")
            })
            .collect();
        commit(&mut store, &first, wall_ms);
        for round in 0..3 {
            let ops: Vec<WriteOp> = (0..20)
                .map(|i| {
                    let (namespace, key) = ((i % 2) as u8, format!("key{i}"));
                    let value = format!("r{round}-{}", "v".repeat(100));
                    model.insert(
                        (namespace, key.clone().into_bytes()),
                        Some(value.clone().into_bytes()),
                    );
                    put(namespace, &key, &value)
                })
                .collect();
            for chunk in ops.chunks(4) {
                wall_ms += 1;
                commit(&mut store, chunk, wall_ms);
            }
        }
        let deletes: Vec<WriteOp> = (0..4)
            .map(|i| {
                let (namespace, key) = ((i % 2) as u8, format!("key{i}"));
                model.insert((namespace, key.clone().into_bytes()), None);
                WriteOp::delete(namespace, Bytes::from(key))
            })
            .collect();
        commit(&mut store, &deletes, wall_ms + 1);
        assert!(store.segment_count() >= 3, "want several segments");
        (store, model)
    }

    fn winners(inspection: &Inspection) -> Model {
        inspection
            .keys
            .iter()
            .map(|k| {
                let winner = k.set.winner().and_then(|s| s.value.as_ref());
                ((k.namespace, k.key.clone()), winner.map(|v| v.to_vec()))
            })
            .collect()
    }

    /// Every file's name and bytes.
    fn snapshot(dir: &MemDir) -> Vec<(String, Vec<u8>)> {
        dir.list()
            .expect("list")
            .into_iter()
            .map(|name| {
                let file = dir.open(&name, false).expect("open");
                let mut bytes = vec![0u8; file.len().expect("len") as usize];
                file.read_at(0, &mut bytes).expect("read");
                (name, bytes)
            })
            .collect()
    }

    fn segment(inspection: &Inspection, id: u32) -> &SegmentCheck {
        let found = inspection.segments.iter().find(|s| s.segment == id);
        found.expect("segment listed")
    }

    #[test]
    fn inspect_whole_store_lists_every_key_and_modifies_nothing() {
        let dir = MemDir::new();
        let (store, model) = populate(&dir);
        drop(store);
        let files_before = snapshot(&dir);
        let (used_before, syncs_before) = (dir.used_bytes(), dir.sync_count());

        let inspection = inspect(&dir);

        assert_eq!(snapshot(&dir), files_before);
        assert_eq!(dir.list().expect("list").len(), files_before.len());
        assert_eq!(dir.used_bytes(), used_before);
        assert_eq!(dir.sync_count(), syncs_before);
        assert!(inspection.is_whole());
        assert_eq!(winners(&inspection), model);
        assert_eq!(inspection.live_key_count(), 20);
        let sorted = inspection
            .keys
            .windows(2)
            .all(|w| (w[0].namespace, &w[0].key) < (w[1].namespace, &w[1].key));
        assert!(sorted, "keys sorted by (namespace, key)");
        let ids: Vec<u32> = inspection.segments.iter().map(|s| s.segment).collect();
        assert_eq!(ids, (1..=ids.len() as u32).collect::<Vec<_>>());
        let records: u64 = inspection.segments.iter().map(|s| s.records).sum();
        assert_eq!(records, 68);
        let (last, sealed) = inspection.segments.split_last().expect("segments");
        for s in sealed {
            assert_eq!(s.status, SegmentStatus::Ok, "{s:?}");
            assert!(s.has_hint && s.hint_valid, "{s:?}");
            assert_eq!(s.file_len_bytes, 4096);
            assert!(s.data_end_bytes > SEGMENT_HEADER_BYTES);
        }
        assert_eq!(last.status, SegmentStatus::Ok);
        assert!(!last.has_hint && !last.hint_valid);

        let store = open(&dir);
        assert_eq!(store.dump().len(), inspection.keys.len());
        for k in &inspection.keys {
            let stored = store.get(k.namespace, &k.key).expect("read");
            assert_eq!(stored.as_ref(), Some(&k.set), "{k:?}");
        }
    }

    #[test]
    fn inspect_torn_tail_in_last_segment_is_whole() {
        let dir = MemDir::new();
        let (mut store, model) = populate(&dir);
        // A batch written but never synced, then torn: only its first half stays.
        let torn_op = put(0, "torn", &"x".repeat(200));
        let batch = store.prepare(&[torn_op], 9_000);
        assert!(!batch.is_empty());
        let complete = inspect(&dir);
        let torn = complete
            .keys
            .iter()
            .find(|k| k.key == b"torn")
            .expect("torn");
        let last = complete.segments.last().expect("segments");
        assert_eq!(last.segment, torn.segment);
        let frame_len = last.data_end_bytes - torn.offset;
        let kept_bytes = frame_len / 2;
        let disk = dir
            .open(&segment_file_name(torn.segment), false)
            .expect("open");
        let zeros = vec![0u8; (frame_len - kept_bytes) as usize];
        disk.write_at(torn.offset + kept_bytes, &zeros)
            .expect("tear");
        drop(batch);
        drop(store);

        let inspection = inspect(&dir);

        let last = inspection.segments.last().expect("segments");
        let expected = SegmentStatus::TornTail {
            offset: torn.offset,
            bytes: kept_bytes,
        };
        assert_eq!(last.status, expected);
        assert_eq!(last.data_end_bytes, torn.offset);
        assert!(inspection.is_whole());
        assert_eq!(winners(&inspection), model, "torn record not listed");
        // Recovery agrees on where the tail is and how much it cuts.
        let (_, report) = Store::open(Arc::new(dir.clone()), options()).expect("open");
        assert_eq!(
            report.torn_tail,
            Some((torn.segment, torn.offset, kept_bytes))
        );
    }

    #[test]
    fn inspect_damage_before_a_later_batch_is_corrupt() {
        let dir = MemDir::new();
        let mut store = open(&dir);
        // More later batches than can ever be unsynced at once: the damage must have
        // been synced.
        let keys = ["a", "b", "c", "d", "e", "f", "g"];
        assert!(keys.len() as u64 > crate::store::UNSYNCED_BATCHES_MAX + 1);
        for (i, key) in keys.into_iter().enumerate() {
            commit(&mut store, &[put(0, key, "value")], 1_000 + i as u64);
        }
        drop(store);
        let whole = inspect(&dir);
        let first = whole.keys.iter().find(|k| k.key == b"a").expect("a");
        dir.corrupt_byte(&segment_file_name(1), first.offset + 10)
            .expect("corrupt");

        let inspection = inspect(&dir);

        let only = &inspection.segments[0];
        match &only.status {
            SegmentStatus::Corrupt { offset, reason } => {
                assert_eq!(*offset, first.offset);
                assert!(reason.contains("later synced batch"), "{reason}");
            }
            other => panic!("want corrupt, got {other:?}"),
        }
        assert!(!inspection.is_whole());
        match Store::open(Arc::new(dir.clone()), options()) {
            Err(OpenError::Corrupt {
                segment, offset, ..
            }) => assert_eq!((segment, offset), (1, first.offset)),
            Err(other) => panic!("wrong error {other:?}"),
            Ok(_) => panic!("recovery opened a damaged store"),
        }
    }

    #[test]
    fn inspect_corrupt_byte_in_sealed_segment_is_corrupt_at_its_frame() {
        let dir = MemDir::new();
        let (store, _) = populate(&dir);
        drop(store);
        let whole = inspect(&dir);
        let victim = whole
            .keys
            .iter()
            .filter(|k| k.segment == 1)
            .max_by_key(|k| k.offset)
            .expect("a key whose latest record is in segment 1");
        dir.corrupt_byte(&segment_file_name(1), victim.offset + 10)
            .expect("corrupt");

        let inspection = inspect(&dir);

        let damaged = segment(&inspection, 1);
        match &damaged.status {
            SegmentStatus::Corrupt { offset, reason } => {
                assert_eq!(*offset, victim.offset);
                assert!(!reason.is_empty());
            }
            other => panic!("want corrupt, got {other:?}"),
        }
        assert_eq!(damaged.data_end_bytes, victim.offset);
        assert!(damaged.records < segment(&whole, 1).records);
        assert!(damaged.has_hint && damaged.hint_valid);
        for s in &inspection.segments[1..] {
            assert_eq!(s.status, SegmentStatus::Ok, "{s:?}");
        }
        assert!(!inspection.is_whole());
    }

    #[test]
    fn inspect_damaged_hint_is_reported_and_data_stays_whole() {
        let dir = MemDir::new();
        let (store, model) = populate(&dir);
        drop(store);
        dir.corrupt_byte(&hint_file_name(1), 12).expect("corrupt");

        let inspection = inspect(&dir);

        let first = segment(&inspection, 1);
        assert!(first.has_hint && !first.hint_valid);
        assert_eq!(first.status, SegmentStatus::Ok);
        assert!(segment(&inspection, 2).hint_valid);
        assert!(inspection.is_whole());
        assert_eq!(winners(&inspection), model);
    }

    #[test]
    fn inspect_bad_header_in_sealed_segment_is_not_whole() {
        let dir = MemDir::new();
        let (store, _) = populate(&dir);
        drop(store);
        dir.corrupt_byte(&segment_file_name(1), 3).expect("corrupt");

        let inspection = inspect(&dir);

        let first = segment(&inspection, 1);
        assert_eq!(first.status, SegmentStatus::BadHeader);
        assert_eq!((first.records, first.data_end_bytes), (0, 0));
        assert!(!inspection.is_whole());
    }

    #[test]
    fn inspect_torn_creation_of_last_segment_is_a_torn_tail() {
        let dir = MemDir::new();
        let disk = dir.open(&segment_file_name(1), true).expect("create");
        disk.set_len(4096).expect("set_len");
        disk.write_at(0, &crate::record::segment_header(1)[..5])
            .expect("partial header");

        let inspection = inspect(&dir);

        let expected = SegmentStatus::TornTail {
            offset: 0,
            bytes: 5,
        };
        assert_eq!(inspection.segments[0].status, expected);
        assert!(inspection.is_whole());
        assert!(inspection.keys.is_empty());
        Store::open(Arc::new(dir.clone()), options()).expect("recovery re-creates it");
    }

    #[test]
    fn inspect_empty_directory_is_whole_and_empty() {
        let inspection = inspect(&MemDir::new());
        assert!(inspection.segments.is_empty() && inspection.keys.is_empty());
        assert!(inspection.is_whole());
    }
}
