//! A node at its bound of pending writes (`log.max_pending_writes`): the writes beyond it get `unavailable`
//! with a delay to retry after (`Retry-After` over HTTP, `retry_after_ms` in the body and in WebSocket error
//! frames), nothing is half done, and a retry with the same client_msg_id is stored once.

use super::helpers::spawn_app_with;
use super::ws::Ws;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Concurrent sends per transport: far more than the one slot the test node has.
const CONCURRENT: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_beyond_the_bound_are_refused_with_a_retry_delay_and_lose_nothing() {
    let app = spawn_app_with(|c| {
        c.log.max_pending_writes = 1;
        c.log.admission_wait_ms = 1;
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let url = format!("{}/api/v1/conversations/{conversation}/messages", app.base);

    // Over REST, all at once.
    let sends = (0..CONCURRENT).map(|n| {
        let request = app
            .http
            .post(&url)
            .bearer_auth(alice.token())
            .json(&json!({"client_msg_id": format!("r{n}"), "body": format!("r{n}")}));
        tokio::spawn(async move { (n, request.send().await.expect("an answer")) })
    });
    let mut refused = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        let (n, response) = send.await.expect("a send");
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                let retry = response.headers().get("retry-after").expect("Retry-After on a refused write").clone();
                let body: Value = response.json().await.expect("an error body");
                assert_eq!(body["code"], "unavailable", "{body}");
                let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
                assert!((500..=1000).contains(&ms), "retry after {ms} ms");
                assert_eq!(retry.to_str().expect("ascii"), ms.div_ceil(1000).to_string());
                refused.push(n);
            }
            status => panic!("send {n}: {status} {}", response.text().await.unwrap_or_default()),
        }
    }
    assert!(!refused.is_empty(), "{CONCURRENT} concurrent sends on one slot: some must be refused");

    // Over a WebSocket, all at once too: refusals are error frames with the delay.
    let mut ws = Ws::connect(&app, &bob).await;
    for n in 0..CONCURRENT {
        ws.send(json!({"type": "send", "id": format!("w{n}"), "conversation_id": conversation, "client_msg_id": format!("w{n}"), "body": format!("w{n}")})).await;
    }
    let mut ws_refused = Vec::new();
    let mut answered = 0;
    while answered < CONCURRENT {
        let frame = ws.next().await.expect("an answer to every send");
        match frame["type"].as_str() {
            Some("ack") => answered += 1,
            Some("error") => {
                assert_eq!(frame["code"], "unavailable", "{frame}");
                assert!(frame["retry_after_ms"].as_u64().is_some(), "{frame}");
                ws_refused.push(frame["id"].as_str().expect("id").to_owned());
                answered += 1;
            }
            _ => {}
        }
    }
    drop(ws);

    // The refused are sent again, with the same client_msg_ids, one at a time: every message is stored once.
    for n in &refused {
        app.send(&alice, conversation, &format!("r{n}"), &format!("r{n}")).await;
    }
    for id in &ws_refused {
        app.send(&bob, conversation, id, id).await;
    }
    let stored = app.all_messages(&alice, conversation).await;
    let bodies: Vec<&str> = stored.iter().map(|m| m["body"].as_str().expect("body")).collect();
    let distinct: BTreeSet<&str> = bodies.iter().copied().collect();
    assert_eq!(
        bodies.len(),
        2 * CONCURRENT,
        "every send stored once (refused: {} + {})",
        refused.len(),
        ws_refused.len()
    );
    assert_eq!(distinct.len(), 2 * CONCURRENT, "no send stored twice");
    let scrape =
        app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape").text().await.expect("text");
    let refusals: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("writes_refused_total{reason=\"overloaded\"} ")?.trim().parse().ok())
        .expect("writes_refused_total in the scrape");
    assert_eq!(refusals as usize, refused.len() + ws_refused.len(), "each refusal counted");
}
