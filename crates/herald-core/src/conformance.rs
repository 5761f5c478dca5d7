//! The store conformance suite: every backend runs it unchanged against its seven stores.
//!
//! Each function exercises one trait of [`crate::store`] and panics, naming the contract that broke, when
//! the backend does not behave as the trait documents. Every check uses fresh ids (UUIDv7) and fresh
//! usernames, so the suite can run repeatedly against a shared database and never assumes an empty store.
//! The checks are sequential on purpose (one of them makes a commit fail on purpose); the concurrency
//! checks (compare-and-swap refresh rotation, get-or-create of a direct conversation) spawn their own tasks
//! and therefore need a Tokio runtime (a multi-threaded one exercises them best).

use crate::now_millis;
use crate::store::{
    BlockedHash, ContentRecord, CursorUpdate, Device, MediaRecord, MessageWrite, StoreError, StoreResult,
    StoredVariant, Stores, Tier, User,
};
use herald_proto::{
    Attachment, Conversation, ConversationId, ConversationKind, DeviceCursor, DeviceId, Direction, MediaId, MediaState,
    Member, Message, MessageId, Millis, RejectReason, Report, ReportId, ReportReason, ReportResolution, ReportState,
    ReportTarget, ReportedMessage, Role, Suspension, UserId,
};
use std::collections::{BTreeMap, BTreeSet};

/// How many tasks race in the concurrency checks.
const RACERS: usize = 8;

/// Runs the whole suite: users, conversations, messages, feeds, cursors, threads, search, media, reports.
pub async fn run_all(stores: Stores) {
    users(&stores).await;
    conversations(&stores).await;
    messages(&stores).await;
    feeds(&stores).await;
    cursors(&stores).await;
    threads(&stores).await;
    search(&stores).await;
    media(&stores).await;
    reports(&stores).await;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

/// Unwraps a store answer that the contract says must succeed.
#[track_caller]
fn ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("store conformance: {what}: expected Ok, the backend failed with {e:?}"),
    }
}

#[track_caller]
fn expect_conflict<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("store conformance: {what}: expected Err(Conflict), got {other:?}"),
    }
}

#[track_caller]
fn expect_limit<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::LimitExceeded(_)) => {}
        other => panic!("store conformance: {what}: expected Err(LimitExceeded), got {other:?}"),
    }
}

#[track_caller]
fn expect_refused<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    if let Ok(value) = result {
        panic!("store conformance: {what}: expected the commit to be refused with an error, got Ok({value:?})");
    }
}

fn fresh_user() -> User {
    let id = UserId::new();
    User {
        id,
        username: format!("conformance-{id}"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$fake${id}"),
        created_at: now_millis(),
        suspension: None,
        deleted_at: None,
    }
}

fn fresh_device(user: UserId, name: &str, refresh_hash: [u8; 32]) -> Device {
    Device {
        id: DeviceId::new(),
        user_id: user,
        name: name.to_owned(),
        created_at: now_millis(),
        refresh_hash,
        refresh_expires_at: now_millis() + 3_600_000,
        previous_refresh_hash: None,
    }
}

/// Creates a user in the store (backends may require members and senders to exist).
async fn create_user(stores: &Stores) -> User {
    let user = fresh_user();
    ok(stores.users.create_user(&user).await, "create_user of a fresh user");
    user
}

/// Creates a user with one device.
async fn create_user_with_device(stores: &Stores) -> (User, Device) {
    let user = create_user(stores).await;
    let device = fresh_device(user.id, "phone", [1; 32]);
    ok(stores.users.create_device(&device).await, "create_device of a fresh device");
    (user, device)
}

fn group(created_by: UserId, title: &str) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        kind: ConversationKind::Group,
        title: Some(title.to_owned()),
        created_by,
        created_at: now_millis(),
    }
}

fn direct(created_by: UserId) -> Conversation {
    Conversation {
        id: ConversationId::new(),
        kind: ConversationKind::Direct,
        title: None,
        created_by,
        created_at: now_millis(),
    }
}

/// Creates a group owned by a fresh user, for the message and cursor checks.
async fn create_group_of(stores: &Stores, owner: UserId) -> Conversation {
    let conversation = group(owner, "conformance");
    let members = [Member { user_id: owner, role: Role::Owner, joined_at: conversation.created_at }];
    ok(stores.conversations.create_group(&conversation, &members).await, "create_group");
    conversation
}

/// A plain text message at `seq` (idempotency key `client-{seq}`), for the backends' own tests too.
pub fn message(conversation: ConversationId, seq: u64, sender: UserId, device: DeviceId) -> Message {
    Message {
        conversation_id: conversation,
        seq,
        message_id: MessageId::new(),
        sender,
        sender_device: device,
        client_msg_id: format!("client-{seq}"),
        body: format!("message number {seq}"),
        reply_to: None,
        thread_root: None,
        thread: None,
        sent_at: now_millis(),
        edited_at: None,
        deleted: false,
        reactions: BTreeMap::new(),
        system: None,
        attachments: Vec::new(),
    }
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

fn by_device(mut cursors: Vec<DeviceCursor>) -> Vec<DeviceCursor> {
    cursors.sort_by_key(|c| c.device_id);
    cursors
}

fn cursor(device: DeviceId, delivered: u64, read: u64) -> DeviceCursor {
    DeviceCursor { device_id: device, delivered, read }
}

// ---------------------------------------------------------------------------------------------------------
// UserStore
// ---------------------------------------------------------------------------------------------------------

/// Users, usernames, devices and the refresh-token compare-and-swap.
pub async fn users(stores: &Stores) {
    let s = &stores.users;

    // Create and read back, by id and by name.
    let alice = fresh_user();
    assert_eq!(ok(s.user(alice.id).await, "user before create"), None, "UserStore::user found a user never created");
    assert_eq!(
        ok(s.user_by_name(&alice.username).await, "user_by_name before create"),
        None,
        "UserStore::user_by_name found a username never created"
    );
    ok(s.create_user(&alice).await, "create_user");
    assert_eq!(
        ok(s.user(alice.id).await, "user"),
        Some(alice.clone()),
        "UserStore::user must return the user exactly as created"
    );
    assert_eq!(
        ok(s.user_by_name(&alice.username).await, "user_by_name"),
        Some(alice.clone()),
        "UserStore::user_by_name must return the user exactly as created"
    );
    assert_eq!(
        ok(s.user_by_name(&format!("conformance-missing-{}", UserId::new())).await, "user_by_name of unknown"),
        None,
        "UserStore::user_by_name must return None for an unknown username"
    );

    // A taken username is a Conflict and leaves nothing behind.
    let impostor = User { username: alice.username.clone(), ..fresh_user() };
    expect_conflict(s.create_user(&impostor).await, "UserStore::create_user with a taken username");
    assert_eq!(
        ok(s.user(impostor.id).await, "user after conflict"),
        None,
        "UserStore::create_user refused with Conflict but stored the user anyway"
    );
    assert_eq!(
        ok(s.user_by_name(&alice.username).await, "user_by_name after conflict"),
        Some(alice.clone()),
        "UserStore::create_user with a taken username must not take the name over"
    );

    // Devices: create, read, list per user.
    let bob = create_user(stores).await;
    let phone = fresh_device(alice.id, "phone", [1; 32]);
    let laptop = fresh_device(alice.id, "laptop", [2; 32]);
    let bobs = fresh_device(bob.id, "bob's phone", [3; 32]);
    assert_eq!(ok(s.device(phone.id).await, "device before create"), None, "UserStore::device found a ghost");
    assert!(
        ok(s.devices_of(alice.id).await, "devices_of before create").is_empty(),
        "UserStore::devices_of must be empty for a user without devices"
    );
    for device in [&phone, &laptop, &bobs] {
        ok(s.create_device(device).await, "create_device");
    }
    assert_eq!(
        ok(s.device(phone.id).await, "device"),
        Some(phone.clone()),
        "UserStore::device must return the device exactly as created"
    );
    let mut listed = ok(s.devices_of(alice.id).await, "devices_of");
    listed.sort_by_key(|d| d.id);
    let mut expected = vec![phone.clone(), laptop.clone()];
    expected.sort_by_key(|d| d.id);
    assert_eq!(listed, expected, "UserStore::devices_of must list exactly the user's own devices");
    assert_eq!(
        ok(s.devices_of(bob.id).await, "devices_of other user"),
        vec![bobs.clone()],
        "UserStore::devices_of must not list other users' devices"
    );

    // rotate_refresh: a compare-and-swap on the refresh hash.
    let expires = now_millis() + 7_200_000;
    assert!(
        !ok(s.rotate_refresh(phone.id, [9; 32], [10; 32], expires).await, "rotate_refresh wrong hash"),
        "UserStore::rotate_refresh succeeded with an expected hash that never was the device's"
    );
    assert_eq!(
        ok(s.device(phone.id).await, "device after failed rotation"),
        Some(phone.clone()),
        "UserStore::rotate_refresh changed the device although the compare failed"
    );
    assert!(
        ok(s.rotate_refresh(phone.id, [1; 32], [11; 32], expires).await, "rotate_refresh right hash"),
        "UserStore::rotate_refresh failed with the device's current hash"
    );
    let rotated = ok(s.device(phone.id).await, "device after rotation").expect("the rotated device exists");
    assert_eq!(rotated.refresh_hash, [11; 32], "UserStore::rotate_refresh did not store the new hash");
    assert_eq!(rotated.refresh_expires_at, expires, "UserStore::rotate_refresh did not store the new expiry");
    assert_eq!(
        rotated.previous_refresh_hash,
        Some([1; 32]),
        "UserStore::rotate_refresh did not keep the replaced hash as previous_refresh_hash"
    );
    assert_eq!(
        (rotated.id, rotated.user_id, &rotated.name, rotated.created_at),
        (phone.id, phone.user_id, &phone.name, phone.created_at),
        "UserStore::rotate_refresh changed more than the refresh hash and expiry"
    );
    assert!(
        !ok(s.rotate_refresh(phone.id, [1; 32], [12; 32], expires).await, "rotate_refresh stale hash"),
        "UserStore::rotate_refresh succeeded with a stale (already rotated) hash"
    );
    assert!(
        !ok(s.rotate_refresh(DeviceId::new(), [0; 32], [1; 32], expires).await, "rotate_refresh unknown device"),
        "UserStore::rotate_refresh succeeded on a device that does not exist"
    );
    assert_eq!(
        ok(s.device(laptop.id).await, "other device after rotation"),
        Some(laptop.clone()),
        "UserStore::rotate_refresh changed another device"
    );

    // Two rotations racing with one token (polled together): exactly one wins.
    let (first, second) = tokio::join!(
        s.rotate_refresh(phone.id, [11; 32], [20; 32], expires),
        s.rotate_refresh(phone.id, [11; 32], [21; 32], expires),
    );
    let (first, second) = (ok(first, "racing rotate_refresh"), ok(second, "racing rotate_refresh"));
    assert!(first ^ second, "UserStore::rotate_refresh: two rotations with one expected hash: {first} and {second}");
    let winner_hash = if first { [20; 32] } else { [21; 32] };
    assert_eq!(
        ok(s.device(phone.id).await, "device after race").map(|d| d.refresh_hash),
        Some(winner_hash),
        "UserStore::rotate_refresh: the stored hash is not the winner's"
    );

    // Many rotations racing on separate tasks: exactly one wins.
    let mut racers = Vec::with_capacity(RACERS);
    for i in 0..RACERS {
        let store = s.clone();
        let new = [30 + i as u8; 32];
        racers.push(tokio::spawn(async move { store.rotate_refresh(phone.id, winner_hash, new, expires).await }));
    }
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        if ok(racer.await.expect("a racing rotation task panicked"), "spawned racing rotate_refresh") {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "UserStore::rotate_refresh: {RACERS} concurrent rotations with one expected hash; winners {winners:?}"
    );
    assert_eq!(
        ok(s.device(phone.id).await, "device after spawned race").map(|d| d.refresh_hash),
        Some([30 + winners[0] as u8; 32]),
        "UserStore::rotate_refresh: the stored hash is not the winner's"
    );

    // delete_device: true once, then false; gone from device() and devices_of().
    assert!(ok(s.delete_device(phone.id).await, "delete_device"), "UserStore::delete_device of a device: false");
    assert!(
        !ok(s.delete_device(phone.id).await, "delete_device again"),
        "UserStore::delete_device of an already deleted device must return false"
    );
    assert!(
        !ok(s.delete_device(DeviceId::new()).await, "delete_device unknown"),
        "UserStore::delete_device of an unknown device must return false"
    );
    assert_eq!(ok(s.device(phone.id).await, "device after delete"), None, "UserStore::device found a deleted device");
    assert_eq!(
        ok(s.devices_of(alice.id).await, "devices_of after delete"),
        vec![laptop.clone()],
        "UserStore::devices_of must not list a deleted device, and keep the others"
    );
    assert!(
        !ok(s.rotate_refresh(phone.id, [30; 32], [40; 32], expires).await, "rotate_refresh deleted device"),
        "UserStore::rotate_refresh succeeded on a deleted device"
    );
    assert_eq!(
        ok(s.devices_of(bob.id).await, "devices_of other user after delete"),
        vec![bobs],
        "UserStore::delete_device touched another user's devices"
    );
    blocks(stores).await;
    suspensions(stores).await;
    erasure(stores).await;
}

/// Erasing an account: the name is free, the password, devices and blocks are gone, the id stays; once.
async fn erasure(stores: &Stores) {
    let s = &stores.users;
    let (dave, phone) = create_user_with_device(stores).await;
    let laptop = fresh_device(dave.id, "laptop", [2; 32]);
    ok(s.create_device(&laptop).await, "create_device");
    let other = create_user(stores).await;
    ok(s.block(dave.id, other.id, 10).await, "block");
    ok(s.block(other.id, dave.id, 20).await, "blocked");
    let admin = UserId::new();
    ok(s.set_suspension(dave.id, Some(&Suspension { at: 5, by: admin, reason: "spam".into() })).await, "suspend");

    assert!(ok(s.erase_user(dave.id, 1000).await, "erase_user"), "UserStore::erase_user must say the user exists");
    let erased = ok(s.user(dave.id).await, "user of an erased account").expect("an erased account keeps its id");
    assert_eq!(
        erased,
        User {
            id: dave.id,
            username: User::deleted_username(dave.id),
            password_hash: String::new(),
            created_at: dave.created_at,
            suspension: None,
            deleted_at: Some(1000),
        },
        "UserStore::erase_user must leave only the id, the creation time and when it was erased"
    );
    assert_eq!(ok(s.user_by_name(&dave.username).await, "user_by_name of the old name"), None, "the old name is free");
    assert_eq!(ok(s.devices_of(dave.id).await, "devices_of"), vec![], "UserStore::erase_user must delete the devices");
    assert_eq!(ok(s.device(phone.id).await, "device"), None, "an erased account's device must be gone");
    assert_eq!(ok(s.device(laptop.id).await, "device"), None, "an erased account's device must be gone");
    assert_eq!(ok(s.blocked_by(dave.id).await, "blocked_by"), vec![], "the blocks it made must be gone");
    assert_eq!(ok(s.blockers_of(dave.id).await, "blockers_of"), vec![], "the blocks it received must be gone");
    assert_eq!(ok(s.blocked_by(other.id).await, "blocked_by other"), vec![], "the other side's block must be gone");

    assert!(ok(s.erase_user(dave.id, 2000).await, "erase_user again"), "an erased account still exists");
    assert_eq!(
        ok(s.user(dave.id).await, "user").and_then(|u| u.deleted_at),
        Some(1000),
        "erasing twice must keep the first time"
    );
    let newcomer = User { username: dave.username.clone(), ..fresh_user() };
    ok(s.create_user(&newcomer).await, "create_user with an erased account's old name");
    assert_eq!(
        ok(s.user_by_name(&dave.username).await, "user_by_name of the reused name").map(|u| u.id),
        Some(newcomer.id),
        "the old name belongs to its new owner"
    );
    assert!(
        !ok(s.erase_user(UserId::new(), 1000).await, "erase_user of unknown"),
        "UserStore::erase_user must say an unknown user does not exist"
    );
}

/// Suspensions: set, read back with the user (by id and by name), replaced, lifted; only on users that exist.
async fn suspensions(stores: &Stores) {
    let s = &stores.users;
    let carol = fresh_user();
    ok(s.create_user(&carol).await, "create_user");
    let admin = UserId::new();
    let first = Suspension { at: 100, by: admin, reason: "spam".into() };
    assert!(ok(s.set_suspension(carol.id, Some(&first)).await, "set_suspension"), "the user exists");
    let suspended = User { suspension: Some(first.clone()), ..carol.clone() };
    assert_eq!(ok(s.user(carol.id).await, "user"), Some(suspended.clone()), "UserStore::user must show the suspension");
    assert_eq!(
        ok(s.user_by_name(&carol.username).await, "user_by_name"),
        Some(suspended),
        "UserStore::user_by_name must show the suspension"
    );
    let second = Suspension { at: 200, by: admin, reason: String::new() };
    assert!(ok(s.set_suspension(carol.id, Some(&second)).await, "set_suspension again"), "the user exists");
    assert_eq!(
        ok(s.user(carol.id).await, "user").and_then(|u| u.suspension),
        Some(second),
        "UserStore::set_suspension must replace the suspension"
    );
    assert!(ok(s.set_suspension(carol.id, None).await, "lift"), "the user exists");
    assert_eq!(ok(s.user(carol.id).await, "user"), Some(carol.clone()), "a lifted suspension must be gone");
    assert!(
        !ok(s.set_suspension(UserId::new(), Some(&first)).await, "set_suspension of unknown"),
        "UserStore::set_suspension must say an unknown user does not exist"
    );
}

/// Blocks: set once, listed from both sides in id order, removed once.
async fn blocks(stores: &Stores) {
    let s = &stores.users;
    let mut ids = [UserId::new(), UserId::new(), UserId::new()];
    ids.sort();
    let [a, b, c] = ids;
    assert!(ok(s.block(a, b, 10).await, "block"), "UserStore::block of a new block must say it is new");
    assert!(!ok(s.block(a, b, 20).await, "block again"), "UserStore::block twice must say it was there");
    assert!(ok(s.block(a, c, 30).await, "block another"), "a second blocked user");
    assert!(ok(s.block(c, b, 40).await, "block by another"), "a second blocker");
    assert_eq!(
        ok(s.blocked_by(a).await, "blocked_by"),
        vec![(b, 10), (c, 30)],
        "UserStore::blocked_by must list whom the user blocks, with the first time, in id order"
    );
    assert_eq!(ok(s.blockers_of(b).await, "blockers_of"), vec![a, c], "UserStore::blockers_of, in id order");
    assert_eq!(ok(s.blockers_of(a).await, "blockers_of a blocker"), vec![], "a block goes one way");
    assert!(ok(s.unblock(a, b).await, "unblock"), "UserStore::unblock must say the block was there");
    assert!(!ok(s.unblock(a, b).await, "unblock again"), "UserStore::unblock twice must say it was gone");
    assert_eq!(ok(s.blocked_by(a).await, "blocked_by after unblock"), vec![(c, 30)]);
    assert_eq!(ok(s.blockers_of(b).await, "blockers_of after unblock"), vec![c]);
}

// ---------------------------------------------------------------------------------------------------------
// ConversationStore
// ---------------------------------------------------------------------------------------------------------

/// Groups, direct conversations (get-or-create, also concurrently), members and memberships.
pub async fn conversations(stores: &Stores) {
    let s = &stores.conversations;
    let owner = create_user(stores).await;
    let anna = create_user(stores).await;
    let ben = create_user(stores).await;
    let carl = create_user(stores).await;
    let dora = create_user(stores).await;
    let outsider = create_user(stores).await;

    // create_group, conversation(), members in join order, member().
    let conversation = group(owner.id, "the group");
    assert_eq!(
        ok(s.conversation(conversation.id).await, "conversation before create"),
        None,
        "ConversationStore::conversation found a conversation never created"
    );
    let t = conversation.created_at;
    // Given in join order, which is neither id order nor its reverse.
    let initial = vec![
        Member { user_id: ben.id, role: Role::Owner, joined_at: t },
        Member { user_id: owner.id, role: Role::Admin, joined_at: t + 1 },
        Member { user_id: anna.id, role: Role::Member, joined_at: t + 2 },
    ];
    ok(s.create_group(&conversation, &initial).await, "create_group");
    assert_eq!(
        ok(s.conversation(conversation.id).await, "conversation"),
        Some(conversation.clone()),
        "ConversationStore::conversation must return the group exactly as created"
    );
    assert_eq!(
        ok(s.members(conversation.id).await, "members"),
        initial,
        "ConversationStore::members must return the members as created, in the order they joined"
    );
    assert_eq!(
        ok(s.member(conversation.id, anna.id).await, "member"),
        Some(initial[2].clone()),
        "ConversationStore::member must return the membership as created"
    );
    assert_eq!(
        ok(s.member(conversation.id, outsider.id).await, "member of a non-member"),
        None,
        "ConversationStore::member must return None for a non-member"
    );
    assert!(
        ok(s.members(ConversationId::new()).await, "members of unknown").is_empty(),
        "ConversationStore::members of an unknown conversation must be empty"
    );

    // set_title.
    ok(s.set_title(conversation.id, "renamed").await, "set_title");
    assert_eq!(
        ok(s.conversation(conversation.id).await, "conversation after set_title"),
        Some(Conversation { title: Some("renamed".into()), ..conversation.clone() }),
        "ConversationStore::set_title must change the title and nothing else"
    );

    // add_member: appended in join order; Conflict when already a member; LimitExceeded at max_members.
    let carl_member = Member { user_id: carl.id, role: Role::Member, joined_at: t + 3 };
    ok(s.add_member(conversation.id, &carl_member, 10).await, "add_member");
    let mut expected = initial.clone();
    expected.push(carl_member.clone());
    assert_eq!(
        ok(s.members(conversation.id).await, "members after add_member"),
        expected,
        "ConversationStore::members after add_member: the new member must come last (join order)"
    );
    let again = Member { joined_at: t + 10, role: Role::Admin, ..carl_member.clone() };
    expect_conflict(s.add_member(conversation.id, &again, 10).await, "ConversationStore::add_member of a member");
    assert_eq!(
        ok(s.member(conversation.id, carl.id).await, "member after conflicting add"),
        Some(carl_member.clone()),
        "ConversationStore::add_member refused with Conflict but changed the membership"
    );
    let dora_member = Member { user_id: dora.id, role: Role::Member, joined_at: t + 4 };
    expect_limit(
        s.add_member(conversation.id, &dora_member, expected.len()).await,
        "ConversationStore::add_member to a group that has max_members",
    );
    expect_limit(
        s.add_member(conversation.id, &dora_member, expected.len() - 1).await,
        "ConversationStore::add_member to a group that has more than max_members",
    );
    assert_eq!(
        ok(s.member(conversation.id, dora.id).await, "member after refused add"),
        None,
        "ConversationStore::add_member refused with LimitExceeded but added the member"
    );
    assert!(
        !ok(s.memberships(dora.id).await, "memberships after refused add").iter().any(|(c, _)| *c == conversation.id),
        "ConversationStore::add_member refused with LimitExceeded but left a membership behind"
    );
    ok(s.add_member(conversation.id, &dora_member, expected.len() + 1).await, "add_member just below max");
    expected.push(dora_member.clone());
    assert_eq!(
        ok(s.members(conversation.id).await, "members after second add_member"),
        expected,
        "ConversationStore::members after two add_member calls, in join order"
    );

    // set_role.
    assert!(
        ok(s.set_role(conversation.id, carl.id, Role::Admin).await, "set_role"),
        "ConversationStore::set_role of a member must return true"
    );
    assert_eq!(
        ok(s.member(conversation.id, carl.id).await, "member after set_role"),
        Some(Member { role: Role::Admin, ..carl_member.clone() }),
        "ConversationStore::set_role must change the role and nothing else"
    );
    assert!(
        !ok(s.set_role(conversation.id, outsider.id, Role::Admin).await, "set_role of a non-member"),
        "ConversationStore::set_role of a non-member must return false"
    );
    assert_eq!(
        ok(s.member(conversation.id, outsider.id).await, "member after set_role of non-member"),
        None,
        "ConversationStore::set_role of a non-member made them a member"
    );

    // remove_member: true, then false.
    assert!(
        ok(s.remove_member(conversation.id, anna.id).await, "remove_member"),
        "ConversationStore::remove_member of a member must return true"
    );
    assert!(
        !ok(s.remove_member(conversation.id, anna.id).await, "remove_member again"),
        "ConversationStore::remove_member of a former member must return false"
    );
    assert!(
        !ok(s.remove_member(conversation.id, outsider.id).await, "remove_member of a non-member"),
        "ConversationStore::remove_member of a non-member must return false"
    );
    assert_eq!(
        ok(s.member(conversation.id, anna.id).await, "member after remove"),
        None,
        "ConversationStore::member found a removed member"
    );
    expected.retain(|m| m.user_id != anna.id);
    let carl_admin = Member { role: Role::Admin, ..carl_member.clone() };
    for m in &mut expected {
        if m.user_id == carl.id {
            *m = carl_admin.clone();
        }
    }
    assert_eq!(
        ok(s.members(conversation.id).await, "members after remove"),
        expected,
        "ConversationStore::members after remove_member must keep the others in join order"
    );
    assert!(
        ok(s.memberships(anna.id).await, "memberships after remove").iter().all(|(c, _)| *c != conversation.id),
        "ConversationStore::memberships still lists a conversation the user was removed from"
    );

    // A second group, so memberships() has to return several and only the user's.
    let second = group(carl.id, "second");
    let second_members = vec![
        Member { user_id: carl.id, role: Role::Owner, joined_at: second.created_at },
        Member { user_id: dora.id, role: Role::Member, joined_at: second.created_at + 1 },
    ];
    ok(s.create_group(&second, &second_members).await, "create_group (second)");

    // get_or_create_direct: one conversation per pair, in either order.
    let candidate = direct(carl.id);
    let created = ok(s.get_or_create_direct(&candidate, carl.id, ben.id).await, "get_or_create_direct");
    assert_eq!(created, candidate, "ConversationStore::get_or_create_direct must create the candidate for a new pair");
    assert_eq!(
        ok(s.conversation(candidate.id).await, "conversation of a direct"),
        Some(candidate.clone()),
        "ConversationStore::get_or_create_direct must store the created conversation"
    );
    let direct_members: BTreeSet<UserId> =
        ok(s.members(candidate.id).await, "members of a direct").iter().map(|m| m.user_id).collect();
    assert_eq!(
        direct_members,
        BTreeSet::from([carl.id, ben.id]),
        "ConversationStore::get_or_create_direct must make exactly both users members"
    );
    let other_candidate = direct(ben.id);
    let found = ok(s.get_or_create_direct(&other_candidate, ben.id, carl.id).await, "get_or_create_direct (b, a)");
    assert_eq!(
        found, candidate,
        "ConversationStore::get_or_create_direct for (b, a) must return the conversation created for (a, b)"
    );
    let found = ok(s.get_or_create_direct(&other_candidate, carl.id, ben.id).await, "get_or_create_direct again");
    assert_eq!(found, candidate, "ConversationStore::get_or_create_direct for (a, b) again must return the same");
    assert_eq!(
        ok(s.conversation(other_candidate.id).await, "unused candidate"),
        None,
        "ConversationStore::get_or_create_direct stored a candidate although the pair had a conversation"
    );
    let with_dora = direct(carl.id);
    let other_pair = ok(s.get_or_create_direct(&with_dora, carl.id, dora.id).await, "get_or_create_direct other pair");
    assert_eq!(other_pair, with_dora, "ConversationStore::get_or_create_direct mixed up two pairs sharing a user");

    // memberships(user): every conversation of the user with its membership, and nothing else.
    let mut memberships = ok(s.memberships(carl.id).await, "memberships");
    memberships.sort_by_key(|(c, _)| *c);
    let listed: Vec<ConversationId> = memberships.iter().map(|(c, _)| *c).collect();
    let mut wanted = vec![conversation.id, second.id, candidate.id, with_dora.id];
    wanted.sort();
    assert_eq!(listed, wanted, "ConversationStore::memberships must list exactly the user's conversations");
    for (c, member) in &memberships {
        assert_eq!(member.user_id, carl.id, "ConversationStore::memberships returned another user's membership");
        if *c == conversation.id {
            assert_eq!(member, &carl_admin, "ConversationStore::memberships must return the current membership");
        }
        if *c == second.id {
            assert_eq!(member, &second_members[0], "ConversationStore::memberships must return the membership");
        }
    }
    assert!(
        ok(s.memberships(UserId::new()).await, "memberships of a stranger").is_empty(),
        "ConversationStore::memberships of a user without conversations must be empty"
    );

    // get_or_create_direct racing for one fresh pair: everyone gets one and the same conversation.
    let x = create_user(stores).await;
    let y = create_user(stores).await;
    let mut racers = Vec::with_capacity(RACERS);
    let mut candidates = Vec::with_capacity(RACERS);
    for i in 0..RACERS {
        let store = s.clone();
        let candidate = direct(if i % 2 == 0 { x.id } else { y.id });
        candidates.push(candidate.clone());
        let (a, b) = if i % 2 == 0 { (x.id, y.id) } else { (y.id, x.id) };
        racers.push(tokio::spawn(async move { store.get_or_create_direct(&candidate, a, b).await }));
    }
    let mut results = Vec::with_capacity(RACERS);
    for racer in racers {
        results
            .push(ok(racer.await.expect("a racing get_or_create_direct task panicked"), "racing get_or_create_direct"));
    }
    let winner = results[0].clone();
    assert!(
        results.iter().all(|c| *c == winner),
        "ConversationStore::get_or_create_direct: concurrent calls for one pair returned different conversations: {:?}",
        results.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    assert!(
        candidates.contains(&winner),
        "ConversationStore::get_or_create_direct returned a conversation that was none of the candidates"
    );
    let mut stored = 0;
    for candidate in &candidates {
        if ok(s.conversation(candidate.id).await, "conversation of a racing candidate").is_some() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1, "ConversationStore::get_or_create_direct: concurrent calls created {stored} conversations");
    for user in [x.id, y.id] {
        let listed: Vec<ConversationId> =
            ok(s.memberships(user).await, "memberships after race").into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            listed,
            vec![winner.id],
            "ConversationStore::get_or_create_direct: after concurrent calls a user of the pair must be member of \
             exactly the one conversation"
        );
    }
    let racing_members: BTreeSet<UserId> =
        ok(s.members(winner.id).await, "members after race").iter().map(|m| m.user_id).collect();
    assert_eq!(
        racing_members,
        BTreeSet::from([x.id, y.id]),
        "ConversationStore::get_or_create_direct: after concurrent calls the pair must be the only members"
    );
}

// ---------------------------------------------------------------------------------------------------------
// MessageStore
// ---------------------------------------------------------------------------------------------------------

/// Commits (all or nothing), last_seq, lookups by seq and by idempotency key, history paging.
pub async fn messages(stores: &Stores) {
    let s = &stores.messages;
    let (sender, device) = create_user_with_device(stores).await;
    let (other_sender, _) = create_user_with_device(stores).await;
    let conversation = create_group_of(stores, sender.id).await.id;
    let neighbour = create_group_of(stores, sender.id).await.id;

    // An empty conversation.
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq of empty"), 0, "MessageStore::last_seq of empty: not 0");
    assert_eq!(ok(s.message(conversation, 1).await, "message of empty"), None, "MessageStore::message found a ghost");
    assert!(
        ok(s.history(conversation, 1, Direction::Forward, 10).await, "history of empty").is_empty(),
        "MessageStore::history of an empty conversation must be empty"
    );
    assert!(
        ok(s.history(conversation, u64::MAX, Direction::Backward, 10).await, "history of empty").is_empty(),
        "MessageStore::history (backward) of an empty conversation must be empty"
    );
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-1").await, "by_client_id of empty"),
        None,
        "MessageStore::by_client_id found a ghost"
    );

    // Inserts, in two commits.
    let mut stored: Vec<Message> = (1..=5).map(|seq| message(conversation, seq, sender.id, device.id)).collect();
    ok(s.commit(&stored[..3].iter().cloned().map(MessageWrite::Insert).collect::<Vec<_>>()).await, "commit inserts");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 3, "MessageStore::last_seq after inserting 1..=3");
    ok(s.commit(&stored[3..].iter().cloned().map(MessageWrite::Insert).collect::<Vec<_>>()).await, "commit inserts");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 5, "MessageStore::last_seq after inserting 1..=5");
    assert_eq!(
        ok(s.last_sent_by(conversation, sender.id).await, "last_sent_by"),
        5,
        "MessageStore::last_sent_by must follow the sender's inserts"
    );
    assert_eq!(
        ok(s.last_sent_by(conversation, other_sender.id).await, "last_sent_by of another"),
        0,
        "MessageStore::last_sent_by of a user who sent nothing must be 0"
    );
    let elsewhere = message(neighbour, 1, sender.id, device.id);
    ok(s.commit(&[MessageWrite::Insert(elsewhere.clone())]).await, "commit into another conversation");
    assert_eq!(ok(s.last_seq(neighbour).await, "last_seq"), 1, "MessageStore::last_seq mixes conversations");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 5, "MessageStore::last_seq mixes conversations");

    // message() and by_client_id().
    assert_eq!(
        ok(s.message(conversation, 3).await, "message"),
        Some(stored[2].clone()),
        "MessageStore::message must return the message exactly as committed"
    );
    assert_eq!(ok(s.message(conversation, 6).await, "message past the end"), None, "MessageStore::message past end");
    assert_eq!(ok(s.message(conversation, 0).await, "message 0"), None, "MessageStore::message of seq 0");
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-4").await, "by_client_id"),
        Some(stored[3].clone()),
        "MessageStore::by_client_id must find the message stored under the sender's key"
    );
    assert_eq!(
        ok(s.by_client_id(conversation, other_sender.id, "client-4").await, "by_client_id of another sender"),
        None,
        "MessageStore::by_client_id: the idempotency key is per sender, another sender's key matched"
    );
    assert_eq!(
        ok(s.by_client_id(neighbour, sender.id, "client-1").await, "by_client_id in another conversation"),
        Some(elsewhere.clone()),
        "MessageStore::by_client_id: the idempotency key is per conversation"
    );
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-unknown").await, "by_client_id unknown"),
        None,
        "MessageStore::by_client_id found an unknown key"
    );
    let keys = [
        (conversation, sender.id, "client-4"),
        (conversation, other_sender.id, "client-4"),
        (neighbour, sender.id, "client-1"),
        (conversation, sender.id, "client-unknown"),
        (conversation, sender.id, "client-2"),
    ];
    assert_eq!(
        ok(s.by_client_ids(&keys).await, "by_client_ids"),
        vec![Some(stored[3].clone()), None, Some(elsewhere.clone()), None, Some(stored[1].clone())],
        "MessageStore::by_client_ids must answer each key as by_client_id does, in the keys' order"
    );
    assert_eq!(ok(s.by_client_ids(&[]).await, "by_client_ids of none"), Vec::new(), "by_client_ids of no keys");

    // history forward and backward, with `from` and `limit`.
    let forward = |from: u64, limit: usize| s.history(conversation, from, Direction::Forward, limit);
    let backward = |from: u64, limit: usize| s.history(conversation, from, Direction::Backward, limit);
    assert_eq!(
        ok(forward(1, 100).await, "history"),
        stored,
        "MessageStore::history forward from 1 must return every message, in seq order, as committed"
    );
    assert_eq!(seqs(&ok(forward(0, 100).await, "history")), vec![1, 2, 3, 4, 5], "MessageStore::history from 0");
    assert_eq!(seqs(&ok(forward(2, 2).await, "history")), vec![2, 3], "MessageStore::history forward from 2 limit 2");
    assert_eq!(seqs(&ok(forward(4, 10).await, "history")), vec![4, 5], "MessageStore::history forward from 4");
    assert_eq!(seqs(&ok(forward(5, 10).await, "history")), vec![5], "MessageStore::history forward from the last");
    assert!(ok(forward(6, 10).await, "history").is_empty(), "MessageStore::history forward from beyond the end");
    assert!(ok(forward(u64::MAX, 10).await, "history").is_empty(), "MessageStore::history forward from u64::MAX");
    assert_eq!(
        seqs(&ok(backward(5, 2).await, "history")),
        vec![5, 4],
        "MessageStore::history backward from 5 limit 2 must return 5, 4"
    );
    assert_eq!(
        seqs(&ok(backward(3, 10).await, "history")),
        vec![3, 2, 1],
        "MessageStore::history backward from 3 must return 3, 2, 1"
    );
    assert_eq!(
        seqs(&ok(backward(100, 3).await, "history")),
        vec![5, 4, 3],
        "MessageStore::history backward from beyond the end must start at the last message"
    );
    assert_eq!(
        seqs(&ok(backward(u64::MAX, 1).await, "history")),
        vec![5],
        "MessageStore::history backward from u64::MAX limit 1 must return the last message"
    );
    assert!(ok(backward(0, 10).await, "history").is_empty(), "MessageStore::history backward from 0 must be empty");
    assert_eq!(
        ok(s.history(neighbour, 1, Direction::Forward, 100).await, "history of another conversation"),
        vec![elsewhere.clone()],
        "MessageStore::history mixes conversations"
    );

    // Update replaces a stored message (and by_client_id sees the new version).
    let mut edited = stored[1].clone();
    edited.body = "edited".into();
    edited.edited_at = Some(now_millis());
    edited.reactions.insert("👍".into(), BTreeSet::from([other_sender.id]));
    ok(s.commit(&[MessageWrite::update(edited.clone(), stored[1].clone())]).await, "commit update");
    stored[1] = edited.clone();
    assert_eq!(
        ok(s.message(conversation, 2).await, "message after update"),
        Some(edited.clone()),
        "MessageStore::commit(Update) must replace the stored message"
    );
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-2").await, "by_client_id after update"),
        Some(edited.clone()),
        "MessageStore::by_client_id must return the current version after an Update"
    );
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 5, "MessageStore::commit(Update) changed last_seq");
    assert_eq!(ok(forward(1, 100).await, "history after update"), stored, "MessageStore::history after an Update");

    // A tombstone is an Update too, and a mixed commit applies both kinds.
    let mut tombstone = stored[2].clone();
    tombstone.deleted = true;
    tombstone.body.clear();
    let sixth = message(conversation, 6, other_sender.id, device.id);
    ok(
        s.commit(&[MessageWrite::update(tombstone.clone(), stored[2].clone()), MessageWrite::Insert(sixth.clone())])
            .await,
        "commit update + insert",
    );
    stored[2] = tombstone;
    stored.push(sixth.clone());
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 6, "MessageStore::commit(Update + Insert): last_seq");
    assert_eq!(ok(forward(1, 100).await, "history"), stored, "MessageStore::commit(Update + Insert): history");
    assert_eq!(
        ok(s.by_client_id(conversation, other_sender.id, "client-6").await, "by_client_id of other sender"),
        Some(sixth),
        "MessageStore::by_client_id must find the other sender's message under its key"
    );

    // An Insert of a used seq is refused, and nothing of that commit is stored (all or nothing).
    let seventh = message(conversation, 7, sender.id, device.id);
    let mut clash = message(conversation, 2, sender.id, device.id);
    clash.client_msg_id = "client-clash".into();
    expect_refused(
        s.commit(&[MessageWrite::Insert(seventh.clone()), MessageWrite::Insert(clash.clone())]).await,
        "MessageStore::commit of an Insert under a seq already stored",
    );
    let refused_insert = "MessageStore::commit refused an Insert of a used seq but kept part of the commit";
    assert_eq!(ok(s.message(conversation, 7).await, "message after refusal"), None, "{refused_insert}");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq after refusal"), 6, "{refused_insert}");
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-7").await, "by_client_id after refusal"),
        None,
        "{refused_insert} (its idempotency key)"
    );
    assert_eq!(
        ok(s.by_client_id(conversation, sender.id, "client-clash").await, "by_client_id after refusal"),
        None,
        "{refused_insert} (the clashing key)"
    );
    assert_eq!(
        ok(s.message(conversation, 2).await, "message after refusal"),
        Some(edited.clone()),
        "MessageStore::commit refused an Insert of a used seq but overwrote the stored message"
    );

    // Two Inserts of one seq in a single commit: refused as a whole.
    let mut twin = seventh.clone();
    twin.message_id = MessageId::new();
    twin.client_msg_id = "client-twin".into();
    expect_refused(
        s.commit(&[MessageWrite::Insert(seventh.clone()), MessageWrite::Insert(twin)]).await,
        "MessageStore::commit of two Inserts with one seq",
    );
    assert_eq!(
        ok(s.message(conversation, 7).await, "message after refusal"),
        None,
        "MessageStore::commit refused two Inserts of one seq but stored one of them"
    );

    // An Update of a missing seq is refused, alone or with a valid Insert, which is then not stored.
    let mut ghost = message(conversation, 99, sender.id, device.id);
    ghost.body = "ghost".into();
    expect_refused(
        s.commit(&[MessageWrite::update(ghost.clone(), ghost.clone())]).await,
        "MessageStore::commit of an Update of a missing seq",
    );
    expect_refused(
        s.commit(&[MessageWrite::Insert(seventh.clone()), MessageWrite::update(ghost.clone(), ghost)]).await,
        "MessageStore::commit of a valid Insert with an Update of a missing seq",
    );
    let refused_update = "MessageStore::commit refused an Update of a missing seq but kept part of the commit";
    assert_eq!(ok(s.message(conversation, 99).await, "message after refusal"), None, "{refused_update}");
    assert_eq!(ok(s.message(conversation, 7).await, "message after refusal"), None, "{refused_update}");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq after refusal"), 6, "{refused_update}");
    assert_eq!(ok(forward(1, 100).await, "history after refusals"), stored, "MessageStore::history after refusals");

    // An Insert that would skip a seq is refused: seqs are dense, so a writer that is not at the
    // conversation's last seq (a second owner during a rebalance) cannot store anything.
    let mut skipping = message(conversation, 8, sender.id, device.id);
    skipping.client_msg_id = "client-skipping".into();
    expect_refused(
        s.commit(&[MessageWrite::Insert(skipping.clone())]).await,
        "MessageStore::commit of an Insert that skips a seq (8 while the last is 6)",
    );
    expect_refused(
        s.commit(&[
            MessageWrite::Insert(seventh.clone()),
            MessageWrite::Insert(message(conversation, 9, sender.id, device.id)),
        ])
        .await,
        "MessageStore::commit of Inserts with a gap between them (7 and 9)",
    );
    assert_eq!(
        ok(s.message(conversation, 7).await, "message after refusal"),
        None,
        "MessageStore::commit refused Inserts with a gap but stored one of them"
    );

    // The store still takes valid commits after refusing some.
    ok(s.commit(&[MessageWrite::Insert(seventh.clone())]).await, "commit after refusals");
    stored.push(seventh);
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), 7, "MessageStore::commit after refusals: last_seq");
    assert_eq!(ok(forward(1, 100).await, "history"), stored, "MessageStore::commit after refusals: history");

    // Writers racing for the next seq (two owners of one conversation for a moment): at most one stores it
    // (a backend may refuse them all when they share one transaction, as the embedded one does: its single
    // sequencer never races), nothing is stored twice or skipped, and a loser that re-reads the last seq
    // can go on.
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let s = s.clone();
            let mut candidate = message(conversation, 8, sender.id, device.id);
            candidate.client_msg_id = format!("client-racer-{i}");
            tokio::spawn(async move { (s.commit(&[MessageWrite::Insert(candidate.clone())]).await, candidate) })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (result, candidate) = racer.await.expect("a racing commit task panicked");
        if result.is_ok() {
            winners.push(candidate);
        }
    }
    assert!(winners.len() <= 1, "MessageStore::commit: {} of {RACERS} racing writers stored seq 8", winners.len());
    let last = ok(s.last_seq(conversation).await, "last_seq after a race");
    assert_eq!(last, 7 + winners.len() as u64, "MessageStore::commit after a race: last_seq");
    assert_eq!(
        ok(s.message(conversation, 8).await, "message after a race"),
        winners.pop(),
        "MessageStore::commit after a race: seq 8 is not the winner's message"
    );
    let mut next = message(conversation, last + 1, sender.id, device.id);
    next.client_msg_id = "client-after-the-race".into();
    ok(s.commit(&[MessageWrite::Insert(next.clone())]).await, "commit at last + 1 after a race");
    assert_eq!(ok(s.last_seq(conversation).await, "last_seq"), last + 1, "MessageStore::commit after a race");
}

// ---------------------------------------------------------------------------------------------------------
// Feeds (MessageStore::commit_with_feed and MessageStore::feed)
// ---------------------------------------------------------------------------------------------------------

/// Dense per-user positions given in commit order, pages after a position, all three kinds of entry, and a
/// refused commit that appends nothing.
pub async fn feeds(stores: &Stores) {
    use crate::store::{FeedAppend, FeedEvent};
    let s = &stores.messages;
    let (alice, device) = create_user_with_device(stores).await;
    let bob = create_user(stores).await;
    let conversation = create_group_of(stores, alice.id).await.id;

    let empty = ok(s.feed(bob.id, 0, 10).await, "feed of a user with none");
    assert!(empty.entries.is_empty(), "MessageStore::feed of a new user must be empty");
    assert_eq!((empty.oldest, empty.last), (1, 0), "MessageStore::feed of a new user: oldest 1 (last + 1), last 0");

    let entry = |user: &User, event: FeedEvent| FeedAppend { user: user.id, event };
    let sent = |seq| FeedEvent::Message { conversation, seq };
    let first = message(conversation, 1, alice.id, device.id);
    let positions = ok(
        s.commit_with_feed(&[MessageWrite::Insert(first.clone())], &[entry(&alice, sent(1)), entry(&bob, sent(1))])
            .await,
        "commit_with_feed",
    );
    assert_eq!(positions, vec![1, 1], "MessageStore::commit_with_feed: each user's first entry is at position 1");

    let receipt = FeedEvent::Receipt { conversation, user: bob.id, delivered: 1, read: 1 };
    let updated = FeedEvent::MessageUpdated { conversation, seq: 1 };
    let mut edited = first.clone();
    edited.body = "edited".into();
    let second = message(conversation, 2, bob.id, device.id);
    let positions = ok(
        s.commit_with_feed(
            &[MessageWrite::update(edited, first.clone()), MessageWrite::Insert(second)],
            &[
                entry(&alice, receipt.clone()),
                entry(&bob, updated.clone()),
                entry(&alice, updated.clone()),
                entry(&bob, sent(2)),
                entry(&alice, sent(2)),
            ],
        )
        .await,
        "commit_with_feed",
    );
    assert_eq!(
        positions,
        vec![2, 2, 3, 3, 4],
        "MessageStore::commit_with_feed: positions must be dense per user, in the order of the entries"
    );

    // A refused commit (seq 2 again) appends nothing: the next positions follow on without a hole.
    expect_refused(
        s.commit_with_feed(
            &[MessageWrite::Insert(message(conversation, 2, alice.id, device.id))],
            &[entry(&alice, sent(2)), entry(&bob, sent(2))],
        )
        .await,
        "MessageStore::commit_with_feed of a used seq",
    );
    let positions =
        ok(s.commit_with_feed(&[], &[entry(&bob, receipt.clone())]).await, "commit_with_feed of entries only");
    assert_eq!(positions, vec![4], "MessageStore::commit_with_feed: a refused commit used up feed positions");

    let page = ok(s.feed(alice.id, 0, 100).await, "feed");
    assert_eq!(
        page.entries,
        vec![(1, sent(1)), (2, receipt.clone()), (3, updated.clone()), (4, sent(2))],
        "MessageStore::feed must return every entry, in position order, as appended"
    );
    assert_eq!((page.oldest, page.last), (1, 4), "MessageStore::feed: oldest and last of alice's feed");
    let page = ok(s.feed(bob.id, 1, 2).await, "feed after 1, limit 2");
    assert_eq!(
        page.entries,
        vec![(2, updated), (3, sent(2))],
        "MessageStore::feed must start after `after` and stop at `limit`"
    );
    assert_eq!((page.oldest, page.last), (1, 4), "MessageStore::feed: oldest and last of bob's feed");
    let page = ok(s.feed(bob.id, 4, 10).await, "feed after the last");
    assert!(page.entries.is_empty(), "MessageStore::feed after the last position must be empty");
    assert_eq!(page.last, 4, "MessageStore::feed after the last position must still say where the feed ends");
    let page = ok(s.feed(bob.id, u64::MAX, 10).await, "feed after u64::MAX");
    assert!(page.entries.is_empty(), "MessageStore::feed after u64::MAX must be empty");
}

// ---------------------------------------------------------------------------------------------------------
// CursorStore
// ---------------------------------------------------------------------------------------------------------

/// Monotonic per-device positions, results in the order of the updates, listing per user.
pub async fn cursors(stores: &Stores) {
    let s = &stores.cursors;
    let (user, phone) = create_user_with_device(stores).await;
    let laptop = fresh_device(user.id, "laptop", [2; 32]);
    ok(stores.users.create_device(&laptop).await, "create_device");
    let (other, others_phone) = create_user_with_device(stores).await;
    let conversation = create_group_of(stores, user.id).await.id;
    ok(
        stores
            .conversations
            .add_member(conversation, &Member { user_id: other.id, role: Role::Member, joined_at: now_millis() }, 100)
            .await,
        "add_member",
    );
    let neighbour = create_group_of(stores, user.id).await.id;
    let update = |user: UserId, device: DeviceId, delivered: Option<u64>, read: Option<u64>| CursorUpdate {
        conversation,
        user,
        device,
        delivered,
        read,
    };

    assert!(
        ok(s.cursors(conversation, user.id).await, "cursors before any advance").is_empty(),
        "CursorStore::cursors must be empty before any advance"
    );

    // Forward moves are stored; lower values are ignored; `None` leaves a position as it is.
    assert_eq!(
        ok(s.advance(&[update(user.id, phone.id, Some(5), Some(3))]).await, "advance"),
        vec![cursor(phone.id, 5, 3)],
        "CursorStore::advance must return the new positions"
    );
    assert_eq!(
        ok(s.advance(&[update(user.id, phone.id, Some(2), Some(1))]).await, "advance backwards"),
        vec![cursor(phone.id, 5, 3)],
        "CursorStore::advance must ignore lower values (positions only move forward)"
    );
    assert_eq!(
        ok(s.advance(&[update(user.id, phone.id, Some(4), Some(4))]).await, "advance mixed"),
        vec![cursor(phone.id, 5, 4)],
        "CursorStore::advance must move each position forward independently"
    );
    assert_eq!(
        ok(s.advance(&[update(user.id, phone.id, None, Some(4))]).await, "advance read only"),
        vec![cursor(phone.id, 5, 4)],
        "CursorStore::advance with an unchanged read and no delivered must change nothing"
    );
    assert_eq!(
        ok(s.advance(&[update(user.id, phone.id, Some(7), None)]).await, "advance delivered only"),
        vec![cursor(phone.id, 7, 4)],
        "CursorStore::advance with only `delivered` must keep `read`"
    );
    assert_eq!(
        ok(s.cursors(conversation, user.id).await, "cursors"),
        vec![cursor(phone.id, 7, 4)],
        "CursorStore::cursors must return the stored positions"
    );

    // Several updates in one call: results in the order of the updates, each device on its own.
    let results = ok(
        s.advance(&[
            update(user.id, laptop.id, Some(1), Some(1)),
            update(user.id, phone.id, Some(8), Some(6)),
            update(other.id, others_phone.id, Some(10), Some(9)),
            update(user.id, laptop.id, Some(0), None),
            update(user.id, phone.id, Some(9), Some(2)),
        ])
        .await,
        "advance of several",
    );
    assert_eq!(
        results,
        vec![
            cursor(laptop.id, 1, 1),
            cursor(phone.id, 8, 6),
            cursor(others_phone.id, 10, 9),
            cursor(laptop.id, 1, 1),
            cursor(phone.id, 9, 6),
        ],
        "CursorStore::advance must return, in the order of the updates, each device's positions after that update"
    );

    // cursors(): every device of that user in that conversation, and only those.
    assert_eq!(
        by_device(ok(s.cursors(conversation, user.id).await, "cursors")),
        by_device(vec![cursor(phone.id, 9, 6), cursor(laptop.id, 1, 1)]),
        "CursorStore::cursors must list every device of the user, and no other user's"
    );
    assert_eq!(
        ok(s.cursors(conversation, other.id).await, "cursors of the other user"),
        vec![cursor(others_phone.id, 10, 9)],
        "CursorStore::cursors must list only the given user's devices"
    );
    assert!(
        ok(s.cursors(neighbour, user.id).await, "cursors of another conversation").is_empty(),
        "CursorStore::cursors mixes conversations"
    );

    // Positions are per conversation.
    assert_eq!(
        ok(
            s.advance(&[CursorUpdate {
                conversation: neighbour,
                user: user.id,
                device: phone.id,
                delivered: Some(2),
                read: Some(2)
            }])
            .await,
            "advance in another conversation"
        ),
        vec![cursor(phone.id, 2, 2)],
        "CursorStore::advance: positions are per conversation"
    );
    assert_eq!(
        by_device(ok(s.cursors(conversation, user.id).await, "cursors")),
        by_device(vec![cursor(phone.id, 9, 6), cursor(laptop.id, 1, 1)]),
        "CursorStore::advance in one conversation changed another"
    );
    assert!(
        ok(s.advance(&[]).await, "advance of nothing").is_empty(),
        "CursorStore::advance of no updates must return no cursors"
    );
}

// ---------------------------------------------------------------------------------------------------------
// MediaStore
// ---------------------------------------------------------------------------------------------------------

/// Threads: the replies a commit files under their root, paged and counted, the conversation's count of them
/// by seq, `last_sent_by` leaving them out, and each user's read position per thread.
pub async fn threads(stores: &Stores) {
    let s = &stores.messages;
    let (alice, alice_device) = create_user_with_device(stores).await;
    let (bob, bob_device) = create_user_with_device(stores).await;
    let conversation = create_group_of(stores, alice.id).await.id;
    let reply = |seq: u64, root: u64, sender: UserId, device: DeviceId| Message {
        thread_root: Some(root),
        ..message(conversation, seq, sender, device)
    };
    // 1 and 2 are roots; 3, 5 and 6 reply to 1, 4 to 2; 7 is in no thread.
    let mut root = message(conversation, 1, alice.id, alice_device.id);
    let first = vec![
        MessageWrite::Insert(root.clone()),
        MessageWrite::Insert(message(conversation, 2, bob.id, bob_device.id)),
        MessageWrite::Insert(reply(3, 1, bob.id, bob_device.id)),
        MessageWrite::Insert(reply(4, 2, alice.id, alice_device.id)),
    ];
    ok(s.commit(&first).await, "commit roots and replies");
    let base = root.clone();
    root.thread = Some(herald_proto::ThreadSummary { replies: 3, last_seq: 6, last_reply_at: now_millis() });
    let second = vec![
        MessageWrite::Insert(reply(5, 1, alice.id, alice_device.id)),
        MessageWrite::Insert(reply(6, 1, bob.id, bob_device.id)),
        MessageWrite::Insert(message(conversation, 7, bob.id, bob_device.id)),
        MessageWrite::update(root.clone(), base),
    ];
    ok(s.commit(&second).await, "commit more replies and the root's summary");
    assert_eq!(
        ok(s.message(conversation, 1).await, "root"),
        Some(root),
        "MessageStore::message must return a root with its thread summary as committed"
    );
    let reply_5 = ok(s.message(conversation, 5).await, "reply").expect("reply 5 is stored");
    assert_eq!(reply_5.thread_root, Some(1), "MessageStore::message must keep a reply's thread_root");

    let page = |from, direction, limit| async move {
        seqs(&ok(s.thread(conversation, 1, from, direction, limit).await, "thread"))
    };
    assert_eq!(
        page(1, Direction::Forward, 10).await,
        vec![3, 5, 6],
        "MessageStore::thread: the root's replies, in seq order"
    );
    assert_eq!(page(4, Direction::Forward, 1).await, vec![5], "MessageStore::thread: from is inclusive, limit holds");
    assert_eq!(page(u64::MAX, Direction::Backward, 2).await, vec![6, 5], "MessageStore::thread backward");
    assert_eq!(page(4, Direction::Backward, 10).await, vec![3], "MessageStore::thread backward from a seq");
    assert!(page(7, Direction::Forward, 10).await.is_empty(), "MessageStore::thread past the last reply");
    assert_eq!(
        seqs(&ok(s.thread(conversation, 2, 1, Direction::Forward, 10).await, "thread of 2")),
        vec![4],
        "MessageStore::thread mixes threads"
    );
    assert!(
        ok(s.thread(conversation, 7, 1, Direction::Forward, 10).await, "thread of none").is_empty(),
        "MessageStore::thread of a message without replies must be empty"
    );

    // Unread in a thread: replies after the position, one's own left out.
    let unread =
        |after, reader| async move { ok(s.thread_unread(conversation, 1, after, reader).await, "thread_unread") };
    assert_eq!(unread(0, alice.id).await, 2, "MessageStore::thread_unread must leave out the reader's own replies");
    assert_eq!(unread(0, bob.id).await, 1, "MessageStore::thread_unread must leave out the reader's own replies");
    assert_eq!(unread(5, alice.id).await, 1, "MessageStore::thread_unread counts only replies after the position");
    assert_eq!(unread(6, alice.id).await, 0, "MessageStore::thread_unread at the last reply");

    // The conversation's thread replies by seq.
    let between = |after, upto| async move {
        ok(s.thread_replies_between(conversation, after, upto).await, "thread_replies_between")
    };
    assert_eq!(between(0, 7).await, 4, "MessageStore::thread_replies_between over the whole conversation");
    assert_eq!(between(3, 5).await, 2, "MessageStore::thread_replies_between is (after, upto]");
    assert_eq!(between(6, 7).await, 0, "MessageStore::thread_replies_between past the replies");
    assert_eq!(between(7, 3).await, 0, "MessageStore::thread_replies_between of an empty range");

    // A thread reply does not move its sender's last_sent_by.
    assert_eq!(
        ok(s.last_sent_by(conversation, alice.id).await, "last_sent_by"),
        1,
        "MessageStore::last_sent_by counted a thread reply"
    );
    assert_eq!(ok(s.last_sent_by(conversation, bob.id).await, "last_sent_by"), 7, "MessageStore::last_sent_by");

    // Read positions per thread and user, forward only.
    let c = &stores.cursors;
    assert_eq!(
        ok(c.thread_read(conversation, alice.id, 1).await, "thread_read"),
        0,
        "CursorStore::thread_read of none"
    );
    assert_eq!(
        ok(c.advance_thread_read(conversation, alice.id, 1, 5).await, "advance"),
        5,
        "CursorStore::advance_thread_read"
    );
    assert_eq!(
        ok(c.advance_thread_read(conversation, alice.id, 1, 3).await, "advance back"),
        5,
        "CursorStore::advance_thread_read moved back"
    );
    assert_eq!(ok(c.thread_read(conversation, alice.id, 1).await, "thread_read"), 5, "CursorStore::thread_read");
    assert_eq!(
        ok(c.thread_read(conversation, bob.id, 1).await, "thread_read"),
        0,
        "CursorStore::thread_read mixes users"
    );
    assert_eq!(
        ok(c.thread_read(conversation, alice.id, 2).await, "thread_read"),
        0,
        "CursorStore::thread_read mixes threads"
    );
}

// ---------------------------------------------------------------------------------------------------------
// SearchStore
// ---------------------------------------------------------------------------------------------------------

/// The backend's answer to `terms` (cut by the core) in `conversations`, as (conversation, seq).
async fn found(
    stores: &Stores,
    query: &str,
    conversations: &[ConversationId],
    offset: usize,
    limit: usize,
) -> Vec<(ConversationId, u64)> {
    let terms = crate::search::words(query);
    let request = crate::store::SearchRequest { terms: &terms, conversations, offset, limit };
    ok(stores.search.search(&request).await, "search").into_iter().map(|h| (h.conversation, h.seq)).collect()
}

/// Polls until the backend's answer is `expected` (as a set): an index may take up to a second after the
/// commit. Panics with `contract` and the last answer after five seconds.
async fn found_eventually(
    stores: &Stores,
    query: &str,
    conversations: &[ConversationId],
    expected: &[(ConversationId, u64)],
    contract: &str,
) -> Vec<(ConversationId, u64)> {
    let want: BTreeSet<(ConversationId, u64)> = expected.iter().copied().collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = found(stores, query, conversations, 0, 100).await;
        if answer.iter().copied().collect::<BTreeSet<_>>() == want && answer.len() == want.len() {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{contract}: searching {query:?} found {answer:?}, not {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Search: every term a prefix of a word, all required; only the conversations asked for; ranked; paged; a
/// notice and a deleted message never found; an edit replaces the words; found within seconds of the commit.
pub async fn search(stores: &Stores) {
    let s = &stores.messages;
    let (alice, device) = create_user_with_device(stores).await;
    let c1 = create_group_of(stores, alice.id).await.id;
    let c2 = create_group_of(stores, alice.id).await.id;
    let elsewhere = create_group_of(stores, alice.id).await.id;
    // A word of this run only: the suite may run again against the same database.
    let tag = format!("t{}", &c1.0.simple().to_string()[20..]);
    let text = |seq: u64, conversation: ConversationId, body: &str| Message {
        body: format!("{tag} {body}"),
        ..message(conversation, seq, alice.id, device.id)
    };
    let notice = Message {
        system: Some(herald_proto::SystemEvent::TitleChanged { title: "meeting".into() }),
        ..text(4, c1, "meeting notes")
    };
    let writes = vec![
        MessageWrite::Insert(text(1, c1, "Meeting tomorrow at noon")),
        MessageWrite::Insert(text(2, c1, "lunch tomorrow?")),
        MessageWrite::Insert(text(3, c1, "meet, meet, meet!")),
        MessageWrite::Insert(notice),
        MessageWrite::Insert(text(1, c2, "the meeting is in the other room")),
        MessageWrite::Insert(text(2, c2, "Café with ZOË")),
        MessageWrite::Insert(text(1, elsewhere, "a meeting elsewhere")),
    ];
    ok(s.commit(&writes).await, "commit messages to search");
    let both = [c1, c2];
    let meet = format!("{tag} meet");
    let ranked = found_eventually(
        stores,
        &meet,
        &both,
        &[(c1, 1), (c1, 3), (c2, 1)],
        "SearchStore::search must find, within seconds of the commit, every message of the conversations asked for \
         with a word starting with each term, and no notice",
    )
    .await;
    assert_eq!(ranked[0], (c1, 3), "SearchStore::search must rank the message with the most matches first: {ranked:?}");
    found_eventually(stores, &format!("{tag} LUNCH tomorrow"), &both, &[(c1, 2)], "every term is required").await;
    found_eventually(stores, &format!("{tag} eeting"), &both, &[], "a term matches the start of a word only").await;
    found_eventually(stores, &meet, &[c2], &[(c2, 1)], "only the conversations asked for are searched").await;
    found_eventually(stores, &format!("{tag} café zo"), &both, &[(c2, 2)], "case does not matter, any script").await;

    let first = found(stores, &meet, &both, 0, 1).await;
    let rest = found(stores, &meet, &both, 1, 10).await;
    assert_eq!(first, vec![(c1, 3)], "SearchStore::search must honour limit, best first");
    assert_eq!(rest.len(), 2, "SearchStore::search must honour offset: {rest:?}");
    assert!(!rest.contains(&(c1, 3)), "an offset page must not repeat the first: {rest:?}");

    // An edit replaces the words; a deletion removes them.
    let lunch = ok(s.message(c1, 2).await, "message").expect("stored");
    let edited = Message { body: format!("{tag} dinner tonight"), edited_at: Some(now_millis()), ..lunch.clone() };
    let noon = ok(s.message(c1, 1).await, "message").expect("stored");
    let deleted = Message { body: String::new(), deleted: true, ..noon.clone() };
    ok(s.commit(&[MessageWrite::update(edited, lunch), MessageWrite::update(deleted, noon)]).await, "edit and delete");
    found_eventually(stores, &format!("{tag} dinner"), &both, &[(c1, 2)], "an edit's new words are found").await;
    found_eventually(stores, &format!("{tag} lunch"), &both, &[], "an edit's old words are gone").await;
    found_eventually(stores, &meet, &both, &[(c1, 3), (c2, 1)], "a deleted message is not found").await;
}

/// A pending upload of `size` declared bytes (for the backends' own tests too).
pub fn upload(owner: UserId, size: u64, created_at: Millis) -> MediaRecord {
    MediaRecord {
        id: MediaId::new(),
        owner,
        state: MediaState::Pending,
        reason: None,
        detail: None,
        declared_size: size,
        filename: Some("photo.png".into()),
        claimed_type: Some("image/png".into()),
        content_type: None,
        content_hash: None,
        created_at,
        updated_at: created_at,
    }
}

/// A content hash no other check (or earlier run) uses, shaped like BLAKE3 hex.
fn fresh_hash() -> String {
    format!("{}{}", MediaId::new().0.simple(), MediaId::new().0.simple())
}

/// A stored content of `size` bytes, hot, last accessed at `at`; `refs` is the store's to set (for the
/// backends' own tests too).
pub fn content_of(hash: &str, size: u64, at: Millis) -> ContentRecord {
    let original = StoredVariant {
        key: format!("{hash}/original"),
        content_type: "image/png".into(),
        size,
        width: Some(640),
        height: Some(480),
    };
    ContentRecord {
        hash: hash.to_owned(),
        content_type: "image/png".into(),
        size,
        width: Some(640),
        height: Some(480),
        duration_ms: None,
        variants: BTreeMap::from([("original".to_owned(), original)]),
        tier: Tier::Hot,
        refs: 0,
        created_at: at,
        last_access: at,
    }
}

fn attachment(media: MediaId, size: u64) -> Attachment {
    Attachment {
        media_id: media,
        content_type: "image/png".into(),
        size,
        filename: Some("photo.png".into()),
        width: Some(640),
        height: Some(480),
    }
}

fn ids_of(records: &[MediaRecord]) -> BTreeSet<MediaId> {
    records.iter().map(|r| r.id).collect()
}

fn hashes_of(contents: &[ContentRecord]) -> BTreeSet<String> {
    contents.iter().map(|c| c.hash.clone()).collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// Uploads, quotas (also under concurrency), completion with deduplication, rejection, attachment
/// references written by message commits, garbage collection, takedowns, the blocklist and tiering.
pub async fn media(stores: &Stores) {
    let s = &stores.media;
    let t0 = now_millis();
    let big_quota = u64::MAX / 2;
    let owner = create_user(stores).await.id;

    // Nothing is there for fresh ids.
    let missing = MediaId::new();
    let missing_hash = fresh_hash();
    assert_eq!(ok(s.media(missing).await, "media of unknown"), None, "MediaStore::media found a ghost");
    assert_eq!(ok(s.content(&missing_hash).await, "content of unknown"), None, "MediaStore::content found a ghost");
    assert_eq!(ok(s.usage(owner).await, "usage of a fresh user"), 0, "MediaStore::usage of a fresh user must be 0");
    assert!(ok(s.attached_in(missing).await, "attached_in of unknown").is_empty(), "MediaStore::attached_in: ghost");
    assert_eq!(ok(s.remove(missing).await, "remove of unknown"), None, "MediaStore::remove of unknown: not None");
    assert!(
        !ok(s.set_progress(missing, MediaState::Scanning, None).await, "set_progress of unknown"),
        "MediaStore::set_progress of an unknown upload must return false"
    );
    assert!(
        !ok(s.reject(missing, RejectReason::Failed, None).await, "reject of unknown"),
        "MediaStore::reject of an unknown upload must return false"
    );
    expect_conflict(
        s.complete(missing, &content_of(&missing_hash, 1, t0)).await,
        "MediaStore::complete of an unknown upload",
    );
    assert_eq!(ok(s.content(&missing_hash).await, "content"), None, "MediaStore::complete refused but stored");
    assert!(!ok(s.is_taken_down(&missing_hash).await, "is_taken_down"), "MediaStore::is_taken_down of a fresh hash");
    assert!(!ok(s.set_tier(&missing_hash, Tier::Cold).await, "set_tier"), "MediaStore::set_tier of unknown: true");
    ok(s.touch(&[(missing_hash.clone(), t0)]).await, "touch of an unknown content");
    assert_eq!(ok(s.content(&missing_hash).await, "content"), None, "MediaStore::touch created a content");

    // Quota at the edge: exactly at the quota is allowed, one byte over is refused and changes nothing.
    let quota = 1_000;
    let a = upload(owner, 600, t0);
    ok(s.create_upload(&a, quota).await, "create_upload under the quota");
    assert_eq!(
        ok(s.media(a.id).await, "media"),
        Some(a.clone()),
        "MediaStore::media must return the upload as created"
    );
    assert_eq!(ok(s.usage(owner).await, "usage"), 600, "MediaStore::create_upload must count the declared size");
    let exact = upload(owner, 400, t0);
    ok(s.create_upload(&exact, quota).await, "create_upload up to exactly the quota");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "MediaStore::create_upload exactly at the quota");
    let over = upload(owner, 1, t0);
    expect_limit(s.create_upload(&over, quota).await, "MediaStore::create_upload one byte over the quota");
    assert_eq!(ok(s.media(over.id).await, "media"), None, "MediaStore::create_upload refused but stored the upload");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "MediaStore::create_upload refused but counted the bytes");

    // Racing for the last bytes: with 300 of 1000 left, exactly three uploads of 100 fit.
    let racer = create_user(stores).await.id;
    ok(s.create_upload(&upload(racer, 700, t0), quota).await, "create_upload before the race");
    let mut racers = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        let store = s.clone();
        let record = upload(racer, 100, t0);
        racers.push(tokio::spawn(async move { (record.id, store.create_upload(&record, quota).await) }));
    }
    let (mut won, mut lost) = (Vec::new(), Vec::new());
    for task in racers {
        match task.await.expect("a racing create_upload task panicked") {
            (id, Ok(())) => won.push(id),
            (id, Err(StoreError::LimitExceeded(_))) => lost.push(id),
            (_, Err(e)) => panic!("store conformance: racing create_upload failed with {e:?}"),
        }
    }
    assert_eq!(
        won.len(),
        3,
        "MediaStore::create_upload: {RACERS} concurrent uploads of 100 bytes with 300 left; {} succeeded",
        won.len()
    );
    assert_eq!(ok(s.usage(racer).await, "usage after race"), 1_000, "MediaStore::create_upload race: usage");
    for id in &lost {
        assert_eq!(ok(s.media(*id).await, "media"), None, "MediaStore::create_upload refused but stored");
    }
    for id in &won {
        assert!(ok(s.media(*id).await, "media").is_some(), "MediaStore::create_upload succeeded but did not store");
    }

    // set_progress on an upload that is not final: state and sniffed type, nothing else.
    assert!(
        ok(s.set_progress(a.id, MediaState::Scanning, Some("image/png")).await, "set_progress"),
        "MediaStore::set_progress of a pending upload must return true"
    );
    let scanning = ok(s.media(a.id).await, "media").expect("the upload exists");
    assert_eq!(
        (scanning.state, scanning.content_type.as_deref()),
        (MediaState::Scanning, Some("image/png")),
        "MediaStore::set_progress must record the state and the sniffed type"
    );
    assert_eq!(
        (scanning.owner, scanning.declared_size, scanning.created_at, &scanning.filename),
        (a.owner, a.declared_size, a.created_at, &a.filename),
        "MediaStore::set_progress changed more than the state and type"
    );
    assert!(ok(s.set_progress(a.id, MediaState::Processing, None).await, "set_progress"), "set_progress: false");
    let processing = ok(s.media(a.id).await, "media").expect("the upload exists");
    assert_eq!(
        (processing.state, processing.content_type.as_deref()),
        (MediaState::Processing, Some("image/png")),
        "MediaStore::set_progress without a type must keep the one recorded"
    );
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "MediaStore::set_progress changed the usage");

    // complete with a new content: refs 1, and the usage moves from the declared to the stored size.
    let hash = fresh_hash();
    let first = ok(s.complete(a.id, &content_of(&hash, 500, t0)).await, "complete");
    assert!(!first.existed, "MediaStore::complete of a new content said it existed");
    assert_eq!(
        first.content,
        ContentRecord { refs: 1, ..content_of(&hash, 500, t0) },
        "MediaStore::complete of a new content must store it as given, with refs 1"
    );
    assert_eq!(
        ok(s.content(&hash).await, "content"),
        Some(first.content.clone()),
        "MediaStore::content after complete"
    );
    let ready = ok(s.media(a.id).await, "media").expect("the upload exists");
    assert_eq!(
        (ready.state, ready.content_hash.as_deref(), ready.owner, ready.declared_size),
        (MediaState::Ready, Some(hash.as_str()), a.owner, a.declared_size),
        "MediaStore::complete must make the upload ready and point it at the content"
    );
    assert_eq!(ok(s.usage(owner).await, "usage"), 900, "MediaStore::complete: usage must move to the stored size");

    // Final uploads refuse progress, rejection and a second completion, and nothing changes.
    assert!(
        !ok(s.set_progress(a.id, MediaState::Processing, None).await, "set_progress of a ready upload"),
        "MediaStore::set_progress of a ready upload must return false"
    );
    assert!(
        !ok(s.reject(a.id, RejectReason::Failed, None).await, "reject of a ready upload"),
        "MediaStore::reject of a ready upload must return false"
    );
    expect_conflict(s.complete(a.id, &content_of(&hash, 500, t0)).await, "MediaStore::complete of a ready upload");
    assert_eq!(ok(s.media(a.id).await, "media"), Some(ready.clone()), "a refused call changed a ready upload");
    assert_eq!(ok(s.content(&hash).await, "content").map(|c| c.refs), Some(1), "a refused complete changed refs");
    assert_eq!(ok(s.usage(owner).await, "usage"), 900, "a refused call changed the usage");

    // A second upload of the same bytes: deduplicated, refs 2, the stored record (not the caller's) wins.
    let mut other_copy = content_of(&hash, 500, t0 + 5);
    other_copy.variants.values_mut().for_each(|v| v.key = format!("{hash}/elsewhere"));
    let second = ok(s.complete(exact.id, &other_copy).await, "complete of the same content");
    assert!(second.existed, "MediaStore::complete of an already stored content must say it existed");
    assert_eq!(
        second.content,
        ContentRecord { refs: 2, ..first.content.clone() },
        "MediaStore::complete of a stored content must return the stored record with refs + 1"
    );
    assert_eq!(ok(s.content(&hash).await, "content"), Some(second.content.clone()), "content after dedup");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "MediaStore::complete (dedup): usage 900 - 400 + 500");

    // reject releases the usage, is false the second time; a completion after it is a Conflict.
    let b = upload(owner, 50, t0);
    ok(s.create_upload(&b, big_quota).await, "create_upload");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_050, "MediaStore::create_upload: usage");
    assert!(
        ok(s.reject(b.id, RejectReason::Malware, Some("EICAR")).await, "reject"),
        "MediaStore::reject of a pending upload must return true"
    );
    let rejected = ok(s.media(b.id).await, "media").expect("a rejected upload is kept");
    assert_eq!(
        (rejected.state, rejected.reason, rejected.detail.as_deref()),
        (MediaState::Rejected, Some(RejectReason::Malware), Some("EICAR")),
        "MediaStore::reject must record the state, the reason and the detail"
    );
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "MediaStore::reject must release the declared size");
    assert!(
        !ok(s.reject(b.id, RejectReason::Failed, None).await, "reject again"),
        "MediaStore::reject of a rejected upload must return false"
    );
    assert!(
        !ok(s.set_progress(b.id, MediaState::Scanning, None).await, "set_progress of a rejected upload"),
        "MediaStore::set_progress of a rejected upload must return false"
    );
    expect_conflict(s.complete(b.id, &content_of(&hash, 500, t0)).await, "MediaStore::complete after reject");
    assert_eq!(ok(s.media(b.id).await, "media"), Some(rejected.clone()), "a refused complete changed the upload");
    assert_eq!(ok(s.content(&hash).await, "content").map(|c| c.refs), Some(2), "a refused complete changed refs");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_000, "a refused complete changed the usage");

    // complete of a taken-down hash is a Conflict, and nothing changes.
    let banned = fresh_hash();
    let nothing = ok(s.take_down(&banned, Some("not stored yet"), t0).await, "take_down of an unstored hash");
    assert_eq!((nothing.content, nothing.uploads), (None, Vec::new()), "take_down of an unstored hash did something");
    assert!(ok(s.is_taken_down(&banned).await, "is_taken_down"), "MediaStore::is_taken_down after take_down");
    let c = upload(owner, 70, t0);
    ok(s.create_upload(&c, big_quota).await, "create_upload");
    expect_conflict(s.complete(c.id, &content_of(&banned, 60, t0)).await, "MediaStore::complete of a taken-down hash");
    assert_eq!(ok(s.media(c.id).await, "media"), Some(c.clone()), "a refused complete changed the upload");
    assert_eq!(ok(s.content(&banned).await, "content"), None, "a refused complete stored the content");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_070, "a refused complete changed the usage");

    // unfinished: every upload that is not final, and none that is.
    let scanning_upload = upload(owner, 10, t0);
    ok(s.create_upload(&scanning_upload, big_quota).await, "create_upload");
    ok(s.set_progress(scanning_upload.id, MediaState::Scanning, None).await, "set_progress");
    let unfinished = ok(s.unfinished().await, "unfinished");
    let listed = ids_of(&unfinished);
    assert!(
        listed.contains(&c.id) && listed.contains(&scanning_upload.id),
        "MediaStore::unfinished must list pending and scanning uploads"
    );
    assert!(
        !listed.contains(&a.id) && !listed.contains(&exact.id) && !listed.contains(&b.id),
        "MediaStore::unfinished must not list ready or rejected uploads"
    );
    assert_eq!(
        unfinished.iter().find(|r| r.id == scanning_upload.id).map(|r| r.state),
        Some(MediaState::Scanning),
        "MediaStore::unfinished must return the current records"
    );

    // Attachment references, written by message commits.
    let (sender, device) = create_user_with_device(stores).await;
    let conversation = create_group_of(stores, sender.id).await.id;
    let neighbour = create_group_of(stores, sender.id).await.id;
    let att_hash = fresh_hash();
    let att = upload(sender.id, 300, t0);
    ok(s.create_upload(&att, big_quota).await, "create_upload");
    ok(s.complete(att.id, &content_of(&att_hash, 300, t0)).await, "complete");
    let unattached = ok(s.unreferenced(t0 + 1, usize::MAX).await, "unreferenced");
    assert!(ids_of(&unattached).contains(&att.id), "MediaStore::unreferenced must list a ready upload never sent");
    let mut here = message(conversation, 1, sender.id, device.id);
    here.attachments = vec![attachment(att.id, 300)];
    let mut also_here = message(conversation, 2, sender.id, device.id);
    also_here.attachments = vec![attachment(att.id, 300)];
    let mut there = message(neighbour, 1, sender.id, device.id);
    there.attachments = vec![attachment(att.id, 300)];
    ok(
        stores
            .messages
            .commit(&[
                MessageWrite::Insert(here.clone()),
                MessageWrite::Insert(also_here.clone()),
                MessageWrite::Insert(there.clone()),
            ])
            .await,
        "commit of messages with attachments",
    );
    assert_eq!(
        sorted(ok(s.attached_in(att.id).await, "attached_in")),
        sorted(vec![conversation, neighbour]),
        "MediaStore::attached_in must list each conversation whose messages attach the upload, once"
    );
    assert_eq!(
        ok(stores.messages.message(conversation, 1).await, "message"),
        Some(here.clone()),
        "MessageStore::message must return the attachments as committed"
    );
    expect_conflict(s.remove(att.id).await, "MediaStore::remove of an attached upload");
    assert!(ok(s.media(att.id).await, "media").is_some(), "MediaStore::remove refused but removed the upload");
    assert_eq!(ok(s.usage(sender.id).await, "usage"), 300, "MediaStore::remove refused but released usage");
    let unattached = ok(s.unreferenced(t0 + 1, usize::MAX).await, "unreferenced");
    assert!(!ids_of(&unattached).contains(&att.id), "MediaStore::unreferenced listed an attached upload");

    // Updates: an edit keeping the attachment keeps the reference; clearing them (a deletion) drops it.
    let mut edited = here.clone();
    edited.body = "edited".into();
    edited.edited_at = Some(now_millis());
    let mut deleted_there = there.clone();
    deleted_there.deleted = true;
    deleted_there.body.clear();
    deleted_there.attachments.clear();
    ok(
        stores
            .messages
            .commit(&[
                MessageWrite::update(edited.clone(), here.clone()),
                MessageWrite::update(deleted_there, there.clone()),
            ])
            .await,
        "commit of an edit and a deletion",
    );
    assert_eq!(
        ok(s.attached_in(att.id).await, "attached_in"),
        vec![conversation],
        "MediaStore::attached_in after deleting the neighbour's message (and editing one that keeps it)"
    );
    let mut cleared = edited.clone();
    cleared.attachments.clear();
    ok(
        stores.messages.commit(&[MessageWrite::update(cleared, edited.clone())]).await,
        "commit of a cleared attachment",
    );
    assert_eq!(
        ok(s.attached_in(att.id).await, "attached_in"),
        vec![conversation],
        "MediaStore::attached_in: another message of the conversation still attaches the upload"
    );
    let mut also_cleared = also_here.clone();
    also_cleared.deleted = true;
    also_cleared.attachments.clear();
    ok(stores.messages.commit(&[MessageWrite::update(also_cleared, also_here.clone())]).await, "commit of a deletion");
    assert!(
        ok(s.attached_in(att.id).await, "attached_in").is_empty(),
        "MediaStore::attached_in after every message dropped the attachment"
    );

    // unreferenced: created before the bound and attached nowhere (pending, rejected or ready alike).
    let young = upload(owner, 5, t0 + 60_000);
    ok(s.create_upload(&young, big_quota).await, "create_upload");
    let unattached = ids_of(&ok(s.unreferenced(t0 + 1, usize::MAX).await, "unreferenced"));
    for (id, what) in
        [(att.id, "a ready upload no longer attached"), (b.id, "a rejected upload"), (c.id, "a pending upload")]
    {
        assert!(unattached.contains(&id), "MediaStore::unreferenced must list {what}");
    }
    assert!(!unattached.contains(&young.id), "MediaStore::unreferenced listed an upload created after the bound");
    assert!(
        ids_of(&ok(s.unreferenced(t0 + 60_001, usize::MAX).await, "unreferenced")).contains(&young.id),
        "MediaStore::unreferenced must list an upload created before the bound"
    );
    assert_eq!(
        ok(s.unreferenced(t0 + 1, 1).await, "unreferenced with a limit").len(),
        1,
        "MediaStore::unreferenced must return at most `limit` uploads"
    );

    // remove: the last reference returns the content (its row gone); usage released; then None.
    assert_eq!(
        ok(s.remove(att.id).await, "remove of the last reference").map(|c| c.hash),
        Some(att_hash.clone()),
        "MediaStore::remove of the last upload of a content must return the content"
    );
    assert_eq!(ok(s.content(&att_hash).await, "content"), None, "MediaStore::remove left the last content row");
    assert_eq!(ok(s.media(att.id).await, "media"), None, "MediaStore::remove left the upload");
    assert_eq!(ok(s.usage(sender.id).await, "usage"), 0, "MediaStore::remove must release the stored size");
    assert_eq!(ok(s.remove(att.id).await, "remove again"), None, "MediaStore::remove of a removed upload");
    assert!(
        !ids_of(&ok(s.unreferenced(t0 + 1, usize::MAX).await, "unreferenced")).contains(&att.id),
        "MediaStore::unreferenced listed a removed upload"
    );
    // Not the last reference: the content stays with one less.
    assert_eq!(ok(s.remove(a.id).await, "remove of one of two"), None, "MediaStore::remove of one of two references");
    assert_eq!(ok(s.content(&hash).await, "content").map(|c| c.refs), Some(1), "MediaStore::remove: refs - 1");
    assert_eq!(ok(s.usage(owner).await, "usage"), 1_085 - 500, "MediaStore::remove of a ready upload: usage");
    // Pending and rejected uploads: their declared size (or nothing) is released.
    assert_eq!(ok(s.remove(c.id).await, "remove of a pending upload"), None, "MediaStore::remove of a pending upload");
    assert_eq!(ok(s.usage(owner).await, "usage"), 585 - 70, "MediaStore::remove of a pending upload: usage");
    assert_eq!(
        ok(s.remove(b.id).await, "remove of a rejected upload"),
        None,
        "MediaStore::remove of a rejected upload"
    );
    assert_eq!(ok(s.usage(owner).await, "usage"), 515, "MediaStore::remove of a rejected upload released usage");
    assert_eq!(ok(s.media(c.id).await, "media"), None, "MediaStore::remove left a pending upload");
    assert!(!ids_of(&ok(s.unfinished().await, "unfinished")).contains(&c.id), "unfinished lists a removed upload");
    assert_eq!(
        ok(s.remove(exact.id).await, "remove of the last reference").map(|c| c.hash),
        Some(hash.clone()),
        "MediaStore::remove of the last upload of a content must return the content"
    );
    assert_eq!(ok(s.content(&hash).await, "content"), None, "MediaStore::remove left the last content row");
    assert_eq!(ok(s.usage(owner).await, "usage"), 15, "MediaStore::remove: usage");

    // take_down: every ready upload of the hash rejected, usage released, content gone; idempotent.
    let (x, y) = (create_user(stores).await.id, create_user(stores).await.id);
    let doomed = fresh_hash();
    let ux = upload(x, 300, t0);
    let uy = upload(y, 250, t0);
    let pending_x = upload(x, 40, t0);
    for u in [&ux, &uy, &pending_x] {
        ok(s.create_upload(u, big_quota).await, "create_upload");
    }
    ok(s.complete(ux.id, &content_of(&doomed, 200, t0)).await, "complete");
    ok(s.complete(uy.id, &content_of(&doomed, 200, t0)).await, "complete");
    assert_eq!((ok(s.usage(x).await, "usage"), ok(s.usage(y).await, "usage")), (240, 200), "usage before takedown");
    let at = now_millis();
    let taken = ok(s.take_down(&doomed, Some("court order"), at).await, "take_down");
    assert_eq!(
        taken.content.as_ref().map(|c| (c.hash.as_str(), c.refs)),
        Some((doomed.as_str(), 2)),
        "MediaStore::take_down must return the removed content row"
    );
    assert_eq!(sorted(taken.uploads), sorted(vec![ux.id, uy.id]), "MediaStore::take_down: the rejected uploads");
    for u in [&ux, &uy] {
        let record = ok(s.media(u.id).await, "media").expect("a taken-down upload is kept, rejected");
        assert_eq!(
            (record.state, record.reason),
            (MediaState::Rejected, Some(RejectReason::TakenDown)),
            "MediaStore::take_down must reject the uploads as taken_down"
        );
    }
    assert_eq!(ok(s.media(pending_x.id).await, "media"), Some(pending_x.clone()), "take_down changed a pending upload");
    assert_eq!(
        (ok(s.usage(x).await, "usage"), ok(s.usage(y).await, "usage")),
        (40, 0),
        "MediaStore::take_down must release the usage of the rejected uploads"
    );
    assert_eq!(ok(s.content(&doomed).await, "content"), None, "MediaStore::take_down left the content row");
    assert!(ok(s.is_taken_down(&doomed).await, "is_taken_down"), "MediaStore::is_taken_down after take_down");
    let again = ok(s.take_down(&doomed, Some("again"), at + 1).await, "take_down again");
    assert_eq!((again.content, again.uploads), (None, Vec::new()), "MediaStore::take_down twice did something");
    assert!(ok(s.is_taken_down(&doomed).await, "is_taken_down"), "MediaStore::is_taken_down after a repeat");
    expect_conflict(
        s.complete(pending_x.id, &content_of(&doomed, 200, t0)).await,
        "MediaStore::complete of a hash taken down while the upload was pending",
    );
    assert_eq!(ok(s.usage(x).await, "usage"), 40, "a refused complete changed the usage");

    // The blocklist: a phash already there keeps its first entry.
    let phash = MediaId::new().0.as_u64_pair().1;
    let first_entry = BlockedHash { phash, note: Some("first".into()), created_at: t0 };
    let duplicate = BlockedHash { phash, note: Some("second".into()), created_at: t0 + 1 };
    let other_entry = BlockedHash { phash: phash ^ 1, note: None, created_at: t0 };
    ok(s.block(&first_entry).await, "block");
    ok(s.block(&duplicate).await, "block of a blocked phash");
    ok(s.block(&other_entry).await, "block");
    let blocklist = ok(s.blocklist().await, "blocklist");
    assert!(blocklist.contains(&first_entry), "MediaStore::blocklist must list a blocked phash as first blocked");
    assert!(!blocklist.contains(&duplicate), "MediaStore::block replaced the first entry of a phash");
    assert_eq!(blocklist.iter().filter(|e| e.phash == phash).count(), 1, "MediaStore::blocklist lists a phash twice");
    assert!(blocklist.contains(&other_entry), "MediaStore::blocklist must list every blocked phash");

    // touch (later times win), idle_contents by tier and time, set_tier.
    let old = t0 - 1_000_000;
    let warm = fresh_hash();
    let holder = upload(owner, 30, t0);
    ok(s.create_upload(&holder, big_quota).await, "create_upload");
    ok(s.complete(holder.id, &content_of(&warm, 30, old)).await, "complete");
    let idle = |tier: Tier, before: Millis| s.idle_contents(tier, before, usize::MAX);
    assert!(hashes_of(&ok(idle(Tier::Hot, old + 1).await, "idle_contents")).contains(&warm), "idle_contents: idle");
    assert!(
        !hashes_of(&ok(idle(Tier::Hot, old).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents listed a content accessed exactly at the bound (it must be before)"
    );
    ok(s.touch(&[(warm.clone(), old + 50)]).await, "touch");
    ok(s.touch(&[(warm.clone(), old + 10)]).await, "touch with an earlier time");
    ok(s.touch(&[(warm.clone(), old + 70), (warm.clone(), old + 60)]).await, "touch twice in one call");
    let touched = ok(s.content(&warm).await, "content").expect("the content exists");
    assert_eq!(touched.last_access, old + 70, "MediaStore::touch: the latest time must win");
    assert!(
        !hashes_of(&ok(idle(Tier::Hot, old + 70).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents listed a content accessed since"
    );
    assert!(
        hashes_of(&ok(idle(Tier::Hot, old + 71).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents must follow touch"
    );
    assert!(
        !hashes_of(&ok(idle(Tier::Cold, t0).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents listed a hot content as cold"
    );
    assert_eq!(ok(s.idle_contents(Tier::Hot, old + 71, 1).await, "idle_contents").len(), 1, "idle_contents: limit");
    assert!(ok(s.set_tier(&warm, Tier::Cold).await, "set_tier"), "MediaStore::set_tier of a stored content: false");
    assert_eq!(
        ok(s.content(&warm).await, "content"),
        Some(ContentRecord { tier: Tier::Cold, ..touched.clone() }),
        "MediaStore::set_tier must change the tier and nothing else"
    );
    assert!(
        hashes_of(&ok(idle(Tier::Cold, old + 71).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents must list a content in its new tier"
    );
    assert!(
        !hashes_of(&ok(idle(Tier::Hot, t0).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents listed a content in its old tier"
    );
    assert_eq!(ok(s.remove(holder.id).await, "remove").map(|c| c.hash), Some(warm.clone()), "remove of a cold content");
    assert!(
        !hashes_of(&ok(idle(Tier::Cold, t0).await, "idle_contents")).contains(&warm),
        "MediaStore::idle_contents listed a removed content"
    );
    assert!(!ok(s.set_tier(&warm, Tier::Hot).await, "set_tier"), "MediaStore::set_tier of a removed content: true");
}

// ---------------------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------------------

fn report_of(reporter: UserId, target: ReportTarget) -> Report {
    Report {
        id: ReportId::new(),
        reporter,
        target,
        reason: ReportReason::Spam,
        comment: "conformance".into(),
        created_at: now_millis(),
        message: None,
        state: ReportState::Open,
        resolution: None,
    }
}

/// `ReportStore`: one open report per reporter and target, listing newest first by state, resolving once.
pub async fn reports(stores: &Stores) {
    let (alice, bob, carol) = (UserId::new(), UserId::new(), UserId::new());
    let of_bob = ReportTarget::User { user_id: bob };
    let of_message = ReportTarget::Message { conversation_id: ConversationId::new(), seq: 7 };

    let mut first = report_of(alice, of_bob.clone());
    first.message = Some(ReportedMessage {
        sender: bob,
        body: "the words as they were".into(),
        sent_at: 1,
        edited_at: Some(2),
        attachments: Vec::new(),
    });
    let (stored, created) = ok(stores.reports.create_report(&first).await, "create_report of a new report");
    assert!(created && stored == first, "store conformance: create_report must store the report as given");
    let again = report_of(alice, of_bob.clone());
    let (stored, created) = ok(stores.reports.create_report(&again).await, "create_report of the same target again");
    assert!(!created && stored == first, "store conformance: a second open report of one target returns the first");
    assert_eq!(
        ok(stores.reports.report(again.id).await, "report of a refused duplicate"),
        None,
        "store conformance: a refused duplicate report must not be stored"
    );
    let by_carol = report_of(carol, of_bob.clone());
    assert!(ok(stores.reports.create_report(&by_carol).await, "another reporter").1, "another reporter files anew");
    let of_msg = report_of(alice, of_message.clone());
    assert!(ok(stores.reports.create_report(&of_msg).await, "another target").1, "another target files anew");
    assert_eq!(ok(stores.reports.report(first.id).await, "report by id"), Some(first.clone()));
    assert_eq!(ok(stores.reports.report(ReportId::new()).await, "report of an unknown id"), None);

    // Newest first, paged with `before`; ids are time-ordered.
    let after_all = Some(ReportId::new());
    let page = ok(stores.reports.reports(None, after_all, 3).await, "reports, newest first");
    let ids: Vec<_> = page.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![of_msg.id, by_carol.id, first.id], "store conformance: reports must list newest first");
    let older = ok(stores.reports.reports(None, Some(by_carol.id), 1).await, "reports before an id");
    assert_eq!(older.first().map(|r| r.id), Some(first.id), "store conformance: `before` is exclusive");

    // Resolving: once, then the report keeps its first resolution and leaves the open list.
    let resolution = ReportResolution { resolved_by: carol, resolved_at: now_millis(), note: "warned".into() };
    let resolved = ok(stores.reports.resolve_report(first.id, &resolution).await, "resolve_report").expect("exists");
    assert_eq!(resolved.state, ReportState::Resolved);
    assert_eq!(resolved.resolution.as_ref(), Some(&resolution));
    assert_eq!(resolved.message, first.message, "store conformance: resolving keeps the reported message");
    let later = ReportResolution { resolved_by: alice, resolved_at: now_millis(), note: "again".into() };
    let unchanged = ok(stores.reports.resolve_report(first.id, &later).await, "resolve twice").expect("exists");
    assert_eq!(unchanged.resolution, Some(resolution), "store conformance: a report is resolved once");
    assert_eq!(ok(stores.reports.resolve_report(ReportId::new(), &later).await, "resolve an unknown id"), None);
    assert_eq!(ok(stores.reports.report(first.id).await, "report after resolving"), Some(unchanged));

    let open = ok(stores.reports.reports(Some(ReportState::Open), after_all, 2).await, "open reports");
    let open: Vec<_> = open.iter().map(|r| r.id).collect();
    assert_eq!(open, vec![of_msg.id, by_carol.id], "store conformance: a resolved report leaves the open list");
    let done = ok(stores.reports.reports(Some(ReportState::Resolved), after_all, 1).await, "resolved reports");
    assert_eq!(done.first().map(|r| r.id), Some(first.id), "store conformance: and joins the resolved list");

    // With the open one resolved, the same reporter may report the same target again.
    let anew = report_of(alice, of_bob);
    assert!(ok(stores.reports.create_report(&anew).await, "report again after resolution").1, "a new open report");
}
