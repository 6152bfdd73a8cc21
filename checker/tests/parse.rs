//! The history format: parse errors name their line, and what is written reads back.

mod common;

use common::Recorder;
use shoal_checker::{Dot, Event, History, Key, OkResult, Sibling};

fn parse_error(text: &str) -> (usize, String) {
    match History::parse(text) {
        Ok(history) => panic!("expected a parse error, parsed {history:?}"),
        Err(error) => (error.line, error.to_string()),
    }
}

const META: &str = r#"{"type":"meta","seed":1,"n":3,"r":2,"w":2,"sessions":true}"#;
const INVOKE_WRITE: &str = r#"{"type":"invoke","process":1,"f":"write","ns":0,"key":"k","time_ms":1,"node":1,"value":"a"}"#;

#[test]
fn invalid_json_names_its_line() {
    let text = format!("{META}\n{INVOKE_WRITE}\n{{\"type\":\"ok\",\n");
    let (line, message) = parse_error(&text);
    assert_eq!(line, 3);
    assert!(message.starts_with("line 3: "), "{message}");
}

#[test]
fn missing_result_field_names_line_and_field() {
    let ok = r#"{"type":"ok","process":1,"f":"write","ns":0,"key":"k","time_ms":2,"node":1,"value":"a","context":{}}"#;
    let (line, message) = parse_error(&format!("{META}\n\n{INVOKE_WRITE}\n{ok}\n"));
    assert_eq!(line, 4, "blank lines still count");
    assert!(message.contains("missing field `dot`"), "{message}");
}

#[test]
fn wrong_field_type_names_line_and_column() {
    let read =
        r#"{"type":"invoke","process":1,"f":"read","ns":300,"key":"k","time_ms":2,"node":1}"#;
    let (line, message) = parse_error(&format!("{META}\n{read}\n"));
    assert_eq!(line, 2);
    assert!(
        message.contains("300") && message.contains("column"),
        "{message}"
    );
}

#[test]
fn unknown_type_and_function_are_named() {
    let (line, message) = parse_error(&format!("{META}\n{{\"type\":\"nap\"}}\n"));
    assert_eq!(line, 2);
    assert!(message.contains("unknown type \"nap\""), "{message}");
    let scan = r#"{"type":"invoke","process":1,"f":"scan","ns":0,"key":"k","time_ms":2,"node":1}"#;
    let (_, message) = parse_error(&format!("{META}\n{scan}\n"));
    assert!(message.contains("unknown variant `scan`"), "{message}");
}

#[test]
fn meta_must_come_first_and_once() {
    let (line, message) = parse_error(&format!("{INVOKE_WRITE}\n{META}\n"));
    assert_eq!(line, 1);
    assert!(message.contains("meta"), "{message}");
    let (line, _) = parse_error(&format!("{META}\n{META}\n"));
    assert_eq!(line, 2);
    let (line, message) = parse_error("\n\n");
    assert_eq!(line, 1);
    assert!(message.contains("no meta line"), "{message}");
    let no_sessions = r#"{"type":"meta","seed":1}"#;
    let (_, message) = parse_error(no_sessions);
    assert!(message.contains("`sessions`"), "{message}");
}

#[test]
fn completion_without_invoke_names_its_line() {
    let fail = r#"{"type":"fail","process":9,"f":"read","ns":0,"key":"k","time_ms":2,"node":1}"#;
    let (line, message) = parse_error(&format!("{META}\n{INVOKE_WRITE}\n{fail}\n"));
    assert_eq!(line, 3);
    assert!(message.contains("no open invoke"), "{message}");
}

#[test]
fn second_invoke_while_open_and_mismatched_completion_are_errors() {
    let (line, message) = parse_error(&format!("{META}\n{INVOKE_WRITE}\n{INVOKE_WRITE}\n"));
    assert_eq!(line, 3);
    assert!(message.contains("still open"), "{message}");
    let other_key =
        r#"{"type":"info","process":1,"f":"write","ns":0,"key":"other","time_ms":2,"node":1}"#;
    let (line, message) = parse_error(&format!("{META}\n{INVOKE_WRITE}\n{other_key}\n"));
    assert_eq!(line, 3);
    assert!(message.contains("does not match"), "{message}");
}

#[test]
fn tombstone_with_siblings_is_an_error() {
    let final_state = r#"{"type":"final","ns":0,"key":"k","replica":1,"siblings":[{"value":"a","dot":[1,1]}],"context":{"1":1},"tombstone":true}"#;
    let (line, message) = parse_error(&format!("{META}\n{final_state}\n"));
    assert_eq!(line, 2);
    assert!(message.contains("tombstone"), "{message}");
}

#[test]
fn events_parse_into_typed_structs() {
    let mut recorder = Recorder::new(true);
    recorder.write(10, 3, "k1", "a", (2, 5), &[(1, 4)]).read(
        20,
        3,
        "k1",
        &[("a", (2, 5))],
        &[(1, 4), (2, 5)],
    );
    let history = recorder.history();
    assert_eq!(history.meta.seed, Some(42));
    assert!(history.meta.sessions);
    assert_eq!(history.meta.nodes, vec![1, 2, 3]);
    assert_eq!(history.events.len(), 4);
    let Event::Ok { op, result } = &history.events[1] else {
        panic!("expected an ok, got {:?}", history.events[1]);
    };
    assert_eq!(
        (op.process, &op.key, op.time_ms),
        (3, &Key::new(0, "k1"), 11)
    );
    let OkResult::Write { dot, context, .. } = result else {
        panic!("expected a write result, got {result:?}");
    };
    assert_eq!(*dot, Dot::new(2, 5));
    assert!(context.covers(Dot::new(1, 4)) && !context.covers(Dot::new(2, 1)));
    let Event::Ok {
        result: OkResult::Read { siblings, .. },
        ..
    } = &history.events[3]
    else {
        panic!("expected a read ok, got {:?}", history.events[3]);
    };
    let expected = Sibling {
        value: "a".to_string(),
        dot: Dot::new(2, 5),
    };
    assert_eq!(siblings, &vec![expected]);
}

#[test]
fn history_round_trips_through_jsonl() {
    let text = include_str!("histories/valid.jsonl");
    let history = History::parse(text).expect("valid.jsonl parses");
    assert_eq!(
        history.meta.extra.get("workload"),
        Some(&serde_json::json!("mixed")),
        "unknown meta fields are kept"
    );
    assert!(!history.meta.extra.contains_key("type"));
    let rewritten = history.to_jsonl();
    let reparsed = History::parse(&rewritten).expect("rewritten history parses");
    assert_eq!(reparsed, history);
    assert!(rewritten.starts_with(r#"{"type":"meta","#), "{rewritten}");
}
