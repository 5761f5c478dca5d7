//! Messages, idempotency keys and per-user feeds: the reads here, the commit in `commit`.

use crate::PostgresDb;
use crate::commit::decode;
use crate::db::{Freshness, backend, big, pg, unsigned};
use async_trait::async_trait;
use herald_core::store::{ClientKey, FeedAppend, FeedEvent, FeedPage, MessageStore, MessageWrite, StoreResult};
use herald_proto::{ConversationId, Direction, Message, UserId};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

/// A feed entry from the columns `position, kind, conversation_id, seq, receipt_user, read`, the first at `at`.
fn feed_entry(row: &Row, at: usize) -> StoreResult<(u64, FeedEvent)> {
    let conversation = ConversationId(row.get(at + 2));
    let seq = unsigned(row.get(at + 3));
    let event = match row.get::<_, i16>(at + 1) {
        1 => FeedEvent::Message { conversation, seq },
        2 => FeedEvent::MessageUpdated { conversation, seq },
        3 => FeedEvent::Receipt {
            conversation,
            user: UserId(row.get::<_, Option<uuid::Uuid>>(at + 4).ok_or_else(|| backend("corrupt feed row: no user"))?),
            delivered: seq,
            read: unsigned(row.get::<_, Option<i64>>(at + 5).unwrap_or(0)),
        },
        other => return Err(backend(format!("corrupt feed row: kind {other}"))),
    };
    Ok((unsigned(row.get(at)), event))
}

#[async_trait]
impl MessageStore for PostgresDb {
    async fn commit_with_feed(&self, writes: &[MessageWrite], feed: &[FeedAppend]) -> StoreResult<Vec<u64>> {
        self.committer.commit(writes, feed).await
    }

    /// Fresh: resuming from a position must see everything up to it. One statement, so the head and the
    /// rows come from one snapshot; entries outside the retention window are never served, whether or not
    /// they were pruned yet.
    async fn feed(&self, user: UserId, after: u64, limit: usize) -> StoreResult<FeedPage> {
        let retention = big(self.feed_retention);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("range", "feed", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT h.last, f.position, f.kind, f.conversation_id, f.seq, f.receipt_user, f.read
                           FROM feed_heads h
                           LEFT JOIN LATERAL (
                                SELECT * FROM feed
                                 WHERE feed.user_id = h.user_id AND position > greatest($2, h.last - $3)
                                 ORDER BY position LIMIT $4) f ON true
                          WHERE h.user_id = $1
                          ORDER BY f.position",
                        &[
                            (&user.0, Type::UUID),
                            (&big(after), Type::INT8),
                            (&retention, Type::INT8),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                let last = rows.first().map_or(0, |r| unsigned(r.get(0)));
                let oldest = last.saturating_sub(self.feed_retention) + 1;
                let mut entries = Vec::with_capacity(rows.len());
                for row in &rows {
                    if row.get::<_, Option<i64>>(1).is_some() {
                        entries.push(feed_entry(row, 1)?);
                    }
                }
                Ok(FeedPage { entries, oldest, last })
            })
            .await
    }

    /// Fresh: the sequencer continues from it.
    async fn last_seq(&self, conversation: ConversationId) -> StoreResult<u64> {
        self.pools
            .read("select_last", "messages", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        "SELECT last_seq FROM conversation_heads WHERE conversation_id = $1",
                        &[(&conversation.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(row.map_or(0, |r| unsigned(r.get(0))))
            })
            .await
    }

    /// Fresh: feed entries point at messages by seq, so a device resuming must find every message its feed
    /// names.
    async fn message(&self, conversation: ConversationId, seq: u64) -> StoreResult<Option<Message>> {
        self.pools
            .read("select", "messages", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        "SELECT payload FROM messages WHERE conversation_id = $1 AND seq = $2",
                        &[(&conversation.0, Type::UUID), (&big(seq), Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                row.map(|r| decode(r.get(0))).transpose()
            })
            .await
    }

    /// Fresh: a retried send must find its first attempt. One statement for all the keys.
    async fn by_client_ids(&self, keys: &[ClientKey<'_>]) -> StoreResult<Vec<Option<Message>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let conversations: Vec<uuid::Uuid> = keys.iter().map(|k| k.0.0).collect();
        let senders: Vec<uuid::Uuid> = keys.iter().map(|k| k.1.0).collect();
        let client_ids: Vec<&str> = keys.iter().map(|k| k.2).collect();
        let (conversations, senders, client_ids) = (&conversations, &senders, &client_ids);
        let rows = self
            .pools
            .read("select", "client_ids", Freshness::Fresh, |client| async move {
                client
                    .query_typed(
                        "SELECT k.i, m.payload
                           FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS k(c, s, id, i)
                           JOIN message_ids x ON x.conversation_id = k.c AND x.sender = k.s AND x.client_msg_id = k.id
                           JOIN messages m ON m.conversation_id = x.conversation_id AND m.seq = x.seq",
                        &[
                            (conversations, Type::UUID_ARRAY),
                            (senders, Type::UUID_ARRAY),
                            (client_ids, Type::TEXT_ARRAY),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        let mut found = vec![None; keys.len()];
        for row in rows {
            let i = usize::try_from(row.get::<_, i64>(0) - 1).map_err(backend)?;
            if let Some(slot) = found.get_mut(i) {
                *slot = Some(decode(row.get(1))?);
            }
        }
        Ok(found)
    }

    /// Fresh: unread counts use it right after a send.
    async fn last_sent_by(&self, conversation: ConversationId, sender: UserId) -> StoreResult<u64> {
        self.pools
            .read("select", "last_sent", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        "SELECT seq FROM last_sent WHERE conversation_id = $1 AND sender = $2",
                        &[(&conversation.0, Type::UUID), (&sender.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(row.map_or(0, |r| unsigned(r.get(0))))
            })
            .await
    }

    /// May lag, as history does.
    async fn thread(
        &self,
        conversation: ConversationId,
        root: u64,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let sql = match direction {
            Direction::Forward => {
                "SELECT m.payload FROM thread_replies t
                   JOIN messages m ON m.conversation_id = t.conversation_id AND m.seq = t.seq
                  WHERE t.conversation_id = $1 AND t.thread_root = $2 AND t.seq >= $3
                  ORDER BY t.seq LIMIT $4"
            }
            Direction::Backward => {
                "SELECT m.payload FROM thread_replies t
                   JOIN messages m ON m.conversation_id = t.conversation_id AND m.seq = t.seq
                  WHERE t.conversation_id = $1 AND t.thread_root = $2 AND t.seq <= $3
                  ORDER BY t.seq DESC LIMIT $4"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("range", "thread_replies", Freshness::MayLag, |client| async move {
                let rows = client
                    .query_typed(
                        sql,
                        &[
                            (&conversation.0, Type::UUID),
                            (&big(root), Type::INT8),
                            (&big(from), Type::INT8),
                            (&limit, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(|r| decode(r.get(0))).collect()
            })
            .await
    }

    /// Fresh, as the conversation's unread count.
    async fn thread_unread(
        &self,
        conversation: ConversationId,
        root: u64,
        after: u64,
        reader: UserId,
    ) -> StoreResult<u64> {
        self.pools
            .read("count", "thread_replies", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_one(
                        "SELECT count(*) FROM thread_replies
                          WHERE conversation_id = $1 AND thread_root = $2 AND seq > $3 AND sender <> $4",
                        &[
                            (&conversation.0, Type::UUID),
                            (&big(root), Type::INT8),
                            (&big(after), Type::INT8),
                            (&reader.0, Type::UUID),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                Ok(unsigned(row.get(0)))
            })
            .await
    }

    /// Fresh: unread counts use it right after a send.
    async fn thread_replies_between(&self, conversation: ConversationId, after: u64, upto: u64) -> StoreResult<u64> {
        if upto <= after {
            return Ok(0);
        }
        self.pools
            .read("count", "thread_replies", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_one(
                        "SELECT count(*) FROM thread_replies WHERE conversation_id = $1 AND seq > $2 AND seq <= $3",
                        &[(&conversation.0, Type::UUID), (&big(after), Type::INT8), (&big(upto), Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(unsigned(row.get(0)))
            })
            .await
    }

    /// May lag: a history page a replica has not caught up with yet ends early, and the next page (or the
    /// live feed) brings the rest.
    async fn history(
        &self,
        conversation: ConversationId,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>> {
        let sql = match direction {
            Direction::Forward => {
                "SELECT payload FROM messages WHERE conversation_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3"
            }
            Direction::Backward => {
                "SELECT payload FROM messages WHERE conversation_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT $3"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("range", "messages", Freshness::MayLag, |client| async move {
                let rows = client
                    .query_typed(sql, &[(&conversation.0, Type::UUID), (&big(from), Type::INT8), (&limit, Type::INT8)])
                    .await
                    .map_err(pg)?;
                rows.iter().map(|r| decode(r.get(0))).collect()
            })
            .await
    }
}
