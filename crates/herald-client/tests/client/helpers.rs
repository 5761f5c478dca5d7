//! Starting servers, registering users, collecting events, and a TCP proxy that can cut connections.

use herald_client::proto::{ConversationId, Credentials, HistoryQuery, Message, Session};
use herald_client::{Api, BackoffConfig, Client, ClientConfig, ClientEvent, ConnectionState, Events, Jitter};
use herald_server::config::Config;
use herald_server::server::{self, Running};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a test waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(8);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A throwaway node with short reconnect hints.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::ephemeral(dir);
    config.server.shutdown_grace_secs = 5;
    config.auth.jwt_secret = Some("client-test-secret-client-test-secret".into());
    config.gateway.reconnect_jitter_ms = 200;
    config
}

/// A server that can be stopped and started again on the same address and data dir.
pub struct Server {
    pub base: String,
    pub addr: SocketAddr,
    config: Config,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let running = server::start(config.clone()).await.expect("server starts");
        let addr = running.addr;
        // Restarts bind the same port, so connected clients find the new server.
        config.server.listen = addr;
        Server { base: format!("http://{addr}"), addr, config, running: Some(running), _dir: dir }
    }

    /// Graceful shutdown: WebSocket clients get `reconnect {after_ms}`, then a 1012 close.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// A new server on the same address and data dir.
    pub async fn start_again(&mut self) {
        assert!(self.running.is_none(), "stop it first");
        self.running = Some(server::start(self.config.clone()).await.expect("server restarts"));
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base).expect("api")
    }
}

static NAMES: AtomicU64 = AtomicU64::new(0);

pub async fn register(api: &Api, prefix: &str) -> Session {
    let username = format!("{prefix}_{:03}", NAMES.fetch_add(1, Ordering::Relaxed));
    let credentials = Credentials { username, password: "correct horse".into(), device_name: None };
    api.register(&credentials).await.expect("register")
}

/// Two users and their direct conversation.
pub async fn pair(api: &Api) -> (Session, Session, ConversationId) {
    let alice = register(api, "alice").await;
    let bob = register(api, "bob").await;
    let details = api.create_direct(&alice.access_token, bob.user.id).await.expect("direct conversation");
    (alice, bob, details.conversation.id)
}

/// A fast schedule for tests: 50 ms, 100 ms … at most 400 ms.
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig { base: Duration::from_millis(50), max: Duration::from_millis(400), jitter: Jitter::Full }
}

pub fn client_config(base: &str, session: &Session) -> ClientConfig {
    let mut config = ClientConfig::new(base, session.clone());
    config.backoff = fast_backoff();
    config.connect_timeout = Duration::from_secs(3);
    config
}

pub async fn connect(base: &str, session: &Session) -> (Client, Events) {
    let (client, events) = Client::connect(client_config(base, session)).await.expect("client starts");
    tokio::time::timeout(WAIT, client.wait_connected()).await.expect("connects in time").expect("connected");
    (client, events)
}

/// Events until `pred` picks one; panics after `WAIT`.
pub async fn until<T>(events: &mut Events, what: &str, mut pred: impl FnMut(&ClientEvent) -> Option<T>) -> T {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pred(&event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("the event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Collects `Message` events (with their feed positions) until `n` have arrived in `conversation`.
pub async fn messages(events: &mut Events, conversation: ConversationId, n: usize) -> Vec<(u64, Message)> {
    let mut got = Vec::new();
    while got.len() < n {
        let (pos, message) = until(events, &format!("message {} of {n}", got.len() + 1), |e| match e {
            ClientEvent::Message { pos, message } if message.conversation_id == conversation => {
                Some((*pos, message.clone()))
            }
            _ => None,
        })
        .await;
        got.push((pos, message));
    }
    got
}

/// Message events that arrive within `window` (for "nothing more arrives").
pub async fn stray_messages(events: &mut Events, window: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(window, async {
        while let Some(event) = events.recv().await {
            if let ClientEvent::Message { message, .. } = event {
                got.push(message);
            }
        }
    })
    .await;
    got
}

pub async fn until_state(events: &mut Events, what: &str, pred: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
    until(events, what, |e| match e {
        ClientEvent::State(state) if pred(state) => Some(state.clone()),
        _ => None,
    })
    .await
}

/// Every message of a conversation, forward, through pagination.
pub async fn history(api: &Api, session: &Session, conversation: ConversationId) -> Vec<Message> {
    let mut out = Vec::new();
    let mut from = Some(1);
    while let Some(start) = from {
        let query = HistoryQuery { from: Some(start), limit: Some(200), ..HistoryQuery::default() };
        let page = api.history(&session.access_token, conversation, &query).await.expect("history");
        out.extend(page.messages);
        from = page.next;
    }
    out
}

/// A TCP proxy in front of a server. `cut` drops every proxied connection at once and refuses new ones
/// (the port is closed) until `restore`: an abrupt network failure, as the client sees it.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
    /// Whether new connections are proxied, and the tasks of those that are. One lock, so that a
    /// connection accepted while `cut` runs (on another worker) is either cut or never proxied.
    connections: Arc<Mutex<(bool, Vec<JoinHandle<()>>)>>,
    /// While set, bytes from the server are read and thrown away: acks and events are lost.
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let mut proxy = Proxy { addr, upstream, accept: None, connections: Arc::default(), frozen: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, connections, frozen) = (self.upstream, self.connections.clone(), self.frozen.clone());
        connections.lock().expect("lock").0 = true;
        self.accept = Some(tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut guard = connections.lock().expect("lock");
                if !guard.0 {
                    return;
                }
                let frozen = frozen.clone();
                guard.1.push(tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let down = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) if !frozen.load(Ordering::SeqCst) => {
                                    if client_write.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {}
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                    }
                }));
            }
        }));
    }

    pub fn cut(&mut self) {
        let mut guard = self.connections.lock().expect("lock");
        guard.0 = false;
        for task in guard.1.drain(..) {
            task.abort();
        }
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }

    /// From now on, what the server sends is lost (the client's bytes still go through).
    pub fn freeze_downstream(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Accepts connections again (and lets the server's bytes through again).
    pub async fn restore(&mut self) {
        self.frozen.store(false, Ordering::SeqCst);
        // The aborted accept task drops its listener when the runtime cancels it; retry until the port is free.
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("could not re-bind the proxy port {}", self.addr);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
