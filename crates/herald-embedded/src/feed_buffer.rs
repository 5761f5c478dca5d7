//! Feed rows written behind: committed (the journal holds them) but gathered in memory before they go into
//! the feed table, a user's rows together.
//!
//! Why: a group message writes one feed row per member, and with each member's newest rows in a leaf of its
//! own, every row of a small group commit copied a whole B-tree leaf (redb copies a committed page on its
//! first change in a transaction). At 50k deliveries per second that made the writer thread the server's
//! bottleneck. Here a user's rows wait until there are [`FLUSH_ROWS`] of them, or the oldest is
//! [`FLUSH_AGE`] old, and then go in with one leaf copy.
//!
//! Correctness rests on three rules:
//! - Rows become visible (to `EmbeddedDb::feed`) when the transaction that produced them has committed and
//!   before its callers hear back, so nothing learns of a message whose feed row it cannot read.
//! - A user's rows leave the buffer only after the transaction that wrote them into the table has committed;
//!   a reader that copies the buffer first and opens its snapshot second sees every row at least once
//!   (`merge` drops the doubles).
//! - A durable redb commit (after which the journal is emptied) names a snapshot of every row still buffered
//!   after it (`feed_snapshot`), written before it; closing the database writes the whole buffer into the table
//!   instead. A crash loses only the buffer, which that snapshot and the journal's replay rebuild.

use crate::db::backend;
use crate::feed_block;
use crate::keys::IdSeq;
use crate::tables::Id;
use herald_core::footprint::{self, Footprint};
use herald_core::store::StoreResult;
use redb::{ReadableTable, Table};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A user's rows go into the table once this many wait: one leaf copy for all of them.
const FLUSH_ROWS: usize = 32;
/// ... or once the oldest has waited this long, so a quiet user's rows do not wait for the checkpoint.
const FLUSH_AGE: Duration = Duration::from_secs(1);
/// Past this many buffered rows in all, the next commit writes them all: the buffer's memory is bounded.
const MAX_BUFFERED_ROWS: usize = 256 * 1024;
/// At most about this much work goes into the table per transaction, counted in rows plus [`USER_COST`] per
/// user (more when a backlog builds up, see [`FeedBuffer::to_flush`]). All members of a room receive the
/// same messages, so they reach [`FLUSH_ROWS`] together: without a budget, every room that got its 32nd
/// message flushed in the same commit (15,000 rows, ~20 ms here, while every other write waited for the
/// writer: that was the p99 of a delivery at 50k/s).
const FLUSH_BUDGET: usize = 2048;
/// What flushing a user costs beyond its rows, in rows: the copy of its leaf (600 users of 2 rows took as
/// long as 2,000 rows of 64 users).
const USER_COST: usize = 16;
/// The budget grows with the backlog (a 16th of it per commit), so the buffer cannot outgrow what commits
/// write out, whatever the mix of commits.
const BACKLOG_SHARE: usize = 16;
/// Users whose newest feed position is remembered; past this many the memory starts over.
const MAX_HEADS: usize = 1_000_000;

/// Feed entries beyond the retention window are removed when a user's position crosses a multiple of this:
/// one range removal touches a user's oldest leaf once, instead of once per write. Reads never serve entries
/// outside the window, so the ones waiting for removal are invisible.
const PRUNE_EVERY: u64 = 64;

/// One feed row: its position and its `feed_codec` bytes, shared: a row is copied out to readers, to the
/// transaction that flushes it and to snapshots while it stays buffered, and those copies cost no allocation.
pub(crate) type Row = (u64, Arc<[u8]>);

/// A user's rows to write into the table, oldest first.
pub(crate) type Flush = Vec<(Id, Vec<Row>)>;

/// Shared by the writer thread (the only one that changes it) and the readers.
#[derive(Default)]
pub(crate) struct FeedBuffer {
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// The newest position of each user appended to, so an append need not look it up in the B-tree.
    heads: HashMap<Id, u64>,
    /// Appended by the transaction under way; buffered when it commits, dropped when it does not.
    staged: Vec<(Id, Row)>,
    /// Committed rows not yet in the table, per user, oldest first.
    buffered: HashMap<Id, Vec<Row>>,
    buffered_rows: usize,
    /// The encoded bytes of the buffered rows.
    buffered_bytes: usize,
    /// Users in the order their buffers became non-empty, with when and the position of the row that did
    /// it: what [`FLUSH_AGE`] looks at. An entry whose row is no longer the user's oldest buffered one is
    /// stale (the user was flushed for having enough rows since) and is skipped.
    aging: VecDeque<(Id, Instant, u64)>,
    /// Users with [`FLUSH_ROWS`] rows or more, in the order they got there (taken from the front).
    ready: VecDeque<Id>,
}

impl FeedBuffer {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no row waits (committed or staged).
    pub(crate) fn is_empty(&self) -> bool {
        let state = self.lock();
        state.buffered_rows == 0 && state.staged.is_empty()
    }

    /// A user's buffered rows, oldest first, for a reader (who must copy them before opening its snapshot).
    pub(crate) fn rows_of(&self, user: &Id) -> Vec<Row> {
        self.lock().buffered.get(user).cloned().unwrap_or_default()
    }

    /// The rows the next transaction writes into the table: everything when asked or when the buffer is
    /// full, else the users with enough rows or an old enough one, first come first served, up to the
    /// budget (the rest stay first in line for the next transaction).
    pub(crate) fn to_flush(&self, everything: bool) -> Flush {
        let mut state = self.lock();
        let state = &mut *state;
        let everything = everything || state.buffered_rows >= MAX_BUFFERED_ROWS;
        let mut users: Vec<Id> = if everything {
            state.aging.clear();
            state.ready.clear();
            state.buffered.keys().copied().collect()
        } else {
            let budget = FLUSH_BUDGET.max(state.buffered_rows / BACKLOG_SHARE);
            let cost_of = |user: &Id| state.buffered.get(user).map_or(0, |rows| rows.len() + USER_COST);
            let (mut users, mut cost) = (Vec::new(), 0);
            let mut taken = 0;
            for user in &state.ready {
                if cost >= budget {
                    break;
                }
                cost += cost_of(user);
                users.push(*user);
                taken += 1;
            }
            state.ready.drain(..taken);
            while let Some((user, since, first)) = state.aging.front().copied() {
                let current = state.buffered.get(&user).and_then(|rows| rows.first()).is_some_and(|(p, _)| *p == first);
                if current && (cost >= budget || since.elapsed() < FLUSH_AGE) {
                    break;
                }
                state.aging.pop_front();
                if current {
                    cost += cost_of(&user);
                    users.push(user);
                }
            }
            users
        };
        users.sort_unstable();
        users.dedup();
        users
            .into_iter()
            .filter_map(|user| state.buffered.get(&user).filter(|r| !r.is_empty()).map(|rows| (user, rows.clone())))
            .collect()
    }

    /// The transaction committed: what it flushed leaves the buffer, what it staged joins it.
    pub(crate) fn committed(&self, flushed: &Flush) {
        let mut state = self.lock();
        let state = &mut *state;
        for (user, rows) in flushed {
            let Some(newest) = rows.last().map(|(p, _)| *p) else { continue };
            if let Some(buffered) = state.buffered.get_mut(user) {
                let before = buffered.len();
                let mut freed = 0;
                buffered.retain(|(p, row)| {
                    let keep = *p > newest;
                    if !keep {
                        freed += row.len();
                    }
                    keep
                });
                state.buffered_rows -= before - buffered.len();
                state.buffered_bytes -= freed;
                if buffered.is_empty() {
                    state.buffered.remove(user);
                }
            }
        }
        let now = Instant::now();
        for (user, row) in std::mem::take(&mut state.staged) {
            let row_len = row.1.len();
            let rows = state.buffered.entry(user).or_default();
            if rows.is_empty() {
                state.aging.push_back((user, now, row.0));
            }
            rows.push(row);
            if rows.len() == FLUSH_ROWS {
                state.ready.push_back(user);
            }
            state.buffered_rows += 1;
            state.buffered_bytes += row_len;
        }
        metrics::gauge!("embedded_feed_buffered_rows").set(state.buffered_rows as f64);
    }

    /// What the buffer holds: the users' newest positions, and the rows waiting for the table.
    pub(crate) fn footprints(&self) -> [Footprint; 2] {
        let state = self.lock();
        let rows: usize = state.buffered.values().map(Vec::capacity).sum();
        [
            Footprint::of_map("feed_heads", &state.heads, MAX_HEADS),
            Footprint {
                structure: "feed_buffered_rows",
                entries: state.buffered_rows,
                // Each row's bytes sit behind an `Arc` (two counters) in a user's vector.
                bytes: footprint::hash_map_bytes(&state.buffered)
                    + rows * size_of::<Row>()
                    + state.buffered_bytes
                    + state.buffered_rows * 16
                    + state.aging.capacity() * size_of::<(Id, Instant, u64)>()
                    + state.ready.capacity() * size_of::<Id>(),
                bound: MAX_BUFFERED_ROWS,
            },
        ]
    }

    /// The transaction did not commit: its staged rows never happened, and the remembered positions may
    /// count them, so they are forgotten too. What it was to flush stays buffered, for the next one.
    pub(crate) fn aborted(&self, flush: &Flush) {
        let mut state = self.lock();
        state.staged.clear();
        state.heads.clear();
        let users: Vec<Id> = flush.iter().map(|(user, _)| *user).filter(|u| state.buffered.contains_key(u)).collect();
        state.ready.extend(users);
    }
}

impl State {
    /// Every row not in the table once the transaction under way commits, which writes `flushing` into it:
    /// the buffered rows of the other users and the staged ones. (`flushing` holds all the buffered rows of
    /// its users: only the writer changes the buffer, and it has not since `to_flush`.) Leaving the flushed
    /// rows out matters beyond size: a snapshot must be empty exactly when nothing stays buffered, or a clean
    /// stop would find nothing to write and leave the file behind.
    pub(crate) fn snapshot(&self, flushing: &Flush) -> Vec<(Id, Row)> {
        let flushed: HashSet<&Id> = flushing.iter().map(|(user, _)| user).collect();
        let buffered = self
            .buffered
            .iter()
            .filter(|(user, _)| !flushed.contains(user))
            .flat_map(|(user, rows)| rows.iter().map(|row| (*user, row.clone())));
        buffered.chain(self.staged.iter().cloned()).collect()
    }

    /// Stages a row at a known position (from a snapshot, at recovery).
    pub(crate) fn stage_at(&mut self, user: Id, row: Row) {
        let head = self.heads.entry(user).or_insert(0);
        *head = (*head).max(row.0);
        self.staged.push((user, row));
    }

    /// Appends a row for `user` at its next position (staged until the transaction commits) and returns it.
    /// `table` is the feed table in the same transaction, read when the user's newest position is not known.
    pub(crate) fn append(&mut self, table: &Table<'_, IdSeq, &[u8]>, user: Id, row: &[u8]) -> StoreResult<u64> {
        if self.heads.len() > MAX_HEADS {
            self.heads.clear();
        }
        let last = match self.heads.get(&user) {
            Some(last) => *last,
            None => match self.staged.iter().rev().find(|(u, _)| *u == user) {
                Some((_, (p, _))) => *p,
                None => match self.buffered.get(&user).and_then(|rows| rows.last()) {
                    Some((p, _)) => *p,
                    None => newest_in_table(table, user)?,
                },
            },
        };
        let pos = last + 1;
        self.heads.insert(user, pos);
        self.staged.push((user, (pos, row.into())));
        Ok(pos)
    }

    /// Takes what the transaction staged, for a caller that writes it into the table itself (the replay).
    pub(crate) fn take_staged(&mut self) -> Flush {
        let mut flush: Flush = Vec::new();
        for (user, row) in std::mem::take(&mut self.staged) {
            match flush.iter_mut().find(|(u, _)| *u == user) {
                Some((_, rows)) => rows.push(row),
                None => flush.push((user, vec![row])),
            }
        }
        flush
    }
}

fn newest_in_table(table: &Table<'_, IdSeq, &[u8]>, user: Id) -> StoreResult<u64> {
    Ok(match table.range((user, 0)..=(user, u64::MAX)).map_err(backend)?.next_back() {
        Some(entry) => {
            let (key, block) = entry.map_err(backend)?;
            feed_block::last_position(key.value().1, block.value())?
        }
        None => 0,
    })
}

/// Writes rows into the feed table, a block per run of consecutive positions (`feed_block`), and removes the
/// blocks that fall wholly out of the retention window.
pub(crate) fn write(table: &mut Table<'_, IdSeq, &[u8]>, flush: &Flush, retention: u64) -> StoreResult<()> {
    for (user, rows) in flush {
        for run in feed_block::runs(rows) {
            table.insert((*user, run[0].0), feed_block::encode(run)?.as_slice()).map_err(backend)?;
        }
        let (Some((first, _)), Some((newest, _))) = (rows.first(), rows.last()) else { continue };
        // Only when this write crossed a multiple of PRUNE_EVERY, so the oldest leaf is touched that rarely.
        if *newest > retention && newest / PRUNE_EVERY > first.saturating_sub(1) / PRUNE_EVERY {
            let prune_to = newest - retention;
            // A block reaching into the window stays whole (reads skip its older rows); one that cannot be
            // decoded stays too, for the reader to report.
            table
                .retain_in((*user, 0)..=(*user, prune_to), |(_, first), block| {
                    feed_block::last_position(first, block).map_or(true, |last| last > prune_to)
                })
                .map_err(backend)?;
        }
    }
    Ok(())
}

/// Rows read from the table (a page from `start`, at most `limit`) completed by the buffered ones copied
/// before the table's snapshot was opened: both are runs of consecutive positions, the buffered ones never
/// older than the table's, and a row may be in both.
pub(crate) fn merge(mut from_table: Vec<Row>, buffered: Vec<Row>, start: u64, limit: usize) -> Vec<Row> {
    let mut next = from_table.last().map_or(start, |(p, _)| p + 1);
    for row in buffered {
        if from_table.len() >= limit {
            break;
        }
        if row.0 >= next {
            next = row.0 + 1;
            from_table.push(row);
        }
    }
    from_table.truncate(limit);
    from_table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(positions: std::ops::RangeInclusive<u64>) -> Vec<Row> {
        positions.map(|p| (p, Arc::from(vec![p as u8]))).collect()
    }

    fn positions(rows: &[Row]) -> Vec<u64> {
        rows.iter().map(|(p, _)| *p).collect()
    }

    /// Buffers `users` users' rows as committed transactions would, `per_user` rows each.
    fn fill(buffer: &FeedBuffer, users: u8, per_user: u64) {
        for pos in 1..=per_user {
            buffer.lock().staged.extend((0..users).map(|u| ([u; 16], (pos, Arc::from(vec![u])))));
            buffer.committed(&Vec::new());
        }
    }

    /// What a flush costs against the budget.
    fn cost(flush: &Flush) -> usize {
        flush.iter().map(|(_, rows)| rows.len() + USER_COST).sum()
    }

    #[test]
    fn a_commit_flushes_about_its_budget_and_the_rest_follows_in_order() {
        let buffer = FeedBuffer::default();
        fill(&buffer, 200, FLUSH_ROWS as u64); // 6,400 rows, all users ready at once
        let mut flushed_users = Vec::new();
        while buffer.lock().buffered_rows > 0 {
            let flush = buffer.to_flush(false);
            assert!(!flush.is_empty(), "progress");
            assert!(cost(&flush) < FLUSH_BUDGET + FLUSH_ROWS + USER_COST, "{} in one commit", cost(&flush));
            assert!(flush.iter().all(|(_, rows)| rows.len() == FLUSH_ROWS), "a user's rows go in together");
            flushed_users.extend(flush.iter().map(|(user, _)| user[0]));
            buffer.committed(&flush);
        }
        // Ready users in the order they became ready (here by id): each exactly once.
        assert_eq!(flushed_users, (0..200).collect::<Vec<u8>>());
        assert!(buffer.to_flush(false).is_empty());
    }

    #[test]
    fn the_budget_grows_with_the_backlog() {
        let buffer = FeedBuffer::default();
        fill(&buffer, 250, 4 * FLUSH_ROWS as u64); // 32,000 rows waiting: a 16th is 2,000 rows
        assert!(cost(&buffer.to_flush(false)) >= FLUSH_BUDGET);
        let big = FeedBuffer::default();
        fill(&big, 250, 16 * FLUSH_ROWS as u64); // 128,000 rows: a 16th is 8,000
        let flush = big.to_flush(false);
        assert!(cost(&flush) >= 128_000 / BACKLOG_SHARE, "{}", cost(&flush));
        assert!(cost(&flush) < 128_000 / BACKLOG_SHARE + 16 * FLUSH_ROWS + USER_COST, "{}", cost(&flush));
        // Closing writes everything.
        let rows: usize = big.to_flush(true).iter().map(|(_, rows)| rows.len()).sum();
        assert_eq!(rows, 128_000);
    }

    /// A user flushed for having enough rows leaves its place in the age queue behind; when that place comes
    /// up, the user's newer rows are not old enough yet and stay (flushing them would cost a leaf copy for
    /// a row or two).
    #[test]
    fn rows_go_in_by_age_only_once_they_are_old() {
        let buffer = FeedBuffer::default();
        fill(&buffer, 1, FLUSH_ROWS as u64);
        let flush = buffer.to_flush(false);
        assert_eq!(cost(&flush), FLUSH_ROWS + USER_COST, "ready by count");
        buffer.committed(&flush);
        std::thread::sleep(FLUSH_AGE + Duration::from_millis(50));
        buffer.lock().staged.push(([0; 16], (FLUSH_ROWS as u64 + 1, Arc::from(vec![0]))));
        buffer.committed(&Vec::new());
        assert!(buffer.to_flush(false).is_empty(), "the new row is not old yet");
        std::thread::sleep(FLUSH_AGE + Duration::from_millis(50));
        assert_eq!(cost(&buffer.to_flush(false)), 1 + USER_COST, "now it is");
    }

    #[test]
    fn merge_serves_each_position_once_and_in_order() {
        // Table 1..=5, buffer 4..=9 (the rows 4 and 5 were flushed while the reader looked).
        assert_eq!(positions(&merge(rows(3..=5), rows(4..=9), 3, 100)), (3..=9).collect::<Vec<_>>());
        // Everything still buffered.
        assert_eq!(positions(&merge(vec![], rows(1..=4), 2, 100)), vec![2, 3, 4]);
        // The limit holds across both.
        assert_eq!(positions(&merge(rows(1..=3), rows(4..=9), 1, 5)), vec![1, 2, 3, 4, 5]);
        assert_eq!(positions(&merge(rows(1..=3), rows(2..=9), 1, 2)), vec![1, 2]);
        // Nothing after `start`.
        assert!(merge(vec![], vec![], 10, 5).is_empty());
    }
}
