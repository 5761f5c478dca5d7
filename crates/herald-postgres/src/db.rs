//! The connections: one pool for the primary and one per replica, each call timed, bounded by the statement
//! timeout and recorded in `database_query_duration_ms{query_type,table}`.
//!
//! Every statement is sent unnamed with its parameter types (`query_typed`): one round trip, and nothing
//! prepared on the server that a transaction-mode PgBouncer could hand to another client.

use crate::settings::{PoolSettings, Settings};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use herald_core::store::{StoreError, StoreResult};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// Whether a read may be answered by a replica, which can lag the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// A guarantee depends on it (idempotency, last seq, device checks, feed resume): the primary only.
    Fresh,
    /// History pages, conversation lists, look-ups: a replica if one answers, else the primary.
    MayLag,
}

/// A streaming replica, and whether it is close enough behind the primary to serve reads (see
/// [`Pools::check_replicas`]).
struct Replica {
    pool: Pool,
    usable: AtomicBool,
}

pub(crate) struct Pools {
    primary: Pool,
    replicas: Vec<Replica>,
    next_replica: AtomicUsize,
    timeout: Duration,
    settings: PoolSettings,
}

impl Pools {
    pub(crate) fn new(settings: &Settings) -> StoreResult<Self> {
        let pool = &settings.pool;
        Ok(Self {
            primary: build(&settings.url, pool)?,
            replicas: settings
                .replica_urls
                .iter()
                .map(|url| Ok(Replica { pool: build(url, pool)?, usable: AtomicBool::new(false) }))
                .collect::<StoreResult<_>>()?,
            next_replica: AtomicUsize::new(0),
            timeout: Duration::from_millis(pool.statement_timeout_ms),
            settings: pool.clone(),
        })
    }

    /// Opens `min_idle` connections to the primary (so the first requests do not pay for them) and checks that
    /// it answers.
    pub(crate) async fn warm_up(&self) -> StoreResult<()> {
        let mut held = Vec::new();
        for _ in 0..self.settings.min_idle.clamp(1, self.settings.max_size) {
            held.push(self.connect(&self.primary).await?);
        }
        if let Some(client) = held.first() {
            self.check_room(client).await;
        }
        Ok(())
    }

    /// Warns when this pool may grow past the connections PostgreSQL has left: every node of a cluster has a
    /// pool of its own, and two nodes with the default 100 on a server allowing 100 made sends fail with
    /// "no database connection" (and locked out every other client) until `max_size` was lowered.
    async fn check_room(&self, client: &Object) {
        let sql = "SELECT current_setting('max_connections')::int,
                          current_setting('superuser_reserved_connections')::int,
                          (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int";
        let row = match client.query_typed(sql, &[]).await {
            Ok(rows) => rows.into_iter().next(),
            Err(e) => {
                tracing::debug!(error = %e, "could not read PostgreSQL's connection limit");
                return;
            }
        };
        let Some(row) = row else { return };
        let (max, reserved, used): (i32, i32, i32) = (row.get(0), row.get(1), row.get(2));
        // Our own open connections are among those in use and within the pool's size.
        let ours = self.primary.status().size as i32;
        let room = max - reserved - used + ours;
        if (self.settings.max_size as i32) > room {
            tracing::warn!(
                max_size = self.settings.max_size,
                room,
                max_connections = max,
                in_use = used,
                "storage.postgres.pool.max_size is above the connections PostgreSQL has left; under load this \
                 node (or the others sharing the database) will fail with \"no database connection\": lower \
                 max_size so that the nodes' pools together fit max_connections, or put PgBouncer in front"
            );
        }
    }

    /// A connection to the primary, for the caller's own transaction (migrations, the group committer).
    pub(crate) async fn primary(&self) -> StoreResult<Object> {
        self.connect(&self.primary).await
    }

    async fn connect(&self, pool: &Pool) -> StoreResult<Object> {
        pool.get().await.map_err(|e| {
            // The pool's own text for a refused connection is only "db error": PostgreSQL's reason ("sorry, too
            // many clients already", a bad password) is in the error it wraps.
            let reason = match &e {
                deadpool_postgres::PoolError::Backend(e) => describe(e),
                e => e.to_string(),
            };
            StoreError::Unavailable(format!("no database connection: {reason}"))
        })
    }

    /// Runs `f` on a connection chosen by `freshness`, within the statement timeout, and records its duration.
    /// A read that may lag goes to a replica first, for at most half the timeout, and falls back to the primary
    /// for the rest when the replica fails: the whole read stays within one timeout.
    pub(crate) async fn read<T, F>(
        &self,
        query_type: &'static str,
        table: &'static str,
        freshness: Freshness,
        f: impl Fn(Object) -> F,
    ) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>> + Send,
    {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = async {
            if freshness == Freshness::MayLag
                && let Some(i) = self.pick_replica()
            {
                let attempt = tokio::time::timeout(self.timeout / 2, async {
                    let client = self.connect(&self.replicas[i].pool).await?;
                    f(client).await
                })
                .await;
                match attempt {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(StoreError::Backend(e) | StoreError::Unavailable(e))) => {
                        tracing::debug!(replica = i, error = %e, "replica read failed; reading from the primary")
                    }
                    Ok(Err(answer)) => return Err(answer),
                    Err(_) => tracing::debug!(replica = i, "replica read timed out; reading from the primary"),
                }
                metrics::counter!("database_replica_fallbacks_total").increment(1);
            }
            self.bounded_until(deadline, async {
                let client = self.connect(&self.primary).await?;
                f(client).await
            })
            .await
        }
        .await;
        record(query_type, table, started);
        result
    }

    /// Runs `f` (usually one transaction) on a primary connection within the statement timeout, and records
    /// its duration.
    pub(crate) async fn write<T>(
        &self,
        query_type: &'static str,
        table: &'static str,
        f: impl AsyncFnOnce(&mut Object) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                let mut client = self.connect(&self.primary).await?;
                f(&mut client).await
            })
            .await;
        record(query_type, table, started);
        result
    }

    /// The next usable replica, round robin; `None` when none is.
    fn pick_replica(&self) -> Option<usize> {
        let n = self.replicas.len();
        let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| self.replicas[i].usable.load(Ordering::Relaxed))
    }

    /// Marks each replica usable when it has replayed at least as far as the primary had written at the
    /// previous check (`behind_at`, the primary's position then): a replica is then at most about two check
    /// intervals behind. A replica that is paused, stopped, unreachable or further behind is skipped until it
    /// catches up. Returns the primary's position now, for the next check.
    pub(crate) async fn check_replicas(&self, behind_at: Option<u64>) -> StoreResult<u64> {
        let deadline = Duration::from_millis(self.settings.connect_timeout_ms);
        let position = |pool, sql| self.wal_position(pool, sql);
        let primary = tokio::time::timeout(deadline, position(&self.primary, "SELECT pg_current_wal_lsn()::text"))
            .await
            .map_err(|_| backend("the primary did not say its WAL position in time"))??
            .unwrap_or(0);
        let needed = behind_at.unwrap_or(primary);
        for (i, replica) in self.replicas.iter().enumerate() {
            // NULL when the server is not in recovery: a primary named as a replica is never behind.
            let replayed =
                tokio::time::timeout(deadline, position(&replica.pool, "SELECT pg_last_wal_replay_lsn()::text")).await;
            let usable = match replayed {
                Ok(Ok(Some(lsn))) => lsn >= needed,
                Ok(Ok(None)) => true,
                Ok(Err(_)) | Err(_) => false,
            };
            if replica.usable.swap(usable, Ordering::Relaxed) != usable {
                tracing::info!(replica = i, usable, "a replica's use for reads changed");
            }
            metrics::gauge!("database_replica_usable", "replica" => i.to_string()).set(f64::from(u8::from(usable)));
        }
        Ok(primary)
    }

    /// A server's WAL position from `sql`, `None` when it answers NULL.
    async fn wal_position(&self, pool: &Pool, sql: &'static str) -> StoreResult<Option<u64>> {
        let client = self.connect(pool).await?;
        let row = client.query_typed_one(sql, &[]).await.map_err(pg)?;
        row.get::<_, Option<String>>(0).map(|lsn| parse_lsn(&lsn)).transpose()
    }

    pub(crate) fn has_replicas(&self) -> bool {
        !self.replicas.is_empty()
    }

    async fn bounded<T>(&self, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.bounded_until(tokio::time::Instant::now() + self.timeout, f).await
    }

    async fn bounded_until<T>(
        &self,
        deadline: tokio::time::Instant,
        f: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        tokio::time::timeout_at(deadline, f).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!("the database did not answer within {} ms", self.timeout.as_millis())))
        })
    }

    /// Closes connections idle past the idle timeout, keeping `min_idle`, and exports the pools' gauges.
    pub(crate) fn upkeep(&self) {
        let idle = Duration::from_secs(self.settings.idle_timeout_secs);
        for (name, pool) in
            std::iter::once(("primary", &self.primary)).chain(self.replicas.iter().map(|r| ("replica", &r.pool)))
        {
            let status = pool.status();
            let mut closable = status.size.saturating_sub(self.settings.min_idle);
            pool.retain(|_, metrics| {
                if closable > 0 && metrics.last_used() > idle {
                    closable -= 1;
                    return false;
                }
                true
            });
            let status = pool.status();
            let in_use = status.size - status.available;
            metrics::gauge!("database_pool_connections", "pool" => name, "state" => "in_use").set(in_use as f64);
            metrics::gauge!("database_pool_connections", "pool" => name, "state" => "idle")
                .set(status.available as f64);
            metrics::gauge!("database_pool_waiting", "pool" => name).set(status.waiting as f64);
        }
    }
}

fn build(url: &str, settings: &PoolSettings) -> StoreResult<Pool> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::Backend(format!("the PostgreSQL URL does not parse: {e}")))?;
    config.connect_timeout(Duration::from_millis(settings.connect_timeout_ms));
    config.application_name("herald");
    if settings.startup_statement_timeout {
        config.options(format!("-c statement_timeout={}", settings.statement_timeout_ms));
    }
    let manager =
        Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(settings.max_size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .wait_timeout(Some(Duration::from_millis(settings.statement_timeout_ms)))
        .build()
        .map_err(|e| StoreError::Backend(format!("building the PostgreSQL pool: {e}")))
}

fn record(query_type: &'static str, table: &'static str, started: Instant) {
    metrics::histogram!("database_query_duration_ms", "query_type" => query_type, "table" => table)
        .record(started.elapsed().as_secs_f64() * 1000.0);
}

/// A PostgreSQL error as a store error: a unique violation is a conflict about the data; a lost connection, a
/// server shutting down or starting, a cancelled (timed out) statement is the engine out of reach for now;
/// anything else is the engine failing.
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    let out_of_reach =
        [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::QUERY_CANCELED];
    match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(describe(&e)),
        // Class 08: connection exceptions.
        Some(code) if code.code().starts_with("08") || out_of_reach.contains(code) => {
            StoreError::Unavailable(describe(&e))
        }
        Some(_) => StoreError::Backend(describe(&e)),
        // No SQLSTATE: the connection itself failed (closed, reset, I/O), or a value did not convert.
        None if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => {
            StoreError::Unavailable(describe(&e))
        }
        None => StoreError::Backend(describe(&e)),
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgres: {} ({})", db.message(), db.code().code()),
        None => format!("postgres: {e}"),
    }
}

/// A WAL position as PostgreSQL prints it (`16/B374D848`) as one number.
fn parse_lsn(text: &str) -> StoreResult<u64> {
    let (high, low) = text.split_once('/').ok_or_else(|| backend(format!("not a WAL position: {text}")))?;
    let part = |p: &str| u64::from_str_radix(p, 16).map_err(|_| backend(format!("not a WAL position: {text}")));
    Ok((part(high)? << 32) | part(low)?)
}

/// A value the store cannot represent (a count past `i64::MAX`, a corrupt row).
pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A u64 position or seq as PostgreSQL's `bigint`; values past `i64::MAX` are clamped (they mean "to the end").
pub(crate) fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `bigint` read back as u64 (the store never writes negatives).
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::parse_lsn;

    #[test]
    fn wal_positions_parse_and_order() {
        assert_eq!(parse_lsn("0/0").ok(), Some(0));
        assert_eq!(parse_lsn("16/B374D848").ok(), Some((0x16 << 32) | 0xB374_D848));
        assert!(parse_lsn("1/FFFFFFFF").ok() < parse_lsn("2/0").ok());
        assert!(parse_lsn("garbage").is_err() && parse_lsn("1/xyz").is_err());
    }
}
