//! A cluster's counters through real stores: three nodes' stores count
//! (`Modify::CountBy`, and `CountByFloat` by halves, exact in binary) and exchange their copies by replica merges in any
//! order, any number of times; once every copy met every other, each store
//! reads the sum of every increment, through `SiblingSet::string_value`, the
//! `get_winner` fast path, and after a reopen (records round-trip).

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::Deadline;
use shoal_engine::{Modify, ModifyError, Store, StoreOptions, WriteError, WriteOp};

const KEY: &[u8] = b"hits";

fn count_by(by: i64) -> WriteOp {
    let mut op = WriteOp::modify(0, Bytes::from_static(KEY), Modify::CountBy(by));
    op.deadline = Deadline::Keep;
    op
}

fn count_by_float(by: f64) -> WriteOp {
    let mut op = WriteOp::modify(0, Bytes::from_static(KEY), Modify::CountByFloat(by));
    op.deadline = Deadline::Keep;
    op
}

fn stores() -> (Vec<MemDir>, Vec<Store>) {
    let dirs: Vec<MemDir> = (0..3).map(|_| MemDir::new()).collect();
    let stores = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let options = StoreOptions {
                node_id: i as u32 + 1,
                ..small_options()
            };
            open(dir, options)
        })
        .collect();
    (dirs, stores)
}

/// Merge node `from`'s copy into node `to`'s, as a replica write does.
fn gossip(stores: &mut [Store], from: usize, to: usize) {
    let Some(set) = stores[from].get(0, KEY).expect("read") else {
        return;
    };
    let merge = WriteOp::merge(0, Bytes::from_static(KEY), set);
    commit(&mut stores[to], &[merge])[0].clone().expect("merge");
}

fn total_of(store: &Store) -> Option<i64> {
    total_f64_of(store).map(|t| t as i64)
}

/// The total as GET reads it (a whole float reads as an integer).
fn total_f64_of(store: &Store) -> Option<f64> {
    let set = store.get(0, KEY).expect("read")?;
    let text = set.string_value()?;
    let fast = store
        .get_winner(0, KEY, 1_000)
        .expect("read")
        .map(|(v, _)| v);
    assert_eq!(
        fast,
        Some(text.clone()),
        "the fast path reads the merge too"
    );
    Some(std::str::from_utf8(&text).unwrap().parse().unwrap())
}

#[derive(Clone, Debug)]
enum Step {
    /// INCRBY `by`; with `half`, INCRBYFLOAT `by / 2` (exact in binary).
    Add {
        node: usize,
        by: i64,
        half: bool,
    },
    Gossip {
        from: usize,
        to: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, -50..50i64, prop::bool::weighted(0.2)).prop_map(|(node, by, half)| Step::Add {
            node,
            by,
            half
        }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Gossip { from, to }),
    ]
}

/// One step's add at `store`: the amount it added (0 when INCR refused a
/// total that is not whole, as Redis does).
fn add(store: &mut Store, by: i64, half: bool) -> f64 {
    let before = total_f64_of(store).unwrap_or(0.0);
    let (op, delta) = if half {
        (count_by_float(by as f64 / 2.0), by as f64 / 2.0)
    } else {
        (count_by(by), by as f64)
    };
    match commit(store, &[op])[0].clone() {
        Ok(outcome) => {
            let told: f64 = std::str::from_utf8(&outcome.minted_value().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                told,
                before + delta,
                "an add answers the total it sees plus itself"
            );
            delta
        }
        Err(WriteError::Modify(ModifyError::NotAnInteger)) => {
            assert!(!half && before.fract() != 0.0, "INCR refused {before}");
            0.0
        }
        Err(e) => panic!("count: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_increment_counts_once_whatever_the_gossip(steps in prop::collection::vec(step(), 1..40)) {
        let (dirs, mut stores) = stores();
        let mut sum = 0.0;
        for s in &steps {
            match *s {
                Step::Add { node, by, half } => sum += add(&mut stores[node], by, half),
                Step::Gossip { from, to } if from != to => gossip(&mut stores, from, to),
                Step::Gossip { .. } => {}
            }
        }
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    if from != to {
                        gossip(&mut stores, from, to);
                    }
                }
            }
        }
        for store in &stores {
            prop_assert_eq!(total_f64_of(store).unwrap_or(0.0), sum);
        }
        drop(stores);
        for (i, dir) in dirs.iter().enumerate() {
            let options = StoreOptions { node_id: i as u32 + 1, ..small_options() };
            let reopened = open(dir, options);
            prop_assert_eq!(total_f64_of(&reopened).unwrap_or(0.0), sum, "after a reopen");
        }
    }
}

#[test]
fn a_count_refuses_text_and_overflow_and_writes_nothing() {
    let (_dirs, mut stores) = stores();
    put(&mut stores[0], "hits", "abc");
    let refused = commit(&mut stores[0], &[count_by(1)])[0].clone();
    assert_eq!(
        refused.map(|_| ()),
        Err(WriteError::Modify(ModifyError::NotAnInteger))
    );
    put(&mut stores[1], "hits", &(i64::MAX - 1).to_string());
    commit(&mut stores[1], &[count_by(1)])[0]
        .clone()
        .expect("to the last value");
    let refused = commit(&mut stores[1], &[count_by(1)])[0].clone();
    assert_eq!(
        refused.map(|_| ()),
        Err(WriteError::Modify(ModifyError::Overflow))
    );
    assert_eq!(total_of(&stores[1]), Some(i64::MAX));
    assert_eq!(value_of(&stores[0], "hits").as_deref(), Some("abc"));
}

#[test]
fn a_deadline_keeps_the_count_and_concurrent_counts_still_merge() {
    let (_dirs, mut stores) = stores();
    commit(&mut stores[0], &[count_by(5)])[0]
        .clone()
        .expect("count");
    gossip(&mut stores, 0, 1);
    // EXPIRE on node 1, which counts on (keeping the deadline), while node
    // 2 counts too, unaware of either.
    let mut expire = WriteOp::modify(0, Bytes::from_static(KEY), Modify::Touch);
    expire.deadline = Deadline::At(1_000_000);
    let touched = commit(&mut stores[0], &[expire])[0]
        .clone()
        .expect("expire");
    assert_eq!(touched.minted_value(), Some(Bytes::from("5")));
    let counted = commit(&mut stores[0], &[count_by(2)])[0]
        .clone()
        .expect("count");
    let minted = counted.dot.unwrap();
    let sibling = counted
        .set
        .siblings
        .iter()
        .find(|s| s.dot == minted)
        .unwrap();
    assert_eq!(
        sibling.deadline_ms,
        Some(1_000_000),
        "INCR keeps the deadline"
    );
    commit(&mut stores[1], &[count_by(3)])[0]
        .clone()
        .expect("count");
    gossip(&mut stores, 0, 1);
    gossip(&mut stores, 1, 0);
    for store in &stores[..2] {
        assert_eq!(total_of(store), Some(10));
        let set = store.get(0, KEY).unwrap().unwrap();
        assert_eq!(set.deadline_ms(), None, "node 2's count has no deadline");
    }
}
