//! Attachments through the SDK: a resumable upload, then a message attaching it, received by the other
//! member with the attachment and a fetchable signed URL.

use super::helpers::{Server, WAIT, connect, messages, pair};
use herald_client::proto::{ErrorCode, MediaState, RejectReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_chunks_is_attached_and_its_url_fetched_by_the_other_member() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    // A text file, uploaded 7 bytes at a time: many PATCHes, each continuing at the server's offset.
    let text = bytes::Bytes::from_static(b"minutes of the meeting: nothing decided\n");
    let info = api.upload(&alice.access_token, text.clone(), "minutes.txt", 7).await.expect("upload");
    assert_eq!(info.state, MediaState::Ready, "{info:?}");
    assert_eq!(info.content_type.as_deref(), Some("text/plain"));

    let (client, _alice_events) = connect(&server.base, &alice).await;
    let (_bob_client, mut bob_events) = connect(&server.base, &bob).await;
    let ack = tokio::time::timeout(WAIT, client.send_with_attachments(c, "", vec![info.id]))
        .await
        .expect("ack in time")
        .expect("sent");
    let received = messages(&mut bob_events, c, 1).await;
    let message = &received[0].1;
    assert_eq!(message.seq, ack.seq);
    assert_eq!(message.attachments.len(), 1);
    assert_eq!(message.attachments[0].media_id, info.id);
    assert_eq!(message.attachments[0].filename.as_deref(), Some("minutes.txt"));

    let seen = api.media(&bob.access_token, info.id).await.expect("bob may see it");
    let url = seen.variants["original"].url.clone().expect("signed url");
    let body = reqwest::get(format!("{}{url}", server.base)).await.expect("fetch").bytes().await.expect("body");
    assert_eq!(body, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_reports_why_and_cannot_be_attached() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, _bob, c) = pair(&api).await;
    let elf = bytes::Bytes::from_static(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0 pretending to be a cat picture");
    let info = api.upload(&alice.access_token, elf, "cat.png", 1024).await.expect("upload");
    assert_eq!((info.state, info.reason), (MediaState::Rejected, Some(RejectReason::TypeNotAllowed)));
    let (client, _events) = connect(&server.base, &alice).await;
    let refused = tokio::time::timeout(WAIT, client.send_with_attachments(c, "look", vec![info.id]))
        .await
        .expect("answer in time")
        .expect_err("a rejected upload cannot be attached");
    assert_eq!(refused.code(), Some(ErrorCode::Conflict));
}
