//! Client operations: each invoke paired with its completion from the same process.

use crate::history::{Event, Function, OkResult, OpHeader};
use crate::model::{Context, Dot, Key, NodeId, Sibling};
use std::collections::BTreeMap;
use std::fmt;

/// When something happened: run time, then position in the history to order
/// events of the same millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub time_ms: u64,
    pub event_index: usize,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok {
        at: Stamp,
        result: OkResult,
    },
    Fail {
        at: Stamp,
    },
    /// Unknown: an `info` completion, or (`at` = None) no completion in the history.
    Info {
        at: Option<Stamp>,
    },
}

/// One client operation, invoke and completion together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub process: u64,
    pub f: Function,
    pub key: Key,
    /// The node the client talked to when invoking.
    pub node: NodeId,
    pub invoked: Stamp,
    /// The value a write tried to write, an add to add, a push to append (None
    /// for reads, deletes, counts and pops).
    pub value: Option<String>,
    /// When that value expires (run time), if it does.
    pub expires_ms: Option<u64>,
    pub outcome: Outcome,
}

impl Operation {
    pub fn ok_result(&self) -> Option<&OkResult> {
        match &self.outcome {
            Outcome::Ok { result, .. } => Some(result),
            _ => None,
        }
    }

    /// When an `ok` operation completed.
    pub fn ok_at(&self) -> Option<Stamp> {
        match &self.outcome {
            Outcome::Ok { at, .. } => Some(*at),
            _ => None,
        }
    }

    pub fn is_info(&self) -> bool {
        matches!(self.outcome, Outcome::Info { .. })
    }

    pub fn is_fail(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }

    /// The dot of an `ok` write.
    pub fn written_dot(&self) -> Option<Dot> {
        match self.ok_result() {
            Some(OkResult::Write { dot, .. }) => Some(*dot),
            _ => None,
        }
    }

    /// The context an `ok` write or delete replaced.
    pub fn superseded_context(&self) -> Option<&Context> {
        match self.ok_result() {
            Some(OkResult::Write { context, .. }) | Some(OkResult::Delete { context }) => {
                Some(context)
            }
            _ => None,
        }
    }

    /// The context an `ok` delete removed.
    pub fn deleted_context(&self) -> Option<&Context> {
        match self.ok_result() {
            Some(OkResult::Delete { context }) => Some(context),
            _ => None,
        }
    }

    /// The siblings and context of an `ok` read.
    pub fn read_result(&self) -> Option<(&[Sibling], &Context)> {
        match self.ok_result() {
            Some(OkResult::Read { siblings, context }) => Some((siblings, context)),
            _ => None,
        }
    }

    /// A short name for reports: `p3 write "v7" invoked at 120 ms`.
    pub fn describe(&self) -> String {
        let value = match &self.value {
            Some(value) => format!(" {value:?}"),
            None => String::new(),
        };
        format!(
            "p{} {}{} invoked at {} ms",
            self.process, self.f, value, self.invoked.time_ms
        )
    }
}

/// A history whose operations do not pair up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryError {
    /// Index into `History::events` of the offending event.
    pub event_index: usize,
    pub message: String,
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.event_index, self.message)
    }
}

impl std::error::Error for HistoryError {}

/// Pairs every invoke with the next completion of the same process, in invoke order.
/// An invoke left open at the end counts as `info` (unknown).
pub fn pair_operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    let mut operations: Vec<Operation> = Vec::new();
    let mut open_by_process: BTreeMap<u64, usize> = BTreeMap::new();
    for (event_index, event) in events.iter().enumerate() {
        let fail = |message: String| HistoryError {
            event_index,
            message,
        };
        match event {
            Event::Invoke {
                op,
                value,
                expires_ms,
            } => {
                if let Some(&open) = open_by_process.get(&op.process) {
                    let earlier = &operations[open];
                    return Err(fail(format!(
                        "process {} invoked a {} while its {} is still open",
                        op.process,
                        op.f,
                        earlier.describe()
                    )));
                }
                let mut operation = invoked_operation(event_index, op, value).map_err(fail)?;
                operation.expires_ms = *expires_ms;
                open_by_process.insert(op.process, operations.len());
                operations.push(operation);
            }
            Event::Ok { op, .. } | Event::Fail { op } | Event::Info { op } => {
                let open = open_by_process.remove(&op.process).ok_or_else(|| {
                    fail(format!(
                        "{} {} from process {} with no open invoke",
                        event.type_name(),
                        op.f,
                        op.process
                    ))
                })?;
                complete(&mut operations[open], event_index, event).map_err(fail)?;
            }
            Event::Final(_)
            | Event::Quiescence(_)
            | Event::Fault(_)
            | Event::Effect(_)
            | Event::Collected(_)
            | Event::Backup(_) => {}
        }
    }
    Ok(operations)
}

fn invoked_operation(
    event_index: usize,
    op: &OpHeader,
    value: &Option<String>,
) -> Result<Operation, String> {
    if op.f.carries_value() && value.is_none() {
        return Err(format!(
            "{} invoke from process {} has no value",
            op.f, op.process
        ));
    }
    Ok(Operation {
        process: op.process,
        f: op.f,
        key: op.key.clone(),
        node: op.node,
        invoked: Stamp {
            time_ms: op.time_ms,
            event_index,
        },
        value: if op.f.carries_value() {
            value.clone()
        } else {
            None
        },
        expires_ms: None,
        outcome: Outcome::Info { at: None },
    })
}

fn complete(operation: &mut Operation, event_index: usize, event: &Event) -> Result<(), String> {
    let Some(op) = event.op() else {
        return Ok(());
    };
    if op.f != operation.f || op.key != operation.key {
        return Err(format!(
            "{} {} of {} from process {} does not match its open {} of {}",
            event.type_name(),
            op.f,
            op.key,
            op.process,
            operation.f,
            operation.key
        ));
    }
    let at = Stamp {
        time_ms: op.time_ms,
        event_index,
    };
    operation.outcome = match event {
        Event::Ok { result, .. } => {
            check_ok_result(operation, result)?;
            Outcome::Ok {
                at,
                result: result.clone(),
            }
        }
        Event::Fail { .. } => Outcome::Fail { at },
        _ => Outcome::Info { at: Some(at) },
    };
    Ok(())
}

fn check_ok_result(operation: &Operation, result: &OkResult) -> Result<(), String> {
    if result.function() != operation.f {
        return Err(format!(
            "ok carries a {} result for a {}",
            result.function(),
            operation.f
        ));
    }
    if let OkResult::Write { value, .. } = result {
        if operation.value.as_ref() != Some(value) {
            return Err(format!(
                "write ok value {value:?} differs from its invoke's value {:?}",
                operation.value.as_deref().unwrap_or("")
            ));
        }
    }
    Ok(())
}
