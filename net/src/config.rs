//! Configuration: defaults that just work, overridden by a TOML file, overridden
//! by command-line flags. Unknown keys in the file are errors, so typos are caught.

use crate::server::ServerConfig;
use crate::storage::{Fsync, StorageConfig};
use serde::Deserialize;
use shoal_engine::StoreOptions;
use std::collections::BTreeMap;
use std::path::Path;

/// The config file's keys (all optional). See README.md, "Configuration".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub port: Option<u16>,
    /// The operators' HTTP port (GET /metrics, GET /); absent: not served.
    pub http_port: Option<u16>,
    /// A cluster member also serves Redis Cluster clients on its client port
    /// plus 1000 (every member must agree).
    pub cluster_clients: Option<bool>,
    /// Serve TLS clients on this port too, with `tls_cert_file` (PEM chain) and
    /// `tls_key_file` (PEM private key).
    pub tls_port: Option<u16>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// TLS on peer links (a cluster member), with the two files above and peers
    /// verified against `tls_ca_cert_file` (PEM CA certificates).
    pub tls_cluster: Option<bool>,
    pub tls_ca_cert_file: Option<String>,
    pub data_dir: Option<String>,
    pub fsync: Option<Fsync>,
    pub fsync_batch_interval_ms: Option<u64>,
    pub requirepass: Option<String>,
    pub node_id: Option<u32>,
    pub clients_max: Option<usize>,
    pub bulk_len_max_bytes: Option<usize>,
    pub multibulk_len_max: Option<usize>,
    pub inline_len_max_bytes: Option<usize>,
    pub query_buffer_max_bytes: Option<usize>,
    pub client_output_buffer_max_bytes: Option<usize>,
    pub segment_size_bytes: Option<u64>,
    pub siblings_max: Option<usize>,
    pub compaction_budget_bytes: Option<u64>,
    /// How fast the scrubber re-reads every live record (0: never).
    pub scrub_bytes_per_sec: Option<u64>,
    /// The shortest time between the starts of two scrub passes.
    pub scrub_pass_interval_ms: Option<u64>,
    /// Group-commit batches syncing at once, 1..=4.
    pub syncs_in_flight_max: Option<usize>,
    /// Threads running connections and the committer (default: one fewer
    /// than the machine's cores, at least 1; see [`default_worker_threads`]).
    pub worker_threads: Option<usize>,
    pub log: Option<String>,
    /// `text` (default) or `json`: one JSON object per log line.
    pub log_format: Option<LogFormat>,
    /// Cluster members, `id@host:port,...` (client ports; peers listen on +10000).
    pub members: Option<String>,
    pub cluster_secret: Option<String>,
    pub replicas_n: Option<u8>,
    pub read_quorum: Option<u8>,
    pub write_quorum: Option<u8>,
    /// Sloppy quorum with hinted handoff (default on).
    pub sloppy_quorum: Option<bool>,
    /// Age (ms) a delete marker reaches before the cluster may collect it.
    pub tombstone_grace_ms: Option<u64>,
    /// A cluster node whose synced data is damaged sets its segments aside and
    /// is restored by its replicas (default true; false: it refuses to start).
    pub rebuild_damaged: Option<bool>,
    /// Per-namespace quorums: `[namespace_quorums]` then `1 = { r = 1, w = 1 }`.
    pub namespace_quorums: Option<BTreeMap<String, NamespaceQuorumFile>>,
}

/// One namespace's quorums as the config file gives them.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuorumFile {
    pub r: u8,
    pub w: u8,
}

/// `NS:R:W` (the `--namespace-quorum` flag) as (namespace, quorums).
pub fn parse_namespace_quorum(text: &str) -> Result<(String, NamespaceQuorumFile), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [namespace, r, w] = parts[..] else {
        return Err(format!("'{text}' is not NAMESPACE:R:W"));
    };
    let number = |s: &str| {
        s.parse::<u8>()
            .map_err(|_| format!("'{text}': '{s}' is not a small number"))
    };
    Ok((
        namespace.to_string(),
        NamespaceQuorumFile {
            r: number(r)?,
            w: number(w)?,
        },
    ))
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Threads of the async runtime (`FileConfig::worker_threads`).
    pub worker_threads: usize,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub store: StoreOptions,
    pub log: String,
    pub log_format: LogFormat,
    pub cluster: ClusterKnobs,
}

/// How the node writes its log to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log
    /// collectors.
    Json,
}

/// Cluster settings as given; turned into a `ClusterConfig` at start.
#[derive(Clone, Debug, Default)]
pub struct ClusterKnobs {
    pub members: Option<String>,
    pub secret: Option<String>,
    pub replicas_n: Option<u8>,
    pub read_quorum: Option<u8>,
    pub write_quorum: Option<u8>,
    pub sloppy_quorum: Option<bool>,
    pub tombstone_grace_ms: Option<u64>,
    pub rebuild_damaged: Option<bool>,
    pub namespace_quorums: BTreeMap<String, NamespaceQuorumFile>,
}

impl NodeConfig {
    /// The cluster configuration, when members are given: checks that a secret is
    /// set and that a node missing from the list (a joiner) has a reachable address,
    /// and reads the TLS files of peer links with `tls_cluster`.
    pub fn cluster_config(&self) -> Result<Option<crate::cluster::ClusterConfig>, String> {
        let Some(members) = &self.cluster.members else {
            if self.server.tls_cluster {
                tracing::warn!("tls_cluster is set but this node is not a cluster member: ignored");
            }
            return Ok(None);
        };
        let members = crate::cluster::parse_members(members)?;
        let node_id = self.store.node_id;
        // Listed: a founding member. Not listed: a node joining through the listed
        // seeds, reachable at its own bind address.
        let self_addr = match members.get(&node_id) {
            Some(addr) => addr.clone(),
            None => {
                let bind = &self.server.bind;
                if bind == "0.0.0.0" || bind == "::" {
                    return Err(format!(
                        "node {node_id} is not in the member list, so it joins through them as seeds and must tell them where it is: set --bind to an address they can reach (not {bind})"
                    ));
                }
                crate::cluster::member_addr(&format!("{bind}:{}", self.server.port))?
            }
        };
        let secret = self
            .cluster
            .secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("a cluster needs a shared secret: set --cluster-secret or cluster_secret")?;
        let mut config = crate::cluster::ClusterConfig::new(node_id, members, secret);
        config.self_addr = self_addr;
        // The simulator's network carries no TLS.
        #[cfg(not(madsim))]
        {
            config.peer_tls = crate::tls::peer_tls(&self.server).map_err(|e| e.to_string())?;
        }
        if let Some(n) = self.cluster.replicas_n {
            config.replicas_n = n;
            config.read_quorum = n / 2 + 1;
            config.write_quorum = n / 2 + 1;
        }
        if let Some(r) = self.cluster.read_quorum {
            config.read_quorum = r;
        }
        if let Some(sloppy) = self.cluster.sloppy_quorum {
            config.sloppy_quorum = sloppy;
        }
        if let Some(w) = self.cluster.write_quorum {
            config.write_quorum = w;
        }
        if let Some(grace_ms) = self.cluster.tombstone_grace_ms {
            config.tombstone_grace_ms = grace_ms;
        }
        if let Some(rebuild) = self.cluster.rebuild_damaged {
            config.rebuild_damaged = rebuild;
        }
        config.namespace_quorums = self.namespace_quorums()?;
        Ok(Some(config))
    }

    /// `namespace_quorums` by namespace number (0..=15).
    fn namespace_quorums(&self) -> Result<BTreeMap<u8, crate::cluster::NamespaceQuorum>, String> {
        let mut quorums = BTreeMap::new();
        for (namespace, q) in &self.cluster.namespace_quorums {
            let namespace: u8 = namespace
                .parse()
                .ok()
                .filter(|ns| *ns < 16)
                .ok_or_else(|| {
                    format!("namespace_quorums: '{namespace}' is not a namespace 0..=15")
                })?;
            quorums.insert(
                namespace,
                crate::cluster::NamespaceQuorum { r: q.r, w: q.w },
            );
        }
        Ok(quorums)
    }
}

/// One async worker fewer than the machine has cores (at least one): the
/// core left over runs the fsyncs, the kernel's network work and, on a
/// benchmark box, the clients. On this project's 2-core machine one worker
/// served SET -P 16 at 205-209k requests/s against 165-185k with two (fewer
/// wake-ups of a parked worker per batch), and GET at the same rate.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            worker_threads: default_worker_threads(),
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            store: StoreOptions::default(),
            log: "info".into(),
            log_format: LogFormat::Text,
            cluster: ClusterKnobs::default(),
        }
    }
}

/// `target = value` for each value that is set (`Some`).
macro_rules! overlay {
    ($($target:expr => $value:expr),* $(,)?) => {
        $(if let Some(v) = $value {
            $target = v;
        })*
    };
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let file: FileConfig =
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        let syncs_max = shoal_engine::store::UNSYNCED_BATCHES_MAX as usize;
        if let Some(v) = file.syncs_in_flight_max {
            if !(1..=syncs_max).contains(&v) {
                return Err(format!(
                    "config file {}: syncs_in_flight_max is {v}; it must be 1..={syncs_max}",
                    path.display()
                ));
            }
        }
        if file.worker_threads == Some(0) {
            return Err(format!(
                "config file {}: worker_threads is 0; it must be at least 1",
                path.display()
            ));
        }
        Ok(file)
    }

    /// Apply every key that is set over `config`.
    pub fn apply(self, config: &mut NodeConfig) {
        let s = &mut config.server;
        overlay!(
            s.bind => self.bind,
            s.port => self.port,
            s.cluster_clients => self.cluster_clients,
            s.tls_port => self.tls_port.map(Some),
            s.tls_cert_file => self.tls_cert_file.map(Some),
            s.tls_key_file => self.tls_key_file.map(Some),
            s.tls_cluster => self.tls_cluster,
            s.tls_ca_cert_file => self.tls_ca_cert_file.map(Some),
            s.http_port => self.http_port.map(Some),
            s.data_dir => self.data_dir,
            s.requirepass => self.requirepass.map(Some),
            s.clients_max => self.clients_max,
            s.request_limits.bulk_len_max_bytes => self.bulk_len_max_bytes,
            s.request_limits.multibulk_len_max => self.multibulk_len_max,
            s.request_limits.inline_len_max_bytes => self.inline_len_max_bytes,
            s.query_buffer_max_bytes => self.query_buffer_max_bytes,
            s.client_output_buffer_max_bytes => self.client_output_buffer_max_bytes,
        );
        let storage = &mut config.storage;
        overlay!(
            storage.fsync => self.fsync,
            storage.fsync_batch_interval_ms => self.fsync_batch_interval_ms,
            storage.compaction_budget_bytes => self.compaction_budget_bytes,
            storage.scrub_bytes_per_sec => self.scrub_bytes_per_sec,
            storage.scrub_pass_interval_ms => self.scrub_pass_interval_ms,
            storage.syncs_in_flight_max => self.syncs_in_flight_max,
            config.worker_threads => self.worker_threads,
            config.store.node_id => self.node_id,
            config.store.segment_size_bytes => self.segment_size_bytes,
            config.store.siblings_max => self.siblings_max,
            config.log => self.log,
            config.log_format => self.log_format,
        );
        let c = &mut config.cluster;
        overlay!(
            c.members => self.members.map(Some),
            c.secret => self.cluster_secret.map(Some),
            c.replicas_n => self.replicas_n.map(Some),
            c.read_quorum => self.read_quorum.map(Some),
            c.write_quorum => self.write_quorum.map(Some),
            c.sloppy_quorum => self.sloppy_quorum.map(Some),
            c.tombstone_grace_ms => self.tombstone_grace_ms.map(Some),
            c.rebuild_damaged => self.rebuild_damaged.map(Some),
        );
        if let Some(quorums) = self.namespace_quorums {
            c.namespace_quorums.extend(quorums);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let file: FileConfig =
            toml::from_str("port = 7000\nfsync = \"batch\"\nrequirepass = \"pw\"\n").unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config);
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.storage.fsync, Fsync::Batch);
        assert_eq!(config.server.requirepass.as_deref(), Some("pw"));
        assert_eq!(config.server.bind, "127.0.0.1");
        let err = toml::from_str::<FileConfig>("prot = 1\n").unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn namespace_quorums_from_the_file_and_the_flag() {
        let file: FileConfig = toml::from_str(
            "members = \"1@127.0.0.1:7000\"\ncluster_secret = \"s\"\nnode_id = 1\n[namespace_quorums]\n1 = { r = 1, w = 1 }\n",
        )
        .unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config);
        let cluster = config.cluster_config().unwrap().unwrap();
        let q = cluster.namespace_quorums[&1];
        assert_eq!((q.r, q.w), (1, 1));
        assert_eq!(cluster.write_quorum_for(1), 1);
        assert_eq!(cluster.write_quorum_for(0), cluster.write_quorum);
        assert_eq!(
            parse_namespace_quorum("3:2:1").unwrap(),
            ("3".to_string(), NamespaceQuorumFile { r: 2, w: 1 })
        );
        assert!(parse_namespace_quorum("3:2").is_err());
        assert!(parse_namespace_quorum("3:x:1").is_err());
        let mut bad = NodeConfig::default();
        FileConfig {
            members: Some("1@127.0.0.1:7000".into()),
            cluster_secret: Some("s".into()),
            node_id: Some(1),
            namespace_quorums: Some(BTreeMap::from([(
                "16".to_string(),
                NamespaceQuorumFile { r: 1, w: 1 },
            )])),
            ..FileConfig::default()
        }
        .apply(&mut bad);
        assert!(bad.cluster_config().unwrap_err().contains("'16'"));
    }

    #[test]
    fn tls_cluster_needs_a_ca_on_a_member() {
        let file: FileConfig = toml::from_str(
            "members = \"1@127.0.0.1:7000\"\ncluster_secret = \"s\"\nnode_id = 1\ntls_cluster = true\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n",
        )
        .unwrap();
        let mut config = NodeConfig::default();
        file.apply(&mut config);
        assert!(config.server.tls_cluster);
        let err = config.cluster_config().unwrap_err();
        assert!(err.contains("tls_ca_cert_file is not set"), "{err}");
        config.cluster.members = None;
        assert!(config.cluster_config().unwrap().is_none());
    }
}
