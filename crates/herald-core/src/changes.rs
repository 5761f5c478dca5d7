//! Changes that other nodes' caches must hear of before the change is acknowledged. A node caches
//! memberships (who may read and send) for a while; in a cluster a member removed on one node must not keep
//! reading on another until a TTL runs out, so the node that makes the change announces it to every node
//! and waits until they have applied it (or could not be reached: see the cluster backend's rules) before
//! answering its client. On one node there is nobody to tell.

use async_trait::async_trait;
use herald_proto::{ConversationId, DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// `user`'s membership of `conversation` was added, removed or changed role.
    Membership { conversation: ConversationId, user: UserId },
    /// `blocker` blocked or unblocked `blocked`.
    Block { blocker: UserId, blocked: UserId },
    /// `device` of `user` was logged out or revoked, or (`None`) every device of `user` was (a suspension):
    /// their connections close wherever they are.
    Revoked { user: UserId, device: Option<DeviceId> },
}

/// Carries changes to the other nodes.
#[async_trait]
pub trait ChangeBus: Send + Sync + 'static {
    /// Returns once every other live node has applied `change`, or after the bus's timeout.
    async fn announce(&self, change: Change);
}

/// Applies changes announced by other nodes to this node's caches.
pub trait ChangeListener: Send + Sync + 'static {
    fn apply(&self, change: &Change);
    /// Changes may have been missed (the link to the other nodes broke): forget everything cached that a
    /// change could have touched.
    fn forget_all(&self);
}
