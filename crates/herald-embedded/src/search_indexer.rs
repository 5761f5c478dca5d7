//! Feeds the search index (`herald_search::MessageIndex`, in `search/` beside the database file) from the
//! message commits. A commit records each message it writes in `SEARCH_BACKLOG`, in the same transaction (and so
//! in the journal: a crash loses nothing acknowledged). This thread takes the backlog every
//! [`REFRESH`], reads those messages as they are now, indexes them (tantivy commits durably) and then removes the
//! entries it indexed, unless a newer write restamped them meanwhile. A message is therefore searchable within
//! about [`REFRESH`] plus one index commit of its ack, and an index that is lost or unreadable is rebuilt from
//! the messages when the database opens.

use crate::db::{EmbeddedDb, backend};
use crate::message_codec;
use crate::tables::{Id, MESSAGES, SEARCH_BACKLOG};
use herald_core::store::StoreResult;
use herald_proto::ConversationId;
use herald_search::{IndexedMessage, MessageIndex};
use redb::ReadableTable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the backlog is taken when it is not full. Each take that finds messages is one tantivy commit (a few
/// fsyncs, beside the journal's), so this trades the time until a message is findable for disk syncs.
pub const REFRESH: Duration = Duration::from_millis(500);
/// Messages indexed in one index commit at most.
const BATCH: usize = 20_000;

/// Stamps for backlog entries: increasing within a process, and seeded from the clock so that a stamp written
/// by an earlier process is not met again by a later one.
static STAMP: LazyLock<AtomicU64> = LazyLock::new(|| {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    AtomicU64::new(now)
});

/// The stamp for the next commit's backlog entries.
pub(crate) fn next_stamp() -> u64 {
    STAMP.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct SearchIndexer {
    pub(crate) index: Arc<MessageIndex>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SearchIndexer {
    pub(crate) fn new(index: MessageIndex) -> Self {
        Self { index: Arc::new(index), stop: Arc::default(), thread: Mutex::new(None) }
    }

    /// Starts the thread; it stops by itself once `db` is dropped.
    pub(crate) fn start(&self, db: Weak<EmbeddedDb>) -> StoreResult<()> {
        let (index, stop) = (self.index.clone(), self.stop.clone());
        let handle = std::thread::Builder::new()
            .name("herald-search-indexer".into())
            .spawn(move || run(&db, &index, &stop))
            .map_err(|e| backend(format!("spawn the search indexer: {e}")))?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops the thread after its current batch, and closes the index's writer.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.thread().unpark();
            let _ = handle.join();
        }
        if let Err(e) = self.index.close() {
            tracing::warn!(error = %e, "search index: closing");
        }
    }
}

fn run(db: &Weak<EmbeddedDb>, index: &MessageIndex, stop: &AtomicBool) {
    if index.created() {
        match db.upgrade().map(|db| backlog_everything(&db)) {
            Some(Ok(n)) if n > 0 => tracing::info!(messages = n, "search index: new, indexing every message"),
            Some(Err(e)) => tracing::error!(error = %e, "search index: could not queue the messages to index"),
            _ => {}
        }
    }
    while !stop.load(Ordering::Acquire) {
        let Some(db) = db.upgrade() else { return };
        match index_batch(&db, index) {
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {}
            Err(e) => {
                if db.is_closed() {
                    return;
                }
                tracing::error!(error = %e, "search index: a batch failed; retrying");
            }
        }
        drop(db);
        std::thread::park_timeout(REFRESH);
    }
}

/// Queues every stored message (a new index, on an existing database).
fn backlog_everything(db: &EmbeddedDb) -> StoreResult<u64> {
    db.write_blocking("insert", "search_backlog", |txn| {
        let messages = txn.open_table(MESSAGES).map_err(backend)?;
        let mut backlog = txn.open_table(SEARCH_BACKLOG).map_err(backend)?;
        let stamp = next_stamp();
        let mut n = 0;
        for entry in messages.iter().map_err(backend)? {
            let (key, _) = entry.map_err(backend)?;
            backlog.insert(key.value(), stamp).map_err(backend)?;
            n += 1;
        }
        Ok(n)
    })
}

/// Indexes up to [`BATCH`] backlog entries; returns how many it took.
fn index_batch(db: &EmbeddedDb, index: &MessageIndex) -> StoreResult<usize> {
    let (taken, messages) = db.read("range", "search_backlog", |txn| {
        let backlog = txn.open_table(SEARCH_BACKLOG).map_err(backend)?;
        let stored = txn.open_table(MESSAGES).map_err(backend)?;
        let mut taken: Vec<((Id, u64), u64)> = Vec::new();
        let mut messages = Vec::new();
        for entry in backlog.iter().map_err(backend)?.take(BATCH) {
            let (key, stamp) = entry.map_err(backend)?;
            let (conversation, seq) = key.value();
            let (words, sent_at) = match stored.get((conversation, seq)).map_err(backend)? {
                Some(row) => {
                    let message = message_codec::decode(row.value())?;
                    (herald_core::search::indexed_words(&message), message.sent_at)
                }
                None => (Vec::new(), 0),
            };
            let conversation_id = ConversationId::from_bytes(conversation);
            messages.push(IndexedMessage { conversation: conversation_id, seq, sent_at, words });
            taken.push(((conversation, seq), stamp.value()));
        }
        Ok((taken, messages))
    })?;
    if taken.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    index.apply(&messages).map_err(backend)?;
    metrics::histogram!("search_index_commit_ms").record(started.elapsed().as_secs_f64() * 1000.0);
    let n = taken.len();
    metrics::counter!("search_indexed_messages_total").increment(n as u64);
    db.write_blocking("delete", "search_backlog", move |txn| {
        let mut backlog = txn.open_table(SEARCH_BACKLOG).map_err(backend)?;
        for (key, stamp) in taken {
            let unchanged = backlog.get(key).map_err(backend)?.is_some_and(|v| v.value() == stamp);
            if unchanged {
                backlog.remove(key).map_err(backend)?;
            }
        }
        Ok(())
    })?;
    Ok(n)
}
