use super::*;
use bytes::{Bytes, BytesMut};
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

fn requests(input: &[u8], chunk_len_bytes: usize, limits: RequestLimits) -> Drained<Vec<Bytes>> {
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
        (Reply::Double(1e300), b",1.0000000000000001e+300\r\n"),
        (Reply::Double(0.1), b",0.10000000000000001\r\n"),
        (Reply::Double(5e-6), b",5.0000000000000004e-06\r\n"),
        (Reply::Double(0.0001), b",0.0001\r\n"),
        (Reply::Double(1e17), b",1e+17\r\n"),
        (Reply::Double(-0.0), b",-0\r\n"),
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
    let mut buf = BytesMut::from(&b"*9223372036854775807\r\n:1\r\n%4611686018427387903\r\n"[..]);
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
        (any::<[u8; 3]>(), arb_text()).prop_map(|(format, text)| Reply::Verbatim { format, text }),
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
