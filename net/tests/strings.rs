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
        (
            "INCRBYFLOAT",
            &["n", "inf"],
            "would produce NaN or Infinity",
        ),
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

#[test]
fn msetnx_rename_copy_touch_and_time_follow_redis() {
    let dir = temp_dir("keyspace-moves");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let set: i64 = redis::cmd("MSETNX")
        .arg(&["a", "1", "b", "2"])
        .query(&mut c)
        .unwrap();
    assert_eq!(set, 1);
    let refused: i64 = redis::cmd("MSETNX")
        .arg(&["c", "3", "a", "9"])
        .query(&mut c)
        .unwrap();
    assert_eq!(refused, 0);
    assert_eq!(c.exists::<_, i64>("c").unwrap(), 0, "all or nothing");
    assert_eq!(c.get::<_, String>("a").unwrap(), "1");

    let () = redis::cmd("RENAME")
        .arg("a")
        .arg("z")
        .query(&mut c)
        .unwrap();
    assert_eq!(c.get::<_, Option<String>>("a").unwrap(), None);
    assert_eq!(c.get::<_, String>("z").unwrap(), "1");
    let missing = error_of(redis::cmd("RENAME").arg("nope").arg("x").query(&mut c));
    assert!(missing.contains("no such key"), "{missing}");
    let nx: i64 = redis::cmd("RENAMENX")
        .arg("z")
        .arg("b")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, 0, "b exists");
    let nx: i64 = redis::cmd("RENAMENX")
        .arg("z")
        .arg("y")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, 1);
    assert_eq!(c.get::<_, String>("y").unwrap(), "1");

    let copied: i64 = redis::cmd("COPY").arg("y").arg("b").query(&mut c).unwrap();
    assert_eq!(copied, 0, "b exists and no REPLACE");
    let copied: i64 = redis::cmd("COPY")
        .arg("y")
        .arg("b")
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    assert_eq!(copied, 1);
    assert_eq!(c.get::<_, String>("b").unwrap(), "1");
    let copied: i64 = redis::cmd("COPY")
        .arg("y")
        .arg("y")
        .arg("DB")
        .arg(3)
        .query(&mut c)
        .unwrap();
    assert_eq!(copied, 1);
    let () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("y").unwrap(), "1");
    let () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let out_of_range = error_of(
        redis::cmd("COPY")
            .arg("y")
            .arg("w")
            .arg("DB")
            .arg(16)
            .query(&mut c),
    );
    assert!(out_of_range.contains("out of range"), "{out_of_range}");
    let same = error_of(redis::cmd("COPY").arg("y").arg("y").query(&mut c));
    assert!(same.contains("the same"), "{same}");

    let touched: i64 = redis::cmd("TOUCH")
        .arg(&["b", "y", "nope"])
        .query(&mut c)
        .unwrap();
    assert_eq!(touched, 2);
    let (secs, micros): (String, String) = redis::cmd("TIME").query(&mut c).unwrap();
    assert!(secs.parse::<u64>().unwrap() > 1_700_000_000, "{secs}");
    assert!(micros.parse::<u32>().unwrap() < 1_000_000);
}

/// While one client renames a key back and forth, another reads both names:
/// a rename's two writes are one batch, so exactly one name holds the value.
#[test]
fn a_rename_is_never_seen_half_done() {
    let dir = temp_dir("rename-race");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let () = c.set("left", "v").unwrap();
    let mut renamer = node.client();
    let renaming = std::thread::spawn(move || {
        for i in 0..200 {
            let (from, to) = if i % 2 == 0 {
                ("left", "right")
            } else {
                ("right", "left")
            };
            let () = redis::cmd("RENAME")
                .arg(from)
                .arg(to)
                .query(&mut renamer)
                .unwrap();
        }
    });
    while !renaming.is_finished() {
        let both: Vec<Option<String>> = c.mget(&["left", "right"]).unwrap();
        let held = both.iter().filter(|v| v.is_some()).count();
        assert_eq!(held, 1, "saw {both:?}");
    }
    renaming.join().unwrap();
}

/// Four clients race MSETNX on the same 100 fresh keys: each key's check and
/// write are one step under the node's exclusive turn, so exactly one client
/// wins each key (two that both saw it absent would both answer 1).
#[test]
fn racing_msetnx_has_exactly_one_winner_per_key() {
    let dir = temp_dir("msetnx-race");
    let node = ShoalProcess::start(&dir, &[]);
    let racers: Vec<_> = (0..4)
        .map(|id| {
            let mut c = node.client();
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        redis::cmd("MSETNX")
                            .arg(format!("race:{i}"))
                            .arg(id)
                            .query::<i64>(&mut c)
                            .unwrap()
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    let wins: Vec<Vec<i64>> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    for i in 0..100 {
        let winners: i64 = wins.iter().map(|w| w[i]).sum();
        assert_eq!(winners, 1, "race:{i} had {winners} winners");
    }
}

/// A value may take a quarter of the 64 MiB record limit (16 MiB), so that
/// concurrent values written on different replicas still merge into one
/// record; one byte more is refused with the limit named, and nothing is
/// written. APPEND past it is refused the same way.
#[test]
fn a_value_over_a_quarter_of_a_record_is_refused_naming_the_limit() {
    let dir = temp_dir("value-limit");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let max = 16 << 20;
    let over = error_of(
        redis::cmd("SET")
            .arg("big")
            .arg(vec![b'v'; max + 1])
            .query(&mut c),
    );
    assert!(
        over.contains(&format!("exceeds the limit of {max}")),
        "{over}"
    );
    assert_eq!(c.get::<_, Option<String>>("big").unwrap(), None);
    let _: () = c.set("big", vec![b'v'; max]).unwrap();
    assert_eq!(c.strlen::<_, usize>("big").unwrap(), max);
    let appended = error_of(redis::cmd("APPEND").arg("big").arg("x").query(&mut c));
    assert!(appended.contains("exceeds the limit"), "{appended}");
    assert_eq!(c.strlen::<_, usize>("big").unwrap(), max);
}
