//! Herald's stores on PostgreSQL: the six store traits of `herald_core::store` for nodes that share no disk.
//!
//! - `schema`: versioned migrations, applied at start (or by `herald migrate`).
//! - `db`: the pools (primary and replicas), timeouts, metrics, error mapping.
//! - one file per store trait; `commit` groups concurrent message commits into shared transactions.
//! - `partitions`: the messages table's time partitions, created ahead and dropped when expired.
//!
//! docs/postgres.md describes the schema, its Cassandra translation and what reads may go to replicas.

mod commit;
mod conversations;
mod cursors;
mod db;
mod media;
mod messages;
mod partitions;
mod reports;
mod schema;
mod search;
mod settings;
#[cfg(feature = "testing")]
pub mod testing;
mod users;

pub use schema::{Migrated, latest_version};
pub use settings::{PoolSettings, Settings};

use herald_core::store::{StoreResult, Stores};
use std::sync::Arc;
use std::time::Duration;

/// How often idle connections are closed, pool gauges exported and time partitions looked after.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A connected PostgreSQL backend.
pub struct PostgresDb {
    pools: Arc<db::Pools>,
    committer: commit::Committer,
    feed_retention: u64,
    message_retention_days: u64,
}

impl PostgresDb {
    /// Connects, applies pending migrations, creates the current time partitions and starts the upkeep task
    /// and, with replicas, the task that checks their lag (both end when the last handle is dropped).
    pub async fn open(settings: &Settings) -> StoreResult<Arc<Self>> {
        let db = Self::connect(settings).await?;
        db.migrate().await?;
        partitions::ensure(&db.pools, herald_core::now_millis()).await?;
        // The pool gauges exist from the first scrape.
        db.pools.upkeep();
        if db.pools.has_replicas() {
            let every = Duration::from_millis((settings.replica_max_lag_ms / 2).max(50));
            let weak = Arc::downgrade(&db);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                let mut behind_at = None;
                loop {
                    tick.tick().await;
                    let Some(db) = weak.upgrade() else { return };
                    match db.pools.check_replicas(behind_at).await {
                        Ok(position) => behind_at = Some(position),
                        Err(e) => tracing::warn!(error = %e, "checking the replicas' lag failed"),
                    }
                }
            });
        }
        let weak = Arc::downgrade(&db);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(db) = weak.upgrade() else { return };
                db.upkeep().await;
            }
        });
        Ok(db)
    }

    /// Connects without migrating (for `herald migrate`, and to inspect a database).
    pub async fn connect(settings: &Settings) -> StoreResult<Arc<Self>> {
        let pools = Arc::new(db::Pools::new(settings)?);
        pools.warm_up().await?;
        let feed_retention = settings.feed_retention.max(1);
        Ok(Arc::new(Self {
            committer: commit::Committer::start(pools.clone(), feed_retention),
            pools,
            feed_retention,
            message_retention_days: settings.message_retention_days,
        }))
    }

    /// Applies the migrations this database lacks.
    pub async fn migrate(&self) -> StoreResult<Migrated> {
        schema::migrate(&self.pools).await
    }

    /// The six stores over this database.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores::of(self)
    }

    /// Waits for commits in flight; afterwards every store call fails.
    pub async fn close(&self) {
        self.committer.close().await;
    }

    async fn upkeep(&self) {
        self.pools.upkeep();
        let now = herald_core::now_millis();
        if let Err(e) = partitions::ensure(&self.pools, now).await {
            tracing::warn!(error = %e, "creating the next time partitions of messages failed");
        }
        if self.message_retention_days > 0
            && let Err(e) = partitions::drop_expired(&self.pools, now, self.message_retention_days).await
        {
            tracing::warn!(error = %e, "dropping expired message partitions failed");
        }
    }
}
