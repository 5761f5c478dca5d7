//! Still images: decoding under limits, metadata stripping, WebP thumbnails and perceptual hashes.
//!
//! Everything here handles attacker-controlled bytes, so the rules are: look at the header before
//! allocating pixels (a 40 KB PNG can claim 100,000 x 100,000 pixels), tell the decoder the same limits
//! in case the header lies, and return an error rather than panic on anything malformed.
//!
//! The functions are synchronous and CPU-heavy: callers run them on blocking threads
//! (`tokio::task::spawn_blocking`) under the media concurrency limit.

use std::io::Cursor;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use image_hasher::{HashAlg, HasherConfig};
use img_parts::jpeg::{Jpeg, markers};
use img_parts::png::Png;
use img_parts::riff::RiffContent;
use img_parts::webp::WebP;
use img_parts::{Bytes, ImageEXIF};
use std::borrow::Cow;

/// Bounds on what we agree to decode: the defence against decompression bombs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Widest image accepted, in pixels (after the header, before orientation).
    pub max_width: u32,
    /// Tallest image accepted, in pixels.
    pub max_height: u32,
    /// Most pixels accepted (width x height): stops 12,000 x 12,000 when both sides pass alone.
    pub max_pixels: u64,
    /// Most bytes the decoder may allocate, handed to `image::Limits`.
    pub max_alloc_bytes: u64,
}

impl Default for ImageLimits {
    /// Large enough for any phone or DSLR photo (a 50 Mpx RGBA buffer is 200 MB), small enough that a
    /// handful of concurrent decodes cannot exhaust a modest server.
    fn default() -> Self {
        Self { max_width: 12_000, max_height: 12_000, max_pixels: 50_000_000, max_alloc_bytes: 512 * 1024 * 1024 }
    }
}

/// One WebP thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    /// The requested bounding box (N for N x N), which clients ask for.
    pub size: u32,
    /// Actual width, at most `size`.
    pub width: u32,
    /// Actual height, at most `size`.
    pub height: u32,
    /// Lossy WebP bytes.
    pub webp: Vec<u8>,
}

/// What [`process_image`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessedImage {
    /// Width as displayed, i.e. after the EXIF orientation.
    pub width: u32,
    /// Height as displayed, i.e. after the EXIF orientation.
    pub height: u32,
    /// The original file with its metadata (EXIF, XMP, comments, text chunks) removed without
    /// re-encoding; `None` when there was nothing to remove (serve the original as is). The ICC profile
    /// and a minimal EXIF carrying only the orientation are kept, because without them the image would
    /// render with wrong colours or sideways.
    pub original_stripped: Option<Vec<u8>>,
    /// Thumbnails, smallest bounding box first.
    pub thumbnails: Vec<Thumbnail>,
    /// 64-bit perceptual hash, see [`perceptual_hash`].
    pub phash: u64,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Over [`ImageLimits`]: too wide, too tall, too many pixels or too much memory (likely a bomb).
    #[error("image too large: {0}")]
    TooLarge(String),
    /// Not an image we can decode: unknown or unsupported format, truncated or corrupt data.
    #[error("undecodable image: {0}")]
    Undecodable(String),
    /// Decoding worked but producing an output failed.
    #[error("image encoding failed: {0}")]
    Encode(String),
}

impl ImageError {
    /// The `image` crate reports limit violations as a distinct kind: keep them apart from corruption,
    /// because they get a different status (413 rather than 415) and are worth counting.
    fn from_decode(e: image::ImageError) -> Self {
        match e {
            image::ImageError::Limits(l) => ImageError::TooLarge(l.to_string()),
            other => ImageError::Undecodable(other.to_string()),
        }
    }
}

/// Decodes `bytes` (JPEG, PNG, GIF's first frame, WebP) under `limits`, and produces the stripped
/// original, one WebP thumbnail per entry of `sizes` and the perceptual hash.
///
/// A thumbnail for size N fits inside N x N with the aspect ratio kept; images are never upscaled, so a
/// size the image already fits in is skipped, except the smallest one, which is then produced at the
/// original size (every image gets at least one thumbnail, which clients can always rely on). `quality`
/// is the lossy WebP quality, 0 to 100 (80 in production).
pub fn process_image(
    bytes: &[u8],
    limits: &ImageLimits,
    sizes: &[u32],
    quality: f32,
) -> Result<ProcessedImage, ImageError> {
    if !quality.is_finite() || !(0.0..=100.0).contains(&quality) {
        return Err(ImageError::Encode(format!("WebP quality must be within 0..=100, got {quality}")));
    }
    let decoded = decode(bytes, limits)?;
    let original_stripped = strip_metadata(bytes, decoded.format, decoded.orientation)?;
    let img = decoded.image;
    let phash = perceptual_hash(&img);
    let thumbnails = thumbnails(&img, sizes, quality)?;
    Ok(ProcessedImage { width: img.width(), height: img.height(), original_stripped, thumbnails, phash })
}

/// A 64-bit perceptual hash: pHash (8 x 8 low frequencies of a DCT, each bit "above the median").
///
/// It survives resizing, re-encoding and small brightness or contrast changes, which is what a
/// near-duplicate match for moderation needs; compare two hashes with [`hamming`] (about 10 or less for
/// the same picture, around 32 for unrelated ones).
///
/// The image is first reduced to fit [`HASH_INPUT_SIDE`] with fast_image_resize: pHash only looks at a
/// 32 x 32 reduction anyway, and letting image_hasher reduce a 12 Mpx photo itself took 214 ms, half of
/// the whole image stage (`examples/image_profile.rs`).
pub fn perceptual_hash(img: &DynamicImage) -> u64 {
    let hasher =
        HasherConfig::with_bytes_type::<[u8; 8]>().hash_size(8, 8).hash_alg(HashAlg::Median).preproc_dct().to_hasher();
    let (w, h) = (img.width(), img.height());
    let reduced = if w.max(h) > HASH_INPUT_SIDE {
        let rgb = as_rgb_or_rgba(img);
        let (tw, th) = fit(w, h, HASH_INPUT_SIDE);
        let mut dst = DynamicImage::new(tw, th, rgb.color());
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
        match Resizer::new().resize(rgb.as_ref(), &mut dst, &options) {
            Ok(()) => Cow::Owned(dst),
            // Cannot happen for 8-bit RGB(A); hashing the full image is merely slower.
            Err(_) => Cow::Borrowed(img),
        }
    } else {
        Cow::Borrowed(img)
    };
    u64::from_be_bytes(hasher.hash_image(reduced.as_ref()).into_inner())
}

/// The side the perceptual hash's input is reduced to first (far above pHash's own 32 x 32).
const HASH_INPUT_SIDE: u32 = 256;

/// The image as 8-bit RGB or RGBA (what the resizer and the WebP encoder take), converted only if needed.
fn as_rgb_or_rgba(img: &DynamicImage) -> Cow<'_, DynamicImage> {
    match img {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => Cow::Borrowed(img),
        other if other.color().has_alpha() => Cow::Owned(DynamicImage::ImageRgba8(other.to_rgba8())),
        other => Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    }
}

/// [`perceptual_hash`] of encoded bytes, decoded under `limits` with the orientation applied (so that a
/// rotated copy of a photo hashes like the photo as displayed).
pub fn perceptual_hash_of(bytes: &[u8], limits: &ImageLimits) -> Result<u64, ImageError> {
    Ok(perceptual_hash(&decode(bytes, limits)?.image))
}

/// Number of differing bits between two perceptual hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

struct Decoded {
    image: DynamicImage,
    format: ImageFormat,
    orientation: Orientation,
}

/// Header first, pixels second: the dimensions are checked against `limits` before a single pixel buffer
/// exists, and the decoder also gets `image::Limits` in case the header understates the work.
fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Undecodable(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => f,
        Some(other) => return Err(ImageError::Undecodable(format!("unsupported image format {other:?}"))),
        None => return Err(ImageError::Undecodable("unrecognised image format".into())),
    };
    let mut reader = reader;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(ImageError::from_decode)?;

    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    if decoder.total_bytes() > limits.max_alloc_bytes {
        return Err(ImageError::TooLarge(format!(
            "decoding needs {} bytes, limit {}",
            decoder.total_bytes(),
            limits.max_alloc_bytes
        )));
    }
    // A broken EXIF block must not cost the user their upload: display it unrotated.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(ImageError::from_decode)?;
    image.apply_orientation(orientation);
    Ok(Decoded { image, format, orientation })
}

fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Undecodable(format!("empty image ({width} x {height})")));
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(ImageError::TooLarge(format!(
            "{width} x {height} ({pixels} pixels) exceeds {} x {} ({} pixels)",
            limits.max_width, limits.max_height, limits.max_pixels
        )));
    }
    Ok(())
}

/// The box of size `n` that `(w, h)` fits in, aspect ratio kept, never larger than the original.
fn fit(w: u32, h: u32, n: u32) -> (u32, u32) {
    if w <= n && h <= n {
        return (w, h);
    }
    let scale = |a: u32, b: u32| -> u32 {
        // a * n / b rounded, in u64 so that 12,000 x 12,000 cannot overflow; at least one pixel.
        let v = (u64::from(a) * u64::from(n) + u64::from(b) / 2) / u64::from(b);
        u32::try_from(v).unwrap_or(n).clamp(1, n)
    };
    if w >= h { (n, scale(h, w)) } else { (scale(w, h), n) }
}

fn thumbnails(img: &DynamicImage, sizes: &[u32], quality: f32) -> Result<Vec<Thumbnail>, ImageError> {
    let mut sizes: Vec<u32> = sizes.iter().copied().filter(|&n| n > 0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let (w, h) = (img.width(), img.height());
    // Skipped: boxes the image already fits in, except the smallest (made at the original size).
    let wanted: Vec<u32> =
        sizes.iter().enumerate().filter(|&(i, &n)| i == 0 || w > n || h > n).map(|(_, &n)| n).collect();

    // The WebP encoder takes 8-bit RGB(A) only; converted once (and not at all when it already is).
    let src = as_rgb_or_rgba(img);
    let mut resizer = Resizer::new();
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));

    // Largest first, each made from the one before: only the largest reads the full image, which cut the
    // thumbnails of a 12 Mpx photo from 143 ms to about a third.
    let mut out = Vec::with_capacity(wanted.len());
    let mut previous: Option<DynamicImage> = None;
    for &n in wanted.iter().rev() {
        let (tw, th) = fit(w, h, n);
        let webp = if (tw, th) == (w, h) {
            encode_webp(&src, quality)?
        } else {
            let from = previous.as_ref().unwrap_or(src.as_ref());
            let mut dst = DynamicImage::new(tw, th, src.color());
            resizer.resize(from, &mut dst, &options).map_err(|e| ImageError::Encode(format!("resize: {e}")))?;
            let webp = encode_webp(&dst, quality)?;
            previous = Some(dst);
            webp
        };
        out.push(Thumbnail { size: n, width: tw, height: th, webp });
    }
    out.reverse();
    Ok(out)
}

fn encode_webp(img: &DynamicImage, quality: f32) -> Result<Vec<u8>, ImageError> {
    let encoder = match img {
        DynamicImage::ImageRgb8(buf) => webp::Encoder::from_rgb(buf.as_raw(), buf.width(), buf.height()),
        DynamicImage::ImageRgba8(buf) => webp::Encoder::from_rgba(buf.as_raw(), buf.width(), buf.height()),
        other => return Err(ImageError::Encode(format!("unexpected pixel layout {:?}", other.color()))),
    };
    let memory = encoder.encode_simple(false, quality).map_err(|e| ImageError::Encode(format!("WebP: {e:?}")))?;
    Ok(memory.to_vec())
}

/// The EXIF we keep: only the orientation tag, so that the stripped original still displays upright.
/// Big-endian TIFF header, one IFD with one SHORT entry, no next IFD.
fn orientation_exif(orientation: Orientation) -> Option<Bytes> {
    if orientation == Orientation::NoTransforms {
        return None;
    }
    let mut tiff = Vec::with_capacity(26);
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // byte order, magic, offset of IFD0
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&[0, orientation.to_exif(), 0, 0]); // value, left-justified
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    Some(Bytes::from(tiff))
}

/// Removes metadata from the container without touching the compressed pixels (so no quality loss).
///
/// Removed: EXIF (GPS position, camera serial, timestamps), XMP, IPTC, comments, PNG text and time
/// chunks. Kept: ICC profiles, JFIF, Adobe (APP14, needed to decode CMYK JPEGs right), multi-picture
/// (APP2 MPF) data, and the orientation (see [`orientation_exif`]). GIF carries no EXIF and is left as is.
/// A file the decoder accepted but whose container we cannot parse is refused rather than served with
/// its metadata.
fn strip_metadata(bytes: &[u8], format: ImageFormat, orientation: Orientation) -> Result<Option<Vec<u8>>, ImageError> {
    let keep_exif = orientation_exif(orientation);
    let unparsable = |e: img_parts::Error| ImageError::Undecodable(format!("cannot parse the container: {e}"));
    let data = Bytes::copy_from_slice(bytes);
    match format {
        ImageFormat::Jpeg => {
            let mut jpeg = Jpeg::from_bytes(data).map_err(unparsable)?;
            let before = jpeg.segments().len();
            let is_exif =
                |s: &img_parts::jpeg::JpegSegment| s.marker() == markers::APP1 && s.contents().starts_with(b"Exif\0\0");
            let exif_count = jpeg.segments().iter().filter(|s| is_exif(s)).count();
            // APP1 (non-EXIF: XMP), APP3..APP13 and APP15 (vendor metadata, IPTC), COM.
            jpeg.segments_mut().retain(|s| {
                let m = s.marker();
                let metadata = (m == markers::APP1 && !is_exif(s))
                    || (markers::APP3..=markers::APP13).contains(&m)
                    || m == markers::APP15
                    || m == markers::COM;
                !metadata
            });
            let mut changed = jpeg.segments().len() != before;
            if exif_count != usize::from(keep_exif.is_some()) || jpeg.exif() != keep_exif {
                jpeg.set_exif(keep_exif);
                changed = true;
            }
            Ok(changed.then(|| jpeg.encoder().bytes().to_vec()))
        }
        ImageFormat::Png => {
            let mut png = Png::from_bytes(data).map_err(unparsable)?;
            let before = png.chunks().len();
            let exif_count = png.chunks_by_type(*b"eXIf").count();
            png.chunks_mut().retain(|c| !matches!(&c.kind(), b"tEXt" | b"zTXt" | b"iTXt" | b"tIME"));
            let mut changed = png.chunks().len() != before;
            if exif_count != usize::from(keep_exif.is_some()) || png.exif() != keep_exif {
                png.set_exif(keep_exif);
                changed = true;
            }
            Ok(changed.then(|| png.encoder().bytes().to_vec()))
        }
        ImageFormat::WebP => {
            let mut webp = WebP::from_bytes(data).map_err(unparsable)?;
            let had_xmp = webp.has_chunk(img_parts::webp::CHUNK_XMP);
            let exif_count = webp.chunks_by_id(img_parts::webp::CHUNK_EXIF).count();
            if !had_xmp && exif_count == usize::from(keep_exif.is_some()) && webp.exif() == keep_exif {
                return Ok(None);
            }
            webp.remove_chunks_by_id(img_parts::webp::CHUNK_XMP);
            // set_exif also recomputes the VP8X flags (or drops VP8X when nothing extended is left)...
            webp.set_exif(keep_exif);
            // ...but leaves the XMP flag alone: clear it, readers would look for a chunk that is gone.
            for chunk in webp.chunks_mut().iter_mut().filter(|c| c.id() == img_parts::webp::CHUNK_VP8X) {
                if let RiffContent::Data(d) = chunk.content_mut()
                    && let Some(&flags) = d.first()
                {
                    let mut v = d.to_vec();
                    v[0] = flags & !0b0000_0100;
                    *d = Bytes::from(v);
                }
            }
            Ok(Some(webp.encoder().bytes().to_vec()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::{ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

    const SIZES: [u32; 3] = [64, 256, 1024];

    /// A deterministic "photo": smooth gradients plus a few shapes, with structure at several scales.
    fn scene(w: u32, h: u32, variant: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let mut p = match variant {
                0 => [(255.0 * fx) as u8, (255.0 * fy) as u8, 128],
                _ => [(255.0 * (1.0 - fy)) as u8, 60, (255.0 * fx * fy) as u8],
            };
            let disc = match variant {
                0 => ((fx - 0.3).powi(2) + (fy - 0.4).powi(2)) < 0.04,
                _ => ((fx - 0.75).powi(2) + (fy - 0.7).powi(2)) < 0.02,
            };
            let bar = match variant {
                0 => fx > 0.6 && fx < 0.8 && fy > 0.1 && fy < 0.9,
                _ => fy > 0.15 && fy < 0.3,
            };
            if disc {
                p = [240, 240, 30];
            }
            if bar {
                p = [20, 20, 200];
            }
            Rgb(p)
        })
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode test image");
        out.into_inner()
    }

    fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .expect("encode jpeg");
        out
    }

    /// A TIFF blob with the orientation and an Artist tag, standing in for a camera's EXIF.
    fn camera_exif(orientation: u8) -> Bytes {
        let mut t = b"MM\x00\x2a\x00\x00\x00\x08\x00\x02".to_vec();
        t.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0]);
        t.extend_from_slice(&[0x01, 0x3B, 0, 2, 0, 0, 0, 4, b'B', b'o', b'b', 0]);
        t.extend_from_slice(&[0, 0, 0, 0]);
        Bytes::from(t)
    }

    #[test]
    fn thumbnails_fit_and_never_upscale() {
        let img = DynamicImage::ImageRgb8(scene(800, 600, 0));
        let p =
            process_image(&encode(&img, ImageFormat::Png), &ImageLimits::default(), &SIZES, 80.0).expect("process png");
        assert_eq!((p.width, p.height), (800, 600));
        assert_eq!(p.original_stripped, None, "a fresh PNG carries no metadata");
        let got: Vec<_> = p.thumbnails.iter().map(|t| (t.size, t.width, t.height)).collect();
        assert_eq!(got, vec![(64, 64, 48), (256, 256, 192)], "1024 would be an upscale");
        for t in &p.thumbnails {
            let back = image::load_from_memory_with_format(&t.webp, ImageFormat::WebP).expect("thumbnail decodes");
            assert_eq!((back.width(), back.height()), (t.width, t.height));
        }
    }

    #[test]
    fn small_image_gets_its_smallest_thumbnail_at_original_size() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 30, |x, y| Rgba([x as u8 * 6, y as u8 * 8, 0, 200])));
        let p = process_image(&encode(&img, ImageFormat::Png), &ImageLimits::default(), &SIZES, 80.0)
            .expect("process small png");
        let got: Vec<_> = p.thumbnails.iter().map(|t| (t.size, t.width, t.height)).collect();
        assert_eq!(got, vec![(64, 40, 30)]);
        let back = image::load_from_memory(&p.thumbnails[0].webp).expect("decode");
        assert!(back.color().has_alpha(), "alpha survives into the WebP");
    }

    #[test]
    fn gif_first_frame_and_webp_decode() {
        let img = DynamicImage::ImageRgb8(scene(300, 200, 1));
        let gif = encode(&DynamicImage::ImageRgba8(img.to_rgba8()), ImageFormat::Gif);
        let p = process_image(&gif, &ImageLimits::default(), &SIZES, 80.0).expect("process gif");
        assert_eq!((p.width, p.height, p.thumbnails.len()), (300, 200, 2));

        let webp = process_image(&p.thumbnails[1].webp, &ImageLimits::default(), &[64], 80.0).expect("process webp");
        assert_eq!((webp.width, webp.height), (256, 171));
        assert_eq!(webp.original_stripped, None);
    }

    #[test]
    fn jpeg_exif_orientation_applied_and_metadata_stripped() {
        let raw = jpeg(&scene(200, 100, 0), 90);
        let mut j = Jpeg::from_bytes(Bytes::from(raw)).expect("parse jpeg");
        j.set_exif(Some(camera_exif(6))); // 6 = rotate 90 degrees clockwise to display
        let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS here</x:xmpmeta>".to_vec();
        j.segments_mut().insert(2, img_parts::jpeg::JpegSegment::new_with_contents(markers::APP1, xmp.into()));
        j.segments_mut()
            .insert(2, img_parts::jpeg::JpegSegment::new_with_contents(markers::COM, Bytes::from_static(b"secret")));
        let file = j.encoder().bytes().to_vec();

        let p = process_image(&file, &ImageLimits::default(), &SIZES, 80.0).expect("process jpeg");
        assert_eq!((p.width, p.height), (100, 200), "rotated by the orientation");
        assert_eq!((p.thumbnails[0].width, p.thumbnails[0].height), (32, 64));

        let stripped = p.original_stripped.expect("metadata was removed");
        assert!(stripped.len() < file.len());
        let sj = Jpeg::from_bytes(Bytes::from(stripped.clone())).expect("stripped parses");
        assert_eq!(sj.exif(), orientation_exif(Orientation::Rotate90), "only the orientation is left");
        assert!(sj.segments().iter().all(|s| s.marker() != markers::COM));
        assert!(!stripped.windows(3).any(|w| w == b"GPS" || w == b"Bob"));
        // Stripping is idempotent, and the stripped file displays the same way.
        let again = process_image(&stripped, &ImageLimits::default(), &[64], 80.0).expect("reprocess");
        assert_eq!((again.width, again.height, again.original_stripped), (100, 200, None));
        assert_eq!(again.phash, p.phash);
    }

    #[test]
    fn png_and_webp_metadata_stripped() {
        let img = DynamicImage::ImageRgb8(scene(120, 80, 1));
        let mut png = Png::from_bytes(Bytes::from(encode(&img, ImageFormat::Png))).expect("parse png");
        png.chunks_mut().insert(1, img_parts::png::PngChunk::new(*b"tEXt", Bytes::from_static(b"Author\0Bob")));
        png.set_exif(Some(camera_exif(1)));
        let file = png.encoder().bytes().to_vec();
        let p = process_image(&file, &ImageLimits::default(), &[64], 80.0).expect("process png");
        let stripped = p.original_stripped.expect("png stripped");
        let sp = Png::from_bytes(Bytes::from(stripped.clone())).expect("parse stripped png");
        assert!(sp.chunk_by_type(*b"tEXt").is_none() && sp.exif().is_none());
        assert_eq!(image::load_from_memory(&stripped).expect("decodes").to_rgb8(), img.to_rgb8(), "lossless");

        let lossy = webp::Encoder::from_rgb(img.as_bytes(), 120, 80).encode(80.0).to_vec();
        let mut w = WebP::from_bytes(Bytes::from(lossy)).expect("parse webp");
        w.set_exif(Some(camera_exif(3)));
        let file = w.encoder().bytes().to_vec();
        let p = process_image(&file, &ImageLimits::default(), &[64], 80.0).expect("process webp");
        let stripped = p.original_stripped.expect("webp stripped");
        let sw = WebP::from_bytes(Bytes::from(stripped.clone())).expect("parse stripped webp");
        assert_eq!(sw.exif(), orientation_exif(Orientation::Rotate180));
        let back = image::load_from_memory(&stripped).expect("stripped webp decodes");
        assert_eq!((back.width(), back.height()), (120, 80));
    }

    #[test]
    fn header_dimensions_checked_before_decoding() {
        // A real JPEG whose frame header claims 60,000 x 60,000: a bomb if we trusted it.
        let mut file = jpeg(&scene(64, 64, 0), 80);
        let sof = file.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
        file[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        assert!(matches!(process_image(&file, &ImageLimits::default(), &SIZES, 80.0), Err(ImageError::TooLarge(_))));

        let wide = DynamicImage::ImageLuma8(image::GrayImage::new(20_000, 1));
        let err = perceptual_hash_of(&encode(&wide, ImageFormat::Png), &ImageLimits::default());
        assert!(matches!(err, Err(ImageError::TooLarge(_))), "{err:?}");

        let small = ImageLimits { max_pixels: 5_000, ..ImageLimits::default() };
        let img = encode(&DynamicImage::ImageRgb8(scene(100, 100, 0)), ImageFormat::Png);
        assert!(matches!(process_image(&img, &small, &SIZES, 80.0), Err(ImageError::TooLarge(_))));

        let tight_alloc = ImageLimits { max_alloc_bytes: 1_000, ..ImageLimits::default() };
        assert!(matches!(process_image(&img, &tight_alloc, &SIZES, 80.0), Err(ImageError::TooLarge(_))));
    }

    #[test]
    fn garbage_and_truncated_inputs_error_without_panicking() {
        let img = DynamicImage::ImageRgb8(scene(48, 32, 0));
        let samples = [
            jpeg(&img.to_rgb8(), 75),
            encode(&img, ImageFormat::Png),
            encode(&DynamicImage::ImageRgba8(img.to_rgba8()), ImageFormat::Gif),
            webp::Encoder::from_rgb(img.as_bytes(), 48, 32).encode(75.0).to_vec(),
        ];
        let limits = ImageLimits::default();
        for sample in &samples {
            for len in (0..sample.len()).step_by(7) {
                let _ = process_image(&sample[..len], &limits, &SIZES, 80.0);
            }
            // Deterministic bit flips all over the file (xorshift, no randomness crate needed).
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            for _ in 0..300 {
                let mut bad = sample.clone();
                for _ in 0..4 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = (state % bad.len() as u64) as usize;
                    bad[i] ^= 1 << (state >> 61);
                }
                let _ = process_image(&bad, &limits, &SIZES, 80.0);
            }
        }
        for garbage in [&b""[..], b"\x89PNG\r\n\x1a\n", b"\xFF\xD8\xFF", b"GIF89a", b"RIFF\0\0\0\0WEBP", b"hello"] {
            assert!(process_image(garbage, &limits, &SIZES, 80.0).is_err());
        }
        assert!(matches!(process_image(&samples[1], &limits, &SIZES, f32::NAN), Err(ImageError::Encode(_))));
    }

    #[test]
    fn perceptual_hash_matches_near_duplicates_only() {
        let original = scene(640, 480, 0);
        let h = perceptual_hash_of(&jpeg(&original, 90), &ImageLimits::default()).expect("hash original");

        // Near duplicate: 80 % size, brighter by 10, re-encoded as a poor JPEG.
        let smaller = DynamicImage::ImageRgb8(original.clone()).resize_exact(512, 384, image::imageops::Triangle);
        let brighter = smaller.brighten(10).to_rgb8();
        let dup = perceptual_hash_of(&jpeg(&brighter, 60), &ImageLimits::default()).expect("hash duplicate");
        assert!(hamming(h, dup) <= 10, "near duplicate at distance {}", hamming(h, dup));

        let other = perceptual_hash(&DynamicImage::ImageRgb8(scene(640, 480, 1)));
        assert!(hamming(h, other) > 20, "unrelated image at distance {}", hamming(h, other));
        assert_eq!(hamming(h, h), 0);
    }
}
