//! The node's stores: the embedded database (the default, nothing to install) or PostgreSQL, chosen by
//! `storage.backend`. Everything above this sees only `Stores`.

use crate::config::{Config, StorageBackend};
use anyhow::Context;
use herald_core::footprint::Footprint;
use herald_core::store::Stores;
use herald_embedded::{EmbeddedDb, Options};
use herald_postgres::PostgresDb;
use std::sync::Arc;
use std::time::Duration;

pub enum Storage {
    Embedded(Arc<EmbeddedDb>),
    Postgres(Arc<PostgresDb>),
}

impl Storage {
    /// Opens the configured backend: the embedded database replays its journal; PostgreSQL applies pending
    /// migrations.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match config.storage.backend {
            StorageBackend::Embedded => {
                let data_dir = &config.server.data_dir;
                let options = Options {
                    cache_bytes: config.storage.cache_mb * 1024 * 1024,
                    feed_retention: config.storage.feed_retention,
                    checkpoint_interval: Duration::from_millis(config.storage.checkpoint_interval_ms),
                };
                let db = EmbeddedDb::open_with(data_dir, options)
                    .with_context(|| format!("opening the store in {}", data_dir.display()))?;
                if db.replayed_at_open() > 0 {
                    tracing::warn!(
                        records = db.replayed_at_open(),
                        "the previous run stopped before its last checkpoint: replayed its journal"
                    );
                }
                Ok(Self::Embedded(db))
            }
            StorageBackend::Postgres => {
                let db = PostgresDb::open(&config.storage.postgres_settings())
                    .await
                    .context("opening the PostgreSQL store (storage.postgres)")?;
                Ok(Self::Postgres(db))
            }
        }
    }

    pub fn stores(&self) -> Stores {
        match self {
            Self::Embedded(db) => db.stores(),
            Self::Postgres(db) => db.stores(),
        }
    }

    /// What the backend holds in memory (the embedded database's buffers; PostgreSQL keeps nothing per row).
    pub fn footprints(&self) -> Vec<Footprint> {
        match self {
            Self::Embedded(db) => db.footprints(),
            Self::Postgres(_) => Vec::new(),
        }
    }

    /// Flushes and closes: after this every store call fails.
    pub async fn close(&self) -> anyhow::Result<()> {
        match self {
            Self::Embedded(db) => db.close().await.map_err(|e| anyhow::anyhow!("final flush failed: {e}")),
            Self::Postgres(db) => {
                db.close().await;
                Ok(())
            }
        }
    }
}
