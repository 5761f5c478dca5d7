//! The connected client: [`Client`], a cheap handle, and the background task that owns the WebSocket.
//!
//! The task loops: connect (`/ws?v=1&token=…&user=…`), read `hello`, send `sync {since: pos}` and the outbox, then
//! apply frames until the connection ends; wait (backoff with jitter, or the server's hint); repeat. It
//! refreshes the access token when the server refuses it, and stops for good only when the application
//! closes the client, drops every handle, or the refresh token is refused.

use crate::api::{Api, error_from};
use crate::backoff::{Backoff, BackoffConfig};
use crate::error::ClientError;
use crate::event::{ClientEvent, ConnectionState, Events};
use crate::outbox::{Item, Outbox, SendResult};
use futures_util::{SinkExt, StreamExt};
use herald_proto::{
    ClientFrame, ConversationDetails, ConversationId, ConversationPage, CreateReport, CursorState, DeviceId, ErrorCode,
    Event, HistoryPage, HistoryQuery, PresenceStatus, Report, SendAck, ServerFrame, Session, UserId, UserProfile,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Refresh the access token before connecting when it expires within this.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long to wait for the close handshake to finish.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Close codes that mean "your token or device is no longer good".
const CLOSE_UNAUTHORIZED: u16 = 4401;

/// How to connect, and how to behave while connected.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's base URL, `http://host:port` (the WebSocket URL is derived from it).
    pub server: String,
    /// The device's session, from [`Api::register`], [`Api::login`] or [`Api::refresh`]. Renewed
    /// automatically; the renewed session is reported as [`ClientEvent::SessionRefreshed`].
    pub session: Session,
    /// The feed position to resume after: the `pos` of the last event the application applied (0 for a
    /// device without local state: it then receives the whole feed, or a `Resync` once the feed has
    /// dropped its oldest entries).
    pub since: u64,
    /// On the first connection only, skip ahead to the server's newest feed position (`hello.pos`) when it
    /// is beyond `since`: what a new device does after loading conversations and history over REST, so
    /// that it does not replay the whole feed. Off by default.
    pub start_at_latest: bool,
    /// The reconnect schedule (1 s, 2 s, 4 s … 30 s with full jitter by default).
    pub backoff: BackoffConfig,
    /// How long opening a connection may take: TCP, upgrade and `hello`.
    pub connect_timeout: Duration,
    /// When nothing was sent for this long, send an application `ping`, so that the server's idle timeout
    /// (10 minutes) does not close a quiet connection.
    pub keepalive: Duration,
    /// At most this many sends in flight at once (the server's limit is 64 per connection).
    pub max_in_flight: usize,
}

impl ClientConfig {
    /// Defaults for everything but the server and the session.
    pub fn new(server: impl Into<String>, session: Session) -> Self {
        Self {
            server: server.into(),
            session,
            since: 0,
            start_at_latest: false,
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(240),
            max_in_flight: 32,
        }
    }
}

/// Tokens stay out of logs: the session shows as its user and device.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("user", &self.session.user.username)
            .field("device", &self.session.device_id)
            .field("since", &self.since)
            .field("start_at_latest", &self.start_at_latest)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// A handle to a connected (or connecting, or reconnecting) client. Cheap to clone; every clone drives the
/// same connection. The connection stays up until [`Client::close`] or until every clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.shared.api.base_url())
            .field("user", &self.shared.user_id)
            .field("device", &self.shared.device_id)
            .field("state", &*self.shared.state.borrow())
            .field("position", &self.position())
            .field("outbox_len", &self.outbox_len())
            .finish_non_exhaustive()
    }
}

/// The future of a [`Client::send`]: resolves to the server's ack once the message is durably stored, or to
/// the error that made the server refuse it for good. Dropping it does not cancel the send.
#[derive(Debug)]
pub struct PendingSend {
    conversation_id: ConversationId,
    client_msg_id: String,
    rx: oneshot::Receiver<SendResult>,
}

impl PendingSend {
    /// The message's idempotency key (a UUIDv7), the same on every retry.
    pub fn client_msg_id(&self) -> &str {
        &self.client_msg_id
    }

    /// The conversation the message goes to.
    pub fn conversation_id(&self) -> ConversationId {
        self.conversation_id
    }
}

impl Future for PendingSend {
    type Output = Result<SendAck, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// The future of a request answered over the WebSocket ([`Client::mark_read`], [`Client::mark_delivered`]).
#[derive(Debug)]
pub struct Reply<T> {
    rx: oneshot::Receiver<Result<T, ClientError>>,
}

impl<T> Future for Reply<T> {
    type Output = Result<T, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

impl Client {
    /// Starts the client: spawns the task that connects, syncs from `config.since`, and reconnects.
    /// Returns at once, without waiting for the connection (see [`Client::wait_connected`]); messages sent
    /// meanwhile wait in the outbox. Must be called within a Tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), ClientError> {
        let api = Api::new(&config.server)?;
        Ok(Self::start(config, api))
    }

    /// Like [`Client::connect`], with an [`Api`] of your own (for instance one with a custom `reqwest::Client`).
    pub async fn connect_with_api(config: ClientConfig, api: Api) -> Result<(Client, Events), ClientError> {
        Ok(Self::start(config, api))
    }

    fn start(config: ClientConfig, api: Api) -> (Client, Events) {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            user_id: config.session.user.id,
            device_id: config.session.device_id,
            api,
            session: tokio::sync::Mutex::new(config.session),
            events: Mutex::new(Some(events_tx)),
            state: watch::Sender::new(ConnectionState::Connecting),
            position: AtomicU64::new(config.since),
            outbox_len: Arc::new(AtomicUsize::new(0)),
        });
        let task = Task {
            shared: shared.clone(),
            commands: commands_rx,
            backoff: Backoff::new(config.backoff),
            connect_timeout: config.connect_timeout,
            keepalive: config.keepalive.max(Duration::from_secs(1)),
            max_in_flight: config.max_in_flight.max(1),
            pos: config.since,
            start_at_latest: config.start_at_latest,
            max_seq: HashMap::new(),
            outbox: Outbox::new(shared.outbox_len.clone()),
            cursors: BTreeMap::new(),
            next_request: 0,
        };
        tokio::spawn(task.run());
        (Client { shared, commands: commands_tx }, Events { rx: events_rx })
    }

    /// The user this client is logged in as.
    pub fn user_id(&self) -> UserId {
        self.shared.user_id
    }

    /// This device.
    pub fn device_id(&self) -> DeviceId {
        self.shared.device_id
    }

    /// The REST client for the same server.
    pub fn api(&self) -> &Api {
        &self.shared.api
    }

    /// The current session (tokens are renewed as needed).
    pub async fn session(&self) -> Session {
        self.shared.session.lock().await.clone()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// Waits until the client is connected. Fails with [`ClientError::Closed`] if it closes first.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut rx = self.shared.state.subscribe();
        let connected = rx
            .wait_for(|s| matches!(s, ConnectionState::Connected | ConnectionState::Closed { .. }))
            .await
            .map(|s| s.is_connected())
            .unwrap_or(false);
        if connected { Ok(()) } else { Err(ClientError::Closed) }
    }

    /// The feed position of the last event the client reported.
    pub fn position(&self) -> u64 {
        self.shared.position.load(Ordering::Relaxed)
    }

    /// Messages in the outbox: written but not acknowledged yet.
    pub fn outbox_len(&self) -> usize {
        self.shared.outbox_len.load(Ordering::Relaxed)
    }

    /// Sends `body` to a conversation. The message enters the outbox at once, with a fresh `client_msg_id`
    /// (UUIDv7); it is sent now if connected, else after reconnecting, and again after every reconnect
    /// until acknowledged, always with the same `client_msg_id`, so the server stores it exactly once.
    /// A conversation's messages are stored in the order they were written.
    pub fn send(&self, conversation: ConversationId, body: impl Into<String>) -> PendingSend {
        self.send_message(conversation, body.into(), |_| {})
    }

    /// Like [`Client::send`], as a reply to the message `reply_to` (a seq) of the same conversation.
    pub fn send_reply(&self, conversation: ConversationId, body: impl Into<String>, reply_to: u64) -> PendingSend {
        self.send_message(conversation, body.into(), |item| item.reply_to = Some(reply_to))
    }

    /// Like [`Client::send`], as a reply in the thread of the message `root` (a seq of the same conversation
    /// that is not itself in a thread). The reply arrives as any message does, with `thread_root` set.
    pub fn send_in_thread(&self, conversation: ConversationId, root: u64, body: impl Into<String>) -> PendingSend {
        self.send_message(conversation, body.into(), |item| item.thread_root = Some(root))
    }

    /// Like [`Client::send`], attaching ready uploads (see [`crate::Api::upload`]); `body` may be empty.
    pub fn send_with_attachments(
        &self,
        conversation: ConversationId,
        body: impl Into<String>,
        attachments: Vec<herald_proto::MediaId>,
    ) -> PendingSend {
        self.send_message(conversation, body.into(), |item| item.attachments = attachments)
    }

    fn send_message(&self, conversation: ConversationId, body: String, shape: impl FnOnce(&mut Item)) -> PendingSend {
        let client_msg_id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        let mut item = Item::new(client_msg_id.clone(), body, tx);
        shape(&mut item);
        // If the task is gone, the command (and the reply sender with it) is dropped: the future says Closed.
        let _ = self.commands.send(Command::Send(conversation, item));
        PendingSend { conversation_id: conversation, client_msg_id, rx }
    }

    /// Reports that this device's user has read the conversation up to `seq` (which implies delivered).
    /// Sent now, or after reconnecting; resolves to this user's positions in the conversation.
    pub fn mark_read(&self, conversation: ConversationId, seq: u64) -> Reply<CursorState> {
        self.cursor(CursorKind::Read, conversation, seq)
    }

    /// Reports that this device has received the conversation up to `seq`.
    pub fn mark_delivered(&self, conversation: ConversationId, seq: u64) -> Reply<CursorState> {
        self.cursor(CursorKind::Delivered, conversation, seq)
    }

    fn cursor(&self, kind: CursorKind, conversation_id: ConversationId, seq: u64) -> Reply<CursorState> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Cursor(CursorRequest { kind, conversation_id, seq, reply, sent: false }));
        Reply { rx }
    }

    /// Tells the other members that this user started (`true`) or stopped typing. Best effort: dropped
    /// while disconnected. Repeat `true` every 2–3 s while typing continues.
    pub fn typing(&self, conversation: ConversationId, active: bool) -> Result<(), ClientError> {
        self.ephemeral(ClientFrame::Typing { conversation_id: conversation, active })
    }

    /// Sets this user's presence (`Online` or `Away`; the server refuses `Offline`: close the client
    /// instead). Best effort: dropped while disconnected.
    pub fn set_presence(&self, status: PresenceStatus) -> Result<(), ClientError> {
        self.ephemeral(ClientFrame::Presence { status })
    }

    fn ephemeral(&self, frame: ClientFrame) -> Result<(), ClientError> {
        self.commands.send(Command::Ephemeral(frame)).map_err(|_| ClientError::Closed)
    }

    /// Closes the connection and stops the client. Messages still in the outbox fail with
    /// [`ClientError::Closed`]; the event stream ends after a final `State(Closed)`.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    // ----- REST, with the current token (renewed once on 401) -----

    /// [`Api::list_conversations`] with this client's session.
    pub async fn list_conversations(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ConversationPage, ClientError> {
        let cursor = cursor.map(str::to_owned);
        self.authed(|api, token| {
            let cursor = cursor.clone();
            async move { api.list_conversations(&token, limit, cursor.as_deref()).await }
        })
        .await
    }

    /// [`Api::history`] with this client's session.
    pub async fn history(
        &self,
        conversation: ConversationId,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, ClientError> {
        self.authed(|api, token| {
            let query = query.clone();
            async move { api.history(&token, conversation, &query).await }
        })
        .await
    }

    /// [`Api::create_direct`] with this client's session.
    pub async fn create_direct(&self, user_id: UserId) -> Result<ConversationDetails, ClientError> {
        self.authed(|api, token| async move { api.create_direct(&token, user_id).await }).await
    }

    /// [`Api::create_group`] with this client's session.
    pub async fn create_group(&self, title: &str, members: &[UserId]) -> Result<ConversationDetails, ClientError> {
        self.authed(|api, token| {
            let (title, members) = (title.to_owned(), members.to_vec());
            async move { api.create_group(&token, &title, &members).await }
        })
        .await
    }

    /// [`Api::conversation`] with this client's session.
    pub async fn conversation(&self, id: ConversationId) -> Result<ConversationDetails, ClientError> {
        self.authed(|api, token| async move { api.conversation(&token, id).await }).await
    }

    /// [`Api::find_user`] with this client's session.
    pub async fn find_user(&self, username: &str) -> Result<UserProfile, ClientError> {
        self.authed(|api, token| {
            let username = username.to_owned();
            async move { api.find_user(&token, &username).await }
        })
        .await
    }

    /// [`Api::user`] with this client's session.
    pub async fn user(&self, user_id: UserId) -> Result<UserProfile, ClientError> {
        self.authed(|api, token| async move { api.user(&token, user_id).await }).await
    }

    /// [`Api::report`] with this client's session.
    pub async fn report(&self, report: &CreateReport) -> Result<Report, ClientError> {
        self.authed(|api, token| {
            let report = report.clone();
            async move { api.report(&token, &report).await }
        })
        .await
    }

    async fn authed<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Api, String) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let token = self.shared.token(false).await?;
        match call(self.shared.api.clone(), token.clone()).await {
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) => {
                let token = self.shared.refresh_after(&token).await?;
                call(self.shared.api.clone(), token).await
            }
            other => other,
        }
    }
}

/// What the client handles and the task share.
struct Shared {
    user_id: UserId,
    device_id: DeviceId,
    api: Api,
    /// Locked across a refresh, so that one refresh token is never presented twice (that revokes the device).
    session: tokio::sync::Mutex<Session>,
    /// Taken when the client stops, which ends the event stream.
    events: Mutex<Option<mpsc::UnboundedSender<ClientEvent>>>,
    state: watch::Sender<ConnectionState>,
    position: AtomicU64,
    outbox_len: Arc<AtomicUsize>,
}

impl Shared {
    fn events(&self) -> MutexGuard<'_, Option<mpsc::UnboundedSender<ClientEvent>>> {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, event: ClientEvent) {
        if let Some(tx) = self.events().as_ref() {
            // A dropped stream means the application does not want events.
            let _ = tx.send(event);
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state.clone());
        self.emit(ClientEvent::State(state));
    }

    /// The access token to use: the current one, or a renewed one when it expires soon or `force`.
    async fn token(&self, force: bool) -> Result<String, ClientError> {
        let stale = {
            let session = self.session.lock().await;
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let expiring = session.access_expires_at - (REFRESH_MARGIN.as_millis() as i64) <= now_ms;
            if !force && !expiring {
                return Ok(session.access_token.clone());
            }
            session.access_token.clone()
        };
        self.refresh_after(&stale).await
    }

    /// Renews the tokens, unless someone else already did since `stale` was read.
    async fn refresh_after(&self, stale: &str) -> Result<String, ClientError> {
        let mut session = self.session.lock().await;
        if session.access_token != stale {
            return Ok(session.access_token.clone());
        }
        let fresh = self.api.refresh(&session.refresh_token).await?;
        tracing::debug!(device = %fresh.device_id, "access token renewed");
        *session = fresh.clone();
        self.emit(ClientEvent::SessionRefreshed(Box::new(fresh)));
        Ok(session.access_token.clone())
    }
}

#[derive(Clone, Copy, Debug)]
enum CursorKind {
    Read,
    Delivered,
}

#[derive(Debug)]
struct CursorRequest {
    kind: CursorKind,
    conversation_id: ConversationId,
    seq: u64,
    reply: oneshot::Sender<Result<CursorState, ClientError>>,
    /// Sent on the current connection (resent after a reconnect: moving a cursor is idempotent).
    sent: bool,
}

enum Command {
    Send(ConversationId, Item),
    Cursor(CursorRequest),
    Ephemeral(ClientFrame),
    Close(oneshot::Sender<()>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send(c, item) => write!(f, "Send({c}, {})", item.client_msg_id),
            Command::Cursor(r) => write!(f, "Cursor({r:?})"),
            Command::Ephemeral(frame) => write!(f, "Ephemeral({frame:?})"),
            Command::Close(_) => f.write_str("Close"),
        }
    }
}

/// Why the task stops for good.
struct Stop {
    reason: String,
    done: Option<oneshot::Sender<()>>,
}

/// How a connection ended.
enum SessionEnd {
    /// Lost: reconnect.
    Lost {
        reason: String,
        /// The server's `reconnect {after_ms}`.
        hint: Option<Duration>,
        /// Closed with 4401: renew the token first.
        unauthorized: bool,
        /// The connection got as far as `synced`: the backoff starts over.
        synced: bool,
    },
    Stop(Stop),
}

/// Why opening a connection failed.
enum OpenError {
    /// 429 at the upgrade: wait at least this long.
    RateLimited {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 at the upgrade, or an `auth` refusal: renew the token.
    Unauthorized(String),
    Other(String),
}

impl OpenError {
    fn reason(&self) -> &str {
        match self {
            OpenError::RateLimited { reason, .. } | OpenError::Unauthorized(reason) | OpenError::Other(reason) => {
                reason
            }
        }
    }
}

/// What `hello` told us.
struct Hello {
    pos: u64,
    heartbeat: Duration,
}

/// The background task: owns the connection, the outbox and the sync position.
struct Task {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    backoff: Backoff,
    connect_timeout: Duration,
    keepalive: Duration,
    max_in_flight: usize,
    /// The feed position of the last event reported.
    pos: u64,
    /// Skip to `hello.pos` on the first connection.
    start_at_latest: bool,
    /// The highest message seq reported per conversation.
    max_seq: HashMap<ConversationId, u64>,
    outbox: Outbox,
    /// Cursor requests by request number (request id `c:N`).
    cursors: BTreeMap<u64, CursorRequest>,
    next_request: u64,
}

impl Task {
    async fn run(mut self) {
        let mut delay: Option<(u32, Duration)> = None;
        let mut renew = false;
        let stop = loop {
            if let Some((attempt, delay)) = delay.take() {
                self.shared.set_state(ConnectionState::Reconnecting { attempt, delay });
                if let Err(stop) = self.offline_until(tokio::time::sleep(delay)).await {
                    break stop;
                }
            }
            self.shared.set_state(ConnectionState::Connecting);
            let shared = self.shared.clone();
            let token = match self.offline_until(async move { shared.token(renew).await }).await {
                Err(stop) => break stop,
                Ok(Ok(token)) => token,
                Ok(Err(e)) => {
                    let refused = matches!(
                        e.code(),
                        Some(
                            ErrorCode::Unauthorized
                                | ErrorCode::Forbidden
                                | ErrorCode::BadRequest
                                | ErrorCode::InvalidInput
                        )
                    );
                    if refused {
                        // The refresh token itself was refused: only a new login helps.
                        break Stop {
                            reason: format!("the session can no longer be renewed ({e}); log in again"),
                            done: None,
                        };
                    }
                    self.shared.set_state(ConnectionState::Disconnected { reason: format!("renewing the token: {e}") });
                    delay = Some(self.schedule(None, None));
                    continue;
                }
            };
            renew = false;
            let url = self.shared.api.ws_url(&token, self.shared.user_id);
            let opened = match self.offline_until(open(url, self.connect_timeout)).await {
                Err(stop) => break stop,
                Ok(opened) => opened,
            };
            match opened {
                Ok((socket, hello)) => {
                    tracing::debug!(pos = hello.pos, since = self.pos, "connected");
                    let end = self.connected(socket, &hello).await;
                    self.connection_lost();
                    match end {
                        SessionEnd::Stop(stop) => break stop,
                        SessionEnd::Lost { reason, hint, unauthorized, synced } => {
                            tracing::debug!(%reason, "disconnected");
                            self.shared.set_state(ConnectionState::Disconnected { reason });
                            if synced {
                                self.backoff.reset();
                            }
                            renew = unauthorized;
                            delay = Some(self.schedule(hint, None));
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(reason = error.reason(), "connection attempt failed");
                    self.shared.set_state(ConnectionState::Disconnected { reason: error.reason().to_owned() });
                    match error {
                        OpenError::RateLimited { retry_after, .. } => delay = Some(self.schedule(None, retry_after)),
                        OpenError::Unauthorized(_) => {
                            renew = true;
                            delay = Some(self.schedule(None, None));
                        }
                        OpenError::Other(_) => delay = Some(self.schedule(None, None)),
                    }
                }
            }
        };
        self.finish(stop);
    }

    /// The next delay: the server's hint if any (else the backoff's), and at least `at_least`.
    fn schedule(&mut self, hint: Option<Duration>, at_least: Option<Duration>) -> (u32, Duration) {
        let attempt = self.backoff.attempt();
        let jittered = self.backoff.next_delay();
        (attempt, hint.unwrap_or(jittered).max(at_least.unwrap_or_default()))
    }

    /// Runs `future` while handling commands offline (sends queue up, ephemeral frames are dropped).
    async fn offline_until<F: Future>(&mut self, future: F) -> Result<F::Output, Stop> {
        let mut future = pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Ok(output),
                command = self.commands.recv() => match command {
                    None => return Err(Stop { reason: "every client handle was dropped".into(), done: None }),
                    Some(Command::Close(done)) => return Err(Stop { reason: "closed".into(), done: Some(done) }),
                    Some(command) => {
                        if let Some(frame) = self.accept(command) {
                            tracing::trace!(?frame, "offline: dropped");
                        }
                    }
                },
            }
        }
    }

    /// Takes a command into the task's state; returns the frame to send now for ephemeral ones.
    fn accept(&mut self, command: Command) -> Option<ClientFrame> {
        match command {
            Command::Send(conversation, item) => {
                self.outbox.push(conversation, item);
                None
            }
            Command::Cursor(request) => {
                self.next_request += 1;
                self.cursors.insert(self.next_request, request);
                None
            }
            Command::Ephemeral(frame) => Some(frame),
            // Handled by the callers.
            Command::Close(done) => {
                let _ = done.send(());
                None
            }
        }
    }

    /// What is ready to go: outbox heads and unsent cursor moves.
    fn pending_frames(&mut self) -> Vec<ClientFrame> {
        let mut frames = self.outbox.ready(Instant::now(), self.max_in_flight);
        for (n, request) in self.cursors.iter_mut().filter(|(_, r)| !r.sent) {
            request.sent = true;
            let (id, conversation_id, seq) = (Some(format!("c:{n}")), request.conversation_id, request.seq);
            frames.push(match request.kind {
                CursorKind::Read => ClientFrame::Read { id, conversation_id, seq },
                CursorKind::Delivered => ClientFrame::Delivered { id, conversation_id, seq },
            });
        }
        frames
    }

    fn connection_lost(&mut self) {
        self.outbox.connection_lost();
        for request in self.cursors.values_mut() {
            request.sent = false;
        }
    }

    /// One connection's life, from `hello` to its end.
    async fn connected(&mut self, mut socket: Socket, hello: &Hello) -> SessionEnd {
        if std::mem::take(&mut self.start_at_latest) && hello.pos > self.pos {
            self.set_pos(hello.pos);
        }
        self.shared.set_state(ConnectionState::Connected);
        let mut synced = false;
        let mut hint = None;
        let lost = |reason: String, hint: Option<Duration>, synced: bool| SessionEnd::Lost {
            reason,
            hint,
            unauthorized: false,
            synced,
        };
        // The outbox waits for `synced`: the catch-up may show messages stored before an ack was lost, which
        // then leave the outbox without being sent again (a resend would be harmless, only wasteful).
        let mut live = false;
        if let Err(e) = write(&mut socket, vec![ClientFrame::Sync { since: self.pos }]).await {
            return lost(format!("writing: {e}"), None, false);
        }
        // The server pings every heartbeat: twice that without a frame means the connection is dead.
        let silence = hello.heartbeat.saturating_mul(2) + Duration::from_secs(5);
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        loop {
            let retry_at = self.outbox.next_retry();
            let mut out = Vec::new();
            tokio::select! {
                incoming = socket.next() => {
                    last_read = Instant::now();
                    match incoming {
                        Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                            Ok(frame) => self.on_frame(frame, &mut live, &mut hint, &mut out),
                            Err(e) => tracing::warn!(error = %e, "undecodable frame from the server"),
                        },
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = close_parts(frame.as_ref());
                            finish_close(&mut socket).await;
                            return SessionEnd::Lost {
                                reason: format!("closed by the server: {code} {reason}").trim_end().to_owned(),
                                hint,
                                unauthorized: code == CLOSE_UNAUTHORIZED,
                                synced,
                            };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return lost(format!("connection failed: {e}"), hint, synced),
                        None => return lost("connection closed".into(), hint, synced),
                    }
                }
                command = self.commands.recv() => match command {
                    None => {
                        close(&mut socket).await;
                        return SessionEnd::Stop(Stop { reason: "every client handle was dropped".into(), done: None });
                    }
                    Some(Command::Close(done)) => {
                        close(&mut socket).await;
                        return SessionEnd::Stop(Stop { reason: "closed".into(), done: Some(done) });
                    }
                    Some(command) => out.extend(self.accept(command)),
                },
                () = sleep_until(retry_at), if retry_at.is_some() => {}
                () = tokio::time::sleep_until(last_read + silence) => {
                    return lost(format!("no frame from the server for {silence:?}"), hint, synced);
                }
                () = tokio::time::sleep_until(last_write + self.keepalive) => out.push(ClientFrame::Ping { id: None }),
            }
            if live {
                synced = true;
                out.extend(self.pending_frames());
            }
            if !out.is_empty() {
                if let Err(e) = write(&mut socket, out).await {
                    return lost(format!("writing: {e}"), hint, synced);
                }
                last_write = Instant::now();
            }
        }
    }

    /// Applies one server frame; frames to answer with go to `out`. `live` turns true at `synced` (the
    /// catch-up is done) and false at `resync` (until the next `synced`).
    fn on_frame(
        &mut self,
        frame: ServerFrame,
        live: &mut bool,
        hint: &mut Option<Duration>,
        out: &mut Vec<ClientFrame>,
    ) {
        match frame {
            ServerFrame::Event { pos, event } => self.on_event(pos, event),
            ServerFrame::Synced { pos } => {
                *live = true;
                self.shared.emit(ClientEvent::Synced { pos });
            }
            ServerFrame::Resync { pos, reason } => {
                tracing::debug!(since = self.pos, pos, %reason, "resync");
                *live = false;
                self.set_pos(pos);
                self.shared.emit(ClientEvent::Resync { pos, reason });
                out.push(ClientFrame::Sync { since: pos });
            }
            ServerFrame::Ack { conversation_id, client_msg_id, seq, message_id, sent_at, duplicate, .. } => {
                let ack = SendAck { conversation_id, client_msg_id, seq, message_id, sent_at, duplicate };
                self.outbox.acked(ack);
            }
            ServerFrame::Cursor { id, cursor } => {
                if let Some(request) = id.as_deref().and_then(|id| self.take_cursor(id)) {
                    let _ = request.reply.send(Ok(cursor));
                }
            }
            ServerFrame::Error { id, code, message, retry_after_ms } => match id {
                Some(id) if self.outbox.is_in_flight(&id) => {
                    let backoff = self.backoff.config().clone();
                    self.outbox.refused(&id, code, message, retry_after_ms, Instant::now(), &backoff);
                }
                Some(id) if id.starts_with("c:") => {
                    if let Some(request) = self.take_cursor(&id) {
                        let _ = request.reply.send(Err(ClientError::from_frame(code, message, retry_after_ms)));
                    }
                }
                _ => {
                    tracing::debug!(%code, %message, "error frame");
                    self.shared.emit(ClientEvent::ServerError { code, message });
                }
            },
            ServerFrame::Typing { conversation_id, user_id, active, ttl_ms } => {
                self.shared.emit(ClientEvent::Typing { conversation_id, user_id, active, ttl_ms });
            }
            ServerFrame::Presence { id: None, users } => self.shared.emit(ClientEvent::Presence { users }),
            ServerFrame::Reconnect { after_ms } => {
                tracing::debug!(after_ms, "the server asks to reconnect");
                *hint = Some(Duration::from_millis(after_ms));
            }
            ServerFrame::Hello { .. } | ServerFrame::Presence { .. } | ServerFrame::Pong { .. } => {}
            ServerFrame::Result { .. } => {}
        }
    }

    /// A feed event: reported once per position, and a message once per (conversation, seq).
    fn on_event(&mut self, pos: u64, event: Event) {
        if pos <= self.pos {
            tracing::trace!(pos, at = self.pos, "feed event already reported");
            return;
        }
        if pos != self.pos + 1 {
            tracing::warn!(pos, expected = self.pos + 1, "gap in the feed");
        }
        match event {
            Event::Message { message } => {
                self.outbox.seen(&message, self.shared.device_id);
                let max = self.max_seq.entry(message.conversation_id).or_insert(0);
                if message.seq > *max {
                    *max = message.seq;
                    self.shared.emit(ClientEvent::Message { pos, message });
                } else {
                    tracing::debug!(seq = message.seq, "message already reported");
                }
            }
            Event::MessageUpdated { message } => self.shared.emit(ClientEvent::MessageUpdated { pos, message }),
            Event::Receipt { conversation_id, user_id, delivered, read } => {
                self.shared.emit(ClientEvent::Receipt { pos, conversation_id, user_id, delivered, read });
            }
        }
        self.set_pos(pos);
    }

    fn set_pos(&mut self, pos: u64) {
        self.pos = pos;
        self.shared.position.store(pos, Ordering::Relaxed);
    }

    fn take_cursor(&mut self, id: &str) -> Option<CursorRequest> {
        let n = id.strip_prefix("c:")?.parse::<u64>().ok()?;
        self.cursors.remove(&n)
    }

    /// Stops for good: fails what is pending, reports `Closed`, ends the event stream.
    fn finish(mut self, stop: Stop) {
        tracing::debug!(reason = %stop.reason, "client stopped");
        self.outbox.fail_all();
        for (_, request) in std::mem::take(&mut self.cursors) {
            let _ = request.reply.send(Err(ClientError::Closed));
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Close(done) = command {
                let _ = done.send(());
            }
        }
        self.shared.set_state(ConnectionState::Closed { reason: stop.reason });
        self.shared.events().take();
        if let Some(done) = stop.done {
            let _ = done.send(());
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Opens a connection and reads `hello`, within `timeout`.
async fn open(url: String, timeout: Duration) -> Result<(Socket, Hello), OpenError> {
    let attempt = async {
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await.map_err(upgrade_error)?;
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    return match serde_json::from_str::<ServerFrame>(&text) {
                        Ok(ServerFrame::Hello { pos, heartbeat_ms, .. }) => {
                            Ok((socket, Hello { pos, heartbeat: Duration::from_millis(heartbeat_ms.max(1000)) }))
                        }
                        Ok(ServerFrame::Error { code: ErrorCode::Unauthorized, message, .. }) => {
                            Err(OpenError::Unauthorized(format!("unauthorized: {message}")))
                        }
                        Ok(ServerFrame::Error { code, message, .. }) => {
                            Err(OpenError::Other(format!("{code}: {message}")))
                        }
                        Ok(_) => Err(OpenError::Other("the server did not start with hello".into())),
                        Err(e) => Err(OpenError::Other(format!("undecodable first frame: {e}"))),
                    };
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = close_parts(frame.as_ref());
                    let reason = format!("closed before hello: {code} {reason}");
                    return Err(if code == CLOSE_UNAUTHORIZED {
                        OpenError::Unauthorized(reason)
                    } else {
                        OpenError::Other(reason)
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(OpenError::Other(format!("connection failed: {e}"))),
                None => return Err(OpenError::Other("closed before hello".into())),
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(OpenError::Other(format!("no hello within {timeout:?}"))),
    }
}

/// Classifies a failed upgrade: 429 (wait as told), 401 (renew the token), anything else.
fn upgrade_error(error: tokio_tungstenite::tungstenite::Error) -> OpenError {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => {
            let status = response.status();
            let header_ms = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.saturating_mul(1000));
            let body = response.body().as_deref().unwrap_or_default();
            let error = error_from(status, header_ms, body);
            let reason = format!("upgrade refused: HTTP {}: {error}", status.as_u16());
            match status.as_u16() {
                429 => {
                    let retry_after_ms = match &error {
                        ClientError::Server { retry_after_ms, .. } => *retry_after_ms,
                        _ => header_ms,
                    };
                    OpenError::RateLimited { reason, retry_after: retry_after_ms.map(Duration::from_millis) }
                }
                401 => OpenError::Unauthorized(reason),
                _ => OpenError::Other(reason),
            }
        }
        other => OpenError::Other(other.to_string()),
    }
}

fn close_parts(frame: Option<&CloseFrame>) -> (u16, String) {
    match frame {
        Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
        None => (1005, String::new()),
    }
}

async fn write(socket: &mut Socket, frames: Vec<ClientFrame>) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in frames {
        match serde_json::to_string(&frame) {
            Ok(text) => socket.feed(WsMessage::text(text)).await?,
            Err(e) => tracing::error!(error = %e, "could not encode a frame"),
        }
    }
    socket.flush().await
}

/// Our close: send the close frame and wait (briefly) for the server's.
async fn close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
    finish_close(socket).await;
}

/// Reads until the close handshake is done (tungstenite answers the server's close frame as we read).
async fn finish_close(socket: &mut Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async { while let Some(Ok(_)) = socket.next().await {} }).await;
}
