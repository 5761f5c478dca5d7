//! Opening the database and the group-committing writer thread.
//!
//! One thread applies every write: it takes whatever is pending, runs it in one redb transaction and
//! commits once for the lot. Message commits, account writes and conversation writes are made durable by the
//! write-ahead journal (`journal`): their logical record is appended and fsynced there, and the redb
//! transaction commits without syncing. Other durable writes (media records, takedowns) commit durably in
//! redb, which also checkpoints the journal; so does a timer, so redb never lags the journal by more than
//! `Options::checkpoint_interval`.

use crate::device_cache::DeviceCache;
use crate::feed_buffer::{self, FeedBuffer, Flush};
use crate::feed_snapshot;
use crate::journal::{AppendError, Journal};
use crate::search_indexer::SearchIndexer;
use crate::stores;
use crate::tables::{self, FEED, JOURNAL_APPLIED, META};
use herald_core::store::{StoreError, StoreResult, Stores};
use herald_search::MessageIndex;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The page cache when none is configured. redb keeps the pages of non-durable commits in it until the
/// next durable commit (or until they are evicted to the file, where the checkpoint timer's flush reaches
/// them), so its size bounds what a checkpoint writes out while the writer waits.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Most jobs folded into one transaction; bounds the latency a huge backlog adds to the first job.
const MAX_JOBS_PER_COMMIT: usize = 4096;

/// How long journaled writes (and the cheap non-durable ones, such as cursors) may stay out of a durable
/// redb commit when none is configured.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// A journal this large is checkpointed at the next commit whatever the time, bounding the replay after
/// a crash and the file's size.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// Runs a job inside the shared transaction (or, given none, only prepares its answer): reports whether it
/// poisoned the transaction, and returns its finisher.
type Run = Box<dyn FnOnce(Option<&WriteTransaction>) -> (bool, Finisher) + Send>;

struct Job {
    /// Whether the caller needs this write on disk before it hears back.
    durable: bool,
    /// The journal record that makes this write durable without a durable redb commit; replayed by
    /// `stores::replay` after a crash.
    journal: Option<Vec<u8>>,
    /// When it was queued, for the time jobs wait for the writer.
    queued: Instant,
    /// Runs inside the shared transaction; reports whether the transaction is now unusable, and returns
    /// what to do once the commit's outcome is known.
    run: Run,
}

enum Msg {
    Write(Job),
    /// Sent by a timer: checkpoint if a commit has been waiting for it too long.
    Checkpoint,
    /// Commit what came before, then stop; answered once the writer is done.
    Close(oneshot::Sender<()>),
}

/// The database handle, shared by readers and the writer thread; `None` once closed.
type Shared = Arc<RwLock<Option<Database>>>;

/// How to open the database.
#[derive(Clone, Debug)]
pub struct Options {
    /// The page cache (redb's own default is 1 GiB, too much for a small self-hosted node; and see
    /// [`DEFAULT_CACHE_BYTES`] on why bigger is not always better).
    pub cache_bytes: usize,
    /// Newest feed entries kept per user; a device further behind is told to resync.
    pub feed_retention: u64,
    /// How long journaled writes (and the cheap non-durable ones, such as cursors) may stay out of a
    /// durable redb commit. Each checkpoint is one durable commit of everything written since the last;
    /// a longer interval makes them rarer and larger, and the replay after a crash longer.
    pub checkpoint_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            feed_retention: 10_000,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// The embedded database: one redb file, all six stores.
pub struct EmbeddedDb {
    db: Shared,
    jobs: mpsc::Sender<Msg>,
    pub(crate) feed_retention: u64,
    /// Feed rows committed but not yet in the feed table (written behind; see `feed_buffer`).
    pub(crate) feed_buffer: Arc<FeedBuffer>,
    /// Journal records applied again when the database was opened (those a crash kept out of redb).
    replayed: u64,
    /// The devices authentication reads, kept exact by this store's own writes (see `device_cache`).
    pub(crate) device_cache: DeviceCache,
    /// The full-text index of messages and the thread that feeds it (see `search_indexer`).
    pub(crate) search: SearchIndexer,
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
        crate::migrate::run(&db)?;
        let feed_retention = options.feed_retention.max(1);
        let (journal, replayed) = recover(&db, dir, feed_retention)?;
        let db: Shared = Arc::new(RwLock::new(Some(db)));
        let (jobs, rx) = mpsc::channel(MAX_JOBS_PER_COMMIT);
        let interval = options.checkpoint_interval;
        let feed_buffer = Arc::new(FeedBuffer::default());
        let writer = Writer {
            db: db.clone(),
            journal,
            interval,
            feed_buffer: feed_buffer.clone(),
            feed_retention,
            dir: dir.to_path_buf(),
            next_snapshot: 0,
            failed: None,
            last_durable: Instant::now(),
            dirty: false,
        };
        std::thread::Builder::new()
            .name("herald-redb-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| backend(format!("spawn writer: {e}")))?;
        start_checkpoint_timer(jobs.downgrade(), &dir.join("herald.redb"), interval)?;
        let search = SearchIndexer::new(open_index(&dir.join("search"))?);
        let db = Arc::new(Self {
            db,
            jobs,
            feed_retention,
            feed_buffer,
            replayed,
            device_cache: DeviceCache::default(),
            search,
        });
        db.search.start(Arc::downgrade(&db))?;
        Ok(db)
    }

    /// How many journal records opening the database applied again: writes that were acknowledged (durable
    /// in the journal) but not yet in a durable redb commit when the previous process stopped.
    pub fn replayed_at_open(&self) -> u64 {
        self.replayed
    }

    /// What the database keeps in memory besides redb's page cache (bounded by `Options::cache_bytes`).
    pub fn footprints(&self) -> Vec<herald_core::footprint::Footprint> {
        let mut all = self.feed_buffer.footprints().to_vec();
        all.push(self.device_cache.footprint());
        all
    }

    /// The seven stores, all backed by this database.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores::of(self)
    }

    /// Makes every earlier write durable, including the cheap non-durable cursor writes.
    pub async fn flush(&self) -> StoreResult<()> {
        self.write("flush", "all", true, |_| Ok(())).await
    }

    /// Flushes, stops the writer and releases the file, so the same directory can be opened again (by a
    /// restarted server in the same process). Every later call fails with a backend error.
    pub async fn close(&self) -> StoreResult<()> {
        self.flush().await?;
        self.search.stop();
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Whether [`EmbeddedDb::close`] has run.
    pub(crate) fn is_closed(&self) -> bool {
        self.db.read().unwrap_or_else(|p| p.into_inner()).is_none()
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
        self.submit(query_type, table, durable, None, f).await
    }

    /// Like [`EmbeddedDb::write`] for a durable write whose `record` in the journal makes it durable:
    /// `stores::replay` applied to `record` must write exactly what `f` writes.
    pub(crate) async fn write_journaled<R: Send + 'static>(
        &self,
        query_type: &'static str,
        table: &'static str,
        record: Vec<u8>,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.submit(query_type, table, true, Some(record), f).await
    }

    async fn submit<R: Send + 'static>(
        &self,
        query_type: &'static str,
        table: &'static str,
        durable: bool,
        journal: Option<Vec<u8>>,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let started = Instant::now();
        let (job, rx) = job(durable, journal, f);
        self.jobs.send(job).await.map_err(|_| backend("the writer has stopped"))?;
        let (result, finished) = rx.await.map_err(|_| backend("the writer dropped a job"))?;
        metrics::histogram!("embedded_wake_ms").record(finished.elapsed().as_secs_f64() * 1000.0);
        record(query_type, table, started);
        result
    }

    /// [`EmbeddedDb::write`] of a non-durable write, for a thread outside the async runtime (the search
    /// indexer): blocks that thread until the write is committed.
    pub(crate) fn write_blocking<R: Send + 'static>(
        &self,
        query_type: &'static str,
        table: &'static str,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let started = Instant::now();
        let (job, rx) = job(false, None, f);
        self.jobs.blocking_send(job).map_err(|_| backend("the writer has stopped"))?;
        let (result, _) = rx.blocking_recv().map_err(|_| backend("the writer dropped a job"))?;
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

/// Opens the search index. Its directory's lock is held by the index of a database closed a moment ago in this
/// process until that one's merges end, so a busy lock is waited for (a few seconds at most).
fn open_index(dir: &Path) -> StoreResult<MessageIndex> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match MessageIndex::open(dir) {
            Ok(index) => return Ok(index),
            Err(e) if e.is_lock_busy() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(backend(e)),
        }
    }
}

type Answer<R> = oneshot::Receiver<(StoreResult<R>, Instant)>;

/// The writer's job for `f`, and where its answer (with when it was sent) arrives.
fn job<R: Send + 'static>(
    durable: bool,
    journal: Option<Vec<u8>>,
    f: impl FnOnce(&WriteTransaction) -> StoreResult<R> + Send + 'static,
) -> (Msg, Answer<R>) {
    let (tx, rx) = oneshot::channel();
    let job = Msg::Write(Job {
        durable,
        journal,
        queued: Instant::now(),
        run: Box::new(move |txn| {
            // Without a transaction the commit's error is the answer; this placeholder is never seen.
            let result = match txn {
                Some(txn) => f(txn),
                None => Err(backend("not written")),
            };
            let poisoned = matches!(result, Err(StoreError::Backend(_)));
            let finish: Finisher = Box::new(move |commit: StoreResult<()>| {
                let _ = tx.send((commit.and(result), Instant::now()));
            });
            (poisoned, finish)
        }),
    });
    (job, rx)
}

fn create_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(backend)?;
    {
        txn.open_table(tables::USERS).map_err(backend)?;
        txn.open_table(tables::USERNAMES).map_err(backend)?;
        txn.open_table(tables::DEVICES).map_err(backend)?;
        txn.open_table(tables::USER_DEVICES).map_err(backend)?;
        txn.open_table(tables::BLOCKS).map_err(backend)?;
        txn.open_table(tables::BLOCKERS).map_err(backend)?;
        txn.open_table(tables::CONVERSATIONS).map_err(backend)?;
        txn.open_table(tables::DIRECT_PAIRS).map_err(backend)?;
        txn.open_table(tables::MEMBERS).map_err(backend)?;
        txn.open_table(tables::MEMBERSHIPS).map_err(backend)?;
        txn.open_table(tables::MESSAGES).map_err(backend)?;
        txn.open_table(tables::CLIENT_IDS).map_err(backend)?;
        txn.open_table(tables::LAST_SENT).map_err(backend)?;
        txn.open_table(tables::FEED).map_err(backend)?;
        txn.open_table(tables::CURSORS).map_err(backend)?;
        txn.open_table(tables::THREAD_REPLIES).map_err(backend)?;
        txn.open_table(tables::THREAD_REPLY_SEQS).map_err(backend)?;
        txn.open_table(tables::THREAD_READS).map_err(backend)?;
        txn.open_table(tables::SEARCH_BACKLOG).map_err(backend)?;
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
        txn.open_table(tables::REPORTS).map_err(backend)?;
        txn.open_table(tables::REPORTS_BY_STATE).map_err(backend)?;
        txn.open_table(tables::REPORTS_OPEN).map_err(backend)?;
        txn.open_table(META).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

/// Applies the journal records redb lost in a crash (those after its stored LSN), commits them durably,
/// and returns the emptied journal with how many records it replayed.
fn recover(db: &Database, dir: &Path, feed_retention: u64) -> StoreResult<(Journal, u64)> {
    let (applied, snapshot) = {
        let txn = db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let get = |key: &str| -> StoreResult<u64> { Ok(meta.get(key).map_err(backend)?.map_or(0, |v| v.value())) };
        (get(JOURNAL_APPLIED)?, get(feed_snapshot::META_KEY)?)
    };
    let (mut journal, pending) = Journal::open(dir, applied).map_err(|e| backend(format!("journal: {e}")))?;
    if !pending.is_empty() || snapshot != 0 {
        let txn = db.begin_write().map_err(backend)?;
        let feed = FeedBuffer::default();
        // The feed rows the last durable commit left buffered, then what the journal holds after it.
        if snapshot != 0 {
            let rows = feed_snapshot::load(dir, snapshot)?;
            let mut state = feed.lock();
            for (user, row) in rows {
                state.stage_at(user, row);
            }
        }
        for (lsn, record) in &pending {
            stores::replay(&txn, record, &feed).map_err(|e| backend(format!("replaying journal record {lsn}: {e}")))?;
        }
        let rows = feed.lock().take_staged();
        feed_buffer::write(&mut txn.open_table(FEED).map_err(backend)?, &rows, feed_retention)?;
        if let Some((last, _)) = pending.last() {
            set_journal_applied(&txn, *last)?;
        }
        txn.open_table(META).map_err(backend)?.insert(feed_snapshot::META_KEY, 0).map_err(backend)?;
        txn.commit().map_err(backend)?;
        tracing::info!(records = pending.len(), feed_snapshot = snapshot, "replayed the journal");
    }
    feed_snapshot::remove_others(dir, 0);
    journal.reset().map_err(|e| backend(format!("empty {}: {e}", journal.path().display())))?;
    Ok((journal, pending.len() as u64))
}

/// Records, in the transaction that applies it, the last journal record redb holds.
fn set_journal_applied(txn: &WriteTransaction, lsn: u64) -> StoreResult<()> {
    txn.open_table(META).map_err(backend)?.insert(JOURNAL_APPLIED, lsn).map_err(backend)?;
    Ok(())
}

/// Every `interval`, syncs the database file, then asks the writer to checkpoint; stops when the database is
/// gone. redb keeps the pages of non-durable commits in its cache until the next durable commit, except those
/// it evicts to the file when the cache is full: syncing those here, beside the writer, leaves the checkpoint
/// less to write and sync while the writer waits (hence a modest cache; see [`DEFAULT_CACHE_BYTES`]).
fn start_checkpoint_timer(jobs: mpsc::WeakSender<Msg>, file: &Path, interval: Duration) -> StoreResult<()> {
    // fdatasync on any descriptor of a file flushes all of the file's dirty pages.
    let file = std::fs::File::open(file).map_err(|e| backend(format!("open {}: {e}", file.display())))?;
    std::thread::Builder::new()
        .name("herald-redb-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                if jobs.upgrade().is_none() {
                    break;
                }
                let started = Instant::now();
                if let Err(e) = file.sync_data() {
                    // The checkpoint's own durable commit reports (and acts on) a failing disk.
                    tracing::warn!(error = %e, "flushing the database file ahead of a checkpoint failed");
                }
                metrics::histogram!("embedded_commit_duration_ms", "stage" => "preflush")
                    .record(started.elapsed().as_secs_f64() * 1000.0);
                let Some(jobs) = jobs.upgrade() else { break };
                if jobs.blocking_send(Msg::Checkpoint).is_err() {
                    break;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| backend(format!("spawn checkpoint timer: {e}")))
}

/// The writer thread's state.
struct Writer {
    db: Shared,
    journal: Journal,
    /// How often the timer asks for a checkpoint (the writer takes one itself after four of these).
    interval: Duration,
    /// Feed rows written behind: some go into each transaction; a durable one names a snapshot of the rest.
    feed_buffer: Arc<FeedBuffer>,
    feed_retention: u64,
    /// The data directory, where feed snapshots go.
    dir: PathBuf,
    /// The id of the newest feed snapshot written (ids are never reused within a process).
    next_snapshot: u64,
    /// Set once the journal could not be written, or redb could not commit what the journal already holds:
    /// the two may disagree until a restart replays the journal, so every later write is refused.
    failed: Option<String>,
    /// When redb last committed durably (a checkpoint).
    last_durable: Instant,
    /// Whether anything was committed without syncing since then.
    dirty: bool,
}

impl Writer {
    /// Takes everything pending, applies it in one transaction, commits once, answers everyone.
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else { break };
            let mut jobs = Vec::new();
            let mut checkpoint_asked = false;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write(job) => {
                        metrics::histogram!("embedded_job_wait_ms").record(job.queued.elapsed().as_secs_f64() * 1000.0);
                        jobs.push(job)
                    }
                    Msg::Checkpoint => checkpoint_asked = true,
                    Msg::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if jobs.len() < MAX_JOBS_PER_COMMIT {
                    next = rx.try_recv().ok();
                }
            }
            // The timer asks once it has flushed the file; the writer's own clock is the fallback should
            // the timer fall behind.
            // Closing also writes the buffered feed rows into the table, leaving no snapshot behind.
            let checkpoint_due = (closing.is_some() && !self.feed_buffer.is_empty())
                || self.dirty
                    && (checkpoint_asked
                        || closing.is_some()
                        || self.last_durable.elapsed() >= self.interval * 4
                        || self.journal.len() >= CHECKPOINT_BYTES);
            if jobs.is_empty() && !checkpoint_due {
                continue;
            }
            let shared = self.db.clone();
            let guard = shared.read().unwrap_or_else(|p| p.into_inner());
            let Some(db) = guard.as_ref() else {
                // Closed: dropping the jobs unanswered tells each caller the write failed.
                continue;
            };
            let started = Instant::now();
            let count = jobs.len();
            let (outcome, finishers) = self.commit(db, jobs, checkpoint_due, closing.is_some());
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

    /// Writes the rows that stay buffered after this transaction to a new snapshot file and names it in the
    /// transaction (0 when nothing stays buffered). Returns the id named.
    /// What a failed journal append means for the batch (refused, nothing stored) and for the writer: a
    /// refused append left the journal as it was, so the next batch may go through (a full disk that has
    /// room again); a broken one leaves it unknown, and only a restart goes on.
    fn journal_failed(&mut self, e: AppendError) -> StoreError {
        match e {
            AppendError::Refused(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                metrics::counter!("storage_full_refusals_total").increment(1);
                tracing::error!(journal = %self.journal.path().display(), "the disk is full: sends are refused until it has room");
                StoreError::Unavailable("the server's disk is full; retry later".into())
            }
            AppendError::Refused(e) => backend(format!("the journal could not be written ({e}); nothing was stored")),
            AppendError::Broken(e) => {
                let reason = format!("the journal could not be written ({e}); restart the server");
                self.failed = Some(reason.clone());
                backend(reason)
            }
        }
    }

    fn snapshot_feed(&mut self, txn: &WriteTransaction, flushing: &Flush, everything: bool) -> StoreResult<u64> {
        let rows = if everything { Vec::new() } else { self.feed_buffer.lock().snapshot(flushing) };
        let id = if rows.is_empty() {
            0
        } else {
            self.next_snapshot += 1;
            let started = Instant::now();
            feed_snapshot::write(&self.dir, self.next_snapshot, &feed_snapshot::encode(&rows)?)
                .map_err(|e| backend(format!("write a feed snapshot in {}: {e}", self.dir.display())))?;
            metrics::histogram!("embedded_commit_duration_ms", "stage" => "feed_snapshot")
                .record(started.elapsed().as_secs_f64() * 1000.0);
            self.next_snapshot
        };
        txn.open_table(META).map_err(backend)?.insert(feed_snapshot::META_KEY, id).map_err(backend)?;
        Ok(id)
    }

    /// One group commit: runs the jobs in a transaction, journals the records of those that have one,
    /// commits (durably when a job needs it without a record, or a checkpoint is due). When `closing`, every
    /// buffered feed row goes into the table.
    fn commit(
        &mut self,
        db: &Database,
        jobs: Vec<Job>,
        checkpoint_due: bool,
        closing: bool,
    ) -> (StoreResult<()>, Vec<Finisher>) {
        let started = Instant::now();
        let durable = checkpoint_due || jobs.iter().any(|j| j.durable && j.journal.is_none());
        let mut records = Vec::new();
        let mut runs = Vec::with_capacity(jobs.len());
        for job in jobs {
            records.extend(job.journal);
            runs.push(job.run);
        }
        let unrun = |runs: Vec<Run>| runs.into_iter().map(|run| run(None).1).collect::<Vec<_>>();
        if let Some(reason) = &self.failed {
            return (Err(backend(reason)), unrun(runs));
        }
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return (Err(backend(e)), unrun(runs)),
        };
        let durability = if durable { Durability::Immediate } else { Durability::None };
        let mut poisoned = txn.set_durability(durability).is_err();
        let mut finishers = Vec::with_capacity(runs.len());
        for run in runs {
            let (bad, finish) = run(Some(&txn));
            poisoned |= bad;
            finishers.push(finish);
        }
        let everything = durable && closing;
        let mut flush = self.feed_buffer.to_flush(everything);
        if everything {
            flush.extend(self.feed_buffer.lock().take_staged());
        }
        if !flush.is_empty() && !poisoned {
            let written = txn
                .open_table(FEED)
                .map_err(backend)
                .and_then(|mut table| feed_buffer::write(&mut table, &flush, self.feed_retention));
            if let Err(e) = written {
                tracing::error!(error = %e, "writing buffered feed rows failed");
                poisoned = true;
            }
        }
        // A durable commit empties the journal, which made the buffered rows durable until now: the commit
        // names a snapshot of them instead (`feed_snapshot`), or none when they all went into the table.
        let mut snapshot = None;
        if durable && !poisoned {
            match self.snapshot_feed(&txn, &flush, everything) {
                Ok(id) => snapshot = Some(id),
                Err(e) => {
                    tracing::error!(error = %e, "writing the feed snapshot failed");
                    poisoned = true;
                }
            }
        }
        if !records.is_empty() && !poisoned {
            let last = self.journal.next_lsn() + records.len() as u64 - 1;
            poisoned |= set_journal_applied(&txn, last).is_err();
        }
        if poisoned {
            let _ = txn.abort();
            self.feed_buffer.aborted(&flush);
            return (Err(backend("a write in the same group commit failed; nothing was written")), finishers);
        }
        let applied = Instant::now();
        // The records go to disk before redb shows their writes to readers: nothing is read that a crash
        // could take back.
        if !records.is_empty()
            && let Err(e) = self.journal.append(&records)
        {
            let _ = txn.abort();
            self.feed_buffer.aborted(&flush);
            return (Err(self.journal_failed(e)), finishers);
        }
        let journaled = Instant::now();
        if let Err(e) = txn.commit() {
            self.feed_buffer.aborted(&flush);
            if !records.is_empty() {
                // The journal holds writes redb does not: only a restart's replay brings them together.
                self.failed = Some(format!("the database could not commit journaled writes ({e}); restart the server"));
            }
            return (Err(backend(e)), finishers);
        }
        // Before anyone hears back: a row is readable (from the buffer or the table) once its caller knows.
        self.feed_buffer.committed(&flush);
        if let Some(id) = snapshot {
            feed_snapshot::remove_others(&self.dir, id);
        }
        let committed = Instant::now();
        if durable {
            self.dirty = false;
            self.last_durable = committed;
            // Records the journal keeps after a failed truncation are skipped at the next start, since the
            // database's stored LSN covers them.
            if self.journal.len() > 0
                && let Err(e) = self.journal.reset()
            {
                tracing::warn!(error = %e, "could not empty the journal after a checkpoint");
            }
        } else {
            self.dirty = true;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        metrics::histogram!("embedded_commit_duration_ms", "stage" => "apply").record(ms(applied - started));
        if !records.is_empty() {
            metrics::histogram!("embedded_commit_duration_ms", "stage" => "journal").record(ms(journaled - applied));
        }
        let stage = if durable { "commit_durable" } else { "commit" };
        metrics::histogram!("embedded_commit_duration_ms", "stage" => stage).record(ms(committed - journaled));
        (Ok(()), finishers)
    }
}
