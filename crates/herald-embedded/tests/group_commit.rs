//! The writer remembers each user's newest feed position between commits (so an append skips a B-tree
//! lookup). A group commit that fails must not leave positions behind that were never written: when a
//! bad batch shares a group with a good one, both are refused, and the next append continues right after
//! what is stored, without a gap.

use herald_core::conformance;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite, Stores};
use herald_embedded::EmbeddedDb;
use herald_proto::{ConversationId, DeviceId, Message, UserId};

fn message(conversation: ConversationId, sender: UserId, seq: u64) -> Message {
    conformance::message(conversation, seq, sender, DeviceId::new())
}

fn entry(user: UserId, conversation: ConversationId, seq: u64) -> FeedAppend {
    FeedAppend { user, event: FeedEvent::Message { conversation, seq } }
}

async fn feed_positions(stores: &Stores, user: UserId) -> Vec<u64> {
    stores.messages.feed(user, 0, 10_000).await.expect("feed").entries.iter().map(|(pos, _)| *pos).collect()
}

#[tokio::test]
async fn a_failed_group_leaves_no_remembered_position_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("open");
    let stores = db.stores();
    let user = UserId::new();
    let (good_conversation, bad_conversation) = (ConversationId::new(), ConversationId::new());
    let first = message(bad_conversation, user, 1);
    stores.messages.commit_with_feed(&[MessageWrite::Insert(first.clone())], &[]).await.expect("first message");

    let mut good_seq = 0;
    let mut refused_together = 0;
    for round in 0..20 {
        // A big batch keeps the writer busy, so the next two queue behind it and usually form one group.
        let busy: Vec<FeedAppend> = (0..2000).map(|n| entry(UserId::new(), good_conversation, n)).collect();
        good_seq += 1;
        let good_writes = [MessageWrite::Insert(message(good_conversation, user, good_seq))];
        let good_feed = [entry(user, good_conversation, good_seq)];
        // Inserting seq 1 of `bad_conversation` again breaks the single-writer rule: the whole group fails.
        let bad_writes = [MessageWrite::Insert(first.clone())];
        let (staller, good, bad) = tokio::join!(
            stores.messages.commit_with_feed(&[], &busy),
            stores.messages.commit_with_feed(&good_writes, &good_feed),
            stores.messages.commit_with_feed(&bad_writes, &[]),
        );
        // The staller may share the failed group too; its rows belong to other users either way.
        drop(staller);
        assert!(bad.is_err(), "round {round}: a reused seq was accepted");
        if good.is_err() {
            // It shared the failed group: nothing of it was written, so its seq is free again.
            refused_together += 1;
            good_seq -= 1;
        }
        let positions = feed_positions(&stores, user).await;
        assert_eq!(positions, (1..=good_seq).collect::<Vec<_>>(), "round {round}: the user's feed has a gap");
        // The next append lands right after what is stored.
        good_seq += 1;
        let appended = stores
            .messages
            .commit_with_feed(
                &[MessageWrite::Insert(message(good_conversation, user, good_seq))],
                &[entry(user, good_conversation, good_seq)],
            )
            .await
            .expect("append after the failed group");
        assert_eq!(appended, vec![good_seq], "round {round}: a position was skipped");
    }
    assert!(refused_together > 0, "no round put the good and the bad batch in one group; the test proved nothing");
    db.close().await.expect("close");
}
