//! Reports: members report messages they can read and users report users; the server's admins (and only they)
//! list the reports, newest first, and resolve them; a report keeps the message as it was reported.

use super::helpers::{TestApp, User, assert_error, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "reports_admin";

async fn app_with_admin() -> (TestApp, User) {
    let app = spawn_app_with(|c| c.auth.admins = vec![ADMIN.into()]).await;
    let (status, body) = app
        .call(Method::POST, "/api/v1/accounts", None, Some(json!({"username": ADMIN, "password": "correct horse"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (app, User { session: serde_json::from_value(body).expect("session") })
}

fn message_target(conversation: impl std::fmt::Display, seq: u64) -> Value {
    json!({"kind": "message", "conversation_id": conversation.to_string(), "seq": seq})
}

#[tokio::test]
async fn members_report_what_they_read_and_the_report_keeps_it_as_it_was() {
    let (app, admin) = app_with_admin().await;
    let (alice, bob, carol, dave) = (
        app.register("alice").await,
        app.register("bob").await,
        app.register("carol").await,
        app.register("dave").await,
    );
    let group = app.group(&alice, &[&bob, &carol]).await;
    let seq = app.send(&bob, group, "m1", "buy followers at example.invalid").await;

    let report = json!({"target": message_target(group, seq), "reason": "spam", "comment": "again"});
    let (status, filed) = app.post("/api/v1/reports", alice.token(), report.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(filed["state"], "open");
    assert_eq!(filed["reporter"], alice.id().to_string());
    assert_eq!(filed["message"]["body"], "buy followers at example.invalid");
    assert_eq!(filed["message"]["sender"], bob.id().to_string());

    // The same report again is the first one, not a second.
    let (status, again) = app.post("/api/v1/reports", alice.token(), report.clone()).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &filed["id"]), "{again}");

    // Who may report what.
    assert_error(&app.post("/api/v1/reports", dave.token(), report.clone()).await, StatusCode::NOT_FOUND, "not_found");
    let own = app.post("/api/v1/reports", bob.token(), report.clone()).await;
    assert_error(&own, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    let missing = json!({"target": message_target(group, 99), "reason": "spam"});
    assert_error(&app.post("/api/v1/reports", alice.token(), missing).await, StatusCode::NOT_FOUND, "not_found");
    let myself = json!({"target": {"kind": "user", "user_id": alice.id()}, "reason": "other"});
    assert_error(
        &app.post("/api/v1/reports", alice.token(), myself).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    let long = json!({"target": {"kind": "user", "user_id": bob.id()}, "reason": "other", "comment": "x".repeat(2001)});
    assert_error(
        &app.post("/api/v1/reports", alice.token(), long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
    let unknown = json!({"target": {"kind": "user", "user_id": bob.id()}, "reason": "boredom"});
    let unknown = app.post("/api/v1/reports", alice.token(), unknown).await;
    assert!(unknown.0.is_client_error(), "an unknown reason is refused: {unknown:?}");

    // A member who leaves can no longer report the conversation's messages; a server notice cannot be reported.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/conversations/{group}/members/{}", carol.id()),
            Some(alice.token()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let gone = app.post("/api/v1/reports", carol.token(), report.clone()).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
    let notice = json!({"target": message_target(group, seq + 1), "reason": "other"});
    assert_error(
        &app.post("/api/v1/reports", alice.token(), notice).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );

    // Bob edits, then deletes his message: the report still holds what Alice saw.
    let path = format!("/api/v1/conversations/{group}/messages/{seq}");
    let (status, _) = app.call(Method::PATCH, &path, Some(bob.token()), Some(json!({"body": "nothing to see"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::DELETE, &path, Some(bob.token()), None).await;
    assert_eq!(status, StatusCode::OK);
    let id = filed["id"].as_str().expect("id");
    let (status, stored) = app.get(&format!("/api/v1/admin/reports/{id}"), admin.token()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["message"]["body"], "buy followers at example.invalid");
    assert_eq!(stored["comment"], "again");
    // A deleted message cannot be reported any more.
    let deleted = json!({"target": message_target(group, seq), "reason": "illegal"});
    assert_error(&app.post("/api/v1/reports", alice.token(), deleted).await, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn only_admins_list_and_resolve_reports_newest_first() {
    let (app, admin) = app_with_admin().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let mut filed = Vec::new();
    for (reporter, target) in [(&alice, &bob), (&carol, &bob), (&alice, &carol)] {
        let body = json!({"target": {"kind": "user", "user_id": target.id()}, "reason": "harassment"});
        let (status, report) = app.post("/api/v1/reports", reporter.token(), body).await;
        assert_eq!(status, StatusCode::CREATED, "{report}");
        filed.push(report["id"].as_str().expect("id").to_owned());
    }

    for path in ["/api/v1/admin/reports", &format!("/api/v1/admin/reports/{}", filed[0])] {
        assert_error(&app.get(path, alice.token()).await, StatusCode::FORBIDDEN, "forbidden");
    }
    let resolve = format!("/api/v1/admin/reports/{}/resolve", filed[0]);
    assert_error(&app.post(&resolve, alice.token(), json!({})).await, StatusCode::FORBIDDEN, "forbidden");

    let ids = |page: &Value| -> Vec<String> {
        page["reports"].as_array().expect("reports").iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect()
    };
    let (status, page) = app.get("/api/v1/admin/reports?limit=2", admin.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![filed[2].clone(), filed[1].clone()], "newest first");
    let next = page["next_before"].as_str().expect("a next page");
    let (_, older) = app.get(&format!("/api/v1/admin/reports?limit=2&before={next}"), admin.token()).await;
    assert_eq!(ids(&older), vec![filed[0].clone()]);
    assert!(older.get("next_before").is_none(), "the last page: {older}");

    let (status, resolved) = app.post(&resolve, admin.token(), json!({"note": "warned bob"})).await;
    assert_eq!(status, StatusCode::OK, "{resolved}");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolution"]["note"], "warned bob");
    assert_eq!(resolved["resolution"]["resolved_by"], admin.id().to_string());
    assert_error(&app.post(&resolve, admin.token(), json!({"note": "again"})).await, StatusCode::CONFLICT, "conflict");
    let unknown = "/api/v1/admin/reports/0190a0c4-6a2b-7c8e-9f00-1a2b3c4d5e6f/resolve";
    assert_error(&app.post(unknown, admin.token(), json!({})).await, StatusCode::NOT_FOUND, "not_found");

    let (_, open) = app.get("/api/v1/admin/reports?state=open", admin.token()).await;
    assert_eq!(ids(&open), vec![filed[2].clone(), filed[1].clone()]);
    let (_, done) = app.get("/api/v1/admin/reports?state=resolved", admin.token()).await;
    assert_eq!(ids(&done), vec![filed[0].clone()]);
    let bad = app.get("/api/v1/admin/reports?limit=0", admin.token()).await;
    assert_error(&bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    assert_error(
        &app.get("/api/v1/admin/reports?state=maybe", admin.token()).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // Resolved, Alice may report Bob again; the report survives a restart.
    let body = json!({"target": {"kind": "user", "user_id": bob.id()}, "reason": "spam"});
    let (status, anew) = app.post("/api/v1/reports", alice.token(), body).await;
    assert_eq!(status, StatusCode::CREATED, "{anew}");
    let app = app.restart().await;
    let (status, page) = app.get("/api/v1/admin/reports", admin.token()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["reports"][0]["id"], anew["id"]);
    assert_eq!(page["reports"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn reports_are_rate_limited_per_user() {
    let (app, _) = app_with_admin().await;
    let alice = app.register("alice").await;
    let mut last = None;
    for _ in 0..11 {
        let someone = app.register("someone").await;
        let body = json!({"target": {"kind": "user", "user_id": someone.id()}, "reason": "spam"});
        last = Some(app.post("/api/v1/reports", alice.token(), body).await);
    }
    let last = last.expect("eleven reports");
    assert_error(&last, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}
