use herald_proto::{ConversationId, DeviceId, Message, Millis, Suspension, UserId};
use serde::{Deserialize, Serialize};

/// A user account as stored: the profile plus the password hash (PHC string), which never leaves the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub password_hash: String,
    pub created_at: Millis,
    /// Set while an admin has the account suspended: no logins, no sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<Suspension>,
    /// When an admin deleted the account (`UserStore::erase_user`): the username is a placeholder, the password
    /// hash is empty, and devices and blocks are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Millis>,
}

impl User {
    pub fn profile(&self) -> herald_proto::UserProfile {
        herald_proto::UserProfile {
            id: self.id,
            username: self.username.clone(),
            created_at: self.created_at,
            deleted: self.deleted_at.is_some(),
        }
    }

    /// What an account's username becomes when it is deleted: unique (its id), and never a valid username
    /// (`:`), so nobody registers or logs in with it, while the old name is free again.
    pub fn deleted_username(id: UserId) -> String {
        format!("deleted:{id}")
    }
}

/// A device as stored: one login, holding the hash of its current refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Millis,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: Millis,
    /// The hash of the refresh token this one replaced: presenting it again is token reuse (a leak), which
    /// revokes the device. Any other wrong token is just refused, so nobody can revoke a device by guessing.
    #[serde(default)]
    pub previous_refresh_hash: Option<[u8; 32]>,
}

impl Device {
    pub fn info(&self) -> herald_proto::DeviceInfo {
        herald_proto::DeviceInfo { id: self.id, name: self.name.clone(), created_at: self.created_at }
    }
}

/// One write in a message-store commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageWrite {
    /// A new message under a seq that is not yet used.
    Insert(Message),
    /// A new version (edit, tombstone, reactions) of a stored message with the same seq, made from `base`, the
    /// version the writer read. A store that several writers share (nodes of a cluster) refuses the commit
    /// (`Conflict`) when the stored version is no longer `base`: two owners of one conversation at once (a
    /// rebalance, a paused node) then never overwrite each other's change, nor bring a deleted message back.
    /// The embedded store has one writer, the node's sequencer, and does not compare.
    Update { message: Message, base: Box<Message> },
}

impl MessageWrite {
    /// An update to `message` of the stored version `base`.
    pub fn update(message: Message, base: Message) -> Self {
        MessageWrite::Update { message, base: Box::new(base) }
    }

    pub fn message(&self) -> &Message {
        match self {
            MessageWrite::Insert(m) | MessageWrite::Update { message: m, .. } => m,
        }
    }
}

/// Advance one device's positions in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorUpdate {
    pub conversation: ConversationId,
    pub user: UserId,
    pub device: DeviceId,
    pub delivered: Option<u64>,
    pub read: Option<u64>,
}

/// What a feed entry points at. Messages are referenced, not copied, so a big group costs one small row per
/// member; a receipt carries its positions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedEvent {
    Message { conversation: ConversationId, seq: u64 },
    MessageUpdated { conversation: ConversationId, seq: u64 },
    Receipt { conversation: ConversationId, user: UserId, delivered: u64, read: u64 },
}

impl FeedEvent {
    pub fn conversation(&self) -> ConversationId {
        match self {
            FeedEvent::Message { conversation, .. }
            | FeedEvent::MessageUpdated { conversation, .. }
            | FeedEvent::Receipt { conversation, .. } => *conversation,
        }
    }
}

/// Append `event` to `user`'s feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedAppend {
    pub user: UserId,
    pub event: FeedEvent,
}

/// A page of a user's feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPage {
    /// (position, event), ascending.
    pub entries: Vec<(u64, FeedEvent)>,
    /// The oldest retained position (`last + 1` when nothing is retained): asking for anything before it
    /// cannot be answered without a gap.
    pub oldest: u64,
    /// The newest position, 0 when the feed is empty.
    pub last: u64,
}
