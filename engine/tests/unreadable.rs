//! A record damaged under a running store (a byte flipped after it was
//! written and read back whole) is never served as if whole: GET's read and
//! the full read both answer an error naming the segment and offset, and the
//! store counts each such read (`records_unreadable`, for INFO and metrics).

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::store::ReadError;
use shoal_engine::{DiskDir, WriteOp};

#[test]
fn a_record_damaged_while_the_store_runs_is_refused_and_counted() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let value = "v".repeat(200);
    commit(
        &mut store,
        &[WriteOp::put(
            0,
            Bytes::from("k"),
            Bytes::from(value.clone()),
        )],
    )[0]
    .clone()
    .expect("written");
    assert_eq!(value_of(&store, "k").as_deref(), Some(value.as_str()));
    assert_eq!(store.stats().records_unreadable, 0);

    // The value's bytes sit near the end of what was written (the segment is
    // zero-filled past it).
    let name = dir
        .list()
        .expect("list")
        .into_iter()
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .max()
        .expect("a segment");
    let file = dir.open(&name, false).expect("open");
    let mut bytes = vec![0u8; file.len().expect("len") as usize];
    file.read_at(0, &mut bytes).expect("read");
    let end = bytes.iter().rposition(|b| *b != 0).expect("records") as u64 + 1;
    dir.corrupt_byte(&name, end - 100).expect("flip");

    let full = store.get(0, b"k");
    assert!(
        matches!(full, Err(ReadError::Corrupt { segment: 1, .. })),
        "{full:?}"
    );
    let winner = store.get_winner(0, b"k", 1_000);
    assert!(
        matches!(winner, Err(ReadError::Corrupt { .. })),
        "{winner:?}"
    );
    assert_eq!(store.stats().records_unreadable, 2);
}
