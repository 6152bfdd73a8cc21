//! The store's version vocabulary as histories carry it: dots, causal contexts,
//! siblings and keys.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A node's id as the cluster numbers it.
pub type NodeId = u32;

/// The name of one written value: the coordinating node and that node's counter.
/// On the wire a dot is the array `[node, counter]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(NodeId, u64)", into = "(NodeId, u64)")]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

impl Dot {
    pub fn new(node: NodeId, counter: u64) -> Dot {
        Dot { node, counter }
    }
}

impl From<(NodeId, u64)> for Dot {
    fn from((node, counter): (NodeId, u64)) -> Dot {
        Dot { node, counter }
    }
}

impl From<Dot> for (NodeId, u64) {
    fn from(dot: Dot) -> (NodeId, u64) {
        (dot.node, dot.counter)
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{},{}]", self.node, self.counter)
    }
}

/// A causal context: a version vector, node id to the highest counter seen from it.
/// A node missing from the map counts as counter 0. On the wire it is a JSON object
/// whose keys are node ids written as strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Context(pub BTreeMap<NodeId, u64>);

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// The counter this context holds for `node` (0 when absent).
    pub fn counter(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// True when this context has seen `dot`: `self[dot.node] >= dot.counter`.
    pub fn covers(&self, dot: Dot) -> bool {
        self.counter(dot.node) >= dot.counter
    }

    /// The highest dot per node that this context covers; zero entries cover nothing.
    pub fn frontier(&self) -> impl Iterator<Item = Dot> + '_ {
        self.0
            .iter()
            .filter(|(_, &counter)| counter > 0)
            .map(|(&node, &counter)| Dot { node, counter })
    }

    /// True when every dot `other` covers is covered by this context too.
    pub fn covers_all(&self, other: &Context) -> bool {
        other.frontier().all(|dot| self.covers(dot))
    }

    /// Same coverage, ignoring explicit zero entries.
    pub fn equivalent(&self, other: &Context) -> bool {
        self.covers_all(other) && other.covers_all(self)
    }

    /// Grows this context to cover everything `other` covers.
    pub fn join(&mut self, other: &Context) {
        for (&node, &counter) in &other.0 {
            let entry = self.0.entry(node).or_insert(0);
            *entry = (*entry).max(counter);
        }
    }
}

impl FromIterator<(NodeId, u64)> for Context {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(pairs: I) -> Context {
        Context(pairs.into_iter().collect())
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (position, (node, counter)) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        f.write_str("}")
    }
}

/// One concurrent value of a key, named by the dot of the write that made it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sibling {
    pub value: String,
    pub dot: Dot,
}

impl fmt::Display for Sibling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.value, self.dot)
    }
}

/// Formats a sibling list as `["a"@[1,2], "b"@[2,1]]`.
pub fn siblings_text(siblings: &[Sibling]) -> String {
    let parts: Vec<String> = siblings.iter().map(Sibling::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// A key inside its namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub ns: u8,
    pub name: String,
}

impl Key {
    pub fn new(ns: u8, name: impl Into<String>) -> Key {
        Key {
            ns,
            name: name.into(),
        }
    }

    /// The collection a key named `collection:element` is an element of.
    pub fn collection(&self) -> Option<Key> {
        let (collection, _) = self.name.split_once(':')?;
        Some(Key::new(self.ns, collection))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns={} key={:?}", self.ns, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pairs: &[(NodeId, u64)]) -> Context {
        pairs.iter().copied().collect()
    }

    #[test]
    fn context_covers_dots_up_to_its_counter() {
        let seen = context(&[(1, 3), (2, 0)]);
        assert!(seen.covers(Dot::new(1, 3)));
        assert!(seen.covers(Dot::new(1, 1)));
        assert!(!seen.covers(Dot::new(1, 4)));
        assert!(!seen.covers(Dot::new(2, 1)));
        assert!(!seen.covers(Dot::new(3, 1)));
    }

    #[test]
    fn zero_entries_do_not_change_coverage() {
        assert!(context(&[(1, 2), (3, 0)]).equivalent(&context(&[(1, 2)])));
        assert!(!context(&[(1, 2)]).equivalent(&context(&[(1, 3)])));
        assert!(context(&[(1, 3), (2, 1)]).covers_all(&context(&[(1, 2)])));
        assert!(!context(&[(1, 3)]).covers_all(&context(&[(2, 1)])));
    }

    #[test]
    fn join_takes_the_maximum_per_node() {
        let mut joined = context(&[(1, 3), (2, 1)]);
        joined.join(&context(&[(2, 4), (3, 1)]));
        assert_eq!(joined, context(&[(1, 3), (2, 4), (3, 1)]));
    }

    #[test]
    fn dot_and_context_use_the_wire_shapes() {
        let dot: Dot = serde_json::from_str("[2,7]").expect("dot parses");
        assert_eq!(dot, Dot::new(2, 7));
        let seen: Context = serde_json::from_str(r#"{"1":3,"2":7}"#).expect("context parses");
        assert_eq!(seen, context(&[(1, 3), (2, 7)]));
        assert_eq!(
            serde_json::to_string(&seen).expect("context serializes"),
            r#"{"1":3,"2":7}"#
        );
        assert_eq!(seen.to_string(), "{1:3, 2:7}");
    }
}
