//! `shoal-checker <history.jsonl>...`: checks each history and prints its report.
//! Exit code 0 when every history passes, 1 when any has a violation, 2 when any
//! input cannot be read or parsed (or no input was named). `-` reads stdin.

use shoal_checker::{check, History};
use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage: shoal-checker <history.jsonl>...  (- reads stdin)";

/// The worst thing seen so far; the exit code follows it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Pass = 0,
    Violation = 1,
    BadInput = 2,
}

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.iter().any(|path| path == "-h" || path == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if paths.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(Verdict::BadInput as u8);
    }
    let mut worst = Verdict::Pass;
    for path in &paths {
        let verdict = check_path(path, paths.len() > 1);
        worst = worst.max(verdict);
    }
    ExitCode::from(worst as u8)
}

fn check_path(path: &str, print_name: bool) -> Verdict {
    let history = match read_text(path)
        .and_then(|text| History::parse(&text).map_err(|error| format!("cannot parse: {error}")))
    {
        Ok(history) => history,
        Err(message) => {
            eprintln!("shoal-checker: {path}: {message}");
            return Verdict::BadInput;
        }
    };
    let report = check(&history);
    if print_name {
        println!("== {path} ==");
    }
    print!("{report}");
    if report.passed() {
        Verdict::Pass
    } else {
        Verdict::Violation
    }
}

fn read_text(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| format!("cannot read stdin: {error}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|error| format!("cannot read: {error}"))
}
