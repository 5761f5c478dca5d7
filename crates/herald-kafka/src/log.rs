//! The log seam on Kafka: appends go to the `messages` topic through this node's producer, whichever node
//! owns the partition; this node's share of the partitions is what the consumer group assigns it.

use crate::KafkaError;
use crate::consumer::Member;
use crate::producer::LogProducer;
use crate::settings::Settings;
use async_trait::async_trait;
use herald_core::log::{LogError, LogRecord, MessageLog, PartitionHandler};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long after a dead peer's session must have expired at the broker this member rejoins: a heartbeat's
/// worth of slack for the broker's own timer.
const REJOIN_SLACK: Duration = Duration::from_secs(1);

pub struct KafkaLog {
    settings: Settings,
    producer: LogProducer,
    member: tokio::sync::Mutex<Option<Member>>,
    closed: AtomicBool,
    /// When this member last left and rejoined the group (see [`MessageLog::peer_died`]).
    rejoined_at: Mutex<Option<Instant>>,
}

impl KafkaLog {
    /// The log's producer; the topic must exist ([`crate::ensure_topic`]). Nothing is consumed before
    /// [`MessageLog::start`].
    pub fn new(settings: Settings) -> Result<Self, KafkaError> {
        let producer = LogProducer::new(&settings)?;
        Ok(Self {
            settings,
            producer,
            member: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
            rejoined_at: Mutex::new(None),
        })
    }

    /// Joins the group with `handler` as this node's partition owner. An error when the consumer cannot be
    /// made (a bad setting) or when called outside a tokio runtime; a second call is ignored.
    pub async fn start_member(&self, handler: Arc<dyn PartitionHandler>) -> Result<(), KafkaError> {
        let mut member = self.member.lock().await;
        if member.is_some() || self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        *member = Some(Member::start(&self.settings, handler)?);
        Ok(())
    }

    /// The partitions this node owns now.
    pub async fn owned(&self) -> Vec<u32> {
        self.member.lock().await.as_ref().map(Member::owned).unwrap_or_default()
    }

    /// Leaves the group and joins it again as a new member: the batch in hand is processed and committed,
    /// every owned partition revoked, and the join makes the group assign every partition afresh. Nothing if
    /// the member never started or the log is shut down.
    pub async fn rejoin(&self) -> Result<(), KafkaError> {
        let mut member = self.member.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(mut old) = member.take() else { return Ok(()) };
        let handler = old.handler();
        old.stop().await;
        metrics::counter!("log_rejoins_total").increment(1);
        *member = Some(Member::start(&self.settings, handler)?);
        Ok(())
    }
}

#[async_trait]
impl MessageLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.producer.partitions()
    }

    /// Returns once every in-sync replica has the record. Any node may append to any partition: Kafka
    /// carries the record to its owner, so there is nothing to forward.
    async fn append(&self, record: LogRecord) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        match self.producer.send(&record).await {
            Ok(_) => Ok(()),
            // A record that cannot be encoded is a bug, whatever the broker does.
            Err(e @ KafkaError::Encode(_)) => Err(LogError::Backend(e.to_string())),
            // Whatever the broker or the client library says (a broker restarting answers produce requests
            // with errors for a while; a timeout leaves the record's fate unknown), the client's retry with
            // the same client_msg_id is safe and is the way on.
            Err(e) => Err(LogError::Unavailable(e.to_string())),
        }
    }

    fn start(&self, handler: Arc<dyn PartitionHandler>) {
        let Ok(mut member) = self.member.try_lock() else {
            tracing::warn!("the Kafka log was started twice; keeping the first");
            return;
        };
        if member.is_some() || self.closed.load(Ordering::Acquire) {
            return;
        }
        match Member::start(&self.settings, handler) {
            Ok(m) => *member = Some(m),
            Err(e) => {
                tracing::error!(error = %e, "the Kafka log's consumer did not start; this node owns no partition")
            }
        }
    }

    /// Waits until the dead peer's session has expired at the broker, then rejoins the group (unless a rejoin
    /// after that moment already happened for another death).
    ///
    /// A Kafka broker rebalances by itself when it expires a member's session, and then this costs one more
    /// rebalance. tansu 0.6 does not: it drops the dead member from a formed group but keeps the generation,
    /// so the survivors get their old assignments back and the dead member's partitions stay unowned until
    /// the group changes. A join is such a change: a new member makes the group assign every partition again.
    async fn peer_died(&self, silent_for: Duration) {
        // The peer's last heartbeat was no later than its last announcement, so its session has expired by
        // this moment at the latest.
        let expired = Instant::now() + self.settings.session_timeout.saturating_sub(silent_for) + REJOIN_SLACK;
        tokio::time::sleep_until(expired).await;
        {
            let mut last = self.rejoined_at.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at >= expired) {
                return;
            }
            *last = Some(Instant::now());
        }
        tracing::info!("a peer died: rejoining the log's consumer group so that its partitions are assigned again");
        if let Err(e) = self.rejoin().await {
            tracing::error!(error = %e, "rejoining the log's consumer group failed; this node owns no partition");
        }
    }

    /// Refuses new appends, waits for those in flight, then leaves the group: the batch in hand is processed
    /// and committed, every owned partition revoked.
    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.producer.flush().await;
        let member = self.member.lock().await.take();
        if let Some(mut member) = member {
            member.stop().await;
        }
    }
}
