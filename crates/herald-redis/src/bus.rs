//! What nodes say to each other over Redis pub/sub: each node listens on a channel of its own (sharded
//! pub/sub, SSUBSCRIBE/SPUBLISH, so on a Redis Cluster a message touches one shard, not all of them).
//! Pub/sub keeps nothing: a message published while the listener is disconnected is lost. Every kind of
//! message here is therefore either repaired (feed events: the receiving node catches its connections up
//! from the feed after a reconnect or a lag, and the sending node tells everyone to catch up after it failed
//! to publish) or waited for (membership changes, acknowledged), or ephemeral (typing and presence frames,
//! superseded by the next one), or bounded by a timeout (outcomes for requests waiting on another node).

use crate::keys::Keys;
use fred::prelude::*;
use herald_core::changes::Change;
use herald_core::delivery::FeedDelivery;
use herald_core::forward::RemoteOutcome;
use herald_proto::{ConversationId, Millis, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Envelope {
    /// Feed events for users with a connection on the receiving node.
    Feed {
        items: Vec<WireFeed>,
    },
    /// Ephemeral frames (presence, typing) for users with a connection on the receiving node; never repaired.
    Ephemeral {
        items: Vec<WireFrame>,
    },
    /// Events for the receiving node may have been lost: catch every connection up from the feed.
    CatchUp,
    /// Apply a change to the caches, then answer `ChangeApplied` to `from`.
    Change {
        id: Uuid,
        from: String,
        change: Change,
    },
    ChangeApplied {
        id: Uuid,
        node: String,
    },
    /// Outcomes of records sequenced on the sending node for requests waiting on the receiving one (a log
    /// whose partitions are owned without forwarding, as on Kafka). One lost is a request that ends as
    /// `unavailable` at its timeout; the client's retry with the same `client_msg_id` finds the stored message.
    Outcomes {
        items: Vec<WireOutcome>,
    },
}

/// A `change` envelope this node cannot read: a newer node's change of a kind this version does not know (in a
/// rolling upgrade). Its id and sender are enough to treat it as a change that may touch anything (drop the
/// caches, check the connections again) and to confirm it, so the newer node does not wait for this one.
pub fn unreadable_change(json: &str) -> Option<(Uuid, String)> {
    #[derive(Deserialize)]
    struct Header {
        kind: String,
        id: Uuid,
        from: String,
    }
    let header: Header = serde_json::from_str(json).ok()?;
    (header.kind == "change").then_some((header.id, header.from))
}

/// An outcome on the wire, for the request `request_id` waiting on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireOutcome {
    pub request_id: Uuid,
    pub outcome: RemoteOutcome,
}

/// One ephemeral frame (JSON text) and the users it is for.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireFrame {
    pub users: Vec<UserId>,
    pub frame: String,
}

/// A [`FeedDelivery`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireFeed {
    pub user: UserId,
    pub conversation: ConversationId,
    pub pos: u64,
    pub event: String,
    pub sent_at: Option<Millis>,
    pub notice: bool,
}

impl From<&FeedDelivery> for WireFeed {
    fn from(d: &FeedDelivery) -> Self {
        Self {
            user: d.user,
            conversation: d.conversation,
            pos: d.pos,
            event: d.event.to_string(),
            sent_at: d.sent_at,
            notice: d.notice,
        }
    }
}

impl From<WireFeed> for FeedDelivery {
    fn from(w: WireFeed) -> Self {
        Self {
            user: w.user,
            conversation: w.conversation,
            pos: w.pos,
            event: Arc::from(w.event),
            sent_at: w.sent_at,
            notice: w.notice,
        }
    }
}

/// Publishing to other nodes' channels.
#[derive(Clone)]
pub struct Bus {
    client: Client,
    keys: Keys,
}

impl Bus {
    pub fn new(client: Client, keys: Keys) -> Self {
        Self { client, keys }
    }

    /// Publishes to `node`'s channel; returns whether someone was listening.
    pub async fn send(&self, node: &str, envelope: &Envelope) -> Result<bool, Error> {
        let json = serde_json::to_string(envelope).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?;
        let listeners: i64 = self.client.spublish(self.keys.node_channel(node), json).await?;
        metrics::counter!("cluster_bus_messages_total", "direction" => "sent").increment(1);
        Ok(listeners > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_an_unknown_kind_is_recognised_by_its_header() {
        let id = Uuid::now_v7();
        let newer =
            format!(r#"{{"kind":"change","id":"{id}","from":"node-b","change":{{"type":"purged","user":"x"}}}}"#);
        assert!(serde_json::from_str::<Envelope>(&newer).is_err(), "this version cannot read it");
        assert_eq!(unreadable_change(&newer), Some((id, "node-b".to_owned())));
        let known = Envelope::Change {
            id,
            from: "node-b".into(),
            change: Change::Block { blocker: UserId::new(), blocked: UserId::new() },
        };
        let known = serde_json::to_string(&known).expect("encode");
        assert!(serde_json::from_str::<Envelope>(&known).is_ok());
        assert_eq!(unreadable_change(r#"{"kind":"feed_v2","id":"x"}"#), None, "not a change");
        assert_eq!(unreadable_change("not json"), None);
    }
}
