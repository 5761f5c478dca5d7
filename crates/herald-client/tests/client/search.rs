//! Search through the SDK: a message sent over the WebSocket is found through `Api::search`, with its snippet,
//! and the query's parameters (one conversation, a page's size and offset) reach the server.

use super::helpers::{Server, connect, pair};
use herald_client::proto::SearchQuery;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_message_is_found_with_its_snippet() {
    let server = Server::start().await;
    let api = server.api();
    let (alice, bob, c) = pair(&api).await;
    let (alice_client, _alice_events) = connect(&server.base, &alice).await;
    let first = alice_client.send(c, "Rendez-vous at the café, 7 pm?").await.expect("acked").seq;
    let second = alice_client.send(c, "the café on the corner").await.expect("acked").seq;

    // Spaces and punctuation in the query are encoded; every word must start one of the message's.
    let query = SearchQuery { q: "CAFÉ, rendez".into(), conversation: Some(c), ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = api.search(&bob.access_token, &query).await.expect("search");
        if !page.results.is_empty() || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(page.results.iter().map(|r| r.message.seq).collect::<Vec<_>>(), [first]);
    let hits: Vec<&str> = page.results[0].snippet.iter().filter(|p| p.hit).map(|p| p.text.as_str()).collect();
    assert_eq!(hits, ["Rendez", "café"]);

    let both = SearchQuery { q: "caf".into(), limit: Some(1), ..Default::default() };
    let top = api.search(&bob.access_token, &both).await.expect("search");
    assert_eq!(top.results.len(), 1);
    assert_eq!(top.next, Some(1));
    let rest = api.search(&bob.access_token, &SearchQuery { offset: top.next, ..both }).await.expect("search");
    let mut seqs: Vec<u64> = top.results.iter().chain(&rest.results).map(|r| r.message.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [first, second]);
    assert!(api.search(&bob.access_token, &SearchQuery { q: "!!".into(), ..Default::default() }).await.is_err());
}
