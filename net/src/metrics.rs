//! GET /metrics: a node's numbers in the Prometheus / OpenMetrics text format,
//! encoded by `prometheus-client`. Where redis_exporter has a name for a
//! number, it is used (`redis_connected_clients`, `redis_commands_total{cmd}`,
//! `redis_db_keys{db}`, ...), so dashboards built for Redis read Shoal
//! unchanged; what only Shoal has is `shoal_*`.
//!
//! A scrape reads everything once into a [`Scrape`] (plain numbers), then
//! encodes it: nothing is locked while the text is written.
//!
//! A cluster member adds quorum failures, hints, handoff and restore progress,
//! anti-entropy lag per peer and members' states, read from the driver's
//! counters and status methods.
//!
//! Must not touch: how numbers are counted (`command_stats`, `histogram`,
//! `storage`, `cluster`), HTTP (`http`).

use crate::cluster::{Cluster, ClusterStats};
use crate::commands::COMMANDS;
use crate::histogram::HistogramSnapshot;
use crate::info::rss_bytes;
use crate::shared::Shared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Labels of one sample, e.g. `[("cmd", "get")]`.
type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug)]
enum Value {
    Counter(u64),
    /// A counter of seconds (redis_exporter's `*_duration_seconds_total`).
    CounterSeconds(f64),
    Gauge(i64),
    /// A histogram whose observations are in units of `scale` (1e-6: micros
    /// exported as seconds; 1: counts).
    Histogram(HistogramSnapshot, f64),
}

/// One metric: its name (without `_total`, which counters get on encoding),
/// help, and samples.
#[derive(Clone, Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Labels, Value)>,
}

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn one(&mut self, name: &'static str, help: &'static str, value: Value) {
        self.families.push(Family {
            name,
            help,
            samples: vec![(Vec::new(), value)],
        });
    }

    fn labelled(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, Value)>) {
        self.families.push(Family {
            name,
            help,
            samples,
        });
    }
}

/// The OpenMetrics text for `shared`'s node now.
pub fn render(shared: &Shared) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(read(shared)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding into a String cannot fail");
    text
}

/// Read every number of the node once.
pub fn read(shared: &Shared) -> Scrape {
    let mut scrape = Scrape::default();
    server_families(shared, &mut scrape);
    command_families(shared, &mut scrape);
    store_families(shared, &mut scrape);
    if let Some(cluster) = &shared.cluster {
        cluster_families(cluster, &mut scrape);
    }
    scrape
}

fn server_families(shared: &Shared, scrape: &mut Scrape) {
    use Value::{Counter, Gauge};
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    scrape.one("redis_up", "1 while the node serves.", Gauge(1));
    let uptime_s = shared.started.elapsed().as_secs();
    scrape.one(
        "redis_uptime_in_seconds",
        "Seconds since the node started.",
        Gauge(uptime_s as i64),
    );
    let clients = shared.clients_connected.load(Ordering::Relaxed);
    scrape.one(
        "redis_connected_clients",
        "Client connections open now.",
        Gauge(clients as i64),
    );
    scrape.one(
        "redis_blocked_clients",
        "Clients blocked in a command (BLPOP, BRPOP, BLMOVE, BLMPOP).",
        Gauge(crate::blocking::BLOCKED_CLIENTS.load(std::sync::atomic::Ordering::Relaxed) as i64),
    );
    scrape.one(
        "redis_config_maxclients",
        "The client connection limit.",
        Gauge(shared.config.clients_max as i64),
    );
    scrape.one(
        "redis_connections_received",
        "Client connections accepted.",
        Counter(load(&shared.connections_total)),
    );
    scrape.one(
        "redis_rejected_connections",
        "Client connections refused at the limit.",
        Counter(load(&shared.connections_rejected)),
    );
    scrape.one(
        "redis_commands_processed",
        "Requests run (including refused ones).",
        Counter(load(&shared.commands_total)),
    );
    let (hits, misses) = shared.keyspace.counts();
    let lookups = "Key lookups by reading commands that found a live key.";
    scrape.one("redis_keyspace_hits", lookups, Counter(hits));
    let lookups = "Key lookups by reading commands that found no live key.";
    scrape.one("redis_keyspace_misses", lookups, Counter(misses));
    scrape.one(
        "redis_memory_used_bytes",
        "Resident set size of the process.",
        Gauge(rss_bytes() as i64),
    );
}

fn command_families(shared: &Shared, scrape: &mut Scrape) {
    let stats = &shared.command_stats;
    let counted: Vec<(String, crate::command_stats::CommandCounts)> = COMMANDS
        .iter()
        .enumerate()
        .map(|(kind, spec)| (spec.name.to_string(), stats.counts(kind)))
        .filter(|(_, counts)| counts.calls > 0)
        .collect();
    let per_command = |value: &dyn Fn(&crate::command_stats::CommandCounts) -> Value| {
        counted
            .iter()
            .map(|(name, counts)| (vec![("cmd", name.clone())], value(counts)))
            .collect()
    };
    scrape.labelled(
        "redis_commands",
        "Calls per command.",
        per_command(&|c| Value::Counter(c.calls)),
    );
    scrape.labelled(
        "redis_commands_failed_calls",
        "Calls per command answered with an error.",
        per_command(&|c| Value::Counter(c.failed)),
    );
    scrape.labelled(
        "redis_commands_duration_seconds",
        "Time per command, from its request parsed to its reply known.",
        per_command(&|c| Value::CounterSeconds(c.micros as f64 / 1e6)),
    );
    let errors = stats
        .errors()
        .into_iter()
        .map(|(code, n)| (vec![("err", code)], Value::Counter(n)))
        .collect();
    scrape.labelled("redis_errors", "Error replies by their code.", errors);
    scrape.one(
        "shoal_command_duration_seconds",
        "Latency of every command, request parsed to reply known (a write's includes its fsync).",
        Value::Histogram(stats.latency_micros.snapshot(), 1e-6),
    );
}

fn store_families(shared: &Shared, scrape: &mut Scrape) {
    use Value::{Counter, Gauge};
    let (keys, disk, dead, segments, stats, read_only) = shared.storage.read(|s| {
        let (disk, dead) = s.disk_usage_bytes();
        let keys = s.namespaces();
        (
            keys,
            disk,
            dead,
            s.segment_count(),
            s.stats(),
            s.is_poisoned().is_some(),
        )
    });
    let db_keys = keys
        .into_iter()
        .map(|(ns, n)| (vec![("db", format!("db{ns}"))], Gauge(n as i64)))
        .collect();
    scrape.labelled(
        "redis_db_keys",
        "Live keys per namespace (database).",
        db_keys,
    );
    let timings = shared.storage.commit_timings();
    let commit = shared.storage.commit_stats();
    scrape.one(
        "shoal_fsync_duration_seconds",
        "Time each group-commit sync took.",
        Value::Histogram(timings.sync_micros.snapshot(), 1e-6),
    );
    scrape.one(
        "shoal_group_commit_batch_ops",
        "Operations per published group-commit batch.",
        Value::Histogram(timings.batch_ops.snapshot(), 1.0),
    );
    scrape.one(
        "shoal_fsyncs",
        "Group-commit syncs started.",
        Counter(commit.syncs),
    );
    scrape.one(
        "shoal_fsync_failures",
        "Syncs that failed (the store turns read-only).",
        Counter(stats.syncs_failed),
    );
    scrape.one(
        "shoal_store_read_only",
        "1 when a failed sync made the store read-only until restart.",
        Gauge(i64::from(read_only)),
    );
    scrape.one(
        "shoal_disk_bytes",
        "Bytes of segment files.",
        Gauge(disk as i64),
    );
    scrape.one(
        "shoal_dead_bytes",
        "Bytes of segment files that compaction may reclaim.",
        Gauge(dead as i64),
    );
    scrape.one("shoal_segments", "Segment files.", Gauge(segments as i64));
    compaction_families(&stats, scrape);
    scrub_families(shared.storage.scrub_stats(), scrape);
}

/// The scrubber's walk and the damage it and reads found (`scrub`).
fn scrub_families(scrub: &crate::scrub::ScrubStats, scrape: &mut Scrape) {
    use std::sync::atomic::Ordering::Relaxed;
    let families = [
        ("shoal_scrub_passes", "Scrubber walks over every live record finished.", &scrub.passes),
        ("shoal_scrub_records", "Records the scrubber read.", &scrub.records_read),
        ("shoal_scrub_bytes", "Bytes the scrubber read.", &scrub.bytes_read),
        (
            "shoal_damaged_records_found",
            "Damaged records found by the scrubber or reads (a cluster member restores them from its replicas).",
            &scrub.records_damaged,
        ),
    ];
    for (name, help, counter) in families {
        scrape.one(name, help, Value::Counter(counter.load(Relaxed)));
    }
}

/// Compaction, siblings and the store's refusals.
fn compaction_families(stats: &shoal_engine::store::StoreStats, scrape: &mut Scrape) {
    use Value::{Counter, Gauge};
    scrape.one(
        "shoal_compactions",
        "Compaction steps done.",
        Counter(stats.compactions_done),
    );
    scrape.one(
        "shoal_compaction_rewritten_bytes",
        "Bytes compaction copied forward.",
        Counter(stats.compaction_bytes_rewritten),
    );
    scrape.one(
        "shoal_tombstones_collected",
        "Delete markers collected by compaction.",
        Counter(stats.tombstones_collected),
    );
    scrape.one(
        "shoal_siblings_largest",
        "Most siblings one key held in a write since start.",
        Gauge(stats.siblings_largest as i64),
    );
    scrape.one(
        "shoal_sibling_merges_over_cap",
        "Replica merges kept whole above the sibling cap.",
        Counter(stats.sibling_merges_over_cap),
    );
    scrape.one(
        "shoal_records_unreadable",
        "Reads (and scrub reads) that found a record damaged since start.",
        Counter(stats.records_unreadable),
    );
    scrape.one(
        "shoal_damaged_records_replaced",
        "Records that no longer read which a replica's copy replaced (cluster restore).",
        Counter(stats.damaged_records_replaced),
    );
    scrape.one(
        "shoal_merges_over_record_limit",
        "Replica merges refused: the merged siblings are over the record limit.",
        Counter(stats.merges_over_record_limit),
    );
    let refused = vec![
        (
            vec![("cause", "siblings".to_string())],
            Counter(stats.sibling_writes_refused),
        ),
        (
            vec![("cause", "disk_full".to_string())],
            Counter(stats.disk_full_refusals),
        ),
    ];
    scrape.labelled(
        "shoal_writes_refused",
        "Client writes the store refused, by cause.",
        refused,
    );
}

impl Scrape {
    fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.one(name, help, Value::Counter(value));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, value: i64) {
        self.one(name, help, Value::Gauge(value));
    }

    /// A gauge with one sample per value of `label`.
    fn gauges(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        values: Vec<(String, i64)>,
    ) {
        let samples = values
            .into_iter()
            .map(|(l, v)| (vec![(label, l)], Value::Gauge(v)))
            .collect();
        self.labelled(name, help, samples);
    }
}

fn cluster_families(cluster: &Cluster, sink: &mut Scrape) {
    cluster_counters(cluster, sink);
    let members = cluster.members();
    let states: Vec<(String, i64)> = ["alive", "suspect", "down"]
        .into_iter()
        .map(|state| {
            let n = members.iter().filter(|m| m.state.as_str() == state).count();
            (state.to_string(), n as i64)
        })
        .collect();
    sink.gauges(
        "shoal_cluster_members",
        "Members of the map by the detector's state here.",
        "state",
        states,
    );
    let incoming: usize = members.iter().map(|m| m.incoming).sum();
    sink.gauge(
        "shoal_handoff_partitions_pending",
        "Partitions some member must still pull.",
        incoming as i64,
    );
    sink.gauge(
        "shoal_hints_pending",
        "Hints held here for owners that were down.",
        cluster.hints_pending() as i64,
    );
    sink.gauge(
        "shoal_markers_waiting",
        "Agreed delete markers waiting out the settle delay.",
        cluster.markers_waiting() as i64,
    );
    let (restored, restoring_from) = cluster.restoring().unwrap_or((0, 0));
    sink.gauge(
        "shoal_restore_members_pending",
        "While restoring from replicas: members not yet merged in full (0: not restoring).",
        (restoring_from - restored) as i64,
    );
    let lag = cluster.replication_lag();
    let differing = lag
        .iter()
        .map(|(peer, keys, ..)| (peer.to_string(), *keys as i64))
        .collect();
    sink.gauges(
        "shoal_anti_entropy_keys_differing",
        "Keys that differed with each peer at the last full exchange.",
        "peer",
        differing,
    );
    let since_sync = lag
        .iter()
        .map(|(peer, _, _, in_sync_ms)| (peer.to_string(), in_sync_ms.map_or(-1, |ms| ms as i64)))
        .collect();
    sink.gauges(
        "shoal_anti_entropy_since_in_sync_ms",
        "Milliseconds since each peer was last found in sync (-1: never).",
        "peer",
        since_sync,
    );
}

/// Which of the cluster driver's counters.
type CounterOf = fn(&ClusterStats) -> &AtomicU64;

/// The cluster driver's counters, as exported: name, help, which counter.
const CLUSTER_COUNTERS: &[(&str, &str, CounterOf)] = &[
    (
        "shoal_writes_coordinated",
        "Writes this node coordinated.",
        |s| &s.writes_coordinated,
    ),
    (
        "shoal_writes_proxied",
        "Writes sent on to their coordinator.",
        |s| &s.writes_proxied,
    ),
    (
        "shoal_quorum_failures",
        "Writes answered NOQUORUM (outcome unknown).",
        |s| &s.quorum_failures,
    ),
    (
        "shoal_reads_coordinated",
        "Quorum reads this node ran.",
        |s| &s.reads_coordinated,
    ),
    (
        "shoal_read_repairs",
        "Replicas brought up to a read's merge.",
        |s| &s.read_repairs,
    ),
    (
        "shoal_replica_writes_received",
        "Replica copies merged here.",
        |s| &s.replica_writes_received,
    ),
    (
        "shoal_stale_ring_refusals",
        "Replica writes refused for an older ring.",
        |s| &s.stale_ring_refusals,
    ),
    (
        "shoal_cluster_keys_expired",
        "Keys deleted by this node, as their coordinator, once expired.",
        |s| &s.keys_expired,
    ),
    (
        "shoal_reads_refused_behind_ring",
        "Peer reads refused: the asker's ring was newer and could not be learned.",
        |s| &s.reads_refused_behind_ring,
    ),
    (
        "shoal_requests_too_old",
        "Peer requests refused for arriving too late.",
        |s| &s.requests_too_old,
    ),
    (
        "shoal_hints_stored",
        "Hints stored here as a fallback.",
        |s| &s.hints_stored,
    ),
    (
        "shoal_hints_delivered",
        "Hints handed to their owners.",
        |s| &s.hints_delivered,
    ),
    (
        "shoal_handoff_keys_pulled",
        "Keys pulled by handoffs into this node.",
        |s| &s.handoff_keys_pulled,
    ),
    (
        "shoal_handoff_partitions_done",
        "Partitions this node finished pulling.",
        |s| &s.handoff_partitions_done,
    ),
    (
        "shoal_anti_entropy_rounds",
        "Anti-entropy exchanges run.",
        |s| &s.anti_entropy_rounds,
    ),
    (
        "shoal_anti_entropy_bytes_pushed",
        "Bytes anti-entropy sent.",
        |s| &s.anti_entropy_bytes_pushed,
    ),
    (
        "shoal_anti_entropy_bytes_pulled",
        "Bytes anti-entropy received.",
        |s| &s.anti_entropy_bytes_pulled,
    ),
    (
        "shoal_peer_connections_stalled",
        "Peer connections given up as stalled.",
        |s| &s.peer_connections_stalled,
    ),
    (
        "shoal_peer_auth_refusals",
        "Peer connections refused for a wrong secret.",
        |s| &s.peer_auth_refusals,
    ),
];

fn cluster_counters(cluster: &Cluster, sink: &mut Scrape) {
    for (name, help, counter) in CLUSTER_COUNTERS {
        sink.counter(name, help, counter(&cluster.stats).load(Ordering::Relaxed));
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let metric_type = match family.samples.first() {
                Some((_, Value::Counter(_) | Value::CounterSeconds(_))) => MetricType::Counter,
                Some((_, Value::Histogram(..))) => MetricType::Histogram,
                _ => MetricType::Gauge,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    encode_value(&mut metric, value)?;
                } else {
                    encode_value(&mut metric.encode_family(labels)?, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(metric: &mut MetricEncoder, value: &Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => metric.encode_counter::<NoLabelSet, u64, u64>(v, None),
        Value::CounterSeconds(v) => metric.encode_counter::<NoLabelSet, f64, u64>(v, None),
        Value::Gauge(v) => metric.encode_gauge(v),
        Value::Histogram(h, scale) => {
            let buckets: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .map(|(bound, n)| {
                    let upper = if *bound == u64::MAX {
                        f64::MAX
                    } else {
                        *bound as f64 * scale
                    };
                    (upper, *n)
                })
                .collect();
            metric.encode_histogram::<NoLabelSet>(h.sum as f64 * scale, h.count, &buckets, None)
        }
    }
}
