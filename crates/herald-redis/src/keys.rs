//! Every key and channel name. Braces mark the hash tag that picks a Redis Cluster slot: keys used together
//! in one command (all partition leases, the node table) share a tag and so a slot; a user's key and a node's
//! channel have tags of their own, so they spread over the shards.

use herald_proto::UserId;

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// Hash: node id -> its announcement (JSON).
    pub fn nodes(&self) -> String {
        format!("{}:{{nodes}}", self.prefix)
    }

    /// String: the node id holding partition `p`'s lease, expiring unless renewed.
    pub fn lease(&self, partition: u32) -> String {
        format!("{}:{{leases}}:{partition}", self.prefix)
    }

    /// Set: the nodes holding a connection of `user`.
    pub fn user_nodes(&self, user: UserId) -> String {
        format!("{}:{{u:{user}}}", self.prefix)
    }

    /// The (sharded) channel a node listens on.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}", self.prefix)
    }
}
