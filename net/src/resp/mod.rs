//! RESP2/RESP3 framing for Shoal's Redis-protocol front end.
//!
//! This module owns the bytes on the wire and nothing else:
//!
//! - request decoding on the server side ([`decode_request`]): multibulk
//!   (`*N\r\n$len\r\n...`) and inline commands with Redis's quoting rules;
//! - reply encoding ([`encode_reply`]) in RESP3, or downgraded to RESP2 the way
//!   Redis does it;
//! - reply decoding and request encoding for clients ([`decode_reply`],
//!   [`encode_request`]), used by the simulator's clients and by tests.
//!
//! It must not touch I/O (no sockets, no tokio, no clock) and knows nothing of
//! command semantics: a request is a list of byte strings, a reply is a
//! [`Reply`] tree. Every decoder is a pure function of the bytes buffered so
//! far: it consumes exactly one complete frame from the front of the buffer, or
//! consumes nothing and returns `Ok(None)` when the frame is not complete yet.
//! Because of that, feeding the same bytes in any chunking gives the same
//! frames and the same error.
//!
//! Limits: every length read from the wire is checked against a limit before
//! it is believed, and nothing is allocated for a frame until the whole frame
//! has arrived, so a peer cannot make us reserve memory it has not sent.
//!
//! After a [`ProtocolError`] the server replies with
//! [`ProtocolError::to_reply`] and closes the connection, like Redis; the
//! decoders do not resynchronise.
//!
//! Layout: this file holds the limits, the errors, the [`Reply`] tree and the
//! length-line parser both decoders share; `request` decodes requests,
//! `encode` writes replies and requests, `decode` reads replies.

mod decode;
mod encode;
mod request;

pub use decode::*;
pub use encode::*;
pub use request::*;

use bytes::Bytes;
use std::fmt;

/// Longest length header (`*N` / `$N` and friends, without the type byte and
/// CRLF) we wait for. A signed 64-bit decimal needs at most 20 bytes.
const LENGTH_LINE_MAX_BYTES: usize = 32;

/// Longest simple line in a reply (`+`, `-`, `:`, `,`, `(`, `#`, `_`) the
/// client-side decoder waits for before giving up.
const REPLY_LINE_MAX_BYTES: usize = 64 * 1024;

/// Deepest nesting of aggregate replies the client-side decoder accepts; bounds
/// its recursion.
const REPLY_NESTING_DEPTH_MAX: usize = 128;

/// Limits applied while decoding requests. The defaults are Redis's
/// `proto-max-bulk-len`, its multibulk count limit and its inline limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest accepted bulk argument (`$len`), in bytes.
    pub bulk_len_max_bytes: usize,
    /// Largest accepted argument count (`*N`).
    pub multibulk_len_max: usize,
    /// Longest accepted inline command line, in bytes, not counting its final
    /// `\n` (a `\r` before it counts).
    pub inline_len_max_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            bulk_len_max_bytes: 512 * 1024 * 1024,
            multibulk_len_max: 1_048_576,
            inline_len_max_bytes: 64 * 1024,
        }
    }
}

/// Why a request or reply could not be decoded. The connection that produced
/// it cannot be read any further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*N` where N is not a decimal integer or exceeds
    /// [`RequestLimits::multibulk_len_max`]; in replies, any aggregate length
    /// that is not a valid count.
    InvalidMultibulkLength,
    /// `$N` where N is not a decimal integer, is negative or exceeds
    /// [`RequestLimits::bulk_len_max_bytes`].
    InvalidBulkLength,
    /// A multibulk request argument did not start with `$`.
    ExpectedDollar { got: u8 },
    /// An aggregate length header did not end within a few bytes.
    TooBigMbulkCountString,
    /// A bulk length header did not end within a few bytes.
    TooBigBulkCountString,
    /// Bulk data was not followed by CRLF.
    BulkNotTerminated,
    /// An inline command line is longer than
    /// [`RequestLimits::inline_len_max_bytes`].
    TooBigInlineRequest,
    /// An inline command has an unterminated quote, or a closing quote that is
    /// not followed by a space.
    UnbalancedQuotes,
    /// A reply starts with a byte that is not a RESP2/RESP3 type.
    InvalidReplyType { got: u8 },
    /// A reply line did not end within [`REPLY_LINE_MAX_BYTES`].
    TooBigReplyLine,
    /// A reply line's `\r` was not followed by `\n`.
    InvalidLineEnding,
    /// `:` reply that is not a 64-bit integer.
    InvalidInteger,
    /// `,` reply that is not a double.
    InvalidDouble,
    /// `#` reply that is not `t` or `f`.
    InvalidBoolean,
    /// `(` reply that is not a decimal integer.
    InvalidBigNumber,
    /// `_` reply with content.
    InvalidNull,
    /// `=` reply shorter than its `xxx:` format prefix.
    InvalidVerbatim,
    /// Aggregates nested deeper than [`REPLY_NESTING_DEPTH_MAX`].
    NestingTooDeep,
}

impl ProtocolError {
    /// The error reply a server sends before closing the connection, with the
    /// `ERR` code Redis uses for protocol errors.
    pub fn to_reply(&self) -> Reply {
        Reply::Error(format!("ERR {self}"))
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedDollar { got } => {
                write!(f, "expected '$', got '{}'", got.escape_ascii())
            }
            ProtocolError::TooBigMbulkCountString => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCountString => f.write_str("too big bulk count string"),
            ProtocolError::BulkNotTerminated => f.write_str("bulk data not terminated by CRLF"),
            ProtocolError::TooBigInlineRequest => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::InvalidReplyType { got } => {
                write!(f, "invalid reply type '{}'", got.escape_ascii())
            }
            ProtocolError::TooBigReplyLine => f.write_str("too big reply line"),
            ProtocolError::InvalidLineEnding => f.write_str("expected CRLF line ending"),
            ProtocolError::InvalidInteger => f.write_str("invalid integer reply"),
            ProtocolError::InvalidDouble => f.write_str("invalid double reply"),
            ProtocolError::InvalidBoolean => f.write_str("invalid boolean reply"),
            ProtocolError::InvalidBigNumber => f.write_str("invalid big number reply"),
            ProtocolError::InvalidNull => f.write_str("invalid null reply"),
            ProtocolError::InvalidVerbatim => f.write_str("invalid verbatim string reply"),
            ProtocolError::NestingTooDeep => f.write_str("reply nesting too deep"),
        }
    }
}

impl std::error::Error for ProtocolError {}

// ---------------------------------------------------------------------------
// Shared parsing helpers
// ---------------------------------------------------------------------------

/// Reads the length header that starts at `start` (just after the type byte)
/// and ends with CRLF. Returns the value and the position after the CRLF, or
/// `None` when the header has not fully arrived.
///
/// The value is a decimal integer as Redis's `string2ll` accepts it: an
/// optional `-`, then `0` alone or digits without a leading zero; no spaces,
/// no `+`, no overflow of `i64`. A header with no `\r` within
/// [`LENGTH_LINE_MAX_BYTES`] is `too_big`; any other malformed header is
/// `invalid`. The search for `\r` and the parse share one pass: this runs
/// for every argument of every request.
fn read_length_line(
    buf: &[u8],
    start: usize,
    too_big: ProtocolError,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(LENGTH_LINE_MAX_BYTES + 1)];
    let negative = window.first() == Some(&b'-');
    let digits_start = usize::from(negative);
    let mut all_digits = true;
    let mut magnitude: u64 = 0;
    let mut cr_offset = None;
    for (offset, &byte) in window.iter().enumerate().skip(digits_start) {
        if byte == b'\r' {
            cr_offset = Some(offset);
            break;
        }
        let digit = byte.wrapping_sub(b'0');
        all_digits &= digit <= 9;
        // Wraps only for lines that are rejected below.
        magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    let Some(cr_offset) = cr_offset else {
        return if rest.len() > LENGTH_LINE_MAX_BYTES {
            Err(too_big)
        } else {
            Ok(None)
        };
    };
    match rest.get(cr_offset + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(invalid),
    }
    let digits = &window[digits_start..cr_offset];
    // 19 digits cannot wrap a u64; i64 needs at most 19.
    let well_formed = all_digits
        && matches!(digits.len(), 1..=19)
        && (digits[0] != b'0' || (digits.len() == 1 && !negative));
    if !well_formed {
        return Err(invalid);
    }
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    match value {
        Some(value) => Ok(Some((value, start + cr_offset + 2))),
        None => Err(invalid),
    }
}

// ---------------------------------------------------------------------------
// Request decoding (server side)
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// A reply in RESP3 terms; [`encode_reply`] downgrades it for RESP2 clients.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+text`. `\r` and `\n` are sent as spaces.
    Simple(String),
    /// `-CODE message`: the text starts with the error code (`ERR`,
    /// `WRONGTYPE`, ...). `\r` and `\n` are sent as spaces.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// The null bulk string (`$-1` in RESP2, `_` in RESP3).
    Null,
    Array(Vec<Reply>),
    /// The null array (`*-1` in RESP2, `_` in RESP3).
    NullArray,
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(f64),
    Boolean(bool),
    /// `=` verbatim string, e.g. format `*b"txt"` or `*b"mkd"`.
    Verbatim {
        format: [u8; 3],
        text: String,
    },
    /// `(` arbitrary precision integer, as decimal digits with optional `-`.
    BigNumber(String),
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_owned())
    }

    /// An error reply. By Redis convention the message starts with its error
    /// code, e.g. `"ERR unknown command 'FOO'"` or `"WRONGTYPE ..."`.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(data.into())
    }
}

/// Which protocol a connection speaks (`HELLO 2` / `HELLO 3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

#[cfg(test)]
mod tests;
