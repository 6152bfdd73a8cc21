//! Read-modify-writes of a string value (INCRBY, INCRBYFLOAT, APPEND,
//! SETRANGE, SETBIT): the store computes the new value from the key's current winner
//! while it prepares the write, under the same lock that orders every write of
//! the node, so two of them never read the same value. Redis's rules and
//! error texts.
//!
//! Must not touch: how the write is then made (`Store::prepare_one`).

use bytes::{Bytes, BytesMut};
use std::fmt;

/// The longest string a modification may produce (Redis's
/// `proto-max-bulk-len` default, 512 MiB); the record limit may bind first.
pub const STRING_LEN_MAX_BYTES: usize = 512 << 20;

/// A modification of a key's string value.
#[derive(Clone, Debug, PartialEq)]
pub enum Modify {
    /// INCR, DECR, INCRBY, DECRBY: add to a 64-bit integer (absent: 0).
    IncrBy(i64),
    /// A cluster's INCR, DECR, INCRBY, DECRBY: add as this node's share of a
    /// counter that merges per node (`crate::counter`), so increments
    /// coordinated on different nodes at once add up. The store computes it
    /// from every live sibling, not from the winner alone.
    CountBy(i64),
    /// A cluster's INCRBYFLOAT: as [`Modify::CountBy`], a float share.
    CountByFloat(f64),
    /// INCRBYFLOAT: add to a float (absent: 0).
    IncrByFloat(f64),
    /// APPEND (absent: empty).
    Append(Bytes),
    /// SETRANGE: overwrite from `offset_bytes`, padding with zero bytes.
    SetRange { offset_bytes: usize, bytes: Bytes },
    /// EXPIRE, PERSIST, GETEX: the value unchanged, with the op's deadline
    /// (not applied to an absent key).
    Touch,
    /// SETBIT: set or clear one bit (bit 0 is the first byte's highest),
    /// padding with zero bytes.
    SetBit { offset_bits: u64, bit: bool },
}

/// Why a modification was refused; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModifyError {
    /// The value is not a 64-bit integer in Redis's strict form.
    NotAnInteger,
    /// The sum does not fit in 64 bits.
    Overflow,
    /// The value is not a finite float.
    NotAFloat,
    /// The sum would be NaN or infinite.
    NotFinite,
    /// The result would be longer than [`STRING_LEN_MAX_BYTES`].
    TooLong { len_bytes: usize },
}

impl fmt::Display for ModifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModifyError::NotAnInteger => write!(f, "value is not an integer or out of range"),
            ModifyError::Overflow => write!(f, "increment or decrement would overflow"),
            ModifyError::NotAFloat => write!(f, "value is not a valid float"),
            ModifyError::NotFinite => write!(f, "increment would produce NaN or Infinity"),
            ModifyError::TooLong { .. } => {
                write!(
                    f,
                    "string exceeds maximum allowed size (proto-max-bulk-len)"
                )
            }
        }
    }
}

impl Modify {
    /// As a cluster runs it: an increment counts per node
    /// ([`Modify::CountBy`], [`Modify::CountByFloat`]); others are unchanged.
    pub fn per_node(self) -> Modify {
        match self {
            Modify::IncrBy(by) => Modify::CountBy(by),
            Modify::IncrByFloat(by) => Modify::CountByFloat(by),
            other => other,
        }
    }

    /// The new value, from the current winner (`None`: the key is absent).
    /// [`Modify::Touch`] of an absent key has none.
    pub fn apply(&self, current: Option<&[u8]>) -> Result<Option<Bytes>, ModifyError> {
        if matches!(self, Modify::Touch) {
            return Ok(current.map(Bytes::copy_from_slice));
        }
        self.compute(current).map(Some)
    }

    fn compute(&self, current: Option<&[u8]>) -> Result<Bytes, ModifyError> {
        match self {
            Modify::Touch => unreachable!("Touch is answered by apply"),
            Modify::IncrBy(by) | Modify::CountBy(by) => {
                let now = current
                    .map_or(Some(0), parse_i64)
                    .ok_or(ModifyError::NotAnInteger)?;
                let next = now.checked_add(*by).ok_or(ModifyError::Overflow)?;
                Ok(Bytes::from(next.to_string()))
            }
            Modify::IncrByFloat(by) | Modify::CountByFloat(by) => {
                let now = current
                    .map_or(Some(0.0), parse_f64)
                    .ok_or(ModifyError::NotAFloat)?;
                let next = now + by;
                if !next.is_finite() {
                    return Err(ModifyError::NotFinite);
                }
                Ok(Bytes::from(format_float(next)))
            }
            Modify::Append(bytes) => {
                let now = current.unwrap_or_default();
                let len_bytes = now.len() + bytes.len();
                if len_bytes > STRING_LEN_MAX_BYTES {
                    return Err(ModifyError::TooLong { len_bytes });
                }
                let mut next = BytesMut::with_capacity(len_bytes);
                next.extend_from_slice(now);
                next.extend_from_slice(bytes);
                Ok(next.freeze())
            }
            Modify::SetBit { offset_bits, bit } => {
                let byte = usize::try_from(offset_bits / 8).unwrap_or(usize::MAX);
                if byte >= STRING_LEN_MAX_BYTES {
                    return Err(ModifyError::TooLong { len_bytes: byte });
                }
                let mut next = BytesMut::from(current.unwrap_or_default());
                if next.len() <= byte {
                    next.resize(byte + 1, 0);
                }
                let mask = 0x80u8 >> (offset_bits % 8);
                next[byte] = if *bit {
                    next[byte] | mask
                } else {
                    next[byte] & !mask
                };
                Ok(next.freeze())
            }
            Modify::SetRange {
                offset_bytes,
                bytes,
            } => {
                let now = current.unwrap_or_default();
                let end = offset_bytes
                    .checked_add(bytes.len())
                    .filter(|end| *end <= STRING_LEN_MAX_BYTES)
                    .ok_or(ModifyError::TooLong {
                        len_bytes: usize::MAX,
                    })?;
                let mut next = BytesMut::from(now);
                if next.len() < end {
                    next.resize(end, 0);
                }
                next[*offset_bytes..end].copy_from_slice(bytes);
                Ok(next.freeze())
            }
        }
    }
}

/// Redis's strict integer form: an optional `-`, then digits without a
/// leading zero (or `0` alone), at most 20 bytes, no spaces.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = !digits.is_empty()
        && text.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && text != b"-0";
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A finite float as Redis accepts one (no spaces, no NaN or infinity).
pub fn parse_f64(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A float as INCRBYFLOAT answers it: the shortest decimal that reads back
/// as the same value, without an exponent (`10.6`, `3`, `-0.5`).
pub fn format_float(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: Modify, current: Option<&str>) -> Result<String, ModifyError> {
        m.apply(current.map(str::as_bytes))
            .map(|b| String::from_utf8(b.expect("a value").to_vec()).unwrap())
    }

    #[test]
    fn setbit_sets_one_bit_from_the_highest() {
        let set = |offset_bits, bit, current: Option<&[u8]>| {
            Modify::SetBit { offset_bits, bit }
                .apply(current)
                .unwrap()
                .unwrap()
        };
        assert_eq!(&set(0, true, None)[..], &[0x80]);
        assert_eq!(&set(9, true, Some(&[0xff]))[..], &[0xff, 0x40]);
        assert_eq!(&set(7, false, Some(&[0xff]))[..], &[0xfe]);
        let too_far = Modify::SetBit {
            offset_bits: (STRING_LEN_MAX_BYTES as u64) * 8,
            bit: true,
        };
        assert!(matches!(
            too_far.apply(None),
            Err(ModifyError::TooLong { .. })
        ));
    }

    #[test]
    fn increments_follow_redis() {
        assert_eq!(apply(Modify::IncrBy(1), None), Ok("1".into()));
        assert_eq!(apply(Modify::IncrBy(-5), Some("3")), Ok("-2".into()));
        assert_eq!(
            apply(Modify::IncrBy(1), Some("9223372036854775807")),
            Err(ModifyError::Overflow)
        );
        assert_eq!(
            apply(Modify::IncrBy(-1), Some("-9223372036854775808")),
            Err(ModifyError::Overflow)
        );
        for bad in [
            "",
            " 1",
            "1 ",
            "+1",
            "01",
            "-0",
            "1.0",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(
                apply(Modify::IncrBy(1), Some(bad)),
                Err(ModifyError::NotAnInteger),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn float_increments_follow_redis() {
        assert_eq!(
            apply(Modify::IncrByFloat(0.1), Some("10.50")),
            Ok("10.6".into())
        );
        assert_eq!(apply(Modify::IncrByFloat(2.0), Some("1")), Ok("3".into()));
        assert_eq!(apply(Modify::IncrByFloat(5.0e3), None), Ok("5000".into()));
        assert_eq!(
            apply(Modify::IncrByFloat(1.0), Some("x")),
            Err(ModifyError::NotAFloat)
        );
        assert_eq!(
            apply(Modify::IncrByFloat(1.0), Some("nan")),
            Err(ModifyError::NotAFloat)
        );
        assert_eq!(
            apply(Modify::IncrByFloat(f64::MAX), Some("1.7e308")),
            Err(ModifyError::NotFinite)
        );
    }

    #[test]
    fn append_and_setrange_build_the_new_string() {
        assert_eq!(
            apply(Modify::Append("lo".into()), Some("hel")),
            Ok("hello".into())
        );
        assert_eq!(apply(Modify::Append("x".into()), None), Ok("x".into()));
        let set = |offset_bytes, s: &'static str| Modify::SetRange {
            offset_bytes,
            bytes: Bytes::from_static(s.as_bytes()),
        };
        assert_eq!(
            apply(set(6, "Redis"), Some("Hello World")),
            Ok("Hello Redis".into())
        );
        assert_eq!(apply(set(2, "ab"), None), Ok("\0\0ab".into()));
        assert_eq!(apply(set(1, "ab"), Some("xyz0")), Ok("xab0".into()));
        assert!(matches!(
            apply(set(STRING_LEN_MAX_BYTES, "a"), None),
            Err(ModifyError::TooLong { .. })
        ));
    }
}
