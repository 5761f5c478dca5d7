//! Feed rows are written behind: committed rows wait in memory and go into the feed table a user's batch at
//! a time (when enough wait, when the oldest is old enough, and all of them at every durable commit). Reads
//! must serve every row exactly once, in order, wherever it is at that moment, and a crash must lose none.

use herald_core::store::{FeedAppend, FeedEvent, MessageStore};
use herald_embedded::{EmbeddedDb, Options};
use herald_proto::{ConversationId, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const USERS: usize = 6;

/// No checkpoint by the timer: rows leave the buffer only by the batch rules and by explicit flushes.
fn options() -> Options {
    Options { checkpoint_interval: Duration::from_secs(3600), ..Options::default() }
}

/// What a crash at this moment leaves on disk: the database file (at its last durable commit), the journal
/// and the feed snapshot files.
fn crash_copy(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
        }
    }
    to
}

/// The feed snapshot files in a data directory.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("herald.feed."))
        .collect()
}

/// A small deterministic generator, so a failure replays the same way.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Checks a user's whole feed: positions 1..=count, in order, each one the event written there.
async fn assert_complete(messages: &dyn MessageStore, user: UserId, count: u64, conversation: ConversationId) {
    let mut after = 0;
    loop {
        let page = messages.feed(user, after, 7).await.expect("feed");
        assert_eq!(page.last, count, "newest position");
        assert_eq!(page.oldest, 1, "nothing pruned");
        for (pos, event) in &page.entries {
            assert_eq!(*pos, after + 1, "positions follow each other");
            assert_eq!(*event, FeedEvent::Message { conversation, seq: *pos }, "the row written at {pos}");
            after = *pos;
        }
        if page.entries.is_empty() {
            break;
        }
    }
    assert_eq!(after, count, "every row served");
}

#[tokio::test]
async fn every_row_is_served_once_in_order_wherever_it_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open_with(dir.path(), options()).expect("open");
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new()).collect();
    let conversation = ConversationId::new();
    let mut counts = [0u64; USERS];
    let mut rng = Lcg(7);

    // A reader racing the writer: every page it gets must be a run of consecutive positions starting
    // right after where it asked, and a user's newest position never goes back.
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (db, users, stop) = (db.clone(), users.clone(), stop.clone());
        tokio::spawn(async move {
            let mut newest = [0u64; USERS];
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (i, user) in users.iter().enumerate() {
                    let after = newest[i].saturating_sub(40);
                    let page = db.stores().messages.feed(*user, after, 64).await.expect("feed");
                    assert!(page.last >= newest[i], "user {i}: newest went back from {} to {}", newest[i], page.last);
                    newest[i] = page.last;
                    let positions: Vec<u64> = page.entries.iter().map(|(p, _)| *p).collect();
                    let want: Vec<u64> = (after + 1..=page.last.min(after + 64)).collect();
                    assert_eq!(positions, want, "user {i} after {after}");
                    reads += 1;
                }
                tokio::task::yield_now().await;
            }
            reads
        })
    };

    for round in 0..300 {
        // One commit: a few rows for some users (often more than a batch for one of them).
        let mut feed = Vec::new();
        for _ in 0..rng.below(50) + 1 {
            let i = rng.below(USERS as u64) as usize;
            counts[i] += 1;
            feed.push((i, counts[i]));
        }
        let appends: Vec<FeedAppend> = feed
            .iter()
            .map(|(i, pos)| FeedAppend { user: users[*i], event: FeedEvent::Message { conversation, seq: *pos } })
            .collect();
        let positions = db.stores().messages.commit_with_feed(&[], &appends).await.expect("commit");
        assert_eq!(positions, feed.iter().map(|(_, pos)| *pos).collect::<Vec<_>>(), "round {round}");
        match rng.below(20) {
            // A durable commit writes everything buffered.
            0 => db.flush().await.expect("flush"),
            1 => {
                let i = rng.below(USERS as u64) as usize;
                assert_complete(&*db.stores().messages, users[i], counts[i], conversation).await;
            }
            _ => {}
        }
        if round == 150 {
            // Old enough rows are flushed by age at the next commit.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(racer.await.expect("racer") > 0, "the racing reader read");
    for (i, user) in users.iter().enumerate() {
        assert_complete(&*db.stores().messages, *user, counts[i], conversation).await;
    }

    // A crash now finds part of the rows in the table and the rest only in the journal.
    let crashed = crash_copy(dir.path());
    let recovered = EmbeddedDb::open_with(crashed.path(), options()).expect("open the crash copy");
    for (i, user) in users.iter().enumerate() {
        assert_complete(&*recovered.stores().messages, *user, counts[i], conversation).await;
    }
    recovered.close().await.expect("close");

    // A clean stop writes the buffer into the table (no snapshot is left), and appends go on from the newest
    // position.
    db.close().await.expect("close");
    let left = snapshot_files(dir.path());
    assert!(left.is_empty(), "snapshots left after a clean stop: {left:?}");
    let db = EmbeddedDb::open_with(dir.path(), options()).expect("reopen");
    for (i, user) in users.iter().enumerate() {
        assert_complete(&*db.stores().messages, *user, counts[i], conversation).await;
    }
    let next = db
        .stores()
        .messages
        .commit_with_feed(&[], &[FeedAppend { user: users[0], event: FeedEvent::Message { conversation, seq: 0 } }])
        .await
        .expect("commit");
    assert_eq!(next, vec![counts[0] + 1]);
}

/// A durable commit empties the journal, so the rows of message commits in that same group commit must be in
/// the snapshot it names. Sending both at once usually lands them in one group.
#[tokio::test]
async fn rows_committed_with_a_checkpoint_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open_with(dir.path(), options()).expect("open");
    let (user, conversation) = (UserId::new(), ConversationId::new());
    for count in 1..=20u64 {
        let append = [FeedAppend { user, event: FeedEvent::Message { conversation, seq: count } }];
        let messages = db.stores().messages;
        let (positions, flushed) = tokio::join!(messages.commit_with_feed(&[], &append), db.flush());
        assert_eq!(positions.expect("commit"), vec![count]);
        flushed.expect("flush");
        let crashed = crash_copy(dir.path());
        let recovered = EmbeddedDb::open_with(crashed.path(), options()).expect("open the crash copy");
        assert_complete(&*recovered.stores().messages, user, count, conversation).await;
        recovered.close().await.expect("close");
    }
    // Without the snapshot its database names, opening refuses rather than serve a feed with holes.
    let crashed = crash_copy(dir.path());
    for name in snapshot_files(crashed.path()) {
        std::fs::remove_file(crashed.path().join(name)).expect("remove");
    }
    match EmbeddedDb::open_with(crashed.path(), options()) {
        Ok(_) => panic!("opened without the feed snapshot the database names"),
        Err(e) => assert!(e.to_string().contains("herald.feed."), "{e}"),
    }
}

/// A durable commit that also writes every buffered row into the table (here: all of them old enough) has
/// nothing left to put in a snapshot. If it wrote one anyway, a clean stop, finding the buffer empty, would
/// leave that file behind for the next start to replay.
#[tokio::test]
async fn a_checkpoint_that_flushes_every_row_names_no_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open_with(dir.path(), options()).expect("open");
    let (user, conversation) = (UserId::new(), ConversationId::new());
    for seq in 1..=3u64 {
        let append = [FeedAppend { user, event: FeedEvent::Message { conversation, seq } }];
        db.stores().messages.commit_with_feed(&[], &append).await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    db.flush().await.expect("flush");
    assert_eq!(snapshot_files(dir.path()), Vec::<String>::new(), "the rows are in the table: no snapshot needed");
    let crashed = crash_copy(dir.path());
    let recovered = EmbeddedDb::open_with(crashed.path(), options()).expect("open the crash copy");
    assert_complete(&*recovered.stores().messages, user, 3, conversation).await;
    recovered.close().await.expect("close");
    db.close().await.expect("close");
    assert_eq!(snapshot_files(dir.path()), Vec::<String>::new(), "nothing left after a clean stop");
}
