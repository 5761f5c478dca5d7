//! What the control plane needs to know: where Redis is, how this node is reached, and its timings.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    /// `redis://host:port` of a single instance, or any nodes of a Redis Cluster (seeds) with `cluster`.
    pub urls: Vec<String>,
    /// The URLs name a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key and channel, so several Herald clusters can share one Redis.
    pub key_prefix: String,
    /// This node's HTTP base URL as the other nodes reach it (records for partitions it owns arrive there).
    pub advertise_url: String,
    /// The secret all nodes of the cluster share; node-to-node requests carry a token derived from it.
    pub secret: Vec<u8>,
    /// A partition lease lapses this long after its owner last renewed it.
    pub lease_ttl: Duration,
    /// How often a node announces itself, renews its leases and rebalances.
    pub tick: Duration,
    /// A node not heard from for this long is taken for dead.
    pub node_ttl: Duration,
    /// The most a Redis command may take (longer, and Redis counts as unreachable for that call).
    pub command_timeout: Duration,
    /// How long a forwarded record may take on its owner (the client's own request timeout).
    pub forward_timeout: Duration,
    /// How long a membership change waits for the other nodes to confirm they applied it.
    pub change_timeout: Duration,
}

impl Settings {
    /// Defaults for everything but where Redis is and how this node is reached.
    pub fn new(urls: Vec<String>, cluster: bool, advertise_url: String, secret: Vec<u8>) -> Self {
        Self {
            urls,
            cluster,
            key_prefix: "herald".into(),
            advertise_url,
            secret,
            lease_ttl: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            command_timeout: Duration::from_secs(1),
            forward_timeout: Duration::from_secs(10),
            change_timeout: Duration::from_secs(2),
        }
    }
}
