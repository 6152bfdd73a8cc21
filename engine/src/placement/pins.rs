//! Namespace pinning: a namespace's keys on a chosen subset of nodes with its
//! own ring and quorums ([`Placement`]).

use super::*;
use crate::version::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A namespace whose keys live on a chosen subset of the cluster, with its own
/// replica count and quorums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlacement {
    pub namespace: u8,
    pub nodes: BTreeSet<NodeId>,
    pub replicas_n: u8,
    pub r: u8,
    pub w: u8,
}

impl NamespacePlacement {
    /// Check the quorums against `replicas_n` and the subset against the cluster.
    pub fn validate(&self, cluster: &BTreeSet<NodeId>) -> Result<(), PlacementError> {
        let namespace = self.namespace;
        let quorum = 1..=self.replicas_n;
        if self.replicas_n == 0 || !quorum.contains(&self.r) || !quorum.contains(&self.w) {
            return Err(PlacementError::QuorumInvalid {
                namespace,
                replicas_n: self.replicas_n,
                r: self.r,
                w: self.w,
            });
        }
        if let Some(node) = self.nodes.iter().find(|node| !cluster.contains(node)) {
            return Err(PlacementError::NamespaceNodeNotMember {
                namespace,
                node: *node,
            });
        }
        if self.nodes.len() < usize::from(self.replicas_n) {
            return Err(PlacementError::Namespace {
                namespace,
                error: Box::new(PlacementError::TooFewMembers {
                    members: self.nodes.len(),
                    replicas_n: self.replicas_n,
                }),
            });
        }
        Ok(())
    }
}

/// A pinned namespace's ring and quorums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedRing {
    pub ring: Ring,
    pub r: u8,
    pub w: u8,
}

/// The cluster's placement: a default ring over every member, and per pinned
/// namespace a ring over its node subset (same partition count, same claim).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlacementWire")]
pub struct Placement {
    default: Ring,
    pinned: BTreeMap<u8, PinnedRing>,
}

#[derive(Deserialize)]
pub(super) struct PlacementWire {
    default: Ring,
    pinned: BTreeMap<u8, PinnedRing>,
}

impl TryFrom<PlacementWire> for Placement {
    type Error = PlacementError;

    fn try_from(wire: PlacementWire) -> Result<Placement, PlacementError> {
        for (namespace, pin) in &wire.pinned {
            NamespacePlacement {
                namespace: *namespace,
                nodes: pin.ring.members().clone(),
                replicas_n: pin.ring.replicas_n(),
                r: pin.r,
                w: pin.w,
            }
            .validate(wire.default.members())?;
        }
        Ok(Placement {
            default: wire.default,
            pinned: wire.pinned,
        })
    }
}

/// What a cluster-wide operation changed, ring by ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementDiff {
    pub default: Option<RingDiff>,
    pub pinned: BTreeMap<u8, RingDiff>,
}

impl Placement {
    /// Pin each namespace in `pins` to its subset of `default`'s members.
    pub fn new(
        default: Ring,
        pins: impl IntoIterator<Item = NamespacePlacement>,
    ) -> Result<Placement, PlacementError> {
        let mut placement = Placement {
            default,
            pinned: BTreeMap::new(),
        };
        for pin in pins {
            placement = placement.pin(pin)?;
        }
        Ok(placement)
    }

    /// A copy with one more pinned namespace.
    pub fn pin(&self, pin: NamespacePlacement) -> Result<Placement, PlacementError> {
        let namespace = pin.namespace;
        if self.pinned.contains_key(&namespace) {
            return Err(PlacementError::NamespacePinnedTwice { namespace });
        }
        pin.validate(self.default.members())?;
        let ring = Ring::new(self.default.partition_count(), pin.replicas_n, pin.nodes).map_err(
            |error| PlacementError::Namespace {
                namespace,
                error: Box::new(error),
            },
        )?;
        let mut next = self.clone();
        next.pinned.insert(
            namespace,
            PinnedRing {
                ring,
                r: pin.r,
                w: pin.w,
            },
        );
        Ok(next)
    }

    pub fn default_ring(&self) -> &Ring {
        &self.default
    }

    /// The same placement numbered `version` (the cluster map numbers every change
    /// by its default ring's version, pinned-namespace changes included).
    pub fn numbered(mut self, version: u64) -> Placement {
        self.default.version = version;
        self
    }

    /// The ring placing `namespace`'s keys: its pinned ring, else the default.
    pub fn ring_for(&self, namespace: u8) -> &Ring {
        self.pinned
            .get(&namespace)
            .map_or(&self.default, |pin| &pin.ring)
    }

    /// The pinned ring and quorums of `namespace`, if it is pinned (a hash
    /// fields namespace follows its database's pin).
    pub fn pin_for(&self, namespace: u8) -> Option<&PinnedRing> {
        self.pinned.get(&crate::fields::database_of(namespace))
    }

    /// Whether pinned `namespace`'s ring places every partition as the default
    /// ring does: the first unpin step ran, and the next one drops the pin.
    pub fn unpinning(&self, namespace: u8) -> bool {
        self.pinned
            .get(&namespace)
            .is_some_and(|pin| places_alike(&pin.ring, &self.default))
    }

    pub fn pinned(&self) -> impl Iterator<Item = (u8, &PinnedRing)> {
        self.pinned.iter().map(|(namespace, pin)| (*namespace, pin))
    }

    /// Add `node` to the cluster (the default ring only; pinned subsets change only
    /// by [`Placement::join_pinned`]).
    pub fn join(&self, node: NodeId) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, diff) = self.default.join(node)?;
        let next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        Ok((
            next,
            PlacementDiff {
                default: Some(diff),
                pinned: BTreeMap::new(),
            },
        ))
    }

    /// Remove `node` from the cluster and from every pinned namespace holding it.
    /// Refused if any of those rings would keep fewer members than its `n`.
    pub fn leave(&self, node: NodeId) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, default_diff) = self.default.leave(node)?;
        let mut next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        let mut pinned = BTreeMap::new();
        for (namespace, pin) in &self.pinned {
            if pin.ring.is_member(node) {
                let (ring, diff) =
                    pin.ring
                        .leave(node)
                        .map_err(|error| PlacementError::Namespace {
                            namespace: *namespace,
                            error: Box::new(error),
                        })?;
                next.pinned.insert(*namespace, PinnedRing { ring, ..*pin });
                pinned.insert(*namespace, diff);
            }
        }
        Ok((
            next,
            PlacementDiff {
                default: Some(default_diff),
                pinned,
            },
        ))
    }

    /// Put `new` in `old`'s places in the default ring and every pinned ring.
    pub fn replace(
        &self,
        old: NodeId,
        new: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (default, default_diff) = self.default.replace(old, new)?;
        let mut next = Placement {
            default,
            pinned: self.pinned.clone(),
        };
        let mut pinned = BTreeMap::new();
        for (namespace, pin) in &self.pinned {
            if pin.ring.is_member(old) {
                let (ring, diff) =
                    pin.ring
                        .replace(old, new)
                        .map_err(|error| PlacementError::Namespace {
                            namespace: *namespace,
                            error: Box::new(error),
                        })?;
                next.pinned.insert(*namespace, PinnedRing { ring, ..*pin });
                pinned.insert(*namespace, diff);
            }
        }
        Ok((
            next,
            PlacementDiff {
                default: Some(default_diff),
                pinned,
            },
        ))
    }

    /// This placement with pinned `namespace`'s ring changed as `changed`
    /// says (a refusal is the namespace's).
    fn repinned(
        &self,
        namespace: u8,
        pin: &PinnedRing,
        changed: Result<(Ring, RingDiff), PlacementError>,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let (ring, diff) = changed.map_err(|error| PlacementError::Namespace {
            namespace,
            error: Box::new(error),
        })?;
        let mut next = self.clone();
        next.pinned.insert(namespace, PinnedRing { ring, ..*pin });
        Ok((
            next,
            PlacementDiff {
                default: None,
                pinned: BTreeMap::from([(namespace, diff)]),
            },
        ))
    }

    /// Add cluster member `node` to pinned `namespace`'s subset.
    pub fn join_pinned(
        &self,
        namespace: u8,
        node: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let Some(pin) = self.pinned.get(&namespace) else {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        };
        if !self.default.is_member(node) {
            return Err(PlacementError::NamespaceNodeNotMember { namespace, node });
        }
        self.repinned(namespace, pin, pin.ring.join(node))
    }

    /// One step of unpinning `namespace`, whose keys go back to the default ring.
    /// While its pinned ring places them differently from the default ring, the
    /// step makes that ring a copy of the default one (quorums `r`, `w`): a pin
    /// change like any other, whose handoffs move the keys onto the default
    /// ring's owners. Once the two place every partition alike, the step drops
    /// the pin, which moves nothing ([`Placement::unpinning`] tells the two
    /// apart).
    pub fn unpin(&self, namespace: u8, r: u8, w: u8) -> Result<Placement, PlacementError> {
        if !self.pinned.contains_key(&namespace) {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        }
        let mut next = self.clone();
        // Planted bug: the first step already drops the pin, so nothing hands the
        // namespace's keys to the default ring's owners.
        if self.unpinning(namespace) || cfg!(feature = "bug-unpin-skips-handoff") {
            next.pinned.remove(&namespace);
            return Ok(next);
        }
        NamespacePlacement {
            namespace,
            nodes: self.default.members().clone(),
            replicas_n: self.default.replicas_n(),
            r,
            w,
        }
        .validate(self.default.members())?;
        next.pinned.insert(
            namespace,
            PinnedRing {
                ring: self.default.clone(),
                r,
                w,
            },
        );
        Ok(next)
    }

    /// Remove `node` from pinned `namespace`'s subset (it stays a cluster member).
    pub fn leave_pinned(
        &self,
        namespace: u8,
        node: NodeId,
    ) -> Result<(Placement, PlacementDiff), PlacementError> {
        let Some(pin) = self.pinned.get(&namespace) else {
            return Err(PlacementError::NamespaceNotPinned { namespace });
        };
        self.repinned(namespace, pin, pin.ring.leave(node))
    }
}

/// Whether two rings give every partition the same preference list.
pub(super) fn places_alike(a: &Ring, b: &Ring) -> bool {
    a.partition_count() == b.partition_count()
        && (0..a.partition_count()).all(|p| a.preference_list(p) == b.preference_list(p))
}

/// Whether `acks` replies meet a quorum of `needed` (`r` or `w`).
pub fn quorum_met(acks: usize, needed: u8) -> bool {
    acks >= usize::from(needed)
}
