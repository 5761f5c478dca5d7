//! Checking the database file of a stopped node, for operators: what `herald database check` runs. redb
//! verifies its page checksums only when asked to (at open it trusts a cleanly closed file), so a flipped
//! byte inside a table page would otherwise surface only when a read happens to decode that row, or pass
//! unnoticed if the damaged row still decodes. The check reads every page and every row.
//!
//! It works on a copy: redb's integrity check repairs the file it checks, and a check must change nothing.
//! The original is locked while it is copied (a node starting meanwhile waits for nothing: it fails to lock
//! the file and says so), which also proves that no node has it open.

use crate::tables::{CONVERSATIONS, DEVICES, FEED, MEDIA, MEMBERS, MESSAGES, REPORTS, USERS};
use crate::{feed_block, feed_codec, message_codec};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use std::fmt;
use std::path::{Path, PathBuf};

/// The first damaged rows named in a report; the rest are only counted.
const NAMED_ROWS: usize = 20;

#[derive(Debug)]
pub struct DatabaseReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// What the page check found: `None` if every checksum held, else what was wrong.
    pub pages: Option<String>,
    /// Rows read and decoded, by table.
    pub rows: Vec<(String, u64)>,
    /// Rows that did not decode: table, key, error (the first few).
    pub bad_rows: Vec<(String, String, String)>,
    pub bad_row_count: u64,
}

impl DatabaseReport {
    pub fn damaged(&self) -> bool {
        self.pages.is_some() || self.bad_row_count > 0
    }
}

impl fmt::Display for DatabaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} bytes", self.path.display(), self.bytes)?;
        for (table, count) in &self.rows {
            write!(f, "; {table}: {count} rows")?;
        }
        if let Some(pages) = &self.pages {
            write!(f, "\nDAMAGED pages: {pages}")?;
        }
        for (table, key, error) in &self.bad_rows {
            write!(f, "\nDAMAGED row in {table} at key {key}: {error}")?;
        }
        if self.bad_row_count > self.bad_rows.len() as u64 {
            write!(f, "\n… and {} more damaged rows", self.bad_row_count - self.bad_rows.len() as u64)?;
        }
        if self.damaged() {
            write!(
                f,
                "\nthe node would serve wrong or missing data from this file: restore the data directory from a \
                 backup (docs/operations.md, \"A damaged file\")"
            )
        } else {
            write!(f, "\nno damage: every page checksum holds and every row decodes")
        }
    }
}

/// Checks `dir`'s database through a copy made in `scratch` (the data directory itself when `None`), which
/// is removed afterwards. Changes nothing in `dir`.
pub fn check_database(dir: &Path, scratch: Option<&Path>) -> Result<DatabaseReport, String> {
    let path = dir.join("herald.redb");
    let original = std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    original.try_lock_shared().map_err(|e| {
        format!("{}: cannot lock it ({e}): is a node running on this data directory? stop it first", path.display())
    })?;
    let bytes = original.metadata().map_err(|e| format!("stat {}: {e}", path.display()))?.len();
    let scratch = scratch.unwrap_or(dir);
    let copy = tempfile::Builder::new()
        .prefix("herald.redb.check-")
        .tempfile_in(scratch)
        .map_err(|e| format!("a scratch file in {}: {e}", scratch.display()))?;
    std::fs::copy(&path, copy.path()).map_err(|e| format!("copy {} to {}: {e}", path.display(), scratch.display()))?;
    drop(original);

    let mut report =
        DatabaseReport { path, bytes, pages: None, rows: Vec::new(), bad_rows: Vec::new(), bad_row_count: 0 };
    let mut db = match Database::open(copy.path()) {
        Ok(db) => db,
        Err(e) => {
            report.pages = Some(format!("the file does not open: {e}"));
            return Ok(report);
        }
    };
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => {
            report.pages = Some("page checksums failed (redb could repair a copy; see below for the rows)".into())
        }
        Err(e) => {
            report.pages = Some(format!("the page check failed: {e}"));
            return Ok(report);
        }
    }
    let rows = Rows { db: &db };
    rows.scan(&mut report, MESSAGES, |key, value| {
        message_codec::decode(value).map(drop).map_err(|e| (format!("{key:?}"), e.to_string()))
    })?;
    rows.scan(&mut report, FEED, |(user, first), block| {
        let decoded = feed_block::decode(first, block).map_err(|e| (format!("{:?}", (user, first)), e.to_string()))?;
        for (position, row) in decoded {
            feed_codec::decode(row).map_err(|e| (format!("{:?}", (user, position)), e.to_string()))?;
        }
        Ok(())
    })?;
    rows.scan(&mut report, USERS, json)?;
    rows.scan(&mut report, DEVICES, json)?;
    rows.scan(&mut report, CONVERSATIONS, json)?;
    rows.scan(&mut report, MEMBERS, json)?;
    rows.scan(&mut report, MEDIA, json)?;
    rows.scan(&mut report, REPORTS, json)?;
    Ok(report)
}

fn json<K: fmt::Debug>(key: K, value: &[u8]) -> Result<(), (String, String)> {
    serde_json::from_slice::<serde_json::Value>(value).map(drop).map_err(|e| (format!("{key:?}"), e.to_string()))
}

struct Rows<'a> {
    db: &'a Database,
}

impl Rows<'_> {
    /// Reads every row of `table`, counting those `decode` refuses.
    fn scan<K, F>(&self, report: &mut DatabaseReport, table: TableDefinition<K, &[u8]>, decode: F) -> Result<(), String>
    where
        K: redb::Key + 'static,
        F: Fn(K::SelfType<'_>, &[u8]) -> Result<(), (String, String)>,
    {
        let name = table.name().to_owned();
        let txn = self.db.begin_read().map_err(|e| format!("read: {e}"))?;
        let table = match txn.open_table(table) {
            Ok(table) => table,
            // A table nothing was ever written to does not exist yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(format!("open table {name}: {e}")),
        };
        let mut count = 0;
        for entry in table.iter().map_err(|e| format!("read table {name}: {e}"))? {
            count += 1;
            let outcome = match entry {
                Ok((key, value)) => decode(key.value(), value.value()),
                Err(e) => Err(("(unreadable)".to_owned(), e.to_string())),
            };
            if let Err((key, error)) = outcome {
                report.bad_row_count += 1;
                if report.bad_rows.len() < NAMED_ROWS {
                    report.bad_rows.push((name.clone(), key, error));
                }
            }
        }
        report.rows.push((name, count));
        Ok(())
    }
}
