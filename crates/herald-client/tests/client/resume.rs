//! Resuming: a client that was away receives what it missed, exactly once and in order.

use super::helpers::{Proxy, Server, WAIT, client_config, connect, messages, pair, stray_messages, until, until_state};
use herald_client::proto::{HistoryQuery, SendMessage};
use herald_client::{Client, ClientEvent, ConnectionState};
use std::time::Duration;

/// Bob's connection is cut while Alice keeps writing; when the network comes back, Bob's client
/// reconnects by itself and receives every missed message once, in order, after those it already had.
/// Then a new client for Bob, started from the position the first one reached, gets only what is newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_receives_every_missed_message_once_in_order() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    let mut proxy = Proxy::start(server.addr).await;
    let (alice_client, _alice_events) = connect(&server.base, &alice).await;
    let (bob_client, mut bob_events) = connect(&proxy.base(), &bob).await;

    for i in 0..5 {
        alice_client.send(c, format!("live {i}")).await.expect("acked");
    }
    let mut received = messages(&mut bob_events, c, 5).await;

    proxy.cut();
    until_state(&mut bob_events, "bob's disconnection", |s| matches!(s, ConnectionState::Disconnected { .. })).await;
    for i in 5..25 {
        alice_client.send(c, format!("missed {i}")).await.expect("acked");
    }
    proxy.restore().await;
    received.extend(messages(&mut bob_events, c, 20).await);
    assert!(stray_messages(&mut bob_events, Duration::from_millis(300)).await.is_empty(), "nothing twice");

    let seqs: Vec<u64> = received.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>(), "every message once, in order");
    let positions: Vec<u64> = received.iter().map(|(pos, _)| *pos).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions increase: {positions:?}");
    assert!(received[5..].iter().all(|(_, m)| m.body.starts_with("missed")));
    assert_eq!(bob_client.position(), *positions.last().expect("positions"));

    // A new device session of the same client code, resuming from the stored position.
    let since = bob_client.position();
    bob_client.close().await;
    for i in 25..28 {
        alice_client.send(c, format!("later {i}")).await.expect("acked");
    }
    let mut config = client_config(&server.base, &bob);
    config.since = since;
    let (_resumed, mut resumed_events) = Client::connect(config).await.expect("starts");
    let later = messages(&mut resumed_events, c, 3).await;
    assert_eq!(later.iter().map(|(_, m)| m.seq).collect::<Vec<_>>(), [26, 27, 28], "only what is newer");
    assert!(later.iter().all(|(pos, _)| *pos > since));
    assert!(stray_messages(&mut resumed_events, Duration::from_millis(300)).await.is_empty());
}

/// `start_at_latest` skips what happened before the first connection; the rest flows as usual.
#[tokio::test]
async fn a_new_device_can_start_at_the_latest_position() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    for i in 0..3 {
        let message = SendMessage {
            client_msg_id: format!("old{i}"),
            body: format!("old {i}"),
            reply_to: None,
            thread_root: None,
            attachments: Vec::new(),
        };
        api.send_message(&alice.access_token, c, &message).await.expect("sent");
    }
    let mut config = client_config(&server.base, &bob);
    config.start_at_latest = true;
    let (bob_client, mut events) = Client::connect(config).await.expect("starts");
    let synced = until(&mut events, "synced", |e| match e {
        ClientEvent::Synced { pos } => Some(*pos),
        _ => None,
    })
    .await;
    assert_eq!((synced, bob_client.position()), (3, 3));
    let message = SendMessage {
        client_msg_id: "new".into(),
        body: "new".into(),
        reply_to: None,
        thread_root: None,
        attachments: Vec::new(),
    };
    api.send_message(&alice.access_token, c, &message).await.expect("sent");
    let got = messages(&mut events, c, 1).await;
    assert_eq!((got[0].0, got[0].1.seq), (4, 4), "only the new message");
}

/// A position older than the feed keeps is answered with `resync`: the client reports it and carries on
/// live from the position it was given.
#[tokio::test]
async fn a_resync_is_reported_and_the_client_continues() {
    let server = Server::start_with(|c| c.storage.feed_retention = 100).await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    for i in 0..120 {
        let message = SendMessage {
            client_msg_id: format!("m{i}"),
            body: format!("old {i}"),
            reply_to: None,
            thread_root: None,
            attachments: Vec::new(),
        };
        api.send_message(&alice.access_token, c, &message).await.expect("sent");
    }
    let mut config = client_config(&server.base, &bob);
    config.since = 1;
    let (bob_client, mut events) = Client::connect(config).await.expect("starts");
    let (pos, reason) = until(&mut events, "resync", |e| match e {
        ClientEvent::Resync { pos, reason } => Some((*pos, reason.clone())),
        _ => None,
    })
    .await;
    assert_eq!(pos, 120, "continues from the feed's newest position ({reason})");
    until(&mut events, "synced", |e| matches!(e, ClientEvent::Synced { .. }).then_some(())).await;

    let (alice_client, _alice_events) = connect(&server.base, &alice).await;
    let ack = alice_client.send(c, "new").await.expect("acked");
    let got = messages(&mut events, c, 1).await;
    assert_eq!((got[0].0, got[0].1.seq), (121, ack.seq));
    // After a resync the application reloads over REST; the client's REST helpers work with its session.
    let page = bob_client.history(c, &HistoryQuery { limit: Some(5), ..HistoryQuery::default() }).await;
    assert_eq!(page.expect("history").last_seq, 121);
    let _ = WAIT;
}

/// Read positions go over the socket and come back as the user's cursor; the other member gets a receipt.
#[tokio::test]
async fn read_receipts_and_typing_reach_the_other_member() {
    let server = Server::start().await;
    let (alice, bob, c) = pair(&server.api()).await;
    let (alice_client, mut alice_events) = connect(&server.base, &alice).await;
    let (bob_client, mut bob_events) = connect(&server.base, &bob).await;
    until(&mut bob_events, "bob synced", |e| matches!(e, ClientEvent::Synced { .. }).then_some(())).await;
    let ack = alice_client.send(c, "read me").await.expect("acked");
    messages(&mut bob_events, c, 1).await;

    let cursor = tokio::time::timeout(WAIT, bob_client.mark_read(c, ack.seq)).await.expect("in time").expect("read");
    assert_eq!((cursor.read, cursor.unread), (1, 0));
    let receipt = until(&mut alice_events, "bob's receipt", |e| match e {
        ClientEvent::Receipt { user_id, read, .. } if *user_id == bob.user.id => Some(*read),
        _ => None,
    })
    .await;
    assert_eq!(receipt, 1);

    bob_client.typing(c, true).expect("typing sent");
    let typing = until(&mut alice_events, "bob typing", |e| match e {
        ClientEvent::Typing { user_id, active, .. } if *user_id == bob.user.id => Some(*active),
        _ => None,
    })
    .await;
    assert!(typing);
}
