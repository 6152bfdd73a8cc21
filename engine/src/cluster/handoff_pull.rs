//! One incoming owner's pull of one partition during a ring change, decided
//! sans-IO: which old owners it asks and in what order, how many must answer
//! whole, whether its own copy counts as one of them, and when the partition
//! is done. The driver (`net/src/cluster/handoff.rs`) only scans the sources
//! it is given and reports each outcome.
//!
//! The count: every write acknowledged under the old placement is on
//! `write_quorum` of its `n` old owners, so any `n - w + 1` of them together
//! hold it ([`ClusterMap::sources_needed`]). An old owner that stays (a pin's)
//! is one of them when its own copy is whole: not while it is restoring from
//! its replicas, nor when a record of the partition does not read back. Either
//! would leave the partition one copy short of what the count assumed, and the
//! owners that leave would drop the only copy left (cluster seed 20982007487).
//! The read-back of every record is asked for last ([`Step::CheckOwnCopy`]),
//! once the other sources have answered: a pull retried every round while a
//! source is unreachable does not re-read the partition each time.

use super::map::ClusterMap;
use crate::placement::PartitionId;
use crate::version::NodeId;
use std::fmt;

/// What this node's own copy of the partition is worth to the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnCopy {
    /// Not an old owner: it had no copy to count.
    NotAnOldOwner,
    /// An old owner not restoring, its records not read back yet: counted
    /// while the others are pulled, checked ([`Step::CheckOwnCopy`]) before
    /// the pull may end on it, so the scan of every record costs nothing while
    /// the other sources cannot be reached.
    Unchecked,
    /// An old owner whose every record reads back: one source.
    Whole,
    /// An old owner restoring its data from its replicas: not a source.
    Restoring,
    /// An old owner with a record that does not read back: not a source.
    Unreadable,
}

impl OwnCopy {
    /// The own copy's standing before any scan.
    pub fn of(was_owner: bool, restoring: bool) -> OwnCopy {
        match (was_owner, restoring) {
            (false, _) => OwnCopy::NotAnOldOwner,
            (true, true) => OwnCopy::Restoring,
            (true, false) => OwnCopy::Unchecked,
        }
    }

    fn counts(self) -> bool {
        matches!(self, OwnCopy::Unchecked | OwnCopy::Whole)
    }
}

/// What the driver does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Scan this old owner's copy and merge it here, then report it
    /// ([`PartitionPull::scanned`]).
    Scan(NodeId),
    /// Read back every record of this node's own copy, then report it
    /// ([`PartitionPull::own_checked`]).
    CheckOwnCopy,
    /// Enough answered whole, or no source is left: see [`PartitionPull::end`].
    End,
}

/// A pull that ran out of sources before enough answered whole.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullShort {
    pub pulled: usize,
    pub needed: usize,
    /// Each source that failed, with why.
    pub failures: Vec<(NodeId, String)>,
}

impl fmt::Display for PullShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pulled from {} of the {} old owners needed",
            self.pulled, self.needed
        )?;
        for (i, (node, why)) in self.failures.iter().enumerate() {
            write!(f, "{}node {node}: {why}", if i == 0 { " (" } else { "; " })?;
        }
        if !self.failures.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for PullShort {}

/// One partition's pull: sources in order, each asked until enough answered.
#[derive(Clone, Debug)]
pub struct PartitionPull {
    /// Old owners still to ask, next first.
    sources: Vec<NodeId>,
    /// Old owners that must answer whole, this node's own copy not counted.
    needed_in_all: usize,
    own: OwnCopy,
    pulled: usize,
    failures: Vec<(NodeId, String)>,
}

impl PartitionPull {
    /// The pull of `partition` by `me` under `map` (in transition), with
    /// `old_write_quorum` the w the old placement acknowledged writes with.
    /// Live sources are asked first (`live`), in the map's order otherwise.
    pub fn new(
        map: &ClusterMap,
        partition: PartitionId,
        me: NodeId,
        old_write_quorum: u8,
        own: OwnCopy,
        live: impl Fn(NodeId) -> bool,
    ) -> PartitionPull {
        let mut sources = map.handoff_sources(partition, me);
        sources.sort_by_key(|n| !live(*n));
        PartitionPull {
            sources,
            needed_in_all: map.sources_needed(partition, old_write_quorum),
            own,
            pulled: 0,
            failures: Vec::new(),
        }
    }

    /// How many other old owners must answer whole, as the own copy stands.
    pub fn needed(&self) -> usize {
        self.needed_in_all
            .saturating_sub(usize::from(self.own.counts()))
    }

    /// What to do next.
    pub fn step(&mut self) -> Step {
        if self.pulled >= self.needed() {
            if self.own == OwnCopy::Unchecked {
                return Step::CheckOwnCopy;
            }
            return Step::End;
        }
        if self.sources.is_empty() {
            return Step::End;
        }
        Step::Scan(self.sources.remove(0))
    }

    /// `source`'s scan ended: merged here whole (`Ok`), or why not.
    pub fn scanned(&mut self, source: NodeId, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.pulled += 1,
            Err(why) => self.failures.push((source, why)),
        }
    }

    /// This node's own copy read back whole, or not (then one more old
    /// owner must answer).
    pub fn own_checked(&mut self, whole: bool) {
        debug_assert_eq!(self.own, OwnCopy::Unchecked);
        self.own = if whole {
            OwnCopy::Whole
        } else {
            OwnCopy::Unreadable
        };
    }

    /// The own copy's standing now.
    pub fn own(&self) -> OwnCopy {
        self.own
    }

    /// Done (the partition may be reported taken), or short.
    pub fn end(self) -> Result<(), PullShort> {
        let needed = self.needed();
        // Never done on a copy of its own that was not read back.
        if self.pulled >= needed && self.own != OwnCopy::Unchecked {
            Ok(())
        } else {
            Err(PullShort {
                pulled: self.pulled,
                needed,
                failures: self.failures,
            })
        }
    }
}
