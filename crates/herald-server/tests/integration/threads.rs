//! Threads: replies grouped under a root message, in the conversation's own seqs, with their own unread state.

use super::helpers::*;
use super::ws::Ws;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

fn unread_of(list: &Value, conversation: herald_proto::ConversationId) -> u64 {
    let rows = list["conversations"].as_array().expect("conversations");
    let row = rows.iter().find(|r| r["conversation"]["id"] == json!(conversation)).expect("the conversation is listed");
    row["unread"].as_u64().expect("unread")
}

#[tokio::test]
async fn replies_in_a_thread_keep_their_own_unread_state() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let g = app.group(&alice, &[&bob, &carol]).await;
    let root = app.send(&alice, g, "root", "lunch on Friday?").await;
    let (mut carols, _) = Ws::connect_synced(&app, &carol, 0).await;

    // Bob replies in the thread over the WebSocket; Carol receives the reply as any message, marked as such.
    let mut bobs = Ws::connect(&app, &bob).await;
    bobs.send(json!({"type": "send", "id": "t1", "conversation_id": g, "client_msg_id": "t1", "body": "yes", "thread_root": root}))
        .await;
    let ack = bobs.expect("ack").await;
    let first_reply = ack["seq"].as_u64().expect("seq");
    assert_eq!(first_reply, root + 1, "a reply takes the conversation's next seq");
    let event = carols.events(1).await.remove(0);
    assert_eq!(event["event"]["message"]["thread_root"], root, "{event}");
    assert_eq!(event["event"]["message"]["body"], "yes");

    // Over REST too, and a retry stores nothing new.
    let base = format!("/api/v1/conversations/{g}");
    let reply = |user: &User, key: &str, body: &str| {
        let (path, token) = (format!("{base}/messages"), user.token().to_owned());
        let body = json!({"client_msg_id": key, "body": body, "thread_root": root});
        let app = &app;
        async move { app.post(&path, &token, body).await }
    };
    let (status, second) = reply(&carol, "t2", "me too").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let (status, again) = reply(&carol, "t2", "me too").await;
    assert_eq!((status, again["duplicate"].clone()), (StatusCode::OK, json!(true)));
    let after = app.send(&bob, g, "main", "in the main timeline").await;

    // The root's summary counts each reply once and names the newest.
    let history = app.all_messages(&carol, g).await;
    assert_eq!(history[0]["thread"]["replies"], 2, "{}", history[0]);
    assert_eq!(history[0]["thread"]["last_seq"], second["seq"]);
    assert!(history[0]["thread_root"].is_null() && history[3]["thread"].is_null());

    // The thread's replies, paged either way.
    let (status, page) = app.get(&format!("{base}/threads/{root}/messages"), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(seqs(&page), vec![first_reply, first_reply + 1]);
    assert_eq!((page["last_seq"].clone(), page["next"].clone()), (json!(first_reply + 1), Value::Null));
    let (_, back) = app.get(&format!("{base}/threads/{root}/messages?dir=backward&limit=1"), alice.token()).await;
    assert_eq!((seqs(&back), back["next"].clone()), (vec![first_reply + 1], json!(first_reply)));
    let (_, rest) =
        app.get(&format!("{base}/threads/{root}/messages?dir=backward&from={first_reply}"), alice.token()).await;
    assert_eq!((seqs(&rest), rest["next"].clone()), (vec![first_reply], Value::Null));

    // Unread: the conversation's count leaves the replies out, and each thread counts others' replies.
    let (_, list) = app.get("/api/v1/conversations", alice.token()).await;
    assert_eq!(unread_of(&list, g), 1, "only Bob's main message is unread for Alice: {list}");
    let (_, list) = app.get("/api/v1/conversations", carol.token()).await;
    assert_eq!(unread_of(&list, g), 2, "the root and Bob's main message, not the replies: {list}");
    let thread = |user: &User| {
        let (path, token) = (format!("{base}/threads/{root}"), user.token().to_owned());
        let app = &app;
        async move { app.get(&path, &token).await.1 }
    };
    let (alices, carols_thread) = (thread(&alice).await, thread(&carol).await);
    assert_eq!(
        (alices["replies"].clone(), alices["unread"].clone(), alices["read"].clone()),
        (json!(2), json!(2), json!(0))
    );
    assert_eq!(carols_thread["unread"], 1, "Carol's own reply is not unread for her: {carols_thread}");
    assert_eq!(alices["root"]["body"], "lunch on Friday?");

    // Reading the thread moves its own position only, forward only, never past its newest reply.
    let read = |user: &User, position: u64| {
        let (path, token) = (format!("{base}/threads/{root}/read"), user.token().to_owned());
        let app = &app;
        async move { app.call(Method::PUT, &path, Some(&token), Some(json!({"read": position}))).await }
    };
    let (status, state) = read(&alice, first_reply).await;
    assert_eq!(
        (status, state["read"].clone(), state["unread"].clone()),
        (StatusCode::OK, json!(first_reply), json!(1))
    );
    let (_, state) = read(&alice, first_reply + 1).await;
    assert_eq!(state["unread"], 0);
    let (_, state) = read(&alice, 1).await;
    assert_eq!(state["read"], first_reply + 1, "a thread's read position never moves back");
    assert_error(&read(&alice, after).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let (_, list) = app.get("/api/v1/conversations", alice.token()).await;
    assert_eq!(unread_of(&list, g), 1, "reading a thread leaves the conversation's count alone");
    // Another user's position is their own.
    assert_eq!(thread(&bob).await["unread"], 1, "Carol's reply is unread for Bob");
}

#[tokio::test]
async fn a_reply_needs_a_root_that_can_have_a_thread() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let g = app.group(&alice, &[&bob]).await;
    let root = app.send(&alice, g, "root", "a root").await;
    let path = format!("/api/v1/conversations/{g}/messages");
    let send = |key: &str, thread_root: Value| {
        let (path, token) = (path.clone(), bob.token().to_owned());
        let body = json!({"client_msg_id": key, "body": "reply", "thread_root": thread_root});
        let app = &app;
        async move { app.post(&path, &token, body).await }
    };
    let (status, reply) = send("ok", json!(root)).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let reply_seq = reply["seq"].as_u64().expect("seq");

    let (_, nested) = send("nested", json!(reply_seq)).await;
    assert_eq!(nested["code"], "invalid_input", "a reply cannot root a thread: {nested}");
    assert!(nested["message"].as_str().expect("message").contains(&format!("reply to {root} instead")), "{nested}");
    assert_error(&send("zero", json!(0)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(&send("future", json!(99)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(&send("text", json!("1")).await, StatusCode::BAD_REQUEST, "bad_request");
    // A notice (Carol added) has no thread.
    let (status, _) =
        app.post(&format!("/api/v1/conversations/{g}/members"), alice.token(), json!({"user_id": carol.id()})).await;
    assert_eq!(status, StatusCode::CREATED);
    let notice = app.last_seq(&alice, g).await;
    assert_error(&send("notice", json!(notice)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    // A deleted root takes no more replies; its replies stay readable.
    let deleted = app.call(Method::DELETE, &format!("{path}/{root}"), Some(alice.token()), None).await;
    assert_eq!(deleted.0, StatusCode::OK);
    assert_error(&send("late", json!(root)).await, StatusCode::CONFLICT, "conflict");
    let (_, page) = app.get(&format!("/api/v1/conversations/{g}/threads/{root}/messages"), bob.token()).await;
    assert_eq!(seqs(&page), vec![reply_seq]);
    // Nothing refused was stored, and the root still counts one reply.
    let all = app.all_messages(&alice, g).await;
    assert_eq!(all.len() as u64, notice, "{all:?}");
    assert_eq!(all[0]["thread"]["replies"], 1);
    // A reply is no thread; a seq past the end is no message.
    for (seq, status, code) in
        [(reply_seq, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"), (99, StatusCode::NOT_FOUND, "not_found")]
    {
        assert_error(&app.get(&format!("/api/v1/conversations/{g}/threads/{seq}"), bob.token()).await, status, code);
    }
}
