//! What the PostgreSQL backend is told: where the primary and the replicas are, how big the pools are, and
//! how long data is kept. Defaults are the scaling brief's pool figures.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The primary, as a libpq-style URL (`postgres://user:password@host:port/database`).
    pub url: String,
    /// Streaming replicas for reads that tolerate lag; empty for none.
    pub replica_urls: Vec<String>,
    /// How far behind the primary a replica may be and still serve reads; checked by comparing WAL positions
    /// every half of this, so a paused or stopped replica stops serving within about this long.
    pub replica_max_lag_ms: u64,
    /// One pool per server (the primary and each replica).
    pub pool: PoolSettings,
    /// Feed entries kept per user (the newest ones); older positions answer with a resync. Not read from
    /// this section of a config file: the node's `storage.feed_retention` applies to every backend.
    #[serde(skip)]
    pub feed_retention: u64,
    /// Messages older than this many days are dropped a whole time partition at a time; 0 keeps them.
    pub message_retention_days: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/herald".into(),
            replica_urls: Vec::new(),
            replica_max_lag_ms: 1_000,
            pool: PoolSettings::default(),
            feed_retention: 100_000,
            message_retention_days: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Most connections open to one server.
    pub max_size: usize,
    /// Connections opened at start and kept even when idle.
    pub min_idle: usize,
    /// Connections above `min_idle` unused this long are closed.
    pub idle_timeout_secs: u64,
    /// How long opening a connection may take.
    pub connect_timeout_ms: u64,
    /// How long one store call may take, waiting for a connection included; past it the call fails with a
    /// backend error (clients see `unavailable`) and, where the server honours it, the statement is cancelled.
    pub statement_timeout_ms: u64,
    /// Send `statement_timeout` as a startup parameter. Turn it off behind PgBouncer, which refuses unknown
    /// startup parameters; set the timeout there (`connect_query`) or on the role instead.
    pub startup_statement_timeout: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 100,
            min_idle: 10,
            idle_timeout_secs: 30,
            connect_timeout_ms: 2_000,
            statement_timeout_ms: 5_000,
            startup_statement_timeout: true,
        }
    }
}
