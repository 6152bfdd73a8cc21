//! The typed history: the meta line, client operation events, final replica states,
//! liveness and fault notes. `format` turns these into JSON lines and back.

use crate::model::{Context, Dot, Key, NodeId, Sibling};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a client operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Write,
    Read,
    Delete,
    /// Adds the invoke's `value` (a positive integer) to a counter; `ok` with
    /// the counter's new total (`INCRBY`).
    Add,
    /// Reads a counter's total (`GET`).
    Count,
    /// Appends the invoke's `value` to the tail of a queue (`RPUSH`).
    Push,
    /// Takes the element at the head of a queue (`LPOP`), if any.
    Pop,
    /// Sets the deadline of a collection (`PEXPIREAT`): its key names the
    /// collection, whose elements are the keys named `collection:element`;
    /// the invoke's `expires_ms` is the deadline (run time); `ok` says whether
    /// it applied (`applied: false`: the collection was absent). Of a string
    /// key, it writes the value it finds again under a dot of its own that
    /// carries the deadline.
    Expire,
    /// Removes a string key's deadline (`PERSIST`): writes the value it finds
    /// again under a dot of its own, without a deadline; `ok` says whether it
    /// applied (`applied: false`: absent, or no deadline to remove).
    Persist,
}

impl Function {
    /// The register functions, counted in every report.
    pub const ALL: [Function; 3] = [Function::Write, Function::Read, Function::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Function::Write => "write",
            Function::Read => "read",
            Function::Delete => "delete",
            Function::Add => "add",
            Function::Count => "count",
            Function::Push => "push",
            Function::Pop => "pop",
            Function::Expire => "expire",
            Function::Persist => "persist",
        }
    }

    /// Whether the invoke carries a value: what a write writes, an add adds,
    /// a push appends.
    pub fn carries_value(self) -> bool {
        matches!(self, Function::Write | Function::Add | Function::Push)
    }

    /// Whether it works on a counter, a queue or a collection rather than a
    /// register: the register checks (G1-G6) pass such keys by;
    /// `checks::counters`, `checks::queues` and `checks::expiry` judge them.
    pub fn is_typed(self) -> bool {
        matches!(
            self,
            Function::Add | Function::Count | Function::Push | Function::Pop | Function::Expire
        )
    }

    /// Whether the invoke carries a deadline (`expires_ms`): a write's may, a
    /// collection expire's must.
    pub fn carries_deadline(self) -> bool {
        matches!(self, Function::Write | Function::Expire)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first line of every history: the run's settings. Unknown fields are kept in
/// `extra` so a report can show them and a rewrite does not lose them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<u32>,
    /// Whether the run's settings promise that a read sees every operation that
    /// completed before it (one node, or strict quorums): G6 (read-your-writes,
    /// monotonic reads) and G4 for reads are judged only then.
    pub sessions: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_bound_ms: Option<u64>,
    /// How far a node's wall clock may be behind the run's (the clock skew
    /// the run can inject): a value written to expire at run time `t` may be
    /// read until `t` plus this, never after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_slack_ms: Option<u64>,
    /// Whether the history holds an `effect` for every write and delete that took
    /// effect (whatever its client learned) and a `collected` for every delete-marker
    /// collection. Then the checks judge unknown outcomes by what they did, and a
    /// read may lose a context only to a recorded collection. Without, an unknown
    /// write or delete invoked after an acknowledged write is taken to have
    /// superseded it, and an acknowledged delete to have been collected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub effects: bool,
    /// Whether each queue element goes to one pop only, in push order (one
    /// node): then `checks::queues` also judges doubles and order. A cluster
    /// promises only that no acknowledged push is lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pops_exclusive: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The fields every client operation event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpHeader {
    pub process: u64,
    pub f: Function,
    pub key: Key,
    pub time_ms: u64,
    /// The node the client talked to.
    pub node: NodeId,
}

/// What an `ok` completion reports, by function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OkResult {
    /// The write's value, its new dot and the context it superseded.
    Write {
        value: String,
        dot: Dot,
        context: Context,
    },
    /// The siblings found (empty: not found or deleted) and their context.
    Read {
        siblings: Vec<Sibling>,
        context: Context,
    },
    /// The context the delete removed: every dot it covers is gone for ever.
    Delete { context: Context },
    /// The counter's total with the addition in it.
    Add { total: i64 },
    /// The counter's total (None: the counter does not exist, which counts as 0).
    Count { total: Option<i64> },
    /// The value is in the queue.
    Push,
    /// The element taken (None: the queue was empty).
    Pop { value: Option<String> },
    /// Whether the deadline was set (false: the collection was absent).
    Expire { applied: bool },
    /// Whether the deadline was removed (false: absent, or none to remove).
    Persist { applied: bool },
}

impl OkResult {
    pub fn function(&self) -> Function {
        match self {
            OkResult::Write { .. } => Function::Write,
            OkResult::Read { .. } => Function::Read,
            OkResult::Delete { .. } => Function::Delete,
            OkResult::Add { .. } => Function::Add,
            OkResult::Count { .. } => Function::Count,
            OkResult::Push => Function::Push,
            OkResult::Pop { .. } => Function::Pop,
            OkResult::Expire { .. } => Function::Expire,
            OkResult::Persist { .. } => Function::Persist,
        }
    }

    /// The context a register operation reported (None for counters and queues).
    pub fn context(&self) -> Option<&Context> {
        match self {
            OkResult::Write { context, .. }
            | OkResult::Read { context, .. }
            | OkResult::Delete { context } => Some(context),
            _ => None,
        }
    }
}

/// One replica's state of one key, read directly after the heal (phase 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    pub key: Key,
    pub replica: NodeId,
    pub siblings: Vec<Sibling>,
    pub context: Context,
    /// The replica holds only a delete marker (then `siblings` is empty).
    pub tombstone: bool,
    /// When it was read (run time; `None`: unknown, after the run). An
    /// expiring value may be gone from it if its deadline had passed by then.
    pub read_at_ms: Option<u64>,
}

/// One key as a backup holds it: the backup was begun at `started_ms` (its
/// request sent) and its view taken by `taken_ms` (answered), so it is the
/// store's state at some moment between; the state was read, after the run,
/// from a store restored from the backup. A key the backup lacks has no
/// siblings and an empty context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupState {
    pub key: Key,
    pub started_ms: u64,
    pub taken_ms: u64,
    /// Every sibling with a value, expired or not.
    pub siblings: Vec<Sibling>,
    pub context: Context,
}

/// Whether the cluster reached the identical state on every replica after the heal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quiescence {
    pub converged: bool,
    pub waited_ms: u64,
}

/// A free-text note of an injected fault, used only for the report's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub time_ms: u64,
    pub what: String,
}

/// A write or delete that took effect, as the system under test saw it (the
/// simulator watches the store): it became durable, or recovery found it after a
/// crash. Its client may never have learned so (`info`). Written values are unique,
/// so a write's effect names its operation by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub f: Function,
    pub key: Key,
    /// The node that applied it.
    pub node: NodeId,
    pub time_ms: u64,
    /// The written value; None for a delete.
    pub value: Option<String>,
    /// The dot it minted (a delete: its marker's).
    pub dot: Dot,
    /// The context it superseded: every dot this covers may be gone after it.
    pub superseded: Context,
}

/// A node collected a key's delete markers: the key reads as absent from then on,
/// and `context` (what the markers covered) is forgotten with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    pub key: Key,
    pub node: NodeId,
    pub time_ms: u64,
    pub context: Context,
}

/// One line of a history after the meta line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client starts an operation; `value` is set for writes, and
    /// `expires_ms` (run time, as `time_ms`) for a write whose value expires.
    Invoke {
        op: OpHeader,
        value: Option<String>,
        expires_ms: Option<u64>,
    },
    /// The operation took effect.
    Ok {
        op: OpHeader,
        result: OkResult,
    },
    /// The operation definitely did not take effect.
    Fail {
        op: OpHeader,
    },
    /// Unknown (timeout, crash): it may or may not have taken effect.
    Info {
        op: OpHeader,
    },
    Final(FinalState),
    Quiescence(Quiescence),
    Fault(Fault),
    Effect(Effect),
    Collected(Collection),
    Backup(BackupState),
}

impl Event {
    /// The wire name of this event's `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Invoke { .. } => "invoke",
            Event::Ok { .. } => "ok",
            Event::Fail { .. } => "fail",
            Event::Info { .. } => "info",
            Event::Final(_) => "final",
            Event::Quiescence(_) => "quiescence",
            Event::Fault(_) => "fault",
            Event::Effect(_) => "effect",
            Event::Collected(_) => "collected",
            Event::Backup(_) => "backup",
        }
    }

    /// The operation header, for client operation events.
    pub fn op(&self) -> Option<&OpHeader> {
        match self {
            Event::Invoke { op, .. }
            | Event::Ok { op, .. }
            | Event::Fail { op }
            | Event::Info { op } => Some(op),
            _ => None,
        }
    }

    /// The key this event touches, if any.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Event::Final(state) => Some(&state.key),
            Event::Effect(effect) => Some(&effect.key),
            Event::Collected(collection) => Some(&collection.key),
            Event::Backup(state) => Some(&state.key),
            _ => self.op().map(|op| &op.key),
        }
    }

    /// The time this event happened during the run; final states and quiescence
    /// come after the run and carry none.
    pub fn time_ms(&self) -> Option<u64> {
        match self {
            Event::Fault(fault) => Some(fault.time_ms),
            Event::Effect(effect) => Some(effect.time_ms),
            Event::Collected(collection) => Some(collection.time_ms),
            _ => self.op().map(|op| op.time_ms),
        }
    }
}

/// A whole history: the meta line and every later line in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub meta: Meta,
    pub events: Vec<Event>,
}

/// Why a history could not be read; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}
