//! What the scenarios share: registering users over REST, creating conversations, and opening lean
//! WebSocket connections (small buffers, so the client side fits many connections too).

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_proto::{ConversationDetails, ConversationId, CreateConversation, Credentials, Session, UserId};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The scenarios' HTTP client: a large pool, whose idle connections are dropped before the server closes them
/// (it does after `gateway.handshake_timeout_ms`, 2 s by default), so no request is sent on a connection the
/// server is closing (see `herald_client::Api::new`).
pub fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .build()?)
}

pub async fn expect_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        bail!("HTTP {status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response.json().await?)
}

/// Registers `n` fresh users, `parallel` at a time, with progress on stderr.
/// Pairs the users up (first with second, third with fourth …) in direct conversations: each user's access
/// token, id and conversation, in the order given.
pub async fn pair_up(
    http: &reqwest::Client,
    base: &str,
    sessions: &[Session],
) -> anyhow::Result<Vec<(String, UserId, ConversationId)>> {
    let mut plan = Vec::with_capacity(sessions.len());
    for pair in sessions.chunks(2) {
        let [first, second] = pair else { bail!("an odd number of users cannot pair up") };
        let details: ConversationDetails = expect_json(
            http.post(format!("{base}/api/v1/conversations"))
                .bearer_auth(&first.access_token)
                .json(&CreateConversation::Direct { user_id: second.user.id })
                .send()
                .await?,
        )
        .await?;
        for s in pair {
            plan.push((s.access_token.clone(), s.user.id, details.conversation.id));
        }
    }
    Ok(plan)
}

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

/// How many loopback source addresses (127.0.0.1, 127.0.0.2 …) client sockets are spread over; set once
/// from `--source-ips`. Each source address has its own range of ephemeral ports.
static SOURCE_IPS: AtomicUsize = AtomicUsize::new(1);
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

pub fn set_source_ips(n: usize) {
    SOURCE_IPS.store(n.clamp(1, 250), Ordering::Relaxed);
}

/// Opens a WebSocket to `url` (`ws://HOST:PORT/…`) with small buffers and TCP_NODELAY, from the next loopback
/// source address when the target is on loopback.
pub async fn connect(
    url: &str,
) -> Result<(Socket, tokio_tungstenite::tungstenite::handshake::client::Response), tokio_tungstenite::tungstenite::Error>
{
    use tokio_tungstenite::tungstenite::Error;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let host_port = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
    let target: Option<std::net::SocketAddr> = host_port.parse().ok();
    let Some(target) = target.filter(|t| t.ip().is_loopback() && t.is_ipv4()) else {
        return tokio_tungstenite::connect_async_with_config(url, Some(config), true).await;
    };
    let n = SOURCE_IPS.load(Ordering::Relaxed);
    let k = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % n;
    let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + k as u8);
    let socket = tokio::net::TcpSocket::new_v4().map_err(Error::Io)?;
    socket.bind((source, 0).into()).map_err(Error::Io)?;
    let stream = socket.connect(target).await.map_err(Error::Io)?;
    stream.set_nodelay(true).map_err(Error::Io)?;
    tokio_tungstenite::client_async_with_config(url, tokio_tungstenite::MaybeTlsStream::Plain(stream), Some(config))
        .await
}

/// The `/ws` URL of one device: its token, and its user as the routing hint that a proxy in front of several
/// nodes hashes on to keep each user on one node (deploy/nginx/herald.conf, docs/protocol.md).
pub fn ws_url(ws_base: &str, token: &str, user: UserId) -> String {
    format!("{ws_base}/ws?v=1&token={token}&user={user}")
}

/// Connects, reads `hello`, and syncs from the current position so the connection is live.
pub async fn connect_live(ws_base: &str, token: &str, user: UserId) -> anyhow::Result<Socket> {
    let url = ws_url(ws_base, token, user);
    let (mut socket, _) = connect(&url).await?;
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
pub async fn next_text<S>(socket: &mut S) -> anyhow::Result<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
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

/// The next frame the server sends that is not about someone else's presence or typing.
pub async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<Socket>,
) -> anyhow::Result<herald_proto::ServerFrame> {
    use herald_proto::ServerFrame;
    loop {
        let frame = next_text(stream).await?;
        match serde_json::from_str::<ServerFrame>(&frame).with_context(|| format!("a frame: {frame}"))? {
            ServerFrame::Presence { .. } | ServerFrame::Typing { .. } => continue,
            other => return Ok(other),
        }
    }
}

/// Connects to `url`, retrying a refused handshake (429) after its `Retry-After` plus up to a second of jitter,
/// as a well-behaved client does; returns the socket and how many handshakes were refused on the way.
pub async fn connect_retrying(url: &str) -> anyhow::Result<(Socket, u64)> {
    use rand::Rng;
    let mut refused = 0;
    loop {
        match connect(url).await {
            Ok((socket, _)) => return Ok((socket, refused)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 429 => {
                refused += 1;
                let after: u64 = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                let jitter = rand::rng().random_range(0..1000);
                tokio::time::sleep(std::time::Duration::from_millis(after * 1000 + jitter)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The sum of every series of the counter or gauge `name` on the server's `/metrics` (0 when it has none yet).
pub async fn metric_sum(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
