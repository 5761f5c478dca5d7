//! Per-key async locks: the pipeline holds a content hash's lock while it decides "stored already?" and
//! writes that content's blobs, and garbage collection holds it while it deletes them, so a new upload
//! of the same bytes and the collection of the old copy can never interleave. (One process; a cluster
//! needs the same exclusion across nodes, e.g. a PostgreSQL advisory lock per hash.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while the key is locked; unlocking forgets the key when nobody else waits for it.
pub struct KeyGuard<'a> {
    owner: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mutex = self.entry(key);
        let guard = mutex.lock_owned().await;
        KeyGuard { owner: self, key: key.to_owned(), guard: Some(guard) }
    }

    /// The lock if nobody holds it now.
    pub fn try_lock(&self, key: &str) -> Option<KeyGuard<'_>> {
        let mutex = self.entry(key);
        let guard = mutex.try_lock_owned().ok()?;
        Some(KeyGuard { owner: self, key: key.to_owned(), guard: Some(guard) })
    }

    fn entry(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.to_owned()).or_default().clone()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and the one this guard's mutex came from is gone, so only the map
        // holds it when nobody waits.
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_key_excludes_others_and_is_forgotten_when_released() {
        let locks = KeyLocks::default();
        let a = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none());
        assert!(locks.try_lock("b").is_some());
        drop(a);
        assert!(locks.try_lock("a").is_some());
        assert!(locks.locks.lock().expect("lock").is_empty());
    }
}
