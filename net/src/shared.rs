//! What every connection of a node shares: its storage, its cluster driver
//! (a member), the server's configuration, the connection counters and
//! registry, the slow log and latency monitor, and the isolation turns MULTI /
//! EXEC rely on. Below `commands`, `backend`, `info`,
//! `transaction` and `server`, which all read it.
//!
//! Must not touch: commands, connections (`server` owns the sockets).

use crate::resp::RequestLimits;
use crate::storage::Storage;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: String,
    pub port: u16,
    pub data_dir: String,
    pub requirepass: Option<String>,
    pub databases: u8,
    pub clients_max: usize,
    pub request_limits: RequestLimits,
    /// Unparsed input a client may have buffered.
    pub query_buffer_max_bytes: usize,
    /// Replies a client may have waiting; past it the client is disconnected.
    pub client_output_buffer_max_bytes: usize,
    /// The operators' HTTP port (GET /metrics, GET /); `None`: not served.
    pub http_port: Option<u16>,
    /// A cluster member also serves Redis Cluster clients on its client port
    /// plus `cluster::CLUSTER_CLIENT_PORT_OFFSET`, and advertises those ports.
    pub cluster_clients: bool,
    /// TLS on this port too (Redis's tls-port), with these PEM files.
    pub tls_port: Option<u16>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// TLS on peer links too (Redis's tls-cluster), with the two files above
    /// and peers verified against `tls_ca_cert_file` (see `tls::PeerTls`).
    pub tls_cluster: bool,
    pub tls_ca_cert_file: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".into(),
            port: 7379,
            data_dir: "./shoal-data".into(),
            requirepass: None,
            databases: 16,
            clients_max: 10_000,
            request_limits: RequestLimits {
                bulk_len_max_bytes: 64 << 20,
                ..RequestLimits::default()
            },
            query_buffer_max_bytes: 256 << 20,
            client_output_buffer_max_bytes: 256 << 20,
            http_port: None,
            cluster_clients: false,
            tls_port: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_cluster: false,
            tls_ca_cert_file: None,
        }
    }
}

/// The node's isolation turns. A connection holds a shared turn while it runs
/// the commands of one read from its socket and waits for their writes; EXEC
/// takes the exclusive turn, so it starts after every write already started on
/// this node is answered, and nothing of another connection runs until its
/// queue is done. On a cluster the turn covers this node's clients only.
#[derive(Clone, Default)]
pub struct Isolation(Arc<tokio::sync::RwLock<()>>);

pub type SharedTurn = tokio::sync::OwnedRwLockReadGuard<()>;
pub type ExclusiveTurn = tokio::sync::OwnedRwLockWriteGuard<()>;

impl Isolation {
    pub async fn shared(&self) -> SharedTurn {
        self.0.clone().read_owned().await
    }

    pub async fn exclusive(&self) -> ExclusiveTurn {
        self.0.clone().write_owned().await
    }
}

/// State shared by all connections.
pub struct Shared {
    pub storage: Storage,
    /// Set when this node is a cluster member: data commands are routed.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub config: ServerConfig,
    pub clients_connected: AtomicUsize,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub commands_total: AtomicU64,
    /// Calls, failures and time per command; every command's latency.
    pub command_stats: crate::command_stats::CommandStats,
    /// Connections' shared turns and EXEC's exclusive one.
    pub isolation: Isolation,
    /// Every connection (CLIENT LIST / KILL), the pause, the MONITOR feed.
    pub clients: crate::clients::Clients,
    pub slowlog: crate::slowlog::SlowLog,
    /// Reading lookups that found a live key, and those that did not.
    pub keyspace: crate::command_stats::KeyspaceStats,
    pub latency: crate::slowlog::LatencyMonitor,
    /// Redis's encoding knobs, as CONFIG SET last set them.
    pub encoding_knobs: crate::admin::EncodingKnobs,
    /// Online backups in progress (`SHOAL.BACKUP`).
    pub backups: crate::backup::BackupSessions,
    /// SHUTDOWN's way to the process (armed by `shoal server`).
    pub shutdown: crate::admin::ShutdownSwitch,
    /// `maxmemory` (noeviction): writes refused past it.
    pub maxmemory: crate::maxmemory::MemoryLimit,
    /// SWAPDB's map from selected to stored database.
    pub databases: crate::databases::Databases,
    /// Tiebreaks and random draws counted per node (`Backend::next_sequence`).
    pub sequence: AtomicU64,
    next_client_id: AtomicU64,
    pub started: tokio::time::Instant,
}

impl Shared {
    pub fn new(storage: Storage, config: ServerConfig) -> Arc<Shared> {
        Self::with_cluster(storage, config, None)
    }

    pub fn with_cluster(
        storage: Storage,
        config: ServerConfig,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Shared> {
        let databases = crate::databases::Databases::load(storage.read(|s| s.dir()).as_ref());
        Arc::new(Shared {
            storage,
            cluster,
            config,
            clients_connected: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            commands_total: AtomicU64::new(0),
            command_stats: Default::default(),
            isolation: Default::default(),
            clients: Default::default(),
            slowlog: Default::default(),
            keyspace: Default::default(),
            latency: Default::default(),
            encoding_knobs: Default::default(),
            backups: Default::default(),
            shutdown: Default::default(),
            maxmemory: Default::default(),
            databases,
            sequence: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            started: tokio::time::Instant::now(),
        })
    }

    /// A fresh client id (CLIENT ID, CLIENT LIST).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
