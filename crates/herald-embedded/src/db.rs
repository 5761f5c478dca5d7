//! Opening the database and the group-committing writer thread.

use crate::tables;
use herald_core::store::{StoreError, StoreResult, Stores};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The page cache when none is configured.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Most jobs folded into one transaction; bounds the latency a huge backlog adds to the first job.
const MAX_JOBS_PER_COMMIT: usize = 4096;

type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// Runs a job inside the shared transaction: reports whether it poisoned the transaction, and returns its
/// finisher.
type Run = Box<dyn FnOnce(&WriteTransaction) -> (bool, Finisher) + Send>;

struct Job {
    /// Whether the caller needs this write on disk before it hears back.
    durable: bool,
    /// When it was queued, for the time jobs wait for the writer.
    queued: Instant,
    /// Runs inside the shared transaction; reports whether the transaction is now unusable, and returns
    /// what to do once the commit's outcome is known.
    run: Run,
}

enum Msg {
    Write(Job),
    /// Commit what came before, then stop; answered once the writer is done.
    Close(oneshot::Sender<()>),
}

/// The database handle, shared by readers and the writer thread; `None` once closed.
type Shared = Arc<RwLock<Option<Database>>>;

/// How to open the database.
#[derive(Clone, Debug)]
pub struct Options {
    /// The page cache (redb's own default is 1 GiB, too much for a small self-hosted node).
    pub cache_bytes: usize,
    /// Newest feed entries kept per user; a device further behind is told to resync.
    pub feed_retention: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self { cache_bytes: DEFAULT_CACHE_BYTES, feed_retention: 10_000 }
    }
}

/// The embedded database: one redb file, all five stores.
pub struct EmbeddedDb {
    db: Shared,
    jobs: mpsc::Sender<Msg>,
    pub(crate) feed_retention: u64,
}

impl EmbeddedDb {
    /// Opens (or creates) `herald.redb` in `dir` with default options and starts the writer thread.
    pub fn open(dir: &Path) -> StoreResult<Arc<Self>> {
        Self::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, options: Options) -> StoreResult<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("create {}: {e}", dir.display())))?;
        let db =
            Database::builder().set_cache_size(options.cache_bytes).create(dir.join("herald.redb")).map_err(backend)?;
        create_tables(&db)?;
        let db: Shared = Arc::new(RwLock::new(Some(db)));
        let (jobs, rx) = mpsc::channel(MAX_JOBS_PER_COMMIT);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("herald-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, rx))
            .map_err(|e| backend(format!("spawn writer: {e}")))?;
        Ok(Arc::new(Self { db, jobs, feed_retention: options.feed_retention.max(1) }))
    }

    /// The five stores, all backed by this database.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores {
            users: self.clone(),
            conversations: self.clone(),
            messages: self.clone(),
            cursors: self.clone(),
            media: self.clone(),
        }
    }

    /// Makes every earlier write durable, including the cheap non-durable cursor writes.
    pub async fn flush(&self) -> StoreResult<()> {
        self.write("flush", "all", true, |_| Ok(())).await
    }

    /// Flushes, stops the writer and releases the file, so the same directory can be opened again (by a
    /// restarted server in the same process). Every later call fails with a backend error.
    pub async fn close(&self) -> StoreResult<()> {
        self.flush().await?;
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Runs `f` in the writer's next transaction and returns its result once that transaction committed.
    /// `f` must check before it writes: a `Conflict`/`LimitExceeded` answer must leave nothing behind,
    /// since the transaction is shared. A `Backend` error aborts the whole shared transaction.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        query_type: &'static str,
        table: &'static str,
        durable: bool,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let job = Msg::Write(Job {
            durable,
            queued: Instant::now(),
            run: Box::new(move |txn| {
                let result = f(txn);
                let poisoned = matches!(result, Err(StoreError::Backend(_)));
                let finish: Finisher = Box::new(move |commit: StoreResult<()>| {
                    let _ = tx.send((commit.and(result), Instant::now()));
                });
                (poisoned, finish)
            }),
        });
        self.jobs.send(job).await.map_err(|_| backend("the writer has stopped"))?;
        let (result, finished) = rx.await.map_err(|_| backend("the writer dropped a job"))?;
        metrics::histogram!("embedded_wake_ms").record(finished.elapsed().as_secs_f64() * 1000.0);
        record(query_type, table, started);
        result
    }

    /// Runs `f` in a fresh read transaction (a consistent snapshot; never waits for the writer).
    pub(crate) fn read<R>(
        &self,
        query_type: &'static str,
        table: &'static str,
        f: impl FnOnce(&ReadTransaction) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let started = Instant::now();
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or_else(|| backend("the database is closed"))?;
        let txn = db.begin_read().map_err(backend)?;
        drop(guard);
        let result = f(&txn);
        record(query_type, table, started);
        result
    }
}

fn record(query_type: &'static str, table: &'static str, started: Instant) {
    metrics::histogram!("database_query_duration_ms", "query_type" => query_type, "table" => table)
        .record(started.elapsed().as_secs_f64() * 1000.0);
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn create_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(backend)?;
    {
        txn.open_table(tables::USERS).map_err(backend)?;
        txn.open_table(tables::USERNAMES).map_err(backend)?;
        txn.open_table(tables::DEVICES).map_err(backend)?;
        txn.open_table(tables::USER_DEVICES).map_err(backend)?;
        txn.open_table(tables::CONVERSATIONS).map_err(backend)?;
        txn.open_table(tables::DIRECT_PAIRS).map_err(backend)?;
        txn.open_table(tables::MEMBERS).map_err(backend)?;
        txn.open_table(tables::MEMBERSHIPS).map_err(backend)?;
        txn.open_table(tables::MESSAGES).map_err(backend)?;
        txn.open_table(tables::CLIENT_IDS).map_err(backend)?;
        txn.open_table(tables::LAST_SENT).map_err(backend)?;
        txn.open_table(tables::FEED).map_err(backend)?;
        txn.open_table(tables::CURSORS).map_err(backend)?;
        txn.open_table(tables::MEDIA).map_err(backend)?;
        txn.open_table(tables::MEDIA_BY_HASH).map_err(backend)?;
        txn.open_table(tables::MEDIA_UNFINISHED).map_err(backend)?;
        txn.open_table(tables::MEDIA_UNATTACHED).map_err(backend)?;
        txn.open_table(tables::MEDIA_REFS).map_err(backend)?;
        txn.open_table(tables::MEDIA_USAGE).map_err(backend)?;
        txn.open_table(tables::CONTENTS).map_err(backend)?;
        txn.open_table(tables::CONTENT_ACCESS).map_err(backend)?;
        txn.open_table(tables::TAKEDOWNS).map_err(backend)?;
        txn.open_table(tables::BLOCKLIST).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

/// Takes everything pending, applies it in one transaction, commits once, answers everyone.
fn writer_loop(db: &Shared, mut rx: mpsc::Receiver<Msg>) {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else { break };
        let mut jobs = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(job) => {
                    metrics::histogram!("embedded_job_wait_ms").record(job.queued.elapsed().as_secs_f64() * 1000.0);
                    jobs.push(job)
                }
                Msg::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if jobs.len() < MAX_JOBS_PER_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let guard = db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = guard.as_ref() else {
            // Closed: dropping the jobs unanswered tells each caller the write failed.
            continue;
        };
        let started = Instant::now();
        let durable = jobs.iter().any(|j| j.durable);
        let count = jobs.len();
        let mut finishers = Vec::with_capacity(jobs.len());
        let outcome = match db.begin_write() {
            Ok(mut txn) => {
                let durability = if durable { Durability::Immediate } else { Durability::None };
                let mut poisoned = txn.set_durability(durability).is_err();
                for job in jobs {
                    let (bad, finish) = (job.run)(&txn);
                    poisoned |= bad;
                    finishers.push(finish);
                }
                if poisoned {
                    let _ = txn.abort();
                    Err(backend("a write in the same group commit failed; nothing was written"))
                } else {
                    let applied = Instant::now();
                    let committed = txn.commit().map_err(backend);
                    metrics::histogram!("embedded_commit_duration_ms", "stage" => "apply")
                        .record((applied - started).as_secs_f64() * 1000.0);
                    metrics::histogram!("embedded_commit_duration_ms", "stage" => "commit")
                        .record(applied.elapsed().as_secs_f64() * 1000.0);
                    committed
                }
            }
            Err(e) => {
                // No transaction: answer every job with the failure without running it.
                // Dropping the jobs unanswered tells each caller the write failed.
                drop(jobs);
                Err(backend(e))
            }
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "group commit failed");
        }
        metrics::histogram!("embedded_group_commit_jobs").record(count as f64);
        metrics::histogram!("database_query_duration_ms", "query_type" => "commit", "table" => "all")
            .record(started.elapsed().as_secs_f64() * 1000.0);
        drop(guard);
        for finish in finishers {
            finish(outcome.clone());
        }
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}
