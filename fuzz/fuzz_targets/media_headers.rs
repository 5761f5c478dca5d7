//! The headers of a media download or a resumable upload: `Range` against a file of any size (with `If-Range`),
//! `If-None-Match` and `Upload-Offset`. Input: the file's size (8 bytes), then the four values, one per line.
//! A range served must be non-empty and end within the file.
#![no_main]
use axum::http::{HeaderMap, HeaderValue, header};
use herald_api::media_headers::{UPLOAD_OFFSET, not_modified, requested_range, upload_offset};
use libfuzzer_sys::fuzz_target;

const ETAG: &str = "\"3f2a\"";

fuzz_target!(|data: &[u8]| {
    let Some((size, rest)) = data.split_first_chunk::<8>() else { return };
    let total = u64::from_le_bytes(*size);
    let mut headers = HeaderMap::new();
    let names = [header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH, header::HeaderName::from_static(UPLOAD_OFFSET)];
    for (name, value) in names.into_iter().zip(rest.split(|&b| b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    if let Ok(Some(range)) = requested_range(&headers, ETAG, total) {
        assert!(range.start < range.end && range.end <= total, "{range:?} of {total} bytes");
    }
    let _ = not_modified(&headers, ETAG);
    let _ = upload_offset(&headers);
});
