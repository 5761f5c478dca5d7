//! One upload's way from its last byte to "ready" (or "rejected, because …"), in the brief's order:
//! sniff the real type -> content hash -> already stored? (dedup) -> virus scan -> moderation
//! (perceptual-hash blocklist, webhook) -> thumbnails / renditions -> blob storage -> ready.
//!
//! Whatever happens, nothing half-done stays behind: the scratch directory is removed at the end of every
//! run and the partial file once the outcome is recorded, blobs written for an upload that then fails are
//! deleted, and a rejection releases the upload's quota in the same write that records it. A run is
//! idempotent, so a restart simply runs again what the store could not record.

use crate::blobs::BlobKey;
use crate::image::{ImageError, ProcessedImage};
use crate::moderation::{ModerationItem, ModerationVerdict};
use crate::scan::ScanVerdict;
use crate::service::Media;
use crate::sniff::{MediaKind, Sniffed};
use bytes::Bytes;
use herald_core::now_millis;
use herald_core::store::{ContentRecord, MediaRecord, StoreError, StoredVariant, Tier};
use herald_proto::{MediaId, MediaState, RejectReason};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;

/// Bytes read to sniff the type.
const SNIFF_BYTES: usize = 8192;

/// Why a run stopped short of "ready".
enum Stop {
    Reject(RejectReason, String),
    /// The upload was finished by someone else meanwhile (taken down, expired, deleted).
    Superseded,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Reject(RejectReason::Failed, format!("store: {e}"))
    }
}

/// Runs the pipeline for one upload and records its outcome. `worker` is the upload's place among the
/// `media.workers` running at once; a video gives it up while ffmpeg works (ffmpeg has its own bounded
/// pool), so photos do not queue behind minutes of transcoding.
pub(crate) async fn run(media: &Media, id: MediaId, worker: Option<OwnedSemaphorePermit>) {
    let started = Instant::now();
    let outcome = match media.stores.media.media(id).await {
        Ok(Some(record)) if !record.state.is_final() => process(media, &record, worker).await,
        Ok(_) => Err(Stop::Superseded),
        Err(e) => Err(Stop::from(e)),
    };
    match outcome {
        Ok(()) => {
            media.uploads.discard(id).await;
            metrics::counter!("media_uploads_total", "result" => "ready").increment(1);
            metrics::histogram!("media_pipeline_duration_ms").record(started.elapsed().as_secs_f64() * 1e3);
        }
        Err(Stop::Superseded) => media.uploads.discard(id).await,
        Err(Stop::Reject(reason, detail)) => {
            metrics::counter!("media_rejections_total", "reason" => reason.as_str()).increment(1);
            metrics::counter!("media_uploads_total", "result" => "rejected").increment(1);
            if reason == RejectReason::Failed {
                tracing::warn!(%id, %detail, "media: processing failed");
            }
            match media.stores.media.reject(id, reason, Some(&detail)).await {
                Ok(_) => media.uploads.discard(id).await,
                // The store is failing (or closing at shutdown): the upload stays unfinished with its bytes,
                // and the next start's recovery runs it again instead of losing it.
                Err(e) => tracing::error!(%id, error = %e, "media: could not record a rejection; kept for a retry"),
            }
        }
    }
}

async fn process(media: &Media, record: &MediaRecord, worker: Option<OwnedSemaphorePermit>) -> Result<(), Stop> {
    let id = record.id;
    let path = media.uploads.path(id);
    set_state(media, id, MediaState::Scanning, None).await?;

    let sniffed = timed("sniff", sniff_file(&path)).await?;
    let sniffed = match sniffed {
        Some(s) if media.options.allows(s.mime) => s,
        other => {
            let found = other.map_or("an unknown type", |s| s.mime);
            let claimed = record.claimed_type.as_deref().unwrap_or("nothing");
            return Err(Stop::Reject(
                RejectReason::TypeNotAllowed,
                format!("the bytes are {found} (the client said {claimed}), which is not accepted"),
            ));
        }
    };
    set_state(media, id, MediaState::Scanning, Some(sniffed.mime)).await?;

    let hash = timed("hash", hash_file(path.clone())).await?;
    if media.stores.media.is_taken_down(&hash).await? {
        return Err(Stop::Reject(RejectReason::TakenDown, "this content was taken down".into()));
    }

    // From here to "ready", this content's blobs are ours alone (see `locks`).
    let _guard = media.hash_locks.lock(&hash).await;
    if let Some(existing) = media.stores.media.content(&hash).await? {
        // Stored before: already scanned, moderated and processed. One more reference, no new bytes.
        return complete(media, id, &existing).await.map(drop);
    }

    if let Some(scanner) = &media.backends.scanner {
        let verdict = timed("scan", async {
            scanner.scan(&path).await.map_err(|e| Stop::Reject(RejectReason::ScanFailed, e.to_string()))
        })
        .await?;
        if let ScanVerdict::Infected(signature) = verdict {
            return Err(Stop::Reject(RejectReason::Malware, format!("the virus scanner found {signature}")));
        }
    }

    let size = tokio::fs::metadata(&path).await.map_err(failed)?.len();
    let scratch = media.uploads.scratch(id);
    tokio::fs::create_dir_all(&scratch).await.map_err(failed)?;
    let mut stored = Stored::new(media, &hash);
    let result = async {
        let made = match sniffed.kind {
            MediaKind::Image => {
                let image = timed("image", decode_image(media, &path)).await?;
                check_blocklist(media, image.phash).await?;
                moderate(media, record, &sniffed, &hash, size, &path).await?;
                set_state(media, id, MediaState::Processing, None).await?;
                store_image(&mut stored, &path, sniffed.mime, image).await?
            }
            MediaKind::Video if media.backends.ffmpeg.as_ref().is_some_and(|f| f.available()) => {
                moderate(media, record, &sniffed, &hash, size, &path).await?;
                set_state(media, id, MediaState::Processing, None).await?;
                drop(worker);
                store_video(media, &mut stored, &path, &scratch, sniffed.mime).await?
            }
            _ => {
                moderate(media, record, &sniffed, &hash, size, &path).await?;
                stored.file("original", &path, sniffed.mime, None).await?;
                Made::default()
            }
        };
        let now = now_millis();
        let content = ContentRecord {
            hash: hash.clone(),
            content_type: sniffed.mime.to_owned(),
            size,
            width: made.width,
            height: made.height,
            duration_ms: made.duration_ms,
            variants: stored.variants.clone(),
            tier: Tier::Hot,
            refs: 0,
            created_at: now,
            last_access: now,
        };
        complete(media, id, &content).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    match result {
        // A content row now points at these blobs.
        Ok(false) => Ok(()),
        // Stored by another upload meanwhile, or refused: these blobs are not referenced.
        Ok(true) => Ok(()),
        Err(stop) => {
            stored.undo().await;
            Err(stop)
        }
    }
}

/// Points the upload at the content; returns whether the content was stored already.
async fn complete(media: &Media, id: MediaId, content: &ContentRecord) -> Result<bool, Stop> {
    match media.stores.media.complete(id, content).await {
        Ok(done) => Ok(done.existed),
        Err(StoreError::Conflict(_)) => {
            // Finished by someone else meanwhile, or the hash was taken down: then this is a rejection.
            if media.stores.media.is_taken_down(&content.hash).await? {
                Err(Stop::Reject(RejectReason::TakenDown, "this content was taken down".into()))
            } else {
                Err(Stop::Superseded)
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn set_state(media: &Media, id: MediaId, state: MediaState, content_type: Option<&str>) -> Result<(), Stop> {
    if media.stores.media.set_progress(id, state, content_type).await? { Ok(()) } else { Err(Stop::Superseded) }
}

async fn sniff_file(path: &Path) -> Result<Option<Sniffed>, Stop> {
    let mut file = tokio::fs::File::open(path).await.map_err(failed)?;
    let mut head = vec![0; SNIFF_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..]).await.map_err(failed)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    Ok(crate::sniff::sniff(&head))
}

async fn hash_file(path: PathBuf) -> Result<String, Stop> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&path)?)?;
        Ok::<_, std::io::Error>(hasher.finalize().to_hex().to_string())
    })
    .await
    .map_err(failed)?
    .map_err(failed)
}

async fn decode_image(media: &Media, path: &Path) -> Result<ProcessedImage, Stop> {
    decode_image_sized(media, path, media.options.thumbnail_sizes.clone()).await
}

async fn decode_image_sized(media: &Media, path: &Path, sizes: Vec<u32>) -> Result<ProcessedImage, Stop> {
    let bytes = tokio::fs::read(path).await.map_err(failed)?;
    let limits = media.options.image_limits.clone();
    let quality = media.options.webp_quality;
    let processed =
        tokio::task::spawn_blocking(move || crate::image::process_image(&bytes, &limits, &sizes, quality)).await;
    match processed.map_err(failed)? {
        Ok(image) => Ok(image),
        Err(ImageError::TooLarge(detail)) => Err(Stop::Reject(RejectReason::TooLarge, detail)),
        Err(ImageError::Undecodable(detail)) => Err(Stop::Reject(RejectReason::Corrupt, detail)),
        Err(e) => Err(failed(e)),
    }
}

async fn check_blocklist(media: &Media, phash: u64) -> Result<(), Stop> {
    let blocked = media.blocked_hashes().await.map_err(failed)?;
    let limit = media.options.blocklist_distance;
    if blocked.iter().any(|&b| crate::image::hamming(b, phash) <= limit) {
        return Err(Stop::Reject(RejectReason::Blocked, "the image matches the blocklist".into()));
    }
    Ok(())
}

async fn moderate(
    media: &Media,
    record: &MediaRecord,
    sniffed: &Sniffed,
    hash: &str,
    size: u64,
    path: &Path,
) -> Result<(), Stop> {
    let Some(moderator) = &media.backends.moderator else { return Ok(()) };
    let item =
        ModerationItem { media_id: record.id.to_string(), content_type: sniffed.mime, content_hash: hash, size, path };
    let verdict = timed("moderate", async { Ok::<_, Stop>(moderator.moderate(&item).await) }).await?;
    match verdict {
        Ok(ModerationVerdict::Approved) => Ok(()),
        Ok(ModerationVerdict::Rejected(reason)) => Err(Stop::Reject(RejectReason::Blocked, reason)),
        Err(e) if media.options.moderation_fail_open => {
            tracing::warn!(id = %record.id, error = %e, "media: moderation failed; approving (fail-open)");
            Ok(())
        }
        Err(e) => Err(Stop::Reject(RejectReason::ModerationFailed, e.to_string())),
    }
}

/// Dimensions and duration of what was stored.
#[derive(Default)]
struct Made {
    width: Option<u32>,
    height: Option<u32>,
    duration_ms: Option<u64>,
}

async fn store_image(stored: &mut Stored<'_>, path: &Path, mime: &str, image: ProcessedImage) -> Result<Made, Stop> {
    let dims = Some((image.width, image.height));
    match image.original_stripped {
        Some(bytes) => stored.bytes("original", Bytes::from(bytes), mime, dims).await?,
        None => stored.file("original", path, mime, dims).await?,
    }
    for thumb in image.thumbnails {
        let name = format!("thumb_{}", thumb.size);
        stored.bytes(&name, Bytes::from(thumb.webp), "image/webp", Some((thumb.width, thumb.height))).await?;
    }
    Ok(Made { width: Some(image.width), height: Some(image.height), duration_ms: None })
}

async fn store_video(
    media: &Media,
    stored: &mut Stored<'_>,
    path: &Path,
    scratch: &Path,
    mime: &str,
) -> Result<Made, Stop> {
    let Some(ffmpeg) = &media.backends.ffmpeg else { return Err(failed("no ffmpeg")) };
    let info = timed("video_probe", async { ffmpeg.probe(path).await.map_err(video_stop) }).await?;
    let renditions = timed("video_transcode", async {
        ffmpeg.renditions(path, &info, scratch, &media.options.video_heights).await.map_err(video_stop)
    })
    .await?;
    let poster = scratch.join("poster.png");
    timed("video_poster", async { ffmpeg.poster(path, &info, &poster).await.map_err(video_stop) }).await?;
    stored.file("original", path, mime, Some((info.width, info.height))).await?;
    for rendition in &renditions {
        stored.file(&rendition.label, &rendition.path, "video/mp4", Some((rendition.width, rendition.height))).await?;
    }
    // The poster goes through the image path: WebP at the frame's own size (a lone box the frame fits in
    // is made at the frame's size), and the usual thumbnails for previews.
    let full = timed("image", decode_image_sized(media, &poster, vec![info.width.max(info.height)])).await?;
    if let Some(frame) = full.thumbnails.into_iter().next() {
        stored.bytes("poster", Bytes::from(frame.webp), "image/webp", Some((frame.width, frame.height))).await?;
    }
    let previews = timed("image", decode_image(media, &poster)).await?;
    for thumb in previews.thumbnails {
        let name = format!("thumb_{}", thumb.size);
        stored.bytes(&name, Bytes::from(thumb.webp), "image/webp", Some((thumb.width, thumb.height))).await?;
    }
    Ok(Made { width: Some(info.width), height: Some(info.height), duration_ms: Some(info.duration_ms) })
}

fn video_stop(e: crate::video::VideoError) -> Stop {
    match e {
        crate::video::VideoError::NotAVideo(detail) => Stop::Reject(RejectReason::Corrupt, detail),
        other => Stop::Reject(RejectReason::Corrupt, format!("video processing: {other}")),
    }
}

/// The blobs written for one content, so a failed run can take them back.
struct Stored<'a> {
    media: &'a Media,
    hash: &'a str,
    variants: BTreeMap<String, StoredVariant>,
}

impl<'a> Stored<'a> {
    fn new(media: &'a Media, hash: &'a str) -> Self {
        Self { media, hash, variants: BTreeMap::new() }
    }

    async fn file(&mut self, name: &str, path: &Path, mime: &str, dims: Option<(u32, u32)>) -> Result<(), Stop> {
        let key = self.key(name)?;
        let started = Instant::now();
        let size = self.media.backends.hot.put_file(&key, path).await.map_err(failed)?;
        record_stage("store", started);
        self.record(name, key, mime, size, dims);
        Ok(())
    }

    async fn bytes(&mut self, name: &str, bytes: Bytes, mime: &str, dims: Option<(u32, u32)>) -> Result<(), Stop> {
        let key = self.key(name)?;
        let size = bytes.len() as u64;
        let started = Instant::now();
        self.media.backends.hot.put_bytes(&key, bytes).await.map_err(failed)?;
        record_stage("store", started);
        self.record(name, key, mime, size, dims);
        Ok(())
    }

    fn key(&self, name: &str) -> Result<BlobKey, Stop> {
        BlobKey::new(self.hash, name).map_err(failed)
    }

    fn record(&mut self, name: &str, key: BlobKey, mime: &str, size: u64, dims: Option<(u32, u32)>) {
        self.variants.insert(
            name.to_owned(),
            StoredVariant {
                key: key.as_str().to_owned(),
                content_type: mime.to_owned(),
                size,
                width: dims.map(|d| d.0),
                height: dims.map(|d| d.1),
            },
        );
    }

    /// Deletes what was written (the run failed before a content row referenced it).
    async fn undo(&self) {
        for variant in self.variants.values() {
            if let Ok(key) = BlobKey::parse(&variant.key)
                && let Err(e) = self.media.backends.hot.delete(&key).await
            {
                tracing::warn!(key = %variant.key, error = %e, "media: could not delete a blob of a failed upload");
            }
        }
    }
}

async fn timed<T>(stage: &'static str, work: impl Future<Output = Result<T, Stop>>) -> Result<T, Stop> {
    let started = Instant::now();
    let result = work.await;
    record_stage(stage, started);
    result
}

fn record_stage(stage: &'static str, started: Instant) {
    metrics::histogram!("media_stage_duration_ms", "stage" => stage).record(started.elapsed().as_secs_f64() * 1e3);
}

fn failed(e: impl std::fmt::Display) -> Stop {
    Stop::Reject(RejectReason::Failed, e.to_string())
}
