//! Launchers for the real services the media tests talk to (feature `testing`), shared with other
//! crates' tests. Each launcher starts a private instance in a fresh temp dir and tears it down on drop,
//! so tests never depend on (or disturb) a system-wide daemon.

// ---------------------------------------------------------------------------------------------------
// clamd
// ---------------------------------------------------------------------------------------------------

/// The standard 68-byte EICAR anti-virus test file: harmless, and detected by every scanner as if it
/// were malware. Our private clamd knows it under [`CLAMD_EICAR_SIGNATURE`].
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The name our test database gives EICAR. ClamAV reports signatures from unofficial databases with a
/// `.UNOFFICIAL` suffix, so compare with `starts_with`.
pub const CLAMD_EICAR_SIGNATURE: &str = "Herald.Test.EICAR";

/// A private clamd on a Unix socket in a temp dir, loaded with a two-signature database of our own
/// (freshclam cannot download the official one in CI sandboxes, and the official one takes ~20 s and
/// 1 GB to load). Killed, and its directory removed, on drop.
pub struct ClamdProcess {
    /// Where it listens (a `unix://` address).
    pub addr: crate::scan::ClamdAddr,
    // `child` is killed in Drop before `dir` (declared after it) is removed.
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl ClamdProcess {
    /// Starts clamd with `StreamMaxLength 100M` and waits (up to 30 s) until it answers PING.
    ///
    /// # Panics
    /// When clamd is not installed (the message says how to install it) or does not come up (the
    /// message shows the end of its log).
    pub async fn start() -> ClamdProcess {
        Self::start_with_stream_max("100M").await
    }

    /// Like [`ClamdProcess::start`] with another `StreamMaxLength` (clamd syntax: `2M`, `500K`, bytes),
    /// to test the "too large" path without streaming 100 MB.
    ///
    /// # Panics
    /// As [`ClamdProcess::start`].
    pub async fn start_with_stream_max(stream_max: &str) -> ClamdProcess {
        use std::fmt::Write as _;

        let dir = tempfile::Builder::new().prefix("herald-clamd-").tempdir().expect("create a temp dir for clamd");
        let root = dir.path();
        let socket = root.join("clamd.sock");
        let log = root.join("clamd.log");

        // MD5 hash signature: exactly the 68-byte file. Body signature: EICAR anywhere in a larger file
        // (the hash signature cannot match once anything is appended).
        let md5 = "44d88612fea8a8f36de82e1278abb02f";
        std::fs::write(root.join("herald.hdb"), format!("{md5}:{}:{CLAMD_EICAR_SIGNATURE}\n", EICAR.len()))
            .expect("write the hdb database");
        let hex = EICAR.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        std::fs::write(root.join("herald.ndb"), format!("{CLAMD_EICAR_SIGNATURE}.Body:0:*:{hex}\n"))
            .expect("write the ndb database");

        let conf = root.join("clamd.conf");
        let config = format!(
            "Foreground yes\n\
             LocalSocket {socket}\n\
             FixStaleSocket yes\n\
             DatabaseDirectory {root}\n\
             TemporaryDirectory {root}\n\
             LogFile {log}\n\
             LogTime yes\n\
             LogVerbose yes\n\
             StreamMaxLength {stream_max}\n\
             MaxThreads 4\n\
             SelfCheck 3600\n\
             Bytecode no\n\
             OfficialDatabaseOnly no\n",
            socket = socket.display(),
            root = root.display(),
            log = log.display(),
        );
        std::fs::write(&conf, config).expect("write clamd.conf");

        let binary = clamd_binary();
        let out = std::fs::File::create(root.join("clamd.out")).expect("create clamd.out");
        let err = out.try_clone().expect("clone clamd.out");
        let child = std::process::Command::new(&binary)
            .arg(format!("--config-file={}", conf.display()))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start clamd ({}): {e}", binary.display()));

        let mut process = ClamdProcess { addr: crate::scan::ClamdAddr::Unix(socket), child, dir };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&mut self) {
        let client = crate::scan::Clamd::new(self.addr.clone(), std::time::Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("clamd exited during startup ({status}):\n{}", self.log_tail());
            }
            if client.ping().await.is_ok() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("clamd did not answer PING within 30 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The last lines clamd logged (its log file and its stdout/stderr), for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["clamd.log", "clamd.out"] {
            let content = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            text.push_str(&format!("--- {name}\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n")));
        }
        text
    }
}

impl Drop for ClamdProcess {
    /// A std child (rather than tokio's `kill_on_drop`) so teardown works whichever runtime, if any, is
    /// still alive when the test ends; `wait` reaps it so no zombie outlives the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$HERALD_CLAMD`, else `clamd` on `PATH`, else Debian's `/usr/sbin/clamd` (sbin is often not on a
/// non-root `PATH`).
fn clamd_binary() -> std::path::PathBuf {
    find_program("HERALD_CLAMD", "clamd", &[std::path::PathBuf::from("/usr/sbin/clamd")]).unwrap_or_else(|| {
        panic!("clamd not found: install it (`apt-get install clamav-daemon`) or point HERALD_CLAMD at the binary")
    })
}

/// A program for the tests: the path in `$env`, else `name` on `PATH`, else the first of `fallbacks` that
/// exists.
fn find_program(env: &str, name: &str, fallbacks: &[std::path::PathBuf]) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(p.into());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().cloned())
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------------
// S3 (s3s-fs)
// ---------------------------------------------------------------------------------------------------

/// The bucket every [`S3Process`] serves.
pub const S3_BUCKET: &str = "herald-test";

/// A private S3-protocol server (`s3s-fs`, a small Rust implementation that keeps objects as files) on a
/// free port of 127.0.0.1, with one bucket, [`S3_BUCKET`], and its own credentials. It lets the blob tests
/// run the S3 backend over the real protocol (signing, multipart, ranges, listing) without MinIO or a
/// cloud account. Killed, and its directory removed, on drop.
pub struct S3Process {
    /// How to reach it: endpoint, bucket, credentials, plain HTTP and path-style addressing.
    pub config: crate::blobs::S3Config,
    // `child` is killed in Drop before `dir` (declared after it) is removed.
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl S3Process {
    /// Starts s3s-fs and waits (up to 30 s) until it accepts connections.
    ///
    /// # Panics
    /// When s3s-fs is not installed (the message says how to install it) or does not come up (the message
    /// shows the end of its output).
    pub async fn start() -> S3Process {
        let dir = tempfile::Builder::new().prefix("herald-s3-").tempdir().expect("create a temp dir for s3s-fs");
        let root = dir.path().join("data");
        // s3s-fs maps each top-level directory of its root to a bucket.
        std::fs::create_dir_all(root.join(S3_BUCKET)).expect("create the bucket directory");
        let binary = s3s_fs_binary();
        let (access_key, secret_key) = ("herald-test-access", "herald-test-secret");

        // The port is picked by binding :0 and released before s3s-fs binds it, so another process can
        // take it in between: retry with a new port when s3s-fs exits at startup.
        let out_path = dir.path().join("s3s-fs.out");
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("pick a free port")
                .port();
            let out = std::fs::File::create(&out_path).expect("create s3s-fs.out");
            let err = out.try_clone().expect("clone s3s-fs.out");
            let mut child = std::process::Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", access_key, "--secret-key", secret_key])
                .arg(&root)
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start s3s-fs ({}): {e}", binary.display()));
            match wait_for_s3s(&mut child, port).await {
                Ok(()) => {
                    let config = crate::blobs::S3Config {
                        endpoint: Some(format!("http://127.0.0.1:{port}")),
                        bucket: S3_BUCKET.to_owned(),
                        region: "us-east-1".to_owned(),
                        access_key: access_key.to_owned(),
                        secret_key: secret_key.to_owned(),
                        allow_http: true,
                        path_style: true,
                    };
                    return S3Process { config, child, dir };
                }
                Err(status) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_failure = format!("{status}:\n{}", s3s_log_tail(&out_path));
                }
            }
        }
        panic!("s3s-fs did not start (5 attempts); last: {last_failure}");
    }

    /// The last lines s3s-fs printed, for failure messages.
    pub fn log_tail(&self) -> String {
        s3s_log_tail(&self.dir.path().join("s3s-fs.out"))
    }
}

impl Drop for S3Process {
    /// A std child (like [`ClamdProcess`]) rather than tokio's `kill_on_drop`, so teardown works whichever
    /// runtime, if any, is still alive when the test ends; `wait` reaps it so no zombie outlives the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 30 s until s3s-fs accepts connections on `port`. It binds its listener before serving, so
/// an accepted connection means it is serving.
async fn wait_for_s3s(child: &mut std::process::Child, port: u16) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("s3s-fs exited during startup ({status})"));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("s3s-fs did not accept connections within 30 s".to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The last 30 lines of a log file.
fn s3s_log_tail(path: &std::path::Path) -> String {
    let content = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = content.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `$HERALD_S3S_FS`, else `s3s-fs` on `PATH`, else `~/.cargo/bin/s3s-fs` (cargo's bin dir is often not on
/// a non-interactive `PATH`).
fn s3s_fs_binary() -> std::path::PathBuf {
    let cargo_bin: Vec<std::path::PathBuf> = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".cargo/bin/s3s-fs"))
        .into_iter()
        .collect();
    find_program("HERALD_S3S_FS", "s3s-fs", &cargo_bin).unwrap_or_else(|| {
        panic!(
            "s3s-fs not found: install it with `cargo install s3s-fs --version 0.14.1 --locked --features binary` \
             or point HERALD_S3S_FS at the binary"
        )
    })
}
