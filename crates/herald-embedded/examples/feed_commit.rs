//! What the writer spends on messages: commits BATCHES batches of MESSAGES messages, round-robin over ROOMS
//! conversations of MEMBERS members (one feed row per member), through `commit_with_feed`, one batch at a
//! time, and prints the time per batch and per feed row. Single-threaded and without a network, so it is
//! repeatable enough to compare changes to the write path (run it under `valgrind --tool=callgrind` for
//! instruction counts). Each batch is one group commit, so small batches measure the journal's fdatasync too.
//! Every message gets a time-ordered `client_msg_id` (as the SDK makes them), so its idempotency key is
//! written as in the server.
//!
//! `cargo run --release -p herald-embedded --example feed_commit [BATCHES [MESSAGES [ROOMS [MEMBERS]]]]`
//! (defaults 4000 1 20 50: group messages; `200 400 32 2` is the shape of `herald bench sends`).

use herald_core::conformance;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite};
use herald_embedded::{EmbeddedDb, Options};
use herald_proto::{ConversationId, DeviceId, UserId};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: usize| -> Result<usize, std::num::ParseIntError> {
        std::env::args().nth(n).map_or(Ok(default), |v| v.parse())
    };
    let (batches, per_batch, rooms, members) = (arg(1, 4000)?, arg(2, 1)?, arg(3, 20)?.max(1), arg(4, 50)?.max(1));
    let dir = tempfile::tempdir()?;
    let db = EmbeddedDb::open_with(dir.path(), Options::default())?;
    let stores = db.stores();
    let rooms: Vec<(ConversationId, Vec<UserId>)> =
        (0..rooms).map(|_| (ConversationId::new(), (0..members).map(|_| UserId::new()).collect())).collect();
    let started = Instant::now();
    let mut sent = 0usize;
    for _ in 0..batches {
        let mut writes = Vec::with_capacity(per_batch);
        let mut feed = Vec::with_capacity(per_batch * members);
        for _ in 0..per_batch {
            let (conversation, members) = &rooms[sent % rooms.len()];
            let seq = (sent / rooms.len()) as u64 + 1;
            let sender = members[sent / rooms.len() % members.len()];
            let mut message = conformance::message(*conversation, seq, sender, DeviceId::new());
            message.client_msg_id = uuid::Uuid::now_v7().to_string();
            writes.push(MessageWrite::Insert(message));
            feed.extend(members.iter().map(|user| FeedAppend {
                user: *user,
                event: FeedEvent::Message { conversation: *conversation, seq },
            }));
            sent += 1;
        }
        stores.messages.commit_with_feed(&writes, &feed).await?;
    }
    let elapsed = started.elapsed();
    println!(
        "{batches} batches of {per_batch} messages x {members} feed rows: {:.1} µs per batch, {:.2} µs per message, \
         {:.2} µs per feed row",
        elapsed.as_secs_f64() * 1e6 / batches as f64,
        elapsed.as_secs_f64() * 1e6 / sent as f64,
        elapsed.as_secs_f64() * 1e6 / (sent * members) as f64
    );
    db.close().await?;
    Ok(())
}
