//! Search: a user finds the messages of the conversations they belong to, and only those; edits, deletions and
//! removals show at once; results are ranked, paged and highlighted.

use super::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn found(page: &Value) -> Vec<(String, u64)> {
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let m = &r["message"];
            (m["conversation_id"].as_str().expect("conversation").to_owned(), m["seq"].as_u64().expect("seq"))
        })
        .collect()
}

async fn search(app: &TestApp, user: &User, query: &str) -> Value {
    let (status, page) = app.get(&format!("/api/v1/search?{query}"), user.token()).await;
    assert_eq!(status, StatusCode::OK, "search {query}: {page}");
    page
}

/// Searches until the results are `expected` (an index takes a moment after the ack); panics after 5 s.
async fn search_until(app: &TestApp, user: &User, query: &str, expected: &[(String, u64)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = search(app, user, query).await;
        if found(&page) == expected {
            return page;
        }
        assert!(Instant::now() < deadline, "search {query}: {} is not {expected:?}", page);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn members_find_what_they_can_read_and_nothing_else() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let g = app.group(&alice, &[&bob]).await;
    let d = app.direct(&alice, &bob).await;
    let secret = app.group(&carol, &[]).await;
    // Letters and digits only: one word.
    let tag = unique_name("w").replace('_', "");
    let planning = app.send(&alice, g, "p", &format!("{tag} Quarterly PLANNING meeting on Thursday")).await;
    let lunch = app.send(&bob, d, "l", &format!("{tag} lunch at the new café?")).await;
    app.send(&carol, secret, "s", &format!("{tag} planning the surprise")).await;
    let (gs, ds) = (g.to_string(), d.to_string());

    // Found by a word's start, highlighted, and only in Alice's conversations.
    let page = search_until(&app, &alice, &format!("q={tag}+plan"), &[(gs.clone(), planning)]).await;
    let snippet = &page["results"][0]["snippet"];
    let hits: Vec<&str> = snippet
        .as_array()
        .expect("snippet")
        .iter()
        .filter(|p| p["hit"] == true)
        .map(|p| p["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(hits, vec![tag.as_str(), "PLANNING"], "{snippet}");
    assert_eq!(page["next"], Value::Null);
    // Equally good: the newest first.
    search_until(&app, &alice, &format!("q={tag}"), &[(ds.clone(), lunch), (gs.clone(), planning)]).await;
    search_until(&app, &carol, &format!("q={tag}+plan"), &[(secret.to_string(), 1)]).await;

    // One conversation: the caller must be a member of it, and it answers as if it did not exist otherwise.
    search_until(&app, &alice, &format!("q={tag}+caf&conversation={d}"), &[(ds.clone(), lunch)]).await;
    assert_error(
        &app.get(&format!("/api/v1/search?q={tag}&conversation={secret}"), alice.token()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // An edit replaces the words, a deletion removes them.
    let edit = app
        .call(
            Method::PATCH,
            &format!("/api/v1/conversations/{d}/messages/{lunch}"),
            Some(bob.token()),
            Some(json!({"body": format!("{tag} dinner instead")})),
        )
        .await;
    assert_eq!(edit.0, StatusCode::OK, "{}", edit.1);
    search_until(&app, &alice, &format!("q={tag}+lunch"), &[]).await;
    search_until(&app, &alice, &format!("q={tag}+dinner"), &[(ds.clone(), lunch)]).await;
    let delete =
        app.call(Method::DELETE, &format!("/api/v1/conversations/{d}/messages/{lunch}"), Some(bob.token()), None).await;
    assert_eq!(delete.0, StatusCode::OK, "{}", delete.1);
    search_until(&app, &alice, &format!("q={tag}+dinner"), &[]).await;

    // A removed member loses the conversation's results with its history.
    search_until(&app, &bob, &format!("q={tag}+quarterly"), &[(gs.clone(), planning)]).await;
    let removed = app
        .call(Method::DELETE, &format!("/api/v1/conversations/{g}/members/{}", bob.id()), Some(alice.token()), None)
        .await;
    assert!(removed.0.is_success(), "{}", removed.1);
    assert_eq!(found(&search(&app, &bob, &format!("q={tag}+quarterly")).await), vec![]);
}

#[tokio::test]
async fn results_are_ranked_and_paged_and_bad_queries_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let g = app.group(&alice, &[]).await;
    // Letters and digits only: one word.
    let tag = unique_name("w").replace('_', "");
    let once = app.send(&alice, g, "1", &format!("{tag} deploy on Friday")).await;
    let thrice = app.send(&alice, g, "2", &format!("{tag} deploy, deploy, deploy!")).await;
    let twice = app.send(&alice, g, "3", &format!("{tag} deploy twice: deploy")).await;
    let gs = g.to_string();

    let all = [(gs.clone(), thrice), (gs.clone(), twice), (gs.clone(), once)];
    search_until(&app, &alice, &format!("q={tag}+deploy"), &all).await;
    let first = search(&app, &alice, &format!("q={tag}+deploy&limit=2")).await;
    assert_eq!(found(&first), all[..2].to_vec());
    assert_eq!(first["next"], 2);
    let second = search(&app, &alice, &format!("q={tag}+deploy&limit=2&offset=2")).await;
    assert_eq!(found(&second), all[2..].to_vec());
    assert_eq!(second["next"], Value::Null);

    let many = (0..20).map(|i| format!("w{i}")).collect::<Vec<_>>().join("+");
    for query in ["q=", "q=...+!!", "q=a&offset=5000", "q=a&limit=0", &format!("q={many}")] {
        let got = app.get(&format!("/api/v1/search?{query}"), alice.token()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input");
    }
    for query in ["q=a&conversation=nope", "q=a&color=red", "conversation=x"] {
        let (status, body) = app.get(&format!("/api/v1/search?{query}"), alice.token()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
    assert_error(
        &app.call(Method::GET, "/api/v1/search?q=a", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}
