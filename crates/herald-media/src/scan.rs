//! The malware-scanning seam, and its ClamAV backend talking to clamd.
//!
//! The protocol is implemented by hand (it is a dozen lines: `zINSTREAM\0`, length-prefixed chunks, a
//! zero-length terminator, one NUL-terminated reply) rather than through a client crate, so that the file
//! is streamed from disk in fixed-size chunks and the whole exchange sits under one timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// A virus scanner. Implementations must be safe to share between upload tasks.
#[async_trait]
pub trait Scanner: Send + Sync + 'static {
    /// Scans the file at `path` (already fully written to local disk).
    async fn scan(&self, path: &Path) -> Result<ScanVerdict, ScanError>;
}

/// The scanner's opinion of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanVerdict {
    /// Nothing found.
    Clean,
    /// Malware found; the signature name, e.g. `Win.Test.EICAR_HDB-1`.
    Infected(String),
}

/// Why a scan produced no verdict. None of these means "clean": the caller decides whether to reject or
/// quarantine the upload.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The scanner could not be reached or did not answer in time.
    #[error("scanner unavailable: {0}")]
    Unavailable(String),
    /// The scanner answered something we did not understand, or reported an error.
    #[error("scanner protocol error: {0}")]
    Protocol(String),
    /// The file exceeds the scanner's stream limit (clamd's `StreamMaxLength`).
    #[error("file too large for the scanner")]
    TooLarge,
}

/// Where clamd listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `host:port`.
    Tcp(String),
    /// Path of the `LocalSocket`.
    Unix(PathBuf),
}

impl ClamdAddr {
    /// Parses `tcp://host:port` or `unix:///path/to/clamd.ctl` (the form config files use).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let valid =
                rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("invalid clamd address {s:?}: expected tcp://host:port"));
            }
            Ok(Self::Tcp(rest.to_owned()))
        } else if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("invalid clamd address {s:?}: expected unix:///absolute/path"));
            }
            Ok(Self::Unix(PathBuf::from(path)))
        } else {
            Err(format!("invalid clamd address {s:?}: expected tcp://host:port or unix:///path"))
        }
    }
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// INSTREAM chunk size: small enough to keep memory flat per scan, large enough to keep syscalls few.
const CHUNK: usize = 64 * 1024;
/// Longest reply we accept; real ones are a signature name and a few words.
const MAX_REPLY: usize = 4096;

/// ClamAV's daemon, over TCP or a Unix socket. One connection per scan (clamd's own model).
#[derive(Clone, Debug)]
pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
}

/// A connection of either kind, so the protocol code is written once.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

impl Clamd {
    /// `timeout` bounds each whole exchange (connect, upload, verdict); size it for the largest file
    /// clamd accepts.
    pub fn new(addr: ClamdAddr, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &ClamdAddr {
        &self.addr
    }

    /// Checks that clamd answers (`zPING` -> `PONG`): for readiness probes and startup checks.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let exchange = async {
            let mut conn = self.connect().await?;
            conn.write_all(b"zPING\0").await.map_err(|e| self.unavailable("sending PING", &e))?;
            let reply = read_reply(&mut conn).await.map_err(|e| self.unavailable("reading PONG", &e))?;
            if reply == "PONG" { Ok(()) } else { Err(ScanError::Protocol(format!("unexpected PING reply {reply:?}"))) }
        };
        self.timed(exchange).await
    }

    async fn connect(&self) -> Result<Box<dyn Conn>, ScanError> {
        match &self.addr {
            ClamdAddr::Tcp(a) => match TcpStream::connect(a).await {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => Err(self.unavailable("connecting", &e)),
            },
            ClamdAddr::Unix(p) => match UnixStream::connect(p).await {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => Err(self.unavailable("connecting", &e)),
            },
        }
    }

    fn unavailable(&self, doing: &str, e: &std::io::Error) -> ScanError {
        ScanError::Unavailable(format!("clamd at {}: {doing}: {e}", self.addr))
    }

    async fn timed<T>(&self, work: impl Future<Output = Result<T, ScanError>>) -> Result<T, ScanError> {
        tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| {
            Err(ScanError::Unavailable(format!("clamd at {} did not answer within {:?}", self.addr, self.timeout)))
        })
    }

    async fn instream(&self, path: &Path) -> Result<ScanVerdict, ScanError> {
        // Open the file first: a missing file is our problem, not the scanner's.
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ScanError::Protocol(format!("cannot read {}: {e}", path.display())))?;
        let mut conn = self.connect().await?;
        let sent = send_stream(&mut conn, &mut file).await;
        // clamd answers "size limit exceeded" and closes while we are still writing: the write then fails
        // with a broken pipe or reset, and the reply explaining why is already waiting to be read.
        let reply = read_reply(&mut conn).await;
        match (sent, reply) {
            (_, Ok(reply)) if !reply.is_empty() => parse_reply(&reply),
            (Err(SendError::File(e)), _) => {
                Err(ScanError::Protocol(format!("reading {} while scanning: {e}", path.display())))
            }
            (Err(SendError::Conn(e)), _) => Err(self.unavailable("streaming", &e)),
            (Ok(()), Ok(_)) => Err(ScanError::Protocol("clamd closed the connection without a verdict".into())),
            (Ok(()), Err(e)) => Err(self.unavailable("reading the verdict", &e)),
        }
    }
}

#[async_trait]
impl Scanner for Clamd {
    async fn scan(&self, path: &Path) -> Result<ScanVerdict, ScanError> {
        self.timed(self.instream(path)).await
    }
}

enum SendError {
    File(std::io::Error),
    Conn(std::io::Error),
}

async fn send_stream(
    conn: &mut (impl AsyncWrite + Unpin),
    file: &mut (impl AsyncRead + Unpin),
) -> Result<(), SendError> {
    conn.write_all(b"zINSTREAM\0").await.map_err(SendError::Conn)?;
    // Room for the 4-byte length prefix in front of each chunk, so each chunk is one write.
    let mut buf = vec![0u8; 4 + CHUNK];
    loop {
        let n = file.read(&mut buf[4..]).await.map_err(SendError::File)?;
        let len = u32::try_from(n).map_err(|_| SendError::File(std::io::Error::other("chunk too large")))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        conn.write_all(&buf[..4 + n]).await.map_err(SendError::Conn)?;
        if n == 0 {
            break; // the zero-length chunk just sent ends the stream
        }
    }
    conn.flush().await.map_err(SendError::Conn)
}

/// Reads up to the NUL that ends a `z`-prefixed command's reply (or EOF), at most [`MAX_REPLY`] bytes.
async fn read_reply(conn: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == 0) {
            reply.extend_from_slice(&buf[..end]);
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > MAX_REPLY {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "reply too long"));
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// `stream: OK`, `stream: <Signature> FOUND`, `INSTREAM size limit exceeded. ERROR`, `<anything> ERROR`.
fn parse_reply(reply: &str) -> Result<ScanVerdict, ScanError> {
    if let Some(err) = reply.strip_suffix("ERROR") {
        if err.contains("size limit exceeded") {
            return Err(ScanError::TooLarge);
        }
        return Err(ScanError::Protocol(format!("clamd error: {}", err.trim())));
    }
    let body = reply.strip_prefix("stream:").map(str::trim).unwrap_or(reply);
    if body == "OK" {
        return Ok(ScanVerdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(ScanVerdict::Infected(name.to_owned()));
        }
    }
    Err(ScanError::Protocol(format!("unexpected clamd reply {reply:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(ClamdAddr::parse("tcp://127.0.0.1:3310"), Ok(ClamdAddr::Tcp("127.0.0.1:3310".into())));
        assert_eq!(ClamdAddr::parse("tcp://[::1]:3310"), Ok(ClamdAddr::Tcp("[::1]:3310".into())));
        assert_eq!(
            ClamdAddr::parse("unix:///run/clamav/clamd.ctl"),
            Ok(ClamdAddr::Unix(PathBuf::from("/run/clamav/clamd.ctl")))
        );
        for bad in ["127.0.0.1:3310", "tcp://localhost", "tcp://:3310", "tcp://h:99999", "unix://relative", ""] {
            assert!(ClamdAddr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ClamdAddr::Unix("/a/b".into()).to_string(), "unix:///a/b");
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply("stream: OK").expect("ok"), ScanVerdict::Clean);
        assert_eq!(
            parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND").expect("found"),
            ScanVerdict::Infected("Win.Test.EICAR_HDB-1".into())
        );
        assert!(matches!(parse_reply("INSTREAM size limit exceeded. ERROR"), Err(ScanError::TooLarge)));
        assert!(matches!(parse_reply("stream: Can't allocate memory ERROR"), Err(ScanError::Protocol(_))));
        assert!(matches!(parse_reply("UNKNOWN COMMAND"), Err(ScanError::Protocol(_))));
        assert!(matches!(parse_reply("stream:  FOUND"), Err(ScanError::Protocol(_))));
    }

    #[tokio::test]
    async fn stream_framing() {
        let data: Vec<u8> = (0..CHUNK + 10).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        assert!(send_stream(&mut out, &mut data.as_slice()).await.is_ok());
        let mut rest = out.strip_prefix(b"zINSTREAM\0".as_slice()).expect("command first");
        let mut received = Vec::new();
        loop {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            if len == 0 {
                assert!(tail.is_empty());
                break;
            }
            assert!(len <= CHUNK);
            received.extend_from_slice(&tail[..len]);
            rest = &tail[len..];
        }
        assert_eq!(received, data);
    }

    #[tokio::test]
    async fn closed_port_is_unavailable_quickly() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let clamd = Clamd::new(ClamdAddr::Tcp(format!("127.0.0.1:{port}")), Duration::from_secs(5));
        assert!(matches!(clamd.ping().await, Err(ScanError::Unavailable(_))));
        let missing = Clamd::new(ClamdAddr::Unix("/nonexistent/clamd.sock".into()), Duration::from_secs(5));
        let file = std::env::current_exe().expect("some file to scan");
        assert!(matches!(missing.scan(&file).await, Err(ScanError::Unavailable(_))));
    }
}
