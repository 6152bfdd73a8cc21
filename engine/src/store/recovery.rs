//! Opening a store: the recovery decision table.
//!
//! | what is found                                   | decision                       |
//! |-------------------------------------------------|--------------------------------|
//! | valid frame                                     | load it                        |
//! | all-zero header, zeros to the end               | end of data                    |
//! | sealed segment with a valid hint               | load the hint, skip the scan   |
//! | invalid frame in the last segment, and no valid | torn tail: zero it, sync, go on|
//! |   frame after it from a later batch             |                                |
//! | the last segment's data ends (zeros, a cut, or  | `OpenError::Corrupt`: refuse   |
//! |   damage) before the bytes `SYNCED` recorded    |                                |
//! | invalid frame in a sealed segment               | `OpenError::Corrupt`: refuse   |
//! | invalid frame followed by a valid frame of a    | `OpenError::Corrupt`: refuse   |
//! |   later batch (so it had been synced)           |                                |
//! | last segment with a torn header and no data     | re-create it                   |
//! | other segment header damage                     | `OpenError::Corrupt`: refuse   |
//! | a segment `SEGMENTS` lists is gone              | `OpenError::Corrupt`: refuse   |
//! | a segment file shorter than it was made         | `OpenError::Corrupt`: refuse   |
//! | a sealed segment whose data ends before the end | `OpenError::Corrupt`: refuse   |
//! |   `SEGMENTS` recorded when it was sealed        |                                |
//! | a sealed segment whose bytes differ from the    | scan it; `OpenError::Corrupt`  |
//! |   checksum its hint recorded                    |   names the damage             |
//! | an unlisted segment below the newest listed one | a compaction's removal cut     |
//! |                                                 |   short: remove it             |
//! | an unlisted segment above the newest listed one | a rotation cut short: keep it  |
//! | `SEGMENTS` damaged                              | `OpenError::Corrupt`: refuse   |
//! | no `SEGMENTS` (a store from before it existed)  | open; write it                 |
//!
//! At most `UNSYNCED_BATCHES_MAX` batches are written and not yet synced at any time
//! (pipelined group commit), and recovery syncs what it loaded before anything is
//! appended, so only the newest few batches can be incompletely on disk. Damage
//! followed by frames of those batches is a torn tail; damage followed by a newer
//! batch is corruption. Known limit: damage inside the newest few batches cannot be
//! told from a torn write of them, and is cut off like one. Damage anywhere else means synced
//! (possibly acknowledged) data is gone: the store never opens as if it were whole.

use super::catalog::{
    check_present, read_catalog, CatalogCheck, CatalogEntry, CatalogError, CATALOG_FILE,
};
use super::{
    hint_file_name, segment_file_name, KeyEntry, Segment, Store, StoreOptions, WriteError,
};
use crate::disk::{CheckedFileError, Disk, DiskDir, DiskError};
use crate::record::{
    parse_segment_header, scan_frame, FrameScan, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::version::{Hlc, HlcClock, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub(crate) const INCARNATION_FILE: &str = "INCARNATION";
/// The actor id this store mints dots as, when it is not the node id (written
/// once a node learns its directory replaced one it ran on): `[u32 LE][crc32c]`.
pub(crate) const ACTOR_FILE: &str = "ACTOR";

/// The actor id recorded in `dir`, if any. A damaged file is an error, never a
/// silent fall back to the node id (that would reuse the old life's dots).
fn read_actor(dir: &dyn DiskDir) -> Result<Option<NodeId>, OpenError> {
    match crate::disk::read_checked_file(dir, ACTOR_FILE, 4) {
        Ok(payload) => Ok(payload.map(|p| u32::from_le_bytes(p[..].try_into().expect("4 bytes")))),
        Err(CheckedFileError::Disk(e)) => Err(e.into()),
        Err(CheckedFileError::Damaged(why)) => Err(OpenError::BadOptions(why)),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Synced data is damaged; the node must not start as if it were whole.
    Corrupt {
        segment: u32,
        offset: u64,
        reason: String,
    },
    Disk(DiskError),
    BadOptions(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Corrupt {
                segment,
                offset,
                reason,
            } if *segment == 0 => write!(
                f,
                "the store's data is damaged: {reason}; refusing to start (run `shoal inspect` on the data directory)"
            ),
            OpenError::Corrupt {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "segment {} ({}) is corrupt at offset {offset}: {reason}; refusing to start (run `shoal inspect` on the data directory)",
                segment,
                segment_file_name(*segment)
            ),
            OpenError::Disk(e) => write!(f, "cannot open store: {e}"),
            OpenError::BadOptions(e) => write!(f, "bad store options: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<DiskError> for OpenError {
    fn from(e: DiskError) -> Self {
        OpenError::Disk(e)
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub incarnation: u64,
    pub segments_scanned: u32,
    pub segments_from_hints: u32,
    pub records_loaded: u64,
    pub keys_loaded: u64,
    /// (segment, offset, bytes discarded) of a torn tail that was cut off.
    pub torn_tail: Option<(u32, u64, u64)>,
}

fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Two 16-byte slots `[incarnation u64][crc u32][0u32]`; the larger valid one wins,
/// and each open writes the other, so a torn write never loses the current value.
fn bump_incarnation(dir: &dyn DiskDir) -> Result<u64, DiskError> {
    let next = read_incarnation(dir)? + 1;
    write_incarnation(dir, next)?;
    Ok(next)
}

/// The current incarnation (0: none recorded yet).
fn read_incarnation(dir: &dyn DiskDir) -> Result<u64, DiskError> {
    let file = dir.open(INCARNATION_FILE, true)?;
    let mut bytes = [0u8; 32];
    let len = file.len()?.min(32) as usize;
    file.read_at(0, &mut bytes[..len])?;
    let slot = |i: usize| -> Option<u64> {
        let s = &bytes[i * 16..i * 16 + 16];
        let value = u64::from_le_bytes(s[0..8].try_into().ok()?);
        let crc = u32::from_le_bytes(s[8..12].try_into().ok()?);
        (value > 0 && crc32c::crc32c(&s[0..8]) == crc).then_some(value)
    };
    Ok(slot(0).max(slot(1)).unwrap_or(0))
}

/// Record `incarnation` durably, in the slot the current one is not in.
fn write_incarnation(dir: &dyn DiskDir, incarnation: u64) -> Result<(), DiskError> {
    let file = dir.open(INCARNATION_FILE, true)?;
    let mut record = [0u8; 16];
    record[0..8].copy_from_slice(&incarnation.to_le_bytes());
    let crc = crc32c::crc32c(&record[0..8]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    file.write_at((incarnation % 2) * 16, &record)?;
    file.sync()?;
    dir.sync_dir()?;
    Ok(())
}

impl Store {
    /// Move to incarnation `at_least` (if this one is lower): recorded durably, and
    /// every dot minted from now on is at least `at_least << 32`. For a node whose
    /// data directory is new but whose cluster remembers an earlier life of it
    /// (a lost disk): its old dots live on in its peers' data, and reissuing one
    /// would make a new write look already seen. Returns the incarnation now.
    /// Mint every dot from now on as `actor` instead of the node id, for good
    /// (recorded durably: tmp file, sync, rename, directory sync). For a node
    /// whose directory replaced one it ran on: contexts are version vectors, so a
    /// new dot of the old actor would cover the old life's dots below it, which
    /// this store no longer holds, and replicas would drop them. A fresh actor
    /// covers nothing of the old life.
    pub fn adopt_actor(&mut self, actor: NodeId) -> Result<(), DiskError> {
        crate::disk::write_checked_file(self.dir.as_ref(), ACTOR_FILE, &actor.to_le_bytes())?;
        self.options.node_id = actor;
        Ok(())
    }

    /// The id this store mints dots as (the node id unless
    /// [`Store::adopt_actor`] gave it another).
    pub fn actor(&self) -> NodeId {
        self.options.node_id
    }

    /// Whether minting on the key may claim, through its version vector, a dot
    /// of this store's earlier lives that its copy no longer holds: an open cut
    /// a tail (torn, or damaged inside the newest batches, which recovery
    /// cannot tell apart, so acknowledged writes may be gone from it while
    /// replicas hold them; `CUT-TAIL` keeps it across restarts), and nothing
    /// from a life after that cut is in the key's copy yet.
    /// A replicated node merges the key from its replicas before minting on it.
    pub fn mint_may_claim_lost_dots(&self, namespace: u8, key: &[u8]) -> bool {
        let Some(life_floor) = self.cut_a_tail_below else {
            return false;
        };
        match self.get(namespace, key) {
            Ok(Some(set)) => set.context.get(self.actor()) < life_floor,
            Ok(None) | Err(_) => true,
        }
    }

    /// Whether an open ever cut a tail that no full restore has made good
    /// since (`CUT-TAIL`): the store may lack writes it once acknowledged.
    pub fn may_lack_acknowledged_writes(&self) -> bool {
        self.cut_a_tail_below.is_some()
    }

    /// Every key was merged from the replicas since the cut (a cluster node's
    /// restore finished): nothing acknowledged is missing any more, so `CUT-TAIL`
    /// goes, durably.
    pub fn cut_tail_made_good(&mut self) -> Result<(), DiskError> {
        match self.dir.remove(CUT_TAIL_FILE) {
            Ok(()) | Err(DiskError::NotFound(_)) => self.dir.sync_dir()?,
            Err(e) => return Err(e),
        }
        self.cut_a_tail_below = None;
        Ok(())
    }

    pub fn raise_incarnation(&mut self, at_least: u64) -> Result<u64, DiskError> {
        let current = read_incarnation(self.dir.as_ref())?;
        if at_least <= current {
            return Ok(current);
        }
        write_incarnation(self.dir.as_ref(), at_least)?;
        self.counter_floor = self.counter_floor.max(at_least << 32);
        Ok(at_least)
    }
}

/// The catalog, checked against the segment files found (`ids`, sorted):
/// a listed segment that is gone refuses the open; leftovers of a removal cut
/// short are removed (and dropped from `ids`). `None`: no catalog yet.
fn check_catalog(
    dir: &dyn DiskDir,
    ids: &mut Vec<u32>,
) -> Result<Option<BTreeMap<u32, CatalogEntry>>, OpenError> {
    let catalog = match read_catalog(dir) {
        Ok(catalog) => catalog,
        Err(CatalogError::Disk(e)) => return Err(e.into()),
        Err(CatalogError::Damaged(reason)) => {
            return Err(OpenError::Corrupt {
                segment: 0,
                offset: 0,
                reason,
            })
        }
    };
    let Some(catalog) = catalog else {
        return Ok(None);
    };
    match check_present(&catalog, ids) {
        CatalogCheck::Missing { id } => Err(OpenError::Corrupt {
            segment: id,
            offset: 0,
            reason: format!("the segment is listed in {CATALOG_FILE} but its file is gone"),
        }),
        CatalogCheck::Whole { leftovers } => {
            for id in &leftovers {
                for name in [segment_file_name(*id), hint_file_name(*id)] {
                    match dir.remove(&name) {
                        Ok(()) | Err(DiskError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            ids.retain(|id| !leftovers.contains(id));
            Ok(Some(catalog))
        }
    }
}

impl Store {
    /// Every loaded segment against its catalog entry: a file shorter than it
    /// was made, or a sealed segment whose data ends before what was synced.
    fn check_against_catalog(
        &self,
        catalog: &BTreeMap<u32, CatalogEntry>,
    ) -> Result<(), OpenError> {
        for (id, segment) in &self.segments {
            let Some(listed) = catalog.get(id) else {
                continue; // a segment created after the catalog was last written
            };
            let len_bytes = segment.disk.len()?;
            let cut = |offset: u64, reason: String| OpenError::Corrupt {
                segment: *id,
                offset,
                reason,
            };
            if len_bytes < listed.allocated_bytes {
                return Err(cut(
                    len_bytes,
                    format!(
                        "the file is {len_bytes} bytes, cut from the {} it was made",
                        listed.allocated_bytes
                    ),
                ));
            }
            if let Some(sealed_bytes) = listed.sealed_bytes {
                if segment.written_bytes < sealed_bytes {
                    return Err(cut(
                        segment.written_bytes,
                        format!("its data ends at {}, before the {sealed_bytes} bytes synced when it was sealed", segment.written_bytes),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Names of segments set aside by [`set_aside_segments`] start with this.
pub const SET_ASIDE_PREFIX: &str = "damaged-";

/// Rename every segment file of the store in `dir` (`seg-*`: logs and their key
/// hints) to `damaged-i<incarnation>-seg-*`, so the store opens empty while the
/// damaged data stays on disk for an operator (renamed back in a copy of the
/// directory, `shoal inspect` reads it). For a cluster
/// node whose synced data is damaged: its replicas restore it (nothing here
/// decides that; the caller does). Returns the new names, in order.
pub fn set_aside_segments(dir: &dyn DiskDir) -> Result<Vec<String>, DiskError> {
    let incarnation = read_incarnation(dir)?;
    let mut moved = Vec::new();
    let mut names: Vec<String> = dir
        .list()?
        .into_iter()
        .filter(|n| {
            n.starts_with("seg-")
                || n.as_str() == CATALOG_FILE
                || n.as_str() == super::synced::SYNCED_FILE
                || n.as_str() == CUT_TAIL_FILE
        })
        .collect();
    names.sort();
    for name in names {
        let to = format!("{SET_ASIDE_PREFIX}i{incarnation}-{name}");
        dir.rename(&name, &to)?;
        moved.push(to);
    }
    dir.sync_dir()?;
    Ok(moved)
}

/// Where the floor of the life after the last cut tail is kept (`[u64 LE]
/// [crc32c]`): dots of a store's lives before it may be gone from its copies
/// while replicas hold them, until a key is written again.
const CUT_TAIL_FILE: &str = "CUT-TAIL";

/// The counter below which this store's own dots may have been cut (the
/// highest such floor recorded, raised to this life's when this open cut a
/// tail), if any open ever cut one.
fn cut_tail_floor(
    dir: &dyn DiskDir,
    report: &RecoveryReport,
    incarnation: u64,
) -> Result<Option<u64>, OpenError> {
    let recorded = match crate::disk::read_checked_file(dir, CUT_TAIL_FILE, 8) {
        Ok(payload) => payload.map(|p| u64::from_le_bytes(p[..].try_into().expect("8 bytes"))),
        Err(CheckedFileError::Disk(e)) => return Err(e.into()),
        Err(CheckedFileError::Damaged(why)) => {
            return Err(OpenError::Corrupt {
                segment: 0,
                offset: 0,
                reason: format!("{CUT_TAIL_FILE} is damaged: {why}"),
            })
        }
    };
    if report.torn_tail.is_none() {
        return Ok(recorded);
    }
    let floor = recorded.unwrap_or(0).max(incarnation << 32);
    record_cut_tail_floor(dir, floor)?;
    Ok(Some(floor))
}

/// Keep `floor` in `CUT-TAIL` (durably: tmp file, sync, rename, directory sync).
pub(super) fn record_cut_tail_floor(dir: &dyn DiskDir, floor: u64) -> Result<(), DiskError> {
    crate::disk::write_checked_file(dir, CUT_TAIL_FILE, &floor.to_le_bytes())
}

/// Options a store cannot open with.
fn check_options(options: &StoreOptions) -> Result<(), OpenError> {
    if options.segment_size_bytes < 4096 || options.segment_size_bytes > u32::MAX as u64 {
        return Err(OpenError::BadOptions(
            "segment_size_bytes must be between 4 KiB and 4 GiB".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Open (or create) the store in `dir`, recovering from whatever a crash left.
    pub fn open(
        dir: Arc<dyn DiskDir>,
        mut options: StoreOptions,
    ) -> Result<(Store, RecoveryReport), OpenError> {
        check_options(&options)?;
        let incarnation = bump_incarnation(dir.as_ref())?;
        if let Some(actor) = read_actor(dir.as_ref())? {
            options.node_id = actor;
        }
        let mut report = RecoveryReport {
            incarnation,
            ..RecoveryReport::default()
        };
        let names = dir.list()?;
        for stale in names.iter().filter(|n| n.ends_with(".tmp")) {
            dir.remove(stale)?;
        }
        let mut ids: Vec<u32> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        ids.sort_unstable();
        let catalog = if cfg!(feature = "bug-skip-catalog") {
            None // Planted bug: whatever segment files are there are the store.
        } else {
            check_catalog(dir.as_ref(), &mut ids)?
        };
        let dir_for_mark = dir.clone();
        let mut store = Store {
            dir,
            options,
            keydir: Default::default(),
            segments: BTreeMap::new(),
            active_id: ids.last().copied().unwrap_or(1),
            next_batch_seq: 1,
            counter_floor: incarnation << 32,
            counter_issued_max: 0,
            cut_a_tail_below: None,
            synced: super::synced::SyncedMarks {
                recorded: super::synced::read_synced_mark(dir_for_mark.as_ref())?,
                published: None,
            },
            clock: HlcClock::default(),
            live_keys: BTreeMap::new(),
            poisoned: None,
            staged: Default::default(),
            compaction: Default::default(),
            chores: Default::default(),
            stats: Default::default(),
            damage_found: Default::default(),
            digests: None,
            expiring: Default::default(),
            observer: None,
        };
        let mut loaded = Loaded::default();
        for (i, id) in ids.iter().enumerate() {
            store.load_segment(*id, i + 1 == ids.len(), &mut loaded, &mut report)?;
        }
        catalog.map_or(Ok(()), |c| store.check_against_catalog(&c))?;
        store.load_directory(loaded);
        if store.segments.is_empty() {
            let disk = store.create_segment(1).map_err(|e| match e {
                WriteError::Disk(d) => OpenError::Disk(d),
                other => OpenError::Disk(DiskError::Io(other.to_string())),
            })?;
            store.segments.insert(
                1,
                Segment {
                    disk,
                    written_bytes: SEGMENT_HEADER_BYTES,
                    dead_bytes: 0,
                    data_crc: crc32c::crc32c(&crate::record::segment_header(1)),
                },
            );
            store.active_id = 1;
        }
        let active = store.active().disk.clone();
        if active.len()? < store.options.segment_size_bytes {
            active.set_len(store.options.segment_size_bytes)?;
        }
        // What recovery loaded may never have been synced (an fsync failed before a
        // restart): make it durable before appending after it, so that at most one
        // unsynced batch is ever on disk.
        active.sync()?;
        // From here on the catalog lists what this open found whole.
        store.save_catalog()?;
        store.recount();
        report.keys_loaded = store.keydir.len() as u64;
        store.cut_a_tail_below = cut_tail_floor(store.dir.as_ref(), &report, incarnation)?;
        Ok((store, report))
    }

    /// The key directory and the expiry index from what the segments hold.
    fn load_directory(&mut self, loaded: Loaded) {
        self.keydir.bulk_load(loaded.entries);
        for (dk, at, deadline_ms) in loaded.deadlines {
            // Only where the record is still its key's latest.
            if self
                .keydir
                .get(&dk)
                .is_some_and(|e| (e.segment, e.offset) == at)
            {
                self.expiring.set(&dk, Some(deadline_ms));
            }
        }
    }

    /// Recompute live-key counts and dead bytes from the directory.
    fn recount(&mut self) {
        let mut live_bytes: BTreeMap<u32, u64> = BTreeMap::new();
        let mut live_keys = [0u64; 256];
        // Runs of entries share a segment; look the map up only when it changes.
        let mut run: Option<(u32, u64)> = None;
        for (k, e) in self.keydir.iter() {
            match &mut run {
                Some((segment, bytes)) if *segment == e.segment => *bytes += e.len as u64,
                _ => {
                    if let Some((segment, bytes)) = run {
                        *live_bytes.entry(segment).or_insert(0) += bytes;
                    }
                    run = Some((e.segment, e.len as u64));
                }
            }
            live_keys[k[0] as usize] += u64::from(e.live);
        }
        if let Some((segment, bytes)) = run {
            *live_bytes.entry(segment).or_insert(0) += bytes;
        }
        self.live_keys = (0u8..=255)
            .filter(|ns| live_keys[*ns as usize] > 0)
            .map(|ns| (ns, live_keys[ns as usize]))
            .collect();
        for (id, segment) in self.segments.iter_mut() {
            let live = live_bytes.get(id).copied().unwrap_or(0);
            segment.dead_bytes = segment
                .written_bytes
                .saturating_sub(SEGMENT_HEADER_BYTES + live);
        }
    }

    /// A sealed segment whose bytes no longer match its hint (synced data was
    /// damaged, or the file cut short): the scan names the first bad frame;
    /// if it finds none, the data ends before what the hint recorded synced.
    fn damaged_sealed(
        &mut self,
        id: u32,
        disk: &dyn Disk,
        synced_bytes: u64,
        report: &mut RecoveryReport,
    ) -> OpenError {
        let mut scratch = Loaded::default();
        match self.scan_segment(id, disk, false, 0, &mut scratch, report) {
            Err(e) => e,
            Ok(end) => OpenError::Corrupt {
                segment: id,
                offset: end,
                reason: format!(
                    "the segment's data ends or differs before the {synced_bytes} bytes its hint recorded as synced (file now {} bytes)",
                    disk.len().unwrap_or(0)
                ),
            },
        }
    }

    /// Loads one segment's entries (in log order) into `entries`.
    fn load_segment(
        &mut self,
        id: u32,
        is_last: bool,
        loaded: &mut Loaded,
        report: &mut RecoveryReport,
    ) -> Result<(), OpenError> {
        let disk = self.dir.open(&segment_file_name(id), false)?;
        if is_last {
            // The active segment is always scanned; a hint for it would go stale.
            match self.dir.remove(&hint_file_name(id)) {
                Ok(()) | Err(DiskError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        } else if let Some(hint) = self.read_hint(id) {
            let whole = cfg!(feature = "bug-trust-hints")
                || super::hint::data_crc(disk.as_ref(), hint.written_bytes).ok()
                    == Some(hint.data_crc);
            if !whole {
                return Err(self.damaged_sealed(id, disk.as_ref(), hint.written_bytes, report));
            }
            self.next_batch_seq = self.next_batch_seq.max(hint.batch_seq_next);
            self.clock.observe(Hlc(hint.hlc_max));
            report.segments_from_hints += 1;
            report.records_loaded += hint.entries.len() as u64;
            let written_bytes = hint.written_bytes;
            loaded.entries.reserve(hint.entries.len());
            for entry in hint.entries {
                let key_entry = entry.entry(id);
                loaded.push(entry.dir_key.into(), key_entry, entry.deadline_ms);
            }
            self.segments.insert(
                id,
                Segment {
                    disk,
                    written_bytes,
                    dead_bytes: 0,
                    data_crc: hint.data_crc,
                },
            );
            return Ok(());
        }
        report.segments_scanned += 1;
        let synced_bytes_min = if is_last {
            self.synced_bytes_min(id)
        } else {
            0
        };
        let written_bytes =
            self.scan_segment(id, disk.as_ref(), is_last, synced_bytes_min, loaded, report)?;
        // Every frame of it was just checked: this is the data as it stands.
        let data_crc = super::hint::data_crc(disk.as_ref(), written_bytes)?;
        self.segments.insert(
            id,
            Segment {
                disk,
                written_bytes,
                dead_bytes: 0,
                data_crc,
            },
        );
        Ok(())
    }

    /// Loads every record of a segment; returns where its data ends. Reads through a
    /// sliding window, so the (mostly empty, preallocated) segment is never held
    /// whole in memory; only the rare damage path reads the rest at once.
    fn scan_segment(
        &mut self,
        id: u32,
        disk: &dyn Disk,
        is_last: bool,
        synced_bytes_min: u64,
        loaded: &mut Loaded,
        report: &mut RecoveryReport,
    ) -> Result<u64, OpenError> {
        let mut reader = SegmentReader::new(disk)?;
        let corrupt = |offset: u64, reason: &str| OpenError::Corrupt {
            segment: id,
            offset,
            reason: reason.to_string(),
        };
        let header = reader.at(0, SEGMENT_HEADER_BYTES as usize)?.to_vec();
        if parse_segment_header(&header) != Some(id) {
            let nothing_written = header.iter().skip(8).all(|b| *b == 0)
                && reader.zeros_from(SEGMENT_HEADER_BYTES as usize)?;
            if is_last && nothing_written {
                // Crash while creating the segment: make it anew.
                disk.set_len(self.options.segment_size_bytes)?;
                disk.write_at(0, &crate::record::segment_header(id))?;
                disk.sync()?;
                return Ok(SEGMENT_HEADER_BYTES);
            }
            return Err(corrupt(0, "bad segment header"));
        }
        let record_max = self.options.record_size_max_bytes;
        let mut batch_seq_last = self.next_batch_seq.saturating_sub(1);
        let mut pos = SEGMENT_HEADER_BYTES as usize;
        loop {
            let frame_len = frame_len_at(reader.at(pos, FRAME_HEADER_BYTES)?, record_max);
            let fault = match scan_frame(reader.at(pos, frame_len)?, record_max) {
                FrameScan::Valid { view, frame_len } => {
                    let dk = super::dir_key(view.namespace, view.key);
                    let entry = KeyEntry {
                        segment: id,
                        offset: pos as u32,
                        len: frame_len as u32,
                        live: view.is_live(),
                    };
                    loaded.push(dk, entry, view.deadline_ms());
                    self.clock.observe(view.max_hlc());
                    batch_seq_last = batch_seq_last.max(view.batch_seq);
                    self.next_batch_seq = self.next_batch_seq.max(view.batch_seq + 1);
                    report.records_loaded += 1;
                    pos += frame_len;
                    continue;
                }
                FrameScan::Zero => None,
                FrameScan::Invalid(reason) => Some(reason),
            };
            let before_mark = (pos as u64) < synced_bytes_min;
            let damage = match fault {
                None if before_mark => "zeros",
                None if reader.zeros_from(pos)? => return Ok(pos as u64),
                None => "zero header followed by data",
                Some(reason) => reason,
            };
            if !is_last {
                return Err(corrupt(pos as u64, damage));
            }
            if before_mark {
                // Synced data, zeroed or damaged: no torn write of a batch in flight.
                return Err(corrupt(
                    pos as u64,
                    &format!(
                        "{damage} before the {synced_bytes_min} bytes {} recorded as synced",
                        super::synced::SYNCED_FILE
                    ),
                ));
            }
            let data = reader.rest_from(pos)?;
            if let Some((later, seq)) = find_later_batch(&data, 0, record_max, batch_seq_last) {
                return Err(corrupt(
                    pos as u64,
                    &format!(
                        "{damage}; a later synced batch ({seq}) follows at offset {}",
                        pos + later
                    ),
                ));
            }
            // Torn tail of the newest, never-synced batch: cut it off durably.
            let garbage = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            disk.write_at(pos as u64, &vec![0u8; garbage])?;
            disk.sync()?;
            report.torn_tail = Some((id, pos as u64, garbage as u64));
            return Ok(pos as u64);
        }
    }
}

/// What an open found in the segments: every record's directory entry, and the
/// deadlines of those whose sets expire (with where the record is).
#[derive(Default)]
struct Loaded {
    entries: super::keydir::Entries,
    deadlines: Vec<LoadedDeadline>,
}

/// A directory key, where its record is (segment, offset), and when its set
/// expires.
type LoadedDeadline = (Box<[u8]>, (u32, u32), u64);

impl Loaded {
    fn push(&mut self, dk: Box<[u8]>, entry: KeyEntry, deadline_ms: Option<u64>) {
        if let Some(at) = deadline_ms {
            self.deadlines
                .push((dk.clone(), (entry.segment, entry.offset), at));
        }
        self.entries.push((dk, entry));
    }
}

/// How many bytes to read for the frame whose header is `header`: the whole
/// frame when its length is plausible, else just the header (which then reads
/// as damage).
pub(crate) fn frame_len_at(header: &[u8], record_max: u32) -> usize {
    header
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .filter(|len| *len <= record_max)
        .map_or(FRAME_HEADER_BYTES, |len| FRAME_HEADER_BYTES + len as usize)
}

/// Sequential reads of one segment through a reused buffer.
pub(crate) struct SegmentReader<'d> {
    disk: &'d dyn Disk,
    file_len: usize,
    buf: Vec<u8>,
    buf_start: usize,
}

impl<'d> SegmentReader<'d> {
    const CHUNK_BYTES: usize = 4 << 20;

    pub(crate) fn new(disk: &'d dyn Disk) -> Result<Self, DiskError> {
        Ok(SegmentReader {
            file_len: disk.len()? as usize,
            disk,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    /// The bytes from `pos` on, at least `want` of them unless the file ends first.
    pub(crate) fn at(&mut self, pos: usize, want: usize) -> Result<&[u8], DiskError> {
        let want_end = (pos + want).min(self.file_len);
        let buf_end = self.buf_start + self.buf.len();
        if pos < self.buf_start || want_end > buf_end {
            let read_len = want
                .max(Self::CHUNK_BYTES)
                .min(self.file_len.saturating_sub(pos));
            self.buf.resize(read_len, 0);
            self.disk.read_at(pos as u64, &mut self.buf)?;
            self.buf_start = pos;
        }
        Ok(&self.buf[pos - self.buf_start..])
    }

    /// Whether everything from `pos` to the end of the file is zero.
    fn zeros_from(&mut self, mut pos: usize) -> Result<bool, DiskError> {
        while pos < self.file_len {
            let chunk = self.at(pos, Self::CHUNK_BYTES)?;
            if chunk.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            pos += chunk.len();
        }
        Ok(true)
    }

    /// Everything from `pos` to the end of the file, in one buffer.
    fn rest_from(&mut self, pos: usize) -> Result<Vec<u8>, DiskError> {
        let mut rest = vec![0u8; self.file_len.saturating_sub(pos)];
        self.disk.read_at(pos as u64, &mut rest)?;
        Ok(rest)
    }
}

/// A valid frame after `from` from a batch too new to have been in flight with the
/// damaged one (more than `UNSYNCED_BATCHES_MAX` after the last good batch): proof
/// that the damaged bytes had been synced.
pub(crate) fn find_later_batch(
    data: &[u8],
    from: usize,
    record_max: u32,
    batch_seq_last: u64,
) -> Option<(usize, u64)> {
    let mut at = from + 1;
    while at + crate::record::FRAME_HEADER_BYTES <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        if len != 0 && len <= record_max {
            if let FrameScan::Valid { view, .. } = scan_frame(&data[at..], record_max) {
                if view.batch_seq > batch_seq_last + super::UNSYNCED_BATCHES_MAX {
                    return Some((at, view.batch_seq));
                }
            }
        }
        at += 1;
    }
    None
}
