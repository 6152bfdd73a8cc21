//! Coordinated writes: the coordinator's own copy, replica rounds to w acks
//! (sloppy quorum with hints), proxying to the coordinator, and the retry under
//! a newer ring.

use super::*;
use shoal_engine::cluster::coordination::{Coordination, ReplicaSend};
use shoal_engine::store::Deadline;

impl Cluster {
    /// Where a key's copies go: each owner, except that with sloppy quorum an owner
    /// the detector holds down is replaced by a live fallback (the next nodes of
    /// the ring outside the owners), which keeps the copy as a hint for it.
    pub(super) fn write_targets(&self, map: &ClusterMap, namespace: u8, key: &[u8]) -> Vec<Target> {
        let targets = self.targets(map, map.partition_of_key(namespace, key));
        let hinted = targets.iter().filter(|(_, hint_for)| hint_for.is_some());
        self.stats
            .writes_hinted
            .fetch_add(hinted.count() as u64, Ordering::Relaxed);
        targets
    }

    /// A partition's owners, each one the detector holds down replaced (with
    /// sloppy quorum) by the next live fallback: `(node, the owner it stands in
    /// for)`. Writes and reads choose alike, so a read asks the fallback that
    /// took a write while the same owner was down.
    pub(super) fn targets(&self, map: &ClusterMap, partition: PartitionId) -> Vec<Target> {
        let owners = map.owners(partition);
        if !self.config.sloppy_quorum {
            return owners.iter().map(|o| (*o, None)).collect();
        }
        let Some(ring) = map.ring_of(partition) else {
            return owners.iter().map(|o| (*o, None)).collect();
        };
        let detector = lock(&self.detector);
        let live = |n: NodeId| detector.is_live(n);
        // A pinned namespace's fallbacks are its own other nodes.
        let mut fallbacks = ring.fallbacks(split_partition(partition).1, live);
        owners
            .iter()
            .map(|owner| {
                if live(*owner) {
                    return (*owner, None);
                }
                match fallbacks.next() {
                    Some(fallback) => (fallback, Some(*owner)),
                    None => (*owner, None),
                }
            })
            .collect()
    }

    /// Coordinate writes here: durable locally first, then to the other replicas;
    /// each answered after `w` durable copies.
    /// The local writes of `ops`, except those refused (which answer with the
    /// refusal), in order.
    pub(super) async fn write_unrefused(
        &self,
        ops: Vec<WriteOp>,
        refusals: Vec<Option<RemoteError>>,
    ) -> Vec<Result<WriteOutcome, RemoteError>> {
        let n = ops.len();
        let to_write: Vec<WriteOp> = ops
            .into_iter()
            .zip(&refusals)
            .filter(|(_, refusal)| refusal.is_none())
            .map(|(op, _)| op)
            .collect();
        let mut written = match self.storage.write(to_write).await {
            Ok(results) => results.into_iter(),
            Err(_) => {
                return (0..n)
                    .map(|_| {
                        Err(RemoteError::new(
                            Refusal::OutcomeUnknown,
                            "storage has stopped",
                        ))
                    })
                    .collect()
            }
        };
        refusals
            .into_iter()
            .map(|refusal| match refusal {
                Some(e) => Err(e),
                None => match written.next() {
                    Some(result) => result.map_err(|e| remote_error(&e)),
                    None => Err(RemoteError::new(
                        Refusal::OutcomeUnknown,
                        "storage answered too few writes",
                    )),
                },
            })
            .collect()
    }

    /// Coordinate `ops` here (`coordination` decides; this sends and waits):
    /// durable locally first, then to the other replicas; each answered after
    /// `w` durable copies, or `NOQUORUM`.
    pub async fn coordinate(self: &Arc<Self>, ops: Vec<WriteOp>) -> Vec<RoutedWrite> {
        let keys: Vec<(u8, Bytes)> = ops.iter().map(|o| (o.namespace, o.key.clone())).collect();
        self.stats
            .writes_coordinated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        // The local copy is made under the ring the replicas are then chosen by,
        // once keys of partitions this node takes over are caught up.
        let (read, unread) = self.read_before_modifying(&ops).await;
        let (shared, map, mut refusals) = self.gate_for_minting(&keys).await;
        self.merge_read(&map, read).await;
        for (refusal, unread) in refusals.iter_mut().zip(unread) {
            *refusal = refusal.take().or(unread);
        }
        let local = self.write_unrefused(ops, refusals).await;
        drop(shared);
        let ring_version = map.version();
        let (mut coordination, sends) =
            Coordination::start(self.me(), ring_version, &keys, local, |ns, key| {
                (
                    self.write_quorum(&map, ns),
                    self.write_targets(&map, ns, key),
                )
            });
        self.replicate_rounds(sends, &mut coordination).await;
        if let Some(peer) = coordination.newer_ring_at() {
            // A replica had a newer ring: learn it and send the copies that are
            // still short to the owners under that ring.
            self.sync_map_with(peer).await;
            let newer = self.map();
            if newer.version() > ring_version {
                let sends = coordination.retry_under(newer.version(), |ns, key| {
                    (
                        self.write_quorum(&newer, ns),
                        self.write_targets(&newer, ns, key),
                    )
                });
                self.stats.stale_ring_retries.fetch_add(
                    sends.iter().map(|s| s.items.len()).sum::<usize>() as u64,
                    Ordering::Relaxed,
                );
                self.replicate_rounds(sends, &mut coordination).await;
            }
        }
        self.keep_own_copies(ring_version, &mut coordination).await;
        let (answers, missed) = coordination.finish(self.config.request_timeout_ms);
        self.stats
            .quorum_failures
            .fetch_add(missed, Ordering::Relaxed);
        answers
    }

    /// Before a read-modify-write (INCR, EXPIRE, PERSIST, GETEX, SET
    /// KEEPTTL) mints, read its key from a quorum, so that what it computes
    /// builds on every write acknowledged before it (with strict quorums):
    /// the merged copies found, and per op why it is refused (one whose read
    /// failed writes nothing).
    async fn read_before_modifying(
        self: &Arc<Self>,
        ops: &[WriteOp],
    ) -> (Vec<ReplicaItem>, Vec<Option<RemoteError>>) {
        let mut items = Vec::new();
        let mut refusals = Vec::with_capacity(ops.len());
        for op in ops {
            // Planted (checker self-test): the coordinator modifies its own
            // copy without reading the others first.
            let planted = cfg!(feature = "bug-modify-without-read");
            if planted || op.modify.is_none() && op.deadline != Deadline::Keep {
                refusals.push(None);
                continue;
            }
            let keys = vec![op.key.clone()];
            let read = self.read(op.namespace, keys.clone()).await;
            refusals.push(read[0].as_ref().err().map(|e| {
                RemoteError::new(
                    Refusal::TryAgain,
                    format!(
                        "the key could not be read first, so nothing was written ({})",
                        e.line()
                    ),
                )
            }));
            items.extend(replica_items(op.namespace, &keys, read));
        }
        (items, refusals)
    }

    /// Merge here what `read_before_modifying` found (read repair has usually
    /// written it already), for the keys this node still holds under `map`.
    async fn merge_read(&self, map: &ClusterMap, read: Vec<ReplicaItem>) {
        let me = self.me();
        let held: Vec<ReplicaItem> = read
            .into_iter()
            .filter(|item| map.holds(me, map.partition_of_key(item.namespace, &item.key)))
            .collect();
        if !held.is_empty() {
            // A merge that fails leaves the reply behind, not the count.
            let _ = self.merge_locally(held).await;
        }
    }

    /// A ring adopted while this coordinator's writes were out may have made it an
    /// incoming owner of their partitions, and adopting it dropped its old copies
    /// there (`drop_residue`), the ones just written among them: write those
    /// again so that this node's acknowledgement still stands. One that cannot
    /// be written again is answered as an error.
    pub(super) async fn keep_own_copies(&self, ring_version: u64, coordination: &mut Coordination) {
        let map = self.map();
        if map.version() == ring_version {
            return;
        }
        let pending: BTreeSet<PartitionId> = map.incoming(self.me()).into_iter().collect();
        let again: Vec<(usize, ReplicaItem)> = coordination
            .copies()
            .filter(|(_, copy)| pending.contains(&map.partition_of_key(copy.namespace, &copy.key)))
            .map(|(i, copy)| (i, copy.clone()))
            .collect();
        if again.is_empty() {
            return;
        }
        let _shared = self.gate.read().await;
        let (indexes, items): (Vec<usize>, Vec<ReplicaItem>) = again.into_iter().unzip();
        for (i, merged) in indexes.into_iter().zip(self.merge_locally(items).await) {
            if let Err(e) = merged {
                coordination.refuse(i, RemoteError::new(
                    Refusal::OutcomeUnknown,
                    format!("the coordinator's own copy could not be kept across a ring change ({}); outcome unknown", e.line()),
                ));
            }
        }
    }

    /// Send each request (as hints where its target is a fallback) and feed
    /// the answers to `coordination` until no write is undecided, every
    /// target answered, or the request timeout passed.
    pub(super) async fn replicate_rounds(
        self: &Arc<Self>,
        sends: Vec<ReplicaSend>,
        coordination: &mut Coordination,
    ) {
        let (done_tx, mut done_rx) = mpsc::channel(sends.len().max(1));
        let peer_count = sends.len();
        for send in sends {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let (peer, indexes) = (send.target.0, send.indexes.clone());
                let answer = cluster.send_copies(send).await;
                let _ = done_tx.send((peer, indexes, answer)).await;
            });
        }
        drop(done_tx);
        let deadline = Duration::from_millis(self.config.request_timeout_ms + 50);
        let _ = tokio::time::timeout(deadline, async {
            let mut answered = 0;
            while coordination.undecided() && answered < peer_count {
                let Some((peer, indexes, answer)) = done_rx.recv().await else {
                    break;
                };
                answered += 1;
                coordination.answer(peer, &indexes, answer);
            }
        })
        .await;
    }

    /// One replica request, its answer (a refusal for a newer ring also starts
    /// learning that ring), and the hint observer told of hints taken.
    async fn send_copies(self: &Arc<Self>, send: ReplicaSend) -> Result<Response, String> {
        let ReplicaSend {
            target: (peer, hint_for),
            ring_version,
            items,
            ..
        } = send;
        let observed = match (&self.config.hint_observer, hint_for) {
            (Some(_), Some(_)) => items.clone(),
            _ => Vec::new(),
        };
        let request = Request::Replicate {
            sent_wall_ms: self.clock.wall_ms(),
            ring_version,
            items,
            hint_for,
        };
        let answer = self
            .call(peer, request, self.config.request_timeout_ms)
            .await;
        if let Ok(Response::Error(e)) = &answer {
            if e.refusal == Refusal::StaleRing {
                let cluster = self.clone();
                tokio::spawn(async move { cluster.sync_map_with(peer).await });
            }
        }
        if let (Some(observer), Some(owner), Ok(Response::Replicated(acks))) =
            (&self.config.hint_observer, hint_for, &answer)
        {
            for (item, ack) in observed.iter().zip(acks) {
                if ack.is_ok() {
                    (observer.0)(peer, owner, item);
                }
            }
        }
        answer.map_err(|e| e.to_string())
    }

    /// Route writes to their coordinators (in parallel per coordinator) and return
    /// the results in order. A coordinator whose ring differs from this
    /// node's refuses the keys it does not hold under its own (`STALERING`:
    /// nothing was written), and the two exchange maps
    /// ([`Cluster::write_group`]): those writes are routed once more, under
    /// the newer ring, which both now have.
    pub async fn write(self: &Arc<Self>, ops: Vec<WriteOp>) -> Vec<RoutedWrite> {
        let mut results = self.write_under(&self.map(), ops.clone()).await;
        let stale = |r: &RoutedWrite| matches!(r, Err(e) if e.refusal == Refusal::StaleRing);
        let again: Vec<usize> = (0..results.len()).filter(|i| stale(&results[*i])).collect();
        if !again.is_empty() {
            let retried = again.iter().map(|i| ops[*i].clone()).collect();
            let retried = self.write_under(&self.map(), retried).await;
            for (i, result) in again.into_iter().zip(retried) {
                results[i] = result;
            }
        }
        results
    }

    /// [`Cluster::write`] routed by `map`, once.
    async fn write_under(
        self: &Arc<Self>,
        map: &ClusterMap,
        ops: Vec<WriteOp>,
    ) -> Vec<RoutedWrite> {
        let n = ops.len();
        let mut groups: BTreeMap<Vec<NodeId>, Vec<(usize, WriteOp)>> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            groups
                .entry(self.candidates(map, op.namespace, &op.key))
                .or_default()
                .push((i, op));
        }
        let (done_tx, mut done_rx) = mpsc::channel(groups.len().max(1));
        for (candidates, group) in groups {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let (indexes, ops): (Vec<usize>, Vec<WriteOp>) = group.into_iter().unzip();
                let results = cluster.write_group(&candidates, ops).await;
                let _ = done_tx.send((indexes, results)).await;
            });
        }
        drop(done_tx);
        let mut results: Vec<Option<RoutedWrite>> = (0..n).map(|_| None).collect();
        while let Some((indexes, group_results)) = done_rx.recv().await {
            for (i, r) in indexes.into_iter().zip(group_results) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(RemoteError::new(
                        Refusal::OutcomeUnknown,
                        "write task ended without an answer; outcome unknown",
                    ))
                })
            })
            .collect()
    }

    pub(super) async fn write_group(
        self: &Arc<Self>,
        candidates: &[NodeId],
        ops: Vec<WriteOp>,
    ) -> Vec<RoutedWrite> {
        let n = ops.len();
        let mut last_error = String::from("no replica of this key is a member");
        for candidate in candidates {
            if *candidate == self.me() {
                return self.coordinate(ops).await;
            }
            let writes: Vec<ClientWrite> = ops.iter().map(write_to_wire).collect();
            // The coordinator waits up to a request timeout for its replicas.
            let timeout = self.config.request_timeout_ms * 2 + 100;
            self.stats
                .writes_proxied
                .fetch_add(n as u64, Ordering::Relaxed);
            match self
                .call(
                    *candidate,
                    Request::Coordinate {
                        sent_wall_ms: self.clock.wall_ms(),
                        writes,
                    },
                    timeout,
                )
                .await
            {
                Ok(Response::Coordinated(results)) if results.len() == n => {
                    // Keys it does not hold under its ring: the newer of the
                    // two rings goes to the other (a MapSync goes both ways).
                    if results
                        .iter()
                        .any(|r| matches!(r, Err(e) if e.refusal == Refusal::StaleRing))
                    {
                        self.sync_map_with(*candidate).await;
                    }
                    return results
                        .into_iter()
                        .map(|r| r.map(outcome_from_wire))
                        .collect();
                }
                Ok(Response::Error(e)) => return (0..n).map(|_| Err(e.clone())).collect(),
                Ok(other) => {
                    let e = RemoteError::new(
                        Refusal::OutcomeUnknown,
                        format!(
                            "node {candidate} answered a write with {other:?}; outcome unknown"
                        ),
                    );
                    return (0..n).map(|_| Err(e.clone())).collect();
                }
                // Never sent: the next candidate may coordinate instead.
                Err(CallError::Connect(e)) => last_error = format!("node {candidate}: {e}"),
                Err(e) => {
                    let e = unknown_outcome(&format!("coordinator node {candidate}"), &e);
                    return (0..n).map(|_| Err(e.clone())).collect();
                }
            }
        }
        let e = RemoteError::new(
            Refusal::ClusterDown,
            format!("no replica of this key's partition is reachable ({last_error}); the write was not made"),
        );
        (0..n).map(|_| Err(e.clone())).collect()
    }
}
