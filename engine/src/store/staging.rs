//! Batches prepared but not yet published (pipelined group commit), oldest
//! first: each key's set and record as its batch left them, so that a later
//! batch builds on them, a hint written meanwhile lists them and compaction
//! leaves their segment alone. A batch is staged whole, as the overlay
//! `prepare` built, and dropped whole once published: nothing is copied or
//! re-keyed per write.

use super::KeyEntry;
use crate::version::SiblingSet;
use std::collections::{BTreeMap, VecDeque};

/// A key's set as its batch leaves it, and (once the batch is appended)
/// where its record went.
pub(crate) struct StagedKey {
    pub set: SiblingSet,
    pub entry: Option<KeyEntry>,
}

/// The keys one batch writes, by directory key, each with its final set.
pub(crate) type Overlay = BTreeMap<Box<[u8]>, StagedKey>;

#[derive(Default)]
pub(crate) struct Staging {
    /// (batch sequence, its keys), in the order the batches were prepared.
    batches: VecDeque<(u64, Overlay)>,
}

impl Staging {
    /// The set the newest staged batch writing `dir_key` left.
    pub fn set(&self, dir_key: &[u8]) -> Option<&SiblingSet> {
        (self.batches.iter().rev())
            .find_map(|(_, keys)| keys.get(dir_key))
            .map(|k| &k.set)
    }

    pub fn contains(&self, dir_key: &[u8]) -> bool {
        self.batches
            .iter()
            .any(|(_, keys)| keys.contains_key(dir_key))
    }

    /// Hold batch `batch_seq`'s keys, placed as `updates` say (a key written
    /// twice ends where its last record went), until it is published.
    pub fn stage(
        &mut self,
        batch_seq: u64,
        mut overlay: Overlay,
        updates: &[(Box<[u8]>, KeyEntry)],
    ) {
        for (dir_key, entry) in updates {
            let key = overlay.get_mut(dir_key);
            key.expect("every record written is of a key in its batch's overlay")
                .entry = Some(*entry);
        }
        debug_assert!(overlay.values().all(|k| k.entry.is_some()));
        assert!(
            self.batches
                .back()
                .is_none_or(|(last, _)| *last < batch_seq),
            "batch {batch_seq} staged after a later one"
        );
        self.batches.push_back((batch_seq, overlay));
    }

    /// Batch `batch_seq` (which wrote records) is published: it must be the
    /// oldest staged, as batches publish in the order they were prepared.
    pub fn published(&mut self, batch_seq: u64) {
        let oldest = self.batches.pop_front().map(|(seq, _)| seq);
        assert_eq!(oldest, Some(batch_seq), "batches publish in prepare order");
    }

    /// Every staged batch is void (a sync failed).
    pub fn clear(&mut self) {
        self.batches.clear();
    }

    /// Every staged key's record and set, oldest batch first (so a later
    /// record of a key comes after an earlier one).
    pub fn records(&self) -> impl Iterator<Item = (&[u8], KeyEntry, &SiblingSet)> {
        self.batches.iter().flat_map(|(_, keys)| {
            keys.iter().map(|(dir_key, k)| {
                let entry = k.entry.expect("a staged key's record is placed");
                (&dir_key[..], entry, &k.set)
            })
        })
    }

    /// Whether a staged record lies in `segment`.
    pub fn in_segment(&self, segment: u32) -> bool {
        self.records().any(|(_, entry, _)| entry.segment == segment)
    }
}
