//! The partition owner: the one place where a conversation's `seq` is assigned.
//!
//! For each batch of records of a partition it: deduplicates sends by `(conversation, sender,
//! client_msg_id)`, assigns `seq = last_seq + 1`, applies edits, deletes and reactions, commits the whole
//! batch to the message store in one durable write, and only then publishes the outcomes (so an ack always
//! follows durability). `last_seq` is cached per conversation and re-read from the store whenever the
//! partition is (re)assigned, so a new owner after a crash or a rebalance continues without a gap, and a
//! record re-processed after a crash is found by its idempotency key and keeps its first seq.
//!
//! Every applied operation also becomes an entry in the feed of each member it concerns, written in the
//! same commit: the feed is what a reconnecting device resumes from, so it must never miss a stored message.

use crate::delivery::{Applied, Delivery, FeedDelivery, Outcome};
use crate::footprint::{self, Footprint};
use crate::log::{LogRecord, Op, PartitionHandler};
use crate::store::{ClientKey, FeedAppend, FeedEvent, MessageStore, MessageWrite, Stores};
use crate::{CoreError, CoreResult, now_millis};
use async_trait::async_trait;
use herald_proto::{ConversationId, Event, Message, MessageId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Above this many cached conversations a partition forgets its cache (it is re-read on demand).
const MAX_CACHED_CONVERSATIONS: usize = 100_000;
/// ... and above this many user ids in its cached member lists (a few big groups weigh more than many
/// small conversations): 16 bytes each, so at most 16 MiB per partition.
const MAX_CACHED_MEMBER_IDS: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct SequencerConfig {
    /// Receipts go to every member only in conversations up to this size; in larger ones only to the
    /// reader's own devices (all members' receipts to all members grows with the square of the size).
    pub receipt_fanout_max_members: usize,
    /// How long a conversation's member list is reused. Membership notices refresh it at once; the short
    /// default bounds what a lost notice can cost (a new member missing live events for that long).
    pub member_cache_ttl: Duration,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self { receipt_fanout_max_members: 100, member_cache_ttl: Duration::from_secs(5) }
    }
}

pub struct Sequencer {
    stores: Stores,
    delivery: Arc<dyn Delivery>,
    config: SequencerConfig,
    partitions: Vec<Mutex<PartitionState>>,
}

#[derive(Default)]
struct PartitionState {
    last_seq: HashMap<ConversationId, u64>,
    members: HashMap<ConversationId, (Instant, Arc<Vec<UserId>>)>,
    /// The positions last announced per member, so an unchanged receipt is not announced again.
    announced: HashMap<(ConversationId, UserId), (u64, u64)>,
    /// User ids in all of `members`' lists.
    member_ids: usize,
}

impl PartitionState {
    fn clear(&mut self) {
        self.last_seq.clear();
        self.members.clear();
        self.announced.clear();
        self.member_ids = 0;
    }

    fn cache_members(&mut self, conversation: ConversationId, members: Arc<Vec<UserId>>) {
        self.member_ids += members.len();
        if let Some((_, old)) = self.members.insert(conversation, (Instant::now(), members)) {
            self.member_ids -= old.len();
        }
    }

    fn over_bounds(&self) -> bool {
        self.last_seq.len() > MAX_CACHED_CONVERSATIONS
            || self.members.len() > MAX_CACHED_CONVERSATIONS
            || self.announced.len() > MAX_CACHED_CONVERSATIONS
            || self.member_ids > MAX_CACHED_MEMBER_IDS
    }
}

impl Sequencer {
    pub fn new(stores: Stores, delivery: Arc<dyn Delivery>, partitions: u32, config: SequencerConfig) -> Self {
        Self {
            stores,
            delivery,
            config,
            partitions: (0..partitions).map(|_| Mutex::new(PartitionState::default())).collect(),
        }
    }

    /// The conversation's members, from the partition's cache unless stale or `refresh`.
    async fn members(
        &self,
        state: &mut PartitionState,
        conversation: ConversationId,
        refresh: bool,
    ) -> CoreResult<Arc<Vec<UserId>>> {
        if !refresh
            && let Some((at, members)) = state.members.get(&conversation)
            && at.elapsed() < self.config.member_cache_ttl
        {
            return Ok(members.clone());
        }
        let members: Arc<Vec<UserId>> =
            Arc::new(self.stores.conversations.members(conversation).await?.into_iter().map(|m| m.user_id).collect());
        state.cache_members(conversation, members.clone());
        Ok(members)
    }

    /// Who hears of an applied operation, and what goes into their feeds.
    async fn feed_for(
        &self,
        state: &mut PartitionState,
        record: &LogRecord,
        applied: &Applied,
    ) -> CoreResult<(Vec<UserId>, FeedEvent, Event)> {
        let conversation = record.conversation;
        let refresh = matches!(record.op, Op::System { .. });
        let members = self.members(state, conversation, refresh).await?;
        Ok(match applied {
            Applied::Sent { message, .. } => {
                let mut to: Vec<UserId> = members.to_vec();
                if let Some(departed) = message.system.as_ref().and_then(|s| s.departed())
                    && !to.contains(&departed)
                {
                    to.push(departed);
                }
                (to, FeedEvent::Message { conversation, seq: message.seq }, Event::Message { message: message.clone() })
            }
            Applied::Edited(message) | Applied::Deleted(message) | Applied::Reacted(message) => (
                members.to_vec(),
                FeedEvent::MessageUpdated { conversation, seq: message.seq },
                Event::MessageUpdated { message: message.clone() },
            ),
            Applied::Receipt { conversation, user, delivered, read } => {
                let unchanged =
                    state.announced.insert((*conversation, *user), (*delivered, *read)) == Some((*delivered, *read));
                let to = if unchanged {
                    Vec::new()
                } else if members.len() <= self.config.receipt_fanout_max_members {
                    members.to_vec()
                } else {
                    vec![*user]
                };
                (
                    to,
                    FeedEvent::Receipt { conversation: *conversation, user: *user, delivered: *delivered, read: *read },
                    Event::Receipt {
                        conversation_id: *conversation,
                        user_id: *user,
                        delivered: *delivered,
                        read: *read,
                    },
                )
            }
        })
    }

    /// For each record, what the store holds under its idempotency key if it is a send: `Some(found)`, or
    /// `None` when there is nothing to look up or the lookup failed (the record then looks itself up, and
    /// fails on its own). One store call for the whole batch instead of one per message.
    async fn stored_sends(&self, records: &[LogRecord]) -> Vec<Option<Option<Message>>> {
        let (mut sends, mut keys): (Vec<usize>, Vec<ClientKey<'_>>) = (Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            if let Op::Send { client_msg_id, .. } = &r.op {
                sends.push(i);
                keys.push((r.conversation, r.actor, client_msg_id.as_str()));
            }
        }
        let mut stored = vec![None; records.len()];
        if keys.is_empty() {
            return stored;
        }
        match self.stores.messages.by_client_ids(&keys).await {
            Ok(found) if found.len() == keys.len() => {
                for (i, found) in sends.into_iter().zip(found) {
                    stored[i] = Some(found);
                }
            }
            Ok(found) => tracing::error!(asked = keys.len(), got = found.len(), "by_client_ids answered wrongly"),
            Err(e) => tracing::warn!(error = %e, "looking up a batch's idempotency keys failed"),
        }
        stored
    }

    /// What the partitions' caches hold, all partitions together.
    pub async fn footprints(&self) -> Vec<Footprint> {
        let partitions = self.partitions.len();
        let empty = |structure, bound_per_partition: usize| Footprint {
            structure,
            entries: 0,
            bytes: 0,
            bound: bound_per_partition * partitions,
        };
        let mut last_seq = empty("sequencer_last_seq", MAX_CACHED_CONVERSATIONS);
        let mut members = empty("sequencer_members", MAX_CACHED_CONVERSATIONS);
        let mut member_ids = empty("sequencer_member_ids", MAX_CACHED_MEMBER_IDS);
        let mut announced = empty("sequencer_receipts", MAX_CACHED_CONVERSATIONS);
        for partition in &self.partitions {
            let state = partition.lock().await;
            last_seq.entries += state.last_seq.len();
            last_seq.bytes += footprint::hash_map_bytes(&state.last_seq);
            members.entries += state.members.len();
            members.bytes += footprint::hash_map_bytes(&state.members);
            member_ids.entries += state.member_ids;
            member_ids.bytes += state.member_ids * size_of::<UserId>();
            announced.entries += state.announced.len();
            announced.bytes += footprint::hash_map_bytes(&state.announced);
        }
        vec![last_seq, members, member_ids, announced]
    }

    fn state(&self, partition: u32) -> &Mutex<PartitionState> {
        // The log only hands out partitions below the count it was built with.
        &self.partitions[partition as usize % self.partitions.len()]
    }
}

#[async_trait]
impl PartitionHandler for Sequencer {
    async fn assigned(&self, partition: u32) {
        self.state(partition).lock().await.clear();
    }

    async fn revoked(&self, partition: u32) {
        self.state(partition).lock().await.clear();
    }

    async fn process(&self, partition: u32, records: Vec<LogRecord>) {
        let started = Instant::now();
        let count = records.len();
        let mut state = self.state(partition).lock().await;
        if state.over_bounds() {
            state.clear();
        }
        let mut batch = Batch::new(&self.stores, &state.last_seq);
        let mut stored = self.stored_sends(&records).await;
        let mut results = Vec::with_capacity(records.len());
        // Whether each record changed anything: a no-op (a retried send, deleting a tombstone, an
        // unchanged reaction) is answered but not announced.
        let mut changed = Vec::with_capacity(records.len());
        for (record, stored) in records.iter().zip(&mut stored) {
            match batch.apply(record, stored.take()).await {
                Ok((applied, did_change)) => {
                    results.push(Ok(applied));
                    changed.push(did_change);
                }
                Err(e) => {
                    results.push(Err(e));
                    changed.push(false);
                }
            }
        }
        let Batch { writes, last_seq: tentative, .. } = batch;

        // The feed entries of every change: one per recipient, the event encoded once. If they cannot be
        // worked out, nothing of the batch is committed: a stored message must never miss a feed.
        let mut feed: Vec<FeedAppend> = Vec::new();
        let mut shared: Vec<(usize, Arc<str>, Option<herald_proto::Millis>, bool)> = Vec::new();
        let mut failed: Option<String> = None;
        for ((record, result), did_change) in records.iter().zip(&results).zip(&changed) {
            let (Ok(applied), true) = (result, *did_change) else { continue };
            let (to, entry, event) = match self.feed_for(&mut state, record, applied).await {
                Ok(feed_for) => feed_for,
                Err(e) => {
                    failed = Some(format!("working out recipients: {e}"));
                    break;
                }
            };
            let encoded: Arc<str> = match serde_json::to_string(&event) {
                Ok(json) => json.into(),
                Err(e) => {
                    failed = Some(format!("encoding an event: {e}"));
                    break;
                }
            };
            let sent_at = match applied {
                Applied::Sent { message, .. } => Some(message.sent_at),
                _ => None,
            };
            let notice = matches!(record.op, Op::System { .. });
            for user in to {
                shared.push((feed.len(), encoded.clone(), sent_at, notice));
                feed.push(FeedAppend { user, event: entry.clone() });
            }
        }

        metrics::histogram!("sequencer_stage_ms", "stage" => "apply").record(started.elapsed().as_secs_f64() * 1000.0);
        let commit_started = Instant::now();
        let committed = match failed {
            Some(reason) => Err(reason),
            None if writes.is_empty() && feed.is_empty() => Ok(Vec::new()),
            None => self.stores.messages.commit_with_feed(&writes, &feed).await.map_err(|e| e.to_string()),
        };
        metrics::histogram!("sequencer_stage_ms", "stage" => "commit")
            .record(commit_started.elapsed().as_secs_f64() * 1000.0);
        let (outcomes, deliveries): (Vec<Outcome>, Vec<FeedDelivery>) = match committed {
            Ok(positions) => {
                state.last_seq.extend(tentative);
                let deliveries = shared
                    .into_iter()
                    .zip(positions)
                    .map(|((i, event, sent_at, notice), pos)| FeedDelivery {
                        user: feed[i].user,
                        conversation: feed[i].event.conversation(),
                        pos,
                        event,
                        sent_at,
                        notice,
                    })
                    .collect();
                let outcomes = records
                    .iter()
                    .zip(results)
                    .map(|(rec, result)| Outcome { request_id: rec.request_id, origin: rec.origin.clone(), result })
                    .collect();
                (outcomes, deliveries)
            }
            Err(e) => {
                tracing::error!(error = %e, partition, "batch refused; nothing of it was stored");
                // Forget everything cached (the tentative seqs above all), tell every sender to retry, and let
                // records that had failed on their own keep their own error.
                state.clear();
                let outcomes = records
                    .iter()
                    .zip(results)
                    .map(|(rec, result)| Outcome {
                        request_id: rec.request_id,
                        origin: rec.origin.clone(),
                        result: result.and_then(|_| {
                            Err(CoreError::unavailable("storage failed; retry with the same client_msg_id"))
                        }),
                    })
                    .collect();
                (outcomes, Vec::new())
            }
        };
        drop(state);
        metrics::histogram!("message_processing_duration_ms").record(started.elapsed().as_secs_f64() * 1000.0);
        metrics::histogram!("sequencer_batch_size").record(count as f64);
        let publish_started = Instant::now();
        self.delivery.publish(outcomes, deliveries).await;
        metrics::histogram!("sequencer_stage_ms", "stage" => "publish")
            .record(publish_started.elapsed().as_secs_f64() * 1000.0);
    }
}

/// The tentative effects of one batch, applied to the store only as a whole.
struct Batch<'a> {
    stores: &'a Stores,
    committed_last_seq: &'a HashMap<ConversationId, u64>,
    last_seq: HashMap<ConversationId, u64>,
    writes: Vec<MessageWrite>,
    /// (conversation, seq) -> index in `writes`, so later operations in the batch see earlier ones.
    by_seq: HashMap<(ConversationId, u64), usize>,
    /// (conversation, sender, client_msg_id) -> index in `writes`, for retries within one batch.
    by_client_id: HashMap<(ConversationId, UserId, String), usize>,
}

impl<'a> Batch<'a> {
    fn new(stores: &'a Stores, committed_last_seq: &'a HashMap<ConversationId, u64>) -> Self {
        Self {
            stores,
            committed_last_seq,
            last_seq: HashMap::new(),
            writes: Vec::new(),
            by_seq: HashMap::new(),
            by_client_id: HashMap::new(),
        }
    }

    fn messages(&self) -> &'a dyn MessageStore {
        self.stores.messages.as_ref()
    }

    async fn last_seq(&mut self, conversation: ConversationId) -> Result<u64, CoreError> {
        if let Some(seq) = self.last_seq.get(&conversation).or(self.committed_last_seq.get(&conversation)) {
            return Ok(*seq);
        }
        let seq = self.messages().last_seq(conversation).await?;
        self.last_seq.insert(conversation, seq);
        Ok(seq)
    }

    async fn message(&self, conversation: ConversationId, seq: u64) -> Result<Message, CoreError> {
        if let Some(&i) = self.by_seq.get(&(conversation, seq)) {
            return Ok(self.writes[i].message().clone());
        }
        self.messages()
            .message(conversation, seq)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no message {seq}")))
    }

    /// The root of a thread a reply is sent into: a message of the conversation (at or below `last`) that
    /// people wrote, is not itself in a thread, and is not deleted.
    async fn thread_root(&self, conversation: ConversationId, root: u64, last: u64) -> Result<Message, CoreError> {
        if root == 0 || root > last {
            return Err(CoreError::invalid(format!("thread_root {root} is not a message of this conversation")));
        }
        let message = self.message(conversation, root).await?;
        if message.system.is_some() {
            return Err(CoreError::invalid(format!("thread_root {root} is a notice, which has no thread")));
        }
        if let Some(parent) = message.thread_root {
            return Err(CoreError::invalid(format!(
                "thread_root {root} is a reply in the thread of {parent}: reply to {parent} instead"
            )));
        }
        if message.deleted {
            return Err(CoreError::conflict(format!("thread_root {root} was deleted")));
        }
        Ok(message)
    }

    fn put(&mut self, write: MessageWrite) {
        let m = write.message();
        let key = (m.conversation_id, m.seq);
        match self.by_seq.get(&key) {
            // An update of a message written earlier in this batch replaces that write in place, keeping it an
            // insert if it was one, and keeping the version read from the store as the base.
            Some(&i) => {
                let message = write.message().clone();
                self.writes[i] = match &self.writes[i] {
                    MessageWrite::Insert(_) => MessageWrite::Insert(message),
                    MessageWrite::Update { base, .. } => MessageWrite::Update { message, base: base.clone() },
                };
            }
            None => {
                self.by_seq.insert(key, self.writes.len());
                self.writes.push(write);
            }
        }
    }

    /// A new message at `seq`, put into the batch.
    fn insert(&mut self, record: &LogRecord, seq: u64, client_msg_id: String, content: Content) -> Message {
        let Content { body, reply_to, thread_root, system, attachments } = content;
        let message = Message {
            conversation_id: record.conversation,
            seq,
            message_id: MessageId::new(),
            sender: record.actor,
            sender_device: record.device,
            client_msg_id,
            body,
            reply_to,
            thread_root,
            thread: None,
            sent_at: now_millis(),
            edited_at: None,
            deleted: false,
            reactions: Default::default(),
            system,
            attachments,
        };
        self.last_seq.insert(record.conversation, seq);
        self.put(MessageWrite::Insert(message.clone()));
        message
    }

    /// Applies one record to the batch; says what happened and whether anything changed. `stored` is what
    /// the store held under a send's idempotency key before this batch, when already looked up.
    async fn apply(
        &mut self,
        record: &LogRecord,
        stored: Option<Option<Message>>,
    ) -> Result<(Applied, bool), CoreError> {
        let conversation = record.conversation;
        match &record.op {
            Op::Send { client_msg_id, body, reply_to, thread_root, attachments } => {
                let key = (conversation, record.actor, client_msg_id.clone());
                if let Some(&i) = self.by_client_id.get(&key) {
                    return Ok((Applied::Sent { message: self.writes[i].message().clone(), duplicate: true }, false));
                }
                let stored = match stored {
                    Some(stored) => stored,
                    None => self.messages().by_client_id(conversation, record.actor, client_msg_id).await?,
                };
                if let Some(message) = stored {
                    return Ok((Applied::Sent { message, duplicate: true }, false));
                }
                let last = self.last_seq(conversation).await?;
                if let Some(target) = reply_to
                    && (*target == 0 || *target > last)
                {
                    return Err(CoreError::invalid(format!("reply_to {target} is not a message of this conversation")));
                }
                // Checked before anything is put into the batch, so a refused reply leaves no trace.
                let root = match thread_root {
                    Some(root) => Some(self.thread_root(conversation, *root, last).await?),
                    None => None,
                };
                self.by_client_id.insert(key, self.writes.len());
                let content = Content {
                    body: body.clone(),
                    reply_to: *reply_to,
                    thread_root: *thread_root,
                    attachments: attachments.clone(),
                    ..Content::default()
                };
                let message = self.insert(record, last + 1, client_msg_id.clone(), content);
                if let Some(base) = root {
                    let mut root = base.clone();
                    let summary = root.thread.get_or_insert_with(Default::default);
                    summary.replies += 1;
                    summary.last_seq = message.seq;
                    summary.last_reply_at = message.sent_at;
                    self.put(MessageWrite::update(root, base));
                }
                Ok((Applied::Sent { message, duplicate: false }, true))
            }
            Op::System { event } => {
                let last = self.last_seq(conversation).await?;
                // Unique, and not a key any client can send (the '~' prefix is reserved for the server).
                let key = format!("~system-{}", record.request_id);
                let content = Content { system: Some(event.clone()), ..Content::default() };
                let message = self.insert(record, last + 1, key, content);
                Ok((Applied::Sent { message, duplicate: false }, true))
            }
            Op::Receipt => {
                let position = self.stores.position(conversation, record.actor).await?;
                let receipt = Applied::Receipt {
                    conversation,
                    user: record.actor,
                    delivered: position.delivered,
                    read: position.read,
                };
                Ok((receipt, true))
            }
            Op::Edit { seq, body } => {
                let base = self.message(conversation, *seq).await?;
                let mut message = base.clone();
                if message.sender != record.actor || message.system.is_some() {
                    return Err(CoreError::forbidden("only the sender can edit a message"));
                }
                if message.deleted {
                    return Err(CoreError::conflict("the message was deleted"));
                }
                message.body = body.clone();
                message.edited_at = Some(now_millis());
                self.put(MessageWrite::update(message.clone(), base));
                Ok((Applied::Edited(message), true))
            }
            Op::Delete { seq, as_admin } => {
                let base = self.message(conversation, *seq).await?;
                let mut message = base.clone();
                if message.sender != record.actor && !as_admin {
                    return Err(CoreError::forbidden("only the sender or a group admin can delete a message"));
                }
                let changed = !message.deleted;
                if changed {
                    message.deleted = true;
                    message.body.clear();
                    message.reactions.clear();
                    // Dropping the attachments drops the message's references to the uploads (in the same
                    // commit), which lets garbage collection reclaim them.
                    message.attachments.clear();
                    message.reply_to = None;
                    message.edited_at = Some(now_millis());
                    self.put(MessageWrite::update(message.clone(), base));
                }
                Ok((Applied::Deleted(message), changed))
            }
            Op::React { seq, emoji, add } => {
                let base = self.message(conversation, *seq).await?;
                let mut message = base.clone();
                if message.deleted {
                    return Err(CoreError::conflict("the message was deleted"));
                }
                let changed = if *add {
                    message.reactions.entry(emoji.clone()).or_default().insert(record.actor)
                } else {
                    let removed = message.reactions.get_mut(emoji).is_some_and(|users| users.remove(&record.actor));
                    message.reactions.retain(|_, users| !users.is_empty());
                    removed
                };
                if changed {
                    self.put(MessageWrite::update(message.clone(), base));
                }
                Ok((Applied::Reacted(message), changed))
            }
        }
    }
}

/// What a new message holds besides its identity.
#[derive(Default)]
struct Content {
    body: String,
    reply_to: Option<u64>,
    thread_root: Option<u64>,
    system: Option<herald_proto::SystemEvent>,
    attachments: Vec<herald_proto::Attachment>,
}
