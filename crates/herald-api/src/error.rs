//! How failures leave the API: the status from the error-code table and a `{code, message}` body.
//! Internal errors are logged here, once, and reach the client as an opaque message.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::CoreError;
use herald_proto::{ErrorBody, ErrorCode};

#[derive(Debug)]
pub struct ApiError(pub CoreError);

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(CoreError::new(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let (message, retry_after_ms) = match &self.0 {
            CoreError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                ("internal error".to_owned(), None)
            }
            CoreError::RateLimited { .. } | CoreError::Overloaded { .. } => {
                (self.0.to_string(), self.0.retry_after_ms())
            }
            CoreError::Client { message, .. } => (message.clone(), None),
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(ErrorBody { code, message, retry_after_ms })).into_response();
        if let Some(ms) = retry_after_ms
            && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::BadRequest,
        };
        ApiError::new(code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(ErrorCode::BadRequest, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(ErrorCode::BadRequest, r.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
