//! The order in which group-committed batches become visible, sans-IO. The
//! committer (`shoal-net`'s `storage`) writes a batch, starts its sync, and
//! may start more before the first sync returns (pipelined group commit);
//! syncs finish in any order. Two rules decide what happens to each batch:
//!
//! - publish order: a batch is published (made visible and answered) only
//!   after its own sync succeeded and every batch started before it was
//!   published or failed: a reader never sees a later write without an
//!   earlier one, and an acknowledgement never precedes a durable write;
//! - poison: once a sync failed, every batch not yet published fails too
//!   (they were built on the failed one), and so does every batch after,
//!   until the store is reopened. A failed sync is never retried.
//!
//! [`CommitOrder`] holds that state; the committer feeds it starts and sync
//! results and acts on the [`Ready`] batches it hands back, in order. Its
//! interleavings are model-checked with loom (`tests/loom_commit_order.rs`).
//!
//! Must not touch: the disk, tasks, clocks.

use std::collections::{BTreeMap, VecDeque};

/// What to do with the oldest batch whose turn has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<E> {
    /// Its sync succeeded and nothing before it failed: publish it.
    Publish,
    /// Its own sync failed, the first to: fail its writes and poison the store.
    Poison(E),
    /// An earlier sync failed (this error): fail its writes.
    FailAfter(E),
}

impl<E> Verdict<E> {
    /// The failed sync behind a failing verdict.
    pub fn failure(&self) -> Option<&E> {
        match self {
            Verdict::Publish => None,
            Verdict::Poison(e) | Verdict::FailAfter(e) => Some(e),
        }
    }
}

/// A batch whose turn has come: what the committer keeps for it (its writers'
/// answers), the batch, and the verdict.
#[derive(Debug)]
pub struct Ready<P, B, E> {
    pub seq: u64,
    pub payload: P,
    pub batch: B,
    pub verdict: Verdict<E>,
}

/// Batches started and not yet handed back, in start order.
#[derive(Debug)]
pub struct CommitOrder<P, B, E> {
    next_seq: u64,
    started: VecDeque<(u64, P)>,
    synced: BTreeMap<u64, (B, Result<(), E>)>,
    poisoned_by: Option<E>,
}

impl<P, B, E> Default for CommitOrder<P, B, E> {
    fn default() -> Self {
        CommitOrder {
            next_seq: 0,
            started: VecDeque::new(),
            synced: BTreeMap::new(),
            poisoned_by: None,
        }
    }
}

impl<P, B, E: Clone> CommitOrder<P, B, E> {
    /// A batch was written and its sync started: its sequence number.
    pub fn start(&mut self, payload: P) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.started.push_back((seq, payload));
        seq
    }

    /// Batch `seq`'s sync returned `result` (or it needed none: `Ok`).
    pub fn synced(&mut self, seq: u64, batch: B, result: Result<(), E>) {
        assert!(
            self.started.iter().any(|(s, _)| *s == seq),
            "sync result for batch {seq}, which is not in flight"
        );
        let earlier = self.synced.insert(seq, (batch, result));
        assert!(earlier.is_none(), "two sync results for batch {seq}");
    }

    /// The oldest batch, once its sync returned; `None` while it is still
    /// syncing (later batches wait behind it, whatever their own syncs said).
    pub fn next_ready(&mut self) -> Option<Ready<P, B, E>> {
        let (seq, payload, batch, result) = if cfg!(feature = "bug-publish-out-of-order") {
            // Planted bug: whichever batch synced first goes first.
            let (&seq, _) = self.synced.iter().next()?;
            let (batch, result) = self.synced.remove(&seq).expect("just seen");
            let at = self.started.iter().position(|(s, _)| *s == seq)?;
            let (seq, payload) = self.started.remove(at).expect("position found");
            (seq, payload, batch, result)
        } else {
            let (seq, _) = self.started.front()?;
            let (batch, result) = self.synced.remove(seq)?;
            let (seq, payload) = self.started.pop_front().expect("front exists");
            (seq, payload, batch, result)
        };
        let verdict = match (&self.poisoned_by, result) {
            (Some(earlier), _) => Verdict::FailAfter(earlier.clone()),
            (None, Err(e)) => {
                self.poisoned_by = Some(e.clone());
                Verdict::Poison(e)
            }
            (None, Ok(())) => Verdict::Publish,
        };
        Some(Ready {
            seq,
            payload,
            batch,
            verdict,
        })
    }

    /// Batches started and not yet handed back.
    pub fn in_flight(&self) -> usize {
        self.started.len()
    }

    /// The failed sync that poisoned the store, if one did.
    pub fn poisoned_by(&self) -> Option<&E> {
        self.poisoned_by.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Start `n` batches, deliver their sync results in `order` (a permutation
    /// of 0..n), `failing` the ones listed, draining after each delivery; the
    /// verdicts in the order they were handed back.
    fn run(n: u64, order: &[u64], failing: &[u64]) -> Vec<(u64, Verdict<u64>)> {
        let mut commits: CommitOrder<u64, (), u64> = CommitOrder::default();
        for i in 0..n {
            assert_eq!(commits.start(i), i);
        }
        let mut out = Vec::new();
        for seq in order {
            let result = if failing.contains(seq) {
                Err(*seq)
            } else {
                Ok(())
            };
            commits.synced(*seq, (), result);
            while let Some(ready) = commits.next_ready() {
                assert_eq!(ready.payload, ready.seq);
                out.push((ready.seq, ready.verdict));
            }
        }
        assert_eq!(commits.in_flight(), 0);
        out
    }

    #[test]
    fn a_later_sync_waits_for_the_earlier_one() {
        let mut commits: CommitOrder<(), &str, ()> = CommitOrder::default();
        let first = commits.start(());
        let second = commits.start(());
        commits.synced(second, "b", Ok(()));
        assert!(
            commits.next_ready().is_none(),
            "published past an unsynced batch"
        );
        commits.synced(first, "a", Ok(()));
        assert_eq!(commits.next_ready().map(|r| r.batch), Some("a"));
        assert_eq!(commits.next_ready().map(|r| r.batch), Some("b"));
        assert!(commits.next_ready().is_none());
    }

    #[test]
    fn a_failed_sync_fails_every_batch_after_it() {
        let out = run(4, &[3, 1, 0, 2], &[1]);
        assert_eq!(
            out,
            vec![
                (0, Verdict::Publish),
                (1, Verdict::Poison(1)),
                (2, Verdict::FailAfter(1)),
                (3, Verdict::FailAfter(1)),
            ]
        );
    }

    proptest! {
        /// Whatever order syncs finish in and whichever fail: batches are
        /// handed back in start order; each before the first failure is
        /// published; the first failure and everything after fail with it.
        #[test]
        fn any_completion_order_publishes_in_start_order(
            order in Just((0..6u64).collect::<Vec<_>>()).prop_shuffle(),
            failing in proptest::collection::vec(0..6u64, 0..3),
        ) {
            let out = run(6, &order, &failing);
            let seqs: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
            prop_assert_eq!(seqs, (0..6).collect::<Vec<_>>());
            let first_failure = (0..6).find(|s| failing.contains(s));
            for (seq, verdict) in out {
                match first_failure {
                    Some(f) if seq == f => prop_assert_eq!(verdict, Verdict::Poison(f)),
                    Some(f) if seq > f => prop_assert_eq!(verdict, Verdict::FailAfter(f)),
                    _ => prop_assert_eq!(verdict, Verdict::Publish),
                }
            }
        }
    }
}
