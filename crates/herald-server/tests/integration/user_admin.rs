//! User administration: an admin suspends an account, which closes every session of it at once (tokens and
//! open WebSockets) and refuses its logins until the suspension is lifted; an admin deletes an account, which
//! erases it, takes it out of its groups and keeps or removes its messages; only admins may, and not on admins.

use super::helpers::{TestApp, User, assert_error, spawn_app_with};
use super::ws::{Ws, message_seqs};
use herald_core::user_admin::DeletedMessages;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "accounts_admin";

async fn app_with_admin() -> (TestApp, User) {
    app_with_admin_where(DeletedMessages::Keep).await
}

async fn app_with_admin_where(deleted_messages: DeletedMessages) -> (TestApp, User) {
    let app = spawn_app_with(|c| {
        c.auth.admins = vec![ADMIN.into()];
        c.auth.deleted_user_messages = deleted_messages;
    })
    .await;
    let (status, body) = app
        .call(Method::POST, "/api/v1/accounts", None, Some(json!({"username": ADMIN, "password": "correct horse"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (app, User { session: serde_json::from_value(body).expect("session") })
}

async fn log_in(app: &TestApp, user: &User, password: &str) -> (StatusCode, Value) {
    let credentials = json!({"username": user.session.user.username, "password": password});
    app.call(Method::POST, "/api/v1/sessions", None, Some(credentials)).await
}

#[tokio::test]
async fn a_suspended_account_loses_every_session_at_once_and_logs_in_again_once_lifted() {
    let (app, admin) = app_with_admin().await;
    let (alice, bob_phone) = (app.register("alice").await, app.register("bob").await);
    let bob_laptop = app.login(&bob_phone).await;
    let chat = app.direct(&alice, &bob_phone).await;
    let (mut phone, _) = Ws::connect_synced(&app, &bob_phone, 0).await;
    let (mut laptop, _) = Ws::connect_synced(&app, &bob_laptop, 0).await;
    let (mut alices, _) = Ws::connect_synced(&app, &alice, 0).await;

    let (status, seen) = app.get(&format!("/api/v1/admin/users/{}", bob_phone.id()), admin.token()).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["user"]["username"], bob_phone.session.user.username.as_str());
    assert_eq!(seen["devices"].as_array().map(Vec::len), Some(2), "{seen}");
    assert!(seen.get("suspension").is_none(), "{seen}");

    let suspend = format!("/api/v1/admin/users/{}/suspend", bob_phone.id());
    let (status, suspended) = app.post(&suspend, admin.token(), json!({"reason": "spam links"})).await;
    assert_eq!(status, StatusCode::OK, "{suspended}");
    assert_eq!(suspended["suspension"]["reason"], "spam links");
    assert_eq!(suspended["suspension"]["by"], admin.id().to_string());
    assert_eq!(suspended["devices"], json!([]), "every session is closed");

    // Both sockets close as a revoked device's do; the tokens and the refresh token are dead.
    assert_eq!(phone.close_code().await, Some(4401));
    assert_eq!(laptop.close_code().await, Some(4401));
    for bob in [&bob_phone, &bob_laptop] {
        assert_error(&app.get("/api/v1/me", bob.token()).await, StatusCode::UNAUTHORIZED, "unauthorized");
        let refresh = json!({"refresh_token": bob.session.refresh_token});
        let refreshed = app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(refresh)).await;
        assert_error(&refreshed, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A login with the password is refused as suspended; a wrong password learns nothing of the suspension.
    let (status, refused) = log_in(&app, &bob_phone, "correct horse").await;
    assert_error(&(status, refused.clone()), StatusCode::FORBIDDEN, "forbidden");
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("suspended")), "{refused}");
    assert_error(&log_in(&app, &bob_phone, "wrong horse").await, StatusCode::UNAUTHORIZED, "unauthorized");

    // Suspending again keeps the first suspension as it was.
    let (status, again) = app.post(&suspend, admin.token(), json!({"reason": "other"})).await;
    assert_eq!((status, &again["suspension"]), (StatusCode::OK, &suspended["suspension"]), "{again}");
    let (_, seen) = app.get(&format!("/api/v1/admin/users/{}", bob_phone.id()), admin.token()).await;
    assert_eq!(seen["suspension"], suspended["suspension"]);

    // Alice's session is untouched, and her messages wait in the conversation for Bob.
    let seq = app.send(&alice, chat, "m1", "are you there?").await;
    assert_eq!(message_seqs(&alices.events(1).await, chat), vec![seq]);

    let unsuspend = format!("/api/v1/admin/users/{}/unsuspend", bob_phone.id());
    let (status, lifted) = app.post(&unsuspend, admin.token(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{lifted}");
    assert!(lifted.get("suspension").is_none(), "{lifted}");
    let (status, session) = log_in(&app, &bob_phone, "correct horse").await;
    assert_eq!(status, StatusCode::OK, "a lifted suspension lets the account in again: {session}");
    let bob = User { session: serde_json::from_value(session).expect("session") };
    assert_eq!(app.all_messages(&bob, chat).await.len(), 1, "and nothing was lost");
    // Lifting twice changes nothing.
    assert_eq!(app.post(&unsuspend, admin.token(), json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn only_admins_administer_accounts_and_never_an_admin() {
    let (app, admin) = app_with_admin().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let get = format!("/api/v1/admin/users/{}", bob.id());
    let suspend = format!("/api/v1/admin/users/{}/suspend", bob.id());
    let unsuspend = format!("/api/v1/admin/users/{}/unsuspend", bob.id());

    // /me tells the web client whom to show the admin screens.
    assert_eq!(app.get("/api/v1/me", admin.token()).await.1["admin"], true);
    assert_eq!(app.get("/api/v1/me", alice.token()).await.1["admin"], false);
    assert_error(&app.get(&get, alice.token()).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&app.post(&suspend, alice.token(), json!({})).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&app.post(&unsuspend, alice.token(), json!({})).await, StatusCode::FORBIDDEN, "forbidden");
    let anonymous = app.call(Method::POST, &suspend, None, Some(json!({}))).await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(app.get("/api/v1/me", bob.token()).await.0, StatusCode::OK, "nobody suspended Bob");

    let own = format!("/api/v1/admin/users/{}/suspend", admin.id());
    let refused = app.post(&own, admin.token(), json!({"reason": "oops"})).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_eq!(app.get("/api/v1/me", admin.token()).await.0, StatusCode::OK, "the admin's session stays");

    let unknown = format!("/api/v1/admin/users/{}/suspend", herald_proto::UserId::new());
    assert_error(&app.post(&unknown, admin.token(), json!({})).await, StatusCode::NOT_FOUND, "not_found");
    let delete = async |user: herald_proto::UserId, token: &str| {
        app.call(Method::DELETE, &format!("/api/v1/admin/users/{user}"), Some(token), None).await
    };
    assert_error(&delete(bob.id(), alice.token()).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&delete(admin.id(), admin.token()).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let unknown = herald_proto::UserId::new();
    assert_error(&delete(unknown, admin.token()).await, StatusCode::NOT_FOUND, "not_found");
    let long = app.post(&suspend, admin.token(), json!({"reason": "x".repeat(2001)})).await;
    assert_error(&long, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let typo = app.post(&suspend, admin.token(), json!({"reasn": "spam"})).await;
    assert_error(&typo, StatusCode::BAD_REQUEST, "bad_request");
    assert_error(
        &app.get("/api/v1/admin/users/not-an-id", admin.token()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_eq!(app.get("/api/v1/me", bob.token()).await.0, StatusCode::OK, "no refused request suspended Bob");
}

async fn delete_user(app: &TestApp, admin: &User, user: &User) -> Value {
    let path = format!("/api/v1/admin/users/{}", user.id());
    let (status, deleted) = app.call(Method::DELETE, &path, Some(admin.token()), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    deleted
}

/// Bob owns a group with Alice and Carol and has a direct conversation with Alice; he is deleted.
struct Deletion {
    app: TestApp,
    admin: User,
    alice: User,
    bob: User,
    group: herald_proto::ConversationId,
    direct: herald_proto::ConversationId,
}

async fn bob_writes_then_is_deleted(deleted_messages: DeletedMessages) -> (Deletion, Value) {
    let (app, admin) = app_with_admin_where(deleted_messages).await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let group = app.group(&bob, &[&alice, &carol]).await;
    let direct = app.direct(&alice, &bob).await;
    app.send(&bob, group, "g1", "hello team").await;
    let hi = app.send(&alice, group, "g2", "hi bob").await;
    for who in [&alice, &bob] {
        let react = format!("/api/v1/conversations/{group}/messages/{hi}/reactions/👍");
        assert_eq!(app.call(Method::PUT, &react, Some(who.token()), None).await.0, StatusCode::OK);
    }
    app.send(&bob, group, "g3", "my phone number is 555").await;
    app.send(&bob, direct, "d1", "just between us").await;
    let (mut bobs, _) = Ws::connect_synced(&app, &bob, 0).await;

    let deleted = delete_user(&app, &admin, &bob).await;
    assert_eq!(bobs.close_code().await, Some(4401), "his sessions close at once");
    (Deletion { app, admin, alice, bob, group, direct }, deleted)
}

#[tokio::test]
async fn a_deleted_account_is_erased_leaves_its_groups_and_its_messages_stay() {
    let (d, deleted) = bob_writes_then_is_deleted(DeletedMessages::Keep).await;
    let (app, alice, bob) = (&d.app, &d.alice, &d.bob);
    assert_eq!(deleted["user"]["id"], bob.id().to_string());
    assert_eq!(deleted["user"]["deleted"], true, "{deleted}");
    assert_eq!(deleted["user"]["username"], format!("deleted:{}", bob.id()), "the name is erased: {deleted}");
    assert_eq!((deleted["groups_left"].as_u64(), deleted["messages_removed"].as_u64()), (Some(1), Some(0)));

    // Nothing of his opens a session again: tokens, refresh token, password.
    assert_error(&app.get("/api/v1/me", bob.token()).await, StatusCode::UNAUTHORIZED, "unauthorized");
    let refresh = json!({"refresh_token": bob.session.refresh_token});
    let refreshed = app.call(Method::POST, "/api/v1/sessions/refresh", None, Some(refresh)).await;
    assert_error(&refreshed, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(&log_in(app, bob, "correct horse").await, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, profile) = app.get(&format!("/api/v1/users/{}", bob.id()), alice.token()).await;
    assert_eq!((status, &profile["deleted"]), (StatusCode::OK, &json!(true)), "others see a deleted user: {profile}");
    let by_name = format!("/api/v1/users?username={}", bob.session.user.username);
    assert_error(&app.get(&by_name, alice.token()).await, StatusCode::NOT_FOUND, "not_found");

    // He left the group (its ownership passed on, with a notice); his messages stay, in both conversations.
    let (status, group) = app.get(&format!("/api/v1/conversations/{}", d.group), alice.token()).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    let members = group["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{group}");
    assert!(members.iter().all(|m| m["user_id"] != bob.id().to_string()), "{group}");
    assert!(members.iter().any(|m| m["role"] == "owner"), "the group has an owner again: {group}");
    let messages = app.all_messages(alice, d.group).await;
    let bodies: Vec<&str> = messages.iter().filter_map(|m| m["body"].as_str()).filter(|b| !b.is_empty()).collect();
    assert_eq!(bodies, ["hello team", "hi bob", "my phone number is 555"]);
    let hi = messages.iter().find(|m| m["body"] == "hi bob").expect("Alice's message");
    assert_eq!(hi["reactions"]["👍"].as_array().map(Vec::len), Some(2), "his reaction stays too: {hi}");
    assert!(messages.iter().any(|m| m["system"]["kind"] == "member_left"), "{messages:?}");
    let direct = app.all_messages(alice, d.direct).await;
    assert_eq!(direct.iter().map(|m| &m["body"]).collect::<Vec<_>>(), [&json!("just between us")]);

    // The name is free for someone new; the admin still sees the erased account, without devices.
    let credentials = json!({"username": bob.session.user.username, "password": "another horse"});
    let (status, newcomer) = app.call(Method::POST, "/api/v1/accounts", None, Some(credentials)).await;
    assert_eq!(status, StatusCode::CREATED, "{newcomer}");
    assert_ne!(newcomer["user"]["id"], bob.id().to_string(), "a new account, not Bob's");
    let (status, seen) = app.get(&format!("/api/v1/admin/users/{}", bob.id()), d.admin.token()).await;
    assert_eq!((status, &seen["devices"], &seen["user"]["deleted"]), (StatusCode::OK, &json!([]), &json!(true)));

    // Deleting again finishes nothing more and changes nothing; a deleted account cannot be suspended.
    let again = delete_user(app, &d.admin, bob).await;
    assert_eq!((&again["user"], again["groups_left"].as_u64()), (&deleted["user"], Some(0)), "{again}");
    let suspend = format!("/api/v1/admin/users/{}/suspend", bob.id());
    assert_error(&app.post(&suspend, d.admin.token(), json!({})).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_server_that_removes_deleted_accounts_messages_leaves_tombstones_in_their_place() {
    let (d, deleted) = bob_writes_then_is_deleted(DeletedMessages::Remove).await;
    assert_eq!((deleted["groups_left"].as_u64(), deleted["messages_removed"].as_u64()), (Some(1), Some(3)));
    let messages = d.app.all_messages(&d.alice, d.group).await;
    let of = |id: &str| messages.iter().find(|m| m["client_msg_id"] == id).expect("stored");
    for id in ["g1", "g3"] {
        assert_eq!((&of(id)["deleted"], &of(id)["body"]), (&json!(true), &json!("")), "{:?}", of(id));
    }
    assert_eq!(of("g2")["body"], "hi bob", "the others' messages stay");
    assert_eq!(of("g2")["reactions"]["👍"], json!([d.alice.id()]), "without his reactions");
    let direct = d.app.all_messages(&d.alice, d.direct).await;
    assert_eq!((&direct[0]["deleted"], &direct[0]["body"]), (&json!(true), &json!("")), "{direct:?}");
}
