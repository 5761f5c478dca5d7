//! The in-process partitioned log: a bounded queue and a task per partition. It keeps the cluster's shape
//! (records keyed by conversation, one owner per partition, batches handed to the owner in order) without
//! the durability of Kafka: it does not need it, because nothing is acknowledged to a client before the
//! owner has committed it to the durable store. A record lost in a crash was never acked, and the client's
//! retry with the same `client_msg_id` is idempotent.

use async_trait::async_trait;
use herald_core::log::{LogError, LogRecord, MessageLog, PartitionHandler, partition_of};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct InProcessLog {
    senders: Vec<mpsc::Sender<LogRecord>>,
    receivers: Mutex<Option<Vec<mpsc::Receiver<LogRecord>>>>,
    max_batch: usize,
    closed: AtomicBool,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl InProcessLog {
    /// `partitions` queues of `queue_depth` records each; an owner takes at most `max_batch` at a time.
    pub fn new(partitions: u32, queue_depth: usize, max_batch: usize) -> Self {
        let (senders, receivers) = (0..partitions.max(1)).map(|_| mpsc::channel(queue_depth.max(1))).unzip();
        Self {
            senders,
            receivers: Mutex::new(Some(receivers)),
            max_batch: max_batch.max(1),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }
}

#[async_trait]
impl MessageLog for InProcessLog {
    fn partitions(&self) -> u32 {
        self.senders.len() as u32
    }

    async fn append(&self, record: LogRecord) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let partition = partition_of(record.conversation, self.partitions()) as usize;
        // A full queue makes the caller wait: backpressure instead of unbounded memory.
        self.senders[partition].send(record).await.map_err(|_| LogError::Closed)
    }

    fn start(&self, handler: Arc<dyn PartitionHandler>) {
        let receivers = self.receivers.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(receivers) = receivers else {
            tracing::warn!("in-process log started twice; ignoring");
            return;
        };
        for (partition, rx) in receivers.into_iter().enumerate() {
            let owner =
                PartitionOwner { partition: partition as u32, rx, handler: handler.clone(), max_batch: self.max_batch };
            self.tasks.spawn(owner.run(self.stop.clone()));
        }
        self.tasks.close();
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

struct PartitionOwner {
    partition: u32,
    rx: mpsc::Receiver<LogRecord>,
    handler: Arc<dyn PartitionHandler>,
    max_batch: usize,
}

impl PartitionOwner {
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
