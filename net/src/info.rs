//! The INFO command's text: Redis's sections and field names where they mean the
//! same thing, `shoal_*` fields for what only Shoal has.

use crate::shared::Shared;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Resident set size in bytes, from /proc (0 where unavailable or simulated).
pub fn rss_bytes() -> u64 {
    #[cfg(all(target_os = "linux", not(madsim)))]
    {
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            if let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
            {
                return pages * 4096;
            }
        }
    }
    0
}

/// Bytes as Redis prints them in INFO (`1.50M`, `812.00K`, `17B`).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

/// The Redis version Shoal answers as (INFO, HELLO).
pub const REDIS_VERSION: &str = "7.2.0";

/// Sections INFO (and `INFO default`) prints; `INFO all` and `INFO
/// everything` add commandstats.
const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];

/// INFO's text for `section` (None: the default ones). `command_names` are the
/// command table's names in table order (commandstats).
pub fn render(
    shared: &Shared,
    redis_cluster: bool,
    section: Option<String>,
    command_names: &[&str],
) -> String {
    let wanted = |name: &str| match section.as_deref() {
        None | Some("default") => DEFAULT_SECTIONS.contains(&name),
        Some("all") | Some("everything") => true,
        Some(s) => s == name,
    };
    let mut out = String::new();
    if wanted("server") {
        server_section(shared, redis_cluster, &mut out);
    }
    if wanted("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            shared.clients_connected.load(Ordering::Relaxed),
            shared.config.clients_max,
            crate::blocking::BLOCKED_CLIENTS.load(Ordering::Relaxed)
        );
    }
    if wanted("memory") {
        // No counting allocator: used_memory is the process's resident set, as
        // `shoal_used_memory_source` says (Redis's is its allocator's count).
        let rss = rss_bytes();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nshoal_used_memory_source:rss\r\n\r\n",
            human_bytes(rss),
            human_bytes(rss),
        );
    }
    if wanted("persistence") {
        persistence_section(shared, &mut out);
    }
    if wanted("stats") {
        stats_section(shared, &mut out);
    }
    if wanted("replication") {
        replication_section(shared, &mut out);
    }
    if wanted("cpu") {
        cpu_section(&mut out);
    }
    if wanted("modules") {
        // Shoal loads no Redis modules.
        out.push_str("# Modules\r\n\r\n");
    }
    if wanted("commandstats") {
        commandstats_section(shared, command_names, &mut out);
    }
    if wanted("errorstats") {
        errorstats_section(shared, &mut out);
    }
    if wanted("cluster") {
        cluster_section(shared, redis_cluster, &mut out);
    }
    if wanted("keyspace") {
        keyspace_section(shared, &mut out);
    }
    out
}

/// Keys per database, as clients select them (after SWAPDBs).
fn keyspace_section(shared: &Shared, out: &mut String) {
    out.push_str("# Keyspace\r\n");
    let map = shared.databases.snapshot();
    let mut dbs: Vec<(u8, (u64, u64))> = shared
        .storage
        .read(|s| s.keyspace_counts())
        .into_iter()
        .collect();
    for (ns, _) in &mut dbs {
        *ns = crate::databases::selected_namespace(&map, *ns);
    }
    dbs.sort_unstable();
    for (ns, (keys, expires)) in dbs.into_iter().filter(|(_, (keys, _))| *keys > 0) {
        let _ = write!(out, "db{ns}:keys={keys},expires={expires},avg_ttl=0\r\n");
    }
    out.push_str("\r\n");
}

fn errorstats_section(shared: &Shared, out: &mut String) {
    out.push_str("# Errorstats\r\n");
    for (code, count) in shared.command_stats.errors() {
        let _ = write!(out, "errorstat_{code}:count={count}\r\n");
    }
    out.push_str("\r\n");
}

/// Redis Cluster's flag: set only on a member's Redis Cluster port. On the
/// plain port any node serves any key, so clients keep their plain mode.
fn cluster_section(shared: &Shared, redis_cluster: bool, out: &mut String) {
    let _ = write!(
        out,
        "# Cluster\r\ncluster_enabled:{}\r\nshoal_cluster_member:{}\r\n\r\n",
        u8::from(redis_cluster),
        u8::from(shared.cluster.is_some())
    );
}

/// Persistence: the store, its disk, group commit and compaction.
fn persistence_section(shared: &Shared, out: &mut String) {
    let commit = shared.storage.commit_stats();
    let (disk_bytes, dead_bytes, segments, state, store_stats, siblings_max) =
        shared.storage.read(|s| {
            let (total, dead) = s.disk_usage_bytes();
            let state = match s.is_poisoned() {
                None => "ok".to_string(),
                Some(reason) => format!("read-only ({reason})"),
            };
            let stats = s.stats();
            (
                total,
                dead,
                s.segment_count(),
                state,
                stats,
                s.options().siblings_max,
            )
        });
    let avg_batch = if commit.batches > 0 {
        commit.ops as f64 / commit.batches as f64
    } else {
        0.0
    };
    let _ = write!(
        out,
        "# Persistence\r\nloading:0\r\naof_enabled:1\r\nshoal_fsync:{}\r\nshoal_store_state:{}\r\nshoal_segments:{}\r\nshoal_disk_bytes:{}\r\nshoal_dead_bytes:{}\r\nshoal_batches:{}\r\nshoal_syncs:{}\r\nshoal_ops_committed:{}\r\nshoal_avg_batch_ops:{:.2}\r\nshoal_largest_batch_ops:{}\r\nshoal_compactions:{}\r\nshoal_compaction_segments_damaged:{}\r\nshoal_hints_written:{}\r\nshoal_chores_failed:{}\r\nshoal_tombstones_collected:{}\r\nshoal_tombstones_forgotten:{}\r\nshoal_disk_full_refusals:{}\r\nshoal_fsync_failures:{}\r\nshoal_siblings_max:{}\r\nshoal_siblings_largest:{}\r\nshoal_sibling_writes_refused:{}\r\nshoal_sibling_merges_over_cap:{}\r\nshoal_merges_over_record_limit:{}\r\nshoal_records_unreadable:{}\r\n",
        shared.storage.config().fsync.as_str(),
        state,
        segments,
        disk_bytes,
        dead_bytes,
        commit.batches,
        commit.syncs,
        commit.ops,
        avg_batch,
        commit.largest_batch_ops,
        store_stats.compactions_done,
        store_stats.compaction_segments_damaged,
        store_stats.hints_written,
        store_stats.chores_failed,
        store_stats.tombstones_collected,
        store_stats.tombstones_forgotten,
        store_stats.disk_full_refusals,
        store_stats.syncs_failed,
        siblings_max,
        store_stats.siblings_largest,
        store_stats.sibling_writes_refused,
        store_stats.sibling_merges_over_cap,
        store_stats.merges_over_record_limit,
        store_stats.records_unreadable,
    );
    let scrub = shared.storage.scrub_stats();
    let _ = write!(
        out,
        "shoal_damaged_records_found:{}\r\nshoal_damaged_records_replaced:{}\r\nshoal_scrub_passes:{}\r\nshoal_scrub_records:{}\r\nshoal_scrub_bytes:{}\r\n\r\n",
        scrub.records_damaged.load(Ordering::Relaxed),
        store_stats.damaged_records_replaced,
        scrub.passes.load(Ordering::Relaxed),
        scrub.records_read.load(Ordering::Relaxed),
        scrub.bytes_read.load(Ordering::Relaxed),
    );
}

fn stats_section(shared: &Shared, out: &mut String) {
    let (hits, misses) = shared.keyspace.counts();
    let _ = write!(
        out,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nkeyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\n\r\n",
        shared.connections_total.load(Ordering::Relaxed),
        shared.commands_total.load(Ordering::Relaxed),
        shared.connections_rejected.load(Ordering::Relaxed),
    );
}

/// `redis_cluster`: asked on a member's Redis Cluster port (`redis_mode:cluster`).
fn server_section(shared: &Shared, redis_cluster: bool, out: &mut String) {
    let uptime_s = shared.started.elapsed().as_secs();
    let _ = write!(
        out,
        "# Server\r\nredis_version:{}\r\nshoal_version:{}\r\nredis_mode:{}\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n\r\n",
        REDIS_VERSION,
        env!("CARGO_PKG_VERSION"),
        if redis_cluster { "cluster" } else { "standalone" },
        std::env::consts::OS,
        std::process::id(),
        shared.config.port,
        uptime_s,
        uptime_s / 86_400,
    );
}

/// Every node is a master in Redis's terms: it takes writes. A cluster
/// member's replication is its own (quorums, anti-entropy), shown as
/// `shoal_*` fields.
fn replication_section(shared: &Shared, out: &mut String) {
    out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
    if let Some(cluster) = &shared.cluster {
        let lag = cluster.replication_lag();
        let differing: usize = lag.iter().map(|(_, keys, ..)| keys).sum();
        let _ = write!(
            out,
            "shoal_replicas_n:{}\r\nshoal_peers_exchanged:{}\r\nshoal_keys_differing:{differing}\r\nshoal_hints_pending:{}\r\n",
            cluster.config().replicas_n,
            lag.len(),
            cluster.hints_pending(),
        );
    }
    out.push_str("\r\n");
}

/// CPU seconds this process used, from getrusage (zeros where unavailable).
fn cpu_section(out: &mut String) {
    let (user_s, sys_s) = cpu_seconds();
    let _ = write!(
        out,
        "# CPU\r\nused_cpu_sys:{sys_s:.6}\r\nused_cpu_user:{user_s:.6}\r\n\r\n"
    );
}

fn cpu_seconds() -> (f64, f64) {
    #[cfg(all(target_os = "linux", not(madsim)))]
    {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return (seconds(usage.ru_utime), seconds(usage.ru_stime));
        }
    }
    (0.0, 0.0)
}

/// Redis's `cmdstat_<name>:calls=..,usec=..,usec_per_call=..,rejected_calls=0,failed_calls=..`.
fn commandstats_section(shared: &Shared, command_names: &[&str], out: &mut String) {
    out.push_str("# Commandstats\r\n");
    for (kind, name) in command_names.iter().enumerate() {
        let c = shared.command_stats.counts(kind);
        if c.calls == 0 {
            continue;
        }
        let _ = write!(
            out,
            "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
            name.replace('.', "_"),
            c.calls,
            c.micros,
            c.micros as f64 / c.calls as f64,
            c.failed
        );
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_print_as_redis_prints_them() {
        assert_eq!(human_bytes(17), "17B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(1536 * 1024), "1.50M");
        assert_eq!(human_bytes(3 << 30), "3.00G");
    }
}
