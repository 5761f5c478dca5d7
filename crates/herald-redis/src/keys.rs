//! Every key and channel name. Braces mark the hash tag that picks a Redis Cluster slot: keys used together
//! in one command (all partition leases, the node table) share a tag and so a slot; a user's key and a node's
//! channel have tags of their own, so they spread over the shards.

use herald_proto::{ConversationId, UserId};

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

    /// Hash: `user`'s explicit status and when it was last connected (beside its set of nodes, in its slot).
    pub fn user_presence(&self, user: UserId) -> String {
        format!("{}:{{u:{user}}}:p", self.prefix)
    }

    /// Set: the users with a connection on `node` (so the others can clean up after it if it dies).
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:users", self.prefix)
    }

    /// String: set when other nodes swept `node`'s users (it was taken for dead), for the node to find if
    /// it only stalled.
    pub fn node_swept(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:swept", self.prefix)
    }

    /// The (sharded) channel a node listens on.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}", self.prefix)
    }

    /// The L2 cache's keys of `user`'s scope: `part` is `v` (its version) or an entry.
    pub fn l2_user(&self, user: UserId, part: &str) -> String {
        format!("{}:{{l2u:{user}}}:{part}", self.prefix)
    }

    /// The L2 cache's keys of `conversation`'s scope (its record, members and memberships).
    pub fn l2_conversation(&self, conversation: ConversationId, part: &str) -> String {
        format!("{}:{{l2c:{conversation}}}:{part}", self.prefix)
    }
}
