//! A key's timeline for the report: every event touching the key, faults and
//! liveness interleaved by time, final replica states last; bounded.

use crate::history::{Event, FinalState, History, OkResult, OpHeader};
use crate::model::{siblings_text, Key};
use std::fmt;

/// The most event lines a timeline keeps; the middle of a longer one is cut.
pub const TIMELINE_LINES_MAX: usize = 200;

/// Lines of one timeline, ready to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub title: String,
    /// The kept lines, with one marker line where lines were cut.
    pub lines: Vec<String>,
    /// How many event lines were left out.
    pub lines_cut: usize,
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        for line in &self.lines {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The timeline of `key`, or of the run's faults and liveness when `key` is None.
pub fn key_timeline(history: &History, key: Option<&Key>) -> Timeline {
    let mut entries: Vec<(bool, u64, usize, &Event)> = history
        .events
        .iter()
        .enumerate()
        .filter(|(_, event)| touches(event, key))
        .map(|(index, event)| {
            let time_ms = event.time_ms();
            (time_ms.is_none(), time_ms.unwrap_or(0), index, event)
        })
        .collect();
    entries.sort_by_key(|&(after_heal, time_ms, index, _)| (after_heal, time_ms, index));
    let all_lines: Vec<String> = entries
        .iter()
        .map(|&(_, _, _, event)| event_line(event))
        .collect();
    let title = match key {
        Some(key) => format!("timeline of {key} ({} events):", all_lines.len()),
        None => format!("timeline of the run ({} events):", all_lines.len()),
    };
    let (lines, lines_cut) = bounded(all_lines);
    Timeline {
        title,
        lines,
        lines_cut,
    }
}

fn touches(event: &Event, key: Option<&Key>) -> bool {
    match event {
        Event::Fault(_) | Event::Quiescence(_) => true,
        _ => key.is_some() && event.key() == key,
    }
}

/// Keeps the first and last halves of `TIMELINE_LINES_MAX` lines.
fn bounded(lines: Vec<String>) -> (Vec<String>, usize) {
    if lines.len() <= TIMELINE_LINES_MAX {
        return (lines, 0);
    }
    let lines_cut = lines.len() - TIMELINE_LINES_MAX;
    let head_count = TIMELINE_LINES_MAX / 2;
    let mut kept: Vec<String> = Vec::with_capacity(TIMELINE_LINES_MAX + 1);
    let mut all = lines.into_iter();
    kept.extend(all.by_ref().take(head_count));
    kept.push(format!("... {lines_cut} lines cut ..."));
    kept.extend(all.skip(lines_cut));
    (kept, lines_cut)
}

fn event_line(event: &Event) -> String {
    match event {
        Event::Invoke {
            op,
            value,
            expires_ms,
        } => {
            let mut value = value
                .as_ref()
                .map_or_else(String::new, |value| format!(" {value:?}"));
            if let Some(at) = expires_ms {
                value.push_str(&format!(" expiring at {at} ms"));
            }
            op_line(op, "invoke", &format!("{value} via node {}", op.node))
        }
        Event::Ok { op, result } => op_line(op, "ok", &ok_text(result)),
        Event::Fail { op } => op_line(op, "fail", ""),
        Event::Info { op } => op_line(op, "info", " (unknown outcome)"),
        Event::Fault(fault) => format!("{}  fault  {}", run_time(fault.time_ms), fault.what),
        Event::Quiescence(quiescence) if quiescence.converged => format!(
            "{}  quiescence: converged after {} ms",
            AFTER_HEAL, quiescence.waited_ms
        ),
        Event::Quiescence(quiescence) => format!(
            "{}  quiescence: NOT converged after {} ms",
            AFTER_HEAL, quiescence.waited_ms
        ),
        Event::Final(state) => format!("{}  final  {}", AFTER_HEAL, final_text(state)),
        Event::Effect(effect) => format!(
            "{}  node {} applied {}{} dot {} superseding {}",
            run_time(effect.time_ms),
            effect.node,
            effect.f.name(),
            effect
                .value
                .as_ref()
                .map_or_else(String::new, |value| format!(" {value:?}")),
            effect.dot,
            effect.superseded
        ),
        Event::Collected(collection) => format!(
            "{}  node {} collected the delete markers, context {}",
            run_time(collection.time_ms),
            collection.node,
            collection.context
        ),
        Event::Backup(state) => format!(
            "{}  backup taken {}..{} ms holds {} context {}",
            AFTER_HEAL,
            state.started_ms,
            state.taken_ms,
            siblings_text(&state.siblings),
            state.context
        ),
    }
}

const AFTER_HEAL: &str = "  after heal";

fn run_time(time_ms: u64) -> String {
    format!("{time_ms:>9} ms")
}

fn op_line(op: &OpHeader, phase: &str, rest: &str) -> String {
    format!(
        "{}  p{:<4} {:<6} {:<6}{}",
        run_time(op.time_ms),
        op.process,
        phase,
        op.f.name(),
        rest
    )
}

fn ok_text(result: &OkResult) -> String {
    match result {
        OkResult::Write {
            value,
            dot,
            context,
        } => format!(" {value:?} dot {dot} context {context}"),
        OkResult::Read { siblings, context } if siblings.is_empty() => {
            format!(" not found, context {context}")
        }
        OkResult::Read { siblings, context } => {
            format!(" {} context {context}", siblings_text(siblings))
        }
        OkResult::Delete { context } => format!(" context {context}"),
        OkResult::Add { total } | OkResult::Count { total: Some(total) } => {
            format!(" total {total}")
        }
        OkResult::Count { total: None } => " no counter".to_string(),
        OkResult::Push => String::new(),
        OkResult::Pop { value: Some(value) } => format!(" {value:?}"),
        OkResult::Pop { value: None } => " empty".to_string(),
        OkResult::Expire { applied: true } => " set".to_string(),
        OkResult::Expire { applied: false } => " absent".to_string(),
        OkResult::Persist { applied: true } => " removed".to_string(),
        OkResult::Persist { applied: false } => " none".to_string(),
    }
}

fn final_text(state: &FinalState) -> String {
    if state.tombstone {
        format!(
            "replica {}: tombstone, context {}",
            state.replica, state.context
        )
    } else {
        format!(
            "replica {}: {} context {}",
            state.replica,
            siblings_text(&state.siblings),
            state.context
        )
    }
}
