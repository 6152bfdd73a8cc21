//! The string commands beyond SET and GET against the real `shoal` binary:
//! counters, APPEND, SETRANGE, GETRANGE, STRLEN, GETSET, GETDEL, with Redis's
//! replies and errors, atomic under concurrent clients, durable across a
//! restart.

mod common;

use common::{temp_dir, ShoalProcess};
use redis::Commands;

fn error_of(result: redis::RedisResult<redis::Value>) -> String {
    result.expect_err("an error reply").to_string()
}

#[test]
fn counters_answer_and_refuse_as_redis_does() {
    let dir = temp_dir("counters");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert_eq!(redis::cmd("INCR").arg("n").query::<i64>(&mut c).unwrap(), 2);
    assert_eq!(redis::cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(
        redis::cmd("INCRBY")
            .arg("n")
            .arg(41)
            .query::<i64>(&mut c)
            .unwrap(),
        42
    );
    assert_eq!(
        redis::cmd("DECRBY")
            .arg("n")
            .arg(50)
            .query::<i64>(&mut c)
            .unwrap(),
        -8
    );
    assert_eq!(c.get::<_, String>("n").unwrap(), "-8");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.5");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("0.1")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.6");
    let () = c.set("max", i64::MAX).unwrap();
    let () = c.set("text", "abc").unwrap();
    let cases: [(&str, &[&str], &str); 6] = [
        ("INCR", &["max"], "increment or decrement would overflow"),
        ("INCR", &["text"], "value is not an integer or out of range"),
        (
            "INCRBY",
            &["n", "x"],
            "value is not an integer or out of range",
        ),
        (
            "DECRBY",
            &["n", "-9223372036854775808"],
            "decrement would overflow",
        ),
        ("INCRBYFLOAT", &["text", "1"], "value is not a valid float"),
        ("INCRBYFLOAT", &["n", "inf"], "value is not a valid float"),
    ];
    for (name, args, want) in cases {
        let message = error_of(redis::cmd(name).arg(args).query(&mut c));
        assert!(message.contains(want), "{name} {args:?}: {message}");
    }
    assert_eq!(
        c.get::<_, String>("max").unwrap(),
        i64::MAX.to_string(),
        "a refused INCR writes nothing"
    );
    assert_eq!(c.get::<_, String>("text").unwrap(), "abc");
}

#[test]
fn appends_ranges_and_swaps_follow_redis() {
    let dir = temp_dir("string-edits");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(c.append::<_, _, i64>("s", "Hello").unwrap(), 5);
    assert_eq!(c.append::<_, _, i64>("s", " World").unwrap(), 11);
    assert_eq!(c.strlen::<_, i64>("s").unwrap(), 11);
    assert_eq!(c.strlen::<_, i64>("absent").unwrap(), 0);
    assert_eq!(c.setrange::<_, _, i64>("s", 6, "Redis").unwrap(), 11);
    assert_eq!(c.get::<_, String>("s").unwrap(), "Hello Redis");
    assert_eq!(c.setrange::<_, _, i64>("pad", 3, "x").unwrap(), 4);
    assert_eq!(c.get::<_, Vec<u8>>("pad").unwrap(), b"\0\0\0x");
    assert_eq!(c.setrange::<_, _, i64>("nothing", 5, "").unwrap(), 0);
    assert_eq!(
        c.exists::<_, i64>("nothing").unwrap(),
        0,
        "an empty SETRANGE creates nothing"
    );
    for (start, end, want) in [
        (0, 4, "Hello"),
        (-5, -1, "Redis"),
        (6, 100, "Redis"),
        (5, 2, ""),
        (-100, 1, "He"),
    ] {
        let got: String = c.getrange("s", start, end).unwrap();
        assert_eq!(got, want, "GETRANGE s {start} {end}");
    }
    let substr: String = redis::cmd("SUBSTR")
        .arg("s")
        .arg(0)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(substr, "H");
    assert_eq!(c.getset::<_, _, String>("s", "new").unwrap(), "Hello Redis");
    assert_eq!(
        c.getset::<_, _, Option<String>>("fresh", "1").unwrap(),
        None
    );
    assert_eq!(c.get_del::<_, String>("s").unwrap(), "new");
    assert_eq!(c.get_del::<_, Option<String>>("s").unwrap(), None);
    assert_eq!(c.exists::<_, i64>("s").unwrap(), 0);
    let offset = error_of(
        redis::cmd("SETRANGE")
            .arg("s")
            .arg(-1)
            .arg("x")
            .query(&mut c),
    );
    assert!(offset.contains("offset is out of range"), "{offset}");
    let too_long = error_of(
        redis::cmd("SETRANGE")
            .arg("s")
            .arg(536_870_911)
            .arg("xy")
            .query(&mut c),
    );
    assert!(too_long.contains("maximum allowed size"), "{too_long}");
}

/// Four clients increment one counter 250 times each, pipelined: a
/// read-modify-write that read a stale value would lose increments.
#[test]
fn concurrent_increments_all_count_and_survive_a_restart() {
    let dir = temp_dir("incr-race");
    let node = ShoalProcess::start(&dir, &[]);
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = node.client();
            std::thread::spawn(move || {
                let mut pipe = redis::pipe();
                for _ in 0..250 {
                    pipe.cmd("INCR")
                        .arg("hits")
                        .cmd("APPEND")
                        .arg("log")
                        .arg("x");
                }
                let _: Vec<i64> = pipe.query(&mut c).unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut c = node.client();
    assert_eq!(c.get::<_, i64>("hits").unwrap(), 1000);
    assert_eq!(c.strlen::<_, i64>("log").unwrap(), 1000);
    let port = node.port;
    node.kill9();
    let node = ShoalProcess::start_on(port, &dir, &[]);
    let mut c = node.client();
    assert_eq!(
        c.get::<_, i64>("hits").unwrap(),
        1000,
        "acknowledged increments are durable"
    );
    assert_eq!(c.incr::<_, _, i64>("hits", 1).unwrap(), 1001);
}
