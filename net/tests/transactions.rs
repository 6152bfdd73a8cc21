//! MULTI / EXEC / DISCARD / WATCH against the real `shoal` binary, with the
//! `redis` crate and raw sockets: queued commands run only at EXEC, a refused
//! command discards the whole queue, a changed watched key cancels EXEC, and no
//! other connection's command runs between a transaction's.

mod common;

use common::{query, temp_dir, ShoalProcess};
use redis::{Commands, Value};
use std::time::Duration;

#[test]
fn queued_commands_run_at_exec_and_a_refused_one_discards_the_queue() {
    let dir = temp_dir("multi");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let (set, got): (String, String) = redis::pipe()
        .atomic()
        .set("a", "1")
        .get("a")
        .query(&mut c)
        .unwrap();
    assert_eq!((set.as_str(), got.as_str()), ("OK", "1"));
    // The hazard a client must never meet: an unknown command inside MULTI
    // used to leave the rest applied. Now EXEC discards all of it.
    let wire = node.raw(
        b"MULTI\r\nSET k v\r\nNOSUCH x\r\nSET k2 v\r\nEXEC\r\nGET k\r\nEXISTS k2\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&wire);
    assert_eq!(
        text,
        "+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n:0\r\n+OK\r\n"
    );
    let wire = node.raw(
        b"MULTI\r\nSET gone v\r\nDISCARD\r\nEXEC\r\nDISCARD\r\nGET gone\r\nMULTI\r\nMULTI\r\nEXEC\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        String::from_utf8_lossy(&wire),
        "+OK\r\n+QUEUED\r\n+OK\r\n-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n$-1\r\n+OK\r\n-ERR MULTI calls can not be nested\r\n*0\r\n+OK\r\n"
    );
    // A command that fails while running fails alone, as in Redis.
    let wire = node.raw(
        b"MULTI\r\nSET x 1\r\nSELECT 99\r\nGET x\r\nEXEC\r\nQUIT\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        String::from_utf8_lossy(&wire),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n-ERR DB index is out of range\r\n$1\r\n1\r\n+OK\r\n"
    );
    assert_eq!(c.get::<_, String>("x").unwrap(), "1");
}

#[test]
fn a_watched_key_changed_by_another_connection_cancels_exec() {
    let dir = temp_dir("watch");
    let node = ShoalProcess::start(&dir, &[]);
    let mut mine = node.client();
    let mut other = node.client();
    let () = mine.set("w", "0").unwrap();
    redis::cmd("WATCH").arg("w").query::<()>(&mut mine).unwrap();
    let () = other.set("w", "theirs").unwrap();
    redis::cmd("MULTI").query::<()>(&mut mine).unwrap();
    redis::cmd("SET")
        .arg("w")
        .arg("mine")
        .query::<()>(&mut mine)
        .unwrap();
    let cancelled: Value = redis::cmd("EXEC").query(&mut mine).unwrap();
    assert_eq!(cancelled, Value::Nil);
    assert_eq!(mine.get::<_, String>("w").unwrap(), "theirs");
    // Unchanged since WATCH: EXEC runs, and the watch ends with it.
    redis::cmd("WATCH").arg("w").query::<()>(&mut mine).unwrap();
    let (ok,): (String,) = redis::pipe()
        .atomic()
        .set("w", "mine")
        .query(&mut mine)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(other.get::<_, String>("w").unwrap(), "mine");
    // A deleted key counts as changed, and so does a key that appears.
    redis::cmd("WATCH")
        .arg("w")
        .arg("new")
        .query::<()>(&mut mine)
        .unwrap();
    let () = other.set("new", "1").unwrap();
    redis::cmd("MULTI").query::<()>(&mut mine).unwrap();
    redis::cmd("DEL").arg("w").query::<()>(&mut mine).unwrap();
    assert_eq!(
        redis::cmd("EXEC").query::<Value>(&mut mine).unwrap(),
        Value::Nil
    );
    assert_eq!(mine.get::<_, String>("w").unwrap(), "mine");
    let err = redis::pipe()
        .cmd("MULTI")
        .cmd("WATCH")
        .arg("w")
        .query::<Value>(&mut mine)
        .unwrap_err();
    assert!(err.to_string().contains("WATCH inside MULTI"), "{err}");
}

/// A reader that runs between a transaction's commands would see `a` ahead of
/// `b`; the GET between the two SETs makes the first SET answered before the
/// second starts, so only the isolation turn keeps the reader out.
#[test]
fn no_other_command_runs_between_a_transactions_commands() {
    let dir = temp_dir("isolation");
    let node = ShoalProcess::start(&dir, &[]);
    let mut writer = node.client();
    let mut reader = node.client();
    let () = writer.mset(&[("a", "0"), ("b", "0")]).unwrap();
    let rounds = 150;
    let writing = std::thread::spawn(move || {
        for i in 1..=rounds {
            let _: (String, String, String) = redis::pipe()
                .atomic()
                .set("a", i)
                .get("a")
                .set("b", i)
                .query(&mut writer)
                .unwrap();
        }
    });
    let mut reads = 0;
    loop {
        let (a, b): (i64, i64) = redis::cmd("MGET")
            .arg("a")
            .arg("b")
            .query(&mut reader)
            .unwrap();
        assert_eq!(a, b, "a reader ran between a transaction's commands");
        reads += 1;
        if b == rounds {
            break;
        }
    }
    writing.join().unwrap();
    assert!(reads > 1, "the reader overlapped no transaction");
}

/// A client that pipelines many large replies and reads none of them must not
/// hold up another client's EXEC: the server never waits on a socket while it
/// holds an isolation turn. Before, EXEC (and, behind it, every connection)
/// waited for as long as the slow client did not read.
#[test]
fn a_client_that_does_not_read_does_not_stall_exec() {
    let dir = temp_dir("slow-reader");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let () = c.set("big", vec![b'x'; 100 << 10]).unwrap();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut pipeline = Vec::new();
    for _ in 0..400 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    std::io::Write::write_all(&mut slow, &pipeline).unwrap();
    // 40 MB of replies, more than the socket buffers hold: the server is now
    // blocked writing to `slow`, which reads nothing.
    std::thread::sleep(Duration::from_millis(500));
    let mut other = node.client();
    other
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (ok,): (String,) = redis::pipe()
        .atomic()
        .set("after", 1)
        .query(&mut other)
        .expect("EXEC answered while a client does not read");
    assert_eq!(ok, "OK");
    drop(slow);
}

#[test]
fn watch_sees_writes_to_collections_elements() {
    let dir = temp_dir("watch-collections");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let mut other = node.client();
    for (setup, change) in [
        (vec!["RPUSH", "l", "a"], vec!["RPUSH", "l", "b"]),
        (vec!["HSET", "h", "f", "1"], vec!["HSET", "h", "f", "2"]),
        (vec!["SADD", "s", "a"], vec!["SREM", "s", "a"]),
        (vec!["ZADD", "z", "1", "m"], vec!["ZADD", "z", "2", "m"]),
    ] {
        let key = setup[1];
        let _: () = query(&mut c, &setup);
        let _: () = query(&mut c, &["WATCH", key]);
        let _: () = query(&mut other, &change);
        let _: () = query(&mut c, &["MULTI"]);
        let _: () = query(&mut c, &["PING"]);
        let exec: redis::Value = query(&mut c, &["EXEC"]);
        assert_eq!(exec, redis::Value::Nil, "{change:?} changed watched {key}");
    }
    let _: () = query(&mut c, &["WATCH", "l"]);
    let _: () = query(&mut c, &["MULTI"]);
    let _: () = query(&mut c, &["LLEN", "l"]);
    let exec: Vec<i64> = query(&mut c, &["EXEC"]);
    assert_eq!(exec, vec![2], "an unchanged list lets EXEC run");
}
