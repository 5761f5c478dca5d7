//! Two nodes sharing one PostgreSQL database and one Redis (a single instance, or a 3-master Redis Cluster
//! with replicas), started by the test: users spread over the nodes chat live, in one order; a removed
//! member is shut out on the other node as soon as the removal is acknowledged; Redis dying under load loses
//! nothing. The same chat on the Kafka log (a tansu broker of the test's own), whose outcomes cross nodes on
//! the Redis bus. Three nodes on the Kafka log behind nginx from deploy/nginx/herald.conf ([`behind_nginx`]).

mod behind_nginx;

use super::gateway::typing_and_presence_on;
use super::helpers::{self, TestApp, User};
use super::ws::{Ws, message_seqs, positions};
use herald_postgres::testing::TestDatabase;
use herald_proto::ConversationId;
use herald_redis::testing::{OwnRedis, OwnRedisCluster, redis_cli};
use herald_server::config::{Config, StorageBackend};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Two nodes on one database and the given Redis.
async fn two_nodes(redis_urls: Vec<String>, redis_cluster: bool) -> (TestApp, TestApp) {
    let mut nodes = nodes_with(2, redis_urls, redis_cluster, |_| {}).await;
    let b = nodes.pop().expect("node b");
    let a = nodes.pop().expect("node a");
    (a, b)
}

/// `count` nodes on one database and the given Redis, with `tweak` applied to each one's configuration.
async fn nodes_with(
    count: usize,
    redis_urls: Vec<String>,
    redis_cluster: bool,
    tweak: impl Fn(&mut Config),
) -> Vec<TestApp> {
    let database = Arc::new(TestDatabase::create().await);
    let prefix = helpers::unique_name("herald");
    let mut nodes = Vec::new();
    for _ in 0..count {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut config: Config = helpers::test_config(dir.path());
        config.storage.backend = StorageBackend::Postgres;
        config.storage.postgres = database.settings();
        config.cluster.redis_urls = redis_urls.clone();
        config.cluster.redis_cluster = redis_cluster;
        config.cluster.key_prefix = prefix.clone();
        config.log.partitions = 8;
        tweak(&mut config);
        nodes.push(helpers::start(config, dir, Some(database.clone())).await);
    }
    nodes
}

/// Sends over REST, retrying `unavailable` with the same client_msg_id (what a client does while leases
/// settle or Redis is away); returns the seq.
async fn send(app: &TestApp, user: &User, conversation: ConversationId, client_msg_id: &str) -> u64 {
    for _ in 0..100 {
        let (status, ack) = app.post_message(user, conversation, client_msg_id, client_msg_id).await;
        match status {
            StatusCode::CREATED | StatusCode::OK => return ack["seq"].as_u64().expect("seq"),
            StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("send {client_msg_id}: {other} {ack}"),
        }
    }
    panic!("send {client_msg_id}: still unavailable after 100 tries");
}

/// Message events read from `ws` until each of `targets` (conversation, last seq) has been reached, in the
/// order they arrived (other frames skipped).
async fn events_until(ws: &mut Ws, targets: &[(ConversationId, u64)]) -> Vec<Value> {
    let mut out = Vec::new();
    let reached = |out: &[Value]| targets.iter().all(|(c, last)| message_seqs(out, *c).last() == Some(last));
    while !reached(&out) {
        let frame = ws.next().await.expect("an event");
        if frame["type"] == "event" && frame["event"]["kind"] == "message" {
            out.push(frame);
        }
    }
    out
}

async fn chat_across_nodes(a: TestApp, b: TestApp) {
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = a.register("carol").await;
    let direct = a.direct(&alice, &bob).await;
    let group = b.group(&bob, &[&alice, &carol]).await;
    // Alice on both nodes (two devices), Bob on B, Carol on A.
    let alice_b = b.login(&alice).await;
    let (mut alice_on_a, _) = Ws::connect_synced(&a, &alice, 0).await;
    let (mut alice_on_b, _) = Ws::connect_synced(&b, &alice_b, 0).await;
    let (mut bob_on_b, _) = Ws::connect_synced(&b, &bob, 0).await;
    let (mut carol_on_a, _) = Ws::connect_synced(&a, &carol, 0).await;

    // Both conversations get sends through both nodes, so one of them is always not the partition's owner.
    let rounds = 20;
    for i in 0..rounds {
        assert_eq!(send(&a, &alice, direct, &format!("d-a-{i}")).await, 2 * i + 1);
        assert_eq!(send(&b, &bob, direct, &format!("d-b-{i}")).await, 2 * i + 2);
        send(&b, &bob, group, &format!("g-b-{i}")).await;
        send(&a, &carol, group, &format!("g-c-{i}")).await;
    }
    let direct_last = 2 * rounds;
    let group_last = b.last_seq(&bob, group).await;
    let mut seen = Vec::new();
    for (ws, in_direct) in
        [(&mut alice_on_a, true), (&mut alice_on_b, true), (&mut bob_on_b, true), (&mut carol_on_a, false)]
    {
        let mut targets = vec![(group, group_last)];
        if in_direct {
            targets.push((direct, direct_last));
        }
        let events = events_until(ws, &targets).await;
        if in_direct {
            assert_eq!(message_seqs(&events, direct), (1..=direct_last).collect::<Vec<_>>(), "direct: live, in order");
        }
        let group_seqs = message_seqs(&events, group);
        assert_eq!(group_seqs, (1..=group_last).collect::<Vec<_>>(), "group: every seq once, in order");
        seen.push(events);
    }
    // Every member saw the same messages under the same seqs.
    let bodies = |events: &[Value]| -> Vec<(u64, String)> {
        events
            .iter()
            .filter(|e| e["event"]["message"]["conversation_id"] == json!(group))
            .map(|e| (e["event"]["message"]["seq"].as_u64().expect("seq"), e["event"]["message"]["body"].to_string()))
            .collect()
    };
    for events in &seen[1..] {
        assert_eq!(bodies(events), bodies(&seen[0]), "one order for every member");
    }
    // Each device's positions are dense too (nothing skipped on the way between nodes).
    let p = positions(&seen[3]);
    assert!(p.windows(2).all(|w| w[1] > w[0]), "positions grow: {p:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_redis_chat_live_in_one_order() {
    let redis = OwnRedis::start().await;
    let (a, b) = two_nodes(vec![redis.url()], false).await;
    chat_across_nodes(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_a_redis_cluster_chat_live_in_one_order() {
    let redis = OwnRedisCluster::start().await;
    let (a, b) = two_nodes(redis.urls(), true).await;
    chat_across_nodes(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_on_one_node_is_shut_out_on_the_other_at_once() {
    let redis = OwnRedis::start().await;
    let (a, b) = two_nodes(vec![redis.url()], false).await;
    let owner = a.register("owner").await;
    let member = b.register("member").await;
    let group = a.group(&owner, &[&member]).await;
    send(&a, &owner, group, "before").await;
    // The member reads on B, which caches the membership there.
    let history = format!("/api/v1/conversations/{group}/messages");
    for _ in 0..3 {
        let (status, body) = b.get(&history, member.token()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/conversations/{group}/members/{}", member.id()),
            Some(owner.token()),
            None,
        )
        .await;
    assert!(status.is_success(), "remove: {status} {body}");
    // Acknowledged on A: B refuses at once, not after the cache's TTL (60 s).
    let (status, body) = b.get(&history, member.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a removed member reads no more on the other node: {body}");
    let (status, body) =
        b.post(&history, member.token(), json!({"client_msg_id": "after", "body": "still here?"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor sends: {body}");
    // The stores were read through the L2 cache in Redis, and it says how often it answered.
    let metrics = b.http.get(format!("{}/metrics", b.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("cache_hit_rate{") && l.contains("cache_layer=\"l2\"")),
        "/metrics lacks the L2 hit rate"
    );
    let pattern = format!("*{{l2c:{group}}}:e:*");
    let entries = redis_cli(redis.port(), &["--scan", "--pattern", &pattern]).await.expect("scan");
    assert!(!entries.trim().is_empty(), "the group's entries are cached in Redis");
    a.shutdown().await;
    b.shutdown().await;
}

/// A device revoked through one node, and an account suspended through it, lose their WebSockets on the other
/// node as soon as the request is answered (the change bus carries the revocation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_revoked_or_an_account_suspended_on_one_node_is_cut_off_on_the_other() {
    let redis = OwnRedis::start().await;
    let admin_name = helpers::unique_name("admin");
    let name = admin_name.clone();
    let mut nodes = nodes_with(2, vec![redis.url()], false, move |c| c.auth.admins = vec![name.clone()]).await;
    let (b, a) = (nodes.pop().expect("node b"), nodes.pop().expect("node a"));
    let credentials = json!({"username": admin_name, "password": "correct horse"});
    let (status, body) = a.call(reqwest::Method::POST, "/api/v1/accounts", None, Some(credentials)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let admin = User { session: serde_json::from_value(body).expect("session") };
    let phone = a.register("bob").await;
    let laptop = b.login(&phone).await;
    let tablet = b.login(&phone).await;
    let mut phone_ws = Ws::connect(&b, &phone).await;
    let mut laptop_ws = Ws::connect(&b, &laptop).await;
    let mut tablet_ws = Ws::connect(&b, &tablet).await;
    for ws in [&mut phone_ws, &mut laptop_ws, &mut tablet_ws] {
        ws.sync(0).await;
    }

    let revoke = format!("/api/v1/devices/{}", phone.session.device_id);
    let (status, _) = a.call(reqwest::Method::DELETE, &revoke, Some(laptop.token()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(5), phone_ws.close_code()).await;
    assert_eq!(closed.ok().flatten(), Some(4401), "the revoked device's socket on the other node closes");

    let suspend = format!("/api/v1/admin/users/{}/suspend", phone.id());
    let (status, body) = a.post(&suspend, admin.token(), json!({"reason": "test"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for ws in [&mut laptop_ws, &mut tablet_ws] {
        let closed = tokio::time::timeout(Duration::from_secs(5), ws.close_code()).await;
        assert_eq!(closed.ok().flatten(), Some(4401), "the suspended account's sockets on the other node close");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Alice writes to a group of Bob (on B) and Carol (on A) through both nodes while `outage` takes Redis (or
/// part of it) away at the 20th message and brings it back after the 40th, the last: every send is stored
/// (retried with the same client_msg_id while it answers `unavailable`), and both end with every message
/// once, in order. Whichever node owns the group, one of them is on the other node, and nothing is sent after
/// Redis is back: what was lost in transit reaches them only by the catch-up that follows a reconnect.
async fn chat_through_an_outage<F: AsyncFnMut(u64)>(a: TestApp, b: TestApp, mut outage: F) {
    let alice = a.register("alice").await;
    let alice_b = b.login(&alice).await;
    let bob = b.register("bob").await;
    let carol = a.register("carol").await;
    let group = a.group(&alice, &[&bob, &carol]).await;
    let (mut bob_on_b, _) = Ws::connect_synced(&b, &bob, 0).await;
    let (mut carol_on_a, _) = Ws::connect_synced(&a, &carol, 0).await;
    let first = a.last_seq(&alice, group).await + 1;
    let total = 40u64;
    for i in 0..total {
        outage(i).await;
        let (app, user) = if i % 2 == 0 { (&a, &alice) } else { (&b, &alice_b) };
        assert_eq!(send(app, user, group, &format!("m-{i}")).await, first + i);
    }
    outage(total).await;
    let last = first + total - 1;
    for ws in [&mut bob_on_b, &mut carol_on_a] {
        let events = events_until(ws, &[(group, last)]).await;
        assert_eq!(message_seqs(&events, group), (1..=last).collect::<Vec<_>>());
    }
    let history = a.all_messages(&alice, group).await;
    assert_eq!(history.len() as u64, last, "every acknowledged message stored once");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_loses_nothing_and_delivery_resumes() {
    let redis = std::sync::Arc::new(tokio::sync::Mutex::new(OwnRedis::start().await));
    let url = redis.lock().await.url();
    let (a, b) = two_nodes(vec![url], false).await;
    chat_through_an_outage(a, b, async |i| match i {
        20 => redis.lock().await.kill(),
        40 => redis.lock().await.restart().await,
        _ => {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_master_killed_under_load_loses_nothing() {
    let redis = std::sync::Arc::new(tokio::sync::Mutex::new(OwnRedisCluster::start().await));
    let urls = redis.lock().await.urls();
    let (a, b) = two_nodes(urls, true).await;
    chat_through_an_outage(a, b, async |i| match i {
        20 => {
            redis.lock().await.kill_master(0).await;
        }
        40 => {
            redis.lock().await.wait_healthy(Duration::from_secs(30)).await;
        }
        _ => {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_and_presence_cross_nodes() {
    let redis = OwnRedis::start().await;
    let mut nodes = nodes_with(2, vec![redis.url()], false, |c| c.gateway.presence_coalesce_ms = 50).await;
    typing_and_presence_on(&nodes[0], &nodes[1]).await;
    for node in nodes.drain(..) {
        node.shutdown().await;
    }
}

/// A node that dies leaves its users in the registry: the live nodes sweep them (their contacts hear them
/// go offline), and a node that only stalled, finding it was swept, writes its users again. The dead node is
/// made by hand in Redis, as a crashed node leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_users_are_swept_and_a_swept_node_comes_back() {
    let redis = OwnRedis::start().await;
    let prefix = helpers::unique_name("herald");
    let node = nodes_with(1, vec![redis.url()], false, |c| {
        c.gateway.presence_coalesce_ms = 50;
        c.cluster.key_prefix = prefix.clone();
    })
    .await
    .pop()
    .expect("a node");
    let cli = async |args: &[&str]| redis_cli(redis.port(), args).await.expect("redis-cli");
    let (alice, bob) = (node.register("alice").await, node.register("bob").await);
    node.direct(&alice, &bob).await;
    let (mut a, _) = Ws::connect_synced(&node, &alice, 0).await;

    // Bob was connected to a node that died a minute ago.
    let bob_nodes = format!("{prefix}:{{u:{}}}", bob.id());
    cli(&["SADD", &bob_nodes, "ndead"]).await;
    cli(&["HSET", &format!("{bob_nodes}:p"), "status", "online"]).await;
    cli(&["SADD", &format!("{prefix}:{{n:ndead}}:users"), &bob.id().to_string()]).await;
    let dead = json!({"id": "ndead", "url": "http://127.0.0.1:9", "connections": 1, "draining": false,
        "seen_ms": herald_core::now_millis() - 60_000});
    cli(&["HSET", &format!("{prefix}:{{nodes}}"), "ndead", &dead.to_string()]).await;

    let offline = a.expect("presence").await;
    assert_eq!(offline["users"][0]["user_id"], json!(bob.id()));
    assert_eq!(offline["users"][0]["status"], "offline", "{offline}");
    assert_eq!(cli(&["SCARD", &bob_nodes]).await.trim(), "0", "the dead node is out of Bob's set");
    assert_eq!(cli(&["EXISTS", &format!("{prefix}:{{n:ndead}}:swept")]).await.trim(), "1", "and marked swept");

    // The live node was taken for dead by some other node, which swept Alice: it finds out and writes her back.
    let alice_nodes = format!("{prefix}:{{u:{}}}", alice.id());
    let me = cli(&["SMEMBERS", &alice_nodes]).await.trim().to_owned();
    assert!(me.starts_with('n'), "Alice is registered on the node: {me:?}");
    cli(&["SREM", &alice_nodes, &me]).await;
    cli(&["SET", &format!("{prefix}:{{n:{me}}}:swept"), "1"]).await;
    let mut back = false;
    for _ in 0..50 {
        if cli(&["SISMEMBER", &alice_nodes, &me]).await.trim() == "1" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "a swept node writes its users again");
    node.shutdown().await;
    // A clean shutdown takes the node's users out of the registry.
    assert_eq!(cli(&["SCARD", &alice_nodes]).await.trim(), "0");
}

/// The value of `cluster_outcomes_routed_total{direction="received"}` in `app`'s scrape (the tests' nodes
/// share one recorder, so this counts for every node of the test binary).
async fn outcomes_received(app: &TestApp) -> f64 {
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with("cluster_outcomes_routed_total{") && l.contains("direction=\"received\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Two nodes with the Kafka log (a tansu broker of the test's own), PostgreSQL and Redis: a record appended
/// on one node is sequenced by whichever node the consumer group gave its partition, and its outcome comes
/// back to the first node on the Redis bus. Users on both nodes chat in a direct and a group conversation;
/// every member receives every message once, in one order, and once the group has settled every send is
/// acknowledged at its first try on either node (one of the two is never the partition's owner). With Redis
/// killed, the outcomes that must cross end as `unavailable` at their timeout, and their retries store nothing
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_the_kafka_log_chat_live_in_one_order() {
    let Some(broker) = herald_kafka::testing::OwnBroker::start().await else { return };
    let mut redis = OwnRedis::start().await;
    let group_id = helpers::unique_name("herald");
    let brokers = broker.brokers();
    let nodes = nodes_with(2, vec![redis.url()], false, |config| {
        config.cluster.log = herald_server::config::ClusterLogKind::Kafka;
        config.cluster.kafka.brokers = brokers.clone();
        config.cluster.kafka.group_id = group_id.clone();
        config.cluster.kafka.session_timeout_ms = 6_000;
        config.cluster.kafka.heartbeat_interval_ms = 500;
        // tansu holds each fetch for half of this, records at hand or not (docs/cluster.md).
        config.cluster.kafka.fetch_wait_max_ms = 5;
        config.log.apply_timeout_ms = 5_000;
    })
    .await;
    let [a, b]: [TestApp; 2] = nodes.try_into().unwrap_or_else(|_| panic!("two nodes"));
    let received_before = outcomes_received(&a).await;

    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = a.register("carol").await;
    let direct = a.direct(&alice, &bob).await;
    let group = b.group(&bob, &[&alice, &carol]).await;
    let alice_b = b.login(&alice).await;
    let (mut alice_on_a, _) = Ws::connect_synced(&a, &alice, 0).await;
    let (mut alice_on_b, _) = Ws::connect_synced(&b, &alice_b, 0).await;
    let (mut bob_on_b, _) = Ws::connect_synced(&b, &bob, 0).await;
    let (mut carol_on_a, _) = Ws::connect_synced(&a, &carol, 0).await;

    // While the group forms (the second member's join moves partitions), a send may wait past its timeout:
    // the client retries with the same client_msg_id, as any client does.
    let started = std::time::Instant::now();
    send(&a, &alice, direct, "warm-d-a").await;
    send(&b, &bob, direct, "warm-d-b").await;
    send(&b, &bob, group, "warm-g-b").await;
    send(&a, &carol, group, "warm-g-c").await;
    eprintln!("the group settled and the first sends were acknowledged after {:?}", started.elapsed());

    // Settled: each send through either node is acknowledged at once, under the next seq.
    let rounds = 20;
    let mut last = [b.last_seq(&bob, direct).await, b.last_seq(&bob, group).await];
    for i in 0..rounds {
        for (app, user, conversation, which, node) in [
            (&a, &alice, direct, 0, "a"),
            (&b, &bob, direct, 0, "b"),
            (&b, &bob, group, 1, "b"),
            (&a, &carol, group, 1, "a"),
        ] {
            let id = format!("{node}-{i}-{}", user.id());
            let (status, ack) = app.post_message(user, conversation, &id, &id).await;
            assert_eq!(status, StatusCode::CREATED, "send {id} acknowledged at its first try: {ack}");
            last[which] += 1;
            assert_eq!(ack["seq"].as_u64(), Some(last[which]), "the next seq: {ack}");
        }
    }
    let [direct_last, group_last] = last;
    let routed = outcomes_received(&a).await - received_before;
    assert!(routed > 0.0, "outcomes came back from the other node: {routed}");

    let mut seen = Vec::new();
    for (ws, in_direct) in
        [(&mut alice_on_a, true), (&mut alice_on_b, true), (&mut bob_on_b, true), (&mut carol_on_a, false)]
    {
        let mut targets = vec![(group, group_last)];
        if in_direct {
            targets.push((direct, direct_last));
        }
        let events = events_until(ws, &targets).await;
        if in_direct {
            assert_eq!(message_seqs(&events, direct), (1..=direct_last).collect::<Vec<_>>(), "direct: in order");
        }
        assert_eq!(message_seqs(&events, group), (1..=group_last).collect::<Vec<_>>(), "group: each seq once");
        seen.push(events);
    }
    let bodies = |events: &[Value]| -> Vec<(u64, String)> {
        events
            .iter()
            .filter(|e| e["event"]["message"]["conversation_id"] == json!(group))
            .map(|e| (e["event"]["message"]["seq"].as_u64().expect("seq"), e["event"]["message"]["body"].to_string()))
            .collect()
    };
    for events in &seen[1..] {
        assert_eq!(bodies(events), bodies(&seen[0]), "one order for every member");
    }
    // The store agrees: every message once under its seq.
    let stored = a.all_messages(&carol, group).await;
    assert_eq!(stored.len() as u64, group_last, "each send stored once");
    eprintln!("{routed} outcomes routed between the nodes");

    // Presence changes reach the presence topic, keyed by user: Carol came online, and goes offline now.
    drop(carol_on_a);
    let carol_key = carol.id().to_string().into_bytes();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let carol_states = loop {
        let records =
            herald_kafka::testing::read_topic(&brokers, "presence_updates", usize::MAX, Duration::from_secs(2)).await;
        let states: Vec<String> = records
            .iter()
            .filter(|(_, key, _)| *key == carol_key)
            .map(|(_, _, payload)| {
                let update: Value = serde_json::from_slice(payload).expect("a presence update's JSON");
                update["status"].as_str().expect("a status").to_owned()
            })
            .collect();
        if states.last().is_some_and(|s| s == "offline") || std::time::Instant::now() >= deadline {
            break states;
        }
    };
    // A state may be announced twice (docs/cluster.md); the order is what counts.
    let mut changes = carol_states.clone();
    changes.dedup();
    assert_eq!(changes, ["online", "offline"], "Carol's presence on the topic, in order: {carol_states:?}");

    // Redis gone, outcomes cannot cross: a send through the partition owner's node is still acknowledged,
    // one through the other node ends as `unavailable` within its timeout, never acked and never hanging.
    // Its retry with the same client_msg_id, once Redis is back, gets the seq it was stored under.
    redis.kill();
    let mut refused = Vec::new();
    for (app, user, conversation, node) in
        [(&a, &alice, direct, "a"), (&b, &bob, direct, "b"), (&b, &bob, group, "b"), (&a, &carol, group, "a")]
    {
        let id = format!("{node}-redis-away-{}", user.id());
        let asked = std::time::Instant::now();
        let (status, ack) = app.post_message(user, conversation, &id, &id).await;
        assert!(asked.elapsed() < Duration::from_secs(8), "answered within the request's timeout");
        match status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => refused.push((app, user, conversation, id)),
            other => panic!("send {id} with Redis away: {other} {ack}"),
        }
    }
    // Each conversation had one send through its owner's node and one through the other.
    assert_eq!(refused.len(), 2, "only the sends through the node that does not own the partition are refused");
    redis.restart().await;
    for (app, user, conversation, id) in &refused {
        send(app, user, *conversation, id).await;
    }
    let direct_total = b.all_messages(&bob, direct).await.len() as u64;
    let group_total = a.all_messages(&carol, group).await.len() as u64;
    assert_eq!(direct_total + group_total, direct_last + group_last + 4, "each send of that round stored once");
    eprintln!("{} of 4 sends unavailable while Redis was away, stored once after their retries", refused.len());
    a.shutdown().await;
    b.shutdown().await;
}

/// The value of the gauge or counter `name` (no labels) in the scrape of the node at `base`; None when the
/// node does not answer or has not set it yet.
pub(super) async fn scraped(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let response = http.get(format!("{base}/metrics")).timeout(Duration::from_secs(5)).send().await.ok()?;
    let text = response.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `done` holds, checking every 50 ms; panics with `what` after `limit`. Returns the time taken.
pub(super) async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut done: F) -> Duration {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}
