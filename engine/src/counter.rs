//! Counters that merge per node: what a cluster's INCR, DECR, INCRBY,
//! DECRBY, INCRBYFLOAT, HINCRBY and HINCRBYFLOAT write, so that increments
//! coordinated on different nodes at once add up instead of one overwriting
//! the other.
//!
//! A counted sibling carries, beside its value (the total as its coordinator
//! saw it, in decimal), a [`Counter`]: the base it started from (a plain
//! value's number, or 0 for an absent key) and, per node, the sums of that
//! node's integer and float additions with the dot counter of the node's
//! latest one. A node's
//! dots only grow, and a coordinator mints only once its copy of the key holds
//! every dot of its own (the cluster's minting gate), so a node's later entry
//! always includes its earlier ones: merging two counters keeps, per node, the
//! entry with the higher dot counter, and an increment seen twice (a re-send,
//! a repair, a hint) is counted once.
//!
//! How a key's siblings read ([`resolve`]): the winner by the plain GET rule
//! decides. A plain winner reads as itself; a counted winner reads as the merge
//! of every live counted sibling that started from the same base. So a SET
//! concurrent with increments resolves by the hybrid clock, as two SETs do: if
//! the SET wins, it is as if the increments came before it. A delete
//! concurrent with increments loses to them (the key reads as the counter).
//!
//! An EXPIRE or PERSIST of a counted key carries its merged counter to the
//! new deadline unchanged (nothing stamped), so counting goes on.
//!
//! This module owns the arithmetic only; the store calls it while it orders a
//! batch (`Modify::CountBy`, `CountByFloat`, `Touch`), and must not be called
//! with siblings of another key.

use crate::store::modify::{format_float, parse_f64, parse_i64, ModifyError};
use crate::version::{winner_rank, Dot, NodeId, Sibling, SiblingSet};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One node's additions to a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSum {
    pub node: NodeId,
    /// The dot counter of the node's latest addition (what merges compare).
    pub counter: u64,
    /// Its INCRBY additions.
    pub sum: i64,
    /// Its INCRBYFLOAT additions: an f64, as its bits (0: none).
    pub float_sum_bits: u64,
}

impl NodeSum {
    fn float_sum(&self) -> f64 {
        f64::from_bits(self.float_sum_bits)
    }
}

/// A counted sibling's state (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// The integer the counting started from.
    pub base: i64,
    /// A base that is not an integer (INCRBYFLOAT of "1.5"): an f64, as its
    /// bits; `base` is then 0.
    pub base_float_bits: Option<u64>,
    /// The plain value's dot it was read from (`None`: the key was absent).
    pub base_dot: Option<Dot>,
    /// Sorted by node, one entry each.
    pub by_node: Vec<NodeSum>,
}

impl Counter {
    /// Counting from a plain value (or from nothing): an integer, or for an
    /// INCRBYFLOAT (`float`) any finite float.
    fn from_plain(plain: Option<&Sibling>, float: bool) -> Result<Counter, ModifyError> {
        let Some(s) = plain else {
            return Ok(Counter::default());
        };
        let value = s.value.as_deref().unwrap_or_default();
        let (base, base_float_bits) = match (parse_i64(value), float) {
            (Some(base), _) => (base, None),
            (None, false) => return Err(ModifyError::NotAnInteger),
            (None, true) => (
                0,
                Some(parse_f64(value).ok_or(ModifyError::NotAFloat)?.to_bits()),
            ),
        };
        Ok(Counter {
            base,
            base_float_bits,
            base_dot: Some(s.dot),
            by_node: Vec::new(),
        })
    }

    /// Whether two counters started from the same base (and so may merge).
    pub fn same_base(&self, other: &Counter) -> bool {
        self.base == other.base
            && self.base_float_bits == other.base_float_bits
            && self.base_dot == other.base_dot
    }

    /// Whether any part is a float (then the total is one).
    fn is_float(&self) -> bool {
        self.base_float_bits.is_some() || self.by_node.iter().any(|n| n.float_sum() != 0.0)
    }

    /// The total: the base plus every node's sum (wider than i64: concurrent
    /// additions on different nodes can pass i64's range together). Integer
    /// parts only; see [`Counter::value`].
    pub fn total(&self) -> i128 {
        let sums: i128 = self.by_node.iter().map(|n| i128::from(n.sum)).sum();
        i128::from(self.base) + sums
    }

    /// The total as a float, summed in node order (so every replica gets the
    /// same bits).
    fn total_f64(&self) -> f64 {
        let base = self
            .base_float_bits
            .map_or(self.base as f64, f64::from_bits);
        self.by_node
            .iter()
            .fold(base, |t, n| t + n.sum as f64 + n.float_sum())
    }

    /// Take `other`'s entries where they are newer. Both must share a base.
    pub fn merge(&mut self, other: &Counter) {
        assert!(self.same_base(other), "counters of different bases merged");
        for theirs in &other.by_node {
            match self.by_node.binary_search_by_key(&theirs.node, |n| n.node) {
                Ok(i) => {
                    let ours = &mut self.by_node[i];
                    if cfg!(feature = "bug-counter-merge-adds") && theirs.counter != ours.counter {
                        // Planted bug: entries are added, not replaced, so an
                        // addition both siblings carry counts twice.
                        ours.sum = ours.sum.saturating_add(theirs.sum);
                    } else if theirs.counter > ours.counter {
                        *ours = *theirs;
                    }
                    ours.counter = ours.counter.max(theirs.counter);
                }
                Err(i) => self.by_node.insert(i, *theirs),
            }
        }
    }

    /// `node`'s entry, made if it has none (its dot counter is set once the
    /// write's dot is minted, [`Counter::stamp`]).
    fn entry(&mut self, node: NodeId) -> &mut NodeSum {
        let i = match self.by_node.binary_search_by_key(&node, |n| n.node) {
            Ok(i) => i,
            Err(i) => {
                let entry = NodeSum {
                    node,
                    counter: 0,
                    sum: 0,
                    float_sum_bits: 0,
                };
                self.by_node.insert(i, entry);
                i
            }
        };
        &mut self.by_node[i]
    }

    /// INCRBY: add `by` as `node`'s. Refused when the value is not an
    /// integer, or when the node's sum or the total would leave i64's range.
    pub fn add(&mut self, node: NodeId, by: i64) -> Result<(), ModifyError> {
        let now = if self.is_float() {
            // "11.5" refuses INCR; a float total that is whole ("12") takes it.
            i128::from(parse_i64(&self.value()).ok_or(ModifyError::NotAnInteger)?)
        } else {
            self.total()
        };
        let total = now.checked_add(i128::from(by));
        if total.is_none_or(|t| i64::try_from(t).is_err()) {
            return Err(ModifyError::Overflow);
        }
        let entry = self.entry(node);
        entry.sum = entry.sum.checked_add(by).ok_or(ModifyError::Overflow)?;
        Ok(())
    }

    /// INCRBYFLOAT: add `by` as `node`'s. Refused when the total would not
    /// be finite.
    pub fn add_float(&mut self, node: NodeId, by: f64) -> Result<(), ModifyError> {
        if !(self.total_f64() + by).is_finite() {
            return Err(ModifyError::NotFinite);
        }
        let entry = self.entry(node);
        entry.float_sum_bits = (entry.float_sum() + by).to_bits();
        Ok(())
    }

    /// Mark `dot`'s node's entry as added by `dot`.
    pub fn stamp(&mut self, dot: Dot) {
        let i = self
            .by_node
            .binary_search_by_key(&dot.node, |n| n.node)
            .expect("a counted write adds its own node's entry");
        assert!(
            self.by_node[i].counter < dot.counter,
            "a node's counter entries are stamped by growing dots"
        );
        self.by_node[i].counter = dot.counter;
    }

    /// The total in decimal, as GET answers it (a float one as INCRBYFLOAT
    /// answers: the shortest decimal that reads back as it).
    pub fn value(&self) -> Bytes {
        if self.is_float() {
            return Bytes::from(format_float(self.total_f64()));
        }
        Bytes::from(self.total().to_string())
    }
}

/// How a key's live siblings read (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    Absent,
    /// The winner is a plain value.
    Plain(&'a Sibling),
    /// The winner is counted: the merge of its base's counted siblings.
    Counted(Counter),
}

impl Resolved<'_> {
    /// The value a plain GET answers.
    pub fn value(&self) -> Option<Bytes> {
        match self {
            Resolved::Absent => None,
            Resolved::Plain(s) => s.value.clone(),
            Resolved::Counted(c) => Some(c.value()),
        }
    }
}

/// How `live` (a key's siblings that hold a value) read.
pub fn resolve<'a>(live: impl Iterator<Item = &'a Sibling> + Clone) -> Resolved<'a> {
    let Some(winner) = live.clone().max_by_key(|s| winner_rank(s.hlc, s.dot)) else {
        return Resolved::Absent;
    };
    let Some(top) = winner.counter.as_deref() else {
        return Resolved::Plain(winner);
    };
    let mut merged = top.clone();
    if cfg!(feature = "bug-counter-winner-only") {
        // Planted bug: concurrent counted siblings are not merged, so the
        // winner's increments stand alone and the others' are lost.
        return Resolved::Counted(merged);
    }
    for c in live.filter_map(|s| s.counter.as_deref()) {
        if c.same_base(top) {
            merged.merge(c);
        }
    }
    Resolved::Counted(merged)
}

/// The counter an INCRBY (an INCRBYFLOAT: `float`) of `set` at wall time
/// `now_ms` builds on.
pub fn counter_of(set: &SiblingSet, now_ms: u64, float: bool) -> Result<Counter, ModifyError> {
    match resolve(set.live_at(now_ms)) {
        Resolved::Absent => Counter::from_plain(None, float),
        Resolved::Plain(s) => Counter::from_plain(Some(s), float),
        Resolved::Counted(c) => Ok(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Hlc;

    fn counted(node: NodeId, counter: u64, hlc: u64, counts: Counter) -> Sibling {
        Sibling {
            dot: Dot { node, counter },
            hlc: Hlc(hlc),
            value: Some(counts.value()),
            deadline_ms: None,
            counter: Some(Box::new(counts)),
        }
    }

    fn sums(by: &[(NodeId, u64, i64)]) -> Counter {
        Counter {
            base: 0,
            base_float_bits: None,
            base_dot: None,
            by_node: by
                .iter()
                .map(|&(node, counter, sum)| NodeSum {
                    node,
                    counter,
                    sum,
                    float_sum_bits: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn concurrent_counters_add_up_and_a_node_counts_once() {
        // Node 1 added 5 then 2 more (dot 1:2); node 2 added 3 having seen
        // node 1's first 5; node 3 decremented by 4 having seen nothing.
        let a = counted(1, 2, 10, sums(&[(1, 2, 7)]));
        let b = counted(2, 1, 11, sums(&[(1, 1, 5), (2, 1, 3)]));
        let c = counted(3, 1, 9, sums(&[(3, 1, -4)]));
        let all = [a, b, c];
        let Resolved::Counted(merged) = resolve(all.iter()) else {
            panic!("a counted winner resolves counted");
        };
        assert_eq!(merged.total(), 7 + 3 - 4);
        // The same siblings again (a re-send): nothing counts twice.
        let twice: Vec<Sibling> = all.iter().chain(all.iter()).cloned().collect();
        assert_eq!(resolve(twice.iter()).value(), Some(Bytes::from("6")));
    }

    #[test]
    fn a_plain_winner_reads_as_itself_and_bases_do_not_mix() {
        let mut plain = counted(1, 3, 20, Counter::default());
        plain.counter = None;
        plain.value = Some(Bytes::from("100"));
        let older = counted(2, 1, 5, sums(&[(2, 1, 9)]));
        assert_eq!(
            resolve([&plain, &older].into_iter()),
            Resolved::Plain(&plain)
        );
        let mut on_plain = Counter::from_plain(Some(&plain), false).unwrap();
        on_plain.add(3, 1).unwrap();
        on_plain.stamp(Dot {
            node: 3,
            counter: 1,
        });
        let newer = counted(3, 1, 30, on_plain);
        // `older` counted from nothing, `newer` from 100: only the winner's
        // base is summed.
        assert_eq!(
            resolve([&older, &newer].into_iter()).value(),
            Some(Bytes::from("101"))
        );
    }

    #[test]
    fn a_counted_sibling_round_trips_with_and_without_a_deadline() {
        let mut s = counted(2, 7, 40, sums(&[(1, 3, 5), (2, 7, -2)]));
        for deadline_ms in [None, Some(1_700_000_000_000)] {
            s.deadline_ms = deadline_ms;
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(postcard::from_bytes::<Sibling>(&bytes).unwrap(), s);
        }
    }

    #[test]
    fn float_additions_merge_per_node_and_refuse_incr_until_whole() {
        let plain = Sibling {
            value: Some(Bytes::from("10")),
            ..counted(1, 1, 1, Counter::default())
        };
        let mut c = Counter::from_plain(Some(&plain), true).unwrap();
        c.add_float(1, 1.5).unwrap();
        assert_eq!(c.value(), Bytes::from("11.5"));
        assert_eq!(c.add(2, 1), Err(ModifyError::NotAnInteger));
        let mut other = c.clone();
        c.stamp(Dot {
            node: 1,
            counter: 2,
        });
        other.add_float(2, 0.5).unwrap();
        other.stamp(Dot {
            node: 2,
            counter: 1,
        });
        c.merge(&other);
        assert_eq!(c.value(), Bytes::from("12"), "whole again");
        c.add(3, 1).unwrap();
        assert_eq!(c.value(), Bytes::from("13"));
        assert_eq!(c.add_float(3, f64::MAX), Ok(()));
        assert_eq!(c.add_float(3, f64::MAX), Err(ModifyError::NotFinite));
    }

    #[test]
    fn additions_refuse_what_leaves_i64() {
        let mut c = sums(&[(1, 1, i64::MAX - 1)]);
        assert_eq!(c.add(1, 1), Ok(()));
        assert_eq!(c.add(1, 1), Err(ModifyError::Overflow));
        assert_eq!(c.add(2, 1), Err(ModifyError::Overflow));
        let mut from_text = Counter::from_plain(
            Some(&Sibling {
                value: Some(Bytes::from("abc")),
                ..counted(1, 1, 1, Counter::default())
            }),
            false,
        );
        assert_eq!(
            from_text.as_mut().err(),
            Some(&mut ModifyError::NotAnInteger)
        );
    }
}
