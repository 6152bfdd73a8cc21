//! A small builder of histories as JSON lines, so tests read like the runs they model.
//! Every key lives in namespace 0; clients talk to node 1.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use shoal_checker::{check, History, Report, ViolationKind};

pub type DotPair = (u32, u64);

pub struct Recorder {
    lines: Vec<String>,
}

fn context_json(context: &[DotPair]) -> Value {
    let map: Map<String, Value> = context
        .iter()
        .map(|(node, counter)| (node.to_string(), json!(counter)))
        .collect();
    Value::Object(map)
}

fn siblings_json(siblings: &[(&str, DotPair)]) -> Value {
    siblings
        .iter()
        .map(|(value, (node, counter))| json!({"value": value, "dot": [node, counter]}))
        .collect()
}

impl Recorder {
    /// A meta line with seed 42, n=3 r=2 w=2, nodes 1-3 and a 5000 ms bound.
    pub fn new(sessions: bool) -> Recorder {
        let meta = json!({
            "type": "meta", "seed": 42, "n": 3, "r": 2, "w": 2, "sessions": sessions,
            "nodes": [1, 2, 3], "converge_bound_ms": 5000
        });
        Recorder {
            lines: vec![meta.to_string()],
        }
    }

    /// One node (n=1 r=1 w=1, node 1) whose history records every effect and
    /// marker collection, as the simulator's do.
    pub fn with_effects() -> Recorder {
        let meta = json!({
            "type": "meta", "seed": 42, "n": 1, "r": 1, "w": 1, "sessions": true,
            "nodes": [1], "converge_bound_ms": 5000, "effects": true
        });
        Recorder {
            lines: vec![meta.to_string()],
        }
    }

    /// Node 1 applied a write (`value: Some`) or delete durably.
    pub fn effect(
        &mut self,
        time_ms: u64,
        key: &str,
        value: Option<&str>,
        dot: DotPair,
        superseded: &[DotPair],
    ) -> &mut Recorder {
        let f = if value.is_some() { "write" } else { "delete" };
        let mut line = json!({
            "type": "effect", "f": f, "ns": 0, "key": key, "time_ms": time_ms, "node": 1,
            "dot": [dot.0, dot.1], "superseded": context_json(superseded)
        });
        if let (Some(value), Value::Object(map)) = (value, &mut line) {
            map.insert("value".into(), json!(value));
        }
        self.line(line)
    }

    /// Node 1 collected the key's delete markers, forgetting `context`.
    pub fn collected(&mut self, time_ms: u64, key: &str, context: &[DotPair]) -> &mut Recorder {
        self.line(json!({
            "type": "collected", "ns": 0, "key": key, "time_ms": time_ms, "node": 1,
            "context": context_json(context)
        }))
    }

    /// Forget the first line (to replace the meta `new` wrote).
    pub fn drop_first_line(&mut self) -> &mut Recorder {
        self.lines.remove(0);
        self
    }

    pub fn line(&mut self, line: Value) -> &mut Recorder {
        self.lines.push(line.to_string());
        self
    }

    fn op(
        &mut self,
        phase: &str,
        f: &str,
        time_ms: u64,
        process: u64,
        key: &str,
    ) -> Map<String, Value> {
        let line = json!({
            "type": phase, "process": process, "f": f, "ns": 0, "key": key,
            "time_ms": time_ms, "node": 1
        });
        match line {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object is an object"),
        }
    }

    fn push(&mut self, map: Map<String, Value>) -> &mut Recorder {
        self.line(Value::Object(map))
    }

    pub fn invoke_write(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        value: &str,
    ) -> &mut Recorder {
        let mut line = self.op("invoke", "write", time_ms, process, key);
        line.insert("value".into(), json!(value));
        self.push(line)
    }

    pub fn ok_write(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        value: &str,
        dot: DotPair,
        context: &[DotPair],
    ) -> &mut Recorder {
        let mut line = self.op("ok", "write", time_ms, process, key);
        line.insert("value".into(), json!(value));
        line.insert("dot".into(), json!([dot.0, dot.1]));
        line.insert("context".into(), context_json(context));
        self.push(line)
    }

    /// An acknowledged write: invoke at `time_ms`, ok one ms later.
    pub fn write(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        value: &str,
        dot: DotPair,
        context: &[DotPair],
    ) -> &mut Recorder {
        self.invoke_write(time_ms, process, key, value);
        self.ok_write(time_ms + 1, process, key, value, dot, context)
    }

    pub fn invoke(&mut self, time_ms: u64, process: u64, f: &str, key: &str) -> &mut Recorder {
        let line = self.op("invoke", f, time_ms, process, key);
        self.push(line)
    }

    /// A completion without result fields: `fail` or `info`.
    pub fn complete(
        &mut self,
        phase: &str,
        time_ms: u64,
        process: u64,
        f: &str,
        key: &str,
    ) -> &mut Recorder {
        let line = self.op(phase, f, time_ms, process, key);
        self.push(line)
    }

    pub fn ok_read(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        siblings: &[(&str, DotPair)],
        context: &[DotPair],
    ) -> &mut Recorder {
        let mut line = self.op("ok", "read", time_ms, process, key);
        line.insert("siblings".into(), siblings_json(siblings));
        line.insert("context".into(), context_json(context));
        self.push(line)
    }

    /// A read: invoke at `time_ms`, ok one ms later.
    pub fn read(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        siblings: &[(&str, DotPair)],
        context: &[DotPair],
    ) -> &mut Recorder {
        self.invoke(time_ms, process, "read", key);
        self.ok_read(time_ms + 1, process, key, siblings, context)
    }

    /// An acknowledged delete: invoke at `time_ms`, ok one ms later.
    pub fn delete(
        &mut self,
        time_ms: u64,
        process: u64,
        key: &str,
        context: &[DotPair],
    ) -> &mut Recorder {
        self.invoke(time_ms, process, "delete", key);
        let mut line = self.op("ok", "delete", time_ms + 1, process, key);
        line.insert("context".into(), context_json(context));
        self.push(line)
    }

    pub fn final_state(
        &mut self,
        key: &str,
        replica: u32,
        siblings: &[(&str, DotPair)],
        context: &[DotPair],
    ) -> &mut Recorder {
        self.line(json!({
            "type": "final", "ns": 0, "key": key, "replica": replica,
            "siblings": siblings_json(siblings), "context": context_json(context),
            "tombstone": false
        }))
    }

    /// The same final state on replicas 1, 2 and 3.
    pub fn final_everywhere(
        &mut self,
        key: &str,
        siblings: &[(&str, DotPair)],
        context: &[DotPair],
    ) -> &mut Recorder {
        for replica in 1..=3 {
            self.final_state(key, replica, siblings, context);
        }
        self
    }

    pub fn final_tombstone(
        &mut self,
        key: &str,
        replica: u32,
        context: &[DotPair],
    ) -> &mut Recorder {
        self.line(json!({
            "type": "final", "ns": 0, "key": key, "replica": replica,
            "siblings": [], "context": context_json(context), "tombstone": true
        }))
    }

    /// A key's state in a backup begun at `started_ms` and taken at `taken_ms`.
    pub fn backup(
        &mut self,
        started_ms: u64,
        taken_ms: u64,
        key: &str,
        siblings: &[(&str, DotPair)],
        context: &[DotPair],
    ) -> &mut Recorder {
        self.line(json!({
            "type": "backup", "ns": 0, "key": key, "started_ms": started_ms,
            "taken_ms": taken_ms, "siblings": siblings_json(siblings),
            "context": context_json(context)
        }))
    }

    pub fn fault(&mut self, time_ms: u64, what: &str) -> &mut Recorder {
        self.line(json!({"type": "fault", "time_ms": time_ms, "what": what}))
    }

    pub fn quiescence(&mut self, converged: bool, waited_ms: u64) -> &mut Recorder {
        self.line(json!({"type": "quiescence", "converged": converged, "waited_ms": waited_ms}))
    }

    pub fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }

    pub fn history(&self) -> History {
        match History::parse(&self.text()) {
            Ok(history) => history,
            Err(error) => panic!("test history does not parse: {error}\n{}", self.text()),
        }
    }

    pub fn report(&self) -> Report {
        check(&self.history())
    }
}

/// The (kind, key name) of every violation, in report order.
pub fn kinds_and_keys(report: &Report) -> Vec<(ViolationKind, Option<String>)> {
    report
        .violations
        .iter()
        .map(|violation| {
            (
                violation.kind,
                violation.key.as_ref().map(|key| key.name.clone()),
            )
        })
        .collect()
}

/// Asserts that the report's first violation is `kind` on `key` and returns its
/// description.
pub fn assert_first(report: &Report, kind: ViolationKind, key: Option<&str>) -> String {
    let Some(first) = report.first_violation() else {
        panic!("expected a {kind} violation, the report passed:\n{report}");
    };
    assert_eq!(
        (first.kind, first.key.as_ref().map(|key| key.name.as_str())),
        (kind, key),
        "unexpected first violation in:\n{report}"
    );
    first.description.clone()
}
