//! The user and conversation stores with the L2 cache in front: the same traits, so everything above sees
//! the stores it always saw (and the conformance suite runs on them unchanged). Reads of a user, a
//! conversation, its member list and one membership are cached; every write goes to the store and then
//! invalidates its scope, whatever the store answered (a write that timed out may have happened).
//! Devices are not cached: a revoked device must be refused at once, and its row is read by key anyway.

use crate::l2::{L2Cache, Layer, Lookup, Scope};
use async_trait::async_trait;
use herald_core::store::{ConversationStore, Device, StoreResult, Stores, User, UserStore};
use herald_proto::{Conversation, ConversationId, DeviceId, Member, Millis, Role, Suspension, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// `stores` with the user and conversation stores behind `l2`.
pub fn with_l2(stores: Stores, l2: Arc<L2Cache>) -> Stores {
    Stores {
        users: Arc::new(CachedUsers { inner: stores.users, l2: l2.clone(), users: Layer::new("user") }),
        conversations: Arc::new(CachedConversations {
            inner: stores.conversations,
            l2,
            conversations: Layer::new("conversation"),
            members: Layer::new("members"),
            membership: Layer::new("membership"),
        }),
        ..stores
    }
}

/// The value of `entry` in `scope`: from the cache, or from `read` (then cached).
async fn cached<T, F>(l2: &L2Cache, layer: &Layer, scope: Scope, entry: &str, read: F) -> StoreResult<T>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = StoreResult<T>>,
{
    match l2.get(layer, scope, entry).await {
        Lookup::Hit(value) => Ok(value),
        Lookup::Miss(ticket) => {
            let fresh = read.await?;
            if let Some(ticket) = ticket {
                l2.fill(ticket, &fresh).await;
            }
            Ok(fresh)
        }
    }
}

pub struct CachedUsers {
    inner: Arc<dyn UserStore>,
    l2: Arc<L2Cache>,
    users: Layer,
}

#[async_trait]
impl UserStore for CachedUsers {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let created = self.inner.create_user(user).await;
        // A lookup of the id before it existed may have cached "no such user".
        self.l2.invalidate(Scope::User(user.id)).await;
        created
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        cached(&self.l2, &self.users, Scope::User(id), "user", self.inner.user(id)).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_name(username).await
    }

    async fn create_device(&self, device: &Device) -> StoreResult<()> {
        self.inner.create_device(device).await
    }

    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
        self.inner.device(id).await
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<Device>> {
        self.inner.devices_of(user).await
    }

    async fn rotate_refresh(
        &self,
        id: DeviceId,
        expected: [u8; 32],
        new: [u8; 32],
        new_expires_at: i64,
    ) -> StoreResult<bool> {
        self.inner.rotate_refresh(id, expected, new, new_expires_at).await
    }

    async fn delete_device(&self, id: DeviceId) -> StoreResult<bool> {
        self.inner.delete_device(id).await
    }

    // Blocks are not cached here: the core keeps them per node, and the change bus tells the other nodes.
    async fn block(&self, blocker: UserId, blocked: UserId, at: i64) -> StoreResult<bool> {
        self.inner.block(blocker, blocked, at).await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.inner.unblock(blocker, blocked).await
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<(UserId, i64)>> {
        self.inner.blocked_by(blocker).await
    }

    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>> {
        self.inner.blockers_of(blocked).await
    }

    async fn set_suspension(&self, user: UserId, suspension: Option<&Suspension>) -> StoreResult<bool> {
        let outcome = self.inner.set_suspension(user, suspension).await;
        self.l2.invalidate(Scope::User(user)).await;
        outcome
    }

    async fn erase_user(&self, user: UserId, at: Millis) -> StoreResult<bool> {
        let outcome = self.inner.erase_user(user, at).await;
        self.l2.invalidate(Scope::User(user)).await;
        outcome
    }
}

pub struct CachedConversations {
    inner: Arc<dyn ConversationStore>,
    l2: Arc<L2Cache>,
    conversations: Layer,
    members: Layer,
    membership: Layer,
}

impl CachedConversations {
    async fn changed<T>(&self, id: ConversationId, outcome: StoreResult<T>) -> StoreResult<T> {
        self.l2.invalidate(Scope::Conversation(id)).await;
        outcome
    }
}

#[async_trait]
impl ConversationStore for CachedConversations {
    async fn create_group(&self, conversation: &Conversation, members: &[Member]) -> StoreResult<()> {
        let created = self.inner.create_group(conversation, members).await;
        self.changed(conversation.id, created).await
    }

    async fn get_or_create_direct(&self, candidate: &Conversation, a: UserId, b: UserId) -> StoreResult<Conversation> {
        let outcome = self.inner.get_or_create_direct(candidate, a, b).await;
        // Only a new conversation changed anything (an existing one is returned as it is); after an error the
        // candidate may have been created.
        match &outcome {
            Ok(existing) if existing.id != candidate.id => outcome,
            _ => self.changed(candidate.id, outcome).await,
        }
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        let scope = Scope::Conversation(id);
        cached(&self.l2, &self.conversations, scope, "conversation", self.inner.conversation(id)).await
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        let outcome = self.inner.set_title(id, title).await;
        self.changed(id, outcome).await
    }

    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>> {
        cached(&self.l2, &self.members, Scope::Conversation(id), "members", self.inner.members(id)).await
    }

    async fn member(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Member>> {
        let entry = format!("member:{user}");
        cached(&self.l2, &self.membership, Scope::Conversation(id), &entry, self.inner.member(id, user)).await
    }

    async fn add_member(&self, id: ConversationId, member: &Member, max_members: usize) -> StoreResult<()> {
        let outcome = self.inner.add_member(id, member, max_members).await;
        self.changed(id, outcome).await
    }

    async fn remove_member(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        let outcome = self.inner.remove_member(id, user).await;
        self.changed(id, outcome).await
    }

    async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> StoreResult<bool> {
        let outcome = self.inner.set_role(id, user, role).await;
        self.changed(id, outcome).await
    }

    async fn memberships(&self, user: UserId) -> StoreResult<Vec<(ConversationId, Member)>> {
        self.inner.memberships(user).await
    }
}
