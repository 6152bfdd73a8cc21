//! The operators' HTTP port of the real `shoal` binary: GET /metrics parsed as
//! OpenMetrics text and checked against what the `redis` client did, and the
//! dashboard at GET / rendered by a real headless browser (Debian's chromium).

mod common;

use common::{free_port, temp_dir, ShoalProcess};
use redis::Commands;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET `path` over HTTP/1.1; (status line, headers, body).
fn http_get(port: u16, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the http port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// One sample: metric name with its labels as written, and its value.
type Samples = BTreeMap<String, f64>;

/// Parse OpenMetrics text: every sample line is `name{labels} value`, every
/// family has a TYPE line, and the text ends with `# EOF`.
fn parse(text: &str) -> Samples {
    assert!(text.ends_with("# EOF\n"), "no EOF marker: {text}");
    let mut samples = Samples::new();
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "sample {name} before its TYPE line"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

/// A histogram's buckets never decrease and its +Inf bucket is its count.
fn check_histogram(samples: &Samples, name: &str) -> f64 {
    let buckets: Vec<(&String, f64)> = samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{name}_bucket{{")))
        .map(|(s, v)| (s, *v))
        .collect();
    assert!(!buckets.is_empty(), "{name} has no buckets");
    let mut by_bound: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(series, v)| {
            let bound = series
                .split("le=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"}");
            (
                if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().unwrap()
                },
                *v,
            )
        })
        .collect();
    by_bound.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(
        by_bound.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}: buckets decrease"
    );
    let count = samples[&format!("{name}_count")];
    assert_eq!(
        by_bound.last().unwrap(),
        &(f64::INFINITY, count),
        "{name}: +Inf is not the count"
    );
    count
}

#[test]
fn metrics_count_what_clients_did_in_redis_exporter_names() {
    let dir = temp_dir("metrics");
    let http_port = free_port();
    let node = ShoalProcess::start(&dir, &["--http-port", &http_port.to_string()]);
    let mut c = node.client();
    for i in 0..25 {
        let () = c.set(format!("k{i}"), i).unwrap();
    }
    let _: Option<String> = c.get("k3").unwrap();
    let _: Vec<Option<String>> = c.mget(&["k1", "nope"]).unwrap();
    let () = redis::cmd("SELECT").arg(2).query(&mut c).unwrap();
    let () = c.set("other", 1).unwrap();
    let refused = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg("0")
        .query::<()>(&mut c);
    assert!(refused.is_err());

    let (status, headers, body) = http_get(http_port, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let samples = parse(&body);
    assert_eq!(samples["redis_up"], 1.0);
    assert_eq!(
        samples["redis_keyspace_hits_total"], 2.0,
        "GET k3, MGET's k1"
    );
    assert_eq!(samples["redis_keyspace_misses_total"], 1.0, "MGET's nope");
    assert_eq!(samples["redis_commands_total{cmd=\"set\"}"], 27.0);
    assert_eq!(samples["redis_commands_total{cmd=\"get\"}"], 1.0);
    assert_eq!(
        samples["redis_commands_failed_calls_total{cmd=\"set\"}"],
        1.0
    );
    assert!(samples["redis_commands_duration_seconds_total{cmd=\"set\"}"] > 0.0);
    assert_eq!(samples["redis_errors_total{err=\"ERR\"}"], 1.0);
    assert_eq!(samples["redis_db_keys{db=\"db0\"}"], 25.0);
    assert_eq!(samples["redis_db_keys{db=\"db2\"}"], 1.0);
    assert!(samples["redis_connected_clients"] >= 1.0);
    assert!(samples["redis_memory_used_bytes"] > 0.0);
    // Every command the server counted is in the latency histogram; the 26
    // durable SETs each waited for a sync (fsync = always).
    let commands = check_histogram(&samples, "shoal_command_duration_seconds");
    assert!(commands >= 29.0, "{commands} commands in the histogram");
    let syncs = check_histogram(&samples, "shoal_fsync_duration_seconds");
    assert!((1.0..=26.0).contains(&syncs), "{syncs} syncs");
    assert_eq!(samples["shoal_fsyncs_total"], syncs);
    let batches = check_histogram(&samples, "shoal_group_commit_batch_ops");
    assert_eq!(
        samples["shoal_group_commit_batch_ops_sum"], 26.0,
        "{batches} batches"
    );
    assert_eq!(
        samples["shoal_writes_refused_total{cause=\"siblings\"}"],
        0.0
    );

    let (status, _, _) = http_get(http_port, "/nope");
    assert!(status.contains(" 404 "), "{status}");
    // The Redis port is unaffected by the HTTP one.
    assert_eq!(c.get::<_, i64>("other").unwrap(), 1);
}

/// Find Debian's chromium. `ci/test` installs it and sets
/// SHOAL_REQUIRE_BROWSER=1, so there a missing browser fails the test.
fn chromium() -> Option<String> {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {candidate}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if found.is_some() {
            return found;
        }
    }
    assert!(
        std::env::var_os("SHOAL_REQUIRE_BROWSER").is_none(),
        "SHOAL_REQUIRE_BROWSER is set but no chromium is installed"
    );
    None
}

/// The page's numbers are drawn by its script from /status.json, so they are
/// in the DOM a browser built, not in the HTML the node sent.
#[test]
fn the_dashboard_renders_the_node_in_a_real_browser() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium (ci/test installs it)");
        return;
    };
    let dir = temp_dir("dashboard");
    let http_port = free_port();
    let node = ShoalProcess::start(&dir, &["--http-port", &http_port.to_string()]);
    let mut c = node.client();
    let pairs: Vec<(String, i64)> = (0..1234).map(|i| (format!("d{i}"), i)).collect();
    let () = c.mset(&pairs).unwrap();
    let (_, _, source) = http_get(http_port, "/");
    assert!(
        !source.contains("1,234") && !source.contains(">1234<"),
        "the count is in the source"
    );
    let profile = temp_dir("chromium-profile");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("id=\"keys\">1,234<") || dom.contains("id=\"keys\">1234<"),
        "keys not rendered; stderr: {}\nDOM: {dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("class=\"alive\">serving<"),
        "health not rendered: {dom}"
    );
    assert!(
        dom.contains(&format!("port {}", node.port)),
        "node line not rendered: {dom}"
    );
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "the page could not poll: {dom}"
    );
}
