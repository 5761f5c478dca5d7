//! The one table of error codes. Each code has a stable name (what clients match on), an HTTP status and a
//! WebSocket close code (4000 + the HTTP status, in the range RFC 6455 leaves to applications), so the REST
//! API and the gateway report the same failure the same way. Errors travel as `{"code": "...", "message": "..."}`.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $http:literal;)*) => {
        /// Every error a client can receive.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable name of the code, as serialised.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The HTTP status the REST API answers with.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $http,)* }
            }
        }
    };
}

error_codes! {
    /// The request is malformed: bad JSON, a missing field, a value of the wrong type.
    BadRequest = "bad_request", 400;
    /// A value is well-formed but not acceptable (empty body, bad username, unknown role …).
    InvalidInput = "invalid_input", 422;
    /// No credentials, or credentials that are invalid, expired or revoked.
    Unauthorized = "unauthorized", 401;
    /// The caller is a member but may not do this (not an admin, not the owner, not the author). Non-members
    /// get `not_found`: they may not learn that the conversation exists.
    Forbidden = "forbidden", 403;
    /// The thing does not exist, or the caller may not know that it does.
    NotFound = "not_found", 404;
    /// The endpoint exists but not with this HTTP method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// The request conflicts with the current state (username taken, already a member …).
    Conflict = "conflict", 409;
    /// The request body or a message is larger than the configured limit.
    PayloadTooLarge = "payload_too_large", 413;
    /// The user's media quota would be exceeded by this upload.
    QuotaExceeded = "quota_exceeded", 413;
    /// The content is not of a type Herald accepts (judged from its bytes, not from what the client said).
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// The thing existed but was removed (media taken down).
    Gone = "gone", 410;
    /// A configured limit other than size was reached (members per group …).
    LimitExceeded = "limit_exceeded", 422;
    /// Too many requests; retry after the hinted delay.
    RateLimited = "rate_limited", 429;
    /// A WebSocket client that did not read its frames fast enough was disconnected; reconnect and resume.
    SlowConsumer = "slow_consumer", 503;
    /// The connection was idle, or stopped answering pings, for too long.
    Timeout = "timeout", 408;
    /// The server is shutting down or overloaded; retry, possibly on another node.
    Unavailable = "unavailable", 503;
    /// Something failed inside the server. Details are logged, never sent.
    Internal = "internal", 500;
}

impl ErrorCode {
    /// The WebSocket close code for this error: 4000 + HTTP status (4401, 4403, 4429 …), except that
    /// internal errors and unavailability use the standard codes 1011 and 1013 that clients already know.
    pub fn ws_close_code(self) -> u16 {
        match self {
            ErrorCode::Internal => 1011,
            ErrorCode::Unavailable => 1013,
            // 4503 would read as "unavailable"; a slow consumer gets its own code.
            ErrorCode::SlowConsumer => 4008,
            other => 4000 + other.http_status(),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("serialise");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn close_codes_are_in_the_application_range_or_standard() {
        for code in ErrorCode::ALL {
            let ws = code.ws_close_code();
            assert!((4000..5000).contains(&ws) || ws == 1011 || ws == 1013, "{code}: {ws}");
        }
    }
}
