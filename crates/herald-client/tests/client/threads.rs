//! Threads through the SDK: a reply sent into a thread arrives marked with its root, and the REST calls read the
//! thread, page its replies and move the reader's own position in it.

use super::helpers::{Server, connect, messages, pair};
use herald_client::proto::{Direction, HistoryQuery};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reply_is_sent_received_and_read() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    let (alice_client, _alice_events) = connect(&server.base, &alice).await;
    let (bob_client, mut bob_events) = connect(&server.base, &bob).await;

    let root = alice_client.send(c, "the plan").await.expect("acked").seq;
    let reply = bob_client.send_in_thread(c, root, "sounds good").await.expect("acked").seq;
    let second = alice_client.send_in_thread(c, root, "then it is settled").await.expect("acked").seq;
    let received = messages(&mut bob_events, c, 3).await;
    let threads: Vec<Option<u64>> = received.iter().map(|(_, m)| m.thread_root).collect();
    assert_eq!(threads, [None, Some(root), Some(root)], "each reply names its root");

    let thread = api.thread(&bob.access_token, c, root).await.expect("thread");
    assert_eq!((thread.replies, thread.last_seq, thread.read, thread.unread), (2, second, 0, 1));
    assert_eq!(thread.root.thread.as_ref().map(|t| t.replies), Some(2));
    let page = api
        .thread_replies(&bob.access_token, c, root, &HistoryQuery { dir: Direction::Backward, ..Default::default() })
        .await
        .expect("replies");
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [second, reply]);
    let read = api.mark_thread_read(&bob.access_token, c, root, second).await.expect("marked read");
    assert_eq!((read.read, read.unread), (second, 0));
    // A refused reply (its root is itself a reply) is refused for good, not retried.
    assert!(bob_client.send_in_thread(c, reply, "nested").await.is_err(), "a reply cannot root a thread");
}
