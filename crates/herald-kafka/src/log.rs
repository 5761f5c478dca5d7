//! The log seam on Kafka: appends go to the `messages` topic through this node's producer, whichever node
//! owns the partition; this node's share of the partitions is what the consumer group assigns it.

use crate::KafkaError;
use crate::consumer::Member;
use crate::producer::LogProducer;
use crate::settings::Settings;
use async_trait::async_trait;
use herald_core::log::{LogError, LogRecord, MessageLog, PartitionHandler};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct KafkaLog {
    settings: Settings,
    producer: LogProducer,
    member: tokio::sync::Mutex<Option<Member>>,
    closed: AtomicBool,
}

impl KafkaLog {
    /// The log's producer; the topic must exist ([`crate::ensure_topic`]). Nothing is consumed before
    /// [`MessageLog::start`].
    pub fn new(settings: Settings) -> Result<Self, KafkaError> {
        let producer = LogProducer::new(&settings)?;
        Ok(Self { settings, producer, member: tokio::sync::Mutex::new(None), closed: AtomicBool::new(false) })
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
        self.producer.send(&record).await.map(|_| ()).map_err(|e| LogError::Backend(e.to_string()))
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
