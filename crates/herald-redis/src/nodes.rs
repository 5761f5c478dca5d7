//! The node registry: every node announces itself (id, address, connections, draining) each tick; one not
//! heard from within the node TTL is taken for dead and, much later, removed from the table by whoever sees
//! it. Announcements carry the node's wall clock: nodes are expected to keep their clocks in sync (NTP), and
//! the TTL is seconds, far above any sane skew.

use crate::keys::Keys;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// HTTP base URL the other nodes reach it at.
    pub url: String,
    pub connections: u64,
    /// Shutting down: takes no new partitions and hands its own over.
    pub draining: bool,
    /// When it last announced itself (milliseconds since the epoch, its clock).
    pub seen_ms: i64,
}

pub struct Nodes {
    client: Client,
    key: String,
    ttl: Duration,
}

impl Nodes {
    pub fn new(client: Client, keys: &Keys, ttl: Duration) -> Self {
        Self { client, key: keys.nodes(), ttl }
    }

    pub async fn announce(&self, info: &NodeInfo) -> Result<(), Error> {
        let json = serde_json::to_string(info).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?;
        self.client.hset::<(), _, _>(&self.key, (info.id.as_str(), json)).await
    }

    /// The nodes heard from within the TTL, by id, and those silent for longer (dead), with how long each has
    /// been silent. Entries silent for 100 TTLs are deleted on the way (and still listed as dead this once).
    pub async fn read(&self) -> Result<(HashMap<String, NodeInfo>, HashMap<String, Duration>), Error> {
        let all: HashMap<String, String> = self.client.hgetall(&self.key).await?;
        let now = herald_core::now_millis();
        let ttl = self.ttl.as_millis() as i64;
        let mut live = HashMap::new();
        let mut dead = HashMap::new();
        let mut gone = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<NodeInfo>(&json) {
                Ok(info) if now - info.seen_ms <= ttl => {
                    live.insert(id, info);
                }
                Ok(info) if now - info.seen_ms > 100 * ttl => gone.push(id),
                Ok(info) => {
                    dead.insert(id, Duration::from_millis((now - info.seen_ms).max(0) as u64));
                }
                Err(e) => {
                    tracing::warn!(node = %id, error = %e, "unreadable node announcement; removing it");
                    gone.push(id);
                }
            }
        }
        if !gone.is_empty() {
            self.client.hdel::<(), _, _>(&self.key, gone.clone()).await?;
        }
        dead.extend(gone.into_iter().map(|id| (id, self.ttl * 100)));
        Ok((live, dead))
    }

    /// Removes this node's announcement (a clean shutdown), so others need not wait for the TTL.
    pub async fn leave(&self, id: &str) -> Result<(), Error> {
        self.client.hdel::<(), _, _>(&self.key, id).await
    }
}
