//! The media store seam: uploads, the content they point to (one stored copy per content hash), per-user
//! usage, takedowns and the perceptual-hash blocklist. Blobs themselves live in blob storage
//! (`herald-media::blobs`); this is the bookkeeping that must stay consistent with them.
//!
//! Invariants every backend keeps, each in one atomic write:
//! - a user's usage is the sum of the sizes of their uploads that are not rejected (the declared size while
//!   pending, the stored size once ready), so quotas never drift;
//! - a content's `refs` is the number of ready uploads pointing to it; the content row goes when the last
//!   one does, and the caller then deletes its blobs;
//! - which conversations an upload is attached in is written by `MessageStore::commit_with_feed`, in the
//!   same transaction as the messages that attach it (and dropped when those messages are deleted).

use super::StoreResult;
use async_trait::async_trait;
use herald_proto::{ConversationId, MediaId, MediaState, Millis, RejectReason, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An upload as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub id: MediaId,
    pub owner: UserId,
    pub state: MediaState,
    #[serde(default)]
    pub reason: Option<RejectReason>,
    #[serde(default)]
    pub detail: Option<String>,
    /// The size announced at creation; what the bytes must add up to.
    pub declared_size: u64,
    #[serde(default)]
    pub filename: Option<String>,
    /// What the client claimed (kept for the record; never trusted).
    #[serde(default)]
    pub claimed_type: Option<String>,
    /// The sniffed type, once known.
    #[serde(default)]
    pub content_type: Option<String>,
    /// BLAKE3 hex of the content, set when ready.
    #[serde(default)]
    pub content_hash: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Which storage tier holds a content's blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Fast storage (local SSD by default); new and recently fetched content.
    Hot,
    /// Cheap storage for content nobody fetched for a while.
    Cold,
}

/// One stored form of a content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVariant {
    /// The blob key in the content's tier.
    pub key: String,
    pub content_type: String,
    pub size: u64,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

/// One stored content, shared by every upload of the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRecord {
    /// BLAKE3 hex of the uploaded bytes.
    pub hash: String,
    pub content_type: String,
    /// The uploaded size (the original's stored size may be smaller once metadata is stripped).
    pub size: u64,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Variant name ("original", "thumb_150", "720p", "poster" …) -> where it is stored.
    pub variants: BTreeMap<String, StoredVariant>,
    pub tier: Tier,
    /// Ready uploads pointing here. Maintained by the store.
    pub refs: u64,
    pub created_at: Millis,
    /// The last time a variant was served (coarse: recorded in batches), for tiering.
    pub last_access: Millis,
}

/// The answer to [`MediaStore::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The content the upload now points to (with its new `refs`).
    pub content: ContentRecord,
    /// Whether that content was already stored (a deduplicated upload): then the caller's copy of the
    /// blobs, if it made one, is not the one referenced and must not be kept under other keys.
    pub existed: bool,
}

/// What a takedown did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenDown {
    /// The content row that was removed, if the content was stored: the caller deletes its blobs.
    pub content: Option<ContentRecord>,
    /// Uploads now rejected as `taken_down`.
    pub uploads: Vec<MediaId>,
}

/// A perceptual hash on the blocklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedHash {
    pub phash: u64,
    #[serde(default)]
    pub note: Option<String>,
    pub created_at: Millis,
}

/// Uploads, contents, usage, takedowns and the blocklist.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// Records a new pending upload and adds its declared size to the owner's usage, refusing with
    /// `LimitExceeded` when usage would pass `quota` (checked and counted in one write, so two concurrent
    /// uploads cannot both squeeze under the quota).
    async fn create_upload(&self, media: &MediaRecord, quota: u64) -> StoreResult<()>;
    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>>;
    /// Moves an upload that is not final to `state` (one of pending, scanning, processing), recording the
    /// sniffed type when given. Returns false (and changes nothing) when it is final or gone.
    async fn set_progress(&self, id: MediaId, state: MediaState, content_type: Option<&str>) -> StoreResult<bool>;
    /// Makes the upload ready, pointing at the stored content with `content.hash`: the existing one if
    /// there is one (its `refs` + 1), else `content` itself with `refs` 1. The owner's usage moves from the
    /// declared size to `content.size`. Fails with `Conflict` when the upload is already final (a takedown
    /// or expiry won the race) or the hash is taken down; nothing changes then.
    async fn complete(&self, id: MediaId, content: &ContentRecord) -> StoreResult<Completed>;
    /// Rejects an upload that is not final, releasing its usage. Returns false when it is final or gone.
    async fn reject(&self, id: MediaId, reason: RejectReason, detail: Option<&str>) -> StoreResult<bool>;
    async fn content(&self, hash: &str) -> StoreResult<Option<ContentRecord>>;
    /// The conversations whose messages attach the upload (as written by `MessageStore::commit_with_feed`).
    async fn attached_in(&self, id: MediaId) -> StoreResult<Vec<ConversationId>>;
    /// Up to `limit` uploads created before `created_before` that no message attaches: what garbage
    /// collection removes (incomplete and rejected ones, ready ones never sent or whose messages are gone).
    async fn unreferenced(&self, created_before: Millis, limit: usize) -> StoreResult<Vec<MediaRecord>>;
    /// Deletes an upload that no message attaches, releasing its usage and its reference to its content.
    /// Returns the content when this was its last reference (the row is gone: the caller deletes the
    /// blobs). Fails with `Conflict` when a message attaches it; `Ok(None)` when it does not exist.
    async fn remove(&self, id: MediaId) -> StoreResult<Option<ContentRecord>>;
    /// Uploads that are not final (for resuming the pipeline after a restart).
    async fn unfinished(&self) -> StoreResult<Vec<MediaRecord>>;
    /// Records the takedown of a content hash (refused from now on), rejects every upload of it as
    /// `taken_down` (releasing usage) and removes the content row.
    async fn take_down(&self, hash: &str, note: Option<&str>, at: Millis) -> StoreResult<TakenDown>;
    async fn is_taken_down(&self, hash: &str) -> StoreResult<bool>;
    /// Adds to the blocklist (a phash already there keeps its first entry).
    async fn block(&self, entry: &BlockedHash) -> StoreResult<()>;
    async fn blocklist(&self) -> StoreResult<Vec<BlockedHash>>;
    /// The bytes counted against the user's quota.
    async fn usage(&self, user: UserId) -> StoreResult<u64>;
    /// Records the last time contents were served (later times win).
    async fn touch(&self, accesses: &[(String, Millis)]) -> StoreResult<()>;
    /// Up to `limit` contents in `tier` last accessed before `idle_before`.
    async fn idle_contents(&self, tier: Tier, idle_before: Millis, limit: usize) -> StoreResult<Vec<ContentRecord>>;
    /// Moves a content to another tier (after its blobs were copied there). Returns false when it is gone.
    async fn set_tier(&self, hash: &str, tier: Tier) -> StoreResult<bool>;
}
