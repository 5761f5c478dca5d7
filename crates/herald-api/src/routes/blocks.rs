//! Blocking: the caller's list of blocked users.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{BlockedUser, UserId};

/// `GET /api/v1/blocks`: whom the caller blocks.
#[utoipa::path(
    get,
    path = "/api/v1/blocks",
    tag = "blocks",
    responses((status = 200, description = "done", body = Vec<BlockedUser>))
)]
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<BlockedUser>>> {
    Ok(Json(s.services.blocks.list(p).await?))
}

/// `PUT /api/v1/blocks/{user_id}`: blocks the user (204, also when already blocked).
#[utoipa::path(
    put,
    path = "/api/v1/blocks/{user_id}",
    tag = "blocks",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 204, description = "done"))
)]
pub async fn block(State(s): State<AppState>, Auth(p): Auth, Path(user): Path<UserId>) -> ApiResult<StatusCode> {
    s.services.blocks.block(p, user).await?;
    presence_across(&s, p.user, user).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/blocks/{user_id}`: unblocks the user (204, also when not blocked).
#[utoipa::path(
    delete,
    path = "/api/v1/blocks/{user_id}",
    tag = "blocks",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 204, description = "done"))
)]
pub async fn unblock(State(s): State<AppState>, Auth(p): Auth, Path(user): Path<UserId>) -> ApiResult<StatusCode> {
    s.services.blocks.unblock(p, user).await?;
    presence_across(&s, p.user, user).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Tells both what they now see of each other's presence. The block is stored either way: a failure here is
/// logged, and the next change of presence sets it right.
async fn presence_across(s: &AppState, a: UserId, b: UserId) {
    if let Err(e) = s.hub.block_changed(a, b).await {
        tracing::warn!(error = %e, "could not update presence across a block");
    }
}
