//! Quorum reads with read repair, and the keyspace commands (KEYS, SCAN)
//! gathered from every partition.

use super::*;

/// A quorum read's request to one replica: its copies, or (`stand_in_for`)
/// the hints it keeps for a down owner.
fn copy_read(
    ring_version: u64,
    namespace: u8,
    keys: Vec<Bytes>,
    stand_in_for: Option<NodeId>,
) -> Request {
    match stand_in_for {
        Some(owner) => Request::ReadHints {
            ring_version,
            owner,
            namespace,
            keys,
        },
        None => Request::Read {
            ring_version,
            namespace,
            keys,
        },
    }
}

impl Cluster {
    /// Read keys from their replicas: each answered once `r` replied, with the merge
    /// of the replies; replicas that were behind get the merge written back.
    pub async fn read(self: &Arc<Self>, namespace: u8, keys: Vec<Bytes>) -> Vec<RoutedRead> {
        let me = self.me();
        self.stats
            .reads_coordinated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let key_count = keys.len();
        let map = self.map();
        let r = self.read_quorum(&map, namespace);
        // The old owners are read with the old placement's quorum (before a pin:
        // the configured one).
        let previous_r = map
            .previous_placement()
            .map_or(r, |p| self.quorums_in(p, namespace).0);
        // Per key: the fallbacks standing in for owners held down (sloppy quorum,
        // outside a handoff), each with the owner whose hints it answers with.
        let mut stand_ins: Vec<BTreeMap<NodeId, NodeId>> = Vec::with_capacity(keys.len());
        let mut rounds: Vec<ReadRound> = keys
            .iter()
            .map(|key| {
                let partition = map.partition_of_key(namespace, key);
                let owners = map.owners(partition).iter().copied();
                match map.previous_owners(partition) {
                    Some(previous) => {
                        stand_ins.push(BTreeMap::new());
                        ReadRound::joint(r, owners, previous_r, previous.iter().copied())
                    }
                    None => {
                        let targets = self.targets(&map, partition);
                        stand_ins.push(
                            targets
                                .iter()
                                .filter_map(|(node, owner)| owner.map(|o| (*node, o)))
                                .collect(),
                        );
                        ReadRound::new(r, targets.into_iter().map(|(node, _)| node))
                    }
                }
            })
            .collect();
        let hinted_reads = stand_ins.iter().filter(|s| !s.is_empty()).count();
        self.stats
            .reads_from_fallbacks
            .fetch_add(hinted_reads as u64, Ordering::Relaxed);
        let mut per_peer: BTreeMap<Target, Vec<usize>> = BTreeMap::new();
        let local_keys: Vec<usize> = (0..keys.len())
            .filter(|i| rounds[*i].targets().contains(&me) && !stand_ins[*i].contains_key(&me))
            .collect();
        let local_sets = self.read_locally(
            namespace,
            &local_keys
                .iter()
                .map(|i| keys[*i].clone())
                .collect::<Vec<_>>(),
        );
        let mut local = local_keys.into_iter().zip(local_sets).peekable();
        for (i, round) in rounds.iter_mut().enumerate() {
            if local.peek().is_some_and(|(j, _)| *j == i) {
                match local.next().expect("peeked").1 {
                    Ok(set) => round.reply(me, set),
                    Err(_) => round.fail(me),
                };
            }
            if let Some(owner) = stand_ins[i].get(&me) {
                // This node stands in for a down owner: its hint is the reply.
                match self.read_hints(*owner, namespace, &keys[i..=i]).remove(0) {
                    Ok(set) => round.reply(me, set),
                    Err(_) => round.fail(me),
                };
            }
            for peer in round.targets().iter().filter(|p| **p != me) {
                let stand_in_for = stand_ins[i].get(peer).copied();
                per_peer.entry((*peer, stand_in_for)).or_default().push(i);
            }
        }
        let (done_tx, done_rx) = mpsc::channel(per_peer.len().max(1));
        let peer_count = per_peer.len();
        for ((peer, stand_in_for), indexes) in per_peer {
            let cluster = self.clone();
            let done_tx = done_tx.clone();
            let peer_keys: Vec<Bytes> = indexes.iter().map(|i| keys[*i].clone()).collect();
            let request = copy_read(map.version(), namespace, peer_keys, stand_in_for);
            tokio::spawn(async move {
                let timeout = cluster.config.request_timeout_ms;
                let answer = cluster.call(peer, request, timeout).await;
                let _ = done_tx.send((peer, indexes, answer)).await;
            });
        }
        drop(done_tx);
        let (decided_tx, decided_rx) = oneshot::channel();
        let cluster = self.clone();
        tokio::spawn(async move {
            cluster
                .gather_read(namespace, keys, rounds, (peer_count, done_rx), decided_tx)
                .await
        });
        let Ok(rounds) = decided_rx.await else {
            return (0..key_count)
                .map(|_| {
                    Err(RemoteError::new(
                        Refusal::Invalid,
                        "the read's task ended without an answer",
                    ))
                })
                .collect();
        };
        rounds
            .iter()
            .map(|round| match round.state() {
                RoundState::Met => Ok(round.merged()),
                _ => Err(RemoteError::new(
                    Refusal::NoQuorum,
                    format!(
                        "read reached {} of the {} replicas required within {} ms",
                        round.replied(),
                        r,
                        self.config.request_timeout_ms
                    ),
                )),
            })
            .collect()
    }

    /// A read's replies as they come, until every key's round is decided or the
    /// deadline passes. Blocking read repair: the merge goes back to every
    /// replier that was behind before the client sees it, so whatever this read
    /// returns is on the `r` repliers it counts and any later read quorum meets
    /// one of them (monotonic reads). A replier whose write-back failed stops
    /// counting (`ReadRound::unrepaired`): the round waits for another replier
    /// or fails. Counting it let a read answer a write held by one node while a
    /// replica with failing fsyncs kept its older copy, and the next read, from
    /// that replica and another one behind, went back in time (cluster seed
    /// 20030511). Costs a round trip only when a replica differs. The answer
    /// goes to `decided`; late repliers are repaired after.
    pub(super) async fn gather_read(
        self: Arc<Self>,
        namespace: u8,
        keys: Vec<Bytes>,
        mut rounds: Vec<ReadRound>,
        (peer_count, mut done_rx): (usize, mpsc::Receiver<ReadAnswer>),
        decided: oneshot::Sender<Vec<ReadRound>>,
    ) {
        let mut decided = Some(decided);
        // What repair wrote back, confirmed: (key index, node, set).
        let mut repaired: Vec<(usize, NodeId, SiblingSet)> = Vec::new();
        let all_decided =
            |rounds: &[ReadRound]| rounds.iter().all(|r| r.state() != RoundState::Pending);
        let deadline = Duration::from_millis(self.config.request_timeout_ms + 50);
        let _ = tokio::time::timeout(deadline, async {
            let mut answered = 0;
            loop {
                if decided.is_some() && all_decided(&rounds) {
                    repaired = self.repair(namespace, &keys, &rounds, &repaired).await;
                    self.uncount_unrepaired(namespace, &keys, &mut rounds, &repaired);
                    if all_decided(&rounds) {
                        if let Some(tx) = decided.take() {
                            let _ = tx.send(rounds.clone());
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
                match answer {
                    Ok(Response::Sets(sets)) if sets.len() == indexes.len() => {
                        for (i, set) in indexes.iter().zip(sets) {
                            match set {
                                Ok(set) => rounds[*i].reply(peer, set),
                                Err(_) => rounds[*i].fail(peer),
                            };
                        }
                    }
                    _ => {
                        for i in &indexes {
                            rounds[*i].fail(peer);
                        }
                    }
                }
            }
        })
        .await;
        if let Some(tx) = decided.take() {
            // Cut off by the deadline: a write-back not confirmed does not count.
            self.uncount_unrepaired(namespace, &keys, &mut rounds, &repaired);
            let _ = tx.send(rounds.clone());
        }
        // Late repliers (and any whose merge changed since) are repaired too.
        self.repair(namespace, &keys, &rounds, &repaired).await;
    }

    /// Per key index: the repliers read repair writes the merge back to (behind
    /// it, holding the partition: a fallback that answered with its hint keeps
    /// no copy, its hint reaches the owner by hinted handoff), with the merge,
    /// leaving out what `done` says was written already.
    pub(super) fn behind(
        &self,
        namespace: u8,
        keys: &[Bytes],
        rounds: &[ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) -> Vec<(usize, NodeId, SiblingSet)> {
        let map = self.map();
        let mut behind = Vec::new();
        for (i, (key, round)) in keys.iter().zip(rounds).enumerate() {
            let Some(merged) = round.merged() else {
                continue;
            };
            let partition = map.partition_of_key(namespace, key);
            for node in round.stale_repliers() {
                let written = done
                    .iter()
                    .any(|(j, n, set)| *j == i && *n == node && *set == merged);
                if map.holds(node, partition) && !written {
                    behind.push((i, node, merged.clone()));
                }
            }
        }
        behind
    }

    /// Every replier still behind after read repair stops counting.
    pub(super) fn uncount_unrepaired(
        &self,
        namespace: u8,
        keys: &[Bytes],
        rounds: &mut [ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) {
        for (i, node, _) in self.behind(namespace, keys, rounds, done) {
            rounds[i].unrepaired(node);
        }
    }

    /// Read repair: write each key's merge back to the replicas that were behind
    /// (all nodes at once), skipping what `done` says was written already.
    /// Returns what is now confirmed written, with `done`: (key index, node, set).
    pub(super) async fn repair(
        self: &Arc<Self>,
        namespace: u8,
        keys: &[Bytes],
        rounds: &[ReadRound],
        done: &[(usize, NodeId, SiblingSet)],
    ) -> Vec<(usize, NodeId, SiblingSet)> {
        let mut written = done.to_vec();
        let mut per_node: BTreeMap<NodeId, Vec<(usize, SiblingSet)>> = BTreeMap::new();
        for (i, node, merged) in self.behind(namespace, keys, rounds, done) {
            per_node.entry(node).or_default().push((i, merged));
        }
        let mut writes = Vec::new();
        for (node, entries) in per_node {
            self.stats
                .read_repairs
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            let items = entries
                .iter()
                .map(|(i, set)| ReplicaItem {
                    namespace,
                    key: keys[*i].clone(),
                    set: set.clone(),
                })
                .collect();
            let cluster = self.clone();
            writes.push(tokio::spawn(async move {
                (node, entries, cluster.write_back(node, items).await)
            }));
        }
        for write in writes {
            let Ok((node, entries, confirmed)) = write.await else {
                continue;
            };
            for ((i, set), ok) in entries.into_iter().zip(confirmed) {
                if ok {
                    written.push((i, node, set));
                }
            }
        }
        written
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

    /// Live keys of a namespace within `slots`, gathered from every member. A key
    /// every answering owner lists (at least `r` of them) counts; a key only some
    /// list (a replica behind on a write or a delete) is settled by a quorum read.
    /// Errors (`PARTIAL`) when some partition in the range had no replica answer,
    /// or a disputed key could not be read.
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
        let answered: BTreeSet<NodeId> = listed.keys().copied().collect();
        // Map partitions of one namespace are numbered contiguously.
        let first_partition = map.partition_of_slot(namespace, first_slot);
        let last_partition = map.partition_of_slot(namespace, last_slot);
        // A partition counts once a node that holds all of it answered: during a
        // handoff, an old owner (the incoming ones may still be pulling).
        let unreachable: Vec<PartitionId> = (first_partition..=last_partition)
            .filter(|p| {
                !map.previous_owners(*p)
                    .unwrap_or_else(|| map.owners(*p))
                    .iter()
                    .any(|n| answered.contains(n))
            })
            .collect();
        if !unreachable.is_empty() {
            return Err(RemoteError::new(
                Refusal::Partial,
                format!(
                    "{} partition(s) had no reachable replica (first: {}); the result would be incomplete",
                    unreachable.len(),
                    unreachable[0]
                ),
            ));
        }
        let r = usize::from(self.read_quorum(&map, namespace));
        let union: BTreeSet<&Bytes> = listed.values().flatten().collect();
        let mut keys: Vec<Bytes> = Vec::with_capacity(union.len());
        let mut disputed: Vec<Bytes> = Vec::new();
        for key in union {
            let owners = map.owners(map.partition_of_key(namespace, key));
            let answering: Vec<&BTreeSet<Bytes>> =
                owners.iter().filter_map(|o| listed.get(o)).collect();
            if answering.len() >= r && answering.iter().all(|l| l.contains(key)) {
                keys.push(key.clone());
            } else {
                disputed.push(key.clone());
            }
        }
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
