//! The routes. `docs/api.md` lists them with their bodies and errors.

pub(crate) mod accounts;
pub(crate) mod admin_users;
pub(crate) mod blocks;
pub(crate) mod conversations;
pub(crate) mod export;
mod health;
pub mod internal;
pub(crate) mod media;
pub(crate) mod messages;
pub(crate) mod reports;
pub(crate) mod search;

use crate::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use herald_proto::ErrorCode;
use std::time::Instant;

/// The whole HTTP API. `max_body_bytes` caps every request body.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/accounts", post(accounts::register))
        .route("/sessions", post(accounts::login))
        .route("/sessions/refresh", post(accounts::refresh))
        .route("/sessions/current", delete(accounts::logout))
        .route("/me", get(accounts::me))
        .route("/me/export", get(export::export))
        .route("/devices", get(accounts::devices))
        .route("/devices/{device_id}", delete(accounts::revoke_device))
        .route("/users", get(accounts::find_user))
        .route("/users/{user_id}", get(accounts::user))
        .route("/blocks", get(blocks::list))
        .route("/blocks/{user_id}", put(blocks::block).delete(blocks::unblock))
        .route("/conversations", post(conversations::create).get(conversations::list))
        .route("/conversations/{id}", get(conversations::details).patch(conversations::rename))
        .route("/conversations/{id}/members", post(conversations::add_member))
        .route(
            "/conversations/{id}/members/{user_id}",
            delete(conversations::remove_member).patch(conversations::set_role),
        )
        .route("/conversations/{id}/messages", post(messages::send).get(messages::history))
        .route("/conversations/{id}/messages/{seq}", axum::routing::patch(messages::edit).delete(messages::delete))
        .route("/conversations/{id}/messages/{seq}/reactions/{emoji}", put(messages::react).delete(messages::unreact))
        .route("/conversations/{id}/cursor", put(messages::update_cursor).get(messages::cursor))
        .route("/conversations/{id}/threads/{root}", get(messages::thread))
        .route("/conversations/{id}/threads/{root}/messages", get(messages::thread_replies))
        .route("/conversations/{id}/threads/{root}/read", put(messages::mark_thread_read))
        .route("/search", get(search::search))
        .route("/uploads", post(media::create))
        .route("/uploads/{id}", get(media::info).patch(media::append).delete(media::delete))
        .route("/media/usage", get(media::usage))
        .route("/media/{id}", get(media::media_info))
        .route("/admin/media/takedowns", post(media::take_down))
        .route("/admin/media/blocklist", post(media::block).get(media::blocklist))
        .route("/admin/media/sweep", post(media::sweep))
        .route("/reports", post(reports::create))
        .route("/admin/reports", get(reports::list))
        .route("/admin/reports/{id}", get(reports::get))
        .route("/admin/reports/{id}/resolve", post(reports::resolve))
        .route("/admin/users/{user_id}", get(admin_users::get).delete(admin_users::delete))
        .route("/admin/users/{user_id}/suspend", post(admin_users::suspend))
        .route("/admin/users/{user_id}/unsuspend", post(admin_users::unsuspend));

    Router::new()
        .nest("/api/v1", api)
        .route("/ws", get(crate::gateway::upgrade))
        .route("/media/{id}/{variant}", get(media::serve))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(herald_core::forward::FORWARD_PATH, post(internal::forward))
        .merge(crate::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

/// A handler that panicked answers like any internal error (and is logged), instead of dropping the
/// connection.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    use axum::response::IntoResponse;
    ApiError(herald_core::CoreError::Internal("a request handler panicked".into())).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this endpoint")
}

/// Counts and times requests by route template (never by concrete path: ids are not metric labels).
async fn record_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_ms", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64() * 1000.0);
    response
}
