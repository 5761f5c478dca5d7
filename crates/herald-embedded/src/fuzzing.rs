//! Every decoder of bytes the embedded store reads back from disk, exposed for the fuzz targets (`fuzz/`):
//! whatever a damaged or hostile file holds, each must answer with an error, never panic or run away.

use std::path::Path;

/// A message row.
pub fn message_row(bytes: &[u8]) {
    let _ = crate::message_codec::decode(bytes);
}

/// A feed event row.
pub fn feed_row(bytes: &[u8]) {
    let _ = crate::feed_codec::decode(bytes);
}

/// A block of feed rows starting at `first`, and each row in it.
pub fn feed_block(first: u64, bytes: &[u8]) {
    if let Ok(rows) = crate::feed_block::decode(first, bytes) {
        for (_, row) in rows {
            let _ = crate::feed_codec::decode(row);
        }
    }
}

/// A feed snapshot file.
pub fn feed_snapshot(bytes: &[u8]) {
    let _ = crate::feed_snapshot::decode(bytes);
}

/// A journal file replayed after the database's record `applied`, and each record a replay would apply.
pub fn journal(bytes: &[u8], applied: u64) {
    if let Ok(scan) = crate::journal::scan(Path::new("fuzz.journal"), bytes, applied) {
        for record in &scan.pending {
            crate::stores::decode_commit_record(&record.1);
        }
    }
}
