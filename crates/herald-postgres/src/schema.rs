//! Versioned schema migrations. Each is a SQL file under `migrations/`, applied once and in order, recorded in
//! `herald_schema_migrations`. All pending ones run in one transaction under a transaction-level advisory lock,
//! so nodes starting together apply them once and a failed migration leaves nothing half-done (PostgreSQL's
//! DDL is transactional). A database migrated by a newer Herald is refused rather than written to.

use crate::db::{Pools, pg};
use herald_core::store::{StoreError, StoreResult};

/// (version, name, SQL), in order.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "accounts, conversations, messages with feeds, cursors",
        include_str!("../migrations/0001_accounts_conversations_messages.sql"),
    ),
    (2, "media bookkeeping", include_str!("../migrations/0002_media.sql")),
    (3, "reports", include_str!("../migrations/0003_reports.sql")),
    (4, "blocks", include_str!("../migrations/0004_blocks.sql")),
    (5, "suspensions", include_str!("../migrations/0005_suspensions.sql")),
    (6, "deleted accounts", include_str!("../migrations/0006_deleted_accounts.sql")),
    (7, "threads", include_str!("../migrations/0007_threads.sql")),
    (8, "search", include_str!("../migrations/0008_search.sql")),
];

/// Any constant both sides agree on: the advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64_0001;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version before.
    pub from: i32,
    /// The schema version now (the newest this build knows).
    pub to: i32,
}

/// The newest schema version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

pub(crate) async fn migrate(pools: &Pools) -> StoreResult<Migrated> {
    let mut client = pools.primary().await?;
    let txn = client.transaction().await.map_err(pg)?;
    txn.execute_typed("SELECT pg_advisory_xact_lock($1)", &[(&MIGRATION_LOCK, tokio_postgres::types::Type::INT8)])
        .await
        .map_err(pg)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg)?;
    let from: i32 = txn
        .query_typed_one("SELECT coalesce(max(version), 0) FROM herald_schema_migrations", &[])
        .await
        .map_err(pg)?
        .get(0);
    let latest = latest_version();
    if from > latest {
        return Err(StoreError::Backend(format!(
            "the database's schema is at version {from}, newer than this build's {latest}: run a newer Herald"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > from) {
        txn.batch_execute(sql).await.map_err(|e| StoreError::Backend(format!("migration {version} ({name}): {e}")))?;
        txn.execute_typed(
            "INSERT INTO herald_schema_migrations (version, name) VALUES ($1, $2)",
            &[(version, tokio_postgres::types::Type::INT4), (name, tokio_postgres::types::Type::TEXT)],
        )
        .await
        .map_err(pg)?;
        tracing::info!(version, name, "applied a schema migration");
    }
    txn.commit().await.map_err(pg)?;
    Ok(Migrated { from, to: latest })
}
