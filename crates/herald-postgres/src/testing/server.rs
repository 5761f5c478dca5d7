//! A PostgreSQL server of a test's own, for the tests that pause, stop or restart it: `initdb` in a temp dir,
//! started with `pg_ctl` on a free port of 127.0.0.1 (its socket in its own directory), and a streaming replica
//! of it made with `pg_basebackup -R`. The binaries are Debian's (`/usr/lib/postgresql/<version>/bin`, or
//! `HERALD_TEST_PG_BIN`). PostgreSQL refuses to run as root: as root, every command runs as `postgres`.
//! A server is stopped (immediately) when its handle is dropped, on every exit path of a test.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct OwnServer {
    bin: PathBuf,
    /// Holds the data directory; removed after the server stopped.
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl OwnServer {
    /// A new primary (trust authentication, WAL for replicas), started. Panics with the reason when it
    /// cannot be made: these tests need the real server binaries.
    pub fn primary() -> Self {
        let mut server = Self::empty();
        let data = server.data();
        server.run(Command::new(server.bin.join("initdb")).args(["-A", "trust", "-U", "postgres", "-D"]).arg(&data));
        server.configure("wal_level = replica\nmax_wal_senders = 4\n");
        server.start();
        server
    }

    /// A streaming replica of `primary`, started (a hot standby: it answers reads).
    pub fn replica_of(primary: &OwnServer) -> Self {
        let mut server = Self::empty();
        let data = server.data();
        server.run(
            Command::new(server.bin.join("pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-R", "-X", "stream"])
                .arg("-D")
                .arg(&data),
        );
        server.start();
        server
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&mut self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.data().display());
        let log = self.dir.path().join("server.log");
        self.run(
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(log)
                .args(["-o", &options, "-w", "-t", "60", "start"]),
        );
        self.running = true;
    }

    /// Stops the server: `fast` (clients cut off, a clean shutdown) or `immediate` (a crash, recovered at the
    /// next start).
    pub fn stop(&mut self, mode: &str) {
        self.run(Command::new(self.bin.join("pg_ctl")).arg("-D").arg(self.data()).args(["-m", mode, "-w", "stop"]));
        self.running = false;
    }

    fn empty() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("herald-pg-").tempdir().expect("a temp dir for a PostgreSQL server");
        give_to_postgres(dir.path());
        Self { bin, dir, port: free_port(), running: false }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn configure(&self, lines: &str) {
        let path = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(lines);
        std::fs::write(&path, text).expect("writing postgresql.conf");
    }

    /// Runs a server command (as `postgres` when this process is root); panics with its output on failure.
    fn run(&self, command: &Command) {
        let mut command = as_postgres(command);
        let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{command:?} failed: {}\n{}{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if self.running {
            let mut stop = Command::new(self.bin.join("pg_ctl"));
            stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
            let _ = as_postgres(&stop).output();
        }
    }
}

/// The directory of the server binaries: `HERALD_TEST_PG_BIN`, else the newest of Debian's.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HERALD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries in /usr/lib/postgresql (Debian's postgresql package; scripts/test installs it)")
    })
}

/// Whether this process runs as root (then PostgreSQL and PgBouncer must run as `postgres`).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `command` as it must run: unchanged, or through `runuser -u postgres` when this process is root.
fn as_postgres(command: &Command) -> Command {
    if !is_root() {
        let mut same = Command::new(command.get_program());
        same.args(command.get_args());
        return same;
    }
    let mut wrapped = Command::new("runuser");
    wrapped.args(["-u", "postgres", "--"]).arg(command.get_program()).args(command.get_args());
    wrapped
}

/// As root, hands `path` (and all below it) to `postgres`, who runs the servers.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status().expect("chown");
        assert!(status.success(), "chown postgres {}", path.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}
