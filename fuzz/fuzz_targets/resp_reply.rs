//! Fuzzes RESP2/RESP3 reply decoding: arbitrary bytes must never panic or
//! consume more than they hold, and every decoded reply must survive a RESP3
//! re-encoding.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_net::resp::{decode_reply, encode_reply, Protocol, Reply};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut replies: Vec<Reply> = Vec::new();
    loop {
        let len_before = buf.len();
        match decode_reply(&mut buf) {
            Ok(Some(reply)) => {
                assert!(buf.len() < len_before, "a reply must consume bytes");
                replies.push(reply);
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), len_before, "nothing consumed without a reply");
                break;
            }
        }
    }
    assert!(data.ends_with(&buf), "only a prefix may be consumed");

    // Encoding what was decoded must itself decode, in both protocols. (A
    // blob error longer than the reply line limit would re-encode as a line
    // that is too long, so very large inputs skip this.)
    if data.len() > 60_000 {
        return;
    }
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut wire = BytesMut::new();
        for reply in &replies {
            encode_reply(reply, protocol, &mut wire);
        }
        let mut decoded_count = 0;
        while let Ok(Some(_)) = decode_reply(&mut wire) {
            decoded_count += 1;
        }
        assert_eq!(decoded_count, replies.len());
        assert!(wire.is_empty());
    }
});
