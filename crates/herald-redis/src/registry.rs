//! The connection registry: for each user, the set of nodes holding one of its connections. A node adds
//! itself when a user's first connection arrives and removes itself when the last one goes, in that order per
//! user (one worker applies the changes). A dead node's entries are removed by the nodes that find them while
//! delivering; after Redis lost its data (a restart) each node writes all its users again.
//!
//! Adding a user is followed by a catch-up of that user's connections here: an event sequenced just before
//! the entry was visible was not sent to this node, but it is in the feed by then, so the catch-up reads it.

use crate::keys::Keys;
use fred::prelude::*;
use herald_core::hub::{ConnectionListener, Hub};
use herald_proto::UserId;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Registry changes waiting for the worker; past this the worker writes everything again instead.
const QUEUE: usize = 65_536;

pub struct Registry {
    client: Client,
    keys: Keys,
    node: String,
    tx: mpsc::Sender<(UserId, bool)>,
    /// Some change may be missing in Redis: write every local user again at the next chance.
    dirty: Arc<AtomicBool>,
}

impl Registry {
    /// Starts the worker that writes this node's changes, in order.
    pub fn start(client: Client, keys: Keys, node: String, hub: Arc<Hub>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let registry = Arc::new(Self { client, keys, node, tx, dirty: Arc::new(AtomicBool::new(false)) });
        tokio::spawn(Worker { registry: Arc::downgrade(&registry), rx, hub }.run());
        registry
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

    /// Removes entries that name a dead node.
    pub async fn forget(&self, stale: Vec<(UserId, String)>) -> Result<(), Error> {
        let pipeline = self.client.pipeline();
        for (user, node) in stale {
            pipeline.srem::<(), _, _>(self.keys.user_nodes(user), node).await?;
        }
        pipeline.all::<Vec<Value>>().await.map(|_| ())
    }

    /// Writes every user connected here (after Redis lost data, or a change could not be written).
    pub async fn reassert(&self, hub: &Hub) -> Result<(), Error> {
        self.dirty.store(false, Ordering::Release);
        let users = hub.connected_users();
        for chunk in users.chunks(1_000) {
            let pipeline = self.client.pipeline();
            for user in chunk {
                pipeline.sadd::<(), _, _>(self.keys.user_nodes(*user), self.node.as_str()).await?;
            }
            if let Err(e) = pipeline.all::<Vec<Value>>().await {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        // Events for these users may have gone elsewhere meanwhile: the caller catches the connections up.
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    fn queue(&self, user: UserId, here: bool) {
        if self.tx.try_send((user, here)).is_err() {
            self.dirty.store(true, Ordering::Release);
        }
    }
}

impl ConnectionListener for Registry {
    fn first_connected(&self, user: UserId) {
        self.queue(user, true);
    }

    fn last_disconnected(&self, user: UserId) {
        self.queue(user, false);
    }
}

struct Worker {
    registry: std::sync::Weak<Registry>,
    rx: mpsc::Receiver<(UserId, bool)>,
    hub: Arc<Hub>,
}

impl Worker {
    async fn run(mut self) {
        while let Some((user, here)) = self.rx.recv().await {
            let Some(registry) = self.registry.upgrade() else { return };
            let key = registry.keys.user_nodes(user);
            let node = registry.node.as_str();
            let written = if here {
                registry.client.sadd::<(), _, _>(key, node).await
            } else {
                registry.client.srem::<(), _, _>(key, node).await
            };
            match written {
                Ok(()) if here => self.hub.catch_up(user),
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "connection registry write failed; rewriting later");
                    registry.dirty.store(true, Ordering::Release);
                }
            }
        }
    }
}
