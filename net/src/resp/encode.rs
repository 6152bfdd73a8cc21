//! Reply encoding (RESP3, or downgraded to RESP2 as Redis does) and request
//! encoding for clients.

use super::*;
use bytes::{BufMut, BytesMut};

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
pub(super) fn format_double(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // C's "%.17g", as Redis 7.0 answers a double: 17 significant digits,
    // trailing zeros dropped, an exponent (e+XX) below 1e-4 or from 1e17.
    let scientific = format!("{value:.16e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e}'s exponent is a number");
    let trim = |digits: &str| -> String {
        match digits.contains('.') {
            true => digits
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned(),
            false => digits.to_owned(),
        }
    };
    if !(-4..17).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exponent.abs());
    }
    let decimals = (16 - exponent).max(0) as usize;
    trim(&format!("{value:.decimals$}"))
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
