use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Query};
use axum::Json;
use axum::extract::State;
use herald_proto::{SearchPage, SearchQuery};

#[utoipa::path(
    get,
    path = "/api/v1/search",
    tag = "search",
    params(SearchQuery),
    responses((status = 200, description = "the messages the caller can read that hold the words, best first", body = SearchPage))
)]
pub async fn search(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<SearchPage>> {
    Ok(Json(s.services.search.search(p, q).await?))
}
