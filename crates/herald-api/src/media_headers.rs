//! The request headers of media transfers, read: `Range` with `If-Range`, and `If-None-Match`, on downloads;
//! `Upload-Offset` on resumable uploads. Whatever a client sends, each gives an answer and none panics (the
//! fuzz target `media_headers` holds them to that, and to ranges inside the file).

use axum::http::{HeaderMap, header};
use std::ops::Range;

/// The offset header of resumable uploads (tus's name, so tus-style clients feel at home).
pub const UPLOAD_OFFSET: &str = "upload-offset";
pub const UPLOAD_LENGTH: &str = "upload-length";

/// A `Range` that no byte of the file satisfies: answered with 416 and `Content-Range: bytes */total`.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// The byte offset an upload request starts at, if the header holds one.
pub fn upload_offset(headers: &HeaderMap) -> Option<u64> {
    headers.get(UPLOAD_OFFSET).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
}

/// `If-None-Match` naming this ETag (or `*`).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// The one range of a file of `total` bytes to serve: `Ok(None)` for the whole (no Range, a malformed one or
/// several ranges, which HTTP lets a server ignore, or an `If-Range` for other bytes). A range served is never
/// empty and ends within the file.
pub fn requested_range(headers: &HeaderMap, etag: &str, total: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Ok(None);
    }
    if value.contains(',') {
        return Ok(None);
    }
    let Ok(parsed) = http_range_header::parse_range_header(value) else { return Ok(None) };
    if total == 0 {
        // No byte of an empty file can be named (the parser would grant `bytes=0-0` one); a suffix range is
        // satisfied by the whole, empty, file (RFC 9110, 14.1.1).
        let suffix = value.trim_start().trim_start_matches("bytes=").trim_start().starts_with('-');
        return if suffix { Ok(None) } else { Err(Unsatisfiable) };
    }
    match parsed.validate(total) {
        Ok(ranges) => match ranges.first().map(|r| *r.start()..*r.end() + 1) {
            Some(range) if range.start >= range.end || range.end > total => Err(Unsatisfiable),
            range => Ok(range),
        },
        Err(_) => Err(Unsatisfiable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn ranges_are_read_within_the_file_or_refused() {
        let range = |value| requested_range(&headers(&[("range", value)]), "\"e\"", 100);
        assert_eq!(range("bytes=0-9"), Ok(Some(0..10)));
        assert_eq!(range("bytes=90-"), Ok(Some(90..100)));
        assert_eq!(range("bytes=-5"), Ok(Some(95..100)));
        assert_eq!(range("bytes=50-500"), Ok(Some(50..100)), "an end past the file is cut to it");
        assert_eq!(range("bytes=100-"), Err(Unsatisfiable));
        assert_eq!(range("bytes=0-1,5-6"), Ok(None), "several ranges: the whole file");
        assert_eq!(range("pages=1-2"), Ok(None), "a malformed range: the whole file");
        assert_eq!(requested_range(&HeaderMap::new(), "\"e\"", 100), Ok(None));
    }

    #[test]
    fn no_byte_of_an_empty_file_is_served() {
        // Found by the fuzz target media_headers: the parser granted `bytes=0-0` of an empty file as 0..1.
        let range = |value| requested_range(&headers(&[("range", value)]), "\"e\"", 0);
        assert_eq!(range("bytes=0-0"), Err(Unsatisfiable));
        assert_eq!(range("bytes=0-"), Err(Unsatisfiable));
        assert_eq!(range("bytes=-5"), Ok(None), "a suffix: the whole, empty, file");
        assert_eq!(range("bytes=x"), Ok(None), "malformed: the whole file");
    }

    #[test]
    fn if_range_for_other_bytes_serves_the_whole_file() {
        let h = headers(&[("range", "bytes=0-9"), ("if-range", "\"old\"")]);
        assert_eq!(requested_range(&h, "\"e\"", 100), Ok(None));
        let h = headers(&[("range", "bytes=0-9"), ("if-range", "\"e\"")]);
        assert_eq!(requested_range(&h, "\"e\"", 100), Ok(Some(0..10)));
    }

    #[test]
    fn if_none_match_and_upload_offset() {
        assert!(not_modified(&headers(&[("if-none-match", "\"a\", W/\"e\"")]), "\"e\""));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), "\"e\""));
        assert!(!not_modified(&headers(&[("if-none-match", "\"a\"")]), "\"e\""));
        assert_eq!(upload_offset(&headers(&[("upload-offset", " 42 ")])), Some(42));
        assert_eq!(upload_offset(&headers(&[("upload-offset", "-1")])), None);
        assert_eq!(upload_offset(&HeaderMap::new()), None);
    }
}
