//! The reconnect schedule, as the running client applies it.

use super::helpers::{Server, WAIT, client_config, pair, until, until_state};
use herald_client::proto::{DeviceId, Session, UserId, UserProfile};
use herald_client::{BackoffConfig, Client, ClientConfig, ClientEvent, ConnectionState};
use std::time::Duration;
use tokio::time::Instant;

/// With time paused, a client that cannot connect walks the real schedule (1 s, 2 s, 4 s … 30 s, full
/// jitter) in virtual time: each delay lies in [0, cap], the caps double and stop at the max, attempts
/// count up, and the client really waits each delay before the next attempt.
#[tokio::test(start_paused = true)]
async fn reconnect_delays_follow_the_backoff_schedule() {
    // A port where nothing listens: every attempt is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let session = Session {
        user: UserProfile { id: UserId::new(), username: "nobody".into(), created_at: 0, deleted: false },
        device_id: DeviceId::new(),
        access_token: "not-a-real-token".into(),
        access_expires_at: i64::MAX / 2,
        refresh_token: "not-a-real-refresh-token".into(),
    };
    let schedule = BackoffConfig::default();
    let mut config = ClientConfig::new(format!("http://{addr}"), session);
    config.backoff = schedule.clone();
    config.connect_timeout = Duration::from_secs(2);
    let (client, mut events) = Client::connect(config).await.expect("client starts");

    let mut previous: Option<(Instant, Duration)> = None;
    let mut caps = Vec::new();
    while caps.len() < 10 {
        let Some(event) = events.recv().await else { panic!("the event stream ended") };
        let ClientEvent::State(ConnectionState::Reconnecting { attempt, delay }) = event else { continue };
        assert_eq!(attempt as usize, caps.len(), "attempts count up from 0");
        let cap = schedule.cap(attempt);
        assert!(delay <= cap, "attempt {attempt}: delay {delay:?} above its cap {cap:?}");
        let now = Instant::now();
        if let Some((at, waited)) = previous {
            let elapsed = now - at;
            assert!(elapsed >= waited, "attempt {attempt} came after {elapsed:?}, before the {waited:?} delay");
            assert!(elapsed <= waited + Duration::from_secs(3), "attempt {attempt} came late: {elapsed:?}");
        }
        previous = Some((now, delay));
        caps.push(cap.as_secs());
    }
    assert_eq!(caps, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30], "caps double from 1 s and stop at 30 s");
    client.close().await;
    assert_eq!(client.state(), ConnectionState::Closed { reason: "closed".into() });
}

/// A 429 at the upgrade is honoured: the next attempt waits at least the server's retry delay, even
/// though the client's own backoff is much shorter.
#[tokio::test]
async fn a_429_at_the_upgrade_delays_the_next_attempt() {
    let server = Server::start_with(|c| {
        c.gateway.handshakes_per_second = 1;
        c.gateway.handshake_burst = 1;
    })
    .await;
    let (alice, _bob, _) = pair(&server.api()).await;
    // Use up the handshake budget.
    let url = format!("ws://{}/ws?v=1&token={}", server.addr, alice.access_token);
    let (_first, _) = tokio_tungstenite::connect_async(url).await.expect("first upgrade admitted");

    let (client, mut events) = Client::connect(client_config(&server.base, &alice)).await.expect("client starts");
    let reason =
        until_state(&mut events, "a refused upgrade", |s| matches!(s, ConnectionState::Disconnected { .. })).await;
    assert!(format!("{reason:?}").contains("429"), "refused with 429: {reason:?}");
    let delay = until(&mut events, "the reconnect delay", |e| match e {
        ClientEvent::State(ConnectionState::Reconnecting { delay, .. }) => Some(*delay),
        _ => None,
    })
    .await;
    // The client's own backoff is at most 400 ms; the server asked for about a second or more.
    assert!(delay >= Duration::from_millis(500), "the Retry-After hint was not honoured: {delay:?}");
    tokio::time::timeout(WAIT, client.wait_connected()).await.expect("connects after waiting").expect("connected");
}
