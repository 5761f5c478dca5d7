//! One task per connection. It reads client frames, writes queued frames, runs requests (up to
//! `max_in_flight` at once), pings, and resumes the feed — all from one `select!` loop. One task instead of
//! the usual reader + writer pair halves the per-connection task state; the bounded hub queue still
//! decouples producers from this socket, and a socket that stops draining is cut off (kick or write
//! timeout) without slowing anyone else.
//!
//! What an idle connection holds is kept small on purpose: the task's state while it waits is the
//! [`Session`] (the socket without read or write buffers, the hub registration, positions and deadlines) and
//! one wait on all sources (draining arrives through the outbox). No timer: the heartbeat and idle deadlines
//! are an alarm in the outbox that the node's sweep rings ([`super::ring_alarms`]). Everything a request, a
//! delivery or a resume needs lives in a boxed future that exists only while that work is under way.

use super::frames::{FrameError, Incoming, OutFrame};
use super::requests::{self, Action, Pending};
use super::socket::{ReadError, Socket};
use crate::AppState;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use herald_core::CoreError;
use herald_core::auth::Principal;
use herald_core::hub::{Outgoing, Registration, encode};
use herald_core::outbox::{Kick, Outbox};
use herald_proto::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame, UserId};
use std::task::{Context, Poll};
use std::time::Duration;

/// Feed entries read per page while resuming.
const CATCH_UP_PAGE: usize = 256;
/// Queued frames written with one flush.
const WRITE_BATCH: usize = 64;
/// A write that cannot complete in this long means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ends, and the close frame that says so.
struct Close {
    code: u16,
    reason: &'static str,
}

impl Close {
    fn error(code: ErrorCode, reason: &'static str) -> Self {
        Close { code: code.ws_close_code(), reason }
    }
    const GONE: Close = Close { code: 1000, reason: "" };
}

/// What the upgrade handler hands to the connection task. Boxed on the way in: an async fn keeps its
/// arguments for its whole life, and this one lives as long as the connection.
pub struct Opening {
    pub on_upgrade: hyper::upgrade::OnUpgrade,
    pub state: AppState,
    /// Known when the token came with the upgrade request; else the first frame must carry it.
    pub principal: Option<Principal>,
    /// The `user` routing hint of the URL, checked against the first frame's token when the upgrade had none.
    pub hint: Option<UserId>,
}

/// The connection task. Only `serve` is awaited in place: opening and closing run in boxed futures, so the
/// task's state for its long idle life is the [`Session`] and the wait in `serve`.
pub async fn upgraded(opening: Box<Opening>) {
    let Some(mut session) = Box::pin(open(opening)).await else { return };
    let close = session.serve().await;
    Box::pin(session.finish(close)).await;
}

/// Takes the upgraded stream from hyper, authenticates, registers with the hub and says hello.
async fn open(opening: Box<Opening>) -> Option<Session> {
    let Opening { on_upgrade, state, principal, hint } = *opening;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "the WebSocket upgrade did not complete");
            return None;
        }
    };
    // Herald's server loop serves every connection as a `TokioIo<TcpStream>`; taking the stream back from
    // hyper drops its I/O wrappers, and whatever it had read past the request is handed to the reader.
    let Ok(parts) = upgraded.downcast::<hyper_util::rt::TokioIo<tokio::net::TcpStream>>() else {
        tracing::error!("an upgraded connection was not a TCP stream");
        return None;
    };
    let config = &state.gateway.config;
    let mut socket = Socket::new(parts.io.into_inner(), &parts.read_buf, config.max_frame_bytes);
    drop(parts.read_buf);
    let opened = state.hub.now_ms();
    let me = match principal {
        Some(p) => p,
        None => match first_frame_auth(&mut socket, &state, hint).await {
            Ok(p) => p,
            Err(close) => {
                socket.close(close.code, close.reason, WRITE_TIMEOUT).await;
                return None;
            }
        },
    };
    let registration = state.hub.register(me);
    // Checked after registering: a drain that began before is seen here, a later one kicks the outbox.
    let refused = if state.gateway.draining.is_cancelled() {
        Some(drain(&mut socket, &registration.outbox, None, config).await)
    } else {
        greet(&mut socket, &state, &registration.outbox, me).await.err()
    };
    if let Some(close) = refused {
        drop(registration);
        socket.close(close.code, close.reason, WRITE_TIMEOUT).await;
        return None;
    }
    let now = state.hub.now_ms();
    let next_ping = now + millis(config.heartbeat_interval);
    registration.outbox.set_alarm(next_ping.min(now + millis(config.idle_timeout)));
    Some(Session {
        socket,
        state,
        registration,
        delivered: None,
        in_flight: None,
        last_activity: now,
        next_ping,
        awaiting_pong: false,
        turn: 0,
        opened,
    })
}

/// Waits for `{"type":"auth","token":…}` within the handshake timeout; a refusal is answered with an error
/// frame, and returns how to close.
async fn first_frame_auth(socket: &mut Socket, state: &AppState, hint: Option<UserId>) -> Result<Principal, Close> {
    let refused = match wait_for_auth(socket, state).await {
        Ok(principal) => match hint.map(|hint| super::hint_matches(hint, principal)) {
            Some(Err(message)) => {
                let e = CoreError::new(ErrorCode::BadRequest, message);
                (requests::error_frame(None, &e), Close::error(ErrorCode::BadRequest, "user is not the token's user"))
            }
            _ => return Ok(principal),
        },
        Err(refused) => refused,
    };
    let (frame, close) = refused;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.write(&[text(&frame)])).await;
    Err(close)
}

async fn wait_for_auth(socket: &mut Socket, state: &AppState) -> Result<Principal, (ServerFrame, Close)> {
    let unauthorized = |message: &str| {
        let e = CoreError::unauthorized(message);
        (requests::error_frame(None, &e), Close::error(ErrorCode::Unauthorized, "unauthorized"))
    };
    let first = tokio::time::timeout(state.gateway.config.handshake_timeout, socket.next()).await;
    let frame = match first {
        Err(_) => {
            let e = CoreError::new(ErrorCode::Timeout, "no auth frame within the handshake timeout");
            return Err((requests::error_frame(None, &e), Close::error(ErrorCode::Timeout, "handshake timeout")));
        }
        Ok(Ok(Incoming::Text(text))) => text,
        Ok(_) => return Err(unauthorized("the first frame must be {\"type\":\"auth\",\"token\":…}")),
    };
    match serde_json::from_str::<ClientFrame>(&frame) {
        // The close code follows the error: a bad token is 4401, a slow check 1013 (retry, keep the token).
        Ok(ClientFrame::Auth { token }) => super::authenticate(state, &token).await.map_err(|e| {
            let close = Close { code: e.code().ws_close_code(), reason: "authentication failed" };
            (requests::error_frame(None, &e), close)
        }),
        _ => Err(unauthorized("the first frame must be {\"type\":\"auth\",\"token\":…}")),
    }
}

/// Checks that the device may still connect and sends `hello`.
async fn greet(socket: &mut Socket, state: &AppState, outbox: &Outbox<Outgoing>, me: Principal) -> Result<(), Close> {
    if !matches!(state.services.accounts.device_active(me).await, Ok(true)) {
        return Err(Close::error(ErrorCode::Unauthorized, "device logged out or revoked"));
    }
    let config = &state.gateway.config;
    let hello = match state.services.messaging.feed(me.user, u64::MAX, 0).await {
        Ok(view) => text(&ServerFrame::Hello {
            v: PROTOCOL_VERSION,
            user_id: me.user,
            device_id: me.device,
            pos: view.last,
            heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
        }),
        Err(e) => {
            write(socket, outbox, vec![text(&requests::error_frame(None, &e))]).await?;
            return Err(Close::error(ErrorCode::Internal, "internal error"));
        }
    };
    write(socket, outbox, vec![hello]).await
}

/// What woke an idle connection.
enum Wake {
    /// The heartbeat or idle alarm rang.
    Alarm,
    /// The client sent something (or a message is buffered).
    Readable,
    /// Requests in flight finished: the frames they answer with (those with nothing to say add none), all
    /// written together, so pipelined sends are acked with one write per batch instead of one per send.
    Answers(Vec<OutFrame>),
    /// The outbox's items, or `None`: the connection was kicked.
    Outbox(Option<Vec<Outgoing>>),
}

/// A connection's state between frames: what an idle connection costs, so kept small.
struct Session {
    socket: Socket,
    state: AppState,
    /// This connection in the hub (whose it is, and its outbox: what there is to write).
    registration: Registration,
    /// The feed position this device has been sent up to; None until it asks to sync.
    delivered: Option<u64>,
    /// Created with the first request that has to wait, dropped when the last one is answered: an empty
    /// `FuturesUnordered` still holds an allocation.
    in_flight: Option<FuturesUnordered<Pending>>,
    /// When the last frame came from the client; the idle timeout runs from it. Moving it does not touch the
    /// alarm: when the alarm rings, the deadlines are looked at again. Times are the hub's milliseconds.
    last_activity: u64,
    next_ping: u64,
    awaiting_pong: bool,
    /// Which source is looked at first (0..3), in turn, so a busy one cannot starve the others.
    turn: u8,
    opened: u64,
}

impl Session {
    /// Serves the connection until it must end; returns how.
    async fn serve(&mut self) -> Close {
        // The only await while idle is this `poll_fn`: it keeps nothing but references, and every source it
        // waits on keeps its waker outside the task. What a wake leads to runs in a boxed future.
        loop {
            let wake = std::future::poll_fn(|cx| self.poll_wake(cx)).await;
            if let Err(close) = Box::pin(self.on_wake(wake)).await {
                return close;
            }
        }
    }

    /// Leaves the hub, then closes the socket.
    async fn finish(self, close: Close) {
        let Session { socket, registration, opened, state, .. } = self;
        drop(registration);
        socket.close(close.code, close.reason, WRITE_TIMEOUT).await;
        let lasted = state.hub.now_ms().saturating_sub(opened);
        metrics::histogram!("websocket_connection_duration_seconds").record(lasted as f64 / 1000.0);
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if self.registration.outbox.poll_alarm(cx).is_ready() {
            return Poll::Ready(Wake::Alarm);
        }
        // Every source is polled (so each has registered its waker) unless one is ready.
        self.turn = (self.turn + 1) % 3;
        for i in 0..3 {
            match (self.turn + i) % 3 {
                0 => {
                    let waiting = self.in_flight.as_ref().map_or(0, FuturesUnordered::len);
                    // With the in-flight limit reached, reading waits for answers.
                    if waiting < self.state.gateway.config.max_in_flight && self.socket.poll_ready(cx).is_ready() {
                        return Poll::Ready(Wake::Readable);
                    }
                }
                1 => {
                    if let Some(pending) = &mut self.in_flight {
                        let mut answers = Vec::new();
                        let mut finished = 0;
                        let exhausted = loop {
                            match pending.poll_next_unpin(cx) {
                                Poll::Ready(Some(answer)) => {
                                    finished += 1;
                                    answers.extend(answer.map(|frame| text(&frame)));
                                    if finished == WRITE_BATCH {
                                        break false;
                                    }
                                }
                                Poll::Ready(None) => break true,
                                Poll::Pending => break false,
                            }
                        };
                        if exhausted {
                            self.in_flight = None;
                        }
                        if finished > 0 {
                            return Poll::Ready(Wake::Answers(answers));
                        }
                    }
                }
                _ => {
                    // An empty Vec allocates nothing: the items bring their own allocation when there are any.
                    let mut batch = Vec::new();
                    if let Poll::Ready(open) = self.registration.outbox.poll_recv_many(cx, &mut batch, WRITE_BATCH) {
                        return Poll::Ready(Wake::Outbox(open.then_some(batch)));
                    }
                }
            }
        }
        Poll::Pending
    }

    async fn on_wake(&mut self, wake: Wake) -> Result<(), Close> {
        match wake {
            Wake::Alarm => self.on_alarm().await,
            Wake::Readable => self.on_readable().await,
            Wake::Answers(frames) => write(&mut self.socket, &self.registration.outbox, frames).await,
            Wake::Outbox(Some(items)) => {
                forward(
                    &mut self.socket,
                    &self.state,
                    &self.registration.outbox,
                    self.registration.principal,
                    &mut self.delivered,
                    items,
                )
                .await
            }
            Wake::Outbox(None) => Err(match self.registration.outbox.kicked_for() {
                Some(Kick::Draining) => {
                    drain(
                        &mut self.socket,
                        &self.registration.outbox,
                        self.in_flight.take(),
                        &self.state.gateway.config,
                    )
                    .await
                }
                _ => kicked(&self.registration.outbox),
            }),
        }
    }

    /// The alarm rang: close an idle or silent connection, or ping, and set the alarm for what is next.
    async fn on_alarm(&mut self) -> Result<(), Close> {
        let config = &self.state.gateway.config;
        let now = self.state.hub.now_ms();
        let idle_at = self.last_activity + millis(config.idle_timeout);
        if now >= idle_at {
            return Err(Close::error(ErrorCode::Timeout, "idle"));
        }
        if now >= self.next_ping {
            if self.awaiting_pong {
                return Err(Close::error(ErrorCode::Timeout, "no pong"));
            }
            self.awaiting_pong = true;
            self.next_ping = now + millis(config.heartbeat_interval);
            write(&mut self.socket, &self.registration.outbox, vec![OutFrame::Ping]).await?;
        }
        self.registration.outbox.set_alarm(self.next_ping.min(idle_at));
        Ok(())
    }

    async fn on_readable(&mut self) -> Result<(), Close> {
        let message = match self.socket.try_next() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(e) => return Err(read_failed(&mut self.socket, &self.registration.outbox, e).await),
        };
        match message {
            Incoming::Text(frame) => {
                self.last_activity = self.state.hub.now_ms();
                let action = match serde_json::from_str::<ClientFrame>(&frame) {
                    Ok(frame) => requests::handle(&self.state, self.registration.principal, frame),
                    Err(e) => Action::Reply(Box::new(requests::bad_frame(format!("malformed frame: {e}")))),
                };
                match action {
                    Action::Reply(frame) => {
                        write(&mut self.socket, &self.registration.outbox, vec![text(&frame)]).await
                    }
                    Action::Later(pending) => {
                        self.in_flight.get_or_insert_with(FuturesUnordered::new).push(pending);
                        Ok(())
                    }
                    Action::Sync(since) => {
                        self.delivered = catch_up(
                            &mut self.socket,
                            &self.state,
                            &self.registration.outbox,
                            self.registration.principal,
                            since,
                        )
                        .await?;
                        Ok(())
                    }
                    Action::Nothing => Ok(()),
                }
            }
            Incoming::Binary => {
                self.last_activity = self.state.hub.now_ms();
                let frame = requests::bad_frame("binary frames are not supported; send JSON text");
                write(&mut self.socket, &self.registration.outbox, vec![text(&frame)]).await
            }
            Incoming::Ping(data) => {
                write(&mut self.socket, &self.registration.outbox, vec![OutFrame::Pong(data)]).await
            }
            Incoming::Pong => {
                self.awaiting_pong = false;
                Ok(())
            }
            // The close handshake answers with the client's own code.
            Incoming::Close(code) => Err(Close { code: code.unwrap_or(1000), reason: "" }),
        }
    }
}

/// Writes queued items: shared frames as they are, feed events in position order. An event beyond the next
/// expected position means another one is still on its way (partitions publish independently): the feed
/// already holds it, so read the gap from there.
async fn forward(
    socket: &mut Socket,
    state: &AppState,
    outbox: &Outbox<Outgoing>,
    me: Principal,
    delivered: &mut Option<u64>,
    items: Vec<Outgoing>,
) -> Result<(), Close> {
    let mut out = Vec::with_capacity(items.len());
    let mut sent_ats = Vec::new();
    let mut written = 0usize;
    for item in items {
        match item {
            // Encoded by `hub::encode` from a `ServerFrame`: JSON, so UTF-8.
            Outgoing::Frame(bytes) => out.push(OutFrame::Text(bytes)),
            // One catch-up call site for both cases: each await point here grows every idle connection.
            Outgoing::CatchUp | Outgoing::Event { .. } => {
                let Some(at) = *delivered else { continue };
                if let Outgoing::Event { pos, event, sent_at } = item {
                    if pos <= at {
                        continue;
                    }
                    if pos == at + 1 {
                        out.push(OutFrame::Text(event_frame(pos, &event)));
                        written += 1;
                        sent_ats.extend(sent_at);
                        *delivered = Some(pos);
                        continue;
                    }
                }
                write(socket, outbox, std::mem::take(&mut out)).await?;
                *delivered = Box::pin(catch_up(socket, state, outbox, me, at)).await?;
            }
        }
    }
    write(socket, outbox, out).await?;
    // Send (sequenced) to delivered (written to this socket), for live messages.
    metrics::counter!("message_delivery_success_total").increment(written as u64);
    if !sent_ats.is_empty() {
        let now = herald_core::now_millis();
        let latency = metrics::histogram!("message_send_to_deliver_ms");
        for sent_at in sent_ats {
            latency.record((now - sent_at).max(0) as f64);
        }
    }
    Ok(())
}

/// Sends every feed event after `since`, then `synced`; or `resync` when `since` is no longer (or not)
/// in the feed. Returns the position now delivered (None after a resync).
async fn catch_up(
    socket: &mut Socket,
    state: &AppState,
    outbox: &Outbox<Outgoing>,
    me: Principal,
    since: u64,
) -> Result<Option<u64>, Close> {
    let mut pos = since;
    loop {
        let view = match state.services.messaging.feed(me.user, pos, CATCH_UP_PAGE).await {
            Ok(view) => view,
            Err(e) => {
                write(socket, outbox, vec![text(&requests::error_frame(None, &e))]).await?;
                return Err(Close::error(ErrorCode::Internal, "internal error"));
            }
        };
        if pos == since && (since.saturating_add(1) < view.oldest || since > view.last) {
            let reason = if since > view.last {
                "position is ahead of the feed"
            } else {
                "position is older than the feed keeps"
            };
            metrics::counter!("websocket_resyncs_total").increment(1);
            write(socket, outbox, vec![text(&ServerFrame::Resync { pos: view.last, reason: reason.into() })]).await?;
            return Ok(None);
        }
        let full = view.events.len() == CATCH_UP_PAGE;
        let mut out = Vec::with_capacity(view.events.len() + 1);
        for (p, event) in view.events {
            match serde_json::to_string(&event) {
                Ok(json) => out.push(OutFrame::Text(event_frame(p, &json))),
                Err(e) => tracing::error!(error = %e, "could not encode a feed event"),
            }
            pos = p;
        }
        let events = out.len();
        if !full {
            out.push(text(&ServerFrame::Synced { pos }));
        }
        write(socket, outbox, out).await?;
        metrics::counter!("message_delivery_success_total").increment(events as u64);
        if !full {
            return Ok(Some(pos));
        }
    }
}

/// Draining: answer what is in flight, tell the client when to come back, and close as "service restart".
async fn drain(
    socket: &mut Socket,
    outbox: &Outbox<Outgoing>,
    in_flight: Option<FuturesUnordered<Pending>>,
    config: &super::GatewayConfig,
) -> Close {
    let mut in_flight = in_flight.unwrap_or_default();
    while let Some(answer) = in_flight.next().await {
        if let Some(frame) = answer
            && write(socket, outbox, vec![text(&frame)]).await.is_err()
        {
            return Close::GONE;
        }
    }
    let after_ms = super::rand_below(config.reconnect_jitter.as_millis() as u64);
    let _ = write(socket, outbox, vec![text(&ServerFrame::Reconnect { after_ms })]).await;
    Close { code: 1012, reason: "server restarting: reconnect" }
}

/// A read failed: a message over the size limit gets an error frame before the close; a broken frame is a
/// protocol error; anything else is the peer going away.
async fn read_failed(socket: &mut Socket, outbox: &Outbox<Outgoing>, e: ReadError) -> Close {
    match e {
        ReadError::Frame(FrameError::TooLarge) => {
            let e = CoreError::new(ErrorCode::PayloadTooLarge, "frame larger than the limit");
            let _ = write(socket, outbox, vec![text(&requests::error_frame(None, &e))]).await;
            Close { code: 1009, reason: "frame too large" }
        }
        ReadError::Frame(e @ (FrameError::Protocol(_) | FrameError::NotUtf8)) => {
            tracing::debug!(error = ?e, "a client broke the WebSocket protocol");
            Close { code: e.close_code(), reason: "protocol error" }
        }
        ReadError::Gone => Close::GONE,
    }
}

/// Writes frames with one write, giving up when the client is kicked or stops reading (what was not written
/// then goes out before the close frame). Every caller runs inside a boxed future (a wake's work, opening,
/// closing), so its state (a timer among it) never enlarges an idle connection's task.
async fn write(socket: &mut Socket, outbox: &Outbox<Outgoing>, frames: Vec<OutFrame>) -> Result<(), Close> {
    if frames.is_empty() {
        return Ok(());
    }
    let write = tokio::time::timeout(WRITE_TIMEOUT, socket.write(&frames));
    tokio::pin!(write);
    let result = tokio::select! {
        result = &mut write => result,
        () = outbox.kicked() => match outbox.kicked_for() {
            // A draining node lets the write finish; the connection then says goodbye properly.
            Some(Kick::Draining) => write.await,
            _ => return Err(kicked(outbox)),
        },
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Close::GONE),
        Err(_) => {
            metrics::counter!("websocket_slow_consumer_disconnects_total").increment(1);
            Err(Close::error(ErrorCode::SlowConsumer, "too slow: reconnect and resume"))
        }
    }
}

/// How a kicked connection closes.
fn kicked(outbox: &Outbox<Outgoing>) -> Close {
    match outbox.kicked_for() {
        Some(Kick::Revoked) => Close::error(ErrorCode::Unauthorized, "device logged out or revoked"),
        _ => Close::error(ErrorCode::SlowConsumer, "too slow: reconnect and resume"),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

fn text(frame: &ServerFrame) -> OutFrame {
    OutFrame::Text(encode(frame))
}

/// `{"type":"event","pos":N,"event":…}` around an event encoded once for all its recipients.
fn event_frame(pos: u64, event: &str) -> Bytes {
    Bytes::from(format!(r#"{{"type":"event","pos":{pos},"event":{event}}}"#))
}

#[cfg(test)]
mod tests {
    /// What an idle connection costs is mostly this future: tokio stores it in a task cell rounded up to
    /// 128 bytes, so each 128 bytes more is 128 bytes more per connection (536 bytes with a timer of its own
    /// made a 640-byte cell; 376-384 without, a 512-byte one). A new field or a timer held across the idle
    /// wait shows up here first.
    #[test]
    fn an_idle_connection_task_stays_small() {
        fn size<F>(_: &impl Fn(Box<super::Opening>) -> F) -> usize {
            size_of::<F>()
        }
        let task = size(&super::upgraded);
        assert!(task <= 400, "the connection task's future grew to {task} bytes");
    }
}
