//! One round of delete-marker collection as a partition's primary runs it
//! (the protocol is [`tombstones`]'), decided here: whether the round may run
//! at all, which agreed markers have settled and go now, the conjunction of
//! every member's verdicts, and what the round agrees on. Time, liveness and
//! answers come in as arguments; what to forget and whom to ask go out as
//! data. The driver (`shoal-net`'s `cluster/markers.rs`) reads the store,
//! asks, and forgets.
//!
//! Must not touch: sockets, tasks, clocks, the store.

use crate::cluster::tombstones::{self, Agreed, MarkerItem, PROPOSALS_PER_ROUND_MAX};
use crate::version::NodeId;

/// What the driver knows as a round starts.
#[derive(Clone, Debug)]
pub struct RoundFacts {
    pub me: NodeId,
    /// The ring's members, in ring order.
    pub members: Vec<NodeId>,
    pub ring_version: u64,
    /// Some partition is being handed over (markers wait for a settled ring).
    pub in_transition: bool,
    /// This node has joined its ring and serves.
    pub ready: bool,
    /// Members the failure detector counts as down.
    pub down: Vec<NodeId>,
    /// The largest clock skew measured to another member, the estimate's
    /// error included (`None`: some member's is not measured yet).
    pub skew_max_ms: Option<u64>,
    pub request_timeout_ms: u64,
    pub replica_write_age_max_ms: u64,
    pub now_ms: u64,
}

/// How a round starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundStart {
    /// Not now: the ring is not settled, this node is not ready, a member is
    /// down, or some member's clock skew is unmeasured.
    Skip,
    /// Forget `due` on every member (this node last), then propose.
    Run { due: Vec<MarkerItem> },
}

/// Start a round: agreements made under another ring are dropped whatever
/// follows; then, when the round may run, the agreements that have waited
/// out the settle delay (widened by the clock skew) are taken to be
/// forgotten. `forget_without_agreement` is the planted bug of that name: no
/// wait, no need for every member.
pub fn start(
    agreed: &mut Agreed,
    facts: &RoundFacts,
    forget_without_agreement: bool,
) -> RoundStart {
    agreed.keep_ring(facts.ring_version);
    if facts.in_transition || !facts.ready {
        return RoundStart::Skip;
    }
    let member_down = facts
        .members
        .iter()
        .any(|m| *m != facts.me && facts.down.contains(m));
    if member_down && !forget_without_agreement {
        return RoundStart::Skip;
    }
    let settle_ms = if forget_without_agreement {
        0
    } else {
        let Some(skew_max_ms) = facts.skew_max_ms else {
            return RoundStart::Skip;
        };
        tombstones::settle_with_skew_ms(
            facts.request_timeout_ms,
            facts.replica_write_age_max_ms,
            skew_max_ms,
        )
    };
    let due = agreed.take_due(facts.now_ms, settle_ms, PROPOSALS_PER_ROUND_MAX);
    RoundStart::Run { due }
}

/// The verdicts on one round's proposals: this node's, then each other
/// member's in ring order; a marker is agreed only when every member says
/// yes, and a member that does not answer as asked ends the round.
#[derive(Debug)]
pub struct Verdicts {
    ring_version: u64,
    proposals: Vec<MarkerItem>,
    agreed: Vec<bool>,
    /// Members still to ask, in ring order.
    to_ask: Vec<NodeId>,
}

impl Verdicts {
    /// `local`: this node's verdict on each of `proposals`. With the planted
    /// bug every marker is agreed and nobody is asked.
    pub fn new(
        facts: &RoundFacts,
        proposals: Vec<MarkerItem>,
        local: Vec<bool>,
        forget_without_agreement: bool,
    ) -> Verdicts {
        assert_eq!(local.len(), proposals.len(), "a verdict per proposal");
        let (agreed, to_ask) = if forget_without_agreement {
            (vec![true; proposals.len()], Vec::new())
        } else {
            let others = facts.members.iter().copied().filter(|m| *m != facts.me);
            (local, others.rev().collect())
        };
        Verdicts {
            ring_version: facts.ring_version,
            proposals,
            agreed,
            to_ask,
        }
    }

    pub fn proposals(&self) -> &[MarkerItem] {
        &self.proposals
    }

    /// The next member to ask for its verdicts (`None`: all have answered).
    pub fn next_to_ask(&self) -> Option<NodeId> {
        self.to_ask.last().copied()
    }

    /// `member`'s verdicts (`None`: it did not answer, or not as asked).
    /// False: the round ends here, agreeing nothing.
    pub fn answered(&mut self, member: NodeId, verdicts: Option<Vec<bool>>) -> bool {
        assert_eq!(
            self.to_ask.pop(),
            Some(member),
            "answers come in asking order"
        );
        match verdicts {
            Some(v) if v.len() == self.agreed.len() => {
                self.agreed.iter_mut().zip(v).for_each(|(a, b)| *a &= b);
                true
            }
            _ => {
                self.to_ask.clear();
                self.agreed.iter_mut().for_each(|a| *a = false);
                false
            }
        }
    }

    /// Record what every member agreed on at `now_ms`, unless the ring
    /// changed meanwhile. How many markers were agreed.
    pub fn settle(self, agreed: &mut Agreed, now_ms: u64) -> usize {
        assert!(
            self.to_ask.is_empty(),
            "settled before every member answered"
        );
        if !agreed.ring_version_is(self.ring_version) {
            return 0;
        }
        let mut count = 0;
        for (item, ok) in self.proposals.into_iter().zip(self.agreed) {
            if ok {
                count += 1;
                agreed.insert(item, now_ms);
            }
        }
        count
    }
}
