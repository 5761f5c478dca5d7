//! The write-ahead journal: what makes a message commit durable without a durable redb commit.
//!
//! A durable redb commit rewrites and checksums every B-tree page the transaction touched and fsyncs; for a
//! batch of group messages that is one page per member's feed, milliseconds per commit. The journal instead
//! appends the batch's logical record (what `commit_with_feed` was asked to write) to one file and
//! `fdatasync`s it, a sequential write of a few KiB (~0.2 ms here), while redb commits the same writes
//! without syncing (`Durability::None`: visible to readers at once, persisted by a later durable commit).
//!
//! Every record carries a log sequence number (LSN); the redb transaction that applies a record also
//! stores its LSN (`META["journal_applied"]`). After a crash, redb is back at its last durable commit and
//! its stored LSN says exactly which records to apply again, in order. A periodic durable redb commit (the
//! checkpoint) makes everything journaled so far part of the database file, after which the journal is
//! emptied.
//!
//! Record layout (integers little-endian): `len u32 | crc32 u32 | lsn u64 | payload (len bytes)`; the
//! CRC covers the LSN and the payload. Reading stops at the first record that is torn, fails its CRC, or
//! does not continue the LSN sequence (bytes left from before the last truncation).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The journal's file name in the data directory.
pub(crate) const FILE: &str = "herald.journal";
const HEADER: usize = 16;
/// A record larger than this is taken as garbage (a commit is at most a few thousand writes).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// A record read back: its LSN and payload.
pub(crate) type Record = (u64, Vec<u8>);

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    len: u64,
    /// The LSN of the last record appended (or applied before the journal was opened).
    last_lsn: u64,
}

/// Why an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// Nothing of the batch is in the journal, which is as before: the next append may succeed (e.g. once a
    /// full disk has room again).
    Refused(io::Error),
    /// The journal's state on disk is unknown: only a restart (and its replay) can go on from here.
    Broken(io::Error),
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Refused(e) | AppendError::Broken(e) => e.fmt(f),
        }
    }
}

/// Intact records that follow a damaged one: acknowledged writes a silent cut would lose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalDamage {
    pub path: PathBuf,
    /// Where the first unreadable byte is: everything from here on is past the damage.
    pub offset: u64,
    /// Intact records after the damage that the database does not hold yet.
    pub following: u64,
    /// Their LSNs, first and last.
    pub first_lsn: u64,
    pub last_lsn: u64,
}

impl std::fmt::Display for JournalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal {} is damaged at byte {}, and {} intact record(s) follow the damage (LSNs {} to {}): they \
             may hold acknowledged messages. Nothing was changed. Restore the data directory from a backup, or run \
             `herald journal truncate --data-dir {}` to cut the journal at the damage (it lists what that drops)",
            self.path.display(),
            self.offset,
            self.following,
            self.first_lsn,
            self.last_lsn,
            self.path.parent().map_or_else(|| ".".into(), |d| d.display().to_string()),
        )
    }
}

/// What reading a journal found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The records after the database's applied LSN, in order.
    pub pending: Vec<Record>,
    /// Where the intact sequence ends.
    pub end: u64,
    /// The LSN of the last intact record (or the applied LSN, if greater).
    pub last_lsn: u64,
    /// Bytes after `end` that are neither intact records nor leftovers: a record torn by a crash in
    /// mid-append (never acknowledged), cut off at the next append.
    pub torn: u64,
    /// Intact records after damage, if any: the journal cannot be used as it is.
    pub damage: Option<JournalDamage>,
}

/// Reads the journal's bytes: the intact sequence of records from the start, then what lies after it.
/// After the last record of the sequence may come (a) nothing, (b) leftovers of records from before the
/// last truncation (older LSNs, which the database holds), (c) a record torn by a crash, or (d) damage
/// with newer intact records after it: acknowledged writes that replaying only the sequence would lose.
pub(crate) fn scan(path: &Path, bytes: &[u8], applied: u64) -> Result<Scan, String> {
    let mut pending = Vec::new();
    let mut expected: Option<u64> = None;
    let mut offset = 0;
    while let Some((lsn, payload, next)) = record_at(bytes, offset) {
        // The first record sets the sequence (it may start at or before `applied`); later ones must
        // follow it without a hole.
        if expected.is_some_and(|e| lsn != e) {
            break;
        }
        expected = Some(lsn + 1);
        if lsn > applied {
            if lsn != applied + 1 + pending.len() as u64 {
                return Err(format!("record {lsn} follows the database's last applied record {applied} with a gap"));
            }
            pending.push((lsn, payload.to_vec()));
        }
        offset = next;
    }
    let last_lsn = expected.map_or(applied, |e| (e - 1).max(applied));
    // Anything intact and newer than what the database and the sequence hold, anywhere after the end?
    let mut damage: Option<JournalDamage> = None;
    let mut at = offset;
    while at + HEADER <= bytes.len() {
        match newer_record_at(bytes, at, last_lsn) {
            Some((lsn, next)) => {
                let d = damage.get_or_insert_with(|| JournalDamage {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    following: 0,
                    first_lsn: lsn,
                    last_lsn: lsn,
                });
                d.following += 1;
                d.first_lsn = d.first_lsn.min(lsn);
                d.last_lsn = d.last_lsn.max(lsn);
                at = next;
            }
            None => at += 1,
        }
    }
    let torn =
        if damage.is_none() && !leftovers_only(bytes, offset, last_lsn) { (bytes.len() - offset) as u64 } else { 0 };
    Ok(Scan { pending, end: offset as u64, last_lsn, torn, damage })
}

/// An intact record at `offset` with an LSN above `above` (and not absurdly far above: a record takes at
/// least a header, which keeps random bytes from passing as one before their CRC is even computed).
fn newer_record_at(bytes: &[u8], offset: usize, above: u64) -> Option<(u64, usize)> {
    let header = bytes.get(offset..offset + HEADER)?;
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let most = above.saturating_add((bytes.len() / HEADER) as u64 + 1);
    if lsn <= above || lsn > most {
        return None;
    }
    record_at(bytes, offset).map(|(lsn, _, next)| (lsn, next))
}

/// Whether the bytes from `offset` on are only whole records the database already holds (left over from
/// before a truncation that a crash undid), so nothing was torn.
fn leftovers_only(bytes: &[u8], mut offset: usize, last_lsn: u64) -> bool {
    while offset < bytes.len() {
        match record_at(bytes, offset) {
            Some((lsn, _, next)) if lsn <= last_lsn => offset = next,
            _ => return false,
        }
    }
    true
}

impl Journal {
    /// Opens (or creates) the journal and returns the records after `applied`, in LSN order: what redb
    /// lost, to be applied again before anything else is written. Intact records after a damaged one are an
    /// error ([`JournalDamage`] in its text): replaying only those before it would lose acknowledged writes in
    /// silence. A torn last record (a crash in mid-append) is cut off with a warning.
    pub fn open(dir: &Path, applied: u64) -> io::Result<(Journal, Vec<Record>)> {
        let path = dir.join(FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if created {
            // The file's directory entry must survive a crash as well as its contents.
            File::open(dir)?.sync_all()?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let scan = scan(&path, &bytes, applied)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        if let Some(damage) = scan.damage {
            return Err(io::Error::new(io::ErrorKind::InvalidData, damage.to_string()));
        }
        if scan.torn > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = scan.end,
                bytes = scan.torn,
                "the journal ends in a torn record (a crash in mid-write, never acknowledged): cut off"
            );
        }
        let journal = Journal { file, path, len: scan.end, last_lsn: scan.last_lsn };
        Ok((journal, scan.pending))
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> u64 {
        self.last_lsn + 1
    }

    /// Bytes appended since the journal was last emptied.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends the records (numbered from [`Journal::next_lsn`]) and waits until they are on disk.
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), AppendError> {
        let size: usize = payloads.iter().map(|p| HEADER + p.len()).sum();
        let mut buf = Vec::with_capacity(size);
        let mut lsn = self.last_lsn;
        for payload in payloads {
            lsn += 1;
            let len =
                u32::try_from(payload.len()).ok().filter(|len| (*len as usize) <= MAX_RECORD).ok_or_else(|| {
                    AppendError::Refused(io::Error::new(io::ErrorKind::InvalidInput, "journal record too large"))
                })?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&lsn.to_le_bytes());
            crc.update(payload);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc.finalize().to_le_bytes());
            buf.extend_from_slice(&lsn.to_le_bytes());
            buf.extend_from_slice(payload);
        }
        if let Err(e) = self.file.write_all_at(&buf, self.len) {
            // Part of the batch may be on disk past the journal's end: cut it off, so a later append cannot
            // leave intact records of this refused batch behind its own (they would read as damage at the
            // next start). Then the journal is as it was, and the next append may succeed (a full disk
            // that has room again).
            return match self.file.set_len(self.len).and_then(|()| self.file.sync_data()) {
                Ok(()) => Err(AppendError::Refused(e)),
                Err(cut) => Err(AppendError::Broken(io::Error::other(format!("{e}; cutting it back failed: {cut}")))),
            };
        }
        // A failed fsync leaves the file's state on disk unknown (the kernel may have dropped the dirty
        // pages): nothing written since the last good fsync can be trusted, so the journal is given up.
        self.file.sync_data().map_err(AppendError::Broken)?;
        self.len += buf.len() as u64;
        self.last_lsn = lsn;
        Ok(())
    }

    /// Empties the journal once a durable database commit holds everything in it. Records keep their
    /// LSNs counting up, so a truncation lost in a crash leaves only records the database already has.
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The record starting at `offset`: its LSN, payload and where the next one starts; `None` when the bytes
/// there are not a whole, intact record.
fn record_at(bytes: &[u8], offset: usize) -> Option<(u64, &[u8], usize)> {
    let header = bytes.get(offset..offset.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let lsn = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let end = offset + HEADER + len;
    let payload = bytes.get(offset + HEADER..end)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((lsn, payload, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(dir: &Path, applied: u64) -> (Journal, Vec<Record>) {
        Journal::open(dir, applied).expect("open journal")
    }

    #[test]
    fn records_after_the_applied_lsn_come_back_in_order() {
        let dir = tempfile::tempdir().expect("journal test");
        let (mut journal, pending) = reopen(dir.path(), 0);
        assert!(pending.is_empty());
        journal.append(&[b"one".to_vec(), b"two".to_vec()]).expect("journal test");
        journal.append(&[b"three".to_vec()]).expect("journal test");
        drop(journal);
        let (journal, pending) = reopen(dir.path(), 1);
        assert_eq!(pending, vec![(2, b"two".to_vec()), (3, b"three".to_vec())]);
        assert_eq!(journal.next_lsn(), 4);
        let (_, pending) = reopen(dir.path(), 3);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_journal() {
        let dir = tempfile::tempdir().expect("journal test");
        let (mut journal, _) = reopen(dir.path(), 0);
        journal.append(&[b"kept".to_vec(), b"torn".to_vec()]).expect("journal test");
        let full = journal.len();
        drop(journal);
        let path = dir.path().join("herald.journal");
        // Cut into the second record: only the first survives, and the next append overwrites the rest.
        let file = OpenOptions::new().write(true).open(&path).expect("journal test");
        file.set_len(full - 2).expect("journal test");
        let (mut journal, pending) = reopen(dir.path(), 0);
        assert_eq!(pending, vec![(1, b"kept".to_vec())]);
        journal.append(&[b"new".to_vec()]).expect("journal test");
        drop(journal);
        let (_, pending) = reopen(dir.path(), 0);
        assert_eq!(pending, vec![(1, b"kept".to_vec()), (2, b"new".to_vec())]);
        // A flipped byte in the payload fails the CRC.
        let mut bytes = std::fs::read(&path).expect("journal test");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("journal test");
        let (_, pending) = reopen(dir.path(), 0);
        assert_eq!(pending, vec![(1, b"kept".to_vec())]);
    }

    #[test]
    fn leftovers_from_before_a_lost_truncation_are_ignored() {
        let dir = tempfile::tempdir().expect("journal test");
        let (mut journal, _) = reopen(dir.path(), 0);
        journal.append(&[vec![7; 100], vec![8; 100], vec![9; 100]]).expect("journal test");
        // The database checkpointed through 3; the journal is emptied and 4 (as long as 1 was) is written
        // over the start of the old bytes, as if the truncation itself had not reached the disk before a
        // crash: the old records 2 and 3 still follow it, whole and with valid CRCs.
        let old = std::fs::read(dir.path().join("herald.journal")).expect("journal test");
        journal.reset().expect("journal test");
        journal.append(&[vec![4; 100]]).expect("journal test");
        let new_len = journal.len() as usize;
        drop(journal);
        let mut bytes = std::fs::read(dir.path().join("herald.journal")).expect("journal test");
        bytes.extend_from_slice(&old[new_len..]);
        std::fs::write(dir.path().join("herald.journal"), &bytes).expect("journal test");
        let (_, pending) = reopen(dir.path(), 3);
        assert_eq!(pending, vec![(4, vec![4; 100])]);
    }

    #[test]
    fn a_record_missing_between_the_database_and_the_journal_is_an_error() {
        let dir = tempfile::tempdir().expect("journal test");
        let (mut journal, _) = reopen(dir.path(), 5);
        journal.append(&[b"seven?".to_vec()]).expect("journal test");
        drop(journal);
        // The journal starts at 6 but the database says 4 was the last applied: 5 is lost.
        assert!(Journal::open(dir.path(), 4).is_err());
    }

    /// Three records of 100 bytes each (116 with the header) from LSN 1, and the journal's path.
    fn three_records(dir: &Path) -> PathBuf {
        let (mut journal, _) = reopen(dir, 0);
        journal.append(&[vec![1; 100], vec![2; 100], vec![3; 100]]).expect("journal test");
        journal.path().to_path_buf()
    }

    #[test]
    fn intact_records_after_damage_refuse_the_journal() {
        let dir = tempfile::tempdir().expect("journal test");
        let path = three_records(dir.path());
        let mut bytes = std::fs::read(&path).expect("journal test");
        // One flipped byte in the first record's payload: records 2 and 3 are intact after it.
        bytes[50] ^= 0x01;
        std::fs::write(&path, &bytes).expect("journal test");
        let error = Journal::open(dir.path(), 0).err().expect("damage refused").to_string();
        assert!(error.contains("damaged at byte 0") && error.contains("2 intact record(s)"), "{error}");
        assert!(error.contains("LSNs 2 to 3") && error.contains("herald journal truncate"), "{error}");
        // Nothing was changed: the bytes are as they were.
        assert_eq!(std::fs::read(&path).expect("journal test"), bytes);
        // The database already holding all three makes the damage harmless: nothing newer is at stake.
        let (_, pending) = reopen(dir.path(), 3);
        assert!(pending.is_empty());
    }

    #[test]
    fn damage_to_a_length_or_a_missing_record_is_found_too() {
        let dir = tempfile::tempdir().expect("journal test");
        let path = three_records(dir.path());
        let good = std::fs::read(&path).expect("journal test");
        // The second record's length made huge: the reader cannot find the third by walking.
        let mut bytes = good.clone();
        bytes[116 + 3] = 0x7f;
        let found = |scan: Scan| scan.damage.map(|d| (d.offset, d.following, d.first_lsn, d.last_lsn));
        let long = scan(&path, &bytes, 0).expect("scan");
        assert_eq!(long.pending.len(), 1);
        assert_eq!(found(long), Some((116, 1, 3, 3)));
        // The second record cut out entirely: 3 follows 1 with a hole.
        let mut holed = good[..116].to_vec();
        holed.extend_from_slice(&good[232..]);
        assert_eq!(found(scan(&path, &holed, 0).expect("scan")), Some((116, 1, 3, 3)));
    }

    #[test]
    fn a_torn_last_record_is_cut_and_leftovers_are_not_torn() {
        let dir = tempfile::tempdir().expect("journal test");
        let path = three_records(dir.path());
        let good = std::fs::read(&path).expect("journal test");
        let scan_of = |bytes: &[u8], applied| scan(&path, bytes, applied).expect("scan");
        let torn = scan_of(&good[..good.len() - 7], 0);
        assert_eq!((torn.pending.len(), torn.end, torn.torn, torn.damage), (2, 232, 109, None));
        // A flipped byte in the last record: nothing intact follows, so it counts as torn.
        let mut flipped = good.clone();
        flipped[300] ^= 0x20;
        let last = scan_of(&flipped, 0);
        assert_eq!((last.pending.len(), last.torn, last.damage), (2, 116, None));
        // Records the database holds, after a newer one (a truncation a crash undid): neither torn nor damage.
        let other = tempfile::tempdir().expect("journal test");
        let (mut newer, _) = reopen(other.path(), 3);
        newer.append(&[vec![4; 100]]).expect("journal test");
        let mut leftovers = good.clone();
        leftovers[..116].copy_from_slice(&std::fs::read(newer.path()).expect("journal test"));
        let after_truncation = scan_of(&leftovers, 3);
        assert_eq!((after_truncation.pending.len(), after_truncation.torn, after_truncation.damage), (1, 0, None));
    }

    #[test]
    fn no_input_panics_the_reader() {
        let dir = tempfile::tempdir().expect("journal test");
        let path = dir.path().join("herald.journal");
        for bytes in [vec![0xff; 16], vec![0; 3], vec![1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]] {
            std::fs::write(&path, &bytes).expect("journal test");
            let (_, pending) = reopen(dir.path(), 0);
            assert!(pending.is_empty());
        }
    }
}
