//! The `shoal` binary: `shoal server` (the default) runs a node; `shoal inspect`
//! dumps and checks a stopped node's data directory.

use clap::{Parser, Subcommand};
use shoal_net::config::{FileConfig, LogFormat, NodeConfig};
use shoal_net::filedisk::FileDir;
use shoal_net::node::{start_node, BootError, BootedNode, NoHooks, NodeSetup};
use shoal_net::runtime::TokioRuntime;
use shoal_net::server::{serve, Shared};
use shoal_net::storage::Fsync;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// jemalloc, not glibc's malloc (see the workspace's Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a durable, Redis-compatible key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default when no command is given).
    Server(Box<ServerArgs>),
    /// Dump a stopped node's data as JSON lines and check every segment.
    Inspect {
        data_dir: PathBuf,
        /// Only check integrity; do not print keys.
        #[arg(long)]
        check: bool,
    },
    /// Build a whole store in a new directory from what survives of a stopped
    /// single node's damaged one, and say exactly what was lost (the damaged
    /// directory is only read). Then run `shoal server --data-dir <INTO>`.
    Salvage {
        data_dir: PathBuf,
        /// The new data directory (must not exist).
        #[arg(long)]
        into: PathBuf,
    },
    /// Copy a running node's data into a new directory, online and
    /// consistent, without pausing its writes.
    Backup {
        /// The node's client address.
        #[arg(long, default_value = "127.0.0.1:6379")]
        addr: String,
        /// The node's requirepass, if it has one.
        #[arg(long)]
        requirepass: Option<String>,
        /// The backup's directory (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Make a new data directory from a backup; then run
    /// `shoal server --data-dir <DATA_DIR>`.
    Restore {
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory (must not exist).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Start a local cluster on 127.0.0.1: one `shoal server` process per node,
    /// each with its own ports and data directory, until Ctrl-C.
    DevCluster {
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Client port of node 1; node i listens on base + i - 1 (peers on +10000).
        #[arg(long, default_value_t = 7379)]
        base_port: u16,
        /// Parent of the nodes' data directories (node-1, node-2, ...).
        #[arg(long, default_value = "./shoal-dev")]
        data_dir: PathBuf,
        #[arg(long, value_enum)]
        fsync: Option<Fsync>,
    },
    /// Cluster administration.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Members, their states, ring version, partitions per node, handoffs, repair
    /// counters.
    Status {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Admit a running node (started with --seeds) to the ring: it takes its share
    /// of partitions, pulled while reads and writes go on.
    Join {
        #[command(flatten)]
        target: AdminTarget,
        /// The new node as id@host:port (its client address).
        #[arg(long)]
        node: String,
    },
    /// Take a node out of the ring; its partitions move to the others first.
    Leave {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        node: u32,
    },
    /// Put a new node in exactly an old (e.g. dead) node's places.
    Replace {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        old: u32,
        /// The new node as id@host:port.
        #[arg(long)]
        new: String,
    },
    /// Pin a namespace (database) to a subset of the members, with its own
    /// replica count and quorums: its keys move there and stay there. Its nodes
    /// change with pin-join and pin-leave; unpin undoes it.
    Pin {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        namespace: u8,
        /// Member ids, comma-separated (e.g. 2,3).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u32>,
        #[arg(long)]
        n: u8,
        #[arg(long)]
        r: u8,
        #[arg(long)]
        w: u8,
    },
    /// Add a member to a pinned namespace's nodes.
    PinJoin {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        namespace: u8,
        #[arg(long)]
        node: u32,
    },
    /// Remove a node from a pinned namespace's nodes (it stays a member).
    PinLeave {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        namespace: u8,
        #[arg(long)]
        node: u32,
    },
    /// Send a pinned namespace back to the default ring. Run it twice: the first
    /// run hands its keys to the default ring's owners; the second, once those
    /// handoffs are done (see status), drops the pin.
    Unpin {
        #[command(flatten)]
        target: AdminTarget,
        #[arg(long)]
        namespace: u8,
    },
    /// Undo the change whose handoffs are still running (a joined node that
    /// never takes its partitions, say): the ring before it comes back as a new
    /// version, and the nodes it took partitions from pull back what was written
    /// meanwhile. Not for a pin: unpin it once its handoffs finish.
    Abort {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(clap::Args)]
struct AdminTarget {
    /// Any member's client address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    addr: String,
    #[arg(long)]
    requirepass: Option<String>,
}

#[derive(clap::Args, Default)]
struct ServerArgs {
    /// TOML config file (keys as in README.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    bind: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// Serve GET /metrics (Prometheus) and GET / (a live dashboard) on this
    /// HTTP port (default: not served).
    #[arg(long)]
    http_port: Option<u16>,
    /// On a cluster member: also serve Redis Cluster clients (redis-py's
    /// RedisCluster, ioredis, `redis-cli --cluster`) on the client port plus
    /// 1000; CLUSTER SLOTS / SHARDS / NODES then advertise those ports. Every
    /// member must agree.
    #[arg(long)]
    cluster_clients: bool,
    /// Also serve clients over TLS on this port (needs --tls-cert-file and
    /// --tls-key-file), e.g. `redis-cli --tls --cacert ca.pem -p PORT`.
    #[arg(long)]
    tls_port: Option<u16>,
    /// PEM certificate chain for the TLS port and, with --tls-cluster, peer links.
    #[arg(long)]
    tls_cert_file: Option<String>,
    /// PEM private key for the TLS port and, with --tls-cluster, peer links.
    #[arg(long)]
    tls_key_file: Option<String>,
    /// TLS on peer links too (a cluster member): --tls-cert-file and
    /// --tls-key-file on both ends, peers verified against --tls-ca-cert-file.
    /// Every member must agree.
    #[arg(long)]
    tls_cluster: bool,
    /// PEM CA certificate(s) peers' certificates must chain to (--tls-cluster).
    #[arg(long)]
    tls_ca_cert_file: Option<String>,
    #[arg(long)]
    data_dir: Option<String>,
    #[arg(long, value_enum)]
    fsync: Option<Fsync>,
    #[arg(long)]
    requirepass: Option<String>,
    /// Log lines as text (default) or as JSON objects, one per line.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// This node's id (in causal contexts and in the member list).
    #[arg(long)]
    node_id: Option<u32>,
    /// Async worker threads (default: the cores less one, at least 1).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// Cluster nodes as id@host:port (client ports), comma-separated. If this
    /// node is listed (and has no saved ring yet) they are the first ring; if not,
    /// they are seeds it learns the ring from, and it waits to be admitted with
    /// `shoal cluster join`.
    #[arg(long, alias = "seeds")]
    members: Option<String>,
    /// The secret every member shares; peer traffic without it is refused.
    #[arg(long, env = "SHOAL_CLUSTER_SECRET")]
    cluster_secret: Option<String>,
    /// Replicas per key (n); r and w default to a majority of n.
    #[arg(long)]
    replicas: Option<u8>,
    #[arg(long)]
    read_quorum: Option<u8>,
    #[arg(long)]
    write_quorum: Option<u8>,
    /// A namespace's own quorums, NAMESPACE:R:W (repeatable), e.g. 1:1:1 for a
    /// cache namespace that stays writable with one replica up.
    #[arg(long, value_parser = shoal_net::config::parse_namespace_quorum)]
    namespace_quorum: Vec<(String, shoal_net::config::NamespaceQuorumFile)>,
    /// Sloppy quorum: a write whose owner is down goes to a fallback node as a
    /// hint (default true; false: writes need w live owners).
    #[arg(long)]
    sloppy_quorum: Option<bool>,
    /// How old (ms) a delete marker must be before the cluster may agree to
    /// collect it (default 10000).
    #[arg(long)]
    tombstone_grace_ms: Option<u64>,
    /// A cluster node whose synced data is found damaged at start sets its
    /// segments aside (renamed damaged-*) and is restored by its replicas
    /// (default true; false: it refuses to start, as a single node does).
    #[arg(long)]
    rebuild_damaged: Option<bool>,
    /// The shortest time between two starts of the scrubber's walk over every
    /// live record (default 60000; the walk reads 8 MiB/s at most).
    #[arg(long)]
    scrub_pass_interval_ms: Option<u64>,
    /// Test only: journal unsynced writes so a test can emulate power loss after
    /// kill -9 (see net/src/filedisk.rs). Slows writes; never use for real data.
    #[arg(long, hide = true)]
    test_power_loss_journal: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Server(Box::default())) {
        Command::Server(args) => run_server(*args),
        Command::DevCluster {
            nodes,
            base_port,
            data_dir,
            fsync,
        } => dev_cluster(nodes, base_port, &data_dir, fsync),
        Command::Cluster { command } => {
            let (target, request, what) = match admin_request(command) {
                Ok(parts) => parts,
                Err(e) => {
                    eprintln!("shoal cluster: {e}");
                    return ExitCode::from(2);
                }
            };
            let args: Vec<&[u8]> = request.iter().map(|a| a.as_bytes()).collect();
            match admin_call(&target.addr, target.requirepass.as_deref(), &args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal cluster {what}: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Salvage { data_dir, into } => run_salvage(&data_dir, &into),
        Command::Backup {
            addr,
            requirepass,
            to,
        } => run_backup(&addr, requirepass.as_deref(), &to),
        Command::Restore { from, data_dir } => run_restore(&from, &data_dir),
        Command::Inspect { data_dir, check } => {
            if let Err(e) = refuse_if_running(&data_dir) {
                eprintln!("shoal inspect: {e}");
                return ExitCode::from(2);
            }
            let stdout = std::io::stdout();
            match shoal_net::inspect::run(&data_dir, &mut stdout.lock(), check) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("shoal inspect: damage found (see the segment lines)");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("shoal inspect: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn build_config(args: ServerArgs) -> Result<(NodeConfig, bool), String> {
    let journal = args.test_power_loss_journal;
    let mut config = NodeConfig::default();
    if let Some(path) = &args.config {
        FileConfig::load(path)?.apply(&mut config);
    }
    FileConfig {
        bind: args.bind,
        port: args.port,
        http_port: args.http_port,
        cluster_clients: args.cluster_clients.then_some(true),
        tls_port: args.tls_port,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        tls_cluster: args.tls_cluster.then_some(true),
        tls_ca_cert_file: args.tls_ca_cert_file,
        data_dir: args.data_dir,
        fsync: args.fsync,
        requirepass: args.requirepass,
        log_format: args.log_format,
        node_id: args.node_id,
        worker_threads: args.worker_threads.map(usize::from),
        members: args.members,
        cluster_secret: args.cluster_secret,
        replicas_n: args.replicas,
        read_quorum: args.read_quorum,
        write_quorum: args.write_quorum,
        sloppy_quorum: args.sloppy_quorum,
        tombstone_grace_ms: args.tombstone_grace_ms,
        rebuild_damaged: args.rebuild_damaged,
        scrub_pass_interval_ms: args.scrub_pass_interval_ms,
        namespace_quorums: (!args.namespace_quorum.is_empty())
            .then(|| args.namespace_quorum.into_iter().collect()),
        ..FileConfig::default()
    }
    .apply(&mut config);
    Ok((config, journal))
}

/// Hold an exclusive lock on the data directory for the life of the process, so two
/// nodes never write the same files.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "data directory {} is in use by another shoal process",
            dir.display()
        ));
    }
    Ok(file)
}

fn run_backup(addr: &str, requirepass: Option<&str>, to: &std::path::Path) -> ExitCode {
    let done = shoal_net::backup_tool::backup(addr, requirepass, to).map(|m| {
        let bytes: u64 = m.segments.iter().map(|s| s.bytes).sum();
        format!(
            "backed up {} segment(s), {bytes} bytes, from {addr} into {}",
            m.segments.len(),
            to.display()
        )
    });
    outcome("backup", done)
}

fn run_restore(from: &std::path::Path, data_dir: &std::path::Path) -> ExitCode {
    let done = shoal_net::backup_tool::restore(from, data_dir).map(|(m, r)| {
        format!(
            "restored {} keys ({} live) from the backup of {} taken at {} ms (Unix) into {}; start it with `shoal server --data-dir {}`",
            r.keys_kept,
            r.live_keys_kept,
            m.source,
            m.taken_at_unix_ms,
            data_dir.display(),
            data_dir.display()
        )
    });
    outcome("restore", done)
}

/// Print what a one-shot command did, or why it failed (exit code 2).
fn outcome(command: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal {command}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_salvage(data_dir: &std::path::Path, into: &std::path::Path) -> ExitCode {
    if let Err(e) = refuse_if_running(data_dir) {
        eprintln!("shoal salvage: {e}");
        return ExitCode::from(2);
    }
    match shoal_net::salvage::run(data_dir, into, shoal_engine::StoreOptions::default()) {
        Ok(report) => {
            for loss in &report.losses {
                println!("lost: {loss}");
            }
            println!(
                "salvaged {} keys ({} live) into {}{}",
                report.keys_kept,
                report.live_keys_kept,
                into.display(),
                if report.losses.is_empty() {
                    "; nothing was lost"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoal salvage: {e}");
            ExitCode::from(2)
        }
    }
}

/// Inspection reads files a running node may be writing: refuse while one holds
/// the directory's lock.
fn refuse_if_running(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::io::AsRawFd;
    let Ok(file) = std::fs::File::open(dir.join("LOCK")) else {
        return Ok(());
    };
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "{} is in use by a running shoal process; stop it first",
            dir.display()
        ));
    }
    Ok(())
}

fn run_server(args: ServerArgs) -> ExitCode {
    let (config, power_loss_journal) = match build_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve_node(config, power_loss_journal)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve_node(config: NodeConfig, power_loss_journal: bool) -> Result<(), String> {
    let cluster_config = config.cluster_config()?;
    let single = cluster_config.is_none();
    // Bad TLS files stop the start before the store is opened.
    let tls = tls_listener(&config.server).await?;
    let data_dir = PathBuf::from(&config.server.data_dir);
    let mut dir = FileDir::create(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    if power_loss_journal {
        tracing::warn!("test mode: journaling unsynced writes for power-loss emulation");
        dir = dir.with_power_loss_journal();
    }
    let _lock = lock_data_dir(&data_dir)?;
    let started = std::time::Instant::now();
    let setup = NodeSetup {
        store: config.store.clone(),
        storage: config.storage.clone(),
        cluster: cluster_config,
    };
    let booted = start_node(Arc::new(dir), TokioRuntime::new(), setup, &NoHooks)
        .await
        .map_err(|e| boot_failure(e, &data_dir, single))?;
    log_recovery(&booted, &data_dir, started.elapsed().as_millis());
    let BootedNode {
        storage, cluster, ..
    } = booted;
    // The HTTP port first: once the Redis port answers, both do.
    let http = http_listener(&config.server).await?;
    let addr = format!("{}:{}", config.server.bind, config.server.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        "Shoal ready on {addr} (data in {}, fsync={}); try: redis-cli -p {}",
        data_dir.display(),
        config.storage.fsync.as_str(),
        config.server.port
    );
    let cluster_clients = cluster_clients_listener(&config, cluster.is_some()).await?;
    let shared = Shared::with_cluster(storage.clone(), config.server.clone(), cluster);
    if let Some(http) = http {
        tokio::spawn(shoal_net::http::serve_http(http, shared.clone()));
    }
    if let Some(listener) = cluster_clients {
        tokio::spawn(shoal_net::server::serve_port(
            listener,
            shared.clone(),
            true,
        ));
    }
    if let Some((listener, acceptor)) = tls {
        tokio::spawn(shoal_net::tls::serve_tls(
            listener,
            acceptor,
            shared.clone(),
        ));
    }
    serve_until_stopped(listener, shared).await;
    storage
        .flush()
        .await
        .map_err(|e| format!("final sync failed: {e}"))
}

/// Serve clients until SIGINT, SIGTERM or SHUTDOWN.
async fn serve_until_stopped(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    shared.shutdown.arm();
    let stop = shared.clone();
    tokio::select! {
        _ = serve(listener, shared) => {}
        _ = shutdown_signal() => {
            tracing::info!("shutting down: syncing the log");
        }
        _ = stop.shutdown.requested() => {
            tracing::info!("SHUTDOWN: syncing the log");
        }
    }
}

/// The message a failed boot prints: a single node with damaged data is
/// pointed at `shoal salvage` (there is no replica to restore from).
fn boot_failure(e: BootError, data_dir: &std::path::Path, single: bool) -> String {
    let salvage = match &e {
        BootError::Store(shoal_engine::store::OpenError::Corrupt { .. }) if single => format!(
            "; with no replica to restore from, `shoal salvage {} --into <new dir>` builds a store of what survives and names what was lost",
            data_dir.display()
        ),
        _ => String::new(),
    };
    match e {
        BootError::Cluster(e) => e.to_string(),
        e => format!("cannot open {}: {e}{salvage}", data_dir.display()),
    }
}

/// What the boot recovered, for the operator.
fn log_recovery(booted: &BootedNode, data_dir: &std::path::Path, elapsed_ms: u128) {
    if let Some(rebuilt) = &booted.rebuilt {
        tracing::warn!(
            "synced data in {} is damaged ({}): set {} segment file(s) aside as {}..., starting empty as dot actor {}; anti-entropy restores this node's replicas from the other members (the set-aside files stay for an operator: renamed back to seg-* in a copy of the directory, `shoal inspect` reads them)",
            data_dir.display(),
            rebuilt.damage,
            rebuilt.set_aside.len(),
            rebuilt.set_aside.first().map_or("-", String::as_str),
            rebuilt.actor
        );
    }
    let report = &booted.report;
    tracing::info!(
        "recovered {} keys from {} segments ({} from hints) in {elapsed_ms} ms{}",
        report.keys_loaded,
        report.segments_scanned + report.segments_from_hints,
        report.segments_from_hints,
        match report.torn_tail {
            Some((seg, offset, bytes)) =>
                format!("; cut a torn tail of {bytes} bytes (never acknowledged) in segment {seg} at offset {offset}"),
            None => String::new(),
        }
    );
    if let Some(cluster) = &booted.cluster {
        let c = cluster.config();
        tracing::info!(
            "cluster member {} of {} (n={} r={} w={}); peers on {}",
            c.node_id,
            c.members.len(),
            c.replicas_n,
            c.read_quorum,
            c.write_quorum,
            c.self_addr.peer
        );
    }
}

/// `shoal dev-cluster`: start `nodes` child processes of this binary on loopback,
/// print how to reach them, and stop them all on Ctrl-C (or when one exits).
/// A fresh secret per dev-cluster run: loopback-only, and no other process
/// can join.
fn dev_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("dev-{:016x}", h.finish())
}

/// Wait until Ctrl-C or until a node exits, then stop every node cleanly.
fn run_dev_nodes(mut children: Vec<std::process::Child>, base_port: u16) -> ExitCode {
    println!("status: shoal cluster status --addr 127.0.0.1:{base_port}; Ctrl-C stops every node");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc_flag(stop);
    }
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        if let Some(i) = children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            eprintln!(
                "shoal dev-cluster: node {} exited; stopping the others",
                i + 1
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for child in &mut children {
        // SIGINT lets each node sync its log before it exits.
        // SAFETY: signalling a child process we spawned.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    }
    for mut child in children {
        let _ = child.wait();
    }
    ExitCode::SUCCESS
}

fn dev_cluster(
    nodes: u32,
    base_port: u16,
    data_dir: &std::path::Path,
    fsync: Option<Fsync>,
) -> ExitCode {
    // Peers listen on +offset, the HTTP port (metrics, dashboard) on +2 offsets.
    if nodes == 0 || u32::from(base_port) + nodes > u32::from(u16::MAX - 2 * cluster_port_offset())
    {
        eprintln!("shoal dev-cluster: {nodes} nodes from port {base_port} do not fit");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("shoal dev-cluster: cannot find this binary: {e}");
            return ExitCode::from(1);
        }
    };
    let members: Vec<String> = (1..=nodes)
        .map(|i| format!("{i}@127.0.0.1:{}", u32::from(base_port) + i - 1))
        .collect();
    let members = members.join(",");
    let secret = dev_secret();
    let mut children = Vec::new();
    for i in 1..=nodes {
        let port = u32::from(base_port) + i - 1;
        let http_port = port + 2 * u32::from(cluster_port_offset());
        let dir = data_dir.join(format!("node-{i}"));
        let mut command = std::process::Command::new(&exe);
        command
            .arg("server")
            .args(["--node-id", &i.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .arg("--cluster-clients")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--members", &members])
            .env("SHOAL_CLUSTER_SECRET", &secret);
        if let Some(fsync) = fsync {
            command.args(["--fsync", fsync.as_str()]);
        }
        match command.spawn() {
            Ok(child) => {
                println!(
                    "node {i}: redis-cli -p {port}   (Redis Cluster clients: -c -p {}, peers on {}, dashboard http://127.0.0.1:{http_port}/, data in {})",
                    port + u32::from(shoal_net::cluster::CLUSTER_CLIENT_PORT_OFFSET),
                    port + u32::from(cluster_port_offset()),
                    dir.display()
                );
                children.push(child);
            }
            Err(e) => {
                eprintln!("shoal dev-cluster: cannot start node {i}: {e}");
                for mut child in children {
                    let _ = child.kill();
                }
                return ExitCode::from(1);
            }
        }
    }
    run_dev_nodes(children, base_port)
}

/// The operators' HTTP port, when `http_port` is set.
async fn http_listener(
    server: &shoal_net::server::ServerConfig,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(http_port) = server.http_port else {
        return Ok(None);
    };
    let addr = format!("{}:{http_port}", server.bind);
    let http = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (http_port): {e}"))?;
    tracing::info!("metrics on http://{addr}/metrics, dashboard on http://{addr}/");
    Ok(Some(http))
}

/// The TLS port and its acceptor, when `tls_port` is set (with both files).
async fn tls_listener(
    server: &shoal_net::server::ServerConfig,
) -> Result<Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>, String> {
    let Some(port) = server.tls_port else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&server.tls_cert_file, &server.tls_key_file) else {
        return Err("tls_port needs tls_cert_file and tls_key_file".into());
    };
    let acceptor = shoal_net::tls::acceptor(std::path::Path::new(cert), std::path::Path::new(key))
        .map_err(|e| e.to_string())?;
    let addr = format!("{}:{port}", server.bind);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (tls_port): {e}"))?;
    tracing::info!("TLS clients on {addr}: try redis-cli --tls --cacert <ca.pem> -p {port}");
    Ok(Some((listener, acceptor)))
}

/// The Redis Cluster port (client port + 1000) of a member started with
/// `cluster_clients`; none for a single node, which says so.
async fn cluster_clients_listener(
    config: &NodeConfig,
    member: bool,
) -> Result<Option<tokio::net::TcpListener>, String> {
    if !config.server.cluster_clients {
        return Ok(None);
    }
    if !member {
        tracing::warn!("cluster_clients is set but this node is not a cluster member: ignored");
        return Ok(None);
    }
    let port = config
        .server
        .port
        .checked_add(shoal_net::cluster::CLUSTER_CLIENT_PORT_OFFSET)
        .ok_or_else(|| {
            format!(
                "port {} leaves no room for its Redis Cluster port (+1000)",
                config.server.port
            )
        })?;
    let addr = format!("{}:{port}", config.server.bind);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        format!("cannot listen on {addr} (cluster_clients: client port + 1000): {e}")
    })?;
    tracing::info!("Redis Cluster clients on {addr}: try redis-cli -c -p {port}");
    Ok(Some(listener))
}

fn cluster_port_offset() -> u16 {
    shoal_net::cluster::PEER_PORT_OFFSET
}

/// Wait for SIGINT (Ctrl-C) or SIGTERM (`kill`, systemd, container runtimes).
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); only Ctrl-C stops gracefully");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Set `stop` on SIGINT or SIGTERM (a small tokio runtime on its own thread).
fn ctrlc_flag(stop: Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(shutdown_signal());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(())
}

/// `SHOAL.RING PINJOIN|PINLEAVE namespace node`.
fn pin_member(verb: &str, namespace: u8, node: u32) -> Vec<String> {
    vec![
        "SHOAL.RING".into(),
        verb.into(),
        namespace.to_string(),
        node.to_string(),
    ]
}

/// The RESP command a `shoal cluster` subcommand sends.
/// `SHOAL.RING` and its arguments.
fn ring(args: &[&str]) -> Vec<String> {
    std::iter::once("SHOAL.RING")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

fn admin_request(
    command: ClusterCommand,
) -> Result<(AdminTarget, Vec<String>, &'static str), String> {
    let split = |node: &str| -> Result<(String, String), String> {
        let (id, addr) = node
            .split_once('@')
            .ok_or_else(|| format!("'{node}' is not id@host:port"))?;
        Ok((id.to_string(), addr.to_string()))
    };
    Ok(match command {
        ClusterCommand::Status { target } => (target, vec!["SHOAL.CLUSTER".into()], "status"),
        ClusterCommand::Join { target, node } => {
            let (id, addr) = split(&node)?;
            (target, ring(&["JOIN", &id, &addr]), "join")
        }
        ClusterCommand::Leave { target, node } => {
            (target, ring(&["LEAVE", &node.to_string()]), "leave")
        }
        ClusterCommand::Replace { target, old, new } => {
            let (id, addr) = split(&new)?;
            (
                target,
                ring(&["REPLACE", &old.to_string(), &id, &addr]),
                "replace",
            )
        }
        ClusterCommand::Pin {
            target,
            namespace,
            nodes,
            n,
            r,
            w,
        } => {
            let mut args = vec![
                "SHOAL.RING".to_string(),
                "PIN".into(),
                namespace.to_string(),
                n.to_string(),
                r.to_string(),
                w.to_string(),
            ];
            args.extend(nodes.iter().map(u32::to_string));
            (target, args, "pin")
        }
        ClusterCommand::PinJoin {
            target,
            namespace,
            node,
        } => (target, pin_member("PINJOIN", namespace, node), "pin-join"),
        ClusterCommand::PinLeave {
            target,
            namespace,
            node,
        } => (target, pin_member("PINLEAVE", namespace, node), "pin-leave"),
        ClusterCommand::Unpin { target, namespace } => {
            (target, ring(&["UNPIN", &namespace.to_string()]), "unpin")
        }
        ClusterCommand::Abort { target } => (target, ring(&["ABORT"]), "abort"),
    })
}

/// `shoal cluster ...`: send one command to a member over RESP, return its text.
fn admin_call(addr: &str, requirepass: Option<&str>, args: &[&[u8]]) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let mut request = bytes::BytesMut::new();
    if let Some(pass) = requirepass {
        shoal_net::resp::encode_request(&[b"AUTH", pass.as_bytes()], &mut request);
    }
    shoal_net::resp::encode_request(args, &mut request);
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut buf = bytes::BytesMut::new();
    let mut replies = Vec::new();
    let wanted = if requirepass.is_some() { 2 } else { 1 };
    while replies.len() < wanted {
        let mut chunk = [0u8; 16 << 10];
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(reply) =
            shoal_net::resp::decode_reply(&mut buf).map_err(|e| format!("{e:?}"))?
        {
            replies.push(reply);
        }
    }
    match replies.pop().expect("one reply per request") {
        shoal_net::resp::Reply::Bulk(text) => Ok(String::from_utf8_lossy(&text).into_owned()),
        shoal_net::resp::Reply::Verbatim { text, .. } => Ok(text),
        shoal_net::resp::Reply::Error(e) => Err(e),
        other => Err(format!("unexpected reply {other:?}")),
    }
}
