//! The buffered feed rows at a checkpoint, kept in a file of their own so the checkpoint need not write them
//! into the feed table.
//!
//! A checkpoint (a durable redb commit) empties the journal, which until then was what made the buffered
//! rows (`feed_buffer`) durable. Writing them all into the table instead would cost one B-tree leaf copy per
//! user with a row waiting, all in the checkpoint's commit: a stall that grows with the number of active
//! users. So the checkpoint first writes them to `herald.feed.<n>` (a fresh `n` each time; written to a
//! temporary name, synced, renamed, directory synced), and its durable commit stores `n` in
//! `META["feed_snapshot"]`. After a crash, opening the database reads the snapshot its last durable commit
//! names, then replays the journal. Older snapshot files are removed once a newer commit names another (a
//! crash before that commit still finds the one its database names).
//!
//! Layout (integers big-endian): `rows u32 | (user (16), pos u64, len u8, row)* | crc32 u32` over all before.

use crate::db::backend;
use crate::feed_buffer::Row;
use crate::tables::Id;
use herald_core::store::StoreResult;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `META` key of the snapshot the database's last durable commit relies on (absent or 0: none).
pub(crate) const META_KEY: &str = "feed_snapshot";

const PREFIX: &str = "herald.feed.";

fn path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{n}"))
}

pub(crate) fn encode(rows: &[(Id, Row)]) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + rows.len() * 50);
    let count = u32::try_from(rows.len()).map_err(|_| backend("too many buffered feed rows for a snapshot"))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (user, (pos, row)) in rows {
        out.extend_from_slice(user);
        out.extend_from_slice(&pos.to_be_bytes());
        out.push(u8::try_from(row.len()).map_err(|_| backend("feed row too long for a snapshot"))?);
        out.extend_from_slice(row);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> StoreResult<Vec<(Id, Row)>> {
    let corrupt = || backend("corrupt feed snapshot");
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(corrupt());
    }
    let mut at = 0;
    let mut take = |n: usize| -> StoreResult<&[u8]> {
        let slice = body.get(at..at + n).ok_or_else(corrupt)?;
        at += n;
        Ok(slice)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?);
    let mut rows = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let user: Id = take(16)?.try_into().map_err(|_| corrupt())?;
        let pos = u64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let len = take(1)?[0] as usize;
        rows.push((user, (pos, take(len)?.into())));
    }
    if at != body.len() {
        return Err(corrupt());
    }
    Ok(rows)
}

/// Writes snapshot `n` so that it is whole on disk, or not there at all, when this returns.
pub(crate) fn write(dir: &Path, n: u64, bytes: &[u8]) -> io::Result<()> {
    let target = path(dir, n);
    let temporary = dir.join(format!("{PREFIX}{n}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temporary, &target)?;
    File::open(dir)?.sync_all()
}

/// Snapshot `n`'s bytes; an error if it is missing (the database relies on it).
fn read(dir: &Path, n: u64) -> StoreResult<Vec<u8>> {
    let p = path(dir, n);
    std::fs::read(&p).map_err(|e| backend(format!("the database needs {}: {e}", p.display())))
}

/// Snapshot `n`'s rows; an error naming the file if it is missing or damaged (the database relies on it, and
/// serving the feeds without its rows would leave silent gaps).
pub(crate) fn load(dir: &Path, n: u64) -> StoreResult<Vec<(Id, Row)>> {
    decode(&read(dir, n)?).map_err(|_| {
        backend(format!(
            "{} is damaged (its checksum or layout is wrong): the buffered feed rows the database relies on \
             cannot be read back, and the server will not serve feeds with holes in them; restore the data \
             directory from a backup",
            path(dir, n).display()
        ))
    })
}

/// Removes every snapshot file but `keep` (best effort: one left behind is removed next time).
pub(crate) fn remove_others(dir: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        if rest.parse::<u64>().is_ok_and(|n| n == keep) {
            continue;
        }
        if let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(error = %e, file = %entry.path().display(), "could not remove an old feed snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let rows: Vec<(Id, Row)> = vec![([1; 16], (7, vec![1, 2, 3].into())), ([2; 16], (u64::MAX, vec![].into()))];
        let bytes = encode(&rows).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), rows);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        assert!(decode(&flipped).is_err());
        assert_eq!(decode(&encode(&[]).expect("encode")).expect("decode"), vec![]);
    }

    #[test]
    fn files_are_written_read_and_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), 3, b"three").expect("write");
        write(dir.path(), 4, b"four").expect("write");
        assert_eq!(read(dir.path(), 3).expect("read"), b"three");
        remove_others(dir.path(), 4);
        assert!(read(dir.path(), 3).is_err());
        assert_eq!(read(dir.path(), 4).expect("read"), b"four");
        remove_others(dir.path(), 0);
        assert!(read(dir.path(), 4).is_err());
    }

    #[test]
    fn a_damaged_snapshot_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = encode(&[([1; 16], (7, vec![1, 2, 3].into()))]).expect("encode");
        write(dir.path(), 5, &bytes).expect("write");
        assert_eq!(load(dir.path(), 5).expect("load").len(), 1);
        bytes[20] ^= 0x10;
        write(dir.path(), 5, &bytes).expect("write");
        let error = load(dir.path(), 5).expect_err("damaged").to_string();
        assert!(error.contains("herald.feed.5") && error.contains("damaged"), "{error}");
    }
}
