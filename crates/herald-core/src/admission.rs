//! Admission of writes: a node holds at most so many writes between taking them and answering them (in the
//! log's queues, in a batch, waiting for their outcome). A write that finds them all taken waits a little for
//! one to finish and is otherwise refused at once as `unavailable`, with a jittered `Retry-After`, so that at
//! twice the load a node sustains the writes it takes keep their latency and its memory stays bounded,
//! instead of every write queueing until the apply timeout. Clients retry with the same `client_msg_id`.
//!
//! The count alone bounds memory, not latency: writes held is latency times throughput, and the throughput
//! under overload is not known in advance (it drops when the refusals and the clients take CPU). So with a
//! latency target the number of slots follows the time writes take, as CoDel does for a packet queue: every
//! interval, when even the fastest write of the interval took longer than the target, a queue is standing and
//! the slots shrink by a tenth (down to a floor), and writes that find no slot are refused without waiting;
//! when the fastest was within the target and writes were turned away or kept waiting, the slots grow back by
//! a twentieth (up to the configured most). The minimum is what shows a standing queue: one slow fsync makes a
//! slow maximum, not a slow minimum. A low quantile (the fastest quarter) reacts more, too much: tried at the
//! load a node sustains, it refused a fifth of the writes, and the smaller group commits that followed lowered
//! what the node served, which kept the quantile high (BENCHMARKS.md).
//!
//! The bound is per node and counts writes taken from this node's clients; records that other nodes forward
//! to a partition this node owns were admitted there.

use crate::lock;
use crate::{CoreError, CoreResult};
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The shortest `Retry-After` a refused write gets; a random part of the same size spreads the retries.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How often the latency-driven limit is reconsidered.
const INTERVAL: Duration = Duration::from_millis(100);

/// The fewest slots the latency-driven limit goes down to (or the most, when that is fewer): enough for the
/// group commits to stay full, and for bursts of a few hundred writes never to be refused for latency alone.
const FLOOR: usize = 1024;

pub struct Admission {
    slots: Arc<Semaphore>,
    /// How long a write may wait for a slot before it is refused.
    wait: Duration,
    /// The latency-driven number of slots, when there is a target.
    limit: Option<Arc<Limit>>,
}

/// A slot held by one write until it is answered (dropped).
pub struct Admitted {
    slot: Option<OwnedSemaphorePermit>,
    since: Instant,
    limit: Option<Arc<Limit>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!("writes_pending").decrement(1.0);
        if let Some(limit) = &self.limit
            && limit.completed(self.since.elapsed())
            && let Some(slot) = self.slot.take()
        {
            // The limit shrank while this slot was out: it leaves circulation instead of going back.
            slot.forget();
        }
    }
}

/// The number of slots in circulation, moved by the time writes take against a target.
struct Limit {
    target: Duration,
    most: usize,
    floor: usize,
    slots: Arc<Semaphore>,
    state: Mutex<LimitState>,
}

struct LimitState {
    /// Slots in circulation once `debt` is paid.
    current: usize,
    /// Slots to take out of circulation as writes holding them finish (they were all out when it shrank).
    debt: usize,
    interval_started: Instant,
    /// The fastest write that finished in this interval.
    fastest: Option<Duration>,
    /// Whether a write found no free slot in this interval.
    turned_away: bool,
    /// Whether the last interval's fastest write took longer than the target: a standing queue.
    standing: bool,
}

impl Limit {
    /// Records a finished write that took `took`; true when its slot must leave circulation.
    fn completed(&self, took: Duration) -> bool {
        let mut state = lock(&self.state);
        state.fastest = Some(state.fastest.map_or(took, |f| f.min(took)));
        let now = Instant::now();
        if now.duration_since(state.interval_started) >= INTERVAL {
            self.reconsider(&mut state, now);
        }
        if state.debt > 0 {
            state.debt -= 1;
            return true;
        }
        false
    }

    fn reconsider(&self, state: &mut LimitState, now: Instant) {
        state.standing = state.fastest.unwrap_or_default() > self.target;
        if state.standing && state.current > self.floor {
            let shrunk = (state.current - state.current / 10).max(self.floor);
            let out = state.current - shrunk;
            let forgotten = self.slots.forget_permits(out);
            state.debt += out - forgotten;
            state.current = shrunk;
        } else if !state.standing && state.turned_away && state.current < self.most {
            let grown = (state.current + state.current.div_ceil(20)).min(self.most);
            let back = grown - state.current;
            let paid = back.min(state.debt);
            state.debt -= paid;
            self.slots.add_permits(back - paid);
            state.current = grown;
        }
        metrics::gauge!("writes_pending_limit").set(state.current as f64);
        state.interval_started = now;
        state.fastest = None;
        state.turned_away = false;
    }

    /// Notes a write that found no free slot; true when there is a standing queue (refuse it at once).
    fn turned_away(&self) -> bool {
        let mut state = lock(&self.state);
        state.turned_away = true;
        state.standing
    }
}

impl Admission {
    /// At most `max_pending` writes at once, each waiting at most `wait` for a slot.
    pub fn new(max_pending: usize, wait: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(max_pending.clamp(1, Semaphore::MAX_PERMITS))), wait, limit: None }
    }

    /// As `new`, with the number of slots following the time writes take against `target` (see the module's
    /// comment): between `max_pending` and a floor of 1,024. A bound of 1,024 or fewer stays fixed.
    pub fn with_latency_target(max_pending: usize, wait: Duration, target: Duration) -> Self {
        let mut admission = Self::new(max_pending, wait);
        let most = admission.slots.available_permits();
        if most <= FLOOR {
            return admission;
        }
        admission.limit = Some(Arc::new(Limit {
            target,
            most,
            floor: FLOOR,
            slots: admission.slots.clone(),
            state: Mutex::new(LimitState {
                current: most,
                debt: 0,
                interval_started: Instant::now(),
                fastest: None,
                turned_away: false,
                standing: false,
            }),
        }));
        admission
    }

    /// No bound (tests and tools that drive a log directly).
    pub fn unbounded() -> Self {
        Self::new(Semaphore::MAX_PERMITS, Duration::ZERO)
    }

    /// A slot for one write, or `unavailable` with a retry delay when none frees up within the wait (at once,
    /// without waiting, while a queue is standing).
    pub async fn admit(&self) -> CoreResult<Admitted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let standing = self.limit.as_ref().is_some_and(|limit| limit.turned_away());
                let waited = if standing {
                    None
                } else {
                    tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await.ok().and_then(Result::ok)
                };
                match waited {
                    Some(slot) => slot,
                    // No slot within the wait (or closed, which this never is): the node is at its bound.
                    None => {
                        let reason = if standing { "standing_queue" } else { "overloaded" };
                        metrics::counter!("writes_refused_total", "reason" => reason).increment(1);
                        let jitter = rand::rng().random_range(0..=RETRY_AFTER.as_millis() as u64);
                        return Err(CoreError::Overloaded { retry_after_ms: RETRY_AFTER.as_millis() as u64 + jitter });
                    }
                }
            }
        };
        metrics::gauge!("writes_pending").increment(1.0);
        Ok(Admitted { slot: Some(slot), since: Instant::now(), limit: self.limit.clone() })
    }

    /// Writes holding a slot now.
    #[cfg(test)]
    fn pending(&self, max_pending: usize) -> usize {
        max_pending - self.slots.available_permits()
    }

    /// Slots in circulation under the latency-driven limit.
    #[cfg(test)]
    fn limit(&self) -> usize {
        self.limit.as_ref().map_or(usize::MAX, |limit| lock(&limit.state).current)
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

    #[tokio::test(start_paused = true)]
    async fn a_standing_queue_shrinks_the_slots_and_refuses_without_waiting_until_writes_are_fast_again() {
        let target = Duration::from_millis(50);
        let admission = Admission::with_latency_target(4096, Duration::from_millis(100), target);
        let mut held = admit_all(&admission, 4096).await;

        // Even the fastest write of the interval took 200 ms: 409 slots leave (all are out, so as they return).
        tokio::time::advance(Duration::from_millis(200)).await;
        drop(held.pop());
        assert_eq!(admission.limit(), 3687);
        assert_eq!(admission.slots.available_permits(), 0, "the returned slot left circulation");

        // No slot and a standing queue: refused at once, without the 100 ms wait.
        let started = tokio::time::Instant::now();
        assert!(matches!(admission.admit().await, Err(CoreError::Overloaded { .. })));
        assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");

        // Every slot back: 3,687 in circulation.
        drop(held);
        assert_eq!(admission.slots.available_permits(), 3687);

        // Fast writes while some were turned away: the slots grow back by a twentieth per interval.
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(admission.admit().await.expect("a free slot"));
        assert_eq!(admission.limit(), 3687 + 185);
        assert_eq!(admission.slots.available_permits(), 3687 + 185);

        // No standing queue now: a write that finds no slot waits for one again.
        let held = admit_all(&admission, 3687 + 185).await;
        let waiting = tokio::spawn(async move { (admission.admit().await.is_ok(), admission) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        let (admitted, _) = waiting.await.expect("the waiting write");
        assert!(admitted, "a write that waited got a slot");
    }

    #[tokio::test(start_paused = true)]
    async fn the_slots_never_shrink_below_the_floor_nor_grow_above_the_bound() {
        let admission = Admission::with_latency_target(2000, Duration::ZERO, Duration::from_millis(50));
        let mut held = admit_all(&admission, 2000).await;
        for _ in 0..20 {
            tokio::time::advance(Duration::from_millis(150)).await;
            drop(held.pop());
        }
        assert_eq!(admission.limit(), FLOOR);
        drop(held);
        assert_eq!(admission.slots.available_permits(), FLOOR);

        for _ in 0..40 {
            // One turned away, then a fast write in the next interval.
            let all = admit_all(&admission, admission.limit()).await;
            assert!(admission.admit().await.is_err());
            drop(all);
            tokio::time::advance(Duration::from_millis(100)).await;
            drop(admission.admit().await.expect("a free slot"));
        }
        assert_eq!(admission.limit(), 2000);
        assert_eq!(admission.slots.available_permits(), 2000);

        // A bound under the floor is never moved, and a write beyond it waits as without a target.
        let small = Admission::with_latency_target(10, Duration::from_millis(20), Duration::from_millis(50));
        let held = admit_all(&small, 10).await;
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(held);
        assert_eq!(small.slots.available_permits(), 10);
        let held = admit_all(&small, 10).await;
        let started = tokio::time::Instant::now();
        assert!(small.admit().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(20), "it waited for a slot first");
        drop(held);
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
            held.push(admission.admit().await.expect("a free slot"));
        }
        held
    }
}
