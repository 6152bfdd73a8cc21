//! The committer's concurrency, model-checked with loom: every interleaving
//! of two sync workers (each syncing one batch on its own thread, as
//! `run_blocking` does, and handing the result back through a queue), the
//! committer draining `CommitOrder`, and a reader watching what is published.
//! In each one:
//!
//! - no batch is published before its own sync returned Ok (an
//!   acknowledgement never precedes a durable write);
//! - a reader never sees batch 1 published while batch 0 is not yet decided
//!   (publish order);
//! - after a failed sync, no later batch is published (poison), whatever
//!   order the syncs finished in.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p
//! shoal-engine --release --test loom_commit_order` (ci/test does).
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shoal_engine::commit_order::{CommitOrder, Verdict};
use std::collections::VecDeque;

/// A batch's state as readers see it.
const UNDECIDED: u8 = 0;
const PUBLISHED: u8 = 1;
const FAILED: u8 = 2;

struct World {
    /// Set by a sync worker once its batch's sync returned Ok.
    durable: [AtomicBool; 2],
    /// What the committer decided for each batch.
    state: [AtomicU8; 2],
    /// Sync results on their way to the committer: (seq, ok).
    done: Mutex<VecDeque<(u64, bool)>>,
    arrived: Condvar,
}

/// Two batches started in order; batch `i`'s sync succeeds unless `fails[i]`.
/// Returns the verdicts the committer acted on, in the order it did.
fn run(fails: [bool; 2]) -> Vec<(u64, Verdict<u64>)> {
    let world = Arc::new(World {
        durable: [AtomicBool::new(false), AtomicBool::new(false)],
        state: [AtomicU8::new(UNDECIDED), AtomicU8::new(UNDECIDED)],
        done: Mutex::new(VecDeque::new()),
        arrived: Condvar::new(),
    });
    let mut order: CommitOrder<(), (), u64> = CommitOrder::default();
    let seqs = [order.start(()), order.start(())];
    let workers: Vec<_> = seqs
        .into_iter()
        .map(|seq| {
            let world = world.clone();
            thread::spawn(move || {
                let ok = !fails[seq as usize];
                if ok {
                    world.durable[seq as usize].store(true, Ordering::Release);
                }
                world.done.lock().unwrap().push_back((seq, ok));
                world.arrived.notify_one();
            })
        })
        .collect();
    let reader = {
        let world = world.clone();
        thread::spawn(move || {
            let second = world.state[1].load(Ordering::Acquire);
            let first = world.state[0].load(Ordering::Acquire);
            assert!(
                second != PUBLISHED || first != UNDECIDED,
                "batch 1 visible before batch 0 was decided"
            );
        })
    };
    let mut verdicts = Vec::new();
    while order.in_flight() > 0 {
        let (seq, ok) = {
            let mut done = world.done.lock().unwrap();
            loop {
                if let Some(next) = done.pop_front() {
                    break next;
                }
                done = world.arrived.wait(done).unwrap();
            }
        };
        order.synced(seq, (), if ok { Ok(()) } else { Err(seq) });
        while let Some(ready) = order.next_ready() {
            let i = ready.seq as usize;
            let state = match &ready.verdict {
                Verdict::Publish => {
                    assert!(
                        world.durable[i].load(Ordering::Acquire),
                        "batch {i} published before its sync returned"
                    );
                    PUBLISHED
                }
                _ => FAILED,
            };
            world.state[i].store(state, Ordering::Release);
            verdicts.push((ready.seq, ready.verdict));
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }
    reader.join().unwrap();
    verdicts
}

/// Every interleaving with up to three preemptions (loom's usual bound: bugs
/// of this kind need one or two).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn both_syncs_succeed_and_publish_in_order() {
    model(|| {
        let verdicts = run([false, false]);
        assert_eq!(verdicts, [(0, Verdict::Publish), (1, Verdict::Publish)]);
    });
}

#[test]
fn a_failed_first_sync_fails_the_second_batch_too() {
    model(|| {
        let verdicts = run([true, false]);
        assert_eq!(
            verdicts,
            [(0, Verdict::Poison(0)), (1, Verdict::FailAfter(0))]
        );
    });
}

#[test]
fn a_failed_second_sync_leaves_the_first_published() {
    model(|| {
        let verdicts = run([false, true]);
        assert_eq!(verdicts, [(0, Verdict::Publish), (1, Verdict::Poison(1))]);
    });
}
