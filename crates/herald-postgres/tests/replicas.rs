//! Read replicas never break a guarantee and never fail a request: a real streaming replica (`pg_basebackup
//! -R`) whose replay is paused is skipped once it is further behind than `replica_max_lag_ms`; a stopped one
//! is skipped at once; and while the primary is down, reads that may lag are still answered by the replica
//! while everything a guarantee depends on fails fast as unavailable.

use herald_core::conformance;
use herald_core::store::{MessageWrite, StoreError, Stores};
use herald_postgres::testing::OwnServer;
use herald_postgres::{PostgresDb, Settings};
use herald_proto::{ConversationId, DeviceId, Direction, UserId};
use std::time::{Duration, Instant};

const MAX_LAG_MS: u64 = 400;
const TIMEOUT_MS: u64 = 2_000;

fn settings(primary: &OwnServer, replica: &OwnServer) -> Settings {
    let mut settings = Settings {
        url: primary.url("postgres"),
        replica_urls: vec![replica.url("postgres")],
        replica_max_lag_ms: MAX_LAG_MS,
        feed_retention: 1_000,
        ..Settings::default()
    };
    settings.pool.min_idle = 1;
    settings.pool.max_size = 8;
    settings.pool.statement_timeout_ms = TIMEOUT_MS;
    settings.pool.connect_timeout_ms = 500;
    settings
}

async fn try_sql(url: &str, statement: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| format!("{e:?}"))?;
    tokio::spawn(connection);
    // Debug, not Display: Display says only "db error", Debug carries the server's message.
    client.query(statement, &[]).await.map_err(|e| format!("{statement}: {e:?}"))
}

async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    try_sql(url, statement).await.unwrap_or_else(|e| panic!("{e}"))
}

fn count_statement(conversation: ConversationId) -> String {
    format!("SELECT count(*) FROM messages WHERE conversation_id = '{}'", conversation.0)
}

/// How many messages of the conversation the server at `url` holds.
async fn count_on(url: &str, conversation: ConversationId) -> i64 {
    sql(url, &count_statement(conversation)).await[0].get(0)
}

async fn commit_range(stores: &Stores, conversation: ConversationId, seqs: std::ops::RangeInclusive<u64>) {
    let (sender, device) = (UserId::new(), DeviceId::new());
    for seq in seqs {
        let message = conformance::message(conversation, seq, sender, device);
        stores.messages.commit(&[MessageWrite::Insert(message)]).await.expect("commit on the primary");
    }
}

async fn history_len(stores: &Stores, conversation: ConversationId) -> usize {
    let started = Instant::now();
    let page = stores.messages.history(conversation, 1, Direction::Forward, 1_000).await.expect("a history read");
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS + 500), "a history read took {:?}", started.elapsed());
    page.len()
}

/// Waits until the replica holds `n` messages of the conversation, and then for the lag check to see it. A
/// standby that has just started may refuse or cancel a query for a moment (still reaching consistency, or a
/// conflict with the recovery it replays), so an error here is waited out like a lag, until the deadline.
async fn caught_up(replica: &OwnServer, conversation: ConversationId, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = try_sql(&replica.url("postgres"), &count_statement(conversation))
            .await
            .map(|rows| rows[0].get::<_, i64>(0));
        match seen {
            Ok(count) if count >= n => break,
            Ok(count) => assert!(Instant::now() < deadline, "the replica did not catch up in 30 s: {count} of {n}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "the replica did not catch up in 30 s: {e}");
                eprintln!("waiting for the replica: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(3 * MAX_LAG_MS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_or_stopped_replica_never_serves_stale_reads_or_fails_one() {
    let mut primary = OwnServer::primary();
    let mut replica = OwnServer::replica_of(&primary);
    let db = PostgresDb::open(&settings(&primary, &replica)).await.expect("open with a replica");
    let stores = db.stores();
    let conversation = ConversationId::new();

    commit_range(&stores, conversation, 1..=10).await;
    caught_up(&replica, conversation, 10).await;
    assert_eq!(history_len(&stores, conversation).await, 10);

    // Replay paused: the replica stays at 10 messages while the primary gets 20. Once it is further behind
    // than the bound, reads go to the primary and see all 20.
    sql(&replica.url("postgres"), "SELECT pg_wal_replay_pause()").await;
    commit_range(&stores, conversation, 11..=20).await;
    tokio::time::sleep(Duration::from_millis(3 * MAX_LAG_MS)).await;
    assert_eq!(count_on(&replica.url("postgres"), conversation).await, 10, "the replica's replay is not paused");
    for _ in 0..20 {
        assert_eq!(history_len(&stores, conversation).await, 20, "a paused replica served a stale history page");
    }

    // Replay resumed: it catches up and serves again.
    sql(&replica.url("postgres"), "SELECT pg_wal_replay_resume()").await;
    caught_up(&replica, conversation, 20).await;

    // Stopped: every read still answers, in time, from the primary.
    replica.stop("immediate");
    for _ in 0..20 {
        assert_eq!(history_len(&stores, conversation).await, 20, "a read failed with the replica stopped");
    }

    // Back, and the primary down: reads that may lag come from the replica; reads a guarantee depends on fail
    // as unavailable within the timeout, never with a wrong answer.
    replica.start();
    caught_up(&replica, conversation, 20).await;
    primary.stop("fast");
    assert_eq!(history_len(&stores, conversation).await, 20, "the replica did not answer with the primary down");
    let started = Instant::now();
    let fresh = stores.messages.last_seq(conversation).await;
    assert!(matches!(fresh, Err(StoreError::Unavailable(_))), "last_seq with the primary down: {fresh:?}");
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS + 500), "last_seq took {:?}", started.elapsed());

    // The primary back: the same pools recover by themselves.
    primary.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match stores.messages.last_seq(conversation).await {
            Ok(last) => {
                assert_eq!(last, 20);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the store did not recover after the primary came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    commit_range(&stores, conversation, 21..=21).await;
    db.close().await;
}
