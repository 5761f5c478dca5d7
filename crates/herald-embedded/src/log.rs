//! The in-process partitioned log: every partition owned by this node from start to shutdown, each a bounded
//! queue and an owner task ([`LocalOwners`]). It keeps the cluster's shape (records keyed by conversation, one
//! owner per partition, batches handed to the owner in order) without the durability of Kafka: it does not
//! need it, because nothing is acknowledged to a client before the owner has committed it to the durable
//! store. A record lost in a crash was never acked, and the client's retry with the same `client_msg_id` is
//! idempotent.

use async_trait::async_trait;
use herald_core::log::{LogError, LogRecord, MessageLog, PartitionHandler};
use herald_core::owners::{LocalAppendError, LocalOwners};
use std::sync::Arc;

pub struct InProcessLog {
    owners: LocalOwners,
}

impl InProcessLog {
    /// `partitions` queues of `queue_depth` records each; an owner takes at most `max_batch` at a time.
    pub fn new(partitions: u32, queue_depth: usize, max_batch: usize) -> Self {
        Self { owners: LocalOwners::new(partitions, queue_depth, max_batch) }
    }
}

#[async_trait]
impl MessageLog for InProcessLog {
    fn partitions(&self) -> u32 {
        self.owners.partitions()
    }

    async fn append(&self, record: LogRecord) -> Result<(), LogError> {
        match self.owners.append(record).await {
            Ok(()) => Ok(()),
            // Every partition is owned until shutdown: a refusal means the log is closing.
            Err(LocalAppendError::Closed | LocalAppendError::NotOwned(_)) => Err(LogError::Closed),
        }
    }

    fn start(&self, handler: Arc<dyn PartitionHandler>) {
        self.owners.set_handler(handler);
        for partition in 0..self.owners.partitions() {
            self.owners.own(partition);
        }
    }

    async fn shutdown(&self) {
        self.owners.shutdown().await;
    }
}
