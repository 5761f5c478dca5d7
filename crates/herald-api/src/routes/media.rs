//! Uploads (resumable, in the style of tus: create with the size, then `PATCH` the bytes at an offset),
//! media info with signed URLs, the signed URLs themselves (ETag, Range, immutable caching: what a CDN
//! needs), and the admin endpoints (takedown, blocklist, sweep).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json, Path, Query};
use crate::media_headers::{UPLOAD_LENGTH, UPLOAD_OFFSET, Unsatisfiable, not_modified, requested_range, upload_offset};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use herald_core::CoreError;
use herald_core::auth::Principal;
use herald_media::Servable;
use herald_proto::{
    BlockImage, BlockedImage, CreateUpload, ErrorCode, MediaId, MediaInfo, MediaUsage, SignedUrlQuery, Takedown,
    TakedownResult,
};

/// `POST /api/v1/uploads`: 201 with the upload, `Location` and `Upload-Offset: 0`.
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "media",
    request_body = CreateUpload,
    responses((status = 201, description = "the upload, with Location and Upload-Offset: 0", body = MediaInfo))
)]
pub async fn create(State(s): State<AppState>, Auth(p): Auth, Json(body): Json<CreateUpload>) -> ApiResult<Response> {
    // An upload costs far more than a message: it takes from the same per-user budget.
    s.services.messaging.rate_limiter().check(p.user)?;
    let info = s.media.create_upload(p, body).await?;
    let mut response = (StatusCode::CREATED, Json(&info)).into_response();
    let headers = response.headers_mut();
    insert(headers, header::LOCATION.as_str(), &format!("/api/v1/uploads/{}", info.id));
    upload_headers(headers, &info);
    Ok(response)
}

/// `PATCH /api/v1/uploads/{id}` with `Upload-Offset: N`: appends the body at N. The answer's
/// `Upload-Offset` is where the next request starts; a dropped request keeps what arrived.
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    tag = "media",
    params(("id" = MediaId, Path, description = "the upload"), ("Upload-Offset" = u64, Header, description = "the bytes received so far")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the next bytes"),
    responses((status = 200, description = "Upload-Offset says where the next request starts", body = MediaInfo))
)]
pub async fn append(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<MediaId>,
    request: Request,
) -> ApiResult<Response> {
    let offset = upload_offset(request.headers())
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "Upload-Offset header (a byte offset) is required"))?;
    let body = request.into_body().into_data_stream();
    let info = s.media.append(p, id, offset, body).await?;
    let mut response = Json(&info).into_response();
    upload_headers(response.headers_mut(), &info);
    Ok(response)
}

/// `GET /api/v1/uploads/{id}` and `GET /api/v1/media/{id}` (and `HEAD`): the upload as the caller may see
/// it, with signed URLs once ready; `Upload-Offset` says where a resumed upload continues.
#[utoipa::path(
    get,
    path = "/api/v1/uploads/{id}",
    tag = "media",
    params(("id" = MediaId, Path, description = "the upload")),
    responses((status = 200, description = "done", body = MediaInfo))
)]
pub async fn info(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<MediaId>) -> ApiResult<Response> {
    let info = s.media.info(p, id).await?;
    let mut response = Json(&info).into_response();
    upload_headers(response.headers_mut(), &info);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/media/{id}` (and `HEAD`): the same as `GET /api/v1/uploads/{id}`, under the name a message's
/// attachment is looked up by.
#[utoipa::path(
    get,
    path = "/api/v1/media/{id}",
    tag = "media",
    params(("id" = MediaId, Path, description = "the upload")),
    responses((status = 200, description = "done", body = MediaInfo))
)]
pub async fn media_info(s: State<AppState>, p: Auth, id: Path<MediaId>) -> ApiResult<Response> {
    info(s, p, id).await
}

/// `DELETE /api/v1/uploads/{id}`: the owner removes an upload no message attaches (frees its quota).
#[utoipa::path(
    delete,
    path = "/api/v1/uploads/{id}",
    tag = "media",
    params(("id" = MediaId, Path, description = "the upload")),
    responses((status = 204, description = "done"))
)]
pub async fn delete(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<MediaId>) -> ApiResult<StatusCode> {
    s.media.delete(p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/media/usage`.
#[utoipa::path(
    get,
    path = "/api/v1/media/usage",
    tag = "media",
    responses((status = 200, description = "done", body = MediaUsage))
)]
pub async fn usage(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<MediaUsage>> {
    Ok(Json(s.media.usage(p).await?))
}

/// `POST /api/v1/admin/media/takedowns`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/media/takedowns",
    tag = "admin",
    request_body = Takedown,
    responses((status = 200, description = "done", body = TakedownResult))
)]
pub async fn take_down(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<Takedown>,
) -> ApiResult<Json<TakedownResult>> {
    require_admin(&s, p).await?;
    Ok(Json(s.media.take_down(&body.content_hash, body.note.as_deref()).await?))
}

/// `POST /api/v1/admin/media/blocklist`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/media/blocklist",
    tag = "admin",
    request_body = BlockImage,
    responses((status = 201, description = "created", body = BlockedImage))
)]
pub async fn block(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<BlockImage>,
) -> ApiResult<(StatusCode, Json<BlockedImage>)> {
    require_admin(&s, p).await?;
    Ok((StatusCode::CREATED, Json(s.media.block(body.media_id, body.note.as_deref()).await?)))
}

/// `GET /api/v1/admin/media/blocklist`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/media/blocklist",
    tag = "admin",
    responses((status = 200, description = "done", body = Vec<BlockedImage>))
)]
pub async fn blocklist(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<BlockedImage>>> {
    require_admin(&s, p).await?;
    Ok(Json(s.media.blocklist().await?))
}

/// `POST /api/v1/admin/media/sweep`: garbage collection and tiering now, instead of at the next interval.
#[utoipa::path(
    post,
    path = "/api/v1/admin/media/sweep",
    tag = "admin",
    responses((status = 200, description = "what the sweep collected and moved", body = Object))
)]
pub async fn sweep(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&s, p).await?;
    let report = s.media.sweep().await.map_err(CoreError::from)?;
    Ok(Json(serde_json::json!({
        "uploads_removed": report.uploads_removed,
        "contents_removed": report.contents_removed,
        "orphan_blobs_removed": report.orphan_blobs_removed,
        "leftover_files_removed": report.leftover_files_removed,
        "moved_to_cold": report.moved_to_cold,
    })))
}

async fn require_admin(s: &AppState, p: Principal) -> ApiResult<()> {
    if s.media.is_admin(p.user, &s.admins).await? {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, "only media admins may do this"))
    }
}

/// `GET|HEAD /media/{id}/{variant}?exp=&sig=`: the bytes, for anyone holding a valid signed URL.
pub async fn serve(
    State(s): State<AppState>,
    Path((id, variant)): Path<(MediaId, String)>,
    Query(signed): Query<SignedUrlQuery>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let servable = s.media.resolve(id, &variant, signed.exp, &signed.sig).await?;
    let total = servable.variant.size;
    if not_modified(&headers, &servable.etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        cache_headers(response.headers_mut(), &servable);
        return Ok(response);
    }
    let range = match requested_range(&headers, &servable.etag, total) {
        Ok(range) => range,
        Err(Unsatisfiable) => {
            let mut response = ApiError::new(ErrorCode::BadRequest, "the range is not satisfiable").into_response();
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            insert(response.headers_mut(), header::CONTENT_RANGE.as_str(), &format!("bytes */{total}"));
            return Ok(response);
        }
    };
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, total),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let stream = s.media.read(&servable, range.clone()).await?;
        Body::from_stream(stream.body.map(|chunk| chunk.map_err(std::io::Error::other)))
    };
    let mut response = Response::builder().status(status).body(body).map_err(|e| CoreError::Internal(e.to_string()))?;
    let h = response.headers_mut();
    cache_headers(h, &servable);
    insert(h, header::CONTENT_TYPE.as_str(), &servable.variant.content_type);
    insert(h, header::CONTENT_LENGTH.as_str(), &length.to_string());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Served bytes are never interpreted as a page of this origin.
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    insert(h, header::CONTENT_DISPOSITION.as_str(), &disposition(&servable));
    if let Some(r) = &range {
        insert(h, header::CONTENT_RANGE.as_str(), &format!("bytes {}-{}/{total}", r.start, r.end - 1));
    }
    Ok(response)
}

fn cache_headers(h: &mut HeaderMap, servable: &Servable) {
    let max_age = servable.expires.saturating_sub(herald_media::signing::now_secs());
    insert(h, header::ETAG.as_str(), &servable.etag);
    // The URL's bytes never change (content-addressed), so caches may keep them until the URL expires.
    insert(h, header::CACHE_CONTROL.as_str(), &format!("public, max-age={max_age}, immutable"));
}

fn disposition(servable: &Servable) -> String {
    let kind = servable.variant.content_type.split('/').next().unwrap_or_default();
    let inline = matches!(kind, "image" | "video" | "audio");
    let mode = if inline { "inline" } else { "attachment" };
    match &servable.filename {
        // RFC 6266 / 8187: the UTF-8 name percent-encoded, so no quoting issue can arise.
        Some(name) => format!("{mode}; filename*=UTF-8''{}", percent_encode(name)),
        None => mode.to_owned(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn upload_headers(h: &mut HeaderMap, info: &MediaInfo) {
    insert(h, UPLOAD_OFFSET, &info.received.to_string());
    insert(h, UPLOAD_LENGTH, &info.size.to_string());
}

fn insert(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (header::HeaderName::try_from(name), HeaderValue::from_str(value)) {
        h.insert(name, value);
    }
}
