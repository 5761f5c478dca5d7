//! The topics: the log's, created with the configured partition count when it is missing and checked when it
//! is there (a topic with another partition count would send conversations to the wrong owners), and the
//! presence topic, created when missing.

use crate::KafkaError;
use crate::settings::Settings;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// How long the admin requests of [`ensure_topic`] may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates `settings.topic` with `settings.partitions` partitions if it does not exist. Returns the partition
/// count it has; an existing topic with another count is an error.
pub async fn ensure_topic(settings: &Settings) -> Result<u32, KafkaError> {
    let count = create_if_missing(settings, &settings.topic, &[]).await?;
    check(settings, count)
}

/// Creates the presence topic (`settings.presence_topic`) if it does not exist: `settings.partitions`
/// partitions, compacted (`cleanup.policy=compact`: the topic keeps at least each user's newest update, so
/// it doubles as a table of last states). Its partition count may differ: nothing is placed by it.
pub async fn ensure_presence_topic(settings: &Settings) -> Result<u32, KafkaError> {
    create_if_missing(settings, &settings.presence_topic, &[("cleanup.policy", "compact")]).await
}

/// Creates `name` with `settings.partitions` partitions, `settings.replication_factor` replicas and `configs`
/// when the brokers do not know it; returns its partition count.
async fn create_if_missing(settings: &Settings, name: &str, configs: &[(&str, &str)]) -> Result<u32, KafkaError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.client_id)
            .create()?,
    );
    if let Some(existing) = partition_count(&admin, name).await? {
        return Ok(existing);
    }
    let mut topic =
        NewTopic::new(name, settings.partitions as i32, TopicReplication::Fixed(settings.replication_factor));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)).request_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = %name, partitions = settings.partitions, "created a topic"),
            // Another node created it meanwhile: read it below like any existing topic.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(KafkaError::Topic(format!("creating {name}: {code}"))),
        }
    }
    // Metadata reaches every broker shortly after creation; wait until the topic shows its partitions.
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        if let Some(count) = partition_count(&admin, name).await? {
            return Ok(count);
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Topic(format!("{name} was created but does not show in the metadata")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check(settings: &Settings, count: u32) -> Result<u32, KafkaError> {
    if count == settings.partitions {
        Ok(count)
    } else {
        Err(KafkaError::Topic(format!(
            "{} has {count} partitions but the log is configured with {}; the count cannot change under a running log",
            settings.topic, settings.partitions
        )))
    }
}

/// The topic's partition count, or None when the brokers do not know it (yet). (librdkafka's metadata call
/// blocks: it runs on a blocking thread.)
async fn partition_count(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
) -> Result<Option<u32>, KafkaError> {
    let (admin, name) = (admin.clone(), topic.to_owned());
    let metadata = tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&name), ADMIN_TIMEOUT))
        .await
        .map_err(|e| KafkaError::Topic(format!("reading metadata: {e}")))??;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as u32))
}
