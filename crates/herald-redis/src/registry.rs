//! The connection registry: for each user, the set of nodes holding one of its connections, and for each
//! node, the set of its users. A node adds itself when a user's first connection arrives and removes itself
//! when the last one goes, in that order per user (one worker applies the changes); the same scripts keep the
//! user's presence (see [`crate::presence`]) and say when it changed for the whole cluster, which the hub
//! then announces. A dead node's users are swept by the nodes that see it dead (each user once: the removal
//! is one script); a node that finds it was swept (it only stalled) writes its users again, as it does after
//! Redis lost its data (a restart).
//!
//! Adding a user is followed by a catch-up of that user's connections here: an event sequenced just before
//! the entry was visible was not sent to this node, but it is in the feed by then, so the catch-up reads it.

use crate::keys::Keys;
use crate::presence::Presence;
use fred::prelude::*;
use herald_core::hub::Hub;
use herald_proto::{PresenceStatus, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Registry changes waiting for the worker; past this the worker writes everything again instead.
const QUEUE: usize = 65_536;
/// Users written (or swept) per pipeline.
const CHUNK: usize = 1_000;

/// A change to write, in order per user.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Arrive(UserId),
    Leave(UserId),
    Status(UserId, PresenceStatus),
}

pub struct Registry {
    client: Client,
    keys: Keys,
    node: String,
    presence: Presence,
    tx: mpsc::Sender<Op>,
    /// Some change may be missing in Redis: write every local user again at the next chance.
    dirty: Arc<AtomicBool>,
    /// How long a sweep's mark stays for a stalled node to find.
    swept_ttl: Duration,
}

impl Registry {
    /// Starts the worker that writes this node's changes, in order.
    pub fn start(client: Client, keys: Keys, node: String, hub: Arc<Hub>, swept_ttl: Duration) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let presence = Presence::new(client.clone(), keys.clone());
        let registry =
            Arc::new(Self { client, keys, node, presence, tx, dirty: Arc::new(AtomicBool::new(false)), swept_ttl });
        tokio::spawn(Worker { registry: Arc::downgrade(&registry), rx, hub }.run());
        registry
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// The nodes holding a connection of each of `users` (in the same order), as Redis has them.
    pub async fn nodes_of(&self, users: &[UserId]) -> Result<Vec<Vec<String>>, Error> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for user in users {
            pipeline.smembers::<(), _>(self.keys.user_nodes(*user)).await?;
        }
        pipeline.all().await
    }

    /// Removes entries that name a dead node (met while delivering, before a sweep got to them).
    pub async fn forget(&self, stale: Vec<(UserId, String)>) -> Result<(), Error> {
        let pipeline = self.client.pipeline();
        for (user, node) in stale {
            pipeline.srem::<(), _, _>(self.keys.user_nodes(user), node).await?;
        }
        pipeline.all::<Vec<Value>>().await.map(|_| ())
    }

    /// Removes dead `node` from the sets of all its users, making offline those it was the last node of
    /// (their contacts are told through `hub`), and marks the node swept. Returns how many users it held.
    pub async fn sweep(&self, node: &str, hub: &Hub) -> Result<usize, Error> {
        let users: Vec<UserId> = self.users_of(node).await?;
        if users.is_empty() {
            return Ok(0);
        }
        self.leave(&users, node, hub).await?;
        if node != self.node {
            let ttl = Expiration::PX(self.swept_ttl.as_millis() as i64);
            self.client.set::<(), _, _>(self.keys.node_swept(node), 1, Some(ttl), None, false).await?;
        }
        self.client.del::<(), _>(self.keys.node_users(node)).await?;
        tracing::info!(%node, users = users.len(), "swept the connections of a dead node");
        Ok(users.len())
    }

    /// Whether another node swept this one (it was taken for dead); clears the mark.
    pub async fn was_swept(&self) -> Result<bool, Error> {
        let deleted: i64 = self.client.del(self.keys.node_swept(&self.node)).await?;
        Ok(deleted > 0)
    }

    /// Makes Redis say what this node holds (after Redis lost data, a change could not be written, or this
    /// node was swept): every user connected here is written again, without announcing them (as far as
    /// their contacts know they never left), and users Redis still has here who left meanwhile are removed
    /// and announced.
    pub async fn reassert(&self, hub: &Hub) -> Result<(), Error> {
        self.dirty.store(false, Ordering::Release);
        let result = async {
            let connected = hub.connected_users();
            let connected_set: std::collections::HashSet<UserId> = connected.iter().copied().collect();
            let gone: Vec<UserId> =
                self.users_of(&self.node).await?.into_iter().filter(|u| !connected_set.contains(u)).collect();
            self.leave(&gone, &self.node, hub).await?;
            for chunk in connected.chunks(CHUNK) {
                self.presence.arrive(chunk, &self.node).await?;
                let members: Vec<String> = chunk.iter().map(ToString::to_string).collect();
                self.client.sadd::<(), _, _>(self.keys.node_users(&self.node), members).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        // Events for these users may have gone elsewhere meanwhile: the caller catches the connections up.
        result
    }

    /// The users Redis has on `node`.
    async fn users_of(&self, node: &str) -> Result<Vec<UserId>, Error> {
        let users: Vec<String> = self.client.smembers(self.keys.node_users(node)).await?;
        Ok(users.iter().filter_map(|u| u.parse().ok()).collect())
    }

    /// Removes `node` from `users`' sets (and them from its set), announcing those who went offline.
    async fn leave(&self, users: &[UserId], node: &str, hub: &Hub) -> Result<(), Error> {
        let now = herald_core::now_millis();
        for chunk in users.chunks(CHUNK) {
            let went = self.presence.leave(chunk, node, now).await?;
            for (user, _) in chunk.iter().zip(went).filter(|(_, went)| *went) {
                hub.presence_changed(*user);
            }
            let members: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            self.client.srem::<(), _, _>(self.keys.node_users(node), members).await?;
        }
        Ok(())
    }

    /// Makes the next tick write everything again.
    pub fn queue_reassert(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Queues a change for the worker (never waits: called under the hub's lock).
    pub fn queue(&self, op: Op) {
        if self.tx.try_send(op).is_err() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Writes one change; true if the user's presence changed for the whole cluster.
    async fn write(&self, op: Op) -> Result<bool, Error> {
        let node = self.node.as_str();
        match op {
            Op::Arrive(user) => {
                let came = self.presence.arrive(&[user], node).await?.first() == Some(&true);
                self.client.sadd::<(), _, _>(self.keys.node_users(node), user.to_string()).await?;
                Ok(came)
            }
            Op::Leave(user) => {
                let went = self.presence.leave(&[user], node, herald_core::now_millis()).await?.first() == Some(&true);
                self.client.srem::<(), _, _>(self.keys.node_users(node), user.to_string()).await?;
                Ok(went)
            }
            Op::Status(user, status) => self.presence.set_status(user, status).await,
        }
    }
}

struct Worker {
    registry: std::sync::Weak<Registry>,
    rx: mpsc::Receiver<Op>,
    hub: Arc<Hub>,
}

impl Worker {
    async fn run(mut self) {
        while let Some(op) = self.rx.recv().await {
            let Some(registry) = self.registry.upgrade() else { return };
            match registry.write(op).await {
                Ok(changed) => {
                    let user = match op {
                        Op::Arrive(user) => {
                            self.hub.catch_up(user);
                            user
                        }
                        Op::Leave(user) | Op::Status(user, _) => user,
                    };
                    if changed {
                        self.hub.presence_changed(user);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection registry write failed; rewriting later");
                    registry.dirty.store(true, Ordering::Release);
                }
            }
        }
    }
}
