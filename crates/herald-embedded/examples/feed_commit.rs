//! What the writer spends on group messages: commits BATCHES batches of MESSAGES messages, each into one of 20
//! rooms of 50 members (one feed row per member), through `commit_with_feed`, one batch at a time, and
//! prints the time per batch and per feed row. Single-threaded and without a network, so it is repeatable
//! enough to compare changes to the write path (run it under `valgrind --tool=callgrind` for instruction
//! counts). Each batch is one group commit, so small batches measure the journal's fdatasync too.
//!
//! `cargo run --release -p herald-embedded --example feed_commit [BATCHES [MESSAGES]]`

use herald_core::conformance;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite};
use herald_embedded::{EmbeddedDb, Options};
use herald_proto::{ConversationId, DeviceId, UserId};
use std::time::Instant;

const ROOMS: usize = 20;
const MEMBERS: usize = 50;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batches: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(4000);
    let per_batch: usize = std::env::args().nth(2).map(|n| n.parse()).transpose()?.unwrap_or(1);
    let dir = tempfile::tempdir()?;
    let db = EmbeddedDb::open_with(dir.path(), Options::default())?;
    let stores = db.stores();
    let rooms: Vec<(ConversationId, Vec<UserId>)> =
        (0..ROOMS).map(|_| (ConversationId::new(), (0..MEMBERS).map(|_| UserId::new()).collect())).collect();
    let started = Instant::now();
    let mut sent = 0usize;
    for _ in 0..batches {
        let mut writes = Vec::with_capacity(per_batch);
        let mut feed = Vec::with_capacity(per_batch * MEMBERS);
        for _ in 0..per_batch {
            let (conversation, members) = &rooms[sent % ROOMS];
            let seq = (sent / ROOMS) as u64 + 1;
            writes.push(MessageWrite::Insert(conformance::message(*conversation, seq, members[0], DeviceId::new())));
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
        "{batches} batches of {per_batch} messages x {MEMBERS} feed rows: {:.1} µs per batch, {:.2} µs per feed row",
        elapsed.as_secs_f64() * 1e6 / batches as f64,
        elapsed.as_secs_f64() * 1e6 / (sent * MEMBERS) as f64
    );
    db.close().await?;
    Ok(())
}
