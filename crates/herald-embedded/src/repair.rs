//! Looking at and cutting a damaged journal, for operators: what `herald journal check` and
//! `herald journal truncate` run, with the server stopped (both open the database, which a running server
//! holds locked).
//!
//! The server refuses to start when intact records follow damage in the journal (see `journal`): they may
//! be acknowledged messages. An operator who has no backup to restore can cut the journal at the damage;
//! this says exactly which records that drops, so the loss is a decision, never a surprise.

use crate::journal::{self, JournalDamage};
use crate::tables::{JOURNAL_APPLIED, META};
use redb::{Database, ReadableDatabase};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// What the journal of a data directory holds.
#[derive(Debug)]
pub struct JournalReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// The last record the database holds (records up to it need no replay).
    pub applied: u64,
    /// Intact records after `applied`, before any damage: what the next start replays.
    pub replayable: u64,
    /// Unreadable bytes at the end with nothing intact after them (a torn last write): cut at start.
    pub torn: u64,
    /// Intact records after damage: the server will not start until the journal is cut or restored.
    pub damage: Option<JournalDamage>,
}

impl std::fmt::Display for JournalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} bytes; the database holds records up to LSN {}; {} record(s) to replay",
            self.path.display(),
            self.bytes,
            self.applied,
            self.replayable
        )?;
        if self.torn > 0 {
            write!(f, "; {} byte(s) of a torn last record, cut off at the next start", self.torn)?;
        }
        match &self.damage {
            Some(d) => write!(f, "\nDAMAGED: {d}"),
            None => write!(f, "\nno damage: the server starts on this journal"),
        }
    }
}

/// Reads the journal of `dir` against its database, changing nothing.
pub fn check_journal(dir: &Path) -> Result<JournalReport, String> {
    let applied = applied_lsn(dir)?;
    let path = dir.join(journal::FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let scan = journal::scan(&path, &bytes, applied).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(JournalReport {
        path,
        bytes: bytes.len() as u64,
        applied,
        replayable: scan.pending.len() as u64,
        torn: scan.torn,
        damage: scan.damage,
    })
}

/// Cuts the journal of `dir` at its damage, dropping the damaged record and everything after it; returns
/// what the journal held before (whose `damage` says what was dropped), or `None` when there was no damage
/// and nothing was changed.
pub fn truncate_journal(dir: &Path) -> Result<Option<JournalReport>, String> {
    let report = check_journal(dir)?;
    let Some(damage) = &report.damage else { return Ok(None) };
    let file = OpenOptions::new()
        .write(true)
        .open(&report.path)
        .map_err(|e| format!("open {}: {e}", report.path.display()))?;
    file.set_len(damage.offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cut {}: {e}", report.path.display()))?;
    Ok(Some(report))
}

/// The LSN the database's last durable commit holds. Opening the database also proves no server has it.
fn applied_lsn(dir: &Path) -> Result<u64, String> {
    let file = dir.join("herald.redb");
    if !file.exists() {
        return Err(format!("{}: no database here (is this a Herald data directory?)", file.display()));
    }
    let db = Database::open(&file).map_err(|e| {
        format!("open {}: {e} (is a server running on this data directory? stop it first)", file.display())
    })?;
    let txn = db.begin_read().map_err(|e| format!("read {}: {e}", file.display()))?;
    let meta = txn.open_table(META).map_err(|e| format!("read {}: {e}", file.display()))?;
    let applied = meta.get(JOURNAL_APPLIED).map_err(|e| format!("read {}: {e}", file.display()))?;
    Ok(applied.map_or(0, |v| v.value()))
}
