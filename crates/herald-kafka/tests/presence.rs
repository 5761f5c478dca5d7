//! The `presence_updates` topic against a real broker: created compacted when missing, and every update a node
//! publishes lands there keyed by its user, one user's updates in their order.

use herald_core::presence_updates::{PresenceUpdate, PresenceUpdates};
use herald_kafka::testing::{OwnBroker, read_topic};
use herald_kafka::{PresenceTopic, Settings, ensure_presence_topic};
use herald_proto::{PresenceStatus, UserId};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_presence_updates_reach_the_topic_keyed_by_user_in_order() {
    let Some(broker) = OwnBroker::start().await else { return };
    let mut settings = Settings::new(broker.brokers(), "presence-test");
    settings.partitions = 3;
    assert_eq!(ensure_presence_topic(&settings).await.expect("the topic"), 3);
    // A second node finds it there.
    assert_eq!(ensure_presence_topic(&settings).await.expect("the topic again"), 3);

    let topic = PresenceTopic::new(&settings).expect("a producer");
    let users: Vec<UserId> = (0..4).map(|_| UserId::new()).collect();
    let statuses = [PresenceStatus::Online, PresenceStatus::Away, PresenceStatus::Offline];
    let mut sent = Vec::new();
    for round in 0..6i64 {
        for &user_id in &users {
            let status = statuses[round as usize % statuses.len()];
            let last_seen = (status == PresenceStatus::Offline).then_some(1_700_000_000_000 + round);
            let update =
                PresenceUpdate { user_id, status, last_seen, at: 1_700_000_000_000 + round, node: "n1".into() };
            topic.publish(update.clone());
            sent.push(update);
        }
    }
    topic.flush(Duration::from_secs(10)).await;

    let records = read_topic(&broker.brokers(), &settings.presence_topic, sent.len(), Duration::from_secs(30)).await;
    assert_eq!(records.len(), sent.len(), "every update is on the topic");
    let mut partition_of_user = BTreeMap::new();
    let mut received: BTreeMap<UserId, Vec<PresenceUpdate>> = BTreeMap::new();
    for (partition, key, payload) in records {
        let update: PresenceUpdate = serde_json::from_slice(&payload).expect("an update's JSON");
        assert_eq!(key, update.user_id.to_string().into_bytes(), "keyed by the user");
        assert_eq!(
            *partition_of_user.entry(update.user_id).or_insert(partition),
            partition,
            "one user's updates share a partition"
        );
        received.entry(update.user_id).or_default().push(update);
    }
    for user in &users {
        let expected: Vec<&PresenceUpdate> = sent.iter().filter(|u| u.user_id == *user).collect();
        let got: Vec<&PresenceUpdate> = received[user].iter().collect();
        assert_eq!(got, expected, "user {user:?}: every update, in order");
    }
}
