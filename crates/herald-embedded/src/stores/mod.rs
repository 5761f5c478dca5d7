//! The five store traits over the embedded database, one file each.

mod conversations;
mod cursors;
mod media;
mod messages;
mod users;

use crate::db::backend;
use herald_core::store::StoreResult;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| backend(format!("corrupt record: {e}")))
}
