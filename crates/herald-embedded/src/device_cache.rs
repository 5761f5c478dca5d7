//! The devices read by authentication, kept in memory.
//!
//! Every authenticated request reads its device (is it still there, and whose is it): a redb read
//! transaction each time, ~7 % of the server's work on REST sends. This store is the only writer of the
//! devices table (one process, one writer thread), so it knows every change and can keep a cache exact.
//!
//! The rule that keeps it exact: a reader may put what it read only if no device write finished between
//! the moment before it opened its snapshot and the moment it puts (a `generation` counter, bumped after
//! every device write), and a finished write removes its device after the bump. Both happen under one lock,
//! so either the reader's put comes first (and the write's removal follows it) or the reader sees the new
//! generation and puts nothing. A revoked device is therefore refused from the moment `delete_device`
//! returns, as without the cache.

use herald_core::footprint::{self, Footprint};
use herald_core::store::Device;
use herald_proto::DeviceId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Past this many devices the cache starts over (they are read again on demand).
const MAX_DEVICES: usize = 200_000;

#[derive(Default)]
pub(crate) struct DeviceCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: u64,
    devices: HashMap<DeviceId, Device>,
}

impl DeviceCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, id: DeviceId) -> Option<Device> {
        self.lock().devices.get(&id).cloned()
    }

    /// What the cache holds.
    pub(crate) fn footprint(&self) -> Footprint {
        let state = self.lock();
        Footprint {
            structure: "device_cache",
            entries: state.devices.len(),
            bytes: footprint::hash_map_bytes(&state.devices)
                + state.devices.values().map(|d| d.name.capacity()).sum::<usize>(),
            bound: MAX_DEVICES,
        }
    }

    /// Taken before a reader opens its snapshot.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps what a reader read, unless a device write finished since it took `generation`.
    pub(crate) fn put(&self, generation: u64, device: &Device) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        if state.devices.len() >= MAX_DEVICES {
            state.devices.clear();
        }
        state.devices.insert(device.id, device.clone());
    }

    /// A write to `id` finished (committed, failed or unknown): readers that started before it put nothing,
    /// and what was kept of the device is dropped.
    pub(crate) fn written(&self, id: DeviceId) {
        let mut state = self.lock();
        state.generation += 1;
        state.devices.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::UserId;

    fn device() -> Device {
        Device {
            id: DeviceId::new(),
            user_id: UserId::new(),
            name: "phone".into(),
            created_at: 1,
            refresh_hash: [1; 32],
            refresh_expires_at: 2,
            previous_refresh_hash: None,
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = DeviceCache::default();
        let d = device();
        // A reader takes the generation and reads the old row; the write finishes before it puts.
        let before = cache.generation();
        cache.written(d.id);
        cache.put(before, &d);
        assert_eq!(cache.get(d.id), None, "the old row must not come back");
        // A reader that started after the write keeps what it read.
        let after = cache.generation();
        cache.put(after, &d);
        assert_eq!(cache.get(d.id), Some(d.clone()));
        // The next write drops it.
        cache.written(d.id);
        assert_eq!(cache.get(d.id), None);
    }
}
