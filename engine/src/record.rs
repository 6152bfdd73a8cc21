//! Byte formats on disk (see ARCHITECTURE.md, "On-disk format"):
//!
//! - segment header, 16 bytes: magic `SHOALSG1`, segment id u32 LE, CRC32C of the
//!   first 12 bytes u32 LE;
//! - record frame: `[len u32 LE][crc u32 LE][body: len bytes]`, where crc is CRC32C
//!   over the four length bytes and the body, and the body is a postcard
//!   [`RecordBody`]. An all-zero frame header marks the end of written data in a
//!   preallocated segment (a valid frame never has a zero CRC of a zero length,
//!   because bodies are never empty).

use crate::version::SiblingSet;
use serde::{Deserialize, Serialize};

pub const SEGMENT_MAGIC: &[u8; 8] = b"SHOALSG1";
pub const SEGMENT_HEADER_BYTES: u64 = 16;
pub const FRAME_HEADER_BYTES: usize = 8;

/// What one record says: the whole sibling set of one key after a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// The group-commit batch that wrote it; recovery uses it to tell a torn tail
    /// from corruption in the middle.
    pub batch_seq: u64,
    pub namespace: u8,
    #[serde(with = "serde_bytes_vec")]
    pub key: Vec<u8>,
    pub set: SiblingSet,
}

/// A record to encode, its fields borrowed: the committer frames each write
/// without copying its key and set. Its serde layout is [`RecordBody`]'s,
/// field for field (a test checks the bytes agree).
#[derive(Debug, Serialize)]
pub struct RecordBodyRef<'a> {
    pub batch_seq: u64,
    pub namespace: u8,
    #[serde(serialize_with = "serde_bytes_vec::serialize")]
    pub key: &'a [u8],
    pub set: &'a SiblingSet,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: bytes::Bytes = Deserialize::deserialize(d)?;
        Ok(b.to_vec())
    }
}

pub fn segment_header(segment_id: u32) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&segment_id.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The segment id a header names, or `None` when it is not a valid header.
pub fn parse_segment_header(header: &[u8]) -> Option<u32> {
    if header.len() < 16 || &header[..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    if crc32c::crc32c(&header[..12]) != crc {
        return None;
    }
    Some(u32::from_le_bytes(header[8..12].try_into().ok()?))
}

/// Appends one frame holding `body` to `out`; returns the frame's length in bytes.
pub fn encode_frame<B: Serialize>(body: &B, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let out_vec = std::mem::take(out);
    let mut out_vec = postcard::to_extend(body, out_vec).expect("postcard to Vec cannot fail");
    let body_len = (out_vec.len() - start - FRAME_HEADER_BYTES) as u32;
    assert!(body_len > 0, "record body is never empty");
    out_vec[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    let mut crc = crc32c::crc32c(&body_len.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &out_vec[start + FRAME_HEADER_BYTES..]);
    out_vec[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    *out = out_vec;
    out.len() - start
}

/// A record decoded without copying: what recovery and inspection need to index a
/// key. Its serde layout mirrors [`RecordBody`] field for field.
#[derive(Debug, Deserialize)]
pub struct RecordView<'a> {
    pub batch_seq: u64,
    pub namespace: u8,
    #[serde(borrow)]
    pub key: &'a [u8],
    #[serde(borrow)]
    pub set: SiblingSetView<'a>,
}

#[derive(Debug, Deserialize)]
pub struct SiblingSetView<'a> {
    /// The context's (node, counter) pairs; a map and a sequence of pairs share
    /// postcard's encoding.
    pub context: Vec<(u32, u64)>,
    #[serde(borrow)]
    pub siblings: Vec<SiblingView<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct SiblingView<'a> {
    pub dot: crate::version::Dot,
    pub hlc: crate::version::Hlc,
    #[serde(borrow)]
    pub payload: PayloadView<'a>,
}

/// A sibling's payload as `version::Payload` encodes it, borrowed.
#[derive(Debug, Deserialize)]
pub enum PayloadView<'a> {
    Marker,
    Value(&'a [u8]),
    Expiring(&'a [u8], u64),
    Counted(&'a [u8], Option<u64>, crate::counter::Counter),
}

impl<'a> SiblingView<'a> {
    pub fn value(&self) -> Option<&'a [u8]> {
        match self.payload {
            PayloadView::Marker => None,
            PayloadView::Value(v) | PayloadView::Expiring(v, _) | PayloadView::Counted(v, _, _) => {
                Some(v)
            }
        }
    }

    pub fn deadline_ms(&self) -> Option<u64> {
        match self.payload {
            PayloadView::Expiring(_, d) => Some(d),
            PayloadView::Counted(_, d, _) => d,
            _ => None,
        }
    }

    /// As [`crate::version::Sibling::is_live_at`].
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.value().is_some() && self.deadline_ms().is_none_or(|d| d > now_ms)
    }
}

impl RecordView<'_> {
    /// At least one sibling holds a value.
    pub fn is_live(&self) -> bool {
        self.set.siblings.iter().any(|s| s.value().is_some())
    }

    /// As [`crate::version::SiblingSet::deadline_ms`].
    pub fn deadline_ms(&self) -> Option<u64> {
        let mut latest = None;
        for s in self.set.siblings.iter().filter(|s| s.value().is_some()) {
            latest = Some(latest.unwrap_or(0).max(s.deadline_ms()?));
        }
        latest
    }

    pub fn max_hlc(&self) -> crate::version::Hlc {
        self.set
            .siblings
            .iter()
            .map(|s| s.hlc)
            .max()
            .unwrap_or_default()
    }
}

/// What is found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRead {
    /// A whole, valid frame of `frame_len` bytes.
    Valid { body: RecordBody, frame_len: usize },
    /// An all-zero header: no data was written here.
    Zero,
    /// Anything else: torn, corrupt, or garbage.
    Invalid(&'static str),
}

/// The checked body of the frame at the start of `bytes` and the frame's length,
/// or why there is no valid frame there.
fn check_frame(bytes: &[u8], record_size_max_bytes: u32) -> Result<(&[u8], usize), FrameFault> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(if bytes.iter().all(|b| *b == 0) {
            FrameFault::Zero
        } else {
            FrameFault::Invalid("truncated frame header")
        });
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Err(FrameFault::Zero);
    }
    if len == 0 || len > record_size_max_bytes {
        return Err(FrameFault::Invalid("frame length out of range"));
    }
    let end = FRAME_HEADER_BYTES + len as usize;
    if end > bytes.len() {
        return Err(FrameFault::Invalid(
            "frame runs past the end of the segment",
        ));
    }
    let body = &bytes[FRAME_HEADER_BYTES..end];
    let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), body);
    if computed != crc && !cfg!(feature = "bug-torn-accept") {
        return Err(FrameFault::Invalid("checksum mismatch"));
    }
    Ok((body, end))
}

enum FrameFault {
    Zero,
    Invalid(&'static str),
}

const UNDECODABLE: &str = "checksum matches but body does not decode";

/// Reads the frame at the start of `bytes` (which may run to the segment's end).
pub fn read_frame(bytes: &[u8], record_size_max_bytes: u32) -> FrameRead {
    match check_frame(bytes, record_size_max_bytes) {
        Err(FrameFault::Zero) => FrameRead::Zero,
        Err(FrameFault::Invalid(why)) => FrameRead::Invalid(why),
        Ok((body, frame_len)) => match postcard::from_bytes::<RecordBody>(body) {
            Ok(body) => FrameRead::Valid { body, frame_len },
            Err(_) => FrameRead::Invalid(UNDECODABLE),
        },
    }
}

/// Like [`read_frame`], decoding without copying keys or values.
pub fn scan_frame(bytes: &[u8], record_size_max_bytes: u32) -> FrameScan<'_> {
    match check_frame(bytes, record_size_max_bytes) {
        Err(FrameFault::Zero) => FrameScan::Zero,
        Err(FrameFault::Invalid(why)) => FrameScan::Invalid(why),
        Ok((body, frame_len)) => match postcard::from_bytes::<RecordView<'_>>(body) {
            Ok(view) => FrameScan::Valid { view, frame_len },
            Err(_) => FrameScan::Invalid(UNDECODABLE),
        },
    }
}

/// What [`scan_frame`] finds.
#[derive(Debug)]
pub enum FrameScan<'a> {
    Valid {
        view: RecordView<'a>,
        frame_len: usize,
    },
    Zero,
    Invalid(&'static str),
}

/// What [`scan_winner`] finds.
#[derive(Debug)]
pub enum WinnerScan<'a> {
    /// A valid frame, and its record's winner at the time asked, if any.
    Valid(Option<SiblingView<'a>>),
    Zero,
    Invalid(&'static str),
}

/// Like [`scan_frame`], for a GET: the same checks (the CRC, and a body that
/// decodes whole), but only the live sibling that wins at `now_ms` is kept
/// (the one `filter(is_live_at).max_by_key(winner_rank)` picks over the
/// view's siblings); the context and the other siblings are decoded and
/// dropped as they come, so nothing is allocated.
pub fn scan_winner(bytes: &[u8], record_size_max_bytes: u32, now_ms: u64) -> WinnerScan<'_> {
    match check_frame(bytes, record_size_max_bytes) {
        Err(FrameFault::Zero) => WinnerScan::Zero,
        Err(FrameFault::Invalid(why)) => WinnerScan::Invalid(why),
        Ok((body, _)) => {
            let mut decoder = postcard::Deserializer::from_bytes(body);
            match serde::de::DeserializeSeed::deserialize(winner::OfRecord(now_ms), &mut decoder) {
                Ok(winner) => WinnerScan::Valid(winner),
                Err(_) => WinnerScan::Invalid(UNDECODABLE),
            }
        }
    }
}

/// [`scan_winner`]'s decoding: [`RecordView`]'s layout, field for field.
mod winner {
    use super::SiblingView;
    use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
    use std::fmt;

    type Winner<'de> = Option<SiblingView<'de>>;

    fn missing<E: de::Error>(what: &'static str) -> E {
        E::custom(format_args!("record ends before its {what}"))
    }

    /// A record (`RecordView`): batch, namespace, key, then its set.
    pub(super) struct OfRecord(pub u64);

    impl<'de> DeserializeSeed<'de> for OfRecord {
        type Value = Winner<'de>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            let fields = &["batch_seq", "namespace", "key", "set"];
            d.deserialize_struct("RecordView", fields, self)
        }
    }

    impl<'de> Visitor<'de> for OfRecord {
        type Value = Winner<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a record")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            seq.next_element::<u64>()?.ok_or_else(|| missing("batch"))?;
            seq.next_element::<u8>()?
                .ok_or_else(|| missing("namespace"))?;
            seq.next_element::<&'de [u8]>()?
                .ok_or_else(|| missing("key"))?;
            seq.next_element_seed(OfSet(self.0))?
                .ok_or_else(|| missing("set"))
        }
    }

    /// A sibling set (`SiblingSetView`): its context, then its siblings.
    struct OfSet(u64);

    impl<'de> DeserializeSeed<'de> for OfSet {
        type Value = Winner<'de>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_struct("SiblingSetView", &["context", "siblings"], self)
        }
    }

    impl<'de> Visitor<'de> for OfSet {
        type Value = Winner<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sibling set")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            seq.next_element_seed(Siblings(None))?
                .ok_or_else(|| missing("context"))?;
            seq.next_element_seed(Siblings(Some(self.0)))?
                .ok_or_else(|| missing("siblings"))
        }
    }

    /// A sequence: with no time, the context's (node, counter) pairs, each
    /// dropped; with the time, the siblings, keeping the winner at it.
    struct Siblings(Option<u64>);

    impl<'de> DeserializeSeed<'de> for Siblings {
        type Value = Winner<'de>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Siblings {
        type Value = Winner<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let Some(now_ms) = self.0 else {
                while seq.next_element::<(u32, u64)>()?.is_some() {}
                return Ok(None);
            };
            let rank = |s: &SiblingView| crate::version::winner_rank(s.hlc, s.dot);
            let mut best: Winner<'de> = None;
            while let Some(sibling) = seq.next_element::<SiblingView<'de>>()? {
                // `>=`: of equal ranks the last wins, as with `max_by_key`.
                let wins = best.as_ref().is_none_or(|b| rank(&sibling) >= rank(b));
                if sibling.is_live_at(now_ms) && wins {
                    best = Some(sibling);
                }
            }
            Ok(best)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, VersionVector};
    use bytes::Bytes;

    /// A sibling as a test gives it: node, counter, hlc, value byte, deadline.
    type TestSibling = (u32, u64, u64, Option<u8>, Option<u64>);

    /// A record of the given siblings, with a context of `context_nodes`
    /// entries.
    fn record_of(siblings: &[TestSibling], context_nodes: u32) -> Vec<u8> {
        let mut set = SiblingSet::default();
        for node in 0..context_nodes {
            set.context.add(crate::version::Dot { node, counter: 9 });
        }
        for &(node, counter, hlc, value, deadline) in siblings {
            set.siblings.push(crate::version::Sibling {
                dot: crate::version::Dot { node, counter },
                hlc: Hlc(hlc),
                value: value.map(|v| Bytes::from(vec![v])),
                deadline_ms: deadline.filter(|_| value.is_some()),
                counter: None,
            });
        }
        let mut out = Vec::new();
        encode_frame(
            &RecordBody {
                batch_seq: 4,
                namespace: 1,
                key: b"k".to_vec(),
                set,
            },
            &mut out,
        );
        out
    }

    proptest::proptest! {
        #[test]
        fn the_winner_scanned_is_the_one_the_view_picks(
            siblings in proptest::collection::vec(
                (0u32..3, 0u64..3, 0u64..3, proptest::option::of(0u8..3), proptest::option::of(0u64..6)),
                0..5,
            ),
            context_nodes in 0u32..3,
            now_ms in 0u64..6,
        ) {
            let frame = record_of(&siblings, context_nodes);
            let FrameScan::Valid { view, .. } = scan_frame(&frame, 1 << 20) else {
                panic!("a frame just encoded scans valid");
            };
            let expected = (view.set.siblings.iter())
                .filter(|s| s.is_live_at(now_ms))
                .max_by_key(|s| crate::version::winner_rank(s.hlc, s.dot));
            let WinnerScan::Valid(winner) = scan_winner(&frame, 1 << 20, now_ms) else {
                panic!("a frame just encoded scans valid");
            };
            fn key<'a>(s: &SiblingView<'a>) -> (crate::version::Dot, Hlc, Option<&'a [u8]>, Option<u64>) {
                (s.dot, s.hlc, s.value(), s.deadline_ms())
            }
            proptest::prop_assert_eq!(winner.as_ref().map(key), expected.map(key));
        }
    }

    #[test]
    fn a_winner_scan_checks_the_frame_as_a_view_scan_does() {
        let frame = record_of(&[(1, 1, 2, Some(7), None)], 1);
        for cut in [0, 4, 9, frame.len() - 1] {
            let mut damaged = frame.clone();
            damaged[cut] ^= 0x40;
            assert!(matches!(
                scan_winner(&damaged, 1 << 20, 0),
                WinnerScan::Invalid(_)
            ));
        }
        assert!(matches!(
            scan_winner(&[0; 16], 1 << 20, 0),
            WinnerScan::Zero
        ));
        // A body whose checksum matches but which ends early does not decode.
        let mut short = frame[..frame.len() - 1].to_vec();
        let len = (short.len() - FRAME_HEADER_BYTES) as u32;
        short[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&short[0..4]), &short[8..]);
        short[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            scan_frame(&short, 1 << 20),
            FrameScan::Invalid(UNDECODABLE)
        ));
        assert!(matches!(
            scan_winner(&short, 1 << 20, 0),
            WinnerScan::Invalid(UNDECODABLE)
        ));
    }

    fn body(key: &str, value: &str) -> RecordBody {
        let mut set = SiblingSet::default();
        set.write(
            &VersionVector::new(),
            1,
            0,
            Hlc(7),
            Some(Bytes::from(value.to_string())),
        );
        RecordBody {
            batch_seq: 3,
            namespace: 2,
            key: key.as_bytes().to_vec(),
            set,
        }
    }

    #[test]
    fn frame_roundtrip() {
        let mut out = vec![9, 9];
        let len = encode_frame(&body("k", "v"), &mut out);
        assert_eq!(out.len(), 2 + len);
        match read_frame(&out[2..], 1 << 20) {
            FrameRead::Valid { body: b, frame_len } => {
                assert_eq!(b, body("k", "v"));
                assert_eq!(frame_len, len);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn borrowed_body_encodes_the_same_bytes() {
        let mut b = body("key", "value");
        let ctx = b.set.context.clone();
        b.set
            .write(&ctx, 3, 0, Hlc(8), Some(Bytes::from_static(b"other")));
        let (mut owned, mut borrowed) = (Vec::new(), vec![]);
        encode_frame(&b, &mut owned);
        let view = RecordBodyRef {
            batch_seq: b.batch_seq,
            namespace: b.namespace,
            key: &b.key,
            set: &b.set,
        };
        encode_frame(&view, &mut borrowed);
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut out = Vec::new();
        encode_frame(&body("key", "value"), &mut out);
        for i in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[i / 8] ^= 1 << (i % 8);
            damaged.extend_from_slice(&[0; 64]);
            assert!(
                !matches!(read_frame(&damaged, 1 << 20), FrameRead::Valid { .. }),
                "bit {i} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let mut out = Vec::new();
        encode_frame(&body("key", "value"), &mut out);
        for cut in 1..out.len() {
            let mut torn = out[..cut].to_vec();
            torn.resize(out.len() + 16, 0);
            assert!(
                !matches!(
                    read_frame(&torn, 1 << 20),
                    FrameRead::Valid { .. } | FrameRead::Zero
                ) || cut < FRAME_HEADER_BYTES && out[..cut].iter().all(|b| *b == 0)
            );
        }
    }

    #[test]
    fn view_decodes_what_the_body_encodes() {
        let mut out = Vec::new();
        let mut b = body("key", "value");
        let ctx = b.set.context.clone();
        b.set.write(&VersionVector::new(), 2, 0, Hlc(9), None);
        b.set
            .write(&ctx, 3, 0, Hlc(8), Some(Bytes::from_static(b"other")));
        encode_frame(&b, &mut out);
        let FrameScan::Valid { view, frame_len } = scan_frame(&out, 1 << 20) else {
            panic!("valid frame")
        };
        assert_eq!(frame_len, out.len());
        assert_eq!(
            (view.batch_seq, view.namespace, view.key),
            (3, 2, &b"key"[..])
        );
        let values: Vec<_> = view.set.siblings.iter().map(|s| s.value()).collect();
        let expected: Vec<_> = b.set.siblings.iter().map(|s| s.value.as_deref()).collect();
        assert_eq!(values, expected);
        assert_eq!(
            view.set.context,
            b.set.context.entries().collect::<Vec<_>>()
        );
        assert!(view.is_live());
        assert_eq!(view.max_hlc(), Hlc(9));
    }

    #[test]
    fn zero_header_is_end_and_oversize_is_invalid() {
        assert_eq!(read_frame(&[0; 32], 100), FrameRead::Zero);
        let mut big = vec![0u8; 32];
        big[0..4].copy_from_slice(&1000u32.to_le_bytes());
        big[4] = 1;
        assert!(matches!(read_frame(&big, 100), FrameRead::Invalid(_)));
    }

    #[test]
    fn segment_header_roundtrip_and_damage() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Some(42));
        let mut bad = h;
        bad[9] ^= 1;
        assert_eq!(parse_segment_header(&bad), None);
        assert_eq!(parse_segment_header(&[0; 16]), None);
    }
}
