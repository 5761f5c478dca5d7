//! Per-user feeds in a cluster: the owners of different partitions, on different nodes, write into one user's
//! feed at the same time. Positions must stay what the protocol promises a device resuming on any node: dense
//! (no position given twice, none left out), each event once, and visible in order, so that a reader who has
//! seen position N never later finds a new entry below N.

use herald_core::conformance;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite};
use herald_postgres::PostgresDb;
use herald_postgres::testing::TestDatabase;
use herald_proto::{ConversationId, DeviceId, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Members shared by every conversation: each of their feeds gets entries from both nodes.
const USERS: usize = 4;
/// Conversations per node (each node owns its own, as the owners of different partitions do).
const CONVERSATIONS_PER_NODE: usize = 3;
/// Messages per conversation.
const SENDS: u64 = 60;

/// One partition owner: sends into each of its conversations in turn, each message committed with a feed entry
/// for every member, several commits in flight at once (so the node's group committer merges them).
async fn owner(db: Arc<PostgresDb>, conversations: Vec<ConversationId>, users: Vec<UserId>) {
    let sender = users[0];
    let mut commits = tokio::task::JoinSet::new();
    for &conversation in &conversations {
        let (db, users) = (db.clone(), users.clone());
        commits.spawn(async move {
            let stores = db.stores();
            for seq in 1..=SENDS {
                let message = conformance::message(conversation, seq, sender, DeviceId::new());
                let feed: Vec<FeedAppend> = users
                    .iter()
                    .map(|&user| FeedAppend { user, event: FeedEvent::Message { conversation, seq } })
                    .collect();
                let positions = stores
                    .messages
                    .commit_with_feed(&[MessageWrite::Insert(message)], &feed)
                    .await
                    .expect("an owner's commit into its own conversation succeeds");
                assert_eq!(positions.len(), users.len(), "one position per feed entry");
            }
        });
    }
    while let Some(done) = commits.join_next().await {
        done.expect("a conversation's sends");
    }
}

/// A device that keeps resuming from where it is, as a client reconnecting to any node does: every page must
/// start right after what it has and go on without a hole. Returns how many pages it read.
async fn reader(db: Arc<PostgresDb>, user: UserId, writing: Arc<AtomicBool>) -> usize {
    let stores = db.stores();
    let (mut at, mut pages) = (0, 0);
    loop {
        let done = !writing.load(Ordering::Acquire);
        let page = stores.messages.feed(user, at, 50).await.expect("feed");
        pages += 1;
        for (position, _) in &page.entries {
            assert_eq!(
                *position,
                at + 1,
                "user {user:?} saw position {position} right after {at}: a later entry became visible before \
                 an earlier one, so a device resuming at {position} would skip {}",
                at + 1
            );
            at = *position;
        }
        if done && page.entries.is_empty() {
            return pages;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_on_two_nodes_writing_into_shared_feeds_never_give_a_position_twice_or_leave_one_out() {
    let database = TestDatabase::create().await;
    // Two nodes: separate pools and separate group committers, one database.
    let a = PostgresDb::open(&database.settings()).await.expect("open node a");
    let b = PostgresDb::open(&database.settings()).await.expect("open node b");
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new()).collect();
    let on_a: Vec<ConversationId> = (0..CONVERSATIONS_PER_NODE).map(|_| ConversationId::new()).collect();
    let on_b: Vec<ConversationId> = (0..CONVERSATIONS_PER_NODE).map(|_| ConversationId::new()).collect();

    // Devices resume through both nodes while the owners write.
    let writing = Arc::new(AtomicBool::new(true));
    let readers: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, &user)| {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(reader(db, user, writing.clone()))
        })
        .collect();
    let (wa, wb) = tokio::join!(
        tokio::spawn(owner(a.clone(), on_a.clone(), users.clone())),
        tokio::spawn(owner(b.clone(), on_b.clone(), users.clone())),
    );
    wa.expect("owner on a");
    wb.expect("owner on b");
    writing.store(false, Ordering::Release);
    for r in readers {
        let pages = r.await.expect("a reader saw a hole");
        assert!(pages > 1, "the readers must have read while the owners wrote");
    }

    // Every feed: positions 1..=last with last = every message of every conversation, each message once, and
    // each conversation's messages in seq order.
    let every: BTreeSet<(ConversationId, u64)> =
        on_a.iter().chain(&on_b).flat_map(|&c| (1..=SENDS).map(move |seq| (c, seq))).collect();
    for &user in &users {
        let page = a.stores().messages.feed(user, 0, 100_000).await.expect("feed");
        let positions: Vec<u64> = page.entries.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (1..=every.len() as u64).collect::<Vec<_>>(), "user {user:?}: dense positions");
        assert_eq!(page.last, every.len() as u64, "user {user:?}: the head is the last position");
        let mut last_seq: BTreeMap<ConversationId, u64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (position, event) in &page.entries {
            let FeedEvent::Message { conversation, seq } = *event else { panic!("unexpected event {event:?}") };
            assert!(seen.insert((conversation, seq)), "user {user:?}: ({conversation:?}, {seq}) twice");
            let previous = last_seq.insert(conversation, seq).unwrap_or(0);
            assert_eq!(seq, previous + 1, "user {user:?}, position {position}: a conversation out of order");
        }
        assert_eq!(seen, every, "user {user:?}: every message is in the feed");
    }
    a.close().await;
    b.close().await;
}
