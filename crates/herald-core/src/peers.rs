//! The other nodes of a cluster, as this node's [`Hub`](crate::hub::Hub) needs them: who is connected where,
//! a user's presence over every node, and ephemeral frames (presence, typing) for users connected elsewhere.
//! On one node there are none and the hub keeps all of it itself.
//!
//! Presence in a cluster is derived from where a user is connected: online while any node holds one of its
//! connections, with the explicit status (away) and the last-seen time kept beside that. The backend decides
//! when a user's presence changed for the whole cluster (its first connection anywhere, its last one gone, a
//! status set) and tells the hub of that node, which announces the state current at the end of its coalescing
//! window. The announced changes also go to [`crate::presence_updates`] (the brief's `presence_updates`
//! topic) for consumers outside Herald; docs/cluster.md says why the topic does not carry presence between
//! nodes.

use crate::CoreResult;
use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::{PresenceInfo, PresenceStatus, UserId};

#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// `user`'s first connection on this node opened. Called in order for each user, under the hub's
    /// connection lock: queue, never wait.
    fn first_connected(&self, user: UserId);
    /// `user`'s last connection on this node closed (same rules).
    fn last_disconnected(&self, user: UserId);
    /// A user connected here set an explicit status (online or away); queued in order with the above.
    fn status_set(&self, user: UserId, status: PresenceStatus);
    /// The presence of `users` (in the same order) over the whole cluster.
    async fn presence(&self, users: &[UserId]) -> CoreResult<Vec<PresenceInfo>>;
    /// Offers an ephemeral frame to `users`' connections on the other nodes: best effort, never repaired
    /// (a lost typing or presence frame is superseded by the next one, or asked for).
    fn offer_elsewhere(&self, users: Vec<UserId>, frame: Bytes);
}
