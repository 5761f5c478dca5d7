//! A small WebSocket test client over tokio-tungstenite.

use super::helpers::{TestApp, User};
use futures_util::{SinkExt, StreamExt};
use herald_proto::ConversationId;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Ws {
    pub socket: Socket,
    pub hello: Value,
    /// Frames read while looking for something else (an ack), returned by `next` first.
    pub pending: std::collections::VecDeque<Value>,
}

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

impl Ws {
    pub fn new(socket: Socket) -> Ws {
        Ws { socket, hello: Value::Null, pending: Default::default() }
    }

    /// Connects with the token in the URL and reads `hello`.
    pub async fn connect(app: &TestApp, user: &User) -> Ws {
        let url = format!("{}/ws?v=1&token={}", app.base.replace("http://", "ws://"), user.token());
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        let mut ws = Ws::new(socket);
        ws.hello = ws.expect("hello").await;
        ws
    }

    /// Connects over a socket with a 4 KiB receive buffer (to play a client that cannot keep up).
    pub async fn connect_with_small_buffer(app: &TestApp, user: &User) -> Ws {
        let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().expect("addr");
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.set_recv_buffer_size(4096).expect("rcvbuf");
        let stream = tcp.connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/ws?v=1&token={}", user.token());
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("upgrade");
        let mut ws = Ws::new(socket);
        ws.hello = ws.expect("hello").await;
        ws
    }

    /// Connects and syncs from `since`, returning the events replayed before `synced`.
    pub async fn connect_synced(app: &TestApp, user: &User, since: u64) -> (Ws, Vec<Value>) {
        let mut ws = Ws::connect(app, user).await;
        let events = ws.sync(since).await;
        (ws, events)
    }

    pub async fn send(&mut self, frame: Value) {
        self.socket.send(Message::text(frame.to_string())).await.expect("frame sent");
    }

    /// The next JSON frame (control frames skipped), or None when the connection closed.
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next()).await.expect("a frame within the wait")?;
            match message.ok()? {
                Message::Text(text) => return Some(serde_json::from_str(&text).expect("JSON frame")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Frames until one of `kind` arrives; panics if the connection closes first.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await.unwrap_or_else(|| panic!("closed while waiting for {kind}"));
            if frame["type"] == kind {
                return frame;
            }
            assert!(frame["type"] != "error" || kind == "error", "error while waiting for {kind}: {frame}");
        }
    }

    /// Asks to resume after `since`; returns the replayed events (up to `synced`).
    pub async fn sync(&mut self, since: u64) -> Vec<Value> {
        self.send(json!({"type": "sync", "since": since})).await;
        let mut events = Vec::new();
        loop {
            let frame = self.next().await.expect("frame during sync");
            match frame["type"].as_str() {
                Some("event") => events.push(frame),
                Some("synced") => return events,
                Some("resync") => panic!("unexpected resync: {frame}"),
                _ => {}
            }
        }
    }

    /// Sends a message and waits for its ack.
    pub async fn send_message(&mut self, conversation: ConversationId, client_msg_id: &str, body: &str) -> Value {
        self.send(json!({"type": "send", "id": client_msg_id, "conversation_id": conversation, "client_msg_id": client_msg_id, "body": body}))
            .await;
        let mut skipped = Vec::new();
        let answer = loop {
            let frame = self.next().await.expect("ack");
            if frame["id"] == client_msg_id && (frame["type"] == "ack" || frame["type"] == "error") {
                break frame;
            }
            skipped.push(frame);
        };
        // Keep what arrived meanwhile (such as the event of this very message) for later reads.
        for frame in skipped.into_iter().rev() {
            self.pending.push_front(frame);
        }
        answer
    }

    /// The next `n` feed events (skipping other frames).
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let frame = self.next().await.expect("event");
            if frame["type"] == "event" {
                out.push(frame);
            }
        }
        out
    }

    /// Asserts that no frame of `kind` arrives within `quiet`.
    pub async fn assert_none(&mut self, kind: &str, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON");
                    assert_ne!(frame["type"], kind, "unexpected {kind}: {frame}");
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
            }
        }
    }

    /// Reads until the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await.expect("close within the wait") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The message seqs of a list of event frames, for one conversation.
pub fn message_seqs(events: &[Value], conversation: ConversationId) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["event"]["kind"] == "message" && e["event"]["message"]["conversation_id"] == json!(conversation))
        .map(|e| e["event"]["message"]["seq"].as_u64().expect("seq"))
        .collect()
}

/// The positions of event frames.
pub fn positions(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["pos"].as_u64().expect("pos")).collect()
}
