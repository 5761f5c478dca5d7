//! The L2 cache in front of the PostgreSQL stores, against a real Redis (single and cluster) and a real
//! PostgreSQL: the cached stores pass the conformance suite unchanged; what one node caches is served to
//! another, and a change on one node is seen by the other at once; a fill that raced a change is not kept;
//! an invalidation that Redis refused is retried until it lands.

use herald_core::conformance;
use herald_core::store::{Stores, User};
use herald_postgres::PostgresDb;
use herald_postgres::testing::TestDatabase;
use herald_proto::{Conversation, ConversationId, ConversationKind, Member, Role, UserId};
use herald_redis::Settings;
use herald_redis::cached_stores::with_l2;
use herald_redis::l2::{L2Cache, Layer, Lookup, Scope};
use herald_redis::testing::{OwnRedis, OwnRedisCluster, redis_cli};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(3600);

async fn l2(urls: Vec<String>, cluster: bool) -> Arc<L2Cache> {
    let settings = Settings::new(urls, cluster, "http://127.0.0.1:1".into(), b"secret".to_vec());
    L2Cache::connect(&settings, TTL).await.expect("connect the L2 cache")
}

async fn user(stores: &Stores) -> UserId {
    let id = UserId::new();
    let user = User {
        id,
        username: format!("l2-{}", uuid::Uuid::now_v7().simple()),
        password_hash: "x".into(),
        created_at: 1,
        suspension: None,
        deleted_at: None,
    };
    stores.users.create_user(&user).await.expect("create a user");
    id
}

/// A group of `owner` and `member`, created through `stores`.
async fn group(stores: &Stores, owner: UserId, member: UserId) -> ConversationId {
    let conversation = Conversation {
        id: ConversationId::new(),
        kind: ConversationKind::Group,
        title: Some("l2".into()),
        created_by: owner,
        created_at: 1,
    };
    let members = [
        Member { user_id: owner, role: Role::Owner, joined_at: 1 },
        Member { user_id: member, role: Role::Member, joined_at: 1 },
    ];
    stores.conversations.create_group(&conversation, &members).await.expect("create a group");
    conversation.id
}

async fn is_member(stores: &Stores, conversation: ConversationId, user: UserId) -> bool {
    stores.conversations.member(conversation, user).await.expect("read a membership").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_stores_conform_on_single_redis_and_on_a_cluster() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");

    let redis = OwnRedis::start().await;
    let cached = with_l2(db.stores(), l2(vec![redis.url()], false).await);
    conformance::users(&cached).await;
    conformance::conversations(&cached).await;
    // Again, with the cache now holding entries: reads after writes must still see the writes.
    conformance::run_all(cached).await;

    let cluster = OwnRedisCluster::start().await;
    let cached = with_l2(db.stores(), l2(cluster.urls(), true).await);
    conformance::users(&cached).await;
    conformance::conversations(&cached).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_what_another_cached_and_sees_its_changes_at_once() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");
    let redis = OwnRedis::start().await;
    let raw = db.stores();
    let node_a = with_l2(db.stores(), l2(vec![redis.url()], false).await);
    let node_b = with_l2(db.stores(), l2(vec![redis.url()], false).await);

    let (alice, bob) = (user(&raw).await, user(&raw).await);
    let conversation = group(&node_a, alice, bob).await;
    assert!(is_member(&node_a, conversation, bob).await, "A reads the membership (and caches it)");

    // Removed behind the cache's back (straight in PostgreSQL, no invalidation): B still answers "member",
    // so its answer comes from what A cached in Redis, not from the store.
    assert!(raw.conversations.remove_member(conversation, bob).await.expect("remove behind the cache"));
    assert!(is_member(&node_b, conversation, bob).await, "B is served A's cached entry");

    // Added back and removed through node A, as the server does: B sees the removal the moment it is stored.
    let back = Member { user_id: bob, role: Role::Member, joined_at: 2 };
    node_a.conversations.add_member(conversation, &back, 100).await.expect("add back");
    assert!(is_member(&node_b, conversation, bob).await);
    assert!(node_a.conversations.remove_member(conversation, bob).await.expect("remove through A"));
    assert!(!is_member(&node_b, conversation, bob).await, "B must not serve a membership A removed");
    let members = node_b.conversations.members(conversation).await.expect("members");
    assert_eq!(members.iter().map(|m| m.user_id).collect::<Vec<_>>(), vec![alice], "B's member list is fresh");

    // A title changed through B is seen by A.
    node_a.conversations.conversation(conversation).await.expect("conversation").expect("exists");
    node_b.conversations.set_title(conversation, "renamed").await.expect("rename");
    let seen = node_a.conversations.conversation(conversation).await.expect("conversation").expect("exists");
    assert_eq!(seen.title.as_deref(), Some("renamed"));

    // The entries live in Redis, tagged with their scope's version.
    let key = format!("herald:{{l2c:{conversation}}}:e:member:{bob}");
    let stored = redis_cli(redis.port(), &["get", &key]).await.expect("redis-cli get");
    assert!(stored.trim().starts_with(|c: char| c.is_ascii_digit()), "a tagged entry at {key}: {stored:?}");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_raced_a_change_is_not_kept() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");
    let redis = OwnRedis::start().await;
    let raw = db.stores();
    let cache = l2(vec![redis.url()], false).await;
    let cached = with_l2(db.stores(), cache.clone());
    let (alice, bob) = (user(&raw).await, user(&raw).await);
    let conversation = group(&raw, alice, bob).await;
    let scope = Scope::Conversation(conversation);
    let entry = format!("member:{bob}");
    let layer = Layer::new("test");

    // A reader misses and reads the store (bob is a member)…
    let Lookup::Miss(Some(ticket)) = cache.get::<Option<Member>>(&layer, scope, &entry).await else {
        panic!("a first read must miss with a ticket");
    };
    let read = raw.conversations.member(conversation, bob).await.expect("read");
    assert!(read.is_some());
    // …a removal is stored and invalidated before the reader writes what it read…
    assert!(cached.conversations.remove_member(conversation, bob).await.expect("remove"));
    cache.fill(ticket, &read).await;
    // …and what it read is never served.
    assert!(!is_member(&cached, conversation, bob).await, "a fill older than the removal was kept");
    assert!(matches!(cache.get::<Option<Member>>(&layer, scope, &entry).await, Lookup::Hit(None)), "refilled fresh");
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_redis_refused_is_retried_until_it_lands() {
    let database = TestDatabase::create().await;
    let db = PostgresDb::open(&database.settings()).await.expect("open the PostgreSQL store");
    let redis = OwnRedis::start().await;
    let port = redis.port();
    // Node A logs in as a user of its own, whose rights the test takes away and gives back: Redis refusing
    // A's commands while serving B's, as a partition between A and Redis does.
    let grant = ["acl", "setuser", "nodea", "on", ">pw", "~*", "&*", "+@all"];
    redis_cli(port, &grant).await.expect("create the ACL user");
    let cache_a = l2(vec![format!("redis://nodea:pw@127.0.0.1:{port}")], false).await;
    let node_a = with_l2(db.stores(), cache_a.clone());
    let node_b = with_l2(db.stores(), l2(vec![redis.url()], false).await);
    let raw = db.stores();
    let (alice, bob) = (user(&raw).await, user(&raw).await);
    let conversation = group(&raw, alice, bob).await;
    assert!(is_member(&node_b, conversation, bob).await, "B caches the membership");

    redis_cli(port, &["acl", "setuser", "nodea", "-@all", "+ping", "+auth", "+hello", "+client"])
        .await
        .expect("take A's rights");
    assert!(node_a.conversations.remove_member(conversation, bob).await.expect("the removal is stored"));
    assert_eq!(cache_a.pending(), 1, "the refused invalidation waits for its retry");
    assert!(!is_member(&node_a, conversation, bob).await, "A reads a scope with a pending invalidation from the store");

    redis_cli(port, &grant).await.expect("give A's rights back");
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_member(&node_b, conversation, bob).await {
        assert!(Instant::now() < deadline, "the invalidation never landed: B still serves the removed membership");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache_a.pending(), 0);
    db.close().await;
}
