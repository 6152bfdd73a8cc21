//! Deadlines: a value written with one reads as absent from then on, EXPIRE's
//! conditions follow Redis, a deadline in the past reads absent at once, read-modify-writes
//! keep the winner's deadline, and the expiry index survives a reopen from
//! scanned segments and from hints alike.

mod common;

use bytes::Bytes;
use common::*;
use shoal_engine::memdisk::MemDir;
use shoal_engine::{Condition, Covers, Deadline, Modify, Store, WriteOp, WriteOutcome};

fn commit_at(store: &mut Store, op: WriteOp, wall_ms: u64) -> WriteOutcome {
    let batch = store.prepare(&[op], wall_ms);
    batch.sync().expect("sync");
    store.publish(batch).remove(0).expect("written")
}

fn put_expiring(key: &str, value: &str, at_ms: u64) -> WriteOp {
    let mut op = WriteOp::put(
        0,
        Bytes::from(key.to_string()),
        Bytes::from(value.to_string()),
    );
    op.deadline = Deadline::At(at_ms);
    op
}

fn expire(key: &str, at_ms: u64, condition: Condition) -> WriteOp {
    let mut op = WriteOp::modify(0, Bytes::from(key.to_string()), Modify::Touch);
    op.deadline = Deadline::At(at_ms);
    op.condition = condition;
    op
}

fn winner_at(store: &Store, key: &str, now_ms: u64) -> Option<(String, Option<u64>)> {
    let set = store.get(0, key.as_bytes()).expect("read")?;
    let w = set.winner_at(now_ms)?;
    let value = String::from_utf8(w.value.clone()?.to_vec()).expect("utf8");
    Some((value, w.deadline_ms))
}

#[test]
fn a_value_reads_as_absent_from_its_deadline_and_nx_sees_it_gone() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    commit_at(&mut store, put_expiring("k", "v", 5_000), 1_000);
    assert_eq!(
        winner_at(&store, "k", 4_999),
        Some(("v".into(), Some(5_000)))
    );
    assert_eq!(winner_at(&store, "k", 5_000), None);
    assert!(store.has_expired(0, b"k", 5_000) && !store.has_expired(0, b"k", 4_999));
    assert_eq!(store.expired_keys(5_000, 10), vec![(0, Bytes::from("k"))]);
    // SET NX after the deadline: the expired value counts as absent.
    let mut nx = WriteOp::put(0, Bytes::from("k"), Bytes::from("w"));
    nx.condition = Condition::IfAbsent;
    assert!(commit_at(&mut store, nx, 6_000).applied);
    assert_eq!(winner_at(&store, "k", u64::MAX), Some(("w".into(), None)));
    assert_eq!(store.expiring_key_count(), 0, "a value without a deadline");
}

#[test]
fn expire_conditions_follow_redis() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let now = 1_000;
    commit_at(
        &mut store,
        WriteOp::put(0, Bytes::from("k"), Bytes::from("v")),
        now,
    );
    assert!(!commit_at(&mut store, expire("k", 9_000, Condition::IfDeadline), now).applied);
    assert!(
        !commit_at(
            &mut store,
            expire("k", 9_000, Condition::IfDeadlineLater),
            now
        )
        .applied
    );
    assert!(commit_at(&mut store, expire("k", 9_000, Condition::IfNoDeadline), now).applied);
    assert!(!commit_at(&mut store, expire("k", 8_000, Condition::IfNoDeadline), now).applied);
    assert!(
        !commit_at(
            &mut store,
            expire("k", 8_000, Condition::IfDeadlineLater),
            now
        )
        .applied
    );
    assert!(
        commit_at(
            &mut store,
            expire(
                "k",
                8_000,
                Condition::IfDeadlineEarlier {
                    with_deadline: false
                }
            ),
            now
        )
        .applied
    );
    assert!(
        commit_at(
            &mut store,
            expire("k", 10_000, Condition::IfDeadlineLater),
            now
        )
        .applied
    );
    assert_eq!(
        winner_at(&store, "k", now),
        Some(("v".into(), Some(10_000)))
    );
    assert!(!commit_at(&mut store, expire("absent", 9_000, Condition::Always), now).applied);
    // PERSIST: the value without a deadline, only when it has one.
    let mut persist = expire("k", 0, Condition::IfDeadline);
    persist.deadline = Deadline::Never;
    assert!(commit_at(&mut store, persist.clone(), now).applied);
    assert!(!commit_at(&mut store, persist, now).applied);
    assert_eq!(winner_at(&store, "k", u64::MAX), Some(("v".into(), None)));
}

#[test]
fn a_deadline_in_the_past_reads_absent_at_once_and_increments_keep_the_deadline() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    commit_at(&mut store, put_expiring("n", "1", 7_000), 1_000);
    let incr = WriteOp::modify(0, Bytes::from("n"), Modify::IncrBy(4));
    commit_at(&mut store, incr, 2_000);
    assert_eq!(
        winner_at(&store, "n", 2_000),
        Some(("5".into(), Some(7_000)))
    );
    // Incremented after its deadline: starts from absent, with no deadline left.
    let incr = WriteOp::modify(0, Bytes::from("n"), Modify::IncrBy(1));
    commit_at(&mut store, incr, 7_000);
    assert_eq!(winner_at(&store, "n", u64::MAX), Some(("1".into(), None)));
    let outcome = commit_at(&mut store, expire("n", 1_500, Condition::Always), 2_000);
    assert!(
        outcome.applied && outcome.set.is_absent_at(2_000),
        "{outcome:?}"
    );
    assert_eq!(winner_at(&store, "n", 2_000), None);
    assert_eq!(store.expired_keys(2_000, 10), vec![(0, Bytes::from("n"))]);
}

#[test]
fn a_delete_covering_what_expired_removes_it_and_spares_a_newer_write() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    let seen = commit_at(&mut store, put_expiring("k", "old", 2_000), 1_000).set;
    // Read absent at 3,000, yet held: expiry deletes what it saw.
    let mut forget = WriteOp::delete(0, Bytes::from("k"));
    forget.covers = Covers::Context(seen.context.clone());
    assert!(commit_at(&mut store, forget, 3_000).applied);
    assert_eq!(store.expiring_key_count(), 0);
    // A value written after the read survives such a delete.
    let seen = commit_at(&mut store, put_expiring("j", "old", 2_000), 1_000).set;
    commit_at(
        &mut store,
        WriteOp::put(0, Bytes::from("j"), Bytes::from("new")),
        2_500,
    );
    let mut forget = WriteOp::delete(0, Bytes::from("j"));
    forget.covers = Covers::Context(seen.context);
    commit_at(&mut store, forget, 3_000);
    assert_eq!(winner_at(&store, "j", u64::MAX), Some(("new".into(), None)));
}

#[test]
fn deadlines_survive_a_reopen_from_scans_and_from_hints() {
    let dir = MemDir::new();
    let mut store = open(&dir, small_options());
    // Enough to seal a few 4 KiB segments, whose hints then carry deadlines.
    for i in 0..120u64 {
        let key = format!("key-{i:03}");
        commit_at(
            &mut store,
            put_expiring(&key, "some value", 10_000 + i),
            1_000,
        );
    }
    commit_at(&mut store, put_expiring("key-000", "again", 50_000), 1_000);
    commit_at(
        &mut store,
        WriteOp::put(0, Bytes::from("key-001"), Bytes::from("kept")),
        1_000,
    );
    drop(store);
    let names = shoal_engine::DiskDir::list(&dir).expect("list");
    assert!(names.iter().any(|n| n.ends_with(".hint")), "{names:?}");
    let store = open(&dir, small_options());
    assert_eq!(store.expiring_key_count(), 119);
    assert_eq!(store.deadline_of(0, b"key-000"), Some(50_000));
    assert_eq!(store.deadline_of(0, b"key-001"), None);
    assert_eq!(store.deadline_of(0, b"key-119"), Some(10_119));
    let due: Vec<_> = store
        .expired_keys(10_003, 100)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(due, vec!["key-002", "key-003"]);
}
