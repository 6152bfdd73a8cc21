//! What the driver reports to operators and tests: members, clock offsets,
//! restore and handoff progress, replication lag, markers, hints, digests.

use super::*;

impl Cluster {
    /// Nodes of the map with their state, for operators.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = self.now_ms();
        let map = self.map();
        let ring = map.ring();
        let partitions = map.partitions();
        let detector = lock(&self.detector);
        map.addresses()
            .iter()
            .map(|(node, client)| {
                let (state, reachable, incarnation, silent_ms) = if *node == self.me() {
                    (PeerState::Alive, true, self.incarnation(), 0)
                } else {
                    match detector.view(*node) {
                        Some(view) => (
                            view.state,
                            view.reachable,
                            view.incarnation,
                            now.saturating_sub(view.last_direct_ms),
                        ),
                        None => (PeerState::Down, false, 0, 0),
                    }
                };
                MemberStatus {
                    node: *node,
                    addr: member_addr(client).unwrap_or(MemberAddr {
                        client: client.clone(),
                        peer: String::new(),
                    }),
                    state,
                    reachable,
                    incarnation,
                    silent_ms,
                    in_ring: ring.is_member(*node),
                    partitions: partitions
                        .iter()
                        .filter(|p| map.owners(**p).contains(node))
                        .count(),
                    coordinating: partitions
                        .iter()
                        .filter(|p| {
                            map.owners(**p).iter().find(|n| detector.is_live(**n)) == Some(node)
                        })
                        .count(),
                    incoming: map.incoming(*node).len(),
                }
            })
            .collect()
    }

    /// The largest measured clock skew to any other of `members`, error bound
    /// included (None: one has not answered a ping yet).
    pub(super) fn clock_skew_max_ms(&self, members: &[NodeId]) -> Option<u64> {
        let me = self.me();
        let offsets = lock(&self.clock_offsets);
        members
            .iter()
            .filter(|m| **m != me)
            .map(|m| {
                offsets
                    .get(m)
                    .map(|(offset, error)| offset.unsigned_abs() + error)
            })
            .try_fold(0, |max, skew| skew.map(|s| max.max(s)))
    }

    /// Per peer: (its wall clock minus this node's, the estimate's error), ms.
    pub fn clock_offsets(&self) -> BTreeMap<NodeId, (i64, u64)> {
        lock(&self.clock_offsets).clone()
    }

    /// While restoring from the replicas: (other members merged here in full so
    /// far, other members).
    pub fn restoring(&self) -> Option<(usize, usize)> {
        if !self.restoring.load(Ordering::Acquire) {
            return None;
        }
        let me = self.me();
        let others: Vec<NodeId> = self
            .map()
            .ring()
            .members()
            .iter()
            .copied()
            .filter(|n| *n != me)
            .collect();
        let progress = lock(&self.restored_from);
        Some((
            others
                .iter()
                .filter(|n| progress.has_merged_from(**n))
                .count(),
            others.len(),
        ))
    }

    /// The handoff being pulled here now, if any.
    pub fn handoff_now(&self) -> Option<HandoffProgress> {
        lock(&self.handoff_now).clone()
    }

    /// What the exchange with `peer` that just compared everything found.
    pub(super) fn record_lag(&self, peer: NodeId, keys_differing: usize) {
        let now = self.now_ms();
        let mut lag = lock(&self.lag);
        let entry = lag.entry(peer).or_default();
        entry.last_exchange_ms = Some(now);
        entry.keys_differing = keys_differing;
        if keys_differing == 0 {
            entry.last_in_sync_ms = Some(now);
        }
    }

    /// Replication lag with each peer, as anti-entropy last measured it:
    /// (peer, keys that differed, ms since that exchange, ms since the two were
    /// last found in sync). `None`s mean no exchange has completed yet.
    pub fn replication_lag(&self) -> Vec<(NodeId, usize, Option<u64>, Option<u64>)> {
        let now = self.now_ms();
        lock(&self.lag)
            .iter()
            .map(|(peer, lag)| {
                (
                    *peer,
                    lag.keys_differing,
                    lag.last_exchange_ms.map(|t| now.saturating_sub(t)),
                    lag.last_in_sync_ms.map(|t| now.saturating_sub(t)),
                )
            })
            .collect()
    }

    /// Agreed delete markers waiting out the settle delay, for operators.
    pub fn markers_waiting(&self) -> usize {
        lock(&self.agreed_markers).len()
    }

    /// Delete markers this node's store forgot (on any primary's request).
    pub fn tombstones_forgotten_here(&self) -> u64 {
        self.storage.read(|s| s.stats().tombstones_forgotten)
    }

    /// Hints held here, for operators.
    pub fn hints_pending(&self) -> u64 {
        self.hints
            .as_ref()
            .map_or(0, |h| h.read(|s| s.live_key_count(hints::HINT_NAMESPACE)))
    }

    /// This node's digest over every key it holds, and how many keys that is.
    /// Replicas holding the same partitions have equal digests once converged.
    pub fn local_digest(&self) -> (u64, usize) {
        self.storage.read(|s| {
            s.digests().map_or((0, 0), |d| {
                (
                    d.range_digest(0..=shoal_engine::slot::SLOT_COUNT - 1),
                    d.key_count(),
                )
            })
        })
    }
}
