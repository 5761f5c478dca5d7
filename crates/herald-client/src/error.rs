//! The one error type of the SDK.

use herald_proto::ErrorCode;

/// What can go wrong in a call of the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the request with its `{code, message}` body (REST), or answered a WebSocket
    /// request with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        /// The HTTP status, for REST answers; `None` for WebSocket `error` frames.
        status: Option<u16>,
        /// The stable error code (`not_found`, `rate_limited` …).
        code: ErrorCode,
        /// The server's human-readable message.
        message: String,
        /// For `rate_limited`: how long to wait before retrying, from the body or the `Retry-After` header.
        retry_after_ms: Option<u64>,
    },
    /// An HTTP answer that is not a Herald error body (a proxy's error page, for instance).
    #[error("unexpected HTTP {status}: {body}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The start of the body, as text.
        body: String,
    },
    /// The HTTP request could not be made or its answer not read (connection refused, timeout …).
    #[error("HTTP request failed: {}", with_causes(.0))]
    Http(#[from] reqwest::Error),
    /// A successful answer whose body could not be decoded.
    #[error("undecodable answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// Writing what the server sent failed (the file of a data export, for instance).
    #[error("writing failed: {0}")]
    Io(#[source] std::io::Error),
    /// The server URL is not `http://host[:port][/prefix]` or `https://…`.
    #[error("invalid server URL {0:?}: expected http://host[:port]")]
    InvalidUrl(String),
    /// The client was closed (or its background task ended) before the operation completed.
    #[error("the client is closed")]
    Closed,
}

/// An error and its sources, `a: b: c`: reqwest's own message rarely says what went wrong
/// ("error sending request" … because the connection was refused).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl ClientError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The server's message, when the server answered with one.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::Server { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether trying again may succeed: the connection failed, or the server was busy or unavailable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Http(_) => true,
            ClientError::Server { code, .. } => {
                matches!(code, ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal)
            }
            ClientError::Unexpected { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn from_frame(code: ErrorCode, message: String, retry_after_ms: Option<u64>) -> Self {
        ClientError::Server { status: None, code, message, retry_after_ms }
    }
}
