//! A connection's bounded outbox: what the hub has for one socket and the connection has not written yet.
//!
//! Hand-written instead of a `tokio::sync::mpsc` channel because of what an *idle* connection costs: an
//! mpsc channel allocates its first block of slots up front (about 1.5 KB here), while an empty `VecDeque`
//! allocates nothing. The outbox also carries the "kicked" flag, so a connection needs one shared
//! allocation instead of a channel plus a cancellation token. It has one reader (the connection's task),
//! so one waker slot beside the items is all the waking it needs, and the reader can wait on it with a
//! plain `poll` that keeps nothing in the task's state.
//!
//! The outbox is also the connection's alarm clock: the connection writes down when it next has to look at
//! its heartbeat and idle deadlines, and one node-wide sweep ([`crate::hub::Hub::ring_alarms`]) wakes those
//! whose time has come. A timer of its own in every connection task would cost each idle connection a
//! tokio timer entry (112 bytes) and push its task into the next size class.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

pub struct Outbox<T> {
    queue: Mutex<Queue<T>>,
    depth: usize,
    /// 0 while open, else the `Kick` that closed it.
    kicked: AtomicU8,
    /// When the reader wants to be woken without items, in the sweep's milliseconds; [`NO_ALARM`], or
    /// [`RUNG`] once the sweep found it due and the reader has not taken it yet.
    alarm: AtomicU64,
}

const NO_ALARM: u64 = u64::MAX;
const RUNG: u64 = 0;

struct Queue<T> {
    items: VecDeque<T>,
    /// The reader's task, when it waits for items or a kick.
    waker: Option<Waker>,
}

/// Why a connection must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// Its outbox overflowed: it could not keep up.
    TooSlow = 1,
    /// Its device was logged out or revoked.
    Revoked = 2,
    /// The node is shutting down: the client should reconnect elsewhere.
    Draining = 3,
}

/// Why a push did not go in.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The outbox was full: the connection has been kicked (this push did it, or an earlier one).
    Full { newly_kicked: bool },
}

impl<T> Outbox<T> {
    pub fn new(depth: usize) -> Self {
        Self {
            queue: Mutex::new(Queue { items: VecDeque::new(), waker: None }),
            depth: depth.max(1),
            kicked: AtomicU8::new(0),
            alarm: AtomicU64::new(NO_ALARM),
        }
    }

    /// Asks to be woken at `at` (milliseconds on the clock the sweep passes to [`Outbox::ring_if_due`],
    /// at least 1). Replaces the previous alarm, rung or not.
    pub fn set_alarm(&self, at: u64) {
        self.alarm.store(at.max(RUNG + 1), Ordering::Release);
    }

    /// Rings the alarm if it is due at `now`: the reader is woken and its next [`Outbox::poll_alarm`] is
    /// ready. Returns whether this call rang it.
    pub fn ring_if_due(&self, now: u64) -> bool {
        let at = self.alarm.load(Ordering::Acquire);
        if at == RUNG || at > now {
            return false;
        }
        // Lost to a `set_alarm` that moved it meanwhile: the new time decides, at the next sweep.
        if self.alarm.compare_exchange(at, RUNG, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        self.wake_reader();
        true
    }

    /// `Ready` once the alarm rang (which takes it: set a new one), else `Pending` with the task registered
    /// to be woken when it rings (or by the next push or kick).
    pub fn poll_alarm(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut queue = self.lock();
        if self.alarm.compare_exchange(RUNG, NO_ALARM, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Poll::Ready(());
        }
        register(&mut queue.waker, cx);
        Poll::Pending
    }

    /// Queues an item; a full outbox kicks the connection instead of growing.
    pub fn push(&self, item: T) -> Result<(), PushError> {
        if self.is_kicked() {
            return Err(PushError::Full { newly_kicked: false });
        }
        let queue = self.lock();
        if queue.items.len() >= self.depth {
            drop(queue);
            let newly_kicked = self.kick(Kick::TooSlow);
            return Err(PushError::Full { newly_kicked });
        }
        Self::enqueue(queue, item);
        Ok(())
    }

    /// Queues an ephemeral item (typing, presence) while the outbox is less than half full, and drops it
    /// otherwise; returns whether it went in. Never kicks: a connection that falls behind loses indicators the
    /// next change or a `presence_query` brings back, not its life. The second half of the outbox is left to
    /// the durable feed events, the only ones that count towards the slow-consumer limit.
    pub fn offer(&self, item: T) -> bool {
        if self.is_kicked() {
            return false;
        }
        let queue = self.lock();
        if queue.items.len() >= self.depth / 2 {
            return false;
        }
        Self::enqueue(queue, item);
        true
    }

    /// Adds an item that was allowed in and wakes the reader (outside the lock).
    fn enqueue(mut queue: std::sync::MutexGuard<'_, Queue<T>>, item: T) {
        queue.items.push_back(item);
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Tells the connection to go; returns whether this call did it (the first reason wins).
    pub fn kick(&self, why: Kick) -> bool {
        let done = self.kicked.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok();
        self.wake_reader();
        done
    }

    /// Whether the connection must go.
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire) != 0
    }

    /// Why the connection must go, if it must.
    pub fn kicked_for(&self) -> Option<Kick> {
        match self.kicked.load(Ordering::Acquire) {
            1 => Some(Kick::TooSlow),
            2 => Some(Kick::Revoked),
            3 => Some(Kick::Draining),
            _ => None,
        }
    }

    /// Resolves once the connection is kicked.
    pub async fn kicked(&self) {
        std::future::poll_fn(|cx| {
            let mut queue = self.lock();
            if self.is_kicked() {
                return Poll::Ready(());
            }
            register(&mut queue.waker, cx);
            Poll::Pending
        })
        .await
    }

    /// Waits until there is something to write (up to `max` items, moved into `into`) or the connection was
    /// kicked (returns false). Cancel-safe: nothing is taken unless this returns.
    pub async fn recv_many(&self, into: &mut Vec<T>, max: usize) -> bool {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, into, max)).await
    }

    /// [`Outbox::recv_many`] as a poll: `Ready(true)` with items moved into `into`, `Ready(false)` when
    /// kicked, else `Pending` with the task registered to be woken by the next push or kick.
    pub fn poll_recv_many(&self, cx: &mut Context<'_>, into: &mut Vec<T>, max: usize) -> Poll<bool> {
        let mut queue = self.lock();
        if self.is_kicked() {
            return Poll::Ready(false);
        }
        if queue.items.is_empty() {
            register(&mut queue.waker, cx);
            return Poll::Pending;
        }
        let n = queue.items.len().min(max);
        into.extend(queue.items.drain(..n));
        // An idle connection should hold no buffer: give back what a burst grew.
        if queue.items.is_empty() && queue.items.capacity() > 32 {
            queue.items = VecDeque::new();
        }
        Poll::Ready(true)
    }

    /// Wakes the reader after a flag it checks (kicked, the alarm) was set. The waker is taken under the lock
    /// the reader registers under: a reader that checked the flag before it was set has registered by now.
    fn wake_reader(&self) {
        let waker = self.lock().waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_kicks_once() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(1), Ok(()));
        assert_eq!(outbox.push(2), Ok(()));
        assert_eq!(outbox.push(3), Err(PushError::Full { newly_kicked: true }));
        assert_eq!(outbox.push(4), Err(PushError::Full { newly_kicked: false }));
        assert_eq!(outbox.kicked_for(), Some(Kick::TooSlow));
        assert!(!outbox.kick(Kick::Revoked), "the first reason stays");
        let mut got = Vec::new();
        assert!(!outbox.recv_many(&mut got, 10).await, "a kicked outbox reports it");
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn ephemeral_items_are_dropped_past_half_and_never_kick() {
        let outbox = Outbox::new(4);
        assert!(outbox.offer(1));
        assert!(outbox.offer(2));
        assert!(!outbox.offer(3), "half full: an ephemeral item is dropped");
        assert!(!outbox.is_kicked(), "dropping never kicks");
        assert_eq!(outbox.push(10), Ok(()), "the second half is the durable events'");
        assert_eq!(outbox.push(11), Ok(()));
        assert_eq!(outbox.push(12), Err(PushError::Full { newly_kicked: true }), "durable events still kick when full");
        assert!(!outbox.offer(4));
        let fresh = Outbox::new(4);
        assert!(fresh.offer(1) && fresh.offer(2));
        let mut got = Vec::new();
        assert!(fresh.recv_many(&mut got, 10).await);
        assert_eq!(got, [1, 2]);
        assert!(fresh.offer(3), "room again once the reader caught up");
    }

    #[tokio::test]
    async fn wakes_the_reader_and_batches() {
        let outbox = std::sync::Arc::new(Outbox::new(100));
        let reader = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 5 {
                    assert!(outbox.recv_many(&mut got, 3).await);
                }
                got
            })
        };
        for i in 0..5 {
            outbox.push(i).expect("room");
            tokio::task::yield_now().await;
        }
        assert_eq!(reader.await.expect("reader"), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn the_alarm_rings_once_when_due() {
        let outbox = std::sync::Arc::new(Outbox::<u8>::new(1));
        assert!(!outbox.ring_if_due(1_000), "no alarm set: nothing rings");
        outbox.set_alarm(500);
        assert!(!outbox.ring_if_due(499), "not due yet");
        let reader = {
            let outbox = outbox.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| outbox.poll_alarm(cx)).await })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "waits for the ring");
        assert!(outbox.ring_if_due(500), "due at its time");
        assert!(!outbox.ring_if_due(600), "rings once");
        tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the ring woke the reader")
            .expect("reader");
        let mut cx = Context::from_waker(Waker::noop());
        assert!(outbox.poll_alarm(&mut cx).is_pending(), "taken by the reader");
        assert!(!outbox.ring_if_due(u64::MAX - 1), "and not set again until the reader sets it");
    }
}
