//! Bringing a database written by an earlier Herald up to the current tables, when it is opened.
//!
//! Each step moves the rows of a retired table into its replacement, in the same transaction that deletes
//! the retired one, so a crash part way leaves the old table whole and the step runs again at the next start.

use crate::db::backend;
use crate::tables::{self, Id};
use herald_core::store::StoreResult;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};

/// `messages` and `feed` were keyed by redb's `(Id, u64)` tuple, ordered by decoding it at every
/// comparison; their replacements use the byte-ordered `keys::IdSeq`.
const OLD_MESSAGES: TableDefinition<(Id, u64), &[u8]> = TableDefinition::new("messages");
const OLD_FEED: TableDefinition<(Id, u64), &[u8]> = TableDefinition::new("feed");

/// Runs every step the database still needs; a no-op on a new or current one.
pub(crate) fn run(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(backend)?;
    let names: Vec<String> = txn.list_tables().map_err(backend)?.map(|t| t.name().to_owned()).collect();
    let mut moved = 0;
    for (old, new) in [(OLD_MESSAGES, tables::MESSAGES), (OLD_FEED, tables::FEED)] {
        if !names.iter().any(|n| n == old.name()) {
            continue;
        }
        {
            let from = txn.open_table(old).map_err(backend)?;
            let mut to = txn.open_table(new).map_err(backend)?;
            for row in from.iter().map_err(backend)? {
                let (key, value) = row.map_err(backend)?;
                to.insert(key.value(), value.value()).map_err(backend)?;
                moved += 1;
            }
        }
        txn.delete_table(old).map_err(backend)?;
        tracing::info!(from = old.name(), to = new.name(), "moved a table to byte-ordered keys");
    }
    if moved > 0 {
        tracing::info!(rows = moved, "migrated the database");
    }
    txn.commit().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn moves_rows_from_the_retired_tables_and_drops_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("db.redb")).expect("create");
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let txn = db.begin_write().expect("begin");
        {
            let mut messages = txn.open_table(OLD_MESSAGES).expect("old messages");
            messages.insert((a, 1), b"one".as_slice()).expect("insert");
            messages.insert((a, 300), b"three hundred".as_slice()).expect("insert");
            let mut feed = txn.open_table(OLD_FEED).expect("old feed");
            feed.insert((b, 7), b"seven".as_slice()).expect("insert");
        }
        txn.commit().expect("commit");

        run(&db).expect("migrates");
        run(&db).expect("a second run finds nothing to do");

        let txn = db.begin_read().expect("read");
        let messages = txn.open_table(tables::MESSAGES).expect("new messages");
        let rows: Vec<((Id, u64), Vec<u8>)> = messages
            .range((a, 0)..=(a, u64::MAX))
            .expect("range")
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())).expect("row"))
            .collect();
        assert_eq!(rows, vec![((a, 1), b"one".to_vec()), ((a, 300), b"three hundred".to_vec())]);
        let feed = txn.open_table(tables::FEED).expect("new feed");
        assert_eq!(feed.get((b, 7)).expect("get").map(|v| v.value().to_vec()), Some(b"seven".to_vec()));
        let names: Vec<String> = txn.list_tables().expect("list").map(|t| t.name().to_owned()).collect();
        assert!(!names.iter().any(|n| n == "messages" || n == "feed"), "old tables left: {names:?}");
    }
}
