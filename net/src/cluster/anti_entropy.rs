//! Anti-entropy: digest exchanges with every peer under byte and key budgets,
//! restore progress after damage or a lost disk, and dropping copies of
//! partitions this node no longer owns.

use super::*;

impl Cluster {
    pub(super) async fn run_anti_entropy(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.anti_entropy_interval_ms)).await;
            // A restoring node also compares with owners that left the ring
            // and still hold copies (`restored_from`).
            let map = self.map();
            let peers = if self.restoring.load(Ordering::Acquire) {
                map.holders()
            } else {
                map.ring().members().clone()
            };
            for peer in peers.into_iter().filter(|p| *p != self.me()) {
                if !self.is_live(peer) {
                    continue;
                }
                if let Err(e) = self.anti_entropy_with(peer).await {
                    tracing::debug!("anti-entropy with node {peer} stopped: {e}");
                }
            }
            self.stats
                .anti_entropy_rounds
                .fetch_add(1, Ordering::Relaxed);
            self.collect_markers().await;
            self.drop_unowned_copies().await;
            self.expire_due_keys().await;
        }
    }

    /// Forget copies of partitions this node no longer owns, once the ring is
    /// settled: every node that gained them has pulled them whole, so nothing
    /// needs them here (and a stale copy would hold back marker collection).
    /// At most `anti_entropy_keys_per_round_max` keys per round, under the
    /// gate, so a ring change that hands a partition back waits for it.
    pub(super) async fn drop_unowned_copies(self: &Arc<Self>) {
        let settled = |map: &ClusterMap| {
            map.partitions_in_transition() == 0 || cfg!(feature = "bug-drop-before-handoff")
        };
        let map = self.map();
        if !settled(&map) {
            return;
        }
        let me = self.me();
        let budget = self.config.anti_entropy_keys_per_round_max;
        let unowned = map
            .partitions()
            .into_iter()
            .filter(|p| !map.owners(*p).contains(&me))
            .map(|p| {
                // Planted bug: a default-ring partition's copies are dropped in
                // every namespace, pinned ones included.
                let namespaces = if cfg!(feature = "bug-pin-drop-ignores-namespace") {
                    Namespaces::AllBut(BTreeSet::new())
                } else {
                    map.namespaces(p)
                };
                (p, namespaces)
            });
        let keys = self
            .storage
            .read(|s| partition_keys(s, &map, unowned, budget));
        if keys.is_empty() {
            return;
        }
        let _shared = self.gate.read().await;
        let now = self.map();
        if now.version() != map.version() || !settled(&now) {
            return;
        }
        let ops = keys
            .into_iter()
            .map(|(namespace, key)| WriteOp::drop_copy(namespace, key))
            .collect();
        let dropped = self.write_counting_applied(ops).await;
        self.stats
            .copies_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }

    /// One exchange with one peer over every partition both hold
    /// (`exchange::shared_partitions`): compare partition digests, then, one
    /// differing partition at a time while the round's budgets last
    /// (`anti_entropy_keys_per_round_max` keys,
    /// `anti_entropy_bytes_per_round_max` bytes), slot digests, key hashes of
    /// the slots that differ, and push our copies of the differing keys and
    /// pull theirs (each side merges, so the order does not matter).
    /// `exchange::Exchange` keeps the budgets and decides completeness.
    pub(super) async fn anti_entropy_with(self: &Arc<Self>, peer: NodeId) -> Result<(), CallError> {
        let map = self.map();
        let restoring = self.restoring.load(Ordering::Acquire);
        let shared = exchange::shared_partitions(&map, self.me(), peer, restoring);
        let mut exchange = Exchange::new(
            self.config.anti_entropy_keys_per_round_max,
            self.config.anti_entropy_bytes_per_round_max,
        );
        if !self
            .compare_partitions(peer, &shared, &mut exchange)
            .await?
        {
            return Ok(());
        }
        while let Some((partition, keys_max)) = exchange.next_partition() {
            let Some(keys) = self
                .differing_keys_of(peer, &map, partition, keys_max)
                .await?
            else {
                return Ok(());
            };
            exchange.found(keys.len());
            self.exchange_keys(peer, &map, keys, &mut exchange).await?;
        }
        let end = exchange.end();
        self.record_lag(peer, end.found);
        if end.complete {
            self.restored_from(peer, &map);
        }
        Ok(())
    }

    /// Compare the digests of `shared` partitions with `peer`'s, in requests
    /// of at most `ITEMS_PER_REQUEST_MAX` (false: an unexpected answer).
    pub(super) async fn compare_partitions(
        &self,
        peer: NodeId,
        shared: &[PartitionId],
        exchange: &mut Exchange,
    ) -> Result<bool, CallError> {
        for chunk in shared.chunks(ITEMS_PER_REQUEST_MAX) {
            let request = Request::PartitionDigests {
                partitions: chunk.to_vec(),
            };
            let theirs = match self
                .call(peer, request, self.config.request_timeout_ms)
                .await?
            {
                Response::PartitionDigests(d) if d.len() == chunk.len() => d,
                _ => return Ok(false),
            };
            exchange.compared(chunk, &self.partition_digests(chunk), &theirs);
        }
        Ok(true)
    }

    /// The keys of `partition` whose copies differ between this node and `peer`,
    /// at most `budget` of them: slot digests, then key hashes of the slots that
    /// differ (`None`: an unexpected answer).
    pub(super) async fn differing_keys_of(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        partition: PartitionId,
        budget: usize,
    ) -> Result<Option<Vec<(u8, Bytes)>>, CallError> {
        let timeout = self.config.request_timeout_ms;
        let slots = map.slot_range(partition);
        let namespaces = map.namespaces(partition);
        let request = Request::SlotDigests {
            first_slot: *slots.start(),
            last_slot: *slots.end(),
        };
        let Response::SlotDigests(mut theirs) = self.call(peer, request, timeout).await? else {
            return Ok(None);
        };
        theirs.retain(|(_, namespace, _)| namespaces.contains(*namespace));
        let mine = self.storage.read(|s| {
            s.digests()
                .map(|d| {
                    let mut mine = d.slot_digests(slots.clone());
                    mine.retain(|(_, namespace, _)| namespaces.contains(*namespace));
                    mine
                })
                .unwrap_or_default()
        });
        let mut keys = Vec::new();
        for (slot, namespace) in differing_slots(&mine, &theirs) {
            let request = Request::SlotKeys { namespace, slot };
            let Response::SlotKeys(their_keys) = self.call(peer, request, timeout).await? else {
                return Ok(None);
            };
            let my_keys = self.storage.read(|s| {
                s.digests()
                    .map(|d| d.slot_keys(namespace, slot))
                    .unwrap_or_default()
            });
            for key in differing_keys(&my_keys, &their_keys) {
                keys.push((namespace, Bytes::from(key)));
                if keys.len() >= budget {
                    return Ok(Some(keys));
                }
            }
        }
        Ok(Some(keys))
    }

    /// Push our copies of `keys` to `peer` and pull and merge theirs, while
    /// the exchange's bytes last.
    pub(super) async fn exchange_keys(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        keys: Vec<(u8, Bytes)>,
        exchange: &mut Exchange,
    ) -> Result<(), CallError> {
        let mut by_namespace: BTreeMap<u8, Vec<Bytes>> = BTreeMap::new();
        for (namespace, key) in keys {
            by_namespace.entry(namespace).or_default().push(key);
        }
        for (namespace, keys) in by_namespace {
            self.push_copies(peer, map, namespace, &keys, exchange)
                .await?;
            self.pull_copies(peer, map, namespace, keys, exchange)
                .await?;
        }
        Ok(())
    }

    /// Anti-entropy's push: our copies of `keys` to `peer`, as the exchange
    /// cuts them (`Exchange::push_requests`).
    pub(super) async fn push_copies(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        namespace: u8,
        keys: &[Bytes],
        exchange: &mut Exchange,
    ) -> Result<(), CallError> {
        let items = replica_items(namespace, keys, self.read_locally(namespace, keys));
        let ignore_bytes = cfg!(feature = "bug-repair-ignores-bytes");
        let requests =
            exchange.push_requests(items, self.config.repair_batch_bytes_max, ignore_bytes);
        for chunk in requests {
            let (n, bytes) = (chunk.len(), exchange.moved(&chunk));
            let request = Request::Replicate {
                sent_wall_ms: self.clock.wall_ms(),
                ring_version: map.version(),
                items: chunk,
                hint_for: None,
            };
            self.call(peer, request, self.config.request_timeout_ms)
                .await?;
            self.stats
                .anti_entropy_keys_pushed
                .fetch_add(n as u64, Ordering::Relaxed);
            self.stats
                .anti_entropy_bytes_pushed
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Anti-entropy's pull: `peer`'s copies of `keys`, a byte-bounded prefix
    /// per request (`ReadPrefix`), merged here, while the exchange's bytes
    /// last; it learns whether every key's copy was read and merged.
    pub(super) async fn pull_copies(
        &self,
        peer: NodeId,
        map: &ClusterMap,
        namespace: u8,
        mut keys: Vec<Bytes>,
        exchange: &mut Exchange,
    ) -> Result<(), CallError> {
        let ignore_bytes = cfg!(feature = "bug-repair-ignores-bytes");
        while !keys.is_empty() {
            let Some(bytes_max) =
                exchange.pull_bytes_max(self.config.repair_batch_bytes_max, ignore_bytes)
            else {
                return Ok(());
            };
            let request = Request::ReadPrefix {
                ring_version: map.version(),
                namespace,
                keys: keys.clone(),
                bytes_max,
            };
            let sets = match self
                .call(peer, request, self.config.request_timeout_ms)
                .await?
            {
                Response::Sets(sets) if (1..=keys.len()).contains(&sets.len()) => sets,
                _ => {
                    exchange.pulled(false);
                    return Ok(());
                }
            };
            let answered: Vec<Bytes> = keys.drain(..sets.len()).collect();
            let all_read = sets.iter().all(Result::is_ok);
            log_failures(peer, "read", &answered, &sets);
            let items = replica_items(namespace, &answered, sets);
            let bytes = exchange.moved(&items);
            self.stats
                .anti_entropy_keys_pulled
                .fetch_add(items.len() as u64, Ordering::Relaxed);
            self.stats
                .anti_entropy_bytes_pulled
                .fetch_add(bytes as u64, Ordering::Relaxed);
            let pulled: Vec<Bytes> = items.iter().map(|i| i.key.clone()).collect();
            let merged = self.merge_locally(items).await;
            log_failures(peer, "merged", &pulled, &merged);
            exchange.pulled(all_read && merged.iter().all(Result::is_ok));
        }
        Ok(())
    }

    /// While restoring ([`RESTORING_FILE`]): `peer`'s copies of every partition
    /// the two share are merged here. Once that holds for every other holder
    /// ([`ClusterMap::holders`]: the ring's members, and old owners whose
    /// handoffs still run), this node holds every write any of them
    /// acknowledged before, and stops restoring.
    ///
    /// An old owner that left the ring counts too. It may hold the only other
    /// copy of a write lost here, which reaches the new owners only through
    /// their pulls, of which this node, refusing scans, is no source: finishing
    /// without it let a node serve scans as complete while it lacked that write
    /// (a down node leaving, the cluster sim found). Waiting instead for the
    /// ring to settle deadlocked whenever the pulls needed this node as a
    /// source (cluster seed 20001454: the leaver down, two of three old owners
    /// restoring, each waiting on the other's scans).
    pub(super) fn restored_from(&self, peer: NodeId, map: &ClusterMap) {
        if !self.restoring.load(Ordering::Acquire) {
            return;
        }
        // Counted only under one and the same map (`restore`).
        let me = self.me();
        let (exchange_fingerprint, current_fingerprint) = (map.fingerprint(), self.map_summary().1);
        let holders = map.holders();
        let step = lock(&self.restored_from).exchange_complete(
            me,
            peer,
            exchange_fingerprint,
            current_fingerprint,
            &holders,
        );
        let RestoreStep::Whole { merged_from } = step else {
            return;
        };
        let removed = match self.dir.remove(RESTORING_FILE) {
            Ok(()) | Err(DiskError::NotFound(_)) => self.dir.sync_dir(),
            Err(e) => Err(e),
        }
        .and_then(|()| self.storage.with_store_mut(|s| s.cut_tail_made_good()));
        match removed {
            Ok(()) => {
                self.restoring.store(false, Ordering::Release);
                tracing::warn!(
                    "node {me}: restored from every other holder ({merged_from} of them); serving handoffs and marker collection again"
                );
            }
            Err(e) => tracing::error!("cannot clear {RESTORING_FILE}: {e}"),
        }
    }
}

/// A pull's copies that were not `what` (read, merged): how many, and the
/// first with its cause (a merge over the record limit keeps a restore from
/// finishing, so it must be findable).
fn log_failures<T>(peer: NodeId, what: &str, keys: &[Bytes], results: &[Result<T, RemoteError>]) {
    let mut failed = keys
        .iter()
        .zip(results)
        .filter_map(|(k, r)| Some((k, r.as_ref().err()?)));
    if let Some((key, e)) = failed.next() {
        let count = 1 + failed.count();
        tracing::debug!(
            "anti-entropy pull from node {peer}: {count} copies not {what}, first {key:?}: {e}"
        );
    }
}
