//! The log of a cluster without Kafka: each node runs the partitions whose lease it holds (in-process queues
//! and owner tasks, as on one node), and a record for a partition held elsewhere is forwarded to the holder
//! over HTTP. The holder applies it like its own request and answers with the outcome, which resolves the
//! waiting request here. A record is never sequenced twice: it is either queued on exactly one owner, or
//! refused; a forward whose answer is lost ends as `unavailable`, and the client's retry with the same
//! `client_msg_id` finds the stored message.

use crate::view::View;
use async_trait::async_trait;
use herald_core::CoreError;
use herald_core::delivery::{Outcome, Waiters};
use herald_core::forward::{FORWARD_PATH, RemoteOutcome};
use herald_core::log::{LogError, LogRecord, MessageLog, PartitionHandler, partition_of};
use herald_core::owners::{LocalAppendError, LocalOwners};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a record waits between looks for its partition's owner (while leases move).
const OWNER_POLL: Duration = Duration::from_millis(25);

/// How often a forward refused by a node that no longer owns the partition is routed again.
const MAX_REROUTES: u32 = 20;

type RouteFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LogError>> + Send + 'a>>;

#[derive(Clone)]
pub struct LeasedLog {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    owners: Arc<LocalOwners>,
    view: Arc<View>,
    waiters: Arc<Waiters>,
    http: reqwest::Client,
    token: String,
    timeout: Duration,
}

impl LeasedLog {
    pub fn new(
        node: String,
        owners: Arc<LocalOwners>,
        view: Arc<View>,
        waiters: Arc<Waiters>,
        token: String,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { inner: Arc::new(Inner { node, owners, view, waiters, http, token, timeout }) }
    }
}

impl Inner {
    /// Queues the record here if this node owns its partition, else hands it to the owner (once known).
    /// (Boxed: a refused forward routes again, and the compiler cannot prove a recursive future `Send`.)
    fn route(self: &Arc<Self>, record: LogRecord, reroutes: u32) -> RouteFuture<'_> {
        Box::pin(self.route_inner(record, reroutes))
    }

    async fn route_inner(self: &Arc<Self>, mut record: LogRecord, reroutes: u32) -> Result<(), LogError> {
        let deadline = Instant::now() + self.timeout;
        let partition = partition_of(record.conversation, self.owners.partitions());
        loop {
            match self.owners.append(record).await {
                Ok(()) => return Ok(()),
                Err(LocalAppendError::Closed) => return Err(LogError::Closed),
                Err(LocalAppendError::NotOwned(r)) => record = r,
            }
            if let Some((holder, url)) = self.view.holder(partition)
                && holder != self.node
            {
                tokio::spawn(self.clone().forward(record, url, reroutes));
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LogError::NotOwner);
            }
            // No owner yet, or this node is taking it over: leases settle within a tick.
            tokio::time::sleep(OWNER_POLL).await;
        }
    }

    async fn forward(self: Arc<Self>, record: LogRecord, url: String, reroutes: u32) {
        let request_id = record.request_id;
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(format!("{}{FORWARD_PATH}", url.trim_end_matches('/')))
            .bearer_auth(&self.token)
            .json(&record)
            .send()
            .await;
        let result = match response {
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT && reroutes < MAX_REROUTES => {
                // The partition moved on: route again (its new owner may be this node).
                tokio::time::sleep(OWNER_POLL).await;
                match self.route(record, reroutes + 1).await {
                    Ok(()) => return,
                    Err(_) => Err(CoreError::unavailable("the conversation is moving between nodes; retry shortly")),
                }
            }
            Ok(r) if r.status().is_success() => match r.json::<RemoteOutcome>().await {
                Ok(outcome) => outcome.into(),
                Err(e) => Err(CoreError::Internal(format!("unreadable answer from the owner node: {e}"))),
            },
            Ok(r) => {
                tracing::warn!(status = %r.status(), "the owner node refused a forwarded record");
                Err(CoreError::unavailable("the conversation's node is unavailable; retry with the same client_msg_id"))
            }
            Err(e) => {
                tracing::debug!(error = %e, "forwarding a record failed");
                Err(CoreError::unavailable("the conversation's node is unavailable; retry with the same client_msg_id"))
            }
        };
        metrics::histogram!("cluster_forward_duration_ms").record(started.elapsed().as_secs_f64() * 1000.0);
        self.waiters.resolve(Outcome { request_id, origin: None, result });
    }
}

#[async_trait]
impl MessageLog for LeasedLog {
    fn partitions(&self) -> u32 {
        self.inner.owners.partitions()
    }

    async fn append(&self, record: LogRecord) -> Result<(), LogError> {
        self.inner.route(record, 0).await
    }

    async fn append_here(&self, record: LogRecord) -> Result<(), LogError> {
        match self.inner.owners.append(record).await {
            Ok(()) => Ok(()),
            Err(LocalAppendError::NotOwned(_)) => Err(LogError::NotOwner),
            Err(LocalAppendError::Closed) => Err(LogError::Closed),
        }
    }

    /// Partitions are owned as leases are won (the cluster's tick), not all at once.
    fn start(&self, handler: Arc<dyn PartitionHandler>) {
        self.inner.owners.set_handler(handler);
    }

    async fn shutdown(&self) {
        self.inner.owners.shutdown().await;
    }
}
