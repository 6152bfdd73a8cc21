//! A keyspace listing (KEYS, SCAN on a cluster) gathered from every member,
//! sans-IO: given what each member that answered lists for a range of slots,
//! decide whether the listing is complete and which keys it holds. A key every
//! answering owner lists (at least `r` of them) counts; a key only some list
//! (a replica behind on a write or a delete) is disputed, for the driver to
//! settle by a quorum read.
//!
//! Must not touch: sending, reading or timing (the driver's).

use crate::cluster::map::ClusterMap;
use crate::cluster::refusal::{Refusal, RemoteError};
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// What each member that answered listed, by node.
pub type Listed = BTreeMap<NodeId, BTreeSet<Bytes>>;

/// A listing's keys: those its owners agree on, and those to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub agreed: Vec<Bytes>,
    pub disputed: Vec<Bytes>,
}

/// Settle a listing of `namespace` over `slots` under `map` with read quorum
/// `r`. `PARTIAL` when some partition in the range had no node answer that
/// holds all of it (during a handoff, an old owner: the incoming ones may
/// still be pulling), since the result would be incomplete.
pub fn settle(
    map: &ClusterMap,
    namespace: u8,
    slots: std::ops::RangeInclusive<u16>,
    r: u8,
    listed: &Listed,
) -> Result<Settled, RemoteError> {
    // Map partitions of one namespace are numbered contiguously.
    let first = map.partition_of_slot(namespace, *slots.start());
    let last = map.partition_of_slot(namespace, *slots.end());
    let answered = |n: &NodeId| listed.contains_key(n);
    let unreachable: Vec<_> = (first..=last)
        .filter(|p| {
            let holders = map.previous_owners(*p).unwrap_or_else(|| map.owners(*p));
            !holders.iter().any(answered)
        })
        .collect();
    if let Some(first_unreachable) = unreachable.first() {
        return Err(RemoteError::new(
            Refusal::Partial,
            format!(
                "{} partition(s) had no reachable replica (first: {first_unreachable}); the result would be incomplete",
                unreachable.len(),
            ),
        ));
    }
    let union: BTreeSet<&Bytes> = listed.values().flatten().collect();
    let mut settled = Settled::default();
    for key in union {
        let owners = map.owners(map.partition_of_key(namespace, key));
        let answering: Vec<&BTreeSet<Bytes>> =
            owners.iter().filter_map(|o| listed.get(o)).collect();
        if answering.len() >= usize::from(r) && answering.iter().all(|l| l.contains(key)) {
            settled.agreed.push(key.clone());
        } else {
            settled.disputed.push(key.clone());
        }
    }
    Ok(settled)
}
