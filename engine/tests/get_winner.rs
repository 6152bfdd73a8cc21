//! GET's read (`Store::get_winner`, through a borrowed view of the record)
//! answers what the whole sibling set's `winner_at` answers, for any set of
//! concurrent values, markers and deadlines, at any time.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::version::{Dot, Hlc, Sibling, SiblingSet};
use shoal_engine::WriteOp;

/// One sibling: node, HLC time, value (None: a delete marker), deadline.
type Spec = (u32, u64, Option<Vec<u8>>, Option<u64>);

fn sibling_spec() -> impl Strategy<Value = Spec> {
    (
        1u32..6,
        0u64..50,
        proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..180)),
        proptest::option::of(0u64..100),
    )
}

fn set_of(specs: &[Spec]) -> SiblingSet {
    let mut set = SiblingSet::default();
    for (i, (node, hlc, value, deadline_ms)) in specs.iter().enumerate() {
        let dot = Dot {
            node: *node,
            counter: i as u64 + 1,
        };
        set.context.add(dot);
        set.siblings.push(Sibling {
            dot,
            hlc: Hlc(*hlc),
            deadline_ms: value.as_ref().and(*deadline_ms),
            value: value.clone().map(Bytes::from),
            counter: None,
        });
    }
    set
}

proptest! {
    #[test]
    fn get_winner_agrees_with_the_whole_set(
        specs in proptest::collection::vec(sibling_spec(), 1..6),
        now_ms in 0u64..120,
    ) {
        let dir = MemDir::new();
        let mut store = open(&dir, small_options());
        let key = Bytes::from_static(b"k");
        let results = commit(&mut store, &[WriteOp::merge(0, key.clone(), set_of(&specs))]);
        // Records up to 1 KiB (small_options): both the stack and the heap
        // buffer of `get_winner` (512 bytes) are exercised.
        prop_assume!(results[0].is_ok());
        let whole = store.get(0, &key).expect("read");
        // At `now_ms`, and at every deadline (the instant a value goes).
        let deadlines = specs.iter().filter_map(|s| s.3);
        for at_ms in std::iter::once(now_ms).chain(deadlines) {
            let expected = whole
                .as_ref()
                .and_then(|s| s.winner_at(at_ms))
                .map(|w| (w.value.clone().expect("live"), w.deadline_ms));
            prop_assert_eq!(store.get_winner(0, &key, at_ms).expect("read"), expected);
        }
        prop_assert_eq!(store.get_winner(0, b"absent", now_ms).expect("read"), None);
    }
}
