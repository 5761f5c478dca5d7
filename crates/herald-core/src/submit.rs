//! Putting an operation through the log and waiting for its outcome: the one way every service changes a
//! conversation's sequence.

use crate::admission::Admission;
use crate::auth::Principal;
use crate::delivery::{Applied, Waiters};
use crate::log::{LogError, LogRecord, MessageLog, Op};
use crate::{CoreError, CoreResult};
use herald_proto::{ConversationId, Message};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A forwarded record's partition is not owned here (any more).
#[derive(Debug)]
pub struct NotOwner;

pub struct Submitter {
    log: Arc<dyn MessageLog>,
    waiters: Arc<Waiters>,
    /// This node's id in a cluster whose records may be sequenced on another node, which sends the outcome
    /// back to it; None when outcomes always resolve where the record is sequenced (or forwarded from).
    origin: Option<String>,
    /// How long a request may take, from append to outcome, before the client is told to retry.
    timeout: Duration,
    /// How many of this node's requests may be between the log and their outcome at once.
    admission: Admission,
}

impl Submitter {
    pub fn new(log: Arc<dyn MessageLog>, waiters: Arc<Waiters>, timeout: Duration) -> Self {
        Self { log, waiters, origin: None, timeout, admission: Admission::unbounded() }
    }

    /// Bounds the requests of this node's clients between the log and their outcome (see
    /// [`crate::admission`]).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Stamps this node's id on every record it appends, so that the node sequencing it can send the outcome
    /// back here (a log whose partitions are owned on other nodes without forwarding, as on Kafka).
    pub fn with_origin(mut self, node: impl Into<String>) -> Self {
        self.origin = Some(node.into());
        self
    }

    pub async fn submit(&self, principal: Principal, conversation: ConversationId, op: Op) -> CoreResult<Applied> {
        let _admitted = self.admission.admit().await?;
        let started = tokio::time::Instant::now();
        let request_id = Uuid::now_v7();
        let wait = self.waiters.register(request_id);
        let record = LogRecord {
            request_id,
            origin: self.origin.clone(),
            conversation,
            actor: principal.user,
            device: principal.device,
            op,
        };
        // A full partition queue makes append wait; the whole request stays within the timeout.
        match tokio::time::timeout(self.timeout, self.log.append(record)).await {
            Ok(Ok(())) => {}
            Ok(Err(LogError::Closed)) => {
                return Err(CoreError::unavailable("the server is shutting down; retry on another node"));
            }
            Ok(Err(LogError::Backend(m))) => return Err(CoreError::Internal(m)),
            Ok(Err(LogError::Unavailable(m))) => return Err(log_unavailable(&m)),
            Ok(Err(LogError::NotOwner)) => {
                return Err(CoreError::unavailable("the conversation is moving between nodes; retry shortly"));
            }
            Err(_) => return Err(CoreError::unavailable("the log is overloaded; retry with the same client_msg_id")),
        }
        wait.wait(self.timeout.saturating_sub(started.elapsed())).await
    }

    /// Applies a record that another node forwarded here because this node owns its partition, exactly as a
    /// request of its own: the outcome is what the forwarding node's client gets. `Err(NotOwner)` when the
    /// partition moved on meanwhile (nothing was appended; the forwarding node routes the record again).
    pub async fn apply_forwarded(&self, record: LogRecord) -> Result<CoreResult<Applied>, NotOwner> {
        let started = tokio::time::Instant::now();
        let wait = self.waiters.register(record.request_id);
        match tokio::time::timeout(self.timeout, self.log.append_here(record)).await {
            Ok(Ok(())) => Ok(wait.wait(self.timeout.saturating_sub(started.elapsed())).await),
            Ok(Err(LogError::NotOwner)) => Err(NotOwner),
            Ok(Err(LogError::Closed)) => Err(NotOwner),
            Ok(Err(LogError::Backend(m))) => Ok(Err(CoreError::Internal(m))),
            Ok(Err(LogError::Unavailable(m))) => Ok(Err(log_unavailable(&m))),
            Err(_) => Ok(Err(CoreError::unavailable("the log is overloaded; retry with the same client_msg_id"))),
        }
    }

    /// Submits an operation whose outcome is a message (edit, delete, react, notices).
    pub async fn submit_for_message(
        &self,
        principal: Principal,
        conversation: ConversationId,
        op: Op,
    ) -> CoreResult<Message> {
        match self.submit(principal, conversation, op).await? {
            Applied::Sent { message, .. }
            | Applied::Edited(message)
            | Applied::Deleted(message)
            | Applied::Reacted(message) => Ok(message),
            other => Err(CoreError::Internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

/// What the client of a record the log did not take is told: to retry, with the same client_msg_id (see
/// [`LogError::Unavailable`]).
fn log_unavailable(reason: &str) -> CoreError {
    tracing::warn!(error = %reason, "the log did not take a record; its client is told to retry");
    CoreError::unavailable("the log is unavailable; retry with the same client_msg_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::PartitionHandler;
    use async_trait::async_trait;
    use herald_proto::{DeviceId, ErrorCode, UserId};

    /// A log that refuses every append with one error, as a backend in trouble does.
    struct Refusing(fn() -> LogError);

    #[async_trait]
    impl MessageLog for Refusing {
        fn partitions(&self) -> u32 {
            1
        }
        async fn append(&self, _record: LogRecord) -> Result<(), LogError> {
            Err((self.0)())
        }
        fn start(&self, _handler: Arc<dyn PartitionHandler>) {}
        async fn shutdown(&self) {}
    }

    async fn submit_to(log: Refusing) -> CoreError {
        let submitter = Submitter::new(Arc::new(log), Arc::default(), Duration::from_secs(1));
        let principal = Principal { user: UserId::new(), device: DeviceId::new() };
        submitter.submit(principal, ConversationId::new(), Op::Receipt).await.expect_err("refused")
    }

    /// A backend that cannot take a record now (a broker restarting) makes the request retryable, never an
    /// internal error: the client's retry with the same client_msg_id is what carries the send through.
    #[tokio::test]
    async fn an_unavailable_log_tells_the_client_to_retry() {
        let e = submit_to(Refusing(|| LogError::Unavailable("broker away".into()))).await;
        assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
        let e = submit_to(Refusing(|| LogError::Closed)).await;
        assert_eq!(e.code(), ErrorCode::Unavailable, "{e:?}");
        let e = submit_to(Refusing(|| LogError::Backend("a bug".into()))).await;
        assert_eq!(e.code(), ErrorCode::Internal, "{e:?}");
    }
}
