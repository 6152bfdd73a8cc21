//! Versions: hybrid logical clocks, dots, version vectors and sibling sets (dotted
//! version vector sets). Concurrent writes are kept side by side as siblings; a write
//! or delete removes exactly the siblings its causal context covers (G2, G4).

use crate::counter::Counter;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

pub type NodeId = u32;

/// Hybrid logical clock time: wall milliseconds in the high 48 bits, a logical
/// counter in the low 16. Totally ordered; only used to pick a plain GET's winner.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

const HLC_LOGICAL_BITS: u32 = 16;

impl Hlc {
    pub fn wall_ms(self) -> u64 {
        self.0 >> HLC_LOGICAL_BITS
    }

    /// The earliest time at a wall-clock millisecond.
    pub fn at_wall_ms(wall_ms: u64) -> Hlc {
        Hlc(wall_ms << HLC_LOGICAL_BITS)
    }
}

/// Issues HLC times that never go backwards, even when the wall clock does.
#[derive(Clone, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        let physical = Hlc::at_wall_ms(wall_ms);
        self.last = if physical > self.last {
            physical
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last
    }

    /// The latest time issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Move past a time seen from elsewhere (a stored record or a peer).
    pub fn observe(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }
}

/// One event: the `counter`-th write coordinated by `node` for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.counter)
    }
}

/// How live siblings rank for a plain GET: the highest HLC time wins, ties
/// broken by node id then counter. Records read without building a set
/// (`Store::get_winner`) rank by it too.
pub fn winner_rank(hlc: Hlc, dot: Dot) -> (Hlc, NodeId, u64) {
    (hlc, dot.node, dot.counter)
}

/// A causal context: for each node, the highest counter seen (all below it too).
///
/// Held as pairs sorted by node, each node once (a context names a handful of
/// nodes, and a map's node allocation cost more than the whole set's other
/// work on every write); encoded as a map, as it always was.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct VersionVector(Vec<(NodeId, u64)>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, node: NodeId) -> u64 {
        match self.0.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.node) >= dot.counter
    }

    pub fn add(&mut self, dot: Dot) {
        match self.0.binary_search_by_key(&dot.node, |(n, _)| *n) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(dot.counter),
            Err(i) => self.0.insert(i, (dot.node, dot.counter)),
        }
        debug_assert!(self.0.windows(2).all(|w| w[0].0 < w[1].0));
    }

    pub fn merge(&mut self, other: &VersionVector) {
        for &(node, counter) in &other.0 {
            self.add(Dot { node, counter });
        }
    }

    /// Every dot `other` covers, `self` covers too.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(n, c)| self.get(*n) >= *c)
    }

    pub fn entries(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many nodes it names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Parses the `Display` form, `node:counter,node:counter` (empty for none).
    pub fn parse(text: &str) -> Option<VersionVector> {
        let mut vv = VersionVector::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (node, counter) = part.split_once(':')?;
            vv.add(Dot {
                node: node.trim().parse().ok()?,
                counter: counter.trim().parse().ok()?,
            });
        }
        Some(vv)
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries()).finish()
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries())
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of node ids to counters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionVector, A::Error> {
                let mut vv =
                    VersionVector(Vec::with_capacity(map.size_hint().unwrap_or(0).min(64)));
                while let Some((node, counter)) = map.next_entry()? {
                    vv.add(Dot { node, counter });
                }
                Ok(vv)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (node, counter)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        Ok(())
    }
}

/// One concurrent version of a key; `value: None` is a delete marker (tombstone).
/// A value may expire: at `deadline_ms` (wall time, ms since the Unix epoch) and
/// after, it reads as absent. A dot's deadline never changes (EXPIRE writes a
/// new dot), so copies of one dot agree on it and merges need no rule for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SiblingWire", into = "SiblingWire")]
pub struct Sibling {
    pub dot: Dot,
    pub hlc: Hlc,
    pub value: Option<Bytes>,
    /// Only with a value.
    pub deadline_ms: Option<u64>,
    /// A cluster's counted value: how each node's increments add up
    /// (`crate::counter`). Only with a value.
    pub counter: Option<Box<Counter>>,
}

impl Sibling {
    /// Holds a value at wall time `now_ms`: not a delete marker, not expired.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.deadline_ms.is_none_or(|d| d > now_ms)
    }
}

/// How a sibling is encoded (records, hints' values, peer frames). The payload's
/// first two variants encode exactly as `Option<Bytes>` did (a 0 or 1 tag, then
/// the bytes), so records written before expiry existed read unchanged.
#[derive(Serialize, Deserialize)]
struct SiblingWire {
    dot: Dot,
    hlc: Hlc,
    value: Payload,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Payload {
    Marker,
    Value(Bytes),
    Expiring(Bytes, u64),
    /// A counted value (`crate::counter`), with its deadline if any.
    Counted(Bytes, Option<u64>, Box<Counter>),
}

impl From<SiblingWire> for Sibling {
    fn from(w: SiblingWire) -> Sibling {
        let (value, deadline_ms, counter) = match w.value {
            Payload::Marker => (None, None, None),
            Payload::Value(v) => (Some(v), None, None),
            Payload::Expiring(v, d) => (Some(v), Some(d), None),
            Payload::Counted(v, d, c) => (Some(v), d, Some(c)),
        };
        Sibling {
            dot: w.dot,
            hlc: w.hlc,
            value,
            deadline_ms,
            counter,
        }
    }
}

impl From<Sibling> for SiblingWire {
    fn from(s: Sibling) -> SiblingWire {
        let value = match (s.value, s.deadline_ms, s.counter) {
            (None, deadline, counter) => {
                assert!(deadline.is_none(), "a delete marker has no deadline");
                assert!(counter.is_none(), "a delete marker has no counter");
                Payload::Marker
            }
            (Some(v), d, Some(c)) => Payload::Counted(v, d, c),
            (Some(v), None, None) => Payload::Value(v),
            (Some(v), Some(d), None) => Payload::Expiring(v, d),
        };
        SiblingWire {
            dot: s.dot,
            hlc: s.hlc,
            value,
        }
    }
}

/// All versions of one key that no write has yet superseded, with the causal
/// context that covers them and everything they replaced. Siblings are kept sorted
/// by dot, so equal sets compare and serialize equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingSet {
    pub context: VersionVector,
    pub siblings: Vec<Sibling>,
}

impl SiblingSet {
    /// About how many bytes the set takes in a record or a peer frame: its values
    /// plus a fixed allowance per sibling and per context entry. What batches and
    /// repair streams are sized by.
    pub fn size_bytes(&self) -> usize {
        let siblings: usize = self
            .siblings
            .iter()
            .map(|s| {
                let counter = s.counter.as_ref().map_or(0, |c| 16 + 24 * c.by_node.len());
                s.value.as_ref().map_or(0, Bytes::len) + 32 + counter
            })
            .sum();
        siblings + self.context.len() * 16
    }

    /// Coordinator write: replace what `covered` covers with one new sibling whose
    /// dot is fresh for `node`. `counter_floor` keeps dots unique across restarts
    /// that lost unsynced writes (the store passes its incarnation's floor).
    pub fn write(
        &mut self,
        covered: &VersionVector,
        node: NodeId,
        counter_floor: u64,
        hlc: Hlc,
        value: Option<Bytes>,
    ) -> Dot {
        self.write_expiring(covered, (node, counter_floor), hlc, value, None)
    }

    /// [`SiblingSet::write`] of a value that expires at `deadline_ms` (wall
    /// time; `None`: never). A delete marker never has one.
    pub fn write_expiring(
        &mut self,
        covered: &VersionVector,
        (node, counter_floor): (NodeId, u64),
        hlc: Hlc,
        value: Option<Bytes>,
        deadline_ms: Option<u64>,
    ) -> Dot {
        let deadline_ms = deadline_ms.filter(|_| value.is_some());
        let dot = Dot {
            node,
            counter: (self.context.get(node) + 1).max(counter_floor),
        };
        self.siblings.retain(|s| !covered.covers(s.dot));
        if cfg!(feature = "bug-merge-drops-sibling") {
            // Planted bug: the coordinator's join forgets concurrent siblings
            // (last-writer-wins), as replica merges do under the same feature.
            self.siblings.clear();
        }
        self.context.merge(covered);
        self.context.add(dot);
        self.siblings.push(Sibling {
            dot,
            hlc,
            value,
            deadline_ms,
            counter: None,
        });
        self.siblings.sort_by_key(|s| s.dot);
        dot
    }

    /// Replica merge: keep a sibling unless the other side has seen its dot and
    /// dropped it. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &SiblingSet) {
        let mut merged: Vec<Sibling> = Vec::new();
        for s in &self.siblings {
            let in_other = other.siblings.iter().any(|o| o.dot == s.dot);
            if in_other || !other.context.covers(s.dot) {
                merged.push(s.clone());
            }
        }
        for o in &other.siblings {
            let in_self = self.siblings.iter().any(|s| s.dot == o.dot);
            if !in_self && !self.context.covers(o.dot) {
                let mut taken = o.clone();
                if cfg!(feature = "bug-merge-drops-deadline") {
                    // Planted bug: the copy never expires here.
                    taken.deadline_ms = None;
                }
                merged.push(taken);
            }
        }
        merged.sort_by_key(|s| s.dot);
        if cfg!(feature = "bug-merge-drops-sibling") && merged.len() > 1 {
            // Planted bug: last-writer-wins sneaks into the merge.
            let best = merged.iter().max_by_key(|s| (s.hlc, s.dot.node)).cloned();
            merged = best.into_iter().collect();
        }
        self.siblings = merged;
        self.context.merge(&other.context);
    }

    /// Siblings that hold a value (not delete markers).
    pub fn live(&self) -> impl Iterator<Item = &Sibling> + Clone {
        self.siblings.iter().filter(|s| s.value.is_some())
    }

    /// No live sibling: the key reads as absent.
    pub fn is_deleted(&self) -> bool {
        self.live().next().is_none()
    }

    /// The value a plain Redis GET returns: the live sibling with the highest HLC
    /// time, ties broken by node id then counter.
    pub fn winner(&self) -> Option<&Sibling> {
        self.live().max_by_key(|s| winner_rank(s.hlc, s.dot))
    }

    /// The value a plain Redis GET returns: the winner's, except that a
    /// counted winner reads as its counters merged (`crate::counter`).
    pub fn string_value(&self) -> Option<Bytes> {
        crate::counter::resolve(self.live()).value()
    }

    /// [`SiblingSet::string_value`] among the siblings not expired at `now_ms`.
    pub fn string_value_at(&self, now_ms: u64) -> Option<Bytes> {
        crate::counter::resolve(self.live_at(now_ms)).value()
    }

    /// Make the sibling `dot` just minted a counted one: `counter`, its own
    /// node's entry stamped with `dot` when the write `added` to it.
    pub fn attach_counter(&mut self, dot: Dot, mut counter: Counter, added: bool) {
        if added {
            counter.stamp(dot);
        }
        let minted = self
            .siblings
            .iter_mut()
            .find(|s| s.dot == dot)
            .expect("the counter's sibling was just minted");
        assert!(minted.value.is_some(), "a counter is attached to a value");
        minted.counter = Some(Box::new(counter));
    }

    /// Siblings that hold a value at wall time `now_ms` (not expired).
    pub fn live_at(&self, now_ms: u64) -> impl Iterator<Item = &Sibling> + Clone {
        self.siblings.iter().filter(move |s| s.is_live_at(now_ms))
    }

    /// No sibling holds a value at `now_ms`: the key reads as absent.
    pub fn is_absent_at(&self, now_ms: u64) -> bool {
        self.live_at(now_ms).next().is_none()
    }

    /// [`SiblingSet::winner`] among the siblings not expired at `now_ms`.
    pub fn winner_at(&self, now_ms: u64) -> Option<&Sibling> {
        self.live_at(now_ms)
            .max_by_key(|s| winner_rank(s.hlc, s.dot))
    }

    /// When the key stops reading as present: the latest deadline of its
    /// values when every value has one; `None` when some value never expires
    /// or there is none.
    pub fn deadline_ms(&self) -> Option<u64> {
        let mut latest = None;
        for s in self.live() {
            latest = Some(latest.unwrap_or(0).max(s.deadline_ms?));
        }
        latest
    }

    /// The set without the values expired at `now_ms` (the context unchanged:
    /// a write under it supersedes them too).
    pub fn without_expired(mut self, now_ms: u64) -> SiblingSet {
        self.siblings
            .retain(|s| s.value.is_none() || s.is_live_at(now_ms));
        self
    }

    /// Newest HLC time in the set, for clocks to observe.
    pub fn max_hlc(&self) -> Hlc {
        self.siblings
            .iter()
            .map(|s| s.hlc)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The pairs encode as the map they replaced, byte for byte, and read
        /// back as the same context (records on disk carry contexts).
        #[test]
        fn version_vector_encodes_as_the_map_it_was(
            pairs in proptest::collection::vec((0u32..40, 0u64..1_000_000), 0..12)
        ) {
            let mut vv = VersionVector::new();
            let mut map = std::collections::BTreeMap::new();
            for &(node, counter) in &pairs {
                vv.add(Dot { node, counter });
                let c = map.entry(node).or_insert(0);
                *c = counter.max(*c);
            }
            let bytes = postcard::to_allocvec(&vv).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&map).unwrap());
            let back: VersionVector = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back, &vv);
        }
    }

    #[test]
    fn siblings_written_before_expiry_read_unchanged_and_deadlines_round_trip() {
        #[derive(Serialize)]
        struct Before {
            dot: Dot,
            hlc: Hlc,
            value: Option<Bytes>,
        }
        let dot = Dot {
            node: 1,
            counter: 2,
        };
        for value in [None, Some(Bytes::from_static(b"v"))] {
            let before = postcard::to_allocvec(&Before {
                dot,
                hlc: Hlc(3),
                value: value.clone(),
            })
            .unwrap();
            let now = Sibling {
                dot,
                hlc: Hlc(3),
                value,
                deadline_ms: None,
                counter: None,
            };
            assert_eq!(postcard::to_allocvec(&now).unwrap(), before);
            assert_eq!(postcard::from_bytes::<Sibling>(&before).unwrap(), now);
        }
        let expiring = Sibling {
            dot,
            hlc: Hlc(3),
            value: Some(Bytes::from_static(b"v")),
            deadline_ms: Some(1_700_000_000_123),
            counter: None,
        };
        let bytes = postcard::to_allocvec(&expiring).unwrap();
        assert_eq!(postcard::from_bytes::<Sibling>(&bytes).unwrap(), expiring);
        assert!(expiring.is_live_at(1_700_000_000_122));
        assert!(!expiring.is_live_at(1_700_000_000_123));
    }

    #[test]
    fn expired_values_read_as_absent_and_the_latest_deadline_ends_the_key() {
        let mut set = SiblingSet::default();
        let none = VersionVector::new();
        set.write_expiring(
            &none,
            (1, 0),
            Hlc(5),
            Some(Bytes::from_static(b"a")),
            Some(100),
        );
        set.write_expiring(
            &none,
            (2, 0),
            Hlc(4),
            Some(Bytes::from_static(b"b")),
            Some(200),
        );
        assert_eq!(set.deadline_ms(), Some(200));
        assert_eq!(set.winner_at(99).unwrap().value.as_deref(), Some(&b"a"[..]));
        assert_eq!(
            set.winner_at(100).unwrap().value.as_deref(),
            Some(&b"b"[..])
        );
        assert!(set.is_absent_at(200));
        assert_eq!(set.clone().without_expired(150).siblings.len(), 1);
        // A value that never expires keeps the key.
        set.write(&none, 3, 0, Hlc(1), Some(Bytes::from_static(b"c")));
        assert_eq!(set.deadline_ms(), None);
        assert!(!set.is_absent_at(u64::MAX));
        // A delete marker takes no deadline.
        let mut marker = SiblingSet::default();
        marker.write_expiring(&none, (1, 0), Hlc(1), None, Some(5));
        assert_eq!(marker.siblings[0].deadline_ms, None);
    }

    fn put(set: &mut SiblingSet, covered: &VersionVector, node: NodeId, v: &str) -> Dot {
        set.write(covered, node, 0, Hlc(1), Some(Bytes::from(v.to_string())))
    }

    #[test]
    fn write_covering_everything_replaces() {
        let mut set = SiblingSet::default();
        put(&mut set, &VersionVector::new(), 1, "a");
        let ctx = set.context.clone();
        put(&mut set, &ctx, 1, "b");
        assert_eq!(set.siblings.len(), 1);
        assert_eq!(set.winner().unwrap().value.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_covering_write_resolves() {
        let mut set = SiblingSet::default();
        let empty = VersionVector::new();
        put(&mut set, &empty, 1, "a");
        put(&mut set, &empty, 2, "b");
        assert_eq!(set.siblings.len(), 2);
        let ctx = set.context.clone();
        put(&mut set, &ctx, 1, "c");
        assert_eq!(set.siblings.len(), 1);
    }

    #[test]
    fn delete_marker_hides_and_covering_write_revives() {
        let mut set = SiblingSet::default();
        put(&mut set, &VersionVector::new(), 1, "a");
        let ctx = set.context.clone();
        set.write(&ctx, 1, 0, Hlc(2), None);
        assert!(set.is_deleted());
        let ctx = set.context.clone();
        put(&mut set, &ctx, 1, "b");
        assert!(!set.is_deleted());
        assert_eq!(set.siblings.len(), 1);
    }

    #[test]
    fn counter_floor_keeps_dots_fresh() {
        let mut set = SiblingSet::default();
        let dot = set.write(&VersionVector::new(), 1, 1 << 32, Hlc(1), None);
        assert_eq!(dot.counter, 1 << 32);
    }

    #[test]
    fn winner_prefers_highest_hlc_then_node() {
        let mut set = SiblingSet::default();
        let empty = VersionVector::new();
        set.write(&empty, 2, 0, Hlc(5), Some(Bytes::from_static(b"n2")));
        set.write(&empty, 1, 0, Hlc(5), Some(Bytes::from_static(b"n1")));
        set.write(&empty, 3, 0, Hlc(4), Some(Bytes::from_static(b"n3")));
        assert_eq!(set.winner().unwrap().value.as_deref(), Some(&b"n2"[..]));
    }

    #[test]
    fn hlc_never_goes_back() {
        let mut clock = HlcClock::default();
        let a = clock.now(100);
        let b = clock.now(50);
        let c = clock.now(100);
        assert!(a < b && b < c);
        assert_eq!(a.wall_ms(), 100);
    }

    #[test]
    fn version_vector_text_roundtrip() {
        let vv = VersionVector::parse("1:5,2:3").unwrap();
        assert_eq!(vv.to_string(), "1:5,2:3");
        assert!(vv.covers(Dot {
            node: 2,
            counter: 3
        }));
        assert!(!vv.covers(Dot {
            node: 3,
            counter: 1
        }));
        assert_eq!(VersionVector::parse(""), Some(VersionVector::new()));
        assert_eq!(VersionVector::parse("1:x"), None);
    }

    /// Three replicas; each coordinates writes under its own node id (so dots are
    /// unique, as in the real system) and now and then merges another's state.
    /// Events: (replica, covering write?, value, merge-from replica or none).
    fn arb_events() -> impl Strategy<Value = Vec<(usize, bool, u8, Option<usize>)>> {
        proptest::collection::vec(
            (
                0usize..3,
                any::<bool>(),
                any::<u8>(),
                proptest::option::of(0usize..3),
            ),
            1..24,
        )
    }

    fn run_replicas(events: &[(usize, bool, u8, Option<usize>)]) -> Vec<SiblingSet> {
        let mut replicas = vec![SiblingSet::default(); 3];
        for (r, covering, v, merge_from) in events {
            if let Some(from) = merge_from {
                let other = replicas[*from].clone();
                replicas[*r].merge(&other);
            } else {
                let set = &mut replicas[*r];
                let ctx = if *covering {
                    set.context.clone()
                } else {
                    VersionVector::new()
                };
                set.write(
                    &ctx,
                    *r as NodeId + 1,
                    0,
                    Hlc(*v as u64),
                    Some(Bytes::from(vec![*v])),
                );
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(events in arb_events()) {
            let r = run_replicas(&events);
            let (a, b, c) = (&r[0], &r[1], &r[2]);
            let mut ab = a.clone(); ab.merge(b);
            let mut ba = b.clone(); ba.merge(a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(c);
            let mut bc = b.clone(); bc.merge(c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(a);
            prop_assert_eq!(&aa, a);
        }

        #[test]
        fn merge_never_drops_an_uncovered_sibling(h1 in proptest::collection::vec((1u32..4, any::<bool>(), any::<u8>()), 1..12), h2 in proptest::collection::vec((1u32..4, any::<bool>(), any::<u8>()), 1..12)) {
            let mut a = SiblingSet::default();
            for (node, _, v) in &h1 {
                a.write(&VersionVector::new(), *node, 0, Hlc(*v as u64), Some(Bytes::from(vec![*v])));
            }
            let mut b = SiblingSet::default();
            for (node, _, v) in &h2 {
                b.write(&VersionVector::new(), *node + 10, 0, Hlc(*v as u64), Some(Bytes::from(vec![*v])));
            }
            let mut m = a.clone();
            m.merge(&b);
            for s in a.siblings.iter().chain(b.siblings.iter()) {
                prop_assert!(m.siblings.contains(s), "lost sibling {:?}", s.dot);
            }
        }
    }
}
