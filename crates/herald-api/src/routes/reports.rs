//! Reports of messages and users, and the admins' view of them.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{CreateReport, Report, ReportId, ReportListQuery, ReportPage, ResolveReport};

/// `POST /api/v1/reports`: 201 with a new report; 200 with the caller's open report of the same target.
#[utoipa::path(
    post,
    path = "/api/v1/reports",
    tag = "reports",
    request_body = CreateReport,
    responses((status = 201, description = "created", body = Report), (status = 200, description = "the caller's open report of the same target", body = Report))
)]
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<CreateReport>,
) -> ApiResult<(StatusCode, Json<Report>)> {
    let (report, created) = s.services.reports.create(p, body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(report)))
}

/// `GET /api/v1/admin/reports?state=&before=&limit=`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/reports",
    tag = "admin",
    params(ReportListQuery),
    responses((status = 200, description = "done", body = ReportPage))
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ReportListQuery>,
) -> ApiResult<Json<ReportPage>> {
    Ok(Json(s.services.reports.list(p, q).await?))
}

/// `GET /api/v1/admin/reports/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/reports/{id}",
    tag = "admin",
    params(("id" = ReportId, Path, description = "the report")),
    responses((status = 200, description = "done", body = Report))
)]
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<ReportId>) -> ApiResult<Json<Report>> {
    Ok(Json(s.services.reports.get(p, id).await?))
}

/// `POST /api/v1/admin/reports/{id}/resolve`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/reports/{id}/resolve",
    tag = "admin",
    params(("id" = ReportId, Path, description = "the report")),
    request_body = ResolveReport,
    responses((status = 200, description = "done", body = Report))
)]
pub async fn resolve(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ReportId>,
    Json(body): Json<ResolveReport>,
) -> ApiResult<Json<Report>> {
    Ok(Json(s.services.reports.resolve(p, id, body).await?))
}
