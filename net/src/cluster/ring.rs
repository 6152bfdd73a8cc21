//! Ring changes and map gossip: adopt a newer map (dropping residue and hints
//! first where a marker may have gone without this node), sync maps with a
//! peer, check a newcomer before a join, and run an operator's change.

use super::*;

impl Cluster {
    /// Adopt what `incoming` adds to our map (a newer ring, more done reports).
    /// Waits for replica writes in flight under the old ring, saves the result,
    /// and points the detector and peers at the new member set. Returns whether
    /// the map changed.
    pub(super) async fn adopt(&self, incoming: &ClusterMap) -> bool {
        if !(*self.map()).clone().merge(incoming) {
            return false;
        }
        let _exclusive = self.gate.write().await;
        let mut next = (*self.map()).clone();
        if !next.merge(incoming) {
            return false;
        }
        if next.version() > self.map().version() {
            if !self.drop_residue(&next).await {
                return false;
            }
            if self.out_of_the_ring(&next) {
                if self.leaving_in(&next) {
                    let (held, taken) = self.hand_over_hints(&next).await;
                    if held > 0 {
                        tracing::info!(
                            "leaving the ring: {taken} of {held} hint(s) handed to their keys' owners or to a member"
                        );
                    }
                }
                self.drop_all_hints().await;
            }
        }
        if let Err(e) = cluster_map::save(self.dir.as_ref(), &next) {
            // Still adopted: refusing a newer ring would be worse than having to
            // learn it again from a peer after a restart.
            tracing::error!("cannot save the cluster map: {e}");
        }
        let previous_version = self.map().version();
        if next.version() != previous_version {
            tracing::info!(
                "ring version {previous_version} -> {}: {} members, {} partition handoff(s) pending",
                next.version(),
                next.ring().members().len(),
                next.handoffs_pending()
            );
        } else if next.handoffs_pending() == 0 {
            tracing::info!("ring version {}: every handoff is done", next.version());
        }
        let nodes = next.nodes();
        lock(&self.detector).set_peers(nodes.iter().copied(), self.now_ms());
        let fingerprint = next.fingerprint();
        *lock(&self.map) = (Arc::new(next), fingerprint);
        true
    }

    /// Whether `next` shows this node out of the ring, now or in the placement its
    /// handoffs run from (it is joining back). Delete markers are agreed by the
    /// ring's members only, so any hint it holds may be for a write whose marker
    /// was collected without it: delivered, it would bring the value back (G4;
    /// cluster seed 7002573: a node down while it left, then joined back,
    /// delivered a hint from before the delete).
    pub(super) fn out_of_the_ring(&self, next: &ClusterMap) -> bool {
        let me = self.me();
        !next.ring().members().contains(&me)
            || next
                .previous_placement()
                .is_some_and(|p| !p.default_ring().members().contains(&me))
    }

    /// Forget every hint this node holds (see `out_of_the_ring`). Each was a
    /// copy for an owner that was down; the write's coordinator, an owner, holds
    /// it, and anti-entropy brings it to the rest.
    pub(super) async fn drop_all_hints(&self) {
        let Some(hint_store) = self.hints.clone() else {
            return;
        };
        let held: Vec<(Bytes, shoal_engine::VersionVector)> = hint_store.read(|s| {
            s.live_keys_in_slots(
                hints::HINT_NAMESPACE,
                0..=shoal_engine::slot::SLOT_COUNT - 1,
            )
            .into_iter()
            .filter_map(|hk| {
                let stored = s.get(hints::HINT_NAMESPACE, &hk).ok()??;
                Some((hk, stored.context))
            })
            .collect()
        });
        if held.is_empty() {
            return;
        }
        let mut dropped = 0usize;
        for chunk in held.chunks(RESIDUE_DROP_BATCH_OPS) {
            let deletes = chunk
                .iter()
                .map(|(hk, context)| {
                    let mut op = WriteOp::delete(hints::HINT_NAMESPACE, hk.clone());
                    op.covers = Covers::Context(context.clone());
                    op
                })
                .collect();
            if hint_store.write(deletes).await.is_ok() {
                dropped += chunk.len();
            }
        }
        tracing::warn!(
            "node {} is out of the ring (or joining back): dropped {dropped} of its {} hint(s), whose delete markers may have been collected without it",
            self.me(),
            held.len()
        );
    }

    /// Before adopting `next` (a newer ring; the caller holds the gate
    /// exclusively): drop every local copy of the map partitions this node is an
    /// incoming owner of in `next`. It owned none of them under the ring before,
    /// so whatever it holds of them is left over from an earlier time it owned
    /// them (it was down or cut off while it lost them, or had not finished
    /// dropping them): delete markers for those keys may have been collected
    /// without it since, and its old copies would bring the deleted values back.
    /// The handoff then pulls each partition whole from its old owners. False
    /// when a drop could not be written (the ring is not adopted then; gossip
    /// offers it again).
    pub(super) async fn drop_residue(&self, next: &ClusterMap) -> bool {
        if cfg!(feature = "bug-rejoin-keeps-residue") {
            return true;
        }
        let me = self.me();
        // Pending for this node: the partitions it is an incoming owner of (a
        // newer ring cannot hold its reports yet).
        // An owner that stays (a pin makes them pull too) keeps what it holds, and
        // so does a node that holds the partition under its current ring when no
        // marker can have gone without it since (`still_holds`).
        let current = self.map();
        let incoming: Vec<PartitionId> = next
            .incoming(me)
            .into_iter()
            .filter(|p| !next.was_owner(*p, me) && !still_holds(&current, next, me, *p))
            .collect();
        if incoming.is_empty() {
            return true;
        }
        let keys = self.storage.read(|s| {
            partition_keys(
                s,
                next,
                incoming.iter().map(|p| (*p, next.namespaces(*p))),
                usize::MAX,
            )
        });
        let mut dropped = 0;
        for chunk in keys.chunks(RESIDUE_DROP_BATCH_OPS) {
            let ops = chunk
                .iter()
                .map(|(namespace, key)| WriteOp::drop_copy(*namespace, key.clone()))
                .collect();
            match self.storage.write(ops).await {
                Ok(results) if results.iter().all(Result::is_ok) => {
                    dropped += results.iter().flatten().filter(|o| o.applied).count() as u64;
                }
                _ => {
                    tracing::error!(
                        "cannot drop old copies before adopting ring version {}; not adopting it yet",
                        next.version()
                    );
                    return false;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(
                "ring version {}: dropped {dropped} copies held from before this node last lost their partitions",
                next.version()
            );
            self.stats
                .copies_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        true
    }

    /// Push our map to `node` and take what it answers. Whether it answered.
    pub(super) async fn sync_map_with(&self, node: NodeId) -> bool {
        self.stats.map_syncs.fetch_add(1, Ordering::Relaxed);
        let request = Request::MapSync {
            map: (*self.map()).clone(),
        };
        if let Ok(Response::Map(theirs)) = self
            .call(node, request, self.config.request_timeout_ms)
            .await
        {
            if theirs.check().is_ok() {
                self.adopt(&theirs).await;
                return true;
            }
        }
        false
    }

    /// Before a join or replace: the new node must answer at `address` as
    /// `node` and prove the cluster secret (the handshake), and answer a ping.
    /// A node that cannot would be given partitions it never takes, and its
    /// handoffs would hold every later change off.
    pub(super) async fn check_newcomer(&self, node: NodeId, address: &str) -> Result<(), String> {
        let peer_addr = member_addr(address)?.peer;
        let clock = self.clock.clone();
        let mut random = move || clock.random_u64();
        let secret = self.config.secret.as_bytes();
        let tls = self.config.peer_tls.as_deref();
        let ping = async {
            let (mut reader, mut writer) =
                peer::dial(&peer_addr, self.me(), node, secret, tls, &mut random)
                    .await
                    .map_err(|e| e.to_string())?;
            let envelope = Envelope::Request {
                id: 1,
                from: self.me(),
                body: self.ping_request(),
            };
            writer.send(&envelope).await.map_err(|e| e.to_string())?;
            match reader.recv().await.map_err(|e| e.to_string())? {
                Envelope::Response {
                    body: Response::Pong { .. },
                    ..
                } => Ok(()),
                other => Err(format!("answered {other:?} to a ping")),
            }
        };
        let limit =
            Duration::from_millis(self.config.request_timeout_ms + self.config.connect_timeout_ms);
        match tokio::time::timeout(limit, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "node {node} at {address} cannot take part: {e}; nothing changed (retry once it answers with the cluster secret)"
            )),
            Err(_) => Err(format!(
                "node {node} at {address} did not answer within {} ms; nothing changed (retry once it answers)",
                limit.as_millis()
            )),
        }
    }

    /// Before an operator's ring change: compare maps with every other node of
    /// ours (adopting any newer one), and refuse unless a majority of the ring's
    /// members answered. A node cut off from the rest may not know the last
    /// change; a change computed from its older ring takes a version the
    /// cluster already used, and should it win the tie (maps of one version
    /// are ordered by placement fingerprint) it replaces a ring whose handoffs
    /// are done and whose old owners dropped their copies, taking the writes
    /// acknowledged under it along (the cluster sim found a node healed from
    /// an isolation do so). The last change was pushed to every node, so a
    /// majority of them knows it unless most were cut off too.
    pub(super) async fn learn_map_from_majority(self: &Arc<Self>) -> Result<(), String> {
        let map = self.map();
        let me = self.me();
        let members = map.ring().members().clone();
        let asks: Vec<_> = map
            .nodes()
            .into_iter()
            .filter(|n| *n != me)
            .map(|node| {
                let cluster = self.clone();
                tokio::spawn(async move { (node, cluster.sync_map_with(node).await) })
            })
            .collect();
        let mut answered = usize::from(members.contains(&me));
        for ask in asks {
            if let Ok((node, true)) = ask.await {
                answered += usize::from(members.contains(&node));
            }
        }
        if answered * 2 <= members.len() {
            return Err(format!(
                "only {answered} of the ring's {} members could compare maps with this node; retry once it reaches a majority",
                members.len()
            ));
        }
        Ok(())
    }

    /// An operator's ring change, made here and pushed to every node of the new
    /// map (gossip carries it to any that miss the push). Returns the replicas
    /// that move and how many (partition, incoming owner) handoffs it started.
    pub async fn change_ring(
        self: &Arc<Self>,
        change: RingChange,
    ) -> Result<(MapDiff, usize), String> {
        match &change {
            RingChange::Join { node, address }
            | RingChange::Replace {
                new: node, address, ..
            } if !cfg!(feature = "bug-join-unchecked") => {
                self.check_newcomer(*node, address).await?
            }
            _ => {}
        }
        self.learn_map_from_majority().await?;
        let current = self.map();
        let (next, diff) = current.change(&change).map_err(|e| e.to_string())?;
        let handoffs = next.handoffs_pending();
        if !self.adopt(&next).await {
            return Err("the ring changed meanwhile; look again and retry".into());
        }
        let pushes: Vec<_> = next
            .nodes()
            .into_iter()
            .filter(|n| *n != self.me())
            .map(|node| {
                let cluster = self.clone();
                tokio::spawn(async move { cluster.sync_map_with(node).await })
            })
            .collect();
        for push in pushes {
            let _ = push.await;
        }
        if self.map().version() != next.version() || self.map().placement() != next.placement() {
            return Err("another ring change at the same version won; look again and retry".into());
        }
        Ok((diff, handoffs))
    }
}
