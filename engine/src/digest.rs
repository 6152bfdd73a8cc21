//! Anti-entropy digests: per (namespace, slot), the XOR of one 64-bit hash per key
//! (of the key and its whole sibling set), with the per-key hashes kept beside it.
//! Updated on every published write, so an exchange never rebuilds anything: two
//! replicas compare a partition's slot digests, then the key hashes of the slots
//! that differ, then move only the keys that differ.
//!
//! Owns: the hash of a sibling set, the digest tree, and the diff of two key lists.
//! Must not touch: I/O, time, the store's files. `Store` keeps one when asked.

use crate::version::SiblingSet;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Where every hash starts.
const SEED: u64 = 0xcbf2_9ce4_8422_2325;
/// An odd multiplier with bits spread over the word (the golden ratio's).
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// One 64-bit word into the hash. For a fixed hash it is a bijection of the
/// word, and for a fixed word a bijection of the hash (xor, an odd multiply and
/// a rotation each are), so two inputs that differ in one word never meet.
/// A word at a time: byte-wise FNV cost a dependent multiply per value byte
/// on every replica write (1.8% of a large-value cluster seed's instructions).
fn word(hash: u64, w: u64) -> u64 {
    (hash ^ w).wrapping_mul(MULTIPLIER).rotate_left(31)
}

/// Bytes into the hash: their length, then eight at a time (the last word
/// zero-padded; the length tells "a" from "a\0").
fn bytes(mut hash: u64, data: &[u8]) -> u64 {
    hash = word(hash, data.len() as u64);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        hash = word(hash, u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        hash = word(hash, u64::from_le_bytes(last));
    }
    hash
}

/// A final avalanche (SplitMix64's), so XOR-combined hashes do not cancel by
/// structure.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of everything a replica's copy of a key holds: its causal context and
/// every sibling (dot, HLC time, value or delete marker). Equal sets hash equal on
/// every node (siblings are kept sorted, contexts are ordered maps).
pub fn set_hash(set: &SiblingSet) -> u64 {
    let mut h = SEED;
    for (node, counter) in set.context.entries() {
        h = word(word(h, u64::from(node)), counter);
    }
    h = word(h, u64::MAX); // between the context and the siblings
    for s in &set.siblings {
        h = word(word(word(h, u64::from(s.dot.node)), s.dot.counter), s.hlc.0);
        match &s.value {
            Some(v) => h = bytes(word(h, 1), v),
            None => h = word(h, 0),
        }
    }
    mix(h)
}

/// The hash a key contributes to its slot's digest (the namespace is part of it,
/// so equal copies in two namespaces do not cancel out).
pub fn key_hash(namespace: u8, key: &[u8], set_hash: u64) -> u64 {
    mix(bytes(word(SEED, u64::from(namespace)), key) ^ set_hash)
}

#[derive(Default, Clone, Debug)]
struct SlotDigest {
    xor: u64,
    keys: BTreeMap<Box<[u8]>, u64>,
}

/// A slot's digest within one namespace: (slot, namespace, digest).
pub type SlotDigestEntry = (u16, u8, u64);

/// Per (slot, namespace): the XOR of its keys' hashes, and each key's hash.
#[derive(Default, Clone, Debug)]
pub struct DigestTree {
    slots: BTreeMap<(u16, u8), SlotDigest>,
}

impl DigestTree {
    /// Record that `key` (in `slot`) now holds a set hashing to `set_hash`.
    pub fn update(&mut self, namespace: u8, slot: u16, key: &[u8], set_hash: u64) {
        let slot_digest = self.slots.entry((slot, namespace)).or_default();
        let new = key_hash(namespace, key, set_hash);
        match slot_digest.keys.get_mut(key) {
            Some(old) => {
                slot_digest.xor ^= *old ^ new;
                *old = new;
            }
            None => {
                slot_digest.xor ^= new;
                slot_digest.keys.insert(key.into(), new);
            }
        }
    }

    /// Forget `key` (its record was collected).
    pub fn remove(&mut self, namespace: u8, slot: u16, key: &[u8]) {
        if let Some(slot_digest) = self.slots.get_mut(&(slot, namespace)) {
            if let Some(old) = slot_digest.keys.remove(key) {
                slot_digest.xor ^= old;
            }
        }
    }

    /// The non-empty (slot, namespace) digests within `slots`, ascending.
    pub fn slot_digests(&self, slots: RangeInclusive<u16>) -> Vec<SlotDigestEntry> {
        self.slots
            .range((*slots.start(), 0)..=(*slots.end(), u8::MAX))
            .filter(|(_, d)| !d.keys.is_empty())
            .map(|((slot, namespace), d)| (*slot, *namespace, d.xor))
            .collect()
    }

    /// The XOR of every key hash within `slots` (a partition's digest).
    pub fn range_digest(&self, slots: RangeInclusive<u16>) -> u64 {
        self.range_digest_where(slots, |_| true)
    }

    /// The XOR of the key hashes within `slots` of the namespaces `keep` accepts
    /// (a map partition's digest: a pinned namespace's, or the rest's).
    pub fn range_digest_where(&self, slots: RangeInclusive<u16>, keep: impl Fn(u8) -> bool) -> u64 {
        self.slots
            .range((*slots.start(), 0)..=(*slots.end(), u8::MAX))
            .filter(|((_, namespace), _)| keep(*namespace))
            .fold(0, |acc, (_, d)| acc ^ d.xor)
    }

    /// Every key of one slot of one namespace with its hash, in key order.
    pub fn slot_keys(&self, namespace: u8, slot: u16) -> Vec<(Vec<u8>, u64)> {
        self.slots
            .get(&(slot, namespace))
            .map(|d| d.keys.iter().map(|(k, h)| (k.to_vec(), *h)).collect())
            .unwrap_or_default()
    }

    /// Keys in the tree.
    pub fn key_count(&self) -> usize {
        self.slots.values().map(|d| d.keys.len()).sum()
    }
}

/// The slots whose digests differ between two lists from [`DigestTree::slot_digests`]
/// (a slot missing on one side differs).
pub fn differing_slots(mine: &[SlotDigestEntry], theirs: &[SlotDigestEntry]) -> Vec<(u16, u8)> {
    let mine: BTreeMap<(u16, u8), u64> = mine.iter().map(|(s, n, d)| ((*s, *n), *d)).collect();
    let theirs: BTreeMap<(u16, u8), u64> = theirs.iter().map(|(s, n, d)| ((*s, *n), *d)).collect();
    let mut slots: Vec<(u16, u8)> = mine
        .iter()
        .filter(|(slot, d)| theirs.get(slot) != Some(d))
        .map(|(slot, _)| *slot)
        .chain(theirs.keys().filter(|s| !mine.contains_key(s)).copied())
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// The keys whose hashes differ between two lists from [`DigestTree::slot_keys`]:
/// those that exist on either side with a different or missing counterpart.
pub fn differing_keys(mine: &[(Vec<u8>, u64)], theirs: &[(Vec<u8>, u64)]) -> Vec<Vec<u8>> {
    let theirs_map: BTreeMap<&[u8], u64> = theirs.iter().map(|(k, h)| (&k[..], *h)).collect();
    let mine_map: BTreeMap<&[u8], u64> = mine.iter().map(|(k, h)| (&k[..], *h)).collect();
    let mut keys: Vec<Vec<u8>> = mine
        .iter()
        .filter(|(k, h)| theirs_map.get(&k[..]) != Some(h))
        .map(|(k, _)| k.clone())
        .chain(
            theirs
                .iter()
                .filter(|(k, _)| !mine_map.contains_key(&k[..]))
                .map(|(k, _)| k.clone()),
        )
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, VersionVector};
    use bytes::Bytes;

    fn set_of(value: &str, node: u32) -> SiblingSet {
        let mut set = SiblingSet::default();
        set.write(
            &VersionVector::new(),
            node,
            0,
            Hlc(7),
            Some(Bytes::from(value.to_string())),
        );
        set
    }

    #[test]
    fn equal_sets_hash_equal_and_different_ones_differ() {
        assert_eq!(set_hash(&set_of("a", 1)), set_hash(&set_of("a", 1)));
        assert_ne!(set_hash(&set_of("a", 1)), set_hash(&set_of("b", 1)));
        assert_ne!(set_hash(&set_of("a", 1)), set_hash(&set_of("a", 2)));
    }

    #[test]
    fn digest_is_order_independent_and_finds_the_one_differing_key() {
        let mut left = DigestTree::default();
        let mut right = DigestTree::default();
        for (i, key) in ["k1", "k2", "k3"].iter().enumerate() {
            left.update(0, 5, key.as_bytes(), i as u64);
        }
        for (key, hash) in [("k3", 2), ("k1", 0), ("k2", 1)] {
            right.update(0, 5, key.as_bytes(), hash);
        }
        assert_eq!(left.slot_digests(0..=10), right.slot_digests(0..=10));
        assert_eq!(left.range_digest(0..=10), right.range_digest(0..=10));
        right.update(0, 5, b"k2", 99);
        right.update(0, 6, b"k9", 1);
        assert_ne!(left.range_digest(0..=10), right.range_digest(0..=10));
        let slots = differing_slots(&left.slot_digests(0..=10), &right.slot_digests(0..=10));
        assert_eq!(slots, vec![(5, 0), (6, 0)]);
        let keys = differing_keys(&left.slot_keys(0, 5), &right.slot_keys(0, 5));
        assert_eq!(keys, vec![b"k2".to_vec()]);
        let keys = differing_keys(&left.slot_keys(0, 6), &right.slot_keys(0, 6));
        assert_eq!(keys, vec![b"k9".to_vec()]);
        // Updating back restores equality: XOR undoes itself.
        right.update(0, 5, b"k2", 1);
        right.remove(0, 6, b"k9");
        assert_eq!(left.slot_digests(0..=10), right.slot_digests(0..=10));
        // The same copy in two namespaces does not cancel out.
        left.update(1, 5, b"k1", 0);
        assert_ne!(left.range_digest(0..=10), right.range_digest(0..=10));
    }
}
