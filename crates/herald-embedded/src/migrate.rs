//! Bringing a database written by an earlier Herald up to the current tables, when it is opened.
//!
//! Each step moves the rows of a retired table into its replacement, in the same transaction that deletes
//! the retired one, so a crash part way leaves the old table whole and the step runs again at the next start.

use crate::db::backend;
use crate::feed_buffer::{self, Flush};
use crate::keys::{IdPairStr, IdSeq};
use crate::tables::{self, Id};
use herald_core::store::StoreResult;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};

/// `messages` and `feed` were keyed by redb's `(Id, u64)` tuple, ordered by decoding it at every
/// comparison; `devices`, `client_ids` and `last_sent` by an id array or tuples of them, compared one byte
/// per call. Their replacements use the byte-ordered key types of `keys`, with the same values.
const OLD_MESSAGES: TableDefinition<(Id, u64), &[u8]> = TableDefinition::new("messages");
const OLD_FEED: TableDefinition<(Id, u64), &[u8]> = TableDefinition::new("feed");
const OLD_DEVICES: TableDefinition<Id, &[u8]> = TableDefinition::new("devices");
const OLD_CLIENT_IDS: TableDefinition<(Id, Id, &str), u64> = TableDefinition::new("client_ids");
const OLD_LAST_SENT: TableDefinition<(Id, Id), u64> = TableDefinition::new("last_sent");
/// The idempotency keys ordered by conversation and sender first; their replacement stores client_msg_id first
/// (`keys::IdempotencyKey`), the same rows.
const ID_FIRST_CLIENT_IDS: TableDefinition<IdPairStr, u64> = TableDefinition::new("client_ids_v2");
/// The feed with a row per entry; its replacement stores a user's consecutive rows as one block.
const ROW_FEED: TableDefinition<IdSeq, &[u8]> = TableDefinition::new("feed_v2");

/// Moves every row of `$old` into `$new` (whose keys read back as the same values) and deletes `$old`, if
/// the database has it. A macro because the key types differ per table while the rows go across as they are.
macro_rules! move_table {
    ($txn:expr, $names:expr, $moved:ident, $old:expr, $new:expr) => {
        if $names.iter().any(|n| n == $old.name()) {
            {
                let from = $txn.open_table($old).map_err(backend)?;
                let mut to = $txn.open_table($new).map_err(backend)?;
                for row in from.iter().map_err(backend)? {
                    let (key, value) = row.map_err(backend)?;
                    to.insert(key.value(), value.value()).map_err(backend)?;
                    $moved += 1;
                }
            }
            $txn.delete_table($old).map_err(backend)?;
            tracing::info!(from = $old.name(), to = $new.name(), "moved a table to its current key layout");
        }
    };
}

/// Runs every step the database still needs; a no-op on a new or current one.
pub(crate) fn run(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write().map_err(backend)?;
    let names: Vec<String> = txn.list_tables().map_err(backend)?.map(|t| t.name().to_owned()).collect();
    let mut moved = 0u64;
    move_table!(txn, names, moved, OLD_MESSAGES, tables::MESSAGES);
    move_table!(txn, names, moved, OLD_FEED, ROW_FEED);
    move_table!(txn, names, moved, OLD_DEVICES, tables::DEVICES);
    move_table!(txn, names, moved, OLD_CLIENT_IDS, tables::CLIENT_IDS);
    move_table!(txn, names, moved, ID_FIRST_CLIENT_IDS, tables::CLIENT_IDS);
    move_table!(txn, names, moved, OLD_LAST_SENT, tables::LAST_SENT);
    if names.iter().any(|n| n == ROW_FEED.name() || n == OLD_FEED.name()) {
        moved += feed_into_blocks(&txn)?;
    }
    if moved > 0 {
        tracing::info!(rows = moved, "migrated the database");
    }
    txn.commit().map_err(backend)
}

/// Moves the row-per-entry feed into blocks (the rows of each user in runs, as the writer makes them) and
/// deletes it. One user's rows are in memory at a time. Returns the rows moved.
fn feed_into_blocks(txn: &redb::WriteTransaction) -> StoreResult<u64> {
    let mut moved = 0;
    {
        let from = txn.open_table(ROW_FEED).map_err(backend)?;
        let mut to = txn.open_table(tables::FEED).map_err(backend)?;
        let mut user: Flush = Vec::new();
        for row in from.iter().map_err(backend)? {
            let (key, value) = row.map_err(backend)?;
            let (id, pos) = key.value();
            if user.first().is_some_and(|(current, _)| *current != id) {
                // Nothing is pruned here: the window is the reader's to apply, as for any leftover row.
                feed_buffer::write(&mut to, &std::mem::take(&mut user), u64::MAX)?;
            }
            match user.first_mut() {
                Some((_, rows)) => rows.push((pos, value.value().into())),
                None => user.push((id, vec![(pos, value.value().into())])),
            }
            moved += 1;
        }
        feed_buffer::write(&mut to, &user, u64::MAX)?;
    }
    txn.delete_table(ROW_FEED).map_err(backend)?;
    tracing::info!(rows = moved, "moved the feed into blocks");
    Ok(moved)
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
            let mut row_feed = txn.open_table(ROW_FEED).expect("row feed");
            for pos in [1, 2, 3, 5] {
                row_feed.insert((a, pos), [pos as u8].as_slice()).expect("insert");
            }
            let mut devices = txn.open_table(OLD_DEVICES).expect("old devices");
            devices.insert(b, b"device".as_slice()).expect("insert");
            let mut ids = txn.open_table(OLD_CLIENT_IDS).expect("old client ids");
            ids.insert((a, b, "c-1"), 1).expect("insert");
            ids.insert((a, b, "c-10"), 300).expect("insert");
            let mut v2_ids = txn.open_table(ID_FIRST_CLIENT_IDS).expect("v2 client ids");
            v2_ids.insert((b, a, "0190a"), 7).expect("insert");
            let mut last = txn.open_table(OLD_LAST_SENT).expect("old last sent");
            last.insert((a, b), 300).expect("insert");
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
        type Block = ((Id, u64), Vec<(u64, Vec<u8>)>);
        let blocks: Vec<Block> = feed
            .iter()
            .expect("iter")
            .map(|r| {
                let (key, block) = r.expect("row");
                let rows = crate::feed_block::decode(key.value().1, block.value()).expect("a block");
                (key.value(), rows.into_iter().map(|(p, row)| (p, row.to_vec())).collect())
            })
            .collect();
        // A block per run of consecutive positions, each user's apart.
        let expected = vec![
            ((a, 1), vec![(1, vec![1]), (2, vec![2]), (3, vec![3])]),
            ((a, 5), vec![(5, vec![5])]),
            ((b, 7), vec![(7, b"seven".to_vec())]),
        ];
        assert_eq!(blocks, expected);
        let devices = txn.open_table(tables::DEVICES).expect("new devices");
        assert_eq!(devices.get(b).expect("get").map(|v| v.value().to_vec()), Some(b"device".to_vec()));
        let ids = txn.open_table(tables::CLIENT_IDS).expect("new client ids");
        assert_eq!(ids.get((a, b, "c-10")).expect("get").map(|v| v.value()), Some(300));
        assert_eq!(ids.get((b, a, "0190a")).expect("get").map(|v| v.value()), Some(7));
        assert_eq!(
            ids.get((b, a, "c-10")).expect("get").map(|v| v.value()),
            None,
            "keys stay per conversation and sender"
        );
        let mut all: Vec<(String, u64)> = ids
            .iter()
            .expect("iter")
            .map(|r| r.map(|(k, v)| (k.value().2.to_owned(), v.value())).expect("row"))
            .collect();
        all.sort();
        assert_eq!(all, vec![("0190a".to_owned(), 7), ("c-1".to_owned(), 1), ("c-10".to_owned(), 300)]);
        let last = txn.open_table(tables::LAST_SENT).expect("new last sent");
        assert_eq!(last.get((a, b)).expect("get").map(|v| v.value()), Some(300));
        let names: Vec<String> = txn.list_tables().expect("list").map(|t| t.name().to_owned()).collect();
        let retired = ["messages", "feed", "feed_v2", "devices", "client_ids", "client_ids_v2", "last_sent"];
        assert!(!names.iter().any(|n| retired.contains(&n.as_str())), "old tables left: {names:?}");
    }
}
