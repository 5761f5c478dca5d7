//! Node-to-node endpoints, for nodes of one cluster only (bearer token from the shared secret). Not part
//! of the client API: a load balancer in front of the nodes must not route `/internal`.

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::forward::{RemoteOutcome, token_matches};
use herald_core::log::LogRecord;
use herald_core::submit::Submitter;
use std::sync::Arc;

/// What a node needs to take records forwarded by the others.
#[derive(Clone)]
pub struct ForwardEndpoint {
    pub submitter: Arc<Submitter>,
    /// `herald_core::forward::cluster_token` of the cluster's secret.
    pub token: Arc<str>,
}

/// `POST /internal/v1/forward`: applies a record whose partition this node owns and answers its outcome;
/// 409 when the partition is not (or no longer) owned here, so the sender routes it again.
pub async fn forward(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(endpoint) = &state.forward else {
        return (StatusCode::NOT_FOUND, "not a cluster node").into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_matches(given, &endpoint.token) {
        return (StatusCode::UNAUTHORIZED, "bad node token").into_response();
    }
    let record: LogRecord = match serde_json::from_slice(&body) {
        Ok(record) => record,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a log record: {e}")).into_response(),
    };
    match endpoint.submitter.apply_forwarded(record).await {
        Ok(result) => Json(RemoteOutcome::from(result)).into_response(),
        Err(_) => (StatusCode::CONFLICT, "partition not owned here").into_response(),
    }
}
