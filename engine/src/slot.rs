//! Key slots, as Redis Cluster computes them: CRC16 (XMODEM) of the key, or of the
//! part inside the first non-empty `{...}` hash tag, modulo 16384.

pub const SLOT_COUNT: u16 = 16384;

/// CRC16-XMODEM of every byte value, computed at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, byte| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ byte) as usize]
    })
}

/// The part of the key that is hashed: the first non-empty `{tag}`, else all of it.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = first_open_brace(key) {
        if let Some(close_rel) = key[open + 1..].iter().position(|b| *b == b'}') {
            if close_rel > 0 {
                return &key[open + 1..open + 1 + close_rel];
            }
        }
    }
    key
}

/// Where the first `{` of `key` is. Every command's keys pass here (the key
/// directory is kept by slot), and most keys have no tag: `memchr` tests
/// many bytes at a time (a byte-at-a-time search was a third of a GET's slot).
fn first_open_brace(key: &[u8]) -> Option<usize> {
    memchr::memchr(b'{', key)
}

pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }

    proptest::proptest! {
        #[test]
        fn the_first_brace_is_found_as_a_byte_search_finds_it(
            key in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(b'{'), 0x7au8..=0x7c, proptest::num::u8::ANY],
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(first_open_brace(&key), key.iter().position(|b| *b == b'{'));
        }
    }
}
