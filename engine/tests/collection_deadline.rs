//! A collection's deadline record: it binds while its collection holds
//! elements, is dropped once none does, and once it passes takes the
//! collection's elements in bounded batches and itself last, each delete
//! covering only what was read, so a write made since survives. Generic
//! expiry never takes a record alone, and records survive a reopen.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::fields::{
    deadlines_namespace, field_key, field_prefix, fields_namespace, kind_bits, members_namespace,
    zset_members_namespace, zset_scores_namespace,
};
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Deadline, Store, WriteOp};
use std::sync::atomic::Ordering;

const NOW_MS: u64 = 1_000;
const DEADLINE_MS: u64 = 5_000;

fn element(ns: u8, key: &str, name: &str) -> WriteOp {
    let stored = Bytes::from(field_key(key.as_bytes(), name.as_bytes()));
    WriteOp::put(ns, stored, Bytes::from_static(b"v"))
}

fn record(elements_ns: u8, key: &str, at_ms: u64) -> WriteOp {
    let stored = Bytes::from(field_prefix(key.as_bytes()));
    let kind = Bytes::copy_from_slice(&[kind_bits(elements_ns)]);
    let mut op = WriteOp::put(deadlines_namespace(0), stored, kind);
    op.deadline = Deadline::At(at_ms);
    op
}

fn apply(store: &mut Store, ops: &[WriteOp]) {
    for result in commit(store, ops) {
        result.expect("written");
    }
}

fn chores(store: &Store, key: &str, now_ms: u64, max_ops: usize) -> Option<Vec<WriteOp>> {
    let prefix = field_prefix(key.as_bytes());
    store.collection_deadline_chores(deadlines_namespace(0), &prefix, now_ms, max_ops)
}

fn live_elements(store: &Store, ns: u8, key: &str) -> u64 {
    store.live_count_with_prefix(ns, &field_prefix(key.as_bytes()))
}

#[test]
fn a_record_binds_until_its_deadline_then_takes_the_collection_in_batches() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let fns = fields_namespace(0);
    let fields: Vec<WriteOp> = ["a", "b", "c"]
        .iter()
        .map(|f| element(fns, "h", f))
        .collect();
    apply(&mut store, &fields);
    let held = store.collection_deadlines_held();
    assert!(!store.holds_collection_deadlines() && !held.load(Ordering::Acquire));
    apply(&mut store, &[record(fns, "h", DEADLINE_MS)]);
    assert!(store.holds_collection_deadlines() && held.load(Ordering::Acquire));
    let dns = deadlines_namespace(0);
    let prefix = field_prefix(b"h");
    assert_eq!(store.collection_deadline(dns, &prefix), Some(DEADLINE_MS));
    assert_eq!(store.keyspace_counts().get(&0), Some(&(1, 1)));
    assert!(chores(&store, "h", DEADLINE_MS - 1, 8).is_none());
    // Generic expiry leaves the record to its collection's chores.
    assert!(store
        .expiry_deletes(DEADLINE_MS, 10, |_, _| true)
        .is_empty());
    assert_eq!(store.due_collection_deadlines(DEADLINE_MS, 10).len(), 1);
    let first = chores(&store, "h", DEADLINE_MS, 2).expect("due");
    assert_eq!(first.len(), 2);
    assert!(first
        .iter()
        .all(|op| op.namespace == fns && op.value.is_none()));
    apply(&mut store, &first);
    assert_eq!(live_elements(&store, fns, "h"), 1);
    let last = chores(&store, "h", DEADLINE_MS, 2).expect("due");
    assert_eq!(last.len(), 2, "the last field, then the record");
    assert_eq!(last[1].namespace, dns);
    apply(&mut store, &last);
    assert_eq!(live_elements(&store, fns, "h"), 0);
    assert!(chores(&store, "h", DEADLINE_MS, 2).is_none());
    assert!(!store.holds_collection_deadlines() && !held.load(Ordering::Acquire));
    assert_eq!(store.keyspace_counts().get(&0), None);
}

#[test]
fn a_record_whose_collection_emptied_is_dropped_before_its_deadline() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let mns = members_namespace(0);
    apply(
        &mut store,
        &[element(mns, "s", "m"), record(mns, "s", DEADLINE_MS)],
    );
    assert!(chores(&store, "s", NOW_MS, 8).is_none());
    let stored = Bytes::from(field_key(b"s", b"m"));
    apply(&mut store, &[WriteOp::delete(mns, stored)]);
    let stale = chores(&store, "s", NOW_MS, 8).expect("stale");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].namespace, deadlines_namespace(0));
    apply(&mut store, &stale);
    assert!(!store.holds_collection_deadlines());
    // A record naming another kind binds nothing either.
    apply(
        &mut store,
        &[
            element(mns, "s", "m"),
            record(fields_namespace(0), "s", DEADLINE_MS),
        ],
    );
    assert_eq!(chores(&store, "s", NOW_MS, 8).map(|ops| ops.len()), Some(1));
}

#[test]
fn expiry_deletes_only_what_it_read_so_a_later_write_survives() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let fns = fields_namespace(0);
    apply(
        &mut store,
        &[element(fns, "h", "a"), record(fns, "h", DEADLINE_MS)],
    );
    let deletes = chores(&store, "h", DEADLINE_MS, 8).expect("due");
    assert_eq!(deletes.len(), 2);
    // Written between the read and the deletes: a new value of the field,
    // and a new deadline record.
    apply(
        &mut store,
        &[element(fns, "h", "a"), record(fns, "h", DEADLINE_MS * 2)],
    );
    apply(&mut store, &deletes);
    assert_eq!(live_elements(&store, fns, "h"), 1);
    let prefix = field_prefix(b"h");
    assert_eq!(
        store.collection_deadline(deadlines_namespace(0), &prefix),
        Some(DEADLINE_MS * 2)
    );
}

#[test]
fn a_sorted_set_goes_with_its_score_index_and_records_survive_a_reopen() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let (zm, zs) = (zset_members_namespace(0), zset_scores_namespace(0));
    apply(
        &mut store,
        &[
            element(zm, "z", "m"),
            element(zs, "z", "1m"),
            record(zm, "z", DEADLINE_MS),
        ],
    );
    drop(store);
    let mut store = open(&dir, small_options());
    assert!(store.holds_collection_deadlines());
    let deletes = chores(&store, "z", DEADLINE_MS, 8).expect("due");
    let namespaces: Vec<u8> = deletes.iter().map(|op| op.namespace).collect();
    assert_eq!(namespaces, [zm, zs, deadlines_namespace(0)]);
    apply(&mut store, &deletes);
    assert_eq!(
        live_elements(&store, zm, "z") + live_elements(&store, zs, "z"),
        0
    );
}
