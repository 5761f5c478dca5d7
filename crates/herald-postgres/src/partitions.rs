//! The messages table's time partitions (the TWCS idea of the brief's Cassandra table): one table per 30-day
//! window of `sent_at`, created before its window starts and dropped whole once all of it is older than the
//! retention. Creating or dropping a partition locks the parent table for a moment, so it happens only when
//! a window is missing or expired, never on a timer tick that has nothing to do.

use crate::db::{Pools, pg};
use herald_core::store::StoreResult;
use herald_proto::Millis;
use tokio_postgres::types::Type;

/// The width of one partition's window.
pub(crate) const BUCKET_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Windows kept ready after the current one (and one before it, for clocks slightly behind).
const AHEAD: i64 = 2;

/// The partition a message sent at `sent_at` lives in.
pub(crate) fn bucket(sent_at: Millis) -> i32 {
    i32::try_from(sent_at.div_euclid(BUCKET_MS)).unwrap_or(if sent_at < 0 { i32::MIN } else { i32::MAX })
}

fn name(bucket: i32) -> String {
    format!("messages_b{bucket}")
}

/// The buckets that have a partition of their own.
async fn existing(pools: &Pools) -> StoreResult<Vec<i32>> {
    let rows = pools
        .read("partitions", "messages", crate::db::Freshness::Fresh, |client| async move {
            client
                .query_typed(
                    "SELECT c.relname FROM pg_inherits i
                       JOIN pg_class c ON c.oid = i.inhrelid
                       JOIN pg_class p ON p.oid = i.inhparent
                      WHERE p.relname = 'messages' AND p.relnamespace = current_schema()::regnamespace",
                    &[],
                )
                .await
                .map_err(pg)
        })
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| row.get::<_, String>(0).strip_prefix("messages_b").and_then(|b| b.parse().ok()))
        .collect())
}

/// Creates the partitions of the windows around `now` that do not exist yet.
pub(crate) async fn ensure(pools: &Pools, now: Millis) -> StoreResult<()> {
    let current = bucket(now);
    let have = existing(pools).await?;
    let missing: Vec<i32> =
        (-1..=AHEAD).filter_map(|d| current.checked_add(d as i32)).filter(|b| !have.contains(b)).collect();
    for b in missing {
        pools
            .write("create_partition", "messages", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                // Two nodes creating the same window: the second waits, then finds it.
                txn.execute_typed("SELECT pg_advisory_xact_lock($1)", &[(&i64::from(b), Type::INT8)])
                    .await
                    .map_err(pg)?;
                txn.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS \"{}\" PARTITION OF messages FOR VALUES FROM ({b}) TO ({})",
                    name(b),
                    i64::from(b) + 1
                ))
                .await
                .map_err(pg)?;
                txn.commit().await.map_err(pg)
            })
            .await?;
        tracing::info!(partition = name(b), "created a time partition of messages");
    }
    Ok(())
}

/// Drops the partitions whose whole window is older than `retention_days`.
pub(crate) async fn drop_expired(pools: &Pools, now: Millis, retention_days: u64) -> StoreResult<()> {
    let retention_ms = i64::try_from(retention_days.saturating_mul(24 * 60 * 60 * 1000)).unwrap_or(i64::MAX);
    let horizon = now.saturating_sub(retention_ms);
    for b in existing(pools).await? {
        // The window ends where the next begins.
        if (i64::from(b) + 1).saturating_mul(BUCKET_MS) <= horizon {
            pools
                .write("drop_partition", "messages", async |client| {
                    client.batch_execute(&format!("DROP TABLE IF EXISTS \"{}\"", name(b))).await.map_err(pg)
                })
                .await?;
            tracing::info!(partition = name(b), retention_days, "dropped an expired time partition of messages");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_thirty_day_windows() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(BUCKET_MS - 1), 0);
        assert_eq!(bucket(BUCKET_MS), 1);
        assert_eq!(bucket(-1), -1);
        // Clocks past the year 2^31 × 30 days land in the last bucket rather than wrapping around.
        assert_eq!(bucket(i64::MAX), i32::MAX);
        assert_eq!(bucket(i64::MIN), i32::MIN);
    }

    /// Old messages go a whole window at a time, newer ones stay, and the conversation's seqs go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_windows_are_dropped_whole_and_seqs_go_on() {
        use herald_core::conformance;
        use herald_core::store::MessageWrite;
        use herald_proto::{ConversationId, DeviceId, Direction, UserId};

        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        let database = crate::testing::TestDatabase::create().await;
        let db = crate::PostgresDb::open(&database.settings()).await.expect("open");
        let stores = db.stores();
        let now = herald_core::now_millis();
        let old = now - 200 * DAY_MS;
        ensure(&db.pools, old).await.expect("the partitions of an old window");
        let (conversation, sender, device) = (ConversationId::new(), UserId::new(), DeviceId::new());
        for seq in 1..=5 {
            let mut message = conformance::message(conversation, seq, sender, device);
            message.sent_at = if seq <= 3 { old } else { now };
            stores.messages.commit(&[MessageWrite::Insert(message)]).await.expect("commit");
        }
        assert!(existing(&db.pools).await.expect("partitions").contains(&bucket(old)));

        drop_expired(&db.pools, now, 90).await.expect("drop expired windows");
        let left = existing(&db.pools).await.expect("partitions");
        assert!(!left.contains(&bucket(old)), "the expired window's table is still there: {left:?}");
        assert!(left.contains(&bucket(now)), "the current window's table was dropped: {left:?}");
        let history = stores.messages.history(conversation, 1, Direction::Forward, 10).await.expect("history");
        assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5], "only the expired messages go");
        assert_eq!(stores.messages.last_seq(conversation).await.expect("last_seq"), 5);
        let sixth = conformance::message(conversation, 6, sender, device);
        stores.messages.commit(&[MessageWrite::Insert(sixth)]).await.expect("the conversation goes on at 6");
        db.close().await;
    }
}
