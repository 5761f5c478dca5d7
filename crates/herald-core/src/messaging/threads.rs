//! Threads: replies grouped under a root message. A reply is a message of the conversation like any other (same
//! seqs, same feed, same history), sent with `thread_root`; the partition owner checks the root and keeps its
//! summary. What is here are the reads a thread adds: its state for one member (with its own unread count, apart
//! from the conversation's), its replies page by page, and the member's read position in it.

use super::Messaging;
use crate::auth::Principal;
use crate::{CoreError, CoreResult};
use herald_proto::{
    ConversationId, Direction, HistoryPage, HistoryQuery, Message, ThreadState, UpdateThreadRead, UserId,
};

impl Messaging {
    /// The thread of `root` as the caller sees it. A message with no replies yet is a thread of none.
    pub async fn thread(
        &self,
        principal: Principal,
        conversation: ConversationId,
        root: u64,
    ) -> CoreResult<ThreadState> {
        self.conversations.require_member(principal, conversation).await?;
        let root = self.thread_root(conversation, root).await?;
        self.thread_state(principal.user, root).await
    }

    /// A page of the thread's replies, in seq order, paged as history is (`from` inclusive, `next` for the next
    /// page); `last_seq` is the thread's newest reply.
    pub async fn thread_replies(
        &self,
        principal: Principal,
        conversation: ConversationId,
        root: u64,
        q: HistoryQuery,
    ) -> CoreResult<HistoryPage> {
        self.conversations.require_member(principal, conversation).await?;
        let limit = self.conversations.page_size(q.limit)?;
        let from = super::page_start(&q, root.saturating_add(1))?;
        let messages = self.stores.messages.thread(conversation, root, from, q.dir, limit).await?;
        // The root is read (and checked: it exists and is no reply) after the page, so its newest reply is never
        // below the page's. A page of a root that is not one is empty, and is not answered.
        let last_seq = self.thread_root(conversation, root).await?.thread.map_or(0, |t| t.last_seq);
        let next = match (q.dir, messages.last()) {
            (Direction::Forward, Some(m)) if m.seq < last_seq => Some(m.seq + 1),
            // Replies are sparse among the conversation's seqs: only a full page says there may be more.
            (Direction::Backward, Some(m)) if messages.len() == limit && m.seq > root.saturating_add(1) => {
                Some(m.seq - 1)
            }
            _ => None,
        };
        Ok(HistoryPage { messages, next, last_seq })
    }

    /// Moves the caller's read position in the thread forward (never past its newest reply) and answers with
    /// the thread's state after.
    pub async fn mark_thread_read(
        &self,
        principal: Principal,
        conversation: ConversationId,
        root: u64,
        req: UpdateThreadRead,
    ) -> CoreResult<ThreadState> {
        self.conversations.require_member(principal, conversation).await?;
        self.rate.check(principal.user)?;
        let message = self.thread_root(conversation, root).await?;
        let last = message.thread.as_ref().map_or(0, |t| t.last_seq);
        if req.read > last {
            return Err(CoreError::invalid(format!(
                "position {} is past the thread's newest reply ({last})",
                req.read
            )));
        }
        self.stores.cursors.advance_thread_read(conversation, principal.user, root, req.read).await?;
        self.thread_state(principal.user, message).await
    }

    /// The message at `root`, which must be one that can have a thread.
    async fn thread_root(&self, conversation: ConversationId, root: u64) -> CoreResult<Message> {
        let message = self
            .stores
            .messages
            .message(conversation, root)
            .await?
            .ok_or_else(|| CoreError::not_found(format!("no message {root}")))?;
        if let Some(parent) = message.thread_root {
            return Err(CoreError::invalid(format!("message {root} is a reply in the thread of {parent}, not a root")));
        }
        Ok(message)
    }

    async fn thread_state(&self, user: UserId, root: Message) -> CoreResult<ThreadState> {
        let conversation = root.conversation_id;
        let read = self.stores.cursors.thread_read(conversation, user, root.seq).await?;
        let (replies, last_seq) = root.thread.as_ref().map_or((0, 0), |t| (t.replies, t.last_seq));
        let unread = if read >= last_seq {
            0
        } else {
            self.stores.messages.thread_unread(conversation, root.seq, read, user).await?
        };
        Ok(ThreadState { conversation_id: conversation, root, replies, last_seq, read, unread })
    }
}
