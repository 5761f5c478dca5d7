//! The real content type of an upload, decided from its first bytes.
//!
//! The client's `Content-Type` and file name are only hints: a "photo.jpg" may be an HTML page that a
//! browser would happily render from our origin. Everything downstream (which pipeline runs, which
//! `Content-Type` we serve) keys off [`sniff`], never off what the client claimed.

use serde::{Deserialize, Serialize};

/// How many leading bytes callers should pass to [`sniff`]: every magic number `infer` knows fits well
/// inside it, and it is enough UTF-8 to tell text from binary with some confidence.
pub const SNIFF_LEN: usize = 8 * 1024;

/// The broad family of a media type: it picks the processing pipeline and how clients render it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Still (or animated) pictures: thumbnails, perceptual hash, moderation.
    Image,
    /// Moving pictures: renditions and a poster frame.
    Video,
    /// Sound only: stored and served as is.
    Audio,
    /// Text, PDF, office and e-book formats: stored and served as attachments.
    Document,
    /// Anything else (archives, executables, fonts, unknown binary): served only as a download.
    Other,
}

/// What [`sniff`] recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sniffed {
    /// The MIME type we will serve the blob with, e.g. `image/png`.
    pub mime: &'static str,
    /// The family that decides the pipeline.
    pub kind: MediaKind,
    /// The canonical file extension without the dot, e.g. `png`, for download names.
    pub extension: &'static str,
}

/// Identifies content from its first bytes (pass up to [`SNIFF_LEN`]; fewer is fine for short files).
///
/// Magic numbers win; only when none matches is the head considered text: valid UTF-8 without NUL bytes
/// is `text/plain`. A head cut in the middle of a multi-byte character still counts as text, because
/// callers truncate at an arbitrary byte. Returns `None` for an empty head and for unrecognised binary.
pub fn sniff(head: &[u8]) -> Option<Sniffed> {
    if head.is_empty() {
        return None;
    }
    if let Some(t) = infer::get(head) {
        return Some(Sniffed { mime: t.mime_type(), kind: kind_of(&t), extension: t.extension() });
    }
    if looks_like_text(head) {
        return Some(Sniffed { mime: "text/plain", kind: MediaKind::Document, extension: "txt" });
    }
    None
}

/// Maps `infer`'s families to ours. PDF and RTF are filed by `infer` under archives, but people share
/// them as documents.
fn kind_of(t: &infer::Type) -> MediaKind {
    use infer::MatcherType as M;
    match t.matcher_type() {
        M::Image => MediaKind::Image,
        M::Video => MediaKind::Video,
        M::Audio => MediaKind::Audio,
        M::Doc | M::Book | M::Text => MediaKind::Document,
        M::Archive if matches!(t.mime_type(), "application/pdf" | "application/rtf") => MediaKind::Document,
        M::App | M::Archive | M::Font | M::Custom => MediaKind::Other,
    }
}

/// Valid UTF-8 with no NUL, tolerating a character cut by the caller's truncation (at most 3 bytes).
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // `error_len() == None` means "unexpected end of input": only the tail is incomplete.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_by_magic() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let s = sniff(png).expect("png sniffed");
        assert_eq!((s.mime, s.kind, s.extension), ("image/png", MediaKind::Image, "png"));

        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
        assert_eq!(sniff(&jpeg).expect("jpeg sniffed").mime, "image/jpeg");

        let gif = b"GIF89a\x01\x00\x01\x00";
        assert_eq!(sniff(gif).expect("gif sniffed").kind, MediaKind::Image);

        let webp = b"RIFF\x24\0\0\0WEBPVP8 ";
        assert_eq!(sniff(webp).expect("webp sniffed").mime, "image/webp");
    }

    #[test]
    fn video_audio_documents() {
        let mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
        let s = sniff(mp4).expect("mp4 sniffed");
        assert_eq!((s.kind, s.extension), (MediaKind::Video, "mp4"));

        let ogg_flac = b"fLaC\0\0\0\x22";
        assert_eq!(sniff(ogg_flac).expect("flac sniffed").kind, MediaKind::Audio);

        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
        let s = sniff(pdf).expect("pdf sniffed");
        assert_eq!((s.mime, s.kind), ("application/pdf", MediaKind::Document));

        let zip = b"PK\x03\x04\x14\0\0\0\x08\0";
        assert_eq!(sniff(zip).expect("zip sniffed").kind, MediaKind::Other);

        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0); // infer wants a whole ELF header
        assert_eq!(sniff(&elf).expect("elf sniffed").kind, MediaKind::Other);
    }

    #[test]
    fn html_is_a_document_not_plain_text() {
        let s = sniff(b"<!DOCTYPE html><html><body>hi</body></html>").expect("html sniffed");
        assert_eq!((s.mime, s.kind), ("text/html", MediaKind::Document));
    }

    #[test]
    fn plain_text_only_as_a_fallback() {
        let s = sniff("hello, wörld\nsecond line".as_bytes()).expect("text sniffed");
        assert_eq!((s.mime, s.kind, s.extension), ("text/plain", MediaKind::Document, "txt"));

        // A multi-byte character cut by the caller's truncation is still text.
        let cut = &"naïve €".as_bytes()[..9];
        assert!(std::str::from_utf8(cut).is_err());
        assert_eq!(sniff(cut).expect("truncated text sniffed").mime, "text/plain");
    }

    #[test]
    fn binary_and_empty_are_unknown() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"abc\0def"), None);
        assert_eq!(sniff(&[0xC3, 0x28, 0x41, 0x42]), None, "invalid UTF-8 in the middle");
        assert_eq!(sniff(&[0x13, 0x37, 0xFF, 0x80, 0x99, 0x88]), None);
    }

    #[test]
    fn media_kind_serialises_snake_case() {
        let json = serde_json::to_string(&MediaKind::Document).expect("serialise");
        assert_eq!(json, "\"document\"");
        let back: MediaKind = serde_json::from_str("\"video\"").expect("deserialise");
        assert_eq!(back, MediaKind::Video);
    }
}
