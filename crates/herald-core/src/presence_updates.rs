//! The presence changes a cluster announces, offered to consumers outside Herald (analytics, a "last seen"
//! table, moderation tools): the brief's `presence_updates` topic. Nodes learn presence from one another over
//! the peers (docs/cluster.md explains why that path, not the topic, carries it); this is the copy for others.

use herald_proto::{Millis, PresenceStatus, UserId};
use serde::{Deserialize, Serialize};

/// One cluster-wide change of a user's presence, as announced to the user's contacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// When the user was last connected, for `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
    /// When the change was announced.
    pub at: Millis,
    /// The node that announced it.
    pub node: String,
}

/// Where a node publishes the presence changes it announces. Called on the announcing task: queue, never
/// wait; an update that cannot be queued is dropped (and counted), as presence frames are.
pub trait PresenceUpdates: Send + Sync + 'static {
    fn publish(&self, update: PresenceUpdate);
}
