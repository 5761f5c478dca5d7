//! The data Herald keeps and shows: users, devices, conversations, members, messages and cursors.
//! These types are both what the stores hold and what clients receive.

use crate::{ConversationId, DeviceId, MessageId, Millis, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A user as other users see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserProfile {
    pub id: UserId,
    /// For a deleted account, a placeholder (`deleted:` and its id) that no one can register or log in with.
    pub username: String,
    pub created_at: Millis,
    /// The account was deleted: its personal data is erased; its messages stay under this id (or were
    /// removed, as the server is configured).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// One login of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Exactly two users; exactly one such conversation per pair.
    Direct,
    /// A titled group with an owner, admins and members.
    Group,
}

/// What a member may do in a group. Ordered: an owner can do all an admin can, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    /// Groups only.
    pub title: Option<String>,
    pub created_by: UserId,
    pub created_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user_id: UserId,
    pub role: Role,
    pub joined_at: Millis,
}

/// A stored message. `seq` is dense per conversation (1, 2, 3 …) and assigned once by the owner of the
/// conversation's log partition; it, not any clock, is the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub conversation_id: ConversationId,
    pub seq: u64,
    pub message_id: MessageId,
    pub sender: UserId,
    pub sender_device: DeviceId,
    /// The sender's idempotency key: a retried send with the same key returns this message.
    pub client_msg_id: String,
    /// Empty once deleted.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Set on a reply in a thread: the seq of the thread's root, a message of the same conversation that is not
    /// itself in a thread. Thread replies share the conversation's seqs, feed and history; clients show them
    /// under their root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<u64>,
    /// Set on a thread's root once it has a reply, and kept current by the server as replies arrive (a reply's
    /// own event is the news of it: the root is not announced again for each reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    /// Server time when the message was sequenced. Informational; never used for order.
    pub sent_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Millis>,
    /// A tombstone: deleted for everyone. The seq stays so the sequence has no gap.
    #[serde(default)]
    pub deleted: bool,
    /// Emoji -> users who reacted with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, BTreeSet<UserId>>,
    /// Set on membership and settings notices, which the server writes; `body` is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::SystemEvent>,
    /// Uploads attached to the message (a snapshot taken when it was sent). Emptied when it is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::Attachment>,
}

/// What a thread's root says of its replies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThreadSummary {
    /// Replies sent, deleted ones included (a deleted reply keeps its seq, as in the conversation).
    pub replies: u64,
    /// The seq of the newest reply.
    pub last_seq: u64,
    /// When the newest reply was sequenced.
    pub last_reply_at: Millis,
}

/// A thread as one member sees it: its root, its replies, and this member's own read position in it (threads
/// keep their own unread state, apart from the conversation's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ThreadState {
    pub conversation_id: ConversationId,
    pub root: Message,
    /// Replies so far, and the seq of the newest (0 when none).
    pub replies: u64,
    pub last_seq: u64,
    /// The furthest reply this user has marked read in the thread (0 when none).
    pub read: u64,
    /// Replies after `read` sent by others.
    pub unread: u64,
}

/// The answer to a send: the message is durably stored under `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendAck {
    pub conversation_id: ConversationId,
    pub client_msg_id: String,
    pub seq: u64,
    pub message_id: MessageId,
    pub sent_at: Millis,
    /// True when this send was a retry of one already stored: nothing new was stored.
    pub duplicate: bool,
}

/// Which way to page through history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Ascending seq, starting at `from` (inclusive).
    #[default]
    Forward,
    /// Descending seq, starting at `from` (inclusive).
    Backward,
}

/// Delivered and read positions of one device in one conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceCursor {
    pub device_id: DeviceId,
    pub delivered: u64,
    pub read: u64,
}

/// A member's positions in a conversation, per device and combined. Unread counts come from here: the
/// user's read position is the furthest any of its devices has read, so every device shows the same count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CursorState {
    pub conversation_id: ConversationId,
    pub last_seq: u64,
    pub delivered: u64,
    pub read: u64,
    pub unread: u64,
    pub devices: Vec<DeviceCursor>,
}

/// One row of "my conversations".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub role: Role,
    /// For direct conversations: the other user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<UserId>,
    pub last_seq: u64,
    pub last_message: Option<Message>,
    /// The time of the last message, or the creation time when there is none.
    pub last_activity_at: Millis,
    pub read: u64,
    pub unread: u64,
}
