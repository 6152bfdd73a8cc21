//! The storage engine: an append-only log of segments on a [`DiskDir`], a key
//! directory in memory (values stay on disk), hint files for fast restart, and
//! compaction. Every record holds a key's whole sibling set.
//!
//! The write path is split for group commit. The caller (one committer at a time)
//! calls [`Store::prepare`] with a batch of operations: it computes the new sibling
//! sets and writes the records, unsynced. Then it syncs the returned
//! [`PreparedBatch`] without holding any lock, and calls [`Store::publish`], which
//! makes the batch visible to readers. An acknowledgement may be sent only after
//! `publish` of a batch whose sync succeeded. A failed sync goes to
//! [`Store::sync_failed`], which poisons the store: writes are refused until restart.

pub mod backup;
mod catalog;
mod chores;
mod collection_deadline;
mod compaction;
mod compaction_copy;
mod expiry;
mod hint;
pub mod inspect;
mod keydir;
pub mod modify;
mod observer;
mod ops;
mod prepare;
mod recovery;
pub mod salvage;
mod scrub;
mod staging;
mod synced;
pub use synced::{read_synced_mark, SyncedMark};

pub use chores::Chore;
pub use compaction::{CompactionPlan, CompactionProgress, CompactionSync};
pub use compaction_copy::{CompactionCopies, CompactionReads};
pub use observer::{Applied, Change, StoreObserver};
pub use recovery::{set_aside_segments, OpenError, RecoveryReport, SET_ASIDE_PREFIX};
pub use scrub::{DamagedRecord, ScrubCursor, ScrubStep, DAMAGE_FOUND_MAX};

use crate::disk::{Disk, DiskDir, DiskError};
use crate::fields::stored_key_slot;
use crate::record::{
    encode_frame, read_frame, FrameRead, RecordBody, RecordBodyRef, FRAME_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::version::{HlcClock, NodeId, SiblingSet, VersionVector};
use bytes::Bytes;
pub use ops::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most batches that may be written but not yet synced at once. The committer
/// keeps at most this many syncs in flight; recovery relies on the bound to tell a
/// torn tail from corruption.
pub const UNSYNCED_BATCHES_MAX: u64 = 4;

/// Tunables; see `Default` for the production values.
/// How many largest client values one record holds side by side: the share
/// of the record limit a value may take ([`Store::value_size_max_bytes`]), by
/// default ([`StoreOptions::values_per_record`]).
pub const CONCURRENT_VALUES_PER_RECORD: usize = 4;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// This node's id in dots.
    pub node_id: NodeId,
    /// Each segment is preallocated to this size.
    pub segment_size_bytes: u64,
    /// Largest record (a key's whole sibling set) accepted. A client's value
    /// may take a share of it only ([`Store::value_size_max_bytes`]).
    pub record_size_max_bytes: u32,
    pub key_size_max_bytes: usize,
    /// A written value may take `1 / values_per_record` of the record limit,
    /// so that this many concurrent ones merge into one record. A store whose
    /// values are whole sibling sets already (the hint store) says 1.
    pub values_per_record: usize,
    /// A client write may leave a set of `1 / write_sets_per_record` of the
    /// record limit, so that this many replicas' copies, each written that
    /// way, merge into one record (`prepare::FrameLimit`). The hint store,
    /// whose writes are replicas' merges already, says 1.
    pub write_sets_per_record: u32,
    /// Writes that would leave more concurrent siblings than this are refused.
    pub siblings_max: usize,
    /// A sealed segment is compacted once this share of it is dead.
    pub compaction_dead_percent_min: u64,
    /// Whether compaction may drop delete markers (from the oldest segment). A
    /// replica in a cluster must not: another replica may still hold a value the
    /// marker covers, and anti-entropy would bring it back (G4). Cluster nodes keep
    /// their markers until a cluster-wide collection exists.
    pub delete_markers_collectable: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            node_id: 1,
            segment_size_bytes: 128 << 20,
            record_size_max_bytes: 64 << 20,
            key_size_max_bytes: 64 << 10,
            values_per_record: CONCURRENT_VALUES_PER_RECORD,
            write_sets_per_record: 2,
            siblings_max: 64,
            compaction_dead_percent_min: 50,
            delete_markers_collectable: true,
        }
    }
}

/// Where a key's latest record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    /// At least one sibling holds a value (false: only delete markers).
    pub live: bool,
}

pub(crate) struct Segment {
    pub disk: Arc<dyn Disk>,
    /// End of written data.
    pub written_bytes: u64,
    /// Bytes of records that a later record of the same key superseded.
    pub dead_bytes: u64,
    /// CRC32C of `[0, written_bytes)` as this process wrote (or verified) it,
    /// carried into the segment's hint when it is sealed: damage to the file
    /// after the bytes were written no longer matches it.
    pub data_crc: u32,
}

/// One encoded record waiting to be appended.
pub(crate) struct PendingFrame {
    pub dir_key: Box<[u8]>,
    pub bytes: Vec<u8>,
    pub live: bool,
    /// The record's set hash for the anti-entropy digests (0 when they are off;
    /// `None`: an empty set, which leaves them).
    pub set_hash: Option<u64>,
    /// When the record's set expires ([`SiblingSet::deadline_ms`]; compaction's
    /// copies leave the expiry index as it is and say `None`).
    pub deadline_ms: Option<u64>,
}

/// Where an appended frame landed.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Placement {
    pub(crate) fn entry(self, live: bool) -> KeyEntry {
        KeyEntry {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
            live,
        }
    }
}

/// A batch written but not yet synced or visible.
pub struct PreparedBatch {
    results: Vec<Result<WriteOutcome, WriteError>>,
    /// (directory key, new entry) in write order.
    updates: Vec<(Box<[u8]>, KeyEntry)>,
    /// Per update, the new set's hash (empty when digests are off; `None`: the
    /// key was forgotten).
    set_hashes: Vec<Option<u64>>,
    /// Per update, when the new set expires.
    deadlines: Vec<Option<u64>>,
    /// Delete-marker sets this batch forgets (`WriteOp::forget_if`).
    forgotten: u64,
    sync_target: Option<Arc<dyn Disk>>,
    batch_seq: u64,
    /// Told when the sync succeeds (the store's observer, if any).
    observer: Option<Arc<dyn StoreObserver>>,
}

impl PreparedBatch {
    /// Make the batch durable. Call without holding the store's lock.
    pub fn sync(&self) -> Result<(), DiskError> {
        match &self.sync_target {
            Some(disk) => disk.sync()?,
            None => return Ok(()),
        }
        if let Some(observer) = &self.observer {
            observer.synced(self.batch_seq);
        }
        Ok(())
    }

    /// True when nothing was written (all refused or no-ops).
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }
}

/// Counters for INFO and the benches.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub batches_published: u64,
    pub records_written: u64,
    pub syncs_failed: u64,
    pub compactions_done: u64,
    /// Segments compaction gave up on because a record in them no longer reads
    /// (they stay until the damage is dealt with; the next open refuses them).
    pub compaction_segments_damaged: u64,
    pub compaction_bytes_rewritten: u64,
    pub tombstones_collected: u64,
    /// Delete-marker sets forgotten because every replica held them (cluster).
    pub tombstones_forgotten: u64,
    pub disk_full_refusals: u64,
    /// Client writes refused because they would leave more than `siblings_max`
    /// concurrent siblings (the writer must resolve them first).
    pub sibling_writes_refused: u64,
    /// Replica merges whose result is above `siblings_max`. They are kept whole:
    /// each sibling is a write some node acknowledged, and a merge that dropped
    /// one would lose it.
    pub sibling_merges_over_cap: u64,
    /// Replica merges refused because the merged set is over the record limit
    /// (more concurrent large values than a record holds): that key's replicas
    /// stay apart until a write covers its siblings.
    pub merges_over_record_limit: u64,
    /// Reads that found a record damaged (checksum, zeroed, segment gone)
    /// since the store opened: synced data went bad under a running node.
    pub records_unreadable: u64,
    /// Replica merges (repair, restore) that replaced a record which no
    /// longer read, and copies forgotten over one (`scrub`).
    pub damaged_records_replaced: u64,
    /// The most siblings one key's set held in any write this store made since it
    /// opened.
    pub siblings_largest: u64,
    /// Hints of sealed segments written.
    pub hints_written: u64,
    /// Hints or removals of compacted files that failed (the next open scans
    /// the segment, or removes the files).
    pub chores_failed: u64,
}

/// Directory key: namespace, slot (big endian), key. Sorting by it groups keys by
/// namespace, then slot, which SCAN's cursor and partition streaming rely on.
pub(crate) fn dir_key(namespace: u8, key: &[u8]) -> Box<[u8]> {
    let slot = stored_key_slot(namespace, key);
    let mut k = Vec::with_capacity(3 + key.len());
    k.push(namespace);
    k.extend_from_slice(&slot.to_be_bytes());
    k.extend_from_slice(key);
    k.into_boxed_slice()
}

/// Which stored database each selected one stands for after SWAPDBs
/// (`shoal-net`'s `databases`): kept with the store so backups and salvage
/// carry it.
pub const DATABASES_FILE: &str = "DATABASES";

pub(crate) fn segment_file_name(id: u32) -> String {
    format!("seg-{id:08}.log")
}

pub(crate) fn hint_file_name(id: u32) -> String {
    format!("seg-{id:08}.hint")
}

pub struct Store {
    dir: Arc<dyn DiskDir>,
    options: StoreOptions,
    keydir: keydir::KeyDir,
    segments: BTreeMap<u32, Segment>,
    active_id: u32,
    next_batch_seq: u64,
    /// Dots issued in this incarnation start here, so a restart that lost unsynced
    /// writes never reissues a dot another replica may already hold.
    counter_floor: u64,
    /// The highest dot counter this incarnation issued. When compaction collects a
    /// delete marker, the key's context goes with it, so the floor is raised past
    /// this: a later write to that key must not reissue a dot the marker covered.
    counter_issued_max: u64,
    /// When an open ever cut a tail: the least counter of the life after the
    /// latest cut (see [`Store::mint_may_claim_lost_dots`]).
    cut_a_tail_below: Option<u64>,
    /// How far the active segment is known synced (`SYNCED`).
    synced: synced::SyncedMarks,
    clock: HlcClock,
    live_keys: BTreeMap<u8, u64>,
    poisoned: Option<String>,
    /// Keys written by batches that are prepared but not yet published: their batch,
    /// sibling set and record, so a later batch builds on them (pipelined group
    /// commit) and a hint written meanwhile lists them.
    staged: staging::Staging,
    compaction: compaction::State,
    chores: chores::Chores,
    stats: StoreStats,
    /// Where reads and scrubs found records damaged, for the driver, and
    /// [`StoreStats::records_unreadable`] (`scrub`; reads take `&self`).
    damage_found: scrub::DamageRegister,
    /// Anti-entropy digests, kept once [`Store::enable_digests`] was called.
    digests: Option<crate::digest::DigestTree>,
    /// Published keys that expire (`expiry`).
    expiring: expiry::ExpiryIndex,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl Store {
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            records_unreadable: self.damage_found.records_unreadable(),
            ..self.stats.clone()
        }
    }

    /// A read found `entry`'s record damaged: counted, and the error to return.
    fn unreadable(&self, entry: KeyEntry, reason: &'static str) -> ReadError {
        self.damage_found.note(entry);
        ReadError::Corrupt {
            segment: entry.segment,
            offset: entry.offset as u64,
            reason,
        }
    }

    pub fn is_poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Report client writes and marker collections to `observer` from now on.
    pub fn set_observer(&mut self, observer: Arc<dyn StoreObserver>) {
        self.observer = Some(observer);
    }

    /// Start keeping anti-entropy digests: hash every key's set once (one read of
    /// each record), then keep them current on every publish. Returns the keys
    /// hashed. A record that fails its checksum is left out, so its slot differs
    /// from the other replicas' and anti-entropy repairs it.
    /// The directory the store lives in (other small files of the node live there
    /// too, e.g. the cluster map).
    pub fn dir(&self) -> Arc<dyn DiskDir> {
        self.dir.clone()
    }

    pub fn enable_digests(&mut self) -> usize {
        let mut tree = crate::digest::DigestTree::default();
        let entries: Vec<(Box<[u8]>, KeyEntry)> =
            self.keydir.iter().map(|(k, e)| (k.clone(), *e)).collect();
        for (dk, entry) in &entries {
            if let Ok(body) = self.read_record(*entry) {
                if body.set.siblings.is_empty() {
                    continue; // forgotten
                }
                let slot = u16::from_be_bytes([dk[1], dk[2]]);
                tree.update(dk[0], slot, &dk[3..], crate::digest::set_hash(&body.set));
            }
        }
        let count = tree.key_count();
        self.digests = Some(tree);
        count
    }

    /// The anti-entropy digests, when enabled.
    pub fn digests(&self) -> Option<&crate::digest::DigestTree> {
        self.digests.as_ref()
    }

    /// Live keys of a namespace in a range of slots (a partition's keys).
    pub fn live_keys_in_slots(
        &self,
        namespace: u8,
        slots: std::ops::RangeInclusive<u16>,
    ) -> Vec<Bytes> {
        let (first, last) = (*slots.start() as usize, *slots.end() as usize);
        self.keydir
            .slots_from(namespace, first)
            .take_while(|(slot, _)| *slot <= last)
            .flat_map(|(_, map)| map.iter())
            .filter(|(_, e)| e.live)
            .map(|(k, _)| Bytes::copy_from_slice(&k[3..]))
            .collect()
    }

    /// Keys in a range of slots (all namespaces) whose sets are made only of
    /// delete markers, the newest written before `hlc_before`: (namespace, key,
    /// `digest::set_hash` of the set). At most `max`, in directory order by
    /// namespace then slot; keys for which `skip` is true are passed over.
    /// Reads the record of each non-live entry it looks at, and stops after
    /// `*reads_left` reads (decremented: the caller's I/O budget).
    pub fn delete_markers_in_slots(
        &self,
        slots: std::ops::RangeInclusive<u16>,
        hlc_before: crate::version::Hlc,
        max: usize,
        reads_left: &mut usize,
        skip: impl Fn(u8, &[u8]) -> bool,
    ) -> Vec<(u8, Bytes, u64)> {
        let (first, last) = (*slots.start() as usize, *slots.end() as usize);
        let mut found = Vec::new();
        for namespace in self.keydir.namespaces() {
            let entries = self
                .keydir
                .marker_slots_in(namespace, first..=last)
                .flat_map(|(_, map)| map.iter())
                .filter(|(_, e)| !e.live);
            for (dk, entry) in entries {
                if found.len() >= max || *reads_left == 0 {
                    return found;
                }
                if skip(namespace, &dk[3..]) {
                    continue;
                }
                *reads_left -= 1;
                let Ok(body) = self.read_record(*entry) else {
                    continue; // a damaged record is anti-entropy's to repair
                };
                if body.set.siblings.is_empty() || body.set.max_hlc() >= hlc_before {
                    continue;
                }
                let hash = crate::digest::set_hash(&body.set);
                found.push((namespace, Bytes::copy_from_slice(&dk[3..]), hash));
            }
        }
        found
    }

    /// The sibling set of a key, including one made only of delete markers
    /// (`None`: absent or forgotten).
    pub fn get(&self, namespace: u8, key: &[u8]) -> Result<Option<SiblingSet>, ReadError> {
        match self.keydir.get_key(namespace, key) {
            None => Ok(None),
            Some(entry) => {
                let set = self.read_record(*entry)?.set;
                Ok((!set.siblings.is_empty()).then_some(set))
            }
        }
    }

    /// What a plain GET returns at wall time `now_ms`: the winner's value and
    /// deadline ([`SiblingSet::winner_at`]), read through a borrowed view of
    /// the record (no sibling set is built). `None`: absent or expired.
    pub fn get_winner(
        &self,
        namespace: u8,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<(Bytes, Option<u64>)>, ReadError> {
        let Some(entry) = self.keydir.get_key(namespace, key).copied() else {
            return Ok(None);
        };
        if !entry.live {
            return Ok(None);
        }
        let (mut stack, mut heap) = ([0u8; 512], Vec::new());
        let buf = if entry.len as usize <= stack.len() {
            &mut stack[..entry.len as usize]
        } else {
            heap.resize(entry.len as usize, 0);
            &mut heap[..]
        };
        self.read_frame_bytes(entry, buf)?;
        let corrupt = |reason| self.unreadable(entry, reason);
        let max = self.options.record_size_max_bytes;
        let winner = match crate::record::scan_winner(buf, max, now_ms) {
            crate::record::WinnerScan::Valid(winner) => winner,
            crate::record::WinnerScan::Zero => return Err(corrupt("record zeroed")),
            crate::record::WinnerScan::Invalid(reason) => return Err(corrupt(reason)),
        };
        let counted = |w: &crate::record::SiblingView| {
            matches!(w.payload, crate::record::PayloadView::Counted(..))
        };
        if winner.as_ref().is_some_and(counted) {
            // A counted winner reads as its counters merged (`crate::counter`).
            let crate::record::FrameRead::Valid { body, .. } = crate::record::read_frame(buf, max)
            else {
                unreachable!("the frame scanned valid just now");
            };
            let set = body.set;
            let deadline_ms = set.winner_at(now_ms).and_then(|w| w.deadline_ms);
            return Ok(set.string_value_at(now_ms).map(|v| (v, deadline_ms)));
        }
        Ok(winner.map(|w| {
            let value = Bytes::copy_from_slice(w.value().expect("filtered on a value"));
            (value, w.deadline_ms())
        }))
    }

    /// Whether the key has a live value, without reading the disk.
    pub fn contains_live(&self, namespace: u8, key: &[u8]) -> bool {
        self.keydir.get_key(namespace, key).is_some_and(|e| e.live)
    }

    /// The bytes of `entry`'s frame, into `buf` (`entry.len` bytes long).
    fn read_frame_bytes(&self, entry: KeyEntry, buf: &mut [u8]) -> Result<(), ReadError> {
        (self.frame_disk(entry)?.read_at(entry.offset as u64, buf)).map_err(ReadError::Disk)
    }

    /// The disk `entry`'s record lies on.
    fn frame_disk(&self, entry: KeyEntry) -> Result<&dyn Disk, ReadError> {
        match self.segments.get(&entry.segment) {
            Some(segment) => Ok(segment.disk.as_ref()),
            None => Err(self.unreadable(entry, "segment missing")),
        }
    }

    pub(crate) fn read_record(&self, entry: KeyEntry) -> Result<RecordBody, ReadError> {
        let mut buf = vec![0u8; entry.len as usize];
        self.read_frame_bytes(entry, &mut buf)?;
        match read_frame(&buf, self.options.record_size_max_bytes) {
            FrameRead::Valid { body, .. } => Ok(body),
            FrameRead::Zero => Err(self.unreadable(entry, "record zeroed")),
            FrameRead::Invalid(reason) => Err(self.unreadable(entry, reason)),
        }
    }

    /// Live keys in a namespace.
    pub fn live_key_count(&self, namespace: u8) -> u64 {
        self.live_keys.get(&namespace).copied().unwrap_or(0)
    }

    /// (namespace, live keys) for every namespace holding any.
    pub fn namespaces(&self) -> Vec<(u8, u64)> {
        self.live_keys
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(ns, n)| (*ns, *n))
            .collect()
    }

    /// Live keys of a namespace from slot `cursor_slot` on, whole slots at a time,
    /// until at least `count` are found. Returns the keys and the next cursor
    /// (0 when the scan is complete), as Redis's SCAN does.
    pub fn scan(&self, namespace: u8, cursor_slot: u64, count: usize) -> (Vec<Bytes>, u64) {
        if cursor_slot >= crate::slot::SLOT_COUNT as u64 {
            return (Vec::new(), 0);
        }
        let mut keys = Vec::new();
        for (slot, map) in self.keydir.slots_from(namespace, cursor_slot as usize) {
            if keys.len() >= count.max(1) {
                return (keys, slot as u64);
            }
            keys.extend(
                map.iter()
                    .filter(|(_, e)| e.live)
                    .map(|(k, _)| Bytes::copy_from_slice(&k[3..])),
            );
        }
        (keys, 0)
    }

    /// Live stored keys of `namespace` that start with `prefix`, in key order
    /// (a hash's fields, by `fields::field_prefix`).
    pub fn live_keys_with_prefix(&self, namespace: u8, prefix: &[u8]) -> Vec<Bytes> {
        self.keydir
            .with_prefix(namespace, prefix)
            .filter(|(_, e)| e.live)
            .map(|(k, _)| Bytes::copy_from_slice(&k[3..]))
            .collect()
    }

    /// Whether some live stored key of `namespace` starts with `prefix`
    /// (stops at the first).
    /// Whether any collection (hash, set, list, sorted set) holds a live
    /// element, in any database.
    pub fn holds_collections(&self) -> bool {
        self.keydir.holds_collections()
    }

    pub fn has_live_key_with_prefix(&self, namespace: u8, prefix: &[u8]) -> bool {
        self.live_count_with_prefix(namespace, prefix) > 0
    }

    /// How many live elements the collection whose elements start with
    /// `prefix` (`fields::field_prefix`) holds in collection namespace
    /// `namespace`: one lookup.
    pub fn live_count_with_prefix(&self, namespace: u8, prefix: &[u8]) -> u64 {
        assert!(
            crate::fields::is_collection_namespace(namespace),
            "namespace {namespace} holds no collections"
        );
        self.keydir.live_elements(namespace, prefix)
    }

    /// Up to `take` live stored keys starting with `prefix`, after skipping
    /// `skip` of them, from the first (or, `from_back`, the last) on: a
    /// list's ends without walking its middle.
    pub fn live_keys_with_prefix_from(
        &self,
        namespace: u8,
        prefix: &[u8],
        (from_back, skip, take): (bool, usize, usize),
    ) -> Vec<Bytes> {
        fn window<'a>(
            entries: impl Iterator<Item = (&'a Box<[u8]>, &'a KeyEntry)>,
            (skip, take): (usize, usize),
        ) -> Vec<Bytes> {
            let live = entries.filter(|(_, e)| e.live).skip(skip).take(take);
            live.map(|(k, _)| Bytes::copy_from_slice(&k[3..])).collect()
        }
        if from_back {
            return window(self.keydir.with_prefix_rev(namespace, prefix), (skip, take));
        }
        window(self.keydir.with_prefix(namespace, prefix), (skip, take))
    }

    /// Every live key of a namespace, in directory order.
    pub fn keys(&self, namespace: u8) -> Vec<Bytes> {
        self.keydir
            .slots_from(namespace, 0)
            .flat_map(|(_, map)| map.iter())
            .filter(|(_, e)| e.live)
            .map(|(k, _)| Bytes::copy_from_slice(&k[3..]))
            .collect()
    }

    /// Every key with its sibling set (live or not, forgotten ones left out), for
    /// inspection and tests.
    pub fn dump(&self) -> Vec<(u8, Bytes, Result<SiblingSet, ReadError>)> {
        self.keydir
            .iter()
            .map(|(k, e)| {
                (
                    k[0],
                    Bytes::copy_from_slice(&k[3..]),
                    self.read_record(*e).map(|b| b.set),
                )
            })
            .filter(|(_, _, set)| set.as_ref().map_or(true, |s| !s.siblings.is_empty()))
            .collect()
    }

    /// Total bytes in segment files, and bytes of them that are dead.
    pub fn disk_usage_bytes(&self) -> (u64, u64) {
        let total = self.segments.values().map(|s| s.written_bytes).sum();
        let dead = self.segments.values().map(|s| s.dead_bytes).sum();
        (total, dead)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn frame_size_max_bytes(&self) -> u32 {
        let by_segment = (self.options.segment_size_bytes - SEGMENT_HEADER_BYTES) as u32;
        self.options.record_size_max_bytes.min(by_segment)
    }

    /// The largest value a client write may carry: a share of the record
    /// limit, so that [`StoreOptions::values_per_record`] values that large,
    /// written concurrently on different replicas, still merge into one record
    /// (a merge over the record limit would be refused on every repair).
    pub fn value_size_max_bytes(&self) -> usize {
        self.frame_size_max_bytes() as usize / self.options.values_per_record.max(1)
    }
}

impl Store {
    /// Writes the batch's frames in one piece, rotating to a fresh segment first
    /// when they do not fit, so a batch never spans segments.
    fn append_frames(
        &mut self,
        frames: &[PendingFrame],
    ) -> Result<(Vec<Placement>, Arc<dyn Disk>), WriteError> {
        let total_bytes: u64 = frames.iter().map(|f| f.bytes.len() as u64).sum();
        let segment_size = self.options.segment_size_bytes;
        // Checked before rotating: a batch no segment can hold is refused as it
        // is, rather than leaving an empty fresh segment behind on every try.
        if SEGMENT_HEADER_BYTES + total_bytes > segment_size {
            return Err(WriteError::RecordTooLarge {
                len_bytes: total_bytes as usize,
                max_bytes: (segment_size - SEGMENT_HEADER_BYTES) as u32,
            });
        }
        if self.active().written_bytes + total_bytes > segment_size
            || self.compaction.rewrites(self.active_id)
        {
            self.rotate()?;
        }
        let start = self.active().written_bytes;
        let mut chunk = Vec::with_capacity(total_bytes as usize);
        let mut placed = Vec::with_capacity(frames.len());
        for frame in frames {
            placed.push(Placement {
                segment: self.active_id,
                offset: (start + chunk.len() as u64) as u32,
                len: frame.bytes.len() as u32,
            });
            chunk.extend_from_slice(&frame.bytes);
        }
        let disk = self.active().disk.clone();
        match disk.write_at(start, &chunk) {
            Ok(()) => {}
            Err(DiskError::NoSpace) => return Err(WriteError::DiskFull),
            Err(e) => {
                self.poison(format!("write failed: {e}"));
                return Err(WriteError::Disk(e));
            }
        }
        let active = self
            .segments
            .get_mut(&self.active_id)
            .expect("active segment exists");
        active.written_bytes = start + total_bytes;
        active.data_crc = crc32c::crc32c_append(active.data_crc, &chunk);
        self.stats.records_written += frames.len() as u64;
        Ok((placed, disk))
    }

    fn active(&self) -> &Segment {
        self.segments
            .get(&self.active_id)
            .expect("active segment exists")
    }

    /// The active segment's disk, for callers that sync on a timer
    /// (`fsync = batch`) rather than per batch.
    pub fn active_disk(&self) -> Arc<dyn Disk> {
        self.active().disk.clone()
    }

    /// Seal the active segment (sync, write its hint) and start a new one.
    fn rotate(&mut self) -> Result<(), WriteError> {
        let old_id = self.active_id;
        if let Err(e) = self.active().disk.sync() {
            self.stats.syncs_failed += 1;
            let reason = format!("sync of sealed segment {old_id} failed: {e}");
            self.poison(reason.clone());
            return Err(WriteError::SyncFailed(reason));
        }
        let new_id = old_id + 1;
        let disk = self.create_segment(new_id)?;
        self.segments.insert(
            new_id,
            Segment {
                disk,
                written_bytes: SEGMENT_HEADER_BYTES,
                dead_bytes: 0,
                data_crc: crc32c::crc32c(&crate::record::segment_header(new_id)),
            },
        );
        self.active_id = new_id;
        // Listed before anything is written to it, the sealed one with its end.
        if let Err(e) = self.save_catalog() {
            let reason = format!("cannot record the new segment {new_id}: {e}");
            self.poison(reason.clone());
            return Err(WriteError::Disk(e));
        }
        self.owe_hint(old_id);
        Ok(())
    }

    /// The catalog as the store stands: every segment, its file's length, and
    /// for each sealed one the end of its (synced) data.
    pub(crate) fn catalog_entries(&self) -> Result<Vec<catalog::CatalogEntry>, DiskError> {
        self.segments
            .iter()
            .map(|(id, segment)| {
                Ok(catalog::CatalogEntry {
                    id: *id,
                    allocated_bytes: segment.disk.len()?,
                    sealed_bytes: (*id != self.active_id).then_some(segment.written_bytes),
                })
            })
            .collect()
    }

    pub(crate) fn save_catalog(&self) -> Result<(), DiskError> {
        catalog::write_catalog(self.dir.as_ref(), &self.catalog_entries()?)
    }

    /// Create, preallocate and stamp a segment file, durably.
    pub(crate) fn create_segment(&self, id: u32) -> Result<Arc<dyn Disk>, WriteError> {
        let name = segment_file_name(id);
        let disk = self.dir.open(&name, true).map_err(WriteError::Disk)?;
        let result = disk
            .set_len(self.options.segment_size_bytes)
            .and_then(|_| disk.write_at(0, &crate::record::segment_header(id)))
            .and_then(|_| disk.sync())
            .and_then(|_| self.dir.sync_dir());
        match result {
            Ok(()) => Ok(disk),
            Err(e) => {
                let _ = self.dir.remove(&name);
                Err(match e {
                    DiskError::NoSpace => WriteError::DiskFull,
                    other => WriteError::Disk(other),
                })
            }
        }
    }

    /// Make a synced batch visible. Returns each operation's result. Batches must be
    /// published in the order they were prepared.
    pub fn publish(&mut self, batch: PreparedBatch) -> Vec<Result<WriteOutcome, WriteError>> {
        if let Some(digests) = &mut self.digests {
            for ((dk, _), hash) in batch.updates.iter().zip(&batch.set_hashes) {
                let slot = u16::from_be_bytes([dk[1], dk[2]]);
                match hash {
                    Some(hash) => digests.update(dk[0], slot, &dk[3..], *hash),
                    None => digests.remove(dk[0], slot, &dk[3..]),
                }
            }
        }
        self.stats.tombstones_forgotten += batch.forgotten;
        if !batch.updates.is_empty() {
            // Only a batch that wrote records was staged.
            self.staged.published(batch.batch_seq);
        }
        for ((dk, entry), deadline_ms) in batch.updates.into_iter().zip(batch.deadlines) {
            self.expiring.set(&dk, deadline_ms);
            self.synced
                .published_to(entry.segment, entry.offset as u64 + entry.len as u64);
            let namespace = dk[0];
            if entry.live {
                *self.live_keys.entry(namespace).or_insert(0) += 1;
            }
            if let Some(previous) = self.keydir.insert(dk, entry) {
                self.retire(previous, namespace);
            }
        }
        self.stats.batches_published += 1;
        batch.results
    }

    /// Account for a record that is no longer the latest of its key.
    fn retire(&mut self, previous: KeyEntry, namespace: u8) {
        if let Some(segment) = self.segments.get_mut(&previous.segment) {
            segment.dead_bytes += previous.len as u64;
        }
        if previous.live {
            let count = self.live_keys.entry(namespace).or_insert(0);
            *count = count.saturating_sub(1);
        }
    }

    /// The batch's sync failed (or an earlier batch's did): it never becomes visible,
    /// its outcome is unknown, and the store refuses writes until it is reopened
    /// (never retry-and-ignore). Every later unpublished batch must come here too:
    /// it was built on this one.
    pub fn sync_failed(
        &mut self,
        batch: PreparedBatch,
        error: DiskError,
    ) -> Vec<Result<WriteOutcome, WriteError>> {
        self.stats.syncs_failed += 1;
        let reason = format!("fsync failed: {error}");
        self.poison(reason.clone());
        self.staged.clear();
        batch
            .results
            .into_iter()
            .map(|r| match r {
                Ok(_) => Err(WriteError::SyncFailed(reason.clone())),
                other => other,
            })
            .collect()
    }

    /// Refuse all further writes (reads keep working).
    pub fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(reason);
        }
    }
}
