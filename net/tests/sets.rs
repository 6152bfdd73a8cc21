//! Sets against the real `shoal` binary with the `redis` crate: the set
//! commands answer as Redis does, a set shares the keyspace with strings and
//! hashes under Redis's type rules, and members survive kill -9.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};
use std::collections::BTreeSet;

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    query(c, args)
}

fn members(c: &mut redis::Connection, args: &[&str]) -> BTreeSet<String> {
    query(c, args)
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn set_commands_answer_as_in_redis() {
    let dir = temp_dir("set-commands");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["SADD", "s", "a", "b", "c"]), 3);
    assert_eq!(int(&mut c, &["SADD", "s", "a", "d"]), 1);
    assert_eq!(int(&mut c, &["SCARD", "s"]), 4);
    assert_eq!(int(&mut c, &["SISMEMBER", "s", "d"]), 1);
    let found: Vec<i64> = query(&mut c, &["SMISMEMBER", "s", "a", "z"]);
    assert_eq!(found, [1, 0]);
    assert_eq!(int(&mut c, &["SREM", "s", "a", "z"]), 1);
    assert_eq!(
        members(&mut c, &["SMEMBERS", "s"]),
        set_of(&["b", "c", "d"])
    );
    assert_eq!(int(&mut c, &["SADD", "t", "c", "d", "e"]), 3);
    assert_eq!(members(&mut c, &["SINTER", "s", "t"]), set_of(&["c", "d"]));
    assert_eq!(members(&mut c, &["SUNION", "s", "t"]).len(), 4);
    assert_eq!(members(&mut c, &["SDIFF", "s", "t"]), set_of(&["b"]));
    assert_eq!(int(&mut c, &["SINTERCARD", "2", "s", "t", "LIMIT", "1"]), 1);
    assert_eq!(int(&mut c, &["SDIFFSTORE", "u", "t", "s"]), 1);
    assert_eq!(members(&mut c, &["SMEMBERS", "u"]), set_of(&["e"]));
    assert_eq!(int(&mut c, &["SMOVE", "s", "u", "b"]), 1);
    assert_eq!(int(&mut c, &["SMOVE", "s", "u", "b"]), 0);
    assert_eq!(members(&mut c, &["SMEMBERS", "u"]), set_of(&["b", "e"]));
    let popped: Vec<String> = query(&mut c, &["SPOP", "t", "2"]);
    assert_eq!(popped.len(), 2);
    assert_eq!(int(&mut c, &["SCARD", "t"]), 1);
    let picked: Vec<String> = query(&mut c, &["SRANDMEMBER", "u", "-5"]);
    assert_eq!(picked.len(), 5);
    assert!(error_of(&mut c, &["SPOP", "u", "-1"]).contains("must be positive"));
    assert!(error_of(&mut c, &["SINTERCARD", "0", "u"]).contains("numkeys"));
    // An empty *STORE result deletes the destination.
    assert_eq!(int(&mut c, &["SINTERSTORE", "u", "u", "nope"]), 0);
    assert_eq!(int(&mut c, &["EXISTS", "u"]), 0);
}

#[test]
fn a_set_shares_the_keyspace_under_redis_type_rules() {
    let dir = temp_dir("set-types");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = query(&mut c, &["SET", "str", "v"]);
    let _: i64 = query(&mut c, &["HSET", "h", "f", "v"]);
    let _: i64 = query(&mut c, &["SADD", "s", "m"]);
    for args in [
        &["SADD", "str", "x"][..],
        &["SADD", "h", "x"],
        &["SMEMBERS", "h"],
        &["HSET", "s", "f", "v"],
        &["GET", "s"],
        &["SINTER", "s", "str"],
    ] {
        assert!(error_of(&mut c, args).starts_with("WRONGTYPE"), "{args:?}");
    }
    assert_eq!(query::<String>(&mut c, &["TYPE", "s"]), "set");
    let (_, sets): (String, Vec<String>) = query(&mut c, &["SCAN", "0", "TYPE", "set"]);
    assert_eq!(sets, ["s"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 3);
    // *STORE replaces a destination of any type.
    assert_eq!(int(&mut c, &["SUNIONSTORE", "h", "s"]), 1);
    assert_eq!(query::<String>(&mut c, &["TYPE", "h"]), "set");
    let _: () = query(&mut c, &["SET", "s", "now a string"]);
    assert_eq!(query::<String>(&mut c, &["TYPE", "s"]), "string");
    assert_eq!(int(&mut c, &["DEL", "h", "s", "str"]), 3);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
}

#[test]
fn members_survive_kill_9() {
    let dir = temp_dir("set-kill9");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..300 {
        assert_eq!(int(&mut c, &["SADD", "big", &format!("m{i}")]), 1);
    }
    assert_eq!(int(&mut c, &["SREM", "big", "m42"]), 1);
    node.kill9();
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["SCARD", "big"]), 299);
    assert_eq!(int(&mut c, &["SISMEMBER", "big", "m42"]), 0);
    assert_eq!(int(&mut c, &["SISMEMBER", "big", "m299"]), 1);
}
