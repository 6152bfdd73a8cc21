//! Whether a node serves a peer's request, decided from what the node knows
//! (its ring version, whether that ring is settled, whether it is restoring,
//! its wall clock) and what the request says. Pure functions: the driver
//! (`shoal-net`'s `cluster/serve.rs`) calls each at the point of its sequence
//! where the answer is due (after the waits it does first: the gate, the
//! start-up check) and acts on the verdict.
//!
//! Must not touch: the store, sockets, clocks (time comes in as `now_wall_ms`).

use crate::cluster::refusal::{Refusal, RemoteError};
use crate::cluster::wire::ITEMS_PER_REQUEST_MAX;

/// A request's list is within [`ITEMS_PER_REQUEST_MAX`].
pub fn items_within_limit(items: usize) -> Result<(), RemoteError> {
    if items > ITEMS_PER_REQUEST_MAX {
        return Err(RemoteError::new(
            Refusal::Invalid,
            format!("{items} items in one peer request (limit {ITEMS_PER_REQUEST_MAX})"),
        ));
    }
    Ok(())
}

/// A replica write, proxied write or forget sent at `sent_wall_ms` (the
/// sender's clock) is still wanted at `now_wall_ms` (ours): its sender waits
/// at most `age_max_ms`, and the marker agreement counts on late copies being
/// refused ([`crate::cluster::tombstones`]).
pub fn fresh_enough(
    sent_wall_ms: u64,
    now_wall_ms: u64,
    age_max_ms: u64,
) -> Result<(), RemoteError> {
    let age_ms = now_wall_ms.saturating_sub(sent_wall_ms);
    if age_ms > age_max_ms {
        return Err(RemoteError::new(
            Refusal::TooOld,
            format!("sent {age_ms} ms ago (limit {age_max_ms} ms)"),
        ));
    }
    Ok(())
}

/// What a replica write's ring version asks of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingCheck {
    /// Same ring: merge it.
    Serve,
    /// The sender's ring is newer: learn it from the sender first (adopting it
    /// may drop old copies, which must not take this write with them), then
    /// ask again with `learned`.
    LearnFirst,
}

/// A replica write sent under ring `theirs`, at a node with ring `mine`;
/// `learned` once the node has tried to learn the sender's ring.
pub fn replica_ring(theirs: u64, mine: u64, learned: bool) -> Result<RingCheck, RemoteError> {
    if theirs > mine {
        if !learned {
            return Ok(RingCheck::LearnFirst);
        }
        return Err(RemoteError::new(
            Refusal::TryAgain,
            format!(
                "sent under ring version {theirs}; this node could not learn it yet and has {mine}"
            ),
        ));
    }
    if theirs < mine {
        return Err(RemoteError::new(
            Refusal::StaleRing,
            format!("sent under ring version {theirs}; this node has {mine}"),
        ));
    }
    Ok(RingCheck::Serve)
}

/// A read of local copies (a quorum read's, anti-entropy's, a fallback's
/// hints) asked under ring `theirs`, at a node with ring `mine`; `learned` once
/// the node has tried to learn the asker's ring. A node behind the asker may
/// still hold copies that adopting the newer ring drops (`drop_residue`: it
/// lost their partitions while down, and their delete markers were collected
/// without it), so it learns the ring first and refuses if it cannot: served,
/// they would be merged and repaired onto the owners (cluster seed
/// 20801026508). An asker behind this node is served: what a node holds under
/// a newer ring is no residue.
pub fn copy_read(theirs: u64, mine: u64, learned: bool) -> Result<RingCheck, RemoteError> {
    if theirs <= mine {
        return Ok(RingCheck::Serve);
    }
    if !learned {
        return Ok(RingCheck::LearnFirst);
    }
    Err(RemoteError::new(
        Refusal::TryAgain,
        format!(
            "asked under ring version {theirs}; this node could not learn it yet and has {mine}"
        ),
    ))
}

/// A handoff scan for ring `theirs` over slots `first..=last` (of
/// `slot_count`), at a node with ring `mine`: it must know that ring, the
/// range must be real, and a node restoring from its replicas is no source
/// (it may lack acknowledged writes; the puller takes another old owner).
pub fn handoff_source(
    theirs: u64,
    mine: u64,
    first: u16,
    last: u16,
    slot_count: u16,
    restoring: bool,
) -> Result<(), RemoteError> {
    if mine < theirs {
        return Err(RemoteError::new(
            Refusal::MapBehind,
            format!("this node has ring version {mine}; the scan is for {theirs}"),
        ));
    }
    if first > last || last >= slot_count {
        return Err(RemoteError::new(Refusal::Invalid, "bad slot range"));
    }
    if restoring {
        return Err(RemoteError::new(
            Refusal::Restoring,
            "this node is restoring its data from its replicas; pull from another old owner",
        ));
    }
    Ok(())
}

/// Whether a node mints a write on a key here: only if it `holds` the key's
/// partition (as an owner, or as a previous owner whose copy stays until the
/// handoff is done) under its ring `mine`. A node that holds no copy may have
/// dropped it when it gave the partition up; a dot minted over the empty copy
/// claims, through the key's version vector, the node's earlier dots there,
/// which the owners still hold as siblings, and a merge would drop them
/// (cluster seed 20802020293, on a build whose committer ran compaction
/// beside its batches: a proxy isolated through two ring changes sent a write
/// to a coordinator that had forgotten its copy). The proxy routed by an
/// older ring: it is told so, learns this node's, and routes again.
pub fn mint_here(holds: bool, mine: u64) -> Result<(), RemoteError> {
    if holds {
        return Ok(());
    }
    Err(RemoteError::new(
        Refusal::StaleRing,
        format!(
            "this node holds no copy of the key's partition under ring version {mine}; nothing was written"
        ),
    ))
}

/// A marker round (verdicts or forgets) runs under ring `theirs`: the node
/// must route by that very ring, with no partition in handoff.
pub fn marker_round(
    theirs: u64,
    mine: u64,
    partitions_in_transition: usize,
) -> Result<(), RemoteError> {
    if mine != theirs || partitions_in_transition > 0 {
        return Err(RemoteError::new(
            Refusal::StaleRing,
            format!(
                "marker collection under ring {theirs}; this node has ring {mine} with {partitions_in_transition} partitions in handoff"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::refusal::Outcome;

    fn refusal<T: std::fmt::Debug>(r: Result<T, RemoteError>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => e.refusal.code().to_string(),
        }
    }

    #[test]
    fn a_replica_write_is_merged_only_under_the_same_ring() {
        // theirs, mine, learned -> verdict
        let table = [
            (3, 3, false, "Serve"),
            (3, 3, true, "Serve"),
            (4, 3, false, "LearnFirst"),
            (4, 3, true, "TRYAGAIN"),
            (2, 3, false, "STALERING"),
            (2, 3, true, "STALERING"),
        ];
        for (theirs, mine, learned, want) in table {
            let got = refusal(replica_ring(theirs, mine, learned));
            assert_eq!(got, want, "theirs {theirs} mine {mine} learned {learned}");
        }
    }

    #[test]
    fn a_copy_read_is_served_only_by_a_node_that_knows_the_askers_ring() {
        // theirs, mine, learned -> verdict
        let table = [
            (3, 3, false, "Serve"),
            (2, 3, false, "Serve"),
            (4, 3, false, "LearnFirst"),
            (4, 3, true, "TRYAGAIN"),
            (4, 4, true, "Serve"),
        ];
        for (theirs, mine, learned, want) in table {
            let got = refusal(copy_read(theirs, mine, learned));
            assert_eq!(got, want, "theirs {theirs} mine {mine} learned {learned}");
        }
    }

    #[test]
    fn a_handoff_scan_needs_the_ring_a_real_range_and_a_whole_source() {
        // theirs, mine, first, last, restoring -> verdict
        let table = [
            (3, 3, 0, 99, false, "()"),
            (3, 4, 0, 99, false, "()"),
            (4, 3, 0, 99, false, "MAPBEHIND"),
            (3, 3, 9, 8, false, "ERR"),
            (3, 3, 0, 100, false, "ERR"),
            (3, 3, 0, 99, true, "RESTORING"),
            (4, 3, 0, 99, true, "MAPBEHIND"),
        ];
        for (theirs, mine, first, last, restoring, want) in table {
            let got = refusal(handoff_source(theirs, mine, first, last, 100, restoring));
            assert_eq!(
                got, want,
                "{theirs} {mine} {first}..={last} restoring {restoring}"
            );
        }
    }

    #[test]
    fn a_marker_round_runs_only_on_the_same_settled_ring() {
        assert_eq!(refusal(marker_round(5, 5, 0)), "()");
        assert_eq!(refusal(marker_round(5, 5, 1)), "STALERING");
        assert_eq!(refusal(marker_round(5, 6, 0)), "STALERING");
        assert_eq!(refusal(marker_round(6, 5, 0)), "STALERING");
    }

    #[test]
    fn a_write_is_minted_only_where_its_partition_is_held() {
        assert_eq!(refusal(mint_here(true, 4)), "()");
        let refused = mint_here(false, 4).unwrap_err();
        assert_eq!(refused.refusal, Refusal::StaleRing);
        assert_eq!(refused.refusal.outcome(), Outcome::NotMade);
        assert!(refused.message.contains("ring version 4"), "{refused}");
    }

    #[test]
    fn late_requests_and_long_lists_are_refused() {
        assert_eq!(refusal(fresh_enough(1_000, 1_500, 500)), "()");
        assert_eq!(refusal(fresh_enough(1_000, 1_501, 500)), "TOOOLD");
        // A sender whose clock is ahead is never too old.
        assert_eq!(refusal(fresh_enough(9_000, 1_000, 500)), "()");
        assert_eq!(refusal(items_within_limit(ITEMS_PER_REQUEST_MAX)), "()");
        assert_eq!(
            refusal(items_within_limit(ITEMS_PER_REQUEST_MAX + 1)),
            "ERR"
        );
    }
}
