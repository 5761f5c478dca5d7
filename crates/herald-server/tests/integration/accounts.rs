use super::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn register_login_and_me() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let name = alice.session.user.username.clone();

    let again = app
        .call(
            Method::POST,
            "/api/v1/accounts",
            None,
            Some(json!({"username": name.to_uppercase(), "password": "whatever123"})),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");

    let wrong = app
        .call(Method::POST, "/api/v1/sessions", None, Some(json!({"username": name, "password": "wrong password"})))
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let nobody = app
        .call(
            Method::POST,
            "/api/v1/sessions",
            None,
            Some(json!({"username": "nobody-here", "password": "wrong password"})),
        )
        .await;
    assert_error(&nobody, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(wrong.1["message"], nobody.1["message"], "login must not reveal whether a user exists");

    let phone = app.login(&alice).await;
    assert_ne!(phone.session.device_id, alice.session.device_id, "each login is a device");
    let (status, me) = app.get("/api/v1/me", phone.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["id"], json!(alice.id()));
    assert_eq!(me["device_id"], json!(phone.session.device_id));
    assert_eq!(me["devices"].as_array().expect("devices").len(), 2);
    assert!(me.to_string().find("password").is_none(), "no password material in /me: {me}");

    let (status, found) = app.get(&format!("/api/v1/users?username={name}"), phone.token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["id"], json!(alice.id()));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_device() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let first = alice.session.refresh_token.clone();

    let (status, next) =
        app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(json!({"refresh_token": first}))).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let second = next["refresh_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    let new_access = next["access_token"].as_str().expect("access").to_owned();
    assert_eq!(app.get("/api/v1/me", &new_access).await.0, StatusCode::OK);

    // The first token was used already: presenting it again means it leaked, so the device is revoked.
    let reuse = app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(json!({"refresh_token": first}))).await;
    assert_error(&reuse, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(&app.get("/api/v1/me", &new_access).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let after = app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(json!({"refresh_token": second}))).await;
    assert_error(&after, StatusCode::UNAUTHORIZED, "unauthorized");

    // A made-up token naming someone's device (device ids are visible to conversation peers) is refused
    // without revoking that device: only a token that really was issued and replaced counts as reuse.
    let victim = app.register("victim").await;
    let guess = format!("{}.made-up", victim.session.device_id);
    let guessed = app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(json!({"refresh_token": guess}))).await;
    assert_error(&guessed, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(app.get("/api/v1/me", victim.token()).await.0, StatusCode::OK, "a guessed token revoked the device");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/sessions/refresh",
            None,
            Some(json!({"refresh_token": victim.session.refresh_token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the victim's real refresh token still works");

    let garbage =
        app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(json!({"refresh_token": "garbage"}))).await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn logout_and_device_revocation() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let laptop = app.login(&alice).await;
    let bob = app.register("bob").await;

    // Bob cannot revoke Alice's device, and learns nothing about it.
    let path = format!("/api/v1/devices/{}", laptop.session.device_id);
    assert_error(&app.call(Method::DELETE, &path, Some(bob.token()), None).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.get("/api/v1/me", laptop.token()).await.0, StatusCode::OK);

    // Alice revokes her laptop from her phone: the laptop's token stops working at once.
    assert_eq!(app.call(Method::DELETE, &path, Some(alice.token()), None).await.0, StatusCode::NO_CONTENT);
    assert_error(&app.get("/api/v1/me", laptop.token()).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let (_, devices) = app.get("/api/v1/devices", alice.token()).await;
    assert_eq!(devices.as_array().expect("devices").len(), 1);

    // Logging out revokes the current device.
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/sessions/current", Some(alice.token()), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_error(&app.get("/api/v1/me", alice.token()).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(app.get("/api/v1/me", bob.token()).await.0, StatusCode::OK);
}

fn forge(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{h}.{c}");
    let key = jsonwebtoken::EncodingKey::from_secret(key);
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("sign");
    format!("{signing_input}.{signature}")
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let claims = |exp: u64| json!({"sub": alice.id(), "dev": alice.session.device_id, "iat": now, "exp": exp});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});

    // Sanity: a token forged with the right key and a valid expiry is accepted, so the refusals below are
    // about what each variant changes.
    let good = forge(hs256.clone(), claims(now + 600), JWT_SECRET.as_bytes());
    assert_eq!(app.get("/api/v1/me", &good).await.0, StatusCode::OK);

    let expired = forge(hs256.clone(), claims(now - 120), JWT_SECRET.as_bytes());
    let wrong_key = forge(hs256.clone(), claims(now + 600), b"some-other-key-some-other-key-123");
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut tampered_claims = claims(now + 600);
    tampered_claims["sub"] = json!(herald_proto::UserId::new());
    parts[1] = URL_SAFE_NO_PAD.encode(tampered_claims.to_string());
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(now + 600).to_string())
    );
    let hs512 = {
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512), &claims(now + 600), &key)
            .expect("hs512")
    };
    for (name, token) in [
        ("expired", expired),
        ("wrong key", wrong_key),
        ("tampered", tampered),
        ("alg none", none),
        ("hs512", hs512),
        ("junk", "abc".into()),
    ] {
        let got = app.get("/api/v1/me", &token).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{name} token accepted: {}", got.1);
        assert_eq!(got.1["code"], "unauthorized", "{name}");
    }
    assert_error(&app.call(Method::GET, "/api/v1/me", None, None).await, StatusCode::UNAUTHORIZED, "unauthorized");
}
