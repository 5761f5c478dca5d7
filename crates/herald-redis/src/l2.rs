//! The L2 cache: Redis, shared by every node, in front of the stores (the L1 cache of each node sits in front
//! of it). An entry belongs to a scope (a user, or a conversation with its memberships); each scope has a
//! version counter that every change to the scope increments once the change is stored. So a change never
//! has to find the entries it makes stale, and a reader that raced a change never caches what it read:
//!
//! - a hit is an entry whose tag is the scope's current version (read together, one round trip);
//! - a fill writes an entry tagged with the version read before the store was read, and only if the
//!   version is still that one (a script): a change committed meanwhile has incremented it;
//! - every fill and increment pushes the version's expiry past the entry's, so a version never lapses and
//!   comes back to a number that an older entry still carries.
//!
//! Redis out of reach costs only time: reads fail fast and go to the store. An increment that fails is kept
//! and retried until it lands; until then this node reads that scope from the store. Other nodes may read
//! the old entry from Redis in that window (see docs/cluster.md, "The L2 cache").

use crate::keys::Keys;
use fred::prelude::*;
use herald_proto::{ConversationId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Writes ARGV[2] (PX ARGV[3]) to KEYS[2] if the version KEYS[1] is still ARGV[1], and pushes the version's
/// expiry past the entry's (ARGV[4]). Returns 1 when written.
const FILL: &str = r"
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1";

/// Increments the version KEYS[1] and sets its expiry (ARGV[1]).
const INVALIDATE: &str = r"
local v = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v";

/// A read taking longer than this goes to the store instead (Redis is slow or unreachable).
const READ_TIMEOUT: Duration = Duration::from_millis(250);
/// A fill started longer ago than this is dropped: the version it read may have lapsed and come back since.
const FILL_WINDOW: Duration = Duration::from_secs(10);
/// How often failed invalidations are retried.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The most failed invalidations kept for retry; past it the oldest are dropped (and their scopes' entries
/// live out their TTL), so an outage cannot grow this node's memory without bound.
const MAX_PENDING: usize = 100_000;

/// What an entry belongs to: what is invalidated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A user's record.
    User(UserId),
    /// A conversation's record, its member list and each user's membership.
    Conversation(ConversationId),
}

/// One kind of cached value, with its hit rate.
pub struct Layer {
    hits: AtomicU64,
    misses: AtomicU64,
    hit_rate: metrics::Gauge,
}

impl Layer {
    pub fn new(name: &'static str) -> Self {
        Self {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hit_rate: metrics::gauge!("cache_hit_rate", "cache_layer" => "l2", "cache" => name),
        }
    }

    /// Hit rate in percent since start.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 { 0.0 } else { 100.0 * hits / total }
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        self.hit_rate.set(self.hit_rate());
    }
}

/// What a lookup found.
pub enum Lookup<T> {
    Hit(T),
    /// Read the store, then [`L2Cache::fill`] with this ticket (`None`: do not fill, Redis is out of reach
    /// or this node has a change to the scope not yet announced there).
    Miss(Option<Ticket>),
}

/// Permission to fill one entry with what the store says now.
pub struct Ticket {
    version_key: String,
    entry_key: String,
    version: String,
    taken: Instant,
}

pub struct L2Cache {
    client: Client,
    keys: Keys,
    ttl: Duration,
    /// Version keys whose increment failed, oldest first, retried until they land.
    pending: Mutex<PendingSet>,
}

#[derive(Default)]
struct PendingSet {
    order: std::collections::VecDeque<String>,
    members: HashSet<String>,
}

impl L2Cache {
    /// An L2 cache whose entries live `ttl`; starts the retry of failed invalidations.
    pub fn new(client: Client, keys: Keys, ttl: Duration) -> Arc<Self> {
        let cache = Arc::new(Self { client, keys, ttl, pending: Mutex::new(PendingSet::default()) });
        tokio::spawn(retry_failed(Arc::downgrade(&cache)));
        cache
    }

    /// Connects a client of its own (so cache traffic does not queue behind the control plane's) to the Redis
    /// of `settings`.
    pub async fn connect(settings: &crate::Settings, ttl: Duration) -> Result<Arc<Self>, Error> {
        let client = crate::connect::commands(settings).await?;
        Ok(Self::new(client, Keys::new(&settings.key_prefix), ttl))
    }

    /// The cached value of `entry` in `scope`, or a ticket to fill it.
    pub async fn get<T: DeserializeOwned>(&self, layer: &Layer, scope: Scope, entry: &str) -> Lookup<T> {
        let version_key = self.version_key(scope);
        if self.is_pending(&version_key) {
            layer.count(false);
            return Lookup::Miss(None);
        }
        let entry_key = self.entry_key(scope, entry);
        let options = Options { timeout: Some(READ_TIMEOUT), fail_fast: true, ..Default::default() };
        let read: Result<(Option<String>, Option<String>), Error> =
            self.client.with_options(&options).mget(vec![version_key.clone(), entry_key.clone()]).await;
        let (version, stored) = match read {
            Ok(pair) => pair,
            Err(e) => {
                metrics::counter!("cache_l2_unavailable_total").increment(1);
                tracing::debug!(error = %e, "L2 cache out of reach; reading the store");
                layer.count(false);
                return Lookup::Miss(None);
            }
        };
        let version = version.unwrap_or_else(|| "0".to_owned());
        if let Some(value) = stored.as_deref().and_then(|s| current(s, &version))
            && let Ok(value) = serde_json::from_str(value)
        {
            layer.count(true);
            return Lookup::Hit(value);
        }
        layer.count(false);
        Lookup::Miss(Some(Ticket { version_key, entry_key, version, taken: Instant::now() }))
    }

    /// Caches what the store said after the ticket was taken, unless the scope changed meanwhile.
    pub async fn fill<T: Serialize>(&self, ticket: Ticket, value: &T) {
        if ticket.taken.elapsed() > FILL_WINDOW || self.is_pending(&ticket.version_key) {
            return;
        }
        let Ok(json) = serde_json::to_string(value) else { return };
        let tagged = format!("{}:{json}", ticket.version);
        let ttl = self.ttl.as_millis().to_string();
        let version_ttl = self.version_ttl().as_millis().to_string();
        let options = Options { timeout: Some(READ_TIMEOUT), fail_fast: true, ..Default::default() };
        let written: Result<i64, Error> = self
            .client
            .with_options(&options)
            .eval(FILL, vec![ticket.version_key, ticket.entry_key], vec![ticket.version, tagged, ttl, version_ttl])
            .await;
        if let Err(e) = written {
            tracing::debug!(error = %e, "could not fill the L2 cache");
        }
    }

    /// Makes every entry of `scope` stale: call once a change to it is stored, before it is acknowledged.
    pub async fn invalidate(&self, scope: Scope) {
        let key = self.version_key(scope);
        if let Err(e) = self.increment(&key).await {
            tracing::warn!(error = %e, "could not invalidate the L2 cache; retrying");
            metrics::counter!("cache_l2_invalidations_failed_total").increment(1);
            self.add_pending(key);
        }
    }

    /// Invalidations that failed and wait for their retry.
    pub fn pending(&self) -> usize {
        self.lock().order.len()
    }

    async fn increment(&self, version_key: &str) -> Result<i64, Error> {
        self.client.eval(INVALIDATE, version_key, self.version_ttl().as_millis().to_string()).await
    }

    /// Outlives every entry tagged with it, with a margin for a fill's window.
    fn version_ttl(&self) -> Duration {
        self.ttl + FILL_WINDOW * 2
    }

    fn version_key(&self, scope: Scope) -> String {
        match scope {
            Scope::User(user) => self.keys.l2_user(user, "v"),
            Scope::Conversation(conversation) => self.keys.l2_conversation(conversation, "v"),
        }
    }

    fn entry_key(&self, scope: Scope, entry: &str) -> String {
        match scope {
            Scope::User(user) => self.keys.l2_user(user, &format!("e:{entry}")),
            Scope::Conversation(conversation) => self.keys.l2_conversation(conversation, &format!("e:{entry}")),
        }
    }

    fn is_pending(&self, version_key: &str) -> bool {
        self.lock().members.contains(version_key)
    }

    fn add_pending(&self, key: String) {
        let mut pending = self.lock();
        if !pending.members.insert(key.clone()) {
            return;
        }
        pending.order.push_back(key);
        if pending.order.len() > MAX_PENDING
            && let Some(oldest) = pending.order.pop_front()
        {
            pending.members.remove(&oldest);
            metrics::counter!("cache_l2_invalidations_dropped_total").increment(1);
            tracing::error!("too many L2 invalidations waiting for Redis; dropped the oldest (its entries expire)");
        }
    }

    /// Retries every pending invalidation once; those that fail again stay.
    async fn retry_pending(&self) {
        let keys: Vec<String> = self.lock().order.iter().cloned().collect();
        for key in keys {
            // Redis still out of reach: the rest would fail too.
            if self.increment(&key).await.is_err() {
                break;
            }
            self.lock().members.remove(&key);
        }
        let mut pending = self.lock();
        let PendingSet { order, members } = &mut *pending;
        order.retain(|k| members.contains(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The value of a stored entry if its tag is `version`.
fn current<'a>(stored: &'a str, version: &str) -> Option<&'a str> {
    let (tag, value) = stored.split_once(':')?;
    (tag == version).then_some(value)
}

async fn retry_failed(cache: Weak<L2Cache>) {
    let mut every = tokio::time::interval(RETRY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(cache) = cache.upgrade() else { return };
        if cache.pending() > 0 {
            cache.retry_pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_only_under_its_own_version() {
        assert_eq!(current("3:{\"a\":1}", "3"), Some("{\"a\":1}"));
        assert_eq!(current("3:{\"a\":1}", "4"), None);
        assert_eq!(current("13:x", "3"), None);
        assert_eq!(current("0:null", "0"), Some("null"));
        assert_eq!(current("garbage", "0"), None);
    }
}
