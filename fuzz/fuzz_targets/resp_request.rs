//! Fuzzes RESP request decoding: arbitrary bytes must never panic, never
//! consume more than they hold, and decode the same whole as byte by byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_net::resp::{decode_request, ProtocolError, RequestLimits};

/// Small limits so the fuzzer reaches every limit check.
const LIMITS: RequestLimits = RequestLimits {
    bulk_len_max_bytes: 64,
    multibulk_len_max: 8,
    inline_len_max_bytes: 64,
};

/// Decodes requests until the buffer is incomplete or invalid.
fn drain(buf: &mut BytesMut, requests: &mut Vec<Vec<bytes::Bytes>>) -> Option<ProtocolError> {
    loop {
        let len_before = buf.len();
        match decode_request(buf, &LIMITS) {
            Ok(Some(args)) => {
                assert!(buf.len() < len_before, "a request must consume bytes");
                requests.push(args);
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    len_before,
                    "incomplete input must not be consumed"
                );
                return None;
            }
            Err(error) => {
                assert_eq!(buf.len(), len_before, "an error must not consume");
                return Some(error);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut whole_requests = Vec::new();
    let mut whole = BytesMut::from(data);
    let whole_error = drain(&mut whole, &mut whole_requests);
    assert!(data.ends_with(&whole), "only a prefix may be consumed");

    let mut split_requests = Vec::new();
    let mut split = BytesMut::new();
    let mut split_error = None;
    for &byte in data {
        split.extend_from_slice(&[byte]);
        split_error = drain(&mut split, &mut split_requests);
        if split_error.is_some() {
            break;
        }
    }
    assert_eq!(split_requests, whole_requests);
    assert_eq!(split_error, whole_error);
});
