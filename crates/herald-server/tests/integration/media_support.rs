//! Media fixtures, generated here (small, deterministic) rather than committed, and upload helpers.

use super::helpers::{TestApp, User};
use herald_proto::MediaId;
use image::{ImageFormat, Rgb, RgbImage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A picture with structure (gradients and a few shapes), so perceptual hashes mean something.
pub fn picture(width: u32, height: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let in_box = (0.2..0.5).contains(&fx) && (0.3..0.8).contains(&fy);
        let in_disc = (fx - 0.7).powi(2) + (fy - 0.4).powi(2) < 0.02 * (1 + seed % 3) as f32;
        let base = ((fx * 200.0) as u8).wrapping_add((seed * 37) as u8);
        match (in_box, in_disc) {
            (true, _) => Rgb([20, 30 + (seed * 50 % 200) as u8, 200]),
            (_, true) => Rgb([240, 220, 10]),
            _ => Rgb([base, (fy * 255.0) as u8, 128]),
        }
    })
}

pub fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

pub fn jpeg_quality(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(image).expect("jpeg");
    out
}

/// What the EXIF block of `jpeg_with_exif` says besides the orientation: it must not survive.
pub const EXIF_SECRET: &[u8] = b"HERALD-SECRET-GPS-48.8584N-2.2945E";

/// A 200x100 JPEG whose EXIF says "rotate 90 degrees clockwise" and carries a description that stands in
/// for GPS coordinates.
pub fn jpeg_with_exif() -> Vec<u8> {
    use img_parts::ImageEXIF;
    let jpeg = jpeg_quality(&picture(200, 100, 1), 90);
    // A big-endian TIFF header and one IFD: Orientation = 6 and ImageDescription = EXIF_SECRET.
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    tiff.extend_from_slice(&2u16.to_be_bytes());
    // Orientation (0x0112), SHORT, count 1, value 6 (left-justified in the 4-byte field).
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    // ImageDescription (0x010E), ASCII, count, offset of the data after the IFD.
    let data_offset = 8 + 2 + 2 * 12 + 4;
    tiff.extend_from_slice(&[0x01, 0x0e, 0, 2]);
    tiff.extend_from_slice(&(EXIF_SECRET.len() as u32 + 1).to_be_bytes());
    tiff.extend_from_slice(&(data_offset as u32).to_be_bytes());
    tiff.extend_from_slice(&0u32.to_be_bytes());
    tiff.extend_from_slice(EXIF_SECRET);
    tiff.push(0);
    let mut parsed = img_parts::jpeg::Jpeg::from_bytes(jpeg.into()).expect("parse jpeg");
    parsed.set_exif(Some(tiff.into()));
    let mut out = Vec::new();
    parsed.encoder().write_to(&mut out).expect("write jpeg");
    assert!(out.windows(EXIF_SECRET.len()).any(|w| w == EXIF_SECRET), "fixture carries its EXIF");
    out
}

/// A near-duplicate: resized to 80 %, brightened, re-encoded as JPEG at quality 60.
pub fn near_duplicate(original: &RgbImage) -> Vec<u8> {
    let (w, h) = (original.width() * 4 / 5, original.height() * 4 / 5);
    let mut smaller = image::imageops::resize(original, w, h, image::imageops::FilterType::Triangle);
    for pixel in smaller.pixels_mut() {
        for c in pixel.0.iter_mut() {
            *c = c.saturating_add(10);
        }
    }
    jpeg_quality(&smaller, 60)
}

/// A video made by ffmpeg's test source: `width`x`height`, one second, with a tone.
pub fn video(dir: &Path, width: u32, height: u32) -> Vec<u8> {
    let out: PathBuf = dir.join(format!("fixture-{width}x{height}.mp4"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=duration=1:size={width}x{height}:rate=10"))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=1"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg; .ci/run installs it)");
    assert!(status.success(), "ffmpeg made the fixture");
    std::fs::read(out).expect("read fixture")
}

/// The EICAR test file: every virus scanner reports it, and it is harmless.
pub fn eicar() -> Vec<u8> {
    herald_media::testing::EICAR.to_vec()
}

impl TestApp {
    /// Announces an upload and sends all of its bytes in one request; returns its id.
    pub async fn upload(&self, user: &User, bytes: &[u8], filename: &str, claimed: &str) -> MediaId {
        let id = self.create_upload(user, bytes.len() as u64, filename, claimed).await;
        let (status, body) = self.patch_upload(user, id, 0, bytes.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "append: {body}");
        assert_eq!(body["received"], bytes.len() as u64, "{body}");
        id
    }

    pub async fn create_upload(&self, user: &User, size: u64, filename: &str, claimed: &str) -> MediaId {
        let (status, body) = self
            .post("/api/v1/uploads", user.token(), json!({"size": size, "filename": filename, "content_type": claimed}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create upload: {body}");
        body["id"].as_str().expect("id").parse().expect("media id")
    }

    pub async fn patch_upload(&self, user: &User, id: MediaId, offset: u64, bytes: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .request(Method::PATCH, format!("{}/api/v1/uploads/{id}", self.base))
            .bearer_auth(user.token())
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes)
            .send()
            .await
            .expect("patch sent");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the upload until it is ready or rejected.
    pub async fn wait_final(&self, user: &User, id: MediaId) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = self.get(&format!("/api/v1/media/{id}"), user.token()).await;
            assert_eq!(status, StatusCode::OK, "media info: {body}");
            if body["state"] == "ready" || body["state"] == "rejected" {
                return body;
            }
            assert!(Instant::now() < deadline, "upload {id} still {} after 90 s", body["state"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Uploads and waits; asserts it became ready.
    pub async fn ready_upload(&self, user: &User, bytes: &[u8], filename: &str, claimed: &str) -> (MediaId, Value) {
        let id = self.upload(user, bytes, filename, claimed).await;
        let info = self.wait_final(user, id).await;
        assert_eq!(info["state"], "ready", "{info}");
        (id, info)
    }

    /// GETs a signed media URL (a path from `variants.*.url`) with extra headers.
    pub async fn fetch(&self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{url}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("fetch sent")
    }

    /// Files under the data dir's `media/<sub>` (recursively).
    pub fn media_files(&self, sub: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() { walk(&path, out) } else { out.push(path) }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("media").join(sub), &mut out);
        out
    }

    pub async fn sweep(&self, admin: &User) -> Value {
        let (status, body) = self.post("/api/v1/admin/media/sweep", admin.token(), json!({})).await;
        assert_eq!(status, StatusCode::OK, "sweep: {body}");
        body
    }
}
