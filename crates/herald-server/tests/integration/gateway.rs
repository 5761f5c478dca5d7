//! The real-time gateway over real WebSocket connections.

use super::helpers::*;
use super::ws::*;
use futures_util::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Guarantee 1 live: two users chat both ways over WebSockets, acks carry seqs, both see each message once.
#[tokio::test]
async fn two_users_chat_both_ways() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let c = app.direct(&alice, &bob).await;
    let (mut a, _) = Ws::connect_synced(&app, &alice, 0).await;
    let (mut b, _) = Ws::connect_synced(&app, &bob, 0).await;

    let ack = a.send_message(c, "a1", "hi bob").await;
    assert_eq!(
        (ack["type"].clone(), ack["seq"].clone(), ack["duplicate"].clone()),
        (json!("ack"), json!(1), json!(false))
    );
    let got = b.events(1).await;
    assert_eq!(got[0]["event"]["message"]["body"], "hi bob");
    assert_eq!(got[0]["event"]["message"]["seq"], 1);

    let ack = b.send_message(c, "b1", "hi alice").await;
    assert_eq!(ack["seq"], 2);
    assert_eq!(message_seqs(&b.events(1).await, c), vec![2], "Bob's own devices get his message too");
    // Alice sees her own message (as every device of hers would) and then Bob's, in order.
    let got = a.events(2).await;
    assert_eq!(message_seqs(&got, c), vec![1, 2]);
    assert_eq!(got[1]["event"]["message"]["body"], "hi alice");
    assert_eq!(positions(&got), vec![1, 2], "feed positions are dense per user");

    // A retry over the socket is answered with the original seq and delivers nothing new.
    let again = a.send_message(c, "a1", "hi bob").await;
    assert_eq!((again["seq"].clone(), again["duplicate"].clone()), (json!(1), json!(true)));
    b.assert_none("event", Duration::from_millis(200)).await;
}

/// Every member of a group receives the same messages in the same order, under concurrent senders.
#[tokio::test]
async fn a_group_receives_one_order() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (g, everyone) = app.populated_group(5).await;
    let mut sockets = Vec::new();
    for user in &everyone {
        sockets.push(Ws::connect_synced(&app, user, 0).await.0);
    }
    const PER_SENDER: usize = 20;
    let mut senders = Vec::new();
    for (i, user) in everyone.iter().take(3).enumerate() {
        let (app, user) = (app.clone(), user.clone());
        senders.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&app, &user).await;
            for n in 0..PER_SENDER {
                let ack = ws.send_message(g, &format!("s{i}-{n}"), &format!("{i}:{n}")).await;
                assert_eq!(ack["type"], "ack", "{ack}");
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let total = 3 * PER_SENDER;
    let mut orders = Vec::new();
    for ws in &mut sockets {
        let events = ws.events(total).await;
        let bodies: Vec<Value> = events.iter().map(|e| e["event"]["message"]["body"].clone()).collect();
        assert_eq!(message_seqs(&events, g), (1..=total as u64).collect::<Vec<_>>(), "seq order");
        orders.push(bodies);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "every member sees the same order");
}

#[tokio::test]
async fn typing_and_presence_reach_exactly_the_right_users() {
    let app = spawn_app_with(|c| c.gateway.presence_coalesce_ms = 50).await;
    typing_and_presence_on(&app, &app).await;
}

/// Alice and Carol connect to `here`, Bob's devices to `there` and `here`: typing reaches exactly the other
/// member, presence exactly the contacts, and Bob is offline only when his last device anywhere is gone.
pub async fn typing_and_presence_on(here: &TestApp, there: &TestApp) {
    let (alice, bob, carol) = (here.register("alice").await, there.register("bob").await, here.register("carol").await);
    let c = here.direct(&alice, &bob).await;
    let (mut a, _) = Ws::connect_synced(here, &alice, 0).await;
    let (mut b, _) = Ws::connect_synced(there, &bob, 0).await;
    let (mut x, _) = Ws::connect_synced(here, &carol, 0).await;

    a.send(json!({"type": "typing", "conversation_id": c, "active": true})).await;
    let typing = b.expect("typing").await;
    assert_eq!((typing["user_id"].clone(), typing["active"].clone()), (json!(alice.id()), json!(true)));
    assert!(typing["ttl_ms"].as_u64().is_some_and(|t| t > 0));
    // Repeats within the interval are coalesced; stopping is forwarded.
    a.send(json!({"type": "typing", "conversation_id": c, "active": true})).await;
    a.send(json!({"type": "typing", "conversation_id": c, "active": false})).await;
    let stop = b.expect("typing").await;
    assert_eq!(stop["active"], false);
    // Typing into a conversation one is not in is refused.
    x.send(json!({"type": "typing", "conversation_id": c, "active": true})).await;
    assert_eq!(x.expect("error").await["code"], "not_found");

    // Bob's second device going away keeps him online; his last going away makes him offline to Alice only.
    let (mut b2, _) = Ws::connect_synced(here, &here.login(&bob).await, 0).await;
    b2.send(json!({"type": "presence", "status": "away"})).await;
    // (Bob coming online may be announced first; a state may be announced twice, never out of order.)
    let mut away = a.expect("presence").await;
    while away["users"][0]["status"] == "online" {
        away = a.expect("presence").await;
    }
    assert_eq!(away["users"][0], json!({"user_id": bob.id(), "status": "away"}));
    drop(b2);
    drop(b);
    let mut offline = a.expect("presence").await;
    while offline["users"][0]["status"] == "away" {
        offline = a.expect("presence").await;
    }
    assert_eq!(offline["users"][0]["status"], "offline");
    assert!(offline["users"][0]["last_seen"].is_i64());
    x.assert_none("presence", Duration::from_millis(300)).await;
    a.assert_none("typing", Duration::from_millis(10)).await;

    // Queries answer only for users who share a conversation.
    x.send(json!({"type": "presence_query", "id": "q", "user_ids": [alice.id(), bob.id()]})).await;
    assert_eq!(x.expect("presence").await["users"], json!([]));
    let (mut b3, _) = Ws::connect_synced(there, &bob, 0).await;
    b3.send(json!({"type": "presence_query", "id": "q2", "user_ids": [alice.id(), carol.id()]})).await;
    let mut answer = b3.expect("presence").await;
    while answer["id"] != "q2" {
        answer = b3.expect("presence").await;
    }
    assert_eq!(answer["users"], json!([{"user_id": alice.id(), "status": "online"}]));
}

/// Presence is announced within direct conversations and groups up to `gateway.presence_fanout_max_members`;
/// members of bigger groups are not told of every arrival (a storm in a big group), they ask.
#[tokio::test]
async fn presence_is_announced_in_small_conversations_and_asked_for_in_big_ones() {
    let app = spawn_app_with(|c| {
        c.gateway.presence_coalesce_ms = 50;
        c.gateway.presence_fanout_max_members = 3;
    })
    .await;
    let (alice, bob, carol, dave) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
        app.register("dave").await,
    );
    app.group(&alice, &[&bob, &carol, &dave]).await;
    let (mut a, _) = Ws::connect_synced(&app, &alice, 0).await;
    let (mut c, _) = Ws::connect_synced(&app, &carol, 0).await;
    // Carol and Alice share only the four-member group: over the limit, so neither is told of the other.
    let (_b, _) = Ws::connect_synced(&app, &bob, 0).await;
    a.assert_none("presence", Duration::from_millis(300)).await;
    c.assert_none("presence", Duration::from_millis(10)).await;

    // Asking works for anyone who shares a conversation, of any size; Dave never connected.
    a.send(json!({"type": "presence_query", "id": "q", "user_ids": [bob.id(), carol.id(), dave.id()]})).await;
    let answer = a.expect("presence").await;
    assert_eq!(answer["id"], "q");
    let statuses: Vec<(Value, Value)> = answer["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| (u["user_id"].clone(), u["status"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (json!(bob.id()), json!("online")),
            (json!(carol.id()), json!("online")),
            (json!(dave.id()), json!("offline"))
        ]
    );

    // A direct conversation is always announced.
    app.direct(&dave, &alice).await;
    let (_d, _) = Ws::connect_synced(&app, &dave, 0).await;
    let online = a.expect("presence").await;
    assert_eq!(online["users"][0], json!({"user_id": dave.id(), "status": "online"}));
    c.assert_none("presence", Duration::from_millis(300)).await;
}

/// Receipts reach the other members and the reader's other devices; unread counts agree everywhere.
#[tokio::test]
async fn receipts_and_unread_counts_agree_across_devices() {
    let app = spawn_app().await;
    let (alice, bob_phone) = (app.register("alice").await, app.register("bob").await);
    let bob_laptop = app.login(&bob_phone).await;
    let c = app.direct(&alice, &bob_phone).await;
    let (mut a, _) = Ws::connect_synced(&app, &alice, 0).await;
    let (mut phone, _) = Ws::connect_synced(&app, &bob_phone, 0).await;
    let (mut laptop, _) = Ws::connect_synced(&app, &bob_laptop, 0).await;
    for i in 0..3 {
        a.send_message(c, &format!("m{i}"), "hello").await;
    }
    a.events(3).await;
    phone.events(3).await;
    laptop.events(3).await;

    phone.send(json!({"type": "delivered", "id": "d", "conversation_id": c, "seq": 3})).await;
    let cursor = phone.expect("cursor").await;
    assert_eq!((cursor["cursor"]["delivered"].clone(), cursor["cursor"]["unread"].clone()), (json!(3), json!(3)));
    phone.send(json!({"type": "read", "id": "r", "conversation_id": c, "seq": 2})).await;
    assert_eq!(phone.expect("cursor").await["cursor"]["unread"], 1);

    // Alice sees Bob's receipts; Bob's laptop sees them too (its unread badge follows).
    let receipt = |e: &Value| e["event"]["kind"] == "receipt" && e["event"]["user_id"] == json!(bob_phone.id());
    let last_for = |events: Vec<Value>| events.into_iter().rfind(receipt).expect("a receipt");
    let at_alice = last_for(a.events(2).await);
    assert_eq!((at_alice["event"]["delivered"].clone(), at_alice["event"]["read"].clone()), (json!(3), json!(2)));
    let at_laptop = last_for(laptop.events(2).await);
    assert_eq!(at_laptop["event"]["read"], 2);
    let (_, state) = app.get(&format!("/api/v1/conversations/{c}/cursor"), bob_laptop.token()).await;
    assert_eq!(state["unread"], 1);

    // Reading the same position again announces nothing new.
    phone.send(json!({"type": "read", "id": "r2", "conversation_id": c, "seq": 2})).await;
    phone.expect("cursor").await;
    a.assert_none("event", Duration::from_millis(200)).await;
}

/// Guarantee 4: a device that was away gets everything it missed, in order, none twice.
#[tokio::test]
async fn reconnecting_device_resumes_without_gaps_or_duplicates() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let g = app.group(&alice, &[&bob]).await;
    let (mut b, _) = Ws::connect_synced(&app, &bob, 0).await;
    app.send(&alice, g, "m1", "one").await;
    app.send(&alice, g, "m2", "two").await;
    let seen = b.events(2).await;
    let last_pos = seen[1]["pos"].as_u64().expect("pos");
    drop(b);

    // While Bob is away: messages, an edit, a reaction, a membership change.
    for i in 3..=7 {
        app.send(&alice, g, &format!("m{i}"), &format!("message {i}")).await;
    }
    let base = format!("/api/v1/conversations/{g}/messages");
    app.call(Method::PATCH, &format!("{base}/1"), Some(alice.token()), Some(json!({"body": "one, edited"}))).await;
    app.call(Method::PUT, &format!("{base}/2/reactions/ok"), Some(alice.token()), None).await;
    let added =
        app.post(&format!("/api/v1/conversations/{g}/members"), alice.token(), json!({"user_id": carol.id()})).await;
    assert_eq!(added.0, StatusCode::CREATED);

    let (mut b, missed) = Ws::connect_synced(&app, &bob, last_pos).await;
    assert_eq!(
        positions(&missed),
        (last_pos + 1..=last_pos + missed.len() as u64).collect::<Vec<_>>(),
        "dense, in order"
    );
    assert_eq!(message_seqs(&missed, g), vec![3, 4, 5, 6, 7, 8], "messages 3..=7 and the membership notice");
    let kinds: Vec<&str> = missed.iter().map(|e| e["event"]["kind"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "message_updated").count(), 2, "{kinds:?}");
    let notice = missed.iter().find(|e| e["event"]["message"]["seq"] == 8).expect("notice");
    assert_eq!(notice["event"]["message"]["system"], json!({"kind": "member_added", "user_id": carol.id()}));
    // Live again afterwards, continuing the positions.
    app.send(&alice, g, "m9", "live").await;
    let live = b.events(1).await;
    assert_eq!(live[0]["pos"].as_u64(), Some(last_pos + missed.len() as u64 + 1));

    // A position the feed no longer has is answered with resync, never a silent gap.
    let small = spawn_app_with(|c| c.storage.feed_retention = 100).await;
    let (x, y) = (small.register("x").await, small.register("y").await);
    let d = small.direct(&x, &y).await;
    for i in 0..150 {
        small.send(&x, d, &format!("k{i}"), "filler").await;
    }
    let mut ws = Ws::connect(&small, &y).await;
    ws.send(json!({"type": "sync", "since": 3})).await;
    let answer = ws.expect("resync").await;
    assert_eq!(answer["pos"], 150);
    ws.send(json!({"type": "sync", "since": 150})).await;
    ws.expect("synced").await;
}

/// A client that never reads is disconnected; it does not stall the others.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_stalls_nobody() {
    let app = spawn_app_with(|c| c.gateway.queue_depth = 16).await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let g = app.group(&alice, &[&bob, &carol]).await;
    // Bob's socket has a tiny receive buffer and he never reads it, so the server's writes back up at once.
    let mut stuck = Ws::connect_with_small_buffer(&app, &bob).await;
    stuck.send(json!({"type": "sync", "since": 0})).await;
    let (mut reader, _) = Ws::connect_synced(&app, &carol, 0).await;
    const N: u64 = 600;
    let body = "x".repeat(12_000);
    let started = std::time::Instant::now();
    let reading = tokio::spawn(async move {
        let events = reader.events(N as usize).await;
        message_seqs(&events, g)
    });
    for i in 0..N {
        app.send(&alice, g, &format!("m{i}"), &body).await;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "senders were stalled");
    assert_eq!(reading.await.expect("reader"), (1..=N).collect::<Vec<_>>(), "the reading member got everything");
    assert_eq!(stuck.close_code().await, Some(4008), "the stuck client is closed as too slow");
    let metrics =
        app.http.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("websocket_slow_consumer_disconnects_total"), "metric counted");
    // It can come back and resume everything.
    let (_, missed) = Ws::connect_synced(&app, &bob, 0).await;
    assert_eq!(message_seqs(&missed, g), (1..=N).collect::<Vec<_>>());
}

#[tokio::test]
async fn handshake_auth_and_rate_limits() {
    let app = spawn_app_with(|c| {
        c.gateway.handshake_timeout_ms = 300;
        c.gateway.handshakes_per_second = 1;
        c.gateway.handshake_burst = 4;
    })
    .await;
    let alice = app.register("alice").await;
    let url = format!("{}/ws?v=1", app.base.replace("http://", "ws://"));

    // No token and no auth frame: an error frame, then closed as a timeout.
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("upgrade");
    let mut silent = Ws::new(socket);
    assert_eq!(silent.next().await.expect("error frame")["code"], "timeout");
    assert_eq!(silent.close_code().await, Some(4408));

    // A bad token at the upgrade is refused with 401; a bad token in the auth frame closes with 4401.
    let bad = tokio_tungstenite::connect_async(format!("{url}&token=nope")).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("upgrade");
    let mut ws = Ws::new(socket);
    ws.send(json!({"type": "auth", "token": "garbage"})).await;
    assert_eq!(ws.next().await.expect("error")["code"], "unauthorized");
    assert_eq!(ws.close_code().await, Some(4401));

    // The auth frame works.
    let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("upgrade");
    let mut ws = Ws::new(socket);
    ws.send(json!({"type": "auth", "token": alice.token()})).await;
    assert_eq!(ws.expect("hello").await["user_id"], json!(alice.id()));

    // A plain GET is not an upgrade: a JSON error like everywhere else.
    let plain = app.call(Method::GET, "/ws?v=1", None, None).await;
    assert_error(&plain, StatusCode::BAD_REQUEST, "bad_request");

    // The burst is spent: the next handshake is refused with 429 and a Retry-After.
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected 429, got {other:?}"),
    }
}

/// The `user` routing hint: accepted when it names the token's user, refused with 400 when it names another
/// (token in the URL, in the header, or in the auth frame) or is not a user id at all; a proxy hashing on it
/// can then never place one user's socket as another's.
#[tokio::test]
async fn the_user_hint_must_name_the_tokens_user() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let base = format!("{}/ws?v=1", app.base.replace("http://", "ws://"));
    let refused_with_400 = |result: Result<_, tokio_tungstenite::tungstenite::Error>, what: &str| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400, "{what}");
            String::from_utf8(response.body().clone().unwrap_or_default()).expect("UTF-8")
        }
        Ok(_) => panic!("{what}: upgraded"),
        Err(other) => panic!("{what}: {other}"),
    };

    // The token's own user: connected as usual.
    let url = format!("{base}&token={}&user={}", alice.token(), alice.id());
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("the right hint upgrades");
    let mut ws = Ws::new(socket);
    assert_eq!(ws.expect("hello").await["user_id"], json!(alice.id()));

    // Another user's id, with the token in the URL.
    let url = format!("{base}&token={}&user={}", alice.token(), bob.id());
    let body = refused_with_400(tokio_tungstenite::connect_async(url).await, "another user's id");
    assert!(body.contains("not the token's user"), "a clear message: {body}");
    assert!(body.contains("bad_request"), "{body}");

    // … with the token in the header.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{base}&user={}", bob.id()).into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {}", alice.token()).parse().expect("header"));
    refused_with_400(tokio_tungstenite::connect_async(request).await, "another user's id, token in the header");

    // Not a user id.
    for bad in ["nope", "%00", "00000000-0000-0000-0000-00000000000"] {
        let url = format!("{base}&token={}&user={bad}", alice.token());
        let body = refused_with_400(tokio_tungstenite::connect_async(url).await, bad);
        assert!(body.contains("user must be"), "{body}");
    }

    // The token in the auth frame: the hint is checked when it arrives; the right one is accepted …
    let (socket, _) = tokio_tungstenite::connect_async(format!("{base}&user={}", alice.id())).await.expect("upgrade");
    let mut ws = Ws::new(socket);
    ws.send(json!({"type": "auth", "token": alice.token()})).await;
    assert_eq!(ws.expect("hello").await["user_id"], json!(alice.id()));
    // … another user's is an error and a close with 4400.
    let (socket, _) = tokio_tungstenite::connect_async(format!("{base}&user={}", bob.id())).await.expect("upgrade");
    let mut ws = Ws::new(socket);
    ws.send(json!({"type": "auth", "token": alice.token()})).await;
    let error = ws.next().await.expect("an error frame");
    assert_eq!(error["code"], "bad_request", "{error}");
    assert_eq!(ws.close_code().await, Some(4400));

    // No hint at all is fine.
    let (mut ws, _) = Ws::connect_synced(&app, &bob, 0).await;
    ws.assert_none("error", Duration::from_millis(50)).await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_change_nothing() {
    let app = spawn_app_with(|c| c.gateway.max_frame_bytes = 2048).await;
    let (alice, bob, mallory) = (app.register("alice").await, app.register("bob").await, app.register("mallory").await);
    let c = app.direct(&alice, &bob).await;
    let (mut m, _) = Ws::connect_synced(&app, &mallory, 0).await;
    for (frame, code) in [
        ("{not json".to_owned(), "bad_request"),
        (json!({"type": "teleport"}).to_string(), "bad_request"),
        (
            json!({"type": "send", "conversation_id": "nope", "client_msg_id": "x", "body": "x"}).to_string(),
            "bad_request",
        ),
        (
            json!({"type": "send", "id": "s", "conversation_id": c, "client_msg_id": "x", "body": "intrusion"})
                .to_string(),
            "not_found",
        ),
        (json!({"type": "edit", "id": "e", "conversation_id": c, "seq": 1, "body": "x"}).to_string(), "not_found"),
        (json!({"type": "read", "id": "r", "conversation_id": c, "seq": 1}).to_string(), "not_found"),
        (
            json!({"type": "send", "id": "s2", "conversation_id": c, "client_msg_id": "", "body": "x"}).to_string(),
            "invalid_input",
        ),
    ] {
        m.socket.send(tokio_tungstenite::tungstenite::Message::text(frame.clone())).await.expect("sent");
        let answer = m.expect("error").await;
        assert_eq!(answer["code"], code, "{frame} -> {answer}");
    }
    m.socket.send(tokio_tungstenite::tungstenite::Message::binary(vec![1, 2, 3])).await.expect("sent");
    assert_eq!(m.expect("error").await["code"], "bad_request");
    // Still connected and working after all that.
    m.send(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(m.expect("pong").await["id"], "p");
    assert_eq!(app.last_seq(&alice, c).await, 0, "nothing stored");

    // Oversized: an error frame, then close 1009.
    m.send(json!({"type": "send", "conversation_id": c, "client_msg_id": "big", "body": "x".repeat(5000)})).await;
    assert_eq!(m.next().await.expect("error")["code"], "payload_too_large");
    assert_eq!(m.close_code().await, Some(1009));
}

#[tokio::test]
async fn heartbeat_and_idle_timeouts() {
    let app = spawn_app_with(|c| {
        c.gateway.heartbeat_secs = 1;
        c.gateway.idle_timeout_secs = 600;
        c.log.apply_timeout_ms = 900;
    })
    .await;
    let alice = app.register("alice").await;
    // A client that does not read never answers the ping: closed after the next interval.
    let mut deaf = Ws::connect(&app, &alice).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(deaf.close_code().await, Some(4408));

    // A client that answers pings but says nothing is closed when idle.
    let idle_app = spawn_app_with(|c| {
        c.gateway.heartbeat_secs = 1;
        c.gateway.idle_timeout_secs = 2;
        c.log.apply_timeout_ms = 900;
    })
    .await;
    let bob = idle_app.register("bob").await;
    let mut quiet = Ws::connect(&idle_app, &bob).await;
    let started = std::time::Instant::now();
    assert_eq!(quiet.close_code().await, Some(4408));
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed too early");
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_with_jitter() {
    let app = spawn_app_with(|c| c.gateway.reconnect_jitter_ms = 3000).await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let c = app.direct(&alice, &bob).await;
    let (mut a, _) = Ws::connect_synced(&app, &alice, 0).await;
    a.send_message(c, "m1", "before shutdown").await;
    let shutdown = tokio::spawn(app.shutdown());
    let hint = a.expect("reconnect").await;
    assert!(hint["after_ms"].as_u64().is_some_and(|ms| ms < 3000), "{hint}");
    assert_eq!(a.close_code().await, Some(1012));
    shutdown.await.expect("shutdown");
}

/// A client that opens a socket and does not finish its upgrade request within the handshake timeout is
/// dropped (the brief's 2 s, shortened here).
#[tokio::test]
async fn an_unfinished_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| c.gateway.handshake_timeout_ms = 300).await;
    let addr = app.base.trim_start_matches("http://");
    // A partial request head, and a connection that sends nothing at all.
    for opening in [&b"GET /ws?v=1 HTTP/1.1\r\nHost: herald\r\n"[..], &b""[..]] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(opening).await.expect("opening");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept an unfinished handshake ({} bytes sent) for 3 s", opening.len());
        assert!(started.elapsed() >= Duration::from_millis(250), "closed before the timeout: {:?}", started.elapsed());
    }
}

/// Logging a device out (or revoking it) closes its open sockets at once.
#[tokio::test]
async fn a_revoked_device_loses_its_socket() {
    let app = spawn_app().await;
    let (alice, bob_phone) = (app.register("alice").await, app.register("bob").await);
    let bob_laptop = app.login(&bob_phone).await;
    let c = app.direct(&alice, &bob_phone).await;
    let (mut phone, _) = Ws::connect_synced(&app, &bob_phone, 0).await;
    let (mut laptop, _) = Ws::connect_synced(&app, &bob_laptop, 0).await;
    let path = format!("/api/v1/devices/{}", bob_phone.session.device_id);
    assert_eq!(app.call(Method::DELETE, &path, Some(bob_laptop.token()), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(phone.close_code().await, Some(4401));
    // The other device is untouched.
    app.send(&alice, c, "m1", "still here").await;
    assert_eq!(message_seqs(&laptop.events(1).await, c), vec![1]);
}
