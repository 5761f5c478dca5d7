//! The WebSocket protocol (version 1), JSON text frames tagged by `type`. `docs/protocol.md` describes the
//! conversation between client and server; these types are its single source of truth.

use crate::{ConversationId, CursorState, DeviceId, ErrorCode, Message, MessageId, Millis, Role, UserId};
use serde::{Deserialize, Serialize};

/// The protocol version this server speaks (`/ws?v=1`).
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client sends. Requests that expect an answer carry an `id` of the client's choosing, echoed in
/// the answer (`ack`, `result`, `cursor`, `presence`, `pong` or `error`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticate when no token was given at the upgrade. Must be the first frame.
    Auth { token: String },
    /// Start (or restart) receiving events after feed position `since`. 0 asks for the whole feed, which is
    /// answered with `resync` once the feed has dropped its oldest entries. Until the first `sync`, the
    /// connection receives no events.
    Sync { since: u64 },
    Send {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        client_msg_id: String,
        body: String,
        #[serde(default)]
        reply_to: Option<u64>,
        /// Sends the message as a reply in the thread of this root message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_root: Option<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<crate::MediaId>,
    },
    Edit {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        seq: u64,
        body: String,
    },
    Delete {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        seq: u64,
    },
    React {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        seq: u64,
        emoji: String,
        add: bool,
    },
    /// This device has received everything up to `seq`.
    Delivered {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        seq: u64,
    },
    /// This device's user has read everything up to `seq`.
    Read {
        #[serde(default)]
        id: Option<String>,
        conversation_id: ConversationId,
        seq: u64,
    },
    /// Typing started (`active: true`) or stopped. It also stops by itself after the `ttl_ms` receivers get.
    Typing { conversation_id: ConversationId, active: bool },
    /// Set this user's presence. Connecting makes a user online; the last connection closing, offline.
    Presence { status: PresenceStatus },
    /// Ask for the presence of users who share a conversation with the caller (others are left out).
    PresenceQuery {
        #[serde(default)]
        id: Option<String>,
        user_ids: Vec<UserId>,
    },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// When the user was last connected, for `offline` users seen since the server started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Sent once authenticated. `pos` is the newest position of the user's feed.
    Hello {
        v: u32,
        user_id: UserId,
        device_id: DeviceId,
        pos: u64,
        heartbeat_ms: u64,
    },
    /// A message was durably stored under `seq`.
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        conversation_id: ConversationId,
        client_msg_id: String,
        seq: u64,
        message_id: MessageId,
        sent_at: Millis,
        duplicate: bool,
    },
    /// The message after an edit, delete or reaction.
    Result {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        message: Message,
    },
    /// The caller's positions after `delivered` or `read`.
    Cursor {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        cursor: CursorState,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// An event of the user's feed, at feed position `pos` (dense per user: 1, 2, 3 …).
    Event {
        pos: u64,
        event: Event,
    },
    /// Everything up to `pos` has been sent; what follows is live.
    Synced {
        pos: u64,
    },
    /// The requested position is older than the feed keeps: reload state over REST, then `sync` from `pos`.
    Resync {
        pos: u64,
        reason: String,
    },
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        active: bool,
        ttl_ms: u64,
    },
    /// Presence changes as they happen, or the answer to a `presence_query` (then with its `id`).
    Presence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        users: Vec<PresenceInfo>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The server is going away: reconnect (to any node) after `after_ms`, then `sync` from your position.
    Reconnect {
        after_ms: u64,
    },
}

/// What happened, as the feed reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A new message (including membership notices, which carry `system`).
    Message { message: Message },
    /// A new version of a stored message: edited, deleted (a tombstone) or reacted to.
    MessageUpdated { message: Message },
    /// A member's combined positions moved.
    Receipt { conversation_id: ConversationId, user_id: UserId, delivered: u64, read: u64 },
}

/// A membership or settings change, recorded in the conversation as a message so it has a seq, shows in
/// history and reaches every device through the feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SystemEvent {
    MemberAdded { user_id: UserId },
    MemberRemoved { user_id: UserId },
    MemberLeft { user_id: UserId },
    RoleChanged { user_id: UserId, role: Role },
    TitleChanged { title: String },
}

impl SystemEvent {
    /// A user who must hear of it although no longer a member (removed or left).
    pub fn departed(&self) -> Option<UserId> {
        match self {
            SystemEvent::MemberRemoved { user_id } | SystemEvent::MemberLeft { user_id } => Some(*user_id),
            _ => None,
        }
    }
}
