//! The media service: what the REST API calls. It creates and fills uploads, hands complete ones to the
//! pipeline, answers who may see what (with signed URLs), serves variants, and carries out takedowns and
//! blocklist additions. Garbage collection and tiering are in `sweeper`.

use crate::blobs::{BlobKey, BlobStore, BlobStream};
use crate::locks::KeyLocks;
use crate::options::{MediaBackends, MediaOptions};
use crate::signing::{UrlError, UrlSigner, now_secs};
use crate::uploads::{AppendError, UploadArea};
use bytes::Bytes;
use futures_util::Stream;
use herald_core::auth::Principal;
use herald_core::conversations::Conversations;
use herald_core::store::{BlockedHash, ContentRecord, MediaRecord, StoreError, StoredVariant, Stores, Tier};
use herald_core::{CoreError, CoreResult, now_millis};
use herald_proto::{
    CreateUpload, ErrorCode, MediaId, MediaInfo, MediaState, MediaUsage, MediaVariant, Millis, RejectReason,
    TakedownResult, UserId,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

const MAX_FILENAME_CHARS: usize = 255;
/// Contents whose access time waits for the next sweep to be written.
const MAX_PENDING_ACCESSES: usize = 100_000;

pub struct Media {
    pub(crate) stores: Stores,
    conversations: Arc<Conversations>,
    pub(crate) options: MediaOptions,
    pub(crate) backends: MediaBackends,
    signer: UrlSigner,
    pub(crate) uploads: UploadArea,
    pub(crate) hash_locks: KeyLocks,
    workers: Arc<Semaphore>,
    /// Uploads a pipeline job is working on (garbage collection leaves them alone).
    pub(crate) in_flight: Mutex<HashSet<MediaId>>,
    /// The blocklist's perceptual hashes, loaded once and kept in step with `block`.
    blocklist: RwLock<Option<Arc<Vec<u64>>>>,
    /// Last access per content hash since the last sweep (written to the store in batches).
    pub(crate) accesses: Mutex<HashMap<String, Millis>>,
    pub(crate) tasks: TaskTracker,
}

/// A variant a signed URL may be served from.
#[derive(Clone, Debug)]
pub struct Servable {
    pub variant: StoredVariant,
    pub tier: Tier,
    /// Strong: the content hash and the variant name identify the bytes.
    pub etag: String,
    pub filename: Option<String>,
    /// When the URL expires (Unix seconds): how long a cache may keep the answer.
    pub expires: u64,
}

impl Media {
    pub fn new(
        stores: Stores,
        conversations: Arc<Conversations>,
        options: MediaOptions,
        backends: MediaBackends,
        signing_key: &[u8],
    ) -> std::io::Result<Arc<Self>> {
        let uploads = UploadArea::open(&options.work_dir)?;
        let signer = UrlSigner::new(signing_key, options.url_lifetime);
        let workers = Arc::new(Semaphore::new(options.workers.max(1)));
        Ok(Arc::new(Self {
            stores,
            conversations,
            options,
            backends,
            signer,
            uploads,
            hash_locks: KeyLocks::default(),
            workers,
            in_flight: Mutex::default(),
            blocklist: RwLock::default(),
            accesses: Mutex::default(),
            tasks: TaskTracker::new(),
        }))
    }

    /// What the media service holds in memory between sweeps.
    pub fn footprint(&self) -> herald_core::footprint::Footprint {
        let accesses = self.accesses.lock().unwrap_or_else(|p| p.into_inner());
        herald_core::footprint::Footprint {
            structure: "media_accesses",
            entries: accesses.len(),
            // Content hashes are 64 hex characters.
            bytes: herald_core::footprint::hash_map_bytes(&accesses) + accesses.len() * 64,
            bound: MAX_PENDING_ACCESSES,
        }
    }

    pub fn options(&self) -> &MediaOptions {
        &self.options
    }

    /// Announces an upload: checks the size and the quota (counting the declared size now) and creates
    /// its empty partial file.
    pub async fn create_upload(&self, principal: Principal, req: CreateUpload) -> CoreResult<MediaInfo> {
        if req.size == 0 {
            return Err(CoreError::invalid("size must be at least 1 byte"));
        }
        if req.size > self.options.max_upload_bytes {
            return Err(CoreError::new(
                ErrorCode::PayloadTooLarge,
                format!("uploads are at most {} bytes", self.options.max_upload_bytes),
            ));
        }
        let filename = req.filename.map(|f| clean_filename(&f)).transpose()?;
        let claimed_type = req.content_type.map(|t| t.chars().take(127).collect::<String>());
        let now = now_millis();
        let record = MediaRecord {
            id: MediaId::new(),
            owner: principal.user,
            state: MediaState::Pending,
            reason: None,
            detail: None,
            declared_size: req.size,
            filename,
            claimed_type,
            content_type: None,
            content_hash: None,
            created_at: now,
            updated_at: now,
        };
        // The record first: the sweeper removes partial files whose upload the store does not hold as
        // pending, so a file made before its record could be swept away in between.
        match self.stores.media.create_upload(&record, self.options.quota_bytes).await {
            Ok(()) => {}
            Err(StoreError::LimitExceeded(_)) => {
                return Err(CoreError::new(
                    ErrorCode::QuotaExceeded,
                    format!("this upload would pass your quota of {} bytes", self.options.quota_bytes),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.uploads.create(record.id).await {
            // An upload nobody could fill: released at once rather than left for the garbage collector.
            let detail = "the server could not store the upload's bytes";
            if let Err(store) = self.stores.media.reject(record.id, RejectReason::Failed, Some(detail)).await {
                tracing::warn!(error = %store, media = %record.id, "media: rejecting an upload without a file failed");
            }
            return Err(internal(e));
        }
        metrics::counter!("media_uploads_total", "result" => "created").increment(1);
        Ok(self.describe(&record, None, 0))
    }

    /// Appends bytes to the caller's pending upload at `offset`; when the last byte arrives the upload
    /// goes to the pipeline. Returns the upload as it now stands.
    pub async fn append<S, E>(
        self: &Arc<Self>,
        principal: Principal,
        id: MediaId,
        offset: u64,
        body: S,
    ) -> CoreResult<MediaInfo>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let record = self.owned(principal, id).await?;
        if record.state != MediaState::Pending {
            return Err(CoreError::conflict(format!("the upload is complete (it is {})", record.state.as_str())));
        }
        let received = match self.uploads.append(id, offset, record.declared_size, body).await {
            Ok(received) => received,
            Err(AppendError::WrongOffset { current, given }) => {
                return Err(CoreError::conflict(format!("the upload is at offset {current}, not {given}")));
            }
            Err(AppendError::Busy) => return Err(CoreError::conflict("another request is writing to this upload")),
            Err(AppendError::TooLong { declared }) => {
                return Err(CoreError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the bytes go past the declared size of {declared}"),
                ));
            }
            Err(AppendError::Missing) => return Err(CoreError::conflict("the upload is no longer pending")),
            Err(AppendError::Body(e)) => {
                return Err(CoreError::new(ErrorCode::BadRequest, format!("request body: {e}")));
            }
            Err(AppendError::Io(e)) => return Err(internal(e)),
        };
        if received == record.declared_size {
            self.enqueue(id);
        }
        Ok(self.describe(&record, None, received))
    }

    /// Starts the pipeline for an upload whose bytes are all here (once; later calls do nothing).
    pub(crate) fn enqueue(self: &Arc<Self>, id: MediaId) {
        if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            return;
        }
        let media = self.clone();
        self.tasks.spawn(async move {
            let permit = media.workers.clone().acquire_owned().await.ok();
            crate::pipeline::run(&media, id, permit).await;
            media.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }

    /// Picks up after a restart: complete uploads that were waiting or half-processed go through the
    /// pipeline again (it is idempotent); ones whose bytes were lost are rejected.
    pub async fn recover(self: &Arc<Self>) -> CoreResult<usize> {
        let mut resumed = 0;
        for record in self.stores.media.unfinished().await? {
            let received = self.uploads.received(record.id).await;
            match received {
                Some(n) if n == record.declared_size => {
                    self.enqueue(record.id);
                    resumed += 1;
                }
                // Still arriving: the client resumes it (or garbage collection expires it).
                Some(_) if record.state == MediaState::Pending => {}
                _ => {
                    self.stores.media.reject(record.id, RejectReason::Expired, Some("lost in a restart")).await?;
                    self.uploads.discard(record.id).await;
                }
            }
        }
        Ok(resumed)
    }

    /// The upload with signed URLs for its variants, if the caller may see it.
    pub async fn info(&self, principal: Principal, id: MediaId) -> CoreResult<MediaInfo> {
        let record = herald_core::media::visible_upload(&self.stores, &self.conversations, principal, id).await?;
        let content = match (&record.state, &record.content_hash) {
            (MediaState::Ready, Some(hash)) => self.stores.media.content(hash).await?,
            _ => None,
        };
        let received = match record.state {
            MediaState::Pending => self.uploads.received(id).await.unwrap_or(0),
            MediaState::Rejected => 0,
            _ => record.declared_size,
        };
        Ok(self.describe(&record, content.as_ref(), received))
    }

    /// Deletes the caller's own upload, unless a message attaches it.
    pub async fn delete(&self, principal: Principal, id: MediaId) -> CoreResult<()> {
        self.owned(principal, id).await?;
        if self.is_in_flight(id) {
            return Err(CoreError::conflict("the upload is being processed; delete it once it is ready"));
        }
        match self.stores.media.remove(id).await {
            Ok(content) => {
                self.uploads.discard(id).await;
                if let Some(content) = content {
                    self.delete_blobs_if_unused(&content).await;
                }
                Ok(())
            }
            Err(StoreError::Conflict(_)) => Err(CoreError::conflict("a message attaches this upload")),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn usage(&self, principal: Principal) -> CoreResult<MediaUsage> {
        let used_bytes = self.stores.media.usage(principal.user).await?;
        Ok(MediaUsage { used_bytes, quota_bytes: self.options.quota_bytes })
    }

    /// Checks a signed URL and finds what it serves. Uploads taken down or collected since the URL was
    /// made answer `gone`.
    pub async fn resolve(&self, id: MediaId, variant: &str, expires: u64, signature: &str) -> CoreResult<Servable> {
        match self.signer.verify(id, variant, expires, signature, now_secs()) {
            Ok(()) => {}
            Err(UrlError::Expired) => return Err(CoreError::forbidden("the link has expired")),
            Err(UrlError::BadSignature) => return Err(CoreError::forbidden("the link is not valid")),
        }
        let gone = || CoreError::new(ErrorCode::Gone, "the media was removed");
        let record = self.stores.media.media(id).await?.ok_or_else(gone)?;
        let hash = match (record.state, record.content_hash) {
            (MediaState::Ready, Some(hash)) => hash,
            _ => return Err(gone()),
        };
        let content = self.stores.media.content(&hash).await?.ok_or_else(gone)?;
        let stored = content.variants.get(variant).cloned().ok_or_else(|| CoreError::not_found("no such variant"))?;
        {
            let mut accesses = self.accesses.lock().unwrap_or_else(|p| p.into_inner());
            // Past the bound, contents first served since the last sweep keep their older access time (they
            // may move to cold storage a sweep early); the ones already noted stay current.
            if accesses.len() < MAX_PENDING_ACCESSES || accesses.contains_key(&hash) {
                accesses.insert(hash.clone(), now_millis());
            }
        }
        Ok(Servable {
            variant: stored,
            tier: content.tier,
            etag: format!("\"{hash}.{variant}\""),
            filename: record.filename,
            expires,
        })
    }

    /// The bytes of a resolved variant (a range of them).
    pub async fn read(&self, servable: &Servable, range: Option<Range<u64>>) -> CoreResult<BlobStream> {
        self.read_variant(servable.tier, &servable.variant, range).await
    }

    async fn read_variant(
        &self,
        tier: Tier,
        variant: &StoredVariant,
        range: Option<Range<u64>>,
    ) -> CoreResult<BlobStream> {
        let key = BlobKey::parse(&variant.key).map_err(internal)?;
        let store = self.tier(tier).ok_or_else(|| CoreError::Internal("content in an unconfigured tier".into()))?;
        store.get(&key, range).await.map_err(internal)
    }

    /// The original bytes of an upload of `principal`'s own (for their data export). None when it is not
    /// theirs, not ready, or gone (collected or taken down).
    pub async fn own_original(&self, principal: Principal, id: MediaId) -> CoreResult<Option<BlobStream>> {
        let Some(record) = self.stores.media.media(id).await? else { return Ok(None) };
        let hash = match (record.owner == principal.user, record.state, record.content_hash) {
            (true, MediaState::Ready, Some(hash)) => hash,
            _ => return Ok(None),
        };
        let Some(content) = self.stores.media.content(&hash).await? else { return Ok(None) };
        let Some(original) = content.variants.get("original") else { return Ok(None) };
        Ok(Some(self.read_variant(content.tier, original, None).await?))
    }

    /// Removes a content everywhere and refuses it from now on.
    pub async fn take_down(&self, hash: &str, note: Option<&str>) -> CoreResult<TakedownResult> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(CoreError::invalid("content_hash is 64 lowercase hex digits (BLAKE3)"));
        }
        let _guard = self.hash_locks.lock(hash).await;
        let taken = self.stores.media.take_down(hash, note, now_millis()).await?;
        if let Some(content) = &taken.content {
            self.delete_variants(content).await;
        }
        for id in &taken.uploads {
            self.uploads.discard(*id).await;
        }
        metrics::counter!("media_takedowns_total").increment(1);
        Ok(TakedownResult { content_hash: hash.to_owned(), uploads_affected: taken.uploads.len() as u64 })
    }

    /// Puts an uploaded image on the blocklist: it and its near-duplicates are refused from now on.
    /// (Uploads already stored stay; take them down by hash to remove them.)
    pub async fn block(&self, id: MediaId, note: Option<&str>) -> CoreResult<herald_proto::BlockedImage> {
        let record = self.stores.media.media(id).await?.ok_or_else(|| CoreError::not_found("no such upload"))?;
        let hash = record.content_hash.filter(|_| record.state == MediaState::Ready);
        let content = match hash {
            Some(hash) => self.stores.media.content(&hash).await?,
            None => None,
        };
        let content = content.ok_or_else(|| CoreError::conflict("the upload is not a ready image"))?;
        let original = content.variants.get("original").ok_or_else(|| CoreError::conflict("no original stored"))?;
        if !original.content_type.starts_with("image/") {
            return Err(CoreError::invalid("only images can be blocked by perceptual hash"));
        }
        let bytes = self.read_variant(content.tier, original, None).await?.bytes().await.map_err(internal)?;
        let limits = self.options.image_limits.clone();
        let phash = tokio::task::spawn_blocking(move || crate::image::perceptual_hash_of(&bytes, &limits))
            .await
            .map_err(internal)?
            .map_err(|e| CoreError::invalid(format!("not a decodable image: {e}")))?;
        let entry = BlockedHash { phash, note: note.map(str::to_owned), created_at: now_millis() };
        self.stores.media.block(&entry).await?;
        *self.blocklist.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(herald_proto::BlockedImage {
            phash: format!("{phash:016x}"),
            note: entry.note,
            created_at: entry.created_at,
        })
    }

    pub async fn blocklist(&self) -> CoreResult<Vec<herald_proto::BlockedImage>> {
        Ok(self
            .stores
            .media
            .blocklist()
            .await?
            .into_iter()
            .map(|b| herald_proto::BlockedImage {
                phash: format!("{:016x}", b.phash),
                note: b.note,
                created_at: b.created_at,
            })
            .collect())
    }

    /// The blocklist's hashes (cached).
    pub(crate) async fn blocked_hashes(&self) -> CoreResult<Arc<Vec<u64>>> {
        if let Some(cached) = self.blocklist.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(cached);
        }
        let fresh: Arc<Vec<u64>> =
            Arc::new(self.stores.media.blocklist().await?.into_iter().map(|b| b.phash).collect());
        *self.blocklist.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        Ok(fresh)
    }

    /// Waits for running pipeline jobs (shutdown).
    pub async fn close(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether a pipeline job is working on the upload (garbage collection and deletion leave it alone).
    pub(crate) fn is_in_flight(&self, id: MediaId) -> bool {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// Every configured blob store: hot, then cold.
    pub(crate) fn tiers(&self) -> impl Iterator<Item = &Arc<dyn BlobStore>> {
        std::iter::once(&self.backends.hot).chain(self.backends.cold.as_ref())
    }

    pub(crate) fn tier(&self, tier: Tier) -> Option<&Arc<dyn BlobStore>> {
        match tier {
            Tier::Hot => Some(&self.backends.hot),
            Tier::Cold => self.backends.cold.as_ref(),
        }
    }

    /// Deletes a content's blobs, under its hash lock, unless it was stored again meanwhile.
    pub(crate) async fn delete_blobs_if_unused(&self, content: &ContentRecord) {
        let _guard = self.hash_locks.lock(&content.hash).await;
        match self.stores.media.content(&content.hash).await {
            Ok(None) => self.delete_variants(content).await,
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::warn!(hash = %content.hash, error = %e, "media: could not check a content before deleting it")
            }
        }
    }

    /// Deletes the blobs of every variant, in every tier (a move between tiers may have been cut short).
    pub(crate) async fn delete_variants(&self, content: &ContentRecord) {
        for variant in content.variants.values() {
            let Ok(key) = BlobKey::parse(&variant.key) else { continue };
            for store in self.tiers() {
                if let Err(e) = store.delete(&key).await {
                    // The orphan sweep retries: a blob without a content row is deleted later.
                    tracing::warn!(key = %variant.key, error = %e, "media: could not delete a blob");
                }
            }
        }
    }

    /// The caller's own upload (others' are "not found").
    async fn owned(&self, principal: Principal, id: MediaId) -> CoreResult<MediaRecord> {
        match self.stores.media.media(id).await? {
            Some(record) if record.owner == principal.user => Ok(record),
            _ => Err(CoreError::not_found("no such upload")),
        }
    }

    fn describe(&self, record: &MediaRecord, content: Option<&ContentRecord>, received: u64) -> MediaInfo {
        let mut variants = BTreeMap::new();
        let mut urls_expire_at = None;
        if let Some(content) = content {
            let expires = self.signer.expiry(now_secs());
            urls_expire_at = Some(expires as Millis * 1000);
            for (name, stored) in &content.variants {
                variants.insert(
                    name.clone(),
                    MediaVariant {
                        content_type: stored.content_type.clone(),
                        size: stored.size,
                        width: stored.width,
                        height: stored.height,
                        url: Some(self.signer.url(record.id, name, expires)),
                    },
                );
            }
        }
        MediaInfo {
            id: record.id,
            state: record.state,
            reason: record.reason,
            detail: record.detail.clone(),
            size: content.map_or(record.declared_size, |c| c.size),
            received,
            filename: record.filename.clone(),
            content_type: content.map(|c| c.content_type.clone()).or_else(|| record.content_type.clone()),
            content_hash: record.content_hash.clone(),
            width: content.and_then(|c| c.width),
            height: content.and_then(|c| c.height),
            duration_ms: content.and_then(|c| c.duration_ms),
            variants,
            urls_expire_at,
            created_at: record.created_at,
        }
    }

    /// Whether `user` may use the admin endpoints (takedowns, the blocklist).
    pub async fn is_admin(&self, user: UserId, admins: &HashSet<String>) -> CoreResult<bool> {
        if admins.is_empty() {
            return Ok(false);
        }
        Ok(self.stores.users.user(user).await?.is_some_and(|u| admins.contains(&u.username)))
    }
}

/// A filename as shown to recipients: its last path component, without control characters, bounded.
fn clean_filename(name: &str) -> CoreResult<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).take(MAX_FILENAME_CHARS).collect();
    let clean = clean.trim().to_owned();
    if clean.is_empty() || clean == "." || clean == ".." {
        return Err(CoreError::invalid("filename must name a file"));
    }
    Ok(clean)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> CoreError {
    CoreError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd").expect("ok"), "passwd");
        assert_eq!(clean_filename("C:\\photos\\cat.jpg").expect("ok"), "cat.jpg");
        assert_eq!(clean_filename("a\u{0}b\nc.png").expect("ok"), "abc.png");
        assert!(clean_filename("dir/").is_err());
        assert!(clean_filename("..").is_err());
    }
}
