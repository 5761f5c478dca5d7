//! Reports of messages and users, and the admins' view of them.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{CreateReport, Report, ReportId, ReportListQuery, ReportPage, ResolveReport};

/// `POST /api/v1/reports`: 201 with a new report; 200 with the caller's open report of the same target.
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
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ReportListQuery>,
) -> ApiResult<Json<ReportPage>> {
    Ok(Json(s.services.reports.list(p, q).await?))
}

/// `GET /api/v1/admin/reports/{id}`.
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(id): Path<ReportId>) -> ApiResult<Json<Report>> {
    Ok(Json(s.services.reports.get(p, id).await?))
}

/// `POST /api/v1/admin/reports/{id}/resolve`.
pub async fn resolve(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ReportId>,
    Json(body): Json<ResolveReport>,
) -> ApiResult<Json<Report>> {
    Ok(Json(s.services.reports.resolve(p, id, body).await?))
}
