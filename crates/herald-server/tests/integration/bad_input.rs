//! Bad input gets a clear `{code, message}` error and changes nothing.

use super::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Sends a raw body (possibly not JSON).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let response = req.send().await.expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn malformed_bodies_on_every_json_endpoint() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let g = app.group(&alice, &[&bob]).await;
    app.send(&alice, g, "m1", "x").await;
    let json_endpoints = [
        (Method::POST, "/api/v1/accounts".to_owned()),
        (Method::POST, "/api/v1/sessions".to_owned()),
        (Method::POST, "/api/v1/sessions/refresh".to_owned()),
        (Method::POST, "/api/v1/conversations".to_owned()),
        (Method::PATCH, format!("/api/v1/conversations/{g}")),
        (Method::POST, format!("/api/v1/conversations/{g}/members")),
        (Method::PATCH, format!("/api/v1/conversations/{g}/members/{}", bob.id())),
        (Method::POST, format!("/api/v1/conversations/{g}/messages")),
        (Method::PATCH, format!("/api/v1/conversations/{g}/messages/1")),
        (Method::PUT, format!("/api/v1/conversations/{g}/cursor")),
    ];
    for (method, path) in &json_endpoints {
        for body in ["{", "[]", "{\"unexpected_field\": 1}", "\"string\"", "{\"body\": 5}"] {
            let got = raw(&app, method.clone(), path, Some(alice.token()), body).await;
            assert!(
                got.0 == StatusCode::BAD_REQUEST || got.0 == StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path} with {body}: {got:?}"
            );
            assert!(
                got.1["code"] == "bad_request" || got.1["code"] == "invalid_input",
                "{method} {path} {body}: {got:?}"
            );
            assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    // Nothing changed.
    assert_eq!(app.last_seq(&alice, g).await, 1);
    let (_, details) = app.get(&format!("/api/v1/conversations/{g}"), alice.token()).await;
    assert_eq!(details["conversation"]["title"], "team");
    assert_eq!(details["members"].as_array().expect("members").len(), 2);
}

#[tokio::test]
async fn invalid_values_are_refused_and_store_nothing() {
    let app = spawn_app_with(|c| c.limits.max_message_bytes = 100).await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let c = app.direct(&alice, &bob).await;
    let send = |body: serde_json::Value| {
        let (p, t) = (format!("/api/v1/conversations/{c}/messages"), alice.token().to_owned());
        let app = &app;
        async move { app.post(&p, &t, body).await }
    };
    assert_error(
        &send(json!({"client_msg_id": "a", "body": "   "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "", "body": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "~system-reserved", "body": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "has space", "body": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "x".repeat(65), "body": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "a", "body": "x".repeat(101)})).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        &send(json!({"client_msg_id": "a", "body": "x", "reply_to": 0})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &send(json!({"client_msg_id": "a", "body": "x", "reply_to": -1})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // A body over the request limit is refused before it is parsed.
    let huge = format!("{{\"client_msg_id\":\"a\",\"body\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let got = raw(&app, Method::POST, &format!("/api/v1/conversations/{c}/messages"), Some(alice.token()), &huge).await;
    assert_eq!(got.0, StatusCode::PAYLOAD_TOO_LARGE, "{got:?}");
    assert_eq!(got.1["code"], "payload_too_large");
    assert_eq!(app.last_seq(&alice, c).await, 0, "nothing stored");

    // Paths and queries.
    assert_error(
        &app.get("/api/v1/conversations/not-a-uuid", alice.token()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &app.get(&format!("/api/v1/conversations/{c}/messages?limit=0"), alice.token()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &app.get(&format!("/api/v1/conversations/{c}/messages?limit=100000"), alice.token()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &app.get(&format!("/api/v1/conversations/{c}/messages?dir=sideways"), alice.token()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &app.get(&format!("/api/v1/conversations/{c}/messages?from=0"), alice.token()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    assert_error(
        &app.get("/api/v1/conversations?cursor=garbage", alice.token()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    let seq_not_number = app
        .call(
            Method::PATCH,
            &format!("/api/v1/conversations/{c}/messages/abc"),
            Some(alice.token()),
            Some(json!({"body": "x"})),
        )
        .await;
    assert_error(&seq_not_number, StatusCode::BAD_REQUEST, "bad_request");
    let long_emoji = app
        .call(
            Method::PUT,
            &format!("/api/v1/conversations/{c}/messages/1/reactions/{}", "x".repeat(17)),
            Some(alice.token()),
            None,
        )
        .await;
    assert_error(&long_emoji, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let empty_cursor =
        app.call(Method::PUT, &format!("/api/v1/conversations/{c}/cursor"), Some(alice.token()), Some(json!({}))).await;
    assert_error(&empty_cursor, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");

    // Accounts.
    let reg = |u: &str, p: &str| {
        let body = json!({"username": u, "password": p});
        let app = &app;
        async move { app.call(Method::POST, "/api/v1/accounts", None, Some(body)).await }
    };
    assert_error(&reg("ab", "long enough pw").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(&reg("white space", "long enough pw").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(&reg("shortpw", "short").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(&reg("longpw", &"p".repeat(2000)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let group = app.post("/api/v1/conversations", alice.token(), json!({"kind": "group", "title": "  "})).await;
    assert_error(&group, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let kind = app.post("/api/v1/conversations", alice.token(), json!({"kind": "channel"})).await;
    assert_error(&kind, StatusCode::BAD_REQUEST, "bad_request");

    // Unknown routes and methods answer in the same format.
    assert_error(&app.get("/api/v1/nope", alice.token()).await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &app.call(Method::PUT, "/api/v1/me", Some(alice.token()), None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}
