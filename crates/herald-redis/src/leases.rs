//! Partition leases: a key per partition holding the owner's node id, set only if absent and expiring unless
//! the owner renews it. A lease is not a fence by itself (a paused owner can wake up after its lease lapsed and
//! write once more): the store's conditional write is the fence (`seq = last + 1` in the same statement), and
//! a node that finds its lease gone stops processing the partition at its next tick.

use crate::keys::Keys;
use fred::prelude::*;
use std::time::Duration;

/// Renews the leases among KEYS that ARGV[1] holds; returns their 1-based indexes.
const RENEW: &str = r"
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed[#renewed + 1] = i
  end
end
return renewed";

/// Deletes the lease KEYS[1] if ARGV[1] holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

pub struct Leases {
    client: Client,
    keys: Keys,
    node: String,
    ttl: Duration,
    partitions: u32,
}

impl Leases {
    pub fn new(client: Client, keys: Keys, node: String, ttl: Duration, partitions: u32) -> Self {
        Self { client, keys, node, ttl, partitions }
    }

    /// Takes partition `p`'s lease if nobody holds it.
    pub async fn acquire(&self, partition: u32) -> Result<bool, Error> {
        let reply: Option<String> = self
            .client
            .set(
                self.keys.lease(partition),
                self.node.as_str(),
                Some(Expiration::PX(self.ttl.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(reply.is_some())
    }

    /// Renews the leases of `partitions` still held by this node; returns those it still holds.
    pub async fn renew(&self, partitions: &[u32]) -> Result<Vec<u32>, Error> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = partitions.iter().map(|p| self.keys.lease(*p)).collect();
        let renewed: Vec<i64> =
            self.client.eval(RENEW, keys, vec![self.node.clone(), self.ttl.as_millis().to_string()]).await?;
        Ok(renewed
            .into_iter()
            .filter_map(|i| usize::try_from(i - 1).ok().and_then(|i| partitions.get(i).copied()))
            .collect())
    }

    /// Gives partition `p`'s lease up (if this node holds it), so the next owner need not wait for it to lapse.
    pub async fn release(&self, partition: u32) -> Result<(), Error> {
        self.client.eval::<i64, _, _, _>(RELEASE, self.keys.lease(partition), self.node.clone()).await.map(|_| ())
    }

    /// Who holds each partition's lease now.
    pub async fn holders(&self) -> Result<Vec<Option<String>>, Error> {
        let keys: Vec<String> = (0..self.partitions).map(|p| self.keys.lease(p)).collect();
        self.client.mget(keys).await
    }
}
