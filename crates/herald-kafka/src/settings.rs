//! What the Kafka log needs to know: where the brokers are, the topic and its shape, and the clients' timings.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port` of one or more brokers (librdkafka's `bootstrap.servers`, comma-separated).
    pub brokers: String,
    /// The topic of the message log.
    pub topic: String,
    /// The topic's partition count. It is fixed for the log's lifetime: a conversation's partition is
    /// `partition_of(conversation, partitions)`, so changing it would move conversations between owners.
    pub partitions: u32,
    /// Replicas of each partition when the topic is created here (3 in production, 1 on a single broker).
    pub replication_factor: i32,
    /// The consumer group of the partition owners: every node of one cluster uses the same.
    pub group_id: String,
    /// This node's name, as the brokers log it (`client.id`).
    pub client_id: String,
    /// A member not heard from for this long loses its partitions to the others (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// How often a member tells the group coordinator it is alive (`heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
    /// How long a broker may hold a member's fetch while it has no new records (`fetch.wait.max.ms`). A
    /// Kafka broker answers as soon as records arrive; tansu 0.6 sleeps half of it even with records at hand, so
    /// on tansu it is the floor of a send's latency.
    pub fetch_wait: Duration,
    /// How long a producer waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// How long an append may take, retries included, before it fails (`message.timeout.ms`).
    pub append_timeout: Duration,
    /// The most records one `process` call receives.
    pub max_batch: usize,
    /// The topic the presence changes are published to for consumers outside Herald (`presence.rs`).
    pub presence_topic: String,
}

impl Settings {
    /// Defaults for everything but where the brokers are and who this node is.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: "messages".into(),
            partitions: 16,
            replication_factor: 1,
            group_id: "herald".into(),
            client_id: client_id.into(),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            fetch_wait: Duration::from_millis(500),
            linger: Duration::from_millis(5),
            append_timeout: Duration::from_secs(10),
            max_batch: 256,
            presence_topic: "presence_updates".into(),
        }
    }
}

pub(crate) fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}
