//! The operators' commands against the real `shoal` binary and the `redis`
//! crate: CLIENT LIST / KILL / PAUSE / UNPAUSE, SLOWLOG, LATENCY, MONITOR,
//! and CONFIG SET of what changes at run time.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};
use redis::Commands;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

/// `field=value` of one CLIENT LIST line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn named_client(node: &ShoalProcess, name: &str) -> (redis::Connection, String) {
    let mut c = node.client();
    let _: () = query(&mut c, &["CLIENT", "SETNAME", name]);
    let info: String = query(&mut c, &["CLIENT", "INFO"]);
    let id = field(info.trim(), "id").to_string();
    (c, id)
}

#[test]
fn client_list_shows_every_connection_and_kill_closes_the_chosen_one() {
    let dir = temp_dir("admin-clients");
    let node = ShoalProcess::start(&dir, &[]);
    let (mut a, a_id) = named_client(&node, "alpha");
    let (mut b, b_id) = named_client(&node, "beta");
    let _: () = b.set("k", "v").unwrap();
    let list: String = query(&mut a, &["CLIENT", "LIST"]);
    let lines: Vec<&str> = list.lines().collect();
    // (The start's readiness probe may still be listed, nameless.)
    assert!(lines.iter().any(|l| field(l, "name") == "alpha"), "{list}");
    let beta = lines.iter().find(|l| field(l, "name") == "beta").unwrap();
    assert_eq!(field(beta, "id"), b_id);
    assert_eq!(field(beta, "cmd"), "set", "{beta}");
    assert_eq!(field(beta, "laddr"), format!("127.0.0.1:{}", node.port));
    let only_a: String = query(&mut a, &["CLIENT", "LIST", "ID", &a_id]);
    assert_eq!(only_a.lines().count(), 1);
    assert_eq!(field(only_a.trim(), "cmd"), "client|list");

    // SKIPME yes (the default) spares the asker; a filter that matches no one
    // kills no one; the old form answers an error for an unknown address.
    let a_addr = field(only_a.trim(), "addr").to_string();
    assert_eq!(
        query::<i64>(&mut a, &["CLIENT", "KILL", "ADDR", &a_addr]),
        0
    );
    assert_eq!(query::<i64>(&mut a, &["CLIENT", "KILL", "ID", "999999"]), 0);
    assert!(error_of(&mut a, &["CLIENT", "KILL", "10.9.9.9:1"]).contains("No such client"));
    assert!(error_of(&mut a, &["CLIENT", "KILL", "ID", "x"]).contains("client-id"));

    assert_eq!(query::<i64>(&mut a, &["CLIENT", "KILL", "ID", &b_id]), 1);
    assert!(
        b.get::<_, Option<String>>("k").is_err(),
        "beta was not closed"
    );
    let after: String = query(&mut a, &["CLIENT", "LIST"]);
    assert!(
        !after.lines().any(|l| field(l, "name") == "beta"),
        "{after}"
    );
    assert_eq!(a.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn a_write_pause_holds_writes_until_unpaused_and_reads_go_on() {
    let dir = temp_dir("admin-pause");
    let node = ShoalProcess::start(&dir, &[]);
    let mut admin = node.client();
    let mut reader = node.client();
    let _: () = admin.set("k", "before").unwrap();
    let _: () = query(&mut admin, &["CLIENT", "PAUSE", "60000", "WRITE"]);
    assert_eq!(reader.get::<_, String>("k").unwrap(), "before");

    let (done, answered) = mpsc::channel();
    let url = node.url();
    let writer = std::thread::spawn(move || {
        let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
        let reply: redis::RedisResult<()> = w.set("k", "after");
        done.send(reply.is_ok()).unwrap();
    });
    // The pause lasts a minute: the write cannot be answered in this second.
    assert!(answered.recv_timeout(Duration::from_secs(1)).is_err());
    assert_eq!(reader.get::<_, String>("k").unwrap(), "before");
    let _: () = query(&mut admin, &["CLIENT", "UNPAUSE"]);
    assert!(answered.recv_timeout(Duration::from_secs(30)).unwrap());
    writer.join().unwrap();
    assert_eq!(reader.get::<_, String>("k").unwrap(), "after");
    assert!(error_of(&mut admin, &["CLIENT", "PAUSE", "-1"]).contains("timeout"));
    assert!(error_of(&mut admin, &["CLIENT", "PAUSE", "10", "SOME"]).contains("syntax"));
}

#[test]
fn slowlog_keeps_what_passed_its_threshold_cut_to_its_limits() {
    let dir = temp_dir("admin-slowlog");
    let node = ShoalProcess::start(&dir, &[]);
    let (mut c, _) = named_client(&node, "logged");
    assert_eq!(
        query::<Vec<String>>(&mut c, &["CONFIG", "GET", "slowlog-log-slower-than"]),
        vec!["slowlog-log-slower-than", "10000"]
    );
    let _: () = query(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let long = "x".repeat(300);
    let _: () = c.set("k", &long).unwrap();
    let entries: Vec<redis::Value> = query(&mut c, &["SLOWLOG", "GET", "1"]);
    assert_eq!(entries.len(), 1);
    let redis::Value::Array(entry) = &entries[0] else {
        panic!("entry {entries:?}")
    };
    let args: Vec<String> = redis::from_redis_value(&entry[3]).unwrap();
    assert_eq!(args[..2], ["SET", "k"]);
    assert_eq!(args[2], format!("{}... (172 more bytes)", "x".repeat(128)));
    assert_eq!(
        redis::from_redis_value::<String>(&entry[5]).unwrap(),
        "logged"
    );

    let _: () = query(&mut c, &["SLOWLOG", "RESET"]);
    // The reset itself took longer than 0 us, as in Redis.
    assert_eq!(query::<i64>(&mut c, &["SLOWLOG", "LEN"]), 1);
    let _: () = query(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(
        query::<i64>(&mut c, &["SLOWLOG", "LEN"]),
        2,
        "the reset and the first LEN; nothing after the threshold went to -1"
    );

    let bad = error_of(&mut c, &["CONFIG", "SET", "slowlog-max-len", "-5"]);
    assert!(bad.contains("slowlog-max-len"), "{bad}");
    let unknown = error_of(&mut c, &["CONFIG", "SET", "appendfsync", "no"]);
    assert!(
        unknown.contains("appendfsync") && unknown.contains("not supported"),
        "{unknown}"
    );
    // A bad pair changes nothing, not even the good pair before it.
    let _ = error_of(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "5",
            "slowlog-max-len",
            "x",
        ],
    );
    assert_eq!(
        query::<Vec<String>>(&mut c, &["CONFIG", "GET", "slowlog-max-len"]),
        vec!["slowlog-max-len", "128"]
    );
}

#[test]
fn a_command_held_by_a_pause_is_a_latency_spike_and_a_slow_entry() {
    let dir = temp_dir("admin-latency");
    let node = ShoalProcess::start(&dir, &[]);
    let mut admin = node.client();
    let mut c = node.client();
    assert_eq!(
        query::<Vec<redis::Value>>(&mut admin, &["LATENCY", "LATEST"]).len(),
        0
    );
    let _: () = query(
        &mut admin,
        &["CONFIG", "SET", "latency-monitor-threshold", "1"],
    );
    // An ALL pause of half a second holds the GET for what is left of it.
    let _: () = query(&mut admin, &["CLIENT", "PAUSE", "500", "ALL"]);
    let _: Option<String> = c.get("k").unwrap();
    // (On a loaded machine other commands may pass 1 ms too.)
    let latest: Vec<(String, i64, i64, i64)> = query(&mut c, &["LATENCY", "LATEST"]);
    let (_, _at, ms, max_ms) = latest
        .iter()
        .find(|(event, ..)| event == "fast-command")
        .unwrap_or_else(|| panic!("no fast-command spike: {latest:?}"));
    assert!(*ms >= 1 && max_ms >= ms, "{latest:?}");
    let history: Vec<(i64, i64)> = query(&mut c, &["LATENCY", "HISTORY", "fast-command"]);
    assert!(history.iter().any(|(_, ms)| *ms >= 1), "{history:?}");
    let slow: Vec<redis::Value> = query(&mut c, &["SLOWLOG", "GET"]);
    assert!(!slow.is_empty(), "the held GET took over 10 ms");
    let doctor: String = query(&mut c, &["LATENCY", "DOCTOR"]);
    assert!(doctor.contains("fast-command"), "{doctor}");
    // Off first, so that nothing after the reset can be a spike.
    let _: () = query(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "0"]);
    assert!(query::<i64>(&mut c, &["LATENCY", "RESET"]) >= 1);
    assert_eq!(
        query::<Vec<redis::Value>>(&mut c, &["LATENCY", "LATEST"]).len(),
        0
    );
    assert!(error_of(&mut c, &["LATENCY", "NOPE"]).contains("LATENCY HELP"));
}

#[test]
fn keyspace_hits_and_misses_count_reading_lookups_until_resetstat() {
    let dir = temp_dir("admin-keyspace");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = c.set("here", "v").unwrap();
    let _: Option<String> = c.get("here").unwrap();
    let _: Option<String> = c.get("gone").unwrap();
    let _: i64 = redis::cmd("EXISTS")
        .arg("here")
        .arg("gone")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let stats = |c: &mut redis::Connection| -> (String, String) {
        let info: String = query(c, &["INFO", "stats"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
                .to_string()
        };
        (field("keyspace_hits:"), field("keyspace_misses:"))
    };
    assert_eq!(stats(&mut c), ("2".into(), "3".into()));
    let _: () = query(&mut c, &["CONFIG", "RESETSTAT"]);
    assert_eq!(stats(&mut c), ("0".into(), "0".into()));
}

#[test]
fn info_everything_has_redis_sections_and_a_bad_section_is_empty() {
    let dir = temp_dir("admin-info");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let info: String = query(&mut c, &["INFO", "everything"]);
    let sections: Vec<&str> = info.lines().filter(|l| l.starts_with("# ")).collect();
    for wanted in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
    ] {
        assert!(sections.contains(&wanted), "{wanted} missing: {sections:?}");
    }
    for wanted in ["# Replication", "# CPU", "# Modules", "# Commandstats"] {
        assert!(sections.contains(&wanted), "{wanted} missing: {sections:?}");
    }
    for wanted in ["# Errorstats", "# Cluster", "# Keyspace"] {
        assert!(sections.contains(&wanted), "{wanted} missing: {sections:?}");
    }
    assert!(sections.len() >= 12, "{sections:?}");
    let none: String = query(&mut c, &["INFO", "no-such-section"]);
    assert_eq!(none, "");
    // Command tips tell Redis Cluster clients to fan DBSIZE out and sum it.
    let info: Vec<Vec<redis::Value>> = query(&mut c, &["COMMAND", "INFO", "dbsize"]);
    let tips: Vec<String> = redis::from_redis_value(&info[0][7]).unwrap();
    assert_eq!(
        tips,
        ["request_policy:all_shards", "response_policy:agg_sum"]
    );
}

#[test]
fn monitor_streams_each_command_with_secrets_redacted() {
    let dir = temp_dir("admin-monitor");
    let node = ShoalProcess::start(&dir, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"MONITOR\r\n").unwrap();
    let mut feed = BufReader::new(stream);
    let mut line = String::new();
    feed.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");

    let mut c = node.client();
    let _: () = c.set("k", "a \"b\"\n").unwrap();
    let _ = redis::cmd("AUTH")
        .arg("hunter2")
        .query::<redis::Value>(&mut c);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        line.clear();
        feed.read_line(&mut line).unwrap();
        if !line.contains("\"CLIENT\"") {
            seen.push(line.clone());
        }
    }
    assert!(
        seen[0].starts_with('+') && seen[0].contains(" [0 127.0.0.1:"),
        "{seen:?}"
    );
    assert!(
        seen[0].ends_with("] \"SET\" \"k\" \"a \\\"b\\\"\\n\"\r\n"),
        "{seen:?}"
    );
    assert!(
        seen[1].ends_with("] \"AUTH\" \"(redacted)\"\r\n"),
        "{seen:?}"
    );
    assert!(!seen[1].contains("hunter2"));
    let list: String = query(&mut c, &["CLIENT", "LIST"]);
    assert!(list.lines().any(|l| field(l, "flags") == "O"), "{list}");
}

#[test]
fn shutdown_stops_the_node_after_syncing_and_sends_no_reply() {
    let dir = temp_dir("shutdown");
    let mut node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = c.set("kept", "yes").unwrap();
    let abort = error_of(&mut c, &["SHUTDOWN", "ABORT"]);
    assert!(abort.contains("No shutdown in progress."), "{abort}");
    let bad = error_of(&mut c, &["SHUTDOWN", "LATER"]);
    assert!(bad.contains("syntax error"), "{bad}");
    let reply: redis::RedisResult<redis::Value> =
        redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
    assert!(
        reply.is_err(),
        "SHUTDOWN answered {reply:?}; Redis closes without a reply"
    );
    let status = node.child.wait().expect("the node exits");
    assert!(status.success(), "exit status {status}");
    let again = ShoalProcess::start(&dir, &[]);
    let value: Option<String> = again.client().get("kept").unwrap();
    assert_eq!(value.as_deref(), Some("yes"));
}

#[test]
fn maxmemory_refuses_growing_commands_and_transactions_that_hold_one() {
    let dir = temp_dir("maxmemory");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let mut other = node.client();
    let _: () = c.set("x", "value").unwrap();
    let _: () = query(&mut c, &["MULTI"]);
    let _: () = query(&mut c, &["SET", "x", "1"]);
    let _: () = query(&mut c, &["GET", "x"]);
    let _: () = query(&mut other, &["CONFIG", "SET", "maxmemory", "1"]);
    let aborted = error_of(&mut c, &["EXEC"]);
    assert!(
        aborted.contains("Transaction discarded") && aborted.contains("OOM"),
        "{aborted}"
    );
    let refused = error_of(&mut c, &["SET", "x", "2"]);
    assert!(
        refused.contains("OOM") && refused.contains("maxmemory"),
        "{refused}"
    );
    let value: String = c.get("x").unwrap();
    assert_eq!(value, "value", "reads still run");
    let _: () = query(&mut c, &["MULTI"]);
    let _: () = query(&mut c, &["GET", "x"]);
    let replies: Vec<String> = query(&mut c, &["EXEC"]);
    assert_eq!(replies, vec!["value".to_string()], "a read-only EXEC runs");
    let policy = error_of(
        &mut other,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    assert!(policy.contains("never evicts"), "{policy}");
    let max: Vec<String> = query(&mut other, &["CONFIG", "GET", "maxmemory"]);
    assert_eq!(max, vec!["maxmemory".to_string(), "1".to_string()]);
    let _: () = query(&mut other, &["CONFIG", "SET", "maxmemory", "0"]);
    let _: () = c.set("x", "2").unwrap();
}
