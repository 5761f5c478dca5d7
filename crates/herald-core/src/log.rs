//! The partitioned-log seam. Gateways append operations keyed by conversation; each partition has exactly
//! one owner at a time which processes its records in order. In-process this is a task per partition; in a
//! cluster it is a Kafka topic `messages` and a consumer group. Ordering per conversation follows from the
//! key, so no lock or database sequence is needed to assign `seq`.

use async_trait::async_trait;
use herald_proto::{ConversationId, DeviceId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// The partition of a conversation: xxh3 over the id's 16 bytes, modulo the partition count. (The
/// partition count of a log is fixed for its lifetime, so `%` is right here; node placement uses the
/// consistent-hash ring instead.)
pub fn partition_of(conversation: ConversationId, partitions: u32) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(&conversation.to_bytes());
    (h % u64::from(partitions.max(1))) as u32
}

/// One operation on a conversation, as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Identifies the waiting request so the outcome can be routed back to it.
    pub request_id: Uuid,
    /// The node whose request waits for the outcome (the id it is reached by on the cluster's bus), when the
    /// record may be sequenced on another node; None on a single node, and in records written before nodes
    /// said who they were (their outcomes resolve on the sequencing node, as then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub conversation: ConversationId,
    pub actor: UserId,
    pub device: DeviceId,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Send {
        client_msg_id: String,
        body: String,
        reply_to: Option<u64>,
        /// A reply in the thread of this root message (checked by the partition owner, which updates the
        /// root's summary in the same commit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_root: Option<u64>,
        /// Checked by the gateway (the sender may attach them, they are ready) and snapshotted.
        #[serde(default)]
        attachments: Vec<herald_proto::Attachment>,
    },
    Edit {
        seq: u64,
        body: String,
    },
    /// `as_admin`: the actor was an admin of the group when the gateway checked, so it may delete others'
    /// messages.
    Delete {
        seq: u64,
        as_admin: bool,
    },
    React {
        seq: u64,
        emoji: String,
        add: bool,
    },
    /// A membership or settings notice, written by the server after the change it describes.
    System {
        event: herald_proto::SystemEvent,
    },
    /// The actor's positions moved (already stored in the cursor store): announce them to the members.
    Receipt,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the log is shutting down")]
    Closed,
    #[error("log backend: {0}")]
    Backend(String),
    /// The backend cannot take the record now (a broker restarting or unreachable, a failed produce): the
    /// request ends as `unavailable` and its client retries with the same `client_msg_id`, which stores the
    /// message once whether or not this try was appended.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// A record forwarded here for a partition this node no longer owns: the sender routes it again.
    #[error("this node does not own the partition")]
    NotOwner,
}

/// What owns partitions: the log calls it as ownership moves and for each batch of records.
#[async_trait]
pub trait PartitionHandler: Send + Sync + 'static {
    /// This node now owns `partition`: any state cached for it must be re-read from the store.
    async fn assigned(&self, partition: u32);
    /// This node no longer owns `partition`.
    async fn revoked(&self, partition: u32);
    /// Process records of one partition, in log order. When it returns, the log may commit past them
    /// (their effects are durable and their outcomes published).
    async fn process(&self, partition: u32, records: Vec<LogRecord>);
}

/// The log itself.
#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    fn partitions(&self) -> u32;
    /// Appends a record to the partition of its conversation. Returns once the log has accepted it.
    async fn append(&self, record: LogRecord) -> Result<(), LogError>;
    /// Appends a record another node forwarded because this node owns its partition: to this node's own
    /// partition only, never forwarded again ([`LogError::NotOwner`] if ownership moved meanwhile).
    async fn append_here(&self, record: LogRecord) -> Result<(), LogError> {
        self.append(record).await
    }
    /// Starts consuming with `handler` as this node's partition owner.
    fn start(&self, handler: Arc<dyn PartitionHandler>);
    /// Stops accepting appends, lets the owners finish what was accepted, and returns when they have.
    async fn shutdown(&self);
    /// Another node of the cluster died (it stopped announcing itself, last heard from `silent_for` ago),
    /// and this node is the one chosen to make sure its partitions find a new owner. A log that assigns
    /// partitions by itself may need the nudge (a broker that does not move a dead member's partitions until
    /// the group changes); the call may take as long as that needs. Default: nothing, the log moves them.
    async fn peer_died(&self, silent_for: std::time::Duration) {
        let _ = silent_for;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_an_origin_still_decode() {
        let record = LogRecord {
            request_id: Uuid::now_v7(),
            origin: None,
            conversation: ConversationId::new(),
            actor: UserId::new(),
            device: DeviceId::new(),
            op: Op::Receipt,
        };
        let json = serde_json::to_string(&record).expect("encodes");
        assert!(!json.contains("origin"), "no origin, no field: {json}");
        assert_eq!(serde_json::from_str::<LogRecord>(&json).expect("decodes"), record);
        let with = LogRecord { origin: Some("n1".into()), ..record };
        assert_eq!(
            serde_json::from_str::<LogRecord>(&serde_json::to_string(&with).expect("encodes")).expect("decodes"),
            with
        );
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        for _ in 0..1000 {
            let c = ConversationId::new();
            let p = partition_of(c, 16);
            assert!(p < 16);
            assert_eq!(p, partition_of(c, 16));
        }
    }
}
