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
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    const USAGE: &str = "\
usage: shoal-sim --seed N [--scenario NAME] [--strict] [--history FILE]
       shoal-sim --seeds A..B [--scenario NAME] [--strict] [--jobs N] [--stop-at-first-failure]
                 [--progress-every N] [--digests]
scenarios: quiet swarm crash disk network corruption corrupt-tail (default: chosen by the seed)
--strict (or SHOAL_SIM_STRICT=1): known checker gaps count as failures";

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

    fn parse_args() -> Result<Args, String> {
        let mut args = std::env::args().skip(1);
        let mut seed = None;
        let mut range = None;
        let mut history = None;
        let mut options = RunOptions::from_env();
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
                "--seeds" => {
                    let text = value("--seeds")?;
                    let (a, b) = text
                        .split_once("..")
                        .ok_or(format!("--seeds wants A..B, got {text:?}"))?;
                    let first = a.parse::<u64>().map_err(|_| format!("bad seed {a:?}"))?;
                    let end = b.parse::<u64>().map_err(|_| format!("bad seed {b:?}"))?;
                    if end <= first {
                        return Err(format!("empty range {text}"));
                    }
                    range = Some((first, end));
                }
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
                "--strict" => options.strict = true,
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
        for gap in &outcome.gaps {
            println!("note: {gap}");
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
            match std::fs::write(path, &outcome.jsonl) {
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
        println!("history-digest: {}", outcome.digest);
        if outcome.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    struct SweepState {
        next_seed: AtomicU64,
        stop: AtomicBool,
        done: AtomicU64,
        simulated_ms: AtomicU64,
        failing: Mutex<Vec<u64>>,
        with_gaps: Mutex<Vec<u64>>,
        print: Mutex<()>,
    }

    fn sweep(first: u64, end: u64, args: &Args) -> ExitCode {
        let state = SweepState {
            next_seed: AtomicU64::new(first),
            stop: AtomicBool::new(false),
            done: AtomicU64::new(0),
            simulated_ms: AtomicU64::new(0),
            failing: Mutex::new(Vec::new()),
            with_gaps: Mutex::new(Vec::new()),
            print: Mutex::new(()),
        };
        let total = end - first;
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..args.jobs.min(total as usize) {
                scope.spawn(|| sweep_worker(end, total, args, &state, started));
            }
        });
        let wall_s = started.elapsed().as_secs_f64();
        let done = state.done.load(Ordering::Relaxed);
        let mut failing = state
            .failing
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        failing.sort_unstable();
        let simulated_s = state.simulated_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        println!(
            "summary: {done} seed(s) run, {} failed, {wall_s:.1} wall s, {:.1} seeds/minute, {:.0} simulated s per wall s ({} jobs)",
            failing.len(),
            done as f64 * 60.0 / wall_s.max(1e-9),
            simulated_s / wall_s.max(1e-9),
            args.jobs
        );
        let mut with_gaps = state
            .with_gaps
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        with_gaps.sort_unstable();
        if !with_gaps.is_empty() {
            let shown: Vec<String> = with_gaps.iter().take(50).map(|s| s.to_string()).collect();
            println!(
                "checker gaps: {} seed(s) had violations the checker reports for legal histories (not failures; --strict counts them): {}{}",
                with_gaps.len(),
                shown.join(" "),
                if with_gaps.len() > 50 { " ..." } else { "" }
            );
        }
        if let Some(seed) = failing.first() {
            println!(
                "first failing seed: {seed} (seeds needed: {})",
                seed - first + 1
            );
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn sweep_worker(end: u64, total: u64, args: &Args, state: &SweepState, started: Instant) {
        loop {
            if state.stop.load(Ordering::Relaxed) {
                return;
            }
            let seed = state.next_seed.fetch_add(1, Ordering::Relaxed);
            if seed >= end {
                return;
            }
            let result = run_caught(seed, &args.options);
            let (failed, line) = match &result {
                Ok(outcome) if outcome.passed() => (false, String::new()),
                Ok(outcome) => (
                    true,
                    format!(
                        "FAIL seed {seed} ({}): {}\n  replay: {}",
                        outcome.plan.scenario,
                        outcome.failures.first().cloned().unwrap_or_default(),
                        replay_command(seed, &args.options)
                    ),
                ),
                Err(panic) => (
                    true,
                    format!(
                        "FAIL seed {seed}: panicked: {panic}\n  replay: {}",
                        replay_command(seed, &args.options)
                    ),
                ),
            };
            if let Ok(outcome) = &result {
                state
                    .simulated_ms
                    .fetch_add(outcome.simulated_ms, Ordering::Relaxed);
                if !outcome.gaps.is_empty() {
                    state
                        .with_gaps
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(seed);
                }
            }
            let done = state.done.fetch_add(1, Ordering::Relaxed) + 1;
            let _guard = state.print.lock().unwrap_or_else(|p| p.into_inner());
            if let (Ok(outcome), true) = (&result, args.print_digests) {
                println!("seed {seed} history-digest: {}", outcome.digest);
            }
            if failed {
                println!("{line}");
                state
                    .failing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(seed);
                if args.stop_at_first_failure {
                    state.stop.store(true, Ordering::Relaxed);
                }
            }
            if args.progress_every > 0 && done.is_multiple_of(args.progress_every) {
                let wall_s = started.elapsed().as_secs_f64();
                let failures = state.failing.lock().map(|f| f.len()).unwrap_or_default();
                println!(
                    "progress: {done}/{total} seeds, {failures} failed, {:.1} seeds/minute",
                    done as f64 * 60.0 / wall_s.max(1e-9)
                );
            }
        }
    }

    /// `--cluster --seed N [--history FILE]` or `--cluster --seeds A..B
    /// [--jobs N] [--stop-at-first-failure]`: the multi-node cluster seeds, a
    /// sweep on `--jobs` threads (default: the cores), failures printed as they
    /// come and the first failing seed named at the end.
    fn cluster_main() -> ExitCode {
        use shoal_sim::cluster::{replay_command, run_cluster_seed};
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
            (None, Some(range)) => {
                let parsed = range
                    .split_once("..")
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                match parsed {
                    Some((a, b)) if b > a => (a, b, false),
                    _ => {
                        eprintln!("shoal-sim: --seeds wants A..B, got {range:?}");
                        return ExitCode::from(2);
                    }
                }
            }
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
        let started = Instant::now();
        let next_seed = AtomicU64::new(first);
        let stop = AtomicBool::new(false);
        let simulated_total_ms = AtomicU64::new(0);
        let failing: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        let print = Mutex::new(());
        std::thread::scope(|scope| {
            for _ in 0..jobs.min((end - first) as usize) {
                scope.spawn(|| loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_cluster_seed(seed)
                    }));
                    let mut lines = Vec::new();
                    match caught {
                        Ok(outcome) => {
                            simulated_total_ms.fetch_add(outcome.simulated_ms, Ordering::Relaxed);
                            if single {
                                lines.push(format!("{}", outcome.plan).trim_end().to_string());
                                lines.extend(outcome.gaps.iter().map(|g| format!("note: {g}")));
                                lines.push(format!("history-digest: {}", outcome.digest));
                                if let Some(path) = value("--history") {
                                    if let Err(e) = std::fs::write(&path, &outcome.jsonl) {
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
                        }
                        Err(payload) => lines.push(format!(
                            "FAIL seed {seed}: the simulation panicked: {}",
                            panic_text(payload)
                        )),
                    }
                    let failed = lines.iter().any(|l| l.starts_with("FAIL seed"));
                    if failed {
                        lines.push(format!("replay: {}", replay_command(seed)));
                        lock_or_recover(&failing).push(seed);
                        if stop_at_first {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    if !lines.is_empty() {
                        let _serial = lock_or_recover(&print);
                        println!("{}", lines.join("\n"));
                    }
                });
            }
        });
        let failing = lock_or_recover(&failing).clone();
        let failed = failing.len() as u64;
        let simulated_ms = simulated_total_ms.load(Ordering::Relaxed);
        if stop_at_first {
            // Every seed below the last one started has finished: the smallest
            // failure is the first.
            if let Some(seed) = failing.iter().min() {
                println!(
                    "first failing seed: {seed} (seeds needed: {})",
                    seed - first + 1
                );
                return ExitCode::from(1);
            }
        }
        let wall_s = started.elapsed().as_secs_f64();
        println!(
            "cluster seeds {first}..{end}: {} passed, {failed} failed; {:.0} simulated s in {wall_s:.1} wall s ({jobs} jobs)",
            end - first - failed,
            simulated_ms as f64 / 1000.0
        );
        if failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}
