//! The store seam: seven domain-level traits, one per kind of data. Each backend (redb on a single node;
//! PostgreSQL and a Cassandra-shaped message store in a cluster) implements all seven and must pass the
//! one conformance suite (`conformance`, behind the `conformance` feature) unchanged.
//!
//! The traits speak the domain (create a user, append messages, page history) and never expose a
//! backend's keys or types. Every write that returns `Ok` is durable as its doc says.

mod media;
mod records;
mod reports;
mod search;

pub use media::{BlockedHash, Completed, ContentRecord, MediaRecord, MediaStore, StoredVariant, TakenDown, Tier};

pub use records::{CursorUpdate, Device, FeedAppend, FeedEvent, FeedPage, MessageWrite, User};

pub use reports::{ReportStore, open_report_key};

pub use search::{SearchHit, SearchRequest, SearchStore};

use async_trait::async_trait;
use herald_proto::{
    Conversation, ConversationId, DeviceCursor, DeviceId, Direction, Member, Message, Millis, Role, Suspension, UserId,
};

/// A store failure. `Conflict` and `LimitExceeded` are answers about the data; `Unavailable` is the engine
/// out of reach for now (down, restarting, not answering within the timeout: a write's outcome is then
/// unknown, and a retry with the same idempotency key settles it); `Backend` is the engine failing otherwise.
/// The detail of the last two is never shown to clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store backend: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Users, their devices (logins), and whom they block.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Fails with `Conflict` when the username is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    async fn create_device(&self, device: &Device) -> StoreResult<()>;
    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>>;
    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<Device>>;
    /// Replaces the device's refresh-token hash only if it is still `expected` (compare-and-swap, so two
    /// refreshes racing with one token cannot both win), keeping `expected` as the previous hash.
    /// Returns whether it did.
    async fn rotate_refresh(
        &self,
        id: DeviceId,
        expected: [u8; 32],
        new: [u8; 32],
        new_expires_at: i64,
    ) -> StoreResult<bool>;
    /// Returns whether the device existed.
    async fn delete_device(&self, id: DeviceId) -> StoreResult<bool>;
    /// `blocker` blocks `blocked` from `at` (ms). Returns whether it is new (blocking twice keeps the first).
    async fn block(&self, blocker: UserId, blocked: UserId, at: i64) -> StoreResult<bool>;
    /// Returns whether `blocker` had blocked `blocked`.
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool>;
    /// Whom `blocker` blocks, with when, in the order of the blocked users' ids.
    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<(UserId, i64)>>;
    /// Who blocks `blocked`, in the order of their ids.
    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>>;
    /// Suspends the user (`Some`) or lifts the suspension (`None`), replacing what was there. Returns whether
    /// the user exists.
    async fn set_suspension(&self, user: UserId, suspension: Option<&Suspension>) -> StoreResult<bool>;
    /// Erases the account's personal data in one write: its username becomes [`User::deleted_username`] (the
    /// old one is free again), its password hash empty, its suspension gone and `deleted_at` set; its devices
    /// and the blocks it made or received are deleted. Erasing an erased account changes nothing (the first
    /// `deleted_at` stays). Returns whether the user exists.
    async fn erase_user(&self, user: UserId, at: Millis) -> StoreResult<bool>;
}

/// Conversations and who belongs to them.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates a group conversation with its first members (the owner among them).
    async fn create_group(&self, conversation: &Conversation, members: &[Member]) -> StoreResult<()>;
    /// Returns the direct conversation of the pair, creating `candidate` (with both as members) only if
    /// there is none yet. Atomic: two concurrent calls for one pair yield the same conversation.
    async fn get_or_create_direct(&self, candidate: &Conversation, a: UserId, b: UserId) -> StoreResult<Conversation>;
    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>>;
    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()>;
    /// Members in the order they joined.
    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>>;
    async fn member(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Member>>;
    /// Fails with `Conflict` if already a member and `LimitExceeded` if the group already has `max_members`.
    async fn add_member(&self, id: ConversationId, member: &Member, max_members: usize) -> StoreResult<()>;
    /// Returns whether the user was a member.
    async fn remove_member(&self, id: ConversationId, user: UserId) -> StoreResult<bool>;
    /// Returns whether the user was a member.
    async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> StoreResult<bool>;
    /// Every conversation the user belongs to, with its membership.
    async fn memberships(&self, user: UserId) -> StoreResult<Vec<(ConversationId, Member)>>;
}

/// Messages by conversation and seq. A commit also records, in the same transaction, which uploads each
/// message attaches (read back by [`MediaStore::attached_in`]); an update that drops attachments (a
/// deletion) drops those references. The schema this implies maps onto Cassandra as
/// `messages_by_conversation((conversation_id), seq)`, `message_ids((conversation_id, sender,
/// client_msg_id)) -> seq` and `last_sent((conversation_id, sender)) -> seq`.
/// A send's idempotency key: the conversation, the sender, and the sender's `client_msg_id`.
pub type ClientKey<'a> = (ConversationId, UserId, &'a str);

#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Applies the message writes and appends the feed entries they cause, all together or not at all (so
    /// a stored message is never missing from a member's feed); when it returns `Ok` they are durable (the
    /// embedded store fsyncs, group-committing concurrent callers into one transaction). Returns the feed
    /// position given to each entry, in order: per user dense (1, 2, 3 …) and increasing in commit order.
    /// A backend keeps at least its configured number of newest entries per user and may drop older ones.
    async fn commit_with_feed(&self, writes: &[MessageWrite], feed: &[FeedAppend]) -> StoreResult<Vec<u64>>;
    /// [`MessageStore::commit_with_feed`] without feed entries.
    async fn commit(&self, writes: &[MessageWrite]) -> StoreResult<()> {
        self.commit_with_feed(writes, &[]).await.map(|_| ())
    }
    /// Up to `limit` feed entries of `user` after position `after`, with the retained range.
    async fn feed(&self, user: UserId, after: u64, limit: usize) -> StoreResult<FeedPage>;
    /// The highest seq stored in the conversation, 0 when empty.
    async fn last_seq(&self, conversation: ConversationId) -> StoreResult<u64>;
    async fn message(&self, conversation: ConversationId, seq: u64) -> StoreResult<Option<Message>>;
    /// The message a sender stored under an idempotency key, if any.
    async fn by_client_id(
        &self,
        conversation: ConversationId,
        sender: UserId,
        client_msg_id: &str,
    ) -> StoreResult<Option<Message>> {
        Ok(self.by_client_ids(&[(conversation, sender, client_msg_id)]).await?.pop().flatten())
    }
    /// [`MessageStore::by_client_id`] for many keys at once, answers in the keys' order: the sequencer asks
    /// for a whole batch's sends with one call, so a backend reads them in one go (one transaction, one query).
    async fn by_client_ids(&self, keys: &[ClientKey<'_>]) -> StoreResult<Vec<Option<Message>>>;
    /// The highest seq `sender` has sent in the conversation outside threads, 0 if none. Maintained by
    /// `commit` in the same write, so it is exact: sending implies having read everything up to one's own
    /// message, and unread counts use it without a cursor write on the send path. A thread reply says nothing
    /// of the conversation's other messages, so it does not count.
    async fn last_sent_by(&self, conversation: ConversationId, sender: UserId) -> StoreResult<u64>;
    /// Up to `limit` replies in the thread of `root` (the messages whose `thread_root` is `root`), starting at
    /// seq `from` (inclusive) in the given direction. Kept by `commit` from each inserted message's
    /// `thread_root`; maps onto Cassandra as `thread_replies((conversation_id, thread_root), seq) -> sender`.
    async fn thread(
        &self,
        conversation: ConversationId,
        root: u64,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;
    /// How many replies in the thread of `root` have a seq above `after` and were sent by someone other than
    /// `reader`: the thread's unread count.
    async fn thread_unread(
        &self,
        conversation: ConversationId,
        root: u64,
        after: u64,
        reader: UserId,
    ) -> StoreResult<u64>;
    /// How many thread replies, of any thread, the conversation holds at seqs `after + 1 ..= upto`: what the
    /// conversation's unread count leaves out (threads keep their own). Maps onto Cassandra as
    /// `thread_replies_by_seq((conversation_id), seq)`.
    async fn thread_replies_between(&self, conversation: ConversationId, after: u64, upto: u64) -> StoreResult<u64>;
    /// Up to `limit` messages starting at `from` (inclusive) in the given direction.
    async fn history(
        &self,
        conversation: ConversationId,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> StoreResult<Vec<Message>>;
}

/// Delivered and read positions per member and device.
#[async_trait]
pub trait CursorStore: Send + Sync + 'static {
    /// Moves positions forward only (a lower value than stored is ignored); returns the resulting cursors
    /// in the order of `updates`. May be less durable than messages: losing a read marker in a crash is
    /// harmless, losing a message is not.
    async fn advance(&self, updates: &[CursorUpdate]) -> StoreResult<Vec<DeviceCursor>>;
    /// The positions of every device of `user` in the conversation.
    async fn cursors(&self, conversation: ConversationId, user: UserId) -> StoreResult<Vec<DeviceCursor>>;
    /// Moves `user`'s read position in the thread of `root` forward to `read` (a lower value is ignored) and
    /// returns the position after. One per user, not per device: every device shows the same unread count.
    /// As durable as [`CursorStore::advance`].
    async fn advance_thread_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        root: u64,
        read: u64,
    ) -> StoreResult<u64>;
    /// `user`'s read position in the thread of `root`, 0 when none.
    async fn thread_read(&self, conversation: ConversationId, user: UserId, root: u64) -> StoreResult<u64>;
}

/// A member's combined position in a conversation.
pub struct MemberPosition {
    pub devices: Vec<DeviceCursor>,
    /// The furthest any device has read, or the member's own last message if that is further.
    pub read: u64,
    pub delivered: u64,
}

impl Stores {
    /// The member's unread count in the conversation: the messages after its read position, less the thread
    /// replies among them (each thread keeps its own count).
    pub async fn unread(&self, conversation: ConversationId, last_seq: u64, read: u64) -> StoreResult<u64> {
        if read >= last_seq {
            return Ok(0);
        }
        let in_threads = self.messages.thread_replies_between(conversation, read, last_seq).await?;
        Ok((last_seq - read).saturating_sub(in_threads))
    }

    /// What the member has read and received across devices: the server-side source of unread counts, so
    /// every device shows the same number.
    pub async fn position(&self, conversation: ConversationId, user: UserId) -> StoreResult<MemberPosition> {
        let devices = self.cursors.cursors(conversation, user).await?;
        let own = self.messages.last_sent_by(conversation, user).await?;
        let read = devices.iter().map(|d| d.read).max().unwrap_or(0).max(own);
        let delivered = devices.iter().map(|d| d.delivered).max().unwrap_or(0).max(read);
        Ok(MemberPosition { devices, read, delivered })
    }
}

/// A backend that implements all seven stores with one type (both of Herald's do).
pub trait Backend:
    UserStore + ConversationStore + MessageStore + CursorStore + MediaStore + ReportStore + SearchStore
{
}

impl<T: UserStore + ConversationStore + MessageStore + CursorStore + MediaStore + ReportStore + SearchStore> Backend
    for T
{
}

impl Stores {
    /// The seven stores, all backed by `backend`.
    pub fn of<B: Backend>(backend: &std::sync::Arc<B>) -> Stores {
        Stores {
            users: backend.clone(),
            conversations: backend.clone(),
            messages: backend.clone(),
            cursors: backend.clone(),
            media: backend.clone(),
            reports: backend.clone(),
            search: backend.clone(),
        }
    }
}

/// All the stores of one backend, as the services use them.
#[derive(Clone)]
pub struct Stores {
    pub users: std::sync::Arc<dyn UserStore>,
    pub conversations: std::sync::Arc<dyn ConversationStore>,
    pub messages: std::sync::Arc<dyn MessageStore>,
    pub cursors: std::sync::Arc<dyn CursorStore>,
    pub media: std::sync::Arc<dyn MediaStore>,
    pub reports: std::sync::Arc<dyn ReportStore>,
    pub search: std::sync::Arc<dyn SearchStore>,
}
