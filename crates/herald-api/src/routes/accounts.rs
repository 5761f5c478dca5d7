use crate::AppState;
use crate::client_address::ClientAddress;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{
    Credentials, DeviceId, DeviceInfo, ErrorCode, FindUserQuery, Me, RefreshRequest, Session, UserId, UserProfile,
};

#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    request_body = Credentials,
    responses((status = 201, description = "registered and logged in", body = Session)),
    security(())
)]
pub async fn register(
    State(s): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Credentials>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    s.logins.limits.check_registration(address)?;
    Ok((StatusCode::CREATED, Json(s.services.accounts.register(body).await?)))
}

/// Logs in, unless the account or the address has failed too often lately (then 429 with `Retry-After`,
/// before the password is even looked at).
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "accounts",
    request_body = Credentials,
    responses((status = 200, description = "logged in: a new device", body = Session)),
    security(())
)]
pub async fn login(
    State(s): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Credentials>,
) -> ApiResult<Json<Session>> {
    let limits = &s.logins.limits;
    limits.check_login(&body.username, address)?;
    let username = body.username.clone();
    match s.services.accounts.login(body).await {
        Ok(session) => {
            limits.login_succeeded(&username);
            Ok(Json(session))
        }
        Err(e) => {
            if e.code() == ErrorCode::Unauthorized {
                limits.login_failed(&username, address);
            }
            Err(e.into())
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/refresh",
    tag = "accounts",
    request_body = RefreshRequest,
    responses((status = 200, description = "new tokens", body = Session)),
    security(())
)]
pub async fn refresh(State(s): State<AppState>, Json(body): Json<RefreshRequest>) -> ApiResult<Json<Session>> {
    Ok(Json(s.services.accounts.refresh(&body.refresh_token).await?))
}

/// Logs out this device: its access and refresh tokens stop working.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/current",
    tag = "accounts",
    responses((status = 204, description = "the device is deleted"))
)]
pub async fn logout(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<StatusCode> {
    s.services.accounts.revoke_device(p, p.device).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "accounts",
    responses((status = 200, description = "done", body = Me))
)]
pub async fn me(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Me>> {
    let mut me = s.services.accounts.me(p).await?;
    me.admin = s.services.user_admin.admins().is_admin_name(&me.user.username);
    Ok(Json(me))
}

#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "accounts",
    responses((status = 200, description = "done", body = Vec<DeviceInfo>))
)]
pub async fn devices(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<DeviceInfo>>> {
    Ok(Json(s.services.accounts.devices(p).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/devices/{device_id}",
    tag = "accounts",
    params(("device_id" = DeviceId, Path, description = "one of the caller's devices")),
    responses((status = 204, description = "done"))
)]
pub async fn revoke_device(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(device): Path<DeviceId>,
) -> ApiResult<StatusCode> {
    s.services.accounts.revoke_device(p, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users?username=NAME`: look a user up by name (to start a conversation).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "accounts",
    params(FindUserQuery),
    responses((status = 200, description = "done", body = UserProfile))
)]
pub async fn find_user(
    State(s): State<AppState>,
    Auth(_): Auth,
    Query(q): Query<FindUserQuery>,
) -> ApiResult<Json<UserProfile>> {
    let name = q.username.ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "give ?username="))?;
    Ok(Json(s.services.accounts.user_by_name(&name).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}",
    tag = "accounts",
    params(("user_id" = UserId, Path, description = "the user")),
    responses((status = 200, description = "done", body = UserProfile))
)]
pub async fn user(State(s): State<AppState>, Auth(_): Auth, Path(id): Path<UserId>) -> ApiResult<Json<UserProfile>> {
    Ok(Json(s.services.accounts.user(id).await?))
}
