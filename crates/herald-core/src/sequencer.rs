//! The partition owner: the one place where a conversation's `seq` is assigned.
//!
//! For each batch of records of a partition it: deduplicates sends by `(conversation, sender,
//! client_msg_id)`, assigns `seq = last_seq + 1`, applies edits, deletes and reactions, commits the whole
//! batch to the message store in one durable write, and only then publishes the outcomes (so an ack always
//! follows durability). `last_seq` is cached per conversation and re-read from the store whenever the
//! partition is (re)assigned, so a new owner after a crash or a rebalance continues without a gap, and a
//! record re-processed after a crash is found by its idempotency key and keeps its first seq.

use crate::delivery::{Applied, Delivery, Outcome};
use crate::log::{LogRecord, Op, PartitionHandler};
use crate::store::{MessageStore, MessageWrite, Stores};
use crate::{CoreError, now_millis};
use async_trait::async_trait;
use herald_proto::{ConversationId, Message, MessageId, UserId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// Above this many cached conversations a partition forgets its cache (it is re-read on demand).
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

pub struct Sequencer {
    stores: Stores,
    delivery: Arc<dyn Delivery>,
    partitions: Vec<Mutex<PartitionState>>,
}

#[derive(Default)]
struct PartitionState {
    last_seq: HashMap<ConversationId, u64>,
}

impl Sequencer {
    pub fn new(stores: Stores, delivery: Arc<dyn Delivery>, partitions: u32) -> Self {
        Self { stores, delivery, partitions: (0..partitions).map(|_| Mutex::new(PartitionState::default())).collect() }
    }

    fn state(&self, partition: u32) -> &Mutex<PartitionState> {
        // The log only hands out partitions below the count it was built with.
        &self.partitions[partition as usize % self.partitions.len()]
    }
}

#[async_trait]
impl PartitionHandler for Sequencer {
    async fn assigned(&self, partition: u32) {
        self.state(partition).lock().await.last_seq.clear();
    }

    async fn revoked(&self, partition: u32) {
        self.state(partition).lock().await.last_seq.clear();
    }

    async fn process(&self, partition: u32, records: Vec<LogRecord>) {
        let started = Instant::now();
        let count = records.len();
        let mut state = self.state(partition).lock().await;
        if state.last_seq.len() > MAX_CACHED_CONVERSATIONS {
            state.last_seq.clear();
        }
        let mut batch = Batch::new(self.stores.messages.as_ref(), &state.last_seq);
        let mut results = Vec::with_capacity(records.len());
        for record in &records {
            results.push(batch.apply(record).await);
        }
        let Batch { writes, last_seq: tentative, .. } = batch;

        let committed = if writes.is_empty() { Ok(()) } else { self.stores.messages.commit(&writes).await };
        let outcomes: Vec<Outcome> = match committed {
            Ok(()) => {
                state.last_seq.extend(tentative);
                records
                    .iter()
                    .zip(results)
                    .map(|(rec, result)| Outcome { request_id: rec.request_id, result })
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, partition, "message store commit failed; batch refused");
                // Nothing of the batch is stored: forget the tentative seqs and tell every sender to retry.
                // Records that had failed on their own keep their own error.
                records
                    .iter()
                    .zip(results)
                    .map(|(rec, result)| Outcome {
                        request_id: rec.request_id,
                        result: result.and_then(|_| {
                            Err(CoreError::unavailable("storage failed; retry with the same client_msg_id"))
                        }),
                    })
                    .collect()
            }
        };
        drop(state);
        metrics::histogram!("message_processing_duration_ms").record(started.elapsed().as_secs_f64() * 1000.0);
        metrics::histogram!("sequencer_batch_size").record(count as f64);
        self.delivery.publish(outcomes).await;
    }
}

/// The tentative effects of one batch, applied to the store only as a whole.
struct Batch<'a> {
    store: &'a dyn MessageStore,
    committed_last_seq: &'a HashMap<ConversationId, u64>,
    last_seq: HashMap<ConversationId, u64>,
    writes: Vec<MessageWrite>,
    /// (conversation, seq) -> index in `writes`, so later operations in the batch see earlier ones.
    by_seq: HashMap<(ConversationId, u64), usize>,
    /// (conversation, sender, client_msg_id) -> index in `writes`, for retries within one batch.
    by_client_id: HashMap<(ConversationId, UserId, String), usize>,
}

impl<'a> Batch<'a> {
    fn new(store: &'a dyn MessageStore, committed_last_seq: &'a HashMap<ConversationId, u64>) -> Self {
        Self {
            store,
            committed_last_seq,
            last_seq: HashMap::new(),
            writes: Vec::new(),
            by_seq: HashMap::new(),
            by_client_id: HashMap::new(),
        }
    }

    async fn last_seq(&mut self, conversation: ConversationId) -> Result<u64, CoreError> {
        if let Some(seq) = self.last_seq.get(&conversation).or(self.committed_last_seq.get(&conversation)) {
            return Ok(*seq);
        }
        let seq = self.store.last_seq(conversation).await?;
        self.last_seq.insert(conversation, seq);
        Ok(seq)
    }

    async fn message(&self, conversation: ConversationId, seq: u64) -> Result<Message, CoreError> {
        if let Some(&i) = self.by_seq.get(&(conversation, seq)) {
            return Ok(self.writes[i].message().clone());
        }
        self.store.message(conversation, seq).await?.ok_or_else(|| CoreError::not_found(format!("no message {seq}")))
    }

    fn put(&mut self, write: MessageWrite) {
        let m = write.message();
        let key = (m.conversation_id, m.seq);
        match self.by_seq.get(&key) {
            // An update of a message written earlier in this batch replaces that write in place, keeping
            // it an insert if it was one.
            Some(&i) => {
                let message = write.message().clone();
                self.writes[i] = match &self.writes[i] {
                    MessageWrite::Insert(_) => MessageWrite::Insert(message),
                    MessageWrite::Update(_) => MessageWrite::Update(message),
                };
            }
            None => {
                self.by_seq.insert(key, self.writes.len());
                self.writes.push(write);
            }
        }
    }

    async fn apply(&mut self, record: &LogRecord) -> Result<Applied, CoreError> {
        let conversation = record.conversation;
        match &record.op {
            Op::Send { client_msg_id, body, reply_to } => {
                let key = (conversation, record.actor, client_msg_id.clone());
                if let Some(&i) = self.by_client_id.get(&key) {
                    return Ok(Applied::Sent { message: self.writes[i].message().clone(), duplicate: true });
                }
                if let Some(message) = self.store.by_client_id(conversation, record.actor, client_msg_id).await? {
                    return Ok(Applied::Sent { message, duplicate: true });
                }
                let last = self.last_seq(conversation).await?;
                if let Some(target) = reply_to
                    && (*target == 0 || *target > last)
                {
                    return Err(CoreError::invalid(format!("reply_to {target} is not a message of this conversation")));
                }
                let message = Message {
                    conversation_id: conversation,
                    seq: last + 1,
                    message_id: MessageId::new(),
                    sender: record.actor,
                    sender_device: record.device,
                    client_msg_id: client_msg_id.clone(),
                    body: body.clone(),
                    reply_to: *reply_to,
                    sent_at: now_millis(),
                    edited_at: None,
                    deleted: false,
                    reactions: Default::default(),
                };
                self.last_seq.insert(conversation, message.seq);
                self.by_client_id.insert(key, self.writes.len());
                self.put(MessageWrite::Insert(message.clone()));
                Ok(Applied::Sent { message, duplicate: false })
            }
            Op::Edit { seq, body } => {
                let mut message = self.message(conversation, *seq).await?;
                if message.sender != record.actor {
                    return Err(CoreError::forbidden("only the sender can edit a message"));
                }
                if message.deleted {
                    return Err(CoreError::conflict("the message was deleted"));
                }
                message.body = body.clone();
                message.edited_at = Some(now_millis());
                self.put(MessageWrite::Update(message.clone()));
                Ok(Applied::Edited(message))
            }
            Op::Delete { seq, as_admin } => {
                let mut message = self.message(conversation, *seq).await?;
                if message.sender != record.actor && !as_admin {
                    return Err(CoreError::forbidden("only the sender or a group admin can delete a message"));
                }
                if !message.deleted {
                    message.deleted = true;
                    message.body.clear();
                    message.reactions.clear();
                    message.reply_to = None;
                    message.edited_at = Some(now_millis());
                    self.put(MessageWrite::Update(message.clone()));
                }
                Ok(Applied::Deleted(message))
            }
            Op::React { seq, emoji, add } => {
                let mut message = self.message(conversation, *seq).await?;
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
                    self.put(MessageWrite::Update(message.clone()));
                }
                Ok(Applied::Reacted(message))
            }
        }
    }
}
