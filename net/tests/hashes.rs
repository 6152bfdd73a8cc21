//! Hashes against the real `shoal` binary with the `redis` crate: the hash
//! commands answer as Redis does, a hash and a string never share a key on
//! one node (WRONGTYPE; SET replaces a hash), the keyspace commands see
//! hashes, and fields survive kill -9.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};
use std::collections::BTreeMap;

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    query(c, args)
}

fn wrong_type(c: &mut redis::Connection, args: &[&str]) {
    let e = error_of(c, args);
    assert!(e.starts_with("WRONGTYPE"), "{args:?}: {e}");
}

#[test]
fn hash_commands_answer_as_in_redis() {
    let dir = temp_dir("hash-commands");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["HSET", "h", "a", "1", "b", "2"]), 2);
    assert_eq!(int(&mut c, &["HSET", "h", "a", "9", "c", "3"]), 1);
    assert_eq!(query::<String>(&mut c, &["HGET", "h", "a"]), "9");
    assert_eq!(query::<Option<String>>(&mut c, &["HGET", "h", "zz"]), None);
    let got: Vec<Option<String>> = query(&mut c, &["HMGET", "h", "b", "zz", "c"]);
    assert_eq!(got, [Some("2".into()), None, Some("3".into())]);
    let all: BTreeMap<String, String> = query(&mut c, &["HGETALL", "h"]);
    assert_eq!(all.len(), 3);
    assert_eq!(int(&mut c, &["HLEN", "h"]), 3);
    assert_eq!(int(&mut c, &["HEXISTS", "h", "b"]), 1);
    assert_eq!(int(&mut c, &["HSTRLEN", "h", "a"]), 1);
    assert_eq!(int(&mut c, &["HSETNX", "h", "a", "x"]), 0);
    assert_eq!(int(&mut c, &["HSETNX", "h", "d", "4"]), 1);
    assert_eq!(int(&mut c, &["HINCRBY", "h", "d", "10"]), 14);
    assert_eq!(
        query::<String>(&mut c, &["HINCRBYFLOAT", "h", "d", "0.5"]),
        "14.5"
    );
    assert!(error_of(&mut c, &["HINCRBY", "h", "d", "1"]).contains("not an integer"));
    assert_eq!(int(&mut c, &["HDEL", "h", "b", "zz", "c"]), 2);
    let mut fields: Vec<String> = query(&mut c, &["HKEYS", "h"]);
    fields.sort();
    assert_eq!(fields, ["a", "d"]);
    let picked: Vec<String> = query(&mut c, &["HRANDFIELD", "h", "-5"]);
    assert_eq!(picked.len(), 5);
    assert!(picked.iter().all(|f| f == "a" || f == "d"));
    // The last HDEL removes the key.
    assert_eq!(int(&mut c, &["HDEL", "h", "a", "d"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "h"]), 0);
    assert_eq!(query::<String>(&mut c, &["TYPE", "h"]), "none");
    assert!(error_of(&mut c, &["HSET", "h", "a"]).contains("wrong number of arguments"));
}

#[test]
fn a_key_holds_one_type_and_the_keyspace_sees_hashes() {
    let dir = temp_dir("hash-types");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = query(&mut c, &["SET", "s", "v"]);
    let _: i64 = query(&mut c, &["HSET", "h", "f", "v"]);
    wrong_type(&mut c, &["HSET", "s", "f", "v"]);
    wrong_type(&mut c, &["HGET", "s", "f"]);
    wrong_type(&mut c, &["HGETALL", "s"]);
    wrong_type(&mut c, &["GET", "h"]);
    wrong_type(&mut c, &["INCR", "h"]);
    wrong_type(&mut c, &["APPEND", "h", "x"]);
    assert_eq!(int(&mut c, &["SETNX", "h", "x"]), 0);
    assert_eq!(query::<String>(&mut c, &["TYPE", "h"]), "hash");
    assert_eq!(int(&mut c, &["TTL", "h"]), -1);
    let mut keys: Vec<String> = query(&mut c, &["KEYS", "*"]);
    keys.sort();
    assert_eq!(keys, ["h", "s"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 2);
    let (_, hashes): (String, Vec<String>) = query(&mut c, &["SCAN", "0", "TYPE", "hash"]);
    assert_eq!(hashes, ["h"]);
    // SET replaces a hash.
    let _: () = query(&mut c, &["SET", "h", "plain"]);
    assert_eq!(query::<String>(&mut c, &["TYPE", "h"]), "string");
    wrong_type(&mut c, &["HGETALL", "h"]);
    let _: i64 = query(&mut c, &["HSET", "h2", "f", "v", "g", "w"]);
    assert_eq!(int(&mut c, &["DEL", "h2", "s", "nope"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "h2", "s"]), 0);
    let _: i64 = query(&mut c, &["HSET", "h3", "f", "v"]);
    let _: () = query(&mut c, &["FLUSHDB"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
}

#[test]
fn fields_survive_kill_9() {
    let dir = temp_dir("hash-kill9");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..200 {
        let (f, v) = (format!("f{i}"), format!("v{i}"));
        assert_eq!(int(&mut c, &["HSET", "big", &f, &v]), 1);
    }
    assert_eq!(int(&mut c, &["HDEL", "big", "f7"]), 1);
    node.kill9();
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["HLEN", "big"]), 199);
    assert_eq!(query::<String>(&mut c, &["HGET", "big", "f199"]), "v199");
    assert_eq!(
        query::<Option<String>>(&mut c, &["HGET", "big", "f7"]),
        None
    );
}
