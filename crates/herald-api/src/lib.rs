//! Herald's HTTP surface over `herald-core`: the REST API under `/api/v1`, health and readiness probes,
//! the Prometheus `/metrics` endpoint and the embedded web client at `/` (module `web`). (The WebSocket
//! gateway joins it here.) Every handler authenticates with [`extract::Auth`] and leaves authorisation to the
//! core services, which check membership and roles for every operation; errors leave through
//! [`error::ApiError`] as `{code, message}`. [`openapi`] describes the REST API from the handlers themselves
//! (`/api/v1/openapi.json`).

pub mod client_address;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod media_headers;
pub mod openapi;
mod process_gauges;
mod routes;
pub mod serve;
mod state;
mod web;

pub use routes::internal::ForwardEndpoint;
pub use routes::router;
pub use state::{AppState, Logins, Readiness};
