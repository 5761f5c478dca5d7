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

/// Each key type here stores its value so that the bytes sort as the value does: one `memcmp` orders two.
macro_rules! byte_ordered {
    ($($key:ty),*) => {$(
        impl Key for $key {
            fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
                data1.cmp(data2)
            }
        }
    )*};
}

byte_ordered!(IdSeq, IdKey, IdPair, IdPairStr, IdempotencyKey);

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

/// A lone id (a device), ordered by `memcmp` instead of redb's array order (which compares the 16 bytes as
/// 16 `u8` keys, one call each: a device is looked up on every authenticated request).
#[derive(Debug)]
pub struct IdKey;

impl Value for IdKey {
    type SelfType<'a> = Id;
    type AsBytes<'a> = &'a Id;

    fn fixed_width() -> Option<usize> {
        Some(16)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> Id
    where
        Self: 'a,
    {
        id_at(data, 0)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a Id) -> &'a Id
    where
        Self: 'b,
    {
        value
    }

    fn type_name() -> TypeName {
        TypeName::new("herald::IdKey")
    }
}

/// Two ids (conversation, sender), 32 bytes in a row: the bytes sort as the pair does.
#[derive(Debug)]
pub struct IdPair;

impl Value for IdPair {
    type SelfType<'a> = (Id, Id);
    type AsBytes<'a> = [u8; 32];

    fn fixed_width() -> Option<usize> {
        Some(32)
    }

    fn from_bytes<'a>(data: &'a [u8]) -> (Id, Id)
    where
        Self: 'a,
    {
        (id_at(data, 0), id_at(data, 16))
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a (Id, Id)) -> [u8; 32]
    where
        Self: 'b,
    {
        let mut out = [0; 32];
        out[..16].copy_from_slice(&value.0);
        out[16..].copy_from_slice(&value.1);
        out
    }

    fn type_name() -> TypeName {
        TypeName::new("herald::IdPair")
    }
}

/// Two ids and a string (conversation, sender, client_msg_id): the ids' 32 bytes, then the string's. The
/// ids have a fixed width, so the bytes sort as the triple does (a string before its extensions). The key of the
/// retired `client_ids_v2`, read only by `migrate` (see [`IdempotencyKey`]).
#[derive(Debug)]
pub struct IdPairStr;

/// An idempotency key (conversation, sender, client_msg_id), stored client_msg_id first: the string's bytes,
/// then the two ids' 32. The ids have a fixed width, so no two keys share their bytes; the order is the bytes'
/// and not the triple's, which nothing needs (keys are only looked up whole). Why the string first: clients
/// make time-ordered ids (UUIDv7, as the SDK and the web client do), so the keys a group commit writes, from
/// every conversation and sender, sort next to each other at the tree's right edge: a few leaves are copied
/// and split per commit instead of one per (conversation, sender).
#[derive(Debug)]
pub struct IdempotencyKey;

/// Where the string of a (conversation, sender, client_msg_id) key goes: after the ids or before them.
#[derive(Clone, Copy)]
enum Layout {
    IdsFirst,
    TextFirst,
}

/// The `Value` of a key type holding (conversation, sender, client_msg_id) in one of the two layouts.
macro_rules! id_pair_and_str {
    ($key:ty, $layout:expr, $name:literal) => {
        impl Value for $key {
            type SelfType<'a> = (Id, Id, &'a str);
            type AsBytes<'a> = Vec<u8>;

            fn fixed_width() -> Option<usize> {
                None
            }

            fn from_bytes<'a>(data: &'a [u8]) -> (Id, Id, &'a str)
            where
                Self: 'a,
            {
                triple_from_bytes(data, $layout)
            }

            fn as_bytes<'a, 'b: 'a>(value: &'a (Id, Id, &'b str)) -> Vec<u8>
            where
                Self: 'b,
            {
                triple_as_bytes(value, $layout)
            }

            fn type_name() -> TypeName {
                TypeName::new($name)
            }
        }
    };
}

id_pair_and_str!(IdPairStr, Layout::IdsFirst, "herald::IdPairStr");
id_pair_and_str!(IdempotencyKey, Layout::TextFirst, "herald::IdempotencyKey");

fn triple_from_bytes(data: &[u8], layout: Layout) -> (Id, Id, &str) {
    let (ids, text) = match layout {
        Layout::IdsFirst => (0, data.get(32..)),
        Layout::TextFirst => {
            let ids = data.len().saturating_sub(32);
            (ids, data.get(..ids))
        }
    };
    // Only `as_bytes` output is stored, so the string is valid UTF-8; anything else reads as empty.
    let text = text.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
    (id_at(data, ids), id_at(data, ids + 16), text)
}

fn triple_as_bytes(value: &(Id, Id, &str), layout: Layout) -> Vec<u8> {
    let text = value.2.as_bytes();
    let mut out = Vec::with_capacity(32 + text.len());
    if let Layout::TextFirst = layout {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(&value.0);
    out.extend_from_slice(&value.1);
    if let Layout::IdsFirst = layout {
        out.extend_from_slice(text);
    }
    out
}

/// The id at `at` in a stored key (zeros if the key is too short, which redb never hands back).
fn id_at(data: &[u8], at: usize) -> Id {
    let mut id = [0; 16];
    if let Some(bytes) = data.get(at..at + 16) {
        id.copy_from_slice(bytes);
    }
    id
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

    #[test]
    fn id_keys_sort_as_their_values_do() {
        let ids: [Id; 4] = [[0; 16], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [1; 16], [0xff; 16]];
        let texts = ["", "a", "ab", "b", "é"];
        let mut triples = Vec::new();
        for a in &ids {
            assert_eq!(IdKey::from_bytes(IdKey::as_bytes(a)), *a);
            for b in &ids {
                assert_eq!(IdKey::compare(IdKey::as_bytes(a), IdKey::as_bytes(b)), a.cmp(b));
                assert_eq!(IdPair::from_bytes(&IdPair::as_bytes(&(*a, *b))), (*a, *b));
                for t in texts {
                    triples.push((*a, *b, t));
                }
            }
        }
        for x in &triples {
            assert_eq!(IdPairStr::from_bytes(&IdPairStr::as_bytes(x)), *x);
            assert_eq!(IdempotencyKey::from_bytes(&IdempotencyKey::as_bytes(x)), *x);
            for y in &triples {
                let (bx, by) = (IdPairStr::as_bytes(x), IdPairStr::as_bytes(y));
                assert_eq!(IdPairStr::compare(&bx, &by), x.cmp(y), "{x:?} vs {y:?}");
                // Keys are only looked up whole: no two triples may share their bytes.
                let (ix, iy) = (IdempotencyKey::as_bytes(x), IdempotencyKey::as_bytes(y));
                assert_eq!(IdempotencyKey::compare(&ix, &iy) == Ordering::Equal, x == y, "{x:?} vs {y:?}");
                let (px, py) = (IdPair::as_bytes(&(x.0, x.1)), IdPair::as_bytes(&(y.0, y.1)));
                assert_eq!(IdPair::compare(&px, &py), (x.0, x.1).cmp(&(y.0, y.1)));
            }
        }
    }

    #[test]
    fn idempotency_keys_sort_by_client_msg_id_first() {
        // Time-ordered ids (UUIDv7, as the SDK makes them) of any conversation and sender sort by time, so a
        // commit's keys go next to each other.
        let earlier = "01938c2e-7a00-7000-8000-000000000001";
        let later = "01938c2e-7a01-7000-8000-000000000000";
        let key = |conversation: u8, sender: u8, id| IdempotencyKey::as_bytes(&([conversation; 16], [sender; 16], id));
        assert_eq!(IdempotencyKey::compare(&key(0xff, 0xff, earlier), &key(0, 0, later)), Ordering::Less);
        assert_eq!(IdempotencyKey::compare(&key(0, 1, earlier), &key(0, 2, earlier)), Ordering::Less);
    }
}
