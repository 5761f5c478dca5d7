//! The redb tables. Ids are stored as their 16 bytes; records as JSON (readable with any redb tool, and
//! the same serde types the rest of Herald uses), except the two written for every message: feed rows use the
//! compact binary layout of `feed_codec` (there is one per member for every message), a user's rows stored
//! together in blocks (`feed_block`), and messages the layout of `message_codec` (binary for the fields every
//! message has, JSON for the rare ones). The tables touched by every message or request are keyed by byte-ordered key types
//! (`keys`); `migrate` moves an older database's rows into them.

use crate::keys::{IdKey, IdPair, IdSeq, IdempotencyKey};
use redb::TableDefinition;

pub type Id = [u8; 16];

pub const USERS: TableDefinition<Id, &[u8]> = TableDefinition::new("users");
pub const USERNAMES: TableDefinition<&str, Id> = TableDefinition::new("usernames");
/// "v2": byte-ordered keys (`keys`), as for `MESSAGES`: read on every authenticated request
pub const DEVICES: TableDefinition<IdKey, &[u8]> = TableDefinition::new("devices_v2");
/// (user, device)
pub const USER_DEVICES: TableDefinition<(Id, Id), ()> = TableDefinition::new("user_devices");
/// (blocker, blocked) -> since (ms)
pub const BLOCKS: TableDefinition<(Id, Id), i64> = TableDefinition::new("blocks");
/// (blocked, blocker): who blocks a user
pub const BLOCKERS: TableDefinition<(Id, Id), ()> = TableDefinition::new("blockers");
pub const CONVERSATIONS: TableDefinition<Id, &[u8]> = TableDefinition::new("conversations");
/// (lower user id, higher user id) -> conversation
pub const DIRECT_PAIRS: TableDefinition<(Id, Id), Id> = TableDefinition::new("direct_pairs");
/// (conversation, user) -> Member
pub const MEMBERS: TableDefinition<(Id, Id), &[u8]> = TableDefinition::new("members");
/// (user, conversation)
pub const MEMBERSHIPS: TableDefinition<(Id, Id), ()> = TableDefinition::new("memberships");
/// (conversation, seq) -> Message in `message_codec`'s layout (or JSON, as earlier versions wrote it); "v2":
/// byte-ordered keys (the retired "messages" table is migrated)
pub const MESSAGES: TableDefinition<IdSeq, &[u8]> = TableDefinition::new("messages_v2");
/// (conversation, sender, client_msg_id) -> seq, read and written for every message; "v3": stored client_msg_id
/// first (`IdempotencyKey`), "v2" held the ids first
pub const CLIENT_IDS: TableDefinition<IdempotencyKey, u64> = TableDefinition::new("client_ids_v3");
/// (conversation, sender) -> highest seq sent; "v2" as for `MESSAGES`
pub const LAST_SENT: TableDefinition<IdPair, u64> = TableDefinition::new("last_sent_v2");
/// (user, position of the block's first row) -> a block of the user's rows at consecutive positions
/// (`feed_block`), each a FeedEvent in `feed_codec`'s binary layout; "v3": "feed_v2" held a row per entry
pub const FEED: TableDefinition<IdSeq, &[u8]> = TableDefinition::new("feed_v3");
/// (conversation, user, device) -> (delivered, read)
pub const CURSORS: TableDefinition<(Id, Id, Id), (u64, u64)> = TableDefinition::new("cursors");
/// (conversation, thread root, seq) -> sender: each thread's replies, written by the message commit.
pub const THREAD_REPLIES: TableDefinition<(Id, u64, u64), Id> = TableDefinition::new("thread_replies");
/// (conversation, seq) -> thread root: the conversation's thread replies in seq order, which its unread count
/// leaves out. Written with `THREAD_REPLIES`.
pub const THREAD_REPLY_SEQS: TableDefinition<IdSeq, u64> = TableDefinition::new("thread_reply_seqs");
/// (conversation, user, thread root) -> the user's read position in the thread
pub const THREAD_READS: TableDefinition<(Id, Id, u64), u64> = TableDefinition::new("thread_reads");
/// (conversation, seq) -> stamp: the messages written since the search index last took them (`search_indexer`).
/// Written by the message commit (so also by a journal replay: nothing acknowledged is missed by the index);
/// an entry is removed once indexed, unless a newer write has restamped it meanwhile.
pub const SEARCH_BACKLOG: TableDefinition<IdSeq, u64> = TableDefinition::new("search_backlog");

/// MediaId -> MediaRecord
pub const MEDIA: TableDefinition<Id, &[u8]> = TableDefinition::new("media");
/// (content hash, media id): the ready uploads pointing at a content (what a takedown rejects).
pub const MEDIA_BY_HASH: TableDefinition<(&str, Id), ()> = TableDefinition::new("media_by_hash");
/// Uploads that are not final (pending, scanning, processing): what `unfinished` lists.
pub const MEDIA_UNFINISHED: TableDefinition<Id, ()> = TableDefinition::new("media_unfinished");
/// (created_at, media id) of every upload no message attaches: what garbage collection walks, oldest
/// first, without scanning the uploads that are in use. Kept by `stores::media` and the message commit.
pub const MEDIA_UNATTACHED: TableDefinition<(i64, Id), ()> = TableDefinition::new("media_unattached");
/// (media id, conversation, seq): the messages attaching an upload, written by the message commit.
pub const MEDIA_REFS: TableDefinition<(Id, Id, u64), ()> = TableDefinition::new("media_refs");
/// user -> bytes counted against the quota
pub const MEDIA_USAGE: TableDefinition<Id, u64> = TableDefinition::new("media_usage");
/// content hash -> ContentRecord
pub const CONTENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contents");
/// (tier, last_access, content hash): what `idle_contents` walks, oldest access first.
pub const CONTENT_ACCESS: TableDefinition<(u8, i64, &str), ()> = TableDefinition::new("content_access");
/// content hash -> the takedown (JSON: note and time)
pub const TAKEDOWNS: TableDefinition<&str, &[u8]> = TableDefinition::new("takedowns");
/// perceptual hash -> BlockedHash
pub const BLOCKLIST: TableDefinition<u64, &[u8]> = TableDefinition::new("blocklist");

/// ReportId -> Report (ids are time-ordered, so the table is in filing order)
pub const REPORTS: TableDefinition<Id, &[u8]> = TableDefinition::new("reports");
/// (state: 0 open, 1 resolved; report id): what listing by state walks, newest first.
pub const REPORTS_BY_STATE: TableDefinition<(u8, Id), ()> = TableDefinition::new("reports_by_state");
/// `open_report_key` (reporter and target) -> the reporter's open report of that target.
pub const REPORTS_OPEN: TableDefinition<&str, Id> = TableDefinition::new("reports_open");

pub const MIN_ID: Id = [0; 16];
pub const MAX_ID: Id = [0xff; 16];

/// Bookkeeping of the database itself: `"journal_applied"` -> the LSN of the last journal record applied.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const JOURNAL_APPLIED: &str = "journal_applied";
