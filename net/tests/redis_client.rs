//! The real `shoal` binary driven by the `redis` crate (RESP2 and RESP3) and by raw
//! sockets for malformed input.

mod common;

use common::{temp_dir, ShoalProcess};
use redis::{Commands, Value};
use std::time::Duration;

#[test]
fn strings_keyspace_and_namespaces_over_resp2() {
    let dir = temp_dir("resp2");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let () = c.set("greeting", "hello").unwrap();
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "hello");
    let old: String = redis::cmd("SET")
        .arg("greeting")
        .arg("hi")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, "hello");
    let nx: Option<String> = redis::cmd("SET")
        .arg("greeting")
        .arg("x")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, None);
    let xx: Option<String> = redis::cmd("SET")
        .arg("absent")
        .arg("x")
        .arg("XX")
        .query(&mut c)
        .unwrap();
    assert_eq!(xx, None);
    let () = c.mset(&[("a", "1"), ("b", "2"), ("c", "3")]).unwrap();
    let values: Vec<Option<String>> = c.mget(&["a", "b", "nope", "c"]).unwrap();
    assert_eq!(
        values,
        vec![Some("1".into()), Some("2".into()), None, Some("3".into())]
    );
    assert_eq!(c.exists::<_, i64>(&["a", "b", "nope"]).unwrap(), 2);
    assert_eq!(c.del::<_, i64>(&["a", "nope"]).unwrap(), 1);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(dbsize, 3);
    let mut keys: Vec<String> = c.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["b", "c", "greeting"]);
    let scanned: Vec<String> = c.scan_match("g*").unwrap().collect();
    assert_eq!(scanned, vec!["greeting"]);
    // Namespaces are separate.
    let () = redis::cmd("SELECT").arg(5).query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>("greeting").unwrap(), None);
    let () = c.set("greeting", "ns5").unwrap();
    let () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    let () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "hi");
    let err = redis::cmd("SELECT")
        .arg(16)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    let () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
}

#[test]
fn many_keys_scan_visits_each_once() {
    let dir = temp_dir("scan");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.set(format!("key:{i}"), i).ignore();
    }
    let () = pipe.query(&mut c).unwrap();
    let mut seen: Vec<String> = c.scan().unwrap().collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2000);
}

#[test]
fn server_introspection_commands() {
    let dir = temp_dir("introspect");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for field in [
        "redis_version:",
        "connected_clients:",
        "shoal_fsync:always",
        "# Keyspace",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
    // What `redis-cli --stat` reads: a missing field printed as memory 0B and
    // blocked clients -9223372036854775808.
    let field = |name: &str| -> Option<i64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(field("blocked_clients"), Some(0), "{info}");
    assert!(field("used_memory").is_some_and(|m| m > 0), "{info}");
    assert!(info.contains("used_memory_human:"), "{info}");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .query(&mut c)
        .unwrap();
    assert_eq!(config, vec!["appendonly", "yes", "appendfsync", "always"]);
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut c)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "tester");
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count >= 25);
    let docs: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("get")
        .query(&mut c)
        .unwrap();
    assert!(format!("{docs:?}").contains("summary"));
    // Unknown command: Redis-shaped error, connection still usable.
    let err = redis::cmd("FROBNICATE")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown command 'FROBNICATE'"),
        "{err}"
    );
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(0)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("invalid expire time"), "{err}");
    let err = redis::cmd("GET").query::<()>(&mut c).unwrap_err();
    assert!(
        err.to_string().contains("wrong number of arguments"),
        "{err}"
    );
    // What the calls above left in INFO's counters, as Redis names them.
    let info: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
    for field in [
        "cmdstat_ping:calls=1,",
        "cmdstat_set:calls=1,",
        "failed_calls=1",
        "errorstat_ERR:count=3",
        "role:master",
        "used_cpu_user:",
        "cluster_enabled:0",
    ] {
        assert!(
            info.contains(field),
            "INFO everything lacks {field}:\n{info}"
        );
    }
    let default: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(!default.contains("# Commandstats") && default.contains("# Errorstats"));
    let role: Value = redis::cmd("ROLE").query(&mut c).unwrap();
    assert_eq!(
        role,
        Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(0),
            Value::Array(vec![])
        ])
    );
}

#[test]
fn resp3_hello_and_replies() {
    let dir = temp_dir("resp3");
    let node = ShoalProcess::start(&dir, &[]);
    let client = redis::Client::open(format!("{}?protocol=resp3", node.url())).unwrap();
    let mut c = client.get_connection().unwrap();
    let () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut c).unwrap();
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 must reply with a map, got {hello:?}")
    };
    assert!(fields
        .iter()
        .any(|(k, v)| matches!((k, v), (Value::BulkString(k), Value::Int(3)) if k == b"proto")));
    let config: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query(&mut c)
        .unwrap();
    assert!(matches!(config, Value::Map(_)), "{config:?}");
}

#[test]
fn password_protects_everything_but_auth() {
    let dir = temp_dir("auth");
    let node = ShoalProcess::start(&dir, &["--requirepass", "s3cret"]);
    let mut c = node.client();
    let err = c.get::<_, Option<String>>("k").unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    let err = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    let () = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    let () = c.set("k", "v").unwrap();
    let client = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", node.port)).unwrap();
    let mut authed = client.get_connection().unwrap();
    assert_eq!(authed.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn siblings_from_concurrent_contexts_and_resolution() {
    let dir = temp_dir("siblings");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    // Two writers that both read nothing: concurrent, so both are kept (G2).
    let _: Value = redis::cmd("SHOAL.PUT")
        .arg("doc")
        .arg("from-a")
        .arg("CONTEXT")
        .arg("")
        .query(&mut c)
        .unwrap();
    let _: Value = redis::cmd("SHOAL.PUT")
        .arg("doc")
        .arg("from-b")
        .arg("CONTEXT")
        .arg("")
        .query(&mut c)
        .unwrap();
    let (context, siblings): (String, Vec<(String, i64, Option<String>)>) =
        redis::cmd("SHOAL.SIBLINGS")
            .arg("doc")
            .query(&mut c)
            .unwrap();
    let mut values: Vec<_> = siblings.iter().filter_map(|s| s.2.clone()).collect();
    values.sort();
    assert_eq!(values, vec!["from-a", "from-b"]);
    // A plain GET picks one winner deterministically.
    let winner: String = c.get("doc").unwrap();
    assert!(values.contains(&winner));
    assert_eq!(c.get::<_, String>("doc").unwrap(), winner);
    // A write with the full context resolves them.
    let _: Value = redis::cmd("SHOAL.PUT")
        .arg("doc")
        .arg("merged")
        .arg("CONTEXT")
        .arg(&context)
        .query(&mut c)
        .unwrap();
    let (_, siblings): (String, Vec<(String, i64, Option<String>)>) = redis::cmd("SHOAL.SIBLINGS")
        .arg("doc")
        .query(&mut c)
        .unwrap();
    assert_eq!(siblings.len(), 1);
    assert_eq!(siblings[0].2.as_deref(), Some("merged"));
}

/// `SHOAL.PUT doc value CONTEXT ""`: a write that covers nothing, so it adds
/// a sibling.
fn blind_put(
    c: &mut redis::Connection,
    value: impl redis::ToRedisArgs,
) -> redis::RedisResult<Value> {
    redis::cmd("SHOAL.PUT")
        .arg("doc")
        .arg(value)
        .arg("CONTEXT")
        .arg("")
        .query(c)
}

/// The 65th concurrent sibling (siblings_max = 64) is refused with SIBLINGS, the
/// key keeps its 64, and INFO counts the refusal and the largest set.
#[test]
fn a_write_past_the_sibling_cap_is_refused_and_counted() {
    let dir = temp_dir("sibling-cap");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..64 {
        blind_put(&mut c, format!("v{i}")).expect("under the cap");
    }
    let refused = blind_put(&mut c, "v64").expect_err("past the cap");
    assert_eq!(refused.code(), Some("SIBLINGS"), "{refused}");
    let (_, siblings): (String, Vec<(String, i64, Option<String>)>) = redis::cmd("SHOAL.SIBLINGS")
        .arg("doc")
        .query(&mut c)
        .unwrap();
    assert_eq!(siblings.len(), 64);
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    for line in [
        "shoal_siblings_max:64",
        "shoal_siblings_largest:64",
        "shoal_sibling_writes_refused:1",
        "shoal_sibling_merges_over_cap:0",
        "shoal_merges_over_record_limit:0",
    ] {
        assert!(info.lines().any(|l| l == line), "no {line} in {info}");
    }
}

/// Blind writes of large values are refused with SIBLINGS once the key's set
/// would take more than half a record (32 MiB of the 64 MiB default), so two
/// replicas' copies always merge; a write whose context covers the key
/// resolves it, and INFO counts the refusal.
#[test]
fn blind_writes_past_half_a_record_are_refused_and_a_covering_write_resolves() {
    let dir = temp_dir("sibling-bytes");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let value = |tag: u8| vec![tag; 12 << 20];
    blind_put(&mut c, value(b'a')).expect("12 MiB");
    blind_put(&mut c, value(b'b')).expect("24 MiB of siblings");
    let refused = blind_put(&mut c, value(b'c')).expect_err("36 MiB is over half a record");
    assert_eq!(refused.code(), Some("SIBLINGS"), "{refused}");
    assert!(refused.to_string().contains("half a record"), "{refused}");
    type Siblings = Vec<(String, i64, Option<Vec<u8>>)>;
    let (context, siblings): (String, Siblings) = redis::cmd("SHOAL.SIBLINGS")
        .arg("doc")
        .query(&mut c)
        .unwrap();
    assert_eq!(siblings.len(), 2, "the refused write left nothing");
    let _: Value = redis::cmd("SHOAL.PUT")
        .arg("doc")
        .arg("resolved")
        .arg("CONTEXT")
        .arg(&context)
        .query(&mut c)
        .expect("a covering write");
    let doc: String = redis::cmd("GET").arg("doc").query(&mut c).unwrap();
    assert_eq!(doc, "resolved");
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(
        info.lines().any(|l| l == "shoal_sibling_writes_refused:1"),
        "{info}"
    );
}

#[test]
fn malformed_and_oversized_input_gets_an_error_and_the_server_keeps_serving() {
    let dir = temp_dir("malformed");
    let node = ShoalProcess::start(&dir, &[]);
    let cases: &[(&[u8], &str)] = &[
        (b"*2\r\n$3\r\nGET\r\n$abc\r\n", "Protocol error"),
        (b"*1\r\n$999999999999\r\n", "Protocol error"),
        (b"*99999999999\r\n", "Protocol error"),
        (b"*1\r\nxyz\r\n", "Protocol error"),
        (b"SET \"unbalanced\r\n", "Protocol error"),
        (b"*1\r\n$3\r\nGETXX\r\n", "Protocol error"),
    ];
    for (input, expected) in cases {
        let reply = node.raw(input, Duration::from_millis(500));
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with('-') && text.contains(expected),
            "{input:?} -> {text:?}"
        );
    }
    // A huge inline line without a newline is cut off at the limit.
    let reply = node.raw(&vec![b'a'; 200 << 10], Duration::from_millis(500));
    assert!(String::from_utf8_lossy(&reply).contains("too big inline request"));
    // Inline commands work, and the server is still fine.
    let reply = node.raw(
        b"PING\r\nSET k \"a b\"\r\nGET k\r\n",
        Duration::from_millis(300),
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+PONG\r\n+OK\r\n$3\r\na b\r\n"
    );
    let mut c = node.client();
    assert_eq!(c.get::<_, String>("k").unwrap(), "a b");
}

#[test]
fn data_survives_a_clean_restart_and_the_directory_is_locked() {
    let dir = temp_dir("restart");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..100 {
        let () = c.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    // A second process on the same directory refuses to start.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "server",
            "--port",
            &common::free_port().to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));
    let port = node.port;
    node.kill9();
    let node = ShoalProcess::start_on(port, &dir, &[]);
    let mut c = node.client();
    for i in 0..100 {
        assert_eq!(
            c.get::<_, String>(format!("k{i}")).unwrap(),
            format!("v{i}")
        );
    }
}

/// SIGTERM (what `kill`, systemd and container runtimes send) stops the server
/// cleanly: it syncs the log and exits 0, and a restart finds every write.
#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = temp_dir("sigterm");
    let mut node = ShoalProcess::start(&dir, &["--fsync", "never"]);
    let mut c = node.client();
    for i in 0..100 {
        let () = c.set(format!("k{i}"), i).unwrap();
    }
    drop(c);
    // SAFETY: signalling the child process this test spawned.
    unsafe { libc::kill(node.child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    for i in 0..100 {
        let value: i64 = c.get(format!("k{i}")).unwrap();
        assert_eq!(value, i);
    }
}
