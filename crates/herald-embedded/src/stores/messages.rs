use super::{commit_record, media};
use crate::db::{EmbeddedDb, backend};
use crate::feed_block;
use crate::feed_buffer::{self, FeedBuffer};
use crate::feed_codec;
use crate::keys::IdSeq;
use crate::message_codec;
use crate::search_indexer;
use crate::tables::{CLIENT_IDS, FEED, Id, LAST_SENT, MESSAGES, SEARCH_BACKLOG, THREAD_REPLIES, THREAD_REPLY_SEQS};
use async_trait::async_trait;
use herald_core::store::{ClientKey, FeedAppend, FeedPage, MessageStore, MessageWrite, StoreResult};
use herald_proto::{ConversationId, Direction, Message, UserId};
use redb::{ReadableTable, WriteTransaction};

/// The positions of a feed block's first and last rows, from its table entry.
fn block_span((key, block): (redb::AccessGuard<'_, IdSeq>, redb::AccessGuard<'_, &[u8]>)) -> StoreResult<(u64, u64)> {
    let first = key.value().1;
    Ok((first, feed_block::last_position(first, block.value())?))
}

/// Whether a stored message may have attachments: the field is left out when empty (in a JSON row, and in the
/// JSON of a `message_codec` row's rare fields), so its absence is proof enough to skip decoding. (A body that
/// contains the same bytes only costs a decode.)
fn may_attach(row: &[u8]) -> bool {
    const FIELD: &[u8] = b"\"attachments\":";
    row.windows(FIELD.len()).any(|w| w == FIELD)
}

#[async_trait]
impl MessageStore for EmbeddedDb {
    async fn commit_with_feed(&self, writes: &[MessageWrite], feed: &[FeedAppend]) -> StoreResult<Vec<u64>> {
        let encoded = writes
            .iter()
            .map(|w| {
                Ok((matches!(w, MessageWrite::Insert(_)), w.message().clone(), message_codec::encode(w.message())?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let feed: Vec<(Id, Vec<u8>)> = feed.iter().map(|f| (f.user.to_bytes(), feed_codec::encode(&f.event))).collect();
        let record = commit_record::encode(&encoded, &feed)?;
        let buffer = self.feed_buffer.clone();
        self.write_journaled("commit_with_feed", "messages", record, move |txn| {
            apply_commit(txn, &encoded, &feed, &buffer)
        })
        .await
    }

    async fn feed(&self, user: UserId, after: u64, limit: usize) -> StoreResult<FeedPage> {
        let retention = self.feed_retention;
        let u = user.to_bytes();
        // Copied before the snapshot is opened (see `feed_buffer`): a row flushed meanwhile is then seen twice,
        // never missed.
        let buffered = self.feed_buffer.rows_of(&u);
        self.read("range", "feed", |txn| {
            let table = txn.open_table(FEED).map_err(backend)?;
            // The first and last positions in the table: the first block's first row, the last block's last.
            let mut all = table.range((u, 0)..=(u, u64::MAX)).map_err(backend)?;
            let first_block = all.next().transpose().map_err(backend)?.map(block_span).transpose()?;
            let last_block = all.next_back().transpose().map_err(backend)?.map(block_span).transpose()?.or(first_block);
            let first = match (first_block.map(|(first, _)| first), buffered.first()) {
                (Some(t), Some((b, _))) => Some(t.min(*b)),
                (t, b) => t.or(b.map(|(p, _)| *p)),
            };
            let last = last_block.map_or(0, |(_, last)| last).max(buffered.last().map_or(0, |(p, _)| *p));
            // Rows older than the retention window may still be on disk (after the window was lowered, or in a
            // block that reaches into it): they do not count, so a device that far behind gets a resync, never
            // a page with holes.
            let floor = last.saturating_sub(retention) + 1;
            let oldest = first.map_or(last + 1, |f| f.max(floor));
            let start = after.saturating_add(1).max(oldest);
            // From the block holding `start` (the last one starting at or before it) onwards.
            let begin = match table.range((u, 0)..=(u, start)).map_err(backend)?.next_back() {
                Some(entry) => entry.map_err(backend)?.0.value().1,
                None => start,
            };
            let mut from_table: Vec<feed_buffer::Row> = Vec::new();
            'blocks: for entry in table.range((u, begin)..=(u, u64::MAX)).map_err(backend)? {
                let (key, block) = entry.map_err(backend)?;
                for (pos, row) in feed_block::decode(key.value().1, block.value())? {
                    if from_table.len() >= limit {
                        break 'blocks;
                    }
                    if pos >= start && from_table.last().is_none_or(|(p, _)| pos > *p) {
                        from_table.push((pos, row.into()));
                    }
                }
            }
            let entries = feed_buffer::merge(from_table, buffered, start, limit)
                .into_iter()
                .map(|(pos, bytes)| Ok((pos, feed_codec::decode(&bytes)?)))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(FeedPage { entries, oldest, last })
        })
    }

    async fn last_seq(&self, conversation: ConversationId) -> StoreResult<u64> {
        self.read("select_last", "messages", |txn| {
            let table = txn.open_table(MESSAGES).map_err(backend)?;
            let c = conversation.to_bytes();
            let last = table.range((c, 0)..=(c, u64::MAX)).map_err(backend)?.next_back();
            Ok(match last {
                Some(entry) => entry.map_err(backend)?.0.value().1,
                None => 0,
            })
        })
    }

    async fn message(&self, conversation: ConversationId, seq: u64) -> StoreResult<Option<Message>> {
        self.read("select", "messages", |txn| {
            let table = txn.open_table(MESSAGES).map_err(backend)?;
            table
                .get((conversation.to_bytes(), seq))
                .map_err(backend)?
                .map(|v| message_codec::decode(v.value()))
                .transpose()
        })
    }

    /// One read transaction for all of them: a transaction and two table opens per key were ~10 % of the
    /// server on WebSocket sends.
    async fn by_client_ids(&self, keys: &[ClientKey<'_>]) -> StoreResult<Vec<Option<Message>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read("select", "client_ids", |txn| {
            let ids = txn.open_table(CLIENT_IDS).map_err(backend)?;
            let mut messages = None;
            let mut found = Vec::with_capacity(keys.len());
            for &(conversation, sender, client_msg_id) in keys {
                let c = conversation.to_bytes();
                let Some(seq) = ids.get((c, sender.to_bytes(), client_msg_id)).map_err(backend)? else {
                    found.push(None);
                    continue;
                };
                let messages = match &mut messages {
                    Some(table) => table,
                    None => messages.insert(txn.open_table(MESSAGES).map_err(backend)?),
                };
                found.push(
                    messages
                        .get((c, seq.value()))
                        .map_err(backend)?
                        .map(|v| message_codec::decode(v.value()))
                        .transpose()?,
                );
            }
            Ok(found)
        })
    }

    async fn last_sent_by(&self, conversation: ConversationId, sender: UserId) -> StoreResult<u64> {
        self.read("select", "last_sent", |txn| {
            let table = txn.open_table(LAST_SENT).map_err(backend)?;
            Ok(table.get((conversation.to_bytes(), sender.to_bytes())).map_err(backend)?.map_or(0, |v| v.value()))
        })
    }

    async fn thread(
        &self,
        conversation: ConversationId,
        root: u64,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.read("range", "thread_replies", |txn| {
            let replies = txn.open_table(THREAD_REPLIES).map_err(backend)?;
            let messages = txn.open_table(MESSAGES).map_err(backend)?;
            let c = conversation.to_bytes();
            let range = match direction {
                Direction::Forward => replies.range((c, root, from)..=(c, root, u64::MAX)),
                Direction::Backward => replies.range((c, root, 0)..=(c, root, from)),
            }
            .map_err(backend)?;
            let keys: Box<dyn Iterator<Item = _>> = match direction {
                Direction::Forward => Box::new(range),
                Direction::Backward => Box::new(range.rev()),
            };
            let mut out = Vec::with_capacity(limit.min(256));
            for entry in keys.take(limit) {
                let seq = entry.map_err(backend)?.0.value().2;
                let row = messages
                    .get((c, seq))
                    .map_err(backend)?
                    .ok_or_else(|| backend(format!("thread reply {conversation}/{seq} is not stored")))?;
                out.push(message_codec::decode(row.value())?);
            }
            Ok(out)
        })
    }

    async fn thread_unread(
        &self,
        conversation: ConversationId,
        root: u64,
        after: u64,
        reader: UserId,
    ) -> StoreResult<u64> {
        self.read("range", "thread_replies", |txn| {
            let replies = txn.open_table(THREAD_REPLIES).map_err(backend)?;
            let (c, me) = (conversation.to_bytes(), reader.to_bytes());
            let mut unread = 0;
            for entry in replies.range((c, root, after.saturating_add(1))..=(c, root, u64::MAX)).map_err(backend)? {
                if entry.map_err(backend)?.1.value() != me {
                    unread += 1;
                }
            }
            Ok(unread)
        })
    }

    async fn thread_replies_between(&self, conversation: ConversationId, after: u64, upto: u64) -> StoreResult<u64> {
        if upto <= after {
            return Ok(0);
        }
        self.read("range", "thread_reply_seqs", |txn| {
            let seqs = txn.open_table(THREAD_REPLY_SEQS).map_err(backend)?;
            let c = conversation.to_bytes();
            let mut count = 0;
            for entry in seqs.range((c, after + 1)..=(c, upto)).map_err(backend)? {
                entry.map_err(backend)?;
                count += 1;
            }
            Ok(count)
        })
    }

    async fn history(
        &self,
        conversation: ConversationId,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        self.read("range", "messages", |txn| {
            let table = txn.open_table(MESSAGES).map_err(backend)?;
            let c = conversation.to_bytes();
            let mut out = Vec::with_capacity(limit.min(256));
            match direction {
                Direction::Forward => {
                    for entry in table.range((c, from)..=(c, u64::MAX)).map_err(backend)?.take(limit) {
                        out.push(message_codec::decode(entry.map_err(backend)?.1.value())?);
                    }
                }
                Direction::Backward => {
                    for entry in table.range((c, 0)..=(c, from)).map_err(backend)?.rev().take(limit) {
                        out.push(message_codec::decode(entry.map_err(backend)?.1.value())?);
                    }
                }
            }
            Ok(out)
        })
    }
}

/// Writes the messages (with their idempotency keys, each sender's last seq and the media they attach)
/// and stages the feed entries in `buffer` (see `feed_buffer`); returns each feed entry's position. What a
/// message commit does, live or replayed from the journal.
fn apply_commit(
    txn: &WriteTransaction,
    encoded: &[(bool, Message, Vec<u8>)],
    feed: &[(Id, Vec<u8>)],
    buffer: &FeedBuffer,
) -> StoreResult<Vec<u64>> {
    let mut messages = txn.open_table(MESSAGES).map_err(backend)?;
    let mut client_ids = txn.open_table(CLIENT_IDS).map_err(backend)?;
    let mut last_sent = txn.open_table(LAST_SENT).map_err(backend)?;
    let mut search_backlog = txn.open_table(SEARCH_BACKLOG).map_err(backend)?;
    let stamp = search_indexer::next_stamp();
    // Opened at the first thread reply: most commits have none.
    let (mut thread_replies, mut thread_reply_seqs) = (None, None);
    let (mut added_refs, mut dropped_refs) = (Vec::new(), Vec::new());
    let mut newest_sent = std::collections::HashMap::new();
    // The seq each conversation inserted last in this commit, so a run of inserts checks its predecessor once.
    let mut inserted_last: std::collections::HashMap<Id, u64> = std::collections::HashMap::new();
    for (insert, message, bytes) in encoded {
        let key = (message.conversation_id.to_bytes(), message.seq);
        // Seqs are dense: an insert must follow a stored seq (a writer that is behind, or ahead, is refused).
        if *insert && inserted_last.get(&key.0) != Some(&message.seq.wrapping_sub(1)) {
            let follows = message.seq == 1
                || (message.seq > 1 && messages.get((key.0, message.seq - 1)).map_err(backend)?.is_some());
            if !follows {
                return Err(backend(format!(
                    "message {}/{} would skip a seq: {} is not stored",
                    message.conversation_id,
                    message.seq,
                    message.seq.saturating_sub(1)
                )));
            }
        }
        if *insert {
            inserted_last.insert(key.0, message.seq);
        }
        let previous = messages.insert(key, bytes.as_slice()).map_err(backend)?;
        search_backlog.insert(key, stamp).map_err(backend)?;
        // The sequencer is the only writer of a conversation; a seq used twice, or an update of a missing
        // message, means that guarantee broke, and the whole commit is refused.
        if previous.is_some() == *insert {
            return Err(backend(format!(
                "message {}/{} {}",
                message.conversation_id,
                message.seq,
                if *insert { "already exists" } else { "does not exist" }
            )));
        }
        // Only a previous version that can have attachments is decoded (most messages have none).
        let before = match previous {
            Some(old) if may_attach(old.value()) => message_codec::decode(old.value())?.attachments,
            _ => Vec::new(),
        };
        let after = &message.attachments;
        for gone in before.iter().filter(|b| !after.iter().any(|a| a.media_id == b.media_id)) {
            dropped_refs.push((gone.media_id.to_bytes(), key.0, key.1));
        }
        for new in after.iter().filter(|a| !before.iter().any(|b| b.media_id == a.media_id)) {
            added_refs.push((new.media_id.to_bytes(), key.0, key.1));
        }
        if *insert {
            let id_key = (key.0, message.sender.to_bytes(), message.client_msg_id.as_str());
            client_ids.insert(id_key, message.seq).map_err(backend)?;
            match message.thread_root {
                Some(root) => {
                    let replies = match &mut thread_replies {
                        Some(table) => table,
                        None => thread_replies.insert(txn.open_table(THREAD_REPLIES).map_err(backend)?),
                    };
                    replies.insert((key.0, root, message.seq), message.sender.to_bytes()).map_err(backend)?;
                    let seqs = match &mut thread_reply_seqs {
                        Some(table) => table,
                        None => thread_reply_seqs.insert(txn.open_table(THREAD_REPLY_SEQS).map_err(backend)?),
                    };
                    seqs.insert(key, root).map_err(backend)?;
                }
                // A thread reply says nothing of what its sender read outside the thread (see `last_sent_by`).
                None => {
                    let newest = newest_sent.entry((key.0, message.sender.to_bytes())).or_insert(0);
                    *newest = (*newest).max(message.seq);
                }
            }
        }
    }
    // Once per sender and conversation, not once per message: a group commit holds many messages of few
    // senders.
    for (sent_key, seq) in newest_sent {
        let previous = last_sent.get(sent_key).map_err(backend)?.map_or(0, |v| v.value());
        if seq > previous {
            last_sent.insert(sent_key, seq).map_err(backend)?;
        }
    }
    media::apply_refs(txn, &added_refs, &dropped_refs)?;
    let table = txn.open_table(FEED).map_err(backend)?;
    let mut buffer = buffer.lock();
    feed.iter().map(|(user, bytes)| buffer.append(&table, *user, bytes)).collect()
}

/// Applies a message commit's journal record again (after a crash took it out of redb), its feed entries
/// staged in `buffer` for the caller to write.
pub(super) fn replay(txn: &WriteTransaction, record: &[u8], buffer: &FeedBuffer) -> StoreResult<()> {
    let (writes, feed) = commit_record::decode(record)?;
    let encoded = writes
        .into_iter()
        .map(|(insert, bytes)| Ok((insert, message_codec::decode(&bytes)?, bytes)))
        .collect::<StoreResult<Vec<_>>>()?;
    apply_commit(txn, &encoded, &feed, buffer).map(|_| ())
}
