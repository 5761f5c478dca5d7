//! PostgreSQL crashing and coming back under a steady write load: while it is down every call fails fast as
//! unavailable (none waits past the timeout), the store recovers by itself when it is back, and every
//! acknowledged commit is stored, under its seq, exactly once.

use herald_core::conformance;
use herald_core::store::{MessageWrite, StoreError, Stores};
use herald_postgres::testing::OwnServer;
use herald_postgres::{PostgresDb, Settings};
use herald_proto::{ConversationId, DeviceId, Direction, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TIMEOUT_MS: u64 = 2_000;
const WRITERS: usize = 4;

#[derive(Default)]
struct Tally {
    /// seq → client_msg_id of every acknowledged commit.
    acked: Vec<(u64, String)>,
    unavailable: usize,
    /// Acknowledged commits that started after the server was back.
    acked_after_restart: usize,
    slowest: Duration,
}

/// Commits the conversation's next message, again and again: re-reads the last seq before each (and after
/// any failure, as the sequencer does), records what was acknowledged and how every call ended.
async fn writer(stores: Stores, conversation: ConversationId, stop: Arc<AtomicBool>, back: Arc<AtomicBool>) -> Tally {
    let (sender, device) = (UserId::new(), DeviceId::new());
    let mut tally = Tally::default();
    let mut attempt = 0;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let after_restart = back.load(Ordering::Relaxed);
        let started = Instant::now();
        let result = async {
            let last = stores.messages.last_seq(conversation).await?;
            let mut message = conformance::message(conversation, last + 1, sender, device);
            message.client_msg_id = format!("attempt-{attempt}");
            stores.messages.commit(&[MessageWrite::Insert(message.clone())]).await.map(|()| message)
        }
        .await;
        tally.slowest = tally.slowest.max(started.elapsed());
        match result {
            Ok(message) => {
                tally.acked.push((message.seq, message.client_msg_id));
                tally.acked_after_restart += usize::from(after_restart);
            }
            Err(StoreError::Unavailable(_)) => {
                tally.unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("a call failed with something else than `unavailable` around a restart: {e:?}"),
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_under_load_loses_nothing_acked_and_hangs_nothing() {
    let mut server = OwnServer::primary();
    let mut settings = Settings { url: server.url("postgres"), feed_retention: 1_000, ..Settings::default() };
    settings.pool.min_idle = 2;
    settings.pool.max_size = 8;
    settings.pool.statement_timeout_ms = TIMEOUT_MS;
    settings.pool.connect_timeout_ms = 500;
    let db = PostgresDb::open(&settings).await.expect("open");
    let (stop, back) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let conversations: Vec<ConversationId> = (0..WRITERS).map(|_| ConversationId::new()).collect();
    let writers: Vec<_> =
        conversations.iter().map(|&c| tokio::spawn(writer(db.stores(), c, stop.clone(), back.clone()))).collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop("immediate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start();
    back.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);

    let stores = db.stores();
    for (writer, conversation) in writers.into_iter().zip(conversations) {
        let tally = writer.await.expect("a writer panicked");
        eprintln!(
            "writer: {} acked ({} after the restart), {} unavailable, slowest call {:?}",
            tally.acked.len(),
            tally.acked_after_restart,
            tally.unavailable,
            tally.slowest
        );
        assert!(tally.unavailable > 0, "no call failed while the server was down: the test did not test anything");
        assert!(tally.acked_after_restart > 0, "the store did not recover after the server came back");
        assert!(
            tally.slowest < Duration::from_millis(2 * TIMEOUT_MS + 1_000),
            "a call waited {:?}, past its timeouts",
            tally.slowest
        );
        let history = stores.messages.history(conversation, 1, Direction::Forward, 100_000).await.expect("history");
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seqs must be dense after the restart");
        for (seq, client_msg_id) in &tally.acked {
            assert_eq!(
                history.get((*seq - 1) as usize).map(|m| m.client_msg_id.as_str()),
                Some(client_msg_id.as_str()),
                "an acknowledged commit is missing, or another message holds its seq {seq}"
            );
        }
    }
    db.close().await;
}
