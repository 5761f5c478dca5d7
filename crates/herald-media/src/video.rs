//! Video: ffprobe for facts, ffmpeg for H.264/AAC MP4 renditions and a poster frame.
//!
//! We shell out rather than link libav: ffmpeg parsing hostile files is the riskiest code in the
//! pipeline, and a child process can be killed, time-limited and crash without taking the server down.
//! Every child runs under a permit of one shared semaphore (transcoding saturates cores; a burst of
//! uploads must queue, not fork fifty encoders), with a timeout, and dies with its handle
//! (`kill_on_drop`), so a cancelled upload does not leave an orphan encoder behind.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

/// How much of a child's stderr we keep for the error: ffmpeg explains failures in its last lines.
const STDERR_TAIL: usize = 2048;

/// Why a video could not be probed or transcoded.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The file has no video stream (audio only, or not media at all).
    #[error("not a video: {0}")]
    NotAVideo(String),
    /// The ffmpeg or ffprobe binary could not be started.
    #[error("{binary} is not available: {reason}")]
    FfmpegMissing {
        /// The path we tried.
        binary: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The tool ran and failed; `stderr` is the tail of what it said.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// "ffmpeg" or "ffprobe".
        tool: &'static str,
        /// Exit status as text.
        status: String,
        /// The last ~2 KB of its stderr.
        stderr: String,
    },
    /// The tool ran longer than the configured timeout and was killed.
    #[error("{tool} timed out after {after:?}")]
    Timeout {
        /// "ffmpeg" or "ffprobe".
        tool: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// Local I/O around the tools (creating the output directory, reading the output size).
    #[error("video I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What ffprobe told us about a video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoInfo {
    /// Width of the first video stream, in pixels as displayed (rotation applied).
    pub width: u32,
    /// Height of the first video stream, in pixels as displayed.
    pub height: u32,
    /// Duration in milliseconds (0 when the container does not say).
    pub duration_ms: u64,
    /// Whether there is an audio stream to carry into the renditions.
    pub has_audio: bool,
}

/// One transcoded MP4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendition {
    /// The label clients pick by, e.g. `720p`.
    pub label: String,
    /// Width in pixels (even, as H.264 with 4:2:0 chroma needs).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Where the file was written (inside the `out_dir` given).
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
}

/// The ffmpeg/ffprobe runner with its bounded worker pool. Cheap to clone (shares the pool).
#[derive(Clone, Debug)]
pub struct Ffmpeg {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    permits: Arc<Semaphore>,
    timeout: Duration,
    available: Arc<OnceLock<bool>>,
}

impl Ffmpeg {
    /// `workers` concurrent children at most (clamped to at least 1); each is killed after `timeout`.
    pub fn new(ffmpeg: PathBuf, ffprobe: PathBuf, workers: usize, timeout: Duration) -> Self {
        Self {
            ffmpeg,
            ffprobe,
            permits: Arc::new(Semaphore::new(workers.max(1))),
            timeout,
            available: Arc::new(OnceLock::new()),
        }
    }

    /// Whether `ffmpeg -version` runs, checked once and remembered: the server then disables video
    /// processing (uploads are kept as plain files) instead of failing every video upload.
    pub fn available(&self) -> bool {
        *self.available.get_or_init(|| {
            std::process::Command::new(&self.ffmpeg)
                .arg("-version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Reads dimensions, duration and streams; refuses files without a video stream.
    pub async fn probe(&self, path: &Path) -> Result<VideoInfo, VideoError> {
        let mut cmd = Command::new(&self.ffprobe);
        cmd.args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format", "--"]).arg(path);
        let stdout = self.run("ffprobe", &self.ffprobe, cmd).await?;
        parse_probe(&stdout)
    }

    /// Transcodes `src` to one H.264/AAC MP4 per entry of `heights` not above the source height (never
    /// upscaling); a source smaller than every height gets a single rendition at its own height.
    /// Files go to `out_dir` as `<label>.mp4`; the renditions run one after another, each under a permit.
    pub async fn renditions(
        &self,
        src: &Path,
        info: &VideoInfo,
        out_dir: &Path,
        heights: &[u32],
    ) -> Result<Vec<Rendition>, VideoError> {
        tokio::fs::create_dir_all(out_dir).await?;
        let mut out = Vec::new();
        for height in rendition_heights(info.height, heights) {
            let label = format!("{height}p");
            let path = out_dir.join(format!("{label}.mp4"));
            let mut cmd = Command::new(&self.ffmpeg);
            cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"]).arg(src);
            cmd.args(["-map", "0:v:0"]);
            if info.has_audio {
                cmd.args(["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2"]);
            }
            cmd.args([
                "-vf",
                // scale=-2 keeps the aspect ratio with an even width, which yuv420p requires.
                &format!("scale=-2:{height}"),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "23",
                "-pix_fmt",
                "yuv420p",
                // Strip the container and stream metadata (GPS location in phone videos, device names).
                "-map_metadata",
                "-1",
                "-map_chapters",
                "-1",
                // Moov atom first so playback starts before the download ends.
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
            ])
            .arg(&path);
            self.run("ffmpeg", &self.ffmpeg, cmd).await?;
            let bytes = tokio::fs::metadata(&path).await?.len();
            // Ask the output rather than predict ffmpeg's rounding (and its autorotation).
            let made = self.probe(&path).await?;
            out.push(Rendition { label, width: made.width, height: made.height, path, bytes });
        }
        Ok(out)
    }

    /// Writes a PNG poster frame taken at min(1 s, duration / 2): one second in skips the black fade-in
    /// most clips start with, half the duration keeps very short clips inside their length.
    pub async fn poster(&self, src: &Path, info: &VideoInfo, out: &Path) -> Result<(), VideoError> {
        let at_ms = (info.duration_ms / 2).min(1000);
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-ss"])
            .arg(format!("{}.{:03}", at_ms / 1000, at_ms % 1000))
            .arg("-i")
            .arg(src)
            .args(["-map", "0:v:0", "-frames:v", "1", "-map_metadata", "-1", "-f", "image2", "-c:v", "png"])
            .arg(out);
        self.run("ffmpeg", &self.ffmpeg, cmd).await?;
        // A seek past the last frame makes ffmpeg succeed with no output: that is a failure for us.
        if tokio::fs::metadata(out).await.map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(VideoError::Failed {
                tool: "ffmpeg",
                status: "success".into(),
                stderr: "no frame was written for the poster".into(),
            });
        }
        Ok(())
    }

    /// Runs one child under a permit and the timeout; returns its stdout.
    async fn run(&self, tool: &'static str, binary: &Path, mut cmd: Command) -> Result<Vec<u8>, VideoError> {
        let _permit = self.permits.acquire().await.map_err(|_| VideoError::FfmpegMissing {
            binary: binary.to_owned(),
            reason: "worker pool closed".into(),
        })?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child =
            cmd.spawn().map_err(|e| VideoError::FfmpegMissing { binary: binary.to_owned(), reason: e.to_string() })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // Drain both pipes while waiting, or a chatty child blocks on a full pipe and never exits.
        let work = async { tokio::join!(child.wait(), read_all(stdout), read_tail(stderr, STDERR_TAIL)) };
        let (status, out, err): (std::io::Result<ExitStatus>, _, _) =
            match tokio::time::timeout(self.timeout, work).await {
                Ok(r) => r,
                // Returning drops `child`, and kill_on_drop sends it SIGKILL.
                Err(_) => return Err(VideoError::Timeout { tool, after: self.timeout }),
            };
        let status = status?;
        if !status.success() {
            return Err(VideoError::Failed { tool, status: status.to_string(), stderr: err });
        }
        Ok(out)
    }
}

async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        // ffprobe's JSON is small; a read error just yields what we have, and parsing then fails cleanly.
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
}

/// Reads a pipe to the end keeping only the last `keep` bytes, so a noisy child cannot grow memory.
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, keep: usize) -> String {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(keep);
    if let Some(mut p) = pipe {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = p.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            tail.extend(&chunk[..n]);
            let excess = tail.len().saturating_sub(keep);
            tail.drain(..excess);
        }
    }
    String::from_utf8_lossy(&Vec::from(tail)).trim().to_owned()
}

/// Which heights to produce for a source of `source_height` lines.
fn rendition_heights(source_height: u32, heights: &[u32]) -> Vec<u32> {
    let mut hs: Vec<u32> = heights.iter().copied().filter(|&h| h > 0 && h <= source_height).collect();
    hs.sort_unstable();
    hs.dedup();
    if hs.is_empty() && source_height > 0 {
        // libx264 wants even dimensions.
        hs.push((source_height & !1).max(2));
    }
    hs
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    #[serde(default)]
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    disposition: Option<ProbeDisposition>,
    #[serde(default)]
    tags: Option<ProbeTags>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ProbeDisposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize, Default)]
struct ProbeTags {
    rotate: Option<String>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
}

fn parse_probe(json: &[u8]) -> Result<VideoInfo, VideoError> {
    let probe: Probe = serde_json::from_slice(json).map_err(|e| VideoError::Failed {
        tool: "ffprobe",
        status: "success".into(),
        stderr: format!("unreadable ffprobe output: {e}"),
    })?;
    // Cover art in an audio file is a "video" stream with the attached_pic disposition: not a video.
    let video = probe
        .streams
        .iter()
        .find(|s| {
            s.codec_type.as_deref() == Some("video") && s.disposition.as_ref().is_none_or(|d| d.attached_pic == 0)
        })
        .ok_or_else(|| VideoError::NotAVideo("no video stream".into()))?;
    let (mut width, mut height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(VideoError::NotAVideo("video stream without dimensions".into())),
    };
    // Phones record sideways and flag a rotation: the displayed size (and ffmpeg's autorotated output)
    // is transposed.
    let rotation = video
        .tags
        .as_ref()
        .and_then(|t| t.rotate.as_deref())
        .and_then(|r| r.parse::<i64>().ok())
        .or_else(|| video.side_data_list.iter().find_map(|d| d.get("rotation").and_then(serde_json::Value::as_i64)))
        .unwrap_or(0);
    if rotation.rem_euclid(180) == 90 {
        std::mem::swap(&mut width, &mut height);
    }
    let seconds = probe
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .or(video.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(0.0);
    let has_audio = probe.streams.iter().any(|s| s.codec_type.as_deref() == Some("audio"));
    Ok(VideoInfo { width, height, duration_ms: (seconds * 1000.0).round() as u64, has_audio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_never_upscale() {
        assert_eq!(rendition_heights(720, &[360, 720, 1080]), vec![360, 720]);
        assert_eq!(rendition_heights(1080, &[1080, 360, 720]), vec![360, 720, 1080]);
        assert_eq!(rendition_heights(240, &[360, 720, 1080]), vec![240]);
        assert_eq!(rendition_heights(241, &[360]), vec![240]);
    }

    #[test]
    fn probe_output_parsing() {
        let json = br#"{"streams":[{"codec_type":"video","width":1920,"height":1080,
            "side_data_list":[{"rotation":-90}]},{"codec_type":"audio"}],"format":{"duration":"2.500000"}}"#;
        let info = parse_probe(json).expect("parse");
        assert_eq!(info, VideoInfo { width: 1080, height: 1920, duration_ms: 2500, has_audio: true });

        let cover_art = br#"{"streams":[{"codec_type":"audio"},
            {"codec_type":"video","width":500,"height":500,"disposition":{"attached_pic":1}}]}"#;
        assert!(matches!(parse_probe(cover_art), Err(VideoError::NotAVideo(_))));
        assert!(matches!(parse_probe(b"{}"), Err(VideoError::NotAVideo(_))));
        assert!(matches!(parse_probe(b"not json"), Err(VideoError::Failed { .. })));
    }
}
