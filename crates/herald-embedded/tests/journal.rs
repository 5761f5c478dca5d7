//! Message commits are durable through the write-ahead journal, while redb commits them without syncing.
//! A crash is simulated by copying the database file and the journal while the database is open: redb's
//! file then holds its last durable commit (the header of a non-durable commit is never written to disk),
//! exactly what a machine that lost power would find. Opening the copy must bring back every acknowledged
//! commit, with the same seqs and feed positions, and the database must go on from there.

use herald_core::conformance;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite, Stores};
use herald_embedded::{EmbeddedDb, Options};
use herald_proto::{ConversationId, DeviceId, Direction, Message, UserId};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// No checkpoint by the timer while a test runs: what is not in a durable commit stays in the journal only.
fn options() -> Options {
    Options { checkpoint_interval: Duration::from_secs(3600), ..Options::default() }
}

fn message(conversation: ConversationId, sender: UserId, seq: u64, body: &str) -> Message {
    Message { body: body.to_owned(), ..conformance::message(conversation, seq, sender, DeviceId::new()) }
}

/// Copies what a crash at this moment would leave on disk.
fn crash_copy(from: &Path, to: &Path, with_journal: bool) {
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::copy(from.join("herald.redb"), to.join("herald.redb")).expect("copy database");
    if with_journal {
        std::fs::copy(from.join("herald.journal"), to.join("herald.journal")).expect("copy journal");
        // The buffered feed rows a checkpoint left in a snapshot file (see `feed_snapshot`).
        for entry in std::fs::read_dir(from).expect("list").flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("herald.feed.") {
                std::fs::copy(entry.path(), to.join(&name)).expect("copy feed snapshot");
            }
        }
    }
}

struct Written {
    conversation: ConversationId,
    alice: UserId,
    bob: UserId,
}

/// Three acknowledged commits: five messages, an edit, a feed entry per member for each.
async fn write_three_commits(stores: &Stores) -> Written {
    let (conversation, alice, bob) = (ConversationId::new(), UserId::new(), UserId::new());
    let feed = |seqs: &[u64]| {
        seqs.iter()
            .flat_map(|seq| {
                [alice, bob].map(|user| FeedAppend { user, event: FeedEvent::Message { conversation, seq: *seq } })
            })
            .collect::<Vec<_>>()
    };
    let m = |seq| message(conversation, if seq % 2 == 0 { bob } else { alice }, seq, &format!("message {seq}"));
    let positions = stores
        .messages
        .commit_with_feed(&[MessageWrite::Insert(m(1)), MessageWrite::Insert(m(2))], &feed(&[1, 2]))
        .await
        .expect("first commit");
    assert_eq!(positions, vec![1, 1, 2, 2]);
    stores
        .messages
        .commit_with_feed(
            &[MessageWrite::Insert(m(3)), MessageWrite::Insert(m(4)), MessageWrite::Insert(m(5))],
            &feed(&[3, 4, 5]),
        )
        .await
        .expect("second commit");
    let mut edited = m(2);
    edited.body = "edited".into();
    edited.edited_at = Some(1_700_000_001_000);
    let updated =
        [alice, bob].map(|user| FeedAppend { user, event: FeedEvent::MessageUpdated { conversation, seq: 2 } });
    stores.messages.commit_with_feed(&[MessageWrite::update(edited, m(2))], &updated).await.expect("third commit");
    Written { conversation, alice, bob }
}

async fn history(stores: &Stores, conversation: ConversationId) -> Vec<Message> {
    stores.messages.history(conversation, 1, Direction::Forward, 100).await.expect("history")
}

#[tokio::test]
async fn acknowledged_commits_come_back_from_the_journal_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let stores = db.stores();
    let w = write_three_commits(&stores).await;
    let expected = history(&stores, w.conversation).await;
    assert_eq!(expected.len(), 5);
    let expected_feed = stores.messages.feed(w.bob, 0, 100).await.expect("feed");
    assert_eq!(expected_feed.last, 6);

    crash_copy(&live, &crashed, true);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 3, "the three commits came from the journal");
    let stores = recovered.stores();
    assert_eq!(history(&stores, w.conversation).await, expected, "same messages, seqs and edit");
    assert_eq!(stores.messages.feed(w.bob, 0, 100).await.expect("feed"), expected_feed);
    assert_eq!(stores.messages.last_seq(w.conversation).await.expect("last seq"), 5);
    assert_eq!(stores.messages.last_sent_by(w.conversation, w.bob).await.expect("last sent"), 4);
    let retried = stores.messages.by_client_id(w.conversation, w.alice, "client-3").await.expect("by client id");
    assert_eq!(retried.map(|m| m.seq), Some(3), "idempotency keys are back too");

    // It goes on from there: the next seq and the next feed position follow without a gap.
    let next = message(w.conversation, w.alice, 6, "after the crash");
    let positions = stores
        .messages
        .commit_with_feed(
            &[MessageWrite::Insert(next)],
            &[FeedAppend { user: w.bob, event: FeedEvent::Message { conversation: w.conversation, seq: 6 } }],
        )
        .await
        .expect("commit after recovery");
    assert_eq!(positions, vec![7]);
    recovered.close().await.expect("close");
    let reopened = EmbeddedDb::open_with(&crashed, options()).expect("reopen");
    assert_eq!(reopened.replayed_at_open(), 0, "a clean close leaves nothing to replay");
    assert_eq!(history(&reopened.stores(), w.conversation).await.len(), 6);
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_refused_commit_leaves_nothing_in_the_journal() {
    // A group commit whose jobs fail must leave none of its records in the journal: replayed after a crash,
    // they would store what every caller was told was not stored, and the one that failed would fail again and
    // keep the database from opening.
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let stores = db.stores();
    let w = write_three_commits(&stores).await;
    let journal_len = || std::fs::metadata(live.join("herald.journal")).expect("journal").len();
    let before = journal_len();
    // Seq 4 exists: the store refuses the whole commit, the new seq 6 with it.
    let clash = [
        MessageWrite::Insert(message(w.conversation, w.alice, 6, "new")),
        MessageWrite::Insert(message(w.conversation, w.bob, 4, "again")),
    ];
    let feed = [FeedAppend { user: w.bob, event: FeedEvent::Message { conversation: w.conversation, seq: 6 } }];
    assert!(stores.messages.commit_with_feed(&clash, &feed).await.is_err(), "a used seq is refused");
    assert_eq!(journal_len(), before, "the refused commit's record is not in the journal");
    assert_eq!(history(&stores, w.conversation).await.len(), 5);

    // The next commit goes on from where the journal was, and a crash brings back exactly what was acknowledged.
    let next = message(w.conversation, w.alice, 6, "after the refusal");
    stores.messages.commit_with_feed(&[MessageWrite::Insert(next)], &feed).await.expect("a good commit");
    crash_copy(&live, &crashed, true);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 4, "the three commits and the one after the refusal");
    let messages = history(&recovered.stores(), w.conversation).await;
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["message 1", "edited", "message 3", "message 4", "message 5", "after the refusal"]);
    db.close().await.expect("close");
}

#[tokio::test]
async fn without_the_journal_a_crash_loses_the_unchecked_commits() {
    // The other half of the proof: the database file alone does not hold them, so the test above passes
    // because of the journal and not because redb synced after all.
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let w = write_three_commits(&db.stores()).await;
    crash_copy(&live, &crashed, false);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 0);
    assert!(history(&recovered.stores(), w.conversation).await.is_empty());
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_checkpoint_empties_the_journal_and_leaves_everything_in_the_database_and_its_feed_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let db: Arc<EmbeddedDb> =
        EmbeddedDb::open_with(&live, Options { checkpoint_interval: Duration::from_millis(50), ..Options::default() })
            .expect("open");
    let w = write_three_commits(&db.stores()).await;
    // The timer checkpoints a quiet database within an interval or two.
    let mut waited = Duration::ZERO;
    while std::fs::metadata(live.join("herald.journal")).expect("journal").len() > 0 {
        assert!(waited < Duration::from_secs(10), "no checkpoint within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // The messages are in the database file; the feed rows still buffered are in the snapshot it names.
    crash_copy(&live, &crashed, true);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 0, "nothing left to replay");
    assert_eq!(history(&recovered.stores(), w.conversation).await.len(), 5, "the database file has them");
    let feed = recovered.stores().messages.feed(w.bob, 0, 100).await.expect("feed");
    assert_eq!((feed.last, feed.entries.len()), (6, 6), "every feed row, from the snapshot");
    db.close().await.expect("close");
}

/// Account writes (register, log in, refresh, log out) are journaled like message commits: acknowledged once
/// the journal's append is synced, with no durable redb commit of their own.
#[tokio::test]
async fn account_writes_come_back_from_the_journal_after_a_crash() {
    use herald_core::store::{Device, StoreError, User};
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed, bare) = (dir.path().join("live"), dir.path().join("crashed"), dir.path().join("bare"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let users = db.stores().users;
    let alice = User {
        id: UserId::new(),
        username: "alice".into(),
        password_hash: "phc".into(),
        created_at: 1,
        suspension: None,
        deleted_at: None,
    };
    users.create_user(&alice).await.expect("register");
    let taken = User { id: UserId::new(), ..alice.clone() };
    assert!(matches!(users.create_user(&taken).await, Err(StoreError::Conflict(_))), "the name is taken");
    let device = |name: &str| Device {
        id: DeviceId::new(),
        user_id: alice.id,
        name: name.into(),
        created_at: 2,
        refresh_hash: [1; 32],
        refresh_expires_at: 3,
        previous_refresh_hash: None,
    };
    let (phone, laptop) = (device("phone"), device("laptop"));
    users.create_device(&phone).await.expect("log in");
    users.create_device(&laptop).await.expect("log in");
    assert!(users.rotate_refresh(phone.id, [1; 32], [2; 32], 4).await.expect("refresh"));
    assert!(!users.rotate_refresh(phone.id, [1; 32], [3; 32], 5).await.expect("a stale token changes nothing"));
    assert!(users.delete_device(laptop.id).await.expect("log out"));
    let expected_phone = users.device(phone.id).await.expect("read").expect("the phone");
    assert_eq!((expected_phone.refresh_hash, expected_phone.previous_refresh_hash), ([2; 32], Some([1; 32])));
    let suspension = herald_proto::Suspension { at: 6, by: alice.id, reason: "spam".into() };
    let bob = User { id: UserId::new(), username: "bob".into(), ..alice.clone() };
    users.create_user(&bob).await.expect("register");
    assert!(users.set_suspension(bob.id, Some(&suspension)).await.expect("suspend"));
    let carol = User { id: UserId::new(), username: "carol".into(), ..alice.clone() };
    users.create_user(&carol).await.expect("register");
    assert!(users.erase_user(carol.id, 7).await.expect("delete the account"));

    crash_copy(&live, &crashed, true);
    crash_copy(&live, &bare, false);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 11, "every account write came from the journal");
    let users = recovered.stores().users;
    assert_eq!(users.user_by_name("alice").await.expect("read"), Some(alice.clone()), "the first alice only");
    assert_eq!(users.device(phone.id).await.expect("read"), Some(expected_phone.clone()));
    assert_eq!(users.device(laptop.id).await.expect("read"), None);
    assert_eq!(users.devices_of(alice.id).await.expect("read"), vec![expected_phone]);
    let suspended = users.user(bob.id).await.expect("read").and_then(|u| u.suspension);
    assert_eq!(suspended, Some(suspension), "the suspension came back");
    assert_eq!(users.user_by_name("carol").await.expect("read"), None, "the erasure came back: the name is free");
    assert_eq!(users.user(carol.id).await.expect("read").and_then(|u| u.deleted_at), Some(7));
    recovered.close().await.expect("close");

    // The database file alone does not hold them: they were durable through the journal only.
    let without = EmbeddedDb::open_with(&bare, options()).expect("open without the journal");
    assert_eq!(without.stores().users.user_by_name("alice").await.expect("read"), None);
    without.close().await.expect("close");
    db.close().await.expect("close");
}

/// Conversation writes (creating a group or a direct conversation, its title, its members and their roles) are
/// journaled too; replaying them runs the same checks, so the refused ones stay refused.
#[tokio::test]
async fn conversation_writes_come_back_from_the_journal_after_a_crash() {
    use herald_core::store::StoreError;
    use herald_proto::{Conversation, ConversationKind, Member, Role};
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed, bare) = (dir.path().join("live"), dir.path().join("crashed"), dir.path().join("bare"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let store = db.stores().conversations;
    let [alice, bob, carol, dave] = [(); 4].map(|_| UserId::new());
    let member = |user_id, role| Member { user_id, role, joined_at: 1 };
    let conversation = |kind, title: Option<&str>| Conversation {
        id: ConversationId::new(),
        kind,
        title: title.map(str::to_owned),
        created_by: alice,
        created_at: 1,
    };
    let group = conversation(ConversationKind::Group, Some("plans"));
    store.create_group(&group, &[member(alice, Role::Owner), member(bob, Role::Member)]).await.expect("group");
    let direct = store.get_or_create_direct(&conversation(ConversationKind::Direct, None), alice, carol).await;
    let direct = direct.expect("direct");
    let again = store.get_or_create_direct(&conversation(ConversationKind::Direct, None), carol, alice).await;
    assert_eq!(again.expect("the same pair"), direct);
    store.set_title(group.id, "new plans").await.expect("title");
    store.add_member(group.id, &member(dave, Role::Member), 3).await.expect("add");
    let twice = store.add_member(group.id, &member(dave, Role::Member), 3).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    let full = store.add_member(group.id, &member(carol, Role::Member), 3).await;
    assert!(matches!(full, Err(StoreError::LimitExceeded(_))), "{full:?}");
    assert!(store.remove_member(group.id, bob).await.expect("remove"));
    assert!(store.set_role(group.id, dave, Role::Admin).await.expect("role"));
    let members = store.members(group.id).await.expect("members");
    let mut roles: Vec<(UserId, Role)> = members.iter().map(|m| (m.user_id, m.role)).collect();
    roles.sort();
    let mut expected = vec![(alice, Role::Owner), (dave, Role::Admin)];
    expected.sort();
    assert_eq!(roles, expected, "bob removed, dave an admin");
    let memberships = store.memberships(dave).await.expect("memberships");

    crash_copy(&live, &crashed, true);
    crash_copy(&live, &bare, false);
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("open after the crash");
    assert_eq!(recovered.replayed_at_open(), 9, "every conversation write came from the journal");
    let store = recovered.stores().conversations;
    let title = store.conversation(group.id).await.expect("read").and_then(|c| c.title);
    assert_eq!(title.as_deref(), Some("new plans"));
    assert_eq!(store.members(group.id).await.expect("members"), members);
    assert_eq!(store.memberships(dave).await.expect("memberships"), memberships);
    assert_eq!(store.members(direct.id).await.expect("members").len(), 2);
    let found = store.get_or_create_direct(&conversation(ConversationKind::Direct, None), alice, carol).await;
    assert_eq!(found.expect("direct"), direct, "the pair still leads to the same conversation");
    recovered.close().await.expect("close");

    let without = EmbeddedDb::open_with(&bare, options()).expect("open without the journal");
    assert_eq!(without.stores().conversations.conversation(group.id).await.expect("read"), None);
    without.close().await.expect("close");
    db.close().await.expect("close");
}

/// Three acknowledged commits, then what a crash leaves of them in `dir/crashed` (the live database closed).
async fn crashed_after_three_commits(dir: &Path) -> (std::path::PathBuf, Written) {
    let (live, crashed) = (dir.join("live"), dir.join("crashed"));
    let db = EmbeddedDb::open_with(&live, options()).expect("open");
    let written = write_three_commits(&db.stores()).await;
    crash_copy(&live, &crashed, true);
    db.close().await.expect("close");
    (crashed, written)
}

/// The offsets of the records in a journal file (each `len u32 | crc u32 | lsn u64 | payload`).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")) as usize;
        at += 16 + len;
    }
    offsets
}

#[tokio::test]
async fn a_damaged_journal_with_intact_records_after_the_damage_refuses_to_open_until_an_operator_cuts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crashed, w) = crashed_after_three_commits(dir.path()).await;

    // One byte flipped in the second of the three records: the first is intact before it, the third after.
    let journal = crashed.join("herald.journal");
    let mut bytes = std::fs::read(&journal).expect("journal");
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 3);
    bytes[offsets[1] + 20] ^= 0x04;
    std::fs::write(&journal, &bytes).expect("damage");

    let error = EmbeddedDb::open_with(&crashed, options()).err().expect("a damaged journal is refused").to_string();
    assert!(error.contains(&journal.display().to_string()), "names the file: {error}");
    assert!(error.contains(&format!("damaged at byte {}", offsets[1])), "names the offset: {error}");
    assert!(error.contains("1 intact record(s)"), "says what follows: {error}");
    assert_eq!(std::fs::read(&journal).expect("journal"), bytes, "refusing changed nothing");

    let report = herald_embedded::check_journal(&crashed).expect("check");
    assert_eq!(report.replayable, 1);
    let damage = report.damage.expect("damage reported");
    assert_eq!((damage.offset, damage.following), (offsets[1] as u64, 1));

    // The operator decides to cut: the first commit comes back, the two after the damage are dropped.
    let cut = herald_embedded::truncate_journal(&crashed).expect("truncate").expect("there was damage to cut");
    assert_eq!(cut.damage.map(|d| d.following), Some(1));
    assert_eq!(std::fs::metadata(&journal).expect("journal").len(), offsets[1] as u64);
    assert!(herald_embedded::truncate_journal(&crashed).expect("truncate again").is_none(), "nothing more to cut");
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("opens once cut");
    assert_eq!(recovered.replayed_at_open(), 1);
    assert_eq!(history(&recovered.stores(), w.conversation).await.len(), 2, "the first commit's two messages");
    recovered.close().await.expect("close");
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (crashed, w) = crashed_after_three_commits(dir.path()).await;
    // The crash came in the middle of the third append (which was never acknowledged).
    let journal = crashed.join("herald.journal");
    let len = std::fs::metadata(&journal).expect("journal").len();
    std::fs::OpenOptions::new().write(true).open(&journal).expect("journal").set_len(len - 5).expect("tear");
    let recovered = EmbeddedDb::open_with(&crashed, options()).expect("a torn tail is no reason to refuse");
    assert_eq!(recovered.replayed_at_open(), 2);
    let bodies: Vec<String> = history(&recovered.stores(), w.conversation).await.into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, ["message 1", "message 2", "message 3", "message 4", "message 5"], "the edit was torn");
    recovered.close().await.expect("close");
}

#[tokio::test]
async fn a_damaged_feed_snapshot_is_named_and_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let db: Arc<EmbeddedDb> =
        EmbeddedDb::open_with(&live, Options { checkpoint_interval: Duration::from_millis(50), ..Options::default() })
            .expect("open");
    write_three_commits(&db.stores()).await;
    let snapshot_in = |dir: &Path| {
        std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("herald.feed.")))
    };
    let mut waited = Duration::ZERO;
    while std::fs::metadata(live.join("herald.journal")).expect("journal").len() > 0 || snapshot_in(&live).is_none() {
        assert!(waited < Duration::from_secs(10), "no checkpoint with a feed snapshot within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    crash_copy(&live, &crashed, true);
    db.close().await.expect("close");
    let copy = snapshot_in(&crashed).expect("the copy has the snapshot its database names");
    let mut bytes = std::fs::read(&copy).expect("snapshot");
    bytes[6] ^= 0x01;
    std::fs::write(&copy, &bytes).expect("damage");
    let error = EmbeddedDb::open_with(&crashed, options()).err().expect("refused").to_string();
    assert!(error.contains(&copy.display().to_string()) && error.contains("damaged"), "{error}");
}
