//! The hub's view of the other nodes ([`herald_core::peers::Peers`]) on Redis: arrivals, departures and
//! status changes go to the registry's worker (in order per user), presence is read where the registry keeps
//! it, and ephemeral frames take the delivery publisher's way to the nodes holding their users.

use crate::delivery::ClusterDelivery;
use crate::registry::{Op, Registry};
use async_trait::async_trait;
use bytes::Bytes;
use herald_core::peers::Peers;
use herald_core::{CoreError, CoreResult};
use herald_proto::{PresenceInfo, PresenceStatus, UserId};
use std::sync::Arc;

pub struct RedisPeers {
    pub registry: Arc<Registry>,
    pub delivery: Arc<ClusterDelivery>,
}

#[async_trait]
impl Peers for RedisPeers {
    fn first_connected(&self, user: UserId) {
        self.registry.queue(Op::Arrive(user));
    }

    fn last_disconnected(&self, user: UserId) {
        self.registry.queue(Op::Leave(user));
    }

    fn status_set(&self, user: UserId, status: PresenceStatus) {
        self.registry.queue(Op::Status(user, status));
    }

    async fn presence(&self, users: &[UserId]) -> CoreResult<Vec<PresenceInfo>> {
        self.registry.presence().lookup(users).await.map_err(|e| {
            tracing::debug!(error = %e, "presence lookup failed");
            CoreError::unavailable("presence is unavailable for a moment; retry")
        })
    }

    fn offer_elsewhere(&self, users: Vec<UserId>, frame: Bytes) {
        self.delivery.offer_elsewhere(users, frame);
    }
}
