//! `broadcast`: many authenticated WebSocket connections spread over the nodes of a cluster, each receiving one
//! message sent into its group. Reports what the connections cost each node (resident memory from the nodes'
//! own `/metrics`, so remote nodes are measured too) and how long the broadcast took to reach every socket.
//!
//! The sockets live in helper processes (`bench hold --broadcast`), since a process here may hold at most 20,000
//! file descriptors; this process only registers, creates the groups, sends and adds up.

use super::client::{connect_live, expect_json, group, http, metric_sum, register_users};
use super::latency::{Latency, histogram};
use super::node::Target;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use herald_proto::{SendMessage, Session, UserId};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

#[derive(clap::Args, Debug)]
pub struct BroadcastArgs {
    /// Connections to open (one user each), spread over the nodes: user i connects to node i modulo the nodes.
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Members per group (the last group takes the rest); one message is sent into each group.
    #[arg(long, default_value_t = 10_000)]
    pub group_size: usize,
    /// Client processes holding the sockets, every one a helper (each may hold at most 20,000 descriptors).
    #[arg(long, default_value_t = 6)]
    pub processes: usize,
    /// Seconds every socket has to receive its group's message before the run fails.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Microseconds since the Unix epoch: the send stamp in a broadcast's body, compared in other processes.
fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The helper side (`bench hold --broadcast`): connects one socket per line of `WS_BASE TOKEN`, prints
/// `ready N`, waits for `go` on standard input, then for one broadcast on every socket; writes each socket's
/// latency in microseconds to `TOKENS.latencies`, prints `received R of N last_us T` (T: when the last one
/// arrived), and holds the sockets until standard input closes.
pub async fn hold_counting(tokens: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(tokens)?;
    // One socket per line: `<ws base> <token> <user id>`.
    let mut targets: Vec<(String, String, UserId)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split(' ');
        let (Some(ws), Some(token), Some(user)) = (fields.next(), fields.next(), fields.next()) else {
            anyhow::bail!("a line of the tokens file is `<ws base> <token> <user id>`: {line}");
        };
        targets.push((ws.to_owned(), token.to_owned(), user.parse()?));
    }
    // Connected 16 at a time per process: one at a time would make the connect time a measure of round trips
    // alone, while many more would queue on the nodes' database pools (a handshake reads the device).
    let retried = std::sync::atomic::AtomicU64::new(0);
    let mut connecting = futures_util::stream::iter(targets.into_iter().enumerate())
        .map(|(i, (ws, token, user))| {
            let retried = &retried;
            async move { connect_retrying(&ws, &token, user, retried).await.with_context(|| format!("socket {i}")) }
        })
        .buffer_unordered(16);
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<Result<(u64, u64), String>>();
    let mut readers = Vec::new();
    while let Some(socket) = connecting.next().await {
        let mut socket = socket?;
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            let mut reported = false;
            // Keeps reading after the broadcast, so pings are answered while the sockets are held.
            loop {
                let frame = match socket.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => text,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        let _ = arrivals.send(Err(format!("closed by the server: {frame:?}")));
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let _ = arrivals.send(Err(format!("connection failed: {e}")));
                        return;
                    }
                    None => {
                        let _ = arrivals.send(Err("connection ended".into()));
                        return;
                    }
                };
                if reported {
                    continue;
                }
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&frame) else { continue };
                let body = frame["event"]["message"]["body"].as_str().unwrap_or_default();
                if let Some(sent) = body.strip_prefix('b').and_then(|t| t.parse::<u64>().ok()) {
                    let now = unix_micros();
                    reported = true;
                    let _ = arrivals.send(Ok((now.saturating_sub(sent).max(1), now)));
                }
            }
        }));
    }
    drop(connecting);
    drop(arrivals);
    let sockets = readers.len();
    println!("ready {sockets} retried {}", retried.load(std::sync::atomic::Ordering::Relaxed));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if stdin.next_line().await?.as_deref() != Some("go") {
        bail!("expected go on standard input");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut latencies, mut last, mut failures) = (Vec::with_capacity(sockets), 0u64, Vec::new());
    while latencies.len() < sockets && failures.is_empty() {
        match tokio::time::timeout_at(deadline, arrived.recv()).await {
            Ok(Some(Ok((latency, at)))) => {
                latencies.push(latency);
                last = last.max(at);
            }
            Ok(Some(Err(failure))) => failures.push(failure),
            Ok(None) | Err(_) => break,
        }
    }
    let mut file = tokens.as_os_str().to_owned();
    file.push(".latencies");
    std::fs::write(file, latencies.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    for failure in failures.iter().take(5) {
        eprintln!("a socket failed before its broadcast arrived: {failure}");
    }
    println!("received {} of {sockets} last_us {last}", latencies.len());
    while stdin.next_line().await?.is_some() {}
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// `connect_live`, retried when a node turns the handshake away for now (503: its database pool was busy, or
/// 429: its handshake rate), as a real client would after a pause; the retries are counted, not hidden.
async fn connect_retrying(
    ws: &str,
    token: &str,
    user: UserId,
    retried: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<super::client::Socket> {
    use tokio_tungstenite::tungstenite::Error;
    let mut attempt = 0u64;
    loop {
        match connect_live(ws, token, user).await {
            Ok(socket) => return Ok(socket),
            Err(e) if attempt < 20 => {
                let busy = matches!(e.downcast_ref::<Error>(), Some(Error::Http(r)) if [429, 503].contains(&r.status().as_u16()));
                if !busy {
                    return Err(e);
                }
                attempt += 1;
                retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A helper process and what it said so far.
struct Helper {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    tokens: std::path::PathBuf,
    sockets: usize,
}

impl Helper {
    /// Starts a helper for `lines` (`WS_BASE TOKEN` each); it connects in the background.
    fn spawn(
        lines: &[String],
        dir: &std::path::Path,
        n: usize,
        source_ips: usize,
        timeout: u64,
    ) -> anyhow::Result<Self> {
        let tokens = dir.join(format!("tokens-{n}"));
        std::fs::write(&tokens, lines.join("\n"))?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--source-ips", &source_ips.to_string(), "hold", "--broadcast", "--timeout"])
            .arg(timeout.to_string())
            .args(["--ws", "unused", "--tokens"])
            .arg(&tokens)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("helper stdout")?).lines();
        Ok(Helper { child, stdout, tokens, sockets: lines.len() })
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        Ok(self.stdout.next_line().await?.unwrap_or_default())
    }

    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("helper stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(stdin.flush().await?)
    }

    /// The helper's resident memory in bytes (it is our child, so /proc has it).
    fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    }

    async fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}

/// One node's side of the run, from its own `/metrics`.
#[derive(Debug, serde::Serialize)]
pub struct NodeFigures {
    pub node: String,
    /// Sockets the bench connected to this node.
    pub connections: usize,
    /// `websocket_connections_total` as the node reports it once everyone is connected.
    pub reported_connections: f64,
    pub rss_before_bytes: f64,
    pub rss_connected_bytes: f64,
    pub rss_after_broadcast_bytes: f64,
    pub open_fds_connected: f64,
    pub bytes_per_connection: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct BroadcastReport {
    pub connections: usize,
    pub nodes: usize,
    pub groups: usize,
    pub group_size: usize,
    pub processes: usize,
    pub register_seconds: f64,
    pub groups_seconds: f64,
    pub connect_seconds: f64,
    /// Handshakes a node turned away for now (503 or 429) and the client retried.
    pub handshakes_retried: u64,
    pub per_node: Vec<NodeFigures>,
    /// Across every node: (connected − before) summed, over the connections.
    pub bytes_per_connection: f64,
    #[serde(flatten)]
    pub latency: Latency,
    /// From the first send to the moment the last socket had its group's message.
    pub all_delivered_seconds: f64,
    pub helper_rss_bytes: Vec<u64>,
}

impl BroadcastReport {
    pub fn chart(&self) -> String {
        let mut bars: Vec<(String, f64)> =
            self.per_node.iter().enumerate().map(|(i, n)| (format!("node {i}"), n.bytes_per_connection)).collect();
        bars.push(("all".into(), self.bytes_per_connection));
        crate::chart::bars(
            &format!("broadcast: server memory per connection ({} connections)", self.connections),
            "bytes",
            &bars,
        )
    }

    pub fn table(&self) -> String {
        let mib = |b: f64| format!("{:.1}", b / 1048576.0);
        let mut out = format!(
            "scenario broadcast: {} connections over {} nodes, {} groups of up to {}, {} client processes\n\
             registered in {:.1} s, groups created in {:.1} s, connected in {:.1} s ({} handshakes retried)\n\
             | node | connections (server says) | RSS before (MiB) | connected (MiB) | after broadcast (MiB) | open fds | bytes per connection |\n\
             |---|---|---|---|---|---|---|\n",
            self.connections,
            self.nodes,
            self.groups,
            self.group_size,
            self.processes,
            self.register_seconds,
            self.groups_seconds,
            self.connect_seconds,
            self.handshakes_retried
        );
        for (i, n) in self.per_node.iter().enumerate() {
            out.push_str(&format!(
                "| {i} {} | {} ({}) | {} | {} | {} | {} | {:.0} |\n",
                n.node,
                n.connections,
                n.reported_connections,
                mib(n.rss_before_bytes),
                mib(n.rss_connected_bytes),
                mib(n.rss_after_broadcast_bytes),
                n.open_fds_connected,
                n.bytes_per_connection
            ));
        }
        let sum = |f: fn(&NodeFigures) -> f64| self.per_node.iter().map(f).sum::<f64>();
        out.push_str(&format!(
            "| all | {} | {} | {} | {} | {} | {:.0} |\n",
            self.connections,
            mib(sum(|n| n.rss_before_bytes)),
            mib(sum(|n| n.rss_connected_bytes)),
            mib(sum(|n| n.rss_after_broadcast_bytes)),
            sum(|n| n.open_fds_connected),
            self.bytes_per_connection
        ));
        let helpers: Vec<String> = self.helper_rss_bytes.iter().map(|b| mib(*b as f64)).collect();
        out.push_str(&format!(
            "broadcast: every one of {} sockets received its group's message; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             all delivered {:.2} s after the first send\nclient helpers' RSS (MiB): {}",
            self.connections,
            self.latency.p50,
            self.latency.p99,
            self.latency.max,
            self.all_delivered_seconds,
            helpers.join(", ")
        ));
        out
    }
}

/// Every node's value of the gauge `name`, in node order.
async fn per_node(http: &reqwest::Client, target: &Target, name: &str) -> anyhow::Result<Vec<f64>> {
    let mut values = Vec::with_capacity(target.nodes());
    for node in 0..target.nodes() {
        values.push(metric_sum(http, target.node_base(node), name).await?);
    }
    Ok(values)
}

pub async fn run(target: &Target, args: &BroadcastArgs, source_ips: usize) -> anyhow::Result<BroadcastReport> {
    if args.connections < 2 || args.group_size < 2 || args.processes == 0 {
        bail!("need --connections >= 2, --group-size >= 2 and --processes >= 1");
    }
    let http = http()?;
    let nodes = target.nodes();

    // Registration (password hashing) is spread over the nodes too; every node shares the database.
    eprintln!("registering {} users over {nodes} nodes ...", args.connections);
    let started = Instant::now();
    let registering: Vec<_> = (0..nodes)
        .map(|node| {
            let share = args.connections / nodes + usize::from(node < args.connections % nodes);
            let (http, base) = (http.clone(), target.node_base(node).to_owned());
            tokio::spawn(async move { register_users(&http, &base, share, 32).await })
        })
        .collect();
    let mut sessions: Vec<Session> = Vec::with_capacity(args.connections);
    for r in registering {
        sessions.extend(r.await.context("register task")??);
    }
    let register_seconds = started.elapsed().as_secs_f64();

    eprintln!("creating the groups ...");
    let started = Instant::now();
    let mut groups = Vec::new();
    for (g, members) in sessions.chunks(args.group_size).enumerate() {
        let others: Vec<_> = members[1..].iter().map(|s| s.user.id).collect();
        let id = group(&http, target.node_base(g), &members[0], &others).await.context("creating a group")?;
        groups.push((id, &members[0], g));
        eprintln!(
            "  group {} of {} created ({} members)",
            g + 1,
            args.connections.div_ceil(args.group_size),
            members.len()
        );
    }
    let groups_seconds = started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = per_node(&http, target, "process_resident_memory_bytes").await?;

    eprintln!("connecting over {} client processes ...", args.processes);
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); args.processes];
    for (i, s) in sessions.iter().enumerate() {
        shares[i % args.processes].push(format!("{} {} {}", target.node_ws_base(i), s.access_token, s.user.id));
    }
    let mut helpers = Vec::new();
    for (n, lines) in shares.iter().enumerate().filter(|(_, l)| !l.is_empty()) {
        helpers.push(Helper::spawn(lines, dir.path(), n, source_ips, args.timeout)?);
    }
    let mut handshakes_retried = 0;
    for (n, helper) in helpers.iter_mut().enumerate() {
        let line = helper.line().await?;
        let Some(retried) = line.strip_prefix(&format!("ready {} retried ", helper.sockets)) else {
            bail!("client process {n} failed to connect its {} sockets: {line:?}", helper.sockets);
        };
        handshakes_retried += retried.parse::<u64>()?;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = per_node(&http, target, "process_resident_memory_bytes").await?;
    let fds_connected = per_node(&http, target, "process_open_fds").await?;
    let reported = per_node(&http, target, "websocket_connections_total").await?;

    eprintln!("broadcasting one message into each of {} groups ...", groups.len());
    for helper in &mut helpers {
        helper.say("go").await?;
    }
    let first_send = unix_micros();
    let sending: Vec<_> = groups
        .iter()
        .map(|(id, owner, g)| {
            let request = http
                .post(format!("{}/api/v1/conversations/{id}/messages", target.node_base(*g)))
                .bearer_auth(&owner.access_token)
                .json(&SendMessage {
                    client_msg_id: uuid::Uuid::now_v7().to_string(),
                    body: format!("b{}", unix_micros()),
                    reply_to: None,
                    thread_root: None,
                    attachments: Vec::new(),
                });
            tokio::spawn(async move { expect_json::<serde_json::Value>(request.send().await?).await })
        })
        .collect();
    for s in sending {
        s.await.context("send task")??;
    }
    let mut latency = histogram()?;
    let mut last = first_send;
    for (n, helper) in helpers.iter_mut().enumerate() {
        let line = helper.line().await?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(received), Some(at)) =
            (fields.get(1).and_then(|r| r.parse::<usize>().ok()), fields.get(5).and_then(|t| t.parse::<u64>().ok()))
        else {
            bail!("client process {n} gave no count: {line:?}");
        };
        if received != helper.sockets {
            bail!(
                "client process {n}: only {received} of its {} sockets received their group's message within {} s",
                helper.sockets,
                args.timeout
            );
        }
        last = last.max(at);
        let mut file = helper.tokens.as_os_str().to_owned();
        file.push(".latencies");
        for l in std::fs::read_to_string(file)?.lines() {
            latency.record(l.parse::<u64>()?.min(latency.high()))?;
        }
    }
    let rss_after = per_node(&http, target, "process_resident_memory_bytes").await?;
    let helper_rss_bytes = helpers.iter().filter_map(Helper::rss_bytes).collect();
    for helper in helpers {
        helper.finish().await;
    }

    let per_node: Vec<NodeFigures> = (0..nodes)
        .map(|node| {
            let connections = (0..args.connections).filter(|i| i % nodes == node).count();
            NodeFigures {
                node: target.node_base(node).to_owned(),
                connections,
                reported_connections: reported[node],
                rss_before_bytes: rss_before[node],
                rss_connected_bytes: rss_connected[node],
                rss_after_broadcast_bytes: rss_after[node],
                open_fds_connected: fds_connected[node],
                bytes_per_connection: (rss_connected[node] - rss_before[node]) / connections.max(1) as f64,
            }
        })
        .collect();
    let grown: f64 = per_node.iter().map(|n| n.rss_connected_bytes - n.rss_before_bytes).sum();
    Ok(BroadcastReport {
        connections: args.connections,
        nodes,
        groups: groups.len(),
        group_size: args.group_size,
        processes: args.processes,
        register_seconds,
        groups_seconds,
        connect_seconds,
        handshakes_retried,
        per_node,
        bytes_per_connection: grown / args.connections as f64,
        latency: Latency::of(&latency),
        all_delivered_seconds: last.saturating_sub(first_send) as f64 / 1e6,
        helper_rss_bytes,
    })
}
