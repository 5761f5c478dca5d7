//! The web client: the static files under `web/` in the repository, embedded in the binary at compile time
//! (no build step: plain HTML, CSS and ES modules). `GET /` serves the page, `GET /app/{file}` its assets.
//! `docs/web-client.md` describes the client and `web/herald-client.js`, its protocol module.
//!
//! Every answer carries its `Content-Type`, `Cache-Control: no-cache` with a strong `ETag` (the files have no
//! content hash in their names, so browsers revalidate them and get a 304 while they are unchanged), and
//! `X-Content-Type-Options: nosniff`. The page also carries a Content-Security-Policy that allows only this
//! origin. An unknown file is the API's usual JSON 404.

use crate::error::ApiError;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald_proto::ErrorCode;
use std::sync::LazyLock;

/// One embedded file.
struct Asset {
    /// The name under `/app/` (the page itself is served at `/`).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $name)),
        }
    };
}

const INDEX: usize = 0;

/// The files of the client. A file added under `web/` is served only once it is listed here. `app.js` is the entry
/// module of the interface; the modules after it are the ones it imports (docs/web-client.md).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("admin-dialog.js", "text/javascript; charset=utf-8"),
    asset!("export-data.js", "text/javascript; charset=utf-8"),
    asset!("attachments.js", "text/javascript; charset=utf-8"),
    asset!("composer.js", "text/javascript; charset=utf-8"),
    asset!("connection.js", "text/javascript; charset=utf-8"),
    asset!("conversation-list.js", "text/javascript; charset=utf-8"),
    asset!("conversation-view.js", "text/javascript; charset=utf-8"),
    asset!("conversations.js", "text/javascript; charset=utf-8"),
    asset!("dialogs.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("format.js", "text/javascript; charset=utf-8"),
    asset!("labels.js", "text/javascript; charset=utf-8"),
    asset!("members-dialog.js", "text/javascript; charset=utf-8"),
    asset!("message-actions.js", "text/javascript; charset=utf-8"),
    asset!("message-list.js", "text/javascript; charset=utf-8"),
    asset!("message-parts.js", "text/javascript; charset=utf-8"),
    asset!("presence.js", "text/javascript; charset=utf-8"),
    asset!("session.js", "text/javascript; charset=utf-8"),
    asset!("state.js", "text/javascript; charset=utf-8"),
    asset!("threads.js", "text/javascript; charset=utf-8"),
    asset!("search.js", "text/javascript; charset=utf-8"),
    asset!("typing.js", "text/javascript; charset=utf-8"),
    asset!("uploads.js", "text/javascript; charset=utf-8"),
    asset!("herald-client.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// Strong ETags, one per asset, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(a.body))).expect("hex is a valid header value"))
        .collect()
});

/// The page may load and connect to its own origin only: no CDN, no external font, no inline script.
/// (`connect-src 'self'` covers the same-origin `ws:`/`wss:` URL of the gateway; `media-src 'self'` the
/// signed `/media/...` URLs of attached videos and audio.)
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /` and `GET /app/{file}`. The state type is left open so the routes merge into any router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/app/{*file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    respond(INDEX, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    // `index.html` is the page, served at `/` only: one URL per document keeps relative paths simple.
    match ASSETS.iter().position(|a| a.name == file).filter(|&i| i != INDEX) {
        Some(i) => respond(i, &headers),
        None => ApiError::new(ErrorCode::NotFound, "no such file").into_response(),
    }
}

fn respond(i: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = ETAGS[i].clone();
    let unchanged = revalidates(request, &etag);
    let mut response = if unchanged { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = response.headers_mut();
    if !unchanged {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, etag);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if i == INDEX {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

/// Whether the request's `If-None-Match` names `etag` (or `*`): the browser's copy is current.
fn revalidates(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|tag| tag.trim_ascii())
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag)
}

/// FNV-1a, 64 bits: a content fingerprint for the ETag (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[tokio::test]
    async fn page_and_assets_have_their_type_and_cache_headers() {
        let page = index(HeaderMap::new()).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(header(&page, header::CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&page, header::CACHE_CONTROL), "no-cache");
        assert!(header(&page, header::CONTENT_SECURITY_POLICY).contains("default-src 'none'"));
        // Every file of web/ (but the page, served at /), so a file added there and not listed in ASSETS fails here.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("web/")
            .map(|e| e.expect("an entry of web/"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().into_string().expect("a UTF-8 name"))
            .filter(|name| name != "index.html")
            .collect();
        files.sort();
        assert!(files.len() > 4, "web/ holds the modules, the style sheet and the icon: {files:?}");
        for file in &files {
            let content_type = match file.rsplit('.').next() {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                _ => panic!("{file}: a file of a type the client does not serve"),
            };
            let r = asset(Path(file.to_owned()), HeaderMap::new()).await;
            assert_eq!(r.status(), StatusCode::OK, "{file}");
            assert_eq!(header(&r, header::CONTENT_TYPE), content_type, "{file}");
            assert!(header(&r, header::ETAG).starts_with('"'), "{file}");
        }
    }

    #[tokio::test]
    async fn a_matching_etag_answers_304_and_unknown_files_404() {
        let first = asset(Path("app.js".to_owned()), HeaderMap::new()).await;
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, first.headers()[header::ETAG].clone());
        let again = asset(Path("app.js".to_owned()), headers).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), header(&first, header::ETAG));
        for missing in ["nope.js", "index.html", "../Cargo.toml"] {
            let r = asset(Path(missing.to_owned()), HeaderMap::new()).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(header(&r, header::CONTENT_TYPE), "application/json", "{missing}");
        }
    }
}
