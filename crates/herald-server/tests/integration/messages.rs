use super::helpers::*;
use futures_like::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod futures_like {
    /// Awaits every handle, panicking on a panicked task.
    pub async fn join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

/// Guarantee 1: many concurrent senders to one conversation get dense, unique seqs, and every member sees
/// the same order.
#[tokio::test]
async fn concurrent_senders_get_dense_seqs_and_everyone_sees_one_order() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (g, senders) = app.populated_group(7).await;
    let (owner, members) = (&senders[0], &senders[1..]);

    const PER_SENDER: usize = 25;
    let mut handles = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        for n in 0..PER_SENDER {
            let (app, sender) = (app.clone(), sender.clone());
            handles.push(tokio::spawn(
                async move { app.send(&sender, g, &format!("s{i}-{n}"), &format!("{i}:{n}")).await },
            ));
        }
    }
    let mut acked = join_all(handles).await;
    acked.sort_unstable();
    let total = (senders.len() * PER_SENDER) as u64;
    assert_eq!(acked, (1..=total).collect::<Vec<_>>(), "acked seqs are exactly 1..={total}");

    let reference = app.all_messages(owner, g).await;
    assert_eq!(seqs(&reference), (1..=total).collect::<Vec<_>>());
    for member in members {
        assert_eq!(app.all_messages(member, g).await, reference, "every member sees the same history");
    }
    // Every body appears exactly once.
    let mut bodies: Vec<String> = reference.iter().map(|m| m["body"].as_str().unwrap_or_default().to_owned()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len() as u64, total);
}

/// Guarantee 3: a retried send with the same client_msg_id returns the original seq and stores nothing new,
/// also when the retries race each other.
#[tokio::test]
async fn idempotent_retries_under_concurrency() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let c = app.direct(&alice, &bob).await;
    app.send(&bob, c, "before", "first").await;

    let mut handles = Vec::new();
    for _ in 0..10 {
        let (app, alice) = (app.clone(), alice.clone());
        handles.push(tokio::spawn(async move {
            app.post(
                &format!("/api/v1/conversations/{c}/messages"),
                alice.token(),
                json!({"client_msg_id": "same", "body": "once"}),
            )
            .await
        }));
    }
    let results = join_all(handles).await;
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let replayed = results.iter().filter(|(s, b)| *s == StatusCode::OK && b["duplicate"] == true).count();
    assert_eq!((created, replayed), (1, 9), "{results:?}");
    let first = &results[0].1;
    for (_, ack) in &results {
        assert_eq!(ack["seq"], first["seq"]);
        assert_eq!(ack["message_id"], first["message_id"]);
    }
    // Later retries (after it is stored) answer the same; the same id from another sender is another message.
    let (status, later) = app
        .post(
            &format!("/api/v1/conversations/{c}/messages"),
            alice.token(),
            json!({"client_msg_id": "same", "body": "different body"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(later["seq"], first["seq"]);
    let bobs = app.send(&bob, c, "same", "bob's own").await;
    assert_eq!(bobs, 3);
    let all = app.all_messages(&alice, c).await;
    assert_eq!(seqs(&all), vec![1, 2, 3], "stored once");
    assert_eq!(all[1]["body"], "once");
}

#[tokio::test]
async fn edit_delete_react_and_reply() {
    let app = spawn_app().await;
    let (owner, member, other) = (app.register("o").await, app.register("m").await, app.register("x").await);
    let g = app.group(&owner, &[&member, &other]).await;
    let m1 = app.send(&member, g, "1", "hello").await;
    let base = format!("/api/v1/conversations/{g}/messages");

    let (status, reply) =
        app.post(&base, other.token(), json!({"client_msg_id": "r", "body": "hi back", "reply_to": m1})).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let bad_reply = app.post(&base, other.token(), json!({"client_msg_id": "r2", "body": "?", "reply_to": 99})).await;
    assert_error(&bad_reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");

    // Only the sender edits.
    let by_other =
        app.call(Method::PATCH, &format!("{base}/{m1}"), Some(other.token()), Some(json!({"body": "hacked"}))).await;
    assert_error(&by_other, StatusCode::FORBIDDEN, "forbidden");
    let (status, edited) = app
        .call(Method::PATCH, &format!("{base}/{m1}"), Some(member.token()), Some(json!({"body": "hello, edited"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["body"], "hello, edited");
    assert!(edited["edited_at"].is_i64());

    // Reactions: add twice is one, two users, remove.
    let react = |who: &User, emoji: &str, method: Method| {
        let (p, t) = (format!("{base}/{m1}/reactions/{emoji}"), who.token().to_owned());
        let app = &app;
        async move { app.call(method, &p, Some(&t), None).await }
    };
    react(&other, "👍", Method::PUT).await;
    react(&other, "👍", Method::PUT).await;
    let (status, reacted) = react(&owner, "👍", Method::PUT).await;
    assert_eq!(status, StatusCode::OK, "{reacted}");
    assert_eq!(reacted["reactions"]["👍"].as_array().expect("users").len(), 2);
    let (_, unreacted) = react(&other, "👍", Method::DELETE).await;
    assert_eq!(unreacted["reactions"]["👍"], json!([owner.id()]));

    // A member cannot delete another's message; the sender and a group admin can. Deletion is a tombstone.
    let m2 = app.send(&other, g, "2", "to be removed by the owner").await;
    assert_error(
        &app.call(Method::DELETE, &format!("{base}/{m1}"), Some(other.token()), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (status, gone) = app.call(Method::DELETE, &format!("{base}/{m1}"), Some(member.token()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((gone["deleted"].clone(), gone["body"].clone()), (json!(true), json!("")));
    assert_eq!(app.call(Method::DELETE, &format!("{base}/{m2}"), Some(owner.token()), None).await.0, StatusCode::OK);
    let edit_deleted =
        app.call(Method::PATCH, &format!("{base}/{m1}"), Some(member.token()), Some(json!({"body": "back"}))).await;
    assert_error(&edit_deleted, StatusCode::CONFLICT, "conflict");
    assert_error(&react(&owner, "🎉", Method::PUT).await, StatusCode::CONFLICT, "conflict");

    let all = app.all_messages(&owner, g).await;
    assert_eq!(seqs(&all), vec![1, 2, 3], "tombstones keep their seq");
    assert_eq!(all[0]["deleted"], true);
    assert_eq!(all[1]["reply_to"], m1);
    let missing =
        app.call(Method::PATCH, &format!("{base}/77"), Some(member.token()), Some(json!({"body": "x"}))).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn history_pages_both_ways() {
    let app = spawn_app().await;
    let (a, b) = (app.register("a").await, app.register("b").await);
    let c = app.direct(&a, &b).await;
    for i in 1..=7 {
        app.send(&a, c, &format!("m{i}"), &format!("body {i}")).await;
    }
    let base = format!("/api/v1/conversations/{c}/messages");
    let (_, p) = app.get(&format!("{base}?limit=3"), b.token()).await;
    assert_eq!(seqs(p["messages"].as_array().expect("page")), vec![1, 2, 3]);
    assert_eq!(p["next"], 4);
    let (_, p) = app.get(&format!("{base}?from=6&limit=3"), b.token()).await;
    assert_eq!(seqs(p["messages"].as_array().expect("page")), vec![6, 7]);
    assert!(p["next"].is_null());
    let (_, p) = app.get(&format!("{base}?dir=backward&limit=3"), b.token()).await;
    assert_eq!(seqs(p["messages"].as_array().expect("page")), vec![7, 6, 5]);
    assert_eq!(p["next"], 4);
    let (_, p) = app.get(&format!("{base}?dir=backward&from=2&limit=3"), b.token()).await;
    assert_eq!(seqs(p["messages"].as_array().expect("page")), vec![2, 1]);
    assert!(p["next"].is_null());
    let (_, p) = app.get(&format!("{base}?from=50"), b.token()).await;
    assert_eq!(p["messages"], json!([]));
    assert_eq!(p["last_seq"], 7);
}

/// Unread counts come from the server and agree across a user's devices.
#[tokio::test]
async fn cursors_and_unread_counts_agree_across_devices() {
    let app = spawn_app().await;
    let (alice, bob_phone) = (app.register("alice").await, app.register("bob").await);
    let bob_laptop = app.login(&bob_phone).await;
    let c = app.direct(&alice, &bob_phone).await;
    for i in 0..3 {
        app.send(&alice, c, &format!("m{i}"), "hey").await;
    }
    let cursor = format!("/api/v1/conversations/{c}/cursor");
    let (_, state) = app.get(&cursor, bob_laptop.token()).await;
    assert_eq!((state["unread"].clone(), state["last_seq"].clone()), (json!(3), json!(3)));

    let (status, state) =
        app.call(Method::PUT, &cursor, Some(bob_phone.token()), Some(json!({"delivered": 3, "read": 2}))).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["unread"], 1);
    // The laptop sees the same count, and the per-device positions.
    let (_, state) = app.get(&cursor, bob_laptop.token()).await;
    assert_eq!(state["unread"], 1);
    assert_eq!(state["read"], 2);
    let devices = state["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device_id"], json!(bob_phone.session.device_id));
    let (_, list) = app.get("/api/v1/conversations", bob_laptop.token()).await;
    assert_eq!(list["conversations"][0]["unread"], 1);

    // Positions only move forward, and never past the last message.
    let (_, state) = app.call(Method::PUT, &cursor, Some(bob_phone.token()), Some(json!({"read": 1}))).await;
    assert_eq!(state["read"], 2);
    let past = app.call(Method::PUT, &cursor, Some(bob_phone.token()), Some(json!({"read": 4}))).await;
    assert_error(&past, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (_, state) = app.call(Method::PUT, &cursor, Some(bob_laptop.token()), Some(json!({"read": 3}))).await;
    assert_eq!(state["unread"], 0);
    assert_eq!(state["devices"].as_array().expect("devices").len(), 2);
}

#[tokio::test]
async fn sends_are_rate_limited_per_user() {
    let app = spawn_app_with(|c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 3;
    })
    .await;
    let (a, b) = (app.register("a").await, app.register("b").await);
    let c = app.direct(&a, &b).await;
    for i in 0..3 {
        app.send(&a, c, &format!("m{i}"), "ok").await;
    }
    let (status, body) = app
        .post(
            &format!("/api/v1/conversations/{c}/messages"),
            a.token(),
            json!({"client_msg_id": "x", "body": "too many"}),
        )
        .await;
    assert_error(&(status, body.clone()), StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{body}");
    // Another user is not affected.
    app.send(&b, c, "b0", "fine").await;
    assert_eq!(app.last_seq(&a, c).await, 4, "the refused send stored nothing");
}
