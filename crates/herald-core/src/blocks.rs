//! Blocking. A user blocks another; while a block stands, in either direction, the two cannot start a direct
//! conversation or write in the one they have, neither can add the other to a group (or create a group with
//! them), and neither is shown the other's typing or presence. Messages in groups they both belong to still
//! reach both: a group is not one person's to silence (a client may hide them).
//!
//! Who is separated from whom is read on every direct message and presence or typing change, so it is cached
//! per user (both directions in one set) and dropped when a block changes: here at once, and on the other
//! nodes of a cluster before the change is acknowledged (the change bus).

use crate::auth::Principal;
use crate::cache::TtlCache;
use crate::changes::{Change, ChangeBus, ChangeListener};
use crate::store::Stores;
use crate::{CoreError, CoreResult, now_millis};
use herald_proto::{BlockedUser, UserId};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most bytes of user ids the cache holds: most users block nobody, so entries are mostly empty sets.
const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;
/// Most users one user may block.
pub const MAX_BLOCKS: usize = 10_000;

pub struct Blocks {
    stores: Stores,
    /// user -> the users with a block between them and `user`, either way.
    separated: TtlCache<UserId, Arc<HashSet<UserId>>>,
    changes: OnceLock<Arc<dyn ChangeBus>>,
}

impl Blocks {
    pub fn new(stores: Stores) -> Arc<Self> {
        Arc::new(Self {
            stores,
            separated: TtlCache::weighed("blocks", Duration::from_secs(60), 1_000_000, MAX_CACHED_BYTES, |set| {
                set.capacity() * (size_of::<UserId>() + 1)
            }),
            changes: OnceLock::new(),
        })
    }

    /// Sets the bus that carries block changes to the other nodes of a cluster (once, at start).
    pub fn set_change_bus(&self, bus: Arc<dyn ChangeBus>) {
        if self.changes.set(bus).is_err() {
            tracing::warn!("change bus set twice; keeping the first");
        }
    }

    /// The users with a block between them and `user`, either way.
    pub async fn separated_from(&self, user: UserId) -> CoreResult<Arc<HashSet<UserId>>> {
        if let Some(set) = self.separated.get(&user) {
            return Ok(set);
        }
        let generation = self.separated.generation();
        let mut set: HashSet<UserId> = self.stores.users.blockers_of(user).await?.into_iter().collect();
        set.extend(self.stores.users.blocked_by(user).await?.into_iter().map(|(u, _)| u));
        let set = Arc::new(set);
        self.separated.insert_unless_invalidated(generation, user, set.clone());
        Ok(set)
    }

    /// Whether either of the two blocks the other.
    pub async fn between(&self, a: UserId, b: UserId) -> CoreResult<bool> {
        Ok(self.separated_from(a).await?.contains(&b))
    }

    /// `forbidden` when either of the two blocks the other.
    pub async fn require_none(&self, a: UserId, b: UserId) -> CoreResult<()> {
        if self.between(a, b).await? { Err(CoreError::forbidden("one of you has blocked the other")) } else { Ok(()) }
    }

    /// The caller blocks `user`. Blocking someone already blocked changes nothing.
    pub async fn block(&self, principal: Principal, user: UserId) -> CoreResult<()> {
        if user == principal.user {
            return Err(CoreError::invalid("you cannot block yourself"));
        }
        self.stores.users.user(user).await?.ok_or_else(|| CoreError::not_found("no such user"))?;
        if self.stores.users.blocked_by(principal.user).await?.len() >= MAX_BLOCKS {
            return Err(CoreError::new(
                herald_proto::ErrorCode::LimitExceeded,
                format!("a user blocks at most {MAX_BLOCKS} others"),
            ));
        }
        let outcome = self.stores.users.block(principal.user, user, now_millis()).await;
        // Whatever the store answered (a write that timed out may have happened).
        self.changed(principal.user, user).await;
        outcome?;
        Ok(())
    }

    /// The caller unblocks `user`. Unblocking someone not blocked changes nothing.
    pub async fn unblock(&self, principal: Principal, user: UserId) -> CoreResult<()> {
        let outcome = self.stores.users.unblock(principal.user, user).await;
        self.changed(principal.user, user).await;
        outcome?;
        Ok(())
    }

    /// Whom the caller blocks, with since when.
    pub async fn list(&self, principal: Principal) -> CoreResult<Vec<BlockedUser>> {
        let blocked = self.stores.users.blocked_by(principal.user).await?;
        Ok(blocked.into_iter().map(|(user_id, since)| BlockedUser { user_id, since }).collect())
    }

    /// What this node caches.
    pub fn footprint(&self) -> crate::footprint::Footprint {
        self.separated.footprint()
    }

    /// Gives back what the cache holds past its TTL.
    pub fn purge_expired(&self) {
        self.separated.purge_expired();
    }

    async fn changed(&self, blocker: UserId, blocked: UserId) {
        self.forget(blocker, blocked);
        if let Some(bus) = self.changes.get() {
            bus.announce(Change::Block { blocker, blocked }).await;
        }
    }

    fn forget(&self, a: UserId, b: UserId) {
        self.separated.invalidate(&a);
        self.separated.invalidate(&b);
    }
}

impl ChangeListener for Blocks {
    fn apply(&self, change: &Change) {
        if let Change::Block { blocker, blocked } = *change {
            self.forget(blocker, blocked);
        }
    }

    fn forget_all(&self) {
        self.separated.clear();
    }
}
