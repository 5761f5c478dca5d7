//! Herald's wire vocabulary: identifiers, the data clients see, request and response bodies, and the one
//! table of error codes. It sits at the top of the workspace (`proto -> core -> embedded -> api -> server`)
//! and does no I/O, so any client (the SDK, the bench, a test) can depend on it cheaply.

mod admin;
mod error;
mod ids;
mod media;
mod model;
mod reports;
mod rest;
mod search;
mod ws;

pub use admin::*;
pub use error::{ErrorBody, ErrorCode};
pub use ids::{ConversationId, DeviceId, MediaId, MessageId, ReportId, UserId};
pub use media::*;
pub use model::*;
pub use reports::*;
pub use rest::*;
pub use search::*;
pub use ws::*;

/// Milliseconds since the Unix epoch, the one time unit on the wire.
pub type Millis = i64;
