//! The five store traits over the embedded database, one file each.

mod commit_record;
mod conversations;
mod cursors;
mod media;
mod messages;
mod users;

use crate::db::backend;
use herald_core::store::StoreResult;
use redb::WriteTransaction;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| backend(format!("corrupt record: {e}")))
}

/// Applies a journal record again, as the write that journaled it did (see `db`'s recovery).
/// Feed entries are staged in `feed`, for the caller to write.
pub(crate) fn replay(txn: &WriteTransaction, record: &[u8], feed: &crate::feed_buffer::FeedBuffer) -> StoreResult<()> {
    match record.first() {
        Some(&commit_record::MESSAGE_COMMIT) => messages::replay(txn, record, feed),
        Some(&users::ACCOUNT_WRITE) => users::replay(txn, record),
        _ => Err(backend("unknown journal record")),
    }
}
