use crate::AppState;
use crate::client_address::ClientAddress;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{
    Credentials, DeviceId, DeviceInfo, ErrorCode, FindUserQuery, Me, RefreshRequest, Session, UserId, UserProfile,
};

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

pub async fn refresh(State(s): State<AppState>, Json(body): Json<RefreshRequest>) -> ApiResult<Json<Session>> {
    Ok(Json(s.services.accounts.refresh(&body.refresh_token).await?))
}

/// Logs out this device: its access and refresh tokens stop working.
pub async fn logout(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<StatusCode> {
    s.services.accounts.revoke_device(p, p.device).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Me>> {
    let mut me = s.services.accounts.me(p).await?;
    me.admin = s.services.user_admin.admins().is_admin_name(&me.user.username);
    Ok(Json(me))
}

pub async fn devices(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<DeviceInfo>>> {
    Ok(Json(s.services.accounts.devices(p).await?))
}

pub async fn revoke_device(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(device): Path<DeviceId>,
) -> ApiResult<StatusCode> {
    s.services.accounts.revoke_device(p, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /users?username=NAME`: look a user up by name (to start a conversation).
pub async fn find_user(
    State(s): State<AppState>,
    Auth(_): Auth,
    Query(q): Query<FindUserQuery>,
) -> ApiResult<Json<UserProfile>> {
    let name = q.username.ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "give ?username="))?;
    Ok(Json(s.services.accounts.user_by_name(&name).await?))
}

pub async fn user(State(s): State<AppState>, Auth(_): Auth, Path(id): Path<UserId>) -> ApiResult<Json<UserProfile>> {
    Ok(Json(s.services.accounts.user(id).await?))
}
