//! The synthetic users and conversations: ids shaped like Herald's own (UUIDv7: a millisecond timestamp, then
//! random bits), drawn from a seeded generator so every run places the same ids.

use herald_proto::{ConversationId, UserId};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use uuid::Builder;

/// 2026-01-01T00:00:00Z: the ids' clock starts here and ticks one millisecond per id, as if created over a
/// stretch of time. Only the bytes matter to the ring and to `partition_of`, which hash all sixteen.
const EPOCH_MS: u64 = 1_767_225_600_000;

/// `count` ids from `seed`: UUIDv7 with the version and variant bits set, the rest of the random part random.
fn uuids(seed: u64, count: usize) -> impl Iterator<Item = uuid::Uuid> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count as u64).map(move |i| {
        let mut random = [0u8; 10];
        rng.fill_bytes(&mut random);
        Builder::from_unix_timestamp_millis(EPOCH_MS + i, &random).into_uuid()
    })
}

/// The users: one seed stream.
pub fn users(seed: u64, count: usize) -> Vec<UserId> {
    uuids(seed, count).map(UserId).collect()
}

/// The conversations, from a stream of their own so the users' count does not change them.
pub fn conversations(seed: u64, count: usize) -> Vec<ConversationId> {
    uuids(seed ^ 0xC0_4E_E5_A7, count).map(ConversationId).collect()
}

/// Each conversation's share of all sends under a Zipf law: the conversation of rank `k` (1-based, in the
/// order the ids were drawn, so a random one) sends in proportion to `1 / k^exponent`. Exponent 0 is an even
/// load. These are the expected shares, so the figures carry no sampling noise from the load itself.
pub fn zipf_shares(count: usize, exponent: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=count).map(|rank| (rank as f64).powf(-exponent)).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}
