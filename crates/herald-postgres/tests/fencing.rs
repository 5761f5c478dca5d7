//! Two writers that both believe they own one conversation (two nodes during a rebalance, or a paused node
//! waking up) never store two messages under one seq, never skip a seq, and never store a send twice: the
//! conditional write lets one of them win each seq and tells the other, which re-reads and goes on.

use herald_core::conformance;
use herald_core::store::{MessageWrite, StoreError};
use herald_postgres::PostgresDb;
use herald_postgres::testing::TestDatabase;
use herald_proto::{ConversationId, DeviceId, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Sends each writer stores (or learns were stored by the other).
const SENDS: usize = 200;

/// One writer: for each of its sends, reads the last seq, commits at last + 1, and on a refusal re-reads and
/// tries again (as the sequencer does after a refused batch). Returns (client_msg_id, seq) of what it stored.
async fn writer(
    db: Arc<PostgresDb>,
    name: &'static str,
    conversation: ConversationId,
    sender: UserId,
) -> Vec<(String, u64)> {
    let stores = db.stores();
    let mut stored = Vec::new();
    let mut refusals = 0;
    for i in 0..SENDS {
        let client_msg_id = format!("{name}-{i}");
        loop {
            let last = stores.messages.last_seq(conversation).await.expect("last_seq");
            let mut message = conformance::message(conversation, last + 1, sender, DeviceId::new());
            message.client_msg_id = client_msg_id.clone();
            match stores.messages.commit(&[MessageWrite::Insert(message)]).await {
                Ok(()) => {
                    stored.push((client_msg_id, last + 1));
                    break;
                }
                Err(StoreError::Conflict(_)) => refusals += 1,
                Err(e) => panic!("{name}: a commit failed with something else than a conflict: {e}"),
            }
        }
    }
    eprintln!("{name}: stored {SENDS} messages after {refusals} refusals");
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_conversation_never_fork_it() {
    let database = TestDatabase::create().await;
    // Two nodes: separate pools and separate group committers.
    let a = PostgresDb::open(&database.settings()).await.expect("open node a");
    let b = PostgresDb::open(&database.settings()).await.expect("open node b");
    let conversation = ConversationId::new();
    let sender = UserId::new();

    let (from_a, from_b) = tokio::join!(
        tokio::spawn(writer(a.clone(), "a", conversation, sender)),
        tokio::spawn(writer(b.clone(), "b", conversation, sender)),
    );
    let (from_a, from_b) = (from_a.expect("writer a"), from_b.expect("writer b"));

    let history = a
        .stores()
        .messages
        .history(conversation, 1, herald_proto::Direction::Forward, 10 * SENDS)
        .await
        .expect("history");
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=(2 * SENDS) as u64).collect::<Vec<_>>(), "the seqs must be 1..=N, each once, no gap");
    let by_seq: BTreeMap<u64, &str> = history.iter().map(|m| (m.seq, m.client_msg_id.as_str())).collect();
    for (client_msg_id, seq) in from_a.iter().chain(&from_b) {
        assert_eq!(
            by_seq.get(seq).copied(),
            Some(client_msg_id.as_str()),
            "a writer was told seq {seq} was its message {client_msg_id}, but another is stored there"
        );
    }
    let keys: BTreeSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(keys.len(), 2 * SENDS, "every send is stored exactly once");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_of_a_conversation_is_refused() {
    let database = TestDatabase::create().await;
    let a = PostgresDb::open(&database.settings()).await.expect("open node a");
    let b = PostgresDb::open(&database.settings()).await.expect("open node b");
    let conversation = ConversationId::new();
    let (sender, device) = (UserId::new(), DeviceId::new());
    // Both believe the conversation is empty and store their seq 1 at the same moment, many times over.
    for round in 0..20 {
        let conversation = if round == 0 { conversation } else { ConversationId::new() };
        let mut first = conformance::message(conversation, 1, sender, device);
        first.client_msg_id = "first-a".into();
        let mut second = conformance::message(conversation, 1, sender, device);
        second.client_msg_id = "first-b".into();
        let (on_a, on_b) = (a.stores(), b.stores());
        let (first, second) = ([MessageWrite::Insert(first)], [MessageWrite::Insert(second)]);
        let (ra, rb) = tokio::join!(on_a.messages.commit(&first), on_b.messages.commit(&second));
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: exactly one of two first messages must win: {ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert!(matches!(loser, Err(StoreError::Conflict(_))), "the loser must get a conflict: {loser:?}");
        assert_eq!(a.stores().messages.last_seq(conversation).await.expect("last_seq"), 1);
    }
    a.close().await;
    b.close().await;
}

/// Reactions one writer adds to the message, each by a user of its own: read the stored version, add, commit the
/// new version made from it; on a refusal read again and redo (as the sequencer's senders retry).
async fn reactor(db: Arc<PostgresDb>, conversation: ConversationId, reactions: Vec<UserId>) -> usize {
    let stores = db.stores();
    let mut refusals = 0;
    for user in reactions {
        loop {
            let base = stores.messages.message(conversation, 1).await.expect("read").expect("the message");
            let mut message = base.clone();
            message.reactions.entry("👍".into()).or_default().insert(user);
            match stores.messages.commit(&[MessageWrite::update(message, base)]).await {
                Ok(()) => break,
                Err(StoreError::Conflict(_)) => refusals += 1,
                Err(e) => panic!("a reaction failed with something else than a conflict: {e}"),
            }
        }
    }
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_made_from_a_version_another_writer_changed_is_refused() {
    let database = TestDatabase::create().await;
    let a = PostgresDb::open(&database.settings()).await.expect("open node a");
    let b = PostgresDb::open(&database.settings()).await.expect("open node b");
    let (on_a, on_b) = (a.stores(), b.stores());
    let conversation = ConversationId::new();
    let (sender, device) = (UserId::new(), DeviceId::new());
    let original = conformance::message(conversation, 1, sender, device);
    on_a.messages.commit(&[MessageWrite::Insert(original.clone())]).await.expect("insert");

    // A reacts; B, still holding the original, edits it: B's version would drop A's reaction, so it is refused.
    let mut reacted = original.clone();
    reacted.reactions.entry("👍".into()).or_default().insert(UserId::new());
    on_a.messages.commit(&[MessageWrite::update(reacted.clone(), original.clone())]).await.expect("A's reaction");
    let mut stale_edit = original.clone();
    stale_edit.body = "edited from a stale copy".into();
    let refused = on_b.messages.commit(&[MessageWrite::update(stale_edit, original.clone())]).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "a stale update must be refused: {refused:?}");
    assert_eq!(on_b.messages.message(conversation, 1).await.expect("read"), Some(reacted.clone()), "A's reaction kept");

    // A deletes; B's edit made before the deletion must not bring the body back.
    let mut tombstone = reacted.clone();
    tombstone.deleted = true;
    tombstone.body.clear();
    tombstone.reactions.clear();
    on_a.messages.commit(&[MessageWrite::update(tombstone.clone(), reacted.clone())]).await.expect("A's deletion");
    let mut late_edit = reacted.clone();
    late_edit.body = "resurrected".into();
    let refused = on_b.messages.commit(&[MessageWrite::update(late_edit, reacted)]).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "an edit of a deleted message's old version: {refused:?}");
    assert_eq!(on_a.messages.message(conversation, 1).await.expect("read"), Some(tombstone), "the deletion holds");

    // Four writers, two per node, react to one message at once: every reaction is kept.
    let conversation = ConversationId::new();
    on_a.messages
        .commit(&[MessageWrite::Insert(conformance::message(conversation, 1, sender, device))])
        .await
        .expect("insert");
    let users: Vec<UserId> = (0..120).map(|_| UserId::new()).collect();
    let writers: Vec<_> = users
        .chunks(30)
        .enumerate()
        .map(|(i, chunk)| {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(reactor(db, conversation, chunk.to_vec()))
        })
        .collect();
    let mut refusals = 0;
    for w in writers {
        refusals += w.await.expect("a writer");
    }
    let stored = on_a.messages.message(conversation, 1).await.expect("read").expect("the message");
    let reacted: BTreeSet<UserId> = stored.reactions.get("👍").cloned().unwrap_or_default().into_iter().collect();
    assert_eq!(reacted, users.iter().copied().collect(), "every writer's reactions are kept");
    eprintln!("120 reactions from 4 writers on two nodes: {refusals} refused and redone");
    a.close().await;
    b.close().await;
}
