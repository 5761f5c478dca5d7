//! What a node holds in memory, structure by structure: entries, approximate bytes and the bound on entries,
//! published as gauges so an operator sees what a node holds and why.
//!
//! Every in-process structure that grows with users, conversations, devices or feed rows reports one
//! [`Footprint`]; the server collects them periodically (and once at start, so the gauges exist on a quiet
//! node). Bytes are estimates from the structures' capacities and element sizes (heap data behind an
//! element, such as a cached member list, is added where the structure knows it), not allocator truth:
//! they say which structure grows, and whether it stays under its bound.

use std::collections::HashMap;

/// One structure's share of memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// A stable name (the `structure` label): never a user or conversation id.
    pub structure: &'static str,
    /// Entries held now.
    pub entries: usize,
    /// Approximate bytes held now.
    pub bytes: usize,
    /// The most entries the structure holds before it evicts, starts over or refuses.
    pub bound: usize,
}

impl Footprint {
    /// A hash map's footprint: its entries, and its table's bytes (see [`hash_map_bytes`]).
    pub fn of_map<K, V, S>(structure: &'static str, map: &HashMap<K, V, S>, bound: usize) -> Footprint {
        Footprint { structure, entries: map.len(), bytes: hash_map_bytes(map), bound }
    }
}

/// Sets `memory_entries`, `memory_bytes` and `memory_entries_bound`, labelled by structure.
pub fn publish(footprints: &[Footprint]) {
    for f in footprints {
        metrics::gauge!("memory_entries", "structure" => f.structure).set(f.entries as f64);
        metrics::gauge!("memory_bytes", "structure" => f.structure).set(f.bytes as f64);
        metrics::gauge!("memory_entries_bound", "structure" => f.structure).set(f.bound as f64);
    }
}

/// Approximate bytes of a hash map's table with room for `capacity` entries of `K` and `V` (one control
/// byte per slot beside the pair).
pub fn map_bytes<K, V>(capacity: usize) -> usize {
    capacity * (size_of::<K>() + size_of::<V>() + 1)
}

/// [`map_bytes`] for a map at hand.
pub fn hash_map_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    map_bytes::<K, V>(map.capacity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_counts_its_slots_not_its_entries() {
        let mut map: HashMap<u64, u64> = HashMap::with_capacity(100);
        map.insert(1, 2);
        assert!(hash_map_bytes(&map) >= 100 * 17);
        assert_eq!(map_bytes::<u64, u32>(10), 130);
    }
}
