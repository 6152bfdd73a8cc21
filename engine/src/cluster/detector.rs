//! Failure detection, sans-IO: every `probe_interval_ms` each peer is pinged
//! directly; a peer not heard from for `indirect_after_ms` is also probed through
//! up to `indirect_probes` other peers (SWIM's ping-req). A peer heard from by
//! neither way for `suspect_after_ms` is suspect, for `down_after_ms` down. Any
//! message from a peer (a ping's answer, a ping of its own, or an intermediary's
//! word that it answered) makes it alive again; a peer's incarnation (its store's,
//! bumped on every restart) only grows, so a restarted node is told from a delayed
//! answer of its old life.
//!
//! Two views come out of it. The peer's *state* is the membership view operators
//! see: a node that other peers still reach is alive, even when the link from here
//! is cut. *Reachable* says whether this node itself heard the peer directly within
//! `suspect_after_ms`; routing asks [`Detector::is_live`], which is that, because a
//! request can only go over the direct link. Gossip is all-to-all (every probe
//! carries the map's version), not piggybacked. Liveness only steers traffic (who
//! coordinates, who is worth waiting for); it never changes the ring.

use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    pub probe_interval_ms: u64,
    /// Direct silence after which a peer is also probed through others.
    pub indirect_after_ms: u64,
    /// Intermediaries asked per indirect probe.
    pub indirect_probes: usize,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            probe_interval_ms: 200,
            indirect_after_ms: 400,
            indirect_probes: 2,
            suspect_after_ms: 700,
            down_after_ms: 1500,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PeerState {
    Alive,
    Suspect,
    Down,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

/// What this node knows of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub state: PeerState,
    pub incarnation: u64,
    /// Last word of the peer, direct or through an intermediary.
    pub last_heard_ms: u64,
    /// Last message this node had from the peer itself.
    pub last_direct_ms: u64,
    /// Heard directly within `suspect_after_ms` (as of the last tick or message).
    pub reachable: bool,
    /// When the peer entered its current state.
    pub since_ms: u64,
}

impl PeerView {
    fn new(now_ms: u64) -> PeerView {
        PeerView {
            state: PeerState::Alive,
            incarnation: 0,
            last_heard_ms: now_ms,
            last_direct_ms: now_ms,
            reachable: true,
            since_ms: now_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorEvent {
    /// Send a ping to this peer now.
    Probe(NodeId),
    /// Ask each of `via` to ping `target` and say whether it answered.
    ProbeIndirect { target: NodeId, via: Vec<NodeId> },
    Changed {
        node: NodeId,
        from: PeerState,
        to: PeerState,
    },
}

#[derive(Clone, Debug)]
pub struct Detector {
    me: NodeId,
    config: DetectorConfig,
    peers: BTreeMap<NodeId, PeerView>,
    next_probe_ms: u64,
    /// Rotates the choice of intermediaries, so every reachable peer takes turns.
    indirect_turn: usize,
}

impl Detector {
    /// Peers start alive as of `now_ms`: a peer that never answers is suspected and
    /// then declared down on the same schedule as one that stops answering.
    pub fn new(
        me: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        config: DetectorConfig,
        now_ms: u64,
    ) -> Detector {
        let peers = peers
            .into_iter()
            .filter(|p| *p != me)
            .map(|p| (p, PeerView::new(now_ms)))
            .collect();
        Detector {
            me,
            config,
            peers,
            next_probe_ms: now_ms,
            indirect_turn: 0,
        }
    }

    /// Watch exactly `peers` from now on (the cluster map changed): new peers start
    /// alive as of `now_ms`, peers no longer listed are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>, now_ms: u64) {
        let wanted: std::collections::BTreeSet<NodeId> =
            peers.into_iter().filter(|p| *p != self.me).collect();
        self.peers.retain(|p, _| wanted.contains(p));
        for peer in wanted {
            self.peers.entry(peer).or_insert(PeerView::new(now_ms));
        }
    }

    pub fn config(&self) -> DetectorConfig {
        self.config
    }

    /// Advance to `now_ms`: probes that are due, and state changes by silence.
    pub fn tick(&mut self, now_ms: u64) -> Vec<DetectorEvent> {
        let mut events = Vec::new();
        if now_ms >= self.next_probe_ms {
            events.extend(self.peers.keys().map(|p| DetectorEvent::Probe(*p)));
            self.indirect_probes(now_ms, &mut events);
            self.next_probe_ms = now_ms + self.config.probe_interval_ms;
        }
        for (node, view) in &mut self.peers {
            view.reachable =
                now_ms.saturating_sub(view.last_direct_ms) < self.config.suspect_after_ms;
            let silent_ms = now_ms.saturating_sub(view.last_heard_ms);
            let next = if silent_ms >= self.config.down_after_ms {
                PeerState::Down
            } else if silent_ms >= self.config.suspect_after_ms {
                PeerState::Suspect
            } else {
                PeerState::Alive
            };
            if next > view.state {
                events.push(DetectorEvent::Changed {
                    node: *node,
                    from: view.state,
                    to: next,
                });
                view.state = next;
                view.since_ms = now_ms;
            }
        }
        events
    }

    /// Peers directly silent for `indirect_after_ms`, each with up to
    /// `indirect_probes` directly reachable peers to probe it through.
    fn indirect_probes(&mut self, now_ms: u64, events: &mut Vec<DetectorEvent>) {
        if self.config.indirect_probes == 0 {
            return;
        }
        let silent_after = |view: &PeerView| {
            now_ms.saturating_sub(view.last_direct_ms) >= self.config.indirect_after_ms
        };
        let helpers: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, view)| !silent_after(view))
            .map(|(node, _)| *node)
            .collect();
        if helpers.is_empty() {
            return;
        }
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, view)| silent_after(view))
            .map(|(node, _)| *node)
            .collect();
        for target in targets {
            let count = self.config.indirect_probes.min(helpers.len());
            let via = (0..count)
                .map(|i| helpers[(self.indirect_turn + i) % helpers.len()])
                .collect();
            self.indirect_turn = (self.indirect_turn + 1) % helpers.len();
            events.push(DetectorEvent::ProbeIndirect { target, via });
        }
    }

    /// A message from `node` itself, sent in its `incarnation`. Older
    /// incarnations are ignored: a delayed answer from before a restart proves
    /// nothing.
    pub fn heard(&mut self, node: NodeId, incarnation: u64, now_ms: u64) -> Option<DetectorEvent> {
        let view = self.peers.get_mut(&node)?;
        if incarnation < view.incarnation {
            return None;
        }
        view.last_direct_ms = view.last_direct_ms.max(now_ms);
        view.reachable = true;
        self.heard_of(node, incarnation, now_ms)
    }

    /// An intermediary's word that `node` answered its ping in `incarnation`:
    /// alive for the membership view, but no proof the link from here works.
    pub fn heard_indirectly(
        &mut self,
        node: NodeId,
        incarnation: u64,
        now_ms: u64,
    ) -> Option<DetectorEvent> {
        self.heard_of(node, incarnation, now_ms)
    }

    fn heard_of(&mut self, node: NodeId, incarnation: u64, now_ms: u64) -> Option<DetectorEvent> {
        let view = self.peers.get_mut(&node)?;
        if incarnation < view.incarnation {
            return None;
        }
        view.incarnation = incarnation;
        view.last_heard_ms = view.last_heard_ms.max(now_ms);
        if view.state == PeerState::Alive {
            return None;
        }
        let from = view.state;
        view.state = PeerState::Alive;
        view.since_ms = now_ms;
        Some(DetectorEvent::Changed {
            node,
            from,
            to: PeerState::Alive,
        })
    }

    /// Whether requests should go to `node`: itself always; a peer while this
    /// node hears it directly (alive by others' word alone is not enough, since a
    /// request can only take the direct link).
    pub fn is_live(&self, node: NodeId) -> bool {
        node == self.me
            || self
                .peers
                .get(&node)
                .is_some_and(|v| v.reachable && v.state == PeerState::Alive)
    }

    pub fn view(&self, node: NodeId) -> Option<PeerView> {
        self.peers.get(&node).copied()
    }

    pub fn peers(&self) -> impl Iterator<Item = (NodeId, PeerView)> + '_ {
        self.peers.iter().map(|(n, v)| (*n, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(events: &[DetectorEvent]) -> Vec<(NodeId, PeerState)> {
        events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::Changed { node, to, .. } => Some((*node, *to)),
                DetectorEvent::Probe(_) | DetectorEvent::ProbeIndirect { .. } => None,
            })
            .collect()
    }

    /// Probe every 100 ms, indirectly after 200, suspect at 300, down at 1000.
    fn fast_config() -> DetectorConfig {
        DetectorConfig {
            probe_interval_ms: 100,
            indirect_after_ms: 200,
            indirect_probes: 2,
            suspect_after_ms: 300,
            down_after_ms: 1000,
        }
    }

    #[test]
    fn silence_suspects_then_downs_and_a_message_revives() {
        let config = fast_config();
        let mut d = Detector::new(1, [1, 2, 3], config, 0);
        let first = d.tick(0);
        assert_eq!(
            first,
            vec![DetectorEvent::Probe(2), DetectorEvent::Probe(3)]
        );
        assert!(d.tick(50).is_empty(), "no probe before the interval");
        d.heard(3, 1, 250);
        assert_eq!(changes(&d.tick(300)), vec![(2, PeerState::Suspect)]);
        assert!(!d.is_live(2) && d.is_live(3) && d.is_live(1));
        assert_eq!(
            changes(&d.tick(1000)),
            vec![(2, PeerState::Down), (3, PeerState::Suspect)]
        );
        assert_eq!(
            d.heard(2, 1, 1100),
            Some(DetectorEvent::Changed {
                node: 2,
                from: PeerState::Down,
                to: PeerState::Alive
            })
        );
        assert!(d.is_live(2));
    }

    fn indirect(events: &[DetectorEvent]) -> Vec<(NodeId, Vec<NodeId>)> {
        events
            .iter()
            .filter_map(|e| match e {
                DetectorEvent::ProbeIndirect { target, via } => Some((*target, via.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_peer_cut_off_from_here_but_heard_by_others_stays_alive_and_unroutable() {
        let config = fast_config();
        let mut d = Detector::new(1, [2, 3, 4, 5], config, 0);
        let mut indirect_seen = Vec::new();
        // Node 2's link from here is cut; 3, 4, 5 answer directly, and one of
        // them vouches for 2 after every indirect probe.
        for now in (100..=2_000).step_by(100) {
            for peer in [3, 4, 5] {
                d.heard(peer, 1, now);
            }
            let events = d.tick(now);
            let asked = indirect(&events);
            if let Some((target, via)) = asked.first() {
                assert_eq!(*target, 2, "only the silent peer is probed indirectly");
                assert_eq!(via.len(), 2, "{via:?}");
                assert!(via.iter().all(|v| [3, 4, 5].contains(v)), "{via:?}");
                indirect_seen.extend(via.iter().copied());
                d.heard_indirectly(2, 1, now);
            }
            assert!(!changes(&events).contains(&(2, PeerState::Down)));
        }
        assert!(!indirect_seen.is_empty(), "2 was probed indirectly");
        for helper in [3, 4, 5] {
            assert!(indirect_seen.contains(&helper), "the helpers take turns");
        }
        let view = d.view(2).unwrap();
        assert_eq!(view.state, PeerState::Alive, "others still hear it");
        assert!(!view.reachable);
        assert!(!d.is_live(2), "requests cannot take the cut link");
        assert!(d.is_live(3));

        // Nobody vouches any more: suspect, then down, on the usual schedule.
        let mut down_at = None;
        for now in (2_100..=4_000).step_by(100) {
            for peer in [3, 4, 5] {
                d.heard(peer, 1, now);
            }
            if changes(&d.tick(now)).contains(&(2, PeerState::Down)) {
                down_at = Some(now);
                break;
            }
        }
        assert_eq!(down_at, Some(3_000), "down 1000 ms after the last word");
        // The link comes back: a direct answer makes it routable again.
        d.heard(2, 1, 4_100);
        assert!(d.is_live(2));
    }

    #[test]
    fn no_indirect_probe_without_a_reachable_helper() {
        let mut d = Detector::new(1, [2, 3], DetectorConfig::default(), 0);
        let events = d.tick(1_000);
        assert!(indirect(&events).is_empty(), "{events:?}");
        d.heard(3, 1, 1_000);
        let events = d.tick(1_200);
        assert_eq!(indirect(&events), vec![(2, vec![3])]);
    }

    #[test]
    fn an_older_incarnation_proves_nothing() {
        let mut d = Detector::new(1, [2], DetectorConfig::default(), 0);
        d.heard(2, 5, 10);
        d.tick(5_000);
        assert!(!d.is_live(2));
        assert_eq!(d.heard(2, 4, 5_001), None);
        assert!(!d.is_live(2));
        assert!(d.heard(2, 6, 5_002).is_some());
        assert!(d.is_live(2));
    }

    #[test]
    fn set_peers_adds_new_nodes_alive_and_forgets_removed_ones() {
        let mut d = Detector::new(1, [2, 3], DetectorConfig::default(), 0);
        d.tick(5_000);
        assert!(!d.is_live(2));
        d.set_peers([1, 2, 4], 5_000);
        assert!(d.view(3).is_none(), "removed");
        assert!(!d.is_live(2), "a kept peer keeps its state");
        assert!(d.is_live(4), "a new peer starts alive");
        assert_eq!(d.peers().count(), 2, "never itself");
    }
}
