//! `idle`: how much an authenticated, synced, idle connection costs the server.

use super::client::{connect_live, http, register_users};
use super::node::Target;
use anyhow::Context;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Connections to hold (one user each). A process here may hold at most 20,000 file descriptors.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold them idle while measuring CPU.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Client processes to spread the connections over (this one and helpers it starts), since a process here
    /// may hold at most 20,000 file descriptors.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
}

/// The arguments of a helper process.
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// A file with one device per line: its access token, a space, and its user id.
    #[arg(long)]
    pub tokens: std::path::PathBuf,
    /// The server's WebSocket base, e.g. ws://127.0.0.1:8080.
    #[arg(long)]
    pub ws: String,
    /// For `broadcast`: each line is `WS_BASE TOKEN`, and every socket's one broadcast is waited for and timed.
    #[arg(long)]
    pub broadcast: bool,
    /// For `broadcast`: seconds every socket has to receive its broadcast.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Helper process: connects one socket per token, prints `ready N`, and holds them (answering pings) until its
/// standard input closes.
pub async fn hold(args: &HoldArgs) -> anyhow::Result<()> {
    if args.broadcast {
        return super::broadcast::hold_counting(&args.tokens, Duration::from_secs(args.timeout)).await;
    }
    let tokens = std::fs::read_to_string(&args.tokens)?;
    let mut holders = Vec::new();
    for line in tokens.lines().filter(|t| !t.is_empty()) {
        let (token, user) = line.split_once(' ').context("a line of the tokens file is `<token> <user id>`")?;
        let mut socket = connect_live(&args.ws, token, user.parse()?).await?;
        holders.push(tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} }));
    }
    println!("ready {}", holders.len());
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut rest).await?;
    for h in holders {
        h.abort();
    }
    Ok(())
}

/// Starts a helper process holding the connections of `tokens`; returns once they are all live.
async fn spawn_holder(
    target: &Target,
    tokens: &[String],
    source_ips: usize,
    dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<tokio::process::Child> {
    use tokio::io::AsyncBufReadExt;
    let file = dir.join(format!("tokens-{n}"));
    std::fs::write(&file, tokens.join("\n"))?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--source-ips", &source_ips.to_string(), "hold", "--ws", &target.ws_base(), "--tokens"])
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("helper stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
    if !line.starts_with("ready") {
        anyhow::bail!("helper process {n} failed to connect its share: {line}");
    }
    Ok(child)
}

#[derive(Debug, serde::Serialize)]
pub struct IdleReport {
    pub connections: usize,
    pub connect_seconds: f64,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    pub rss_per_connection_bytes: Option<f64>,
    pub idle_cpu_percent: Option<f64>,
}

impl IdleReport {
    /// The per-connection cost as a bar (when the server was ours to measure).
    pub fn chart(&self) -> Option<String> {
        let per = self.rss_per_connection_bytes?;
        Some(crate::chart::bars(
            &format!("idle: server memory per connection ({} connections)", self.connections),
            "bytes",
            &[("per connection".into(), per), ("target".into(), 2048.0)],
        ))
    }

    pub fn table(&self) -> String {
        let per = self.rss_per_connection_bytes.map_or("n/a".into(), |b| format!("{:.0}", b));
        let cpu = self.idle_cpu_percent.map_or("n/a".into(), |c| format!("{c:.2}"));
        let mib = |b: Option<u64>| b.map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
        format!(
            "scenario idle: {} connections (connected in {:.1} s)\n\
             | server RSS before (MiB) | after (MiB) | bytes per connection | idle server CPU % |\n\
             |---|---|---|---|\n| {} | {} | {} | {} |",
            self.connections,
            self.connect_seconds,
            mib(self.rss_before_bytes),
            mib(self.rss_after_bytes),
            per,
            cpu
        )
    }
}

pub async fn run(target: &Target, args: &IdleArgs, source_ips: usize) -> anyhow::Result<IdleReport> {
    let http = http()?;
    eprintln!("registering {} users ...", args.connections);
    let sessions = register_users(&http, target.base(), args.connections, 32).await?;
    // Touch every device once over REST so the store's cache holds what connecting reads; what remains
    // in the difference below is the connections themselves.
    for chunk in sessions.chunks(64) {
        let checks: Vec<_> = chunk
            .iter()
            .map(|s| {
                let request = http.get(format!("{}/api/v1/me", target.base())).bearer_auth(&s.access_token);
                tokio::spawn(async move { request.send().await })
            })
            .collect();
        for c in checks {
            c.await.context("warm-up")??;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = target.rss_bytes();

    eprintln!("connecting ...");
    let started = Instant::now();
    // Shares of the other processes first (each starts a helper that connects its share), then ours.
    let processes = args.processes.max(1);
    let share = sessions.len().div_ceil(processes);
    let dir = tempfile::tempdir()?;
    let mut helpers = Vec::new();
    for (n, chunk) in sessions.chunks(share).enumerate().skip(1) {
        let tokens: Vec<String> = chunk.iter().map(|s| format!("{} {}", s.access_token, s.user.id)).collect();
        helpers.push(spawn_holder(target, &tokens, source_ips, dir.path(), n).await?);
    }
    let mut holders = Vec::with_capacity(share);
    for chunk in sessions[..share.min(sessions.len())].chunks(128) {
        let connecting: Vec<_> = chunk
            .iter()
            .map(|s| {
                let (ws, token, user) = (target.ws_base(), s.access_token.clone(), s.user.id);
                tokio::spawn(async move { connect_live(&ws, &token, user).await })
            })
            .collect();
        for c in connecting {
            let mut socket = c.await.context("connect task")??;
            // Keep reading, so pings are answered and the server sees a healthy client.
            holders.push(tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} }));
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = target.rss_bytes();
    let cpu_start = target.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let cpu_end = target.cpu_seconds();
    for h in holders {
        h.abort();
    }
    for mut helper in helpers {
        drop(helper.stdin.take());
        let _ = helper.wait().await;
    }
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / args.connections as f64),
        _ => None,
    };
    let cpu = match (cpu_start, cpu_end) {
        (Some(s), Some(e)) => Some(100.0 * (e - s) / args.hold as f64),
        _ => None,
    };
    Ok(IdleReport {
        connections: args.connections,
        connect_seconds,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: per,
        idle_cpu_percent: cpu,
    })
}
