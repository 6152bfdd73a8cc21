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

use bytes::{Buf, BufMut, Bytes, BytesMut};
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

/// Decodes one request from the front of `buf`.
///
/// - `Ok(Some(args))`: one complete request was consumed. `args` is empty for
///   requests Redis skips without a reply: `*0`, `*-1` (any count ≤ 0) and
///   inline lines that are empty or hold only spaces. The caller must skip
///   empty requests and not answer them.
/// - `Ok(None)`: the request is not complete yet; nothing was consumed.
/// - `Err(_)`: the bytes are not a valid request; the caller should send
///   [`ProtocolError::to_reply`] and close the connection. Nothing is consumed.
///
/// Multibulk arguments are zero-copy slices of one frozen frame. Holding one
/// of them keeps that whole read buffer alive: copy values that are kept for
/// long (`Bytes::copy_from_slice`).
pub fn decode_request(
    buf: &mut BytesMut,
    limits: &RequestLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => decode_multibulk_request(buf, limits),
        Some(_) => decode_inline_request(buf, limits),
    }
}

/// Shape of a complete multibulk request found by [`walk_multibulk`].
struct MultibulkFrame {
    /// Bytes from the `*` to the CRLF after the last argument.
    frame_len_bytes: usize,
    /// Number of arguments; zero for requests that are skipped.
    arg_count: usize,
}

/// Validates the multibulk request at the front of `buf`, calling `on_arg`
/// with the position and length of each argument's payload. Allocates
/// nothing.
fn walk_multibulk(
    buf: &[u8],
    limits: &RequestLimits,
    mut on_arg: impl FnMut(usize, usize),
) -> Result<Option<MultibulkFrame>, ProtocolError> {
    let Some((count, mut pos)) = read_length_line(
        buf,
        1,
        ProtocolError::TooBigMbulkCountString,
        ProtocolError::InvalidMultibulkLength,
    )?
    else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some(MultibulkFrame {
            frame_len_bytes: pos,
            arg_count: 0,
        }));
    }
    let arg_count = match usize::try_from(count) {
        Ok(arg_count) if arg_count <= limits.multibulk_len_max => arg_count,
        _ => return Err(ProtocolError::InvalidMultibulkLength),
    };
    for _ in 0..arg_count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&got) => return Err(ProtocolError::ExpectedDollar { got }),
        }
        let Some((len, payload_start)) = read_length_line(
            buf,
            pos + 1,
            ProtocolError::TooBigBulkCountString,
            ProtocolError::InvalidBulkLength,
        )?
        else {
            return Ok(None);
        };
        let payload_len_bytes = match usize::try_from(len) {
            Ok(payload_len_bytes) if payload_len_bytes <= limits.bulk_len_max_bytes => {
                payload_len_bytes
            }
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        let Some(payload_end) = payload_start.checked_add(payload_len_bytes) else {
            return Err(ProtocolError::InvalidBulkLength);
        };
        let Some(terminator) = buf.get(payload_end..payload_end.saturating_add(2)) else {
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
        on_arg(payload_start, payload_len_bytes);
        pos = payload_end + 2;
    }
    Ok(Some(MultibulkFrame {
        frame_len_bytes: pos,
        arg_count,
    }))
}

/// Requests with up to this many arguments are decoded in one pass, with the
/// argument positions kept on the stack; longer ones take a second pass.
const ARG_SPANS_INLINE_MAX: usize = 16;

fn decode_multibulk_request(
    buf: &mut BytesMut,
    limits: &RequestLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // First pass: validate and measure; remember where the first arguments
    // are. Allocates nothing.
    let mut spans = [(0usize, 0usize); ARG_SPANS_INLINE_MAX];
    let mut span_count = 0;
    let Some(shape) = walk_multibulk(buf, limits, |start, len_bytes| {
        if let Some(span) = spans.get_mut(span_count) {
            *span = (start, len_bytes);
        }
        span_count += 1;
    })?
    else {
        return Ok(None);
    };
    let frame = buf.split_to(shape.frame_len_bytes).freeze();
    // Every argument has arrived, so `arg_count` is bounded by the bytes
    // received.
    let mut args = Vec::with_capacity(shape.arg_count);
    if shape.arg_count <= ARG_SPANS_INLINE_MAX {
        for &(start, len_bytes) in &spans[..shape.arg_count] {
            args.push(frame.slice(start..start + len_bytes));
        }
    } else {
        let second_pass = walk_multibulk(&frame, limits, |start, len_bytes| {
            args.push(frame.slice(start..start + len_bytes));
        });
        debug_assert!(
            matches!(&second_pass, Ok(Some(again)) if again.arg_count == shape.arg_count),
            "second pass over a validated frame must agree with the first"
        );
    }
    Ok(Some(args))
}

fn decode_inline_request(
    buf: &mut BytesMut,
    limits: &RequestLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let window_len_bytes = buf.len().min(limits.inline_len_max_bytes.saturating_add(1));
    let Some(newline_pos) = buf[..window_len_bytes]
        .iter()
        .position(|&byte| byte == b'\n')
    else {
        return if buf.len() > limits.inline_len_max_bytes {
            Err(ProtocolError::TooBigInlineRequest)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..newline_pos];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_inline_args(line)?;
    buf.advance(newline_pos + 1);
    Ok(Some(args))
}

/// Whitespace as C's `isspace` sees it.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline command line into arguments with Redis's rules
/// (`sdssplitargs`): arguments are separated by spaces; `"..."` supports the
/// escapes `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and `\<any>`; `'...'` supports
/// only `\'`; a quote may start in the middle of an argument; a closing quote
/// must be followed by whitespace or the end of the line. As in Redis, a NUL
/// byte ends the line.
fn split_inline_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    // Reading past the end yields NUL, which is what the C code sees.
    let at = |pos: usize| line.get(pos).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while pos < line.len() && is_c_space(line[pos]) {
            pos += 1;
        }
        if at(pos) == 0 {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut in_double_quotes = false;
        let mut in_single_quotes = false;
        loop {
            let byte = at(pos);
            if in_double_quotes {
                match byte {
                    0 => return Err(ProtocolError::UnbalancedQuotes),
                    b'\\' if at(pos + 1) == b'x' => {
                        if let (Some(high), Some(low)) =
                            (hex_value(at(pos + 2)), hex_value(at(pos + 3)))
                        {
                            current.push(high * 16 + low);
                            pos += 3;
                        } else {
                            current.push(b'x');
                            pos += 1;
                        }
                    }
                    b'\\' if at(pos + 1) != 0 => {
                        pos += 1;
                        current.push(match at(pos) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    b'"' => {
                        let next = at(pos + 1);
                        if next != 0 && !is_c_space(next) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        pos += 1;
                        break;
                    }
                    other => current.push(other),
                }
            } else if in_single_quotes {
                match byte {
                    0 => return Err(ProtocolError::UnbalancedQuotes),
                    b'\\' if at(pos + 1) == b'\'' => {
                        current.push(b'\'');
                        pos += 1;
                    }
                    b'\'' => {
                        let next = at(pos + 1);
                        if next != 0 && !is_c_space(next) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        pos += 1;
                        break;
                    }
                    other => current.push(other),
                }
            } else {
                match byte {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_double_quotes = true,
                    b'\'' => in_single_quotes = true,
                    other => current.push(other),
                }
            }
            pos += 1;
        }
        args.push(Bytes::from(current));
    }
}

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

fn put_unsigned_decimal(out: &mut BytesMut, value: u64) {
    let mut digits = [0u8; 20];
    let mut first = digits.len();
    let mut rest = value;
    loop {
        first -= 1;
        digits[first] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[first..]);
}

fn put_signed_decimal(out: &mut BytesMut, value: i64) {
    if value < 0 {
        out.put_u8(b'-');
    }
    put_unsigned_decimal(out, value.unsigned_abs());
}

/// Writes `type_byte`, a length and CRLF.
fn put_length_header(out: &mut BytesMut, type_byte: u8, len: usize) {
    out.put_u8(type_byte);
    put_unsigned_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Writes `type_byte`, `text` with CR and LF replaced by spaces, and CRLF.
fn put_line(out: &mut BytesMut, type_byte: u8, text: &str) {
    out.reserve(text.len() + 3);
    out.put_u8(type_byte);
    if text.bytes().any(|byte| byte == b'\r' || byte == b'\n') {
        out.extend(text.bytes().map(|byte| match byte {
            b'\r' | b'\n' => b' ',
            other => other,
        }));
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    put_length_header(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Formats a double for the wire: Rust's shortest round-trip digits,
/// scientific notation for very large or small magnitudes, and `inf`, `-inf`,
/// `nan` for the special values.
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        let magnitude = value.abs();
        if magnitude != 0.0 && !(1e-5..1e17).contains(&magnitude) {
            format!("{value:e}")
        } else {
            format!("{value}")
        }
    }
}

/// Appends `reply` to `out` in `protocol`. RESP2 gets Redis's downgrades:
/// null → `$-1`, null array → `*-1`, map → flat array of keys and values,
/// set and push → array, double → bulk string, boolean → integer 1/0,
/// verbatim → bulk string of the text, big number → bulk string.
pub fn encode_reply(reply: &Reply, protocol: Protocol, out: &mut BytesMut) {
    let resp3 = protocol == Protocol::Resp3;
    match reply {
        Reply::Simple(text) => put_line(out, b'+', text),
        Reply::Error(text) => put_line(out, b'-', text),
        Reply::Integer(value) => {
            out.put_u8(b':');
            put_signed_decimal(out, *value);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Bulk(data) => put_bulk(out, data),
        Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::Null => out.extend_from_slice(b"$-1\r\n"),
        Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(items) => put_aggregate(out, b'*', items, protocol),
        Reply::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, protocol),
        Reply::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, protocol),
        Reply::Map(pairs) => {
            if resp3 {
                put_length_header(out, b'%', pairs.len());
            } else {
                put_length_header(out, b'*', pairs.len().saturating_mul(2));
            }
            for (key, value) in pairs {
                encode_reply(key, protocol, out);
                encode_reply(value, protocol, out);
            }
        }
        Reply::Double(value) => {
            let text = format_double(*value);
            if resp3 {
                put_line(out, b',', &text);
            } else {
                put_bulk(out, text.as_bytes());
            }
        }
        Reply::Boolean(value) => out.extend_from_slice(match (resp3, value) {
            (true, true) => b"#t\r\n",
            (true, false) => b"#f\r\n",
            (false, true) => b":1\r\n",
            (false, false) => b":0\r\n",
        }),
        Reply::Verbatim { format, text } => {
            if resp3 {
                out.reserve(text.len() + 24);
                put_length_header(out, b'=', text.len() + 4);
                out.extend_from_slice(format);
                out.put_u8(b':');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, text.as_bytes());
            }
        }
        Reply::BigNumber(digits) => {
            if resp3 {
                put_line(out, b'(', digits);
            } else {
                put_bulk(out, digits.as_bytes());
            }
        }
    }
}

fn put_aggregate(out: &mut BytesMut, type_byte: u8, items: &[Reply], protocol: Protocol) {
    put_length_header(out, type_byte, items.len());
    for item in items {
        encode_reply(item, protocol, out);
    }
}

/// Appends a request as a multibulk array of bulk strings.
pub fn encode_request(args: &[&[u8]], out: &mut BytesMut) {
    let payload_len_bytes: usize = args.iter().map(|arg| arg.len() + 16).sum();
    out.reserve(payload_len_bytes + 16);
    put_length_header(out, b'*', args.len());
    for arg in args {
        put_bulk(out, arg);
    }
}

// ---------------------------------------------------------------------------
// Reply decoding (client side)
// ---------------------------------------------------------------------------

/// Decodes one RESP2 or RESP3 reply from the front of `buf`.
///
/// Returns `Ok(None)` and consumes nothing while the reply is incomplete.
/// `$-1` and `_` decode to [`Reply::Null`], `*-1` to [`Reply::NullArray`];
/// `!` blob errors decode to [`Reply::Error`]; RESP3 attributes (`|`) are
/// read and dropped. Text that is not UTF-8 is decoded lossily. Bulk strings
/// are zero-copy slices of the frame.
pub fn decode_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    // First pass: validate and measure without allocating.
    let mut measure = ReplyParser {
        data: &buf[..],
        frame: None,
        pos: 0,
    };
    if measure.parse(0)?.is_none() {
        return Ok(None);
    }
    let frame_len_bytes = measure.pos;
    let frame = buf.split_to(frame_len_bytes).freeze();
    // Second pass over the complete frame builds the reply.
    let mut build = ReplyParser {
        data: &frame,
        frame: Some(&frame),
        pos: 0,
    };
    let reply = build.parse(0)?;
    debug_assert_eq!(build.pos, frame_len_bytes, "both passes must agree");
    Ok(reply)
}

/// A recursive-descent reply parser. Without `frame` it only validates and
/// advances `pos` (returning placeholders); with `frame` (the same bytes as
/// `data`) it builds the reply with zero-copy bulk strings.
struct ReplyParser<'a> {
    data: &'a [u8],
    frame: Option<&'a Bytes>,
    pos: usize,
}

impl<'a> ReplyParser<'a> {
    fn building(&self) -> bool {
        self.frame.is_some()
    }

    /// Reads the line after the type byte at `self.pos`, up to CRLF.
    fn line(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let start = self.pos + 1;
        let rest = self.data.get(start..).unwrap_or_default();
        let window = &rest[..rest.len().min(REPLY_LINE_MAX_BYTES + 1)];
        let Some(cr_offset) = window.iter().position(|&byte| byte == b'\r') else {
            return if rest.len() > REPLY_LINE_MAX_BYTES {
                Err(ProtocolError::TooBigReplyLine)
            } else {
                Ok(None)
            };
        };
        match rest.get(cr_offset + 1) {
            None => Ok(None),
            Some(b'\n') => {
                self.pos = start + cr_offset + 2;
                Ok(Some(&rest[..cr_offset]))
            }
            Some(_) => Err(ProtocolError::InvalidLineEnding),
        }
    }

    /// Reads a length header after the type byte at `self.pos`.
    fn length(&mut self, invalid: ProtocolError) -> Result<Option<i64>, ProtocolError> {
        let too_big = if invalid == ProtocolError::InvalidBulkLength {
            ProtocolError::TooBigBulkCountString
        } else {
            ProtocolError::TooBigMbulkCountString
        };
        let Some((value, next)) = read_length_line(self.data, self.pos + 1, too_big, invalid)?
        else {
            return Ok(None);
        };
        self.pos = next;
        Ok(Some(value))
    }

    /// Reads `len_bytes` of payload and its CRLF; returns the payload range.
    fn payload(&mut self, len_bytes: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
        let start = self.pos;
        let Some(end) = start.checked_add(len_bytes) else {
            return Err(ProtocolError::InvalidBulkLength);
        };
        let Some(terminator) = self.data.get(end..end.saturating_add(2)) else {
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
        self.pos = end + 2;
        Ok(Some((start, end)))
    }

    fn bytes(&self, start: usize, end: usize) -> Bytes {
        match self.frame {
            Some(frame) => frame.slice(start..end),
            None => Bytes::new(),
        }
    }

    fn text(&self, start: usize, end: usize) -> String {
        if self.building() {
            String::from_utf8_lossy(&self.data[start..end]).into_owned()
        } else {
            String::new()
        }
    }

    /// Reads an aggregate count; `None` inside `Ok(Some(_))` is `*-1`.
    fn count(&mut self, allow_null: bool) -> Result<Option<Option<usize>>, ProtocolError> {
        let Some(count) = self.length(ProtocolError::InvalidMultibulkLength)? else {
            return Ok(None);
        };
        if count == -1 && allow_null {
            return Ok(Some(None));
        }
        match usize::try_from(count) {
            Ok(count) => Ok(Some(Some(count))),
            Err(_) => Err(ProtocolError::InvalidMultibulkLength),
        }
    }

    /// Parses `count` replies. Capacity grows with replies that have arrived,
    /// never with the announced count.
    fn items(&mut self, count: usize, depth: usize) -> Result<Option<Vec<Reply>>, ProtocolError> {
        let mut items = Vec::new();
        if self.building() {
            items.reserve(count.min(1024));
        }
        for _ in 0..count {
            let Some(item) = self.parse(depth + 1)? else {
                return Ok(None);
            };
            if self.building() {
                items.push(item);
            }
        }
        Ok(Some(items))
    }

    fn parse(&mut self, depth: usize) -> Result<Option<Reply>, ProtocolError> {
        if depth > REPLY_NESTING_DEPTH_MAX {
            return Err(ProtocolError::NestingTooDeep);
        }
        // Attributes describe the reply that follows them; drop them.
        while self.data.get(self.pos) == Some(&b'|') {
            let Some(Some(pair_count)) = self.count(false)? else {
                return Ok(None);
            };
            let Some(_) = self.items(pair_count.saturating_mul(2), depth)? else {
                return Ok(None);
            };
        }
        let Some(&type_byte) = self.data.get(self.pos) else {
            return Ok(None);
        };
        let reply = match type_byte {
            b'+' | b'-' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let text = if self.building() {
                    String::from_utf8_lossy(line).into_owned()
                } else {
                    String::new()
                };
                if type_byte == b'+' {
                    Reply::Simple(text)
                } else {
                    Reply::Error(text)
                }
            }
            b':' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let value = std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or(ProtocolError::InvalidInteger)?;
                Reply::Integer(value)
            }
            b',' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let value = std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .ok_or(ProtocolError::InvalidDouble)?;
                Reply::Double(value)
            }
            b'#' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                match line {
                    b"t" => Reply::Boolean(true),
                    b"f" => Reply::Boolean(false),
                    _ => return Err(ProtocolError::InvalidBoolean),
                }
            }
            b'(' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let digits = match line {
                    [b'-' | b'+', rest @ ..] => rest,
                    _ => line,
                };
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(ProtocolError::InvalidBigNumber);
                }
                let text = if self.building() {
                    String::from_utf8_lossy(line).into_owned()
                } else {
                    String::new()
                };
                Reply::BigNumber(text)
            }
            b'_' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                if !line.is_empty() {
                    return Err(ProtocolError::InvalidNull);
                }
                Reply::Null
            }
            b'$' | b'!' | b'=' => {
                let Some(len) = self.length(ProtocolError::InvalidBulkLength)? else {
                    return Ok(None);
                };
                if len == -1 && type_byte == b'$' {
                    return Ok(Some(Reply::Null));
                }
                let Ok(len_bytes) = usize::try_from(len) else {
                    return Err(ProtocolError::InvalidBulkLength);
                };
                let Some((start, end)) = self.payload(len_bytes)? else {
                    return Ok(None);
                };
                match type_byte {
                    b'$' => Reply::Bulk(self.bytes(start, end)),
                    b'!' => Reply::Error(self.text(start, end)),
                    _ => {
                        let payload = &self.data[start..end];
                        let (format, text_start) = match payload {
                            [a, b, c, b':', ..] => ([*a, *b, *c], start + 4),
                            _ => return Err(ProtocolError::InvalidVerbatim),
                        };
                        Reply::Verbatim {
                            format,
                            text: self.text(text_start, end),
                        }
                    }
                }
            }
            b'*' => {
                let Some(count) = self.count(true)? else {
                    return Ok(None);
                };
                let Some(count) = count else {
                    return Ok(Some(Reply::NullArray));
                };
                let Some(items) = self.items(count, depth)? else {
                    return Ok(None);
                };
                Reply::Array(items)
            }
            b'~' | b'>' => {
                let Some(Some(count)) = self.count(false)? else {
                    return Ok(None);
                };
                let Some(items) = self.items(count, depth)? else {
                    return Ok(None);
                };
                if type_byte == b'~' {
                    Reply::Set(items)
                } else {
                    Reply::Push(items)
                }
            }
            b'%' => {
                let Some(Some(pair_count)) = self.count(false)? else {
                    return Ok(None);
                };
                let Some(flat) = self.items(pair_count.saturating_mul(2), depth)? else {
                    return Ok(None);
                };
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
                    pairs.push((key, value));
                }
                Reply::Map(pairs)
            }
            got => return Err(ProtocolError::InvalidReplyType { got }),
        };
        Ok(Some(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(list: &[&[u8]]) -> Vec<Bytes> {
        list.iter().map(|arg| Bytes::copy_from_slice(arg)).collect()
    }

    fn small_limits() -> RequestLimits {
        RequestLimits {
            bulk_len_max_bytes: 8,
            multibulk_len_max: 4,
            inline_len_max_bytes: 16,
        }
    }

    /// Everything one connection's bytes decode to.
    #[derive(Debug, PartialEq)]
    struct Drained<T> {
        frames: Vec<T>,
        error: Option<ProtocolError>,
        /// Unconsumed bytes; only compared when there was no error.
        rest: Vec<u8>,
    }

    fn drain<T>(
        buf: &mut BytesMut,
        drained: &mut Drained<T>,
        decode: &mut impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
    ) {
        loop {
            let len_before = buf.len();
            let snapshot = buf.clone();
            match decode(buf) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < len_before, "a frame must consume bytes");
                    assert!(snapshot.ends_with(buf), "consumed bytes must be a prefix");
                    drained.frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(*buf, snapshot, "incomplete input must not be consumed");
                    return;
                }
                Err(error) => {
                    assert_eq!(*buf, snapshot, "an error must not consume");
                    drained.error = Some(error);
                    return;
                }
            }
        }
    }

    /// Feeds `input` `chunk_len_bytes` at a time, decoding after each chunk.
    fn feed<T>(
        input: &[u8],
        chunk_len_bytes: usize,
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
    ) -> Drained<T> {
        let mut drained = Drained {
            frames: Vec::new(),
            error: None,
            rest: Vec::new(),
        };
        let mut buf = BytesMut::new();
        for chunk in input.chunks(chunk_len_bytes.max(1)) {
            buf.extend_from_slice(chunk);
            drain(&mut buf, &mut drained, &mut decode);
            if drained.error.is_some() {
                return drained;
            }
        }
        drained.rest = buf.to_vec();
        drained
    }

    fn requests(
        input: &[u8],
        chunk_len_bytes: usize,
        limits: RequestLimits,
    ) -> Drained<Vec<Bytes>> {
        feed(input, chunk_len_bytes, |buf| decode_request(buf, &limits))
    }

    fn replies(input: &[u8], chunk_len_bytes: usize) -> Drained<Reply> {
        feed(input, chunk_len_bytes, decode_reply)
    }

    fn decode_one(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        decode_request(&mut BytesMut::from(input), &RequestLimits::default())
    }

    fn encoded(reply: &Reply, protocol: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_reply(reply, protocol, &mut out);
        out.to_vec()
    }

    // --- request decoding: valid input ------------------------------------

    #[test]
    fn valid_requests_decode_to_their_arguments() {
        let table: &[(&[u8], &[&[u8]])] = &[
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
                &[b"SET", b"k", b"v"],
            ),
            (b"*1\r\n$4\r\nPING\r\n", &[b"PING"]),
            (b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", &[b"ECHO", b""]),
            (b"*1\r\n$6\r\n\r\n\0\xff\r\n\r\n", &[b"\r\n\0\xff\r\n"]),
            (b"*0\r\n", &[]),
            (b"*-1\r\n", &[]),
            (b"*-7\r\n", &[]),
            (b"PING\r\n", &[b"PING"]),
            (b"PING\n", &[b"PING"]),
            (b"\r\n", &[]),
            (b"\n", &[]),
            (b"  \t \r\n", &[]),
            (b"  a   b\tc  \r\n", &[b"a", b"b", b"c"]),
            (b"SET k \"a b\"\r\n", &[b"SET", b"k", b"a b"]),
            (b"SET k 'a b'\r\n", &[b"SET", b"k", b"a b"]),
            (b"ECHO \"\\x41\\n\"\r\n", &[b"ECHO", b"A\n"]),
            (b"ECHO \"\\xfF\\x00\"\r\n", &[b"ECHO", b"\xff\0"]),
            (
                b"ECHO \"\\r\\t\\b\\a\\\\\\\"\\q\"\r\n",
                &[b"ECHO", b"\r\t\x08\x07\\\"q"],
            ),
            (b"ECHO \"\\x4g\"\r\n", &[b"ECHO", b"x4g"]),
            (b"ECHO 'it\\'s'\r\n", &[b"ECHO", b"it's"]),
            (b"ECHO 'a\\nb'\r\n", &[b"ECHO", b"a\\nb"]),
            (b"ECHO \"\" ''\r\n", &[b"ECHO", b"", b""]),
            (b"ECHO a\"b c\"\r\n", &[b"ECHO", b"ab c"]),
            (b"ECHO \"a\"\tb\r\n", &[b"ECHO", b"a", b"b"]),
            (b"ECHO a\\nb\r\n", &[b"ECHO", b"a\\nb"]),
            (b"ECHO a\0b\r\n", &[b"ECHO", b"a"]),
            (b"ECHO a\rb\r\n", &[b"ECHO", b"a", b"b"]),
        ];
        for (input, expected) in table {
            let mut buf = BytesMut::from(*input);
            let decoded = decode_request(&mut buf, &RequestLimits::default());
            assert_eq!(
                decoded,
                Ok(Some(args(expected))),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert!(
                buf.is_empty(),
                "input {:?} left bytes",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn every_proper_prefix_of_a_request_is_incomplete_and_not_consumed() {
        let inputs: &[&[u8]] = &[
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n",
            b"*-1\r\n",
            b"SET k \"a b\"\r\n",
        ];
        for input in inputs {
            for prefix_len in 0..input.len() {
                let mut buf = BytesMut::from(&input[..prefix_len]);
                assert_eq!(
                    decode_request(&mut buf, &RequestLimits::default()),
                    Ok(None),
                    "prefix {prefix_len} of {:?}",
                    input.escape_ascii().to_string()
                );
                assert_eq!(&buf[..], &input[..prefix_len]);
            }
        }
    }

    const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n\
        *2\r\n$3\r\nGET\r\n$3\r\nkey\r\n\
        PING\r\n\
        \r\n\
        *0\r\n\
        ECHO \"x y\" 'z'\n\
        *1\r\n$0\r\n\r\n\
        *2\r\n$4\r\nINCR";

    fn pipeline_expected() -> Vec<Vec<Bytes>> {
        vec![
            args(&[b"SET", b"key", b"value"]),
            args(&[b"GET", b"key"]),
            args(&[b"PING"]),
            vec![],
            vec![],
            args(&[b"ECHO", b"x y", b"z"]),
            args(&[b""]),
        ]
    }

    #[test]
    fn pipelined_requests_decode_in_order_and_keep_the_incomplete_tail() {
        let drained = requests(PIPELINE, PIPELINE.len(), RequestLimits::default());
        assert_eq!(drained.frames, pipeline_expected());
        assert_eq!(drained.error, None);
        assert_eq!(drained.rest, b"*2\r\n$4\r\nINCR");
    }

    #[test]
    fn splitting_a_pipeline_at_any_byte_gives_the_same_requests() {
        let whole = requests(PIPELINE, PIPELINE.len(), RequestLimits::default());
        for split_at in 0..=PIPELINE.len() {
            let mut drained = Drained {
                frames: Vec::new(),
                error: None,
                rest: Vec::new(),
            };
            let mut buf = BytesMut::from(&PIPELINE[..split_at]);
            let mut decode = |buf: &mut BytesMut| decode_request(buf, &RequestLimits::default());
            drain(&mut buf, &mut drained, &mut decode);
            buf.extend_from_slice(&PIPELINE[split_at..]);
            drain(&mut buf, &mut drained, &mut decode);
            drained.rest = buf.to_vec();
            assert_eq!(drained, whole, "split at {split_at}");
        }
        for chunk_len_bytes in 1..8 {
            let chunked = requests(PIPELINE, chunk_len_bytes, RequestLimits::default());
            assert_eq!(chunked, whole, "chunks of {chunk_len_bytes}");
        }
    }

    #[test]
    fn requests_with_many_arguments_decode_in_order() {
        for arg_count in [15, 16, 17, 40] {
            let owned: Vec<Vec<u8>> = (0..arg_count)
                .map(|index| format!("arg{index}").into_bytes())
                .collect();
            let borrowed: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let mut wire = BytesMut::new();
            encode_request(&borrowed, &mut wire);
            encode_request(&[b"PING"], &mut wire);
            let drained = requests(&wire, wire.len(), RequestLimits::default());
            assert_eq!(drained.frames, vec![args(&borrowed), args(&[b"PING"])]);
            assert_eq!(drained.error, None);
        }
    }

    #[test]
    fn multibulk_arguments_share_the_frame_without_copying() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
        let frame_start = buf.as_ptr() as usize;
        let decoded = decode_request(&mut buf, &RequestLimits::default())
            .expect("valid")
            .expect("complete");
        assert_eq!(decoded[0].as_ptr() as usize, frame_start + 8);
        assert_eq!(decoded[1].as_ptr() as usize, frame_start + 17);
    }

    // --- request decoding: adversarial input ------------------------------

    #[test]
    fn malformed_requests_yield_the_specific_error_and_consume_nothing() {
        let long_digits = "1".repeat(40);
        let mbulk_count_too_long = format!("*{long_digits}");
        let bulk_count_too_long = format!("*1\r\n${long_digits}");
        let mbulk_count_too_long_with_crlf = format!("*{long_digits}\r\n");
        let inline_too_long = "a".repeat(64 * 1024 + 1);
        let inline_too_long_with_newline = format!("{inline_too_long}\r\n");
        use ProtocolError::*;
        let table: &[(&[u8], ProtocolError)] = &[
            (b"*abc\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*-\r\n", InvalidMultibulkLength),
            (b"*-0\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"* 1\r\n", InvalidMultibulkLength),
            (b"*1 \r\n", InvalidMultibulkLength),
            (b"*1\rX", InvalidMultibulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*9223372036854775807\r\n", InvalidMultibulkLength),
            (b"*9223372036854775808\r\n", InvalidMultibulkLength),
            (b"*-9223372036854775809\r\n", InvalidMultibulkLength),
            (b"*99999999999999999999\r\n", InvalidMultibulkLength),
            (mbulk_count_too_long.as_bytes(), TooBigMbulkCountString),
            (
                mbulk_count_too_long_with_crlf.as_bytes(),
                TooBigMbulkCountString,
            ),
            (bulk_count_too_long.as_bytes(), TooBigBulkCountString),
            (b"*1\r\nx3\r\nabc\r\n", ExpectedDollar { got: b'x' }),
            (b"*2\r\n$1\r\na\r\n:1\r\n", ExpectedDollar { got: b':' }),
            (b"*1\r\n\r\n", ExpectedDollar { got: b'\r' }),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$-5\r\n", InvalidBulkLength),
            (b"*1\r\n$abc\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$03\r\nabc\r\n", InvalidBulkLength),
            (b"*1\r\n$3\rXabc\r\n", InvalidBulkLength),
            (b"*1\r\n$536870913\r\n", InvalidBulkLength),
            (b"*1\r\n$9223372036854775807\r\n", InvalidBulkLength),
            (b"*1\r\n$9223372036854775808\r\n", InvalidBulkLength),
            (b"*1\r\n$18446744073709551616\r\n", InvalidBulkLength),
            (b"*1\r\n$3\r\nabcXY", BulkNotTerminated),
            (b"*1\r\n$3\r\nabc\rX", BulkNotTerminated),
            (b"*1\r\n$3\r\nabcd\r\n", BulkNotTerminated),
            (b"*1\r\n$3\r\nab\r\n\r\n", BulkNotTerminated),
            (inline_too_long.as_bytes(), TooBigInlineRequest),
            (inline_too_long_with_newline.as_bytes(), TooBigInlineRequest),
            (b"SET k \"abc\r\n", UnbalancedQuotes),
            (b"SET k 'abc\r\n", UnbalancedQuotes),
            (b"SET k \"a\"b\r\n", UnbalancedQuotes),
            (b"SET k 'a'b\r\n", UnbalancedQuotes),
            (b"SET k \"abc\\\"\r\n", UnbalancedQuotes),
            (b"SET k \"ab\0c\"\r\n", UnbalancedQuotes),
        ];
        for (input, expected) in table {
            let mut buf = BytesMut::from(*input);
            let result = decode_request(&mut buf, &RequestLimits::default());
            assert_eq!(
                result,
                Err(*expected),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(&buf[..], *input, "an error must not consume");
        }
    }

    #[test]
    fn lengths_at_the_limit_wait_for_data_without_reserving_it() {
        let limits = RequestLimits::default();
        let input: &[u8] = b"*1048576\r\n$536870912\r\nabc";
        let mut buf = BytesMut::from(input);
        let capacity_before = buf.capacity();
        assert_eq!(decode_request(&mut buf, &limits), Ok(None));
        assert_eq!(&buf[..], input);
        assert_eq!(buf.capacity(), capacity_before);
    }

    #[test]
    fn configured_limits_are_enforced_exactly() {
        let limits = small_limits();
        let at_limit: &[u8] = b"*4\r\n$8\r\n01234567\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n";
        assert_eq!(
            decode_request(&mut BytesMut::from(at_limit), &limits),
            Ok(Some(args(&[b"01234567", b"", b"", b""])))
        );
        assert_eq!(
            decode_request(&mut BytesMut::from(&b"*5\r\n"[..]), &limits),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            decode_request(&mut BytesMut::from(&b"*1\r\n$9\r\n"[..]), &limits),
            Err(ProtocolError::InvalidBulkLength)
        );
        // The limit is 16 bytes of line before the `\n`.
        let a16 = [b'a'; 16];
        let a17 = [b'a'; 17];
        assert_eq!(
            decode_request(
                &mut BytesMut::from(&[&a16[..], b"\n"].concat()[..]),
                &limits
            ),
            Ok(Some(args(&[&a16])))
        );
        assert_eq!(
            decode_request(
                &mut BytesMut::from(&[&a16[..], b"\r\n"].concat()[..]),
                &limits
            ),
            Err(ProtocolError::TooBigInlineRequest)
        );
        assert_eq!(
            decode_request(&mut BytesMut::from(&a16[..]), &limits),
            Ok(None)
        );
        assert_eq!(
            decode_request(&mut BytesMut::from(&a17[..]), &limits),
            Err(ProtocolError::TooBigInlineRequest)
        );
        assert_eq!(
            decode_request(
                &mut BytesMut::from(&[&a17[..], b"\n"].concat()[..]),
                &limits
            ),
            Err(ProtocolError::TooBigInlineRequest)
        );
    }

    #[test]
    fn default_limits_match_redis() {
        let limits = RequestLimits::default();
        assert_eq!(limits.bulk_len_max_bytes, 512 * 1024 * 1024);
        assert_eq!(limits.multibulk_len_max, 1_048_576);
        assert_eq!(limits.inline_len_max_bytes, 65_536);
    }

    #[test]
    fn error_texts_are_shaped_like_redis() {
        use ProtocolError::*;
        let table = [
            (
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (InvalidBulkLength, "Protocol error: invalid bulk length"),
            (
                ExpectedDollar { got: b'x' },
                "Protocol error: expected '$', got 'x'",
            ),
            (
                ExpectedDollar { got: b'\r' },
                "Protocol error: expected '$', got '\\r'",
            ),
            (
                TooBigInlineRequest,
                "Protocol error: too big inline request",
            ),
            (
                UnbalancedQuotes,
                "Protocol error: unbalanced quotes in request",
            ),
            (
                TooBigMbulkCountString,
                "Protocol error: too big mbulk count string",
            ),
            (
                TooBigBulkCountString,
                "Protocol error: too big bulk count string",
            ),
            (
                InvalidReplyType { got: 0xff },
                "Protocol error: invalid reply type '\\xff'",
            ),
        ];
        for (error, text) in table {
            assert_eq!(error.to_string(), text);
        }
        assert_eq!(
            encoded(&InvalidBulkLength.to_reply(), Protocol::Resp2),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
    }

    #[test]
    fn decode_one_helper_sees_empty_buffer_as_incomplete() {
        assert_eq!(decode_one(b""), Ok(None));
    }

    // --- reply encoding ---------------------------------------------------

    fn sample_map() -> Reply {
        Reply::Map(vec![
            (Reply::Simple("a".into()), Reply::Integer(1)),
            (Reply::bulk("b"), Reply::Null),
        ])
    }

    #[test]
    fn replies_encode_natively_in_resp3() {
        let table: Vec<(Reply, &[u8])> = vec![
            (Reply::ok(), b"+OK\r\n"),
            (Reply::error("ERR bad\r\nthing"), b"-ERR bad  thing\r\n"),
            (Reply::Simple("a\nb".into()), b"+a b\r\n"),
            (Reply::Integer(-42), b":-42\r\n"),
            (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (Reply::Integer(i64::MAX), b":9223372036854775807\r\n"),
            (Reply::Integer(0), b":0\r\n"),
            (Reply::bulk("hello"), b"$5\r\nhello\r\n"),
            (Reply::bulk(""), b"$0\r\n\r\n"),
            (Reply::bulk(&b"a\r\nb"[..]), b"$4\r\na\r\nb\r\n"),
            (Reply::Null, b"_\r\n"),
            (Reply::NullArray, b"_\r\n"),
            (Reply::Array(vec![]), b"*0\r\n"),
            (
                Reply::Array(vec![Reply::Integer(1), Reply::Array(vec![Reply::Null])]),
                b"*2\r\n:1\r\n*1\r\n_\r\n",
            ),
            (sample_map(), b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n"),
            (Reply::Set(vec![Reply::Integer(7)]), b"~1\r\n:7\r\n"),
            (
                Reply::Push(vec![Reply::bulk("msg")]),
                b">1\r\n$3\r\nmsg\r\n",
            ),
            (Reply::Double(1.5), b",1.5\r\n"),
            (Reply::Double(3.0), b",3\r\n"),
            (Reply::Double(-0.25), b",-0.25\r\n"),
            (Reply::Double(1e300), b",1e300\r\n"),
            (Reply::Double(f64::INFINITY), b",inf\r\n"),
            (Reply::Double(f64::NEG_INFINITY), b",-inf\r\n"),
            (Reply::Double(f64::NAN), b",nan\r\n"),
            (Reply::Boolean(true), b"#t\r\n"),
            (Reply::Boolean(false), b"#f\r\n"),
            (
                Reply::Verbatim {
                    format: *b"txt",
                    text: "Some string".into(),
                },
                b"=15\r\ntxt:Some string\r\n",
            ),
            (
                Reply::BigNumber("-1234567890123456789012".into()),
                b"(-1234567890123456789012\r\n",
            ),
        ];
        for (reply, expected) in table {
            assert_eq!(
                encoded(&reply, Protocol::Resp3),
                expected,
                "{reply:?} gave {:?}",
                String::from_utf8_lossy(&encoded(&reply, Protocol::Resp3))
            );
        }
    }

    #[test]
    fn replies_downgrade_to_resp2_like_redis() {
        let table: Vec<(Reply, &[u8])> = vec![
            (Reply::ok(), b"+OK\r\n"),
            (Reply::error("WRONGTYPE x"), b"-WRONGTYPE x\r\n"),
            (Reply::Integer(5), b":5\r\n"),
            (Reply::bulk("v"), b"$1\r\nv\r\n"),
            (Reply::Null, b"$-1\r\n"),
            (Reply::NullArray, b"*-1\r\n"),
            (Reply::Array(vec![Reply::Null]), b"*1\r\n$-1\r\n"),
            (sample_map(), b"*4\r\n+a\r\n:1\r\n$1\r\nb\r\n$-1\r\n"),
            (Reply::Map(vec![]), b"*0\r\n"),
            (
                Reply::Set(vec![Reply::bulk("x"), Reply::bulk("y")]),
                b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
            ),
            (Reply::Push(vec![Reply::Integer(1)]), b"*1\r\n:1\r\n"),
            (Reply::Double(1.5), b"$3\r\n1.5\r\n"),
            (Reply::Double(10.0), b"$2\r\n10\r\n"),
            (Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n"),
            (Reply::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n"),
            (Reply::Boolean(true), b":1\r\n"),
            (Reply::Boolean(false), b":0\r\n"),
            (
                Reply::Verbatim {
                    format: *b"txt",
                    text: "hi\r\n".into(),
                },
                b"$4\r\nhi\r\n\r\n",
            ),
            (Reply::BigNumber("123".into()), b"$3\r\n123\r\n"),
            (
                Reply::Array(vec![Reply::Map(vec![(
                    Reply::Boolean(true),
                    Reply::Set(vec![Reply::Double(2.0)]),
                )])]),
                b"*1\r\n*2\r\n:1\r\n*1\r\n$1\r\n2\r\n",
            ),
        ];
        for (reply, expected) in table {
            assert_eq!(
                encoded(&reply, Protocol::Resp2),
                expected,
                "{reply:?} gave {:?}",
                String::from_utf8_lossy(&encoded(&reply, Protocol::Resp2))
            );
        }
    }

    #[test]
    fn requests_encode_as_multibulk() {
        let mut out = BytesMut::new();
        encode_request(&[b"SET", b"k", b"", b"\r\n"], &mut out);
        assert_eq!(
            &out[..],
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\n\r\n\r\n"
        );
        let mut out = BytesMut::new();
        encode_request(&[], &mut out);
        assert_eq!(&out[..], b"*0\r\n");
    }

    // --- reply decoding ---------------------------------------------------

    #[test]
    fn replies_decode_from_resp2_and_resp3() {
        let table: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::ok()),
            (b"+\r\n", Reply::Simple(String::new())),
            (b"-ERR x\r\n", Reply::error("ERR x")),
            (b":-3\r\n", Reply::Integer(-3)),
            (b"$3\r\nfoo\r\n", Reply::bulk("foo")),
            (b"$0\r\n\r\n", Reply::bulk("")),
            (b"$-1\r\n", Reply::Null),
            (b"*-1\r\n", Reply::NullArray),
            (b"_\r\n", Reply::Null),
            (b"*0\r\n", Reply::Array(vec![])),
            (
                b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
                Reply::Array(vec![
                    Reply::bulk("a"),
                    Reply::Array(vec![Reply::Integer(1)]),
                ]),
            ),
            (b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n", sample_map()),
            (b"~1\r\n#f\r\n", Reply::Set(vec![Reply::Boolean(false)])),
            (
                b">1\r\n(12\r\n",
                Reply::Push(vec![Reply::BigNumber("12".into())]),
            ),
            (b",1.5\r\n", Reply::Double(1.5)),
            (b",-2\r\n", Reply::Double(-2.0)),
            (b",1.5e300\r\n", Reply::Double(1.5e300)),
            (b",inf\r\n", Reply::Double(f64::INFINITY)),
            (b",-inf\r\n", Reply::Double(f64::NEG_INFINITY)),
            (b"#t\r\n", Reply::Boolean(true)),
            (
                b"(-170141183460469231731687303715884105728\r\n",
                Reply::BigNumber("-170141183460469231731687303715884105728".into()),
            ),
            (
                b"=8\r\nmkd:a\r\nb\r\n",
                Reply::Verbatim {
                    format: *b"mkd",
                    text: "a\r\nb".into(),
                },
            ),
            (
                b"=4\r\ntxt:\r\n",
                Reply::Verbatim {
                    format: *b"txt",
                    text: String::new(),
                },
            ),
            (b"!8\r\nERR x\r\ny\r\n", Reply::error("ERR x\r\ny")),
            (b"|1\r\n+ttl\r\n:3\r\n:42\r\n", Reply::Integer(42)),
            (
                b"*1\r\n|1\r\n+a\r\n%0\r\n$1\r\nz\r\n",
                Reply::Array(vec![Reply::bulk("z")]),
            ),
            (b"+\xff\r\n", Reply::Simple("\u{fffd}".into())),
        ];
        for (input, expected) in table {
            let mut buf = BytesMut::from(input);
            assert_eq!(
                decode_reply(&mut buf),
                Ok(Some(expected)),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert!(
                buf.is_empty(),
                "input {:?} left bytes",
                input.escape_ascii().to_string()
            );
            for prefix_len in 0..input.len() {
                let mut prefix = BytesMut::from(&input[..prefix_len]);
                assert_eq!(decode_reply(&mut prefix), Ok(None), "prefix {prefix_len}");
                assert_eq!(&prefix[..], &input[..prefix_len]);
            }
        }
        let mut nan = BytesMut::from(&b",nan\r\n"[..]);
        assert!(matches!(decode_reply(&mut nan), Ok(Some(Reply::Double(value))) if value.is_nan()));
    }

    #[test]
    fn malformed_replies_yield_the_specific_error() {
        use ProtocolError::*;
        let too_long_line = format!("+{}", "a".repeat(REPLY_LINE_MAX_BYTES + 1));
        let too_deep = "*1\r\n".repeat(REPLY_NESTING_DEPTH_MAX + 1);
        let deep_enough = format!("{}:1\r\n", "*1\r\n".repeat(REPLY_NESTING_DEPTH_MAX));
        let table: Vec<(&[u8], ProtocolError)> = vec![
            (b"?\r\n", InvalidReplyType { got: b'?' }),
            (b"\r\n", InvalidReplyType { got: b'\r' }),
            (b"+OK\rX", InvalidLineEnding),
            (too_long_line.as_bytes(), TooBigReplyLine),
            (b":abc\r\n", InvalidInteger),
            (b":\r\n", InvalidInteger),
            (b":9223372036854775808\r\n", InvalidInteger),
            (b",abc\r\n", InvalidDouble),
            (b",\r\n", InvalidDouble),
            (b"#x\r\n", InvalidBoolean),
            (b"#\r\n", InvalidBoolean),
            (b"(12a\r\n", InvalidBigNumber),
            (b"(-\r\n", InvalidBigNumber),
            (b"_x\r\n", InvalidNull),
            (b"=3\r\nabc\r\n", InvalidVerbatim),
            (b"=4\r\nabcd\r\n", InvalidVerbatim),
            (b"$3\r\nabcXY", BulkNotTerminated),
            (b"$-2\r\n", InvalidBulkLength),
            (b"!-1\r\n", InvalidBulkLength),
            (b"$9223372036854775808\r\n", InvalidBulkLength),
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"%-1\r\n", InvalidMultibulkLength),
            (b"~x\r\n", InvalidMultibulkLength),
            (
                b"*1111111111111111111111111111111111",
                TooBigMbulkCountString,
            ),
            (
                b"$1111111111111111111111111111111111",
                TooBigBulkCountString,
            ),
            (too_deep.as_bytes(), NestingTooDeep),
        ];
        for (input, expected) in table {
            let mut buf = BytesMut::from(input);
            assert_eq!(
                decode_reply(&mut buf),
                Err(expected),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(&buf[..], input);
        }
        let mut buf = BytesMut::from(deep_enough.as_bytes());
        assert!(matches!(decode_reply(&mut buf), Ok(Some(Reply::Array(_)))));
    }

    #[test]
    fn huge_announced_aggregates_wait_without_reserving() {
        let mut buf =
            BytesMut::from(&b"*9223372036854775807\r\n:1\r\n%4611686018427387903\r\n"[..]);
        assert_eq!(decode_reply(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"$9223372036854775807\r\nabc"[..]);
        assert_eq!(decode_reply(&mut buf), Ok(None));
    }

    // --- properties -------------------------------------------------------

    /// What a RESP3 round trip is expected to give back for `reply`.
    fn resp3_model(reply: &Reply) -> Reply {
        let line = |text: &str| text.replace(['\r', '\n'], " ");
        match reply {
            Reply::Simple(text) => Reply::Simple(line(text)),
            Reply::Error(text) => Reply::Error(line(text)),
            Reply::NullArray => Reply::Null,
            Reply::Array(items) => Reply::Array(items.iter().map(resp3_model).collect()),
            Reply::Set(items) => Reply::Set(items.iter().map(resp3_model).collect()),
            Reply::Push(items) => Reply::Push(items.iter().map(resp3_model).collect()),
            Reply::Map(pairs) => Reply::Map(
                pairs
                    .iter()
                    .map(|(key, value)| (resp3_model(key), resp3_model(value)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// What a RESP2 client decodes for `reply`.
    fn resp2_model(reply: &Reply) -> Reply {
        let line = |text: &str| text.replace(['\r', '\n'], " ");
        match reply {
            Reply::Simple(text) => Reply::Simple(line(text)),
            Reply::Error(text) => Reply::Error(line(text)),
            Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
                Reply::Array(items.iter().map(resp2_model).collect())
            }
            Reply::Map(pairs) => Reply::Array(
                pairs
                    .iter()
                    .flat_map(|(key, value)| [resp2_model(key), resp2_model(value)])
                    .collect(),
            ),
            Reply::Double(value) => Reply::Bulk(format_double(*value).into()),
            Reply::Boolean(value) => Reply::Integer(i64::from(*value)),
            Reply::Verbatim { text, .. } => Reply::Bulk(text.clone().into()),
            Reply::BigNumber(digits) => Reply::Bulk(digits.clone().into()),
            other => other.clone(),
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z \r\n]{0,10}"]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            arb_text().prop_map(Reply::Simple),
            arb_text().prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|data| Reply::Bulk(data.into())),
            Just(Reply::Null),
            Just(Reply::NullArray),
            any::<f64>()
                .prop_filter("NaN never equals itself", |value| !value.is_nan())
                .prop_map(Reply::Double),
            any::<bool>().prop_map(Reply::Boolean),
            (any::<[u8; 3]>(), arb_text())
                .prop_map(|(format, text)| Reply::Verbatim { format, text }),
            "-?[1-9][0-9]{0,40}|0".prop_map(Reply::BigNumber),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Array),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Set),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Push),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Reply::Map),
            ]
        })
    }

    /// Byte strings built from protocol fragments, to reach deep decoder paths.
    fn arb_protocolish_bytes() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            Just(&b"*"[..]),
            Just(&b"$"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\n"[..]),
            Just(&b"1"[..]),
            Just(&b"2"[..]),
            Just(&b"0"[..]),
            Just(&b"-1"[..]),
            Just(&b"9"[..]),
            Just(&b"a"[..]),
            Just(&b" "[..]),
            Just(&b"\""[..]),
            Just(&b"'"[..]),
            Just(&b"\\"[..]),
            Just(&b"\\x4"[..]),
            Just(&b"+"[..]),
            Just(&b":"[..]),
            Just(&b"%"[..]),
            Just(&b"~"[..]),
            Just(&b">"[..]),
            Just(&b"|"[..]),
            Just(&b"_"[..]),
            Just(&b","[..]),
            Just(&b"#t"[..]),
            Just(&b"("[..]),
            Just(&b"="[..]),
            Just(&b"!"[..]),
            Just(&b"txt:"[..]),
            Just(&b"*1\r\n$1\r\nx\r\n"[..]),
            Just(&b"\0"[..]),
        ];
        proptest::collection::vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
    }

    fn arb_input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            arb_protocolish_bytes(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn encoded_requests_decode_to_the_same_arguments(
            request_list in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..8),
                1..4,
            ),
            chunk_len_bytes in 1usize..16,
        ) {
            let mut wire = BytesMut::new();
            for request in &request_list {
                let borrowed: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
                encode_request(&borrowed, &mut wire);
            }
            let expected: Vec<Vec<Bytes>> = request_list
                .iter()
                .map(|request| request.iter().map(|arg| Bytes::copy_from_slice(arg)).collect())
                .collect();
            let whole = requests(&wire, wire.len(), RequestLimits::default());
            prop_assert_eq!(&whole.frames, &expected);
            prop_assert_eq!(whole.error, None);
            prop_assert!(whole.rest.is_empty());
            let chunked = requests(&wire, chunk_len_bytes, RequestLimits::default());
            prop_assert_eq!(chunked, whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_decode_the_same_in_any_chunking(
            input in arb_input(),
            small in any::<bool>(),
            chunk_len_bytes in 1usize..8,
        ) {
            let limits = if small { small_limits() } else { RequestLimits::default() };
            // `feed` asserts that nothing beyond the input is consumed, that
            // errors and incomplete input consume nothing, and that frames
            // consume a prefix.
            let whole = requests(&input, input.len(), limits);
            let byte_by_byte = requests(&input, 1, limits);
            let chunked = requests(&input, chunk_len_bytes, limits);
            prop_assert_eq!(&byte_by_byte, &whole);
            prop_assert_eq!(&chunked, &whole);
            if whole.error.is_none() {
                prop_assert!(input.ends_with(&whole.rest));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_reply_decoder(
            input in arb_input(),
            chunk_len_bytes in 1usize..8,
        ) {
            let whole = replies(&input, input.len());
            let byte_by_byte = replies(&input, 1);
            let chunked = replies(&input, chunk_len_bytes);
            // NaN doubles are the one value that is not equal to itself.
            let has_nan = format!("{whole:?}").contains("NaN");
            if !has_nan {
                prop_assert_eq!(&byte_by_byte, &whole);
                prop_assert_eq!(&chunked, &whole);
            }
            if whole.error.is_none() {
                prop_assert!(input.ends_with(&whole.rest));
            }
        }

        #[test]
        fn resp3_replies_round_trip(reply_list in proptest::collection::vec(arb_reply(), 1..4)) {
            let mut wire = BytesMut::new();
            for reply in &reply_list {
                encode_reply(reply, Protocol::Resp3, &mut wire);
            }
            let expected: Vec<Reply> = reply_list.iter().map(resp3_model).collect();
            let whole = replies(&wire, wire.len());
            prop_assert_eq!(&whole.frames, &expected);
            prop_assert_eq!(whole.error, None);
            prop_assert!(whole.rest.is_empty());
            let byte_by_byte = replies(&wire, 1);
            prop_assert_eq!(byte_by_byte, whole);
        }

        #[test]
        fn resp2_replies_decode_to_the_downgraded_model(reply in arb_reply()) {
            let mut wire = BytesMut::new();
            encode_reply(&reply, Protocol::Resp2, &mut wire);
            prop_assert_eq!(decode_reply(&mut wire), Ok(Some(resp2_model(&reply))));
            prop_assert!(wire.is_empty());
        }

        #[test]
        fn doubles_round_trip_through_their_text(value in any::<f64>()) {
            let text = format_double(value);
            prop_assert!(!text.contains(['\r', '\n']));
            let parsed: f64 = text.parse().expect("double text parses");
            if value.is_nan() {
                prop_assert!(parsed.is_nan());
            } else {
                prop_assert_eq!(parsed.to_bits(), value.to_bits());
            }
        }
    }
}
