//! The gateway half of the write path: authenticate (done by the transport), authorise, validate, rate
//! limit, append to the log keyed by conversation, and wait for the partition owner's outcome. Reads
//! (history, cursors) go straight to the stores.

use crate::auth::Principal;
use crate::conversations::Conversations;
use crate::delivery::Applied;
use crate::limits::{Limits, UserRateLimiter};
use crate::log::Op;
use crate::store::{CursorUpdate, Stores};
use crate::submit::Submitter;
use crate::{CoreError, CoreResult};
use herald_proto::{
    ConversationId, CursorState, Direction, HistoryPage, HistoryQuery, Message, Role, SendAck, SendMessage,
    UpdateCursor,
};
use std::sync::Arc;

mod threads;

const MAX_CLIENT_MSG_ID_CHARS: usize = 64;
const MAX_EMOJI_CHARS: usize = 16;

pub struct Messaging {
    stores: Stores,
    conversations: Arc<Conversations>,
    submitter: Arc<Submitter>,
    limits: Limits,
    rate: UserRateLimiter,
}

impl Messaging {
    pub fn new(stores: Stores, conversations: Arc<Conversations>, submitter: Arc<Submitter>, limits: Limits) -> Self {
        let rate = UserRateLimiter::for_sends(&limits);
        Self { stores, conversations, submitter, limits, rate }
    }

    pub fn rate_limiter(&self) -> &UserRateLimiter {
        &self.rate
    }

    /// Sends a message. Returns once it is durably stored; a retry with the same `client_msg_id` returns
    /// the original ack with `duplicate: true`.
    pub async fn send(
        &self,
        principal: Principal,
        conversation: ConversationId,
        req: SendMessage,
    ) -> CoreResult<SendAck> {
        validate_client_msg_id(&req.client_msg_id)?;
        // A message is text, attachments, or both: only a message with attachments may have no body.
        if !req.body.is_empty() || req.attachments.is_empty() {
            self.validate_body(&req.body)?;
        }
        if req.reply_to == Some(0) {
            return Err(CoreError::invalid("reply_to must be a seq (1 or more)"));
        }
        if req.thread_root == Some(0) {
            return Err(CoreError::invalid("thread_root must be a seq (1 or more)"));
        }
        self.conversations.require_member(principal, conversation).await?;
        self.conversations.require_unblocked_direct(principal, conversation).await?;
        self.rate.check(principal.user)?;
        let attachments =
            crate::media::attachments(&self.stores, &self.conversations, principal, &req.attachments).await?;
        let op = Op::Send {
            client_msg_id: req.client_msg_id,
            body: req.body,
            reply_to: req.reply_to,
            thread_root: req.thread_root,
            attachments,
        };
        match self.submitter.submit(principal, conversation, op).await? {
            Applied::Sent { message, duplicate } => Ok(SendAck {
                conversation_id: conversation,
                client_msg_id: message.client_msg_id,
                seq: message.seq,
                message_id: message.message_id,
                sent_at: message.sent_at,
                duplicate,
            }),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn edit(
        &self,
        principal: Principal,
        conversation: ConversationId,
        seq: u64,
        body: String,
    ) -> CoreResult<Message> {
        self.validate_body(&body)?;
        self.conversations.require_member(principal, conversation).await?;
        self.conversations.require_unblocked_direct(principal, conversation).await?;
        self.rate.check(principal.user)?;
        self.submitter.submit_for_message(principal, conversation, Op::Edit { seq, body }).await
    }

    pub async fn delete(&self, principal: Principal, conversation: ConversationId, seq: u64) -> CoreResult<Message> {
        let me = self.conversations.require_member(principal, conversation).await?;
        self.rate.check(principal.user)?;
        let op = Op::Delete { seq, as_admin: me.role >= Role::Admin };
        self.submitter.submit_for_message(principal, conversation, op).await
    }

    pub async fn react(
        &self,
        principal: Principal,
        conversation: ConversationId,
        seq: u64,
        emoji: String,
        add: bool,
    ) -> CoreResult<Message> {
        let chars = emoji.chars().count();
        if chars == 0 || chars > MAX_EMOJI_CHARS || emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CoreError::invalid(format!("a reaction is 1 to {MAX_EMOJI_CHARS} non-space characters")));
        }
        self.conversations.require_member(principal, conversation).await?;
        self.conversations.require_unblocked_direct(principal, conversation).await?;
        self.rate.check(principal.user)?;
        self.submitter.submit_for_message(principal, conversation, Op::React { seq, emoji, add }).await
    }

    pub async fn history(
        &self,
        principal: Principal,
        conversation: ConversationId,
        q: HistoryQuery,
    ) -> CoreResult<HistoryPage> {
        self.conversations.require_member(principal, conversation).await?;
        let limit = self.conversations.page_size(q.limit)?;
        let from = page_start(&q, 1)?;
        let messages = self.stores.messages.history(conversation, from, q.dir, limit).await?;
        // Read after the page, so it is never below the page's newest seq.
        let last_seq = self.stores.messages.last_seq(conversation).await?;
        let next = match (q.dir, messages.last()) {
            (Direction::Forward, Some(m)) if m.seq < last_seq => Some(m.seq + 1),
            (Direction::Backward, Some(m)) if m.seq > 1 => Some(m.seq - 1),
            _ => None,
        };
        Ok(HistoryPage { messages, next, last_seq })
    }

    /// Moves this device's delivered/read positions forward (never past the last message).
    pub async fn update_cursor(
        &self,
        principal: Principal,
        conversation: ConversationId,
        req: UpdateCursor,
    ) -> CoreResult<CursorState> {
        self.conversations.require_member(principal, conversation).await?;
        self.rate.check(principal.user)?;
        if req.delivered.is_none() && req.read.is_none() {
            return Err(CoreError::invalid("give delivered, read, or both"));
        }
        let last_seq = self.stores.messages.last_seq(conversation).await?;
        for value in [req.delivered, req.read].into_iter().flatten() {
            if value > last_seq {
                return Err(CoreError::invalid(format!("position {value} is past the last message ({last_seq})")));
            }
        }
        // Reading a message implies it was delivered.
        let delivered = req.delivered.max(req.read);
        self.stores
            .cursors
            .advance(&[CursorUpdate {
                conversation,
                user: principal.user,
                device: principal.device,
                delivered,
                read: req.read,
            }])
            .await?;
        // Announce the new positions to the members (the sequencer skips it when nothing moved).
        self.submitter.submit(principal, conversation, Op::Receipt).await?;
        self.cursor_state(principal, conversation).await
    }

    pub async fn cursor_state(&self, principal: Principal, conversation: ConversationId) -> CoreResult<CursorState> {
        self.conversations.require_member(principal, conversation).await?;
        let position = self.stores.position(conversation, principal.user).await?;
        let last_seq = self.stores.messages.last_seq(conversation).await?;
        let (read, delivered, devices) = (position.read, position.delivered, position.devices);
        Ok(CursorState {
            conversation_id: conversation,
            last_seq,
            delivered,
            read,
            unread: self.stores.unread(conversation, last_seq, read).await?,
            devices,
        })
    }

    fn validate_body(&self, body: &str) -> CoreResult<()> {
        if body.trim().is_empty() {
            return Err(CoreError::invalid("body must not be empty"));
        }
        if body.len() > self.limits.max_message_bytes {
            return Err(CoreError::new(
                herald_proto::ErrorCode::PayloadTooLarge,
                format!("body is larger than {} bytes", self.limits.max_message_bytes),
            ));
        }
        Ok(())
    }
}

/// Where a page of history (or of a thread) starts: `from` as given (a seq, 1 or more), else `first` going forward
/// and the newest going backward.
fn page_start(q: &HistoryQuery, first: u64) -> CoreResult<u64> {
    match (q.from, q.dir) {
        (Some(0), _) => Err(CoreError::invalid("from must be a seq (1 or more)")),
        (Some(from), _) => Ok(from),
        (None, Direction::Forward) => Ok(first),
        (None, Direction::Backward) => Ok(u64::MAX),
    }
}

fn validate_client_msg_id(id: &str) -> CoreResult<()> {
    // A leading '~' is reserved for the keys of the server's own notices.
    let ok = !id.is_empty()
        && !id.starts_with('~')
        && id.chars().count() <= MAX_CLIENT_MSG_ID_CHARS
        && id.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_CHARS} printable ASCII characters, not starting with '~'"
        )))
    }
}

fn unexpected(applied: &Applied) -> CoreError {
    CoreError::Internal(format!("unexpected outcome {applied:?}"))
}

/// A page of a user's feed, resolved to the events clients receive.
pub struct FeedView {
    pub events: Vec<(u64, herald_proto::Event)>,
    /// The oldest retained position; resuming from before `oldest - 1` would leave a gap.
    pub oldest: u64,
    pub last: u64,
}

impl Messaging {
    /// Up to `limit` events of `user`'s feed after `after`. Messages are read as they are now (an edited
    /// message shows its edit), which a client applies idempotently by seq.
    pub async fn feed(&self, user: herald_proto::UserId, after: u64, limit: usize) -> CoreResult<FeedView> {
        use crate::store::FeedEvent;
        use herald_proto::Event;
        let page = self.stores.messages.feed(user, after, limit).await?;
        let mut events = Vec::with_capacity(page.entries.len());
        for (pos, entry) in page.entries {
            let event = match entry {
                FeedEvent::Message { conversation, seq } | FeedEvent::MessageUpdated { conversation, seq } => {
                    let Some(message) = self.stores.messages.message(conversation, seq).await? else {
                        return Err(CoreError::Internal(format!(
                            "feed of {user} points at missing {conversation}/{seq}"
                        )));
                    };
                    if matches!(entry, FeedEvent::Message { .. }) {
                        Event::Message { message }
                    } else {
                        Event::MessageUpdated { message }
                    }
                }
                FeedEvent::Receipt { conversation, user, delivered, read } => {
                    Event::Receipt { conversation_id: conversation, user_id: user, delivered, read }
                }
            };
            events.push((pos, event));
        }
        Ok(FeedView { events, oldest: page.oldest, last: page.last })
    }
}
