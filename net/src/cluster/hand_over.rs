//! Handing hints over on the way out. A node that adopts a ring without itself
//! drops every hint it holds (`Cluster::drop_all_hints`: delete markers are
//! agreed by the ring's members only, so a hint kept past the change could bring
//! back a value whose marker was collected without it). The drop counted on the
//! write's coordinator holding a copy; a coordinator that has since set its data
//! aside (damage, a lost disk) and restored from owners that never had the write
//! does not, and the hint was the last copy (cluster seed 20032716: the hint's
//! owner had a full disk, the coordinator restored, the hint holder was replaced,
//! an acknowledged write was gone).
//!
//! So a node that learns of the change that takes it out while that change still
//! runs (its previous placement has the node, so no marker has been collected
//! without it: rounds wait for a settled ring) first copies each hint to every
//! live owner of its key under the new ring; a hint no owner took (none is live:
//! cluster seed 20035953) goes, still a hint for the same owner, to a live member
//! of the new ring, whose hints the marker rounds do count. Then it drops them
//! all. One that learns late (the ring settled without it, or it is joining
//! back) drops them at once, as before. The hand-over is best effort, bounded by
//! bytes and the request timeout per call; a hint nobody took is dropped all the
//! same, and counted in the log.

use super::{Cluster, RemoteError, Request, Response};
use bytes::Bytes;
use shoal_engine::cluster::hints;
use shoal_engine::cluster::map::ClusterMap;
use shoal_engine::cluster::wire::ReplicaItem;
use shoal_engine::NodeId;
use std::collections::BTreeMap;

impl Cluster {
    /// Whether `next` takes this node out of the ring by a change that still
    /// runs from a placement with it.
    pub(super) fn leaving_in(&self, next: &ClusterMap) -> bool {
        let me = self.me();
        !next.ring().members().contains(&me)
            && next
                .previous_placement()
                .is_some_and(|p| p.default_ring().members().contains(&me))
    }

    /// Copy every hint held to each live owner of its key under `next`.
    /// Returns (hints held, hints at least one owner took).
    pub(super) async fn hand_over_hints(&self, next: &ClusterMap) -> (usize, usize) {
        let (hinted_for, held): (Vec<NodeId>, Vec<ReplicaItem>) =
            self.held_hints().into_iter().unzip();
        let mut per_owner: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (index, item) in held.iter().enumerate() {
            let partition = next.partition_of_key(item.namespace, &item.key);
            for owner in next.owners(partition) {
                if *owner != self.me() && self.is_live(*owner) {
                    per_owner.entry(*owner).or_default().push(index);
                }
            }
        }
        let mut taken = vec![false; held.len()];
        for (owner, indexes) in per_owner {
            self.send_hints(owner, None, next, &held, &indexes, &mut taken)
                .await;
        }
        // What no owner took stays a hint, on a live member of the new ring
        // (the first that takes it: one may be going down unnoticed yet).
        for keeper in next.ring().members().iter().copied() {
            if keeper == self.me() || !self.is_live(keeper) {
                continue;
            }
            let mut per_hinted: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
            for (index, owner) in hinted_for.iter().enumerate() {
                if !taken[index] {
                    per_hinted.entry(*owner).or_default().push(index);
                }
            }
            if per_hinted.is_empty() {
                break;
            }
            for (owner, indexes) in per_hinted {
                self.send_hints(keeper, Some(owner), next, &held, &indexes, &mut taken)
                    .await;
            }
        }
        (held.len(), taken.iter().filter(|t| **t).count())
    }

    /// Send `held[indexes]` to `to` in bounded batches (as hints for `hint_for`,
    /// or as replica writes), marking in `taken` each one it made durable.
    async fn send_hints(
        &self,
        to: NodeId,
        hint_for: Option<NodeId>,
        next: &ClusterMap,
        held: &[ReplicaItem],
        indexes: &[usize],
        taken: &mut [bool],
    ) {
        for batch in self.hint_batches(held, indexes) {
            let items = batch.iter().map(|i| held[*i].clone()).collect();
            let request = Request::Replicate {
                sent_wall_ms: self.clock.wall_ms(),
                ring_version: next.version(),
                items,
                hint_for,
            };
            let timeout_ms = self.config.request_timeout_ms;
            if let Ok(Response::Replicated(acks)) = self.call(to, request, timeout_ms).await {
                let acks: Vec<Result<(), RemoteError>> = acks;
                for (i, ack) in batch.iter().zip(acks) {
                    taken[*i] |= ack.is_ok();
                }
            }
        }
    }

    /// Every hint this node holds: whom it is for, and the replica item it
    /// stands for.
    fn held_hints(&self) -> Vec<(NodeId, ReplicaItem)> {
        let Some(hint_store) = &self.hints else {
            return Vec::new();
        };
        hint_store.read(|s| {
            let all_slots = 0..=shoal_engine::slot::SLOT_COUNT - 1;
            s.live_keys_in_slots(hints::HINT_NAMESPACE, all_slots)
                .into_iter()
                .filter_map(|hk: Bytes| {
                    let stored = s.get(hints::HINT_NAMESPACE, &hk).ok()??;
                    let set = hints::decode_hint(stored.winner()?.value.as_ref()?)?;
                    let (owner, namespace, key) = hints::parse_hint_key(&hk)?;
                    let item = ReplicaItem {
                        namespace,
                        key,
                        set,
                    };
                    Some((owner, item))
                })
                .collect()
        })
    }

    /// `indexes` into `held` in batches within a repair request's bytes and
    /// `HINTS_PER_DELIVERY_MAX` items (a batch holds at least one).
    fn hint_batches(&self, held: &[ReplicaItem], indexes: &[usize]) -> Vec<Vec<usize>> {
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut batch_bytes = 0usize;
        for &i in indexes {
            let bytes = held[i].key.len() + held[i].set.size_bytes();
            let full = batches.last().is_none_or(|b| {
                b.len() >= hints::HINTS_PER_DELIVERY_MAX
                    || batch_bytes + bytes > self.config.repair_batch_bytes_max
            });
            if full {
                batches.push(Vec::new());
                batch_bytes = 0;
            }
            batches.last_mut().expect("pushed above").push(i);
            batch_bytes += bytes;
        }
        batches
    }
}
