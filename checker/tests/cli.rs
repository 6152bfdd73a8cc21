//! The `shoal-checker` binary: reports on stdout, exit code 0 pass / 1 violation /
//! 2 unreadable input.

use std::process::{Command, Output};

fn history_path(name: &str) -> String {
    format!("{}/tests/histories/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-checker"))
        .args(args)
        .output()
        .expect("shoal-checker runs")
}

fn run_histories(names: &[&str]) -> Output {
    let paths: Vec<String> = names.iter().map(|name| history_path(name)).collect();
    run(&paths)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn passing_history_exits_0() {
    let output = run_histories(&["valid.jsonl"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).starts_with("PASS"), "{}", stdout(&output));
}

#[test]
fn violating_history_exits_1_with_report() {
    let output = run_histories(&["lost_write.jsonl"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("first violation: G1 durability on ns=0 key=\"k1\""),
        "{text}"
    );
    assert!(text.contains("fault  crash node 1 and node 2"), "{text}");
    assert!(text.contains("replay: ci/sim --seed 1234"), "{text}");
}

#[test]
fn unparsable_history_exits_2_naming_the_line() {
    let output = run_histories(&["broken.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("broken.jsonl: cannot parse: line 3:"),
        "{message}"
    );
    assert!(message.contains("`dot`"), "{message}");
}

#[test]
fn missing_file_and_no_arguments_exit_2() {
    let output = run_histories(&["no_such_history.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );
    assert_eq!(run(&[]).status.code(), Some(2));
}

#[test]
fn several_histories_exit_with_the_worst_verdict() {
    let output = run_histories(&["valid.jsonl", "lost_write.jsonl"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("valid.jsonl ==") && text.contains("lost_write.jsonl =="),
        "{text}"
    );
    let output = run_histories(&["broken.jsonl", "lost_write.jsonl", "valid.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stdout(&output).contains("FAIL"),
        "later files are still checked"
    );
}
