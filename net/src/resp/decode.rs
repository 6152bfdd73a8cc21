//! Reply decoding for clients (the simulator's and the tests').

use super::*;
use bytes::{Bytes, BytesMut};

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
        match type_byte {
            b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => self.line_reply(type_byte),
            b'$' | b'!' | b'=' => self.bulk_reply(type_byte),
            b'*' | b'~' | b'>' | b'%' => self.aggregate_reply(type_byte, depth),
            got => Err(ProtocolError::InvalidReplyType { got }),
        }
    }

    /// `line` as a string when a reply is being built (empty when only
    /// checking a reply's shape).
    fn owned_text(&self, line: &[u8]) -> String {
        if self.building() {
            String::from_utf8_lossy(line).into_owned()
        } else {
            String::new()
        }
    }

    /// A reply held on its type's line: simple string, error, integer,
    /// double, boolean, big number, null.
    fn line_reply(&mut self, type_byte: u8) -> Result<Option<Reply>, ProtocolError> {
        let reply = match type_byte {
            b'+' | b'-' => {
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let text = self.owned_text(line);
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
                Reply::BigNumber(self.owned_text(line))
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
            _ => unreachable!("not a line reply type"),
        };
        Ok(Some(reply))
    }

    /// A length-prefixed reply: bulk string, bulk error, verbatim string.
    fn bulk_reply(&mut self, type_byte: u8) -> Result<Option<Reply>, ProtocolError> {
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
        let reply = match type_byte {
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
        };
        Ok(Some(reply))
    }

    /// An aggregate: array, set, push, map.
    fn aggregate_reply(
        &mut self,
        type_byte: u8,
        depth: usize,
    ) -> Result<Option<Reply>, ProtocolError> {
        let reply = match type_byte {
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
            _ => unreachable!("not an aggregate reply type"),
        };
        Ok(Some(reply))
    }
}
