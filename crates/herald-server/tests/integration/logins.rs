//! Password guessing and account creation are limited: an account that keeps failing is locked for doubling
//! delays (429 with `Retry-After`, even for the right password, until the lock ends), a spray over many
//! accounts from one address is slowed the same way, an address may create only so many accounts an hour,
//! and behind a trusted proxy the address counted is the one the proxy names.

use super::helpers::{TestApp, assert_error, spawn_app_with, unique_name};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn login(
    app: &TestApp,
    username: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (StatusCode, Option<u64>, Value) {
    let mut request = app
        .http
        .post(format!("{}/api/v1/sessions", app.base))
        .json(&json!({"username": username, "password": password}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let response = request.send().await.expect("login sent");
    let status = response.status();
    let retry_after =
        response.headers().get("retry-after").map(|v| v.to_str().expect("ascii").parse().expect("seconds"));
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_account_guessed_at_is_locked_for_growing_delays_and_a_success_clears_it() {
    let app = spawn_app_with(|c| {
        c.logins.account_free_failures = 2;
        c.logins.first_delay_ms = 1500;
    })
    .await;
    let alice = app.register("alice").await;
    let name = alice.session.user.username.clone();
    for i in 0..3 {
        let (status, _, body) = login(&app, &name, "wrong password", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "failure {i} is an ordinary refusal: {body}");
    }
    // The third failure locked the account for the first delay: even the right password waits.
    let (status, retry_after, body) = login(&app, &name, "correct horse", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(retry_after, Some(2), "1.5 s, in whole seconds rounded up");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // One more failure now locks for twice as long.
    assert_eq!(login(&app, &name, "wrong again", None).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, body) = login(&app, &name, "correct horse", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((2_000..=3_000).contains(&ms), "the second lock is 3 s (less what has passed): {ms}");
    tokio::time::sleep(Duration::from_millis(ms + 100)).await;
    let (status, _, body) = login(&app, &name, "correct horse", None).await;
    assert_eq!(status, StatusCode::OK, "after the lock the right password works: {body}");
    // The success cleared the account: two more failures are free again.
    for _ in 0..2 {
        assert_eq!(login(&app, &name, "wrong", None).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(&app, &name, "correct horse", None).await.0, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_spray_from_one_address_is_slowed_and_a_trusted_proxy_names_the_address() {
    let app = spawn_app_with(|c| {
        c.logins.address_free_failures = 4;
        c.logins.first_delay_ms = 60_000;
        c.server.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    })
    .await;
    let victim = app.register("victim").await;
    let attacker = Some("198.51.100.66");
    // One guess each at many accounts, most of which do not exist.
    for i in 0..5 {
        let (status, _, _) = login(&app, &unique_name(&format!("spray{i}")), "Winter2026!", attacker).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let started = Instant::now();
    let (status, retry_after, body) = login(&app, &victim.session.user.username, "Winter2026!", attacker).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the sprayer's next guess waits: {body}");
    assert!(retry_after.is_some_and(|s| s >= 59), "{retry_after:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused before any password hashing");
    // The victim, from its own address, logs in as usual; so does anyone when the header is absent (the
    // proxy itself, 127.0.0.1, has no failures).
    let (status, _, body) = login(&app, &victim.session.user.username, "correct horse", Some("203.0.113.9")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(login(&app, &victim.session.user.username, "correct horse", None).await.0, StatusCode::OK);
    // A client cannot pick its address: what it writes left of the proxy's entry is not read.
    let (status, _, _) =
        login(&app, &victim.session.user.username, "correct horse", Some("203.0.113.9, 198.51.100.66")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the rightmost address is the one the proxy saw");
    app.shutdown().await;
}

#[tokio::test]
async fn an_address_creates_only_so_many_accounts_an_hour() {
    let app = spawn_app_with(|c| c.logins.registrations_per_hour = 3).await;
    let first = app.register("quota").await;
    for _ in 0..2 {
        app.register("quota").await;
    }
    let response = app
        .http
        .post(format!("{}/api/v1/accounts", app.base))
        .json(&json!({"username": unique_name("quota"), "password": "correct horse"}))
        .send()
        .await
        .expect("register sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=1200).contains(&retry_after), "a token comes back every 20 minutes: {retry_after}");
    let body: Value = response.json().await.expect("a JSON body");
    assert_error(&(StatusCode::TOO_MANY_REQUESTS, body), StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Logging in is not account creation: it still works from that address.
    app.login(&first).await;
    app.shutdown().await;
}
