//! Quorum reads with read repair, and the keyspace commands (KEYS, SCAN)
//! gathered from every partition.

use super::*;

impl Cluster {
    /// Read keys from their replicas: each answered once `r` replied, with the
    /// merge of the replies; replicas that were behind get the merge written
    /// back first (`shoal_engine::cluster::reading`).
    pub async fn read(self: &Arc<Self>, namespace: u8, keys: Vec<Bytes>) -> Vec<RoutedRead> {
        let me = self.me();
        self.stats
            .reads_coordinated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let key_count = keys.len();
        let map = self.map();
        let plans = self.read_plans(&map, namespace, &keys);
        let mut reading = Reading::new(namespace, keys, plans);
        let own = reading.own_copies(me);
        let own_keys: Vec<Bytes> = own.iter().map(|i| reading.keys()[*i].clone()).collect();
        for (i, copy) in own.into_iter().zip(self.read_locally(namespace, &own_keys)) {
            reading.reply(i, me, copy.map_err(|_| ()));
        }
        for (i, owner) in reading.own_hints(me) {
            // This node stands in for a down owner: its hint is the reply.
            let key = &reading.keys()[i..=i];
            let hint = self.read_hints(owner, namespace, key).remove(0);
            reading.reply(i, me, hint.map_err(|_| ()));
        }
        let sends = reading.sends(me, map.version());
        let (done_tx, done_rx) = mpsc::channel(sends.len().max(1));
        let peer_count = sends.len();
        for send in sends {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let timeout = cluster.config.request_timeout_ms;
                let answer = cluster.call(send.target.0, send.request, timeout).await;
                let _ = done_tx.send((send.target.0, send.indexes, answer)).await;
            });
        }
        drop(done_tx);
        let (decided_tx, decided_rx) = oneshot::channel();
        let cluster = self.clone();
        tokio::spawn(async move {
            cluster
                .gather_read(reading, (peer_count, done_rx), decided_tx)
                .await
        });
        decided_rx.await.unwrap_or_else(|_| {
            let ended =
                || RemoteError::new(Refusal::Invalid, "the read's task ended without an answer");
            (0..key_count).map(|_| Err(ended())).collect()
        })
    }

    /// Each key's round: its owners (a fallback standing in for each one the
    /// detector holds down, with sloppy quorum), or during a handoff the new
    /// and the old owners, the old read with the old placement's quorum.
    fn read_plans(&self, map: &ClusterMap, namespace: u8, keys: &[Bytes]) -> Vec<KeyPlan> {
        let r = self.read_quorum(map, namespace);
        let previous_r = map
            .previous_placement()
            .map_or(r, |p| self.quorums_in(p, namespace).0);
        let plan = |key: &Bytes| {
            let partition = map.partition_of_key(namespace, key);
            let owners = map.owners(partition).iter().copied();
            if let Some(previous) = map.previous_owners(partition) {
                let round = ReadRound::joint(r, owners, previous_r, previous.iter().copied());
                return KeyPlan {
                    round,
                    stand_ins: BTreeMap::new(),
                };
            }
            let targets = self.targets(map, partition);
            let stand_in = |(node, owner): &Target| owner.map(|o| (*node, o));
            KeyPlan {
                stand_ins: targets.iter().filter_map(stand_in).collect(),
                round: ReadRound::new(r, targets.into_iter().map(|(node, _)| node)),
            }
        };
        let plans: Vec<KeyPlan> = keys.iter().map(plan).collect();
        let hinted_reads = plans.iter().filter(|p| !p.stand_ins.is_empty()).count();
        self.stats
            .reads_from_fallbacks
            .fetch_add(hinted_reads as u64, Ordering::Relaxed);
        plans
    }

    /// A read's replies as they come, until every key's round is decided or the
    /// deadline passes, with blocking read repair (see `Reading`): the answers
    /// go to `decided` once every replier they count holds them; late repliers
    /// are repaired after.
    pub(super) async fn gather_read(
        self: Arc<Self>,
        mut reading: Reading,
        (peer_count, mut done_rx): (usize, mpsc::Receiver<ReadReply>),
        decided: oneshot::Sender<Vec<RoutedRead>>,
    ) {
        let mut decided = Some(decided);
        let timeout_ms = self.config.request_timeout_ms;
        let deadline = Duration::from_millis(timeout_ms + 50);
        let _ = tokio::time::timeout(deadline, async {
            let mut answered = 0;
            loop {
                if decided.is_some() && reading.all_decided() {
                    self.repair(&mut reading).await;
                    let holds = self.holds_fn(reading.namespace());
                    reading.uncount_unrepaired(&holds);
                    if reading.all_decided() {
                        if let Some(tx) = decided.take() {
                            let _ = tx.send(reading.answers(timeout_ms, &holds));
                        }
                    }
                }
                if answered == peer_count {
                    break;
                }
                let Some((peer, indexes, answer)) = done_rx.recv().await else {
                    break;
                };
                answered += 1;
                reading.answer(peer, &indexes, answer.ok());
            }
        })
        .await;
        if let Some(tx) = decided.take() {
            // Cut off by the deadline: a write-back not confirmed does not count.
            let holds = self.holds_fn(reading.namespace());
            reading.uncount_unrepaired(&holds);
            let _ = tx.send(reading.answers(timeout_ms, &holds));
        }
        // Late repliers (and any whose merge changed since) are repaired too.
        self.repair(&mut reading).await;
    }

    /// Whether a node holds a key's partition under the current map.
    fn holds_fn(&self, namespace: u8) -> impl Fn(NodeId, &[u8]) -> bool {
        let map = self.map();
        move |node, key| map.holds(node, map.partition_of_key(namespace, key))
    }

    /// Read repair: write each key's merge back to the replicas that were
    /// behind (all nodes at once); what is confirmed goes back to `reading`.
    pub(super) async fn repair(self: &Arc<Self>, reading: &mut Reading) {
        let namespace = reading.namespace();
        let mut writes = Vec::new();
        for send in reading.repairs(self.holds_fn(namespace)) {
            self.stats
                .read_repairs
                .fetch_add(send.entries.len() as u64, Ordering::Relaxed);
            let items = send.items(namespace, reading.keys());
            let cluster = self.clone();
            writes.push(tokio::spawn(async move {
                let durable = cluster.write_back(send.node, items).await;
                (send, durable)
            }));
        }
        for write in writes {
            if let Ok((send, durable)) = write.await {
                reading.repaired(send, &durable);
            }
        }
    }

    /// One node's read repair: whether each item is now durable there.
    pub(super) async fn write_back(
        self: &Arc<Self>,
        node: NodeId,
        items: Vec<ReplicaItem>,
    ) -> Vec<bool> {
        let n = items.len();
        if node == self.me() {
            let merged = self.merge_locally(items).await;
            return merged.iter().map(Result::is_ok).collect();
        }
        let request = Request::Replicate {
            sent_wall_ms: self.clock.wall_ms(),
            ring_version: self.map().version(),
            items,
            hint_for: None,
        };
        match self
            .call(node, request, self.config.request_timeout_ms)
            .await
        {
            Ok(Response::Replicated(acks)) if acks.len() == n => {
                acks.iter().map(Result::is_ok).collect()
            }
            _ => vec![false; n],
        }
    }

    /// Live keys of a namespace within `slots`, gathered from every member and
    /// settled as `shoal_engine::cluster::listing` says; a disputed key is
    /// settled by a quorum read. Errors (`PARTIAL`) when some partition in the
    /// range had no replica answer, or a disputed key could not be read.
    pub async fn keys(
        self: &Arc<Self>,
        namespace: u8,
        slots: std::ops::RangeInclusive<u16>,
    ) -> Result<Vec<Bytes>, RemoteError> {
        let (first_slot, last_slot) = (*slots.start(), *slots.end());
        let mine = self.unexpired_keys(namespace, slots.clone());
        let mut listed = BTreeMap::from([(self.me(), mine.into_iter().collect::<BTreeSet<_>>())]);
        let map = self.map();
        let peers: Vec<NodeId> = map
            .nodes()
            .into_iter()
            .filter(|n| *n != self.me())
            .collect();
        let (done_tx, mut done_rx) = mpsc::channel(peers.len().max(1));
        for peer in peers {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let request = Request::Keys {
                    namespace,
                    first_slot,
                    last_slot,
                };
                let answer = cluster
                    .call(peer, request, cluster.config.request_timeout_ms)
                    .await;
                let _ = done_tx.send((peer, answer)).await;
            });
        }
        drop(done_tx);
        while let Some((peer, answer)) = done_rx.recv().await {
            if let Ok(Response::Keys(found)) = answer {
                listed.insert(peer, found.into_iter().collect());
            }
        }
        let r = self.read_quorum(&map, namespace);
        let Settled {
            agreed: mut keys,
            disputed,
        } = listing::settle(&map, namespace, slots, r, &listed)?;
        for chunk in disputed.chunks(ITEMS_PER_REQUEST_MAX) {
            let reads = self.read(namespace, chunk.to_vec()).await;
            for (key, read) in chunk.iter().zip(reads) {
                match read {
                    Ok(Some(set)) if !set.is_absent_at(self.clock.wall_ms()) => {
                        keys.push(key.clone())
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(RemoteError::new(
                            Refusal::Partial,
                            format!("key {key:?} is listed by some replicas only and could not be read ({}); the result would be incomplete", e.line()),
                        ))
                    }
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }
}
