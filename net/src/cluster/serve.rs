//! Serving a peer's request: admission (ring version, age, restoring, limits)
//! and the local work each request asks for.

use super::*;

/// One batch of a handoff scan, and where the next one starts (`None`: the
/// scan is done).
pub(super) type HandoffBatch = (Vec<ReplicaItem>, Option<HandoffCursor>);

impl Cluster {
    pub(super) async fn handle(self: &Arc<Self>, from: NodeId, request: Request) -> Response {
        match request {
            Request::Ping {
                incarnation,
                dir_id,
                map_version,
                map_fingerprint,
            } => self.serve_ping(from, (incarnation, dir_id), (map_version, map_fingerprint)),
            Request::PingReq { target } => {
                self.stats
                    .indirect_probes_served
                    .fetch_add(1, Ordering::Relaxed);
                let answered = if target == self.me() {
                    Some(self.incarnation())
                } else {
                    self.ping(target).await
                };
                Response::Vouch { answered }
            }
            Request::Replicate {
                ring_version,
                sent_wall_ms,
                items,
                hint_for,
            } => {
                self.serve_replicate(from, ring_version, sent_wall_ms, items, hint_for)
                    .await
            }
            Request::MapSync { map } => {
                if let Err(e) = map.check() {
                    return Response::Error(RemoteError::new(Refusal::Invalid, e.to_string()));
                }
                self.adopt(&map).await;
                Response::Map((*self.map()).clone())
            }
            Request::HandoffScan {
                ring_version,
                first_slot,
                last_slot,
                namespaces,
                after,
            } => self.serve_handoff_scan(ring_version, first_slot..=last_slot, namespaces, after),
            Request::Coordinate {
                sent_wall_ms,
                writes,
            } => self.serve_coordinate(sent_wall_ms, writes).await,
            Request::ForgetMarkers {
                ring_version,
                sent_wall_ms,
                items,
            } => self.serve_forget(ring_version, sent_wall_ms, items).await,
            Request::Read { ring_version, .. }
            | Request::ReadPrefix { ring_version, .. }
            | Request::ReadHints { ring_version, .. } => {
                self.serve_copy_read(from, ring_version, request).await
            }
            local => self.serve_locally(local),
        }
    }

    /// Requests answered from this node's store alone, with no wait.
    fn serve_locally(self: &Arc<Self>, request: Request) -> Response {
        let too_many = |n: usize| admission::items_within_limit(n).err().map(Response::Error);
        match request {
            Request::Read {
                namespace, keys, ..
            } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_locally(namespace, &keys))
            }
            Request::ReadPrefix {
                namespace,
                keys,
                bytes_max,
                ..
            } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_prefix(namespace, &keys, bytes_max))
            }
            Request::ReadHints {
                owner,
                namespace,
                keys,
                ..
            } => {
                if let Some(e) = too_many(keys.len()) {
                    return e;
                }
                Response::Sets(self.read_hints(owner, namespace, &keys))
            }
            Request::PartitionDigests { partitions } => {
                if let Some(e) = too_many(partitions.len()) {
                    return e;
                }
                Response::PartitionDigests(self.partition_digests(&partitions))
            }
            Request::SlotDigests {
                first_slot,
                last_slot,
            } => Response::SlotDigests(self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_digests(first_slot..=last_slot))
                    .unwrap_or_default()
            })),
            Request::SlotKeys { namespace, slot } => Response::SlotKeys(self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_keys(namespace, slot))
                    .unwrap_or_default()
            })),
            Request::Keys {
                namespace,
                first_slot,
                last_slot,
            } => Response::Keys(self.unexpired_keys(namespace, first_slot..=last_slot)),
            Request::MarkerVerdicts {
                ring_version,
                items,
            } => too_many(items.len())
                .or_else(|| self.unsettled(ring_version))
                .unwrap_or_else(|| Response::Verdicts(self.marker_verdicts(&self.map(), &items))),
            other => unreachable!("{other:?} is served by `handle`"),
        }
    }

    fn serve_ping(
        self: &Arc<Self>,
        from: NodeId,
        (incarnation, dir_id): (u64, u64),
        (map_version, map_fingerprint): (u64, u64),
    ) -> Response {
        let your_incarnation = {
            let earlier = lock(&self.lives).other_lives_max(from, dir_id);
            self.record_life(from, dir_id, incarnation);
            earlier
        };
        self.heard(from, incarnation);
        self.compare_maps(from, map_version, map_fingerprint);
        let (map_version, map_fingerprint) = self.map_summary();
        Response::Pong {
            incarnation: self.incarnation(),
            dir_id: self.dir_id,
            map_version,
            map_fingerprint,
            your_incarnation,
            wall_ms: self.clock.wall_ms(),
        }
    }

    /// A replica write (or hints for `hint_for`): admitted when fresh, within
    /// limits and under a ring at least the sender's (learned first if not).
    async fn serve_replicate(
        self: &Arc<Self>,
        from: NodeId,
        ring_version: u64,
        sent_wall_ms: u64,
        items: Vec<ReplicaItem>,
        hint_for: Option<NodeId>,
    ) -> Response {
        if let Err(e) = admission::items_within_limit(items.len()) {
            return Response::Error(e);
        }
        if let Some(e) = self.too_old(sent_wall_ms, self.config.replica_write_age_max_ms) {
            return e;
        }
        if let Some(owner) = hint_for {
            return Response::Replicated(self.store_hints(owner, items).await);
        }
        let mut shared = self.gate.read().await;
        let mut learned = false;
        loop {
            match admission::replica_ring(ring_version, self.map().version(), learned) {
                Ok(RingCheck::Serve) => break,
                Ok(RingCheck::LearnFirst) => {
                    // Adopting the sender's ring may drop this node's old
                    // copies of the partition (`drop_residue`), which must not
                    // take this write with them.
                    drop(shared);
                    self.learn_ring_from(from, ring_version).await;
                    shared = self.gate.read().await;
                    learned = true;
                }
                Err(e) => {
                    if e.refusal == Refusal::StaleRing {
                        self.stats
                            .stale_ring_refusals
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Response::Error(e);
                }
            }
        }
        let _shared = shared;
        self.stats
            .replica_writes_received
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Response::Replicated(self.merge_locally(items).await)
    }

    /// Keys held with a value in `slots`, those expired by now left out.
    pub(super) fn unexpired_keys(
        &self,
        namespace: u8,
        slots: std::ops::RangeInclusive<u16>,
    ) -> Vec<Bytes> {
        let now_ms = self.clock.wall_ms();
        self.storage.read(|s| {
            let mut keys = s.live_keys_in_slots(namespace, slots);
            keys.retain(|k| !s.has_expired(namespace, k, now_ms));
            keys
        })
    }

    /// Learn `from`'s ring when `ring_version`, the asker's, is newer than
    /// ours (one catch-up at a time).
    async fn learn_ring_from(&self, from: NodeId, ring_version: u64) {
        let _one_at_a_time = self.ring_catch_up.lock().await;
        if ring_version > self.map().version() {
            self.sync_map_with(from).await;
        }
    }

    /// A read of local copies, served once this node knows the asker's ring
    /// (`admission::copy_read`). No gate: a ring is published only after
    /// adopting it dropped what it drops.
    async fn serve_copy_read(
        self: &Arc<Self>,
        from: NodeId,
        ring_version: u64,
        request: Request,
    ) -> Response {
        if cfg!(feature = "bug-read-ignores-ring") {
            return self.serve_locally(request);
        }
        let mut learned = false;
        loop {
            match admission::copy_read(ring_version, self.map().version(), learned) {
                Ok(RingCheck::Serve) => return self.serve_locally(request),
                Ok(RingCheck::LearnFirst) => {
                    self.learn_ring_from(from, ring_version).await;
                    learned = true;
                }
                Err(e) => {
                    self.stats
                        .reads_refused_behind_ring
                        .fetch_add(1, Ordering::Relaxed);
                    return Response::Error(e);
                }
            }
        }
    }

    fn serve_handoff_scan(
        self: &Arc<Self>,
        ring_version: u64,
        slots: std::ops::RangeInclusive<u16>,
        namespaces: Namespaces,
        after: Option<HandoffCursor>,
    ) -> Response {
        // Planted bug: a node restoring from its replicas serves handoff
        // scans from what it has so far.
        let restoring = self.restoring.load(Ordering::Acquire)
            && !cfg!(feature = "bug-restoring-serves-handoff");
        if let Err(e) = admission::handoff_source(
            ring_version,
            self.map().version(),
            *slots.start(),
            *slots.end(),
            shoal_engine::slot::SLOT_COUNT,
            restoring,
        ) {
            return Response::Error(e);
        }
        match self.handoff_batch(slots, &namespaces, after.as_ref()) {
            Ok((items, next)) => Response::HandoffItems { items, next },
            // A record that cannot be read is not skipped: the asker would
            // count this node as a whole source and finish without it.
            Err(e) => Response::Error(RemoteError::new(
                Refusal::Invalid,
                format!("handoff source cannot read its copy: {e}"),
            )),
        }
    }

    /// Writes proxied here for this node to coordinate.
    async fn serve_coordinate(
        self: &Arc<Self>,
        sent_wall_ms: u64,
        writes: Vec<ClientWrite>,
    ) -> Response {
        if let Err(e) = admission::items_within_limit(writes.len()) {
            return Response::Error(e);
        }
        // No dot is minted before the start-up incarnation check is done.
        self.wait_ready().await;
        // Started later than this, it would answer after the asker's timeout
        // (it waits up to a request timeout for the replicas).
        if let Some(e) = self.too_old(sent_wall_ms, self.config.request_timeout_ms) {
            return e;
        }
        let ops = writes.into_iter().map(write_from_wire).collect();
        let results = self.coordinate(ops).await;
        Response::Coordinated(
            results
                .into_iter()
                .map(|r| r.map(|o| outcome_to_wire(&o)))
                .collect(),
        )
    }

    /// Marker collection, step 3.
    async fn serve_forget(
        self: &Arc<Self>,
        ring_version: u64,
        sent_wall_ms: u64,
        items: Vec<MarkerItem>,
    ) -> Response {
        if let Err(e) = admission::items_within_limit(items.len()) {
            return Response::Error(e);
        }
        if let Some(e) = self.too_old(sent_wall_ms, self.config.replica_write_age_max_ms) {
            return e;
        }
        let _shared = self.gate.read().await;
        if let Some(e) = self.unsettled(ring_version) {
            return e;
        }
        Response::Forgot(self.forget_markers(items).await)
    }

    /// A refusal for a replica write, proxied write or forget sent more than
    /// `age_max_ms` ago (`admission::fresh_enough`), counted.
    pub(super) fn too_old(&self, sent_wall_ms: u64, age_max_ms: u64) -> Option<Response> {
        let refused =
            admission::fresh_enough(sent_wall_ms, self.clock.wall_ms(), age_max_ms).err()?;
        self.stats.requests_too_old.fetch_add(1, Ordering::Relaxed);
        Some(Response::Error(refused))
    }

    /// A refusal unless this node routes by `ring_version` and no handoff runs
    /// (`admission::marker_round`).
    pub(super) fn unsettled(&self, ring_version: u64) -> Option<Response> {
        let map = self.map();
        admission::marker_round(ring_version, map.version(), map.partitions_in_transition())
            .err()
            .map(Response::Error)
    }

    /// This node's verdict on each proposed marker (`tombstones::verdict`).
    pub(super) fn marker_verdicts(&self, map: &ClusterMap, items: &[MarkerItem]) -> Vec<bool> {
        if self.restoring.load(Ordering::Acquire) {
            // It may lack a value a marker's key still has on no other node.
            return vec![false; items.len()];
        }
        let me = self.me();
        // A hint for an owner that left the ring is delivered to the key's first
        // live owner (`run_hint_delivery`), so it holds a marker back too,
        // though the settled map no longer lists its owner (cluster seed
        // 20030513: a fallback's hint for a node that left brought a value back
        // after its marker was collected).
        let mut hint_owners: BTreeSet<NodeId> = map.addresses().keys().copied().collect();
        hint_owners.extend(lock(&self.hint_owners).iter().copied());
        self.storage.read(|store| {
            let verdict = |hint_store: Option<&shoal_engine::Store>| {
                items
                    .iter()
                    .map(|item| {
                        let owners = map.owners(map.partition_of_key(item.namespace, &item.key));
                        tombstones::verdict(
                            store,
                            hint_store,
                            &hint_owners,
                            owners.contains(&me),
                            item,
                        )
                    })
                    .collect()
            };
            match &self.hints {
                Some(hints) => hints.read(|h| verdict(Some(h))),
                None => verdict(None),
            }
        })
    }

    /// Forget each marker still held as agreed; returns how many went.
    pub(super) async fn forget_markers(&self, items: Vec<MarkerItem>) -> u64 {
        let ops = items
            .into_iter()
            .map(|i| WriteOp::forget_if(i.namespace, i.key, i.set_hash))
            .collect();
        self.write_counting_applied(ops).await
    }

    /// Write `ops` locally; how many were applied (a stopped store: none).
    pub(super) async fn write_counting_applied(&self, ops: Vec<WriteOp>) -> u64 {
        match self.storage.write(ops).await {
            Ok(results) => results
                .iter()
                .filter(|r| r.as_ref().is_ok_and(|o| o.applied))
                .count() as u64,
            Err(_) => 0,
        }
    }

    /// A peer's map differs from ours (by version or fingerprint): sync with it in
    /// the background.
    pub(super) fn compare_maps(self: &Arc<Self>, peer: NodeId, version: u64, fingerprint: u64) {
        if (version, fingerprint) == self.map_summary() {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move { cluster.sync_map_with(peer).await });
    }

    /// One batch of a handoff scan: every key of `namespaces` in `slots` after
    /// `after`, in (slot, namespace, key) order, bounded in keys and bytes.
    pub(super) fn handoff_batch(
        &self,
        slots: std::ops::RangeInclusive<u16>,
        namespaces: &Namespaces,
        after: Option<&HandoffCursor>,
    ) -> Result<HandoffBatch, shoal_engine::store::ReadError> {
        self.storage.read(|s| {
            let Some(digests) = s.digests() else {
                return Ok((Vec::new(), None));
            };
            let mut slot_namespaces: Vec<(u16, u8)> = digests
                .slot_digests(slots)
                .into_iter()
                .filter(|(_, namespace, _)| namespaces.contains(*namespace))
                .map(|(slot, namespace, _)| (slot, namespace))
                .collect();
            slot_namespaces.sort_unstable();
            let mut items = Vec::new();
            let mut bytes = 0usize;
            let mut last_slot = 0u16;
            for (slot, namespace) in slot_namespaces {
                if after.is_some_and(|c| (slot, namespace) < (c.slot, c.namespace)) {
                    continue;
                }
                let mut keys: Vec<Vec<u8>> = digests
                    .slot_keys(namespace, slot)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                keys.sort_unstable();
                for key in keys {
                    if after.is_some_and(|c| {
                        (slot, namespace) == (c.slot, c.namespace) && key.as_slice() <= &c.key[..]
                    }) {
                        continue;
                    }
                    let Some(set) = s.get(namespace, &key)? else {
                        continue;
                    };
                    if !items.is_empty()
                        && (items.len() >= HANDOFF_ITEMS_PER_BATCH_MAX
                            || bytes >= self.config.repair_batch_bytes_max)
                    {
                        let last: &ReplicaItem = items.last().expect("not empty");
                        let next = HandoffCursor {
                            slot: last_slot,
                            namespace: last.namespace,
                            key: last.key.clone(),
                        };
                        return Ok((items, Some(next)));
                    }
                    bytes += key.len() + set.size_bytes();
                    last_slot = slot;
                    items.push(ReplicaItem {
                        namespace,
                        key: Bytes::from(key),
                        set,
                    });
                }
            }
            Ok((items, None))
        })
    }

    /// This node's digest of each map partition (0 for one its map lacks).
    pub fn partition_digests(&self, partitions: &[PartitionId]) -> Vec<u64> {
        let map = self.map();
        self.storage.read(|s| {
            partitions
                .iter()
                .map(|p| {
                    if !map.is_partition(*p) {
                        return 0;
                    }
                    let namespaces = map.namespaces(*p);
                    s.digests().map_or(0, |d| {
                        d.range_digest_where(map.slot_range(*p), |ns| namespaces.contains(ns))
                    })
                })
                .collect()
        })
    }

    /// Merge replica copies into the local store, durably. Submitted in
    /// batches of at most the committer's `batch_bytes_max` (all queued before
    /// any is awaited, so they commit in order), so that a stream of large
    /// copies never makes one batch too big for a segment.
    pub(super) async fn merge_locally(
        &self,
        items: Vec<ReplicaItem>,
    ) -> Vec<Result<(), RemoteError>> {
        let stopped = || {
            Err(RemoteError::new(
                Refusal::OutcomeUnknown,
                "storage has stopped",
            ))
        };
        let mut tickets = Vec::new();
        for chunk in chunk_by_bytes(items, self.storage.config().batch_bytes_max) {
            let n = chunk.len();
            let ops: Vec<WriteOp> = chunk
                .into_iter()
                .map(|i| WriteOp::merge(i.namespace, i.key, i.set))
                .collect();
            tickets.push((n, self.storage.submit(ops).await));
        }
        let mut results = Vec::new();
        for (n, ticket) in tickets {
            match ticket {
                Ok(ticket) => results.extend(
                    ticket
                        .wait()
                        .await
                        .into_iter()
                        .map(|r| r.map(|_| ()).map_err(|e| remote_error(&e))),
                ),
                Err(_) => results.extend((0..n).map(|_| stopped())),
            }
        }
        results
    }

    /// As a fallback: the hint held for `owner` of each key (`None`: none).
    pub(super) fn read_hints(
        &self,
        owner: NodeId,
        namespace: u8,
        keys: &[Bytes],
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        let Some(hint_store) = &self.hints else {
            return keys.iter().map(|_| Ok(None)).collect();
        };
        hint_store.read(|s| {
            keys.iter()
                .map(|key| {
                    let hint_key = hints::hint_key(owner, namespace, key);
                    let stored = s
                        .get(hints::HINT_NAMESPACE, &hint_key)
                        .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()))?;
                    Ok(stored
                        .and_then(|h| h.winner().and_then(|w| w.value.clone()))
                        .and_then(|v| hints::decode_hint(&v)))
                })
                .collect()
        })
    }

    /// `ReadPrefix`: the local copies of the first keys whose sets add up to at
    /// most `bytes_max`, and always the first.
    pub(super) fn read_prefix(
        &self,
        namespace: u8,
        keys: &[Bytes],
        bytes_max: u64,
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        self.storage.read(|s| {
            let mut bytes = 0u64;
            let mut sets = Vec::new();
            for key in keys {
                let set = s
                    .get(namespace, key)
                    .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()));
                let set_bytes = set.as_ref().map_or(0, |set| {
                    set.as_ref().map_or(0, SiblingSet::size_bytes) + key.len()
                });
                if !sets.is_empty() && bytes + set_bytes as u64 > bytes_max {
                    break;
                }
                bytes += set_bytes as u64;
                sets.push(set);
            }
            sets
        })
    }

    pub(super) fn read_locally(
        &self,
        namespace: u8,
        keys: &[Bytes],
    ) -> Vec<Result<Option<SiblingSet>, RemoteError>> {
        self.storage.read(|s| {
            keys.iter()
                .map(|k| {
                    s.get(namespace, k)
                        .map_err(|e| RemoteError::new(Refusal::Invalid, e.to_string()))
                })
                .collect()
        })
    }
}
