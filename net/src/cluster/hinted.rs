//! Hinted handoff: keeping a down owner's writes as durable hints, and
//! delivering them when it is back.

use super::*;

impl Cluster {
    /// As a fallback: keep each item durably as a hint for `owner`.
    pub(super) async fn store_hints(
        &self,
        owner: NodeId,
        items: Vec<ReplicaItem>,
    ) -> Vec<Result<(), RemoteError>> {
        let n = items.len();
        let refuse = |why: String| {
            self.stats
                .hints_refused
                .fetch_add(n as u64, Ordering::Relaxed);
            (0..n)
                .map(|_| Err(RemoteError::new(Refusal::NoHints, why.clone())))
                .collect()
        };
        let Some(hint_store) = &self.hints else {
            return refuse("this node keeps no hints".into());
        };
        if cfg!(feature = "bug-drop-hint") {
            // Planted bug: acknowledge the hints without keeping them.
            return (0..n).map(|_| Ok(())).collect();
        }
        let _serial = self.hint_lock.lock().await;
        lock(&self.hint_owners).insert(owner);
        let held = hint_store.read(|s| s.live_key_count(hints::HINT_NAMESPACE));
        if held + n as u64 > self.config.hints_max {
            return refuse(format!(
                "{held} hints held, limit {}",
                self.config.hints_max
            ));
        }
        let ops: Vec<WriteOp> = hint_store.read(|s| {
            items
                .iter()
                .map(|item| {
                    let key = hints::hint_key(owner, item.namespace, &item.key);
                    let mut set = item.set.clone();
                    if let Some(held) = s
                        .get(hints::HINT_NAMESPACE, &key)
                        .ok()
                        .flatten()
                        .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                        .and_then(|v| hints::decode_hint(&v))
                    {
                        set.merge(&held);
                    }
                    WriteOp::put(hints::HINT_NAMESPACE, key, hints::encode_hint(&set))
                })
                .collect()
        });
        match hint_store.write(ops).await {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map(|_| {
                        self.stats.hints_stored.fetch_add(1, Ordering::Relaxed);
                    })
                    .map_err(|e| remote_error(&e))
                })
                .collect(),
            Err(_) => refuse("the hint store has stopped".into()),
        }
    }

    /// Delete each hint its owner acknowledged, with the context of the copy that
    /// was delivered (a hint merged in meanwhile stays).
    pub(super) async fn delete_delivered_hints(
        &self,
        hint_store: &Storage,
        held: &[(Bytes, SiblingSet, ReplicaItem)],
        acks: &[Result<(), RemoteError>],
    ) {
        let deletes: Vec<WriteOp> = held
            .iter()
            .zip(acks)
            .filter(|(_, ack)| ack.is_ok())
            .map(|((hk, stored, _), _)| {
                let mut op = WriteOp::delete(hints::HINT_NAMESPACE, hk.clone());
                op.covers = Covers::Context(stored.context.clone());
                op
            })
            .collect();
        let delivered = deletes.len() as u64;
        if delivered > 0 && hint_store.write(deletes).await.is_ok() {
            self.stats
                .hints_delivered
                .fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// Hand hints to their owners once they are live again: up to
    /// `HINTS_PER_DELIVERY_MAX` per owner per round, each deleted (with the
    /// context of the copy delivered) once the owner made it durable.
    pub(super) async fn run_hint_delivery(self: Arc<Self>) {
        let Some(hint_store) = self.hints.clone() else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.hint_delivery_interval_ms)).await;
            let keys = hint_store.read(|s| {
                s.live_keys_in_slots(
                    hints::HINT_NAMESPACE,
                    0..=shoal_engine::slot::SLOT_COUNT - 1,
                )
            });
            let map = self.map();
            let first_live =
                |namespace: u8, key: &[u8]| self.candidates(&map, namespace, key).first().copied();
            let per_owner = hints::delivery_targets(&map, keys, first_live);
            for (owner, hint_keys) in per_owner {
                if self.is_live(owner) {
                    self.deliver_hints_to(&hint_store, owner, &hint_keys).await;
                }
            }
        }
    }

    /// `owner`'s hints `hint_keys`, in requests of at most
    /// `repair_batch_bytes_max` bytes (each with at least one hint), while the
    /// round's `anti_entropy_bytes_per_round_max` last; it stops at a request
    /// not answered in full. (One request per round moved one large hint per
    /// round: after a long partition with large values, delivery outlasted
    /// the heal bound; cluster seed 20983032515.)
    async fn deliver_hints_to(&self, hint_store: &Storage, owner: NodeId, hint_keys: &[Bytes]) {
        let mut bytes_left = self.config.anti_entropy_bytes_per_round_max;
        let mut rest = hint_keys;
        while !rest.is_empty() && bytes_left > 0 {
            let request_bytes_max = self.config.repair_batch_bytes_max.min(bytes_left);
            let (held, taken, bytes) = next_held_hints(hint_store, rest, request_bytes_max);
            rest = &rest[taken..];
            if held.is_empty() {
                return;
            }
            bytes_left = bytes_left.saturating_sub(bytes);
            if !self.deliver_held(hint_store, owner, held).await {
                return;
            }
        }
    }

    /// One delivery request of `held` to `owner` (merged here if it is this
    /// node); whether every hint was acknowledged.
    async fn deliver_held(
        &self,
        hint_store: &Storage,
        owner: NodeId,
        held: Vec<(Bytes, SiblingSet, ReplicaItem)>,
    ) -> bool {
        let items: Vec<ReplicaItem> = held.iter().map(|(_, _, i)| i.clone()).collect();
        if owner == self.me() {
            // Re-routed to this node (its owner left the ring).
            let acks = self.merge_locally(items).await;
            self.delete_delivered_hints(hint_store, &held, &acks).await;
            return acks.iter().all(Result::is_ok);
        }
        let request = Request::Replicate {
            sent_wall_ms: self.clock.wall_ms(),
            ring_version: self.map().version(),
            items,
            hint_for: None,
        };
        let acks = match self
            .call(owner, request, self.config.request_timeout_ms)
            .await
        {
            Ok(Response::Replicated(acks)) if acks.len() == held.len() => acks,
            Ok(Response::Error(e)) if e.refusal == Refusal::StaleRing => {
                self.sync_map_with(owner).await;
                return false;
            }
            _ => return false,
        };
        self.delete_delivered_hints(hint_store, &held, &acks).await;
        acks.iter().all(Result::is_ok)
    }
}

/// The held hints at the front of `hint_keys`, as many as fit in `bytes_max`
/// (at least one): the hints, how many keys were used up, and their bytes.
fn next_held_hints(
    hint_store: &Storage,
    hint_keys: &[Bytes],
    bytes_max: usize,
) -> (Vec<(Bytes, SiblingSet, ReplicaItem)>, usize, usize) {
    let mut held = Vec::new();
    let mut bytes = 0;
    let mut taken = 0;
    for hk in hint_keys {
        let Some(hint) = held_hint(hint_store, hk) else {
            taken += 1;
            continue;
        };
        let size = items_bytes(std::slice::from_ref(&hint.2));
        if !held.is_empty() && bytes + size > bytes_max {
            break;
        }
        bytes += size;
        held.push(hint);
        taken += 1;
    }
    (held, taken, bytes)
}

/// The hint `hk` names if it is still held: its stored key, the set it was
/// stored as (its context deletes it once delivered), and the copy to deliver.
fn held_hint(hint_store: &Storage, hk: &Bytes) -> Option<(Bytes, SiblingSet, ReplicaItem)> {
    hint_store.read(|s| {
        let stored = s.get(hints::HINT_NAMESPACE, hk).ok()??;
        let set = hints::decode_hint(stored.winner()?.value.as_ref()?)?;
        let (_, namespace, key) = hints::parse_hint_key(hk)?;
        let item = ReplicaItem {
            namespace,
            key,
            set,
        };
        Some((hk.clone(), stored, item))
    })
}
