//! The writing side of the log: one idempotent producer per node. Every record is keyed by its conversation
//! and sent to the partition Herald computes (`partition_of`), not to the one Kafka's partitioner would pick,
//! so that the owner of a conversation is the same whichever client library appended it.

use crate::KafkaError;
use crate::settings::{Settings, millis};
use herald_core::log::{LogRecord, partition_of};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::{Duration, Instant};

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub offset: i64,
}

pub struct LogProducer {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
    timeout: Duration,
}

impl LogProducer {
    /// An idempotent producer (`enable.idempotence`: the brokers drop a batch a retry sends twice, and keep each
    /// partition in send order), acknowledged by every in-sync replica (`acks=all`), lz4-compressed, batching
    /// for `settings.linger`.
    pub fn new(settings: &Settings) -> Result<Self, KafkaError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", millis(settings.linger))
            .set("message.timeout.ms", millis(settings.append_timeout))
            .create()?;
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
            partitions: settings.partitions.max(1),
            timeout: settings.append_timeout,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Appends `record` to its conversation's partition; returns once every in-sync replica has it.
    pub async fn send(&self, record: &LogRecord) -> Result<Appended, KafkaError> {
        let started = Instant::now();
        let payload = serde_json::to_vec(record).map_err(|e| KafkaError::Encode(e.to_string()))?;
        let key = record.conversation.to_bytes();
        let partition = partition_of(record.conversation, self.partitions);
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.topic).key(&key[..]).payload(&payload).partition(partition as i32),
                Timeout::After(self.timeout),
            )
            .await;
        metrics::histogram!("log_append_duration_ms").record(started.elapsed().as_secs_f64() * 1000.0);
        match sent {
            Ok(delivery) => Ok(Appended { partition: delivery.partition as u32, offset: delivery.offset }),
            Err((e, _)) => {
                metrics::counter!("log_append_errors_total").increment(1);
                Err(e.into())
            }
        }
    }

    /// Waits until every record handed to the producer is acknowledged or has failed.
    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let timeout = self.timeout;
        // librdkafka's flush blocks the calling thread.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "the log's producer did not flush");
        }
    }
}
