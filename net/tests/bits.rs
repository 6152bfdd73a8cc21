//! GETBIT, SETBIT, BITCOUNT, BITPOS and LCS against the real `shoal` binary
//! with the `redis` crate, and the keyspace commands MOVE, RANDOMKEY, OBJECT,
//! SAVE and RESET: Redis's replies and errors, and SETBIT's bits survive
//! kill -9.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    query(c, args)
}

#[test]
fn bits_and_lcs_answer_as_in_redis() {
    let dir = temp_dir("bits");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["SETBIT", "b", "7", "1"]), 0);
    assert_eq!(int(&mut c, &["SETBIT", "b", "7", "0"]), 1);
    assert_eq!(int(&mut c, &["SETBIT", "b", "9", "1"]), 0);
    assert_eq!(query::<Vec<u8>>(&mut c, &["GET", "b"]), [0x00, 0x40]);
    assert_eq!(int(&mut c, &["GETBIT", "b", "9"]), 1);
    assert_eq!(int(&mut c, &["GETBIT", "b", "1000"]), 0);
    let _: () = query(&mut c, &["SET", "s", "foobar"]);
    assert_eq!(int(&mut c, &["BITCOUNT", "s"]), 26);
    assert_eq!(int(&mut c, &["BITCOUNT", "s", "1", "1"]), 6);
    assert_eq!(int(&mut c, &["BITCOUNT", "s", "5", "30", "BIT"]), 17);
    let _: () = query(&mut c, &["SET", "p", "\u{0}\u{ff}\u{f0}"]);
    assert_eq!(int(&mut c, &["BITPOS", "b", "1"]), 9);
    assert_eq!(int(&mut c, &["BITPOS", "nope", "0"]), 0);
    assert_eq!(int(&mut c, &["BITPOS", "nope", "1"]), -1);
    let _: () = query(&mut c, &["SET", "k1", "ohmytext"]);
    let _: () = query(&mut c, &["SET", "k2", "mynewtext"]);
    assert_eq!(query::<String>(&mut c, &["LCS", "k1", "k2"]), "mytext");
    assert_eq!(int(&mut c, &["LCS", "k1", "k2", "LEN"]), 6);
    for (args, expected) in [
        (&["SETBIT", "b", "-1", "1"][..], "bit offset"),
        (&["SETBIT", "b", "1", "2"], "bit is not an integer"),
        (&["GETBIT", "b", "x"], "bit offset"),
        (&["BITCOUNT", "s", "1"], "syntax"),
        (&["BITPOS", "s", "2"], "must be 1 or 0"),
        (&["LCS", "k1", "k2", "LEN", "IDX"], "just use IDX"),
    ] {
        let e = error_of(&mut c, args);
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    let _: i64 = query(&mut c, &["SADD", "set", "m"]);
    assert!(error_of(&mut c, &["SETBIT", "set", "1", "1"]).starts_with("WRONGTYPE"));
    assert!(error_of(&mut c, &["GETBIT", "set", "1"]).starts_with("WRONGTYPE"));
    node.kill9();
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["GETBIT", "b", "9"]), 1);
    assert_eq!(int(&mut c, &["BITCOUNT", "b"]), 1);
}

#[test]
fn move_randomkey_object_save_and_reset_follow_redis() {
    let dir = temp_dir("keyspace-more");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(query::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
    let _: () = query(&mut c, &["SET", "k", "v"]);
    let _: i64 = query(&mut c, &["RPUSH", "l", "a", "b"]);
    let picked: String = query(&mut c, &["RANDOMKEY"]);
    assert!(picked == "k" || picked == "l", "{picked}");
    assert_eq!(int(&mut c, &["MOVE", "l", "3"]), 1);
    assert_eq!(int(&mut c, &["EXISTS", "l"]), 0);
    assert_eq!(int(&mut c, &["MOVE", "nope", "3"]), 0);
    assert!(error_of(&mut c, &["MOVE", "k", "x"]).contains("not an integer"));
    assert!(error_of(&mut c, &["MOVE", "k", "0"]).contains("same"));
    assert!(error_of(&mut c, &["MOVE", "k", "99"]).contains("out of range"));
    let _: () = query(&mut c, &["SELECT", "3"]);
    assert_eq!(
        query::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]),
        ["a", "b"]
    );
    let _: () = query(&mut c, &["SET", "k", "there"]);
    let _: () = query(&mut c, &["SELECT", "0"]);
    assert_eq!(int(&mut c, &["MOVE", "k", "3"]), 0, "the target holds k");
    assert_eq!(
        query::<String>(&mut c, &["OBJECT", "ENCODING", "k"]),
        "embstr"
    );
    assert_eq!(int(&mut c, &["OBJECT", "REFCOUNT", "k"]), 1);
    assert_eq!(
        query::<Option<String>>(&mut c, &["OBJECT", "ENCODING", "x"]),
        None
    );
    let _: () = query(&mut c, &["SAVE"]);
    assert!(int(&mut c, &["LASTSAVE"]) > 1_600_000_000);
    let _: () = query(&mut c, &["MULTI"]);
    assert!(error_of(&mut c, &["SAVE"]).contains("not allowed inside a transaction"));
    let aborted = error_of(&mut c, &["EXEC"]);
    assert!(
        aborted.contains("EXECABORT") || aborted.contains("discarded"),
        "{aborted}"
    );
    let _: () = query(&mut c, &["SELECT", "3"]);
    let _: () = query(&mut c, &["CLIENT", "SETNAME", "me"]);
    assert_eq!(query::<String>(&mut c, &["RESET"]), "RESET");
    assert_eq!(
        query::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]),
        None
    );
    assert_eq!(
        query::<String>(&mut c, &["GET", "k"]),
        "v",
        "back in database 0"
    );
}
