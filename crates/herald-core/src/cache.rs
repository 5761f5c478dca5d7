//! The L1 cache: in-process, bounded, with a TTL (60 s by default) and explicit invalidation on the events
//! that change the data, so the TTL only bounds staleness for changes made by other nodes. Hit and miss
//! counts feed `cache_hit_rate{cache_layer="l1"}`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Registered once: looking a labelled metric up on every get would cost more than the cache saves.
    hit_rate_gauge: metrics::Gauge,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(name: &'static str, ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hit_rate_gauge: metrics::gauge!("cache_hit_rate", "cache_layer" => "l1", "cache" => name),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.lock();
        let found = match entries.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        drop(entries);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        self.report();
        found
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Drop expired entries first; if that frees nothing, start over (cheap, and rare at a sane size).
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    pub fn invalidate(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Hit rate in percent since start.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 { 0.0 } else { 100.0 * hits / total }
    }

    fn report(&self) {
        self.hit_rate_gauge.set(self.hit_rate());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_invalidates() {
        let c = TtlCache::new("t", Duration::from_millis(30), 10);
        c.insert(1, "a");
        assert_eq!(c.get(&1), Some("a"));
        c.invalidate(&1);
        assert_eq!(c.get(&1), None);
        c.insert(2, "b");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&2), None);
        assert!((c.hit_rate() - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn stays_within_capacity() {
        let c = TtlCache::new("t", Duration::from_secs(60), 3);
        for i in 0..10 {
            c.insert(i, i);
        }
        assert!(c.lock().len() <= 3);
        assert_eq!(c.get(&9), Some(9));
    }
}
