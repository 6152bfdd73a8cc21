//! Failure detection, sans-IO: every `probe_interval_ms` each peer is pinged; a
//! peer not heard from for `suspect_after_ms` is suspect, for `down_after_ms` down.
//! Any message from a peer (a ping's answer or a ping of its own) makes it alive
//! again; a peer's incarnation (its store's, bumped on every restart) only grows,
//! so a restarted node is told from a delayed answer of its old life.
//!
//! This is direct, all-to-all probing with a suspicion stage, not SWIM's indirect
//! probes and piggybacked gossip: for the small clusters Shoal runs today it detects
//! as fast with fewer moving parts. Liveness only steers traffic (who coordinates,
//! who is worth waiting for); it never changes the ring.

use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    pub probe_interval_ms: u64,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            probe_interval_ms: 200,
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
    pub last_heard_ms: u64,
    /// When the peer entered its current state.
    pub since_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectorEvent {
    /// Send a ping to this peer now.
    Probe(NodeId),
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
            .map(|p| {
                let view = PeerView {
                    state: PeerState::Alive,
                    incarnation: 0,
                    last_heard_ms: now_ms,
                    since_ms: now_ms,
                };
                (p, view)
            })
            .collect();
        Detector {
            me,
            config,
            peers,
            next_probe_ms: now_ms,
        }
    }

    /// Watch exactly `peers` from now on (the cluster map changed): new peers start
    /// alive as of `now_ms`, peers no longer listed are forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>, now_ms: u64) {
        let wanted: std::collections::BTreeSet<NodeId> =
            peers.into_iter().filter(|p| *p != self.me).collect();
        self.peers.retain(|p, _| wanted.contains(p));
        for peer in wanted {
            self.peers.entry(peer).or_insert(PeerView {
                state: PeerState::Alive,
                incarnation: 0,
                last_heard_ms: now_ms,
                since_ms: now_ms,
            });
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
            self.next_probe_ms = now_ms + self.config.probe_interval_ms;
        }
        for (node, view) in &mut self.peers {
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

    /// A message from `node`, sent in its `incarnation`. Older incarnations are
    /// ignored: a delayed answer from before a restart proves nothing.
    pub fn heard(&mut self, node: NodeId, incarnation: u64, now_ms: u64) -> Option<DetectorEvent> {
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

    /// Whether requests should go to `node` (itself always; peers while alive).
    pub fn is_live(&self, node: NodeId) -> bool {
        node == self.me
            || self
                .peers
                .get(&node)
                .is_some_and(|v| v.state == PeerState::Alive)
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
                DetectorEvent::Probe(_) => None,
            })
            .collect()
    }

    #[test]
    fn silence_suspects_then_downs_and_a_message_revives() {
        let config = DetectorConfig {
            probe_interval_ms: 100,
            suspect_after_ms: 300,
            down_after_ms: 1000,
        };
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
