//! A user's data export (`GET /api/v1/me/export`): one ZIP archive with their account, blocks, conversations,
//! every message they can read and the files they sent, and nothing of anyone else's.

use super::helpers::{TestApp, User, assert_error, spawn_app};
use super::media_support::{encode, picture};
use herald_proto::ConversationId;
use image::ImageFormat;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;

/// Downloads the caller's export; returns its files by name.
async fn export(app: &TestApp, user: &User) -> BTreeMap<String, Vec<u8>> {
    let response =
        app.http.get(format!("{}/api/v1/me/export", app.base)).bearer_auth(user.token()).send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(headers["cache-control"], "no-store");
    let disposition = headers["content-disposition"].to_str().expect("ascii");
    assert!(disposition.starts_with("attachment; filename=\"herald-export-"), "{disposition}");
    let bytes = response.bytes().await.expect("the whole archive");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid ZIP archive");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).expect("an entry");
        let mut content = Vec::new();
        file.read_to_end(&mut content).expect("an entry that reads back (its checksum holds)");
        files.insert(file.name().expect("a UTF-8 name").into_owned(), content);
    }
    files
}

fn json_file(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(files.get(name).unwrap_or_else(|| panic!("no {name} in {:?}", files.keys())))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn lines(files: &BTreeMap<String, Vec<u8>>, conversation: ConversationId) -> Vec<Value> {
    let name = format!("conversations/{conversation}.jsonl");
    let text = std::str::from_utf8(files.get(&name).unwrap_or_else(|| panic!("no {name}"))).expect("UTF-8");
    text.lines().map(|line| serde_json::from_str(line).expect("one JSON object a line")).collect()
}

#[tokio::test]
async fn an_export_holds_everything_of_the_user_and_nothing_of_others() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (app.register("alice").await, app.register("bob").await, app.register("carol").await);
    let group = app.group(&alice, &[&bob, &carol]).await;
    let direct = app.direct(&alice, &bob).await;
    let own = encode(&picture(64, 48, 7), ImageFormat::Png);
    let (mine, _) = app.ready_upload(&alice, &own, "../../etc/cat.png", "image/png").await;
    let (bobs, _) =
        app.ready_upload(&bob, &encode(&picture(32, 32, 9), ImageFormat::Png), "dog.png", "image/png").await;
    let attach = |user: &User, conversation: ConversationId, id, media| {
        let path = format!("/api/v1/conversations/{conversation}/messages");
        let body = json!({"client_msg_id": id, "body": "look", "attachments": [media]});
        let (app, token) = (&app, user.token().to_owned());
        async move { app.post(&path, &token, body).await }
    };
    assert_eq!(attach(&alice, group, "a-photo", mine).await.0, StatusCode::CREATED);
    assert_eq!(attach(&bob, direct, "b-photo", bobs).await.0, StatusCode::CREATED);
    for i in 0..300 {
        app.send(&alice, direct, &format!("d{i}"), &format!("direct message {i}")).await;
    }
    app.send(&bob, group, "b1", "hello all").await;
    let block = app.call(Method::PUT, &format!("/api/v1/blocks/{}", carol.id()), Some(alice.token()), None).await;
    assert_eq!(block.0, StatusCode::NO_CONTENT);
    // Carol leaves a conversation of her own, which Alice never saw.
    let (status, _) = app
        .post("/api/v1/conversations", carol.token(), json!({"kind": "group", "title": "carol's", "members": []}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let files = export(&app, &alice).await;
    assert!(files.contains_key("README.txt"));
    let account = json_file(&files, "account.json");
    assert_eq!(account["user"]["id"], alice.id().to_string());
    assert_eq!(account["devices"].as_array().map(Vec::len), Some(1), "{account}");
    assert_eq!(json_file(&files, "blocks.json")[0]["user_id"], carol.id().to_string());

    let conversations = json_file(&files, "conversations.json");
    let ids: Vec<&str> =
        conversations.as_array().expect("a list").iter().filter_map(|c| c["conversation"]["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "her two conversations, not Carol's own: {conversations}");
    for c in conversations.as_array().expect("a list") {
        assert!(c["members"].as_array().is_some_and(|m| m.len() >= 2), "{c}");
        assert!(c["cursor"]["last_seq"].as_u64().is_some(), "{c}");
    }

    // Every message she can read, in order, across pages: her own and the others'.
    for conversation in [group, direct] {
        let exported = lines(&files, conversation);
        let stored = app.all_messages(&alice, conversation).await;
        assert_eq!(exported, stored, "the export of {conversation} is its history");
    }
    assert_eq!(lines(&files, direct).len(), 301);
    assert!(lines(&files, group).iter().any(|m| m["body"] == "hello all"), "Bob's message in her group");

    // Her file, as uploaded, under a name that cannot climb out of the archive's folder; not Bob's.
    let media = json_file(&files, "media.json");
    assert_eq!(media.as_array().map(Vec::len), Some(1), "{media}");
    let path = media[0]["path"].as_str().expect("where the file is");
    assert_eq!(path, format!("media/{mine}/cat.png"));
    assert_eq!(media[0]["conversation_id"], group.to_string());
    assert_eq!(files[path], own, "the original's bytes");
    assert!(!files.keys().any(|name| name.contains(&bobs.to_string())), "none of Bob's files");

    // Bob's export: the conversations he shares with her, his own file, nothing of Carol's group.
    let files = export(&app, &bob).await;
    assert_eq!(json_file(&files, "conversations.json").as_array().map(Vec::len), Some(2));
    assert_eq!(json_file(&files, "media.json")[0]["media_id"], bobs.to_string());
    assert_eq!(json_file(&files, "blocks.json"), json!([]));
}

#[tokio::test]
async fn an_export_needs_a_session() {
    let app = spawn_app().await;
    assert_error(
        &app.call(Method::GET, "/api/v1/me/export", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &app.call(Method::GET, "/api/v1/me/export", Some("not-a-token"), None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}
