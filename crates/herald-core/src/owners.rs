//! The partitions this node owns: a bounded queue and an owner task per partition, started when the node
//! comes to own the partition and stopped (after finishing what it accepted) when it lets go. On one node every
//! partition is owned from start to shutdown; in a cluster ownership moves between nodes (leases, a consumer
//! group) and a record for a partition owned elsewhere is handed back to the caller to route there.

use crate::log::{LogRecord, PartitionHandler, partition_of};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a record was not queued here.
#[derive(Debug)]
pub enum LocalAppendError {
    /// This node does not own the record's partition (any more): route it to the owner.
    NotOwned(LogRecord),
    /// Shutting down: nothing new is accepted.
    Closed,
}

struct Owner {
    tx: mpsc::Sender<LogRecord>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct LocalOwners {
    queue_depth: usize,
    max_batch: usize,
    handler: OnceLock<Arc<dyn PartitionHandler>>,
    /// One slot per partition; `Some` while this node owns it. Read on every append, written on ownership
    /// changes only.
    slots: Vec<RwLock<Option<Owner>>>,
    closed: AtomicBool,
}

impl LocalOwners {
    /// `partitions` slots, none owned yet; an owned partition queues `queue_depth` records and hands its owner
    /// at most `max_batch` at a time.
    pub fn new(partitions: u32, queue_depth: usize, max_batch: usize) -> Self {
        Self {
            queue_depth: queue_depth.max(1),
            max_batch: max_batch.max(1),
            handler: OnceLock::new(),
            slots: (0..partitions.max(1)).map(|_| RwLock::new(None)).collect(),
            closed: AtomicBool::new(false),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Sets who processes the records; partitions can be owned from then on. A second call is ignored.
    pub fn set_handler(&self, handler: Arc<dyn PartitionHandler>) {
        if self.handler.set(handler).is_err() {
            tracing::warn!("partition handler set twice; keeping the first");
        }
    }

    /// Whether this node owns `partition` now.
    pub fn owns(&self, partition: u32) -> bool {
        self.slot(partition).is_some_and(|s| read(s).is_some())
    }

    /// The partitions owned now.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.partitions()).filter(|p| self.owns(*p)).collect()
    }

    /// Starts owning `partition`: the handler hears `assigned` before its first batch. False if it was owned
    /// already, the node is closing, or no handler is set.
    pub fn own(&self, partition: u32) -> bool {
        let (Some(slot), Some(handler)) = (self.slot(partition), self.handler.get()) else { return false };
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut slot = write(slot);
        if slot.is_some() {
            return false;
        }
        let (tx, rx) = mpsc::channel(self.queue_depth);
        let stop = CancellationToken::new();
        let run = OwnerTask { partition, rx, handler: handler.clone(), max_batch: self.max_batch };
        let task = tokio::spawn(run.run(stop.clone()));
        *slot = Some(Owner { tx, stop, task });
        true
    }

    /// Stops owning `partition`: new records are refused (handed back as `NotOwned`), those already accepted
    /// are processed, then the handler hears `revoked`. Returns when all of that is done.
    pub async fn release(&self, partition: u32) {
        let Some(slot) = self.slot(partition) else { return };
        let owner = write(slot).take();
        if let Some(owner) = owner {
            owner.stop.cancel();
            if let Err(e) = owner.task.await {
                tracing::error!(partition, error = %e, "partition owner task failed");
            }
        }
    }

    /// Queues a record on its partition if this node owns it. A full queue makes the caller wait
    /// (backpressure instead of unbounded memory).
    pub async fn append(&self, record: LogRecord) -> Result<(), LocalAppendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LocalAppendError::Closed);
        }
        let partition = partition_of(record.conversation, self.partitions());
        let tx = self.slot(partition).and_then(|s| read(s).as_ref().map(|o| o.tx.clone()));
        let Some(tx) = tx else { return Err(LocalAppendError::NotOwned(record)) };
        // A queue closed meanwhile belongs to an owner that is letting go: the record goes to the next one.
        tx.send(record).await.map_err(|e| LocalAppendError::NotOwned(e.0))
    }

    /// Refuses new records and releases every partition (each finishing what it accepted).
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let owners: Vec<Owner> = self.slots.iter().filter_map(|s| write(s).take()).collect();
        for owner in &owners {
            owner.stop.cancel();
        }
        for owner in owners {
            if let Err(e) = owner.task.await {
                tracing::error!(error = %e, "partition owner task failed");
            }
        }
    }

    fn slot(&self, partition: u32) -> Option<&RwLock<Option<Owner>>> {
        self.slots.get(partition as usize)
    }
}

struct OwnerTask {
    partition: u32,
    rx: mpsc::Receiver<LogRecord>,
    handler: Arc<dyn PartitionHandler>,
    max_batch: usize,
}

impl OwnerTask {
    async fn run(mut self, stop: CancellationToken) {
        self.handler.assigned(self.partition).await;
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            tokio::select! {
                biased;
                n = self.rx.recv_many(&mut batch, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.handler.process(self.partition, std::mem::take(&mut batch)).await;
                }
                () = stop.cancelled() => {
                    // Refuse new records, then finish every record already accepted.
                    self.rx.close();
                    while self.rx.recv_many(&mut batch, self.max_batch).await > 0 {
                        self.handler.process(self.partition, std::mem::take(&mut batch)).await;
                    }
                    break;
                }
            }
        }
        self.handler.revoked(self.partition).await;
    }
}

// A poisoned lock only means a panic elsewhere while holding it; the slot itself stays valid.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Op;
    use async_trait::async_trait;
    use herald_proto::{ConversationId, DeviceId, UserId};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl PartitionHandler for Recorder {
        async fn assigned(&self, partition: u32) {
            self.events.lock().expect("lock").push(format!("assigned {partition}"));
        }
        async fn revoked(&self, partition: u32) {
            self.events.lock().expect("lock").push(format!("revoked {partition}"));
        }
        async fn process(&self, partition: u32, records: Vec<LogRecord>) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.events.lock().expect("lock").push(format!("processed {partition} x{}", records.len()));
        }
    }

    fn record(conversation: ConversationId) -> LogRecord {
        LogRecord {
            request_id: uuid::Uuid::now_v7(),
            origin: None,
            conversation,
            actor: UserId::new(),
            device: DeviceId::new(),
            op: Op::Receipt,
        }
    }

    #[tokio::test]
    async fn records_are_refused_until_owned_and_finished_before_release() {
        let owners = LocalOwners::new(1, 16, 4);
        let handler = Arc::new(Recorder::default());
        owners.set_handler(handler.clone());
        let c = ConversationId::new();
        assert!(matches!(owners.append(record(c)).await, Err(LocalAppendError::NotOwned(_))));
        assert!(owners.own(0));
        assert!(!owners.own(0), "owning twice is refused");
        for _ in 0..10 {
            owners.append(record(c)).await.expect("owned partition accepts");
        }
        owners.release(0).await;
        assert!(!owners.owns(0));
        let events = handler.events.lock().expect("lock").clone();
        let processed: usize = events
            .iter()
            .filter_map(|e| e.strip_prefix("processed 0 x"))
            .map(|n| n.parse::<usize>().expect("count"))
            .sum();
        assert_eq!(processed, 10, "every accepted record is processed before the release returns: {events:?}");
        assert_eq!(events.first().map(String::as_str), Some("assigned 0"));
        assert_eq!(events.last().map(String::as_str), Some("revoked 0"));
        assert!(matches!(owners.append(record(c)).await, Err(LocalAppendError::NotOwned(_))));
        owners.shutdown().await;
        assert!(matches!(owners.append(record(c)).await, Err(LocalAppendError::Closed)));
        assert!(!owners.own(0), "a closed node owns nothing new");
    }
}
