//! `herald serve` as a child process of the test, so that it can be killed with SIGKILL (durability.rs,
//! cluster.rs).

use super::helpers::JWT_SECRET;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A `herald serve` child process, killed on drop.
pub struct Node {
    pub child: Child,
    pub base: String,
    /// What it logged (to stdout, at warn and above) before it was listening.
    pub startup_log: Vec<String>,
}

/// `herald serve` on `dir`'s data directory with the tests' settings plus `extra` (TOML), logging at warn
/// and above (`HERALD_TEST_CHILD_LOG` sets another `RUST_LOG`).
pub fn serve_command(dir: &std::path::Path, extra: &str) -> Command {
    let config = dir.join("test.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\njwt_secret = \"{JWT_SECRET}\"\nargon2_memory_kib = 256\nargon2_iterations = 1\n\
             [limits]\nsends_per_second = 100000\nsend_burst = 100000\n{extra}"
        ),
    )
    .expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("RUST_LOG", std::env::var("HERALD_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()));
    command
}

impl Node {
    /// Starts `herald serve` (see [`serve_command`]) and returns once it listens.
    pub fn start_with(dir: &std::path::Path, extra: &str) -> Node {
        let mut child =
            serve_command(dir, extra).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut startup_log = Vec::new();
        let base = loop {
            let line = lines.next().expect("the server exited before listening").expect("read stdout");
            match line.trim().strip_prefix("herald listening on ") {
                Some(base) => break base.to_owned(),
                None => startup_log.push(line),
            }
        };
        // Keep reading, so that the server never blocks on a full pipe; what it logs goes to the test's output.
        let name = base.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("[{name}] {line}")));
        Node { child, base, startup_log }
    }

    /// Whether it started by replaying journal records that the previous process had acknowledged but not
    /// yet checkpointed into the database file.
    pub fn replayed_journal(&self) -> bool {
        self.startup_log.iter().any(|line| line.contains("replayed its journal"))
    }

    /// SIGTERM: the node drains (new sockets and /readyz get 503) and shuts down within its grace period.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "SIGTERM to {}", self.base);
    }

    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
