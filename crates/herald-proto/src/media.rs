//! Media: uploads, their processing state, and what a message carries when something is attached.
//! `docs/api.md` ("Media") describes the endpoints these bodies belong to.

use crate::{MediaId, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an upload is in the pipeline. `Ready` and `Rejected` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MediaState {
    /// Created; bytes are still arriving (resumable) or the upload waits for a pipeline worker.
    Pending,
    /// Being checked by the virus scanner and the moderation rules.
    Scanning,
    /// Thumbnails and renditions are being made.
    Processing,
    /// Stored and servable.
    Ready,
    /// Refused (see `reason`); nothing of it is stored and its quota is released.
    Rejected,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaState::Pending => "pending",
            MediaState::Scanning => "scanning",
            MediaState::Processing => "processing",
            MediaState::Ready => "ready",
            MediaState::Rejected => "rejected",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, MediaState::Ready | MediaState::Rejected)
    }
}

/// Why an upload was refused: a stable name clients can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The bytes are not a type the server accepts (whatever the client claimed).
    TypeNotAllowed,
    /// The virus scanner found something.
    Malware,
    /// The virus scanner could not be reached or failed; the upload may be retried later.
    ScanFailed,
    /// A near-duplicate of a blocked image, or refused by the moderation service.
    Blocked,
    /// The moderation service could not be reached or answered nonsense.
    ModerationFailed,
    /// Too large to decode safely (decompression bomb) or beyond the configured dimensions.
    TooLarge,
    /// Claimed to be an image or video but could not be decoded.
    Corrupt,
    /// The content was taken down by an administrator.
    TakenDown,
    /// Not completed in time, or lost in a crash before it finished.
    Expired,
    /// Storing or processing failed on the server's side.
    Failed,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TypeNotAllowed => "type_not_allowed",
            RejectReason::Malware => "malware",
            RejectReason::ScanFailed => "scan_failed",
            RejectReason::Blocked => "blocked",
            RejectReason::ModerationFailed => "moderation_failed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Corrupt => "corrupt",
            RejectReason::TakenDown => "taken_down",
            RejectReason::Expired => "expired",
            RejectReason::Failed => "failed",
        }
    }
}

/// `POST /api/v1/uploads`: announce an upload; its bytes follow with `PATCH /api/v1/uploads/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The whole size in bytes (counted against the quota now, checked against the bytes that arrive).
    pub size: u64,
    /// The file's name, shown to recipients. Never used to decide the type.
    #[serde(default)]
    pub filename: Option<String>,
    /// What the client believes the type is. Informational only: the server sniffs the bytes.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One stored form of an upload: the original, a thumbnail, a video rendition, a poster frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaVariant {
    pub content_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A signed URL that expires at `MediaInfo::urls_expire_at`; it needs no other credentials, so
    /// `<img src>` and a CDN can use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// An upload as its owner and the members of conversations it is attached in see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaInfo {
    pub id: MediaId,
    pub state: MediaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// A human-readable detail of the reason (the signature found, the moderator's words …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The declared size while pending, the stored size once ready.
    pub size: u64,
    /// Bytes received so far (resumable uploads continue from here).
    pub received: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The sniffed type, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// BLAKE3 of the content, hex, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Variant name ("original", "thumb_150", "720p", "poster" …) -> how to fetch it. Ready uploads only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, MediaVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls_expire_at: Option<Millis>,
    pub created_at: Millis,
}

/// What a message carries for each attached upload: enough to render a placeholder; the URLs come from
/// `GET /api/v1/media/{id}`, which checks that the reader may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attachment {
    pub media_id: MediaId,
    pub content_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// `GET /api/v1/media/usage`: the caller's quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaUsage {
    pub used_bytes: u64,
    pub quota_bytes: u64,
}

/// `POST /api/v1/admin/media/takedowns`: remove a content everywhere and refuse it from now on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Takedown {
    /// BLAKE3 hex of the content (as in `MediaInfo::content_hash`).
    pub content_hash: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// The answer to a takedown.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TakedownResult {
    pub content_hash: String,
    /// Uploads that pointed to the content and are now rejected as `taken_down`.
    pub uploads_affected: u64,
}

/// `POST /api/v1/admin/media/blocklist`: block an image (and its near-duplicates) by an upload of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BlockImage {
    pub media_id: MediaId,
    #[serde(default)]
    pub note: Option<String>,
}

/// A blocklist entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedImage {
    /// The 64-bit perceptual hash, hex.
    pub phash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: Millis,
}
