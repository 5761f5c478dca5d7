//! Where the sequencer's results go. Every applied operation is published; the sender's node resolves
//! the request waiting for it, and (with the gateway) pushes it to connected devices. In-process this is a
//! direct call; in a cluster it is routed through the registry to the node holding the waiter or device.

use crate::CoreError;
use async_trait::async_trait;
use herald_proto::{ConversationId, Message, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use uuid::Uuid;

/// What happened to one log record.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "applied", rename_all = "snake_case")]
pub enum Applied {
    /// A new message (a membership notice too), or the stored one for a retried send.
    Sent {
        message: Message,
        duplicate: bool,
    },
    Edited(Message),
    Deleted(Message),
    Reacted(Message),
    /// A member's combined positions, as announced to the members.
    Receipt {
        conversation: ConversationId,
        user: UserId,
        delivered: u64,
        read: u64,
    },
}

impl Applied {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Applied::Sent { message, .. }
            | Applied::Edited(message)
            | Applied::Deleted(message)
            | Applied::Reacted(message) => Some(message),
            Applied::Receipt { .. } => None,
        }
    }
}

/// One feed event for one user's devices, at its position in that user's feed. `event` is the JSON of a
/// `herald_proto::Event`, encoded once and shared by every recipient.
#[derive(Clone, Debug)]
pub struct FeedDelivery {
    pub user: UserId,
    pub conversation: ConversationId,
    pub pos: u64,
    pub event: Arc<str>,
    /// For a new message, when it was sequenced (for the send-to-deliver latency); else None.
    pub sent_at: Option<herald_proto::Millis>,
    /// A membership or settings notice: cached member lists of the conversation are stale now.
    pub notice: bool,
}

/// The outcome of one record, addressed to the request that appended it.
#[derive(Debug)]
pub struct Outcome {
    pub request_id: Uuid,
    /// The node waiting for it (the record's `origin`); None: this node.
    pub origin: Option<String>,
    pub result: Result<Applied, CoreError>,
}

/// The delivery seam: receives, in log order per conversation, the outcomes for waiting requests and the
/// feed events for connected devices.
#[async_trait]
pub trait Delivery: Send + Sync + 'static {
    async fn publish(&self, outcomes: Vec<Outcome>, feed: Vec<FeedDelivery>);
}

/// Requests waiting for their outcome on this node.
#[derive(Default)]
pub struct Waiters {
    pending: Mutex<HashMap<Uuid, oneshot::Sender<Result<Applied, CoreError>>>>,
}

impl Waiters {
    /// Registers a request before its record is appended, so the outcome cannot arrive first.
    pub fn register(&self, request_id: Uuid) -> WaitGuard<'_> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(request_id, tx);
        WaitGuard { waiters: self, request_id, rx: Some(rx) }
    }

    /// Hands an outcome to its waiting request; returns false if nobody waits (timed out, or another node's).
    pub fn resolve(&self, outcome: Outcome) -> bool {
        let tx = self.lock().remove(&outcome.request_id);
        match tx {
            Some(tx) => tx.send(outcome.result).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the waiting requests hold: one entry per request in flight, which the gateway's and the HTTP
    /// server's own limits bound (`bound` is theirs to state, passed in).
    pub fn footprint(&self, bound: usize) -> crate::footprint::Footprint {
        crate::footprint::Footprint::of_map("waiting_requests", &self.lock(), bound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Result<Applied, CoreError>>>> {
        // A poisoned map only means a panic elsewhere while holding it; the map itself stays valid.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered wait; dropping it (a cancelled or timed-out request) removes the entry.
pub struct WaitGuard<'a> {
    waiters: &'a Waiters,
    request_id: Uuid,
    rx: Option<oneshot::Receiver<Result<Applied, CoreError>>>,
}

impl WaitGuard<'_> {
    pub async fn wait(mut self, timeout: std::time::Duration) -> Result<Applied, CoreError> {
        let Some(rx) = self.rx.take() else {
            return Err(CoreError::Internal("wait called twice".into()));
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CoreError::unavailable("the request was dropped; retry with the same client_msg_id")),
            Err(_) => Err(CoreError::unavailable("timed out waiting for the log; retry with the same client_msg_id")),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.request_id);
    }
}

/// Where feed events for this node's connections go (the gateway's hub).
#[async_trait]
pub trait FeedSink: Send + Sync + 'static {
    /// Queues every event for its user's connections, at once.
    fn deliver(&self, feed: Vec<FeedDelivery>);

    /// The same, but a big fan-out may be queued a chunk at a time, letting other work run in between (see
    /// the hub's). Returns once every event is queued. What the sequencer calls.
    async fn deliver_paced(&self, feed: Vec<FeedDelivery>) {
        self.deliver(feed);
    }
}

/// Single-node delivery: resolve local waiters and hand feed events to the local connections.
pub struct LocalDelivery {
    waiters: Arc<Waiters>,
    sink: Option<Arc<dyn FeedSink>>,
}

impl LocalDelivery {
    pub fn new(waiters: Arc<Waiters>, sink: Option<Arc<dyn FeedSink>>) -> Self {
        Self { waiters, sink }
    }
}

#[async_trait]
impl Delivery for LocalDelivery {
    async fn publish(&self, outcomes: Vec<Outcome>, feed: Vec<FeedDelivery>) {
        if let Some(sink) = &self.sink
            && !feed.is_empty()
        {
            sink.deliver_paced(feed).await;
        }
        for outcome in outcomes {
            self.waiters.resolve(outcome);
        }
    }
}
