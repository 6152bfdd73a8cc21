//! Where a collection's elements are stored: one record per hash field or set
//! member, so writing one costs its own bytes (on disk, on the wire, in
//! repair), never the whole collection's. Field (or member) `f` of key `k` in
//! database `db` is the stored key `varint(len k) ++ k ++ f` in namespace
//! `db | FIELDS_BIT` (hashes) or `db | MEMBERS_BIT` (sets; the value is
//! empty); a list's element is the stored key `varint(len k) ++ k ++
//! position ++ tiebreak` in namespace `db | LIST_BITS`, so elements list in
//! order (see [`list_element`]). A sorted set's member is the stored key
//! `varint(len k) ++ k ++ m` in namespace `db | ZSET_MEMBERS_BITS` (its value
//! the score), and is indexed by `varint(len k) ++ k ++ score ++ m` in
//! namespace `db | ZSET_SCORES_BITS` (empty value; see [`score_element`]), so
//! members list in score order. The length prefix makes the elements of one key a contiguous,
//! unambiguous prefix range; the slot is `k`'s, so a collection lives on its
//! key's replicas and lists from one slot.
//!
//! Each element is an ordinary sibling set, so a field merges as a register,
//! a hash as an add-wins observed-remove map and a set as an add-wins
//! observed-remove set: HDEL, SREM and DEL write markers covering only the
//! versions they read.
//!
//! Must not touch: command names or replies (the front end's).

use crate::slot::key_slot;

/// The namespace bit that marks a namespace of hash fields.
pub const FIELDS_BIT: u8 = 0x80;
/// The namespace bit that marks a namespace of set members.
pub const MEMBERS_BIT: u8 = 0x40;
/// Both kind bits: a namespace of list elements.
pub const LIST_BITS: u8 = FIELDS_BIT | MEMBERS_BIT;
/// The kind bits of a namespace of sorted-set members (value: the score).
pub const ZSET_MEMBERS_BITS: u8 = 0x20;
/// The kind bits of a namespace of sorted-set score index entries.
pub const ZSET_SCORES_BITS: u8 = 0x30;
/// The kind bits of a namespace of collection deadlines: the stored key
/// `field_prefix(k)` holds, when collection `k` has a time to live, one byte
/// (its elements' kind bits) with that deadline as its sibling's
/// (see [`deadlines_namespace`]).
pub const DEADLINES_BITS: u8 = 0x10;
/// The bits a database number may use (below the kind bits): 16 databases.
const DATABASE_BITS: u8 = 0x0f;
/// The bits that say what a namespace holds (0: strings).
const KIND_BITS: u8 = !DATABASE_BITS;

/// The namespace holding the sorted-set members of database `db`.
pub fn zset_members_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | ZSET_MEMBERS_BITS
}

/// The namespace holding the sorted-set score index of database `db`.
pub fn zset_scores_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | ZSET_SCORES_BITS
}

/// A score index entry's name within its sorted set: the score encoded so
/// that byte order is numeric order (-0 as 0; NaN is never a score), then
/// the member, so entries list by score and then member, as Redis orders.
pub fn score_element(score: f64, member: &[u8]) -> Vec<u8> {
    assert!(!score.is_nan(), "a score is never NaN");
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    let sortable = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    let mut out = Vec::with_capacity(8 + member.len());
    out.extend_from_slice(&sortable.to_be_bytes());
    out.extend_from_slice(member);
    out
}

/// `(score, member)` of a score index entry's name ([`score_element`]).
pub fn split_score_element(name: &[u8]) -> Option<(f64, &[u8])> {
    let sortable = u64::from_be_bytes(name.get(..8)?.try_into().ok()?);
    let bits = if sortable >> 63 == 1 {
        sortable & !(1 << 63)
    } else {
        !sortable
    };
    Some((f64::from_bits(bits), &name[8..]))
}

/// The namespace holding the collection deadlines of database `db`: EXPIRE
/// of a hash, set, list or sorted set writes one record there, so its cost
/// does not grow with the collection. The record says which kind it covers;
/// it binds while a collection of that kind holds elements at the key
/// (`Store::collection_deadline_chores` deletes it once none does, and the
/// collection with it once the deadline passes).
pub fn deadlines_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | DEADLINES_BITS
}

/// Whether `namespace` holds collection deadlines.
pub fn is_deadlines_namespace(namespace: u8) -> bool {
    namespace & KIND_BITS == DEADLINES_BITS
}

/// The namespaces holding elements of the kind a deadline record names
/// (its value's first byte): a sorted set's members and its score index.
pub fn deadline_covers(deadlines_ns: u8, kind_bits: u8) -> Option<(u8, Option<u8>)> {
    let db = deadlines_ns & DATABASE_BITS;
    match kind_bits {
        FIELDS_BIT | MEMBERS_BIT | LIST_BITS => Some((db | kind_bits, None)),
        ZSET_MEMBERS_BITS => Some((db | kind_bits, Some(db | ZSET_SCORES_BITS))),
        _ => None,
    }
}

/// Whether a live stored key of `namespace` is, or is an element of, a key
/// clients see: a string, a hash, a set, a list or a sorted set (not a
/// score index entry nor a deadline record).
pub fn holds_keys_clients_see(namespace: u8) -> bool {
    matches!(
        namespace & KIND_BITS,
        0 | FIELDS_BIT | MEMBERS_BIT | LIST_BITS | ZSET_MEMBERS_BITS
    )
}

/// The kind bits of element namespace `namespace` (a deadline record's value).
pub fn kind_bits(namespace: u8) -> u8 {
    namespace & KIND_BITS
}

/// The namespace holding the list elements of database `db`.
pub fn lists_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | LIST_BITS
}

/// A list element's name within its list: its position (an i64, encoded so
/// that byte order is numeric order) then a tiebreak (unique per writer and
/// write), so two pushes that chose one position are two elements, in
/// tiebreak order.
pub fn list_element(position: i64, tiebreak: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&((position as u64) ^ (1 << 63)).to_be_bytes());
    out[8..].copy_from_slice(&tiebreak.to_be_bytes());
    out
}

/// The position of a list element's name ([`list_element`]).
pub fn list_position(element: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = element.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// The namespace holding the hash fields of database `db`.
pub fn fields_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | FIELDS_BIT
}

/// The namespace holding the set members of database `db`.
pub fn members_namespace(db: u8) -> u8 {
    assert!(db <= DATABASE_BITS, "database {db} is out of range");
    db | MEMBERS_BIT
}

/// Whether `namespace` holds collection elements (hash fields or set
/// members), whose stored keys are `field_key`s.
pub fn is_collection_namespace(namespace: u8) -> bool {
    namespace & KIND_BITS != 0
}

/// The database a namespace belongs to: itself, or its fields' database.
/// Pins and per-namespace quorums are a database's, for its fields too.
pub fn database_of(namespace: u8) -> u8 {
    namespace & DATABASE_BITS
}

/// Whether `namespace` holds hash fields.
pub fn is_fields_namespace(namespace: u8) -> bool {
    namespace & KIND_BITS == FIELDS_BIT
}

/// The stored-key prefix every field of `key` starts with.
pub fn field_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 5);
    let mut len = key.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(key);
    out
}

/// The stored key of `field` of `key`.
pub fn field_key(key: &[u8], field: &[u8]) -> Vec<u8> {
    let mut out = field_prefix(key);
    out.extend_from_slice(field);
    out
}

/// `(key, field)` of a stored field key; `None` when it is not one (a
/// truncated length or key).
pub fn split_field_key(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, byte) in stored.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return (end <= stored.len()).then(|| (&stored[start..end], &stored[end..]));
        }
    }
    None
}

/// The slot of a stored key of `namespace`: an element's is its key's.
pub fn stored_key_slot(namespace: u8, stored: &[u8]) -> u16 {
    if is_collection_namespace(namespace) {
        if let Some((key, _)) = split_field_key(stored) {
            return key_slot(key);
        }
    }
    key_slot(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_field_lives_in_its_keys_slot() {
        let stored = field_key(b"user:1000", b"name");
        assert_eq!(
            stored_key_slot(fields_namespace(0), &stored),
            key_slot(b"user:1000")
        );
        assert_eq!(stored_key_slot(0, b"user:1000"), key_slot(b"user:1000"));
        assert_eq!(fields_namespace(3), 0x83);
        assert_eq!(members_namespace(3), 0x43);
        assert_eq!(
            stored_key_slot(members_namespace(0), &stored),
            key_slot(b"user:1000")
        );
        assert!(!is_fields_namespace(15) && !is_collection_namespace(15));
        assert!(!is_fields_namespace(members_namespace(1)));
        assert_eq!(database_of(members_namespace(5)), 5);
        assert!(!is_fields_namespace(lists_namespace(2)));
        assert_eq!(database_of(lists_namespace(2)), 2);
    }

    #[test]
    fn list_elements_sort_by_position_then_tiebreak() {
        let names = [
            list_element(i64::MIN, 0),
            list_element(-5, 9),
            list_element(0, 1),
            list_element(0, 2),
            list_element(7, 0),
            list_element(i64::MAX, u64::MAX),
        ];
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(list_position(&names[1]), Some(-5));
        assert_eq!(list_position(&names[5]), Some(i64::MAX));
    }

    #[test]
    fn score_entries_sort_by_score_then_member() {
        let scores = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.0,
            1e-300,
            2.0,
            f64::INFINITY,
        ];
        let names: Vec<Vec<u8>> = scores.iter().map(|s| score_element(*s, b"m")).collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(names[3], names[4], "-0 and 0 are one score");
        assert!(score_element(1.0, b"a") < score_element(1.0, b"b"));
        for s in scores {
            let name = score_element(s, b"xy");
            let (back, member) = split_score_element(&name).unwrap();
            assert_eq!((back == s, member), (true, &b"xy"[..]));
        }
        assert_eq!(split_score_element(b"short"), None);
        assert_eq!(database_of(zset_scores_namespace(7)), 7);
        assert!(is_collection_namespace(zset_members_namespace(0)));
        assert!(!is_fields_namespace(zset_scores_namespace(0)));
    }

    #[test]
    fn a_long_key_takes_a_longer_length_prefix() {
        let key = vec![b'k'; 300];
        let stored = field_key(&key, b"f");
        assert_eq!(&stored[..2], &[0xac, 0x02]);
        assert_eq!(split_field_key(&stored), Some((&key[..], &b"f"[..])));
    }

    #[test]
    fn damaged_field_keys_are_refused() {
        assert_eq!(split_field_key(b""), None);
        assert_eq!(split_field_key(&[5, b'a']), None);
        assert_eq!(split_field_key(&[0x80; 11]), None);
    }

    proptest! {
        #[test]
        fn field_keys_round_trip_and_prefixes_never_collide(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            other in proptest::collection::vec(any::<u8>(), 0..200),
            field in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let stored = field_key(&key, &field);
            prop_assert_eq!(split_field_key(&stored), Some((&key[..], &field[..])));
            prop_assert!(stored.starts_with(&field_prefix(&key)));
            if other != key {
                prop_assert!(!stored.starts_with(&field_prefix(&other)));
            }
        }
    }
}
