//! The `[media]` section: limits and policies of uploads, and where blobs, the virus scanner, the
//! moderation webhook and ffmpeg are. Turned into `herald_media`'s options and backends at start-up.

use crate::config::ConfigError;
use herald_media::blobs::{BlobStore, ObjectBlobs, S3Config};
use herald_media::image::ImageLimits;
use herald_media::moderation::WebhookModerator;
use herald_media::scan::{Clamd, ClamdAddr};
use herald_media::video::Ffmpeg;
use herald_media::{MediaBackends, MediaOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload, in bytes.
    pub max_upload_bytes: u64,
    /// Bytes each user may keep stored.
    pub quota_bytes: u64,
    /// Accepted types, judged from the bytes: exact (`image/png`) or a family (`video/*`).
    pub allowed_types: Vec<String>,
    /// Signed media URLs stay valid at least this long (and at most half as long again).
    pub url_lifetime_secs: u64,
    /// Uploads processed at once.
    pub workers: usize,
    /// An upload no message attaches (never sent, incomplete, rejected, or whose messages were deleted)
    /// is removed after this long.
    pub retain_unattached_secs: u64,
    /// How often garbage collection and tiering run.
    pub sweep_interval_secs: u64,
    /// Usernames that may take content down and edit the image blocklist.
    pub admins: Vec<String>,
    /// Thumbnail boxes, in pixels.
    pub thumbnail_sizes: Vec<u32>,
    /// WebP quality of thumbnails (0-100).
    pub webp_quality: f32,
    /// Images with more pixels than this are refused (decompression bombs).
    pub max_image_pixels: u64,
    /// Images wider or taller than this are refused.
    pub max_image_side: u32,
    /// Near-duplicate threshold of the image blocklist, in bits of the 64-bit perceptual hash.
    pub blocklist_distance: u32,
    /// ClamAV's clamd: `unix:///run/clamav/clamd.ctl` or `tcp://127.0.0.1:3310`. Empty: no virus scan.
    pub clamd: String,
    pub scan_timeout_secs: u64,
    /// A moderation service that is sent every upload (POST, the bytes as the body) and answers
    /// `{"approved": bool, "reason": "..."}`. Empty: none.
    pub moderation_webhook: String,
    /// When set, requests carry `X-Herald-Signature: sha256=<HMAC of the content hash>`.
    pub moderation_secret: String,
    pub moderation_timeout_secs: u64,
    /// Approve uploads when the moderation service fails (default: refuse them).
    pub moderation_fail_open: bool,
    /// ffmpeg and ffprobe for video renditions and posters; when ffmpeg is missing, videos are stored as
    /// uploaded.
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// Video rendition heights; never upscaled.
    pub video_heights: Vec<u32>,
    /// ffmpeg processes at once.
    pub video_workers: usize,
    /// Longest an ffmpeg run may take.
    pub video_timeout_secs: u64,
    /// Where content is stored first.
    pub storage: BlobStorageConfig,
    /// Where content nobody fetched for `cold_after_days` moves (`kind = "none"`: no tiering).
    pub cold: BlobStorageConfig,
    pub cold_after_days: f64,
}

/// A blob store: the local disk or an S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobStorageConfig {
    /// `local`, `s3`, or `none` (only for `cold`).
    pub kind: String,
    /// `local`: the directory (default `<data_dir>/media/blobs`, or `<data_dir>/media/cold` for `cold`).
    pub path: Option<PathBuf>,
    /// `s3`: the service URL (empty: AWS itself).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Allow a plain http:// endpoint (trusted networks and tests only).
    pub allow_http: bool,
    /// Address the bucket in the path, as most self-hosted services need.
    pub path_style: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let o = MediaOptions::new(PathBuf::new());
        let limits = ImageLimits::default();
        Self {
            max_upload_bytes: o.max_upload_bytes,
            quota_bytes: o.quota_bytes,
            allowed_types: o.allowed_types,
            url_lifetime_secs: o.url_lifetime.as_secs(),
            workers: o.workers,
            retain_unattached_secs: o.retain_unattached.as_secs(),
            sweep_interval_secs: o.sweep_interval.as_secs(),
            admins: Vec::new(),
            thumbnail_sizes: o.thumbnail_sizes,
            webp_quality: o.webp_quality,
            max_image_pixels: limits.max_pixels,
            max_image_side: limits.max_width,
            blocklist_distance: o.blocklist_distance,
            clamd: String::new(),
            scan_timeout_secs: 60,
            moderation_webhook: String::new(),
            moderation_secret: String::new(),
            moderation_timeout_secs: 10,
            moderation_fail_open: false,
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            video_heights: o.video_heights,
            video_workers: 1,
            video_timeout_secs: 600,
            storage: BlobStorageConfig::default(),
            cold: BlobStorageConfig { kind: "none".into(), ..BlobStorageConfig::default() },
            cold_after_days: 30.0,
        }
    }
}

impl Default for BlobStorageConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            path: None,
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
            allow_http: false,
            path_style: true,
        }
    }
}

impl MediaConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &str, rule: &str) -> Result<(), ConfigError> {
            if ok { Ok(()) } else { Err(ConfigError(format!("media.{key} {rule}"))) }
        }
        check(self.max_upload_bytes >= 1, "max_upload_bytes", "must be at least 1")?;
        check(!self.allowed_types.is_empty(), "allowed_types", "must not be empty")?;
        check(self.url_lifetime_secs >= 10, "url_lifetime_secs", "must be at least 10")?;
        check(self.workers >= 1, "workers", "must be at least 1")?;
        check(self.sweep_interval_secs >= 1, "sweep_interval_secs", "must be at least 1")?;
        check(!self.thumbnail_sizes.is_empty(), "thumbnail_sizes", "must not be empty")?;
        check(self.thumbnail_sizes.iter().all(|&s| (16..=4096).contains(&s)), "thumbnail_sizes", "must be 16 to 4096")?;
        check((1.0..=100.0).contains(&self.webp_quality), "webp_quality", "must be between 1 and 100")?;
        check(self.max_image_pixels >= 1, "max_image_pixels", "must be at least 1")?;
        check(self.max_image_side >= 16, "max_image_side", "must be at least 16")?;
        check(self.blocklist_distance <= 32, "blocklist_distance", "must be at most 32")?;
        check(self.video_heights.iter().all(|&h| (16..=4320).contains(&h)), "video_heights", "must be 16 to 4320")?;
        check(self.video_workers >= 1, "video_workers", "must be at least 1")?;
        // A finite bound: the value becomes a Duration, which infinity (TOML's `inf`) or 1e300 days cannot be.
        check((0.0..=36_500.0).contains(&self.cold_after_days), "cold_after_days", "must be between 0 and 36500")?;
        if !self.clamd.is_empty() {
            ClamdAddr::parse(&self.clamd).map_err(|e| ConfigError(format!("media.clamd {e}")))?;
        }
        if !self.moderation_webhook.is_empty() {
            check(
                self.moderation_webhook.starts_with("http://") || self.moderation_webhook.starts_with("https://"),
                "moderation_webhook",
                "must be an http:// or https:// URL",
            )?;
        }
        self.storage.validate("storage", false)?;
        self.cold.validate("cold", true)
    }

    /// The service's options, with its working files under `<data_dir>/media`.
    pub fn options(&self, data_dir: &Path) -> MediaOptions {
        let mut o = MediaOptions::new(data_dir.join("media"));
        o.max_upload_bytes = self.max_upload_bytes;
        o.quota_bytes = self.quota_bytes;
        o.allowed_types = self.allowed_types.clone();
        o.url_lifetime = Duration::from_secs(self.url_lifetime_secs);
        o.workers = self.workers;
        o.retain_unattached = Duration::from_secs(self.retain_unattached_secs);
        o.sweep_interval = Duration::from_secs(self.sweep_interval_secs);
        o.thumbnail_sizes = self.thumbnail_sizes.clone();
        o.webp_quality = self.webp_quality;
        o.image_limits = ImageLimits {
            max_width: self.max_image_side,
            max_height: self.max_image_side,
            max_pixels: self.max_image_pixels,
            ..ImageLimits::default()
        };
        o.blocklist_distance = self.blocklist_distance;
        o.video_heights = self.video_heights.clone();
        o.cold_after = Duration::from_secs_f64(self.cold_after_days * 86_400.0);
        o.moderation_fail_open = self.moderation_fail_open;
        o
    }

    /// Opens the stores and clients the configuration names.
    pub fn backends(&self, data_dir: &Path) -> anyhow::Result<MediaBackends> {
        let media_dir = data_dir.join("media");
        let hot =
            self.storage.open(&media_dir.join("blobs"))?.ok_or_else(|| anyhow::anyhow!("media.storage is none"))?;
        let cold = self.cold.open(&media_dir.join("cold"))?;
        let scanner = if self.clamd.is_empty() {
            None
        } else {
            let addr = ClamdAddr::parse(&self.clamd).map_err(anyhow::Error::msg)?;
            Some(Arc::new(Clamd::new(addr, Duration::from_secs(self.scan_timeout_secs))) as _)
        };
        let moderator = if self.moderation_webhook.is_empty() {
            None
        } else {
            let secret = Some(self.moderation_secret.clone()).filter(|s| !s.is_empty());
            let hook = WebhookModerator::new(
                self.moderation_webhook.clone(),
                Duration::from_secs(self.moderation_timeout_secs),
                secret,
            );
            Some(Arc::new(hook) as _)
        };
        let ffmpeg = Ffmpeg::new(
            self.ffmpeg.clone(),
            self.ffprobe.clone(),
            self.video_workers,
            Duration::from_secs(self.video_timeout_secs),
        );
        if !ffmpeg.available() {
            tracing::warn!(ffmpeg = %self.ffmpeg.display(), "ffmpeg not found: videos are stored without renditions or poster");
        }
        Ok(MediaBackends { hot, cold, scanner, moderator, ffmpeg: Some(Arc::new(ffmpeg)) })
    }
}

impl BlobStorageConfig {
    fn validate(&self, key: &str, may_be_none: bool) -> Result<(), ConfigError> {
        match self.kind.as_str() {
            "local" => Ok(()),
            "none" if may_be_none => Ok(()),
            "s3" if self.bucket.is_empty() => Err(ConfigError(format!("media.{key}.bucket must be set for s3"))),
            "s3" if self.endpoint.starts_with("http://") && !self.allow_http => Err(ConfigError(format!(
                "media.{key}.endpoint is plain http: set media.{key}.allow_http = true if that is intended"
            ))),
            "s3" => Ok(()),
            other => Err(ConfigError(format!(
                "media.{key}.kind must be local, s3{}, not {other:?}",
                if may_be_none { " or none" } else { "" }
            ))),
        }
    }

    fn open(&self, default_dir: &Path) -> anyhow::Result<Option<Arc<dyn BlobStore>>> {
        let store = match self.kind.as_str() {
            "none" => return Ok(None),
            "local" => ObjectBlobs::local(self.path.as_deref().unwrap_or(default_dir))?,
            _ => ObjectBlobs::s3(&S3Config {
                endpoint: Some(self.endpoint.clone()).filter(|e| !e.is_empty()),
                bucket: self.bucket.clone(),
                region: self.region.clone(),
                access_key: self.access_key.clone(),
                secret_key: self.secret_key.clone(),
                allow_http: self.allow_http,
                path_style: self.path_style,
            })?,
        };
        Ok(Some(Arc::new(store)))
    }
}
