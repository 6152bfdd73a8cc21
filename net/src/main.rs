//! The `shoal` binary: `shoal server` (the default) runs a node; `shoal inspect`
//! dumps and checks a stopped node's data directory.

use clap::{Parser, Subcommand};
use shoal_engine::Store;
use shoal_net::config::{FileConfig, NodeConfig};
use shoal_net::filedisk::FileDir;
use shoal_net::runtime::TokioRuntime;
use shoal_net::server::{serve, Shared};
use shoal_net::storage::{Fsync, Storage};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    Server(ServerArgs),
    /// Dump a stopped node's data as JSON lines and check every segment.
    Inspect {
        data_dir: PathBuf,
        /// Only check integrity; do not print keys.
        #[arg(long)]
        check: bool,
    },
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
    #[arg(long)]
    data_dir: Option<String>,
    #[arg(long, value_enum)]
    fsync: Option<Fsync>,
    #[arg(long)]
    requirepass: Option<String>,
    /// Test only: journal unsynced writes so a test can emulate power loss after
    /// kill -9 (see net/src/filedisk.rs). Slows writes; never use for real data.
    #[arg(long, hide = true)]
    test_power_loss_journal: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or(Command::Server(ServerArgs::default()))
    {
        Command::Server(args) => run_server(args),
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
        data_dir: args.data_dir,
        fsync: args.fsync,
        requirepass: args.requirepass,
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
    let data_dir = PathBuf::from(&config.server.data_dir);
    let mut dir = FileDir::create(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    if power_loss_journal {
        tracing::warn!("test mode: journaling unsynced writes for power-loss emulation");
        dir = dir.with_power_loss_journal();
    }
    let _lock = lock_data_dir(&data_dir)?;
    let started = std::time::Instant::now();
    let (store, report) = Store::open(Arc::new(dir), config.store.clone())
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
    tracing::info!(
        "recovered {} keys from {} segments ({} from hints) in {} ms{}",
        report.keys_loaded,
        report.segments_scanned + report.segments_from_hints,
        report.segments_from_hints,
        started.elapsed().as_millis(),
        match report.torn_tail {
            Some((seg, offset, bytes)) =>
                format!("; cut a torn tail of {bytes} bytes (never acknowledged) in segment {seg} at offset {offset}"),
            None => String::new(),
        }
    );
    let storage = Storage::start(store, config.storage.clone(), TokioRuntime::new());
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
    let shared = Shared::new(storage.clone(), config.server.clone());
    tokio::select! {
        _ = serve(listener, shared) => {}
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down: syncing the log");
        }
    }
    storage
        .flush()
        .await
        .map_err(|e| format!("final sync failed: {e}"))
}
