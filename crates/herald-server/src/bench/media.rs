//! `media`: uploads through the media pipeline. Photo-sized JPEGs (distinct, so nothing is deduplicated)
//! and, when ffmpeg is on the PATH, a few 1080p videos, `--concurrency` at a time; reports uploads per
//! second, ingest MB/s, the time to send the bytes and the time from the last byte to "ready" (thumbnails,
//! renditions and storage done), and the server's CPU and memory. Checks every upload became ready with
//! the variants its size calls for.

use super::client::register_users;
use super::node::Target;
use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_client::Api;
use herald_proto::{CreateUpload, MediaInfo, MediaState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often an upload's state is polled: the resolution of the processing times.
const POLL: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug)]
pub struct MediaArgs {
    /// JPEG photos to upload.
    #[arg(long, default_value_t = 40)]
    pub images: usize,
    /// Their size in pixels.
    #[arg(long, default_value_t = 4000)]
    pub width: u32,
    #[arg(long, default_value_t = 3000)]
    pub height: u32,
    /// 1080p videos of `--video-seconds` to upload (made with ffmpeg; skipped without it).
    #[arg(long, default_value_t = 2)]
    pub videos: usize,
    #[arg(long, default_value_t = 5)]
    pub video_seconds: u32,
    /// Uploads in progress at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct KindReport {
    pub kind: String,
    pub uploads: usize,
    pub bytes: u64,
    pub send_ms_p50: f64,
    pub process_ms_p50: f64,
    pub process_ms_p99: f64,
    pub process_ms_max: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct MediaReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub uploads_per_second: f64,
    pub ingest_mb_per_second: f64,
    pub kinds: Vec<KindReport>,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mb: Option<f64>,
}

impl MediaReport {
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario media: {} at once, {:.1} s, {:.2} uploads/s, {:.1} MB/s in, server CPU {}, RSS {}\n\
             | kind | uploads | MB | send p50 ms | ready p50 ms | ready p99 ms | ready max ms |\n\
             |---|---|---|---|---|---|---|",
            self.concurrency,
            self.seconds,
            self.uploads_per_second,
            self.ingest_mb_per_second,
            self.server_cpu_percent.map_or("n/a".into(), |c| format!("{c:.0} %")),
            self.server_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB")),
        );
        for k in &self.kinds {
            out.push_str(&format!(
                "\n| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                k.kind,
                k.uploads,
                k.bytes as f64 / 1e6,
                k.send_ms_p50,
                k.process_ms_p50,
                k.process_ms_p99,
                k.process_ms_max
            ));
        }
        out
    }
}

pub(super) struct Sample {
    kind: &'static str,
    bytes: u64,
    /// From announcing the upload until its last byte was accepted.
    pub send: Duration,
    /// From the last byte until the upload was ready (or rejected).
    pub process: Duration,
    /// The upload, as it was once final.
    pub info: MediaInfo,
}

pub async fn run(target: &Target, args: &MediaArgs) -> anyhow::Result<MediaReport> {
    let http = super::client::http()?;
    let session = register_users(&http, target.base(), 1, 1).await?.pop().context("a user")?;
    let api = Api::with_http_client(target.base(), http)?;

    eprintln!("making {} {}x{} JPEGs and {} videos ...", args.images, args.width, args.height, args.videos);
    let mut files: Vec<(&'static str, Bytes)> = Vec::new();
    for seed in 0..args.images {
        let (w, h) = (args.width, args.height);
        let jpeg = tokio::task::spawn_blocking(move || photo(w, h, seed as u32)).await??;
        files.push(("image", jpeg));
    }
    let scratch = tempfile::tempdir()?;
    let videos = if ffmpeg_available() { args.videos } else { 0 };
    if videos < args.videos {
        eprintln!("ffmpeg not found: no videos");
    }
    for seed in 0..videos {
        files.push(("video", video(scratch.path(), seed as u32, args.video_seconds)?));
    }

    let cpu_before = target.cpu_seconds();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, (kind, bytes)) in files.into_iter().enumerate() {
        let (api, token, gate) = (api.clone(), session.access_token.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            upload(&api, &token, kind, bytes, i).await
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.push(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, target.cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / seconds * 100.0),
        _ => None,
    };
    let total_bytes: u64 = samples.iter().map(|s| s.bytes).sum();
    let mut kinds = Vec::new();
    for kind in ["image", "video"] {
        let of: Vec<&Sample> = samples.iter().filter(|s| s.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let mut send = Histogram::<u64>::new(3)?;
        let mut process = Histogram::<u64>::new(3)?;
        for s in &of {
            send.record(s.send.as_micros() as u64)?;
            process.record(s.process.as_micros() as u64)?;
        }
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        kinds.push(KindReport {
            kind: kind.into(),
            uploads: of.len(),
            bytes: of.iter().map(|s| s.bytes).sum(),
            send_ms_p50: ms(&send, 0.5),
            process_ms_p50: ms(&process, 0.5),
            process_ms_p99: ms(&process, 0.99),
            process_ms_max: process.max() as f64 / 1000.0,
        });
    }
    Ok(MediaReport {
        concurrency: args.concurrency,
        seconds,
        uploads_per_second: samples.len() as f64 / seconds,
        ingest_mb_per_second: total_bytes as f64 / 1e6 / seconds,
        kinds,
        server_cpu_percent: cpu,
        server_rss_mb: target.rss_bytes().map(|b| b as f64 / 1e6),
    })
}

/// One upload in one request, then polling until it is final; checks the outcome.
pub(super) async fn upload(
    api: &Api,
    token: &str,
    kind: &'static str,
    bytes: Bytes,
    i: usize,
) -> anyhow::Result<Sample> {
    let size = bytes.len() as u64;
    let started = Instant::now();
    let request = CreateUpload { size, filename: Some(format!("bench-{i}")), content_type: None };
    let info = api.create_upload(token, &request).await?;
    let sent = api.append_upload(token, info.id, 0, bytes).await?;
    let send = started.elapsed();
    let mut info: MediaInfo = sent;
    while !info.state.is_final() {
        tokio::time::sleep(POLL).await;
        info = api.media(token, info.id).await?;
    }
    let process = started.elapsed() - send;
    if info.state != MediaState::Ready {
        bail!("upload {i} ({kind}) was rejected: {:?} {:?}", info.reason, info.detail);
    }
    let expected: &[&str] = if kind == "image" {
        &["original", "thumb_150", "thumb_300", "thumb_600"]
    } else {
        &["original", "poster", "360p", "720p", "1080p"]
    };
    for variant in expected {
        if !info.variants.contains_key(*variant) {
            bail!("upload {i} ({kind}) has no {variant}: {:?}", info.variants.keys().collect::<Vec<_>>());
        }
    }
    Ok(Sample { kind, bytes: size, send, process, info })
}

/// A photo-like JPEG (gradients and shapes, quality 85), different for every seed.
pub(super) fn photo(width: u32, height: u32, seed: u32) -> anyhow::Result<Bytes> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let ripple = ((fx * 40.0 + seed as f32).sin() * (fy * 30.0).cos() * 60.0) as i32;
        image::Rgb([
            (fx * 200.0) as u8 ^ (seed as u8),
            ((fy * 180.0) as i32 + ripple).clamp(0, 255) as u8,
            ((1.0 - fx) * 150.0 + (x ^ y) as f32 % 50.0) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&image)?;
    Ok(Bytes::from(out))
}

fn ffmpeg_available() -> bool {
    std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success())
}

/// A 1080p H.264 + AAC video from ffmpeg's test sources, different for every seed.
fn video(dir: &std::path::Path, seed: u32, seconds: u32) -> anyhow::Result<Bytes> {
    let out = dir.join(format!("bench-{seed}.mp4"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=duration={seconds}:size=1920x1080:rate=30"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={}:duration={seconds}", 300 + seed * 10))
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&out)
        .status()?;
    if !status.success() {
        bail!("ffmpeg could not make the benchmark video");
    }
    Ok(Bytes::from(std::fs::read(out)?))
}
