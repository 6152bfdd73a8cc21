//! A store's dot actor: the node id until `adopt_actor` gives it another, which
//! is then kept across reopens; a damaged `ACTOR` file stops the open instead of
//! falling back to the node id (that would reuse the old life's dots).

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Store, StoreOptions, WriteOp};
use std::sync::Arc;

fn options() -> StoreOptions {
    StoreOptions {
        node_id: 3,
        ..small_options()
    }
}

fn dot_node_of_a_put(store: &mut Store, key: &str) -> u32 {
    let op = WriteOp::put(0, Bytes::from(key.to_string()), Bytes::from("v"));
    commit(store, &[op])[0]
        .clone()
        .expect("put")
        .dot
        .expect("applied")
        .node
}

#[test]
fn an_adopted_actor_mints_every_later_dot_and_survives_reopen() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    assert_eq!(store.actor(), 3);
    assert_eq!(dot_node_of_a_put(&mut store, "a"), 3);
    let actor = 3 | (7 << 24);
    store.adopt_actor(actor).expect("adopt");
    assert_eq!(dot_node_of_a_put(&mut store, "b"), actor);
    drop(store);
    let mut store = open(&dir, options());
    assert_eq!(store.actor(), actor, "kept across a reopen");
    assert_eq!(dot_node_of_a_put(&mut store, "c"), actor);
}

#[test]
fn a_damaged_actor_file_stops_the_open() {
    let dir = MemDir::new();
    let mut store = open(&dir, options());
    store.adopt_actor(3 | (9 << 24)).expect("adopt");
    drop(store);
    dir.corrupt_byte("ACTOR", 1).expect("corrupt");
    let err = Store::open(Arc::new(dir.clone()), options())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("ACTOR"), "{err}");
}
