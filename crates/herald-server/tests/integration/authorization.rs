//! Guarantee 5: a user reads and writes only conversations it belongs to, on every endpoint.

use super::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every conversation-scoped endpoint, with a body that would succeed for a member.
fn conversation_endpoints(c: &str, victim: &str, seq: u64) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/api/v1/conversations/{c}"), None),
        (Method::PATCH, format!("/api/v1/conversations/{c}"), Some(json!({"title": "pwned"}))),
        (Method::POST, format!("/api/v1/conversations/{c}/members"), Some(json!({"user_id": victim}))),
        (Method::DELETE, format!("/api/v1/conversations/{c}/members/{victim}"), None),
        (Method::PATCH, format!("/api/v1/conversations/{c}/members/{victim}"), Some(json!({"role": "admin"}))),
        (
            Method::POST,
            format!("/api/v1/conversations/{c}/messages"),
            Some(json!({"client_msg_id": "evil", "body": "hi"})),
        ),
        (Method::GET, format!("/api/v1/conversations/{c}/messages"), None),
        (Method::PATCH, format!("/api/v1/conversations/{c}/messages/{seq}"), Some(json!({"body": "pwned"}))),
        (Method::DELETE, format!("/api/v1/conversations/{c}/messages/{seq}"), None),
        (Method::PUT, format!("/api/v1/conversations/{c}/messages/{seq}/reactions/x"), None),
        (Method::DELETE, format!("/api/v1/conversations/{c}/messages/{seq}/reactions/x"), None),
        (Method::PUT, format!("/api/v1/conversations/{c}/cursor"), Some(json!({"read": 1}))),
        (Method::GET, format!("/api/v1/conversations/{c}/cursor"), None),
        (Method::GET, format!("/api/v1/conversations/{c}/threads/{seq}"), None),
        (Method::GET, format!("/api/v1/conversations/{c}/threads/{seq}/messages"), None),
        (Method::PUT, format!("/api/v1/conversations/{c}/threads/{seq}/read"), Some(json!({"read": 0}))),
        (Method::GET, format!("/api/v1/search?q=secret&conversation={c}"), None),
    ]
}

#[tokio::test]
async fn non_members_can_neither_read_nor_write_anything() {
    let app = spawn_app().await;
    let (alice, bob, mallory) = (app.register("alice").await, app.register("bob").await, app.register("mallory").await);
    let g = app.group(&alice, &[&bob]).await;
    let d = app.direct(&alice, &bob).await;
    for c in [g, d] {
        app.send(&alice, c, "m1", "secret").await;
    }
    let before_g = app.all_messages(&alice, g).await;
    let (_, details_before) = app.get(&format!("/api/v1/conversations/{g}"), alice.token()).await;

    for c in [g, d] {
        for (method, path, body) in conversation_endpoints(&c.to_string(), &bob.id().to_string(), 1) {
            let got = app.call(method.clone(), &path, Some(mallory.token()), body).await;
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
            assert!(!got.1.to_string().contains("secret"), "{method} {path} leaked: {}", got.1);
        }
    }
    // Nothing changed, and Mallory's list is empty.
    assert_eq!(app.all_messages(&alice, g).await, before_g);
    let (_, details_after) = app.get(&format!("/api/v1/conversations/{g}"), alice.token()).await;
    assert_eq!(details_after, details_before);
    let (_, list) = app.get("/api/v1/conversations", mallory.token()).await;
    assert_eq!(list["conversations"], json!([]));
    // And a conversation that does not exist answers the same as one she is not in.
    let ghost = herald_proto::ConversationId::new();
    assert_error(
        &app.get(&format!("/api/v1/conversations/{ghost}"), mallory.token()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn removed_members_lose_access_at_once() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let g = app.group(&alice, &[&bob]).await;
    app.send(&bob, g, "b1", "hello").await;
    let removed = app
        .call(Method::DELETE, &format!("/api/v1/conversations/{g}/members/{}", bob.id()), Some(alice.token()), None)
        .await;
    assert_eq!(removed.0, StatusCode::NO_CONTENT);
    let send = app
        .post(
            &format!("/api/v1/conversations/{g}/messages"),
            bob.token(),
            json!({"client_msg_id": "b2", "body": "still here?"}),
        )
        .await;
    assert_error(&send, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &app.get(&format!("/api/v1/conversations/{g}/messages"), bob.token()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn every_endpoint_requires_a_token() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let g = app.group(&alice, &[&bob]).await;
    app.send(&alice, g, "m1", "x").await;
    let mut endpoints = conversation_endpoints(&g.to_string(), &bob.id().to_string(), 1);
    endpoints.extend([
        (Method::GET, "/api/v1/me".to_owned(), None),
        (Method::GET, "/api/v1/devices".to_owned(), None),
        (Method::DELETE, format!("/api/v1/devices/{}", alice.session.device_id), None),
        (Method::DELETE, "/api/v1/sessions/current".to_owned(), None),
        (Method::GET, format!("/api/v1/users?username={}", alice.session.user.username), None),
        (Method::GET, format!("/api/v1/users/{}", alice.id()), None),
        (Method::GET, "/api/v1/conversations".to_owned(), None),
        (Method::POST, "/api/v1/conversations".to_owned(), Some(json!({"kind": "direct", "user_id": bob.id()}))),
    ]);
    for (method, path, body) in endpoints {
        let got = app.call(method.clone(), &path, None, body).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{method} {path}: {}", got.1);
        assert_eq!(got.1["code"], "unauthorized", "{method} {path}");
    }
    assert_eq!(app.last_seq(&alice, g).await, 1);
}
