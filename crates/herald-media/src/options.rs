//! What the media service is configured with: limits, policies and the components behind the seams.

use crate::blobs::BlobStore;
use crate::image::ImageLimits;
use crate::moderation::Moderator;
use crate::scan::Scanner;
use crate::video::Ffmpeg;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Policies and limits.
#[derive(Clone, Debug)]
pub struct MediaOptions {
    /// Where partial uploads and processing scratch space live (local disk, whatever the blob storage).
    pub work_dir: PathBuf,
    /// The largest upload accepted.
    pub max_upload_bytes: u64,
    /// Bytes each user may keep stored (pending uploads count with their declared size).
    pub quota_bytes: u64,
    /// Accepted content types, as sniffed: exact (`image/png`) or a family (`image/*`).
    pub allowed_types: Vec<String>,
    /// How long a signed URL stays valid (at least; see `signing`).
    pub url_lifetime: Duration,
    pub image_limits: ImageLimits,
    /// Thumbnail boxes in pixels (150, 300, 600).
    pub thumbnail_sizes: Vec<u32>,
    /// WebP quality of thumbnails (80).
    pub webp_quality: f32,
    /// Video rendition heights (360, 720, 1080); never upscaled.
    pub video_heights: Vec<u32>,
    /// Uploads processed at once (each also bounded by the ffmpeg pool for video).
    pub workers: usize,
    /// How long an upload nothing attaches is kept (incomplete, rejected, never sent, or whose messages
    /// were all deleted) before garbage collection removes it.
    pub retain_unattached: Duration,
    /// How often garbage collection and tiering run.
    pub sweep_interval: Duration,
    /// Content not fetched for this long moves to the cold tier (when one is configured).
    pub cold_after: Duration,
    /// Near-duplicate threshold: perceptual hashes this many bits apart or closer match the blocklist.
    pub blocklist_distance: u32,
    /// Approve uploads when the moderation webhook fails (default: refuse them).
    pub moderation_fail_open: bool,
}

impl MediaOptions {
    /// Defaults for a data directory's `media/` folder.
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            work_dir,
            max_upload_bytes: 100 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            allowed_types: [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "video/*",
                "audio/*",
                "application/pdf",
                "text/plain",
            ]
            .map(String::from)
            .to_vec(),
            url_lifetime: Duration::from_secs(3600),
            image_limits: ImageLimits::default(),
            thumbnail_sizes: vec![150, 300, 600],
            webp_quality: 80.0,
            video_heights: vec![360, 720, 1080],
            workers: 2,
            retain_unattached: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(600),
            cold_after: Duration::from_secs(30 * 24 * 3600),
            blocklist_distance: 10,
            moderation_fail_open: false,
        }
    }

    /// Whether a sniffed type is accepted.
    pub fn allows(&self, mime: &str) -> bool {
        self.allowed_types.iter().any(|allowed| match allowed.strip_suffix("/*") {
            Some(family) => mime.split('/').next() == Some(family),
            None => allowed == mime,
        })
    }
}

/// The components behind the seams.
#[derive(Clone)]
pub struct MediaBackends {
    /// Where content lives first (local disk by default, or S3-compatible storage).
    pub hot: Arc<dyn BlobStore>,
    /// Where content nobody fetches moves to; `None`: no tiering.
    pub cold: Option<Arc<dyn BlobStore>>,
    pub scanner: Option<Arc<dyn Scanner>>,
    pub moderator: Option<Arc<dyn Moderator>>,
    /// `None` (or unavailable): videos are stored as uploaded, without renditions or poster.
    pub ffmpeg: Option<Arc<Ffmpeg>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_exact_types_are_allowed_and_nothing_else() {
        let options = MediaOptions::new(PathBuf::from("/tmp"));
        assert!(options.allows("image/png"));
        assert!(options.allows("video/mp4"));
        assert!(!options.allows("image/svg+xml"));
        assert!(!options.allows("application/x-executable"));
        assert!(!options.allows("videox/mp4"));
    }
}
