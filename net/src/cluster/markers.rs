//! Delete-marker collection rounds (the agreement is the engine's
//! `tombstones`): propose, collect verdicts, wait out the settle delay, forget.

use super::*;
use shoal_engine::cluster::marker_round::{self, RoundFacts, RoundStart, Verdicts};

impl Cluster {
    /// One round of delete-marker collection (`tombstones` has the protocol):
    /// forget the agreed markers that have settled, then propose new ones from
    /// the partitions this node is the primary of. Runs only while the ring is
    /// settled and every member answers.
    pub(super) async fn collect_markers(self: &Arc<Self>) {
        let map = self.map();
        let bugged = cfg!(feature = "bug-forget-without-agreement");
        let facts = self.round_facts(&map);
        let start = marker_round::start(&mut lock(&self.agreed_markers), &facts, bugged);
        let RoundStart::Run { due } = start else {
            return;
        };
        if !due.is_empty() {
            self.forget_everywhere(&map, &facts.members, due).await;
        }
        let proposals = self.marker_proposals(&map);
        if proposals.is_empty() {
            return;
        }
        self.stats
            .markers_proposed
            .fetch_add(proposals.len() as u64, Ordering::Relaxed);
        let local = self.marker_verdicts(&map, &proposals);
        let mut verdicts = Verdicts::new(&facts, proposals, local, bugged);
        while let Some(member) = verdicts.next_to_ask() {
            let request = Request::MarkerVerdicts {
                ring_version: map.version(),
                items: verdicts.proposals().to_vec(),
            };
            let timeout = self.config.request_timeout_ms;
            let answer = match self.call(member, request, timeout).await {
                Ok(Response::Verdicts(v)) => Some(v),
                _ => None,
            };
            if !verdicts.answered(member, answer) {
                return;
            }
        }
        let agreed = verdicts.settle(&mut lock(&self.agreed_markers), self.now_ms());
        self.stats
            .markers_agreed
            .fetch_add(agreed as u64, Ordering::Relaxed);
    }

    /// What a marker round starts from (`marker_round::RoundFacts`).
    fn round_facts(&self, map: &ClusterMap) -> RoundFacts {
        let me = self.me();
        let members: Vec<NodeId> = map.ring().members().iter().copied().collect();
        let down = members
            .iter()
            .copied()
            .filter(|m| *m != me && !self.is_live(*m))
            .collect();
        RoundFacts {
            me,
            skew_max_ms: self.clock_skew_max_ms(&members),
            members,
            ring_version: map.version(),
            in_transition: map.partitions_in_transition() > 0,
            ready: self.ready.load(Ordering::Acquire),
            down,
            request_timeout_ms: self.config.request_timeout_ms,
            replica_write_age_max_ms: self.config.replica_write_age_max_ms,
            now_ms: self.now_ms(),
        }
    }

    /// Markers to propose: from partitions this node is the first owner of,
    /// round-robin from where the last round stopped, older than the grace, not
    /// already agreed.
    pub(super) fn marker_proposals(&self, map: &ClusterMap) -> Vec<MarkerItem> {
        let me = self.me();
        let partitions: Vec<PartitionId> = map
            .partitions()
            .into_iter()
            .filter(|p| map.owners(*p).first() == Some(&me))
            .collect();
        if partitions.is_empty() {
            return Vec::new();
        }
        let room = lock(&self.agreed_markers).room();
        let budget = tombstones::PROPOSALS_PER_ROUND_MAX.min(room);
        let grace_ms = if cfg!(feature = "bug-forget-without-agreement") {
            0
        } else {
            self.config.tombstone_grace_ms
        };
        let before = shoal_engine::Hlc::at_wall_ms(self.clock.wall_ms().saturating_sub(grace_ms));
        let start = self.marker_cursor.load(Ordering::Relaxed) as usize;
        let mut proposals = Vec::new();
        let mut reads_left = tombstones::MARKER_READS_PER_ROUND_MAX;
        for i in 0..partitions.len() {
            if proposals.len() >= budget || reads_left == 0 {
                break;
            }
            let partition = partitions[(start + i) % partitions.len()];
            self.marker_cursor.store(
                ((start + i + 1) % partitions.len()) as u64,
                Ordering::Relaxed,
            );
            let namespaces = map.namespaces(partition);
            let found = self.storage.read(|s| {
                let agreed = lock(&self.agreed_markers);
                s.delete_markers_in_slots(
                    map.slot_range(partition),
                    before,
                    budget - proposals.len(),
                    &mut reads_left,
                    |namespace, key| {
                        !namespaces.contains(namespace) || agreed.contains(namespace, key)
                    },
                )
            });
            proposals.extend(
                found
                    .into_iter()
                    .map(|(namespace, key, set_hash)| MarkerItem {
                        namespace,
                        key,
                        set_hash,
                    }),
            );
        }
        proposals
    }

    /// Ask every member (this node last) to forget settled agreed markers.
    pub(super) async fn forget_everywhere(
        self: &Arc<Self>,
        map: &ClusterMap,
        members: &[NodeId],
        items: Vec<MarkerItem>,
    ) {
        let me = self.me();
        for peer in members.iter().copied().filter(|m| *m != me) {
            let request = Request::ForgetMarkers {
                ring_version: map.version(),
                sent_wall_ms: self.clock.wall_ms(),
                items: items.clone(),
            };
            if let Ok(Response::Forgot(n)) = self
                .call(peer, request, self.config.request_timeout_ms)
                .await
            {
                self.stats.markers_forgotten.fetch_add(n, Ordering::Relaxed);
            }
        }
        let _shared = self.gate.read().await;
        if self.unsettled(map.version()).is_none() {
            let n = self.forget_markers(items).await;
            self.stats.markers_forgotten.fetch_add(n, Ordering::Relaxed);
        }
    }
}
