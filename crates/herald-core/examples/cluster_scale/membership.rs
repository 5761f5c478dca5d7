//! One cluster size and its membership changes, each as the real `Ring` the nodes would build.

use herald_core::ring::Ring;

/// The id of the node numbered `i`, as the ring's own tests name them.
pub fn node_id(i: usize) -> String {
    format!("node-{i:04}")
}

/// The rings of `n` nodes before and after one change. Owners are reported as node numbers (`node-0007` is
/// 7, the joining node is `n`) so they compare as numbers.
pub struct Membership {
    pub n: usize,
    /// `node-0000` .. `node-{n-1}`, all taking placements.
    pub base: Ring,
    /// `base` plus `node-{n}`.
    pub joined: Ring,
    /// `base` without `changed`.
    pub left: Ring,
    /// `base` with `changed` draining: listed, but off the circle.
    pub draining: Ring,
    /// The node that leaves or drains: the one owning the largest share of the hash space in `base`, the
    /// worst case for what moves.
    pub changed: usize,
}

impl Membership {
    pub fn new(n: usize) -> Membership {
        let ids: Vec<String> = (0..=n).map(node_id).collect();
        let members = &ids[..n];
        let base = Ring::new(members.iter().map(|id| (id, false)));
        let joined = Ring::new(ids.iter().map(|id| (id, false)));
        // `shares` is in the order of `nodes`, sorted by id, which is the order of `ids` (zero-padded).
        let changed =
            base.shares().iter().enumerate().max_by(|a, b| a.1.1.total_cmp(&b.1.1)).map_or(0, |(index, _)| index);
        let left = Ring::new(members.iter().filter(|id| **id != ids[changed]).map(|id| (id, false)));
        let draining = Ring::new(members.iter().map(|id| (id, *id == ids[changed])));
        Membership { n, base, joined, left, draining, changed }
    }

    /// The number of a node the ring names.
    pub fn index_of(&self, id: Option<&str>) -> u32 {
        // Ids are `node-` and a zero-padded number: parsing beats a map lookup over millions of keys.
        id.and_then(|id| id.strip_prefix("node-")).and_then(|number| number.parse().ok()).unwrap_or(u32::MAX)
    }

    /// Each key's owner in `ring`, as a node number.
    pub fn owners<'k>(&self, ring: &Ring, keys: impl Iterator<Item = &'k [u8]>) -> Vec<u32> {
        keys.map(|key| self.index_of(ring.owner(key))).collect()
    }

    /// Each partition's owner in `ring` (the lease holder the ring names: `owner_of_u32`, as the leases
    /// log's tick asks it).
    pub fn partition_owners(&self, ring: &Ring, partitions: u32) -> Vec<u32> {
        (0..partitions).map(|p| self.index_of(ring.owner_of_u32(p))).collect()
    }
}
