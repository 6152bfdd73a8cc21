//! `shoal-sim`: run one seed (`--seed N`) or sweep a range (`--seeds A..B`) of
//! the deterministic simulation, print the plan, the checker's report and the
//! history digest, and for every failing seed the command that replays it.
//! Build with `RUSTFLAGS="--cfg madsim"` (see `ci/sim`); a normal build only says so.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "shoal-sim needs the simulation build: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p shoal-sim --release -- --seed 1 (or ci/sim --seed 1)"
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli {
    use shoal_sim::plan::Scenario;
    use shoal_sim::run::{replay_command, run_seed, RunOptions, RunOutcome};
    use std::collections::BTreeMap;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    const USAGE: &str = "\
usage: shoal-sim --seed N [--scenario NAME] [--history FILE]
       shoal-sim --seeds A..B [--scenario NAME] [--jobs N] [--stop-at-first-failure]
                 [--progress-every N] [--digests]
scenarios: quiet swarm crash disk network corruption corrupt-tail (default: chosen by the seed)
every violation the checker reports is a failure (--strict is accepted and changes nothing)";

    /// Failures a single-seed run prints.
    const FAILURES_SHOWN_MAX: usize = 20;

    enum Mode {
        One { seed: u64, history: Option<String> },
        Sweep { first: u64, end: u64 },
    }

    struct Args {
        mode: Mode,
        options: RunOptions,
        jobs: usize,
        stop_at_first_failure: bool,
        progress_every: u64,
        print_digests: bool,
    }

    /// `A..B`: seeds A up to (not including) B.
    fn parse_seed_range(text: &str) -> Result<(u64, u64), String> {
        let (a, b) = text
            .split_once("..")
            .ok_or(format!("--seeds wants A..B, got {text:?}"))?;
        let first = a.parse::<u64>().map_err(|_| format!("bad seed {a:?}"))?;
        let end = b.parse::<u64>().map_err(|_| format!("bad seed {b:?}"))?;
        if end <= first {
            return Err(format!("empty range {text}"));
        }
        Ok((first, end))
    }

    fn parse_args() -> Result<Args, String> {
        let mut args = std::env::args().skip(1);
        let mut seed = None;
        let mut range = None;
        let mut history = None;
        let mut options = RunOptions::default();
        let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut stop_at_first_failure = false;
        let mut progress_every = 0;
        let mut print_digests = false;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--seed" => {
                    let text = value("--seed")?;
                    seed = Some(
                        text.parse::<u64>()
                            .map_err(|_| format!("bad seed {text:?}"))?,
                    );
                }
                "--seeds" => range = Some(parse_seed_range(&value("--seeds")?)?),
                "--history" => history = Some(value("--history")?),
                "--scenario" => {
                    let text = value("--scenario")?;
                    options.scenario =
                        Some(Scenario::parse(&text).ok_or(format!("unknown scenario {text:?}"))?);
                }
                "--jobs" => {
                    let text = value("--jobs")?;
                    jobs = text
                        .parse::<usize>()
                        .map_err(|_| format!("bad job count {text:?}"))?
                        .max(1);
                }
                "--stop-at-first-failure" => stop_at_first_failure = true,
                // Accepted so that replay lines printed when it was an option still run.
                "--strict" => {}
                "--digests" => print_digests = true,
                "--progress-every" => {
                    let text = value("--progress-every")?;
                    progress_every = text
                        .parse::<u64>()
                        .map_err(|_| format!("bad count {text:?}"))?;
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let mode = match (seed, range) {
            (Some(seed), None) => Mode::One { seed, history },
            (None, Some((first, end))) => Mode::Sweep { first, end },
            _ => return Err("give exactly one of --seed N or --seeds A..B".into()),
        };
        Ok(Args {
            mode,
            options,
            jobs,
            stop_at_first_failure,
            progress_every,
            print_digests,
        })
    }

    pub fn main() -> ExitCode {
        init_trace();
        if std::env::args().any(|a| a == "--cluster") {
            return cluster_main();
        }
        let args = match parse_args() {
            Ok(args) => args,
            Err(message) => {
                if !message.is_empty() {
                    eprintln!("shoal-sim: {message}");
                }
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        };
        match args.mode {
            Mode::One { seed, ref history } => one(seed, &args.options, history.as_deref()),
            Mode::Sweep { first, end } => sweep(first, end, &args),
        }
    }

    /// `SHOAL_SIM_LOG=<filter>` (as `RUST_LOG`, e.g. `info` or `shoal_net=debug`)
    /// prints the simulated nodes' logs on stderr, stamped with simulated time and
    /// the node's span. Off by default: sweeps would drown in it.
    fn init_trace() {
        let Ok(filter) = std::env::var("SHOAL_SIM_LOG") else {
            return;
        };
        let filter = tracing_subscriber::EnvFilter::new(filter);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(SimulatedTime)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }

    /// Simulated time since the runtime started, for log lines.
    struct SimulatedTime;

    impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            match madsim::time::TimeHandle::try_current() {
                Some(time) => write!(w, "{:>9.3}s", time.elapsed().as_secs_f64()),
                None => write!(w, "{:>10}", "-"),
            }
        }
    }

    /// Run a seed, turning a panic (of the simulated server or the simulator) into
    /// a failure message.
    fn run_caught(seed: u64, options: &RunOptions) -> Result<RunOutcome, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, options)))
            .map_err(panic_text)
    }

    fn lock_or_recover<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A panic's message.
    fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic with a non-text payload".into())
    }

    fn one(seed: u64, options: &RunOptions, history_path: Option<&str>) -> ExitCode {
        let scenario = options.scenario;
        print!("{}", shoal_sim::plan::Plan::from_seed(seed, scenario));
        let started = Instant::now();
        let outcome = match run_caught(seed, options) {
            Ok(outcome) => outcome,
            Err(panic) => {
                println!("verdict: FAIL: the simulation panicked: {panic}");
                println!("replay: {}", replay_command(seed, options));
                println!("history-digest: none (the run panicked)");
                return ExitCode::from(1);
            }
        };
        let wall_s = started.elapsed().as_secs_f64();
        // The checker prints its own replay line without features; ours follows.
        println!("checker report:");
        for line in outcome.report.to_string().lines() {
            if !line.starts_with("replay:") {
                println!("{line}");
            }
        }
        for note in &outcome.notes {
            println!("note: {note}");
        }
        if outcome.passed() {
            println!("verdict: PASS ({})", outcome.plan.scenario);
        } else {
            println!("verdict: FAIL ({})", outcome.plan.scenario);
            for failure in outcome.failures.iter().take(FAILURES_SHOWN_MAX) {
                println!("  {failure}");
            }
            if outcome.failures.len() > FAILURES_SHOWN_MAX {
                println!(
                    "  ... and {} more",
                    outcome.failures.len() - FAILURES_SHOWN_MAX
                );
            }
            println!("replay: {}", replay_command(seed, options));
        }
        if let Some(path) = history_path {
            match std::fs::write(path, outcome.jsonl()) {
                Ok(()) => println!(
                    "history: {} events written to {path}",
                    outcome.history.events.len()
                ),
                Err(e) => println!("history: cannot write {path}: {e}"),
            }
        }
        let simulated_s = outcome.simulated_ms as f64 / 1000.0;
        println!(
            "speed: {simulated_s:.1} simulated s in {wall_s:.2} wall s ({:.0} simulated s per wall s)",
            simulated_s / wall_s.max(1e-9)
        );
        println!("history-digest: {}", outcome.digest());
        if outcome.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    /// What one seed of a sweep produced.
    struct SeedReport {
        failed: bool,
        /// Printed together, as the seed finishes: failures with their replay
        /// command, digests.
        lines: Vec<String>,
        simulated_ms: u64,
        /// How many nodes the seed ran (0: unknown, it panicked).
        nodes: u32,
    }

    /// A whole sweep's outcome; seed lists sorted.
    struct SweepTotals {
        done: u64,
        failing: Vec<u64>,
        simulated_ms: u64,
        wall_s: f64,
        /// Per node count: simulated ms and the wall seconds its seeds' own
        /// threads took (the speed of one job), and how many seeds.
        by_nodes: BTreeMap<u32, (u64, f64, u64)>,
    }

    impl SweepTotals {
        /// "3 nodes: 87 simulated s per wall s (1000 seeds); ..." on one job.
        fn speed_by_nodes(&self) -> String {
            let speed = |(nodes, (ms, wall_s, seeds)): (&u32, &(u64, f64, u64))| {
                let per_wall_s = *ms as f64 / 1000.0 / wall_s.max(1e-9);
                format!("{nodes} nodes: {per_wall_s:.0} simulated s per wall s ({seeds} seeds)")
            };
            let parts: Vec<String> = self.by_nodes.iter().map(speed).collect();
            parts.join("; ")
        }
    }

    /// Run seeds `first..end` on `jobs` threads, each taking the next seed, and
    /// print each seed's lines as it finishes (and a progress line every
    /// `progress_every` seeds, 0: never). With `stop_at_first_failure`, no seed
    /// starts after a failure; every seed below the last one started still
    /// finishes, so the smallest failure is the first.
    fn sweep_seeds(
        first: u64,
        end: u64,
        jobs: usize,
        stop_at_first_failure: bool,
        progress_every: u64,
        run: &(dyn Fn(u64) -> SeedReport + Sync),
    ) -> SweepTotals {
        let next_seed = AtomicU64::new(first);
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let simulated_ms = AtomicU64::new(0);
        let failing: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        let by_nodes: Mutex<BTreeMap<u32, (u64, f64, u64)>> = Mutex::new(BTreeMap::new());
        let print = Mutex::new(());
        let total = end - first;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..jobs.min(total as usize) {
                scope.spawn(|| loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let seed_started = Instant::now();
                    let report = run(seed);
                    let seed_wall_s = seed_started.elapsed().as_secs_f64();
                    simulated_ms.fetch_add(report.simulated_ms, Ordering::Relaxed);
                    add_speed(&by_nodes, &report, seed_wall_s);
                    if report.failed {
                        lock_or_recover(&failing).push(seed);
                        if stop_at_first_failure {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    let _serial = lock_or_recover(&print);
                    if !report.lines.is_empty() {
                        println!("{}", report.lines.join("\n"));
                    }
                    if progress_every > 0 && finished.is_multiple_of(progress_every) {
                        let wall_s = started.elapsed().as_secs_f64();
                        println!(
                            "progress: {finished}/{total} seeds, {} failed, {:.1} seeds/minute",
                            lock_or_recover(&failing).len(),
                            finished as f64 * 60.0 / wall_s.max(1e-9)
                        );
                    }
                });
            }
        });
        let sorted = |m: Mutex<Vec<u64>>| {
            let mut seeds = m.into_inner().unwrap_or_else(|p| p.into_inner());
            seeds.sort_unstable();
            seeds
        };
        SweepTotals {
            done: done.load(Ordering::Relaxed),
            failing: sorted(failing),
            simulated_ms: simulated_ms.load(Ordering::Relaxed),
            wall_s: started.elapsed().as_secs_f64(),
            by_nodes: by_nodes.into_inner().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Count a finished seed's simulated time and its thread's wall time
    /// toward the speed of seeds of its size.
    fn add_speed(
        by_nodes: &Mutex<BTreeMap<u32, (u64, f64, u64)>>,
        report: &SeedReport,
        seed_wall_s: f64,
    ) {
        if report.nodes == 0 {
            return;
        }
        let mut by_nodes = lock_or_recover(by_nodes);
        let size = by_nodes.entry(report.nodes).or_default();
        *size = (
            size.0 + report.simulated_ms,
            size.1 + seed_wall_s,
            size.2 + 1,
        );
    }

    /// The line `ci/planted-bugs` reads, and the exit code of a sweep.
    fn first_failing(first: u64, totals: &SweepTotals) -> ExitCode {
        match totals.failing.first() {
            Some(seed) => {
                println!(
                    "first failing seed: {seed} (seeds needed: {})",
                    seed - first + 1
                );
                ExitCode::from(1)
            }
            None => ExitCode::SUCCESS,
        }
    }

    fn sweep(first: u64, end: u64, args: &Args) -> ExitCode {
        let run = |seed: u64| {
            let result = run_caught(seed, &args.options);
            let mut lines = Vec::new();
            let (failed, simulated_ms, nodes) = match &result {
                Ok(outcome) => {
                    if args.print_digests {
                        lines.push(format!("seed {seed} history-digest: {}", outcome.digest()));
                    }
                    if !outcome.passed() {
                        lines.push(format!(
                            "FAIL seed {seed} ({}): {}",
                            outcome.plan.scenario,
                            outcome.failures.first().cloned().unwrap_or_default()
                        ));
                    }
                    (!outcome.passed(), outcome.simulated_ms, 1)
                }
                Err(panic) => {
                    lines.push(format!("FAIL seed {seed}: panicked: {panic}"));
                    (true, 0, 0)
                }
            };
            if failed {
                lines.push(format!("  replay: {}", replay_command(seed, &args.options)));
            }
            SeedReport {
                failed,
                lines,
                simulated_ms,
                nodes,
            }
        };
        let totals = sweep_seeds(
            first,
            end,
            args.jobs,
            args.stop_at_first_failure,
            args.progress_every,
            &run,
        );
        println!(
            "summary: {} seed(s) run, {} failed, {:.1} wall s, {:.1} seeds/minute, {:.0} simulated s per wall s ({} jobs); per job, {}",
            totals.done,
            totals.failing.len(),
            totals.wall_s,
            totals.done as f64 * 60.0 / totals.wall_s.max(1e-9),
            totals.simulated_ms as f64 / 1000.0 / totals.wall_s.max(1e-9),
            args.jobs,
            totals.speed_by_nodes()
        );
        first_failing(first, &totals)
    }

    /// `--cluster --seed N [--history FILE]` or `--cluster --seeds A..B
    /// [--jobs N] [--stop-at-first-failure]`: the multi-node cluster seeds, a
    /// sweep on `--jobs` threads (default: the cores), failures printed as they
    /// come and the first failing seed named at the end.
    /// One cluster seed run, caught if it panics, as the sweep prints it; a
    /// single seed also prints its plan and digest and may write its history.
    fn cluster_seed_report(seed: u64, single: bool, history: Option<&str>) -> SeedReport {
        use shoal_sim::cluster::{replay_command, run_cluster_seed};
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_cluster_seed(seed)));
        let mut lines = Vec::new();
        let (failed, simulated_ms, nodes) = match caught {
            Ok(outcome) => {
                if single {
                    lines.push(format!("{}", outcome.plan).trim_end().to_string());
                    lines.push(format!("history-digest: {}", outcome.digest()));
                    if let Some(path) = &history {
                        if let Err(e) = std::fs::write(path, outcome.jsonl()) {
                            eprintln!("shoal-sim: cannot write {path}: {e}");
                        }
                    }
                }
                if !outcome.passed() {
                    lines.push(format!("FAIL seed {seed}: {}", outcome.failures[0]));
                    lines.extend(
                        outcome
                            .failures
                            .iter()
                            .skip(1)
                            .take(FAILURES_SHOWN_MAX)
                            .map(|f| format!("  {f}")),
                    );
                }
                (!outcome.passed(), outcome.simulated_ms, outcome.plan.nodes)
            }
            Err(payload) => {
                lines.push(format!(
                    "FAIL seed {seed}: the simulation panicked: {}",
                    panic_text(payload)
                ));
                (true, 0, 0)
            }
        };
        if failed {
            lines.push(format!("replay: {}", replay_command(seed)));
        }
        SeedReport {
            failed,
            lines,
            simulated_ms,
            nodes,
        }
    }

    fn cluster_main() -> ExitCode {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--cluster")
            .collect();
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let stop_at_first = args.iter().any(|a| a == "--stop-at-first-failure");
        let (first, end, single) = match (value("--seed"), value("--seeds")) {
            (Some(seed), None) => match seed.parse::<u64>() {
                Ok(seed) => (seed, seed + 1, true),
                Err(_) => {
                    eprintln!("shoal-sim: bad seed {seed:?}");
                    return ExitCode::from(2);
                }
            },
            (None, Some(range)) => match parse_seed_range(&range) {
                Ok((a, b)) => (a, b, false),
                Err(e) => {
                    eprintln!("shoal-sim: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: shoal-sim --cluster --seed N [--history FILE] | --cluster --seeds A..B [--jobs N] [--stop-at-first-failure]");
                return ExitCode::from(2);
            }
        };
        let jobs = value("--jobs")
            .and_then(|j| j.parse::<usize>().ok())
            .filter(|j| *j > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let jobs = if single { 1 } else { jobs };
        let history = value("--history");
        let progress_every = value("--progress-every")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let run = |seed: u64| cluster_seed_report(seed, single, history.as_deref());
        let totals = sweep_seeds(first, end, jobs, stop_at_first, progress_every, &run);
        if stop_at_first && !totals.failing.is_empty() {
            return first_failing(first, &totals);
        }
        let failed = totals.failing.len() as u64;
        println!(
            "cluster seeds {first}..{end}: {} passed, {failed} failed; {:.0} simulated s in {:.1} wall s ({jobs} jobs); per job, {}",
            end - first - failed,
            totals.simulated_ms as f64 / 1000.0,
            totals.wall_s,
            totals.speed_by_nodes()
        );
        if failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}
