//! The live dashboard at `GET /`: one self-contained page (no outside
//! resources) that polls `GET /status.json` every second and draws members
//! and their health, partitions per node, handoffs and restores in flight,
//! keys, operations per second, latency percentiles and fsync time over the
//! last minutes, and replication lag. The history lives in the page; the node
//! only answers "now" (cumulative counters and histogram buckets), so an open
//! dashboard costs the node one small JSON answer per second.
//!
//! Must not touch: how the numbers are counted (`metrics` reads the same ones).

use crate::histogram::HistogramSnapshot;
use crate::shared::Shared;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The page: HTML, CSS and the script that polls and draws.
pub const PAGE: &str = include_str!("dashboard.html");

/// What the page polls: this node now.
pub fn status_json(shared: &Shared) -> String {
    let commit = shared.storage.commit_stats();
    let timings = shared.storage.commit_timings();
    let (keys, disk_bytes, dead_bytes, read_only) = shared.storage.read(|s| {
        let (disk, dead) = s.disk_usage_bytes();
        let keys: u64 = s.namespaces().into_iter().map(|(_, n)| n).sum();
        (keys, disk, dead, s.is_poisoned().map(|r| r.to_string()))
    });
    let mut status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "port": shared.config.port,
        "uptime_s": shared.started.elapsed().as_secs(),
        "clients": shared.clients_connected.load(Ordering::Relaxed),
        "commands_total": shared.commands_total.load(Ordering::Relaxed),
        "keys": keys,
        "disk_bytes": disk_bytes,
        "dead_bytes": dead_bytes,
        "read_only": read_only,
        "fsync": shared.storage.config().fsync.as_str(),
        "syncs": commit.syncs,
        "latency_us": buckets(&shared.command_stats.latency_micros.snapshot()),
        "fsync_us": buckets(&timings.sync_micros.snapshot()),
        "cluster": Value::Null,
    });
    if let Some(cluster) = &shared.cluster {
        status["cluster"] = cluster_json(cluster);
    }
    status.to_string()
}

/// A histogram as `[[upper bound, count], ...]`, the last bound `null` (+Inf).
fn buckets(h: &HistogramSnapshot) -> Value {
    Value::Array(
        h.buckets
            .iter()
            .map(|(bound, n)| json!([(*bound != u64::MAX).then_some(*bound), n]))
            .collect(),
    )
}

fn cluster_json(cluster: &crate::cluster::Cluster) -> Value {
    let members: Vec<Value> = cluster
        .members()
        .iter()
        .map(|m| {
            json!({
                "node": m.node,
                "addr": m.addr.client,
                "state": m.state.as_str(),
                "reachable": m.reachable,
                "in_ring": m.in_ring,
                "partitions": m.partitions,
                "coordinating": m.coordinating,
                "incoming": m.incoming,
                "silent_ms": m.silent_ms,
            })
        })
        .collect();
    let lag: Vec<Value> = cluster
        .replication_lag()
        .into_iter()
        .map(|(peer, keys, since_exchange_ms, since_in_sync_ms)| {
            json!({"peer": peer, "keys_differing": keys, "since_exchange_ms": since_exchange_ms, "since_in_sync_ms": since_in_sync_ms})
        })
        .collect();
    let handoff = cluster.handoff_now().map(|h| {
        json!({"ring_version": h.ring_version, "partition": h.partition, "source": h.source, "keys_pulled": h.keys_pulled})
    });
    json!({
        "me": cluster.me(),
        "ring_version": cluster.map().version(),
        "members": members,
        "lag": lag,
        "handoff": handoff,
        "restoring": cluster.restoring(),
        "hints_pending": cluster.hints_pending(),
        "quorum_failures": cluster.stats.quorum_failures.load(Ordering::Relaxed),
    })
}
