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

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::auth::Principal;
    use herald_core::delivery::Waiters;
    use herald_core::log::Op;
    use herald_core::submit::Submitter;
    use herald_proto::{ConversationId, DeviceId, ErrorCode, UserId};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A partition owner that keeps what reaches it and answers nobody, as when the record's outcome is
    /// published on another node and lost on its way back.
    #[derive(Default)]
    struct Silent {
        records: Mutex<Vec<LogRecord>>,
    }

    #[async_trait]
    impl PartitionHandler for Silent {
        async fn assigned(&self, _: u32) {}
        async fn revoked(&self, _: u32) {}
        async fn process(&self, _: u32, records: Vec<LogRecord>) {
            self.records.lock().expect("lock").extend(records);
        }
    }

    #[tokio::test]
    async fn a_record_names_its_origin_and_a_lost_outcome_ends_as_unavailable_at_the_timeout() {
        let log = Arc::new(InProcessLog::new(4, 16, 8));
        let owner = Arc::new(Silent::default());
        log.start(owner.clone());
        let timeout = Duration::from_millis(300);
        let submitter = Submitter::new(log.clone(), Arc::new(Waiters::default()), timeout).with_origin("node-a");
        let principal = Principal { user: UserId::new(), device: DeviceId::new() };
        let started = Instant::now();
        let result = submitter.submit(principal, ConversationId::new(), Op::Receipt).await;
        let waited = started.elapsed();
        match result {
            Err(e) => assert_eq!(e.code(), ErrorCode::Unavailable, "{e}"),
            Ok(applied) => panic!("acknowledged without an outcome: {applied:?}"),
        }
        assert!(
            waited >= timeout && waited < timeout * 4,
            "answered at the timeout, not before or much after: {waited:?}"
        );
        let records = owner.records.lock().expect("lock").clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].origin.as_deref(), Some("node-a"), "the owner knows where to send the outcome");
        log.shutdown().await;
    }
}
