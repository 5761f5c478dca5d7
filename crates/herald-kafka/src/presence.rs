//! The brief's `presence_updates` topic: every cluster-wide presence change a node announces, keyed by user
//! (so one user's changes stay in order in one partition), as JSON ([`PresenceUpdate`]). Herald itself does
//! not read it (docs/cluster.md, "Presence and typing across nodes", says why Redis carries presence between
//! nodes); it is there for consumers outside Herald.
//!
//! Publishing never waits: an update is queued in librdkafka's buffer and a background thread sends it.
//! Presence is best effort like its WebSocket frames, so the producer is not idempotent and takes the
//! leader's acknowledgement; an update that cannot be queued (the buffer is full, say while the brokers are
//! away) or that the brokers refuse is dropped and counted.

use crate::KafkaError;
use crate::settings::{Settings, millis};
use herald_core::presence_updates::{PresenceUpdate, PresenceUpdates};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use std::time::Duration;

/// Counts what the brokers acknowledged and what they did not.
struct Counting;

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => metrics::counter!("presence_updates_published_total").increment(1),
            Err((e, _)) => {
                tracing::debug!(error = %e, "a presence update was not published");
                metrics::counter!("presence_updates_dropped_total", "reason" => "broker").increment(1);
            }
        }
    }
}

pub struct PresenceTopic {
    producer: ThreadedProducer<Counting>,
    topic: String,
}

impl PresenceTopic {
    /// A producer for `settings.presence_topic` (made by [`crate::topic::ensure_presence_topic`]).
    pub fn new(settings: &Settings) -> Result<Self, KafkaError> {
        let producer = ThreadedProducer::from_config_and_context(
            ClientConfig::new()
                .set("bootstrap.servers", &settings.brokers)
                .set("client.id", &settings.client_id)
                .set("acks", "1")
                .set("compression.type", "lz4")
                .set("linger.ms", millis(settings.linger))
                .set("message.timeout.ms", millis(settings.append_timeout))
                // A bounded buffer: at most this many updates wait for the brokers; more are dropped.
                .set("queue.buffering.max.messages", "100000"),
            Counting,
        )?;
        Ok(Self { producer, topic: settings.presence_topic.clone() })
    }

    /// Sends what is queued, waiting at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        // librdkafka's flush blocks the calling thread.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout))).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "the presence topic's producer did not flush");
        }
    }
}

impl PresenceUpdates for PresenceTopic {
    fn publish(&self, update: PresenceUpdate) {
        let payload = match serde_json::to_vec(&update) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "a presence update could not be encoded");
                return;
            }
        };
        let key = update.user_id.to_string();
        if let Err((e, _)) = self.producer.send(BaseRecord::to(&self.topic).key(&key).payload(&payload)) {
            tracing::debug!(error = %e, "a presence update was not queued");
            metrics::counter!("presence_updates_dropped_total", "reason" => "queue").increment(1);
        }
    }
}
