//! Reports, blocks, suspensions, deletions and data exports through the SDK: a member reports a message, a server
//! admin pages through the reports by state and resolves one; a user blocks another and the other's direct message
//! is refused; an admin suspends an account, which loses its session and its logins until the suspension is
//! lifted, and deletes one; a user saves the export of their data to a file.

use super::helpers::{Server, connect, pair, register};
use herald_client::Api;
use herald_client::proto::{
    CreateReport, Credentials, ErrorCode, ReportListQuery, ReportReason, ReportState, ReportTarget, SendMessage,
    Session,
};

/// A server whose admin is `sdk_admin`, registered.
async fn server_with_admin() -> (Server, Api, Session) {
    let server = Server::start_with(|c| c.auth.admins = vec!["sdk_admin".into()]).await;
    let api = server.api();
    let admin = api
        .register(&Credentials { username: "sdk_admin".into(), password: "correct horse".into(), device_name: None })
        .await
        .expect("admin registers");
    (server, api, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reports_and_an_admin_lists_and_resolves() {
    let (server, api, admin) = server_with_admin().await;
    let (alice, bob, c) = pair(&api).await;
    let ack = api
        .send_message(
            &bob.access_token,
            c,
            &SendMessage {
                client_msg_id: "r1".into(),
                body: "rude words".into(),
                reply_to: None,
                thread_root: None,
                attachments: Vec::new(),
            },
        )
        .await
        .expect("sent");

    // Alice reports Bob's message with her connected client, then Bob himself over REST.
    let (client, _events) = connect(&server.base, &alice).await;
    let target = ReportTarget::Message { conversation_id: c, seq: ack.seq };
    let report = CreateReport { target, reason: ReportReason::Harassment, comment: "twice now".into() };
    let filed = client.report(&report).await.expect("reported");
    assert_eq!(filed.message.as_ref().map(|m| m.body.as_str()), Some("rude words"));
    let carol = register(&api, "carol").await;
    let of_bob = CreateReport {
        target: ReportTarget::User { user_id: bob.user.id },
        reason: ReportReason::Spam,
        comment: String::new(),
    };
    let second = api.report(&carol.access_token, &of_bob).await.expect("reported");

    let denied = api.reports(&alice.access_token, &ReportListQuery::default()).await.expect_err("not an admin");
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));
    let page = api
        .reports(&admin.access_token, &ReportListQuery { state: Some(ReportState::Open), before: None, limit: Some(1) })
        .await
        .expect("listed");
    assert_eq!(page.reports.iter().map(|r| r.id).collect::<Vec<_>>(), vec![second.id]);
    let before = page.next_before.expect("an older page");
    let older = api
        .reports(
            &admin.access_token,
            &ReportListQuery { state: Some(ReportState::Open), before: Some(before), limit: Some(1) },
        )
        .await
        .expect("listed");
    assert_eq!(older.reports.iter().map(|r| r.id).collect::<Vec<_>>(), vec![filed.id]);

    let resolved = api.resolve_report(&admin.access_token, filed.id, "talked to bob").await.expect("resolved");
    assert_eq!(resolved.state, ReportState::Resolved);
    let again = api.resolve_report(&admin.access_token, filed.id, "again").await.expect_err("resolved once");
    assert_eq!(again.code(), Some(ErrorCode::Conflict));
    let open_only = ReportListQuery { state: Some(ReportState::Open), ..Default::default() };
    let open = api.reports(&admin.access_token, &open_only).await.expect("listed");
    assert_eq!(open.reports.iter().map(|r| r.id).collect::<Vec<_>>(), vec![second.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_write_directly_until_unblocked() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    api.block_user(&alice.access_token, bob.user.id).await.expect("blocked");
    let listed = api.blocks(&alice.access_token).await.expect("listed");
    assert_eq!(listed.iter().map(|b| b.user_id).collect::<Vec<_>>(), vec![bob.user.id]);
    let message = SendMessage {
        client_msg_id: "b1".into(),
        body: "hi".into(),
        reply_to: None,
        thread_root: None,
        attachments: Vec::new(),
    };
    let refused = api.send_message(&bob.access_token, c, &message).await.expect_err("blocked");
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    api.unblock_user(&alice.access_token, bob.user.id).await.expect("unblocked");
    assert!(api.blocks(&alice.access_token).await.expect("listed").is_empty());
    api.send_message(&bob.access_token, c, &message).await.expect("sent once unblocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_suspends_an_account_and_lifts_the_suspension() {
    let (_server, api, admin) = server_with_admin().await;
    let (alice, bob, _) = pair(&api).await;
    let denied = api.suspend_user(&alice.access_token, bob.user.id, "").await.expect_err("not an admin");
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));

    let suspended = api.suspend_user(&admin.access_token, bob.user.id, "spam").await.expect("suspended");
    assert_eq!(suspended.suspension.as_ref().map(|s| (s.by, s.reason.as_str())), Some((admin.user.id, "spam")));
    assert!(suspended.devices.is_empty());
    let gone = api.me(&bob.access_token).await.expect_err("the session is closed");
    assert_eq!(gone.code(), Some(ErrorCode::Unauthorized));
    let credentials =
        Credentials { username: bob.user.username.clone(), password: "correct horse".into(), device_name: None };
    let refused = api.login(&credentials).await.expect_err("suspended");
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    assert_eq!(api.admin_user(&admin.access_token, bob.user.id).await.expect("seen").suspension, suspended.suspension);

    let lifted = api.unsuspend_user(&admin.access_token, bob.user.id).await.expect("lifted");
    assert_eq!(lifted.suspension, None);
    api.login(&credentials).await.expect("logs in again");
}

#[tokio::test]
async fn an_admin_deletes_an_account() {
    let (_server, api, admin) = server_with_admin().await;
    let (alice, bob, c) = pair(&api).await;
    let denied = api.delete_user(&alice.access_token, bob.user.id).await.expect_err("not an admin");
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));

    let deleted = api.delete_user(&admin.access_token, bob.user.id).await.expect("deleted");
    assert!(deleted.user.deleted, "{deleted:?}");
    assert_eq!((deleted.groups_left, deleted.messages_removed), (0, 0), "a direct conversation stays");
    let gone = api.me(&bob.access_token).await.expect_err("the session is closed");
    assert_eq!(gone.code(), Some(ErrorCode::Unauthorized));
    let credentials =
        Credentials { username: bob.user.username.clone(), password: "correct horse".into(), device_name: None };
    assert_eq!(api.login(&credentials).await.expect_err("erased").code(), Some(ErrorCode::Unauthorized));
    let seen = api.user(&alice.access_token, bob.user.id).await.expect("still known by id");
    assert!(seen.deleted && seen.username != bob.user.username, "{seen:?}");
    api.conversation(&alice.access_token, c).await.expect("Alice keeps the conversation");
}

#[tokio::test]
async fn a_user_exports_their_data_to_a_file() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, _bob, c) = pair(&api).await;
    let (client, _events) = connect(&server.base, &alice).await;
    client.send(c, "for the record").await.expect("sent");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.zip");
    let mut file = tokio::fs::File::create(&path).await.expect("create");
    let size = api.export_to(&alice.access_token, &mut file).await.expect("exported");
    assert_eq!(std::fs::metadata(&path).expect("written").len(), size);
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).expect("open")).expect("a ZIP archive");
    let mut messages = String::new();
    std::io::Read::read_to_string(
        &mut archive.by_name(&format!("conversations/{c}.jsonl")).expect("the chat"),
        &mut messages,
    )
    .expect("read");
    assert!(messages.contains("for the record"), "{messages}");

    let refused = api.export_to("not-a-token", &mut tokio::io::sink()).await.expect_err("no session");
    assert_eq!(refused.code(), Some(ErrorCode::Unauthorized));
}
