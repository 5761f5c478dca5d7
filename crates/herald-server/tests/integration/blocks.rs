//! Blocking: while a block stands, either way, the two users cannot start or write in a direct conversation,
//! neither can invite the other, and neither sees the other's typing or presence; groups they share with
//! others go on. Unblocking restores everything.

use super::helpers::{assert_error, spawn_app_with};
use super::ws::Ws;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_block_stops_direct_messages_and_invitations_both_ways_until_lifted() {
    let app = spawn_app_with(|_| {}).await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let direct = app.direct(&alice, &bob).await;
    app.send(&bob, direct, "before", "hi alice").await;

    let block = |who: &super::helpers::User, whom: &super::helpers::User, method: Method| {
        let path = format!("/api/v1/blocks/{}", whom.id());
        let token = who.token().to_owned();
        let app = &app;
        async move { app.call(method, &path, Some(&token), None).await }
    };
    assert_eq!(block(&alice, &bob, Method::PUT).await.0, StatusCode::NO_CONTENT);
    assert_eq!(block(&alice, &bob, Method::PUT).await.0, StatusCode::NO_CONTENT, "blocking twice is fine");
    let (status, list) = app.get("/api/v1/blocks", alice.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["user_id"], bob.id().to_string());
    assert!(list[0]["since"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(app.get("/api/v1/blocks", bob.token()).await.1, json!([]), "a block is the blocker's own list");
    assert_error(&block(&alice, &alice, Method::PUT).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let nobody = format!("/api/v1/blocks/{}", uuid_like());
    assert_error(&app.call(Method::PUT, &nobody, Some(alice.token()), None).await, StatusCode::NOT_FOUND, "not_found");

    // No direct messages, either way, in the existing conversation or a new one.
    assert_error(&app.post_message(&bob, direct, "after-1", "hello?").await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&app.post_message(&alice, direct, "after-2", "go away").await, StatusCode::FORBIDDEN, "forbidden");
    let start = app.post("/api/v1/conversations", bob.token(), json!({"kind": "direct", "user_id": alice.id()})).await;
    assert_error(&start, StatusCode::FORBIDDEN, "forbidden");
    let (mut b, _) = Ws::connect_synced(&app, &bob, 0).await;
    let refused = b.send_message(direct, "after-3", "over the socket").await;
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("forbidden")), "{refused}");
    assert_eq!(app.last_seq(&alice, direct).await, 1, "nothing was stored");
    // Nor through an edit or a reaction; deleting one's own message is still possible.
    let first = format!("/api/v1/conversations/{direct}/messages/1");
    let edit = app.call(Method::PATCH, &first, Some(bob.token()), Some(json!({"body": "new words"}))).await;
    assert_error(&edit, StatusCode::FORBIDDEN, "forbidden");
    let react = app.call(Method::PUT, &format!("{first}/reactions/%F0%9F%91%8D"), Some(alice.token()), None).await;
    assert_error(&react, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = app.call(Method::DELETE, &first, Some(bob.token()), None).await;
    assert_eq!(status, StatusCode::OK, "deleting one's own message");

    // No invitations across the block, either way; Carol may still have both in her group.
    let group = |owner: &super::helpers::User, members: Vec<String>| {
        let token = owner.token().to_owned();
        let app = &app;
        async move {
            app.post("/api/v1/conversations", &token, json!({"kind": "group", "title": "g", "members": members})).await
        }
    };
    assert_error(&group(&bob, vec![alice.id().to_string()]).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&group(&alice, vec![bob.id().to_string()]).await, StatusCode::FORBIDDEN, "forbidden");
    let (status, created) = group(&carol, vec![alice.id().to_string(), bob.id().to_string()]).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let shared = super::helpers::conversation_id(&created);
    app.send(&bob, shared, "in-group", "hello everyone").await;
    let (status, own) = group(&alice, vec![carol.id().to_string()]).await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let alices = super::helpers::conversation_id(&own);
    let add =
        app.post(&format!("/api/v1/conversations/{alices}/members"), alice.token(), json!({"user_id": bob.id()})).await;
    assert_error(&add, StatusCode::FORBIDDEN, "forbidden");

    // Lifted: everything works again.
    assert_eq!(block(&alice, &bob, Method::DELETE).await.0, StatusCode::NO_CONTENT);
    assert_eq!(block(&alice, &bob, Method::DELETE).await.0, StatusCode::NO_CONTENT, "unblocking twice is fine");
    assert_eq!(app.get("/api/v1/blocks", alice.token()).await.1, json!([]));
    app.send(&bob, direct, "after-unblock", "friends again?").await;
    let add =
        app.post(&format!("/api/v1/conversations/{alices}/members"), alice.token(), json!({"user_id": bob.id()})).await;
    assert_eq!(add.0, StatusCode::CREATED, "{}", add.1);
}

#[tokio::test]
async fn neither_sees_the_others_typing_or_presence_across_a_block() {
    let app = spawn_app_with(|c| c.gateway.presence_coalesce_ms = 50).await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let (status, created) = app
        .post(
            "/api/v1/conversations",
            carol.token(),
            json!({"kind": "group", "title": "g", "members": [alice.id(), bob.id()]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let group = super::helpers::conversation_id(&created);
    let (status, _) = app.call(Method::PUT, &format!("/api/v1/blocks/{}", bob.id()), Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (mut a, _) = Ws::connect_synced(&app, &alice, 0).await;
    let (mut c, _) = Ws::connect_synced(&app, &carol, 0).await;
    let (mut b, _) = Ws::connect_synced(&app, &bob, 0).await;
    // Bob came online: Carol hears it, Alice does not.
    let mut seen = c.expect("presence").await;
    while seen["users"][0]["user_id"] != bob.id().to_string() {
        seen = c.expect("presence").await;
    }
    // Bob types in the group: Carol sees it, Alice does not; Alice types: Carol sees it, Bob does not.
    b.send(json!({"type": "typing", "conversation_id": group, "active": true})).await;
    assert_eq!(c.expect("typing").await["user_id"], bob.id().to_string());
    a.send(json!({"type": "typing", "conversation_id": group, "active": true})).await;
    assert_eq!(c.expect("typing").await["user_id"], alice.id().to_string());
    b.assert_none("typing", Duration::from_millis(300)).await;
    a.assert_none("typing", Duration::from_millis(10)).await;
    // Alice's presence query about Bob answers nothing; Carol's answers both.
    a.send(json!({"type": "presence_query", "id": "qa", "user_ids": [bob.id(), carol.id()]})).await;
    let mut answer = a.expect("presence").await;
    while answer["id"] != "qa" {
        assert_ne!(answer["users"][0]["user_id"], bob.id().to_string(), "Alice was told of Bob: {answer}");
        answer = a.expect("presence").await;
    }
    let ids: Vec<_> = answer["users"].as_array().expect("users").iter().map(|u| u["user_id"].clone()).collect();
    assert_eq!(ids, vec![json!(carol.id())], "{answer}");
    b.send(json!({"type": "presence_query", "id": "qb", "user_ids": [alice.id()]})).await;
    let mut answer = b.expect("presence").await;
    while answer["id"] != "qb" {
        answer = b.expect("presence").await;
    }
    assert_eq!(answer["users"], json!([]), "nor is Bob told of Alice");
    // Messages in the shared group still reach everyone.
    let ack = b.send_message(group, "g1", "still in the group").await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // Unblocked: each is shown the other's presence at once, and Bob's typing reaches Alice again.
    let block = format!("/api/v1/blocks/{}", bob.id());
    let (status, _) = app.call(Method::DELETE, &block, Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(a.expect("presence").await["users"], json!([{"user_id": bob.id(), "status": "online"}]));
    assert_eq!(b.expect("presence").await["users"], json!([{"user_id": alice.id(), "status": "online"}]));
    b.send(json!({"type": "typing", "conversation_id": group, "active": false})).await;
    let typing = a.expect("typing").await;
    assert_eq!((typing["user_id"].clone(), typing["active"].clone()), (json!(bob.id()), json!(false)));

    // Blocked again while both look: what each knew of the other is replaced by offline, with no last-seen time.
    let (status, _) = app.call(Method::PUT, &block, Some(alice.token()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(a.expect("presence").await["users"], json!([{"user_id": bob.id(), "status": "offline"}]));
    assert_eq!(b.expect("presence").await["users"], json!([{"user_id": alice.id(), "status": "offline"}]));
    c.assert_none("presence", Duration::from_millis(100)).await;
}

fn uuid_like() -> &'static str {
    "0190a0c4-6a2b-7c8e-9f00-1a2b3c4d5e6f"
}
