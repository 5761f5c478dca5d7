//! A node's periodic housekeeping: forgetting idle users' rate-limit buckets and expired cache entries,
//! publishing what each in-memory structure holds (`memory_entries`, `memory_bytes`, `memory_entries_bound` by structure; see
//! `herald_core::footprint`), and the data directory's free disk space (see `disk_space`).

use crate::disk_space;
use crate::storage::Storage;
use herald_api::Logins;
use herald_core::blocks::Blocks;
use herald_core::conversations::Conversations;
use herald_core::delivery::Waiters;
use herald_core::footprint::{self, Footprint};
use herald_core::hub::Hub;
use herald_core::messaging::Messaging;
use herald_core::reports::Reports;
use herald_core::sequencer::Sequencer;
use herald_media::Media;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the footprints are published.
const FOOTPRINT_INTERVAL: Duration = Duration::from_secs(10);
/// How often idle users' rate-limit buckets are forgotten.
const SHRINK_INTERVAL: Duration = Duration::from_secs(60);

/// Everything that holds per-user, per-conversation or per-row state in memory.
pub struct Holders {
    pub db: Arc<Storage>,
    pub hub: Arc<Hub>,
    pub sequencer: Arc<Sequencer>,
    pub conversations: Arc<Conversations>,
    pub messaging: Arc<Messaging>,
    pub reports: Arc<Reports>,
    pub blocks: Arc<Blocks>,
    pub waiters: Arc<Waiters>,
    pub media: Arc<Media>,
    /// Requests one connection may have waiting at once.
    pub max_in_flight: usize,
    /// Where the node writes (journal, database, media): its filesystem's free space is published.
    pub data_dir: PathBuf,
    /// Failed logins and account creations by account and address.
    pub logins: Arc<Logins>,
}

impl Holders {
    /// Every structure's footprint, now.
    pub async fn footprints(&self) -> Vec<Footprint> {
        let connections = max_open_files();
        let mut all = self.db.footprints();
        all.extend(self.hub.footprints(connections));
        all.extend(self.sequencer.footprints().await);
        all.push(self.conversations.footprint());
        all.push(self.blocks.footprint());
        all.push(self.messaging.rate_limiter().footprint());
        all.push(self.reports.rate_limiter().footprint());
        all.push(self.waiters.footprint(connections.saturating_mul(self.max_in_flight)));
        all.push(self.media.footprint());
        all.extend(self.logins.limits.footprints());
        all
    }
}

/// Runs until aborted; publishes the footprints and the disk space at once and then every interval (the server
/// also publishes the disk space before it serves, so that gauge is in the first scrape whatever the timing).
pub async fn run(holders: Holders) {
    let mut footprints = tokio::time::interval(FOOTPRINT_INTERVAL);
    let mut shrink = tokio::time::interval(SHRINK_INTERVAL);
    shrink.tick().await;
    loop {
        tokio::select! {
            _ = footprints.tick() => {
                holders.hub.purge_expired();
                holders.conversations.purge_expired();
                holders.blocks.purge_expired();
                holders.logins.limits.purge();
                footprint::publish(&holders.footprints().await);
                disk_space::publish(&holders.data_dir);
            }
            _ = shrink.tick() => {
                holders.messaging.rate_limiter().shrink();
                holders.reports.rate_limiter().shrink();
            }
        }
    }
}

/// The process's limit on open files: what bounds its connections. Unknown (0) off Linux.
fn max_open_files() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_files_limit_is_read() {
        assert!(super::max_open_files() > 0);
    }
}
