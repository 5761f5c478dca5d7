//! The feed keeps the newest `feed_retention` entries per user, and reports the oldest it can answer for
//! without a hole, also when the window was lowered on existing data.

use herald_core::store::{FeedAppend, FeedEvent};
use herald_embedded::{EmbeddedDb, Options};
use herald_proto::{ConversationId, UserId};

#[tokio::test]
async fn retention_window_and_a_lowered_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = UserId::new();
    let conversation = ConversationId::new();
    let append = |n: u64| {
        (0..n).map(|seq| FeedAppend { user, event: FeedEvent::Message { conversation, seq } }).collect::<Vec<_>>()
    };
    {
        let db =
            EmbeddedDb::open_with(dir.path(), Options { feed_retention: 1000, ..Options::default() }).expect("open");
        let positions = db.stores().messages.commit_with_feed(&[], &append(150)).await.expect("commit");
        assert_eq!(positions, (1..=150).collect::<Vec<_>>(), "dense positions from 1");
        let page = db.stores().messages.feed(user, 0, 10).await.expect("feed");
        assert_eq!((page.oldest, page.last, page.entries.len()), (1, 150, 10));
        db.close().await.expect("close");
    }
    let db = EmbeddedDb::open_with(dir.path(), Options { feed_retention: 100, ..Options::default() }).expect("reopen");
    let page = db.stores().messages.feed(user, 10, 5).await.expect("feed");
    assert_eq!((page.oldest, page.last), (51, 150), "only the newest 100 count after lowering the window");
    assert_eq!(page.entries.first().map(|e| e.0), Some(51), "no entry from before the window is served");
    // Appending keeps the window moving.
    db.stores().messages.commit_with_feed(&[], &append(20)).await.expect("commit");
    let page = db.stores().messages.feed(user, 0, 1).await.expect("feed");
    assert_eq!((page.oldest, page.last), (71, 170));
}
