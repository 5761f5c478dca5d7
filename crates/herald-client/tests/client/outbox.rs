//! The outbox: every message written is stored exactly once, in order, whatever happens to the connection.

use super::helpers::{
    Proxy, Server, WAIT, client_config, connect, history, messages, pair, stray_messages, until, until_state,
};
use herald_client::proto::{ConversationId, Message, SendAck};
use herald_client::{Client, ClientEvent, ConnectionState, PendingSend};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Waits for every send; returns the acks by client_msg_id, in the order written.
async fn acks(pending: Vec<PendingSend>) -> Vec<(String, SendAck)> {
    let ids: Vec<String> = pending.iter().map(|p| p.client_msg_id().to_owned()).collect();
    let results = tokio::time::timeout(WAIT, futures_util::future::join_all(pending)).await.expect("acks in time");
    ids.into_iter().zip(results).map(|(id, r)| (id.clone(), r.unwrap_or_else(|e| panic!("send {id}: {e}")))).collect()
}

/// Checks the stored conversation against what was written: each client_msg_id exactly once, seqs dense
/// from 1, bodies in the order written, and each ack naming the seq the message is stored under.
fn assert_stored_exactly_once(stored: &[Message], written: &[(String, SendAck)], bodies: &[String]) {
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=written.len() as u64).collect::<Vec<_>>(), "dense seqs, one per message written");
    let ids: BTreeSet<&str> = stored.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "a client_msg_id stored twice");
    let stored_bodies: Vec<&str> = stored.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(stored_bodies, bodies.iter().map(String::as_str).collect::<Vec<_>>(), "stored in the order written");
    let by_id: BTreeMap<&str, u64> = stored.iter().map(|m| (m.client_msg_id.as_str(), m.seq)).collect();
    for (id, ack) in written {
        assert_eq!(by_id.get(id.as_str()), Some(&ack.seq), "ack of {id} names its stored seq");
        uuid::Uuid::parse_str(id).expect("client_msg_id is a UUID");
    }
}

fn assert_seqs_once_in_order(received: &[(u64, Message)], n: u64, who: &str) {
    let seqs: Vec<u64> = received.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{who}: every message once, in order");
    assert!(received.windows(2).all(|w| w[0].0 < w[1].0), "{who}: feed positions increase");
}

/// Sends, a graceful server restart mid-way (the server says `reconnect`, then closes), more sends while
/// the server is down, and a new server on the same data dir: every message is stored exactly once, in
/// order, and both members receive each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_stored_once_across_a_server_restart() {
    let mut server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    let (client, mut alice_events) = connect(&server.base, &alice).await;
    let (_bob_client, mut bob_events) = connect(&server.base, &bob).await;

    let bodies: Vec<String> = (0..30).map(|i| format!("message {i}")).collect();
    let mut pending: Vec<PendingSend> = bodies[..15].iter().map(|b| client.send(c, b.clone())).collect();
    // Down mid-stream: some of those are stored, some in flight, some not yet sent. Alice may hear of the stored
    // ones before she hears of the disconnection: they are kept (each is reported once, and not again later).
    server.stop().await;
    let mut alice_got = Vec::new();
    until(&mut alice_events, "alice's disconnection", |e| match e {
        ClientEvent::Message { pos, message } if message.conversation_id == c => {
            alice_got.push((*pos, message.clone()));
            None
        }
        ClientEvent::State(ConnectionState::Disconnected { .. }) => Some(()),
        _ => None,
    })
    .await;
    // Written while offline: they wait in the outbox.
    pending.extend(bodies[15..].iter().map(|b| client.send(c, b.clone())));
    tokio::time::timeout(WAIT, async {
        while client.outbox_len() < 15 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("offline messages wait in the outbox");

    server.start_again().await;
    let written = acks(pending).await;
    assert_eq!(client.outbox_len(), 0, "acked messages leave the outbox");
    assert_stored_exactly_once(&history(&api, &alice, c).await, &written, &bodies);

    let rest = 30 - alice_got.len();
    alice_got.extend(messages(&mut alice_events, c, rest).await);
    assert_seqs_once_in_order(&alice_got, 30, "alice");
    let bob_got = messages(&mut bob_events, c, 30).await;
    assert_seqs_once_in_order(&bob_got, 30, "bob");
    assert!(stray_messages(&mut bob_events, Duration::from_millis(300)).await.is_empty(), "bob: nothing twice");
}

/// The connection is cut abruptly (no close, no hint) again and again while messages are being sent:
/// sends in flight at a cut are sent again with the same client_msg_id, and the server's deduplication
/// keeps each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_stored_once_across_abrupt_cuts() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, _bob, c) = pair(&api).await;
    let mut proxy = Proxy::start(server.addr).await;
    let (client, mut events) = connect(&proxy.base(), &alice).await;

    let bodies: Vec<String> = (0..60).map(|i| format!("cut {i}")).collect();
    let mut pending = Vec::new();
    for (round, chunk) in bodies.chunks(10).enumerate() {
        // Cut a live connection, with sends in flight (and stale events drained, so the next
        // `Disconnected` is the cut's).
        tokio::time::timeout(WAIT, client.wait_connected()).await.expect("reconnects").expect("connected");
        while events.try_recv().is_some() {}
        pending.extend(chunk.iter().map(|b| client.send(c, b.clone())));
        tokio::time::sleep(Duration::from_millis(3 + 4 * round as u64)).await;
        proxy.cut();
        until_state(&mut events, "the cut", |s| matches!(s, ConnectionState::Disconnected { .. })).await;
        proxy.restore().await;
    }
    let written = acks(pending).await;
    assert_stored_exactly_once(&history(&api, &alice, c).await, &written, &bodies);
}

/// The server stores a message but its ack is lost with the connection: after reconnecting, the message
/// leaves the outbox with the seq it was stored under, and is not stored a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_ack_was_lost_is_stored_once() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, _bob, c) = pair(&api).await;
    let mut proxy = Proxy::start(server.addr).await;
    let (client, mut events) = connect(&proxy.base(), &alice).await;
    until(&mut events, "synced", |e| matches!(e, ClientEvent::Synced { .. }).then_some(())).await;

    proxy.freeze_downstream();
    let pending = client.send(c, "my ack gets lost");
    let id = pending.client_msg_id().to_owned();
    tokio::time::timeout(WAIT, async {
        while history(&api, &alice, c).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server stores it");
    assert_eq!(client.outbox_len(), 1, "no ack yet: still in the outbox");
    proxy.cut();
    proxy.restore().await;

    let ack = tokio::time::timeout(WAIT, pending).await.expect("in time").expect("acked after reconnecting");
    assert_eq!(ack.seq, 1);
    let next = tokio::time::timeout(WAIT, client.send(c, "and the next")).await.expect("in time").expect("acked");
    assert_eq!(next.seq, 2);
    let stored = history(&api, &alice, c).await;
    assert_eq!(stored.iter().map(|m| (m.seq, m.client_msg_id.as_str())).collect::<Vec<_>>()[0], (1, id.as_str()));
    assert_eq!(stored.len(), 2, "stored once: {stored:?}");
}

/// Order holds per conversation while sends to several conversations proceed side by side.
#[tokio::test]
async fn order_is_kept_per_conversation() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c1) = pair(&api).await;
    let c2 = api.create_group(&alice.access_token, "team", &[bob.user.id]).await.expect("group").conversation.id;
    let (client, _events) = connect(&server.base, &alice).await;
    let mut pending: Vec<(ConversationId, PendingSend)> = Vec::new();
    for i in 0..20 {
        pending.push((c1, client.send(c1, format!("one {i}"))));
        pending.push((c2, client.send(c2, format!("two {i}"))));
    }
    for (_, p) in pending {
        tokio::time::timeout(WAIT, p).await.expect("in time").expect("acked");
    }
    for (c, prefix) in [(c1, "one"), (c2, "two")] {
        let bodies: Vec<String> = history(&api, &alice, c).await.into_iter().map(|m| m.body).collect();
        assert_eq!(bodies, (0..20).map(|i| format!("{prefix} {i}")).collect::<Vec<_>>());
    }
}

/// A refused message fails its future with the server's code and does not block the ones after it.
#[tokio::test]
async fn a_refused_message_fails_alone() {
    let server = Server::start().await;
    let (alice, _bob, c) = pair(&server.api()).await;
    let (client, _events) = connect(&server.base, &alice).await;
    let blank = client.send(c, "   ");
    let next = client.send(c, "fine");
    let error = tokio::time::timeout(WAIT, blank).await.expect("in time").expect_err("blank body refused");
    assert_eq!(error.code(), Some(herald_client::proto::ErrorCode::InvalidInput), "{error}");
    assert_eq!(tokio::time::timeout(WAIT, next).await.expect("in time").expect("acked").seq, 1);
    assert_eq!(client.outbox_len(), 0);
}

/// Closing fails what is still in the outbox, and a closed client refuses new work.
#[tokio::test]
async fn closing_fails_pending_sends() {
    let mut server = Server::start().await;
    let (alice, _bob, c) = pair(&server.api()).await;
    let (client, mut events) = Client::connect(client_config(&server.base, &alice)).await.expect("starts");
    client.wait_connected().await.expect("connected");
    server.stop().await;
    let pending = client.send(c, "never sent");
    client.close().await;
    assert!(matches!(pending.await, Err(herald_client::ClientError::Closed)));
    assert!(matches!(client.send(c, "after close").await, Err(herald_client::ClientError::Closed)));
    // The stream ends after the final state.
    let mut last = None;
    while let Some(event) = tokio::time::timeout(WAIT, events.recv()).await.expect("stream ends") {
        last = Some(event);
    }
    assert!(matches!(last, Some(herald_client::ClientEvent::State(ConnectionState::Closed { .. }))), "{last:?}");
}
