//! The JSON-lines wire shapes and the conversion between them and the typed events.
//! Errors are plain messages; `History::parse` adds the line number.

use crate::history::{
    BackupState, Collection, Effect, Event, Fault, FinalState, Function, Meta, OkResult, OpHeader,
    Quiescence,
};
use crate::model::{Context, Dot, Key, NodeId, Sibling};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One parsed line.
pub(crate) enum Line {
    Meta(Meta),
    Event(Event),
}

#[derive(Deserialize)]
struct TypeTag {
    #[serde(rename = "type")]
    type_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Serialize, Deserialize)]
struct WireOp {
    #[serde(rename = "type")]
    phase: Phase,
    process: u64,
    f: Function,
    ns: u8,
    key: String,
    time_ms: u64,
    node: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dot: Option<Dot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Context>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    siblings: Option<Vec<Sibling>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    /// A counter's total (an add's or count's `ok`; absent: no counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    /// Whether a collection expire's `ok` set the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied: Option<bool>,
}

#[derive(Serialize, Deserialize)]
struct WireFinal {
    ns: u8,
    key: String,
    replica: NodeId,
    siblings: Vec<Sibling>,
    context: Context,
    #[serde(default)]
    tombstone: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_at_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct WireBackup {
    ns: u8,
    key: String,
    started_ms: u64,
    taken_ms: u64,
    siblings: Vec<Sibling>,
    context: Context,
}

#[derive(Serialize, Deserialize)]
struct WireEffect {
    f: Function,
    ns: u8,
    key: String,
    time_ms: u64,
    node: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    dot: Dot,
    superseded: Context,
}

#[derive(Serialize, Deserialize)]
struct WireCollected {
    ns: u8,
    key: String,
    time_ms: u64,
    node: NodeId,
    context: Context,
}

/// Any body with its `type` field in front, for writing.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    type_name: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Parses one non-empty line into the meta or an event.
pub(crate) fn parse_line(text: &str) -> Result<Line, String> {
    let tag: TypeTag = from_json(text)?;
    let type_name = tag
        .type_name
        .ok_or_else(|| "missing field `type`".to_string())?;
    match type_name.as_str() {
        "meta" => parse_meta(text).map(Line::Meta),
        "invoke" | "ok" | "fail" | "info" => parse_op(text).map(Line::Event),
        "final" => parse_final(text).map(Line::Event),
        "quiescence" => from_json(text).map(|found| Line::Event(Event::Quiescence(found))),
        "fault" => from_json(text).map(|found| Line::Event(Event::Fault(found))),
        "effect" => parse_effect(text).map(Line::Event),
        "collected" => parse_collected(text).map(Line::Event),
        "backup" => parse_backup(text).map(Line::Event),
        other => Err(format!(
            "unknown type {other:?} (expected meta, invoke, ok, fail, info, final, quiescence, fault, effect, collected or backup)"
        )),
    }
}

fn parse_meta(text: &str) -> Result<Meta, String> {
    let mut meta: Meta = from_json(text)?;
    meta.extra.remove("type");
    Ok(meta)
}

fn parse_op(text: &str) -> Result<Event, String> {
    let wire: WireOp = from_json(text)?;
    let op = OpHeader {
        process: wire.process,
        f: wire.f,
        key: Key::new(wire.ns, wire.key.clone()),
        time_ms: wire.time_ms,
        node: wire.node,
    };
    match wire.phase {
        Phase::Invoke => parse_invoke(op, wire),
        Phase::Ok => parse_ok_result(wire).map(|result| Event::Ok { op, result }),
        Phase::Fail => Ok(Event::Fail { op }),
        Phase::Info => Ok(Event::Info { op }),
    }
}

fn parse_invoke(op: OpHeader, wire: WireOp) -> Result<Event, String> {
    if op.f == Function::Expire {
        let expires_ms = required(wire.expires_ms, "expires_ms", "an expire invoke")?;
        return Ok(Event::Invoke {
            op,
            value: None,
            expires_ms: Some(expires_ms),
        });
    }
    if !op.f.carries_value() {
        return Ok(Event::Invoke {
            op,
            value: None,
            expires_ms: None,
        });
    }
    let what = format!(
        "a{} {} invoke",
        if op.f == Function::Add { "n" } else { "" },
        op.f
    );
    let value = required(wire.value, "value", &what)?;
    if op.f == Function::Add && !value.parse::<i64>().is_ok_and(|delta| delta > 0) {
        return Err(format!(
            "an add's value is a positive integer, not {value:?}"
        ));
    }
    let expires_ms = wire.expires_ms.filter(|_| op.f == Function::Write);
    Ok(Event::Invoke {
        op,
        value: Some(value),
        expires_ms,
    })
}

fn parse_ok_result(wire: WireOp) -> Result<OkResult, String> {
    match wire.f {
        Function::Write => Ok(OkResult::Write {
            value: required(wire.value, "value", "a write ok")?,
            dot: required(wire.dot, "dot", "a write ok")?,
            context: required(wire.context, "context", "a write ok")?,
        }),
        Function::Read => Ok(OkResult::Read {
            siblings: required(wire.siblings, "siblings", "a read ok")?,
            context: required(wire.context, "context", "a read ok")?,
        }),
        Function::Delete => Ok(OkResult::Delete {
            context: required(wire.context, "context", "a delete ok")?,
        }),
        Function::Add => Ok(OkResult::Add {
            total: required(wire.total, "total", "an add ok")?,
        }),
        Function::Count => Ok(OkResult::Count { total: wire.total }),
        Function::Push => Ok(OkResult::Push),
        Function::Pop => Ok(OkResult::Pop { value: wire.value }),
        Function::Expire => Ok(OkResult::Expire {
            applied: required(wire.applied, "applied", "an expire ok")?,
        }),
        Function::Persist => Ok(OkResult::Persist {
            applied: required(wire.applied, "applied", "a persist ok")?,
        }),
    }
}

fn parse_final(text: &str) -> Result<Event, String> {
    let wire: WireFinal = from_json(text)?;
    if wire.tombstone && !wire.siblings.is_empty() {
        return Err(format!(
            "a final state with tombstone true must have no siblings, found {}",
            wire.siblings.len()
        ));
    }
    Ok(Event::Final(FinalState {
        key: Key::new(wire.ns, wire.key),
        replica: wire.replica,
        siblings: wire.siblings,
        context: wire.context,
        tombstone: wire.tombstone,
        read_at_ms: wire.read_at_ms,
    }))
}

fn parse_backup(text: &str) -> Result<Event, String> {
    let wire: WireBackup = from_json(text)?;
    if wire.started_ms > wire.taken_ms {
        return Err(format!(
            "a backup taken at {} ms cannot have started later, at {} ms",
            wire.taken_ms, wire.started_ms
        ));
    }
    Ok(Event::Backup(BackupState {
        key: Key::new(wire.ns, wire.key),
        started_ms: wire.started_ms,
        taken_ms: wire.taken_ms,
        siblings: wire.siblings,
        context: wire.context,
    }))
}

fn parse_effect(text: &str) -> Result<Event, String> {
    let wire: WireEffect = from_json(text)?;
    if !matches!(wire.f, Function::Write | Function::Delete) {
        return Err("an effect is a write's or a delete's".to_string());
    }
    match (wire.f, &wire.value) {
        (Function::Write, None) => return Err("missing field `value` in a write effect".into()),
        (Function::Delete, Some(_)) => return Err("a delete effect has no value".to_string()),
        _ => {}
    }
    Ok(Event::Effect(Effect {
        f: wire.f,
        key: Key::new(wire.ns, wire.key),
        node: wire.node,
        time_ms: wire.time_ms,
        value: wire.value,
        dot: wire.dot,
        superseded: wire.superseded,
    }))
}

fn parse_collected(text: &str) -> Result<Event, String> {
    let wire: WireCollected = from_json(text)?;
    Ok(Event::Collected(Collection {
        key: Key::new(wire.ns, wire.key),
        node: wire.node,
        time_ms: wire.time_ms,
        context: wire.context,
    }))
}

fn required<T>(field: Option<T>, name: &str, what: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("missing field `{name}` in {what}"))
}

/// Deserializes one line, turning serde's message into one without its own
/// "at line 1 column N" (the caller names the file's line).
fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| {
        let message = error.to_string();
        let without_position = match message.rsplit_once(" at line ") {
            Some((head, _)) => head.to_string(),
            None => message,
        };
        format!("{without_position} (column {})", error.column())
    })
}

pub(crate) fn meta_to_json(meta: &Meta) -> String {
    if meta.extra.contains_key("type") {
        // An extra `type` would repeat the tag; the tag wins.
        let mut without_type = meta.clone();
        without_type.extra.remove("type");
        return tagged_to_json("meta", &without_type);
    }
    tagged_to_json("meta", meta)
}

pub(crate) fn event_to_json(event: &Event) -> String {
    match event {
        Event::Invoke {
            op,
            value,
            expires_ms,
        } => {
            let mut wire = op_to_wire(Phase::Invoke, op, value.clone(), None);
            wire.expires_ms = *expires_ms;
            to_json(&wire)
        }
        Event::Ok { op, result } => to_json(&op_to_wire(Phase::Ok, op, None, Some(result))),
        Event::Fail { op } => to_json(&op_to_wire(Phase::Fail, op, None, None)),
        Event::Info { op } => to_json(&op_to_wire(Phase::Info, op, None, None)),
        Event::Final(state) => final_to_json(state),
        Event::Quiescence(quiescence) => tagged_to_json::<Quiescence>("quiescence", quiescence),
        Event::Fault(fault) => tagged_to_json::<Fault>("fault", fault),
        Event::Effect(effect) => effect_to_json(effect),
        Event::Collected(collection) => collected_to_json(collection),
        Event::Backup(state) => tagged_to_json(
            "backup",
            &WireBackup {
                ns: state.key.ns,
                key: state.key.name.clone(),
                started_ms: state.started_ms,
                taken_ms: state.taken_ms,
                siblings: state.siblings.clone(),
                context: state.context.clone(),
            },
        ),
    }
}

fn op_to_wire(
    phase: Phase,
    op: &OpHeader,
    value: Option<String>,
    result: Option<&OkResult>,
) -> WireOp {
    let mut wire = WireOp {
        phase,
        process: op.process,
        f: op.f,
        ns: op.key.ns,
        key: op.key.name.clone(),
        time_ms: op.time_ms,
        node: op.node,
        value,
        dot: None,
        context: None,
        siblings: None,
        expires_ms: None,
        total: None,
        applied: None,
    };
    match result {
        Some(OkResult::Write {
            value,
            dot,
            context,
        }) => {
            wire.value = Some(value.clone());
            wire.dot = Some(*dot);
            wire.context = Some(context.clone());
        }
        Some(OkResult::Read { siblings, context }) => {
            wire.siblings = Some(siblings.clone());
            wire.context = Some(context.clone());
        }
        Some(OkResult::Delete { context }) => wire.context = Some(context.clone()),
        Some(OkResult::Add { total }) => wire.total = Some(*total),
        Some(OkResult::Count { total }) => wire.total = *total,
        Some(OkResult::Push) | None => {}
        Some(OkResult::Pop { value }) => wire.value = value.clone(),
        Some(OkResult::Expire { applied }) | Some(OkResult::Persist { applied }) => {
            wire.applied = Some(*applied)
        }
    }
    wire
}

fn final_to_json(state: &FinalState) -> String {
    let wire = WireFinal {
        ns: state.key.ns,
        key: state.key.name.clone(),
        replica: state.replica,
        siblings: state.siblings.clone(),
        context: state.context.clone(),
        tombstone: state.tombstone,
        read_at_ms: state.read_at_ms,
    };
    tagged_to_json("final", &wire)
}

fn effect_to_json(effect: &Effect) -> String {
    let wire = WireEffect {
        f: effect.f,
        ns: effect.key.ns,
        key: effect.key.name.clone(),
        time_ms: effect.time_ms,
        node: effect.node,
        value: effect.value.clone(),
        dot: effect.dot,
        superseded: effect.superseded.clone(),
    };
    tagged_to_json("effect", &wire)
}

fn collected_to_json(collection: &Collection) -> String {
    let wire = WireCollected {
        ns: collection.key.ns,
        key: collection.key.name.clone(),
        time_ms: collection.time_ms,
        node: collection.node,
        context: collection.context.clone(),
    };
    tagged_to_json("collected", &wire)
}

fn tagged_to_json<T: Serialize>(type_name: &str, body: &T) -> String {
    to_json(&Tagged { type_name, body })
}

fn to_json<T: Serialize>(body: &T) -> String {
    // Every shape here is strings, integers, booleans, arrays and maps with string or
    // integer keys: serialization cannot fail, so a failure is a bug in this module.
    serde_json::to_string(body).expect("history lines always serialize to JSON")
}
