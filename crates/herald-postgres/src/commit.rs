//! Message commits: concurrent callers share one transaction (group commit), and every message is stored only
//! as its conversation's last seq + 1.
//!
//! One task takes whatever commits are waiting and applies them together, so a busy node pays one round trip
//! per statement and one fsync per batch, not per message. A batch that is refused (a seq already taken by
//! another writer, a duplicate idempotency key) is retried one commit at a time, so only the offending
//! caller gets the refusal (a failure of the engine itself fails the whole batch at once).
//!
//! The transaction of a batch:
//! 1. lock the heads of the conversations it inserts into (in id order) and check that each conversation's
//!    first new seq is its last + 1; a head that does not exist yet is inserted, so of two writers that both
//!    start a conversation one fails on the primary key. A writer that lost a race gets `Conflict`, and
//!    nothing of its batch is stored;
//! 2. read (locked) the current versions of the messages it updates, for their attachments;
//! 3. write messages, idempotency keys, last-sent seqs, attachment references and feed heads (pipelined);
//! 4. write the feed rows at the positions the heads gave, and prune feeds that crossed a 64-entry mark.

use crate::db::{Pools, backend, big, pg, unsigned};
use crate::partitions;
use crate::search;
use herald_core::store::{FeedAppend, FeedEvent, MessageWrite, StoreError, StoreResult};
use herald_proto::{MediaId, Message};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// A statement parameter with its type.
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// Most feed rows plus messages folded into one transaction: bounds the first caller's wait behind a backlog.
const MAX_ROWS_PER_BATCH: usize = 20_000;

/// A feed is pruned when its last position crosses a multiple of this (not on every commit).
const PRUNE_EVERY: u64 = 64;

struct Request {
    writes: Vec<MessageWrite>,
    feed: Vec<FeedAppend>,
    reply: oneshot::Sender<StoreResult<Vec<u64>>>,
}

impl Request {
    fn rows(&self) -> usize {
        self.writes.len() + self.feed.len()
    }
}

pub(crate) struct Committer {
    queue: Mutex<Option<mpsc::UnboundedSender<Request>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    pub(crate) fn start(pools: Arc<Pools>, feed_retention: u64) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pools, feed_retention, requests));
        Self { queue: Mutex::new(Some(queue)), task: Mutex::new(Some(task)) }
    }

    pub(crate) async fn commit(&self, writes: &[MessageWrite], feed: &[FeedAppend]) -> StoreResult<Vec<u64>> {
        let (reply, answer) = oneshot::channel();
        let request = Request { writes: writes.to_vec(), feed: feed.to_vec(), reply };
        let sent = match self.queue.lock() {
            Ok(queue) => queue.as_ref().is_some_and(|q| q.send(request).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(backend("the store is closed"));
        }
        answer.await.map_err(|_| backend("the store closed before the commit finished"))?
    }

    /// Stops taking commits and waits for those already queued.
    pub(crate) async fn close(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(pools: Arc<Pools>, feed_retention: u64, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut rows = first.rows();
        let mut batch = vec![first];
        while rows < MAX_ROWS_PER_BATCH {
            match requests.try_recv() {
                Ok(next) => {
                    rows += next.rows();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("database_commit_batch_size").record(batch.len() as f64);
        commit_batch(&pools, feed_retention, batch).await;
    }
}

/// Commits the requests together; if that is refused and there were several, each on its own.
async fn commit_batch(pools: &Pools, feed_retention: u64, batch: Vec<Request>) {
    let writes: Vec<&MessageWrite> = batch.iter().flat_map(|r| &r.writes).collect();
    let feed: Vec<&FeedAppend> = batch.iter().flat_map(|r| &r.feed).collect();
    match apply(pools, feed_retention, &writes, &feed).await {
        Ok(positions) => {
            let mut positions = positions.into_iter();
            for request in batch {
                let mine = positions.by_ref().take(request.feed.len()).collect();
                let _ = request.reply.send(Ok(mine));
            }
        }
        // Only a refusal (an answer about one commit's data) is worth retrying commit by commit; the engine
        // failing would fail each of them again, one timeout after another.
        Err(e) if batch.len() == 1 || !matches!(e, StoreError::Conflict(_)) => {
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
        Err(_) => {
            for request in batch {
                let writes: Vec<&MessageWrite> = request.writes.iter().collect();
                let feed: Vec<&FeedAppend> = request.feed.iter().collect();
                let _ = request.reply.send(apply(pools, feed_retention, &writes, &feed).await);
            }
        }
    }
}

async fn apply(
    pools: &Pools,
    feed_retention: u64,
    writes: &[&MessageWrite],
    feed: &[&FeedAppend],
) -> StoreResult<Vec<u64>> {
    let plan = Plan::of(writes)?;
    pools
        .write("commit_with_feed", "messages", async |client| {
            let txn = client.transaction().await.map_err(pg)?;
            claim_seqs(&txn, &plan.heads).await?;
            let previous = locked_versions(&txn, &plan.updated_in_store).await?;
            plan.check_bases(&previous)?;
            let refs = plan.attachment_changes(&previous)?;
            let (heads, feed_rows) = FeedRows::of(feed);
            let (_, _, _, _, new_heads) = tokio::try_join!(
                plan.insert_messages(&txn),
                plan.update_messages(&txn),
                plan.insert_keys_and_last_sent(&txn),
                refs.write(&txn),
                advance_feed_heads(&txn, &heads),
            )?;
            let positions = feed_rows.insert(&txn, &heads, &new_heads).await?;
            prune_feeds(&txn, &heads, &new_heads, feed_retention).await?;
            txn.commit().await.map_err(pg)?;
            Ok(positions)
        })
        .await
}

fn changed_meanwhile((conversation, seq): (Uuid, u64)) -> StoreError {
    StoreError::Conflict(format!(
        "message {conversation}/{seq} changed since the update was made from it: another writer updated it"
    ))
}

/// A conversation's inserts in this batch: its last seq must be `expected`, and becomes `last`.
struct Head {
    conversation: Uuid,
    expected: u64,
    last: u64,
}

/// What a batch writes, worked out before the transaction.
struct Plan<'a> {
    /// By conversation id (the lock order).
    heads: Vec<Head>,
    /// Each stored row's final version in this batch, keyed by (conversation, seq), and whether it is new.
    rows: BTreeMap<(Uuid, u64), (bool, &'a Message)>,
    /// Updates of messages stored before this batch.
    updated_in_store: Vec<(Uuid, u64)>,
    /// The version each of those updates was made from: what must still be stored.
    bases: HashMap<(Uuid, u64), &'a Message>,
}

impl<'a> Plan<'a> {
    fn of(writes: &[&'a MessageWrite]) -> StoreResult<Self> {
        let mut heads: BTreeMap<Uuid, Head> = BTreeMap::new();
        let mut rows: BTreeMap<(Uuid, u64), (bool, &'a Message)> = BTreeMap::new();
        let mut updated_in_store = Vec::new();
        let mut bases = HashMap::new();
        for write in writes {
            let m = write.message();
            let key = (m.conversation_id.0, m.seq);
            match write {
                MessageWrite::Insert(_) => {
                    // Inserts of a conversation come as last + 1, last + 2 …: anything else (a seq twice, a
                    // gap) means two writers disagree, and the batch is refused before anything is written.
                    let head = heads.entry(key.0).or_insert(Head {
                        conversation: key.0,
                        expected: m.seq.saturating_sub(1),
                        last: m.seq.saturating_sub(1),
                    });
                    if m.seq == 0 || m.seq != head.last + 1 {
                        return Err(StoreError::Conflict(format!(
                            "message {}/{}: not the next seq of its conversation in this commit (expected {})",
                            m.conversation_id,
                            m.seq,
                            head.last + 1
                        )));
                    }
                    head.last = m.seq;
                    rows.insert(key, (true, m));
                }
                MessageWrite::Update { base, .. } => match rows.get_mut(&key) {
                    // A second update of a row in this batch (commits of several callers merged) must be made
                    // from the first one's result.
                    Some(row) if row.1 != base.as_ref() => return Err(changed_meanwhile(key)),
                    Some(row) => row.1 = m,
                    None => {
                        rows.insert(key, (false, m));
                        updated_in_store.push(key);
                        bases.insert(key, base.as_ref());
                    }
                },
            }
        }
        Ok(Self { heads: heads.into_values().collect(), rows, updated_in_store, bases })
    }

    /// Refuses the batch when a message it updates is no longer the version its update was made from (another
    /// writer changed it since it was read). `previous` holds the stored versions, locked until the commit.
    fn check_bases(&self, previous: &HashMap<(Uuid, u64), Message>) -> StoreResult<()> {
        for (key, base) in &self.bases {
            if previous.get(key).is_some_and(|stored| stored != *base) {
                return Err(changed_meanwhile(*key));
            }
        }
        Ok(())
    }

    fn inserted(&self) -> impl Iterator<Item = &'a Message> + '_ {
        self.rows.values().filter(|(new, _)| *new).map(|(_, m)| *m)
    }

    /// Attachment references added and dropped: an insert adds all of its own; an update compares with the
    /// version stored before.
    fn attachment_changes(&self, previous: &HashMap<(Uuid, u64), Message>) -> StoreResult<RefChanges> {
        let mut changes = RefChanges::default();
        for (&(conversation, seq), (new, message)) in &self.rows {
            let before: &[herald_proto::Attachment] = match (new, previous.get(&(conversation, seq))) {
                (true, _) => &[],
                (false, Some(old)) => &old.attachments,
                (false, None) => {
                    return Err(StoreError::Conflict(format!(
                        "message {conversation}/{seq} does not exist: an update needs a stored message"
                    )));
                }
            };
            let after = &message.attachments;
            for gone in before.iter().filter(|b| !after.iter().any(|a| a.media_id == b.media_id)) {
                changes.dropped.push((gone.media_id, conversation, seq));
            }
            for added in after.iter().filter(|a| !before.iter().any(|b| b.media_id == a.media_id)) {
                changes.added.push((added.media_id, conversation, seq));
            }
        }
        Ok(changes)
    }

    async fn insert_messages(&self, txn: &Transaction<'_>) -> StoreResult<()> {
        let inserted: Vec<&Message> = self.inserted().collect();
        if inserted.is_empty() {
            return Ok(());
        }
        let conversations: Vec<Uuid> = inserted.iter().map(|m| m.conversation_id.0).collect();
        let seqs: Vec<i64> = inserted.iter().map(|m| big(m.seq)).collect();
        let buckets: Vec<i32> = inserted.iter().map(|m| partitions::bucket(m.sent_at)).collect();
        let senders: Vec<Uuid> = inserted.iter().map(|m| m.sender.0).collect();
        let sent_at: Vec<i64> = inserted.iter().map(|m| m.sent_at).collect();
        let payloads = inserted.iter().map(|m| encode(m)).collect::<StoreResult<Vec<_>>>()?;
        let searches: Vec<Option<String>> = inserted.iter().map(|m| search::tsvector(m)).collect();
        txn.execute_typed(
            "INSERT INTO messages (conversation_id, seq, bucket, sender, sent_at, payload, search)
             SELECT c, s, b, snd, at, p, t::tsvector
               FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::uuid[], $5::bigint[], $6::bytea[], $7::text[])
                 AS v(c, s, b, snd, at, p, t)",
            &[
                (&conversations, Type::UUID_ARRAY),
                (&seqs, Type::INT8_ARRAY),
                (&buckets, Type::INT4_ARRAY),
                (&senders, Type::UUID_ARRAY),
                (&sent_at, Type::INT8_ARRAY),
                (&payloads, Type::BYTEA_ARRAY),
                (&searches, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn update_messages(&self, txn: &Transaction<'_>) -> StoreResult<()> {
        if self.updated_in_store.is_empty() {
            return Ok(());
        }
        let mut conversations = Vec::new();
        let mut seqs = Vec::new();
        let mut payloads = Vec::new();
        let mut searches: Vec<Option<String>> = Vec::new();
        for key in &self.updated_in_store {
            if let Some((_, m)) = self.rows.get(key) {
                conversations.push(key.0);
                seqs.push(big(key.1));
                payloads.push(encode(m)?);
                searches.push(search::tsvector(m));
            }
        }
        txn.execute_typed(
            "UPDATE messages SET payload = v.payload, search = v.search::tsvector
               FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::text[]) AS v(conversation_id, seq, payload, search)
              WHERE messages.conversation_id = v.conversation_id AND messages.seq = v.seq",
            &[
                (&conversations, Type::UUID_ARRAY),
                (&seqs, Type::INT8_ARRAY),
                (&payloads, Type::BYTEA_ARRAY),
                (&searches, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// The idempotency keys (a key stored twice is a unique violation: `Conflict`) and each sender's newest
    /// seq per conversation.
    async fn insert_keys_and_last_sent(&self, txn: &Transaction<'_>) -> StoreResult<()> {
        let inserted: Vec<&Message> = self.inserted().collect();
        if inserted.is_empty() {
            return Ok(());
        }
        let conversations: Vec<Uuid> = inserted.iter().map(|m| m.conversation_id.0).collect();
        let senders: Vec<Uuid> = inserted.iter().map(|m| m.sender.0).collect();
        let client_ids: Vec<&str> = inserted.iter().map(|m| m.client_msg_id.as_str()).collect();
        let seqs: Vec<i64> = inserted.iter().map(|m| big(m.seq)).collect();
        let mut newest: BTreeMap<(Uuid, Uuid), i64> = BTreeMap::new();
        // A thread reply says nothing of what its sender read outside the thread (see `last_sent_by`).
        for m in inserted.iter().filter(|m| m.thread_root.is_none()) {
            let seq = newest.entry((m.conversation_id.0, m.sender.0)).or_insert(0);
            *seq = (*seq).max(big(m.seq));
        }
        let sent_conversations: Vec<Uuid> = newest.keys().map(|k| k.0).collect();
        let sent_senders: Vec<Uuid> = newest.keys().map(|k| k.1).collect();
        let sent_seqs: Vec<i64> = newest.values().copied().collect();
        let key_params: [Param<'_>; 4] = [
            (&conversations, Type::UUID_ARRAY),
            (&senders, Type::UUID_ARRAY),
            (&client_ids, Type::TEXT_ARRAY),
            (&seqs, Type::INT8_ARRAY),
        ];
        let keys = txn.execute_typed(
            "INSERT INTO message_ids (conversation_id, sender, client_msg_id, seq)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[])",
            &key_params,
        );
        let sent_params: [Param<'_>; 3] = [
            (&sent_conversations, Type::UUID_ARRAY),
            (&sent_senders, Type::UUID_ARRAY),
            (&sent_seqs, Type::INT8_ARRAY),
        ];
        let last_sent = txn.execute_typed(
            "INSERT INTO last_sent (conversation_id, sender, seq)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])
             ON CONFLICT (conversation_id, sender) DO UPDATE SET seq = greatest(last_sent.seq, excluded.seq)",
            &sent_params,
        );
        let replies: Vec<&Message> = inserted.iter().copied().filter(|m| m.thread_root.is_some()).collect();
        let reply_conversations: Vec<Uuid> = replies.iter().map(|m| m.conversation_id.0).collect();
        let reply_roots: Vec<i64> = replies.iter().map(|m| big(m.thread_root.unwrap_or_default())).collect();
        let reply_seqs: Vec<i64> = replies.iter().map(|m| big(m.seq)).collect();
        let reply_senders: Vec<Uuid> = replies.iter().map(|m| m.sender.0).collect();
        let reply_params: [Param<'_>; 4] = [
            (&reply_conversations, Type::UUID_ARRAY),
            (&reply_roots, Type::INT8_ARRAY),
            (&reply_seqs, Type::INT8_ARRAY),
            (&reply_senders, Type::UUID_ARRAY),
        ];
        let thread_replies = async {
            if replies.is_empty() {
                return Ok(0);
            }
            txn.execute_typed(
                "INSERT INTO thread_replies (conversation_id, thread_root, seq, sender)
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::uuid[])",
                &reply_params,
            )
            .await
        };
        let (keys, last_sent, thread_replies) = tokio::join!(keys, last_sent, thread_replies);
        thread_replies.map_err(pg)?;
        keys.map_err(|e| match pg(e) {
            StoreError::Conflict(detail) => {
                StoreError::Conflict(format!("an idempotency key of this commit is already stored: {detail}"))
            }
            other => other,
        })?;
        last_sent.map_err(pg)?;
        Ok(())
    }
}

/// Locks the heads of the conversations the batch inserts into and moves each from `expected` to `last`;
/// refuses with `Conflict` when a head is not at `expected` (another writer stored that seq, or a seq would
/// be skipped).
async fn claim_seqs(txn: &Transaction<'_>, heads: &[Head]) -> StoreResult<()> {
    if heads.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = heads.iter().map(|h| h.conversation).collect();
    let rows = txn
        .query_typed(
            "SELECT conversation_id, last_seq FROM conversation_heads WHERE conversation_id = ANY($1)
              ORDER BY conversation_id FOR UPDATE",
            &[(&ids, Type::UUID_ARRAY)],
        )
        .await
        .map_err(pg)?;
    let stored: HashMap<Uuid, u64> = rows.iter().map(|r| (r.get(0), unsigned(r.get(1)))).collect();
    let (mut new_ids, mut new_lasts, mut moved_ids, mut moved_lasts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for head in heads {
        let current = stored.get(&head.conversation).copied();
        if current.unwrap_or(0) != head.expected {
            return Err(StoreError::Conflict(format!(
                "conversation {}: seq {} is not its last + 1 (its last seq is {}): another writer stored it first",
                head.conversation,
                head.expected + 1,
                current.unwrap_or(0)
            )));
        }
        if current.is_some() {
            moved_ids.push(head.conversation);
            moved_lasts.push(big(head.last));
        } else {
            new_ids.push(head.conversation);
            new_lasts.push(big(head.last));
        }
    }
    // A head that did not exist is inserted without ON CONFLICT: a concurrent writer that inserted it first
    // makes this a unique violation, so only one of them starts the conversation.
    let created_params: [Param<'_>; 2] = [(&new_ids, Type::UUID_ARRAY), (&new_lasts, Type::INT8_ARRAY)];
    let created = txn.execute_typed(
        "INSERT INTO conversation_heads (conversation_id, last_seq) SELECT * FROM unnest($1::uuid[], $2::bigint[])",
        &created_params,
    );
    let moved_params: [Param<'_>; 2] = [(&moved_ids, Type::UUID_ARRAY), (&moved_lasts, Type::INT8_ARRAY)];
    let moved = txn.execute_typed(
        "UPDATE conversation_heads SET last_seq = v.last
           FROM unnest($1::uuid[], $2::bigint[]) AS v(conversation_id, last)
          WHERE conversation_heads.conversation_id = v.conversation_id",
        &moved_params,
    );
    let (created, moved) = tokio::join!(created, moved);
    created.map_err(|e| match pg(e) {
        StoreError::Conflict(_) => {
            StoreError::Conflict("another writer started one of these conversations first".to_owned())
        }
        other => other,
    })?;
    moved.map_err(pg)?;
    Ok(())
}

/// The stored versions of the messages an update replaces, locked until the commit.
async fn locked_versions(txn: &Transaction<'_>, keys: &[(Uuid, u64)]) -> StoreResult<HashMap<(Uuid, u64), Message>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let conversations: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let seqs: Vec<i64> = keys.iter().map(|k| big(k.1)).collect();
    let rows = txn
        .query_typed(
            "SELECT m.conversation_id, m.seq, m.payload FROM messages m
               JOIN unnest($1::uuid[], $2::bigint[]) AS k(conversation_id, seq)
                 ON m.conversation_id = k.conversation_id AND m.seq = k.seq
              ORDER BY m.conversation_id, m.seq
                FOR UPDATE OF m",
            &[(&conversations, Type::UUID_ARRAY), (&seqs, Type::INT8_ARRAY)],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(|r| Ok(((r.get(0), unsigned(r.get(1))), decode(r.get(2))?))).collect()
}

#[derive(Default)]
struct RefChanges {
    added: Vec<(MediaId, Uuid, u64)>,
    dropped: Vec<(MediaId, Uuid, u64)>,
}

impl RefChanges {
    async fn write(&self, txn: &Transaction<'_>) -> StoreResult<()> {
        let columns = |refs: &[(MediaId, Uuid, u64)]| {
            (
                refs.iter().map(|r| r.0.0).collect::<Vec<Uuid>>(),
                refs.iter().map(|r| r.1).collect::<Vec<Uuid>>(),
                refs.iter().map(|r| big(r.2)).collect::<Vec<i64>>(),
            )
        };
        if !self.dropped.is_empty() {
            let (media, conversations, seqs) = columns(&self.dropped);
            txn.execute_typed(
                "DELETE FROM media_refs r USING unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS v(m, c, s)
                  WHERE r.media_id = v.m AND r.conversation_id = v.c AND r.seq = v.s",
                &[(&media, Type::UUID_ARRAY), (&conversations, Type::UUID_ARRAY), (&seqs, Type::INT8_ARRAY)],
            )
            .await
            .map_err(pg)?;
        }
        if !self.added.is_empty() {
            // The uploads attached, locked against a concurrent `MediaStore::remove`: it either finished first
            // (the upload is gone and stays unattached) or waits for this commit and then sees the reference.
            let mut uploads: Vec<Uuid> = self.added.iter().map(|r| r.0.0).collect();
            uploads.sort_unstable();
            uploads.dedup();
            txn.execute_typed(
                "SELECT 1 FROM media WHERE id = ANY($1::uuid[]) ORDER BY id FOR KEY SHARE",
                &[(&uploads, Type::UUID_ARRAY)],
            )
            .await
            .map_err(pg)?;
            let (media, conversations, seqs) = columns(&self.added);
            txn.execute_typed(
                "INSERT INTO media_refs (media_id, conversation_id, seq)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) ON CONFLICT DO NOTHING",
                &[(&media, Type::UUID_ARRAY), (&conversations, Type::UUID_ARRAY), (&seqs, Type::INT8_ARRAY)],
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }
}

/// How many entries each user's feed gets in this batch, by user id (the lock order).
type FeedCounts = BTreeMap<Uuid, u64>;

/// The feed rows of a batch in the callers' order, as columns.
struct FeedRows {
    users: Vec<Uuid>,
    /// The entry's place among its user's entries in this batch (1, 2 …).
    nth: Vec<u64>,
    kinds: Vec<i16>,
    conversations: Vec<Uuid>,
    seqs: Vec<i64>,
    receipt_users: Vec<Option<Uuid>>,
    reads: Vec<Option<i64>>,
}

impl FeedRows {
    fn of(feed: &[&FeedAppend]) -> (FeedCounts, Self) {
        let mut counts = FeedCounts::new();
        let mut rows = FeedRows {
            users: Vec::with_capacity(feed.len()),
            nth: Vec::with_capacity(feed.len()),
            kinds: Vec::with_capacity(feed.len()),
            conversations: Vec::with_capacity(feed.len()),
            seqs: Vec::with_capacity(feed.len()),
            receipt_users: Vec::with_capacity(feed.len()),
            reads: Vec::with_capacity(feed.len()),
        };
        for entry in feed {
            let count = counts.entry(entry.user.0).or_insert(0);
            *count += 1;
            rows.users.push(entry.user.0);
            rows.nth.push(*count);
            let (kind, conversation, seq, receipt_user, read) = match &entry.event {
                FeedEvent::Message { conversation, seq } => (1, conversation, *seq, None, None),
                FeedEvent::MessageUpdated { conversation, seq } => (2, conversation, *seq, None, None),
                FeedEvent::Receipt { conversation, user, delivered, read } => {
                    (3, conversation, *delivered, Some(user.0), Some(big(*read)))
                }
            };
            rows.kinds.push(kind);
            rows.conversations.push(conversation.0);
            rows.seqs.push(big(seq));
            rows.receipt_users.push(receipt_user);
            rows.reads.push(read);
        }
        (counts, rows)
    }

    /// Writes the rows at `new last - count + nth`; returns their positions in the callers' order.
    async fn insert(
        &self,
        txn: &Transaction<'_>,
        counts: &FeedCounts,
        lasts: &HashMap<Uuid, u64>,
    ) -> StoreResult<Vec<u64>> {
        if self.users.is_empty() {
            return Ok(Vec::new());
        }
        let positions = self
            .users
            .iter()
            .zip(&self.nth)
            .map(|(user, nth)| {
                let last = lasts.get(user).copied().ok_or_else(|| backend("a feed head was not returned"))?;
                let count = counts.get(user).copied().unwrap_or(0);
                Ok(last - count + nth)
            })
            .collect::<StoreResult<Vec<u64>>>()?;
        let stored: Vec<i64> = positions.iter().map(|p| big(*p)).collect();
        txn.execute_typed(
            "INSERT INTO feed (user_id, position, kind, conversation_id, seq, receipt_user, read)
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::smallint[], $4::uuid[], $5::bigint[], $6::uuid[],
                                  $7::bigint[])",
            &[
                (&self.users, Type::UUID_ARRAY),
                (&stored, Type::INT8_ARRAY),
                (&self.kinds, Type::INT2_ARRAY),
                (&self.conversations, Type::UUID_ARRAY),
                (&self.seqs, Type::INT8_ARRAY),
                (&self.receipt_users, Type::UUID_ARRAY),
                (&self.reads, Type::INT8_ARRAY),
            ],
        )
        .await
        .map_err(pg)?;
        Ok(positions)
    }
}

/// Moves each user's feed head forward by its count, locking the heads in user order; returns the new lasts.
async fn advance_feed_heads(txn: &Transaction<'_>, counts: &FeedCounts) -> StoreResult<HashMap<Uuid, u64>> {
    if counts.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<Uuid> = counts.keys().copied().collect();
    let adds: Vec<i64> = counts.values().map(|c| big(*c)).collect();
    let rows = txn
        .query_typed(
            "INSERT INTO feed_heads (user_id, last) SELECT * FROM unnest($1::uuid[], $2::bigint[])
             ON CONFLICT (user_id) DO UPDATE SET last = feed_heads.last + excluded.last
             RETURNING user_id, last",
            &[(&users, Type::UUID_ARRAY), (&adds, Type::INT8_ARRAY)],
        )
        .await
        .map_err(pg)?;
    Ok(rows.iter().map(|r| (r.get(0), unsigned(r.get(1)))).collect())
}

/// Deletes the entries outside the retention window of the feeds whose last position crossed a multiple of
/// `PRUNE_EVERY` in this batch (readers never see them anyway: see `MessageStore::feed`).
async fn prune_feeds(
    txn: &Transaction<'_>,
    counts: &FeedCounts,
    lasts: &HashMap<Uuid, u64>,
    retention: u64,
) -> StoreResult<()> {
    let mut users = Vec::new();
    let mut below = Vec::new();
    for (user, count) in counts {
        let Some(&last) = lasts.get(user) else { continue };
        if last > retention && (last - count) / PRUNE_EVERY != last / PRUNE_EVERY {
            users.push(*user);
            below.push(big(last - retention));
        }
    }
    if users.is_empty() {
        return Ok(());
    }
    txn.execute_typed(
        "DELETE FROM feed f USING unnest($1::uuid[], $2::bigint[]) AS v(user_id, below)
          WHERE f.user_id = v.user_id AND f.position <= v.below",
        &[(&users, Type::UUID_ARRAY), (&below, Type::INT8_ARRAY)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

pub(crate) fn encode(message: &Message) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(message).map_err(backend)
}

pub(crate) fn decode(payload: &[u8]) -> StoreResult<Message> {
    serde_json::from_slice(payload).map_err(|e| backend(format!("corrupt message row: {e}")))
}
