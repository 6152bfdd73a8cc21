//! SWAPDB on the real binary: both databases' keys of every type trade
//! places for every connection, a WATCH on either side aborts EXEC, a client
//! blocked on a list in one wakes when the swap brings it one, the swap
//! survives a restart, and bad indexes get Redis's errors.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};
use std::time::Duration;

#[test]
fn swapdb_trades_databases_for_every_client_and_survives_a_restart() {
    let dir = temp_dir("swapdb");
    let node = ShoalProcess::start(&dir, &[]);
    let mut zero = node.client();
    let mut one = node.client();
    let _: () = query(&mut one, &["SELECT", "1"]);
    let _: () = query(&mut zero, &["SET", "x", "zero"]);
    let _: () = query(&mut zero, &["HSET", "h", "f", "zero"]);
    let _: () = query(&mut one, &["SET", "x", "one"]);
    let _: () = query(&mut one, &["RPUSH", "queue", "job"]);

    let _: () = query(&mut zero, &["WATCH", "x"]);
    let blocked = {
        let mut waiter = node.client();
        std::thread::spawn(move || -> Vec<String> { query(&mut waiter, &["BLPOP", "queue", "5"]) })
    };
    std::thread::sleep(Duration::from_millis(300));
    let _: () = query(&mut one, &["SWAPDB", "0", "1"]);
    let _: () = query(&mut zero, &["MULTI"]);
    let _: () = query(&mut zero, &["PING"]);
    let exec: redis::Value = query(&mut zero, &["EXEC"]);
    assert_eq!(exec, redis::Value::Nil, "the swap touched the watched key");
    let popped = blocked.join().unwrap();
    assert_eq!(
        popped,
        vec!["queue".to_string(), "job".to_string()],
        "the swap woke the blocked pop"
    );

    let x: String = query(&mut zero, &["GET", "x"]);
    assert_eq!(x, "one");
    let x: String = query(&mut one, &["GET", "x"]);
    assert_eq!(x, "zero");
    let field: String = query(&mut one, &["HGET", "h", "f"]);
    assert_eq!(field, "zero");
    let size: i64 = query(&mut zero, &["DBSIZE"]);
    assert_eq!(
        size, 1,
        "db 0 now holds what db 1 held (its list was popped)"
    );

    assert!(error_of(&mut zero, &["SWAPDB", "0", "16"]).contains("out of range"));
    assert!(error_of(&mut zero, &["SWAPDB", "x", "1"]).contains("invalid first DB index"));
    drop((zero, one));
    drop(node);
    let again = ShoalProcess::start(&dir, &[]);
    let mut c = again.client();
    let x: String = query(&mut c, &["GET", "x"]);
    assert_eq!(x, "one", "the swap is durable");
}
