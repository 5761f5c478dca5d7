//! The store conformance suite against the embedded (redb) backend, and durability across a reopen.

use herald_core::conformance;
use herald_core::now_millis;
use herald_core::store::{MessageWrite, StoreError, User};
use herald_embedded::EmbeddedDb;
use herald_proto::{
    Conversation, ConversationId, ConversationKind, DeviceId, Direction, Member, Message, MessageId, Role, UserId,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open(dir: &Path) -> Arc<EmbeddedDb> {
    EmbeddedDb::open(dir).expect("open the embedded database")
}

/// Opens `dir` again once the previous instance's writer thread has let the file go.
fn reopen(dir: &Path) -> Arc<EmbeddedDb> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match EmbeddedDb::open(dir) {
            Ok(db) => return db,
            // The writer thread of the dropped instance may still hold the file for a moment.
            Err(StoreError::Backend(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reopening the embedded database failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    conformance::run_all(db.stores()).await;
    // Again on the same, no longer empty, database: the suite must not assume an empty store.
    conformance::run_all(db.stores()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trait_conforms_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let stores = db.stores();
    conformance::cursors(&stores).await;
    conformance::threads(&stores).await;
    conformance::search(&stores).await;
    conformance::messages(&stores).await;
    conformance::conversations(&stores).await;
    conformance::users(&stores).await;
    conformance::media(&stores).await;
    conformance::reports(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = User {
        id: UserId::new(),
        username: format!("durable-{}", UserId::new()),
        password_hash: "hash".into(),
        created_at: now_millis(),
        suspension: None,
        deleted_at: None,
    };
    let conversation = Conversation {
        id: ConversationId::new(),
        kind: ConversationKind::Group,
        title: Some("durable".into()),
        created_by: user.id,
        created_at: now_millis(),
    };
    let member = Member { user_id: user.id, role: Role::Owner, joined_at: conversation.created_at };
    let device = DeviceId::new();
    let mut messages: Vec<Message> = (1..=3)
        .map(|seq| Message {
            conversation_id: conversation.id,
            seq,
            message_id: MessageId::new(),
            sender: user.id,
            sender_device: device,
            client_msg_id: format!("durable-{seq}"),
            body: format!("body {seq}"),
            reply_to: None,
            thread_root: None,
            thread: None,
            sent_at: now_millis(),
            edited_at: None,
            deleted: false,
            reactions: Default::default(),
            system: None,
            attachments: Vec::new(),
        })
        .collect();

    {
        let db = open(dir.path());
        let stores = db.stores();
        stores.users.create_user(&user).await.expect("create_user");
        stores.conversations.create_group(&conversation, std::slice::from_ref(&member)).await.expect("create_group");
        stores
            .messages
            .commit(&messages[..2].iter().cloned().map(MessageWrite::Insert).collect::<Vec<_>>())
            .await
            .expect("commit");
        let base = messages[0].clone();
        messages[0].body = "edited".into();
        messages[0].edited_at = Some(now_millis());
        stores
            .messages
            .commit(&[MessageWrite::update(messages[0].clone(), base), MessageWrite::Insert(messages[2].clone())])
            .await
            .expect("commit");
        // Dropping every handle (the stores hold Arcs of the database too) closes the writer and the file.
        drop(stores);
        drop(db);
    }

    let db = reopen(dir.path());
    let stores = db.stores();
    assert_eq!(stores.messages.last_seq(conversation.id).await.expect("last_seq"), 3, "last_seq after reopen");
    assert_eq!(
        stores.messages.history(conversation.id, 1, Direction::Forward, 100).await.expect("history"),
        messages,
        "committed messages (including the update) must survive a reopen"
    );
    assert_eq!(
        stores.messages.by_client_id(conversation.id, user.id, "durable-2").await.expect("by_client_id"),
        Some(messages[1].clone()),
        "the idempotency index must survive a reopen"
    );
    assert_eq!(stores.users.user(user.id).await.expect("user"), Some(user.clone()), "users survive a reopen");
    assert_eq!(
        stores.conversations.members(conversation.id).await.expect("members"),
        vec![member],
        "memberships survive a reopen"
    );

    // The reopened database keeps working, and passes the suite.
    let next =
        Message { seq: 4, message_id: MessageId::new(), client_msg_id: "durable-4".into(), ..messages[2].clone() };
    stores.messages.commit(&[MessageWrite::Insert(next)]).await.expect("commit after reopen");
    assert_eq!(stores.messages.last_seq(conversation.id).await.expect("last_seq"), 4);
    conformance::run_all(stores).await;
}

/// The search index is rebuilt from the messages when it is lost (or unreadable): a reopened database with no
/// `search/` directory finds what it found before, and a message committed meanwhile too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_search_index_is_rebuilt_from_the_messages() {
    use herald_core::store::SearchRequest;
    let dir = tempfile::tempdir().expect("tempdir");
    let conversation = ConversationId::new();
    let (sender, device) = (UserId::new(), DeviceId::new());
    let text =
        |seq: u64, body: &str| Message { body: body.into(), ..conformance::message(conversation, seq, sender, device) };
    let terms = herald_core::search::words("lighthouse");
    let found = |db: Arc<EmbeddedDb>| {
        let terms = terms.clone();
        async move {
            let request = SearchRequest { terms: &terms, conversations: &[conversation], offset: 0, limit: 10 };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let hits = db.stores().search.search(&request).await.expect("search");
                let mut seqs: Vec<u64> = hits.iter().map(|h| h.seq).collect();
                seqs.sort_unstable();
                if seqs.len() >= 2 || Instant::now() > deadline {
                    return seqs;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    {
        let db = open(dir.path());
        let writes =
            [MessageWrite::Insert(text(1, "the lighthouse at dawn")), MessageWrite::Insert(text(2, "no match"))];
        db.stores().messages.commit(&writes).await.expect("commit");
        // Indexed (so its backlog is taken): only a rebuild can bring it back once the index is gone.
        let terms = herald_core::search::words("lighthouse");
        let request = SearchRequest { terms: &terms, conversations: &[conversation], offset: 0, limit: 10 };
        let deadline = Instant::now() + Duration::from_secs(10);
        while db.stores().search.search(&request).await.expect("search").is_empty() {
            assert!(Instant::now() < deadline, "never indexed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db.close().await.expect("close");
    }
    std::fs::remove_dir_all(dir.path().join("search")).expect("the index lives in search/");
    let db = reopen(dir.path());
    db.stores().messages.commit(&[MessageWrite::Insert(text(3, "Lighthouses everywhere"))]).await.expect("commit");
    assert_eq!(found(db.clone()).await, vec![1, 3], "every message is indexed again");
    db.close().await.expect("close");
}
