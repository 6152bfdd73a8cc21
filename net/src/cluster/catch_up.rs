//! Catching up before minting. A dot a node mints on a key claims, through the
//! key's version vector, every earlier dot of its own on that key. That claim is
//! true while the node's copy holds (or has superseded) all of them, and false
//! over a copy it forgot when it last gave the key's partition up: its earlier
//! siblings live on in the owners that took the partition, and a merge with the
//! new copy would drop them as seen (the cluster sim found it: a node that
//! dropped its residue, took the partition back with a pin, and coordinated a
//! write before its pull was done). So a node taking over a partition it did not
//! own before the change merges the old owners' copies of a key before it mints
//! on it, or refuses the write. So does a node whose last start cut a tail of
//! its log (torn, or damaged in the newest batches, which recovery cannot tell
//! apart: acknowledged writes may be gone here while replicas hold them), for
//! each key it has not yet written in this life (cluster seed 20016769).
//! And a node mints on no key whose partition it does not hold under its ring
//! (`admission::mint_here`): a proxy with an older ring may still send it
//! the write; it is refused `STALERING`, and the proxy routes it again.

use super::{Cluster, Exchange, Refusal, RemoteError};
use bytes::Bytes;
use shoal_engine::cluster::admission;
use shoal_engine::cluster::map::{split_partition, ClusterMap};
use shoal_engine::placement::PartitionId;
use shoal_engine::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How many times the ring may change under a catch-up before the write is
/// refused rather than caught up once more.
const RING_CHANGES_MAX: usize = 3;

/// The gate held for a local write, the ring it was taken under, and per write
/// the reason it is refused, if it is.
pub(super) type Minting<'a> = (
    tokio::sync::RwLockReadGuard<'a, ()>,
    Arc<ClusterMap>,
    Vec<Option<RemoteError>>,
);

impl Cluster {
    /// Catch up on `keys`, then hold the gate under the same ring version (so
    /// the catch-up is the one the write needs), refusing the keys this node
    /// may not mint on.
    pub(super) async fn gate_for_minting(&self, keys: &[(u8, Bytes)]) -> Minting<'_> {
        let (shared, map, mut refusals) = self.gate_caught_up(keys).await;
        // Nothing is minted on a key whose partition this node does not hold
        // (`admission::mint_here`): its copy may be gone.
        let me = self.me();
        for (refusal, (namespace, key)) in refusals.iter_mut().zip(keys) {
            let holds = map.holds(me, map.partition_of_key(*namespace, key));
            if let (None, Err(e)) = (&*refusal, admission::mint_here(holds, map.version())) {
                *refusal = Some(e);
            }
        }
        (shared, map, refusals)
    }

    /// Catch up on `keys`, then hold the gate under the same ring version
    /// (so the catch-up is the one the write needs).
    async fn gate_caught_up(&self, keys: &[(u8, Bytes)]) -> Minting<'_> {
        let mut refusals = Vec::new();
        for _ in 0..RING_CHANGES_MAX {
            let map = self.map();
            refusals = self.catch_up(&map, keys).await;
            let shared = self.gate.read().await;
            let now = self.map();
            if now.version() == map.version() {
                return (shared, now, refusals);
            }
        }
        let shared = self.gate.read().await;
        let map = self.map();
        let refused = RemoteError::new(
            Refusal::TryAgain,
            "the ring changed under this write while the node caught up on its keys; retry",
        );
        let still_incoming = self.taken_over(&map);
        for (i, (namespace, key)) in keys.iter().enumerate() {
            if still_incoming.contains(&map.partition_of_key(*namespace, key)) {
                refusals[i] = Some(refused.clone());
            }
        }
        (shared, map, refusals)
    }

    /// Partitions this node is pulling and did not own before the change.
    fn taken_over(&self, map: &ClusterMap) -> BTreeSet<PartitionId> {
        let me = self.me();
        map.incoming(me)
            .into_iter()
            .filter(|p| !map.was_owner(*p, me))
            .collect()
    }

    /// Merge here, before minting, the keys whose copy here may lack dots of
    /// this node's: keys of partitions it takes over (from as many old owners as
    /// a handoff pulls from), and, after an open that cut a tail, keys it has
    /// not written in this life (from enough other owners to meet every write
    /// acknowledged by w). Per key: why it is refused, if too few answered.
    async fn catch_up(&self, map: &ClusterMap, keys: &[(u8, Bytes)]) -> Vec<Option<RemoteError>> {
        let mut refusals = vec![None; keys.len()];
        let taken_over = self.taken_over(map);
        let mut groups: BTreeMap<(PartitionId, u8, bool), Vec<usize>> = BTreeMap::new();
        for (i, (namespace, key)) in keys.iter().enumerate() {
            let partition = map.partition_of_key(*namespace, key);
            let taking_over = taken_over.contains(&partition);
            // Planted bug: mint over whatever copy is here.
            if cfg!(feature = "bug-mint-without-catch-up") {
                continue;
            }
            if taking_over
                || self
                    .storage
                    .read(|s| s.mint_may_claim_lost_dots(*namespace, key))
            {
                groups
                    .entry((partition, *namespace, taking_over))
                    .or_default()
                    .push(i);
            }
        }
        let caught_up: usize = groups.values().map(Vec::len).sum();
        self.stats
            .writes_caught_up
            .fetch_add(caught_up as u64, std::sync::atomic::Ordering::Relaxed);
        for ((partition, namespace, taking_over), indexes) in groups {
            let (sources, needed) = if taking_over {
                self.old_owners(map, partition)
            } else {
                self.fellow_owners(map, partition, namespace)
            };
            let wanted: BTreeSet<Bytes> = indexes.iter().map(|i| keys[*i].1.clone()).collect();
            if let Err(why) = self
                .merge_from(map, sources, needed, namespace, wanted)
                .await
            {
                for i in indexes {
                    refusals[i] = Some(RemoteError::new(Refusal::TryAgain, why.clone()));
                }
            }
        }
        refusals
    }

    /// A taken-over partition's old owners, and how many a handoff pulls from.
    fn old_owners(&self, map: &ClusterMap, partition: PartitionId) -> (Vec<NodeId>, usize) {
        let needed = map.sources_needed(partition, self.old_write_quorum(map, partition));
        (map.handoff_sources(partition, self.me()), needed)
    }

    /// The partition's other holders, and how many of them hold every write w
    /// acknowledged with this node among them: of `others`, at least `w - 1`
    /// hold it, so `others - (w - 1) + 1` of them meet it.
    fn fellow_owners(
        &self,
        map: &ClusterMap,
        partition: PartitionId,
        namespace: u8,
    ) -> (Vec<NodeId>, usize) {
        let me = self.me();
        let mut others: Vec<NodeId> = map.owners(partition).to_vec();
        others.extend(map.previous_owners(partition).unwrap_or_default());
        others.sort_unstable();
        others.dedup();
        others.retain(|n| *n != me);
        let w = usize::from(self.write_quorum(map, namespace)).max(1);
        let needed = (others.len() + 2)
            .saturating_sub(w)
            .clamp(1, others.len().max(1));
        let needed = if others.is_empty() { 0 } else { needed };
        (others, needed)
    }

    async fn merge_from(
        &self,
        map: &ClusterMap,
        mut sources: Vec<NodeId>,
        needed: usize,
        namespace: u8,
        keys: BTreeSet<Bytes>,
    ) -> Result<(), String> {
        sources.sort_by_key(|n| !self.is_live(*n));
        let keys: Vec<Bytes> = keys.into_iter().collect();
        let mut answered = 0;
        for source in sources {
            if answered >= needed {
                break;
            }
            let mut exchange = Exchange::new(usize::MAX, usize::MAX);
            let pulled = self
                .pull_copies(source, map, namespace, keys.clone(), &mut exchange)
                .await;
            if pulled.is_ok() && exchange.end().complete {
                answered += 1;
            }
        }
        if answered >= needed {
            return Ok(());
        }
        Err(format!(
            "node {} must merge this key from {needed} other replica(s) before it writes (it takes the key's partition over, or its last start cut data that may have held its own writes) and reached {answered}; retry",
            self.me()
        ))
    }

    /// The write quorum writes were acknowledged with under the old placement.
    pub(super) fn old_write_quorum(&self, map: &ClusterMap, partition: PartitionId) -> u8 {
        match (split_partition(partition).0, map.previous_placement()) {
            (Some(namespace), Some(previous)) => self.quorums_in(previous, namespace).1,
            _ => self.config.write_quorum_min(),
        }
    }
}
