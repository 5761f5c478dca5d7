//! What the client reports to the application: [`ClientEvent`]s on the [`Events`] stream.

use futures_util::Stream;
use herald_proto::{ConversationId, ErrorCode, Message, PresenceInfo, Session, UserId};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// The state of the client's WebSocket connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening a connection (TCP, upgrade, `hello`).
    Connecting,
    /// Authenticated (`hello` received) and `sync` sent: the catch-up and then live events flow. The outbox
    /// is sent once the catch-up is done ([`ClientEvent::Synced`]).
    Connected,
    /// The connection ended; a reconnect follows (see `Reconnecting`) unless the client is closing.
    Disconnected {
        /// Why, for logs and status lines ("closed by the server: 1012 server restarting", "connection refused" …).
        reason: String,
    },
    /// Waiting `delay` before the next connection attempt.
    Reconnecting {
        /// The attempt the delay belongs to, counted from 0 since the last connection that synced.
        attempt: u32,
        /// How long the client waits before connecting again.
        delay: Duration,
    },
    /// The client stopped for good: closed by the application, or the session can no longer be used
    /// (the refresh token was refused). Pending sends have failed with [`crate::ClientError::Closed`].
    Closed {
        /// Why the client stopped.
        reason: String,
    },
}

impl ConnectionState {
    /// True while connected.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected)
    }
}

/// One thing the application should know about, in the order it happened.
///
/// Feed events (`Message`, `MessageUpdated`, `Receipt`) carry the feed position `pos` they were read at.
/// Positions only increase: the client never reports the same position twice, and never the same message
/// (`conversation_id`, `seq`) twice, across reconnects. Persist the `pos` of the last event you applied and
/// pass it as [`crate::ClientConfig::since`] next time to resume from there.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The connection state changed.
    State(ConnectionState),
    /// The catch-up after a (re)connect is complete up to `pos`: what follows is live.
    Synced {
        /// The feed position everything up to which has been reported.
        pos: u64,
    },
    /// A new message, including your own (from any of your devices) and membership notices
    /// (`message.system` is set on those).
    Message {
        /// The feed position of this event.
        pos: u64,
        /// The message as stored (during catch-up, possibly already edited or deleted).
        message: Message,
    },
    /// A new version of a stored message (edited, deleted, reacted to): replace your copy of
    /// (`conversation_id`, `seq`).
    MessageUpdated {
        /// The feed position of this event.
        pos: u64,
        /// The message as it now is.
        message: Message,
    },
    /// A member's combined delivered/read positions in a conversation moved.
    Receipt {
        /// The feed position of this event.
        pos: u64,
        /// The conversation.
        conversation_id: ConversationId,
        /// The member whose positions moved.
        user_id: UserId,
        /// Everything up to this seq has reached one of the member's devices.
        delivered: u64,
        /// Everything up to this seq has been read on one of the member's devices.
        read: u64,
    },
    /// Another member started or stopped typing. Show it for `ttl_ms` unless another one arrives.
    Typing {
        /// The conversation.
        conversation_id: ConversationId,
        /// Who is typing.
        user_id: UserId,
        /// Started (`true`) or stopped.
        active: bool,
        /// How long to show the indicator without a new frame.
        ttl_ms: u64,
    },
    /// Presence changes of your contacts.
    Presence {
        /// The users whose presence changed.
        users: Vec<PresenceInfo>,
    },
    /// The sync position was older than the server's feed keeps (or from other data): events between it
    /// and `pos` are lost. Reload conversations and history over REST. The client continues from `pos`.
    Resync {
        /// The feed position the client continues from.
        pos: u64,
        /// The server's reason.
        reason: String,
    },
    /// The access and refresh tokens were renewed. The old refresh token no longer works: persist this
    /// session if you keep one. (Its `Debug` output includes the tokens: do not log it as is.)
    SessionRefreshed(Box<Session>),
    /// An `error` frame not tied to a request of the SDK (for example a `typing` in a conversation the
    /// user does not belong to).
    ServerError {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
}

/// The stream of [`ClientEvent`]s of one [`crate::Client`]. It ends after the client has closed.
///
/// Events are buffered without bound, so the client never stalls on a slow reader (and a reader that
/// calls the client, for instance awaiting a send, never deadlocks against it). Keep consuming the stream;
/// drop it if you do not want events (they are then discarded).
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::UnboundedReceiver<ClientEvent>,
}

impl Events {
    /// The next event, or `None` once the client has closed.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Events {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.rx.poll_recv(cx)
    }
}
