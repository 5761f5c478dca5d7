//! The seven store traits over the embedded database, one file each.

mod commit_record;
mod conversations;
mod cursors;
mod media;
mod messages;
mod reports;
mod search;
mod users;

/// A journal record's writes, as a replay decodes them (for the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_commit_record(record: &[u8]) {
    let _ = commit_record::decode(record);
}

use crate::db::backend;
use herald_core::store::{StoreError, StoreResult};
use redb::WriteTransaction;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| backend(format!("corrupt record: {e}")))
}

/// A journal record of a logical write: its kind's byte, then the write as JSON.
fn journal_record<T: Serialize>(kind: u8, write: &T) -> StoreResult<Vec<u8>> {
    let mut record = vec![kind];
    serde_json::to_writer(&mut record, write).map_err(backend)?;
    Ok(record)
}

impl crate::db::EmbeddedDb {
    /// A write journaled as a logical record of kind `kind`: `apply` runs it now, and again on `write` decoded
    /// from the record if a crash takes the redb commit back (`replay`).
    async fn logical_write<W: Serialize + Send + 'static, R: Send + 'static>(
        &self,
        query_type: &'static str,
        table: &'static str,
        kind: u8,
        write: W,
        apply: fn(&WriteTransaction, &W) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let record = journal_record(kind, &write)?;
        self.write_journaled(query_type, table, record, move |txn| apply(txn, &write)).await
    }
}

/// The write a [`journal_record`] holds.
fn recorded<T: DeserializeOwned>(record: &[u8]) -> StoreResult<T> {
    decode(record.get(1..).unwrap_or_default())
}

/// Whether replaying a write ended as its original did when the original was refused: a refusal is decided
/// before anything is written, and the same state gives the same refusal, so nothing is left to do.
fn refused_again(result: StoreResult<()>) -> StoreResult<()> {
    match result {
        Err(StoreError::Conflict(_) | StoreError::LimitExceeded(_)) => Ok(()),
        other => other,
    }
}

/// Applies a journal record again, as the write that journaled it did (see `db`'s recovery).
/// Feed entries are staged in `feed`, for the caller to write.
pub(crate) fn replay(txn: &WriteTransaction, record: &[u8], feed: &crate::feed_buffer::FeedBuffer) -> StoreResult<()> {
    match record.first() {
        Some(&commit_record::MESSAGE_COMMIT) => messages::replay(txn, record, feed),
        Some(&users::ACCOUNT_WRITE) => users::replay(txn, record),
        Some(&conversations::CONVERSATION_WRITE) => conversations::replay(txn, record),
        _ => Err(backend("unknown journal record")),
    }
}
