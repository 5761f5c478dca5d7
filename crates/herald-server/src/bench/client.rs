//! What the scenarios share: registering users over REST, creating conversations, and opening lean
//! WebSocket connections (small buffers, so the client side fits many connections too).

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_proto::{ConversationDetails, ConversationId, CreateConversation, Credentials, Session, UserId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().pool_max_idle_per_host(256).build()?)
}

pub async fn expect_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        bail!("HTTP {status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response.json().await?)
}

/// Registers `n` fresh users, `parallel` at a time, with progress on stderr.
pub async fn register_users(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<Session>> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("b{}", &run[24..]);
    let mut sessions = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + parallel).min(n))
            .map(|i| {
                let (http, base) = (http.clone(), base.to_owned());
                let username = format!("{prefix}-{i}");
                tokio::spawn(async move {
                    let credentials = Credentials { username, password: "bench-password".into(), device_name: None };
                    expect_json::<Session>(
                        http.post(format!("{base}/api/v1/accounts")).json(&credentials).send().await?,
                    )
                    .await
                })
            })
            .collect();
        for task in batch {
            sessions.push(task.await.context("register task")??);
        }
        next = sessions.len();
        if n >= 1000 && next % 1000 < parallel {
            eprintln!("  registered {next}/{n}");
        }
    }
    Ok(sessions)
}

pub async fn group(
    http: &reqwest::Client,
    base: &str,
    owner: &Session,
    members: &[UserId],
) -> anyhow::Result<ConversationId> {
    let details: ConversationDetails = expect_json(
        http.post(format!("{base}/api/v1/conversations"))
            .bearer_auth(&owner.access_token)
            .json(&CreateConversation::Group { title: "bench".into(), members: members.to_vec() })
            .send()
            .await?,
    )
    .await?;
    Ok(details.conversation.id)
}

/// Connects, reads `hello`, and syncs from the current position so the connection is live.
pub async fn connect_live(ws_base: &str, token: &str) -> anyhow::Result<Socket> {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let url = format!("{ws_base}/ws?v=1&token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let hello = next_text(&mut socket).await?;
    let hello: serde_json::Value = serde_json::from_str(&hello)?;
    let pos = hello["pos"].as_u64().context("hello without pos")?;
    socket.send(Message::text(format!(r#"{{"type":"sync","since":{pos}}}"#))).await?;
    loop {
        let frame = next_text(&mut socket).await?;
        if frame.contains(r#""type":"synced""#) {
            return Ok(socket);
        }
    }
}

/// The next text frame (pings are answered by tungstenite as it reads).
pub async fn next_text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}
