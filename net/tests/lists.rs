//! Lists against the real `shoal` binary with the `redis` crate: the list
//! commands answer as Redis does, a blocked pop is served by a later push
//! (first blocked, first served) and gives up when its client leaves, and
//! elements survive kill -9.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};
use std::time::Duration;

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    query(c, args)
}

fn range(c: &mut redis::Connection, key: &str) -> Vec<String> {
    query(c, &["LRANGE", key, "0", "-1"])
}

#[test]
fn list_commands_answer_as_in_redis() {
    let dir = temp_dir("list-commands");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["RPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(int(&mut c, &["LPUSH", "l", "z", "y"]), 5);
    assert_eq!(range(&mut c, "l"), ["y", "z", "a", "b", "c"]);
    assert_eq!(query::<String>(&mut c, &["LINDEX", "l", "-1"]), "c");
    assert_eq!(
        query::<Option<String>>(&mut c, &["LINDEX", "l", "-9"]),
        None
    );
    let _: () = query(&mut c, &["LSET", "l", "1", "Z"]);
    assert!(error_of(&mut c, &["LSET", "l", "9", "x"]).contains("index out of range"));
    assert_eq!(int(&mut c, &["LINSERT", "l", "BEFORE", "b", "B"]), 6);
    assert_eq!(int(&mut c, &["LINSERT", "l", "AFTER", "nope", "x"]), -1);
    assert_eq!(int(&mut c, &["LPOS", "l", "b"]), 4);
    assert_eq!(int(&mut c, &["LREM", "l", "0", "B"]), 1);
    let _: () = query(&mut c, &["LTRIM", "l", "1", "-1"]);
    assert_eq!(range(&mut c, "l"), ["Z", "a", "b", "c"]);
    assert_eq!(query::<String>(&mut c, &["LPOP", "l"]), "Z");
    let popped: Vec<String> = query(&mut c, &["RPOP", "l", "2"]);
    assert_eq!(popped, ["c", "b"]);
    assert_eq!(query::<String>(&mut c, &["RPOPLPUSH", "l", "m"]), "a");
    assert_eq!(int(&mut c, &["EXISTS", "l"]), 0);
    assert_eq!(query::<String>(&mut c, &["TYPE", "m"]), "list");
    assert_eq!(int(&mut c, &["LPUSHX", "nope", "x"]), 0);
    // Many inserts at one spot use up the room between positions, then the
    // list is written afresh: the order holds throughout.
    for i in 0..40 {
        let _: i64 = query(&mut c, &["LINSERT", "m", "AFTER", "a", &format!("x{i}")]);
    }
    let all = range(&mut c, "m");
    assert_eq!(all.len(), 41);
    assert_eq!(&all[..3], ["a", "x39", "x38"]);
    assert_eq!(all[40], "x0");
    let _: () = query(&mut c, &["SET", "s", "v"]);
    assert!(error_of(&mut c, &["LPUSH", "s", "x"]).starts_with("WRONGTYPE"));
    assert!(error_of(&mut c, &["LPOP", "l", "1", "1"]).contains("wrong number of arguments"));
}

#[test]
fn a_blocked_pop_is_served_first_come_and_leaves_with_its_client() {
    let dir = temp_dir("list-blocking");
    let node = ShoalProcess::start(&dir, &[]);
    let (url, mut c) = (node.url(), node.client());
    let waiter = || {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let got: Option<(String, String)> = query(&mut c, &["BLPOP", "q", "10"]);
            got
        })
    };
    // Each waiter blocks before the next starts (INFO counts them), so the
    // order is known however loaded the machine is.
    let mut blocked = |count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        let line = format!("blocked_clients:{count}");
        while !query::<String>(&mut c, &["INFO", "clients"])
            .lines()
            .any(|l| l.trim() == line)
        {
            assert!(std::time::Instant::now() < deadline, "never {line}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let first = waiter();
    blocked(1);
    let second = waiter();
    blocked(2);
    let _: i64 = query(&mut c, &["RPUSH", "q", "job1", "job2"]);
    assert_eq!(first.join().unwrap(), Some(("q".into(), "job1".into())));
    assert_eq!(second.join().unwrap(), Some(("q".into(), "job2".into())));
    let nothing: Option<(String, String)> = query(&mut c, &["BLPOP", "q", "0.1"]);
    assert_eq!(nothing, None);
    // A client that leaves while blocked stops waiting: the next push stays.
    let raw = node.raw(
        b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n0\r\n",
        Duration::from_millis(200),
    );
    assert!(raw.is_empty(), "a blocked pop answered early: {raw:?}");
    std::thread::sleep(Duration::from_millis(200));
    let _: i64 = query(&mut c, &["RPUSH", "empty", "kept"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(range(&mut c, "empty"), ["kept"]);
}

#[test]
fn elements_survive_kill_9() {
    let dir = temp_dir("list-kill9");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..200 {
        let _: i64 = query(&mut c, &["RPUSH", "big", &format!("e{i}")]);
    }
    assert_eq!(query::<String>(&mut c, &["LPOP", "big"]), "e0");
    node.kill9();
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    assert_eq!(int(&mut c, &["LLEN", "big"]), 199);
    assert_eq!(query::<String>(&mut c, &["LINDEX", "big", "0"]), "e1");
    assert_eq!(query::<String>(&mut c, &["LINDEX", "big", "-1"]), "e199");
}

/// Racing pops (LPOP, RPOP, SPOP without a count take no exclusive turn):
/// every element is popped exactly once, by one of the clients.
#[test]
fn racing_pops_take_each_element_once() {
    let dir = temp_dir("list-racing-pops");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let elements: Vec<String> = (0..300).map(|i| format!("e{i}")).collect();
    let mut push = vec!["RPUSH", "q"];
    push.extend(elements.iter().map(String::as_str));
    assert_eq!(int(&mut c, &push), 300);
    let mut add = vec!["SADD", "s"];
    add.extend(elements.iter().map(String::as_str));
    assert_eq!(int(&mut c, &add), 300);
    let poppers: Vec<_> = (0..6)
        .map(|i| {
            let url = node.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let (mut list, mut set) = (Vec::new(), Vec::new());
                let pop = if i % 2 == 0 { "LPOP" } else { "RPOP" };
                while let Some(e) = query::<Option<String>>(&mut c, &[pop, "q"]) {
                    list.push(e);
                }
                while let Some(m) = query::<Option<String>>(&mut c, &["SPOP", "s"]) {
                    set.push(m);
                }
                (list, set)
            })
        })
        .collect();
    let (mut list, mut set): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for popper in poppers {
        let (l, s) = popper.join().unwrap();
        list.extend(l);
        set.extend(s);
    }
    for popped in [&mut list, &mut set] {
        popped.sort();
        let mut expected = elements.clone();
        expected.sort();
        assert_eq!(*popped, expected, "each element popped once");
    }
    assert_eq!(int(&mut c, &["EXISTS", "q", "s"]), 0);
}

/// A blocked pop keeps waiting while its key holds another type (as in
/// Redis), but a pop started on a key of another type is refused at once.
#[test]
fn a_blocked_pop_waits_through_a_key_of_another_type() {
    let dir = temp_dir("list-blocked-type");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = query(&mut c, &["SET", "str", "v"]);
    assert!(error_of(&mut c, &["BLPOP", "str", "1"]).starts_with("WRONGTYPE"));
    let url = node.url();
    let blocked = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        query::<Vec<String>>(&mut c, &["BLPOP", "q", "5"])
    });
    std::thread::sleep(Duration::from_millis(200));
    let _: () = query(&mut c, &["SET", "q", "now a string"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(int(&mut c, &["DEL", "q"]), 1);
    assert_eq!(int(&mut c, &["LPUSH", "q", "b"]), 1);
    assert_eq!(blocked.join().unwrap(), ["q", "b"]);
}
