use crate::gateway::Gateway;
use herald_core::Services;
use herald_core::hub::Hub;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this node should receive traffic: false before start-up completes and once draining begins.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Behind an `Arc`, like the rest: every connection task holds a clone of the state.
    pub services: Arc<Services>,
    pub metrics: PrometheusHandle,
    pub readiness: Arc<Readiness>,
    pub hub: Arc<Hub>,
    pub gateway: Arc<Gateway>,
    pub media: Arc<herald_media::Media>,
    /// Usernames allowed to use the admin endpoints.
    pub admins: Arc<std::collections::HashSet<String>>,
    /// In a cluster: where other nodes forward records whose partition this node owns (behind an `Arc`: every
    /// connection task holds the state, and its size is every idle connection's cost).
    pub forward: Option<Arc<crate::routes::internal::ForwardEndpoint>>,
    /// Limits on password guessing and account creation, and the proxies whose word on the client's address
    /// is taken.
    pub logins: Arc<Logins>,
}

/// See [`AppState::logins`].
pub struct Logins {
    pub limits: herald_core::login_limits::LoginLimits,
    pub trusted_proxies: Vec<std::net::IpAddr>,
}
