//! A run of one user's feed rows stored as one value of the feed table, keyed by (user, position of its
//! first row).
//!
//! Why: rows go into the table a user's batch at a time (`feed_buffer`), and inserting them one by one cost a
//! B-tree descent and a shift of the leaf's entries per row; under callgrind that was a quarter of the
//! writer's instructions on direct sends. One value per batch is one insert.
//!
//! Layout: `(len u8, row)*`, each row in `feed_codec`'s layout; the n-th row's position is the key's
//! position + n, so a block holds consecutive positions only.

use crate::db::backend;
use crate::feed_buffer::Row;
use herald_core::store::StoreResult;

/// Most rows in one block: bounds the bytes a reader decodes to serve a row from the block's middle.
pub(crate) const MAX_ROWS: usize = 64;

/// The rows as blocks: runs of consecutive positions, at most [`MAX_ROWS`] each.
pub(crate) fn runs(rows: &[Row]) -> impl Iterator<Item = &[Row]> {
    rows.chunk_by(|a, b| a.0.checked_add(1) == Some(b.0)).flat_map(|run| run.chunks(MAX_ROWS))
}

/// Encodes one run of consecutive rows (see [`runs`]).
pub(crate) fn encode(run: &[Row]) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(run.iter().map(|(_, row)| 1 + row.len()).sum());
    for (_, row) in run {
        out.push(u8::try_from(row.len()).map_err(|_| backend("feed row too long for a block"))?);
        out.extend_from_slice(row);
    }
    Ok(out)
}

/// The rows of the block whose first row is at `first`, with their positions.
pub(crate) fn decode(first: u64, block: &[u8]) -> StoreResult<Vec<(u64, &[u8])>> {
    rows(first, block).collect()
}

/// The position of the block's last row (the block's first when it is empty, which no write makes). Walks the
/// lengths only: it is asked for on every feed read and every flush that prunes.
pub(crate) fn last_position(first: u64, block: &[u8]) -> StoreResult<u64> {
    let mut last = first;
    for row in rows(first, block) {
        last = row?.0;
    }
    Ok(last)
}

/// The rows one by one; a row cut short ends the block with an error.
fn rows(first: u64, block: &[u8]) -> impl Iterator<Item = StoreResult<(u64, &[u8])>> {
    let mut rest = Some(block);
    let mut pos = first;
    std::iter::from_fn(move || {
        let (&len, tail) = rest?.split_first()?;
        let Some((row, tail)) = tail.split_at_checked(usize::from(len)) else {
            rest = None;
            return Some(Err(backend(format!("corrupt feed block of {} bytes", block.len()))));
        };
        rest = Some(tail);
        let at = pos;
        // Positions are the server's own, far below the limit; a damaged key must still not overflow.
        pos = pos.saturating_add(1);
        Some(Ok((at, row)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(pos: u64, len: usize) -> Row {
        (pos, Arc::from(vec![pos as u8; len]))
    }

    #[test]
    fn a_block_decodes_to_its_rows_at_their_positions() {
        let run = vec![row(7, 25), row(8, 0), row(9, 49)];
        let block = encode(&run).expect("encodes");
        let rows = decode(7, &block).expect("decodes");
        assert_eq!(rows, run.iter().map(|(p, r)| (*p, &r[..])).collect::<Vec<_>>());
        assert_eq!(last_position(7, &block).expect("decodes"), 9);
        for cut in 1..block.len() {
            if decode(7, &block[..cut]).is_ok() {
                // A cut that falls between rows reads as a shorter block; only a cut inside a row is corrupt.
                let whole: Vec<usize> =
                    (1..=run.len()).map(|n| n + run[..n].iter().map(|r| r.1.len()).sum::<usize>()).collect();
                assert!(whole.contains(&cut), "a cut at {cut} decoded");
            }
        }
        assert!(encode(&[row(1, 256)]).is_err());
    }

    #[test]
    fn runs_split_at_gaps_and_at_the_size_limit() {
        let rows: Vec<Row> = (1..=70).chain(80..=81).map(|p| row(p, 1)).collect();
        let runs: Vec<(u64, usize)> = runs(&rows).map(|run| (run[0].0, run.len())).collect();
        assert_eq!(runs, vec![(1, MAX_ROWS), (1 + MAX_ROWS as u64, 70 - MAX_ROWS), (80, 2)]);
    }
}
