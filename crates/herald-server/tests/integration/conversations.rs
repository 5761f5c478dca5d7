use super::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn one_direct_conversation_per_pair() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register("alice").await, app.register("bob").await);
    let ab = app.direct(&alice, &bob).await;
    let (status, again) =
        app.post("/api/v1/conversations", bob.token(), json!({"kind": "direct", "user_id": alice.id()})).await;
    assert_eq!((status, conversation_id(&again)), (StatusCode::OK, ab), "the pair already has a conversation");

    // Concurrent creation by both sides still yields one conversation.
    let carol = app.register("carol").await;
    let (x, y) = tokio::join!(app.direct(&alice, &carol), app.direct(&carol, &alice));
    assert_eq!(x, y);

    let myself =
        app.post("/api/v1/conversations", alice.token(), json!({"kind": "direct", "user_id": alice.id()})).await;
    assert_error(&myself, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let ghost = app
        .post("/api/v1/conversations", alice.token(), json!({"kind": "direct", "user_id": herald_proto::UserId::new()}))
        .await;
    assert_error(&ghost, StatusCode::NOT_FOUND, "not_found");

    // Direct conversations have fixed members and no title.
    let add =
        app.post(&format!("/api/v1/conversations/{ab}/members"), alice.token(), json!({"user_id": carol.id()})).await;
    assert_error(&add, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
}

#[tokio::test]
async fn group_roles_membership_and_leaving() {
    let app = spawn_app().await;
    let (owner, admin, member, outsider) =
        (app.register("own").await, app.register("adm").await, app.register("mem").await, app.register("out").await);
    let g = app.group(&owner, &[&admin, &member]).await;
    let path = |rest: &str| format!("/api/v1/conversations/{g}{rest}");

    // Only the owner changes roles.
    let by_member = app
        .call(
            Method::PATCH,
            &path(&format!("/members/{}", admin.id())),
            Some(member.token()),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_error(&by_member, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .call(
            Method::PATCH,
            &path(&format!("/members/{}", admin.id())),
            Some(owner.token()),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "admin");

    // Members cannot add; admins can; adding twice conflicts.
    let add = |who: &User, whom: &User| {
        let (p, t, id) = (path("/members"), who.token().to_owned(), whom.id());
        let app = &app;
        async move { app.post(&p, &t, json!({"user_id": id})).await }
    };
    assert_error(&add(&member, &outsider).await, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(add(&admin, &outsider).await.0, StatusCode::CREATED);
    assert_error(&add(&admin, &outsider).await, StatusCode::CONFLICT, "conflict");

    // An admin removes a member but not the owner; a member cannot remove anyone.
    let remove = |who: &User, whom: &User| {
        let (p, t) = (path(&format!("/members/{}", whom.id())), who.token().to_owned());
        let app = &app;
        async move { app.call(Method::DELETE, &p, Some(&t), None).await }
    };
    assert_error(&remove(&member, &outsider).await, StatusCode::FORBIDDEN, "forbidden");
    assert_error(&remove(&admin, &owner).await, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(remove(&admin, &outsider).await.0, StatusCode::NO_CONTENT);
    assert_error(&app.get(&path(""), outsider.token()).await, StatusCode::NOT_FOUND, "not_found");

    // Renaming is for admins.
    let rename = app.call(Method::PATCH, &path(""), Some(member.token()), Some(json!({"title": "mine now"}))).await;
    assert_error(&rename, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) =
        app.call(Method::PATCH, &path(""), Some(admin.token()), Some(json!({"title": "renamed"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["conversation"]["title"], "renamed");

    // The owner leaves: the admin becomes owner.
    assert_eq!(remove(&owner, &owner).await.0, StatusCode::NO_CONTENT);
    let (_, details) = app.get(&path(""), admin.token()).await;
    let roles: Vec<(String, String)> = details["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (m["user_id"].as_str().unwrap_or_default().to_owned(), m["role"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(roles.len(), 2, "{details}");
    assert!(roles.contains(&(admin.id().to_string(), "owner".into())), "{details}");
    assert_error(&app.get(&path(""), owner.token()).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn member_limit_is_enforced() {
    let app = spawn_app_with(|c| c.limits.max_group_members = 3).await;
    let users = [app.register("u").await, app.register("u").await, app.register("u").await, app.register("u").await];
    let too_many = app
        .post(
            "/api/v1/conversations",
            users[0].token(),
            json!({"kind": "group", "title": "t", "members": [users[1].id(), users[2].id(), users[3].id()]}),
        )
        .await;
    assert_error(&too_many, StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    let g = app.group(&users[0], &[&users[1], &users[2]]).await;
    let add = app
        .post(&format!("/api/v1/conversations/{g}/members"), users[0].token(), json!({"user_id": users[3].id()}))
        .await;
    assert_error(&add, StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded");
    let (_, details) = app.get(&format!("/api/v1/conversations/{g}"), users[0].token()).await;
    assert_eq!(details["members"].as_array().expect("members").len(), 3);
}

#[tokio::test]
async fn my_conversations_by_activity_with_unread_counts_and_pages() {
    let app = spawn_app().await;
    let me = app.register("me").await;
    let mut peers = Vec::new();
    let mut convs = Vec::new();
    for _ in 0..5 {
        let peer = app.register("peer").await;
        convs.push(app.direct(&me, &peer).await);
        peers.push(peer);
    }
    // Activity order, newest last: conversation 3, then 0 (twice), then 4.
    app.send(&peers[3], convs[3], "a", "hi").await;
    app.send(&peers[0], convs[0], "b", "one").await;
    app.send(&peers[0], convs[0], "c", "two").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.send(&me, convs[4], "d", "mine").await;

    let (status, page) = app.get("/api/v1/conversations?limit=2", me.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids = |page: &Value| -> Vec<String> {
        page["conversations"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["conversation"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), vec![convs[4].to_string(), convs[0].to_string()]);
    let rows = page["conversations"].as_array().expect("rows");
    assert_eq!(rows[0]["unread"], 0, "own messages are read");
    assert_eq!(rows[1]["unread"], 2);
    assert_eq!(rows[1]["last_message"]["body"], "two");
    assert_eq!(rows[1]["peer"], json!(peers[0].id()));

    let cursor = page["next_cursor"].as_str().expect("more pages");
    let (_, page2) = app.get(&format!("/api/v1/conversations?limit=2&cursor={cursor}"), me.token()).await;
    assert_eq!(ids(&page2)[0], convs[3].to_string());
    let cursor = page2["next_cursor"].as_str().expect("more pages");
    let (_, page3) = app.get(&format!("/api/v1/conversations?limit=2&cursor={cursor}"), me.token()).await;
    assert_eq!(ids(&page3).len(), 1);
    assert!(page3["next_cursor"].is_null());
    let mut all: Vec<String> = [ids(&page), ids(&page2), ids(&page3)].concat();
    all.sort();
    let mut expected: Vec<String> = convs.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(all, expected, "every conversation exactly once across pages");
}
