//! Housekeeping, every `sweep_interval`: garbage collection of uploads nothing attaches (and of their
//! content once its last upload goes), removal of leftovers (partial files of uploads the store no longer
//! knows; blobs no content row references), access times written in a batch, and tiering (content nobody
//! fetched for `cold_after` moves to the cold store).

use crate::blobs::BlobKey;
use crate::service::Media;
use herald_core::now_millis;
use herald_core::store::{StoreError, Tier};
use herald_proto::Millis;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Uploads or contents handled per store call.
const BATCH: usize = 500;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub uploads_removed: u64,
    pub contents_removed: u64,
    pub orphan_blobs_removed: u64,
    pub leftover_files_removed: u64,
    pub moved_to_cold: u64,
}

impl Media {
    /// Runs sweeps every `sweep_interval` until `stop` resolves.
    pub async fn run_sweeper(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(self.options.sweep_interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticker.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "media: sweep failed; retrying at the next one");
                    }
                }
            }
        }
    }

    /// One sweep (also callable directly, e.g. by tests and admins).
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        self.flush_accesses().await?;
        self.collect_unreferenced(&mut report).await?;
        self.remove_leftover_files(&mut report).await?;
        self.remove_orphan_blobs(&mut report).await;
        self.move_idle_to_cold(&mut report).await?;
        metrics::counter!("media_gc_uploads_removed_total").increment(report.uploads_removed);
        metrics::counter!("media_gc_contents_removed_total").increment(report.contents_removed);
        metrics::counter!("media_tier_moves_total", "to" => "cold").increment(report.moved_to_cold);
        Ok(report)
    }

    /// Writes the access times gathered since the last sweep.
    async fn flush_accesses(&self) -> Result<(), StoreError> {
        let accesses: Vec<(String, Millis)> =
            std::mem::take(&mut *self.accesses.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        if !accesses.is_empty() {
            self.stores.media.touch(&accesses).await?;
        }
        Ok(())
    }

    async fn collect_unreferenced(&self, report: &mut SweepReport) -> Result<(), StoreError> {
        let cutoff = now_millis() - self.options.retain_unattached.as_millis() as Millis;
        let mut skipped = BTreeSet::new();
        loop {
            let batch = self.stores.media.unreferenced(cutoff, BATCH + skipped.len()).await?;
            let mut progressed = false;
            for record in &batch {
                if skipped.contains(&record.id) {
                    continue;
                }
                if self.is_in_flight(record.id) {
                    skipped.insert(record.id);
                    continue;
                }
                match self.stores.media.remove(record.id).await {
                    Ok(content) => {
                        self.uploads.discard(record.id).await;
                        report.uploads_removed += 1;
                        progressed = true;
                        if let Some(content) = content {
                            self.delete_blobs_if_unused(&content).await;
                            report.contents_removed += 1;
                        }
                    }
                    // Attached by a message since it was listed.
                    Err(StoreError::Conflict(_)) => {
                        skipped.insert(record.id);
                    }
                    Err(e) => return Err(e),
                }
            }
            if !progressed || batch.len() < BATCH {
                return Ok(());
            }
        }
    }

    /// Partial files and scratch directories of uploads the store no longer holds as pending.
    async fn remove_leftover_files(&self, report: &mut SweepReport) -> Result<(), StoreError> {
        for id in self.uploads.leftovers().await {
            if self.is_in_flight(id) {
                continue;
            }
            let keep = match self.stores.media.media(id).await? {
                Some(record) => record.state == herald_proto::MediaState::Pending,
                None => false,
            };
            if !keep {
                self.uploads.discard(id).await;
                report.leftover_files_removed += 1;
            }
        }
        Ok(())
    }

    /// Blobs whose content has no row: left by a crash between writing them and recording the content,
    /// or by a failed delete. Checked under the hash lock, so blobs a running upload is writing are safe.
    async fn remove_orphan_blobs(&self, report: &mut SweepReport) {
        for store in self.tiers() {
            let keys = match store.list("").await {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "media: could not list blobs");
                    continue;
                }
            };
            let mut by_hash: std::collections::BTreeMap<String, Vec<BlobKey>> = Default::default();
            for key in keys {
                if let Some(hash) = key.as_str().split('/').nth(1) {
                    by_hash.entry(hash.to_owned()).or_default().push(key);
                }
            }
            for (hash, keys) in by_hash {
                let Some(_guard) = self.hash_locks.try_lock(&hash) else { continue };
                let referenced = match self.stores.media.content(&hash).await {
                    Ok(Some(content)) => content.variants.values().map(|v| v.key.clone()).collect::<BTreeSet<_>>(),
                    Ok(None) => BTreeSet::new(),
                    Err(_) => continue,
                };
                for key in keys.iter().filter(|k| !referenced.contains(k.as_str())) {
                    if store.delete(key).await.is_ok() {
                        report.orphan_blobs_removed += 1;
                    }
                }
            }
        }
    }

    async fn move_idle_to_cold(&self, report: &mut SweepReport) -> Result<(), StoreError> {
        let Some(cold) = self.backends.cold.clone() else { return Ok(()) };
        let idle_before = now_millis() - self.options.cold_after.as_millis() as Millis;
        for content in self.stores.media.idle_contents(Tier::Hot, idle_before, BATCH).await? {
            let Some(_guard) = self.hash_locks.try_lock(&content.hash) else { continue };
            let mut copied = true;
            for variant in content.variants.values() {
                let Ok(key) = BlobKey::parse(&variant.key) else { continue };
                if let Err(e) = self.backends.hot.copy_to(&key, cold.as_ref()).await {
                    tracing::warn!(key = %variant.key, error = %e, "media: could not copy a blob to the cold tier");
                    copied = false;
                    break;
                }
            }
            // Readers follow the row: only once it says "cold" may the hot copies go.
            if copied && self.stores.media.set_tier(&content.hash, Tier::Cold).await? {
                for variant in content.variants.values() {
                    if let Ok(key) = BlobKey::parse(&variant.key) {
                        let _ = self.backends.hot.delete(&key).await;
                    }
                }
                report.moved_to_cold += 1;
            }
        }
        Ok(())
    }
}
