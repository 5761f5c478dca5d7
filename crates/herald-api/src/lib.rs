//! Herald's HTTP surface over `herald-core`: the REST API under `/api/v1`, health and readiness probes and
//! the Prometheus `/metrics` endpoint. (The WebSocket gateway joins it here.) Every handler authenticates
//! with [`extract::Auth`] and leaves authorisation to the core services, which check membership and roles
//! for every operation; errors leave through [`error::ApiError`] as `{code, message}`.

pub mod error;
pub mod extract;
pub mod gateway;
mod routes;
pub mod serve;
mod state;

pub use routes::router;
pub use state::{AppState, Readiness};
