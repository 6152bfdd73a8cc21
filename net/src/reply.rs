//! What running a command produces ([`Step`]: a reply now, a write waiting for
//! its group commit or its coordinator, or a reply then close), how a write's
//! results become its reply ([`ReplyShape`]), and the error replies every
//! command shares. Below `commands`, `backend` and `routing`, which all speak
//! it; above `storage` and `cluster`, whose results it turns into replies.
//!
//! Must not touch: command names or arguments (`commands`), connections
//! (`server`).

use crate::cluster::{remote_error, RoutedWrite};
use crate::resp::Reply;
use crate::storage::{WriteResults, WriteTicket};
use shoal_engine::cluster::wire::{Refusal, RemoteError};
use shoal_engine::{ReadError, WriteError};

/// What running a command produced.
pub enum Step {
    Reply(Reply),
    /// A write waiting for its group commit; `shape` turns results into the reply.
    Pending(WriteTicket, ReplyShape),
    /// A write routed through the cluster, waiting for its coordinator's answer.
    Routed(RoutedTicket, ReplyShape),
    /// Reply, then close the connection.
    Close(Reply),
}

/// A reply in request order: ready now, or waiting for its group commit or its
/// coordinator.
pub enum Waiting {
    Ready(Reply),
    Write(ReplyShape, WriteTicket),
    Routed(ReplyShape, RoutedTicket),
}

impl Waiting {
    /// What waits for `step`'s reply, and whether the connection closes after.
    pub fn of(step: Step) -> (Waiting, bool) {
        match step {
            Step::Reply(reply) => (Waiting::Ready(reply), false),
            Step::Pending(ticket, shape) => (Waiting::Write(shape, ticket), false),
            Step::Routed(ticket, shape) => (Waiting::Routed(shape, ticket), false),
            Step::Close(reply) => (Waiting::Ready(reply), true),
        }
    }

    pub async fn reply(self) -> Reply {
        match self {
            Waiting::Ready(reply) => reply,
            Waiting::Write(shape, ticket) => finish_write(ticket.wait().await, shape),
            Waiting::Routed(shape, ticket) => finish_routed(ticket.wait().await, shape),
        }
    }
}

/// A routed write's answer, once its coordinator has it.
pub struct RoutedTicket {
    reply: tokio::sync::oneshot::Receiver<Vec<RoutedWrite>>,
    op_count: usize,
}

impl RoutedTicket {
    pub fn new(
        reply: tokio::sync::oneshot::Receiver<Vec<RoutedWrite>>,
        op_count: usize,
    ) -> RoutedTicket {
        RoutedTicket { reply, op_count }
    }

    pub async fn wait(self) -> Vec<RoutedWrite> {
        let n = self.op_count;
        self.reply.await.unwrap_or_else(|_| {
            (0..n)
                .map(|_| {
                    Err(RemoteError::new(
                        Refusal::OutcomeUnknown,
                        "routing stopped before answering; outcome unknown",
                    ))
                })
                .collect()
        })
    }
}

/// How a write's results become its reply.
#[derive(Clone, Debug)]
pub enum ReplyShape {
    Set {
        get: bool,
    },
    SetNx,
    /// GETSET, GETDEL: the value before the write (nil: absent).
    Previous,
    /// INCR and friends: the new value, as an integer.
    NewInteger,
    /// INCRBYFLOAT: the new value, as a bulk string.
    NewValue,
    /// APPEND, SETRANGE: the new value's length.
    NewLength,
    /// MSETNX, RENAMENX, COPY once they write: 1.
    One,
    Count,
    /// HSET: how many of the writes made a value where there was none.
    Added,
    /// SETBIT: the bit at this offset before the write.
    OldBit(u64),
    /// LPOP, SPOP (conditional deletes): per write, the value it removed
    /// (a bulk), or nil when another took it first (not applied).
    Taken,
    /// DEL: how many keys existed, the writes grouped per key (a hash's
    /// fields and its string): `ops_per_key[i]` writes for key `i`.
    CountKeys(std::sync::Arc<[usize]>),
    Ok,
    ShoalWrite,
}

pub(crate) fn err(msg: impl Into<String>) -> Step {
    Step::Reply(Reply::error(msg))
}

pub(crate) fn syntax_error() -> Step {
    err("ERR syntax error")
}

pub(crate) fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

pub(crate) fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A read-modify-write's reply, from the value it minted.
fn new_value_reply(outcome: &shoal_engine::WriteOutcome, shape: ReplyShape) -> Reply {
    let minted = outcome
        .minted_value()
        .expect("an applied read-modify-write mints a value");
    match shape {
        ReplyShape::NewInteger => Reply::Integer(
            shoal_engine::store::modify::parse_i64(&minted)
                .expect("INCR mints the integer it computed"),
        ),
        ReplyShape::NewLength => Reply::Integer(minted.len() as i64),
        _ => Reply::Bulk(minted),
    }
}

/// The replies built from what writes found before them: the values takes
/// removed (nil: another took it first), or SETBIT's old bit.
fn removed_reply(outcomes: &[shoal_engine::WriteOutcome], shape: ReplyShape) -> Reply {
    match shape {
        ReplyShape::OldBit(offset_bits) => {
            let old = outcomes[0].previous_winner.as_deref().unwrap_or_default();
            Reply::Integer(i64::from(crate::bits::bit_at(old, offset_bits)))
        }
        _ => Reply::Array(
            outcomes
                .iter()
                .map(|o| match (o.applied, &o.previous_winner) {
                    (true, Some(value)) => Reply::Bulk(value.clone()),
                    _ => Reply::Null,
                })
                .collect(),
        ),
    }
}

/// A refusal (a peer's or the cluster's) as the client's error reply.
pub(crate) fn refused(e: &RemoteError) -> Reply {
    Reply::error(e.line())
}

pub(crate) fn read_error(e: ReadError) -> Reply {
    Reply::error(format!("ERR {e}"))
}

/// The reply text for a refused write. The code tells a client whether the write
/// may have happened: `IOERR` means unknown; every other code means it did not.
pub fn write_error_reply(e: &WriteError) -> Reply {
    Reply::error(remote_error(e).line())
}

/// Turn a pending write's results into its reply.
pub fn finish_write(results: WriteResults, shape: ReplyShape) -> Reply {
    finish_routed(
        results
            .into_iter()
            .map(|r| r.map_err(|e| remote_error(&e)))
            .collect(),
        shape,
    )
}

/// Turn a write's results (local or routed) into its reply.
pub fn finish_routed(results: Vec<RoutedWrite>, shape: ReplyShape) -> Reply {
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return refused(e);
    }
    let outcomes: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    match shape {
        ReplyShape::Set { get } => {
            let o = &outcomes[0];
            if get {
                o.previous_winner.clone().map_or(Reply::Null, Reply::Bulk)
            } else if o.applied {
                Reply::ok()
            } else {
                Reply::Null
            }
        }
        ReplyShape::SetNx => Reply::Integer(i64::from(outcomes[0].applied)),
        ReplyShape::Taken | ReplyShape::OldBit(_) => removed_reply(&outcomes, shape),
        ReplyShape::Previous => outcomes[0]
            .previous_winner
            .clone()
            .map_or(Reply::Null, Reply::Bulk),
        ReplyShape::NewInteger | ReplyShape::NewValue | ReplyShape::NewLength => {
            new_value_reply(&outcomes[0], shape)
        }
        // A key whose values had all expired was deleted too, but did not exist.
        ReplyShape::Count => Reply::Integer(
            outcomes
                .iter()
                .filter(|o| o.applied && o.previous_live)
                .count() as i64,
        ),
        ReplyShape::Added => Reply::Integer(
            outcomes
                .iter()
                .filter(|o| o.applied && !o.previous_live)
                .count() as i64,
        ),
        ReplyShape::CountKeys(ops_per_key) => {
            let mut rest = outcomes.as_slice();
            let mut existed = 0;
            for n in ops_per_key.iter() {
                let (key, after) = rest.split_at(*n);
                existed += i64::from(key.iter().any(|o| o.applied && o.previous_live));
                rest = after;
            }
            assert!(rest.is_empty(), "every write belongs to a key");
            Reply::Integer(existed)
        }
        ReplyShape::Ok => Reply::ok(),
        ReplyShape::One => Reply::Integer(1),
        ReplyShape::ShoalWrite => {
            let o = &outcomes[0];
            Reply::Array(vec![
                o.dot
                    .map_or(Reply::Null, |d| Reply::Bulk(d.to_string().into())),
                Reply::Bulk(o.superseded.to_string().into()),
            ])
        }
    }
}
