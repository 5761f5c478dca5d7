//! Admission of writes: a node holds at most so many writes between taking them and answering them (in the
//! log's queues, in a batch, waiting for their outcome). A write that finds them all taken waits a little for
//! one to finish and is otherwise refused at once as `unavailable`, with a jittered `Retry-After`, so that at
//! twice the load a node sustains the writes it takes keep their latency and its memory stays bounded,
//! instead of every write queueing until the apply timeout. Clients retry with the same `client_msg_id`.
//!
//! The bound is per node and counts writes taken from this node's clients; records that other nodes forward
//! to a partition this node owns were admitted there.

use crate::{CoreError, CoreResult};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shortest `Retry-After` a refused write gets; a random part of the same size spreads the retries.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub struct Admission {
    slots: Arc<Semaphore>,
    /// How long a write may wait for a slot before it is refused.
    wait: Duration,
}

/// A slot held by one write until it is answered (dropped).
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!("writes_pending").decrement(1.0);
    }
}

impl Admission {
    /// At most `max_pending` writes at once, each waiting at most `wait` for a slot.
    pub fn new(max_pending: usize, wait: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(max_pending.clamp(1, Semaphore::MAX_PERMITS))), wait }
    }

    /// No bound (tests and tools that drive a log directly).
    pub fn unbounded() -> Self {
        Self::new(Semaphore::MAX_PERMITS, Duration::ZERO)
    }

    /// A slot for one write, or `unavailable` with a retry delay when none frees up within the wait.
    pub async fn admit(&self) -> CoreResult<Admitted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                // Timed out (or closed, which this never is): the node is at its bound.
                _ => {
                    metrics::counter!("writes_refused_total", "reason" => "overloaded").increment(1);
                    let jitter = rand::rng().random_range(0..=RETRY_AFTER.as_millis() as u64);
                    return Err(CoreError::Overloaded { retry_after_ms: RETRY_AFTER.as_millis() as u64 + jitter });
                }
            },
        };
        metrics::gauge!("writes_pending").increment(1.0);
        Ok(Admitted { _slot: slot })
    }

    /// Writes holding a slot now.
    #[cfg(test)]
    fn pending(&self, max_pending: usize) -> usize {
        max_pending - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_beyond_the_bound_wait_then_are_refused_with_a_retry_delay() {
        let admission = Admission::new(2, Duration::from_millis(50));
        let first = admission.admit().await.expect("a free slot");
        let _second = admission.admit().await.expect("a free slot");
        assert_eq!(admission.pending(2), 2);

        let started = tokio::time::Instant::now();
        match admission.admit().await {
            Err(CoreError::Overloaded { retry_after_ms }) => {
                assert!((500..=1000).contains(&retry_after_ms), "retry after {retry_after_ms} ms");
            }
            other => panic!("a third write must be refused, got {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited for a slot first");

        // A slot freed while a write waits goes to it.
        let waiting = tokio::spawn(async move {
            let admitted = admission.admit().await;
            (admitted.is_ok(), admission)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        let (admitted, admission) = waiting.await.expect("the waiting write");
        assert!(admitted, "a write waiting within the bound gets the freed slot");
        assert_eq!(admission.pending(2), 1, "the slot of a dropped write is free again");
    }

    #[tokio::test]
    async fn unbounded_admits_without_waiting() {
        let admission = Admission::unbounded();
        let held: Vec<Admitted> = admit_all(&admission, 10_000).await;
        assert_eq!(held.len(), 10_000);
    }

    async fn admit_all(admission: &Admission, n: usize) -> Vec<Admitted> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(admission.admit().await.expect("unbounded"));
        }
        held
    }
}
