use crate::store::StoreError;
use herald_proto::ErrorCode;

/// The domain's error: a client-facing code and a message safe to show. Internal failures keep their
/// detail for the log and reach clients as an opaque `internal`.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{message}")]
    Client { code: ErrorCode, message: String },
    #[error("rate limited, retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// The node holds as many writes as it may (see `admission`): `unavailable`, with a delay to retry after.
    #[error("the server is at capacity; retry in {retry_after_ms} ms with the same client_msg_id")]
    Overloaded { retry_after_ms: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CoreError::Client { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// How long the client should wait before it tries again, when the error says.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            CoreError::RateLimited { retry_after_ms } | CoreError::Overloaded { retry_after_ms } => {
                Some(*retry_after_ms)
            }
            CoreError::Client { .. } | CoreError::Internal(_) => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::Client { code, .. } => *code,
            CoreError::RateLimited { .. } => ErrorCode::RateLimited,
            CoreError::Overloaded { .. } => ErrorCode::Unavailable,
            CoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Every store error that reaches a caller passes here, so this is where the engine's failures are counted
/// (`store_errors_total{kind}`, which the alert rules watch); conflicts and limits are answers about the
/// data, not failures, and are not counted.
impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => CoreError::conflict(m),
            StoreError::LimitExceeded(m) => CoreError::new(ErrorCode::LimitExceeded, m),
            StoreError::Unavailable(m) => {
                metrics::counter!("store_errors_total", "kind" => "unavailable").increment(1);
                tracing::warn!(detail = %m, "the store is unavailable");
                CoreError::unavailable("storage is unavailable for the moment; retry shortly")
            }
            StoreError::Backend(m) => {
                metrics::counter!("store_errors_total", "kind" => "backend").increment(1);
                CoreError::Internal(m)
            }
        }
    }
}
