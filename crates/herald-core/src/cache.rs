//! The L1 cache: in-process, bounded in entries and in the heap bytes its values hold, with a TTL (60 s by
//! default) and explicit invalidation on the events that change the data, so the TTL only bounds staleness for
//! changes made by other nodes. Hit and miss counts feed `cache_hit_rate{cache_layer="l1"}`.

use crate::footprint::{self, Footprint};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    name: &'static str,
    ttl: Duration,
    capacity: usize,
    /// The most bytes the values may hold on the heap together (a member list, a contact set).
    max_value_bytes: usize,
    /// The heap bytes one value holds.
    weigh: fn(&V) -> usize,
    state: Mutex<State<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Bumped by every invalidation, so a value read from the store before an invalidation is not cached
    /// after it ([`TtlCache::insert_unless_invalidated`]).
    generation: AtomicU64,
    /// Registered once: looking a labelled metric up on every get would cost more than the cache saves.
    hit_rate_gauge: metrics::Gauge,
}

struct State<K, V> {
    /// Each value with when it was put and its weight.
    entries: HashMap<K, (Instant, V, usize)>,
    /// The weights of all values.
    value_bytes: usize,
}

impl<K, V> State<K, V> {
    fn retain_live(&mut self, ttl: Duration) {
        let mut freed = 0;
        self.entries.retain(|_, (at, _, weight)| {
            let live = at.elapsed() < ttl;
            if !live {
                freed += *weight;
            }
            live
        });
        self.value_bytes -= freed;
    }
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries whose values hold nothing on the heap worth counting.
    pub fn new(name: &'static str, ttl: Duration, capacity: usize) -> Self {
        Self::weighed(name, ttl, capacity, usize::MAX, |_| 0)
    }

    /// A cache of at most `capacity` entries whose values together hold at most `max_value_bytes` on the
    /// heap, as `weigh` counts them: a few big values (the contacts of a member of a huge group) must not
    /// hold what an entry count allows for small ones.
    pub fn weighed(
        name: &'static str,
        ttl: Duration,
        capacity: usize,
        max_value_bytes: usize,
        weigh: fn(&V) -> usize,
    ) -> Self {
        Self {
            name,
            ttl,
            capacity: capacity.max(1),
            max_value_bytes,
            weigh,
            state: Mutex::new(State { entries: HashMap::new(), value_bytes: 0 }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            hit_rate_gauge: metrics::gauge!("cache_hit_rate", "cache_layer" => "l1", "cache" => name),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut state = self.lock();
        let found = match state.entries.get(key) {
            Some((at, v, _)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                Self::remove(&mut state, key);
                None
            }
            None => None,
        };
        drop(state);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        self.report();
        found
    }

    pub fn insert(&self, key: K, value: V) {
        let mut state = self.lock();
        self.insert_locked(&mut state, key, value);
    }

    fn insert_locked(&self, state: &mut State<K, V>, key: K, value: V) {
        let weight = (self.weigh)(&value);
        Self::remove(state, &key);
        let full = |state: &State<K, V>| {
            state.entries.len() >= self.capacity || state.value_bytes.saturating_add(weight) > self.max_value_bytes
        };
        if full(state) {
            // Drop expired entries first; if that frees too little, start over (cheap, and rare at a sane size).
            state.retain_live(self.ttl);
            if full(state) {
                state.entries.clear();
                state.value_bytes = 0;
            }
        }
        if weight > self.max_value_bytes {
            return;
        }
        state.value_bytes += weight;
        state.entries.insert(key, (Instant::now(), value, weight));
    }

    pub fn invalidate(&self, key: &K) {
        let mut state = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Self::remove(&mut state, key);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut state = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        state.entries.clear();
        state.value_bytes = 0;
    }

    /// The invalidation count now: take it before reading the value from its source.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a value read from its source after [`TtlCache::generation`] returned `generation`, unless an
    /// invalidation came in meanwhile (the value may predate the change it announced).
    pub fn insert_unless_invalidated(&self, generation: u64, key: K, value: V) {
        // Checked under the lock that invalidations take, so one cannot slip in between.
        let mut state = self.lock();
        if self.generation.load(Ordering::Acquire) == generation {
            self.insert_locked(&mut state, key, value);
        }
    }

    /// Drops the expired entries, so what a burst cached is given back within a TTL (and the next sweep)
    /// rather than when the cache next fills.
    pub fn purge_expired(&self) {
        let mut state = self.lock();
        state.retain_live(self.ttl);
        if state.entries.capacity() > 2 * state.entries.len().max(16) {
            state.entries.shrink_to_fit();
        }
    }

    /// Hit rate in percent since start.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 { 0.0 } else { 100.0 * hits / total }
    }

    /// What the cache holds: its table and its values' weights.
    pub fn footprint(&self) -> Footprint {
        let state = self.lock();
        Footprint {
            structure: self.name,
            entries: state.entries.len(),
            bytes: footprint::hash_map_bytes(&state.entries) + state.value_bytes,
            bound: self.capacity,
        }
    }

    fn remove(state: &mut State<K, V>, key: &K) {
        if let Some((_, _, weight)) = state.entries.remove(key) {
            state.value_bytes -= weight;
        }
    }

    fn report(&self) {
        self.hit_rate_gauge.set(self.hit_rate());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        assert!(c.lock().entries.len() <= 3);
        assert_eq!(c.get(&9), Some(9));
    }

    #[test]
    fn stays_within_its_value_bytes_and_gives_back_what_expired() {
        let c: TtlCache<u32, Vec<u64>> =
            TtlCache::weighed("t", Duration::from_millis(30), 1000, 1000, |v| v.len() * size_of::<u64>());
        for i in 0..10 {
            c.insert(i, vec![0; 50]);
        }
        // Two of 400 bytes fit in 1,000; a third starts over.
        assert!(c.footprint().entries <= 2, "{:?}", c.footprint());
        assert!(c.lock().value_bytes <= 1000);
        c.insert(100, vec![0; 200]);
        assert_eq!(c.get(&100), None, "a value heavier than the whole cache is not kept");
        c.insert(7, vec![0; 10]);
        c.insert(7, vec![0; 20]);
        {
            let state = c.lock();
            assert_eq!(state.entries.get(&7).map(|e| e.2), Some(160), "a replaced value's weight is the new one's");
            assert_eq!(state.value_bytes, state.entries.values().map(|e| e.2).sum::<usize>());
        }
        std::thread::sleep(Duration::from_millis(40));
        c.purge_expired();
        assert_eq!((c.footprint().entries, c.lock().value_bytes), (0, 0));
    }
}
