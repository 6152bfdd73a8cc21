//! Request decoding on the server side: multibulk and inline commands.

use super::*;
use bytes::{Buf, Bytes, BytesMut};

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
/// The byte the backslash escape at `pos` (inside double quotes, with a byte
/// after it) stands for, and how many bytes past the backslash it used, as
/// Redis's `sdssplitargs` reads it.
fn unescape(line: &[u8], pos: usize) -> (u8, usize) {
    let at = |pos: usize| line.get(pos).copied().unwrap_or(0);
    match at(pos + 1) {
        b'x' => match (hex_value(at(pos + 2)), hex_value(at(pos + 3))) {
            (Some(high), Some(low)) => (high * 16 + low, 3),
            _ => (b'x', 1),
        },
        b'n' => (b'\n', 1),
        b'r' => (b'\r', 1),
        b't' => (b'\t', 1),
        b'b' => (0x08, 1),
        b'a' => (0x07, 1),
        other => (other, 1),
    }
}

/// A closing quote must end its argument: the byte after it is the line's
/// end or a space.
fn closing_quote(next: u8) -> Result<(), ProtocolError> {
    if next != 0 && !is_c_space(next) {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    Ok(())
}

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
                    b'\\' if at(pos + 1) != 0 => {
                        let (unescaped, used) = unescape(line, pos);
                        current.push(unescaped);
                        pos += used;
                    }
                    b'"' => {
                        closing_quote(at(pos + 1))?;
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
                        closing_quote(at(pos + 1))?;
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
