//! Herald's single-node backends, needing nothing installed: one redb database file in the data directory
//! holding all six stores, and the in-process partitioned log.
//!
//! Writes from every store go through one writer thread that group-commits whatever is pending into a
//! single redb transaction. Message commits are made durable by a write-ahead journal (one fdatasync'd
//! append for the whole group) while redb commits them without syncing and checkpoints every few seconds;
//! other durable writes commit with `Durability::Immediate`. Durable throughput grows with concurrency
//! instead of being capped at one sync per message. Reads use redb's MVCC read transactions directly and
//! never wait for the writer.

mod check;
mod db;
mod device_cache;
mod feed_block;
mod feed_buffer;
mod feed_codec;
mod feed_snapshot;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod journal;
mod keys;
mod log;
mod message_codec;
mod migrate;
mod repair;
mod search_indexer;
mod stores;
mod tables;

pub use check::{DatabaseReport, check_database};
pub use db::{EmbeddedDb, Options};
pub use journal::JournalDamage;
pub use log::InProcessLog;
pub use repair::{JournalReport, check_journal, truncate_journal};
