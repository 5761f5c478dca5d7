//! Herald's partitioned log on Kafka (the cluster's shape of the `MessageLog` seam in `herald-core`): the
//! `messages` topic keyed by conversation, an idempotent producer on every node, and the partition owners as
//! the members of one consumer group, which commit their offsets by hand once a batch is durable.
//!
//! # Layout
//! - [`settings`]: where the brokers are, the topic's shape, the clients' timings.
//! - [`topic`]: the topic, created if missing ([`ensure_topic`]).
//! - [`producer`]: the writing side; [`consumer`] (private): the reading side, a member of the group.
//! - [`log`]: both behind [`herald_core::log::MessageLog`] ([`KafkaLog`]).
//! - [`presence`]: the `presence_updates` topic, for consumers outside Herald ([`PresenceTopic`]).
//! - [`testing`] (feature `testing`): a broker of a test's own.

mod consumer;
pub mod log;
pub mod presence;
pub mod producer;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topic;

pub use log::KafkaLog;
pub use presence::PresenceTopic;
pub use settings::Settings;
pub use topic::{ensure_presence_topic, ensure_topic};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("the log's topic: {0}")]
    Topic(String),
    #[error("encoding a log record: {0}")]
    Encode(String),
    #[error("the log's consumer must be started inside a tokio runtime")]
    NoRuntime,
    #[error("starting the log's consumer thread: {0}")]
    Thread(String),
}
