//! The reading side of the log: this node as a member of the consumer group. Kafka assigns each partition to
//! one member; the group's rebalances drive [`PartitionHandler::assigned`] and [`PartitionHandler::revoked`],
//! and the records of an owned partition are handed to [`PartitionHandler::process`] in batches, in offset
//! order.
//!
//! Offsets are committed by hand (`enable.auto.commit=false`), synchronously, and only after `process` has
//! returned for the records below them: a record whose effects are not yet durable is never skipped by the
//! next owner. What can happen is the other way round: a member that dies between `process` and the commit
//! leaves a tail that the next owner processes again, which the handler's idempotent apply absorbs.
//!
//! The member runs on a thread of its own, which polls librdkafka (rebalances run inside that poll) and
//! drives the async handler on the tokio runtime it was started from, one call at a time. A revocation
//! therefore never overlaps a batch: the batches already read for a revoked partition are processed and
//! committed inside the revocation, before the partition goes to another member, unless the assignment was
//! lost (the group moved on without this member, which was too slow or cut off); then they are dropped,
//! uncommitted, for the new owner to process.

use crate::KafkaError;
use crate::settings::{Settings, millis};
use herald_core::log::{LogRecord, PartitionHandler};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long one poll waits for records (and how soon a stop request is noticed).
const POLL: Duration = Duration::from_millis(50);

/// How often librdkafka reports its statistics (the consumer lag per partition among them).
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// How long a member waits before reading a batch again whose processing failed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A running member of the group; [`Member::stop`] leaves the group.
pub(crate) struct Member {
    stop: Arc<AtomicBool>,
    done: Option<oneshot::Receiver<()>>,
    owned: Arc<Mutex<BTreeSet<u32>>>,
    handler: Arc<dyn PartitionHandler>,
}

impl Member {
    /// Joins the group and starts owning what it is assigned.
    pub(crate) fn start(settings: &Settings, handler: Arc<dyn PartitionHandler>) -> Result<Member, KafkaError> {
        let runtime = Handle::try_current().map_err(|_| KafkaError::NoRuntime)?;
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let context = OwnerContext {
            runtime,
            handler: handler.clone(),
            topic: settings.topic.clone(),
            state: Mutex::new(State::default()),
            owned: owned.clone(),
        };
        let consumer: BaseConsumer<OwnerContext> = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.client_id)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A group that has committed nothing yet starts at the beginning: no record is skipped.
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", millis(settings.session_timeout))
            .set("heartbeat.interval.ms", millis(settings.heartbeat_interval))
            .set("fetch.wait.max.ms", millis(settings.fetch_wait))
            .set("statistics.interval.ms", millis(STATS_INTERVAL))
            .create_with_context(context)?;
        consumer.subscribe(&[&settings.topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = oneshot::channel();
        let run = Run { consumer, stop: stop.clone(), max_batch: settings.max_batch.max(1) };
        std::thread::Builder::new()
            .name(format!("log-member-{}", settings.client_id))
            .spawn(move || {
                run.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| KafkaError::Thread(e.to_string()))?;
        Ok(Member { stop, done: Some(done), owned, handler })
    }

    /// What this member hands its partitions' records to.
    pub(crate) fn handler(&self) -> Arc<dyn PartitionHandler> {
        self.handler.clone()
    }

    /// The partitions this member owns now.
    pub(crate) fn owned(&self) -> Vec<u32> {
        lock(&self.owned).iter().copied().collect()
    }

    /// Finishes the batch in hand (processed and committed), leaves the group (every owned partition is
    /// revoked first) and returns when the member has stopped.
    pub(crate) async fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Without `stop`, the thread still finishes and leaves the group on its own.
        self.stop.store(true, Ordering::Release);
    }
}

struct Run {
    consumer: BaseConsumer<OwnerContext>,
    stop: Arc<AtomicBool>,
    max_batch: usize,
}

impl Run {
    fn run(self) {
        let context = self.consumer.context();
        while !self.stop.load(Ordering::Acquire) {
            let mut read = 0;
            let mut wait = POLL;
            // Read what is there, up to a batch, waiting only for the first record.
            while read < self.max_batch {
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(message)) => {
                        read += 1;
                        context.read(message.partition(), message.offset(), message.payload());
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "reading the log");
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            context.flush_all(&self.consumer);
        }
        context.flush_all(&self.consumer);
        // Dropping the consumer closes it: it leaves the group, and the revocation that brings runs
        // `revoked` for every partition still owned.
        let context_owned = context.owned.clone();
        let runtime = context.runtime.clone();
        let handler = context.handler.clone();
        drop(self.consumer);
        // A member whose close failed has let go all the same.
        let left: Vec<u32> = std::mem::take(&mut *lock(&context_owned)).into_iter().collect();
        for partition in left {
            let handler = handler.clone();
            let _ = drive(&runtime, async move { handler.revoked(partition).await });
        }
        metrics::gauge!("cluster_partitions_owned").set(0.0);
    }
}

#[derive(Default)]
struct State {
    /// Records read and not yet processed, per partition, with their offsets (None: unreadable, skipped).
    pending: BTreeMap<u32, Vec<(i64, Option<LogRecord>)>>,
}

struct OwnerContext {
    runtime: Handle,
    handler: Arc<dyn PartitionHandler>,
    topic: String,
    state: Mutex<State>,
    owned: Arc<Mutex<BTreeSet<u32>>>,
}

impl OwnerContext {
    fn read(&self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        let Ok(partition) = u32::try_from(partition) else { return };
        let record = match payload.map(serde_json::from_slice::<LogRecord>) {
            Some(Ok(record)) => Some(record),
            // A record nobody can read would stop its partition for good if it were retried: it is logged and
            // passed over (its offset is committed with its batch).
            other => {
                let error = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "no payload".to_owned(),
                };
                tracing::error!(partition, offset, %error, "skipping an unreadable log record");
                metrics::counter!("log_unreadable_records_total").increment(1);
                None
            }
        };
        lock(&self.state).pending.entry(partition).or_default().push((offset, record));
    }

    /// Processes and commits every partition's pending records.
    fn flush_all(&self, consumer: &BaseConsumer<OwnerContext>) {
        let partitions: Vec<u32> = lock(&self.state).pending.keys().copied().collect();
        for partition in partitions {
            self.flush(consumer, partition);
        }
    }

    /// Hands `partition`'s pending records to the handler and, once it returns, commits past them.
    fn flush(&self, consumer: &BaseConsumer<OwnerContext>, partition: u32) {
        let Some(pending) = lock(&self.state).pending.remove(&partition) else { return };
        let (Some(&(first, _)), Some(&(last, _))) = (pending.first(), pending.last()) else { return };
        let records: Vec<LogRecord> = pending.into_iter().filter_map(|(_, r)| r).collect();
        if !records.is_empty() {
            let handler = self.handler.clone();
            let count = records.len() as u64;
            if !drive(&self.runtime, async move { handler.process(partition, records).await }) {
                // The handler failed part-way: nothing past `first` is known to be durable. Read the batch
                // again rather than commit past it.
                tracing::error!(partition, offset = first, "processing a log batch failed; reading it again");
                if let Err(e) = consumer.seek(&self.topic, partition as i32, Offset::Offset(first), POLL) {
                    tracing::error!(partition, error = %e, "rewinding the log after a failed batch");
                }
                std::thread::sleep(RETRY_PAUSE);
                return;
            }
            metrics::counter!("log_records_processed_total").increment(count);
        }
        self.commit(consumer, partition, last + 1);
    }

    /// Commits `next` as the partition's position: everything below it is processed.
    fn commit(&self, consumer: &BaseConsumer<OwnerContext>, partition: u32, next: i64) {
        let mut offsets = TopicPartitionList::new();
        if let Err(e) = offsets.add_partition_offset(&self.topic, partition as i32, Offset::Offset(next)) {
            tracing::error!(partition, error = %e, "building an offset commit");
            return;
        }
        if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
            // The next owner starts before these records and processes them again; the apply is idempotent.
            tracing::warn!(partition, offset = next, error = %e, "committing the log's offset failed");
            metrics::counter!("log_commit_errors_total").increment(1);
        }
    }

    /// `cluster_partitions_owned`, as on leases: the partitions this member owns now.
    fn count_owned(&self) {
        metrics::gauge!("cluster_partitions_owned").set(lock(&self.owned).len() as f64);
    }

    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<u32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect()
    }
}

impl ClientContext for OwnerContext {
    /// librdkafka's statistics (every `STATS_INTERVAL`): the lag of each partition this member owns, i.e. the
    /// records in the log past its last commit.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let owned = lock(&self.owned).clone();
        for (partition, stats) in &topic.partitions {
            let Ok(p) = u32::try_from(*partition) else { continue };
            if owned.contains(&p) && stats.consumer_lag >= 0 {
                metrics::gauge!("log_consumer_lag", "partition" => p.to_string()).set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for OwnerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        metrics::counter!("log_rebalances_total", "kind" => "revoke").increment(1);
        let lost = consumer.assignment_lost();
        for partition in self.partitions_of(list) {
            if lost {
                // Another member owns it already: what was read here is its to process.
                lock(&self.state).pending.remove(&partition);
                tracing::warn!(partition, "lost a log partition without a clean revocation");
            } else {
                self.flush(consumer, partition);
            }
            if lock(&self.owned).remove(&partition) {
                let handler = self.handler.clone();
                let _ = drive(&self.runtime, async move { handler.revoked(partition).await });
            }
        }
        self.count_owned();
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                metrics::counter!("log_rebalances_total", "kind" => "assign").increment(1);
                for partition in self.partitions_of(list) {
                    if lock(&self.owned).insert(partition) {
                        let handler = self.handler.clone();
                        let _ = drive(&self.runtime, async move { handler.assigned(partition).await });
                    }
                }
                self.count_owned();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "the log's consumer group failed to rebalance"),
        }
    }
}

/// Runs `future` on the node's runtime and waits for it on this (non-runtime) thread. False if it panicked.
fn drive<F>(runtime: &Handle, future: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    let task = runtime.spawn(future);
    match runtime.block_on(task) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "a partition handler call failed");
            false
        }
    }
}

// A poisoned lock only means a panic elsewhere while holding it; the data itself stays valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
