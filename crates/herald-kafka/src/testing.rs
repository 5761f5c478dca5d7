//! A Kafka-protocol broker of a test's own (feature `testing`), the way each integration test gets an app of
//! its own: [`OwnBroker`] runs `tansu` (a Kafka-protocol broker from the Rust registry) as a child process on
//! a free port of 127.0.0.1, storing in a SQLite file of a temp dir, and kills it (SIGKILL) and reaps it when
//! the guard is dropped, on every exit path of a test, a panic included.
//!
//! The binary is `$HERALD_TANSU`, else `tansu` on `PATH`, else `~/.cache/herald/tansu/bin/tansu`, where
//! scripts/test installs it (`cargo install tansu --features dynostore,libsql`; it takes ~20 minutes on two
//! cores, so it is cached outside the checkout). When it is missing, [`OwnBroker::start`] returns `None` and
//! the test is skipped with a message, except under CI (`CI` set), where a missing broker is a failure: CI
//! must not pass by testing nothing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct OwnBroker {
    child: Option<Child>,
    /// Where the current run's output starts in the log file (every run appends to it).
    run_starts_at: usize,
    port: u16,
    binary: PathBuf,
    // Removed after the broker is killed: `Drop` kills first, then the field drops.
    dir: tempfile::TempDir,
}

impl OwnBroker {
    /// Starts a broker and waits until it accepts connections. `None` (with a message on stderr) when tansu
    /// is not installed and `CI` is unset.
    ///
    /// # Panics
    /// When tansu is missing under CI, or does not come up within 30 s (the message shows its log).
    pub async fn start() -> Option<OwnBroker> {
        let Some(binary) = tansu_binary() else {
            let hint = "tansu is not installed: scripts/test installs it (cargo install tansu --locked --version \
                        0.6.0 --features dynostore,libsql --root ~/.cache/herald/tansu), or set HERALD_TANSU";
            if std::env::var_os("CI").is_some() {
                panic!("{hint}");
            }
            eprintln!("skipped: {hint}");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("herald-kafka-").tempdir().expect("a temp dir for the broker");
        let mut broker = OwnBroker { child: None, run_starts_at: 0, port: free_port(), binary, dir };
        broker.run().await;
        Some(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL: a crash, as its clients see it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage (killing it first if it runs). What it had
    /// acknowledged is still there: it stores in SQLite.
    pub async fn restart(&mut self) {
        self.kill();
        self.run().await;
    }

    /// The broker's output (every run's), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The warnings, errors and panics the current run has logged, first first (at most `limit`).
    pub fn errors_of_this_run(&self, limit: usize) -> Vec<String> {
        let log = self.log();
        log.get(self.run_starts_at..)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("ERROR") || line.contains("WARN") || line.contains("panicked"))
            .take(limit)
            .map(str::to_owned)
            .collect()
    }

    /// Whether the current run has lost the task that serves its storage. tansu 0.6 serves every storage request
    /// through one task (`ChannelRequestService` in tansu-storage), whose loop returns at the first request that
    /// fails; from then on the broker still accepts connections but answers every produce with
    /// `UNKNOWN_SERVER_ERROR` ("UnableToSend" in its log) until it is restarted. A Kafka broker answers a failed
    /// request with an error code and serves the next.
    pub fn storage_died(&self) -> bool {
        self.log().get(self.run_starts_at..).is_some_and(|run| run.contains("UnableToSend"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    async fn run(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("the broker's log file");
        self.run_starts_at = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        // tansu opens a sqlite:// path relative to its working directory (an absolute one too), so it runs in
        // the temp dir and is given the file's name.
        let storage = "sqlite://tansu.db";
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", storage])
            .current_dir(self.dir.path())
            // The flags win over tansu's environment variables; these are removed all the same.
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the broker's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("tansu exited ({status}) before it accepted connections:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "tansu did not accept connections on port {} within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HERALD_TANSU") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("tansu")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cached = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/herald/tansu/bin/tansu"));
    on_path.into_iter().chain(cached).find(|p| p.is_file())
}

/// A port nothing listens on now (the OS picks it; the listener is closed before the broker binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port on 127.0.0.1")
}

/// Reads `topic` from its start (every partition, no consumer group) until it has `at_least` records or
/// `timeout` has passed: (partition, key, payload) of each, in offset order within each partition.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    at_least: usize,
    timeout: Duration,
) -> Vec<(i32, Vec<u8>, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    // librdkafka's consumer blocks: it runs on a blocking thread.
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "herald-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a reader of the topic");
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("the topic's metadata");
        let mut assignment = TopicPartitionList::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                assignment.add_partition_offset(&topic, p.id(), Offset::Beginning).expect("an assignment");
            }
        }
        consumer.assign(&assignment).expect("assign the partitions");
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while records.len() < at_least && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                records.push((
                    m.partition(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        records
    })
    .await
    .expect("the topic's reader")
}
