//! The WebSocket gateway: `GET /ws?v=1[&token=…][&user=…]`. See `docs/protocol.md`.
//!
//! The upgrade is admitted by a handshake rate limit (reconnect storms get 429 and a jittered
//! `Retry-After`), authenticated within the JWT budget (at the upgrade, or by the first frame within the
//! handshake timeout), and then one task serves the connection ([`connection`]) over the TCP stream itself
//! ([`socket`], [`frames`]): Herald speaks the WebSocket framing itself so that an idle connection costs as
//! little memory as possible.

mod connection;
mod frames;
mod requests;
mod socket;

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{Quota, RateLimiter};
use herald_core::CoreError;
use herald_core::hub::Hub;
use herald_core::outbox::Kick;
use herald_proto::{ErrorCode, PROTOCOL_VERSION, UserId};
use serde::Deserialize;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The gateway's settings (the brief's connection lifecycle figures by default).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The upgrade request, and the `auth` frame when the token is not in it, must arrive within this.
    pub handshake_timeout: Duration,
    /// Budget for validating the JWT.
    pub auth_timeout: Duration,
    /// The server pings this often; a client that has not answered the previous ping by the next is dropped.
    pub heartbeat_interval: Duration,
    /// A connection with no frame from its client for this long is closed.
    pub idle_timeout: Duration,
    /// New WebSocket handshakes admitted per second on this node, and the burst above that.
    pub handshakes_per_second: u32,
    pub handshake_burst: u32,
    /// Requests (sends, edits …) one connection may have waiting for their outcome.
    pub max_in_flight: usize,
    /// Largest message a client may send, in bytes (all its frames together).
    pub max_frame_bytes: usize,
    /// On shutdown, clients are told to reconnect after a random delay below this, spreading the herd.
    pub reconnect_jitter: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(2),
            auth_timeout: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            handshakes_per_second: 1000,
            handshake_burst: 2000,
            max_in_flight: 64,
            max_frame_bytes: 64 * 1024,
            reconnect_jitter: Duration::from_secs(5),
        }
    }
}

type DirectLimiter =
    RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, governor::clock::DefaultClock>;

/// The gateway's shared state: settings, the handshake limiter, and shutdown.
pub struct Gateway {
    pub config: GatewayConfig,
    handshakes: DirectLimiter,
    /// Cancelled when the node starts draining: connections tell their clients to reconnect and close.
    pub draining: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Self {
        let rate = NonZeroU32::new(config.handshakes_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.handshake_burst.max(config.handshakes_per_second)).unwrap_or(rate);
        Self {
            handshakes: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            config,
            draining: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Tells every connection to send its client away, and waits up to `grace` for them to finish.
    /// Connections hear it through their outbox (`Kick::Draining`), which they wait on anyway; one that
    /// registers with `hub` after this sees `draining` set instead.
    pub async fn drain(&self, hub: &Hub, grace: Duration) -> bool {
        self.draining.cancel();
        hub.kick_all(Kick::Draining);
        self.connections.close();
        tokio::time::timeout(grace, self.connections.wait()).await.is_ok()
    }
}

impl GatewayConfig {
    /// How often [`ring_alarms`] sweeps: a tenth of the shortest deadline, so a ping or an idle close comes at
    /// most that late, between 10 ms and 1 s.
    pub fn alarm_tick(&self) -> Duration {
        (self.heartbeat_interval.min(self.idle_timeout) / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Wakes, every `tick`, the connections whose heartbeat or idle deadline has come (see
/// [`herald_core::outbox::Outbox::set_alarm`]); runs until the task is dropped.
pub async fn ring_alarms(hub: std::sync::Arc<Hub>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        hub.ring_alarms(hub.now_ms());
    }
}

#[derive(Deserialize)]
pub struct WsParams {
    v: Option<u32>,
    token: Option<String>,
    /// A routing hint: the user id of the connecting device, for a proxy that keeps each user on one node
    /// (nginx's `hash $arg_user consistent`, deploy/nginx/herald.conf). It authenticates nothing; it must
    /// name the token's user, so that no socket is routed as another user's without anyone noticing.
    user: Option<String>,
}

/// `GET /ws`: checks version, admission and (if given) the token, then upgrades.
pub async fn upgrade(State(state): State<AppState>, Query(params): Query<WsParams>, mut request: Request) -> Response {
    // A plain GET (no Upgrade header …) gets the usual `{code, message}`.
    let accept = match accept_key(request.headers()) {
        Ok(accept) => accept,
        Err(message) => return ApiError::new(ErrorCode::BadRequest, message).into_response(),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::new(ErrorCode::BadRequest, "this connection cannot be upgraded").into_response();
    };
    let token = bearer(request.headers()).or(params.token);
    drop(request);
    let gateway = state.gateway.clone();
    if gateway.draining.is_cancelled() {
        return ApiError::new(ErrorCode::Unavailable, "this node is shutting down; connect to another").into_response();
    }
    if let Some(v) = params.v
        && v != PROTOCOL_VERSION
    {
        return ApiError::new(
            ErrorCode::BadRequest,
            format!("unsupported protocol version {v}; this server speaks {PROTOCOL_VERSION}"),
        )
        .into_response();
    }
    let hint = match params.user.as_deref().map(routing_hint).transpose() {
        Ok(hint) => hint,
        Err(message) => return ApiError::new(ErrorCode::BadRequest, message).into_response(),
    };
    if let Err(not_until) = gateway.handshakes.check() {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        // Spread the retries: a herd told to come back at the same instant would come back as a herd.
        let jitter = Duration::from_millis(rand_below(1000));
        let retry = wait + jitter;
        metrics::counter!("websocket_handshakes_refused_total").increment(1);
        let mut response =
            ApiError(CoreError::RateLimited { retry_after_ms: retry.as_millis().max(1) as u64 }).into_response();
        // Whole seconds, rounded up: rounding down would invite the retry before it can succeed.
        if let Ok(v) = HeaderValue::from_str(&retry.as_millis().div_ceil(1000).max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let principal = match token {
        Some(token) => match authenticate(&state, &token).await {
            Ok(p) => Some(p),
            Err(e) => return ApiError(e).into_response(),
        },
        None => None,
    };
    if let (Some(p), Some(hint)) = (principal, hint)
        && let Err(message) = hint_matches(hint, p)
    {
        return ApiError::new(ErrorCode::BadRequest, message).into_response();
    }
    // The tracked future is the task itself: no wrapper holding a second copy of its state.
    let opening = Box::new(connection::Opening { on_upgrade, state, principal, hint });
    tokio::spawn(gateway.connections.track_future(connection::upgraded(opening)));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks the upgrade request's headers (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !has_token(header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err("`Sec-WebSocket-Version` header did not include '13'");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err("`Sec-WebSocket-Key` header missing");
    };
    HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
        .map_err(|_| "`Sec-WebSocket-Key` header is not valid")
}

/// Validates a token within the JWT budget.
async fn authenticate(state: &AppState, token: &str) -> Result<herald_core::auth::Principal, CoreError> {
    match tokio::time::timeout(state.gateway.config.auth_timeout, state.services.accounts.authenticate(token)).await {
        Ok(result) => result,
        Err(_) => Err(CoreError::unavailable("authentication took too long; retry")),
    }
}

/// Reads the `user` routing hint: a user id, or a 400 that says what is wrong (without echoing the value).
fn routing_hint(value: &str) -> Result<UserId, String> {
    value.trim().parse().map_err(|_| "user must be the connecting user's id (a UUID)".to_owned())
}

/// The routing hint must name the authenticated user. Any other value would have the proxy place this socket
/// by someone else's key: the user's devices would scatter over nodes without anyone noticing, and a client
/// could pick its node at will. Refused, so that the mistake shows at once.
pub(crate) fn hint_matches(hint: UserId, principal: herald_core::auth::Principal) -> Result<(), String> {
    if hint == principal.user {
        return Ok(());
    }
    Err(format!("the user parameter ({hint}) is not the token's user; leave it out or send {}", principal.user))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn rand_below(max: u64) -> u64 {
    use rand::Rng;
    rand::rng().random_range(0..max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::DeviceId;

    #[test]
    fn the_routing_hint_is_a_user_id_and_must_be_the_tokens_user() {
        let me = herald_core::auth::Principal { user: UserId::new(), device: DeviceId::new() };
        let hint = routing_hint(&me.user.to_string()).expect("a user id");
        assert_eq!(hint_matches(hint, me), Ok(()));
        // Upper case is the same id.
        assert_eq!(routing_hint(&me.user.to_string().to_uppercase()), Ok(me.user));
        let other = UserId::new();
        let refused = hint_matches(other, me).expect_err("another user's id");
        assert!(refused.contains("not the token's user") && refused.contains(&me.user.to_string()), "{refused}");
        for bad in ["", "nope", "\0", "00000000-0000-0000-0000-00000000000g"] {
            assert!(routing_hint(bad).is_err(), "{bad:?}");
        }
    }
}
