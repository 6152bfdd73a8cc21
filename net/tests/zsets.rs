//! Sorted sets against the real `shoal` binary with the `redis` crate: the
//! sorted-set commands answer as Redis does, a sorted set shares the keyspace
//! under Redis's type rules (RENAME and DEL carry its score index along), and
//! members and scores survive kill -9.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    query(c, args)
}

fn names(c: &mut redis::Connection, args: &[&str]) -> Vec<String> {
    query(c, args)
}

#[test]
fn sorted_set_commands_answer_as_in_redis() {
    let dir = temp_dir("zset-commands");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["ZADD", "z", "3", "c", "1", "a", "2", "b"]), 3);
    assert_eq!(
        int(&mut c, &["ZADD", "z", "CH", "5", "a", "2", "b", "4", "d"]),
        2
    );
    assert_eq!(
        names(&mut c, &["ZRANGE", "z", "0", "-1"]),
        ["b", "c", "d", "a"]
    );
    assert_eq!(names(&mut c, &["ZREVRANGE", "z", "0", "1"]), ["a", "d"]);
    let scored = names(&mut c, &["ZRANGE", "z", "(2", "4", "BYSCORE", "WITHSCORES"]);
    assert_eq!(scored, ["c", "3", "d", "4"]);
    let limited = names(
        &mut c,
        &["ZRANGEBYSCORE", "z", "-inf", "+inf", "LIMIT", "1", "2"],
    );
    assert_eq!(limited, ["c", "d"]);
    assert_eq!(query::<f64>(&mut c, &["ZINCRBY", "z", "0.5", "b"]), 2.5);
    assert_eq!(query::<String>(&mut c, &["ZSCORE", "z", "b"]), "2.5");
    assert_eq!(int(&mut c, &["ZRANK", "z", "a"]), 3);
    assert_eq!(int(&mut c, &["ZREVRANK", "z", "a"]), 0);
    assert_eq!(int(&mut c, &["ZCOUNT", "z", "(2.5", "5"]), 3);
    assert_eq!(int(&mut c, &["ZADD", "z", "XX", "GT", "1", "a"]), 0);
    assert_eq!(int(&mut c, &["ZADD", "z", "NX", "9", "a", "9", "e"]), 1);
    assert_eq!(names(&mut c, &["ZPOPMIN", "z"]), ["b", "2.5"]);
    assert_eq!(names(&mut c, &["ZPOPMAX", "z", "2"]), ["e", "9", "a", "5"]);
    assert_eq!(int(&mut c, &["ZREM", "z", "c", "nope"]), 1);
    assert_eq!(int(&mut c, &["ZCARD", "z"]), 1);
    assert_eq!(
        int(
            &mut c,
            &["ZADD", "lex", "0", "a", "0", "b", "0", "c", "0", "d"]
        ),
        4
    );
    assert_eq!(
        names(&mut c, &["ZRANGEBYLEX", "lex", "[b", "(d"]),
        ["b", "c"]
    );
    assert_eq!(int(&mut c, &["ZLEXCOUNT", "lex", "-", "+"]), 4);
    assert_eq!(int(&mut c, &["ZREMRANGEBYRANK", "lex", "0", "1"]), 2);
    assert_eq!(names(&mut c, &["ZRANGE", "lex", "0", "-1"]), ["c", "d"]);
    for (args, expected) in [
        (&["ZADD", "z", "nan", "x"][..], "not a valid float"),
        (&["ZADD", "z", "NX", "XX", "1", "x"], "not compatible"),
        (
            &["ZADD", "z", "INCR", "1", "x", "2", "y"],
            "single increment",
        ),
        (&["ZRANGEBYSCORE", "z", "x", "1"], "not a float"),
        (&["ZRANGEBYLEX", "z", "a", "b"], "string range"),
        (&["ZRANGE", "z", "0", "1", "LIMIT", "0", "1"], "LIMIT"),
        (&["ZINCRBY", "z", "abc", "x"], "not a valid float"),
    ] {
        let e = error_of(&mut c, args);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    let _: i64 = query(&mut c, &["ZADD", "inf", "+inf", "x"]);
    let e = error_of(&mut c, &["ZINCRBY", "inf", "-inf", "x"]);
    assert!(e.contains("NaN"), "{e}");
}

#[test]
fn a_sorted_set_shares_the_keyspace_under_redis_type_rules() {
    let dir = temp_dir("zset-types");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = query(&mut c, &["SET", "str", "v"]);
    let _: i64 = query(&mut c, &["ZADD", "z", "1", "m", "2", "n"]);
    for args in [
        &["ZADD", "str", "1", "x"][..],
        &["ZRANGE", "str", "0", "-1"],
        &["SADD", "z", "x"],
        &["GET", "z"],
        &["ZSCORE", "str", "m"],
    ] {
        assert!(error_of(&mut c, args).starts_with("WRONGTYPE"), "{args:?}");
    }
    assert_eq!(query::<String>(&mut c, &["TYPE", "z"]), "zset");
    let (_, zsets): (String, Vec<String>) = query(&mut c, &["SCAN", "0", "TYPE", "zset"]);
    assert_eq!(zsets, ["z"]);
    let _: () = query(&mut c, &["RENAME", "z", "moved"]);
    assert_eq!(
        names(&mut c, &["ZRANGE", "moved", "0", "-1", "REV"]),
        ["n", "m"]
    );
    assert_eq!(int(&mut c, &["EXISTS", "z"]), 0);
    assert_eq!(int(&mut c, &["DEL", "moved"]), 1);
    // The score index went with the members: a new set starts empty.
    assert_eq!(int(&mut c, &["ZADD", "moved", "7", "q"]), 1);
    assert_eq!(names(&mut c, &["ZRANGE", "moved", "0", "-1"]), ["q"]);
}

#[test]
fn members_and_scores_survive_kill_9() {
    let dir = temp_dir("zset-kill9");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..300 {
        let score = (i * 7 % 300).to_string();
        assert_eq!(int(&mut c, &["ZADD", "board", &score, &format!("p{i}")]), 1);
    }
    assert_eq!(int(&mut c, &["ZADD", "board", "-1", "p42"]), 0);
    node.kill9();
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["ZCARD", "board"]), 300);
    assert_eq!(names(&mut c, &["ZRANGE", "board", "0", "0"]), ["p42"]);
    assert_eq!(
        names(&mut c, &["ZRANGEBYSCORE", "board", "(6", "7"]),
        ["p1"]
    );
    let top: Vec<String> = query(&mut c, &["ZREVRANGE", "board", "0", "2"]);
    assert_eq!(top.len(), 3);
}
