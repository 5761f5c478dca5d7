//! Limits every request is held to, and the per-user rate limiters (a token bucket per user).

use crate::CoreError;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::keyed::DefaultKeyedStateStore};
use herald_proto::UserId;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// The configured limits, as the services need them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest message body, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Largest group, owner included.
    pub max_group_members: usize,
    /// Longest group title, in characters.
    pub max_title_chars: usize,
    /// Largest page of history or conversations a client may ask for.
    pub max_page: usize,
    /// Sustained requests per user per second that write or fan out: messages, edits, deletes, reactions,
    /// delivered/read positions, typing, presence queries.
    pub sends_per_second: u32,
    /// Sends a user may burst above the sustained rate.
    pub send_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            max_group_members: 10_000,
            max_title_chars: 200,
            max_page: 200,
            sends_per_second: 50,
            send_burst: 200,
        }
    }
}

/// How many checks pass between looks at the bucket count (counting visits every shard of the map).
const COUNT_EVERY: u64 = 1024;

/// A token bucket per user, forgotten once it is full again. The send limit and the report limit are two of them.
pub struct UserRateLimiter {
    inner: RateLimiter<UserId, DefaultKeyedStateStore<UserId>, DefaultClock>,
    checks: AtomicU64,
    /// Name of the structure in the memory footprint.
    structure: &'static str,
    /// Buckets kept before idle ones are forgotten early (the server's upkeep forgets them every minute).
    bound: usize,
}

impl UserRateLimiter {
    pub fn new(quota: Quota, structure: &'static str, bound: usize) -> Self {
        Self { inner: RateLimiter::keyed(quota), checks: AtomicU64::new(0), structure, bound }
    }

    /// The send limit: `sends_per_second` sustained, bursts up to `send_burst`.
    pub fn for_sends(limits: &Limits) -> Self {
        let rate = NonZeroU32::new(limits.sends_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.send_burst.max(limits.sends_per_second)).unwrap_or(rate);
        Self::new(Quota::per_second(rate).allow_burst(burst), "send_rate_buckets", 1_000_000)
    }

    /// Takes one token for `user` or says how long to wait.
    pub fn check(&self, user: UserId) -> Result<(), CoreError> {
        use governor::clock::Clock;
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(COUNT_EVERY) && self.inner.len() > self.bound {
            self.inner.retain_recent();
        }
        self.inner.check_key(&user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            CoreError::RateLimited { retry_after_ms: wait.as_millis().max(1) as u64 }
        })
    }

    /// One bucket per user who was checked since the last [`UserRateLimiter::shrink`].
    pub fn footprint(&self) -> crate::footprint::Footprint {
        let entries = self.inner.len();
        crate::footprint::Footprint {
            structure: self.structure,
            entries,
            // A bucket is the user id and one 8-byte state in a sharded map.
            bytes: entries * (size_of::<UserId>() + 8 + 8),
            bound: self.bound,
        }
    }

    /// Forgets idle users' buckets, so memory tracks active users only.
    pub fn shrink(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}
