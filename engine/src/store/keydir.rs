//! The key directory: where each key's latest record is. Keys are grouped by
//! namespace and slot (one small ordered map per slot), so a lookup searches only
//! the few keys of one slot, SCAN walks slots in order, and a partition's keys (a
//! range of slots) can be listed without touching the rest.
//!
//! Keys are "directory keys": namespace byte, slot (u16 big endian), key bytes.
//!
//! Beside the map it keeps each collection's count of live elements, so a
//! collection's length (LLEN, HLEN, SCARD, a push's reply) and whether it
//! exists cost one lookup, not a walk of its elements; and per namespace the
//! set of slots holding a delete marker (a non-live entry), so a marker
//! collection round visits those slots only, not every key.

use super::KeyEntry;
use crate::fields::{is_collection_namespace, split_field_key, stored_key_slot};
use crate::slot::SLOT_COUNT;
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};

type SlotMap = BTreeMap<Box<[u8]>, KeyEntry>;
/// Directory entries in arrival order.
pub(crate) type Entries = Vec<(Box<[u8]>, KeyEntry)>;

#[derive(Default)]
pub(crate) struct KeyDir {
    /// Per namespace, one map per slot (allocated when the namespace is first used).
    namespaces: BTreeMap<u8, Vec<SlotMap>>,
    len: usize,
    /// Live elements per collection, by namespace byte then the
    /// collection's element prefix (`fields::field_prefix`); absent at 0.
    live_elements: BTreeMap<Box<[u8]>, u64>,
    /// Per collection (named as in `live_elements`), directory keys no live
    /// element lies before (first) or after (last): where a pop left off,
    /// so walks from an end skip the delete markers pops leave behind.
    live_ends: BTreeMap<Box<[u8]>, LiveEnds>,
    /// Per namespace, exactly the slots whose map holds a non-live entry.
    marker_slots: BTreeMap<u8, RoaringBitmap>,
}

/// Bounds on a collection's live elements (see `KeyDir::live_ends`).
#[derive(Default)]
struct LiveEnds {
    first: Option<Box<[u8]>>,
    last: Option<Box<[u8]>>,
}

/// `namespace ++ prefix`: how `live_elements` and `live_ends` name a
/// collection.
fn collection_id(namespace: u8, prefix: &[u8]) -> Vec<u8> {
    let mut id = Vec::with_capacity(1 + prefix.len());
    id.push(namespace);
    id.extend_from_slice(prefix);
    id
}

/// Directory keys up to this length are built on the stack for lookups.
const STACK_KEY_BYTES: usize = 128;

/// The collection a directory key is an element of, as `live_elements`
/// names it; `None` for a string's key (or a damaged element key).
fn collection_of(dir_key: &[u8]) -> Option<&[u8]> {
    if !is_collection_namespace(dir_key[0]) {
        return None;
    }
    let stored = &dir_key[3..];
    let (_, element) = split_field_key(stored)?;
    Some(&stored[..stored.len() - element.len()])
}

fn split(dir_key: &[u8]) -> (u8, usize) {
    (
        dir_key[0],
        u16::from_be_bytes([dir_key[1], dir_key[2]]) as usize,
    )
}

impl KeyDir {
    pub fn len(&self) -> usize {
        self.len
    }

    fn slot_map(&self, namespace: u8, slot: usize) -> Option<&SlotMap> {
        self.namespaces.get(&namespace).map(|slots| &slots[slot])
    }

    pub fn get(&self, dir_key: &[u8]) -> Option<&KeyEntry> {
        let (namespace, slot) = split(dir_key);
        self.slot_map(namespace, slot)?.get(dir_key)
    }

    /// Look up by namespace and key without allocating (for short keys).
    pub fn get_key(&self, namespace: u8, key: &[u8]) -> Option<&KeyEntry> {
        let slot = stored_key_slot(namespace, key);
        let map = self.slot_map(namespace, slot as usize)?;
        let mut stack = [0u8; STACK_KEY_BYTES];
        if key.len() + 3 <= STACK_KEY_BYTES {
            stack[0] = namespace;
            stack[1..3].copy_from_slice(&slot.to_be_bytes());
            stack[3..3 + key.len()].copy_from_slice(key);
            map.get(&stack[..3 + key.len()])
        } else {
            map.get(&super::dir_key(namespace, key)[..])
        }
    }

    pub fn insert(&mut self, dir_key: Box<[u8]>, entry: KeyEntry) -> Option<KeyEntry> {
        let (namespace, slot) = split(&dir_key);
        let slots = self
            .namespaces
            .entry(namespace)
            .or_insert_with(|| (0..SLOT_COUNT).map(|_| SlotMap::new()).collect());
        let live = entry.live;
        // Only an element's key is kept for counting (a string's costs nothing).
        let element = is_collection_namespace(namespace).then(|| dir_key.clone());
        let previous = slots[slot].insert(dir_key, entry);
        if previous.is_none() {
            self.len += 1;
        }
        if !live {
            self.marker_slots
                .entry(namespace)
                .or_default()
                .insert(slot as u32);
        } else if previous.is_some_and(|p| !p.live) {
            self.recheck_marker_slot(namespace, slot);
        }
        if let Some(element) = element {
            self.count_element(&element, previous.is_some_and(|p| p.live), live);
        }
        previous
    }

    /// A non-live entry of `slot` became live or left: keep the slot in
    /// `marker_slots` only while another one is there.
    fn recheck_marker_slot(&mut self, namespace: u8, slot: usize) {
        let holds_marker = self
            .slot_map(namespace, slot)
            .is_some_and(|map| map.values().any(|e| !e.live));
        if !holds_marker {
            if let Some(slots) = self.marker_slots.get_mut(&namespace) {
                slots.remove(slot as u32);
            }
        }
    }

    /// The slots of `namespace` in `slots` that hold a non-live entry, with
    /// their maps, in slot order.
    pub fn marker_slots_in(
        &self,
        namespace: u8,
        slots: RangeInclusive<usize>,
    ) -> impl Iterator<Item = (usize, &SlotMap)> {
        let range = *slots.start() as u32..=*slots.end() as u32;
        self.marker_slots
            .get(&namespace)
            .into_iter()
            .flat_map(move |set| set.range(range.clone()))
            .filter_map(move |slot| {
                let map = self.slot_map(namespace, slot as usize)?;
                debug_assert!(map.values().any(|e| !e.live), "slot {slot} holds no marker");
                Some((slot as usize, map))
            })
    }

    /// Keep `live_elements` as an element of `dir_key` goes from
    /// `was_live` to `is_live`.
    fn count_element(&mut self, dir_key: &[u8], was_live: bool, is_live: bool) {
        if was_live == is_live {
            return;
        }
        let Some(prefix) = collection_of(dir_key) else {
            return;
        };
        let id = collection_id(dir_key[0], prefix);
        if is_live {
            // A new live element outside a bound moves the bound to it.
            if let Some(ends) = self.live_ends.get_mut(&id[..]) {
                if ends.first.as_deref().is_some_and(|first| dir_key < first) {
                    ends.first = Some(dir_key.into());
                }
                if ends.last.as_deref().is_some_and(|last| dir_key > last) {
                    ends.last = Some(dir_key.into());
                }
            }
            *self.live_elements.entry(id.into_boxed_slice()).or_insert(0) += 1;
            return;
        }
        let count = self
            .live_elements
            .get_mut(&id[..])
            .expect("a live element was counted");
        *count -= 1;
        if *count == 0 {
            self.live_elements.remove(&id[..]);
            self.live_ends.remove(&id[..]);
        }
    }

    /// Remember that no live element of `dir_key`'s collection lies before
    /// it (or, `last`, after it). `dir_key` must be a live element no live
    /// element precedes (follows): the first (last) one a walk found.
    pub fn note_live_end(&mut self, dir_key: &[u8], last: bool) {
        assert!(
            self.get(dir_key).is_some_and(|e| e.live),
            "a noted live end is a live element"
        );
        let Some(prefix) = collection_of(dir_key) else {
            return;
        };
        let id = collection_id(dir_key[0], prefix).into_boxed_slice();
        let ends = self.live_ends.entry(id).or_default();
        match last {
            false => ends.first = Some(dir_key.into()),
            true => ends.last = Some(dir_key.into()),
        }
    }

    /// The bounds known for the collection with element prefix `prefix`.
    fn ends_of(&self, namespace: u8, prefix: &[u8]) -> Option<&LiveEnds> {
        self.live_ends.get(&collection_id(namespace, prefix)[..])
    }

    /// How many live elements the collection with element prefix `prefix`
    /// in `namespace` holds.
    pub fn live_elements(&self, namespace: u8, prefix: &[u8]) -> u64 {
        if self.live_elements.is_empty() {
            return 0;
        }
        let mut stack = [0u8; STACK_KEY_BYTES];
        let found = if prefix.len() < STACK_KEY_BYTES {
            stack[0] = namespace;
            stack[1..=prefix.len()].copy_from_slice(prefix);
            self.live_elements.get(&stack[..=prefix.len()])
        } else {
            self.live_elements
                .get(&collection_id(namespace, prefix)[..])
        };
        found.copied().unwrap_or(0)
    }

    /// How many collections hold live elements, per namespace.
    pub fn collections_per_namespace(&self) -> BTreeMap<u8, u64> {
        let mut out = BTreeMap::new();
        for id in self.live_elements.keys() {
            *out.entry(id[0]).or_insert(0) += 1;
        }
        out
    }

    /// Whether any collection holds a live element (a string-only store
    /// answers every "is it a collection?" without a lookup).
    pub fn holds_collections(&self) -> bool {
        !self.live_elements.is_empty()
    }

    pub fn remove(&mut self, dir_key: &[u8]) -> Option<KeyEntry> {
        let (namespace, slot) = split(dir_key);
        let removed = self.namespaces.get_mut(&namespace)?[slot].remove(dir_key);
        if removed.is_some() {
            self.len -= 1;
        }
        if removed.is_some_and(|r| !r.live) {
            self.recheck_marker_slot(namespace, slot);
        }
        self.count_element(dir_key, removed.is_some_and(|r| r.live), false);
        removed
    }

    /// Load many entries at once (recovery): later entries for the same key win.
    /// Each slot's map is built from sorted input in linear time instead of one
    /// search per insert.
    pub fn bulk_load(&mut self, entries: Entries) {
        let mut groups: BTreeMap<u8, Vec<Entries>> = BTreeMap::new();
        for (dir_key, entry) in entries {
            let (namespace, slot) = split(&dir_key);
            groups
                .entry(namespace)
                .or_insert_with(|| vec![Vec::new(); SLOT_COUNT as usize])[slot]
                .push((dir_key, entry));
        }
        for (namespace, slots) in groups {
            let maps = self
                .namespaces
                .entry(namespace)
                .or_insert_with(|| (0..SLOT_COUNT).map(|_| SlotMap::new()).collect());
            for (slot, mut arrivals) in slots.into_iter().enumerate() {
                if arrivals.is_empty() {
                    continue;
                }
                // Stable: equal keys stay in arrival order, so the last one wins.
                arrivals.sort_by(|a, b| a.0.cmp(&b.0));
                let mut latest: Entries = Vec::with_capacity(arrivals.len());
                for item in arrivals {
                    match latest.last_mut() {
                        Some(last) if last.0 == item.0 => *last = item,
                        _ => latest.push(item),
                    }
                }
                let mut fresh: SlotMap = latest.into_iter().collect();
                maps[slot].append(&mut fresh);
            }
        }
        self.len = self
            .namespaces
            .values()
            .flat_map(|slots| slots.iter())
            .map(|m| m.len())
            .sum();
        self.live_ends.clear();
        self.recount_elements();
        self.marker_slots =
            self.namespaces
                .iter()
                .map(|(namespace, maps)| {
                    let slots = maps.iter().enumerate().filter_map(|(slot, map)| {
                        map.values().any(|e| !e.live).then_some(slot as u32)
                    });
                    (*namespace, slots.collect())
                })
                .collect();
    }

    /// Count every collection's live elements afresh (after a bulk load).
    fn recount_elements(&mut self) {
        let mut counts: BTreeMap<Box<[u8]>, u64> = BTreeMap::new();
        for (dir_key, _) in self.iter().filter(|(_, e)| e.live) {
            if let Some(prefix) = collection_of(dir_key) {
                let id: Vec<u8> = [&dir_key[..1], prefix].concat();
                *counts.entry(id.into_boxed_slice()).or_insert(0) += 1;
            }
        }
        self.live_elements = counts;
    }

    /// Every entry in directory order (namespace, slot, key).
    pub fn iter(&self) -> impl Iterator<Item = (&Box<[u8]>, &KeyEntry)> {
        self.namespaces
            .values()
            .flat_map(|slots| slots.iter().flat_map(|map| map.iter()))
    }

    /// Every entry after `after` (from the start when `None`), in directory
    /// order.
    pub fn entries_after<'a>(
        &'a self,
        after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Box<[u8]>, &'a KeyEntry)> + 'a {
        let (first_namespace, first_slot) = after.map_or((0, 0), split);
        (self.namespaces.range(first_namespace..)).flat_map(move |(namespace, slots)| {
            let first = *namespace == first_namespace;
            let skip = if first { first_slot } else { 0 };
            (slots.iter().enumerate().skip(skip)).flat_map(move |(slot, map)| {
                let lower = match after {
                    Some(key) if first && slot == first_slot => Bound::Excluded(key),
                    _ => Bound::Unbounded,
                };
                map.range::<[u8], _>((lower, Bound::Unbounded))
            })
        })
    }

    pub fn values(&self) -> impl Iterator<Item = &KeyEntry> {
        self.iter().map(|(_, e)| e)
    }

    /// Namespaces that have ever held a key (ascending).
    pub fn namespaces(&self) -> impl Iterator<Item = u8> + '_ {
        self.namespaces.keys().copied()
    }

    /// The entries of `namespace` whose stored key starts with `prefix`, in
    /// key order (a hash's fields: one slot, one contiguous range), from the
    /// collection's first live element when a walk noted it
    /// ([`Self::note_live_end`]): dead entries before it may be left out.
    pub fn with_prefix<'a>(
        &'a self,
        namespace: u8,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Box<[u8]>, &'a KeyEntry)> + 'a {
        let mut start = super::dir_key(namespace, prefix);
        let slot = split(&start).1;
        if let Some(first) = self
            .ends_of(namespace, prefix)
            .and_then(|e| e.first.clone())
        {
            start = first;
        }
        self.slot_map(namespace, slot)
            .into_iter()
            .flat_map(move |map| map.range(start.clone()..))
            .take_while(move |(k, _)| k[3..].starts_with(prefix))
    }

    /// [`Self::with_prefix`] from the last entry back (from the last live
    /// element when a walk noted it).
    pub fn with_prefix_rev<'a>(
        &'a self,
        namespace: u8,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Box<[u8]>, &'a KeyEntry)> + 'a {
        let start = super::dir_key(namespace, prefix);
        let slot = split(&start).1;
        // The first directory key past every key starting with `start`.
        let mut end = start.to_vec();
        while end.last() == Some(&0xff) {
            end.pop();
        }
        let upper = match self.ends_of(namespace, prefix).and_then(|e| e.last.clone()) {
            Some(last) => Bound::Included(last),
            None if end.len() > 3 => {
                *end.last_mut().expect("longer than the slot") += 1;
                Bound::Excluded(end.into_boxed_slice())
            }
            None => Bound::Unbounded,
        };
        self.slot_map(namespace, slot)
            .into_iter()
            .flat_map(move |map| {
                map.range((Bound::Included(start.clone()), upper.clone()))
                    .rev()
            })
            .take_while(move |(k, _)| k[3..].starts_with(prefix))
    }

    /// The entries of one namespace from `first_slot` on, slot by slot.
    pub fn slots_from(
        &self,
        namespace: u8,
        first_slot: usize,
    ) -> impl Iterator<Item = (usize, &SlotMap)> {
        self.namespaces
            .get(&namespace)
            .into_iter()
            .flat_map(move |slots| slots.iter().enumerate().skip(first_slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dir_key;

    fn entry(segment: u32) -> KeyEntry {
        KeyEntry {
            segment,
            offset: 16,
            len: 10,
            live: true,
        }
    }

    #[test]
    fn behaves_like_one_ordered_map() {
        let mut dir = KeyDir::default();
        let mut model = BTreeMap::new();
        for i in 0..500u32 {
            let dk = dir_key((i % 3) as u8, format!("key{}", i % 200).as_bytes());
            assert_eq!(dir.insert(dk.clone(), entry(i)), model.insert(dk, entry(i)));
        }
        for i in (0..200u32).step_by(7) {
            let dk = dir_key(1, format!("key{i}").as_bytes());
            assert_eq!(dir.remove(&dk), model.remove(&dk));
        }
        assert_eq!(dir.len(), model.len());
        let ours: Vec<_> = dir.iter().map(|(k, e)| (k.clone(), *e)).collect();
        let theirs: Vec<_> = model.iter().map(|(k, e)| (k.clone(), *e)).collect();
        assert_eq!(ours, theirs);
        for i in 0..200u32 {
            let key = format!("key{i}");
            assert_eq!(
                dir.get_key(2, key.as_bytes()),
                model.get(&dir_key(2, key.as_bytes()))
            );
        }
        let mut bulk = KeyDir::default();
        bulk.bulk_load(model.iter().map(|(k, e)| (k.clone(), *e)).collect());
        let later = dir_key(2, b"key5");
        bulk.bulk_load(vec![(later.clone(), entry(77)), (later.clone(), entry(78))]);
        model.insert(later, entry(78));
        assert_eq!(bulk.len(), model.len());
        let bulk_items: Vec<_> = bulk.iter().map(|(k, e)| (k.clone(), *e)).collect();
        let model_items: Vec<_> = model.iter().map(|(k, e)| (k.clone(), *e)).collect();
        assert_eq!(bulk_items, model_items);
        let long_key = vec![b'x'; 300];
        dir.insert(dir_key(0, &long_key), entry(9));
        assert_eq!(dir.get_key(0, &long_key), Some(&entry(9)));
    }

    #[test]
    fn counts_live_elements_and_walks_a_prefix_both_ways() {
        use crate::fields::{field_key, field_prefix, members_namespace};
        let ns = members_namespace(0);
        let mut dir = KeyDir::default();
        let keys: [&[u8]; 3] = [b"a", b"ab", &[0xff, 0xff]];
        for i in 0..300u32 {
            let key = keys[(i % 3) as usize];
            let member = [0xff, (i % 50) as u8];
            let mut e = entry(i);
            e.live = i % 7 != 0;
            dir.insert(dir_key(ns, &field_key(key, &member)), e);
            if i % 11 == 0 {
                dir.remove(&dir_key(ns, &field_key(key, &[0xff, (i % 13) as u8])));
            }
        }
        let mut bulk = KeyDir::default();
        bulk.bulk_load(dir.iter().map(|(k, e)| (k.clone(), *e)).collect());
        for key in keys {
            let prefix = field_prefix(key);
            let forward: Vec<_> = dir.with_prefix(ns, &prefix).map(|(k, _)| k).collect();
            let mut backward: Vec<_> = dir.with_prefix_rev(ns, &prefix).map(|(k, _)| k).collect();
            backward.reverse();
            assert_eq!(forward, backward);
            let live = dir.with_prefix(ns, &prefix).filter(|(_, e)| e.live).count() as u64;
            assert!(live > 0);
            assert_eq!(dir.live_elements(ns, &prefix), live);
            assert_eq!(bulk.live_elements(ns, &prefix), live);
        }
        assert_eq!(dir.live_elements(ns, &field_prefix(b"zz")), 0);
    }

    #[test]
    fn noted_live_ends_skip_dead_entries_and_move_for_new_elements() {
        use crate::fields::{field_key, field_prefix, lists_namespace};
        let ns = lists_namespace(0);
        let mut dir = KeyDir::default();
        let dk = |i: u8| dir_key(ns, &field_key(b"q", &[i]));
        for i in 10..20 {
            let mut e = entry(u32::from(i));
            e.live = i >= 15;
            dir.insert(dk(i), e);
        }
        let prefix = field_prefix(b"q");
        let walk = |dir: &KeyDir| {
            dir.with_prefix(ns, &prefix)
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(walk(&dir).len(), 10);
        dir.note_live_end(&dk(15), false);
        dir.note_live_end(&dk(19), true);
        assert_eq!(walk(&dir), (15..20).map(dk).collect::<Vec<_>>());
        // A live element before the noted first one moves it.
        dir.insert(dk(3), entry(3));
        assert_eq!(walk(&dir).first(), Some(&dk(3)));
        dir.insert(dk(30), entry(30));
        assert_eq!(
            dir.with_prefix_rev(ns, &prefix)
                .next()
                .map(|(k, _)| k.clone()),
            Some(dk(30))
        );
        assert_eq!(dir.live_elements(ns, &prefix), 7);
    }

    /// `marker_slots` holds exactly the slots with a non-live entry, through
    /// inserts that kill and revive keys, removals, and a bulk load.
    #[test]
    fn marker_slots_are_exactly_the_slots_holding_a_non_live_entry() {
        let check = |dir: &KeyDir| {
            for namespace in 0..2u8 {
                let listed: Vec<usize> = dir
                    .marker_slots_in(namespace, 0..=SLOT_COUNT as usize - 1)
                    .map(|(slot, _)| slot)
                    .collect();
                let expected: Vec<usize> = dir
                    .slots_from(namespace, 0)
                    .filter(|(_, map)| map.values().any(|e| !e.live))
                    .map(|(slot, _)| slot)
                    .collect();
                assert_eq!(listed, expected, "namespace {namespace}");
            }
        };
        let mut dir = KeyDir::default();
        let mut rng = crate::rng::SplitMix64::new(7);
        for step in 0..3_000u32 {
            // Few slots, so slots hold several keys at once.
            let dk = dir_key(rng.below(2) as u8, format!("k{}", rng.below(60)).as_bytes());
            match rng.below(3) {
                0 => {
                    dir.remove(&dk);
                }
                kind => {
                    let live = kind == 1;
                    dir.insert(
                        dk,
                        KeyEntry {
                            live,
                            ..entry(step)
                        },
                    );
                }
            }
            check(&dir);
        }
        let entries: Entries = dir.iter().map(|(k, e)| (k.clone(), *e)).collect();
        assert!(entries.iter().any(|(_, e)| !e.live));
        let mut loaded = KeyDir::default();
        loaded.bulk_load(entries);
        check(&loaded);
    }
}
