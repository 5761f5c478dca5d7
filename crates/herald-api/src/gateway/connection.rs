//! One task per connection. It reads client frames, writes queued frames, runs requests (up to
//! `max_in_flight` at once), pings, and resumes the feed — all from one `select!` loop. One task instead of
//! the usual reader + writer pair halves the per-connection task state; the bounded hub queue still
//! decouples producers from this socket, and a socket that stops draining is cut off (kick or write
//! timeout) without slowing anyone else.

use super::requests::{self, Action, Pending};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use herald_core::CoreError;
use herald_core::auth::Principal;
use herald_core::hub::{Outgoing, encode};
use herald_core::outbox::{Kick, Outbox};
use herald_proto::{ClientFrame, ErrorCode, PROTOCOL_VERSION, ServerFrame};
use std::time::Duration;
use tokio::time::Instant;

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

pub async fn run(mut socket: WebSocket, state: AppState, principal: Option<Principal>) {
    let opened = std::time::Instant::now();
    let principal = match principal {
        Some(p) => p,
        None => match Box::pin(first_frame_auth(&mut socket, &state)).await {
            Ok(p) => p,
            Err((frame, close)) => {
                let _ = socket.send(text(&frame)).await;
                let _ = close_with(&mut socket, close).await;
                return;
            }
        },
    };
    let close = serve(&mut socket, &state, principal).await;
    let _ = close_with(&mut socket, close).await;
    metrics::histogram!("websocket_connection_duration_seconds").record(opened.elapsed().as_secs_f64());
}

/// Waits for `{"type":"auth","token":…}` within the handshake timeout.
async fn first_frame_auth(socket: &mut WebSocket, state: &AppState) -> Result<Principal, (ServerFrame, Close)> {
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
        Ok(Some(Ok(Message::Text(text)))) => text,
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

/// The connection's life after authentication; returns how it ends.
async fn serve(socket: &mut WebSocket, state: &AppState, me: Principal) -> Close {
    let config = &state.gateway.config;
    let registration = state.hub.register(me.user, me.device);
    let outbox = &*registration.outbox;
    if !matches!(Box::pin(state.services.accounts.device_active(me)).await, Ok(true)) {
        return Close::error(ErrorCode::Unauthorized, "device logged out or revoked");
    }
    let draining = state.gateway.draining.clone();
    let mut batch: Vec<Outgoing> = Vec::new();

    // Encoded before any await, so no frame value is held in this (long-lived) task's state.
    let hello = match Box::pin(state.services.messaging.feed(me.user, u64::MAX, 0)).await {
        Ok(view) => text(&ServerFrame::Hello {
            v: PROTOCOL_VERSION,
            user_id: me.user,
            device_id: me.device,
            pos: view.last,
            heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
        }),
        Err(e) => text(&requests::error_frame(None, &e)),
    };
    let failed = !matches!(&hello, Message::Text(t) if t.as_str().starts_with(r#"{"type":"hello""#));
    if let Err(close) = write(socket, outbox, vec![hello]).await {
        return close;
    }
    if failed {
        return Close::error(ErrorCode::Internal, "internal error");
    }

    // The feed position this device has been sent up to; None until it asks to sync.
    let mut delivered: Option<u64> = None;
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut last_activity = Instant::now();
    let mut heartbeat = tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    let mut awaiting_pong = false;

    loop {
        tokio::select! {
            () = draining.cancelled() => return Box::pin(drain(socket, outbox, &mut in_flight, config)).await,
            incoming = socket.next(), if in_flight.len() < config.max_in_flight => {
                let message = match incoming {
                    None => return Close::GONE,
                    Some(Err(e)) => return Box::pin(read_failed(socket, outbox, e)).await,
                    Some(Ok(message)) => message,
                };
                match message {
                    Message::Text(frame) => {
                        last_activity = Instant::now();
                        let action = match serde_json::from_str::<ClientFrame>(&frame) {
                            Ok(frame) => requests::handle(state, me, frame),
                            Err(e) => Action::Reply(Box::new(requests::bad_frame(format!("malformed frame: {e}")))),
                        };
                        match action {
                            Action::Reply(frame) => {
                                if let Err(close) = write(socket, outbox, vec![text(&frame)]).await {
                                    return close;
                                }
                            }
                            Action::Later(pending) => in_flight.push(pending),
                            Action::Sync(since) => match Box::pin(catch_up(socket, state, outbox, me, since)).await {
                                Ok(pos) => delivered = pos,
                                Err(close) => return close,
                            },
                            Action::Nothing => {}
                        }
                    }
                    Message::Binary(_) => {
                        last_activity = Instant::now();
                        if let Err(close) = write(socket, outbox, vec![text(&requests::bad_frame("binary frames are not supported; send JSON text"))]).await {
                            return close;
                        }
                    }
                    Message::Pong(_) => awaiting_pong = false,
                    Message::Ping(_) => {}
                    Message::Close(_) => return Close::GONE,
                }
            }
            Some(answer) = in_flight.next() => {
                if let Some(frame) = answer
                    && let Err(close) = write(socket, outbox, vec![text(&frame)]).await
                {
                    return close;
                }
            }
            ready = outbox.recv_many(&mut batch, WRITE_BATCH) => {
                if !ready {
                    return kicked(outbox);
                }
                let items = std::mem::take(&mut batch);
                if let Err(close) = Box::pin(forward(socket, state, outbox, me, &mut delivered, items)).await {
                    return close;
                }
            }
            _ = heartbeat.tick() => {
                if awaiting_pong {
                    return Close::error(ErrorCode::Timeout, "no pong");
                }
                awaiting_pong = true;
                if let Err(close) = write(socket, outbox, vec![Message::Ping(Default::default())]).await {
                    return close;
                }
            }
            () = tokio::time::sleep_until(last_activity + config.idle_timeout) => {
                return Close::error(ErrorCode::Timeout, "idle");
            }
        }
    }
}

/// Writes queued items: shared frames as they are, feed events in position order. An event beyond the next
/// expected position means another one is still on its way (partitions publish independently): the feed
/// already holds it, so read the gap from there.
async fn forward(
    socket: &mut WebSocket,
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
            Outgoing::Frame(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => out.push(Message::Text(text)),
                Err(_) => tracing::error!("a shared frame was not UTF-8"),
            },
            Outgoing::Event { pos, event, sent_at } => {
                let Some(at) = *delivered else { continue };
                if pos <= at {
                    continue;
                }
                if pos == at + 1 {
                    out.push(Message::Text(event_frame(pos, &event).into()));
                    written += 1;
                    sent_ats.extend(sent_at);
                    *delivered = Some(pos);
                } else {
                    write(socket, outbox, std::mem::take(&mut out)).await?;
                    *delivered = Box::pin(catch_up(socket, state, outbox, me, at)).await?;
                }
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
    socket: &mut WebSocket,
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
                Ok(json) => out.push(Message::Text(event_frame(p, &json).into())),
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
    socket: &mut WebSocket,
    outbox: &Outbox<Outgoing>,
    in_flight: &mut FuturesUnordered<Pending>,
    config: &super::GatewayConfig,
) -> Close {
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

/// A read failed: a frame over the size limit gets an error frame before the close; anything else is the
/// peer going away or breaking the protocol.
async fn read_failed(socket: &mut WebSocket, outbox: &Outbox<Outgoing>, e: axum::Error) -> Close {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            let e = CoreError::new(ErrorCode::PayloadTooLarge, "frame larger than the limit");
            let _ = write(socket, outbox, vec![text(&requests::error_frame(None, &e))]).await;
            Close { code: 1009, reason: "frame too large" }
        }
        Some(tungstenite::Error::Protocol(_)) | Some(tungstenite::Error::Utf8(_)) => {
            Close { code: 1002, reason: "protocol error" }
        }
        _ => {
            tracing::debug!(error = %inner, "connection read failed");
            Close::GONE
        }
    }
}

/// Writes messages with one flush, giving up when the client is kicked or stops reading. Boxed: its state
/// (a timer among it) then lives on the heap only while a write is under way, instead of enlarging every
/// idle connection's task by its size.
fn write<'a>(
    socket: &'a mut WebSocket,
    outbox: &'a Outbox<Outgoing>,
    messages: Vec<Message>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Close>> + Send + 'a>> {
    Box::pin(write_now(socket, outbox, messages))
}

async fn write_now(socket: &mut WebSocket, outbox: &Outbox<Outgoing>, messages: Vec<Message>) -> Result<(), Close> {
    if messages.is_empty() {
        return Ok(());
    }
    let work = async {
        for m in messages {
            socket.feed(m).await?;
        }
        socket.flush().await
    };
    tokio::select! {
        result = tokio::time::timeout(WRITE_TIMEOUT, work) => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::GONE),
            Err(_) => {
                metrics::counter!("websocket_slow_consumer_disconnects_total").increment(1);
                Err(Close::error(ErrorCode::SlowConsumer, "too slow: reconnect and resume"))
            }
        },
        () = outbox.kicked() => Err(kicked(outbox)),
    }
}

/// How a kicked connection closes.
fn kicked(outbox: &Outbox<Outgoing>) -> Close {
    match outbox.kicked_for() {
        Some(Kick::Revoked) => Close::error(ErrorCode::Unauthorized, "device logged out or revoked"),
        _ => Close::error(ErrorCode::SlowConsumer, "too slow: reconnect and resume"),
    }
}

/// Sends the close frame, waiting as long as any write may: a client kicked for being slow has its buffers
/// full, and only reads the close frame (which says why, and that it should resume) after what is queued
/// before it. With 1 s, clients on hosts with small socket buffers saw a reset instead of 4008.
async fn close_with(socket: &mut WebSocket, close: Close) -> Result<(), axum::Error> {
    let frame = CloseFrame { code: close.code, reason: Utf8Bytes::from_static(close.reason) };
    tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await.unwrap_or(Ok(()))
}

fn text(frame: &ServerFrame) -> Message {
    match Utf8Bytes::try_from(encode(frame)) {
        Ok(text) => Message::Text(text),
        Err(_) => {
            Message::Text(Utf8Bytes::from_static(r#"{"type":"error","code":"internal","message":"internal error"}"#))
        }
    }
}

/// `{"type":"event","pos":N,"event":…}` around an event encoded once for all its recipients.
fn event_frame(pos: u64, event: &str) -> String {
    format!(r#"{{"type":"event","pos":{pos},"event":{event}}}"#)
}
