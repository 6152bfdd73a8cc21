//! `WriteOp::take` (LPOP and RPOP on one node): the key removed is chosen as
//! the batch is prepared, after the batch's earlier writes and the batches
//! staged before it, so takes in one group commit, or in batches prepared
//! before the first is published, each remove a different key, answering its
//! value; a take of an empty range is not applied.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::fields::{field_key, field_prefix, lists_namespace};
use shoal_engine::memdisk::MemDir;
use shoal_engine::{TakeEnd, WriteOp};

fn element(i: u8) -> WriteOp {
    let key = field_key(b"q", &[i]);
    WriteOp::put(
        lists_namespace(0),
        Bytes::from(key),
        Bytes::from(vec![b'a' + i]),
    )
}

fn take(end: TakeEnd) -> WriteOp {
    WriteOp::take(lists_namespace(0), Bytes::from(field_prefix(b"q")), end)
}

fn taken(
    outcomes: Vec<Result<shoal_engine::WriteOutcome, shoal_engine::WriteError>>,
) -> Vec<Option<u8>> {
    outcomes
        .into_iter()
        .map(|o| {
            let o = o.expect("written");
            assert_eq!(o.applied, o.previous_winner.is_some());
            o.previous_winner.map(|v| v[0])
        })
        .collect()
}

#[test]
fn takes_in_one_batch_and_in_staged_batches_remove_different_keys() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    commit(&mut store, &(0..5).map(element).collect::<Vec<_>>());
    let one_batch = commit(
        &mut store,
        &[
            take(TakeEnd::First),
            take(TakeEnd::First),
            take(TakeEnd::Last),
        ],
    );
    assert_eq!(taken(one_batch), [Some(b'a'), Some(b'b'), Some(b'e')]);
    // Two batches prepared before either is published: the second sees the
    // first's take and skips its key.
    let first = store.prepare(&[take(TakeEnd::First)], 1_000);
    let second = store.prepare(&[take(TakeEnd::First)], 1_000);
    first.sync().expect("sync");
    second.sync().expect("sync");
    let first = taken(store.publish(first));
    let second = taken(store.publish(second));
    assert_eq!((first, second), (vec![Some(b'c')], vec![Some(b'd')]));
    assert_eq!(taken(commit(&mut store, &[take(TakeEnd::Last)])), [None]);
    let prefix = field_prefix(b"q");
    assert_eq!(store.live_count_with_prefix(lists_namespace(0), &prefix), 0);
}
