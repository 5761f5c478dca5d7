//! The server under test: a child `herald serve` on a free port with its own temp data dir (and settings
//! that take password hashing and per-user rate limits out of the measurement), or existing servers: one, or
//! the nodes of a cluster.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Target {
    /// Every server's base URL, never empty. Several are the nodes of one cluster: they share the database,
    /// so REST setup may go to any of them (it goes to the first), while a fleet's members connect to all.
    nodes: Vec<String>,
    child: Option<(Child, tempfile::TempDir)>,
}

impl Target {
    /// Targets `servers` as given, or with none starts a child server.
    pub async fn start(servers: &[String]) -> anyhow::Result<Target> {
        if !servers.is_empty() {
            let nodes = servers.iter().map(|url| url.trim_end_matches('/').to_owned()).collect();
            return Ok(Target { nodes, child: None });
        }
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            "[auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n\
             [limits]\nsends_per_second = 1000000\nsend_burst = 1000000\nmax_group_members = 100000\n\
             [gateway]\nhandshakes_per_second = 100000\nhandshake_burst = 100000\nqueue_depth = 4096\n\
             [logins]\nregistrations_per_hour = 1000000\n",
        )?;
        let exe = std::env::current_exe().context("locating the herald binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        // The server logs to stdout too (a warning about a missing ffmpeg, say): pass those lines on and
        // wait for the one that gives the address; keep draining afterwards so the server never blocks on
        // a full pipe.
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => match line.trim().strip_prefix("herald listening on ") {
                    Some(base) => break base.to_owned(),
                    None => eprintln!("{line}"),
                },
                end => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("the server did not start: {}", end.map_or("it exited".to_owned(), |e| format!("{e:?}")));
                }
            }
        };
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("{line}")));
        Ok(Target { nodes: vec![base], child: Some((child, dir)) })
    }

    /// Where REST requests go: the first server.
    pub fn base(&self) -> &str {
        &self.nodes[0]
    }

    /// How many servers (nodes) there are.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The base URL of server `node` (counted from 0, modulo the number of servers).
    pub fn node_base(&self, node: usize) -> &str {
        &self.nodes[node % self.nodes.len()]
    }

    /// The WebSocket base URL of the first server.
    pub fn ws_base(&self) -> String {
        self.node_ws_base(0)
    }

    /// The WebSocket base URL of server `node` (counted from 0, modulo the number of servers).
    pub fn node_ws_base(&self, node: usize) -> String {
        self.nodes[node % self.nodes.len()].replacen("http://", "ws://", 1)
    }

    /// The server's resident memory in bytes, when it is our child.
    pub fn rss_bytes(&self) -> Option<u64> {
        let (child, _) = self.child.as_ref()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// The server's open file descriptors, when it is our child.
    pub fn open_fds(&self) -> Option<u64> {
        let (child, _) = self.child.as_ref()?;
        Some(std::fs::read_dir(format!("/proc/{}/fd", child.id())).ok()?.count() as u64)
    }

    /// CPU seconds (user + system) the server has used, when it is our child.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let (child, _) = self.child.as_ref()?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    pub async fn stop(mut self) {
        if let Some((mut child, _dir)) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

/// A run that fails (a lost delivery, a closed connection) never reaches `stop`: its server must not outlive it.
impl Drop for Target {
    fn drop(&mut self) {
        if let Some((child, _dir)) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
