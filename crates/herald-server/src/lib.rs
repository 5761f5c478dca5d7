//! The `herald` binary's library: configuration, the wiring of backends into services, the server's
//! lifecycle (start, graceful shutdown), the benchmark, and the operator's planning tools (`autoscale`,
//! `capacity`). It is the only crate that knows every backend.
//! Integration tests start servers through [`server::start`] exactly as `herald serve` does.

pub mod autoscale;
pub mod bench;
pub mod capacity;
mod chart;
pub mod config;
mod disk_space;
mod housekeeping;
pub mod media_config;
mod metrics_catalogue;
mod metrics_setup;
mod secret;
pub mod server;
pub mod storage;
