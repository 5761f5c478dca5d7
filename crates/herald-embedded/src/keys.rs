//! Key types of the hot tables, ordered by one byte comparison.
//!
//! redb orders a `(Id, u64)` key by decoding the tuple and comparing the id's 16 bytes one `u8` key at a
//! time, then the number: under callgrind, those comparisons were 30 % of the instructions of a group
//! message's commit (one feed row per member, each insert a descent of the B-tree). [`IdSeq`] stores the
//! same pair as 24 bytes (the id, then the number big-endian), so the bytes sort as the pair does and one
//! `memcmp` orders two keys.

use crate::tables::Id;
use redb::{Key, TypeName, Value};
use std::cmp::Ordering;

/// `(id, number)`: a conversation's message by seq, a user's feed entry by position.
#[derive(Debug)]
pub struct IdSeq;

const WIDTH: usize = 24;

impl Value for IdSeq {
    type SelfType<'a> = (Id, u64);
    type AsBytes<'a> = [u8; WIDTH];

    fn fixed_width() -> Option<usize> {
        Some(WIDTH)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> (Id, u64)
    where
        Self: 'a,
    {
        // redb hands back only what `as_bytes` wrote, always 24 bytes; anything shorter reads as zeros
        // rather than panicking.
        let mut id = [0; 16];
        let mut seq = [0; 8];
        if let (Some(i), Some(s)) = (data.get(..16), data.get(16..WIDTH)) {
            id.copy_from_slice(i);
            seq.copy_from_slice(s);
        }
        (id, u64::from_be_bytes(seq))
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a (Id, u64)) -> [u8; WIDTH]
    where
        Self: 'b,
    {
        let mut out = [0; WIDTH];
        out[..16].copy_from_slice(&value.0);
        out[16..].copy_from_slice(&value.1.to_be_bytes());
        out
    }

    fn type_name() -> TypeName {
        TypeName::new("herald::IdSeq")
    }
}

impl Key for IdSeq {
    fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
        data1.cmp(data2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_sort_as_the_pairs_do() {
        let pairs = [
            ([0; 16], 0),
            ([0; 16], 1),
            ([0; 16], 255),
            ([0; 16], 256),
            ([0; 16], u64::MAX),
            ([1; 16], 0),
            ([0xff; 16], 7),
        ];
        for a in &pairs {
            assert_eq!(IdSeq::from_bytes(&IdSeq::as_bytes(a)), *a);
            for b in &pairs {
                assert_eq!(IdSeq::compare(&IdSeq::as_bytes(a), &IdSeq::as_bytes(b)), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }
}
