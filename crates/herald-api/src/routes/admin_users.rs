//! User administration: an admin looks an account up, suspends it, lifts the suspension, and deletes it.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path};
use axum::extract::State;
use herald_proto::{AdminUser, DeletedUser, SuspendUser, UserId};

/// `GET /api/v1/admin/users/{user_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/users/{user_id}",
    tag = "admin",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 200, description = "done", body = AdminUser))
)]
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(user): Path<UserId>) -> ApiResult<Json<AdminUser>> {
    Ok(Json(s.services.user_admin.get(p, user).await?))
}

/// `POST /api/v1/admin/users/{user_id}/suspend {reason}`: the account's sessions close at once.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{user_id}/suspend",
    tag = "admin",
    params(("user_id" = UserId, Path, description = "the user")),
    request_body = SuspendUser,
    responses((status = 200, description = "done", body = AdminUser))
)]
pub async fn suspend(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(user): Path<UserId>,
    Json(body): Json<SuspendUser>,
) -> ApiResult<Json<AdminUser>> {
    Ok(Json(s.services.user_admin.suspend(p, user, body).await?))
}

/// `POST /api/v1/admin/users/{user_id}/unsuspend`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{user_id}/unsuspend",
    tag = "admin",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 200, description = "done", body = AdminUser))
)]
pub async fn unsuspend(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(user): Path<UserId>,
) -> ApiResult<Json<AdminUser>> {
    Ok(Json(s.services.user_admin.unsuspend(p, user).await?))
}

/// `DELETE /api/v1/admin/users/{user_id}`: the account's sessions close, its personal data is erased, it leaves
/// its groups, and its messages stay or go as configured.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/users/{user_id}",
    tag = "admin",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 200, description = "done", body = DeletedUser))
)]
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(user): Path<UserId>,
) -> ApiResult<Json<DeletedUser>> {
    Ok(Json(s.services.user_admin.delete(p, user).await?))
}
